from pathlib import Path

import numpy as np
import pytest

from recbot.retrieval.store import ChromaStore, make_client


@pytest.fixture
def vectors() -> tuple[list[str], np.ndarray, list[dict]]:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(60, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = [f"i{i}" for i in range(60)]
    metas = [
        {"category": "even" if i % 2 == 0 else "odd", "tags": ["x"] if i % 3 == 0 else [], "year": 2000 + i % 5}
        for i in range(60)
    ]
    return ids, v, metas


def _store(tmp_path: Path, exact_max: int) -> ChromaStore:
    return ChromaStore(make_client(tmp_path / "chroma"), "items", exact_max_items=exact_max)


def _brute(v: np.ndarray, q: np.ndarray, keep: np.ndarray, n: int) -> list[int]:
    scores = np.where(keep, v @ q, -np.inf)
    return [int(i) for i in np.argsort(-scores)[:n]]


@pytest.mark.parametrize("exact_max", [10_000, 0, 40], ids=["exact", "ann", "ann-small-filter-in-memory"])
def test_search_matches_brute_force_with_filters_and_exclusions(tmp_path: Path, vectors, exact_max: int) -> None:
    ids, v, metas = vectors
    store = _store(tmp_path, exact_max)
    store.upsert(ids, v, metas)
    q = v[5] + 0.1 * v[7]
    q /= np.linalg.norm(q)
    hits = store.search(q, 5)
    assert [h.id for h in hits] == [ids[i] for i in _brute(v, q, np.ones(60, bool), 5)]
    assert hits[0].score == pytest.approx(float(v[5] @ q), abs=1e-5)

    even = np.array([m["category"] == "even" for m in metas])
    hits = store.search(q, 5, filters={"category": "even"}, exclude=frozenset({"i6"}))
    keep = even & (np.arange(60) != 6)
    assert [h.id for h in hits] == [ids[i] for i in _brute(v, q, keep, 5)]

    tagged = np.array(["x" in m["tags"] for m in metas]) & np.array([m["year"] == 2000 for m in metas])
    hits = store.search(q, 3, filters={"tags": "x", "year": 2000})
    assert [h.id for h in hits] == [ids[i] for i in _brute(v, q, tagged, 3)]
    assert store.search(q, 3, filters={"category": "none"}) == []


def test_persistence_delete_and_get_vectors(tmp_path: Path, vectors) -> None:
    ids, v, metas = vectors
    store = _store(tmp_path, 10_000)
    store.upsert(ids, v, metas)
    store.delete(["i0", "i1"])
    reopened = _store(tmp_path, 10_000)
    assert reopened.count() == 58
    got = reopened.get_vectors(["i2", "i0"])
    assert list(got) == ["i2"]
    np.testing.assert_allclose(got["i2"], v[2], rtol=1e-6)
    assert "i0" not in {h.id for h in reopened.search(v[0], 60)}


def test_the_ann_paths_caches_follow_writes(tmp_path: Path, vectors) -> None:
    """Beyond exact_max_items, read vectors and filtered catalogs are kept in memory; a
    write through the store (or a refresh after another process's) drops them."""
    ids, v, metas = vectors
    store = _store(tmp_path, 40)
    store.upsert(ids, v, metas)
    q = v[3]
    assert store.search(q, 1, filters={"category": "odd"})[0].id == "i3"
    np.testing.assert_allclose(store.get_vectors(["i3"])["i3"], v[3], atol=1e-6)
    moved = v.copy()
    moved[3] = -v[3]
    store.upsert(["i3"], moved[3:4], [{**metas[3], "category": "even"}])
    np.testing.assert_allclose(store.get_vectors(["i3"])["i3"], -v[3], atol=1e-6)
    assert "i3" not in store.ids_where({"category": "odd"})
    assert store.search(q, 1, filters={"category": "even"})[0].id != "i3"
    other = _store(tmp_path, 40)  # another process writes; this one refreshes
    other.upsert(["i3"], v[3:4], [metas[3]])
    assert "i3" not in store.ids_where({"category": "odd"})  # still the cached answer
    store.refresh()
    assert "i3" in store.ids_where({"category": "odd"})
    np.testing.assert_allclose(store.get_vectors(["i3"])["i3"], v[3], atol=1e-6)
