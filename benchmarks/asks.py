"""Does the answer respect the ask? The bundled demo asks, with and without the interpreter (run by hand).

The same run as ``recbot eval asks`` (``recbot.eval.asks.ask_report``): mode ``interpreter``
is ``recommend`` as it is, mode ``embedding_only`` embeds the whole ask as text (the behaviour
before ``recbot.ask``). Prints a markdown table, the latency, the interpreter's failing cases,
and the JSON report. Read-only: no blurbs are written.

    recbot ingest src/recbot/demo/catalog.jsonl --interactions src/recbot/demo/interactions.jsonl
    python benchmarks/asks.py --data-dir .recbot

Or asks generated from an ingested catalog's own genre tags and popular titles
(``recbot.eval.asks.generated_cases``), spread over the users with a history, e.g. MovieLens:

    recbot --data-dir /tmp/ml-asks ingest ml-latest-small
    python benchmarks/asks.py --data-dir /tmp/ml-asks --movielens            # 300 asks, seed 0
    python benchmarks/asks.py --data-dir /tmp/ml-asks --movielens --seed 1   # another 300
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recbot import Recommender
from recbot.eval.asks import BUNDLED_CASES, ask_report, markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="an ingested data dir")
    parser.add_argument("--cases", type=Path, default=BUNDLED_CASES)
    parser.add_argument("--generated", type=int, default=0, metavar="N", help="run N asks generated from the catalog")
    parser.add_argument("--movielens", action="store_true", help="generated asks only (300 unless --generated)")
    parser.add_argument("--also-bundled", action="store_true", help="with --generated, run --cases too")
    parser.add_argument("--seed", type=int, default=0, help="seed for --generated")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)

    if args.movielens and not args.generated:
        args.generated = 300
    cases_file = args.cases if not args.generated or args.also_bundled else None
    with Recommender.open(args.data_dir) as rec:
        report = ask_report(rec, cases_file=cases_file, generated=args.generated, seed=args.seed, k=args.k)
    print(f"data dir {args.data_dir}\n")
    print(markdown(report))
    print("## JSON\n")
    print(json.dumps(report, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
