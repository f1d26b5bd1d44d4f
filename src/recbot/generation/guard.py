"""The grounding guard: pure checks on a finished blurb, and the template fallback.

A blurb passes when it
- names its item (the exact title, or its short form: the part before " (" or ": "),
- names no other catalog item, except items in the user's own history,
- has no URL, no markup, no marker or special token, no echo of the prompt frame,
- is between ``min_words`` words and ``max_chars`` characters, without a repetition loop,
- (given its ``Support``) uses no word in its continuation that the item's facts, the
  user's liked items and own words, or the connectives do not support,
- (given a ``FluencyModel``, or always for the rules) is not word salad: see
  ``fluency.salad_reasons``.

Titles are matched on word boundaries, case-sensitively, longest first, so a blurb about
"Dune: Part One" does not count as naming "Dune", and "wild" in "a wild ride" is not the
book "Wild". Lookup goes through a first-word index, so checking a blurb against a
100k-item catalog costs about as much as against a small one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from recbot.generation.fluency import OPENING_WORD, FluencyModel, salad_reasons
from recbot.generation.prompts import clean, fact_continuation, opening, unframed
from recbot.generation.support import Support, misquotes, unsupported
from recbot.types import Interaction, Item

__all__ = ["OPENING_WORD", "GuardResult", "TitleIndex", "check_blurb", "short_title", "template_blurb"]

_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)
_URL = re.compile(r"(https?://|www\.|\b[\w-]+\.(com|org|net|io)\b)", re.IGNORECASE)
_MARKUP = re.compile(r"<[^>]{0,40}>|<\||\|>|&[a-z]+;|\[/?[a-z]+\]", re.IGNORECASE)
_ECHO = re.compile(r"\b(Liked\b[^.;]*\(\d|New here|Category:|Tags:)")


def short_title(title: str) -> str:
    """'Toy Story (1995)' -> 'Toy Story'; 'The Lord of the Rings: The Fellowship' -> 'The Lord of the Rings'."""
    for sep in (" (", ": "):
        head = title.split(sep, 1)[0].strip()
        if head and head != title and len(head) >= 3:
            return head
    return title


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(text))


class TitleIndex:
    """Every catalog title (and short form), indexed by its first token."""

    def __init__(self, items: Iterable[Item]) -> None:
        self._by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        self._forms: dict[str, set[str]] = {}
        items = list(items)
        full = {clean(item.title) for item in items}
        for item in items:
            title = clean(item.title)
            short = short_title(title)
            # a short form that is another item's full title ("Dune" of "Dune: Part One") is that item's name
            forms = {title} | ({short} if short not in full else set())
            self._forms[item.id] = forms
            for form in forms:
                toks = _tokens(form)
                if toks:
                    self._by_first.setdefault(toks[0], []).append((toks, item.id))
        for entries in self._by_first.values():
            entries.sort(key=lambda e: -len(e[0]))  # longest match first

    def forms(self, item_id: str) -> set[str]:
        """The title and short title of an item, as matched."""
        return self._forms.get(item_id, set())

    def mentions(self, text: str) -> list[tuple[str, str]]:
        """``(item_id, matched title)`` for each title named in ``text``, longest match
        first and non-overlapping (a title inside a longer one does not count)."""
        toks = _tokens(text)
        found: list[tuple[str, str]] = []
        i = 0
        while i < len(toks):
            best: tuple[tuple[str, ...], list[str]] | None = None
            for cand, item_id in self._by_first.get(toks[i], ()):
                if toks[i : i + len(cand)] == cand:
                    if best is None or len(cand) > len(best[0]):
                        best = (cand, [item_id])
                    elif len(cand) == len(best[0]):
                        best[1].append(item_id)
            if best is None:
                i += 1
                continue
            found.extend((item_id, " ".join(best[0])) for item_id in best[1])
            i += len(best[0])
        return found


@dataclass(frozen=True, slots=True)
class GuardResult:
    ok: bool
    reason: str | None = None  # why it failed


def check_blurb(
    blurb: str,
    item: Item,
    index: TitleIndex,
    *,
    allowed: Iterable[str] = (),
    min_words: int = 8,
    max_chars: int = 400,
    support: Support | None = None,
    fluency: FluencyModel | None = None,
    lead: str | None = None,
    frames: bool = False,
    because: Item | None = None,
) -> GuardResult:
    """Check a finished blurb for ``item``; ``allowed`` are item ids it may also name
    (the user's own history). With ``support`` (and ``lead``, the fixed opening), every
    word after the opening must be supported; with ``fluency``, no sentence may be
    unlikely under the catalog's own n-gram model. With ``frames`` (a generator taught
    fact continuations), every sentence after the opening must be a taught frame about
    ``because``, a sentence of the item's description, or a quote of the user."""
    if not blurb or len(blurb.split()) < min_words:
        return GuardResult(False, "too short")
    if len(blurb) > max_chars:
        return GuardResult(False, "too long")
    # A title is data: one that looks like a URL or markup may be named, nothing else may.
    residual = blurb
    for form in sorted({f for i in {item.id, *allowed} for f in index.forms(i)}, key=len, reverse=True):
        residual = residual.replace(form, " ")
    if _URL.search(residual):
        return GuardResult(False, "contains a URL")
    if _MARKUP.search(residual):
        return GuardResult(False, "contains markup or a special token")
    if _ECHO.search(residual):
        return GuardResult(False, "echoes the prompt")
    words = [w.lower() for w in re.findall(r"\w+", blurb)]
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    if trigrams and len(set(trigrams)) < 0.8 * len(trigrams):
        return GuardResult(False, "repeats itself")
    mentioned = index.mentions(blurb)
    if not any(item_id == item.id for item_id, _ in mentioned):
        return GuardResult(False, "does not name its item")
    ok_ids = {item.id, *allowed}
    others = sorted({title for item_id, title in mentioned if item_id not in ok_ids})
    # a title shared by the item and another catalog item is the item's own name
    own = {title for item_id, title in mentioned if item_id in ok_ids}
    others = [t for t in others if t not in own]
    if others:
        return GuardResult(False, f"names another catalog item: {others[0]!r}")
    continuation = blurb[len(lead) :] if lead and blurb.startswith(lead) else blurb
    if support is not None:
        missing = unsupported(continuation, support)
        if missing:
            return GuardResult(False, f"unsupported word {missing[0]!r}")
        wrong = misquotes(continuation, support)
        if wrong:
            return GuardResult(False, wrong[0])
    salad = salad_reasons(OPENING_WORD + continuation if lead else blurb, fluency)
    if salad:
        return GuardResult(False, f"word salad: {salad[0]}")
    if frames:
        loose = unframed(continuation, item, because)
        if loose:
            return GuardResult(False, f"not a taught sentence: {loose[0]!r}")
    return GuardResult(True)


def template_blurb(
    item: Item,
    because: Item | None,
    index: TitleIndex,
    *,
    history: Sequence[tuple[Item, Interaction]] = (),
    allowed: Iterable[str] = (),
    max_chars: int = 320,
) -> str:
    """A blurb from facts alone: the fallback, built to pass the guard.

    The full form (shared tags, the user's own words, the description's first sentence)
    is used when it passes; when it does not (it names another item, holds markup, ...),
    the blurb keeps only the opening and the link to the liked item.
    """
    text = opening(item, because) + fact_continuation(item, because, history)
    if len(text) <= max_chars and check_blurb(text, item, index, allowed=allowed, min_words=1, max_chars=max_chars).ok:
        return text
    return opening(item, because) + fact_continuation(replace(item, description=""), because)
