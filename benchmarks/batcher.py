"""The continuous batcher alone, in process (no server): tokens/s and the batcher thread's
CPU time when ``--requests`` threads each ask for ``--prompts`` blurbs (``num_candidates``
each) at once, as chat turns do, for one or more source trees side by side.

Each tree runs in its own subprocess (its ``src`` first on ``sys.path``), in turns
(``--rounds``), on the same jobs and seeds; each run times ``--reps`` bursts after one
warm-up burst. Every tree must give the same candidates: the script says whether they do.

    # the old code as a worktree (or a copy of its src/), against this checkout; a copy of
    # the data dir, since opening it may write to it:
    python benchmarks/batcher.py --data-dir /tmp/demo-copy --tree old=/tmp/old/src --tree new=src

Columns: the median burst's wall seconds and tokens/s (the machine's other load moves
these), the batcher thread's CPU seconds (``recbot-batcher``, from /proc: Linux only; the
critical path) and the process's CPU seconds (with torch's own threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _thread_cpu(native_id: int) -> float:
    """A thread's user + system CPU seconds (Linux)."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child(args: argparse.Namespace, src: str, out: Path) -> None:
    """One tree: load the demo generator, then ``reps`` + 1 bursts of concurrent requests."""
    sys.path.insert(0, os.path.abspath(src))
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import recbot
    from recbot import Recommender
    from recbot.generation.batching import Batcher, GenerateRequest
    from recbot.generation.writer import GPT2Writer, resolve_generator

    assert recbot.__file__.startswith(os.path.abspath(src)), f"imported {recbot.__file__}, not {src}"
    with Recommender.open(args.data_dir) as rec:
        writer = GPT2Writer.load(resolve_generator(rec.settings), rec.settings)
        users = rec.users()
        catalog = rec.catalog()
        jobs = []
        for n in range(args.requests):  # as benchmarks/load.py's generation_ratio builds them
            user = users[n % len(users)]
            jobs.append(writer.jobs(rec.history(user), rec.recommend(user, k=args.prompts, blurbs=False), catalog))
    settings = writer.settings
    batcher = Batcher(writer, window_s=settings.generation_window_ms / 1000, max_rows=settings.generation_batch_rows)

    def options(group: list[Any], seed: int) -> dict[str, Any]:
        return {
            "num_return_sequences": settings.num_candidates,
            "seed": seed,
            "sources": [j.source for j in group],
            "supports": [j.support for j in group],
            "leads": [j.prompt.opening for j in group],
            "options": [j.options for j in group] if writer.frames and not args.words else None,
        }

    runs, outputs = [], []
    for rep in range(args.reps + 1):  # the first warms up
        got: list[Any] = [None] * args.requests

        def ask(i: int, got: list[Any], seed: int) -> None:
            on_text = (lambda prompt, text: None) if args.stream else None
            request = GenerateRequest([j.prompt.text for j in jobs[i]], options(jobs[i], seed), on_text)
            got[i] = batcher.submit(request)

        threads = [threading.Thread(target=ask, args=(i, got, settings.seed + rep)) for i in range(args.requests)]
        cpu, process, wall = _thread_cpu(batcher._thread.native_id), time.process_time(), time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - wall
        cpu, process = _thread_cpu(batcher._thread.native_id) - cpu, time.process_time() - process
        tokens = sum(len(writer.tokenizer(c).input_ids) for g in got for cands in g for c in cands)
        outputs.append(got)
        if rep:
            runs.append({"wall_s": wall, "tokens_per_s": tokens / wall, "batcher_cpu_s": cpu, "process_cpu_s": process})
    out.write_text(json.dumps({"runs": runs, "outputs": outputs}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="a demo data dir with a trained generator (a copy)")
    parser.add_argument("--tree", action="append", metavar="NAME=SRC", help="a source tree (default: this src/)")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=5, help="blurbs a request")
    parser.add_argument("--rounds", type=int, default=2, help="turns each tree gets")
    parser.add_argument("--reps", type=int, default=2, help="timed bursts a turn")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--words", action="store_true", help="the word constraint even for a frames generator")
    parser.add_argument("--no-stream", dest="stream", action="store_false", help="requests without on_text")
    parser.add_argument("--child", nargs=2, metavar=("SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args, args.child[0], Path(args.child[1]))
        return
    trees = [t.split("=", 1) for t in args.tree or [f"current={Path(__file__).parent.parent / 'src'}"]]
    passed = sys.argv[1:]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    outputs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for turn in range(args.rounds):
            for name, src in trees:
                out = Path(tmp) / f"{name}-{turn}.json"
                subprocess.run([sys.executable, __file__, *passed, "--child", src, str(out)], check=True)
                result = json.loads(out.read_text())
                runs[name] += result["runs"]
                outputs.setdefault(name, result["outputs"])
                if result["outputs"] != outputs[name]:
                    print(f"{name}: its candidates changed between turns")
    print(f"{args.requests} requests x {args.prompts} prompts at once, torch threads: {args.threads or 'default'}")
    for name, rs in runs.items():
        med = {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        print(
            f"{name:>10}: {len(rs)} bursts, wall {med['wall_s']:.2f} s, {med['tokens_per_s']:.0f} tokens/s, "
            f"batcher CPU {med['batcher_cpu_s']:.2f} s, process CPU {med['process_cpu_s']:.2f} s"
        )
    first = next(iter(outputs.values()))
    print("same candidates in every tree:", all(o == first for o in outputs.values()))


if __name__ == "__main__":
    main()
