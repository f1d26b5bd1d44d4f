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

import itertools
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
    "frame_sentences",
    "link_sentences",
    "opening",
    "review_clause",
    "review_words",
    "shared_tags",
    "unframed",
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
_SENTENCE_END = re.compile(r"[.!?][\"”']?(?=\s|$)")


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
    liked = [(it, h) for it, h in history if h.liked]
    # the reason first, then the most recent likes
    liked.sort(key=lambda p: (because is None or p[0].id != because.id, -(p[1].timestamp or 0)))
    parts = []
    for item, interaction in liked[:max_items]:
        rating = "" if interaction.rating is None else f" ({interaction.rating:g})"
        words = f': "{clean(interaction.review, 80)}"' if interaction.review else ""
        parts.append(f"Liked {clean(item.title, 80)}{rating}{words}")
    return "; ".join(parts) if parts else "New here"


def build_prompt(
    item: Item,
    history: Sequence[tuple[Item, Interaction]],
    because: Item | None,
    *,
    max_history: int = 3,
    max_description: int = 200,
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
        f"{BECAUSE} {_because_line(item, because)}\n"
        f"{BLURB} {start}"
    )
    return BlurbPrompt(text=text, opening=start)


def shared_tags(item: Item, because: Item | None, limit: int = 3) -> list[str]:
    """The item's tags that the liked item also has, in the item's order."""
    if because is None:
        return []
    theirs = {t.casefold() for t in because.tags}
    return [clean(t) for t in item.tags if t.casefold() in theirs][:limit]


def _because_line(item: Item, because: Item | None) -> str:
    if because is None:
        return "none"
    shared = shared_tags(item, because)
    return clean(because.title, 120) + (f" | shared: {', '.join(shared)}" if shared else "")


def _and(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def _link(frame: str, shared: str) -> str:
    """A link frame filled: "is also an adventure pick", "is also a horror pick"."""
    return frame.format(shared=shared, a=article(shared))


def article(word: str) -> str:
    """ "a" or "an" before ``word``, by its spelling: "an adventure", "a ukulele", "a one-off"."""
    w = word.lower()
    if re.match(r"u(?!n)[^aeiou\W][aeiou]|uni|eu|one\b", w):  # a "yoo"/"wuh" sound: a ukulele, a user, a one-off
        return "a"
    return "an" if w[:1] in ("a", "e", "i", "o", "u") or w.startswith(("hour", "honest")) else "a"


# The connective frames a blurb's continuation is taught to use (training targets for
# catalogs without reviews, and the template). Their words are all in
# support.CONNECTIVES or filled from the item's and the liked item's facts.
# Tags are genres ("horror"), moods ("cosy") and things ("guitar"): each frame must read
# well with all three ("is also guitar", "shares the cosy of that one" and "is video game,
# like that one" did not).
LINK_FRAMES = (" is another {shared} pick.", " is also {a} {shared} pick.")
CATEGORY_FRAMES = (" is another pick from {category}.",)
PLAIN_FRAMES = (" should suit you.", " is a different direction to try.")
OWN_WORDS_FRAME = ' You wrote of it: "{words}"'
OTHER_WORDS_FRAME = ' You wrote of {title}: "{words}"'


def _subsequences(parts: Sequence[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for part in parts:
        out += [[*o, part] for o in out]
    return [o for o in out if o]


def description_sentences(item: Item) -> list[str]:
    """The item's description, cleaned, one whole sentence (ended by . ! or ?) at a time."""
    description = clean(item.description)
    ends = [0, *(m.end() for m in _SENTENCE_END.finditer(description))]
    return [t for a, b in itertools.pairwise(ends) if (t := description[a:b].strip())]


def link_sentences(item: Item, because: Item | None) -> list[str]:
    """The sentences that may complete the opening, as written: the link frames with
    any of the tags the item shares with the liked item; else, for the same category,
    the category frame; else the plain frames. As in ``fact_continuation``: an item
    that shares tags is never called "a different direction"."""
    shared = shared_tags(item, because)
    if shared:
        return sorted({_link(f, _and(subset)) for subset in _subsequences(shared) for f in LINK_FRAMES})
    if because is not None and item.category and because.category == item.category:
        return [f.format(category=clean(item.category, 40)) for f in CATEGORY_FRAMES]
    return list(PLAIN_FRAMES)


def frame_sentences(item: Item, because: Item | None) -> set[str]:
    """Every sentence a facts continuation may consist of, normalised (see ``unframed``):
    ``link_sentences`` and each sentence of the item's description."""
    allowed = set(link_sentences(item, because))
    allowed |= set(description_sentences(item))
    return {_normal(s) for s in allowed if s}


def _normal(sentence: str) -> str:
    return _SPACE.sub(" ", sentence.replace("’", "'")).strip().lower()


def unframed(continuation: str, item: Item, because: Item | None) -> list[str]:
    """The sentences of a facts continuation that are neither a taught frame, a sentence
    of the item's description, nor a quote of the user ("You wrote of X: ..."; the guard
    checks the quote itself): the rule that keeps a small model's text fluent."""
    allowed = frame_sentences(item, because)
    out = []
    start = 0
    text = continuation.strip()
    for m in [*_SENTENCE_END.finditer(text), None]:
        end = m.end() if m else len(text)
        sentence = text[start:end].strip()
        start = end
        if not sentence or sentence.lower().startswith("you wrote of "):
            continue
        if _normal(sentence) not in allowed:
            out.append(sentence)
    return out


def review_clause(review: str, max_words: int = 14) -> str:
    """The first sentence of a review (or its first clause), ended, when short enough to quote."""
    first = first_sentences(clean(review), 1)
    for text in (first, first.split(",", 1)[0]):
        text = text.strip().strip('"“”').strip()
        if text and len(text.split()) <= max_words:
            return text if text[-1] in ".!?" else text.rstrip(",;:-") + "."
    return ""


def sentence_options(
    item: Item, because: Item | None, history: Sequence[tuple[Item, Interaction]] = ()
) -> tuple[list[str], list[str]]:
    """The sentences a facts continuation is made of, as written (leading space
    included): ``(first, rest)``. The first completes the opening (a link, category or
    plain frame); the rest are the user's own words about liked items that share a tag
    with this one (or the liked item behind it) and the item's description sentences.
    ``fact_continuation`` picks one path through these; the generator picks its own."""
    first = link_sentences(item, because)
    rest: list[str] = []
    tags = {t.casefold() for t in item.tags}
    for it, h in history:
        if not h.review or not h.liked or it.id == item.id:
            continue
        words = review_clause(h.review)
        if not words:
            continue
        if because is not None and it.id == because.id:
            rest.append(OWN_WORDS_FRAME.format(words=words))
        elif tags & {t.casefold() for t in it.tags}:
            rest.append(OTHER_WORDS_FRAME.format(title=clean(it.title, 120), words=words))
    rest += [" " + sentence for sentence in description_sentences(item)]
    return sorted(first), list(dict.fromkeys(rest))


def _own_words(item: Item, because: Item | None, history: Sequence[tuple[Item, Interaction]]) -> str:
    """A sentence quoting the user's own review: of the liked item behind the
    recommendation, else of the liked item that shares most tags with this one."""
    reviewed = [(it, h) for it, h in history if h.review and h.liked and it.id != item.id]
    if because is not None:
        for it, h in reviewed:
            if it.id == because.id and (words := review_clause(h.review or "")):
                return OWN_WORDS_FRAME.format(words=words)
    tags = {t.casefold() for t in item.tags}
    best = max(
        ((len(tags & {t.casefold() for t in it.tags}), h.timestamp or 0, it, h) for it, h in reviewed),
        key=lambda x: (x[0], x[1]),
        default=None,
    )
    if best is not None and best[0] > 0 and (words := review_clause(best[3].review or "")):
        return OTHER_WORDS_FRAME.format(title=clean(best[2].title, 120), words=words)
    return ""


def fact_continuation(
    item: Item,
    because: Item | None = None,
    history: Sequence[tuple[Item, Interaction]] = (),
    *,
    variant: int = 0,
) -> str:
    """A continuation built from facts: how the item links to the liked item (shared
    tags, else category), the user's own words about a liked item, and the item's
    first description sentence. ``variant`` picks the frame (training targets vary it;
    the template uses 0). Every word is a connective or comes from those facts."""
    shared = shared_tags(item, because)
    if shared:
        link = _link(LINK_FRAMES[variant % len(LINK_FRAMES)], _and(shared))
    elif because is not None and item.category and because.category == item.category:
        link = CATEGORY_FRAMES[variant % len(CATEGORY_FRAMES)].format(category=clean(item.category, 40))
    else:
        link = PLAIN_FRAMES[variant % len(PLAIN_FRAMES)]
    first = first_sentences(clean(item.description), 1)
    if len(first) > 200 or first[-1:] not in (".", "!", "?"):
        first = ""
    return f"{link}{_own_words(item, because, history)}{' ' + first if first else ''}"


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
    """Clean a generated continuation: stop at a marker, drop repeated sentences and an
    unfinished last one, and keep whole sentences within ``max_chars``. Returns "" when no
    whole sentence remains: a sentence is never cut mid-phrase and patched with a full stop."""
    for marker in (END, PAD, *MARKERS, "\n"):
        raw = raw.split(marker, 1)[0]
    raw = _SPACE.sub(" ", raw)
    sentences: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(raw):
        sentences.append(raw[start : m.end()])
        start = m.end()
    seen: set[str] = set()
    kept: list[str] = []
    for s in sentences:
        key = s.strip().lower()
        if key and key not in seen:
            seen.add(key)
            kept.append(s)
    while kept and len("".join(kept).strip()) > max_chars:
        kept.pop()
    return "".join(kept).strip()
