"""Item-item neighbour lists: each item's ``m`` most similar items by the item-kNN cosine,
kept sparse (items x m), built by ``sparse_dot_topn`` and patched row by row when
interactions change (``CollabModel.update``).

A list is defined by its values alone, so the same interactions give the same lists
however they were reached (a fresh build, or any sequence of updates): the items more
similar than the row's ``m+1``-th most similar one. That is the ``m`` largest, less a run
of values tied at the ``m``-th place (``sparse_dot_topn`` would keep *some* of the run, as
its heap happens to, which depends on the order the sums were touched).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

__all__ = ["NeighbourLists", "equal_term_sums", "replace_rows", "top_m_rows"]


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))  # rows are independent: any count gives the same lists


def top_m_rows(left: sparse.csr_matrix, right: sparse.csr_matrix, m: int) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Each row of ``left @ right`` cut to its values above its floor: the ``m+1``-th
    largest positive value (0 when there are at most ``m``). That is the row's ``m``
    largest, less any run of values tied at the ``m``-th place; and the floors.

    Defined by the values alone, and the values are sums of equal terms for item-kNN
    (every entry of a row of ``left`` is the same, and of a column of ``right``), so the
    lists do not depend on the order the product visits them: a row recomputed after an
    update equals the row a fresh build gives. (``sparse_dot_topn`` keeps *a* top ``m``,
    breaking ties as its heap happens to; dropping the tied run costs nothing to compute,
    where keeping it whole or cutting it by column needs the row's whole run.)
    """
    from sparse_dot_topn import sp_matmul_topn

    top = sp_matmul_topn(left, right, top_n=m + 1, threshold=0.0, sort=True, n_threads=_threads()).tocsr()
    lengths = np.diff(top.indptr)
    over = np.flatnonzero(lengths > m)
    floor = np.zeros(left.shape[0], dtype=np.float32)
    floor[over] = top.data[top.indptr[over] + m]  # values come largest first
    keep = top.data > np.repeat(floor, lengths)
    indptr = np.r_[0, np.cumsum(keep, dtype=top.indptr.dtype)][top.indptr]  # entries kept before each row
    return sparse.csr_matrix((top.data[keep], top.indices[keep], indptr), shape=top.shape, dtype=np.float32), floor


def replace_rows(m: sparse.csr_matrix, rows: np.ndarray, new: sparse.csr_matrix) -> sparse.csr_matrix:
    """``m`` with its ``rows`` replaced by the rows of ``new``, in that order."""
    select = np.arange(m.shape[0])
    select[rows] = m.shape[0] + np.arange(len(rows))
    return sparse.vstack([m, new], format="csr")[select]


@dataclass(frozen=True)
class NeighbourLists:
    """Every item's top-``m`` list (``top_m_rows``): a base matrix, the rows replaced
    since (``patch``, whose rows are the items ``patched``, sorted), and each row's floor
    (the value a cosine must exceed to be listed). Updates share the base's structure and
    copy only what changes; past ``items / 16`` patched rows a new base is written."""

    m: int
    base: sparse.csr_matrix
    floor: np.ndarray
    patched: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    patch: sparse.csr_matrix | None = None

    @classmethod
    def build(cls, left: sparse.csr_matrix, right: sparse.csr_matrix, m: int) -> NeighbourLists:
        base, floor = top_m_rows(left, right, m)
        return cls(m, base, floor)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.base.shape[0]), int(self.base.shape[1]))

    def rows(self, rows: Sequence[int] | np.ndarray) -> sparse.csr_matrix:
        """The lists of ``rows``, as a (len(rows), items) matrix."""
        rows = np.asarray(rows, dtype=np.int64)
        out = self.base[rows]
        if self.patch is None:
            return out
        where = np.flatnonzero(np.isin(rows, self.patched))
        if not len(where):
            return out
        return replace_rows(out, where, self.patch[np.searchsorted(self.patched, rows[where])])

    def to_csr(self) -> sparse.csr_matrix:
        """Every list, as one items x items matrix."""
        return self.base if self.patch is None else replace_rows(self.base, self.patched, self.patch)

    def updated(
        self,
        moved: np.ndarray,
        before: sparse.csr_matrix,
        after: sparse.csr_matrix,
        counts: sparse.csr_matrix,
        inv: np.ndarray,
        recompute: Callable[[np.ndarray], tuple[sparse.csr_matrix, np.ndarray]],
    ) -> NeighbourLists:
        """These lists after the items ``moved`` gained or lost users: every other pair's
        cosine stands, so another item's list can only change at a moved item's column.

        ``before``/``after`` bound the moved items' cosines to every item from above
        (``CollabModel._cosine_bounds``; moved items x items), ``counts`` are their
        users-with-both after, ``inv`` the item-kNN scaling after. A row where a moved item
        was listed and stays above the floor only takes that item's new value (the same
        float32 sum a build gives: ``equal_term_sums``); a row where a moved item may cross
        the floor, and each moved item's own row, is recomputed (``recompute``).
        """
        if not len(moved):
            return self
        pairs = []
        for bounds in (before, after):
            at, j = _entries(bounds)
            hit = bounds.data >= self.floor[j]
            pairs.append(at[hit] * self.shape[0] + j[hit])
        key = np.unique(np.concatenate(pairs))
        at, j = key // self.shape[0], key % self.shape[0]
        outside = ~np.isin(j, moved)
        at, j = at[outside], j[outside]
        rows = np.unique(j)
        old = _values_at(self.rows(rows), np.searchsorted(rows, j), moved[at])
        both = _values_at_keys(counts, at * self.shape[0] + j).astype(np.int64)
        listed = (old > 0) & (both > 0)
        new = np.zeros(len(j), dtype=np.float32)
        new[listed] = equal_term_sums(inv[j[listed]], inv[moved[at[listed]]], both[listed])
        redo = np.union1d(moved, np.unique(j[~listed | (new <= self.floor[j])]))
        keep = ~np.isin(j, redo)
        return self._with_values(j[keep], moved[at[keep]], new[keep]).replaced(redo, *recompute(redo))

    def _with_values(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> NeighbourLists:
        """These lists with the listed entries at (``rows``, ``cols``) set to ``values``."""
        if not len(rows):
            return self
        patch = self.patch
        in_patch = np.isin(rows, self.patched)
        if patch is not None and in_patch.any():
            at = np.searchsorted(self.patched, rows[in_patch])
            patch = _set_values(patch, at, cols[in_patch], values[in_patch])
        base = _set_values(self.base, rows[~in_patch], cols[~in_patch], values[~in_patch])
        return NeighbourLists(self.m, base, self.floor, self.patched, patch)

    def replaced(self, rows: np.ndarray, lists: sparse.csr_matrix, floor: np.ndarray) -> NeighbourLists:
        """These lists with ``rows`` replaced by ``lists``' rows (and their floors)."""
        new_floor = self.floor.copy()
        new_floor[rows] = floor
        if self.patch is None:
            patched, patch = rows, lists
        else:
            kept = ~np.isin(self.patched, rows)
            ids = np.concatenate([self.patched[kept], rows])
            order = np.argsort(ids, kind="stable")
            patched, patch = ids[order], sparse.vstack([self.patch[np.flatnonzero(kept)], lists], format="csr")[order]
        merged = NeighbourLists(self.m, self.base, new_floor, patched, sparse.csr_matrix(patch))
        if len(patched) <= self.shape[0] // 16:
            return merged
        return NeighbourLists(self.m, merged.to_csr(), new_floor)


def _set_values(m: sparse.csr_matrix, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> sparse.csr_matrix:
    """``m`` with its stored entries at (``rows``, ``cols``) set to ``values``: the values
    copied, the structure shared."""
    if not len(rows):
        return m
    starts = m.indptr[rows]
    lengths = m.indptr[rows + 1] - starts
    position = np.repeat(starts - np.r_[0, np.cumsum(lengths)][:-1], lengths) + np.arange(lengths.sum())
    position = position[m.indices[position] == np.repeat(cols, lengths)]  # each pair's one entry
    data = m.data.copy()
    data[position] = values
    return sparse.csr_matrix((data, m.indices, m.indptr), shape=m.shape)


def _values_at(m: sparse.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``m``'s values at the (row, column) pairs, zeros where nothing is stored."""
    if not len(rows):
        return np.zeros(0, dtype=m.dtype)
    return np.asarray(m[rows, cols]).ravel()


def _values_at_keys(m: sparse.csr_matrix, keys: np.ndarray) -> np.ndarray:
    """``m``'s values at the entries keyed ``row * columns + column`` (zeros where none is
    stored): a sort and a search, where scipy's element lookup scans long rows per key."""
    rows, cols = _entries(m)
    stored = rows.astype(np.int64) * m.shape[1] + cols
    order = np.argsort(stored)
    at = np.minimum(np.searchsorted(stored, keys, sorter=order), len(stored) - 1) if len(stored) else None
    out = np.zeros(len(keys), dtype=m.dtype)
    if at is not None:
        found = stored[order[at]] == keys
        out[found] = m.data[order[at[found]]]
    return out


def _entries(m: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Each stored entry's row and column."""
    return np.repeat(np.arange(m.shape[0]), np.diff(m.indptr)), m.indices


def equal_term_sums(a: np.ndarray, b: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """For each pair, the float32 sum of ``counts`` terms ``a * b``, computed by the same
    ``sparse_dot_topn`` product the lists are built with, on a problem holding only these
    sums (pair p: ``counts[p]`` entries of ``a[p]`` in row p, met by as many of ``b[p]``
    in column p). The lists' values are such sums; computed the same way, they come out
    the same, bit for bit, which a float64 formula would not promise."""
    from sparse_dot_topn import sp_matmul_topn

    n = len(counts)
    offsets = np.r_[0, np.cumsum(counts)]
    terms = int(offsets[-1])
    left = sparse.csr_matrix((np.repeat(a, counts).astype(np.float32), np.arange(terms), offsets), shape=(n, terms))
    right = sparse.csr_matrix(
        (np.repeat(b, counts).astype(np.float32), np.repeat(np.arange(n), counts), np.arange(terms + 1)),
        shape=(terms, n),
    )
    sums = sp_matmul_topn(left, right, top_n=1, threshold=0.0, n_threads=_threads()).tocsr()
    out = np.zeros(n, dtype=np.float32)
    out[np.repeat(np.arange(n), np.diff(sums.indptr))] = sums.data
    return out
