"""The read path, as small pure stages ``Recommender.recommend`` runs in order:

1. **context** -- the ask's interpretation (``recbot.ask``) merged with a follow-up's
   previous constraints (``merge_follow_up``), the filters it implies (``type_tag``,
   ``check_filter_fields``), what it rules out (``excluded_by``);
2. **candidates** -- the hybrid's scores with the ask's facts (``with_facts``), or the vector
   store's nearest items, or popularity (the store applies filters: ``ids_where``);
3. **rank** -- candidates too close to a negated phrase dropped (``too_close``), then MMR;
4. **explain** -- "because you liked X" for each pick (``explain``);
5. **blurbs** -- the writer's, after the list.

Nothing here reads or writes the data dir: the Recommender hands each stage what it needs.
The write path (ingest, tuning, feedback, the index version) is ``recbot.index.Index``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from recbot.ask import Interpretation
from recbot.errors import FilterError
from recbot.retrieval.hybrid import CollabModel, zscore
from recbot.retrieval.ranking import top_reasons
from recbot.types import Interaction, Item, Reason

if TYPE_CHECKING:
    from recbot.retrieval.store import Snapshot

__all__ = [
    "AVOID_PUSH",
    "AVOID_Z",
    "NEIGHBOUR_WEIGHT",
    "SIMILAR",
    "STRATEGY_TEXT",
    "ScoreKind",
    "Strategy",
    "check_filter_fields",
    "excluded_by",
    "explain",
    "fact_scores",
    "has_hard_constraints",
    "merge_follow_up",
    "store_failures",
    "too_close",
    "type_tag",
    "with_facts",
]

Strategy = Literal[
    "hybrid", "hybrid+query", "hybrid-pool", "hybrid-pool+query", "profile", "query", "profile+query", "popular"
]
ScoreKind = Literal["cosine", "hybrid", "popularity"]

STRATEGY_TEXT: dict[str, str] = {
    "hybrid": "ranked by your history: similar items, what people with your items liked, and popularity",
    "hybrid+query": "ranked by your ask and your history: similar items, what people with your items liked",
    "hybrid-pool": "ranked by your history among the closest, the collaboratively likeliest and the most popular items",
    "hybrid-pool+query": "ranked by your ask and your history among the closest, the collaboratively likeliest and "
    "the most popular items",
    "profile": "ranked by similarity to your history",
    "query": "no usable history: ranked by similarity to your ask alone",
    "profile+query": "ranked by similarity to your history and your ask",
    "popular": "no usable history and no ask: popular items, diversified",
}


# A negated free phrase ("nothing too violent") pulls the ask away with this weight and drops
# candidates whose closeness to it stands this many standard deviations above the catalog's.
AVOID_PUSH = 0.5
AVOID_Z = 2.5

# "like X": X's own vector (in the ask), plus what people who have X also have, and X's facts
# (category and tags) shared, so "like Knives Out but a book" finds the mysteries among books.
# Measured on the bundled asks and 300 MovieLens asks (benchmarks/asks.py): tags + neighbours at
# half weight 96.2% / 97.3% of asks met; neighbours at full weight 94.9% / 96.7%; neither 92.3% / 85.7%.
# Tags the ask names ("something cosy") count the same way: a preference, not a filter.
NEIGHBOUR_WEIGHT = 0.5


def with_facts(
    view: Snapshot,
    model: CollabModel,
    ask_scores: np.ndarray,
    anchors: Sequence[str],
    tags: Sequence[str],
    catalog: Mapping[str, Item],
) -> np.ndarray:
    """The ask's per-item score when it names titles or tags: the z-scored cosine to the ask,
    the anchors' item-kNN neighbours, and the count of facts shared with the ask (each named
    tag, and each anchor's category and tags)."""
    return zscore(ask_scores) + fact_scores(model, anchors, tags, catalog, view.rows_where, len(view.ids))


def fact_scores(
    model: CollabModel,
    anchors: Sequence[str],
    tags: Sequence[str],
    catalog: Mapping[str, Item],
    rows_where: Callable[[Mapping[str, Any]], Any],
    n_items: int,
) -> np.ndarray:
    """``with_facts`` but the ask's cosine, for every item (``rows_where(filters)``: the
    rows of the items that match, in the same item order as ``model``)."""
    out = np.zeros(n_items, dtype=np.float32)
    near = model.neighbours(anchors) if anchors else np.zeros(0)
    if near.any():
        out += NEIGHBOUR_WEIGHT * zscore(near)
    facts = [("tags", t) for t in tags]
    for anchor in anchors:
        item = catalog.get(anchor)
        facts += [] if item is None else [("category", item.category), *(("tags", t) for t in item.tags)]
    shared = np.zeros(n_items, dtype=np.float32)
    for name, value in facts:
        rows = rows_where({name: value}) if value else None
        if rows is not None:
            shared[rows] += 1.0
    if shared.any():
        out += zscore(shared)
    return out


def check_filter_fields(filters: Mapping[str, Any], catalog: Mapping[str, Item]) -> None:
    """An unknown filter field matches nothing: say so, naming the fields there are."""
    unknown = [name for name in filters if name not in ("category", "tags")]
    if not unknown:
        return
    known = {"category", "tags"} | {key for item in catalog.values() for key in item.metadata}
    bad = [name for name in unknown if name not in known]
    if bad:
        raise FilterError(f"unknown filter field(s) {bad}; the catalog's fields are {sorted(known)}")


def store_failures() -> tuple[type[BaseException], ...]:
    """What SQLite and Chroma raise when the index cannot be read (a deleted or locked
    file, a Chroma server that is down): turned into ``StoreError`` by ``recommend``."""
    import sqlite3

    import chromadb.errors
    import httpx

    return (sqlite3.Error, OSError, chromadb.errors.ChromaError, httpx.HTTPError)


def type_tag(understood: Interpretation, category: str | None) -> str | None:
    """A tag the ask names that is a kind of the category ("board game" in Games), as written
    in the catalog; other named tags ("cosy") stay a preference."""
    if not category:
        return None
    head = category.casefold().rstrip("s")
    return next((t for t in understood.tags if t.casefold().split()[-1].rstrip("s") == head), None)


def has_hard_constraints(understood: Interpretation) -> bool:
    """Whether an ask holds constraints that can leave nothing to recommend."""
    return bool(
        understood.category
        or understood.exclude_categories
        or understood.exclude_tags
        or understood.exclude_items
        or understood.tags
    )


# "like X", "similar to X", "another X", "more like the second one": the named item is the
# reference, not the answer
SIMILAR = re.compile(r"\b(like|similar|such as|another|more)\b", re.IGNORECASE)


def excluded_by(understood: Interpretation, catalog: Mapping[str, Item], *, asks_for_similar: bool) -> set[str]:
    """Items an ask rules out: negated titles and categories, items with a negated tag,
    and, when it asks for something *like* them, the titles it names ("like X": X itself
    is not the answer; "a mountain tent" may well mean the Mountain Tent)."""
    out = set(understood.exclude_items) | (set(understood.anchors) if asks_for_similar else set())
    cats = set(understood.exclude_categories)
    # "no thriller" where Thriller is a category (MovieLens: the first genre) also means no item
    # tagged thriller: a category name counts as a tag here
    tags = {t.casefold() for t in (*understood.exclude_tags, *cats)}
    if tags:
        out |= {i for i, it in catalog.items() if it.category in cats or tags & {t.casefold() for t in it.tags}}
    return out


def merge_follow_up(understood: Interpretation, context: Interpretation | None) -> Interpretation:
    """A follow-up or vague ask ("more like the second one", "not that one", "more please")
    keeps the previous ask's category, tags and exclusions; any other ask stands alone."""
    follow_up = understood.refers_to or understood.reject_previous or understood.vague
    if context is None or not follow_up:
        return understood
    return replace(
        understood,
        category=understood.category or context.category,
        tags=tuple(dict.fromkeys([*context.tags, *understood.tags])),
        exclude_tags=tuple(dict.fromkeys([*context.exclude_tags, *understood.exclude_tags])),
        exclude_categories=tuple(dict.fromkeys([*context.exclude_categories, *understood.exclude_categories])),
    )


def too_close(avoid: np.ndarray, vectors: Mapping[str, np.ndarray], reference: np.ndarray | None) -> set[str]:
    """Candidates that stand out as close to a negated phrase: cosine at least ``AVOID_Z``
    standard deviations above the mean of ``reference`` (cosines of the whole catalog to
    ``avoid``; the candidates' own where the catalog is not held in memory). Raw cosines of
    a short phrase to item texts are small and vary by phrase, so the cut is relative."""
    ids = list(vectors)
    if not ids:
        return set()
    sims = np.stack([vectors[i] for i in ids]) @ avoid
    ref = sims if reference is None else reference
    mean, std = float(ref.mean()), float(ref.std()) or 1.0
    return {i for i, s in zip(ids, sims, strict=True) if (s - mean) / std >= AVOID_Z}


def explain(
    vector: np.ndarray,
    history: Sequence[Interaction],
    history_vectors: np.ndarray,
    weights: np.ndarray,
    catalog: Mapping[str, Item],
    n: int,
    together: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Reason, ...]:
    """The "because you liked X" reasons: the liked history items that contributed most to
    the item of ``vector`` (``top_reasons``), each with the signal that weighed most.
    ``together``: the hybrid's (users with both, item-kNN cosine) per history item."""
    counts, extra = together if together is not None else (np.zeros(len(history)), None)
    positive = np.where(weights > 0, weights, 0.0)
    return tuple(
        Reason(
            history[h].item_id,
            catalog[history[h].item_id].title,
            s,
            int(counts[h]),
            signal="co-occurrence" if extra is not None and extra[h] > s else "text",
        )
        for h, s in top_reasons(vector, history_vectors, positive, n, extra)
    )
