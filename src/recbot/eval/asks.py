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
import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recbot.ask import Interpretation
from recbot.types import Item, Recommendation

if TYPE_CHECKING:
    from recbot.recommender import Recommender

__all__ = [
    "BUNDLED_CASES",
    "KINDS",
    "MODES",
    "AskCase",
    "ask_report",
    "check",
    "embedding_only_interpretation",
    "generated_cases",
    "load_cases",
    "markdown",
    "run_asks",
]

BUNDLED_CASES = Path(__file__).resolve().parents[1] / "demo" / "asks.jsonl"  # the demo catalog's own asks

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


# Genre words that read as nouns ("a comedy"); other tags read as "some horror", "some sci-fi".
_NOUN_TAGS = frozenset(
    "comedy drama thriller western musical documentary romance mystery fantasy adventure "
    "biography fable novel memoir".split()
)
_PHRASE_TAGS = {"children": "something for children", "imax": "something in imax"}
_GENERATED_KINDS = ("exclude", "want_but_not", "exclude_two", "anchor", "anchor_but_not")
_KIND_WEIGHTS = (25, 25, 10, 20, 20)
_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")
_TRAILING_ARTICLE = re.compile(r"^(.*), (The|A|An)$")


def _genre_tags(catalog: Mapping[str, Item]) -> dict[str, set[str]]:
    """Genre-like tag -> ids of the items carrying it (exact catalog spelling).

    A tag that is also some item's category is a genre (MovieLens: the first genre is the
    category and every genre a tag); with fewer than four such tags (a catalog whose
    categories are kinds of item, like the demo) the 30 most common tags on 2+ items count.
    Tags on more than 60% of the catalog are left out: excluding them leaves too little.
    """
    carriers: dict[str, set[str]] = {}
    for item in catalog.values():
        for tag in item.tags:
            carriers.setdefault(tag, set()).add(item.id)
    categories = {item.category for item in catalog.values() if item.category}
    chosen = [t for t in carriers if t in categories]
    if len(chosen) < 4:
        ranked = sorted(carriers, key=lambda t: (-len(carriers[t]), t))
        chosen = [t for t in ranked if len(carriers[t]) >= 2][:30]
    limit = 0.6 * len(catalog)
    return {t: carriers[t] for t in sorted(chosen) if 2 <= len(carriers[t]) <= limit}


def _spoken_title(item: Item, catalog_titles: Counter[str]) -> str:
    """The title as a user would type it: "Matrix, The (1999)" -> "The Matrix", unless
    dropping the year makes it ambiguous in the catalog."""
    bare = _YEAR_SUFFIX.sub("", item.title).strip()
    if not bare or catalog_titles[bare.casefold()] > 1:
        bare = item.title
    moved = _TRAILING_ARTICLE.match(bare)
    return f"{moved.group(2)} {moved.group(1)}" if moved else bare


def _want(tag: str) -> str:
    word = tag.lower()
    if word in _PHRASE_TAGS:
        return _PHRASE_TAGS[word]
    if word in _NOUN_TAGS:
        return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"
    return f"some {word}"


def generated_cases(
    catalog: Mapping[str, Item],
    users: Sequence[str],
    *,
    n: int = 300,
    seed: int = 0,
    popularity: Mapping[str, int] | None = None,
    anchor_pool: int = 200,
) -> list[AskCase]:
    """Up to ``n`` asks built from the catalog's own genre tags and titles, deterministic per seed.

    Five kinds, mixed 25/25/10/20/20: "no horror" (an excluded tag), "a comedy, but not
    romance" (a wanted tag, which ``check`` cannot test, and an excluded one that co-occurs
    with it), "no horror or war" (two excluded tags), "something like Toy Story" (an anchor)
    and "like Toy Story but no comedy" (an anchor and one of its genre tags other than its
    category excluded, so the top item can still share the anchor's category). Anchors are
    drawn from the ``anchor_pool`` items most users have (``popularity``: item id -> number
    of users), or from the whole catalog without it. Users are visited in a shuffled cycle.
    Asks are lowercase except titles; excluded tags keep the catalog's spelling. Fewer than
    ``n`` cases come back only when the catalog cannot yield that many distinct asks.
    """
    if n <= 0 or not users or not catalog:
        return []
    rng = random.Random(seed)
    genres = _genre_tags(catalog)
    names = sorted(genres)
    if not names:
        return []
    titles = Counter(_YEAR_SUFFIX.sub("", item.title).strip().casefold() for item in catalog.values())
    ranked = sorted(catalog, key=lambda i: (-(popularity or {}).get(i, 0), i))
    pool = ranked[:anchor_pool] if popularity else sorted(catalog)
    anchors = [i for i in pool if catalog[i].title.strip()]
    # An anchor with a genre tag other than its category can take "but no <genre>".
    splittable = [i for i in anchors if any(t in genres and t != catalog[i].category for t in catalog[i].tags)]
    order = list(dict.fromkeys(users))
    rng.shuffle(order)
    kinds, weights = [], []
    for kind, weight in zip(_GENERATED_KINDS, _KIND_WEIGHTS, strict=True):
        if (kind == "anchor" and not anchors) or (kind == "anchor_but_not" and not splittable):
            continue
        if kind in ("want_but_not", "exclude_two") and len(names) < 2:
            continue
        kinds.append(kind)
        weights.append(weight)

    cases: list[AskCase] = []
    seen: set[str] = set()
    for _ in range(50 * n):
        if len(cases) >= n:
            break
        kind = rng.choices(kinds, weights)[0]
        user = order[len(cases) % len(order)]
        if kind == "exclude":
            tag = rng.choice(names)
            word = tag.lower()
            ask = rng.choice([f"no {word}", f"nothing with {word}", f"no {word} please", f"anything without {word}"])
            case = AskCase(user, ask, exclude_tags=(tag,))
        elif kind == "want_but_not":
            want = rng.choice(names)
            # exclude a genre that often comes with the wanted one, so the filter bites
            overlap = {t: len(genres[t] & genres[want]) for t in names if t != want}
            others = [t for t in sorted(overlap) if overlap[t]] or [t for t in names if t != want]
            tag = rng.choices(others, [overlap[t] or 1 for t in others])[0]
            w, x = _want(want), tag.lower()
            ask = rng.choice([f"{w}, but not {x}", f"{w}, no {x}", f"{w} without {x}", f"{w} please, nothing with {x}"])
            case = AskCase(user, ask, exclude_tags=(tag,))
        elif kind == "exclude_two":
            a, b = rng.sample(names, 2)
            ask = rng.choice([f"no {a.lower()} or {b.lower()}", f"nothing with {a.lower()} or {b.lower()}"])
            case = AskCase(user, ask, exclude_tags=(a, b))
        elif kind == "anchor":
            item = catalog[rng.choice(anchors)]
            title = _spoken_title(item, titles)
            ask = rng.choice([f"something like {title}", f"more like {title}", f"i loved {title}, anything similar?"])
            case = AskCase(user, ask, anchor=item.id)
        else:
            item = catalog[rng.choice(splittable)]
            tag = rng.choice([t for t in item.tags if t in genres and t != item.category])
            title, x = _spoken_title(item, titles), tag.lower()
            ask = rng.choice([f"like {title} but no {x}", f"something like {title}, but without {x}"])
            case = AskCase(user, ask, exclude_tags=(tag,), anchor=item.id)
        if case.ask in seen:
            continue
        seen.add(case.ask)
        cases.append(case)
    return cases


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
    catalog = recommender.catalog()
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

    timings = []  # the recommender's own reading (its index, and its encoder for unknown words)
    for case in cases:
        started = time.perf_counter()
        recommender.interpret(case.ask)
        timings.append((time.perf_counter() - started) * 1000)
    return {
        "cases": len(cases),
        "k": k,
        "modes": modes,
        "interpret_ms": {"p50": _percentile(timings, 50), "p95": _percentile(timings, 95)},
    }


def ask_report(
    recommender: Recommender,
    *,
    cases_file: str | Path | None = BUNDLED_CASES,
    generated: int = 0,
    seed: int = 0,
    k: int = 5,
) -> dict[str, Any]:
    """``run_asks`` on the asks of ``cases_file`` plus ``generated`` asks built from the
    recommender's own catalog (``generated_cases``); what ``recbot eval asks`` runs.

    Raises:
        ValueError: no cases (no file given, and the catalog yields no generated asks).
    """
    cases = load_cases(cases_file) if cases_file is not None else []
    if generated:
        cases += generated_cases(
            recommender.catalog(), recommender.users(), n=generated, seed=seed, popularity=recommender.popularity()
        )
    if not cases:
        raise ValueError("no asks to run: give a cases file, or --generated N on a catalog with genre tags and users")
    recommender.recommend(cases[0].user, query="warm-up", k=k, blurbs=False)  # load the encoder outside the timings
    report = run_asks(recommender, cases, k=k)
    report["sources"] = {"cases_file": None if cases_file is None else str(cases_file), "generated": generated}
    return report


def markdown(report: Mapping[str, Any]) -> str:
    """The report as a markdown table (one row per mode), the latency, and the interpreter's failing cases."""
    rows = [
        "| mode | satisfied | "
        + " | ".join(f"fail: {kind}" for kind in KINDS)
        + " | relaxed answers | p50 ms | p95 ms |",
        "|---|---|" + "---|" * len(KINDS) + "---|---|---|",
    ]
    for mode in MODES:
        m = report["modes"][mode]
        fails = " | ".join(str(m["failures"].get(kind, 0)) for kind in KINDS)
        share = f"{m['satisfied']:.1%} ({m['satisfied_n']}/{report['cases']})"
        lat = m["latency_ms"]
        rows.append(f"| {mode} | {share} | {fails} | {m['relaxed']} | {lat['p50']:.1f} | {lat['p95']:.1f} |")
    ms = report["interpret_ms"]
    out = [f"{report['cases']} asks, k={report['k']}", "", *rows, ""]
    out.append(f"`Recommender.interpret` alone: p50 {ms['p50']:.2f} ms, p95 {ms['p95']:.2f} ms")
    failing = report["modes"]["interpreter"]["failing"]
    out += ["", f"## interpreter: {len(failing)} failing case(s)", ""]
    for f in failing:
        out.append(f"- {f['user']} {f['ask']!r} -> understood {f['understood']!r}, got {f['got']}")
        out += [f"    - {v}" for v in f["violations"]]
    return "\n".join(out) + "\n"
