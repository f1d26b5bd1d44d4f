"""The write path: one owner of ingest, tuning, feedback and the index version.

``Recommender`` serves from the data dir (``recbot.serving``) and hands every change to an
``Index``. Each change leaves a token in the data dir's meta table, which every reader
(this process or another) compares on its next call:

- ``version``: the catalog or its vectors changed (ingest): vectors, caches and the ask
  index are reloaded;
- ``interactions``: who liked what changed (ingest of interactions, a thumbs-up or -down, a
  removal): the collaborative model and popularity are refitted;
- ``hybrid``: the blend weights (``tune``).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recbot.catalog import Format
from recbot.config import Settings
from recbot.errors import UnknownItemError
from recbot.ingest import IngestReport, ingest
from recbot.retrieval.embedder import Embedder
from recbot.retrieval.hybrid import DEFAULT_WEIGHTS, CollabModel, HybridWeights, VectorSource, tune
from recbot.retrieval.store import VectorStore
from recbot.storage import Storage
from recbot.types import Interaction

if TYPE_CHECKING:
    from recbot.generation.train import TrainConfig, TrainReport

__all__ = ["COLLAB_FILE", "ForgetReport", "Index"]

logger = logging.getLogger(__name__)

COLLAB_FILE = "collab.npz"  # the pool path's collaborative model, saved by ingest (``Index.save_collab``)
_RUN = 5  # words in a row that tie a corpus line to a forgotten review (quotes are shorter runs of it)


@dataclass
class ForgetReport:
    """What ``Index.forget`` removed."""

    user_id: str
    deleted: dict[str, int]  # rows per SQLite table
    reviews: int
    generator_stale: bool = False
    corpus_lines_removed: int = 0

    def lines(self) -> list[str]:
        rows = ", ".join(f"{n} {table}" for table, n in self.deleted.items())
        out = [f"forgot {self.user_id}: deleted {rows} row(s) ({self.reviews} review(s))"]
        if self.generator_stale:
            out.append(
                f"the generator was trained with their reviews: {self.corpus_lines_removed} line(s) of its fluency "
                "corpus removed, and its card lists them under forgotten_users; "
                "run: recbot train-generator to retrain without them"
            )
        return out


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


class _StoreVectors:
    """The vector store as ``hybrid.tune`` reads it on the pool path: the vectors of the
    items asked for, and the nearest items to an interest vector (the ANN index serving asks)."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store

    def vectors(self, ids: Sequence[str]) -> Mapping[str, np.ndarray]:
        return self.store.get_vectors(ids)

    def nearest(self, vector: np.ndarray, n: int, exclude: frozenset[str]) -> list[str]:
        return [hit.id for hit in self.store.search(vector, n, exclude=exclude)]


def _shares_a_run(line: str, review: str) -> bool:
    """Whether ``line`` holds ``_RUN`` words in a row of ``review`` (or all of a shorter review)."""
    words = _words(review)
    n = min(_RUN, len(words))
    if n == 0:
        return False
    grams = {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}
    line_words = _words(line)
    return any(tuple(line_words[i : i + n]) in grams for i in range(len(line_words) - n + 1))


class Index:
    """Every write to a data dir: ingest, tuning, feedback, generator training.

    Args:
        settings: the data dir and knobs.
        storage, store, embedder: the SQLite store, the vector store and the encoder
            (shared with the Recommender that reads them).
    """

    def __init__(self, settings: Settings, *, storage: Storage, store: VectorStore, embedder: Embedder) -> None:
        self.settings = settings
        self.storage = storage
        self.store = store
        self.embedder = embedder

    def ingest(
        self,
        path: str | Path | None,
        *,
        fmt: Format = "auto",
        interactions: str | Path | None = None,
        strict: bool = False,
        holdout_last: bool = False,
        tune: bool = True,
    ) -> IngestReport:
        """Ingest a catalog and/or interactions (``recbot.ingest.ingest``); when the catalog
        or the interactions changed, choose the hybrid's weights again (``tune``) and save
        the pool path's model (``save_collab``). ``tune=False`` defers both to ``recbot
        tune`` (loading in several files, say): the weights in use stay, and say so."""
        report = ingest(
            path,
            storage=self.storage,
            store=self.store,
            embedder=self.embedder,
            fmt=fmt,
            interactions=interactions,
            strict=strict,
            holdout_last=holdout_last,
        )
        self.store.refresh()  # tuning reads the new vectors and histories (ingest bumped ``version``)
        self.storage.invalidate()
        changed = report.interactions or report.added or report.updated or report.removed
        if not tune:
            report.hybrid = f"{self.hybrid_weights().describe()} (kept: tuning deferred; run: recbot tune)"
        elif changed or self.storage.get_meta("hybrid") is None:
            seq = self.storage.interaction_seq()  # before the read: what lands after is replayed from the log
            histories = self.storage.histories()
            report.hybrid = self.tune(histories=histories).describe()
            self.save_collab((histories, seq))
        return report

    def pool_serves(self) -> bool:
        """Whether ``recommend`` takes the pool path (past ``exact_search_max_items``, or
        with ``hybrid_pool``)."""
        return self.settings.hybrid_pool or self.store.exact_view() is None

    def save_collab(self, read: tuple[Mapping[str, Sequence[Interaction]], int] | None = None) -> Path | None:
        """Where the pool path serves: fit the collaborative model and its neighbour lists
        on every stored interaction and save them (``COLLAB_FILE``), so that a serving
        process loads them and catches up through the interaction log instead of building
        them on its first request (at 1M items, ~30 s). Elsewhere, remove a saved one.
        ``read``: the histories already read, and the log's position taken before reading
        them. Returns the file written, or None."""
        path = Path(self.settings.data_dir) / COLLAB_FILE
        if not (self.settings.hybrid and self.pool_serves()):
            path.unlink(missing_ok=True)
            return None
        if read is None:
            seq = self.storage.interaction_seq()  # before the read: what lands after is replayed from the log
            read = (self.storage.histories(), seq)
        histories, seq = read
        model = CollabModel.fit(histories, self.storage.item_ids())
        if not model.users:
            path.unlink(missing_ok=True)
            return None
        model.neighbour_lists(self.settings.pool_neighbours)
        model.save(path, seq=seq)
        return path

    def saved_collab(self, items: Sequence[str]) -> tuple[CollabModel, int] | None:
        """The model ``save_collab`` saved, and the interaction log's position it reflects,
        when it is over exactly ``items``; None when there is none (or it cannot be read)."""
        path = Path(self.settings.data_dir) / COLLAB_FILE
        if not path.is_file():
            return None
        try:
            model, meta = CollabModel.load(path)
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("cannot read the saved collaborative model %s (%s): fitting afresh", path, exc)
            return None
        seq = meta.get("seq")
        if model.items != list(items) or not isinstance(seq, int):
            return None
        return model, seq

    def tune(
        self, *, show_progress: bool = True, histories: Mapping[str, Sequence[Interaction]] | None = None
    ) -> HybridWeights:
        """Choose the hybrid's blend weights on the stored interactions (``histories``, when
        already read) with each user's latest item held out, and store them with the index."""
        from tqdm.auto import tqdm

        view = self.store.exact_view()
        histories = histories if histories is not None else self.storage.histories()
        vectors: np.ndarray | VectorSource
        if view is not None and not self.settings.hybrid_pool:  # the exact hybrid serves: tune it
            ids, vectors = view.ids, view.matrix
        else:  # the pool path serves: tune it, reading only its candidates' vectors
            ids, vectors = self.storage.item_ids(), _StoreVectors(self.store)
        if not len(ids):
            chosen = HybridWeights(dict(DEFAULT_WEIGHTS), "default", 0)
        else:
            chosen = tune(
                histories,
                ids,
                vectors,
                seed=self.settings.seed,
                search=self.settings.tune_search,
                # tuned with the profile serving uses: reviews, recency and dislikes as configured
                review_vectors=lambda user: {i: v for i, (_h, v) in self.storage.review_vectors(user).items()},
                review_weight=self.settings.review_weight,
                half_life_days=self.settings.recency_half_life_days,
                dislike_weight=self.settings.dislike_weight,
                pool_size=self.settings.pool_size,
                progress=lambda it, n: tqdm(
                    it, total=n, desc="Choosing weights", unit="step", disable=not show_progress
                ),
            )
        self.storage.set_meta("hybrid", chosen.to_json())
        return chosen

    def hybrid_weights(self) -> HybridWeights:
        """The blend weights serving uses (stored by ``tune``; this version's defaults before)."""
        stored = HybridWeights.from_json(raw) if (raw := self.storage.get_meta("hybrid")) else None
        if stored is None or stored.source == "default":
            return HybridWeights(dict(DEFAULT_WEIGHTS), "default", stored.users if stored else 0)
        return stored

    def add_feedback(self, user_id: str, item_id: str, liked: bool) -> None:
        """Thumbs up adds the item to the user's history; thumbs down hides it for good."""
        if item_id not in self.storage.items():
            raise UnknownItemError(f"item {item_id!r} is not in the catalog")
        self.storage.add_feedback(user_id, item_id, 1 if liked else -1)
        if liked:
            self.storage.upsert_interactions([Interaction(user_id, item_id, 5.0, None, int(time.time()))])
        else:
            self.storage.remove_interaction(user_id, item_id)
        self.interactions_changed()

    def remove_from_history(self, user_id: str, item_id: str) -> None:
        """Forget one item from a user's history (it may be recommended again)."""
        self.storage.remove_interaction(user_id, item_id)
        self.storage.clear_feedback(user_id, item_id)
        self.interactions_changed()

    def forget(self, user_id: str) -> ForgetReport:
        """Forget ``user_id``: delete their interactions, reviews, feedback and review vectors,
        refit the collaborative model on the next call (``interactions_changed``), and, if a
        generator was trained here while they had reviews, take their review text out of its
        fluency corpus and mark it stale: its card lists them under ``forgotten_users`` until
        ``train-generator`` retrains without them. Blurbs keep being written meanwhile: a
        continuation may only use the reader's own review words and the item's facts
        (``recbot.generation.support``), so another user's review text cannot be quoted."""
        from recbot.generation.writer import FLUENCY_FILE, GENERATOR_DIR, read_card

        reviews = [h.review for h in self.storage.history(user_id) if h.review]
        deleted = self.storage.forget_user(user_id)
        self.interactions_changed()
        (Path(self.settings.data_dir) / COLLAB_FILE).unlink(missing_ok=True)  # it holds their interactions
        report = ForgetReport(user_id, deleted, len(reviews))
        generator = Path(self.settings.data_dir) / GENERATOR_DIR
        card = generator / "card.json"
        if reviews and card.is_file():
            data = read_card(generator)  # an old card's NaN comes back as null
            data["forgotten_users"] = sorted({*data.get("forgotten_users", []), user_id})
            card.write_text(json.dumps(data, indent=2, allow_nan=False), encoding="utf-8")
            corpus = generator / FLUENCY_FILE
            if corpus.is_file():
                lines = corpus.read_text(encoding="utf-8").splitlines()
                kept = [line for line in lines if not any(_shares_a_run(line, r) for r in reviews)]
                corpus.write_text("\n".join(kept) + "\n", encoding="utf-8")
                report.corpus_lines_removed = len(lines) - len(kept)
            report.generator_stale = True
        return report

    def interactions_changed(self) -> None:
        """Who liked what changed: readers refit the collaborative model and popularity."""
        self.storage.set_meta("interactions", uuid.uuid4().hex)

    def train_generator(self, config: TrainConfig | None = None, *, out_dir: str | Path | None = None) -> TrainReport:
        """Train the blurb generator on the catalog and interactions; save it to
        ``DATA_DIR/generator`` (or ``out_dir``)."""
        from recbot.generation.train import TrainConfig, train_generator
        from recbot.generation.writer import GENERATOR_DIR

        catalog = self.storage.items()
        vectors = self.store.get_vectors(list(catalog))
        interactions = [h for user in self.storage.users() for h in self.storage.history(user)]
        target = Path(out_dir) if out_dir else Path(self.settings.data_dir) / GENERATOR_DIR
        return train_generator(catalog, interactions, vectors, target, config or TrainConfig())
