import json
from pathlib import Path

import pytest

from recbot.errors import CatalogError
from tests.conftest import TOY_ITEMS, KeywordEmbedder, write_jsonl


def test_first_ingest_counts(toy_recommender) -> None:
    assert toy_recommender.storage.item_count() == len(TOY_ITEMS)
    assert toy_recommender.store.count() == len(TOY_ITEMS)
    assert {u for u in toy_recommender.users()} == {"spacefan", "baker"}


def test_reingest_unchanged_embeds_nothing_and_changes_are_tracked(make_recommender, toy_files, tmp_path: Path) -> None:
    embedder = KeywordEmbedder()
    rec = make_recommender(embedder=embedder)
    first = rec.ingest(toy_files[0], interactions=toy_files[1])
    assert (first.added, first.updated, first.unchanged, first.removed) == (10, 0, 0, 0)
    assert first.interactions == 5 and first.reviews_embedded == 2
    calls = embedder.texts_encoded

    again = rec.ingest(toy_files[0], interactions=toy_files[1])
    assert (again.added, again.updated, again.unchanged, again.removed, again.reviews_embedded) == (0, 0, 10, 0, 0)
    assert embedder.texts_encoded == calls  # nothing re-embedded

    changed = [dict(r) for r in TOY_ITEMS if r["id"] != "h2"]
    changed[0]["description"] = "a brand new description"
    changed.append({"id": "n1", "title": "New Thing"})
    report = rec.ingest(write_jsonl(tmp_path / "v2.jsonl", changed))
    assert (report.added, report.updated, report.unchanged, report.removed) == (1, 1, 8, 1)
    assert embedder.texts_encoded == calls + 2
    assert rec.store.count() == 10 and "h2" not in rec.storage.items()
    assert rec.storage.items()["s1"].description == "a brand new description"


def test_unknown_items_in_interactions_are_rejected_with_their_line(
    make_recommender, toy_files, tmp_path: Path
) -> None:
    inter = write_jsonl(tmp_path / "i.jsonl", [{"user_id": "u", "item_id": "s1"}, {"user_id": "u", "item_id": "ghost"}])
    report = make_recommender().ingest(toy_files[0], interactions=inter)
    assert [str(e) for e in report.rejected] == ["i.jsonl line 2: field 'item_id' 'ghost' is not in the catalog"]
    assert report.interactions == 1


def test_strict_writes_nothing(make_recommender, toy_files, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(toy_files[0].read_text() + json.dumps({"id": "z"}) + "\n")
    rec = make_recommender()
    with pytest.raises(CatalogError, match="1 row") as info:
        rec.ingest(bad, strict=True)
    assert [e.field for e in info.value.rejected] == ["title"]
    assert rec.storage.item_count() == 0 and rec.store.count() == 0


def test_changing_encoder_reembeds_everything(make_recommender, toy_files) -> None:
    make_recommender().ingest(toy_files[0])
    other = KeywordEmbedder("another-encoder")
    report = make_recommender(embedder=other).ingest(toy_files[0])
    assert report.added == 10 and other.texts_encoded == 10


def test_an_ingest_killed_midway_resumes_without_embedding_twice(tmp_path: Path, tiny_bert: Path) -> None:
    """kill -9 a `recbot ingest` part-way; the re-run embeds only what was not recorded,
    and SQLite and Chroma end up holding exactly the catalog."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    import chromadb

    words = ["space", "robot", "bread", "oven", "tent", "boots", "galaxy", "film", "cake", "trail"]
    items = [
        {"id": f"x{n}", "title": f"Thing {n}", "description": " ".join(words[(n * k) % 10] for k in range(1, 30))}
        for n in range(6000)
    ]
    catalog = write_jsonl(tmp_path / "big.jsonl", items)
    data = tmp_path / "d"
    recbot = str(Path(sys.executable).parent / "recbot")
    cmd = [recbot, "--data-dir", str(data), "--encoder", str(tiny_bert), "ingest", str(catalog), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def recorded() -> int:
        try:
            with sqlite3.connect(f"file:{data / 'recbot.sqlite3'}?mode=ro", uri=True) as conn:
                return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])
        except sqlite3.Error:
            return 0

    deadline = time.monotonic() + 120
    while recorded() == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = recorded()
    assert 0 < before < len(items), f"the kill did not land mid-ingest ({before} of {len(items)} recorded)"

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(out.stdout)
    assert report["unchanged"] == before  # recorded before the kill: not embedded again
    assert report["added"] == len(items) - before
    with sqlite3.connect(data / "recbot.sqlite3") as conn:
        in_sqlite = {row[0] for row in conn.execute("SELECT id FROM items")}
    client = chromadb.PersistentClient(path=str(data / "chroma"))
    (collection,) = client.list_collections()
    in_chroma = set(collection.get(include=[])["ids"])
    assert in_sqlite == in_chroma == {i["id"] for i in items}


def test_ingest_with_encoder_workers_stores_the_in_process_vectors(
    make_recommender, toy_files, tmp_path: Path, tiny_bert: Path, monkeypatch
) -> None:
    """Items and reviews encode in two worker processes (chunks of 2 here, so that the toy
    catalog is big enough to start them) and are written in order; the workers stop when
    the ingest returns, and the main process never loads the model."""
    import multiprocessing

    import numpy as np

    import recbot.retrieval.embedder
    from recbot.retrieval.embedder import LazyEmbedder

    monkeypatch.setattr(recbot.retrieval.embedder, "CPU_CHUNK", 2)
    ids = [row["id"] for row in TOY_ITEMS]
    stored = {}
    for workers in (1, 2):
        embedder = LazyEmbedder(str(tiny_bert), workers=workers)
        rec = make_recommender(data_dir=tmp_path / f"workers-{workers}", embedder=embedder)
        before = set(multiprocessing.active_children())
        report = rec.ingest(toy_files[0], interactions=toy_files[1])
        assert (report.added, report.reviews_embedded) == (10, 2)
        assert set(multiprocessing.active_children()) <= before
        assert embedder.loaded == (workers == 1)
        vectors = rec.store.get_vectors(ids)
        reviews = {user: rec.storage.review_vectors(user) for user in ("spacefan", "baker")}
        stored[workers] = [vectors[i] for i in ids] + [v for r in reviews.values() for _, (_, v) in sorted(r.items())]
    # same batches as in-process, one thread per worker instead of two: float32 sums may differ by ulps
    np.testing.assert_allclose(np.vstack(stored[2]), np.vstack(stored[1]), rtol=0, atol=1e-6)
