"""What a blurb may say: the words that support it, and whether it is personal. Pure.

A blurb is a fixed opening ("Because you liked X, Y") and a continuation. Every content
word of the continuation must be *supported*: it occurs in

- the recommended item's facts (title, category, tags, description),
- the user's liked items' titles, or the words of the user's own reviews of liked items,
- or ``CONNECTIVES``: the small list of function and linking words below, which carry
  no fact ("is", "too", "you", "wrote", "another", ...).

Nothing else: no word of another item's description, no word of another user's review,
and no tag of a liked item that this item lacks ("Stand Mixer is also light" was written
when liked items' tags counted as support: true of the liked film, not of the mixer).
``Support`` is that set for one blurb; decoding is restricted to it (see
``constrain.AllowedWords``) and the guard checks it again (``unsupported``).

Words are runs of letters and digits joined by inner hyphens or apostrophes
("single-coil", "Herbert's", "22-minute"), compared case-insensitively. A hyphenated
compound counts as one word, so a spliced copy ("maple-coil-coil") is unsupported even
though each part is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from recbot.types import Interaction, Item

__all__ = [
    "CONNECTIVES",
    "LINK_WORDS",
    "Support",
    "content_words",
    "liked",
    "misquotes",
    "personal_evidence",
    "quotes",
    "support_for",
    "unsupported",
    "words",
]

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")

# Function words and the few linking words the blurb frames use (prompts.FRAMES). They
# state no fact about an item, so they need no support. Keep this list small: every
# word added here is a word the generator may use about any item.
CONNECTIVES = frozenset(
    """
    a an the and or but nor so yet of to in on at by for from with into over about as than then
    this that these those it its it's itself they them their there here he she his her him
    you your you're i i'm me my we our us is are was were be been being am has have had do does did
    will would can could should may might not no also too very more most much many some any all both
    each every another other one ones same such just only even still again when which who what how
    if because like liked wrote called said words word shares share pick picks next try different
    direction suit
    """.split()
)
# Words that tie a shared fact back to the liked item ("is comedy too", "also light").
LINK_WORDS = frozenset("too also both same shares share again like another".split())


def words(text: str) -> list[str]:
    """The words of ``text``, lowercased (see the module docstring)."""
    return [w.lower().replace("’", "'") for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    """The words of ``text`` that are not connectives."""
    return [w for w in words(text) if w not in CONNECTIVES]


def liked(h: Interaction) -> bool:
    """``Interaction.liked``, as a function for filters and sorts."""
    return h.liked


def _facts(item: Item) -> str:
    return f"{item.title} {item.category} {' '.join(item.tags)} {item.description}"


@dataclass(frozen=True, slots=True)
class Support:
    """The words one blurb may use, by where they come from."""

    item: frozenset[str]  # the recommended item's facts
    history: frozenset[str]  # liked items' titles
    own_words: frozenset[str]  # the user's reviews of liked items
    liked_titles: tuple[str, ...] = ()  # liked items' titles, as written
    reviews: tuple[tuple[str, str], ...] = ()  # (title, the user's review) of liked items
    because: str | None = None  # the title of the liked item the opening names

    @property
    def allowed(self) -> frozenset[str]:
        return self.item | self.history | self.own_words | CONNECTIVES


def support_for(item: Item, history: Sequence[tuple[Item, Interaction]], because: Item | None = None) -> Support:
    """The support of a blurb about ``item`` for a user with ``history`` (``because``,
    the liked item the opening names, counts as liked even without a rating)."""
    liked_pairs = [(it, h) for it, h in history if liked(h) and it.id != item.id]
    labels = " ".join(it.title for it, _ in liked_pairs) + (f" {because.title}" if because else "")
    reviews = " ".join(h.review or "" for _, h in liked_pairs)
    titles = tuple(dict.fromkeys(it.title for it, _ in liked_pairs))
    return Support(
        item=frozenset(words(_facts(item))),
        history=frozenset(words(labels)),
        own_words=frozenset(words(reviews)),
        liked_titles=titles,
        reviews=tuple((it.title, h.review) for it, h in liked_pairs if h.review),
        because=because.title if because else None,
    )


def unsupported(continuation: str, support: Support | Iterable[str]) -> list[str]:
    """The words of ``continuation`` that nothing supports, in order of appearance."""
    allowed = support.allowed if isinstance(support, Support) else frozenset(support) | CONNECTIVES
    return [w for w in words(continuation) if w not in allowed]


_QUOTE = re.compile(r"[\"“]([^\"“”]+)[\"”]")
_WROTE = re.compile(r"\byou (?:wrote|said|called)\b", re.IGNORECASE)
_WROTE_OF = re.compile(r"\byou wrote of (.+?): [\"“]([^\"“”]+)[\"”]", re.IGNORECASE)


def quotes(text: str) -> list[str]:
    """The quoted spans of ``text``, normalised to their words."""
    return [_norm(q) for q in _QUOTE.findall(text)]


def _norm(text: str) -> str:
    return " ".join(words(text))


def misquotes(continuation: str, support: Support) -> list[str]:
    """Words put in the user's mouth: a quote that is not a span of the user's own
    review, or "you wrote of T" where T is not the liked item whose review it quotes."""
    problems: list[str] = []
    reviews = [(title, _norm(review)) for title, review in support.reviews]
    for quote in _QUOTE.findall(continuation):
        q = _norm(quote)
        if q and not any(q in review for _, review in reviews):
            problems.append(f"quote not in the user's reviews: {quote!r}")
    claims = _WROTE_OF.findall(continuation)
    if len(claims) < len(_WROTE.findall(continuation)):
        problems.append("says what the user wrote without quoting it")
    for subject, quote in claims:
        title = support.because if subject.lower() == "it" else subject
        # two liked items may share a title (a book and its film): either review will do
        if not any(_norm(quote) in review for t, review in reviews if t == title):
            problems.append(f"quote not from the user's review of {title!r}")
    return problems


def personal_evidence(continuation: str, item: Item, support: Support, because: Item | None) -> list[str]:
    """Why a continuation is personal beyond its opening; empty when it is not.

    Evidence is any of:
    - ``own words``: a content word of the user's own reviews that the item's facts lack
      (so it cannot be there by chance);
    - ``names <title>``: the title of another liked item;
    - ``shares <tag>``: a tag the item shares with the liked item behind the
      recommendation, next to a linking word ("too", "also", "shares", ...).
    """
    found: list[str] = []
    cont = words(continuation)
    own = sorted({w for w in cont if w in support.own_words and w not in support.item and w not in CONNECTIVES})
    if own:
        found.append("own words: " + ", ".join(own))
    lowered = continuation.lower()
    for title in support.liked_titles:
        if title != item.title and re.search(rf"(?<!\w){re.escape(title.lower())}(?!\w)", lowered):
            found.append(f"names {title}")
    if because is not None and LINK_WORDS & set(cont):
        for tag in sorted(set(item.tags) & set(because.tags)):
            if re.search(rf"(?<!\w){re.escape(tag.lower())}(?!\w)", lowered):
                found.append(f"shares {tag}")
    return found
