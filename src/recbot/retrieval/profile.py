"""The user's interest vector: pure numpy, no I/O.

Weights, documented once here:
- rating: read on a 1-5 scale with 3 as neutral: ``(rating - 3) / 2`` clipped to [-1, 1],
  so 5 -> 1, 4 -> 0.5, 3 -> 0 (ignored), 2 -> -0.5, 1 -> -1. No rating (a like) -> 1.
- disliked items (negative weight) push the profile *away* from them, scaled by
  ``dislike_weight``; a history of dislikes only gives no profile (cold start).
- recency: ``0.5 ** (age / half_life)`` with age measured back from the user's own latest
  interaction (not the wall clock, so old datasets behave), or by position when the
  history has no timestamps.
- a user's own review moves that item's vector towards what they wrote:
  ``normalize(item + review_weight * review)``.

``interest_profile`` puts these together: it is the one definition of a user's interest
vector, used by ``Recommender.recommend`` and by the hybrid's tuning and evaluation
(``recbot.retrieval.hybrid.bert_scores``), so the weights are chosen for what is served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from recbot.config import Settings
from recbot.types import Interaction

__all__ = [
    "InterestProfile",
    "blend_query",
    "build_profile",
    "interest_profile",
    "rating_weight",
    "rating_weights",
    "recency_weights",
    "with_reviews",
]

_DAY = 86_400.0


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def rating_weight(rating: float | None) -> float:
    if rating is None:
        return 1.0
    return float(np.clip((rating - 3.0) / 2.0, -1.0, 1.0))


def rating_weights(ratings: Sequence[float | None]) -> np.ndarray:
    """``rating_weight`` of each rating, vectorised."""
    r = np.array([np.nan if x is None else x for x in ratings], dtype=np.float64)
    return np.where(np.isnan(r), 1.0, np.clip((r - 3.0) / 2.0, -1.0, 1.0))


def recency_weights(timestamps: Sequence[int | None], half_life_days: float) -> np.ndarray:
    """Weights in (0, 1]: 1 for the latest interaction, halving every ``half_life_days``.

    Without timestamps, every 10 interactions back count as one half life.
    """
    n = len(timestamps)
    if n == 0:
        return np.zeros(0)
    if all(t is not None for t in timestamps):
        ts = np.asarray(timestamps, dtype=np.float64)
        age_days = (ts.max() - ts) / _DAY
        return np.asarray(0.5 ** (age_days / half_life_days))
    positions_back = np.arange(n - 1, -1, -1, dtype=np.float64)
    return np.asarray(0.5 ** (positions_back / 10.0))


def with_reviews(
    item_vectors: np.ndarray, review_vectors: Sequence[np.ndarray | None], review_weight: float
) -> np.ndarray:
    """Item vectors moved towards the user's own review of them, where there is one."""
    out = np.array(item_vectors, dtype=np.float32, copy=True)
    for i, review in enumerate(review_vectors):
        if review is not None:
            out[i] = _unit(out[i] + review_weight * review)
    return out


def build_profile(vectors: np.ndarray, weights: np.ndarray, *, dislike_weight: float = 0.5) -> np.ndarray | None:
    """Weighted sum of history vectors, unit length; None when nothing is liked.

    Args:
        vectors: (n, d) unit rows, one per history item.
        weights: (n,) rating x recency weights; negative for disliked items.
        dislike_weight: strength of the push away from disliked items.
    """
    if len(vectors) == 0:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if not np.any(w > 0):
        return None
    w = np.where(w < 0, w * dislike_weight, w)
    profile = (w[:, None] * np.asarray(vectors, dtype=np.float64)).sum(axis=0)
    if np.linalg.norm(profile) == 0:
        return None
    return _unit(profile).astype(np.float32)


@dataclass(frozen=True)
class InterestProfile:
    """A user's interest vector and the history it was built from."""

    history: list[Interaction]  # the interactions whose item has a vector, in the order given
    vectors: np.ndarray  # (len(history), d) their item vectors, moved towards the user's reviews
    weights: np.ndarray  # (len(history),) rating x recency; negative for disliked items
    vector: np.ndarray | None  # unit interest vector; None when nothing is liked (cold start)


def interest_profile(
    history: Sequence[Interaction],
    item_vectors: Mapping[str, np.ndarray],
    review_vectors: Mapping[str, np.ndarray] | None = None,
    *,
    review_weight: float = Settings.review_weight,
    half_life_days: float = Settings.recency_half_life_days,
    dislike_weight: float = Settings.dislike_weight,
) -> InterestProfile:
    """The interest vector ``recommend`` serves: the whole history, each item's vector moved
    towards the user's review of it (``with_reviews``), weighted by rating x recency, disliked
    items pushing away (``build_profile``). Defaults are ``Settings``'.

    Args:
        history: the user's interactions, oldest first; items without a vector are skipped.
        item_vectors: unit item vectors by item id (only the history's are looked up).
        review_vectors: the user's unit review vectors by item id; one counts only where the
            interaction has review text. None: no reviews.
        review_weight: ``Settings.review_weight``.
        half_life_days: ``Settings.recency_half_life_days``.
        dislike_weight: ``Settings.dislike_weight``.

    Returns:
        The kept history, its vectors and weights (the "because you liked" reasons use
        them) and the unit interest vector, or None for it when nothing is liked.

    Example:
        >>> p = interest_profile([Interaction("u", "a", 5.0)], {"a": np.array([1.0, 0.0])})
        >>> p.vector.tolist()
        [1.0, 0.0]
    """
    kept = [h for h in history if h.item_id in item_vectors]
    if not kept:
        return InterestProfile([], np.zeros((0, 1), dtype=np.float32), np.zeros(0), None)
    reviews = review_vectors or {}
    vectors = with_reviews(
        np.stack([np.asarray(item_vectors[h.item_id], dtype=np.float32) for h in kept]),
        [reviews.get(h.item_id) if h.review else None for h in kept],
        review_weight,
    )
    weights = rating_weights([h.rating for h in kept]) * recency_weights([h.timestamp for h in kept], half_life_days)
    return InterestProfile(kept, vectors, weights, build_profile(vectors, weights, dislike_weight=dislike_weight))


def blend_query(profile: np.ndarray | None, query: np.ndarray | None, query_weight: float) -> np.ndarray | None:
    """Mix the history profile with the embedded ask; either may be missing."""
    if profile is None:
        return None if query is None else _unit(np.asarray(query, dtype=np.float32))
    if query is None:
        return profile
    mixed = query_weight * np.asarray(query, dtype=np.float32) + (1.0 - query_weight) * profile
    return _unit(mixed).astype(np.float32)
