"""Catalog and interaction readers with row-level validation."""

from recbot.catalog.readers import (
    Format,
    amazon_item,
    detect_format,
    read_amazon,
    read_catalog,
    read_interactions,
    read_movielens,
)
from recbot.catalog.records import ReadResult, RowError, parse_interaction, parse_item

__all__ = [
    "Format",
    "ReadResult",
    "RowError",
    "amazon_item",
    "detect_format",
    "parse_interaction",
    "parse_item",
    "read_amazon",
    "read_catalog",
    "read_interactions",
    "read_movielens",
]
