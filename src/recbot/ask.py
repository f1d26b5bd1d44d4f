"""The ask interpreter: a user's free-text ask turned into hard constraints and soft text.

Embedding "no horror, something cosy" as one sentence pulls the answer *towards* horror:
sentence encoders do not model negation. So, in the spirit of InteRecAgent but without an
LLM, ``interpret`` splits an ask into

- hard constraints a ranker can filter on: a wanted category, excluded categories, tags and
  items, and the items the ask names positively (anchors, to embed by their own text);
- follow-ups on the previous answer ("more like the second one", "not that one");
- ``soft``, the words left to embed, and ``avoid``, negated phrases no tag or title covers;
- ``vague``/``surprise`` for asks with no content, and an ``informativeness`` in [0, 1]
  a caller can use to weight the ask against the user's history.

How it works. The ask is cut into tokens (accents stripped, case folded) and scanned left to
right; at each token the longest of these wins, ties going to the earlier kind:

1. clause breaks (, . ; ! ? and "but", "and", ...), negation triggers, filler ("I want", "a");
2. follow-ups ("the second one", "number 3", "that one"), only when there is a previous answer;
3. catalog categories and tags, their plurals, and synonyms (``DEFAULT_SYNONYMS``);
4. catalog titles, matched fuzzily with rapidfuzz on word windows, so partial titles count.

Negation is NegEx-style: a trigger opens a scope that runs to the next clause break, and
everything found in it is negated. The calls made where the ask is ambiguous:

- "and" ends a scope, "or"/"nor" continue it: "no horror or gore" negates both, but in
  "no horror and cosy" cosy is wanted. A wrong exclusion is a hard filter that removes what
  the user asked for, a missed one only lets some unwanted items through, so when in doubt
  the scope stays short; "no horror and gore" leaves gore wanted (say "no horror or gore").
- A scope that already holds something ends at a word that opens a new request
  ("no horror something cosy"), but "like" does not end it: "no horror like The Shining"
  negates The Shining too, and "nothing like Dune" negates Dune.
- Positive tags are *not* a hard requirement: catalogs tag sparsely, so requiring "cosy"
  would drop every cosy item nobody tagged. They are reported in ``tags`` (for a caller to
  boost) and stay in ``soft``. Negated tags are hard: embeddings cannot express them.
- A tag whose last word names a category implies it ("a board game" -> Games) unless the ask
  names a category itself; negated, it does not ("not a video game" keeps board games).
- In a negated scope, a category word after a modifier is that modifier's head noun:
  "no horror films" excludes horror, not all films.
- A category word right next to a title qualifies the title rather than constraining the
  answer: "the Zelda game" names the game, "the Dune film" picks "Dune: Part One" over the
  novel "Dune".
- Two different wanted categories ("a film or a book") set no category filter at all.
- Follow-ups are read only when there is a previous answer, and then "the first" always means
  its first item, never "the first book of a series".
- "that one"/"this one" mean the first item shown, the one a reader of a list meets first
  (and the only one of a single answer).

Titles must score at least ``TITLE_SCORE`` (rapidfuzz ``ratio``, 0..100) against a title, its
short form (``short_title``) or a window of its words, and hold a distinctive word: not a
function word, filler, category or synonym word, so "the" or "a game" never names a title
(a title made only of such words needs three or more of them typed in full). A whole title
beats a partial one, and a title beats another item's short form ("Dune" is the novel, not
"Dune: Part One"). Ordinary words are weak evidence: when every distinctive word typed is an
ordinary word of the catalog (found in the descriptions or tags of items it does not name) and
none is capitalised mid-sentence, the span needs three words or more, and a partial one two
distinctive words. So "I loved Wild" names the book "Wild" but "something wild" does not, and
"a love story" is not the film "Love Story" while "a Love Story" is. A whole title shared by
several items names them all; a partial match that fits several items is dropped as ambiguous.

Limits: no coreference beyond the follow-up patterns, no comparatives ("shorter than Dune"),
no numbers or dates ("under two hours", "from the 90s"), English only; tags and categories are
matched exactly up to case, accents and plural, so "cozy" is not the tag "cosy" -- except through
an injected scorer (``AskIndex(similar=...)``; ``Recommender`` passes the BERT encoder), which maps
type words to categories and negated phrases to tags above a confidence threshold.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from rapidfuzz import fuzz, process

from recbot.generation.guard import short_title
from recbot.types import Item

__all__ = ["DEFAULT_SYNONYMS", "TITLE_SCORE", "AskIndex", "Interpretation", "interpret"]

logger = logging.getLogger(__name__)

TITLE_SCORE = 90.0  # rapidfuzz ratio a span must reach against a title: one typo in ~20 letters
_WORD_SCORE = 80.0  # looser per-word lookup that only gathers candidate titles for the span score
_COMMON_WORD = 2000  # a title word in more titles than this gathers no candidates: it is not a name
_MAX_TITLE_WORDS = 12  # longer titles are matched by a window of their words

# Each entry is a phrase people use for a kind of item whose catalog name differs. The target
# is resolved against the catalog: a category name or a word of one, else a tag; a target the
# catalog lacks is ignored, so the table is safe for any catalog.
DEFAULT_SYNONYMS: Mapping[str, str] = MappingProxyType(
    {
        "movie": "film",  # the everyday word; catalogs say "Films" as often as "Movies"
        "to watch": "film",  # "something to watch", "what to watch"; bare "watch" is also a gadget
        "to read": "book",  # "something to read"; bare "read" is often a verb about a title ("I've read Dune")
        "good read": "book",
        "a read": "book",
        "novel": "book",  # "a novel" is always a book
        "to play": "game",  # "something to play"; bare "play" is also a stage play or "word play"
        "sci-fi": "science fiction",  # the usual spelling of a common tag
        "scifi": "science fiction",
    }
)

# --- fixed vocabularies -------------------------------------------------------------------------


def _phrases(text: str) -> frozenset[str]:
    """A comma-separated phrase list: easier to read than one literal a line."""
    return frozenset(p.strip() for p in text.split(",") if p.strip())


_BREAKS = {",", ".", ";", "!", "?", "but", "and", "though", "although", "however", "yet", "whereas", "instead"}
_TRIGGERS = _phrases(
    "no, not, without, nothing, none, neither, except, except for, excluding, avoid, isnt, arent, dont, "
    "doesnt, dont want, do not want, anything but, but not, no more, rather than, instead of, "
    "other than, nothing with, nothing from, nothing about, nothing in, none with, no more of"
)
# Dropped from soft text: they say how the user asks, not what for.
_FILLER = _phrases(
    "a, an, the, some, any, something, anything, stuff, please, pls, thanks, thank you, i, im, ive, me, "
    "want, wanna, i want, i need, id like, i would like, would like, give me, show me, find me, "
    "recommend, suggest, looking for, in the mood for, how about, what about, can you, could you, maybe, "
    "perhaps, just, also, like, similar, similar to, such as, in the vein of, along the lines of, more, "
    "another, one, ones, else, different, whatever, again, really, loved, liked, enjoyed, adored, "
    "my favourites, my favorites, my favourite, my favorite, favourites, favorites, what i like"
)
_SURPRISE = {"surprise me", "surprise", "random"}
# After some negated content, these open a new, positive request ("no horror something cosy").
_OPENERS = {"something", "anything", "just", "maybe", "perhaps", "preferably", "ideally", "i", "give", "show", "more"}
_ARTICLES = {"a", "an", "some", "any"}
_SOMETHING = {"something", "anything", "stuff"}
# Function words: kept inside soft text but never distinctive, never counted as content.
_STOP = set(
    "about above after again all also am among an and any are as at be because been before being below between "
    "both by can could did do does doing down during each few for from further had has have having he her here "
    "hers him his how i if in into is it its itself just me more most much my no nor not now of off on once only "
    "or other our out over own same she should so some such than that the their them then there these they this "
    "those through to too under until up very was we were what when where which while who whom why will with "
    "would you your yours really quite bit lot lots kind sort".split()
)
_ORDINALS = {w: n for n, w in enumerate("first second third fourth fifth sixth seventh eighth ninth tenth".split(), 1)}
_ORDINALS |= {f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n, 'th') }": n for n in range(1, 11)} | {
    "last": -1
}  # -1: the last
_NUMBERS = {w: n for n, w in enumerate("one two three four five six seven eight nine ten".split(), 1)}
_REF_NOUNS = {"one", "item", "option", "pick", "choice", "suggestion", "recommendation"}
_REF_NUMBERED = {"number", "option", "item", "pick", "choice", "#"}

_TOKEN = re.compile(r"\w+(?:'\w+)*|[,.;!?#]")


def _fold(text: str) -> str:
    """Casefolded, accents stripped ("Amélie" -> "amelie"), apostrophes dropped ("don't" -> "dont")."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.casefold().replace("'", "")


@dataclass(frozen=True, slots=True)
class _Tok:
    raw: str  # as typed
    norm: str  # folded
    start: int  # character span in the (NFC) ask
    end: int

    @property
    def punct(self) -> bool:
        return not self.norm[:1].isalnum()


def _prepare(text: str) -> str:
    """Composed accents (so a word pattern takes "é" whole) and straight apostrophes."""
    return unicodedata.normalize("NFC", text).replace("’", "'").replace("‘", "'")


def _tokenize(text: str) -> list[_Tok]:
    """Words and the punctuation that matters; spans index ``_prepare(text)``."""
    text = _prepare(text)
    return [_Tok(m.group(), _fold(m.group()), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _words(text: str) -> tuple[str, ...]:
    """Folded word tokens, punctuation dropped: how titles, tags and categories are compared."""
    return tuple(t.norm for t in _tokenize(text) if not t.punct)


def _plural_variants(word: str) -> list[str]:
    """The word and what it would be without a plural ending; both sides of a lookup use these, so
    "comedies" meets "comedy" and "movies" meets "movie" without a real stemmer."""
    out = [word]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        out.append(word[:-1])
        if word.endswith("es"):
            out.append(word[:-2])
        if word.endswith("ies"):
            out.append(word[:-3] + "y")
    return out


# --- the index ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Form:
    words: tuple[str, ...]  # folded title words
    shadowed: bool  # a short form that is another item's full title ("Dune" of "Dune: Part One")


@dataclass(frozen=True, slots=True)
class _Candidate:
    item_id: str
    full: bool  # the span matched a whole title or short form, not a window of one
    score: float
    shadowed: bool
    category: str


class AskIndex:
    """Built once per catalog: categories, tags, titles (normalised: casefold, accents stripped via
    unicodedata), plus synonyms.

    Args:
        items: the catalog.
        synonyms: phrase -> category name, word of a category name, or tag. ``None`` means
            ``DEFAULT_SYNONYMS``; a mapping replaces them (extend with ``{**DEFAULT_SYNONYMS, ...}``).
        similar: optional scorer ``similar(phrase, category_names) -> scores`` (e.g. a BERT cosine)
            for a type word the tables do not know ("a flick"); it is asked only about the head
            noun of an article's phrase ("a funny flick" -> "flick") and "something to <verb>".
        threshold: the score ``similar`` must reach for its best category.
        tag_threshold: the score ``similar`` must reach for a negated phrase to exclude a tag
            ("nothing animated" -> tag "animation"). Stricter than ``threshold``: an exclusion is
            a hard filter. With all-MiniLM-L6-v2 on the demo tags: animated -> animation 0.85,
            romantic -> romance 0.79, scary -> horror 0.75; but violent -> crime 0.60 stays text.

    Example:
        >>> index = AskIndex([Item("1", "Dune", category="Books", tags=("science fiction",))])
        >>> interpret("a novel, no science fiction", index).exclude_tags
        ('science fiction',)
    """

    def __init__(
        self,
        items: Iterable[Item],
        *,
        synonyms: Mapping[str, str] | None = None,
        similar: Callable[[str, Sequence[str]], list[float]] | None = None,
        threshold: float = 0.5,
        tag_threshold: float = 0.7,
    ) -> None:
        items = list(items)
        self.similar = similar
        self.threshold = threshold
        self.tag_threshold = tag_threshold
        self.categories: tuple[str, ...] = tuple(dict.fromkeys(i.category for i in items if i.category))
        self.tags: tuple[str, ...] = tuple(dict.fromkeys(t for i in items for t in i.tags if t))
        self.category_of: dict[str, str] = {i.id: i.category for i in items}

        # phrase key -> ("category" | "tag", catalog name): categories first, in every spelling, then
        # tags; within each, exact spellings before plural variants. A tag that is a category's
        # singular ("book" on a field guide in Outdoors) must not take "a book" away from Books.
        self._phrases: dict[tuple[str, ...], tuple[str, str]] = {}
        for named in ([("category", c) for c in self.categories], [("tag", t) for t in self.tags]):
            for kind, name in named:
                key = _words(name)
                if key:
                    self._phrases.setdefault(key, (kind, name))
            for kind, name in named:
                key = _words(name)
                for variant in _plural_variants(key[-1]) if key else ():
                    self._phrases.setdefault((*key[:-1], variant), (kind, name))
        synonyms = DEFAULT_SYNONYMS if synonyms is None else synonyms
        for phrase, target in synonyms.items():
            # the target's one-word synonyms are its other names: "movie" finds "Movies & TV" for "to watch"
            names = [target, *(p for p, t in synonyms.items() if t == target and len(_words(p)) == 1)]
            resolved = self._resolve_target(names)
            key = _words(phrase)
            if resolved is None or not key:
                logger.debug("synonym %r -> %r: nothing in this catalog", phrase, target)
                continue
            for variant in _plural_variants(key[-1]):
                self._phrases.setdefault((*key[:-1], variant), resolved)
        self._max_phrase = max((len(k) for k in self._phrases), default=0)
        category_words = {w for k, (kind, _) in self._phrases.items() if kind == "category" for w in k}
        self._stop = _STOP | category_words | {w for p in _FILLER | _TRIGGERS | _SURPRISE for w in p.split()}
        self._stop |= set(_ORDINALS) | set(_NUMBERS) | _REF_NOUNS | _REF_NUMBERED

        self._forms: dict[str, list[_Form]] = {}
        full_titles = {_words(i.title) for i in items}
        by_word: dict[str, set[str]] = {}
        self._exact: dict[tuple[str, ...], set[str]] = {}  # form -> ids, for titles of function words only
        ordinary: set[str] = set()
        for item in items:
            title = _words(item.title)
            forms = [_Form(title[:_MAX_TITLE_WORDS], False)] if title else []
            fronted = _front_article(item.title)
            for other in (fronted, short_title(fronted)):
                words = _words(other)
                if words and all(words != f.words for f in forms):
                    forms.append(_Form(words[:_MAX_TITLE_WORDS], words in full_titles))
            self._forms[item.id] = forms
            for form in forms:
                self._exact.setdefault(form.words, set()).add(item.id)
            for word in title:
                by_word.setdefault(word, set()).add(item.id)
            text = _words(" ".join((item.description, *item.tags)))
            ordinary.update(w for w in text if w not in title)
        self._by_word = {w: ids for w, ids in by_word.items() if len(ids) <= _COMMON_WORD}
        self._vocab = list(self._by_word)
        self._ordinary = ordinary

    def _resolve_target(self, names: Sequence[str]) -> tuple[str, str] | None:
        """A synonym's target in this catalog: a category or tag named ``names[0]``, else the one
        category with any of ``names`` as a word of its name ("film" -> "Films & TV")."""
        hit = self._phrases.get(_words(names[0]))
        if hit is not None:
            return hit
        wanted = {v for n in names if len(_words(n)) == 1 for v in _plural_variants(_words(n)[0])}
        cats = [c for c in self.categories if any(set(_plural_variants(w)) & wanted for w in _words(c))]
        return ("category", cats[0]) if len(cats) == 1 else None

    def phrase_at(self, words: Sequence[str]) -> tuple[int, str, str] | None:
        """The longest category or tag phrase starting at ``words[0]``: ``(length, kind, name)``."""
        for n in range(min(self._max_phrase, len(words)), 0, -1):
            head = tuple(words[: n - 1])
            for variant in _plural_variants(words[n - 1]):
                hit = self._phrases.get((*head, variant))
                if hit is not None:
                    return n, hit[0], hit[1]
        return None

    def score_category(self, phrase: str) -> str | None:
        """The category ``similar`` puts above ``threshold`` for ``phrase``, else None."""
        return self._best(phrase, self.categories, self.threshold, "type word")

    def score_tag(self, phrase: str) -> str | None:
        """The tag ``similar`` puts at or above ``tag_threshold`` for ``phrase``, else None."""
        return self._best(phrase, self.tags, self.tag_threshold, "negated phrase")

    def _best(self, phrase: str, names: Sequence[str], threshold: float, what: str) -> str | None:
        if self.similar is None or not names:
            return None
        scores = self.similar(phrase, names)
        best = max(range(len(scores)), key=scores.__getitem__, default=None)
        if best is None or scores[best] < threshold:
            return None
        logger.debug("%s %r -> %r (%.2f)", what, phrase, names[best], scores[best])
        return names[best]

    def is_stop(self, word: str) -> bool:
        return word in self._stop

    def _items_for(self, word: str, cache: dict[str, set[str]]) -> set[str]:
        if word not in cache:
            hits = process.extract(word, self._vocab, scorer=fuzz.ratio, score_cutoff=_WORD_SCORE, limit=20)
            cache[word] = {i for hit, _, _ in hits for i in self._by_word[hit]}
        return cache[word]

    def titles_at(self, toks: Sequence[_Tok], start: int, cache: dict[str, set[str]]) -> tuple[int, list[_Candidate]]:
        """The longest title span starting at ``toks[start]``: ``(tokens consumed, candidates)``,
        or ``(0, [])``. Punctuation may sit inside a span ("Dr. Strangelove") but not at its ends."""
        positions: list[int] = []
        for j in range(start, len(toks)):
            if not toks[j].punct:
                positions.append(j)
                if len(positions) == _MAX_TITLE_WORDS:
                    break
            elif toks[j].norm == "#":
                break
        if not positions or positions[0] != start:
            return 0, []
        for m in range(len(positions), 0, -1):
            span = [toks[j] for j in positions[:m]]
            words = [t.norm for t in span]
            distinct = [k for k, w in enumerate(words) if w not in self._stop and len(w) > 1]
            pool = set().union(*(self._items_for(words[k], cache) for k in distinct)) if distinct else set()
            if not distinct:  # a title of function words only: exact whole title needed
                pool = self._exact.get(tuple(words), set())
            # Ordinary words typed in lower case are weak evidence ("something wild" is not the book
            # "Wild", "a love story" not the film "Love Story"): such a span needs three words or more,
            # and a partial one two distinctive words ("breath of the wild", not "of the wild").
            weak = all(not self.strong(toks, positions[k]) for k in distinct)
            if weak and m < 3:
                continue
            partial_ok = bool(distinct) and not (weak and len(distinct) < 2)
            # a piece of a title is cut at its content words: "more like Star Wars" is not the
            # window "Like Stars" of "Like Stars on Earth", "I loved American History X" not "... of Love (American"
            partial_ok = partial_ok and words[0] not in self._stop and words[-1] not in self._stop
            cands = self._score(" ".join(words), m, pool, partial_ok=partial_ok)
            if cands:
                return positions[m - 1] - start + 1, cands
        return 0, []

    def strong(self, toks: Sequence[_Tok], j: int) -> bool:
        """One word is evidence of a title if it is no ordinary catalog word or is capitalised mid-sentence."""
        if toks[j].norm not in self._ordinary:
            return True
        sentence_start = j == 0 or toks[j - 1].norm in {".", "!", "?"}
        return toks[j].raw[:1].isupper() and not sentence_start

    def _score(self, query: str, m: int, pool: set[str], *, partial_ok: bool) -> list[_Candidate]:
        out: list[_Candidate] = []
        for item_id in sorted(pool):
            best: _Candidate | None = None
            for form in self._forms[item_id]:
                if len(form.words) < m:
                    continue
                full = len(form.words) == m
                if not full and not partial_ok:
                    continue
                windows = [form.words] if full else [form.words[k : k + m] for k in range(len(form.words) - m + 1)]
                score = max(fuzz.ratio(query, " ".join(w)) for w in windows)
                if score < TITLE_SCORE:
                    continue
                cand = _Candidate(item_id, full, score, form.shadowed, self.category_of.get(item_id, ""))
                if best is None or _rank(cand, None) > _rank(best, None):
                    best = cand
            if best is not None:
                out.append(best)
        return out


_TRAILING_ARTICLE = re.compile(
    r"^(?P<head>.+), (?P<article>The|A|An|Les|Le|La|L'|Il|Lo|Das|Der|Die|El|Los|Las|De|Het)(?P<tail>\s*[(:].*)?$"
)


def _front_article(title: str) -> str:
    """A catalog's sortable spelling as people say it: "Godfather, The (1972)" -> "The Godfather (1972)"
    (MovieLens and library catalogs move the article to the end); other titles unchanged."""
    m = _TRAILING_ARTICLE.match(title)
    if m is None:
        return title
    gap = "" if m["article"].endswith("'") else " "
    return f"{m['article']}{gap}{m['head']}{m['tail'] or ''}"


def _rank(c: _Candidate, prefer: str | None) -> tuple[bool, bool, int, bool]:
    return (prefer is not None and c.category == prefer, c.full, round(c.score), not c.shadowed)


# --- interpretation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interpretation:
    """What an ask asks for. Ids are item ids; positions are 1-based, into the previous answer."""

    category: str | None  # hard filter: a catalog category the ask names ("a film" -> "Films")
    exclude_categories: tuple[str, ...]
    exclude_tags: tuple[str, ...]  # negated tags ("no horror" -> ("horror",)), spelt as in the catalog
    anchors: tuple[str, ...]  # ids of titles named positively ("like Project Hail Mary"), and followed-up items
    exclude_items: tuple[str, ...]  # ids of negated titles ("not Dune") and rejected previous items
    avoid_text: tuple[str, ...]  # negated free phrases that are no tag or category ("nothing scary" -> ("scary",))
    soft: str  # what is left to embed ("cosy", "family night"); "" if nothing
    vague: bool  # no content at all: "more please", "another one", "surprise me"
    surprise: bool  # "surprise me"
    refers_to: tuple[int, ...]  # follow-ups: "more like the second one" -> (2,)
    reject_previous: tuple[int, ...]  # "not that one", "not the first" -> positions to exclude
    informativeness: float  # 0..1, how much the ask says; 0 for vague
    tags: tuple[str, ...] = ()  # tags named positively: a preference (also in soft), not a filter

    def describe(self, titles: Mapping[str, str]) -> str:
        """One line for the chat page, e.g. ``Films, not horror, like Project Hail Mary``.

        Args:
            titles: item id -> title, for anchors and excluded items (an unknown id shows as itself).
        """
        if self.vague:
            return "a surprise" if self.surprise else "more like your favourites"
        parts = [self.category] if self.category else []
        negated = [*self.exclude_categories, *self.exclude_tags]
        negated += [titles.get(i, i) for i in self.exclude_items] + list(self.avoid_text)
        parts += [f"not {n}" for n in negated]
        if self.anchors:
            # a book and its film share a title: name it once
            parts.append("like " + " and ".join(dict.fromkeys(titles.get(i, i) for i in self.anchors)))
        if self.soft:
            parts.append(self.soft)
        if self.surprise:
            parts.append("a surprise")
        return ", ".join(parts) or "anything"

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape; ``tags``, ``reject_previous`` and ``informativeness`` ride along."""
        return {
            "category": self.category,
            "exclude_categories": list(self.exclude_categories),
            "exclude_tags": list(self.exclude_tags),
            "anchors": list(self.anchors),
            "exclude_items": list(self.exclude_items),
            "avoid": list(self.avoid_text),
            "soft": self.soft,
            "vague": self.vague,
            "surprise": self.surprise,
            "refers_to": list(self.refers_to),
            "tags": list(self.tags),
            "reject_previous": list(self.reject_previous),
            "informativeness": round(self.informativeness, 4),
        }


@dataclass(slots=True)
class _Seg:
    """A scanned piece of the ask (scratch, mutated while the passes run)."""

    kind: str  # break | trigger | filler | surprise | ref | category | tag | title | free
    start: int  # token range
    end: int
    value: str = ""  # category or tag name
    positions: tuple[int, ...] = ()  # ref
    cands: tuple[_Candidate, ...] = ()  # title
    negated: bool = False
    dropped: bool = False  # a category word used up as a title's qualifier or a modifier's head
    prefer: str | None = None  # title: the category its qualifier names


_FIXED: dict[tuple[str, ...], str] = {
    tuple(phrase.split()): kind
    for kind, phrases in (("surprise", _SURPRISE), ("filler", _FILLER), ("trigger", _TRIGGERS), ("break", _BREAKS))
    for phrase in phrases
}  # later kinds win a phrase listed twice
_MAX_FIXED = max(len(k) for k in _FIXED)


def _fixed_at(words: Sequence[str]) -> tuple[int, str] | None:
    for n in range(min(_MAX_FIXED, len(words)), 0, -1):
        kind = _FIXED.get(tuple(words[:n]))
        if kind is not None:
            return n, kind
    return None


def _ref_at(words: Sequence[str], index: AskIndex, count: int) -> tuple[int, tuple[int, ...]] | None:
    """A follow-up on the previous answer of ``count`` items: ``(tokens, positions)``."""
    w = [*words[:4], "", "", "", ""]
    if w[0] in {"those", "these"}:
        return (2 if w[1] == "ones" else 1), tuple(range(1, count + 1))
    if w[0] in {"that", "this"} and w[1] == "one":
        return 2, (1,)
    n = 1 if w[0] == "the" else 0
    if w[n] in _ORDINALS:
        pos = count if _ORDINALS[w[n]] == -1 else _ORDINALS[w[n]]
        phrase = index.phrase_at([w[n + 1]]) if w[n + 1] else None
        noun = w[n + 1] in _REF_NOUNS or (phrase is not None and phrase[1] == "category")  # "the second film"
        if (n or noun) and 1 <= pos <= count:
            return n + 1 + int(noun), (pos,)
    if w[0] in _REF_NUMBERED:
        num = int(w[1]) if w[1].isdigit() else _NUMBERS.get(w[1], 0)
        if 1 <= num <= count:
            return 2, (num,)
    return None


def _scan(toks: Sequence[_Tok], index: AskIndex, count: int) -> list[_Seg]:
    """Cut the ask into segments, longest match first; ties go to the earlier kind."""
    words = [t.norm for t in toks]
    segs: list[_Seg] = []
    cache: dict[str, set[str]] = {}
    i = 0
    while i < len(toks):
        best: _Seg | None = None

        def offer(seg: _Seg) -> None:
            nonlocal best
            if best is None or seg.end > best.end:
                best = seg

        fixed = _fixed_at(words[i:])
        if fixed:
            offer(_Seg(fixed[1], i, i + fixed[0]))
        if count:
            ref = _ref_at(words[i:], index, count)
            if ref:
                offer(_Seg("ref", i, i + ref[0], positions=ref[1]))
        if not toks[i].punct:
            phrase = index.phrase_at([t.norm if not t.punct else "" for t in toks[i:]])
            if phrase:
                offer(_Seg(phrase[1], i, i + phrase[0], value=phrase[2]))
            n, cands = index.titles_at(toks, i, cache)
            if n:
                title = _Seg("title", i, i + n, cands=tuple(cands))
                offer(title)
                # a whole title typed as a name beats a tag spelt the same ("something like Casino",
                # where "casino" also tags Casino Royale); a category still wins ("like Comedy")
                named = any(c.full for c in cands) and any(index.strong(toks, j) for j in range(i, i + n))
                if best is not None and best.kind == "tag" and best.end == title.end and named:
                    best = title
        seg = best or _Seg("free", i, i + 1)
        segs.append(seg)
        i = seg.end
    return segs


def _mark_negation(segs: list[_Seg], words: Sequence[str], index: AskIndex) -> None:
    """NegEx: a trigger negates what follows up to a clause break; see the module docstring."""
    active = has_content = False
    for seg in segs:
        if seg.kind == "break":
            active = False
            continue
        if seg.kind == "trigger":
            active, has_content = True, False
            continue
        if active and has_content and words[seg.start] in _OPENERS:
            active = False
        seg.negated = active
        content = seg.kind in {"ref", "category", "tag", "title"}
        content |= seg.kind == "free" and not index.is_stop(words[seg.start])
        has_content |= active and content


def _mark_qualifiers(segs: list[_Seg], words: Sequence[str], index: AskIndex) -> None:
    """A category word next to a title qualifies it ("the Zelda game"); one after a negated modifier
    is that modifier's head noun ("no horror films")."""
    for k, seg in enumerate(segs):
        if seg.kind != "category":
            continue
        neighbours = [segs[j] for j in (k - 1, k + 1) if 0 <= j < len(segs)]
        title = next((s for s in neighbours if s.kind == "title"), None)
        if title is not None:
            seg.dropped, title.prefer = True, seg.value
            continue
        before = segs[k - 1] if k else None
        modifier = before is not None and before.negated and before.kind in {"tag", "free", "title"}
        # "or"/"nor" join two negated things ("nothing with children or comedy"), they modify nothing
        if seg.negated and modifier and before is not None and not index.is_stop(words[before.start]):
            seg.dropped = True


def _fill_slots(segs: list[_Seg], toks: Sequence[_Tok], index: AskIndex) -> None:
    """Ask the injected scorer about type words the tables missed ("a flick", "something to stream")."""
    if index.similar is None or not index.categories:
        return
    words = [t.norm for t in toks]

    def wanted_category() -> bool:
        return any(s.kind == "category" and not s.negated and not s.dropped for s in segs)

    def free_word(k: int) -> bool:
        return 0 <= k < len(segs) and segs[k].kind == "free" and not index.is_stop(words[segs[k].start])

    for k, seg in enumerate(segs):
        if seg.kind != "filler":
            continue
        word = words[seg.start]
        to = k + 1 < len(segs) and segs[k + 1].kind == "free" and words[segs[k + 1].start] == "to"
        if word in _SOMETHING and to and free_word(k + 2):
            targets, phrase = [segs[k + 1], segs[k + 2]], f"{word} to {toks[segs[k + 2].start].raw}"
        elif word in _ARTICLES and seg.end - seg.start == 1 and free_word(k + 1):
            last = k + 1
            while free_word(last + 1):
                last += 1
            after = segs[last + 1] if last + 1 < len(segs) else None
            if after is not None and after.kind in {"category", "tag", "title"}:
                continue  # "a cosy film": the head noun is already known
            targets, phrase = [segs[last]], toks[segs[last].start].raw
        else:
            continue
        if not targets[-1].negated and wanted_category():
            continue
        category = index.score_category(phrase)
        if category is not None:
            for target in targets:
                target.kind, target.value = "category", category


def _resolve_titles(segs: list[_Seg]) -> list[_Seg]:
    """Pick each title span's item(s); an ambiguous partial match falls back to free words."""
    out: list[_Seg] = []
    for seg in segs:
        if seg.kind != "title":
            out.append(seg)
            continue
        top = max(_rank(c, seg.prefer) for c in seg.cands)
        ids = tuple(dict.fromkeys(c.item_id for c in seg.cands if _rank(c, seg.prefer) == top))
        whole = top[1]
        if whole or len(ids) == 1:  # a whole title shared by several items names them all
            seg.cands = tuple(c for c in seg.cands if c.item_id in ids and _rank(c, seg.prefer) == top)
            out.append(seg)
        else:
            logger.debug("ambiguous partial title (%d items): kept as free words", len(ids))
            out.extend(_Seg("free", j, j + 1, negated=seg.negated) for j in range(seg.start, seg.end))
    return out


def _text(toks: Sequence[_Tok], picked: Sequence[int], ask: str) -> str:
    """The picked tokens as typed, function words trimmed from both ends; adjacent tokens keep the
    characters between them ("sci-fi"), gaps become one space."""
    picked = list(picked)
    while picked and toks[picked[0]].norm in _STOP:
        picked.pop(0)
    while picked and toks[picked[-1]].norm in _STOP:
        picked.pop()
    runs: list[list[int]] = []
    for j in picked:
        if runs and runs[-1][-1] == j - 1:
            runs[-1].append(j)
        else:
            runs.append([j])
    return " ".join(ask[toks[r[0]].start : toks[r[-1]].end] for r in runs)


def interpret(ask: str, index: AskIndex, *, previous: Sequence[str] = ()) -> Interpretation:
    """Turn a free-text ask into hard constraints and the soft text left to embed.

    Args:
        ask: what the user typed.
        index: the catalog's ``AskIndex``.
        previous: item ids shown in the previous answer, in order, for follow-ups.

    Returns:
        An ``Interpretation``; nothing raises, an ask with nothing recognisable is all ``soft``.

    Example:
        >>> index = AskIndex([Item("b1", "Project Hail Mary", category="Books"), Item("f1", "Alien", category="Films")])
        >>> interpret("like Project Hail Mary but a film", index).describe({"b1": "Project Hail Mary"})
        'Films, like Project Hail Mary'
    """
    text = _prepare(ask)
    toks = _tokenize(text)
    words = [t.norm for t in toks]
    segs = _scan(toks, index, len(previous))
    _mark_negation(segs, words, index)
    _mark_qualifiers(segs, words, index)
    _fill_slots(segs, toks, index)
    segs = _resolve_titles(segs)

    wanted: list[str] = []  # categories named positively
    implied: list[str] = []  # categories implied by a positive tag's head noun ("board game" -> Games)
    excl_cat: list[str] = []
    tags: list[str] = []
    excl_tag: list[str] = []
    anchors: list[str] = []
    excl_items: list[str] = []
    refers: list[int] = []
    rejects: list[int] = []
    soft_idx: list[int] = []  # token positions of the soft text
    avoid_groups: list[list[int]] = [[]]  # token positions of each negated free phrase
    surprise = False
    for seg in segs:
        span = range(seg.start, seg.end)
        if seg.kind == "surprise":
            surprise = True
        elif seg.kind == "category" and not seg.dropped:
            (excl_cat if seg.negated else wanted).append(seg.value)
        elif seg.kind == "tag" and seg.negated:
            excl_tag.append(seg.value)
        elif seg.kind == "tag":
            tags.append(seg.value)
            soft_idx.extend(span)
            head = index.phrase_at([words[seg.end - 1]])
            if head and head[1] == "category" and seg.end - seg.start > 1:
                implied.append(head[2])
        elif seg.kind == "title":
            (excl_items if seg.negated else anchors).extend(c.item_id for c in seg.cands)
        elif seg.kind == "ref":
            (rejects if seg.negated else refers).extend(seg.positions)
            (excl_items if seg.negated else anchors).extend(previous[p - 1] for p in seg.positions)
        elif seg.kind == "free" and not seg.negated:
            soft_idx.extend(span)
        elif seg.kind == "free" and words[seg.start] not in {"or", "nor"}:
            avoid_groups[-1].extend(span)
            continue
        if seg.kind != "filler":  # anything but filler ends a negated phrase: "scary or violent" is two
            avoid_groups.append([])

    def unique(values: Iterable[Any], minus: Iterable[Any] = ()) -> tuple[Any, ...]:
        gone = set(minus)
        return tuple(v for v in dict.fromkeys(values) if v not in gone)

    excluded_categories = unique(excl_cat)
    cats = unique(wanted or implied, excluded_categories)
    if len(cats) > 1:
        logger.debug("ask names %d categories %s: no category filter", len(cats), cats)
    excluded_items = unique(excl_items)
    anchor_ids = unique(anchors, excluded_items)
    avoid_phrases: list[str] = []
    for phrase in dict.fromkeys(p for p in (_text(toks, g, text) for g in avoid_groups) if p):
        tag = index.score_tag(phrase)  # "nothing animated", where the catalog says "animation"
        if tag is None:
            avoid_phrases.append(phrase)
        else:
            excl_tag.append(tag)
    avoid = unique(avoid_phrases)
    excluded_tags = unique(excl_tag)
    soft = _text(toks, soft_idx, text)
    soft_words = sum(1 for t in _tokenize(soft) if not t.punct and t.norm not in _STOP)
    category = cats[0] if len(cats) == 1 else None
    # One unit per constraint and per soft content word: a bare "cosy" weighs 0.5, a full ask nears 1.
    # Clashing categories ("a film or a book") filter nothing but still make the ask not vague.
    units = len(cats) + len(excluded_categories) + len(excluded_tags) + len(anchor_ids) + len(excluded_items)
    units += len(avoid) + soft_words
    return Interpretation(
        category=category,
        exclude_categories=excluded_categories,
        exclude_tags=excluded_tags,
        anchors=anchor_ids,
        exclude_items=excluded_items,
        avoid_text=avoid,
        soft=soft,
        vague=units == 0,
        surprise=surprise,
        refers_to=unique(refers),
        reject_previous=unique(rejects),
        informativeness=0.0 if units == 0 else min(1.0, 0.3 + 0.2 * units),
        tags=unique(tags, excluded_tags),
    )
