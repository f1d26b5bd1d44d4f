"""Retrieval benchmark (run by hand; not part of CI). Prints ratios side by side.

1. Ingest throughput (items/s) against the bare encoder on the same texts.
2. recommend() latency without blurbs, p50/p95, at 10k and 100k items, with and
   without a category filter (5% selectivity), on the exact in-process path and on
   Chroma's HNSW path; exact numpy top-k on the same vectors as the floor; HNSW
   recall@10 against the exact answer.

Vectors are realistic, not uniform: MiniLM embeddings of generated item texts, and for
the large sizes noisy copies around them (clusters), since random vectors are HNSW's
worst case and no real catalog looks like them.

    python benchmarks/retrieval.py                      # ingest 2000, sizes 10k and 100k
    python benchmarks/retrieval.py --sizes 10000 --queries 100
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from recbot import Settings
from recbot.ingest import ingest
from recbot.recommender import Recommender, open_storage, open_store
from recbot.retrieval.embedder import BertEmbedder
from recbot.storage import item_hash
from recbot.types import Interaction, Item

ADJ = [
    "quiet",
    "bright",
    "heavy",
    "light",
    "dark",
    "cosy",
    "epic",
    "tiny",
    "vintage",
    "modern",
    "wooden",
    "electric",
    "acoustic",
    "spicy",
    "sweet",
    "rugged",
]
NOUN = [
    "novel",
    "film",
    "guitar",
    "skillet",
    "tent",
    "puzzle",
    "game",
    "album",
    "jacket",
    "kettle",
    "drum",
    "atlas",
    "lamp",
    "bicycle",
    "camera",
    "notebook",
]
TOPIC = [
    "space",
    "mystery",
    "romance",
    "baking",
    "hiking",
    "jazz",
    "horror",
    "history",
    "comedy",
    "robots",
    "dragons",
    "coffee",
    "fishing",
    "chess",
]
CATEGORIES = [f"cat{i:02d}" for i in range(20)]  # 5% selectivity each


def make_texts(n: int, rng: random.Random) -> list[Item]:
    items = []
    for i in range(n):
        a, b, t1, t2 = rng.choice(ADJ), rng.choice(NOUN), rng.choice(TOPIC), rng.choice(TOPIC)
        desc = f"A {a} {b} about {t1} and {t2}, made for people who love {t1}. " * rng.randint(1, 3)
        items.append(
            Item(
                f"i{i}",
                f"The {a.title()} {b.title()} of {t1.title()} #{i}",
                desc.strip(),
                rng.choice(CATEGORIES),
                (t1, t2),
            )
        )
    return items


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def bench_ingest(encoder: BertEmbedder, n: int, workdir: Path) -> dict[str, float]:
    rng = random.Random(0)
    items = make_texts(n, rng)
    texts = [i.text for i in items]
    encoder.encode(texts[:64], show_progress=False)  # warm up
    t0 = time.perf_counter()
    encoder.encode(texts, show_progress=False)
    bare = n / (time.perf_counter() - t0)
    path = workdir / "catalog.jsonl"
    with path.open("w") as fh:
        for item in items:
            fh.write(
                json.dumps(
                    {
                        "id": item.id,
                        "title": item.title,
                        "description": item.description,
                        "category": item.category,
                        "tags": list(item.tags),
                    }
                )
                + "\n"
            )
    settings = Settings.create(data_dir=workdir / "ingest")
    storage, store = open_storage(settings), open_store(settings)  # opened before timing, as the encoder was loaded
    t0 = time.perf_counter()
    report = ingest(path, storage=storage, store=store, embedder=encoder)
    first = time.perf_counter() - t0
    full = n / first
    assert report.added == n
    t0 = time.perf_counter()
    again = ingest(path, storage=storage, store=store, embedder=encoder)
    second = time.perf_counter() - t0
    assert again.unchanged == n
    return {
        "items": n,
        "encoder_items_per_s": bare,
        "ingest_items_per_s": full,
        "ratio": full / bare,
        "ingest_s": first,
        "reingest_s": second,
        "reingest_over_first": second / first,
    }


def build_index(
    base: np.ndarray, n: int, workdir: Path, rng: np.random.Generator
) -> tuple[Settings, np.ndarray, list[str], list[str]]:
    centers = base[rng.integers(0, len(base), size=n)]
    noise = rng.normal(size=centers.shape).astype(np.float32) * (0.5 / np.sqrt(base.shape[1]))
    vectors = centers + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"x{i}" for i in range(n)]
    cats = [CATEGORIES[i % len(CATEGORIES)] for i in rng.permutation(n)]
    settings = Settings.create(data_dir=workdir / f"n{n}")
    storage, store = open_storage(settings), open_store(settings)
    items = [Item(i, f"Item {i}", "", c) for i, c in zip(ids, cats, strict=True)]
    t0 = time.perf_counter()
    store.upsert(ids, vectors, [{"category": c} for c in cats])
    upsert_s = time.perf_counter() - t0
    storage.upsert_items((it, item_hash(it, "bench")) for it in items)
    users = []
    for u in range(50):
        hist = rng.choice(n, size=10, replace=False)
        storage.upsert_interactions(
            Interaction(f"u{u}", ids[h], float(rng.integers(3, 6)), None, 1_700_000_000 + int(k) * 86_400)
            for k, h in enumerate(hist)
        )
        users.append(f"u{u}")
    storage.set_meta("encoder", "bench")
    print(f"  built {n} items: Chroma upsert {n / upsert_s:,.0f} vectors/s")
    return settings, vectors, ids, cats


def bench_latency(settings: Settings, vectors: np.ndarray, cats: list[str], queries: int) -> dict[str, object]:
    out: dict[str, object] = {}
    rec = Recommender(settings, storage=open_storage(settings), store=open_store(settings), embedder=None)  # type: ignore[arg-type]
    n = len(vectors)
    for path, exact_max in (("exact", n), ("hnsw", 0)):
        rec.store.exact_max_items = exact_max  # type: ignore[attr-defined]
        for label, category in (("all", None), ("category", CATEGORIES[3])):
            rec.recommend("u0", k=10, category=category, blurbs=False)  # warm: loads the snapshot once
            times = []
            for q in range(queries):
                t0 = time.perf_counter()
                rec.recommend(f"u{q % 50}", k=10, category=category, blurbs=False)
                times.append((time.perf_counter() - t0) * 1e3)
            out[f"recommend_{path}_{label}_p50_ms"] = round(pct(times, 50), 2)
            out[f"recommend_{path}_{label}_p95_ms"] = round(pct(times, 95), 2)
    # the floor: exact numpy top-10 over the same vectors, and HNSW recall against it
    rng = np.random.default_rng(1)
    store = rec.store
    mask = np.array([c == CATEGORIES[3] for c in cats])
    sub = np.ascontiguousarray(vectors[mask])
    floor_all, floor_cat, recall_all, recall_cat = [], [], [], []
    for _ in range(queries):
        q = vectors[rng.integers(0, n)] + rng.standard_normal(vectors.shape[1], dtype=np.float32) * 0.02
        q /= np.linalg.norm(q)
        t0 = time.perf_counter()
        s = vectors @ q
        top = np.argpartition(-s, 10)[:10]
        floor_all.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        s2 = sub @ q
        top_c = np.argpartition(-s2, 10)[:10]
        floor_cat.append((time.perf_counter() - t0) * 1e3)
        truth = {f"x{i}" for i in top}
        truth_c = {f"x{i}" for i in np.flatnonzero(mask)[top_c]}
        ann = {h.id for h in store._search_ann(q, 10, None, frozenset())}  # type: ignore[attr-defined]
        ann_c = {h.id for h in store._search_ann(q, 10, {"category": CATEGORIES[3]}, frozenset())}  # type: ignore[attr-defined]
        recall_all.append(len(ann & truth) / 10)
        recall_cat.append(len(ann_c & truth_c) / 10)
    out["numpy_top10_all_p50_ms"] = round(pct(floor_all, 50), 2)
    out["numpy_top10_category_p50_ms"] = round(pct(floor_cat, 50), 3)
    out["hnsw_recall@10_all"] = round(statistics.mean(recall_all), 4)
    out["hnsw_recall@10_category"] = round(statistics.mean(recall_cat), 4)
    rec.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ingest-items", type=int, default=2000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    encoder = BertEmbedder()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("== ingest ==")
        print(json.dumps(bench_ingest(encoder, args.ingest_items, work), indent=2))
        base = encoder.encode([i.text for i in make_texts(1000, random.Random(1))], show_progress=False)
        rng = np.random.default_rng(0)
        for n in args.sizes:
            print(f"== recommend latency at {n:,} items ==")
            settings, vectors, _, cats = build_index(base, n, work, rng)
            print(json.dumps(bench_latency(settings, vectors, cats, args.queries), indent=2))


if __name__ == "__main__":
    main()
