"""Fluency that does not come from the generator: word salad rules and a smoothed n-gram
model of the catalog's and the reviews' own text.

``FluencyModel`` is an interpolated Kneser-Ney trigram model fitted on the sentences of
the item descriptions, the reviews and the continuations the generator is taught
(``prompts.fact_continuation``). It is written out here (about forty lines) rather than
taken from ``nltk.lm``: nltk 3.10's ``KneserNeyInterpolated`` gives a known word
probability 0 after a context it has not seen (measured: "loved" after 'it: "' scored
-inf), so every new combination of known words would read as salad. It scores each sentence by its tokens' log2
probabilities; word salad ("The funniest and the humour.", "a maple rock, blues") has
a token that no sentence of the corpus makes likely.

``salad_reasons`` adds rules that need no model: a doubled function word ("the the"), an
article followed by a conjunction, another article or punctuation ("the and", "a ,"), a
sentence that ends on an article or conjunction, a dangling hyphen ("A two- next
pick."), a compound that repeats a part ("maple-coil-coil").

Both are used to choose between candidates and by the guard, and ``recbot eval
generation`` reports them for every method.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["OPENING_WORD", "FluencyModel", "SentenceScore", "salad_reasons", "sentences", "tokens"]

_TOKEN = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*-?|[^\w\s]")
_SENTENCE = re.compile(r"(?<=[.!?])[\"”']?\s+")
_WORDLIKE = re.compile(r"[^\W_]")

# articles and possessives that cannot end a phrase ("this", "these", "its", "her" can:
# "I have 3 of these.", "found this, and")
_DETERMINERS = frozenset("the a an your my".split())
_PREPOSITIONS = frozenset("of to in on at by for from with into about than".split())
_CONJUNCTIONS = frozenset("and or but nor".split())
_FUNCTION = _DETERMINERS | _PREPOSITIONS | _CONJUNCTIONS | frozenset("is are was were it to".split())
# a sentence may end on a particle ("with the lights on.") but not on these
_DANGLING = _DETERMINERS | _CONJUNCTIONS

# A sentence whose tokens average below this (log2 per token) reads as salad. Calibrated
# on Amazon MI with the model fitted on the training split: 0.8 % of the held-out review
# sentences fall below it, and 54 % of the same sentences with their words shuffled.
MEAN_LOGPROB = -10.0
FLOOR = -20.0  # log2 probability floor
# A blurb's fixed opening is scored as this one word: it is context, never scored itself,
# so a new pair of titles does not read as unlikely (the training corpus writes the
# taught continuations after it too).
OPENING_WORD = "xopening"


def tokens(sentence: str) -> list[str]:
    """Lowercased words (with inner hyphens and apostrophes) and punctuation marks."""
    return [t.lower().replace("’", "'") for t in _TOKEN.findall(sentence)]


def sentences(text: str) -> list[str]:
    """``text`` split after ., ! or ? (and a closing quote)."""
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


@dataclass(frozen=True, slots=True)
class SentenceScore:
    text: str
    mean_logprob: float  # log2 per token, end of sentence included
    min_logprob: float  # the least likely token's log2 probability
    worst: str  # that token


class FluencyModel:
    """Interpolated Kneser-Ney trigram model over sentence tokens (discount 0.75).

    The lowest order is the continuation unigram with add-one smoothing, so a word never
    seen gets a small probability rather than none; a context never seen backs off to
    the shorter one.
    """

    order = 3
    discount = 0.75

    def __init__(self, sentences_tokens: Iterable[Sequence[str]]) -> None:
        c3: Counter[tuple[str, str, str]] = Counter()
        for toks in sentences_tokens:
            padded = ["<s>", "<s>", *toks, "</s>"]
            c3.update(zip(padded, padded[1:], padded[2:], strict=False))
        self._c3 = c3
        self._ctx2: Counter[tuple[str, str]] = Counter()  # c(u, v, .)
        self._types2: Counter[tuple[str, str]] = Counter()  # N1+(u, v, .)
        cont2: Counter[tuple[str, str]] = Counter()  # N1+(., v, w)
        for (u, v, w), n in c3.items():
            self._ctx2[(u, v)] += n
            self._types2[(u, v)] += 1
            cont2[(v, w)] += 1
        self._cont2 = cont2
        self._ctx1: Counter[str] = Counter()  # N1+(., v, .)
        self._types1: Counter[str] = Counter()  # N1+(v, .) among continuation bigrams
        cont1: Counter[str] = Counter()  # N1+(., w)
        for (v, w), n in cont2.items():
            self._ctx1[v] += n
            self._types1[v] += 1
            cont1[w] += 1
        self._cont1 = cont1
        self._cont1_total = sum(cont1.values())
        self._vocab = len(cont1) + 1
        self._cache: dict[tuple[str, str, str], float] = {}

    @classmethod
    def fit(cls, texts: Iterable[str]) -> FluencyModel:
        """Fit on ``texts`` (each split into sentences and tokens)."""
        return cls(toks for text in texts for s in sentences(text) if (toks := tokens(s)))

    def _p1(self, w: str) -> float:
        return (self._cont1[w] + 1) / (self._cont1_total + self._vocab)

    def _p2(self, v: str, w: str) -> float:
        total = self._ctx1[v]
        if not total:
            return self._p1(w)
        d = self.discount
        return max(self._cont2[(v, w)] - d, 0) / total + d * self._types1[v] / total * self._p1(w)

    def logprob(self, u: str, v: str, w: str) -> float:
        """log2 P(w | u v)."""
        key = (u, v, w)
        if key not in self._cache:
            total = self._ctx2[(u, v)]
            if not total:
                p = self._p2(v, w)
            else:
                d = self.discount
                p = max(self._c3[key] - d, 0) / total + d * self._types2[(u, v)] / total * self._p2(v, w)
            self._cache[key] = max(FLOOR, math.log2(p)) if p > 0 else FLOOR
        return self._cache[key]

    def score_sentence(self, sentence: str) -> SentenceScore:
        toks = tokens(sentence)
        # the opening stands in for the first context word, it is not scored
        padded = ["<s>", *toks, "</s>"] if toks[:1] == [OPENING_WORD] else ["<s>", "<s>", *toks, "</s>"]
        lps = [self.logprob(padded[i - 2], padded[i - 1], padded[i]) for i in range(2, len(padded))]
        j = min(range(len(lps)), key=lps.__getitem__)
        return SentenceScore(sentence, sum(lps) / len(lps), lps[j], padded[j + 2])

    def score(self, text: str) -> float:
        """Mean log2 probability per token over the sentences of ``text`` (higher is more fluent)."""
        scores = [self.score_sentence(s) for s in sentences(text)]
        if not scores:
            return FLOOR
        n = [len(tokens(s.text)) + 1 for s in scores]
        return sum(s.mean_logprob * k for s, k in zip(scores, n, strict=True)) / sum(n)

    def worst(self, text: str) -> SentenceScore | None:
        """The sentence of ``text`` with the least likely token."""
        scores = [self.score_sentence(s) for s in sentences(text)]
        return min(scores, key=lambda s: s.min_logprob) if scores else None


def _clash(a: str, b: str) -> bool:
    """An article that nothing follows ("the and", "a the", "the ."). A preposition
    before punctuation or a conjunction is often a particle ("with the lights on.",
    "a while to break in but") and passes."""
    return a in _DETERMINERS and (b in _CONJUNCTIONS or b in _DETERMINERS or not _WORDLIKE.match(b))


def salad_reasons(text: str, model: FluencyModel | None = None) -> list[str]:
    """Why ``text`` reads as word salad; empty when it reads as sentences."""
    reasons: list[str] = []
    for sentence in sentences(text):
        toks = tokens(sentence)
        words = [t for t in toks if _WORDLIKE.match(t)]
        for a, b in itertools.pairwise(toks):
            if a == b and a in _FUNCTION:  # "the the"; "easy easy easy" is emphasis
                reasons.append(f"doubled word {a!r}")
            elif _clash(a, b):
                reasons.append(f"{a!r} before {b!r}")
        if words and words[-1] in _DANGLING:
            reasons.append(f"sentence ends on {words[-1]!r}")
        for w in words:
            if w.endswith("-"):
                reasons.append(f"dangling hyphen in {w!r}")
            parts = w.strip("-").split("-")
            if len(parts) > 1 and len(set(parts)) < len(parts):
                reasons.append(f"spliced compound {w!r}")
    if model is not None and not reasons:
        for sentence in sentences(text):
            score = model.score_sentence(sentence)
            if score.mean_logprob < MEAN_LOGPROB:
                reasons.append(f"unlikely sentence {sentence!r} (log2 p {score.mean_logprob:.1f} per token)")
                break
    return reasons
