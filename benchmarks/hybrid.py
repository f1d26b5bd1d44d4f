"""Cost of the hybrid ranking in ``Recommender.recommend`` (run by hand).

Ingests MovieLens (real interactions; item vectors from a fast hashing encoder, since
latency does not depend on what the vectors mean) into a temporary data dir, which also
chooses the hybrid's weights (timed), then times ``recommend`` for the same users with
the hybrid and with the content-only ranking, interleaved in one run; the pool path (what
serves beyond ``exact_search_max_items``) forced on, with its recall of the exact hybrid's
top 10 and its latency, with and without a category filter; and the fit of the
EASE component (fitted once per collaborative model, on the first request that ranks with
it; absent beyond ``EASE_MAX_ITEMS`` items). With ``--synthetic N``, adds N items and
random interactions around them to see how the per-request cost grows with the catalog.

    python benchmarks/hybrid.py --movielens ../shared/data/ml-latest-small
    python benchmarks/hybrid.py --movielens ../shared/data/ml-latest-small --synthetic 90000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recbot import Settings
from recbot.recommender import Recommender, open_storage, open_store
from recbot.retrieval.hybrid import CollabModel
from recbot.types import Interaction, Item

_WORD = re.compile(r"[a-z0-9]+")


class HashingEncoder:
    """Bag of words hashed into 384 buckets: instant, deterministic, meaningless."""

    model_id = "hashing-bench"
    dim = 384

    def encode(self, texts: list[str], *, show_progress: bool | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                out[i, int(hashlib.md5(word.encode()).hexdigest()[:8], 16) % self.dim] += 1.0
            out[i] /= max(float(np.linalg.norm(out[i])), 1e-9)
        return out


def make(data_dir: Path, **overrides: object) -> Recommender:
    settings = Settings.create(data_dir=data_dir, **overrides)
    return Recommender(settings, storage=open_storage(settings), store=open_store(settings), embedder=HashingEncoder())


def add_synthetic(rec: Recommender, n_items: int, seed: int = 0) -> None:
    """n_items more items, and 20 random interactions on them for each of 5,000 new users."""
    rng = np.random.default_rng(seed)
    items = [Item(f"syn{j}", f"synthetic item {j}", f"word{j % 997}", "synthetic") for j in range(n_items)]
    vectors = rng.standard_normal((n_items, HashingEncoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for start in range(0, n_items, 5000):
        chunk = items[start : start + 5000]
        metadata = [{"category": i.category} for i in chunk]
        rec.store.upsert([i.id for i in chunk], vectors[start : start + 5000], metadata)
        rec.storage.upsert_items((i, "synthetic") for i in chunk)
    picks = rng.integers(0, n_items, size=(5000, 20))
    rec.storage.upsert_interactions(
        Interaction(f"syn-user{u}", f"syn{j}", 4.0, None, 1_600_000_000 + t)
        for u, row in enumerate(picks)
        for t, j in enumerate(row)
    )
    rec.storage.set_meta("version", f"synthetic-{n_items}")


def timed(rec: Recommender, user: str, **kwargs: object) -> float:
    started = time.perf_counter()
    rec.recommend(user, k=10, blurbs=False, **kwargs)  # type: ignore[arg-type]
    return (time.perf_counter() - started) * 1e3


def ease_fit(rec: Recommender) -> dict[str, object]:
    """Seconds to fit EASE on the stored interactions, and which exact form it took."""
    view = rec.store.exact_view()
    if view is None:
        return {"ease": "absent (no exact view)"}
    model = CollabModel.fit(rec.storage.histories().values(), view.ids)
    started = time.perf_counter()
    ease = model.ease
    seconds = time.perf_counter() - started
    if ease is None:
        return {"ease": f"absent ({len(view.ids)} items)"}
    return {"ease": "items x items" if ease.p is not None else "woodbury", "ease_fit_s": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--movielens", type=Path, required=True, help="ml-latest-small directory")
    parser.add_argument("--synthetic", type=int, default=0, help="extra synthetic items")
    parser.add_argument("--users", type=int, default=200, help="users to time")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        rec = make(data_dir)
        started = time.perf_counter()
        report = rec.ingest(args.movielens, fmt="movielens")
        ingest_s = report.seconds
        tune_s = time.perf_counter() - started - report.seconds  # ingest chose the weights after its own work
        print(report.lines()[0], file=sys.stderr)
        if args.synthetic:  # new items and users: choose again
            add_synthetic(rec, args.synthetic)
            rec.close()
            rec = make(data_dir)
            started = time.perf_counter()
            rec.tune(show_progress=False)
            tune_s = time.perf_counter() - started
        weights = rec.hybrid_weights()
        print(weights.describe(), file=sys.stderr)
        content = make(data_dir, hybrid=False)
        users = rec.users()[: args.users]
        timed(rec, users[0])  # fit the collaborative model once, outside the timings
        timed(content, users[0])
        hybrid_ms, content_ms, query_ms, filtered_ms = [], [], [], []
        for user in users:
            hybrid_ms.append(timed(rec, user))
            content_ms.append(timed(content, user))
            filtered_ms.append(timed(rec, user, category="Comedy" if not args.synthetic else "synthetic"))
        # the pool path (what serves beyond exact_search_max_items), forced on, against the exact hybrid
        pool = make(data_dir, hybrid_pool=True)
        timed(pool, users[0])
        pool_ms, pool_filtered_ms, recall = [], [], []
        for user in users:
            exact_top = {r.item.id for r in rec.recommend(user, k=10, blurbs=False)}
            started = time.perf_counter()
            pooled = pool.recommend(user, k=10, blurbs=False)
            pool_ms.append((time.perf_counter() - started) * 1e3)
            pool_filtered_ms.append(timed(pool, user, category="Comedy" if not args.synthetic else "synthetic"))
            recall.append(len(exact_top & {r.item.id for r in pooled}) / max(1, len(exact_top)))
        ask_vector_ms = []
        for user in users[:20]:
            ask_vector_ms.append(timed(rec, user, query="a funny heist"))
            query_ms.append(timed(content, user, query="a funny heist"))

        def p(xs: list[float], q: float) -> float:
            return round(float(np.percentile(xs, q)), 2)

        result = {
            "items": rec.store.count(),
            "users": len(rec.users()),
            "interactions": rec.storage.interaction_count(),
            "ingest_s": round(ingest_s, 1),
            "tune_s": round(tune_s, 1),
            "weights": weights.weights,
            "weights_source": weights.source,
            **ease_fit(rec),
            "hybrid_p50_ms": p(hybrid_ms, 50),
            "hybrid_p95_ms": p(hybrid_ms, 95),
            "content_p50_ms": p(content_ms, 50),
            "content_p95_ms": p(content_ms, 95),
            "hybrid_over_content_p50": round(statistics.median(hybrid_ms) / statistics.median(content_ms), 2),
            "hybrid_category_p50_ms": p(filtered_ms, 50),
            "hybrid_with_ask_p50_ms": p(ask_vector_ms, 50),
            "content_with_ask_p50_ms": p(query_ms, 50),
            "pool_recall_at_10_vs_exact": round(float(np.mean(recall)), 4),
            "pool_p50_ms": p(pool_ms, 50),
            "pool_p95_ms": p(pool_ms, 95),
            "pool_category_p50_ms": p(pool_filtered_ms, 50),
            "pool_category_p95_ms": p(pool_filtered_ms, 95),
        }
        print(json.dumps(result, indent=2))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2))
        rec.close()
        content.close()
        pool.close()


if __name__ == "__main__":
    main()
