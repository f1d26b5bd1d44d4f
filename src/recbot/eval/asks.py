"""Does an answer respect what the ask said? Constraint checks for free-text asks.

Each ``AskCase`` is a user, an ask as a person would type it, and the constraints a correct
answer must meet: a wanted category, excluded tags, categories and items, an anchor ("like
Project Hail Mary but a film": not Project Hail Mary itself, and the top item shares its
category or a tag), or ``vague`` ("more please": the same items as with no ask at all).
``check`` lists the constraints an answer breaks; ``run_asks`` runs the cases through a
``Recommender`` twice, with the ask interpreter and with the ask embedded whole as before it
(``embedding_only``), and reports the share of cases met, failures by kind and latency.

    >>> cases = load_cases("src/recbot/demo/asks.jsonl")
    >>> report = run_asks(Recommender.open(".recbot"), cases, k=5)
    >>> report["modes"]["interpreter"]["satisfied"]
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recbot.ask import AskIndex, Interpretation, interpret
from recbot.types import Item, Recommendation

if TYPE_CHECKING:
    from recbot.recommender import Recommender

__all__ = ["KINDS", "MODES", "AskCase", "check", "embedding_only_interpretation", "load_cases", "run_asks"]

MODES = ("interpreter", "embedding_only")
# Violation kinds, the prefix of each string ``check`` returns ("exclude_tag: b18 has horror").
KINDS = (
    "category",
    "exclude_category",
    "exclude_tag",
    "exclude_item",
    "anchor_recommended",
    "anchor_unlike",
    "vague",
    "relaxed",
    "empty",
)


@dataclass(frozen=True)
class AskCase:
    """One ask and what a correct answer to it must satisfy (ids are catalog item ids)."""

    user: str
    ask: str
    category: str | None = None  # every item must be of this category
    exclude_tags: tuple[str, ...] = ()  # no item may carry one of these tags
    exclude_categories: tuple[str, ...] = ()
    exclude_items: tuple[str, ...] = ()
    anchor: str | None = None  # not recommended; the top item shares its category or a tag
    vague: bool = False  # the answer equals, as a set, the answer to no ask

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> AskCase:
        unknown = set(row) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown AskCase fields: {sorted(unknown)}")
        return cls(
            user=str(row["user"]),
            ask=str(row["ask"]),
            category=row.get("category"),
            exclude_tags=tuple(row.get("exclude_tags", ())),
            exclude_categories=tuple(row.get("exclude_categories", ())),
            exclude_items=tuple(row.get("exclude_items", ())),
            anchor=row.get("anchor"),
            vague=bool(row.get("vague", False)),
        )


def load_cases(path: str | Path) -> list[AskCase]:
    """Cases from a JSON-lines file, one object per line (blank lines skipped)."""
    cases = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            cases.append(AskCase.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: {exc}") from exc
    return cases


def _folded(tags: Iterable[str]) -> set[str]:
    return {t.casefold() for t in tags}


def check(
    case: AskCase,
    recs: Sequence[Recommendation],
    catalog: Mapping[str, Item],
    baseline_ids: Iterable[str] = (),
) -> list[str]:
    """The constraints of ``case`` that ``recs`` breaks, each as ``"kind: detail"``; [] if none.

    Args:
        case: the ask and its constraints.
        recs: the answer, best first; a ``relaxed`` attribute that is set (the recommender
            dropped the ask's hard constraints) is itself a violation.
        catalog: item id -> Item, for the anchor's category and tags.
        baseline_ids: the answer to the same user with no ask, for ``vague`` cases.
    """
    out: list[str] = []
    relaxed = getattr(recs, "relaxed", None)
    if relaxed:
        out.append(f"relaxed: {relaxed}")
    if not recs:
        out.append("empty: no items")
        return out
    excluded_tags = _folded(case.exclude_tags)
    for rec in recs:
        item = rec.item
        if case.category is not None and item.category != case.category:
            out.append(f"category: {item.id} is {item.category}, not {case.category}")
        if item.category in case.exclude_categories:
            out.append(f"exclude_category: {item.id} is {item.category}")
        hit = sorted(excluded_tags & _folded(item.tags))
        if hit:
            out.append(f"exclude_tag: {item.id} has {', '.join(hit)}")
        if item.id in case.exclude_items:
            out.append(f"exclude_item: {item.id} recommended")
    if case.anchor is not None:
        ids = [r.item.id for r in recs]
        if case.anchor in ids:
            out.append(f"anchor_recommended: {case.anchor} at rank {ids.index(case.anchor) + 1}")
        anchor = catalog.get(case.anchor)
        top = recs[0].item
        if anchor is not None and top.category != anchor.category and not _folded(top.tags) & _folded(anchor.tags):
            out.append(f"anchor_unlike: top item {top.id} shares no category or tag with {case.anchor}")
    if case.vague:
        got, want = {r.item.id for r in recs}, set(baseline_ids)
        if got != want:
            out.append(f"vague: added {sorted(got - want)}, dropped {sorted(want - got)}")
    return out


def embedding_only_interpretation(query: str) -> Interpretation:
    """The pre-interpreter reading of an ask: all of it embedded as text, at full weight."""
    return Interpretation(
        category=None,
        exclude_categories=(),
        exclude_tags=(),
        anchors=(),
        exclude_items=(),
        avoid_text=(),
        soft=query,
        vague=False,
        surprise=False,
        refers_to=(),
        reject_previous=(),
        informativeness=1.0,
    )


def _embedding_only(query: str, catalog: Any, previous: Any, *args: Any, **kwargs: Any) -> Interpretation | None:
    """Stands in for ``Recommender._interpret``: no constraints, the whole ask as soft text."""
    return embedding_only_interpretation(query) if query.strip() else None


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _run_mode(
    recommender: Recommender,
    cases: Sequence[AskCase],
    catalog: Mapping[str, Item],
    baselines: Mapping[str, list[str]],
    k: int,
) -> dict[str, Any]:
    failures: Counter[str] = Counter()
    latencies: list[float] = []
    failing: list[dict[str, Any]] = []
    met = relaxed = 0
    for case in cases:
        started = time.perf_counter()
        recs = recommender.recommend(case.user, query=case.ask, k=k, blurbs=False)
        latencies.append((time.perf_counter() - started) * 1000)
        violations = check(case, recs, catalog, baselines.get(case.user, ()))
        relaxed += bool(getattr(recs, "relaxed", None))
        if not violations:
            met += 1
            continue
        for kind in dict.fromkeys(v.split(":", 1)[0] for v in violations):
            failures[kind] += 1
        failing.append(
            {
                "user": case.user,
                "ask": case.ask,
                "violations": violations,
                "got": [r.item.id for r in recs],
                "understood": getattr(recs, "understood_text", None),
            }
        )
    return {
        "satisfied": met / len(cases) if cases else math.nan,
        "satisfied_n": met,
        "failures": {kind: failures[kind] for kind in KINDS if failures[kind]},
        "relaxed": relaxed,
        "latency_ms": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95)},
        "failing": failing,
    }


def run_asks(recommender: Recommender, cases: Sequence[AskCase], *, k: int = 5) -> dict[str, Any]:
    """Run every case through ``recommender`` with and without the ask interpreter.

    Mode ``interpreter`` is ``recommend(user, query=ask, k=k, blurbs=False)``; mode
    ``embedding_only`` is the same call with ``recommender._interpret`` swapped, on the
    instance and only for the run, for one that embeds the whole ask at full weight (the
    behaviour before the interpreter). Vague cases compare with ``recommend(user, k=k)``.

    Returns:
        ``{"cases", "k", "modes": {mode: {"satisfied", "satisfied_n", "failures",
        "relaxed", "latency_ms": {"p50", "p95"}, "failing": [...]}}, "interpret_ms": {"p50", "p95"}}``.
    """
    catalog = recommender.storage.items()
    baselines = {
        user: [r.item.id for r in recommender.recommend(user, query=None, k=k, blurbs=False)]
        for user in dict.fromkeys(c.user for c in cases if c.vague)
    }
    modes: dict[str, Any] = {"interpreter": _run_mode(recommender, cases, catalog, baselines, k)}
    own = vars(recommender)
    had, before = "_interpret" in own, own.get("_interpret")
    own["_interpret"] = _embedding_only
    try:
        modes["embedding_only"] = _run_mode(recommender, cases, catalog, baselines, k)
    finally:
        if had:
            own["_interpret"] = before
        else:
            del own["_interpret"]

    index = AskIndex(catalog.values())
    timings = []
    for case in cases:
        started = time.perf_counter()
        interpret(case.ask, index)
        timings.append((time.perf_counter() - started) * 1000)
    return {
        "cases": len(cases),
        "k": k,
        "modes": modes,
        "interpret_ms": {"p50": _percentile(timings, 50), "p95": _percentile(timings, 95)},
    }
