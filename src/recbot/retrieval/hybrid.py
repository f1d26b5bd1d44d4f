"""The hybrid ranking: BERT content similarity plus collaborative signals learned from
the interactions, blended with weights chosen on a validation split. Pure numpy/scipy.

One implementation serves ``Recommender.recommend`` (one user at a time) and the offline
evaluation (all users at once), so the evaluated hybrid is the shipped one.

Components, each a score per item for one user, standardised per user (z-score over all
items) before the weighted sum:

- ``knn``: item-kNN, the sum of the cosines between the user's items and the item in the
  binary users x items matrix X (cosine_ij = co-occurrence_ij / sqrt(pop_i * pop_j)).
  Computed as ``((x / sqrt(pop)) @ X.T @ X) / sqrt(pop)``: two sparse products, no
  item x item matrix, so it scales with the number of interactions, not items squared.
- ``knn_recent``: the same over the user's last 20 items.
- ``knn_decay``: the user's items weighted ``0.5 ** (positions back / 5)``.
- ``transition``: what followed the user's last 5 items (weighted ``0.5 ** (back / 2)``)
  within 3 steps in everybody's sequences, row-normalised: a first-order sequential signal.
- ``ease``: EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019),
  ``x @ B`` with the closed form ``B = I - P @ diagMat(1 / diag(P))``, ``P = (XᵀX + λI)⁻¹``
  (zero diagonal). Exact and dense, so only for catalogs of at most ``EASE_MAX_ITEMS``
  items (beyond, the component is absent); see ``Ease``.
- ``bert``: cosine between the item's text embedding and the user's interest vector,
  built exactly as ``recommend`` builds it (``recbot.retrieval.profile.interest_profile``:
  reviews, rating x recency weights, dislikes, the whole history), so the weights are
  chosen, and evaluated, for the profile that is served.
- ``popularity``: ``log(1 + users who interacted with the item)``.

With a free-text ask, the final score is ``(1 - q) * z(hybrid) + q * z(cosine to the
ask)`` with ``q = Settings.query_weight``, so the ask steers as strongly as it does the
content-only ranking.
"""

from __future__ import annotations

import itertools
import json
import os
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy import linalg, sparse

from recbot.config import Settings
from recbot.retrieval.neighbours import NeighbourLists, replace_rows, top_m_rows
from recbot.retrieval.profile import interest_profile
from recbot.types import Interaction

__all__ = [
    "COMPONENTS",
    "DEFAULT_WEIGHTS",
    "EASE_LAMBDA",
    "EASE_MAX_ITEMS",
    "WEIGHT_GRID",
    "CollabModel",
    "Ease",
    "HybridWeights",
    "bert_scores",
    "blend",
    "choose_weights",
    "history_matrix",
    "pool_scores",
    "score_user",
    "top_k",
    "tune",
    "zscore",
]

COMPONENTS = ("knn", "knn_recent", "knn_decay", "transition", "ease", "bert", "popularity")
KNN_COMPONENTS = ("knn", "knn_recent", "knn_decay")
RECENT = 20  # knn_recent: the last this many items
DECAY_HALF_LIFE = 5.0  # knn_decay: positions back
TRANSITION_LAST, TRANSITION_HALF_LIFE, TRANSITION_WINDOW = 5, 2.0, 3
# EASE's dense matrices hold min(users, items) x items float32s and cost about min(users,
# items)³ to fit. Measured on 2 cores (random 0.5%-dense data, more users than items):
# 6,000 items 1.8 s; 20,000 items 48 s, 1.6 GB kept and a 6.4 GB peak while fitting. With
# fewer users than items it is cheaper (5,000 users x 20,000 items: 5 s). Serving refits it on
# the first call after feedback, so the cap keeps that refit to seconds (MovieLens small: < 1 s).
EASE_MAX_ITEMS = 10_000
# EASE's L2 penalty λ: RecBole's default. In the blend it did as well as 50 or 100 on the
# validation splits of ml-latest-small and Amazon MI (alone, 50 ranked a little better).
EASE_LAMBDA = 250.0
# Used until there are enough users to choose weights on a validation split. Content
# leads (it carries the reasons and works on tiny data); co-occurrence and the
# sequence signal add what people with the same items went on to; popularity is a prior.
DEFAULT_WEIGHTS: dict[str, float] = {"knn_decay": 0.25, "transition": 0.25, "bert": 1.0, "popularity": 0.05}
# 648 points, 2 x the grid without EASE. On the validation splits of ml-latest-small and
# Amazon MI, ease at 1.0 beat 0.5 (and 0.5 and 1.0 together chose the same point as 1.0 alone).
WEIGHT_GRID: dict[str, tuple[float, ...]] = {
    "knn": (0.0, 0.5),
    "knn_recent": (0.0, 0.5, 1.0),
    "knn_decay": (0.0, 0.5, 1.0),
    "transition": (0.0, 0.5, 1.0),
    "ease": (0.0, 1.0),
    "bert": (0.0, 0.1, 0.25),
    "popularity": (0.0, 0.1),
}


def history_matrix(
    histories: Sequence[Sequence[Interaction]],
    index: Mapping[str, int],
    *,
    last: int | None = None,
    half_life: float | None = None,
) -> sparse.csr_matrix:
    """Users x items: 1 per item (of the last ``last`` only), or with ``half_life`` a
    weight that halves every ``half_life`` positions back from the latest. Items the
    model does not know are skipped."""
    rows, cols, vals = [], [], []
    for u, hist in enumerate(histories):
        hist = hist[-last:] if last else hist
        for back, h in enumerate(reversed(hist)):
            j = index.get(h.item_id)
            if j is not None:
                rows.append(u)
                cols.append(j)
                vals.append(0.5 ** (back / half_life) if half_life else 1.0)
    m = sparse.coo_matrix(
        (np.asarray(vals, dtype=np.float32), (rows, cols)), shape=(len(histories), len(index))
    ).tocsr()
    m.sum_duplicates()
    if not half_life:
        m.data[:] = 1.0  # binary, even if an item repeats
    return m


def _sequences(histories: Sequence[Sequence[Interaction]], index: Mapping[str, int]) -> sparse.csr_matrix:
    """Users x positions: each history's known items in order, stored as item row + 1."""
    values, lengths = [], []
    for hist in histories:
        ids = [index[h.item_id] + 1 for h in hist if h.item_id in index]
        values.extend(ids)
        lengths.append(len(ids))
    indptr = np.r_[0, np.cumsum(lengths, dtype=np.int64)]
    positions = np.arange(len(values), dtype=np.int64) - np.repeat(indptr[:-1], lengths)
    width = max(lengths, default=0)
    return sparse.csr_matrix((np.asarray(values, dtype=np.int64), positions, indptr), shape=(len(histories), width))


def _widened(m: sparse.csr_matrix, width: int) -> sparse.csr_matrix:
    return sparse.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], width))


def _row_of(m: sparse.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))


def _binary(sequences: sparse.csr_matrix, n_items: int) -> sparse.csr_matrix:
    """Users x items, 1 where the user holds the item (``history_matrix``'s)."""
    ones = np.ones(sequences.nnz, dtype=np.float32)
    x = sparse.coo_matrix((ones, (_row_of(sequences), sequences.data - 1)), shape=(sequences.shape[0], n_items))
    x = x.tocsr()
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def _transition_counts(sequences: sparse.csr_matrix, n_items: int) -> sparse.csr_matrix:
    """Items x items: how often the column item came within ``TRANSITION_WINDOW`` steps
    after the row item, over the ``sequences`` (``_sequences``)."""
    row, item = _row_of(sequences), sequences.data - 1
    sources, targets = [], []
    for step in range(1, TRANSITION_WINDOW + 1):
        same = row[:-step] == row[step:]
        sources.append(item[:-step][same])
        targets.append(item[step:][same])
    src, dst = np.concatenate(sources), np.concatenate(targets)
    t = sparse.coo_matrix((np.ones(len(src), dtype=np.float32), (src, dst)), shape=(n_items, n_items)).tocsr()
    t.sum_duplicates()
    return t


def _normalised(counts: sparse.csr_matrix) -> tuple[sparse.csr_matrix, np.ndarray]:
    """``counts`` row-normalised, and the row sums (1 for an empty row)."""
    sums = np.asarray(counts.sum(axis=1)).ravel()
    sums[sums == 0] = 1.0
    return (sparse.diags(1.0 / sums).astype(np.float32) @ counts).tocsr(), sums


def _popularity(x: sparse.csr_matrix) -> np.ndarray:
    return np.asarray(x.sum(axis=0)).ravel().astype(np.float32)


def _spd_inverse(a: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix (overwritten): Cholesky, then
    LAPACK's potri, which fills one triangle."""
    potrf, potri = linalg.get_lapack_funcs(("potrf", "potri"), (a,))
    c, info = potrf(a, lower=False, overwrite_a=True, clean=False)
    if info == 0:
        c, info = potri(c, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"not positive definite (LAPACK info {info})")
    upper = np.triu(c)
    return upper + np.triu(upper, 1).T


@dataclass(frozen=True)
class Ease:
    """EASE's item-item model on a binary users x items matrix X, exact.

    A user row x scores ``x @ B = x - (x @ P) / diag(P)``, with ``P = (XᵀX + λI)⁻¹``.
    Kept in whichever of two equal forms is smaller: ``P`` itself (items x items) when
    there are at least as many users as items, else, by the Woodbury identity
    ``P = (I - Xᵀ (XXᵀ + λI)⁻¹ X) / λ``, the users x items ``(XXᵀ + λI)⁻¹ X`` beside X.
    Either way the cost grows with min(users, items)³, not items³.
    """

    lam: float
    diag: np.ndarray  # (n_items,) diag(P)
    p: np.ndarray | None  # items x items P (when items <= users)
    x: sparse.csr_matrix | None  # users x items X (otherwise)
    kx: np.ndarray | None  # users x items (XXᵀ + λI)⁻¹ X (otherwise)

    @classmethod
    def fit(cls, x: sparse.spmatrix, lam: float = EASE_LAMBDA) -> Ease:
        """The model of ``x`` (users x items, binary) with L2 penalty ``lam`` > 0.

        Both forms invert a symmetric positive definite matrix by Cholesky in float32:
        a quarter of the time and half the memory of ``np.linalg.inv`` in float64.
        """
        x = sparse.csr_matrix(x, dtype=np.float32)
        users, items = x.shape
        if items <= users:
            g = (x.T @ x).toarray()
            g[np.diag_indices(items)] += lam
            p = _spd_inverse(g)
            return cls(lam, np.diag(p).astype(np.float64), p, None, None)
        k = (x @ x.T).toarray()
        k[np.diag_indices(users)] += lam
        kx = linalg.cho_solve(linalg.cho_factor(k, overwrite_a=True), x.toarray(), overwrite_b=True)
        diag = (1.0 - np.asarray(x.multiply(kx).sum(axis=0), dtype=np.float64).ravel()) / lam
        return cls(lam, diag, None, x, np.asarray(kx, dtype=np.float32))

    def scores(self, rows: sparse.spmatrix) -> np.ndarray:
        """``rows @ B`` for user rows (n, n_items) over the same items."""
        rows = sparse.csr_matrix(rows, dtype=np.float32)
        dense = rows.toarray()
        if self.p is not None:
            xp = dense @ self.p
        else:
            assert self.x is not None and self.kx is not None
            xp = (dense - (rows @ self.x.T).toarray() @ self.kx) / self.lam
        return np.asarray(dense - xp / self.diag[None, :], dtype=np.float32)


@dataclass
class CollabModel:
    """Collaborative statistics of a set of (training) histories.

    Attributes:
        items: the item universe, in column order.
        matrix: binary users x items matrix of the histories.
        popularity: (n_items,) users holding each item.
        transition: items x items, row-normalised "came within 3 steps after".
        ease_lambda: EASE's L2 penalty; the model itself is fitted on first use.
    """

    items: list[str]
    index: dict[str, int]
    matrix: sparse.csr_matrix
    popularity: np.ndarray
    transition: sparse.csr_matrix
    ease_lambda: float = EASE_LAMBDA
    # what ``update`` needs: the users in row order (sorted; a numpy array, not Python
    # strings, which would pin the freed memory of the histories they came with), each
    # one's known items in time order (a ragged users x positions matrix holding item row +
    # 1), the transition rows' sums of counts; None when fitted without user ids
    user_ids: np.ndarray | None = field(default=None, repr=False)
    sequences: sparse.csr_matrix | None = field(default=None, repr=False)
    transition_sums: np.ndarray | None = field(default=None, repr=False)
    _transposed: sparse.csr_matrix | None = field(default=None, init=False, repr=False)  # lazy Xᵀ
    _ease: Ease | None = field(default=None, init=False, repr=False)  # lazy: only when ranked with
    _neighbours: dict[int, NeighbourLists] = field(default_factory=dict, init=False, repr=False)  # lazy
    _popular: dict[int, set[int]] = field(default_factory=dict, init=False, repr=False)  # lazy

    @classmethod
    def fit(
        cls,
        histories: Mapping[str, Sequence[Interaction]] | Iterable[Sequence[Interaction]],
        items: Sequence[str],
        *,
        ease_lambda: float = EASE_LAMBDA,
    ) -> CollabModel:
        """Statistics of ``histories`` (each in time order) over the universe ``items``.
        Given as a mapping from user id, in sorted order (``Storage.histories``), the model
        can be ``update``d as users' histories change."""
        users = np.array(list(histories), dtype=str) if isinstance(histories, Mapping) else None
        hists = list(histories.values()) if isinstance(histories, Mapping) else list(histories)
        index = {item: j for j, item in enumerate(items)}
        sequences = _sequences(hists, index)
        x = _binary(sequences, len(index))
        counts = _transition_counts(sequences, len(index))
        transition, sums = _normalised(counts)
        return cls(
            list(items),
            index,
            x,
            _popularity(x),
            transition,
            ease_lambda,
            users,
            sequences if users is not None else None,
            sums if users is not None else None,
        )

    def update(self, changed: Mapping[str, Sequence[Interaction]]) -> CollabModel:
        """This model with each user of ``changed`` holding the history given (time order;
        an empty one removes the user), as ``fit`` would give on the new histories, bit for
        bit: rows stay in user order, and only what the changed users touch is recomputed
        (their rows, the items they gained or lost, the transitions from their items, the
        neighbour-list rows those items can reach: ``NeighbourLists.updated``). EASE, when
        used, is refitted on first use."""
        if self.user_ids is None or self.sequences is None or self.transition_sums is None:
            raise ValueError("this model was fitted without user ids: fit it on a mapping of user -> history")
        n_items = len(self.items)
        had = self.user_ids
        asked = np.array(sorted(changed), dtype=str)
        at = np.minimum(np.searchsorted(had, asked), max(len(had) - 1, 0))  # clipped: compared next
        held = had[at] == asked if len(had) else np.zeros(len(asked), dtype=bool)
        position = {str(u): int(r) for u, r in zip(asked[held], at[held], strict=True)}  # changed users' old rows
        fresh = [str(u) for u in asked if changed[str(u)]]  # sorted, with a history now
        users = np.sort(np.concatenate([np.delete(had, at[held]), np.array(fresh, dtype=str)]))
        new_seq = _sequences([changed[u] for u in fresh], self.index)
        # rows of the new matrices: an unchanged user's old row, or a changed user's new one
        fresh_row = {u: k for k, u in enumerate(fresh)}  # in new_seq
        is_fresh = np.isin(users, np.array(fresh, dtype=str))
        select = np.searchsorted(had, users)
        select[is_fresh] = len(had) + np.searchsorted(np.array(fresh, dtype=str), users[is_fresh])
        width = max(self.sequences.shape[1], new_seq.shape[1])
        sequences = sparse.vstack([_widened(self.sequences, width), _widened(new_seq, width)], format="csr")[select]
        x = sparse.vstack([self.matrix, _binary(new_seq, n_items)], format="csr")[select]
        old_rows = np.array(sorted(position.values()), dtype=np.int64)
        old_seq = self.sequences[old_rows]
        # the transition rows from every item the changed users held, before or after
        old_pairs, new_pairs = _transition_counts(old_seq, n_items), _transition_counts(new_seq, n_items)
        sources = np.union1d(np.unique(old_pairs.nonzero()[0]), np.unique(new_pairs.nonzero()[0]))
        was = self.transition[sources]  # its counts, back from the normalised rows and their sums
        counts = sparse.csr_matrix(
            (
                np.rint(was.data * np.repeat(self.transition_sums[sources], np.diff(was.indptr))),
                was.indices,
                was.indptr,
            ),
            shape=was.shape,
            dtype=np.float32,
        )
        counts = (counts + new_pairs[sources] - old_pairs[sources]).tocsr()
        counts.eliminate_zeros()
        rows, sums = _normalised(counts)
        transition = replace_rows(self.transition, sources, rows)
        transition_sums = self.transition_sums.copy()
        transition_sums[sources] = sums
        model = CollabModel(
            self.items, self.index, x, _popularity(x), transition, self.ease_lambda, users, sequences, transition_sums
        )
        if self._neighbours:  # the neighbour lists built so far, patched where they can have changed
            gained_or_lost = set()
            for u in changed:
                old = set(self.sequences[position[u]].data - 1) if u in position else set()
                new = set(new_seq[fresh_row[u]].data - 1) if u in fresh_row else set()
                gained_or_lost |= old ^ new
            moved = np.array(sorted(gained_or_lost), dtype=np.int64)
            if not len(moved):
                model._neighbours.update(self._neighbours)
                return model
            was, now = self._with_both(moved), model._with_both(moved)
            before, after = self._cosine_bounds(moved, was), model._cosine_bounds(moved, now)
            for m, lists in self._neighbours.items():

                def recompute(rows: np.ndarray, m: int = m) -> tuple[sparse.csr_matrix, np.ndarray]:
                    return top_m_rows(*model._knn_factors(rows), m)

                model._neighbours[m] = lists.updated(moved, before, after, now, model._inv, recompute)
        return model

    def save(self, path: str | Path, **meta: object) -> None:
        """Write this model and its neighbour lists to ``path`` (an uncompressed .npz, no
        pickles; written beside and renamed, so a reader sees the old file or the new one),
        with ``meta`` (JSON values) for ``load`` to give back. Only a model fitted on user
        ids (that can be ``update``d) is saved."""
        if self.user_ids is None or self.sequences is None or self.transition_sums is None:
            raise ValueError("only a model fitted on a mapping of user -> history can be saved")
        encoded = [item.encode("utf-8") for item in self.items]
        arrays: dict[str, np.ndarray] = {
            "meta": np.array(json.dumps({**meta, "ease_lambda": self.ease_lambda, "lists": sorted(self._neighbours)})),
            # the ids as one UTF-8 blob and their ends (a fixed-width str array pads every id to the longest)
            "items": np.frombuffer(b"".join(encoded), dtype=np.uint8),
            "items_ends": np.cumsum([len(e) for e in encoded], dtype=np.int64),
            "popularity": self.popularity,
            "user_ids": self.user_ids,
            "transition_sums": self.transition_sums,
        }
        named = {"matrix": self.matrix, "transition": self.transition, "sequences": self.sequences}
        for m, lists in self._neighbours.items():
            named[f"lists{m}"] = lists.to_csr()
            arrays[f"lists{m}_floor"] = lists.floor
        for name, matrix in named.items():
            for part in ("data", "indices", "indptr"):
                arrays[f"{name}_{part}"] = getattr(matrix, part)
            arrays[f"{name}_shape"] = np.array(matrix.shape, dtype=np.int64)
        path = Path(path)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        with partial.open("wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
        os.replace(partial, path)

    @classmethod
    def load(cls, path: str | Path) -> tuple[CollabModel, dict[str, object]]:
        """The model ``save`` wrote to ``path`` (bit for bit, neighbour lists included), and
        its ``meta``.

        Raises:
            OSError, ValueError, KeyError: no such file, or not one ``save`` wrote.
        """
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))

            def csr(name: str) -> sparse.csr_matrix:
                shape = tuple(int(n) for n in f[f"{name}_shape"])
                return sparse.csr_matrix((f[f"{name}_data"], f[f"{name}_indices"], f[f"{name}_indptr"]), shape=shape)

            blob, ends = f["items"].tobytes(), f["items_ends"].tolist()
            items = [blob[a:b].decode("utf-8") for a, b in zip([0, *ends[:-1]], ends, strict=True)]
            model = cls(
                items,
                {item: j for j, item in enumerate(items)},
                csr("matrix"),
                f["popularity"],
                csr("transition"),
                float(meta.pop("ease_lambda")),
                f["user_ids"],
                csr("sequences"),
                f["transition_sums"],
            )
            for m in meta.pop("lists"):
                model._neighbours[int(m)] = NeighbourLists(int(m), csr(f"lists{m}"), f[f"lists{m}_floor"])
        return model, meta

    @property
    def users(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def _inv(self) -> np.ndarray:
        """1 / sqrt(popularity) per item (at least 1 user): item-kNN's cosine scaling."""
        return (1.0 / np.sqrt(np.maximum(self.popularity, 1.0))).astype(np.float32)

    def _knn(self, rows: sparse.csr_matrix) -> np.ndarray:
        # (rows / sqrt(pop)) @ X.T @ X / sqrt(pop), as two sparse x dense products
        inv = self._inv
        dense = rows.toarray() * inv[None, :]
        per_user = self.matrix @ dense.T  # (all users, len(rows))
        return np.asarray((self._matrix_t @ per_user).T * inv[None, :], dtype=np.float32)

    @property
    def ease(self) -> Ease | None:
        """EASE on the training matrix; None beyond ``EASE_MAX_ITEMS`` items or without users."""
        if self._ease is None and 0 < len(self.items) <= EASE_MAX_ITEMS and self.users:
            self._ease = Ease.fit(self.matrix, self.ease_lambda)
        return self._ease

    @property
    def _matrix_t(self) -> sparse.csr_matrix:
        if self._transposed is None:
            self._transposed = self.matrix.T.tocsr()
            self._transposed.sort_indices()  # each item's users in order (``users_with_both``)
        return self._transposed

    def knn_at(self, history: Sequence[Interaction], cols: np.ndarray) -> dict[str, np.ndarray]:
        """One user's three item-kNN components (``scores``' exact values) at the item rows
        ``cols`` only: reads the users of the history's items and of ``cols``, not every
        interaction (the pool path scores its candidates with these)."""
        rows = self._knn_rows([history])
        inv = self._inv
        held = np.unique(rows.indices)
        out = np.zeros((3, len(cols)), dtype=np.float32)
        if len(held) and len(cols):
            coef = rows[:, held].toarray().astype(np.float32) * inv[held][None, :]  # (3, history items)
            per_user = np.asarray(self._matrix_t[held].T @ coef.T)  # (users, 3)
            out = np.asarray(self._matrix_t[cols] @ per_user).T * inv[cols][None, :]
        return {"knn": out[0], "knn_recent": out[1], "knn_decay": out[2]}

    def _knn_rows(self, histories: Sequence[Sequence[Interaction]]) -> sparse.csr_matrix:
        """The three item-kNN variants' history rows, stacked: every item (``knn``), the
        last ``RECENT`` (``knn_recent``), decayed by position (``knn_decay``)."""
        idx = self.index
        return sparse.vstack(
            [
                history_matrix(histories, idx),
                history_matrix(histories, idx, last=RECENT),
                history_matrix(histories, idx, half_life=DECAY_HALF_LIFE),
            ]
        ).tocsr()

    def popular_rows(self, n: int) -> set[int]:
        """The rows of the ``n`` most popular items (the popularity component's best), once."""
        if n not in self._popular:
            self._popular[n] = top_rows(np.log1p(self.popularity), n)
        return self._popular[n]

    def neighbour_lists(self, m: int) -> NeighbourLists:
        """Each item's ``m`` most similar items by the item-kNN cosine (the item itself, at
        1, among them; ties at the last place: the smaller row), computed once per model by
        a sparse product that keeps only each row's top ``m`` (``neighbours.top_m_rows``),
        in memory O(items x m); ``update`` patches them."""
        cached = self._neighbours.get(m)
        if cached is None:
            cached = self._neighbours[m] = NeighbourLists.build(*self._knn_factors(), m)
        return cached

    def _knn_factors(self, rows: np.ndarray | None = None) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
        """Item-kNN's cosine as a product: (items x users, rows scaled) @ (users x items,
        columns scaled); the left factor for ``rows`` only when given."""
        inv = self._inv  # X is binary: a scaled entry is the scale itself
        left_t = self._matrix_t if rows is None else self._matrix_t[rows]
        scale = np.repeat(inv if rows is None else inv[rows], np.diff(left_t.indptr))
        left = sparse.csr_matrix((scale, left_t.indices, left_t.indptr), shape=left_t.shape)
        x = self.matrix
        right = sparse.csr_matrix((inv[x.indices], x.indices, x.indptr), shape=x.shape)
        return left, right

    def _with_both(self, rows: np.ndarray) -> sparse.csr_matrix:
        """For ``rows``, how many users hold both it and each item (float32 counts)."""
        return (self._matrix_t[rows] @ self.matrix).tocsr()

    def _cosine_bounds(self, rows: np.ndarray, both: sparse.csr_matrix) -> sparse.csr_matrix:
        """The item-kNN cosines of ``rows`` to every item (full rows, not lists; ``both``:
        ``_with_both(rows)``), each raised by a bound on the rounding of the float32 sum
        the lists hold: a sum of ``c`` equal terms is within ``(c + 2) * 2**-24`` of exact,
        relatively (one rounding per product and per addition, and the float32 scaling)."""
        bound = both.astype(np.float64)
        inv = self._inv.astype(np.float64)
        slack = 1.0 + (bound.data + 2.0) * 2.0**-23  # twice the bound
        bound.data *= np.repeat(inv[rows], np.diff(bound.indptr)) * inv[bound.indices] * slack
        return bound

    def together(self, items: Sequence[str], item: str) -> tuple[np.ndarray, np.ndarray]:
        """For each of ``items``: how many users have both it and ``item``, and the
        item-kNN cosine between the two (zeros for items the model does not know)."""
        return self.together_many(items, [item])[0]

    def together_many(
        self, items: Sequence[str], targets: Sequence[str], *, neighbours: int | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``together(items, t)`` for each of ``targets``, in one sparse product (a
        popular history item's users are read once, not once per target). With
        ``neighbours`` (m, the pool path), from the top-m neighbour lists the ranking used:
        exact for a pair where either item is among the other's m nearest, zero otherwise."""
        out = [(np.zeros(len(items)), np.zeros(len(items))) for _ in targets]
        known = [(k, self.index[i]) for k, i in enumerate(items) if i in self.index]
        wanted = [(t, self.index[i]) for t, i in enumerate(targets) if i in self.index]
        if not known or not wanted:
            return out
        at, rows = (list(x) for x in zip(*known, strict=True))
        where, cols = (list(x) for x in zip(*wanted, strict=True))
        pop = np.maximum(self.popularity, 1.0)
        scale = np.sqrt(pop[rows][:, None] * pop[cols][None, :])  # cosine = both / scale
        if neighbours is None:
            both = np.asarray((self._matrix_t[rows] @ self._matrix_t[cols].T).toarray())  # (items, targets)
            cos = both / scale
        else:
            lists = self.neighbour_lists(neighbours)
            cos = np.maximum(lists.rows(rows)[:, cols].toarray(), lists.rows(cols)[:, rows].toarray().T)
            cos = cos.astype(np.float64)
            both = np.rint(cos * scale)
        for c, t in enumerate(where):
            counts, cosines = out[t]
            counts[at] = both[:, c]
            cosines[at] = cos[:, c]
        return out

    def users_with_both(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        """For each pair of item ids, how many users hold both (0 for an item the model does
        not know): an ordered search of the one item's users in the other's, so a handful of
        pairs costs milliseconds even between the most popular items of a million."""
        t = self._matrix_t
        out = []
        for a, b in pairs:
            ra, rb = self.index.get(a), self.index.get(b)
            if ra is None or rb is None:
                out.append(0)
                continue
            small, big = sorted((t.indices[t.indptr[r] : t.indptr[r + 1]] for r in (ra, rb)), key=len)
            if not len(small):
                out.append(0)
                continue
            at = np.minimum(np.searchsorted(big, small), len(big) - 1)
            out.append(int(np.count_nonzero(big[at] == small)))
        return out

    def neighbours(self, items: Sequence[str]) -> np.ndarray:
        """Item-kNN score of every item for a pseudo-history of ``items`` ("like X": what people
        who have X also have); zeros when the model knows none of them."""
        idx = [self.index[i] for i in items if i in self.index]
        if not idx:
            return np.zeros(len(self.items), dtype=np.float32)
        row = sparse.csr_matrix(
            (np.ones(len(idx), dtype=np.float32), ([0] * len(idx), idx)), shape=(1, len(self.items))
        )
        return self._knn(row)[0]

    def scores(
        self, histories: Sequence[Sequence[Interaction]], *, ease: bool = True, neighbours: int | None = None
    ) -> dict[str, np.ndarray]:
        """The collaborative components (all but ``bert``), each (len(histories), n_items);
        ``ease`` only when asked for and the catalog is small enough (``EASE_MAX_ITEMS``).
        With ``neighbours`` (m), the item-kNN components sum each history item's top-m
        neighbour list (``neighbour_lists``) instead of its full co-occurrence row: the
        classic k-nearest-neighbour item-kNN, O(history x m) per user instead of a pass over
        every interaction (the pool path, at any catalog size)."""
        h, idx, n = histories, self.index, len(histories)
        rows = self._knn_rows(h)
        binary = rows[:n]
        if neighbours is None:
            knn = self._knn(rows)  # one pass for the three kNN variants
        else:
            held = np.unique(rows.indices)  # only the history items' lists are read
            lists = self.neighbour_lists(neighbours).rows(held)
            knn = np.asarray((rows[:, held].astype(np.float32) @ lists).toarray(), dtype=np.float32)
        last = history_matrix(h, idx, last=TRANSITION_LAST, half_life=TRANSITION_HALF_LIFE)
        out = {
            "knn": knn[:n],
            "knn_recent": knn[n : 2 * n],
            "knn_decay": knn[2 * n :],
            "transition": (last @ self.transition).toarray().astype(np.float32),
            "popularity": np.broadcast_to(np.log1p(self.popularity)[None, :], (n, len(self.items))),
        }
        model = self.ease if ease else None
        if model is not None:
            out["ease"] = model.scores(binary)
        return out


def zscore(m: np.ndarray) -> np.ndarray:
    """Per-row standardisation, so components on different scales can be added. A
    constant row (no signal for that user) becomes zeros."""
    m = np.asarray(m, dtype=np.float32)
    mean = m.mean(axis=-1, keepdims=True)
    std = m.std(axis=-1, keepdims=True)
    std[std == 0] = 1.0
    return (m - mean) / std


def blend(parts: Mapping[str, np.ndarray], weights: Mapping[str, float], *, standardised: bool = False) -> np.ndarray:
    """The hybrid: the weighted sum of the per-user z-scored components (``standardised``:
    ``parts`` are z-scored already)."""
    out: np.ndarray | None = None
    for name in COMPONENTS:
        w = float(weights.get(name, 0.0))
        if w and name in parts:
            z = parts[name] if standardised else zscore(parts[name])
            out = w * z if out is None else out + w * z
    if out is None:
        shape = next(iter(parts.values())).shape
        return np.zeros(shape, dtype=np.float32)
    return out


def top_k(scores: np.ndarray, seen: sparse.spmatrix | None, k: int, *, exact: bool = True) -> np.ndarray:
    """Indices of each row's top ``k`` items, ``seen`` items excluded. ``exact`` breaks
    ties by item order (a stable sort); otherwise a faster partial sort."""
    s = np.array(scores, dtype=np.float64, copy=True)
    if seen is not None:
        rows, cols = seen.nonzero()
        s[rows, cols] = -np.inf
    k = min(k, s.shape[1])
    if exact or k >= s.shape[1]:
        return np.argsort(-s, axis=1, kind="stable")[:, :k]
    part = np.argpartition(-s, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


TUNE_PASSES = 3  # coordinate ascent: at most this many sweeps over the components


def choose_weights(
    parts: Mapping[str, np.ndarray],
    seen: sparse.spmatrix,
    targets: np.ndarray,
    *,
    grid: Mapping[str, Sequence[float]] = WEIGHT_GRID,
    search: str = "coordinate",
    progress: Callable[[Iterable[tuple[float, ...]], int], Iterable[tuple[float, ...]]] | None = None,
    standardised: bool = False,
) -> tuple[dict[str, float], float]:
    """The blend weights on ``grid`` maximising NDCG@10 of the held-out ``targets`` (one
    item column per row; validation items, never test items). Returns the weights and
    their NDCG@10. ``standardised``: ``parts`` are z-scored already (``zscore``).

    ``search="grid"`` tries every grid point (648 of them; ties go to the earlier one).
    ``"coordinate"`` (the default) starts from the grid point nearest ``DEFAULT_WEIGHTS``
    and sets one component at a time to its best grid value, sweeping the components at
    most ``TUNE_PASSES`` times (until a sweep changes nothing): at most 3 x 17 points, so
    its cost is bounded by design, whatever the machine.
    """
    z = dict(parts) if standardised else {name: zscore(m) for name, m in parts.items()}
    names = [n for n in grid if n in z]
    scored: dict[tuple[float, ...], float] = {}
    target_col = np.asarray(targets)[:, None]

    def ndcg(values: tuple[float, ...]) -> float:
        if values not in scored:
            if not any(values):
                scored[values] = -1.0
            else:
                top = top_k(blend(z, dict(zip(names, values, strict=True)), standardised=True), seen, 10, exact=False)
                hit = top == target_col
                ranks = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
                scored[values] = float(np.mean(np.where(ranks >= 0, 1.0 / np.log2(np.maximum(ranks, 0) + 2), 0.0)))
        return scored[values]

    def wrap(points: Iterable[tuple[float, ...]], total: int) -> Iterable[tuple[float, ...]]:
        return progress(points, total) if progress is not None else points

    if search == "grid":
        best: tuple[tuple[float, ...], float] = ((), -1.0)
        for values in wrap(itertools.product(*(grid[n] for n in names)), int(np.prod([len(grid[n]) for n in names]))):
            if ndcg(values) > best[1] + 1e-12:
                best = (values, ndcg(values))
    elif search == "coordinate":
        start = tuple(_nearest(grid[n], DEFAULT_WEIGHTS.get(n, 0.0)) for n in names)
        best = (start, ndcg(start))
        for _ in wrap(range(TUNE_PASSES), TUNE_PASSES):  # type: ignore[arg-type]
            before = best[0]
            for i, name in enumerate(names):
                for v in grid[name]:
                    values = (*best[0][:i], v, *best[0][i + 1 :])
                    if ndcg(values) > best[1] + 1e-12:
                        best = (values, ndcg(values))
            if best[0] == before:
                break
    else:
        raise ValueError(f"search must be 'coordinate' or 'grid', got {search!r}")
    return {n: v for n, v in zip(names, best[0], strict=True) if v}, best[1]


def _nearest(values: Sequence[float], target: float) -> float:
    return min(values, key=lambda v: abs(v - target))


def bert_scores(
    histories: Sequence[Sequence[Interaction]],
    item_vectors: np.ndarray,
    index: Mapping[str, int],
    *,
    review_vectors: Sequence[Mapping[str, np.ndarray] | None] | None = None,
    review_weight: float = Settings.review_weight,
    half_life_days: float = Settings.recency_half_life_days,
    dislike_weight: float = Settings.dislike_weight,
) -> np.ndarray:
    """Cosine of every item to each user's served interest vector (``interest_profile``;
    zeros for a user without one).

    Args:
        histories: each user's interactions, oldest first.
        item_vectors: (n_items, d) unit item vectors, rows in ``index`` order.
        index: item id -> row.
        review_vectors: per user (aligned with ``histories``), their unit review vectors
            by item id, or None; None: nobody's reviews.
        review_weight, half_life_days, dislike_weight: as ``Settings``' (the defaults).
    """
    profiles = np.zeros((len(histories), item_vectors.shape[1]), dtype=np.float32)
    for u, hist in enumerate(histories):
        vectors = {h.item_id: item_vectors[index[h.item_id]] for h in hist if h.item_id in index}
        profile = interest_profile(
            hist,
            vectors,
            review_vectors[u] if review_vectors is not None else None,
            review_weight=review_weight,
            half_life_days=half_life_days,
            dislike_weight=dislike_weight,
        ).vector
        if profile is not None:
            profiles[u] = profile
    return np.asarray(profiles @ item_vectors.T, dtype=np.float32)


@dataclass(frozen=True)
class HybridWeights:
    """Blend weights and where they came from; stored with the index (SQLite meta)."""

    weights: dict[str, float]
    source: str  # "validation": chosen on held-out items; "default": too few users to choose
    users: int  # users the choice was made on (or that were eligible, for "default")
    validation_ndcg: float | None = None  # NDCG@10 of the chosen weights on the validation items
    ranking: str = "exact"  # what the NDCG ranked: every item ("exact"), or the pool path's candidates ("pool")

    def to_json(self) -> str:
        return json.dumps(
            {
                "weights": self.weights,
                "source": self.source,
                "users": self.users,
                "ndcg@10": self.validation_ndcg,
                "ranking": self.ranking,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> HybridWeights:
        d = json.loads(text)
        return cls(
            {str(k): float(v) for k, v in d["weights"].items()},
            d["source"],
            int(d["users"]),
            d.get("ndcg@10"),
            d.get("ranking", "exact"),
        )

    def describe(self) -> str:
        shown = ", ".join(f"{k} {v:g}" for k, v in self.weights.items())
        if self.source == "validation":
            how = "" if self.ranking == "exact" else ", ranked among the pool path's candidates"
            return (
                f"hybrid weights chosen on {self.users} users' last items (NDCG@10 {self.validation_ndcg:.4f}{how}): "
                f"{shown}"
            )
        return f"hybrid weights: defaults ({self.users} users with 3+ items, {MIN_TUNE_USERS} needed to tune): {shown}"


MIN_TUNE_USERS = 50  # users with 3+ interactions needed to choose weights on their last items
MAX_TUNE_CELLS = 40_000_000  # users x items per component matrix while tuning (~160 MB each)


class VectorSource(Protocol):
    """Item vectors read on demand, for tuning the pool path (past ``exact_search_max_items``
    no process holds every vector; ``recbot.index.Index.tune`` passes the vector store)."""

    def vectors(self, ids: Sequence[str]) -> Mapping[str, np.ndarray]: ...
    def nearest(self, vector: np.ndarray, n: int, exclude: frozenset[str]) -> list[str]: ...


TUNE_BLOCK = 16  # users whose collaborative components (every item) are computed at once


def tune(
    histories: Mapping[str, Sequence[Interaction]],
    items: Sequence[str],
    item_vectors: np.ndarray | VectorSource,
    *,
    min_users: int = MIN_TUNE_USERS,
    max_users: int = 2000,
    seed: int = 0,
    search: str = "coordinate",
    progress: Callable[[Iterable[tuple[float, ...]], int], Iterable[tuple[float, ...]]] | None = None,
    review_vectors: Callable[[str], Mapping[str, np.ndarray] | None] | None = None,
    review_weight: float = Settings.review_weight,
    half_life_days: float = Settings.recency_half_life_days,
    dislike_weight: float = Settings.dislike_weight,
    pool_size: int = Settings.pool_size,
) -> HybridWeights:
    """Choose blend weights on the stored interactions: each user's latest item (3+
    interactions) is held out as the validation target, everything else trains the
    collaborative statistics, and the grid point with the best NDCG@10 wins. With fewer
    than ``min_users`` such users, DEFAULT_WEIGHTS. At most ``max_users`` users (a seeded
    sample), fewer for large catalogs so the work stays bounded. The ``bert`` component is
    the served interest vector (``interest_profile``), so pass the settings ``recommend``
    uses.

    Two rankings can be tuned, the two that serve:
    - ``item_vectors`` an array: the exact hybrid, every item scored;
    - ``item_vectors`` a ``VectorSource``: the pool path (``pool_scores``), each user's
      items ranked among the candidates the pool would gather for them, which reads only
      the vectors of those candidates, not every item's (``_pool_parts``).

    Args:
        histories: every user's interactions, each in time order.
        items: the item universe (rows of ``item_vectors``).
        item_vectors: (n_items, d) unit text embeddings, or where to read them.
        review_vectors: a user id's unit review vectors by item id (called only for the
            sampled users); None: no reviews.
        review_weight, half_life_days, dislike_weight: ``Settings``' (the defaults).
        search: how ``choose_weights`` searches the grid ("coordinate" or "grid").
        pool_size: the pool path's ``Settings.pool_size``.
    """
    index = {item: j for j, item in enumerate(items)}
    eligible = sorted(u for u, h in histories.items() if len(h) >= 3 and h[-1].item_id in index)
    if len(eligible) < min_users:
        return HybridWeights(dict(DEFAULT_WEIGHTS), "default", len(eligible))
    cap = max(min_users, min(max_users, MAX_TUNE_CELLS // max(len(items), 1)))
    if len(eligible) > cap:
        rng = np.random.default_rng(seed)
        eligible = sorted(rng.choice(eligible, size=cap, replace=False).tolist())
    held = set(eligible)
    train = {u: list(h[:-1]) if u in held else list(h) for u, h in histories.items()}
    model = CollabModel.fit(train.values(), items)
    del train  # the model holds what it needs
    hists = [list(histories[u][:-1]) for u in eligible]
    reviews = [review_vectors(u) for u in eligible] if review_vectors is not None else None
    profile_settings = dict(review_weight=review_weight, half_life_days=half_life_days, dislike_weight=dislike_weight)
    targets = np.array([index[histories[u][-1].item_id] for u in eligible])
    if isinstance(item_vectors, np.ndarray):
        parts = model.scores(hists)
        parts["bert"] = bert_scores(hists, item_vectors, index, review_vectors=reviews, **profile_settings)
        for name in list(parts):  # one at a time, each raw matrix freed as its z-scores replace it
            parts[name] = zscore(parts[name])
        seen = history_matrix(hists, index)
        ranking = "exact"
    else:
        parts, seen, targets = _pool_parts(model, hists, reviews, targets, item_vectors, pool_size, profile_settings)
        ranking = "pool"
    weights, ndcg = choose_weights(parts, seen, targets, search=search, progress=progress, standardised=True)
    return HybridWeights(weights, "validation", len(eligible), round(ndcg, 6), ranking)


def _pool_parts(
    model: CollabModel,
    hists: Sequence[Sequence[Interaction]],
    reviews: Sequence[Mapping[str, np.ndarray] | None] | None,
    targets: np.ndarray,
    source: VectorSource,
    pool_size: int,
    profile_settings: Mapping[str, float],
) -> tuple[dict[str, np.ndarray], sparse.csr_matrix, np.ndarray]:
    """The components of ``tune`` for the pool path: for each user, the candidates the pool
    gathers whatever the weights (the best ``pool_size`` of every collaborative component,
    the most popular, the ``pool_size`` nearest to the interest vector by
    ``source.nearest``), and their z-scores as ``pool_scores`` takes them (the cosines and
    item-kNN by the fixed sample of items, exact item-kNN values as ``knn_at`` gives them).

    Returns users x candidates matrices (one column per candidate, padded to the widest
    user), the padding as the ``seen`` matrix (never ranked), and each target's column
    (-1 when the pool misses it: a miss for every weight, as serving would miss it).
    """
    items, index = model.items, model.index
    sample = pool_sample(items)
    got = source.vectors(sample)
    sample = [i for i in sample if i in got]
    sample_rows = np.array([index[i] for i in sample], dtype=np.int64)
    sample_matrix = np.stack([got[i] for i in sample]) if sample else None
    every = dict.fromkeys(WEIGHT_GRID, 1.0)  # candidates for any weights: every component's best
    columns: list[dict[str, np.ndarray]] = []  # per user: each component's z-scores at its candidates
    found_at = np.full(len(hists), -1, dtype=np.int64)
    for start in range(0, len(hists), TUNE_BLOCK):
        block = hists[start : start + TUNE_BLOCK]
        parts = model.scores(block)
        for b, hist in enumerate(block):
            u = start + b
            one = {name: m[b] for name, m in parts.items()}
            seen = {index[h.item_id] for h in hist if h.item_id in index}
            profile = interest_profile(
                hist,
                source.vectors([h.item_id for h in hist]),
                reviews[u] if reviews is not None else None,
                **profile_settings,
            ).vector
            rows_found = pool_rows(one, every, pool_size, model=model)
            if profile is not None:
                exclude = frozenset(items[j] for j in seen)
                rows_found |= {index[i] for i in source.nearest(profile, pool_size, exclude) if i in index}
            ids = [items[j] for j in sorted(rows_found - seen)]
            vectors = source.vectors(ids)
            ids = [i for i in ids if i in vectors]
            rows = np.array([index[i] for i in ids], dtype=np.int64)
            if profile is not None and ids and sample_matrix is not None:
                content = np.stack([vectors[i] for i in ids]) @ profile
                sample_content = sample_matrix @ profile
            else:
                content, sample_content = np.zeros(len(rows)), np.zeros(len(sample_rows))
            known = {name: (one[name][rows], one[name][sample_rows]) for name in KNN_COMPONENTS}
            z = pool_components(one, rows, content, sample_rows, sample_content, known)
            columns.append({name: cand for name, (cand, _samp) in z.items()})
            hit = np.flatnonzero(rows == targets[u])
            found_at[u] = hit[0] if len(hit) else -1
    sizes = [len(c["bert"]) for c in columns]  # bert is always among them
    width = max(sizes) + 1  # a column of padding at least
    out = {name: np.zeros((len(hists), width), dtype=np.float32) for name in columns[0]}
    pad = np.ones((len(hists), width), dtype=bool)
    for u, (c, size) in enumerate(zip(columns, sizes, strict=True)):
        for name, values in c.items():
            out[name][u, :size] = values
        pad[u, :size] = False
    return out, sparse.csr_matrix(pad), found_at


POOL_SAMPLE = 2048  # items whose cosines give the catalog's mean and spread on the pool path


def pool_sample(items: Iterable[str], size: int = POOL_SAMPLE) -> list[str]:
    """The fixed sample of items whose scores stand in for the catalog's mean and spread
    on the pool path: the ``size`` items first by the crc32 of their ids (the same on
    every machine, and stable as items come and go)."""
    items = list(items)
    keys = np.fromiter((zlib.crc32(i.encode("utf-8")) for i in items), dtype=np.int64, count=len(items))
    if len(items) > size:  # only the items at or below the size-th smallest key can be in it
        keep = np.flatnonzero(keys <= np.partition(keys, size - 1)[size - 1])
        items, keys = [items[j] for j in keep], keys[keep]
    return [i for _k, i in sorted(zip(keys.tolist(), items, strict=True))][:size]


def pool_rows(
    parts: Mapping[str, np.ndarray], weights: Mapping[str, float], n: int, *, model: CollabModel | None = None
) -> set[int]:
    """The pool's collaborative candidates: the rows of the best ``n`` items of each
    weighted component of one user's ``parts`` (``CollabModel.scores``, one row each),
    and of popularity whatever its weight (with ``model``: its cached ``popular_rows``)."""
    found: set[int] = set()
    for name, scores in parts.items():
        if name == "bert" or not (weights.get(name) or name == "popularity"):
            continue
        if name == "popularity" and model is not None:
            found |= model.popular_rows(n)
            continue
        found |= top_rows(np.asarray(scores).ravel(), n)
    return found


def top_rows(scores: np.ndarray, n: int) -> set[int]:
    """The rows of the ``n`` largest of ``scores`` (ties as ``np.argpartition`` breaks them)."""
    return {int(j) for j in np.argpartition(-scores, min(n, len(scores) - 1))[:n]}


def pool_components(
    parts: Mapping[str, np.ndarray],
    rows: np.ndarray,
    content: np.ndarray,
    sample_rows: np.ndarray,
    sample_content: np.ndarray,
    known: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    names: Iterable[str] = COMPONENTS,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each of ``names``' z-scores at the candidate ``rows`` and at ``sample_rows``, as
    ``pool_scores`` blends them (float64): ``bert`` (``content``) and the components in
    ``known`` by the sample's mean and spread, the rest of ``parts`` by the catalog's."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    known = known or {}
    for name in names:
        if name == "bert" or name in known:
            cand, samp = (content, sample_content) if name == "bert" else known[name]
            cand, samp = np.asarray(cand, dtype=np.float64), np.asarray(samp, dtype=np.float64)
            mean, std = float(samp.mean()), float(samp.std())
        elif name in parts:
            full = np.asarray(parts[name]).ravel()
            cand, samp = full[rows].astype(np.float64), full[sample_rows].astype(np.float64)
            mean, std = float(full.mean()), float(full.std())
        else:
            continue
        std = std or 1.0
        out[name] = ((cand - mean) / std, (samp - mean) / std)
    return out


def pool_scores(
    parts: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    rows: np.ndarray,
    content: np.ndarray,
    sample_rows: np.ndarray,
    sample_content: np.ndarray,
    ask: np.ndarray | None = None,
    sample_ask: np.ndarray | None = None,
    query_weight: float = 0.6,
    known: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """``score_user``'s blend for the candidate item ``rows`` only (the pool path, where
    not every item's score is at hand).

    ``parts`` are one user's collaborative components over every item (``CollabModel.
    scores``, one row each), so their means and spreads are the catalog's, as in
    ``score_user``. Components in ``known`` (name -> values at ``rows``, values at
    ``sample_rows``; the item-kNN ones, ``CollabModel.knn_at``) and the cosines
    (``content`` to the interest vector, ``ask`` to the ask) are known for the candidates
    only; their means and spreads come from a fixed sample of items (``sample_rows``, with
    ``sample_content``/``sample_ask``), and so do those of the hybrid score before the
    ask is mixed in (``pool_components``).
    """
    out = np.zeros(len(rows), dtype=np.float64)
    sample_out = np.zeros(len(sample_rows), dtype=np.float64)
    weighted = [name for name in COMPONENTS if weights.get(name)]
    z = pool_components(parts, rows, content, sample_rows, sample_content, known, weighted)
    for name, (cand, samp) in z.items():
        w = float(weights[name])
        out += w * cand
        sample_out += w * samp
    if ask is None or sample_ask is None:
        return out
    mean, std = float(sample_out.mean()), float(sample_out.std()) or 1.0
    ask_mean, ask_std = float(np.mean(sample_ask)), float(np.std(sample_ask)) or 1.0
    return (1.0 - query_weight) * (out - mean) / std + query_weight * (np.asarray(ask) - ask_mean) / ask_std


def score_user(
    model: CollabModel,
    weights: Mapping[str, float],
    history: Sequence[Interaction],
    content: np.ndarray,
    ask: np.ndarray | None = None,
    query_weight: float = 0.6,
) -> np.ndarray:
    """One user's hybrid score for every item of ``model``: the weighted sum of the
    z-scored components, with ``content`` (cosine of each item to the user's interest
    vector) as ``bert``. With ``ask`` (cosine of each item to the free-text ask), the
    result is ``(1 - query_weight) * z(hybrid) + query_weight * z(ask)``."""
    parts = {name: m[0] for name, m in model.scores([history], ease=bool(weights.get("ease"))).items()}
    parts["bert"] = np.asarray(content, dtype=np.float32)
    score = blend(parts, weights)
    if ask is None:
        return score
    return (1.0 - query_weight) * zscore(score) + query_weight * zscore(np.asarray(ask, dtype=np.float32))
