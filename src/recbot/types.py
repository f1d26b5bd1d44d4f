"""Plain, frozen records passed between recbot's parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BlurbUpdate", "Interaction", "Item", "Reason", "Recommendation"]

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Item:
    """One catalog item."""

    id: str
    title: str
    description: str = ""
    category: str = ""
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Scalar] = field(default_factory=dict)  # extra scalar fields

    @property
    def text(self) -> str:
        """The text the encoder sees: title first, since it carries the most signal."""
        parts = [self.title]
        if self.category:
            parts.append(f"Category: {self.category}.")
        if self.description:
            parts.append(self.description)
        if self.tags:
            parts.append("Tags: " + ", ".join(self.tags) + ".")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "category": self.category,
            "tags": list(self.tags),
            **dict(self.metadata),
        }


LIKED_RATING = 4.0  # on the 1-5 scale: 4 and 5 are likes
NEUTRAL_RATING = 3.0  # the profile's zero: 5 -> +1, 3 -> 0, 1 -> -1


@dataclass(frozen=True, slots=True)
class Interaction:
    """A user's rating, like or review of one item."""

    user_id: str
    item_id: str
    rating: float | None = None  # None: an implicit like
    review: str | None = None
    timestamp: int | None = None  # seconds since the epoch

    @property
    def liked(self) -> bool:
        """A like: a rating of ``LIKED_RATING`` or more, or an implicit interaction (no rating).
        The one definition blurbs, training and evaluation use."""
        return self.rating is None or self.rating >= LIKED_RATING

    @property
    def disliked(self) -> bool:
        """A rating below the neutral ``NEUTRAL_RATING`` (the profile pushes away from these)."""
        return self.rating is not None and self.rating < NEUTRAL_RATING


@dataclass(frozen=True, slots=True)
class Reason:
    """A history item that made a recommendation likely ("because you liked X")."""

    item_id: str
    title: str
    similarity: float  # cosine between the two items' text embeddings
    also_liked_by: int = 0  # other users with both items in their history (hybrid ranking)
    # which evidence weighed most in choosing this reason: "text" (the cosine above) or
    # "co-occurrence" (the item-kNN cosine of who has both, hybrid ranking)
    signal: str = "text"

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "title": self.title,
            "similarity": round(self.similarity, 4),
            "also_liked_by": self.also_liked_by,
            "signal": self.signal,
        }

    def describe(self) -> str:
        """``Title (0.61)`` or ``Title (0.61; 12 others have both)``."""
        n = self.also_liked_by
        both = f"; {n} other{'s have' if n > 1 else ' has'} both" if n else ""
        return f"{self.title} ({self.similarity:.2f}{both})"


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One recommended item, why, and (when asked for) a personalised blurb."""

    item: Item
    score: float
    rank: int
    because: tuple[Reason, ...] = ()
    blurb: str | None = None
    blurb_source: str | None = None  # "generated" (GPT-2) or "template" (from facts); None: no blurb asked for
    grounded: bool | None = None  # the final blurb passed the guard: supported words, no salad, right titles
    blurb_note: str | None = None  # why a blurb was templated, or None
    # what ``score`` is: "cosine" (to the interest vector, -1..1), "hybrid" (a blend of z-scored
    # signals: only the order means something) or "popularity" (share of the top item's users, 0..1)
    score_kind: str = "cosine"

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of DESIGN.md's ``recommend --json``."""
        return {
            "item_id": self.item.id,
            "title": self.item.title,
            "score": round(self.score, 4),
            "score_kind": self.score_kind,
            "rank": self.rank,
            "because": [r.to_dict() for r in self.because],
            "blurb": self.blurb,
            "blurb_source": self.blurb_source,
            "grounded": self.grounded,
        }


@dataclass(frozen=True, slots=True)
class BlurbUpdate:
    """One step of a streamed blurb (``Recommender.stream``): the text of the ``index``-th
    recommendation so far, and, on its last step, the finished recommendation (its blurb
    guarded, ``blurb_source`` set; the text may differ from the streamed one)."""

    index: int  # 0-based position in the list
    text: str
    done: Recommendation | None = None
