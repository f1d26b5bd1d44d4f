"""Choosing the hybrid's weights: coordinate ascent against the full grid, side by side
(run by hand, on ingested data dirs).

For each data dir, ``recbot.retrieval.hybrid.tune`` runs twice on the same stored
interactions, vectors and user sample, once per search, and the table gives the
validation NDCG@10 each reaches, their seconds and the ratios.

    python benchmarks/tuning.py --data-dir /tmp/ml --data-dir /tmp/amazon
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from recbot import Recommender
from recbot.retrieval import hybrid


def measure(data_dir: Path) -> dict[str, Any]:
    with Recommender.open(data_dir) as rec:
        view = rec.store.exact_view()
        assert view is not None, f"{data_dir}: nothing ingested"
        histories = rec.storage.histories()
        reviews = {u: {i: v for i, (_h, v) in rec.storage.review_vectors(u).items()} for u in histories}
        settings = rec.settings
        out: dict[str, Any] = {"data_dir": str(data_dir), "items": len(view.ids), "users": len(histories)}
        for search in ("grid", "coordinate"):
            started = time.perf_counter()
            chosen = hybrid.tune(
                histories,
                view.ids,
                view.matrix,
                seed=settings.seed,
                search=search,
                review_vectors=reviews.get,
                review_weight=settings.review_weight,
                half_life_days=settings.recency_half_life_days,
                dislike_weight=settings.dislike_weight,
                progress=None,
            )
            seconds = time.perf_counter() - started
            out[search] = {
                "validation_ndcg10": chosen.validation_ndcg,
                "weights": chosen.weights,
                "seconds": round(seconds, 2),
                "tuning_users": chosen.users,
            }
        out["ndcg_ratio"] = round(out["coordinate"]["validation_ndcg10"] / out["grid"]["validation_ndcg10"], 4)
        out["speedup"] = round(out["grid"]["seconds"] / out["coordinate"]["seconds"], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, action="append", required=True)
    args = parser.parse_args()
    rows = [measure(d) for d in args.data_dir]
    print("| data | items | tuning users | grid NDCG@10 | grid s | coordinate NDCG@10 | coordinate s | ratio | speed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        g, c = r["grid"], r["coordinate"]
        print(
            f"| {r['data_dir']} | {r['items']} | {g['tuning_users']} | {g['validation_ndcg10']} | {g['seconds']} "
            f"| {c['validation_ndcg10']} | {c['seconds']} | {r['ndcg_ratio']} | x{r['speedup']} |"
        )
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
