"""Ingest's encoder, side by side (run by hand): torch and ONNX Runtime, in-process and in
encoder worker processes.

Encodes the same catalog texts, in ingest's chunks of 256, with ``BertEmbedder`` (the
bundled all-MiniLM-L6-v2 unless ``--encoder``) four ways in one run: torch in-process (the
default path), torch in ``--workers`` processes (cores // workers threads each), ONNX
in-process, ONNX in workers. Repeats are interleaved (each round runs every variant, in a
rotated order) so a neighbour's load hits them alike; the table gives the median items/s,
the ratio to torch in-process, and how close each variant's vectors are to torch
in-process's. Loading (and the ONNX export, into ``--onnx-dir``) is timed apart.

Beside each timed run the script reads /proc/stat: "other" is the CPU that processes
other than this one and its workers used meanwhile, in cores. An encoder run during which
others used more than ``--quiet-cores`` is run again (up to ``--retries`` times); the
column shows the most any kept run saw.

``--ingest`` also times a whole ingest of the catalog (read, store, encode, upsert, tune)
into fresh data dirs, in-process against workers.

    python benchmarks/encoder.py --catalog ../shared/data/ml-latest-small --format movielens \\
        --ingest --ingest-backend torch onnx
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from recbot.catalog import read_catalog
from recbot.retrieval.embedder import BertEmbedder, EncoderPool, LazyEmbedder

DEFAULT_CATALOG = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-latest-small"
CHUNK = 256  # recbot.ingest's chunk: what ingest hands the encoder at a time


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy, from /proc/stat (Linux)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds of ``pids`` (live) and of this process's children that have ended."""
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = ended.ru_utime + ended.ru_stime
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def _timed(run: Callable[[], object], pids: Sequence[int]) -> tuple[float, float | None, object]:
    """(seconds, cores used by other processes meanwhile, result)."""
    mine, busy = _cpu_seconds(pids), _busy_seconds()
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    after = _busy_seconds()
    other = None if busy is None or after is None else (after - busy - (_cpu_seconds(pids) - mine)) / seconds
    return seconds, other, result


def _compare(vectors: np.ndarray, reference: np.ndarray) -> str:
    cosine = np.sum(vectors * reference, axis=1)
    return f"{np.abs(vectors - reference).max():.1e} / {cosine.min():.6f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--format", default="movielens")
    parser.add_argument("--encoder", default=None, help="BERT model id or path (default: the bundled MiniLM)")
    parser.add_argument("--items", type=int, default=2000, help="texts to encode")
    parser.add_argument("--workers", type=int, default=2, help="encoder worker processes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--onnx-dir", type=Path, default=None)
    parser.add_argument("--quiet-cores", type=float, default=0.2, help="other processes' CPU allowed in a kept run")
    parser.add_argument("--retries", type=int, default=3, help="reruns of a disturbed run")
    parser.add_argument("--ingest", action="store_true", help="also time whole ingests, in-process against workers")
    parser.add_argument("--ingest-repeats", type=int, default=1)
    parser.add_argument("--ingest-backend", nargs="+", default=["torch"], choices=["torch", "onnx"])
    parser.add_argument("--ingest-once", nargs=3, help=argparse.SUPPRESS)  # DATA_DIR WORKERS BACKEND: one timed ingest
    args = parser.parse_args()
    if args.ingest_once:
        _ingest_once(args)
        return
    if not args.catalog.exists():
        print(f"real data not found at {args.catalog}: benchmark skipped")
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as the recbot command sets it
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    texts = [item.text for item in read_catalog(args.catalog, args.format).items[: args.items]]
    chunks = [texts[i : i + CHUNK] for i in range(0, len(texts), CHUNK)]
    onnx_dir = args.onnx_dir or Path(tempfile.mkdtemp())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{len(texts)} texts from {args.catalog.name} in {len(chunks)} chunks of {CHUNK}; {cores} cores; ", end="")
    print(f"load average before: {os.getloadavg()[0]:.2f}")

    variants: dict[str, tuple[Callable[[], np.ndarray], list[int]]] = {}
    loads: dict[str, float] = {}
    pools: list[EncoderPool] = []
    for backend in ("torch", "onnx"):
        started = time.perf_counter()
        embedder = BertEmbedder(args.encoder, backend=backend, onnx_dir=onnx_dir)
        embedder.encode(chunks[0], show_progress=False)  # warm up
        loads[f"{backend} in-process"] = time.perf_counter() - started
        variants[f"{backend} in-process"] = (
            lambda e=embedder: np.vstack([e.encode(c, show_progress=False) for c in chunks]),
            [os.getpid()],
        )
    for backend in ("torch", "onnx"):
        name = f"{backend} {args.workers} workers"
        started = time.perf_counter()
        pool = EncoderPool(args.encoder, devices=["cpu"] * args.workers, backend=backend, onnx_dir=onnx_dir)
        list(pool.map(chunks[: args.workers]))  # warm up every worker
        loads[name] = time.perf_counter() - started
        pools.append(pool)
        variants[name] = (lambda p=pool: np.vstack(list(p.map(chunks))), [os.getpid(), *pool.pids])
    threads = pools[0].workers[0].threads

    names = list(variants)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    other: dict[str, list[float]] = {n: [] for n in names}
    vectors: dict[str, np.ndarray] = {}
    reruns = 0
    for round_ in range(args.repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            run, pids = variants[name]
            for attempt in range(args.retries + 1):
                took, others, result = _timed(run, pids)
                if others is None or others <= args.quiet_cores or attempt == args.retries:
                    break
                reruns += 1
            seconds[name].append(took)
            other[name].append(others if others is not None else float("nan"))
            vectors[name] = result
    for pool in pools:
        pool.close()

    base = len(texts) / statistics.median(seconds[names[0]])
    print(
        f"\nitems/s: median of {args.repeats} interleaved runs (min-max), {reruns} disturbed run(s) rerun; "
        f"workers: {threads} thread(s) each; vectors: max abs diff / min cosine"
    )
    print(
        "| variant | items/s | min-max | vs torch in-process | vs same backend in-process | load s | other cores "
        "| vectors vs torch in-process | vs same backend in-process |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for name in names:
        twin = name.split()[0] + " in-process"
        rates = [len(texts) / s for s in seconds[name]]
        rate = len(texts) / statistics.median(seconds[name])
        twin_rate = len(texts) / statistics.median(seconds[twin])
        print(
            f"| {name} | {rate:.0f} | {min(rates):.0f}-{max(rates):.0f} | x{rate / base:.2f} | x{rate / twin_rate:.2f} "
            f"| {loads[name]:.1f} | {max(other[name]):.2f} | {_compare(vectors[name], vectors[names[0]])} "
            f"| {_compare(vectors[name], vectors[twin])} |"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.ingest:
        _time_ingests(args, onnx_dir)


def _time_ingests(args: argparse.Namespace, onnx_dir: Path) -> None:
    """Whole ingests of the catalog into fresh data dirs, in-process and with workers,
    interleaved. Each runs in a fresh interpreter, as ``recbot ingest`` does (imports and
    model load included), with the embedder injected: the command cannot set workers yet.
    The ONNX model is the one exported above (a data dir's first ONNX ingest exports it)."""
    import json
    import subprocess

    rows: dict[tuple[str, int], list[tuple[float, float, float | None]]] = {}
    for _ in range(args.ingest_repeats):
        for backend in args.ingest_backend:
            for workers in (1, args.workers):
                with tempfile.TemporaryDirectory() as data:
                    once = [sys.executable, __file__, "--catalog", str(args.catalog), "--format", args.format]
                    once += ["--onnx-dir", str(onnx_dir), "--ingest-once", data, str(workers), backend]
                    once += ["--encoder", args.encoder] if args.encoder else []
                    took, others, out = _timed(
                        lambda cmd=once: subprocess.run(cmd, capture_output=True, text=True, check=True).stdout, []
                    )
                report = json.loads(str(out))
                rows.setdefault((backend, workers), []).append((took, report["seconds"], others))
                print(
                    f"  ingest, {backend}, {workers} worker(s): {took:.1f} s, other cores {others:.2f}", file=sys.stderr
                )
    print(
        f"\nwhole ingest of {args.catalog.name} into a fresh data dir, fresh process; median of {args.ingest_repeats}"
    )
    print("| backend | encoding | wall s (process) | ingest s (report) | speed-up | other cores |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for (backend, workers), runs in rows.items():
        label = "in-process" if workers == 1 else f"{workers} workers"
        wall = statistics.median(r[0] for r in runs)
        before = statistics.median(r[0] for r in rows[(backend, 1)])
        report_s = statistics.median(r[1] for r in runs)
        others = max((r[2] for r in runs if r[2] is not None), default=float("nan"))
        print(f"| {backend} | {label} | {wall:.1f} | {report_s:.1f} | x{before / wall:.2f} | {others:.2f} |")


def _ingest_once(args: argparse.Namespace) -> None:
    """One ingest, as ``recbot ingest`` runs it, with ``LazyEmbedder(workers=...)``; prints the report."""
    import json

    from recbot import Recommender, Settings
    from recbot.recommender import open_storage, open_store

    data, workers, backend = args.ingest_once
    settings = Settings.create(data_dir=data, encoder=args.encoder, encoder_backend=backend)
    embedder = LazyEmbedder(args.encoder, workers=int(workers), backend=backend, onnx_dir=args.onnx_dir)
    with Recommender(settings, storage=open_storage(settings), store=open_store(settings), embedder=embedder) as rec:
        report = rec.ingest(args.catalog, fmt=args.format)
    print(json.dumps(report.to_dict()))


if __name__ == "__main__":
    main()
