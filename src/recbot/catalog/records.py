"""Turn raw records (dicts from JSONL/CSV rows) into validated Items and Interactions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from recbot.errors import CatalogError
from recbot.types import Interaction, Item

__all__ = ["ReadResult", "RowError", "parse_interaction", "parse_item", "parse_timestamp"]

ITEM_FIELDS = ("id", "title", "description", "category", "tags")
INTERACTION_FIELDS = ("user_id", "item_id", "rating", "review", "timestamp")


@dataclass(frozen=True, slots=True)
class RowError:
    """A rejected (or noted) row: where it is and what is wrong."""

    file: str
    line: int | None
    field: str | None
    reason: str

    def __str__(self) -> str:
        return str(self.as_error())

    def as_error(self) -> CatalogError:
        return CatalogError(self.reason, file=self.file, line=self.line, field=self.field)

    @classmethod
    def from_error(cls, exc: CatalogError) -> RowError:
        return cls(exc.file or "?", exc.line, exc.field, exc.reason)


@dataclass
class ReadResult:
    """What a reader got out of a file: the valid rows, and every row it could not use."""

    items: list[Item] = field(default_factory=list)  # unique ids, last occurrence wins
    interactions: list[Interaction] = field(default_factory=list)
    interaction_rows: list[tuple[str, int | None]] = field(default_factory=list)  # (file, line) of each
    rejected: list[RowError] = field(default_factory=list)  # rows dropped
    notes: list[RowError] = field(default_factory=list)  # rows kept with a remark (duplicates)

    def add_interaction(self, interaction: Interaction, file: str, line: int | None) -> None:
        self.interactions.append(interaction)
        self.interaction_rows.append((file, line))

    def merge(self, other: ReadResult) -> None:
        """Take ``other``'s interactions and problems (its items, if any, are not merged)."""
        self.interactions += other.interactions
        self.interaction_rows += other.interaction_rows
        self.rejected += other.rejected
        self.notes += other.notes


def _text(value: Any, name: str, *, required: bool, where: dict[str, Any]) -> str:
    if value is None or value == "":
        if required:
            raise CatalogError("is missing" if value is None else "is empty", field=name, **where)
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise CatalogError(f"must be text, got {type(value).__name__}", field=name, **where)
    text = str(value).strip()
    if required and not text:
        raise CatalogError("is empty", field=name, **where)
    return text


def _tags(value: Any, where: dict[str, Any]) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        parts = value.split("|")
    elif isinstance(value, list) and all(isinstance(t, (str, int, float)) for t in value):
        parts = [str(t) for t in value]
    else:
        raise CatalogError("must be a list of strings or a '|'-separated string", field="tags", **where)
    seen: dict[str, None] = {}
    for tag in parts:
        tag = tag.strip()
        if tag:
            seen.setdefault(tag, None)
    return tuple(seen)


def parse_item(record: Mapping[str, Any], *, file: str, line: int | None) -> Item:
    """Validate one catalog record. Raises CatalogError naming file, line and field."""
    where: dict[str, Any] = {"file": file, "line": line}
    item_id = _text(record.get("id"), "id", required=True, where=where)
    title = _text(record.get("title"), "title", required=True, where=where)
    metadata: dict[str, str | int | float | bool] = {}
    for key, value in record.items():
        if key in ITEM_FIELDS or value is None or value == "":
            continue
        if not isinstance(value, (str, int, float, bool)):
            raise CatalogError(
                f"must be a scalar (text, number or boolean) to be kept as metadata, got {type(value).__name__}",
                field=str(key),
                **where,
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise CatalogError("must be a finite number", field=str(key), **where)
        metadata[str(key)] = value
    return Item(
        id=item_id,
        title=title,
        description=_text(record.get("description"), "description", required=False, where=where),
        category=_text(record.get("category"), "category", required=False, where=where),
        tags=_tags(record.get("tags"), where),
        metadata=metadata,
    )


def parse_timestamp(value: Any) -> int | None:
    """Int (or numeric string) seconds, or ISO 8601 text; None when absent. ValueError if bad."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return int(value)
    text = str(value).strip()
    try:
        return int(float(text))
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def parse_interaction(record: Mapping[str, Any], *, file: str, line: int | None) -> Interaction:
    """Validate one interaction record. Raises CatalogError naming file, line and field."""
    where: dict[str, Any] = {"file": file, "line": line}
    user_id = _text(record.get("user_id"), "user_id", required=True, where=where)
    item_id = _text(record.get("item_id"), "item_id", required=True, where=where)
    rating: float | None = None
    raw = record.get("rating")
    if raw is not None and raw != "":
        try:
            if isinstance(raw, bool):
                raise ValueError
            rating = float(raw)
        except (TypeError, ValueError):
            raise CatalogError(f"must be a number, got {raw!r}", field="rating", **where) from None
        if not math.isfinite(rating):
            raise CatalogError(f"must be a finite number, got {raw!r}", field="rating", **where)
    review = _text(record.get("review"), "review", required=False, where=where) or None
    try:
        timestamp = parse_timestamp(record.get("timestamp"))
    except (TypeError, ValueError):
        raise CatalogError(
            f"must be seconds since the epoch or ISO 8601, got {record.get('timestamp')!r}",
            field="timestamp",
            **where,
        ) from None
    return Interaction(user_id, item_id, rating, review, timestamp)
