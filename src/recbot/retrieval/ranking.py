"""Re-ranking and explanations: pure numpy, no I/O."""

from __future__ import annotations

import numpy as np

__all__ = ["mmr", "top_reasons", "unit_range"]


def mmr(vectors: np.ndarray, relevance: np.ndarray, k: int, lambda_: float) -> list[int]:
    """Maximal Marginal Relevance (Carbonell & Goldstein, 1998).

    Greedily picks the candidate maximising
    ``lambda_ * relevance - (1 - lambda_) * max cosine to the ones already picked``.

    Args:
        vectors: (m, d) unit rows of the candidates.
        relevance: (m,) relevance scores (e.g. cosine to the profile).
        k: how many to pick (at most m).
        lambda_: 1 is pure relevance order; 0 is pure diversity.

    Returns:
        Indices into the candidates, in pick order. Ties go to the lower index.
    """
    m = len(relevance)
    k = min(k, m)
    if k <= 0:
        return []
    rel = np.asarray(relevance, dtype=np.float64)
    vecs = np.asarray(vectors, dtype=np.float64)  # similarities to the k picked only, not all m x m
    picked: list[int] = []
    max_sim = np.full(m, -np.inf)
    available = np.ones(m, dtype=bool)
    for _ in range(k):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        score = lambda_ * rel - (1.0 - lambda_) * penalty
        score[~available] = -np.inf
        j = int(np.argmax(score))
        picked.append(j)
        available[j] = False
        max_sim = np.maximum(max_sim, vecs @ vecs[j])
    return picked


def top_reasons(
    candidate: np.ndarray, history: np.ndarray, weights: np.ndarray, n: int, extra: np.ndarray | None = None
) -> list[tuple[int, float]]:
    """The history items that contributed most to ``candidate``: ``(index, cosine)`` pairs.

    Contribution is ``weight * (cosine + extra)``, where ``extra`` is other evidence per
    history item (the hybrid passes the item-kNN cosine); only liked history items
    (weight > 0) with positive evidence can be a reason.
    """
    if len(history) == 0 or n <= 0:
        return []
    sims = np.asarray(history, dtype=np.float64) @ np.asarray(candidate, dtype=np.float64)
    evidence = sims if extra is None else sims + np.asarray(extra, dtype=np.float64)
    contribution = np.asarray(weights, dtype=np.float64) * evidence
    order = np.argsort(-contribution, kind="stable")
    return [(int(i), float(sims[i])) for i in order[:n] if weights[i] > 0 and evidence[i] > 0]


def unit_range(x: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (all ones when constant), so MMR can trade a score on any scale
    against cosines."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return x
    span = float(x.max() - x.min())
    return (x - x.min()) / span if span > 0 else np.ones_like(x)
