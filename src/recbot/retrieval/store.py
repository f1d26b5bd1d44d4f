"""Item vectors in Chroma (the store of record), searched exactly in process or by HNSW.

Chroma's HNSW index is approximate and its ``where`` filters are slow and approximate at
scale (see benchmarks/retrieval.py). Up to ``exact_max_items`` vectors, a float32 matrix
snapshot of the collection answers queries exactly with one matrix-vector product, and
filters use inverted indexes; beyond that size the query goes to Chroma's ANN index.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from recbot.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

__all__ = ["ChromaStore", "Filters", "Hit", "Snapshot", "VectorStore", "make_client"]

logger = logging.getLogger(__name__)

Scalar = str | int | float | bool
Filters = Mapping[str, Scalar]  # field == value; the field "tags" means "has this tag"
_PAGE = 5000
_WHERE_CACHE = 16  # filters whose matching ids are kept (beyond the exact path)
_FILTERED_ROWS = 200_000  # vectors of small filtered catalogs kept in memory, in all (~300 MB)


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    score: float  # cosine similarity


class VectorStore(Protocol):
    def count(self) -> int: ...
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadatas: Sequence[Mapping[str, Any]]) -> None: ...
    def delete(self, ids: Sequence[str]) -> None: ...
    def get_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]: ...
    def search(
        self, vector: np.ndarray, n: int, *, filters: Filters | None = None, exclude: frozenset[str] = frozenset()
    ) -> list[Hit]: ...
    def refresh(self) -> None: ...
    def ids(self) -> list[str]: ...
    def exact_view(self) -> Snapshot | None: ...
    def ids_where(self, filters: Filters) -> list[str]: ...
    def close(self) -> None: ...


def make_client(path: str | Path | None = None, *, host: str | None = None, port: int = 8000) -> ClientAPI:
    """An embedded PersistentClient at ``path``, or an HttpClient when ``host`` is given.
    Telemetry is off either way (in the client's settings; no environment is touched).

    Raises:
        ConfigError: neither a path nor a host.
        StoreError: the client cannot be made (a path that is not a usable directory, a
            server that does not answer).
    """
    import chromadb

    settings = chromadb.Settings(anonymized_telemetry=False, allow_reset=False)
    if not host and path is None:
        raise ConfigError("a Chroma client needs a path or a host")
    where = f"the Chroma server at {host}:{port}" if host else f"the Chroma directory {path}"
    try:
        if host:
            return chromadb.HttpClient(host=host, port=port, settings=settings)
        return chromadb.PersistentClient(path=str(path), settings=settings)
    except Exception as exc:  # chromadb raises ValueError, OSError, sqlite3 or httpx errors here
        raise StoreError(f"cannot open {where} ({type(exc).__name__}: {exc})") from exc


class Snapshot:
    """The whole collection as a float32 matrix, with lazily built inverted indexes."""

    def __init__(self, ids: list[str], matrix: np.ndarray, metadatas: list[Mapping[str, Any]]) -> None:
        self.ids = ids
        self.matrix = matrix
        self.metadatas = metadatas
        self.row = {item_id: i for i, item_id in enumerate(ids)}
        self._indexes: dict[str, dict[Any, np.ndarray]] = {}

    def rows_where(self, filters: Filters) -> np.ndarray | None:
        rows: np.ndarray | None = None
        for name, value in filters.items():
            index = self._indexes.get(name)
            if index is None:
                index = self._indexes[name] = self._build_index(name)
            found = index.get(value, np.empty(0, dtype=np.int64))
            rows = found if rows is None else np.intersect1d(rows, found, assume_unique=True)
        return rows

    def _build_index(self, name: str) -> dict[Any, np.ndarray]:
        buckets: dict[Any, list[int]] = {}
        for i, md in enumerate(self.metadatas):
            value = md.get(name)
            for v in value if isinstance(value, list) else [value]:
                if v is not None:
                    buckets.setdefault(v, []).append(i)
        return {v: np.asarray(r, dtype=np.int64) for v, r in buckets.items()}


class ChromaStore:
    """Item vectors and filterable metadata in one Chroma collection (cosine space).

    Args:
        client: a chromadb client (PersistentClient or HttpClient), see ``make_client``.
        name: collection name.
        ef_search, max_neighbors: HNSW settings, fixed when the collection is created.
        exact_max_items: up to this many items, search exactly in process.
        vector_cache_items: beyond ``exact_max_items``, keep the vectors of this many
            recently read items in memory (least recently used out first): popular items
            come back in request after request, and reading them from Chroma is most of
            a request's time at a million items.
    """

    def __init__(
        self,
        client: ClientAPI,
        name: str = "items",
        *,
        ef_search: int = 200,
        max_neighbors: int = 32,
        exact_max_items: int = 100_000,
        vector_cache_items: int = 100_000,
    ) -> None:
        self.client = client
        # HNSW settings only take effect when the collection is created.
        self.collection: Collection = client.get_or_create_collection(
            name,
            configuration={
                "hnsw": {
                    "space": "cosine",
                    "ef_search": ef_search,
                    "ef_construction": max(ef_search, 200),
                    "max_neighbors": max_neighbors,
                }
            },
            embedding_function=None,  # never Chroma's default: it would download a model
        )
        self.exact_max_items = exact_max_items
        self._snapshot: Snapshot | None = None
        self._count: int | None = None  # cached until a write or refresh
        self._snapshot_lock = threading.Lock()  # concurrent first queries build it once
        self.vector_cache_items = vector_cache_items
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()  # the ANN path's recent vectors
        self._vectors_lock = threading.Lock()
        self._where: OrderedDict[str, list[str]] = OrderedDict()  # the ANN path's ids_where answers
        self._subsets: OrderedDict[str, tuple[list[str], np.ndarray]] = OrderedDict()  # small filtered catalogs

    def count(self) -> int:
        if self._count is None:
            self._count = int(self.collection.count())
        return self._count

    def _changed(self) -> None:
        self._snapshot = None
        self._count = None
        with self._vectors_lock:
            self._vectors.clear()
            self._where.clear()
            self._subsets.clear()

    def close(self) -> None:
        """Release the client (its HTTP connections, or the embedded database)."""
        self.client.close()  # type: ignore[attr-defined]
        self._changed()

    def refresh(self) -> None:
        """Forget the in-process snapshot (another process may have written)."""
        self._changed()

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadatas: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(ids), _PAGE):
            end = start + _PAGE
            self.collection.upsert(
                ids=list(ids[start:end]),
                embeddings=np.asarray(vectors[start:end], dtype=np.float32),
                metadatas=[_clean_metadata(md) for md in metadatas[start:end]],
            )
        self._changed()

    def delete(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), _PAGE):
            self.collection.delete(ids=list(ids[start : start + _PAGE]))
        self._changed()

    def ids(self) -> list[str]:
        return list(self.snapshot().ids)

    def get_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        snap = self.exact_view()
        if snap is not None:
            return {i: snap.matrix[snap.row[i]] for i in ids if i in snap.row}
        cache = self._vectors
        with self._vectors_lock:
            out = {i: cache[i] for i in ids if i in cache}
            for i in out:
                cache.move_to_end(i)
        missing = [i for i in dict.fromkeys(ids) if i not in out]
        if missing:
            got = self.collection.get(ids=missing, include=["embeddings"])
            read = {i: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], got["embeddings"], strict=True)}  # type: ignore[arg-type]
            out.update(read)
            with self._vectors_lock:
                cache.update(read)
                while len(cache) > self.vector_cache_items:
                    cache.popitem(last=False)
        return {i: out[i] for i in ids if i in out}

    def exact_view(self) -> Snapshot | None:
        """Every vector in memory when the collection is searched exactly, else None."""
        return self.snapshot() if self.count() <= self.exact_max_items else None

    def _read_all(self) -> tuple[list[str], np.ndarray, list[Mapping[str, Any]]]:
        """Every id, vector and metadata row, page by page."""
        ids: list[str] = []
        metas: list[Mapping[str, Any]] = []
        blocks: list[np.ndarray] = []
        include: Any = ["embeddings", "metadatas"]
        for offset in range(0, self.count(), _PAGE):
            got = self.collection.get(include=include, limit=_PAGE, offset=offset)
            ids.extend(got["ids"])
            metas.extend(got["metadatas"] or [])
            blocks.append(np.asarray(got["embeddings"], dtype=np.float32))
        dim = blocks[0].shape[1] if blocks else 0
        matrix = np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)
        return ids, np.ascontiguousarray(matrix), metas

    def snapshot(self) -> Snapshot:
        """Load (once) every vector and metadata row into memory."""
        with self._snapshot_lock:
            return self._load_snapshot()

    def _load_snapshot(self) -> Snapshot:
        if self._snapshot is None:
            ids, matrix, metadatas = self._read_all()
            self._snapshot = Snapshot(ids, matrix, metadatas)
            logger.debug("loaded %d vectors from Chroma", len(ids))
        return self._snapshot

    def search(
        self,
        vector: np.ndarray,
        n: int,
        *,
        filters: Filters | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> list[Hit]:
        """The ``n`` items most similar to ``vector`` that match ``filters``, minus ``exclude``."""
        if self.count() <= self.exact_max_items:
            return self._search_exact(vector, n, filters, exclude)
        return self._search_ann(vector, n, filters, exclude)

    def _search_exact(self, vector: np.ndarray, n: int, filters: Filters | None, exclude: frozenset[str]) -> list[Hit]:
        snap = self.snapshot()
        rows = snap.rows_where(filters) if filters else None
        matrix = snap.matrix if rows is None else snap.matrix[rows]
        ids = snap.ids
        return _nearest(ids.__getitem__ if rows is None else lambda j: ids[rows[j]], matrix, vector, n, exclude)

    def ids_where(self, filters: Filters) -> list[str]:
        """Every item id that matches ``filters`` (``category`` equal, ``tags`` containing, any
        other metadata field equal): the in-memory index up to ``exact_max_items``, Chroma's
        ``where`` beyond. The one place filters are interpreted (``search`` uses the same two)."""
        if self.count() <= self.exact_max_items:
            snap = self.snapshot()
            rows = snap.rows_where(filters) if filters else None
            return list(snap.ids) if rows is None else [snap.ids[r] for r in rows]
        return list(self._ann_ids_where(filters))

    def _ann_ids_where(self, filters: Filters) -> list[str]:
        """``ids_where`` past ``exact_max_items``: Chroma's ``where``, read once per filter
        until the next write (50k ids of 1M take ~0.2 s). The cached list itself: not to be
        changed by callers."""
        key = _filter_key(filters)
        with self._vectors_lock:
            cached = self._where.get(key)
            if cached is not None:
                self._where.move_to_end(key)
        if cached is None:
            cached = list(self.collection.get(where=_chroma_where(filters), include=[])["ids"])
            with self._vectors_lock:
                self._where[key] = cached
                while len(self._where) > _WHERE_CACHE:
                    self._where.popitem(last=False)
        return cached

    def _filtered(self, filters: Filters) -> tuple[list[str], np.ndarray] | None:
        """The ids and vectors of the items matching ``filters`` when there are at most
        ``exact_max_items`` of them (read once per filter until the next write; at most
        ``_FILTERED_ROWS`` rows kept in all), else None. Chroma's filtered HNSW query took
        ~250 ms for a 5% category of 1M items; a product over the 50k vectors takes ~5 ms."""
        ids = self._ann_ids_where(filters)
        if len(ids) > self.exact_max_items:
            return None
        key = _filter_key(filters)
        with self._vectors_lock:
            got = self._subsets.get(key)
            if got is not None:
                self._subsets.move_to_end(key)
                return got
        blocks, order = [], []
        for start in range(0, len(ids), _PAGE):
            page = self.collection.get(ids=ids[start : start + _PAGE], include=["embeddings"])
            order.extend(page["ids"])
            blocks.append(np.asarray(page["embeddings"], dtype=np.float32))
        dim = blocks[0].shape[1] if blocks and blocks[0].ndim == 2 else 0
        got = (order, np.concatenate(blocks) if order else np.zeros((0, dim), dtype=np.float32))
        with self._vectors_lock:
            self._subsets[key] = got
            while sum(len(v[0]) for v in self._subsets.values()) > max(_FILTERED_ROWS, len(order)):
                self._subsets.popitem(last=False)
        return got

    def _search_ann(self, vector: np.ndarray, n: int, filters: Filters | None, exclude: frozenset[str]) -> list[Hit]:
        subset = self._filtered(filters) if filters else None
        if subset is not None:  # a filter that leaves a small catalog: searched exactly, in memory
            return _nearest(subset[0].__getitem__, subset[1], vector, n, exclude)
        got = self.collection.query(
            query_embeddings=np.asarray(vector, dtype=np.float32)[None, :],
            n_results=n + len(exclude),
            where=_chroma_where(filters or {}),
            include=["distances"],
        )
        hits = [
            Hit(i, 1.0 - float(d))
            for i, d in zip(got["ids"][0], got["distances"][0], strict=True)  # type: ignore[index]
            if i not in exclude
        ]
        return hits[:n]


def _nearest(
    id_of: Callable[[int], str], matrix: np.ndarray, vector: np.ndarray, n: int, exclude: frozenset[str]
) -> list[Hit]:
    """The ``n`` rows of ``matrix`` most similar to ``vector`` (as ids: ``id_of(row)``),
    minus ``exclude``, best first (ties by row)."""
    if matrix.shape[0] == 0:
        return []
    scores = matrix @ np.asarray(vector, dtype=np.float32)
    want = min(n + len(exclude), scores.shape[0])
    top = np.argpartition(-scores, want - 1)[:want] if want < scores.shape[0] else np.arange(scores.shape[0])
    top = top[np.argsort(-scores[top], kind="stable")]
    hits = []
    for j in top:
        item_id = id_of(int(j))
        if item_id not in exclude:
            hits.append(Hit(item_id, float(scores[j])))
            if len(hits) == n:
                break
    return hits


def _filter_key(filters: Filters) -> str:
    """One cache key per filter, whatever the order of its fields."""
    return repr(sorted(filters.items()))


def _chroma_where(filters: Filters) -> dict[str, Any] | None:
    """``filters`` as a Chroma ``where`` clause: tags by ``$contains``, the rest by equality."""
    clauses: list[dict[str, Any]] = [{k: {"$contains": v}} if k == "tags" else {k: v} for k, v in filters.items()]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _clean_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Chroma takes scalars and non-empty lists of scalars; drop what it would reject."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, (list, tuple)):
            if value:
                out[key] = [str(v) for v in value]
        elif value is not None:
            out[key] = value
    return out
