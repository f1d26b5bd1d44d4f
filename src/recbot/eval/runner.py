"""Offline evaluation runs: ``recbot eval retrieval`` (and ``generation``, see text.py).

Writes ``metrics.json`` (deterministic for a seed: no timings in it), ``report.md`` and
PNG plots into the output dir.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from recbot.config import Settings
from recbot.eval.baselines import Components, components
from recbot.eval.data import Dataset, Split
from recbot.eval.ranking import f1_at_k, hit_rate_at_k, mrr_at_k, ndcg_at_k, precision_at_k, recall_at_k
from recbot.retrieval.hybrid import (
    EASE_LAMBDA,
    KNN_COMPONENTS,
    blend,
    choose_weights,
    pool_rows,
    pool_sample,
    pool_scores,
    top_k,
)
from recbot.retrieval.ranking import mmr, unit_range
from recbot.types import Interaction

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


def _review_vectors(
    train: Mapping[str, Sequence[Interaction]], users: Sequence[str], encoder: Any
) -> dict[str, dict[str, np.ndarray]]:
    """The users' training reviews embedded, as ingest embeds them for serving (user ->
    item -> unit vector). Held-out reviews are not training interactions, so never here."""
    todo = [(u, h.item_id, h.review) for u in users for h in train.get(u, []) if h.review]
    out: dict[str, dict[str, np.ndarray]] = {}
    if todo:
        logger.info("embedding %d training reviews", len(todo))
        vectors = _embed([text for _, _, text in todo], encoder)
        for (user, item, _), vector in zip(todo, vectors, strict=True):
            out.setdefault(user, {})[item] = vector
    return out


def _components(
    data: Dataset,
    split: Split,
    users: Sequence[str],
    encoder: Any,
    cache: dict[str, np.ndarray],
    reviews: Mapping[str, Mapping[str, np.ndarray]],
    settings: Settings,
) -> tuple[Components, np.ndarray]:
    texts = [split.item_text[i] for i in data.items]
    key = str(hash(tuple(texts)))
    if key not in cache:
        cache[key] = _embed(texts, encoder)
    comp = components(users, data.items, split.train, cache[key], review_vectors=reviews, settings=settings)
    return comp, cache[key]


def with_mmr(scores: np.ndarray, seen: Any, vectors: np.ndarray, k: int, settings: Settings) -> np.ndarray:
    """What ``recommend`` returns: MMR (``settings.mmr_lambda``) over each user's top candidates."""
    pool = top_k(scores, seen, settings.candidates, exact=True)
    return np.array(
        [
            row[mmr(vectors[row], unit_range(s[row]), k, settings.mmr_lambda)]
            for row, s in zip(pool, scores, strict=True)
        ]
    )


def pool_top(
    comp: Components,
    weights: Mapping[str, float],
    items: Sequence[str],
    k: int,
    pool_size: int,
    neighbours: int | None = None,
) -> np.ndarray:
    """The hybrid as ``recommend`` ranks it past ``exact_search_max_items`` (the pool path,
    ``Recommender._pool_candidates``), for each user: candidates are the union of the
    ``pool_size`` items nearest the interest vector (exact here, where serving asks the
    ANN index), the best ``pool_size`` of each weighted collaborative component and the
    most popular; they are scored by ``pool_scores``, the cosines z-scored by the fixed
    sample of items (``pool_sample``), as are item-kNN's, whose candidates come from each
    history item's top ``neighbours`` neighbour list (None: from every co-occurrence).
    Best ``k`` first, ties by item id."""
    collab = comp.parts
    if neighbours is not None:
        assert comp.model is not None, "components() keeps the model the pool path needs"
        collab = comp.model.scores(comp.histories, ease="ease" in comp.parts, neighbours=neighbours)
    index = {item: j for j, item in enumerate(items)}
    sample = np.array([index[i] for i in pool_sample(items)], dtype=np.int64)
    order = np.argsort(np.array(items, dtype=object))  # rank of each row's id, for ties
    rank_of = np.empty(len(items), dtype=np.int64)
    rank_of[order] = np.arange(len(items))
    k = min(k, len(items))
    out = np.zeros((comp.seen.shape[0], k), dtype=np.int64)
    for u in range(comp.seen.shape[0]):
        parts = {name: m[u] for name, m in collab.items() if name != "bert"}
        content = comp.parts["bert"][u]
        seen = set(comp.seen[u].indices.tolist())
        nearest = [int(j) for j in np.argsort(-content, kind="stable") if int(j) not in seen][:pool_size]
        rows = np.array(sorted((pool_rows(parts, weights, pool_size) | set(nearest)) - seen), dtype=np.int64)
        rows = rows[np.argsort(rank_of[rows])]  # serving sorts candidates by id
        exact = {name: comp.parts[name][u] for name in KNN_COMPONENTS if weights.get(name)}
        known = {name: (row[rows], row[sample]) for name, row in exact.items()}  # as knn_at gives them
        scores = pool_scores(parts, weights, rows, content[rows], sample, content[sample], known=known)
        top = rows[np.lexsort((np.arange(len(rows)), -scores))][:k].tolist()
        if len(top) < k:  # a pool smaller than k: then the seen items, as top_k puts them last
            listed = set(top)
            for j in [*sorted(seen), *range(len(items))]:
                if j not in listed:
                    listed.add(j)
                    top.append(j)
        out[u] = top[:k]
    return out


def choose(
    comp: Components, items: Sequence[str], held: Mapping[str, Any], users: Sequence[str], search: str = "coordinate"
) -> tuple[dict[str, float], float]:
    """Hybrid weights chosen on the validation split (NDCG@10), searched as ``tune`` does."""
    index = {item: j for j, item in enumerate(items)}
    targets = np.array([index[held[u].item_id] for u in users])
    return choose_weights(
        comp.parts,
        comp.seen,
        targets,
        search=search,
        progress=lambda it, n: tqdm(it, total=n, desc="Choosing weights", unit="step"),
    )


def run_retrieval(
    data: Dataset,
    out_dir: str | Path,
    *,
    encoder: Any,
    seed: int = 0,
    max_users: int | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Evaluate random, popularity, item-kNN (full and last 20), EASE, BERT, hybrid, the
    hybrid as ``recommend`` serves it (MMR-diversified: ``hybrid_mmr``), and the hybrid's
    candidate-pool path, which serves catalogs past ``exact_search_max_items`` (``hybrid_pool``). The BERT profile
    and MMR follow ``settings`` (default ``Settings()``), as ``recommend`` does."""
    settings = settings or Settings()
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
    reviews = _review_vectors(data.test.train, users_test, encoder)  # the validation split's are a subset
    logger.info("validation split: choosing hybrid weights on %d users", len(users))
    weights, valid_ndcg = choose(
        _components(data, data.valid, users, encoder, cache, reviews, settings)[0],
        data.items,
        data.valid.held_out,
        users,
        settings.tune_search,
    )
    comp, vectors = _components(data, data.test, users_test, encoder, cache, reviews, settings)
    pop = comp.popularity
    scores = {
        "random": rng.random((len(users_test), len(data.items))),
        "popularity": np.broadcast_to(pop[None, :], (len(users_test), len(data.items))),
        "item_knn": comp.parts["knn"],
        "item_knn_last20": comp.parts["knn_recent"],
        **({"ease": comp.parts["ease"]} if "ease" in comp.parts else {}),
        "bert": comp.parts["bert"],
        "hybrid": blend(comp.parts, weights),
    }
    tops = {name: top_k(s, comp.seen, max(KS)) for name, s in scores.items()}
    tops["hybrid_mmr"] = with_mmr(scores["hybrid"], comp.seen, vectors, max(KS), settings)
    # the pool path that serves catalogs past exact_search_max_items, forced on here
    tops["hybrid_pool"] = pool_top(comp, weights, data.items, max(KS), settings.pool_size, settings.pool_neighbours)
    methods = {name: measure(top, users_test, data.items, data.test.held_out, pop) for name, top in tops.items()}
    result = {
        "dataset": data.spec,
        "protocol": {
            **data.protocol,
            "evaluated_users": len(users_test),
            "ks": list(KS),
            "ease_lambda": EASE_LAMBDA,
            "reviews_in_profile": sum(len(r) for r in reviews.values()),
        },
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
        "One held-out item per user, so precision@K = hits/K (at most 1/K) and recall@K = HR@K; "
        "F1@K = 2PR/(P+R) follows from them. EASE: λ = "
        f"{result['protocol'].get('ease_lambda', EASE_LAMBDA):g}. The BERT profile is the served one, with "
        f"{result['protocol'].get('reviews_in_profile', 0)} of the users' own training reviews.",
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
