"""Text metrics for blurbs: pure functions (BLEU and ROUGE come from sacrebleu and
rouge-score; the rest is defined here, after PETER/PEPLER where they define it).

- BLEU-1/4: sacrebleu corpus BLEU, lowercased, 13a tokenisation (max n-gram 1 or 4).
- ROUGE-1/2/L: rouge-score F-measure, no stemming, averaged over pairs, x100.
- USR: unique generated sentences over all generated sentences (here: unique texts).
- Features: content words (alphabetic, 3+ letters, not an English stop word) that occur
  in at least ``min_df`` training reviews, the ``max_features`` most frequent of them.
  FMR: share of outputs that mention a feature of their reference. FCR: share of the
  feature set mentioned by any output. DIV: mean number of features shared by two
  outputs, over all pairs (lower is more diverse).
- distinct-n: distinct n-grams over all n-grams of all outputs.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = [
    "bleu",
    "distinct_n",
    "div",
    "fcr",
    "feature_set",
    "features_of",
    "fmr",
    "rouge",
    "unique_sentence_ratio",
]

_WORD = re.compile(r"[a-z]{3,}")


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def bleu(hypotheses: Sequence[str], references: Sequence[str], max_order: int) -> float:
    """Corpus BLEU (0-100), sacrebleu, lowercased, 13a."""
    from sacrebleu.metrics import BLEU

    # force: review text is detokenised; sacrebleu's "tokenized period" heuristic misfires on it
    metric = BLEU(lowercase=True, tokenize="13a", max_ngram_order=max_order, effective_order=True, force=True)
    return float(metric.corpus_score(list(hypotheses), [list(references)]).score)


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (0-100)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    totals = Counter[str]()
    for hyp, ref in zip(hypotheses, references, strict=True):
        for name, score in scorer.score(ref, hyp).items():
            totals[name] += score.fmeasure
    n = max(len(hypotheses), 1)
    return {name: 100.0 * totals[name] / n for name in ("rouge1", "rouge2", "rougeL")}


def unique_sentence_ratio(texts: Sequence[str]) -> float:
    if not texts:
        return 0.0
    return len({t.strip().lower() for t in texts}) / len(texts)


def distinct_n(texts: Sequence[str], n: int) -> float:
    grams = [tuple(ws[i : i + n]) for t in texts for ws in [t.lower().split()] for i in range(len(ws) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def feature_set(training_texts: Iterable[str], *, min_df: int = 20, max_features: int = 500) -> frozenset[str]:
    stop = _stop_words()
    df = Counter[str]()
    for text in training_texts:
        df.update({w for w in _WORD.findall(text.lower()) if w not in stop})
    common = [w for w, c in df.most_common() if c >= min_df][:max_features]
    return frozenset(common)


def features_of(text: str, features: frozenset[str]) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(text.lower()) if w in features)


def fmr(hypotheses: Sequence[str], references: Sequence[str], features: frozenset[str]) -> float:
    pairs = list(zip(hypotheses, references, strict=True))
    if not pairs:
        return 0.0
    return sum(bool(features_of(h, features) & features_of(r, features)) for h, r in pairs) / len(pairs)


def fcr(hypotheses: Sequence[str], features: frozenset[str]) -> float:
    used: set[str] = set()
    for h in hypotheses:
        used |= features_of(h, features)
    return len(used) / len(features) if features else 0.0


def div(hypotheses: Sequence[str], features: frozenset[str]) -> float:
    sets = [features_of(h, features) for h in hypotheses]
    pairs = list(itertools.combinations(range(len(sets)), 2))
    if not pairs:
        return 0.0
    return sum(len(sets[a] & sets[b]) for a, b in pairs) / len(pairs)
