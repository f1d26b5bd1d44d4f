"""The errors recbot raises on purpose.

Every one is a ``RecbotError``; the CLI prints ``Name: message`` for them and
exits 1, and the LangChain tool turns them into a ``ToolException``.

    RecbotError
    ├── CatalogError          bad input file or row (file, line, field)
    ├── ConfigError           a setting that cannot work
    ├── ModelNotFoundError    no encoder/generator could be loaded offline
    ├── IndexNotBuiltError    recommend before any ingest
    ├── FilterError           a filter names a category the catalog does not have
    └── UnknownItemError      an item id that the catalog does not hold
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CatalogError",
    "ConfigError",
    "FilterError",
    "IndexNotBuiltError",
    "ModelNotFoundError",
    "RecbotError",
    "UnknownItemError",
]


class RecbotError(Exception):
    """Base class of every error recbot raises on purpose."""


class CatalogError(RecbotError):
    """A catalog or interactions file, or one of its rows, is invalid.

    ``str()`` reads ``catalog.jsonl line 7: field 'title' is empty``.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        rejected: Sequence[object] = (),
    ) -> None:
        self.reason = reason
        self.rejected = list(rejected)  # with --strict: every rejected row
        self.file = file
        self.line = line
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.line is not None:
            where.append(f"line {self.line}")
        prefix = " ".join(where)
        what = f"field '{self.field}' {self.reason}" if self.field else self.reason
        return f"{prefix}: {what}" if prefix else what


class ConfigError(RecbotError):
    """A setting has a value that cannot work."""


class ModelNotFoundError(RecbotError):
    """No model could be loaded from the configured id or path, offline."""


class IndexNotBuiltError(RecbotError):
    """The data dir holds no ingested catalog yet."""


class FilterError(RecbotError):
    """A filter that can match nothing: an unknown category, say."""


class UnknownItemError(RecbotError):
    """An item id that is not in the catalog."""
