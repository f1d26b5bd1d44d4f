"""Does the answer respect the ask? The bundled demo asks, with and without the interpreter (run by hand).

Runs ``recbot.eval.asks.run_asks`` over ``src/recbot/demo/asks.jsonl`` against an ingested
demo data dir: mode ``interpreter`` is ``recommend`` as it is, mode ``embedding_only`` embeds
the whole ask as text (the behaviour before ``recbot.ask``). Prints a markdown table, the
interpreter's failing cases, and the JSON report. Read-only: no blurbs are written.

    recbot ingest src/recbot/demo/catalog.jsonl --interactions src/recbot/demo/interactions.jsonl
    python benchmarks/asks.py --data-dir .recbot

Or asks generated from an ingested catalog's own genre tags and popular titles
(``recbot.eval.asks.generated_cases``), spread over the users with a history, e.g. MovieLens:

    recbot --data-dir /tmp/ml-asks ingest ml-latest-small
    python benchmarks/asks.py --data-dir /tmp/ml-asks --generated 300   # or --movielens (300)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import recbot
from recbot import Recommender
from recbot.eval.asks import KINDS, MODES, generated_cases, load_cases, run_asks

CASES = Path(recbot.__file__).parent / "demo" / "asks.jsonl"


def table(report: dict) -> str:
    rows = [
        "| mode | satisfied | "
        + " | ".join(f"fail: {kind}" for kind in KINDS)
        + " | relaxed answers | p50 ms | p95 ms |",
        "|---|---|" + "---|" * len(KINDS) + "---|---|---|",
    ]
    for mode in MODES:
        m = report["modes"][mode]
        fails = " | ".join(str(m["failures"].get(kind, 0)) for kind in KINDS)
        share = f"{m['satisfied']:.1%} ({m['satisfied_n']}/{report['cases']})"
        lat = m["latency_ms"]
        rows.append(f"| {mode} | {share} | {fails} | {m['relaxed']} | {lat['p50']:.1f} | {lat['p95']:.1f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="an ingested demo data dir")
    parser.add_argument("--cases", type=Path, default=CASES)
    parser.add_argument("--generated", type=int, default=0, metavar="N", help="run N asks generated from the catalog")
    parser.add_argument("--movielens", action="store_true", help="generated asks only (300 unless --generated)")
    parser.add_argument("--also-bundled", action="store_true", help="with --generated, run --cases too")
    parser.add_argument("--seed", type=int, default=0, help="seed for --generated")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)

    if args.movielens and not args.generated:
        args.generated = 300
    with Recommender.open(args.data_dir) as rec:
        cases = load_cases(args.cases) if not args.generated or args.also_bundled else []
        if args.generated:
            storage = rec.storage
            cases += generated_cases(
                storage.items(), storage.users(), n=args.generated, seed=args.seed, popularity=storage.popularity()
            )
        if not cases:
            parser.error("no cases: the data dir has no users or genre tags")
        rec.recommend(cases[0].user, query="warm-up", k=args.k, blurbs=False)  # load the encoder outside the timings
        report = run_asks(rec, cases, k=args.k)

    print(f"{report['cases']} asks, k={report['k']}, data dir {args.data_dir}\n")
    print(table(report))
    ms = report["interpret_ms"]
    print(f"\n`recbot.ask.interpret` alone: p50 {ms['p50']:.2f} ms, p95 {ms['p95']:.2f} ms\n")
    failing = report["modes"]["interpreter"]["failing"]
    print(f"## interpreter: {len(failing)} failing case(s)\n")
    for f in failing:
        print(f"- {f['user']} {f['ask']!r} -> understood {f['understood']!r}, got {f['got']}")
        for v in f["violations"]:
            print(f"    - {v}")
    print("\n## JSON\n")
    print(json.dumps(report, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
