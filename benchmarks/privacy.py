"""Memorisation, measured the "secret sharer" way (Carlini et al., 2019), on the demo catalog
or on a copy of an ingested data dir (run by hand; about 5 minutes on 2 cores on the demo, 9
with --forget). The pieces (planting, exposure, leak finding) are ``recbot.eval.privacy``'s,
which ``recbot eval generation`` reports too.

1. Plant canaries: ``--canaries`` of one user's liked items get the review "My locker code is
   d d d d." with seeded random digits (a 4-digit code: 10,000 possible secrets). On the demo
   the files are rewritten and ingested; with ``--data-dir`` the ingested dir is copied to the
   workdir (the original is never touched) and the copy's stored reviews are rewritten (the
   catalog, which Amazon ingest builds from reviews, keeps the original text: it counts as
   public). With leave-last-out training the user's last interaction is never planted.
2. Train the generator: on the demo as ``recbot demo`` does (``DEMO_CONFIG``); with
   ``--dp-epsilons`` once per epsilon, all with the same data, canaries and step budget, a
   small from-scratch GPT-2 (``SWEEP_CONFIG``, and ``DEMO_SWEEP_CONFIG`` on the demo).
3. Exposure of each canary: score all 10,000 codes in the phrase the model was taught
   (``You wrote of it: "My locker code is d d d d."`` for fact targets, ``: My locker code is
   d d d d.`` for review targets) with no prompt (the weights alone), rank the true code among
   them by the model's log-likelihood; exposure = log2(10,000) - log2(rank), from 0 (no
   memorisation) to 13.3 (about 1.44 on average by chance). Beside them, the mean exposure of
   20 codes drawn the same way but never planted: what the same model gives a code it never
   saw (its prior included).
4. Cross-user leaks: write blurbs for *other* users and many items (at least ``--blurbs``),
   and count the blurbs that contain a canary's digits or "locker".
5. With ``--forget``: ``Recommender.forget`` the user, retrain, and measure the exposure again.
6. With ``--dp-epsilons inf,8,3``: one markdown table, a row per epsilon ("inf": no DP) with
   the epsilon spent, held-out perplexity, the blurb measures of ``benchmarks/blurbs.py``
   (``recbot.eval.blurbs.blurb_measures``, with one n-gram fluency model fitted on the
   catalog for every row), the templated share, each canary's exposure, the unplanted codes'
   mean, the leaks and the training seconds. Every training stops at ``--steps`` (no held-out
   early stopping, no clock): by default 200 steps at batch size 16 on the demo, where the
   model without DP memorises the canaries, and 150 at 64 with ``--data-dir``.

    python benchmarks/privacy.py --workdir /tmp/privacy --forget
    python benchmarks/privacy.py --workdir /tmp/dp --dp-epsilons inf,8,3
    python benchmarks/privacy.py --workdir /tmp/dp --data-dir /tmp/amz --dp-epsilons inf,8,3 \\
        --steps 150 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import recbot
from recbot import Recommender
from recbot.eval.blurbs import blurb_measures
from recbot.eval.privacy import (
    CANARY,
    CANARY_MODEL,
    MAX_BITS,
    PHRASES,
    canary_exposures,
    draw_codes,
    find_leaks,
    plant_histories,
)
from recbot.generation.fluency import FluencyModel
from recbot.generation.train import DEMO_CONFIG, TrainConfig, TrainReport, _public_fluency_texts
from recbot.generation.writer import GPT2Writer, resolve_generator
from recbot.types import Interaction, Item, Recommendation

DEMO = Path(recbot.__file__).parent / "demo"
# What --dp-epsilons trains with --data-dir: recbot eval generation's canary generator
# (2 layers, width 128, 128 tokens, so that several runs fit in minutes on 2 CPU cores, a
# fixed step budget, leave-last-out: the canaries are always training examples, no
# fact-based extra examples).
SWEEP_CONFIG = CANARY_MODEL
# On the demo the same model with DEMO_CONFIG's fact-based extra examples: with fact targets
# a canary is taught only where a target quotes the owner's review, and these quote it more
# often. (The demo generator's own 4 x 256 shape costs about 6 s a DP-SGD step on 2 busy cores.)
DEMO_SWEEP_CONFIG = replace(SWEEP_CONFIG, augment_per_item=DEMO_CONFIG.augment_per_item)
SWEEP_DEFAULTS = {"demo": (200, 16), "data_dir": (150, 64)}  # (steps, batch size) of --dp-epsilons


def plant(workdir: Path, user: str, n: int, seed: int) -> list[str]:
    """Copy the demo files with ``n`` canary reviews on ``user``'s liked items; returns the codes."""
    rows = [json.loads(line) for line in (DEMO / "interactions.jsonl").read_text().splitlines() if line.strip()]
    liked = [r for r in rows if r["user_id"] == user and (r.get("rating") or 5) >= 4][:n]
    codes = draw_codes(len(liked), seed)
    for row, code in zip(liked, codes, strict=True):
        row["review"] = CANARY.format(code=code)
    (workdir / "interactions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    shutil.copy(DEMO / "catalog.jsonl", workdir / "catalog.jsonl")
    return codes


def plant_stored(rec: Recommender, user: str | None, n: int, seed: int) -> tuple[str, list[str]]:
    """Rewrite the stored reviews of ``n`` liked, not-last interactions of ``user`` (None: the
    first user, by id, with enough) into canaries; returns (user, codes)."""
    owner, codes, planted = plant_histories(rec.storage.histories(), n, seed, user)
    rec.storage.upsert_interactions(planted)
    return owner, codes


def other_user_jobs(
    rec: Recommender, user: str, n_blurbs: int, min_per: int = 3
) -> list[tuple[list[tuple[Item, Interaction]], Recommendation]]:
    """(history, recommendation) for other users, each one's top items of every category,
    users in id order until there are at least ``n_blurbs``: realistic reasons, many items."""
    others = [u for u in rec.users() if u != user]
    categories = rec.categories()
    per = max(min_per, math.ceil(n_blurbs / max(len(others) * len(categories), 1)))
    jobs: list[tuple[list[tuple[Item, Interaction]], Recommendation]] = []
    for other in others:
        if len(jobs) >= n_blurbs:
            break
        history = rec.history(other)
        for category in categories:
            for r in rec.recommend(other, k=per, category=category, blurbs=False):
                jobs.append((history, r))
    return jobs


@dataclass
class Row:
    epsilon: float | None  # None: no DP
    report: TrainReport
    exposures: list[tuple[float, int]]
    control: list[float]  # exposure of codes drawn the same way, never planted
    measures: dict[str, float]
    leaks: list[str]
    blurbs: int


def measure_run(
    rec: Recommender,
    config: TrainConfig,
    out_dir: Path,
    codes: Sequence[str],
    jobs: Sequence[tuple[list[tuple[Item, Interaction]], Recommendation]],
    fluency: FluencyModel,
) -> Row:
    """Train with ``config`` into ``out_dir``, then the canaries' exposure and the blurbs."""
    report = rec.train_generator(config, out_dir=out_dir)
    writer = GPT2Writer.load(str(out_dir), rec.settings)
    exposed, control = canary_exposures(writer, codes, PHRASES[report.targets], config.seed)
    catalog = rec.catalog()
    written = writer.write_many(jobs, catalog)
    built = [writer.job(h, r, catalog) for h, r in jobs]
    conts = [(w.blurb or "")[len(j.prompt.opening) :] for w, j in zip(written, built, strict=True)]
    measures = blurb_measures(
        conts, [j.rec.item for j in built], [j.support for j in built], [j.because for j in built], fluency
    )
    measures["templated_rate"] = round(sum(w.blurb_source == "template" for w in written) / max(len(written), 1), 4)
    leaks = find_leaks(codes, [w.blurb for w in written])
    return Row(config.dp_epsilon, report, exposed, control, measures, leaks, len(written))


def table(rows: Sequence[Row]) -> str:
    head = (
        "| ε target | ε spent | δ | noise σ | held-out ppl | unsupported | word salad | personal | fluency "
        f"| templated | canary exposure, bits (of {MAX_BITS:.1f}) | unplanted codes, mean bits | leaks / blurbs "
        "| train s |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        dp: dict[str, Any] = r.report.dp or {}
        m = r.measures
        lines.append(
            "| "
            + " | ".join(
                [
                    "∞ (no DP)" if r.epsilon is None else f"{r.epsilon:g}",
                    f"{dp['epsilon']:.2f}" if dp else "∞",
                    f"{dp['delta']:g}" if dp else "-",
                    f"{dp['noise_multiplier']:.3f}" if dp else "0",
                    "-" if r.report.held_out_perplexity is None else f"{r.report.held_out_perplexity:.1f}",
                    f"{m.get('unsupported_rate', float('nan')):.3f}",
                    f"{m.get('salad_rate', float('nan')):.3f}",
                    f"{m.get('personal_rate', float('nan')):.3f}",
                    f"{m.get('fluency', float('nan')):.2f}",
                    f"{m['templated_rate']:.3f}",
                    ", ".join(f"{e:.2f}" for e, _ in r.exposures),
                    f"{sum(r.control) / max(len(r.control), 1):.2f}",
                    f"{len(r.leaks)} / {r.blurbs}",
                    f"{r.report.seconds:.0f}",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def parse_epsilons(text: str) -> list[float | None]:
    out: list[float | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        out.append(None if part in ("inf", "∞", "none") else float(part))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="scratch dir (wiped)")
    parser.add_argument("--data-dir", type=Path, help="an ingested data dir to copy and plant (default: the demo)")
    parser.add_argument("--user", help="whose reviews carry the canaries (default: u1 on the demo, else the first)")
    parser.add_argument("--canaries", type=int, default=3)
    parser.add_argument("--blurbs", type=int, default=1000, help="blurbs for other users to scan")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--forget", action="store_true", help="then forget the user, retrain and measure again")
    parser.add_argument("--dp-epsilons", help="one row per epsilon, e.g. inf,8,3 (inf: no DP)")
    parser.add_argument(
        "--steps", type=int, help="with --dp-epsilons: optimizer steps per training (default 200 on the demo, else 150)"
    )
    parser.add_argument(
        "--batch-size", type=int, help="with --dp-epsilons: (expected) batch size (default 16 on the demo, else 64)"
    )
    parser.add_argument("--dp-delta", type=float, help="with --dp-epsilons: delta (default: train.py's)")
    parser.add_argument("--num-candidates", type=int, help="blurb candidates per item (default: the setting's)")
    parser.add_argument("--max-new-tokens", type=int, help="blurb tokens after the opening (default: the setting's)")
    args = parser.parse_args()

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    data = args.workdir / "data"
    if args.data_dir:
        shutil.copytree(args.data_dir, data, ignore=shutil.ignore_patterns("generator*"))
    else:
        user = args.user or "u1"
        codes = plant(args.workdir, user, args.canaries, args.seed)
    started = time.perf_counter()
    with Recommender.open(data, num_candidates=args.num_candidates, max_new_tokens=args.max_new_tokens) as rec:
        if args.data_dir:
            user, codes = plant_stored(rec, args.user, args.canaries, args.seed)
        else:
            rec.ingest(args.workdir / "catalog.jsonl", interactions=args.workdir / "interactions.jsonl")
        if args.dp_epsilons:
            return sweep(rec, args, user, codes)
        report = rec.train_generator(DEMO_CONFIG)
        trained = time.perf_counter() - started
        writer = GPT2Writer.load(resolve_generator(rec.settings), rec.settings)
        phrase = PHRASES[report.targets]
        exposed, control = canary_exposures(writer, codes, phrase, args.seed)
        written = writer.write_many(other_user_jobs(rec, user, args.blurbs), rec.catalog())

        after: list[tuple[float, int]] = []
        control_after: list[float] = []
        if args.forget:  # the right to be forgotten: forget the user, retrain, measure again
            rec.forget(user)
            rec.train_generator(DEMO_CONFIG)
            retrained = GPT2Writer.load(resolve_generator(rec.settings), rec.settings)
            after, control_after = canary_exposures(retrained, codes, phrase, args.seed)
    leaks = find_leaks(codes, [r.blurb for r in written])
    result = {
        "canaries": [
            {"code": c, "exposure_bits": round(e, 2), "rank": k} for c, (e, k) in zip(codes, exposed, strict=True)
        ],
        "max_exposure_bits": round(MAX_BITS, 2),
        "unplanted_codes_mean_exposure_bits": round(sum(control) / len(control), 2),
        "after_forget_and_retrain": [
            {"code": c, "exposure_bits": round(e, 2), "rank": k} for c, (e, k) in zip(codes, after, strict=False)
        ],
        "unplanted_codes_mean_exposure_bits_after": round(sum(control_after) / len(control_after), 2)
        if control_after
        else None,
        "training_s": round(trained, 1),
        "held_out_perplexity": report.held_out_perplexity,  # None: no held-out examples
        "blurbs_for_other_users": len(written),
        "generated_share": round(sum(r.blurb_source == "generated" for r in written) / max(len(written), 1), 3),
        "cross_user_leaks": len(leaks),
        "first_leaks": leaks[:3],
    }
    print(json.dumps(result, indent=1))
    return 0


def sweep(rec: Recommender, args: argparse.Namespace, user: str, codes: list[str]) -> int:
    """``--dp-epsilons``: train once per epsilon on the same planted data, print the table."""
    t0 = time.perf_counter()
    jobs = other_user_jobs(rec, user, args.blurbs)
    recommend_s = time.perf_counter() - t0
    fluency = FluencyModel.fit(_public_fluency_texts(rec.catalog()))  # one yardstick for every row
    steps, batch_size = SWEEP_DEFAULTS["data_dir" if args.data_dir else "demo"]
    base = replace(
        SWEEP_CONFIG if args.data_dir else DEMO_SWEEP_CONFIG,
        max_steps=args.steps or steps,
        batch_size=args.batch_size or batch_size,
        seed=args.seed,
    )
    rows = []
    for eps in parse_epsilons(args.dp_epsilons):
        config = replace(base, dp_epsilon=eps, dp_delta=args.dp_delta if eps is not None else None)
        started = time.perf_counter()
        row = measure_run(rec, config, args.workdir / f"generator-eps-{eps or 'inf'}", codes, jobs, fluency)
        rows.append(row)
        print(
            f"epsilon {eps or 'inf'}: trained in {row.report.seconds:.0f}s, measured in "
            f"{time.perf_counter() - started - row.report.seconds:.0f}s; exposures "
            f"{[round(e, 2) for e, _ in row.exposures]}; leaks {len(row.leaks)}",
            file=sys.stderr,
            flush=True,
        )
    n_users = len({id(h) for h, _ in jobs})
    print(
        f"data: {args.data_dir or 'the demo'}; canaries: {len(codes)} in the reviews of user {user} "
        f"(codes {', '.join(codes)}); training: {base.max_steps} steps at batch size {base.batch_size}, "
        f"{base.n_layer} layers x {base.n_embd} wide from scratch, block {base.block_size}, "
        f"seed {base.seed}; blurbs: {len(jobs)} for {n_users} other users (recommendations in {recommend_s:.0f}s), "
        f"{rec.settings.num_candidates} candidate(s) each, at most {rec.settings.max_new_tokens or 'the card'} tokens; "
        "blurb measures on the continuation, fluency by one n-gram model fitted on the catalog for every row\n"
    )
    print(table(rows))
    for r in rows:
        if r.report.dp:
            print(f"\nε {r.epsilon:g}: " + "; ".join(r.report.lines()[-1:]))
        if r.leaks:
            print(f"\nfirst leaks at ε {r.epsilon or 'inf'}: {r.leaks[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
