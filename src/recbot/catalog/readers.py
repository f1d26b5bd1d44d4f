"""Readers for catalog and interaction files: JSONL, CSV, MovieLens directories and
Amazon review dumps. Each returns a ReadResult; a bad row never costs the good ones."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from recbot.catalog.records import ReadResult, RowError, parse_interaction, parse_item
from recbot.errors import CatalogError
from recbot.types import Interaction, Item

__all__ = [
    "Format",
    "amazon_item",
    "detect_format",
    "read_amazon",
    "read_catalog",
    "read_interactions",
    "read_movielens",
    "read_records",
]

Format = Literal["auto", "jsonl", "csv", "movielens", "amazon"]
Row = tuple[int, dict[str, Any]]
T = TypeVar("T")

_SURROGATE = re.compile("[\udc80-\udcff]")


def _open_bytes(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def _iter_jsonl(path: Path, rejected: list[RowError]) -> Iterator[Row]:
    name = path.name
    try:
        with _open_bytes(path) as fh:
            for line_no, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    rejected.append(
                        RowError(name, line_no, None, f"is not valid UTF-8 ({exc.reason} at byte {exc.start})")
                    )
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as exc:
                    rejected.append(RowError(name, line_no, None, f"is not valid JSON ({exc.msg}, column {exc.colno})"))
                    continue
                if not isinstance(record, dict):
                    rejected.append(
                        RowError(name, line_no, None, f"must be a JSON object, got {type(record).__name__}")
                    )
                    continue
                yield line_no, record
    except (OSError, EOFError) as exc:  # unreadable file, or a truncated gzip
        raise CatalogError(f"cannot read: {exc}", file=name) from exc


def _iter_csv(path: Path, rejected: list[RowError]) -> Iterator[Row]:
    name = path.name
    try:
        with _open_bytes(path) as fh:
            data = fh.read().decode("utf-8-sig", errors="surrogateescape")
    except (OSError, EOFError) as exc:
        raise CatalogError(f"cannot read: {exc}", file=name) from exc
    reader = csv.DictReader(io.StringIO(data, newline=""))
    if not reader.fieldnames:
        return
    header = [h.strip() for h in reader.fieldnames]
    reader.fieldnames = header
    start = 2
    for row in reader:
        line_no, start = start, reader.line_num + 1
        if None in row:  # more cells than header columns
            rejected.append(
                RowError(name, line_no, None, f"has {len(header) + len(row[None])} cells, the header has {len(header)}")
            )
            continue
        bad = [k for k, v in row.items() if v is not None and _SURROGATE.search(v)]
        if bad:
            rejected.append(RowError(name, line_no, bad[0], "is not valid UTF-8"))
            continue
        yield line_no, {k: v for k, v in row.items() if v is not None}


def detect_format(path: Path) -> Format:
    """Guess a file's format from its name (and, for directories, their contents)."""
    if path.is_dir():
        if (path / "movies.csv").exists():
            return "movielens"
        raise CatalogError("is a directory without movies.csv; pass a catalog file", file=str(path))
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".json"):
        # Amazon dumps are JSON lines with reviewerID/asin fields
        with _open_bytes(path) as fh:
            head = fh.readline()
        return "amazon" if b'"reviewerID"' in head and b'"asin"' in head else "jsonl"
    raise CatalogError("has an unknown extension; use --format jsonl|csv|movielens|amazon", file=path.name)


def read_records(path: Path, parse: Callable[..., T], result: ReadResult) -> list[tuple[int, T]]:
    """Parse every row of a JSONL or CSV file with ``parse``; bad rows go to ``result.rejected``."""
    fmt = detect_format(path)
    rows = _iter_csv(path, result.rejected) if fmt == "csv" else _iter_jsonl(path, result.rejected)
    parsed: list[tuple[int, T]] = []
    for line_no, record in rows:
        try:
            parsed.append((line_no, parse(record, file=path.name, line=line_no)))
        except CatalogError as exc:
            result.rejected.append(RowError.from_error(exc))
    return parsed


def _dedupe_items(parsed: list[tuple[int, Item]], file: str, result: ReadResult) -> None:
    first_line: dict[str, int] = {}
    latest: dict[str, Item] = {}
    for line_no, item in parsed:
        if item.id in first_line:
            result.notes.append(
                RowError(
                    file, line_no, "id", f"duplicates {item.id!r} from line {first_line[item.id]}; the last one wins"
                )
            )
        else:
            first_line[item.id] = line_no
        latest[item.id] = item
    result.items = list(latest.values())


def read_catalog(path: str | Path, fmt: Format = "auto", *, holdout_last: bool = False) -> ReadResult:
    """Read a catalog (and, for MovieLens/Amazon, its interactions) from ``path``.

    ``holdout_last`` (Amazon): item text comes from training-split reviews only, every
    user's last review (by time, then asin) being held out for evaluation.
    """
    path = Path(path)
    if not path.exists():
        raise CatalogError("does not exist", file=str(path))
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "movielens":
        return read_movielens(path)
    if fmt == "amazon":
        return read_amazon(path, holdout_last=holdout_last)
    result = ReadResult()
    _dedupe_items(read_records(path, parse_item, result), path.name, result)
    return result


def read_interactions(path: str | Path) -> ReadResult:
    """Read an interactions file (JSONL or CSV: user_id, item_id, rating, review, timestamp)."""
    path = Path(path)
    if not path.exists():
        raise CatalogError("does not exist", file=str(path))
    result = ReadResult()
    for line_no, interaction in read_records(path, parse_interaction, result):
        result.add_interaction(interaction, path.name, line_no)
    return result


_YEAR = re.compile(r"\((\d{4})\)\s*$")


def read_movielens(directory: Path) -> ReadResult:
    """MovieLens layout: movies.csv (movieId,title,genres), ratings.csv, tags.csv.

    Genres become the category (the first) and tags; users' free-text tags join the
    item's tags, most frequent first, since they are the only descriptive text.
    """
    result = ReadResult()
    tags: dict[str, Counter[str]] = defaultdict(Counter)
    tags_path = directory / "tags.csv"
    if tags_path.exists():
        for line_no, row in _iter_csv(tags_path, result.rejected):
            movie, tag = (row.get("movieId") or "").strip(), (row.get("tag") or "").strip()
            if not movie or not tag:
                result.rejected.append(RowError(tags_path.name, line_no, "movieId" if not movie else "tag", "is empty"))
                continue
            tags[movie][tag.lower()] += 1
    parsed: list[tuple[int, Item]] = []
    movies = directory / "movies.csv"
    for line_no, row in _iter_csv(movies, result.rejected):
        genres = [g for g in (row.get("genres") or "").split("|") if g and g != "(no genres listed)"]
        title = (row.get("title") or "").strip()
        record: dict[str, Any] = {
            "id": row.get("movieId"),
            "title": title,
            "category": genres[0] if genres else "",
            "tags": genres + [t for t, _ in tags[(row.get("movieId") or "").strip()].most_common(20)],
        }
        if year := _YEAR.search(title):
            record["year"] = int(year.group(1))
        try:
            parsed.append((line_no, parse_item(record, file=movies.name, line=line_no)))
        except CatalogError as exc:
            result.rejected.append(RowError.from_error(exc))
    _dedupe_items(parsed, movies.name, result)
    ratings = directory / "ratings.csv"
    if ratings.exists():
        for line_no, row in _iter_csv(ratings, result.rejected):
            record = {
                "user_id": row.get("userId"),
                "item_id": row.get("movieId"),
                "rating": row.get("rating"),
                "timestamp": row.get("timestamp"),
            }
            try:
                result.add_interaction(
                    parse_interaction(record, file=ratings.name, line=line_no), ratings.name, line_no
                )
            except CatalogError as exc:
                result.rejected.append(RowError.from_error(exc))
    return result


def amazon_item(asin: str, summaries: list[str], reviews: list[str], *, max_chars: int = 1200) -> Item:
    """An Amazon item from its reviews alone (the 5-core dumps carry no titles).

    The most frequent review summaries come first, then opening sentences of reviews,
    up to ``max_chars``. Callers choose which reviews: evaluation passes training-split
    reviews only, so a held-out review never leaks into item text.
    """
    top = [s for s, _ in Counter(s.strip() for s in summaries if s.strip()).most_common(8)]
    parts: list[str] = []
    used = 0
    for text in [*top, *(r.split(". ")[0] for r in reviews if r.strip())]:
        if used + len(text) > max_chars:
            break
        parts.append(text.rstrip(". ") + ".")
        used += len(text) + 2
    return Item(id=asin, title=f"Amazon item {asin}", description=" ".join(parts), category="Musical Instruments")


def read_amazon(path: Path, *, holdout_last: bool = False) -> ReadResult:
    """Amazon review JSON lines (optionally gzipped): reviewerID, asin, overall, reviewText,
    summary, unixReviewTime. Items get their text from their reviews: all of them, or with
    ``holdout_last`` only those that are not a user's last (the held-out split)."""
    result = ReadResult()
    rows: list[tuple[Interaction, str, str]] = []
    for line_no, row in _iter_jsonl(path, result.rejected):
        summary = str(row.get("summary") or "").strip()
        body = str(row.get("reviewText") or "").strip()
        record = {
            "user_id": row.get("reviewerID"),
            "item_id": row.get("asin"),
            "rating": row.get("overall"),
            "review": ". ".join(t for t in (summary, body) if t) or None,
            "timestamp": row.get("unixReviewTime"),
        }
        try:
            interaction = parse_interaction(record, file=path.name, line=line_no)
        except CatalogError as exc:
            # report the dump's own field names, not ours
            names = {"user_id": "reviewerID", "item_id": "asin", "rating": "overall", "timestamp": "unixReviewTime"}
            result.rejected.append(RowError(path.name, line_no, names.get(exc.field or "", exc.field), exc.reason))
            continue
        result.add_interaction(interaction, path.name, line_no)
        rows.append((interaction, summary, body))
    held: set[tuple[str, str]] = set()
    if holdout_last:
        last: dict[str, Interaction] = {}
        for it, _, _ in rows:
            key = (it.timestamp or 0, it.item_id)
            if it.user_id not in last or key > (last[it.user_id].timestamp or 0, last[it.user_id].item_id):
                last[it.user_id] = it
        held = {(it.user_id, it.item_id) for it in last.values()}
    summaries: dict[str, list[str]] = defaultdict(list)
    texts: dict[str, list[str]] = defaultdict(list)
    for it, summary, body in rows:
        summaries.setdefault(it.item_id, [])
        if (it.user_id, it.item_id) not in held:
            summaries[it.item_id].append(summary)
            texts[it.item_id].append(body)
    result.items = [amazon_item(a, summaries[a], texts[a]) for a in summaries]
    return result
