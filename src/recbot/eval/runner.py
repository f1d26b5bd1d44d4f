"""Offline evaluation runs: ``recbot eval retrieval`` (and ``generation``, see text.py).

Writes ``metrics.json`` (deterministic for a seed: no timings in it), ``report.md`` and
PNG plots into the output dir.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recbot.eval.baselines import Components, blend, components
from recbot.eval.data import Dataset, Split
from recbot.eval.ranking import f1_at_k, hit_rate_at_k, mrr_at_k, ndcg_at_k, precision_at_k, recall_at_k

__all__ = ["run_retrieval"]

logger = logging.getLogger(__name__)

KS = (5, 10, 20)
METRICS = {
    "hr": hit_rate_at_k,
    "precision": precision_at_k,
    "recall": recall_at_k,
    "f1": f1_at_k,
    "ndcg": ndcg_at_k,
    "mrr": mrr_at_k,
}
WEIGHT_GRID = {
    "knn": (0.0, 0.5),
    "knn_recent": (0.0, 0.5, 1.0),
    "knn_decay": (0.0, 0.5, 1.0),
    "transition": (0.0, 0.5, 1.0),
    "bert": (0.0, 0.1, 0.25),
    "popularity": (0.0, 0.1),
}


def top_k(scores: np.ndarray, comp: Components, k: int, *, exact: bool = True) -> np.ndarray:
    """Indices of each user's top ``k`` items, training items excluded. ``exact`` breaks
    ties by item order (a stable sort); otherwise a faster partial sort."""
    s = np.array(scores, dtype=np.float64, copy=True)
    rows, cols = comp.seen.nonzero()
    s[rows, cols] = -np.inf
    if exact:
        return np.argsort(-s, axis=1, kind="stable")[:, :k]
    part = np.argpartition(-s, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def measure(
    top: np.ndarray, users: Sequence[str], items: Sequence[str], held: Mapping[str, Any], popularity: np.ndarray
) -> dict[str, float]:
    out: dict[str, float] = {}
    targets = [{held[u].item_id} for u in users]
    for k in KS:
        ranked = [[items[j] for j in row[:k]] for row in top]
        for name, fn in METRICS.items():
            out[f"{name}@{k}"] = round(float(np.mean([fn(r, t, k) for r, t in zip(ranked, targets, strict=True)])), 6)
    top10 = top[:, :10]
    out["coverage@10"] = round(len(np.unique(top10)) / len(items), 6)
    out["avg_popularity@10"] = round(float(popularity[top10].mean()), 4)
    return out


def _embed(texts: Sequence[str], encoder: Any) -> np.ndarray:
    return np.asarray(encoder.encode(list(texts)), dtype=np.float32)


def _components(
    data: Dataset, split: Split, users: Sequence[str], encoder: Any, cache: dict[str, np.ndarray]
) -> Components:
    texts = [split.item_text[i] for i in data.items]
    key = str(hash(tuple(texts)))
    if key not in cache:
        cache[key] = _embed(texts, encoder)
    return components(users, data.items, split.train, cache[key])


def choose_weights(
    comp: Components, users: Sequence[str], items: Sequence[str], held: Mapping[str, Any]
) -> tuple[dict[str, float], float]:
    """Grid search on the validation split (NDCG@10); ties go to the earlier grid point."""
    index = {item: j for j, item in enumerate(items)}
    target = np.array([index[held[u].item_id] for u in users])
    best: tuple[dict[str, float], float] = ({}, -1.0)
    names = list(WEIGHT_GRID)
    for values in itertools.product(*(WEIGHT_GRID[n] for n in names)):
        if not any(values):
            continue
        weights = dict(zip(names, values, strict=True))
        top = top_k(blend(comp, weights), comp, 10, exact=False)
        hit = top == target[:, None]
        ranks = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
        ndcg = float(np.mean(np.where(ranks >= 0, 1.0 / np.log2(np.maximum(ranks, 0) + 2), 0.0)))
        if ndcg > best[1] + 1e-12:
            best = (weights, ndcg)
    return best


def run_retrieval(
    data: Dataset, out_dir: str | Path, *, encoder: Any, seed: int = 0, max_users: int | None = None
) -> dict[str, Any]:
    """Evaluate random, popularity, item-kNN (full and last 20), BERT and hybrid."""
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    users = [u for u in data.users if u in data.test.held_out and u in data.valid.held_out]
    users_test = [u for u in data.users if u in data.test.held_out]
    if max_users:
        users_test = list(rng.choice(users_test, size=min(max_users, len(users_test)), replace=False))
        users = [u for u in users if u in set(users_test)]
    cache: dict[str, np.ndarray] = {}
    logger.info("validation split: choosing hybrid weights on %d users", len(users))
    weights, valid_ndcg = choose_weights(
        _components(data, data.valid, users, encoder, cache), users, data.items, data.valid.held_out
    )
    comp = _components(data, data.test, users_test, encoder, cache)
    pop = comp.popularity
    scores = {
        "random": rng.random((len(users_test), len(data.items))),
        "popularity": np.broadcast_to(pop[None, :], comp.knn.shape),
        "item_knn": comp.knn,
        "item_knn_last20": comp.knn_recent,
        "bert": comp.bert,
        "hybrid": blend(comp, weights),
    }
    methods = {
        name: measure(top_k(s, comp, max(KS)), users_test, data.items, data.test.held_out, pop)
        for name, s in scores.items()
    }
    result = {
        "dataset": data.spec,
        "protocol": {**data.protocol, "evaluated_users": len(users_test), "ks": list(KS)},
        "seed": seed,
        "hybrid_weights": weights,
        "hybrid_validation_ndcg@10": round(valid_ndcg, 6),
        "methods": methods,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    seconds = time.perf_counter() - started
    (out / "report.md").write_text(_report(result, seconds))
    _plot(methods, out / "metrics_by_k.png", data.name)
    logger.info("evaluation done in %.0fs", seconds)
    result["_seconds"] = seconds
    return result


def _report(result: dict[str, Any], seconds: float) -> str:
    cols = [
        "hr@10",
        "ndcg@10",
        "mrr@10",
        "precision@10",
        "recall@10",
        "f1@10",
        "hr@5",
        "ndcg@5",
        "hr@20",
        "ndcg@20",
        "coverage@10",
        "avg_popularity@10",
    ]
    lines = [
        f"# Retrieval evaluation: {result['dataset']}",
        "",
        f"Protocol: {result['protocol']['split']}; {result['protocol']['ranked_items']} items ranked, "
        f"{result['protocol']['evaluated_users']} users, training items excluded. "
        f"Seed {result['seed']}. Runtime {seconds:.0f}s.",
        "",
        f"Hybrid weights (chosen on the validation split, NDCG@10 {result['hybrid_validation_ndcg@10']:.4f}): "
        f"`{json.dumps(result['hybrid_weights'])}`",
        "",
        "| method | " + " | ".join(cols) + " |",
        "| --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for name, m in result["methods"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _plot(methods: Mapping[str, Mapping[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("hr", "ndcg"), strict=True):
        for name, m in methods.items():
            ax.plot(KS, [m[f"{metric}@{k}"] for k in KS], marker="o", label=name)
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric.upper()}@K")
        ax.set_xticks(KS)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}: ranking metrics by K")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
