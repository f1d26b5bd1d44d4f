"""Score matrices (users x items) for each method on one split: pure numpy/scipy.

random, popularity, item-kNN (cosine between item columns of the binary training
matrix; a user's score for an item is the sum of its similarities to the user's
training items), item-kNN over the last 20 items, BERT content (recbot's profile over
item embeddings) and the hybrid blend of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from recbot.retrieval.profile import build_profile, rating_weight, recency_weights
from recbot.types import Interaction

__all__ = ["Components", "blend", "components", "zscore"]


@dataclass
class Components:
    """Per-user score matrices over the item universe, and the training mask."""

    popularity: np.ndarray  # (n_items,) training histories holding the item
    knn: np.ndarray  # (n_users, n_items)
    knn_recent: np.ndarray  # (n_users, n_items), last 20 training items only
    knn_decay: np.ndarray  # (n_users, n_items), history weighted 0.5 ** (positions back / 5)
    transition: np.ndarray  # (n_users, n_items), what followed the user's recent items in others' sequences
    bert: np.ndarray  # (n_users, n_items)
    seen: sparse.csr_matrix  # (n_users, n_items) training items, to exclude


def _matrix(
    users: Sequence[str],
    index: Mapping[str, int],
    train: Mapping[str, list[Interaction]],
    last: int | None = None,
    half_life: float | None = None,
) -> sparse.csr_matrix:
    """Users x items: 1 per training item (the last ``last`` only), or with ``half_life``
    a weight that halves every ``half_life`` positions back from the latest."""
    rows, cols, vals = [], [], []
    for u, user in enumerate(users):
        hist = train.get(user, [])
        hist = hist[-last:] if last else hist
        for back, h in enumerate(reversed(hist)):
            rows.append(u)
            cols.append(index[h.item_id])
            vals.append(0.5 ** (back / half_life) if half_life else 1.0)
    m = sparse.coo_matrix((np.asarray(vals, dtype=np.float32), (rows, cols)), shape=(len(users), len(index)))
    m.sum_duplicates()
    m = m.tocsr()
    if not half_life:
        m.data[:] = 1.0  # binary, even if an item repeats
    return m


def _transitions(
    train: Mapping[str, list[Interaction]], index: Mapping[str, int], window: int = 3
) -> sparse.csr_matrix:
    """Item -> item counts of 'j came within ``window`` steps after i' in training
    sequences, row-normalised: a first-order sequential signal."""
    rows, cols = [], []
    for hist in train.values():
        ids = [index[h.item_id] for h in hist]
        for a in range(len(ids)):
            for b in range(a + 1, min(a + 1 + window, len(ids))):
                rows.append(ids[a])
                cols.append(ids[b])
    n = len(index)
    t = sparse.coo_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n)).tocsr()
    t.sum_duplicates()
    sums = np.asarray(t.sum(axis=1)).ravel()
    sums[sums == 0] = 1.0
    return sparse.diags(1.0 / sums).astype(np.float32) @ t


def components(
    users: Sequence[str],
    items: Sequence[str],
    train: Mapping[str, list[Interaction]],
    item_vectors: np.ndarray,
    *,
    recent: int = 20,
    half_life_days: float = 365.0,
    profile_last: int | None = 50,
) -> Components:
    index = {item: j for j, item in enumerate(items)}
    x = _matrix(users, index, train)
    popularity = np.asarray(x.sum(axis=0)).ravel().astype(np.float32)
    norms = np.sqrt(popularity)
    norms[norms == 0] = 1.0
    co = (x.T @ x).toarray().astype(np.float32)
    sim = co / norms[:, None] / norms[None, :]
    knn = np.asarray(x @ sim, dtype=np.float32)
    knn_recent = np.asarray(_matrix(users, index, train, recent) @ sim, dtype=np.float32)
    decayed = _matrix(users, index, train, half_life=5.0)
    knn_decay = np.asarray(decayed @ sim, dtype=np.float32)
    last5 = _matrix(users, index, train, last=5, half_life=2.0)
    transition = np.asarray((last5 @ _transitions(train, index)).toarray(), dtype=np.float32)
    bert = np.zeros((len(users), len(items)), dtype=np.float32)
    for u, user in enumerate(users):
        hist = train.get(user, [])
        if profile_last:
            hist = hist[-profile_last:]
        if not hist:
            continue
        vecs = item_vectors[[index[h.item_id] for h in hist]]
        weights = np.array([rating_weight(h.rating) for h in hist]) * recency_weights(
            [h.timestamp for h in hist], half_life_days
        )
        profile = build_profile(vecs, weights)
        if profile is not None:
            bert[u] = item_vectors @ profile
    return Components(popularity, knn, knn_recent, knn_decay, transition, bert, x)


def zscore(m: np.ndarray) -> np.ndarray:
    """Per-user standardisation, so components on different scales can be added."""
    mean = m.mean(axis=1, keepdims=True)
    std = m.std(axis=1, keepdims=True)
    std[std == 0] = 1.0
    return (m - mean) / std


def blend(c: Components, weights: Mapping[str, float]) -> np.ndarray:
    """The hybrid: a weighted sum of per-user z-scored components."""
    out = np.zeros_like(c.knn)
    pop = np.broadcast_to(np.log1p(c.popularity)[None, :], c.knn.shape)
    parts = (
        ("knn", c.knn),
        ("knn_recent", c.knn_recent),
        ("knn_decay", c.knn_decay),
        ("transition", c.transition),
        ("bert", c.bert),
        ("popularity", pop),
    )
    for name, m in parts:
        w = float(weights.get(name, 0.0))
        if w:
            out += w * zscore(np.asarray(m, dtype=np.float32))
    return out
