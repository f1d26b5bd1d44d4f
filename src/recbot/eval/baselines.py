"""Score matrices (users x items) for each method on one split.

random, popularity, item-kNN (cosine between item columns of the binary training
matrix; a user's score for an item is the sum of its similarities to the user's
training items), item-kNN over the last 20 items, EASE (Steck 2019, exact closed form on
the training matrix, λ = ``EASE_LAMBDA``), BERT content (the interest vector ``recommend``
serves, over item embeddings) and the hybrid blend of them (``recbot.retrieval.hybrid``,
the same code ``Recommender.recommend`` ranks with).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from recbot.config import Settings
from recbot.retrieval.hybrid import CollabModel, bert_scores, history_matrix
from recbot.types import Interaction

__all__ = ["Components", "components"]


@dataclass
class Components:
    """Per-user score matrices over the item universe, and the training mask."""

    parts: dict[str, np.ndarray]  # COMPONENTS of recbot.retrieval.hybrid, each (n_users, n_items)
    popularity: np.ndarray  # (n_items,) training histories holding the item
    seen: sparse.csr_matrix  # (n_users, n_items) training items, to exclude
    model: CollabModel | None = None  # the collaborative statistics the parts came from
    histories: Sequence[Sequence[Interaction]] = ()  # the users' training histories, in row order


def components(
    users: Sequence[str],
    items: Sequence[str],
    train: Mapping[str, list[Interaction]],
    item_vectors: np.ndarray,
    *,
    review_vectors: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    settings: Settings | None = None,
) -> Components:
    """The hybrid's components for ``users``, with the collaborative statistics learned
    from every training history in ``train``, and ``bert`` from the interest vector that
    ``settings`` (default: ``Settings()``) serve, with the users' ``review_vectors`` (user
    id -> item id -> unit vector) where given."""
    s = settings or Settings()
    model = CollabModel.fit(train.values(), items)
    hists = [train.get(u, []) for u in users]
    parts = model.scores(hists)
    parts["bert"] = bert_scores(
        hists,
        item_vectors,
        model.index,
        review_vectors=[review_vectors.get(u) for u in users] if review_vectors is not None else None,
        review_weight=s.review_weight,
        half_life_days=s.recency_half_life_days,
        dislike_weight=s.dislike_weight,
    )
    return Components(parts, model.popularity, history_matrix(hists, model.index), model, hists)
