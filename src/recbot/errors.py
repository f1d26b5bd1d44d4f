"""The errors recbot raises on purpose.

Every one is a ``RecbotError``; the CLI prints ``Name: message`` for them and
exits 1, and the LangChain tool turns them into a ``ToolException``.

    RecbotError
    ├── CatalogError          bad input file or row (file, line, field)
    ├── ConfigError           a setting or argument that cannot work (k < 1, --auth without a colon,
    │                         serving beyond 127.0.0.1 without logins)
    ├── ModelNotFoundError    no encoder/generator could be loaded offline
    ├── IndexNotBuiltError    nothing ingested yet that the call needs (recommend before ingest,
    │                         train-generator without interactions)
    ├── StoreError            the index (SQLite, Chroma) cannot be opened or read, mid-request too
    ├── EncoderError          the encoder failed on a request
    ├── BusyError             the blurb generator's queue is full (surfaces answer with marked templates)
    ├── FilterError           a filter that cannot work: an unknown category or filter field
    ├── UnknownItemError      an item id or title that the catalog does not hold
    ├── UnknownUserError      a user id the data dir has no rows for (recbot forget)
    └── MissingExtraError     a command needs an optional extra: recbot[ui], recbot[agent], recbot[eval],
                              recbot[privacy]

A missing or failing *generator* is not an error anywhere: recommendations come back with
template blurbs marked ``blurb_source="template"`` and one logged notice.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BusyError",
    "CatalogError",
    "ConfigError",
    "EncoderError",
    "FilterError",
    "IndexNotBuiltError",
    "MissingExtraError",
    "ModelNotFoundError",
    "RecbotError",
    "StoreError",
    "UnknownItemError",
    "UnknownUserError",
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


class StoreError(RecbotError):
    """The index cannot be opened or read: a Chroma path that is not usable, a Chroma server
    that does not answer, a SQLite file that is gone or locked."""


class EncoderError(RecbotError):
    """The text encoder failed while serving a request."""


class MissingExtraError(RecbotError):
    """A command needs an optional part that is not installed: ``str()`` names the pip extra."""


class BusyError(RecbotError):
    """The blurb generator's queue is full. ``LazyWriter`` answers with template blurbs
    marked ``templated: busy``; the recommendations themselves are never held back."""


class UnknownUserError(RecbotError):
    """A user id with no rows in the data dir."""
