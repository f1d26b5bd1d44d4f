"""The hybrid at scale: 100k and 1M synthetic items (run by hand; minutes, and GBs of memory).

For each size: item vectors clustered around real MiniLM embeddings of generated texts
(as ``benchmarks/retrieval.py`` makes them), ``size / 20`` users with 100 interactions
each drawn with a Zipf popularity skew (1M items: 50k users, 5M interactions), written to
a real Chroma collection and SQLite. Then, timed:

- choosing the hybrid's weights as ``recbot tune`` (and ingest) does, in a fresh process
  (``Recommender.tune``: coordinate ascent; past ``exact_search_max_items`` it ranks the
  pool path's candidates, reading only their vectors from Chroma), with its peak memory;
  then, where the pool serves, saving its collaborative model as ingest does
  (``Index.save_collab``), which the serving process below loads on its first call;
- ``recommend`` p50/p95 on the path that serves at that size (exact up to
  ``exact_search_max_items``, the pool beyond), with and without a category filter;
- at sizes the exact path serves, the pool path forced on: its recall of the exact top 10;
- resident memory (now and peak) of the process that serves: a fresh one that opens the
  data dir as ``recbot`` does;
- feedback: a thumbs-up on a user's first recommendation, then that user's next
  ``recommend``, which brings the collaborative model (and its neighbour lists) up to
  date first (``CollabModel.update``); p50/p95/max of that call, against the first call's
  full fit. The thumbs-ups are taken back after (``remove_from_history``, timed too), and
  the updated model is checked against a fresh fit of the same interactions.

    python benchmarks/scale.py --sizes 100000,1000000
    python benchmarks/scale.py --sizes 1000000 --keep /tmp/scale   # build once, measure again later
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from retrieval import CATEGORIES, make_texts  # benchmarks/retrieval.py, beside this script

from recbot import Settings
from recbot.recommender import Recommender, open_storage, open_store
from recbot.retrieval import hybrid
from recbot.retrieval.embedder import BertEmbedder
from recbot.storage import item_hash
from recbot.types import Interaction, Item


def build(base: np.ndarray, n: int, workdir: Path, seed: int = 0) -> tuple[Settings, np.ndarray, list[str]]:
    settings = Settings.create(data_dir=workdir / f"n{n}")
    saved = workdir / f"n{n}" / "vectors.npy"
    if saved.exists():  # built by an earlier --keep run
        print(f"{n}: reusing {saved.parent}", file=sys.stderr)
        return settings, np.load(saved), [f"x{i}" for i in range(n)]
    rng = np.random.default_rng(seed)
    centers = base[rng.integers(0, len(base), size=n)]
    vectors = centers + rng.normal(size=centers.shape).astype(np.float32) * (0.5 / np.sqrt(base.shape[1]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"x{i}" for i in range(n)]
    cats = [CATEGORIES[i % len(CATEGORIES)] for i in rng.permutation(n)]
    storage, store = open_storage(settings), open_store(settings)
    started = time.perf_counter()
    for s in range(0, n, 20_000):
        store.upsert(ids[s : s + 20_000], vectors[s : s + 20_000], [{"category": c} for c in cats[s : s + 20_000]])
    upsert_s = time.perf_counter() - started
    storage.upsert_items(
        (Item(i, f"Item {i}", "", c), item_hash(Item(i, f"Item {i}", "", c), "bench"))
        for i, c in zip(ids, cats, strict=True)
    )
    users = n // 20
    rank = np.arange(1, n + 1, dtype=np.float64)
    cdf = np.cumsum(rank**-0.9)
    cdf /= cdf[-1]
    popular_order = rng.permutation(n)  # which item holds which popularity rank
    started = time.perf_counter()
    for u0 in range(0, users, 1000):
        rows = []
        for u in range(u0, min(users, u0 + 1000)):
            ranks = np.minimum(np.searchsorted(cdf, rng.random(100)), n - 1)  # Zipf(0.9) draws
            picks = popular_order[np.unique(ranks)]
            rng.shuffle(picks)
            rows += [
                Interaction(f"u{u}", ids[j], float(rng.integers(3, 6)), None, 1_600_000_000 + k * 3600)
                for k, j in enumerate(picks)
            ]
        storage.upsert_interactions(rows)
    interactions_s = time.perf_counter() - started
    storage.set_meta("encoder", "bench")
    storage.set_meta("version", f"scale-{n}")
    print(f"{n}: Chroma {n / upsert_s:,.0f} vectors/s, interactions written in {interactions_s:.0f}s", file=sys.stderr)
    storage.close()
    np.save(saved, vectors)  # last: its presence says the build finished
    return settings, vectors, ids


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)), 1)


def measure(settings: Settings, ids: list[str], requests: int, feedbacks: int) -> dict[str, object]:
    """Tune and serve, each in a fresh process that opens the data dir as ``recbot`` does,
    so that time and memory are the product's, not this script's (which holds every vector)."""
    storage = open_storage(settings)
    histories = storage.histories()
    out: dict[str, object] = {
        "items": len(ids),
        "users": len(histories),
        "interactions": sum(len(h) for h in histories.values()),
    }
    users = sorted(histories)[:requests]
    storage.close()
    del histories
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        out.update(pool.submit(tune, str(settings.data_dir)).result())
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        out.update(pool.submit(serve, str(settings.data_dir), users, feedbacks).result())
    return out


def tune(data_dir: str) -> dict[str, object]:
    """In a fresh process: ``Recommender.tune``, as ``recbot tune`` runs it."""
    settings = Settings.create(data_dir=data_dir)
    rec = Recommender(settings, storage=open_storage(settings), store=open_store(settings), embedder=None)  # type: ignore[arg-type]
    started = time.perf_counter()
    chosen = rec.tune(show_progress=False)
    out: dict[str, object] = {
        "tune_s": round(time.perf_counter() - started, 1),
        "tune_peak_rss_gib": round(peak_rss_bytes() / 2**30, 2),
        "tune_users": chosen.users,
        "tune_ranking": chosen.ranking,
        "weights": chosen.weights,
    }
    started = time.perf_counter()
    saved = rec.index.save_collab()  # as ingest does next, where the pool serves
    if saved is not None:
        out["save_collab_s"] = round(time.perf_counter() - started, 1)
        out["save_collab_gib"] = round(saved.stat().st_size / 2**30, 2)
    out["tune_and_save_peak_rss_gib"] = round(peak_rss_bytes() / 2**30, 2)
    rec.close()
    return out


def serve(data_dir: str, users: list[str], feedbacks: int) -> dict[str, object]:
    """In a fresh process: open the data dir as ``recbot`` does, time ``recommend``."""
    settings = Settings.create(data_dir=data_dir)
    rec = Recommender(settings, storage=open_storage(settings), store=open_store(settings), embedder=None)  # type: ignore[arg-type]
    out: dict[str, object] = {}
    started = time.perf_counter()
    rec.recommend(users[0], k=10, blurbs=False)  # fit the collaborative model (and snapshot) once
    out["first_call_s"] = round(time.perf_counter() - started, 1)
    for label, category in (("all", None), ("category", CATEGORIES[3])):
        rec.recommend(users[-1], k=10, category=category, blurbs=False)  # warm: a filter's first use
        times, strategies = [], set()
        for u in users:
            t0 = time.perf_counter()
            recs = rec.recommend(u, k=10, category=category, blurbs=False)
            times.append((time.perf_counter() - t0) * 1e3)
            strategies.add(recs.strategy)
        out[f"recommend_{label}_p50_ms"] = pct(times, 50)
        out[f"recommend_{label}_p95_ms"] = pct(times, 95)
        out[f"strategy_{label}"] = sorted(strategies)
    if rec.store.exact_view() is not None:  # the exact path serves this size: how close is the pool?
        pool = Recommender(
            settings.replace(hybrid_pool=True),
            storage=open_storage(settings),
            store=open_store(settings),
            embedder=None,  # type: ignore[arg-type]
        )
        recall = []
        for u in users:
            exact = {r.item.id for r in rec.recommend(u, k=10, blurbs=False)}
            pooled = {r.item.id for r in pool.recommend(u, k=10, blurbs=False)}
            recall.append(len(exact & pooled) / max(1, len(exact)))
        out["pool_recall_at_10_vs_exact"] = round(float(np.mean(recall)), 4)
        pool.close()
    out["rss_gib"] = round(psutil.Process().memory_info().rss / 2**30, 2)
    out["peak_rss_gib"] = round(peak_rss_bytes() / 2**30, 2)
    out.update(feedback(rec, users[:feedbacks]))
    rec.close()
    return out


def feedback(rec: Recommender, users: list[str]) -> dict[str, object]:
    """Thumbs-up, then the user's next recommend (the model catches up in it); taken back
    after. Checks the updated model against a fresh fit of the same interactions."""
    liked, after_up, after_back = [], [], []
    for u in users:
        item = rec.recommend(u, k=1, blurbs=False)[0].item.id
        rec.add_feedback(u, item, liked=True)
        t0 = time.perf_counter()
        rec.recommend(u, k=10, blurbs=False)
        after_up.append((time.perf_counter() - t0) * 1e3)
        liked.append((u, item))
    model = current_model(rec)
    items = list(model.items)
    fresh = hybrid.CollabModel.fit(rec.storage.histories(), items)
    m = rec.settings.pool_neighbours if rec.store.exact_view() is None else None
    same = (model.matrix != fresh.matrix).nnz == 0 and (model.transition != fresh.transition).nnz == 0
    if m is not None:
        a, b = model.neighbour_lists(m), fresh.neighbour_lists(m)
        same = same and (a.to_csr() != b.to_csr()).nnz == 0 and bool((a.floor == b.floor).all())
    del fresh
    for u, item in liked:
        rec.remove_from_history(u, item)
        t0 = time.perf_counter()
        rec.recommend(u, k=10, blurbs=False)
        after_back.append((time.perf_counter() - t0) * 1e3)
    return {
        "after_thumbs_up_p50_ms": pct(after_up, 50),
        "after_thumbs_up_p95_ms": pct(after_up, 95),
        "after_thumbs_up_max_ms": pct(after_up, 100),
        "after_removal_p50_ms": pct(after_back, 50),
        "after_removal_max_ms": pct(after_back, 100),
        "updated_equals_fresh_fit": same,
    }


def current_model(rec: Recommender) -> hybrid.CollabModel:
    pool = rec._pool_model()
    if pool is not None:
        return pool.model
    got = rec._hybrid()
    assert got is not None
    return got[1]


def peak_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM (Linux keeps it per address space, so a
    spawned process starts afresh; ru_maxrss there starts at the parent's peak), else
    ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--requests", type=int, default=200, help="recommend calls timed per cell")
    parser.add_argument("--feedbacks", type=int, default=20, help="thumbs-ups timed per size")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary data dirs go")
    parser.add_argument("--keep", type=Path, default=None, help="build here and keep (reused when present)")
    args = parser.parse_args()
    texts = [i.text for i in make_texts(2000, random.Random(0))]
    base = BertEmbedder().encode(texts)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            settings, vectors, ids = build(base, n, args.keep or Path(tmp))
            del vectors
            rows.append(measure(settings, ids, args.requests, args.feedbacks))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(
        "| items | users | interactions | tune s | model saved s | tune + save peak GiB | p50 ms | p95 ms "
        "| p50 ms (category) | p95 ms (category) | strategy | pool recall@10 "
        "| serving RSS GiB | serving peak GiB | first call s "
        "| after a thumbs-up p50 / p95 / max ms | updated = fresh fit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['items']} | {r['users']} | {r['interactions']} | {r['tune_s']} | {r.get('save_collab_s', '-')} "
            f"| {r['tune_and_save_peak_rss_gib']} "
            f"| {r['recommend_all_p50_ms']} "
            f"| {r['recommend_all_p95_ms']} | {r['recommend_category_p50_ms']} | {r['recommend_category_p95_ms']} "
            f"| {','.join(r['strategy_all'])} | {r.get('pool_recall_at_10_vs_exact', '-')} "  # type: ignore[arg-type]
            f"| {r['rss_gib']} | {r['peak_rss_gib']} | {r['first_call_s']} "
            f"| {r['after_thumbs_up_p50_ms']} / {r['after_thumbs_up_p95_ms']} / {r['after_thumbs_up_max_ms']} "
            f"| {r['updated_equals_fresh_fit']} |"
        )
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
