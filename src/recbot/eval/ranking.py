"""Ranking metrics: pure functions over one ranked list and a set of relevant items.

Every metric takes ``ranked`` (best first), ``relevant`` and ``k``; with no relevant item
each returns 0. Averages over users are the caller's.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

__all__ = ["f1_at_k", "hit_rate_at_k", "mrr_at_k", "ndcg_at_k", "precision_at_k", "recall_at_k"]


def _hits(ranked: Sequence[str], relevant: Collection[str], k: int) -> int:
    return sum(1 for item in ranked[:k] if item in relevant)


def hit_rate_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """1 if any relevant item is in the top k, else 0."""
    return 1.0 if _hits(ranked, relevant, k) else 0.0


def precision_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Relevant items in the top k, over k (not over the list length: a short list is penalised)."""
    return _hits(ranked, relevant, k) / k if k > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    return _hits(ranked, relevant, k) / len(relevant) if relevant else 0.0


def f1_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    p, r = precision_at_k(ranked, relevant, k), recall_at_k(ranked, relevant, k)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Binary-relevance NDCG: DCG with 1/log2(rank + 1), over the ideal DCG."""
    if not relevant or k <= 0:
        return 0.0
    dcg = sum(1.0 / math.log2(i + 2) for i, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal


def mrr_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """1 / rank of the first relevant item in the top k, else 0."""
    for i, item in enumerate(ranked[:k]):
        if item in relevant:
            return 1.0 / (i + 1)
    return 0.0
