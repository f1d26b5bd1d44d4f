"""Prompt building and post-processing for blurbs: pure functions, no model.

A prompt is a fixed frame of marker tokens around *quoted data*:

    <|item|> Title | Category | tag, tag | description
    <|user|> Liked A (5): "their words"; Liked B (4)
    <|because|> A
    <|blurb|> Because you liked A, Title

The blurb's opening (after ``<|blurb|>``) is fixed by us, not generated: it names the
item and the history item behind the recommendation, so a small model only has to
continue it. Catalog and review text can never contain a marker (``clean`` removes
anything shaped like ``<|...|>``), so item text cannot change the frame.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from recbot.types import Interaction, Item

__all__ = [
    "BECAUSE",
    "BLURB",
    "END",
    "ITEM",
    "MARKERS",
    "PAD",
    "USER",
    "BlurbPrompt",
    "build_prompt",
    "clean",
    "fact_continuation",
    "finish",
    "opening",
    "review_words",
]

END = "<|endoftext|>"
PAD = "<|pad|>"
ITEM = "<|item|>"
USER = "<|user|>"
BECAUSE = "<|because|>"
BLURB = "<|blurb|>"
MARKERS = (ITEM, USER, BECAUSE, BLURB)

_MARKER_LIKE = re.compile(r"<\|[^|>]*\|?>?|\|>")
_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def clean(text: str, limit: int | None = None) -> str:
    """Text as data: no marker-like sequences, one line, at most ``limit`` chars (cut at a word)."""
    text = _SPACE.sub(" ", _MARKER_LIKE.sub(" ", text)).strip()
    if limit is not None and len(text) > limit:
        cut = text[:limit].rsplit(" ", 1)[0]
        text = cut.rstrip(",;:") + "…"
    return text


@dataclass(frozen=True, slots=True)
class BlurbPrompt:
    text: str  # everything the model sees, ending with the opening
    opening: str  # the blurb's fixed first words


def opening(item: Item, because: Item | None) -> str:
    title = clean(item.title, 120)
    return f"Because you liked {clean(because.title, 120)}, {title}" if because else title


def _history_line(history: Sequence[tuple[Item, Interaction]], because: Item | None, max_items: int) -> str:
    liked = [(it, h) for it, h in history if h.rating is None or h.rating >= 4]
    # the reason first, then the most recent likes
    liked.sort(key=lambda p: (because is None or p[0].id != because.id, -(p[1].timestamp or 0)))
    parts = []
    for item, interaction in liked[:max_items]:
        rating = "" if interaction.rating is None else f" ({interaction.rating:g})"
        words = f': "{clean(interaction.review, 90)}"' if interaction.review else ""
        parts.append(f"Liked {clean(item.title, 80)}{rating}{words}")
    return "; ".join(parts) if parts else "New here"


def build_prompt(
    item: Item,
    history: Sequence[tuple[Item, Interaction]],
    because: Item | None,
    *,
    max_history: int = 3,
    max_description: int = 240,
) -> BlurbPrompt:
    """The prompt for one blurb about ``item`` for a user with ``history``.

    Args:
        item: the recommended item.
        history: the user's (item, interaction) pairs.
        because: the history item behind the recommendation, or None.
        max_history: liked items shown, the reason first.
        max_description: chars of the item's description kept.
    """
    facts = [
        clean(item.title, 120),
        clean(item.category, 40),
        clean(", ".join(item.tags[:6]), 100),
        clean(item.description, max_description),
    ]
    start = opening(item, because)
    text = (
        f"{ITEM} {' | '.join(f for f in facts if f)}\n"
        f"{USER} {_history_line(history, because, max_history)}\n"
        f"{BECAUSE} {clean(because.title, 120) if because else 'none'}\n"
        f"{BLURB} {start}"
    )
    return BlurbPrompt(text=text, opening=start)


_PREDICATES = ("should suit you", "is worth a look", "is a natural next pick", "could be your next favourite")


def fact_continuation(item: Item) -> str:
    """A continuation built from the item's facts alone (training targets and templates)."""
    predicate = _PREDICATES[sum(map(ord, item.id)) % len(_PREDICATES)]
    first = first_sentences(clean(item.description), 2)
    tags = [clean(t) for t in item.tags[:2] if t]
    detail = f" It is {' and '.join(tags)}." if tags and not first else ""
    return f" {predicate}. {first}{detail}".rstrip()


def review_words(review: str, limit: int | None = None) -> str:
    """A review as a blurb target and as an evaluation reference: its first two
    sentences (for Amazon data, the summary and the first sentence), cut at ``limit``."""
    text = first_sentences(clean(review), 2)
    if limit is not None and len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "."
    return text


def first_sentences(text: str, n: int) -> str:
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[n - 1]].strip() if len(ends) >= n else text.strip()


def finish(raw: str, *, max_chars: int) -> str:
    """Clean a generated continuation: stop at a marker, drop repeated sentences, end at a
    sentence boundary within ``max_chars`` (or at a word, with a full stop added)."""
    for marker in (END, PAD, *MARKERS, "\n"):
        raw = raw.split(marker, 1)[0]
    raw = _SPACE.sub(" ", raw)
    sentences: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(raw):
        sentences.append(raw[start : m.end()])
        start = m.end()
    tail = raw[start:]
    seen: set[str] = set()
    kept: list[str] = []
    for s in sentences:
        key = s.strip().lower()
        if key and key not in seen:
            seen.add(key)
            kept.append(s)
    text = "".join(kept)
    if not kept:  # no sentence end at all: keep the words, end them
        text = tail
    while len(text) > max_chars and len(kept) > 1:
        kept.pop()
        text = "".join(kept)
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0]
    text = text.strip()
    if text and text[-1] not in ".!?":
        text = text.rstrip(",;:-") + "."
    return text
