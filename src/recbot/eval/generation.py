"""``recbot eval generation``: a blurb for each test user's held-out item, scored against
that user's held-out review, next to three baselines (see text.py for the metrics), and,
with a ``CanaryPlan``, canary exposure and cross-user leaks (``recbot.eval.privacy``)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recbot.eval.blurbs import blurb_measures
from recbot.eval.data import Dataset
from recbot.eval.privacy import CanaryPlan, measure_canaries
from recbot.eval.text import bleu, distinct_n, div, fcr, feature_set, fmr, rouge, unique_sentence_ratio
from recbot.generation.fluency import FluencyModel
from recbot.generation.guard import TitleIndex, check_blurb
from recbot.generation.prompts import clean, fact_continuation, first_sentences, review_words
from recbot.generation.support import support_for
from recbot.retrieval.profile import rating_weights, recency_weights
from recbot.serving import explain
from recbot.types import Interaction, Item, Recommendation

__all__ = ["best_constant", "reference_text", "run_generation"]

logger = logging.getLogger(__name__)

# The constant sentence quoted in issue 6 (BLEU-1 15.6 on Amazon MI there). Not a
# frequent sentence of the data ("I bought this for my guitar." occurs in no review); we
# keep it as a fixed extra baseline because it is stronger than any we select ourselves.
ISSUE_CONSTANT = "Great for the price. I bought this for my guitar."
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
PEPLER_TRIPADVISOR = {"bleu1": 14.96, "bleu4": 1.02, "rouge1": 16.23, "rouge2": 2.04, "rougeL": 12.83, "usr": 0.2025}


def reference_text(review: str) -> str:
    """The user's own words as the generator is trained to write them (see ``review_words``)."""
    return review_words(review)


def _continuation(blurb: str, opening: str) -> str:
    text = blurb[len(opening) :] if blurb.startswith(opening) else blurb
    return text.lstrip(" :,.;-").strip()


def _scores(hyps: Sequence[str], refs: Sequence[str], features: frozenset[str]) -> dict[str, float]:
    r = rouge(hyps, refs)
    return {
        "bleu1": round(bleu(hyps, refs, 1), 4),
        "bleu4": round(bleu(hyps, refs, 4), 4),
        "rouge1": round(r["rouge1"], 4),
        "rouge2": round(r["rouge2"], 4),
        "rougeL": round(r["rougeL"], 4),
        "usr": round(unique_sentence_ratio(hyps), 4),
        "div": round(div(hyps, features), 4),
        "fmr": round(fmr(hyps, refs, features), 4),
        "fcr": round(fcr(hyps, features), 4),
        "distinct1": round(distinct_n(hyps, 1), 4),
        "distinct2": round(distinct_n(hyps, 2), 4),
        "mean_length": round(float(np.mean([len(h.split()) for h in hyps])) if hyps else 0.0, 3),
    }


def run_generation(
    data: Dataset,
    out_dir: str | Path,
    *,
    writer: Any,
    encoder: Any,
    seed: int = 0,
    max_users: int | None = None,
    generator_card: Mapping[str, Any] | None = None,
    canaries: CanaryPlan | None = None,
) -> dict[str, Any] | None:
    """Blurbs for held-out items, with overlap, diversity, feature, grounding and
    personalisation metrics, next to template, copy-a-review and constant baselines.

    With ``canaries`` (``recbot eval generation`` passes one unless ``--canaries 0``), also
    the "secret sharer" figure under ``privacy``: canaries planted in one user's reviews of
    the *training* split, a small generator trained on it for ``canaries.steps`` steps,
    each canary's exposure and the canaries found in that generator's blurbs for the other
    evaluated users (``recbot.eval.privacy.measure_canaries``). The generator under
    evaluation saw no canary, so its own exposure cannot be measured.

    Under ``accelerate launch`` the blurbs are written by every process (see
    ``write_sharded``) and the main process scores and writes the report; the others
    return None. The canary generator trains in one process only: callers refuse
    ``canaries`` under several."""
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    split = data.test
    users = [u for u in data.users if u in split.held_out and split.held_out[u].review]
    if max_users:
        users = sorted(rng.choice(users, size=min(max_users, len(users)), replace=False).tolist(), key=data.users.index)
    items = split.items
    order = list(data.items)
    vectors = np.asarray(encoder.encode([items[i].text for i in order]), dtype=np.float32)
    row = {item: j for j, item in enumerate(order)}

    jobs: list[tuple[list[tuple[Item, Interaction]], Recommendation]] = []
    half_life = getattr(getattr(writer, "settings", None), "recency_half_life_days", 365.0)
    for user in users:
        hist = split.train[user]
        target = items[split.held_out[user].item_id]
        # the reason serving would give: recbot.serving.explain over the rating- and recency-weighted history
        weights = rating_weights([h.rating for h in hist]) * recency_weights([h.timestamp for h in hist], half_life)
        hist_vectors = vectors[[row[h.item_id] for h in hist]]
        because = explain(vectors[row[target.id]], hist, hist_vectors, weights, items, 1)
        jobs.append(([(items[h.item_id], h) for h in hist], Recommendation(target, 0.0, 1, because)))
    logger.info("writing %d blurbs", len(jobs))
    shard = write_sharded(writer, jobs, items)
    if shard is None:
        return None  # another process of `accelerate launch` reports
    written = shard
    refs = [reference_text(split.held_out[u].review or "") for u in users]
    openings = [writer.prompt_for(h, r, items).opening for h, r in jobs]
    recbot_hyps = [_continuation(r.blurb or "", o) for r, o in zip(written, openings, strict=True)]

    # baselines
    train_reviews = [(h.user_id, h.item_id, h.review or "") for hist in split.train.values() for h in hist if h.review]
    summaries = Counter(clean(r).split(". ")[0].strip() for _, _, r in train_reviews)
    bodies = Counter(first_sentences(clean(r).partition(". ")[2], 1) for _, _, r in train_reviews)
    constant = f"{summaries.most_common(1)[0][0]}. {bodies.most_common(1)[0][0]}".strip()
    valid_refs = [reference_text(h.review or "") for u in users if (h := data.valid.held_out.get(u)) and h.review]
    sentences = Counter(
        t.strip() for _, _, r in train_reviews for t in _SENTENCE_SPLIT.split(clean(r).partition(". ")[2]) if t.strip()
    )
    constant_best, constant_valid_score = best_constant(summaries, sentences, valid_refs)
    becauses = [items.get(r.because[0].item_id) if r.because else None for _, r in jobs]
    template_hyps = [fact_continuation(r.item, b, h).strip() for (h, r), b in zip(jobs, becauses, strict=True)]
    copy_hyps = _copy_most_similar(users, split.train, train_reviews, [r.item.id for _, r in jobs])
    features = feature_set(r for _, _, r in train_reviews)

    history_text = [" ".join(f"{items[h.item_id].title} {h.review or ''}" for h in split.train[u][-10:]) for u in users]
    hist_vecs = np.asarray(encoder.encode(history_text), dtype=np.float32)
    others = (np.arange(len(users)) + rng.integers(1, max(len(users), 2), size=len(users))) % max(len(users), 1)

    def personalisation(hyps: Sequence[str]) -> float:
        v = np.asarray(encoder.encode(list(hyps)), dtype=np.float32)
        own = np.sum(v * hist_vecs, axis=1)
        other = np.sum(v * hist_vecs[others], axis=1)
        return round(float(np.mean(own - other)), 5)

    # faithfulness, fluency and personalisation, measured the same way for every method;
    # the fluency model is fitted on the training split's item text and reviews
    supports = [support_for(r.item, h, b) for (h, r), b in zip(jobs, becauses, strict=True)]
    fluency = FluencyModel.fit(
        [i.description for i in items.values() if i.description] + [r for _, _, r in train_reviews]
    )
    targets = [r.item for _, r in jobs]

    methods: dict[str, dict[str, Any]] = {}
    for name, hyps in (
        ("recbot", recbot_hyps),
        ("template", template_hyps),
        ("copy_review", copy_hyps),
        ("constant", [constant] * len(users)),
        ("constant_best", [constant_best] * len(users)),
        ("constant_issue", [ISSUE_CONSTANT] * len(users)),
    ):
        methods[name] = {
            **_scores(hyps, refs, features),
            "personalisation": personalisation(hyps),
            **blurb_measures([" " + h for h in hyps], targets, supports, becauses, fluency),
        }
    methods["template"]["templated_rate"] = 1.0
    index = TitleIndex(items.values())
    grounded = [
        check_blurb(r.blurb or "", r.item, index, allowed={it.id for it, _ in h}, min_words=1).ok
        for (h, _), r in zip(jobs, written, strict=True)
    ]
    hallucinated = [
        any(i != r.item.id and i not in {it.id for it, _ in h} for i, _ in index.mentions(r.blurb or ""))
        for (h, _), r in zip(jobs, written, strict=True)
    ]
    methods["recbot"].update(
        grounding_rate=round(float(np.mean(grounded)), 4),
        hallucination_rate=round(float(np.mean(hallucinated)), 4),
        templated_rate=round(float(np.mean([not r.grounded for r in written])), 4),
    )
    if generator_card:  # null when the generator had no held-out examples
        methods["recbot"]["perplexity"] = generator_card.get("held_out_perplexity")
        methods["recbot"]["unigram_perplexity"] = generator_card.get("unigram_perplexity")
    privacy: dict[str, Any] | None = None
    privacy_seconds = 0.0
    if canaries is not None and canaries.n > 0:
        t0 = time.perf_counter()
        logger.info("privacy: %d canaries, a generator trained for %d steps", canaries.n, canaries.steps)
        privacy = measure_canaries(
            split.train,
            items,
            {item: vectors[j] for item, j in row.items()},
            [(u, h, r) for u, (h, r) in zip(users, jobs, strict=True)],
            writer.settings,
            canaries,
        )
        privacy_seconds = time.perf_counter() - t0
    result = {
        "dataset": data.spec,
        "protocol": {
            "split": "leave-last-out; reference = the user's held-out review (summary + first sentence)",
            "users": len(users),
            "hypothesis": "the blurb after its fixed opening (baselines: their sentence)",
            "bleu": "sacrebleu corpus BLEU, lowercase, 13a",
            "rouge": "rouge-score F, no stemming",
            "features": f"{len(features)} content words in >= 20 training reviews",
        },
        "seed": seed,
        "constant_sentence": constant,
        "constant_best_sentence": constant_best,
        "constant_best_validation_bleu1_plus_rougeL": round(constant_valid_score, 4),
        "methods": methods,
        "reference_pepler_tripadvisor": PEPLER_TRIPADVISOR,
        **({"privacy": privacy} if privacy is not None else {}),
        "examples": [
            {"user": u, "blurb": r.blurb, "reference": ref}
            for u, r, ref in list(zip(users, written, refs, strict=True))[:10]
        ],
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    seconds = time.perf_counter() - started
    (out / "report.md").write_text(_report(result, seconds, privacy_seconds))
    _plot_lengths({"recbot": recbot_hyps, "reference": refs, "copy_review": copy_hyps}, out / "blurb_lengths.png")
    result["_seconds"] = seconds
    if privacy is not None:
        result["_privacy_seconds"] = privacy_seconds
    return result


def write_sharded(
    writer: Any, jobs: Sequence[tuple[Any, Recommendation]], catalog: Mapping[str, Item]
) -> list[Recommendation] | None:
    """``writer.write_many(jobs)``, shared out between the processes of ``accelerate
    launch --multi_gpu`` (or ``torchrun`` on CPUs): batches of ``generation_batch`` jobs
    go round-robin to the processes and are gathered on the main one (the others get
    None). Each batch is seeded the same way wherever it runs, so the blurbs equal a
    one-process run on the same device and dtype."""
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # CPUs only: gloo between processes
    if state.num_processes == 1:
        return list(writer.write_many(jobs, catalog))
    from accelerate.utils import gather_object

    step = max(1, writer.settings.generation_batch)
    batches = [jobs[i : i + step] for i in range(0, len(jobs), step)]
    mine = {
        k: writer.write_many(batches[k], catalog) for k in range(state.process_index, len(batches), state.num_processes)
    }
    logger.info("process %d wrote %d of %d batches", state.process_index, len(mine), len(batches))
    merged: dict[int, list[Recommendation]] = {}
    for part in gather_object([mine]):
        merged.update(part)
    if not state.is_main_process:
        return None
    return [rec for k in range(len(batches)) for rec in merged[k]]


def best_constant(
    summaries: Counter[str], sentences: Counter[str], references: Sequence[str], top: int = 30
) -> tuple[str, float]:
    """The strongest one-sentence-for-everyone baseline we could pick without the test
    set, scored by BLEU-1 + ROUGE-L F against the validation references (each user's
    second-to-last review): the best of the ``top`` most frequent training summaries,
    then the best of the ``top`` most frequent training sentences to follow it, then the
    summary again given that sentence (coordinate ascent; ties keep the more frequent).
    Returns the sentence and its validation score."""
    if not references:
        return "", 0.0

    def score(text: str) -> float:
        hyps = [text] * len(references)
        return bleu(hyps, references, 1) + rouge(hyps, references)["rougeL"]

    def join(summary: str, sentence: str) -> str:
        return f"{summary}. {sentence}" if summary and sentence else summary or sentence

    heads = [""] + [t for t, _ in summaries.most_common(top) if t]
    tails = [""] + [t for t, _ in sentences.most_common(top) if t]
    head, tail, best = "", "", -1.0
    for options, pick_head in ((heads, True), (tails, False), (heads, True)):
        for option in options:
            text = join(option, tail) if pick_head else join(head, option)
            value = score(text) if text else -1.0
            if value > best + 1e-9:
                best = value
                head, tail = (option, tail) if pick_head else (head, option)
    return join(head, tail), best


def _copy_most_similar(
    users: Sequence[str],
    train: Mapping[str, list[Interaction]],
    reviews: Sequence[tuple[str, str, str]],
    targets: Sequence[str],
) -> list[str]:
    """For each user, the training review of the target item (by someone else) closest
    (TF-IDF cosine) to the user's own training reviews."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    by_item: dict[str, list[str]] = {}
    for _, item, text in reviews:
        by_item.setdefault(item, []).append(text)
    corpus = [t for _, _, t in reviews]
    tfidf = TfidfVectorizer(min_df=2, stop_words="english").fit(corpus)
    out = []
    for user, item in zip(users, targets, strict=True):
        candidates = by_item.get(item) or corpus[:1]
        mine = " ".join(h.review or "" for h in train[user])
        sims = (tfidf.transform(candidates) @ tfidf.transform([mine]).T).toarray().ravel()
        out.append(reference_text(candidates[int(np.argmax(sims))]))
    return out


def _report(result: Mapping[str, Any], seconds: float, privacy_seconds: float = 0.0) -> str:
    cols = [
        "bleu1",
        "bleu4",
        "rouge1",
        "rouge2",
        "rougeL",
        "usr",
        "div",
        "fmr",
        "fcr",
        "distinct1",
        "distinct2",
        "mean_length",
        "personalisation",
        "unsupported_rate",
        "misquote_rate",
        "salad_rate",
        "fluency",
        "personal_rate",
    ]
    lines = [
        f"# Generation evaluation: {result['dataset']}",
        "",
        f"{result['protocol']['users']} users; {result['protocol']['bleu']}; {result['protocol']['rouge']}; "
        f"features: {result['protocol']['features']}. Seed {result['seed']}. Runtime {seconds:.0f}s.",
        "",
        "| method | " + " | ".join(cols) + " |",
        "| --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for name, m in result["methods"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
    p = result["reference_pepler_tripadvisor"]
    lines.append(
        "| PEPLER (TripAdvisor, published; other data) | "
        + " | ".join(f"{p[c]:.2f}" if c in p else "" for c in cols)
        + " |"
    )
    extra = {k: v for k, v in result["methods"]["recbot"].items() if k not in cols}
    lines += [
        "",
        f"recbot also: `{json.dumps(extra)}`",
        "",
        f'Constant sentence (most frequent training summary + first sentence): "{result["constant_sentence"]}"',
        "",
        f"Best constant sentence (chosen by BLEU-1 + ROUGE-L on the validation reviews, "
        f'{result["constant_best_validation_bleu1_plus_rougeL"]:.2f}): "{result["constant_best_sentence"]}"',
        "",
        f'constant_issue: the sentence quoted in the issue, "{ISSUE_CONSTANT}" (not chosen by us).',
        "",
        "Read the examples before trusting salad_rate and fluency: both come from rules and a trigram model of",
        "the reviews, which cannot see an ungrammatical sentence made of common word pairs ('I am this is a",
        "good deal.'). On review text personal_rate is weak too: a constant sentence shares words with many",
        "users' reviews.",
        "",
    ]
    if "privacy" in result:
        lines += _privacy_section(result["privacy"], privacy_seconds)
    lines += ["## Examples", ""]
    lines += [f"- **{e['user']}**: {e['blurb']}  \n  reference: {e['reference']}" for e in result["examples"]]
    return "\n".join(lines) + "\n"


def _privacy_section(p: Mapping[str, Any], seconds: float) -> list[str]:
    """report.md's lines on canary exposure and cross-user leaks (``measure_canaries``)."""
    g = p["generator"]
    lines = [
        "## Privacy: canary exposure and cross-user leaks",
        "",
        f'{len(p["canaries"])} canaries ("My locker code is d d d d.", seeded digits) were planted in the '
        f"training reviews of user {p['owner']}, and a separate small generator ({g['model']}, "
        f"{g['parameters']:,} parameters, {g['targets']} targets) was trained on the training split for "
        f"{g['steps']} steps at batch size {g['batch_size']}: {g['training_examples']} examples of {g['users']} users, "
        f"each seen about {g['passes']:g} times. Exposure = log2(10,000) - log2(rank of the true code among all "
        f"10,000 by the model's likelihood). How to read it: about {p['chance_bits']:.1f} bits on average is chance "
        f"(the model knows nothing of the code), {p['max_bits']:.1f} is full memorisation (the true code is the "
        "likeliest). 'taught' counts the training targets that contain the canary; one never taught stays near chance. "
        f"The control row scores {p['control_codes']} codes drawn the same way but never planted, under the same "
        "model: what it gives a code it never saw. A canary is memorised as far as it stands above the control.",
        "",
        "| canary | taught | rank of 10,000 | exposure, bits |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {c['code']} | {c['taught']} | {c['rank']} | {c['exposure_bits']:.2f} |" for c in p["canaries"]]
    lines += [
        f"| mean | | | {p['mean_exposure_bits']:.2f} |",
        f"| control: {p['control_codes']} unplanted codes, mean (max) | 0 | | "
        f"{p['control_mean_exposure_bits']:.2f} ({p['control_max_exposure_bits']:.2f}) |",
        "",
        f"Cross-user leaks: {p['leaks']} of {p['blurbs_for_other_users']} blurbs written by the canary-trained "
        "generator for other evaluated users (one each, for their held-out item) contain a canary's digits or "
        f"'locker' ({p['generated_share']:.0%} generated, the rest templates). Zero is evidence only when the "
        "exposure is "
        "well above chance: the model knows the code and still did not write it for anyone else. This measures "
        "recbot's training and writer at this budget, not the generator evaluated above, which saw no canary. "
        f"Runtime {seconds:.0f}s.",
        "",
    ]
    if p["first_leaks"]:
        lines += ["First leaks:", "", *[f"- {b}" for b in p["first_leaks"]], ""]
    return lines


def _plot_lengths(texts: Mapping[str, Sequence[str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, hyps in texts.items():
        ax.hist([len(h.split()) for h in hyps], bins=range(0, 61, 2), alpha=0.5, label=name)
    ax.set_xlabel("words")
    ax.set_ylabel("count")
    ax.set_title("Blurb (continuation) length")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
