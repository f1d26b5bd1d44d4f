"""The chat page under load, old path against batched, in one run (by hand; loopback only,
bounded in count and time).

Starts `recbot chat` three times on the same data dir (the demo's by default):

- ``one-at-a-time``: blurbs on, generation batching off (``generation_window_ms = -1``: each
  request runs its own generate under the model's lock, as before recbot.generation.batching);
- ``window``: blurbs on, window batching (requests collected for 30 ms, then one generate of
  at most 60 rows that runs to its end);
- ``batched``: blurbs on, the default: continuous batching (requests join and leave the
  running decode between steps);
- ``no-blurbs``: ``--no-blurbs`` (retrieval only);
- ``today`` (only with ``--today-src DIR``): blurbs on, served by another source tree, e.g. a
  ``git worktree`` of the commit an issue was measured against, on a copy of the same data
  dir and generator, through its non-streaming ``/recommend`` (its first blurb token is then
  the whole turn). This measures "today's" throughput in the same run as the new paths.

For each, and for each session count (1, 5, 20), N concurrent HTTP sessions (each a
different user) ask for 5 items for ``--seconds``, through the streaming API
(``/recommend_stream``) when blurbs are on and ``/recommend`` when off. Reported per cell:
turns, turns/s, p50/p95 turn latency, p50 time to the first blurb token (the first message
in which some blurb has text past its item's title), the share of template blurbs (busy or
otherwise), errors, and cross-session leaks (a reason not from the session's own user, or a
message whose items change mid-stream). Then the generation-level ratio, in process: tokens/s
of one batched generate of 20 requests x 5 items against 20 sequential 5-item calls.

    python benchmarks/load.py --data-dir .recbot --seconds 20
    python benchmarks/load.py --data-dir .recbot --sessions 20 --seconds 60 --only batched
    git worktree add /tmp/today 1d7d4b8
    python benchmarks/load.py --data-dir .recbot --seconds 20 --today-src /tmp/today
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

QUERIES = ["something fun", "a cosy evening", "a gift", "something new", "", "more like my favourites", "surprise me"]
MODES = {  # name -> (extra CLI args, settings TOML)
    "one-at-a-time": ([], "generation_window_ms = -1\n"),
    "window": ([], 'generation_batching = "window"\ngeneration_batch_rows = 60\n'),
    "batched": ([], ""),
    "no-blurbs": (["--no-blurbs"], ""),
    "today": ([], ""),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))], 3)


def start_server(
    data_dir: str, mode: str, workdir: Path, src: Path | None = None
) -> tuple[subprocess.Popen[bytes], str, float]:
    """Start ``recbot chat`` in ``mode``; with ``src``, the ``recbot`` of that source tree."""
    args, toml = MODES[mode]
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src / "src")
    config = workdir / f"{mode}.toml"
    config.write_text(toml, encoding="utf-8")
    port = free_port()
    cmd = [sys.executable, "-m", "recbot.cli", "--data-dir", data_dir, "--config", str(config), "chat"]
    cmd += ["--port", str(port), *args]
    started = time.perf_counter()
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}/"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return server, url, time.perf_counter() - started
        except OSError:
            if time.perf_counter() - started > 180 or server.poll() is not None:
                server.terminate()
                raise SystemExit(f"{mode}: the page did not come up") from None
            time.sleep(0.2)


def has_text(rec: dict[str, Any]) -> bool:
    """Some blurb text past the item's title (the opening ends with it)."""
    blurb = rec.get("blurb") or ""
    return bool(blurb.split(rec["title"], 1)[-1].strip(" ,.")) if rec["title"] in blurb else bool(blurb)


class HttpSession:
    """One chat session talking to the page over gradio's HTTP API (POST
    ``/gradio_api/call/<api>``, then read the event's server-sent events), with one kept-
    alive connection. gradio_client does the same with far more machinery: measured here
    it spent 40-76 ms of CPU per turn, 3-10x the page's own, on the same 2 cores, so the
    load generator was what it measured."""

    def __init__(self, url: str) -> None:
        import http.client
        import urllib.parse

        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)

    def _request(self, method: str, path: str, body: bytes | None = None) -> Any:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(method, path, body=body, headers=headers)
        return self.conn.getresponse()

    def call(self, api: str, *args: Any) -> Any:
        """The event's messages as they come (each the endpoint's one output)."""
        response = self._request("POST", f"/gradio_api/call/{api}", json.dumps({"data": list(args)}).encode())
        event_id = json.loads(response.read())["event_id"]
        response = self._request("GET", f"/gradio_api/call/{api}/{event_id}")
        event = None
        while line := response.readline():
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                event = text[7:]
            elif text.startswith("data: ") and event in ("generating", "complete"):
                data = json.loads(text[6:])
                if data is not None:
                    yield data[0]
            elif text.startswith("data: ") and event == "error":
                raise RuntimeError(text[6:])
            if event == "complete" and not text:
                break
        response.read()

    def close(self) -> None:
        self.conn.close()


def cpu_seconds(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def run_cell(
    url: str, users: list[str], liked: dict[str, set[str]], seconds: float, api: str, server_pid: int
) -> dict[str, Any]:
    cpu = (cpu_seconds(server_pid), cpu_seconds(os.getpid()))

    latencies: list[float] = []
    first_tokens: list[float] = []
    errors: list[str] = []
    leaks: list[str] = []
    templated = blurbs = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def session(user: str) -> None:
        nonlocal templated, blurbs
        client = HttpSession(url)
        r = random.Random(user)
        while time.perf_counter() < deadline:
            query = r.choice(QUERIES)
            t0 = time.perf_counter()
            first: float | None = None
            try:
                messages = []
                for message in client.call(api, user, query, 5, ""):
                    messages.append(message)
                    if first is None and any(has_text(x) for x in message["recommendations"]):
                        first = time.perf_counter() - t0
                out = messages[-1]
            except Exception as exc:
                with lock:
                    errors.append(f"{user}: {type(exc).__name__}: {exc}")
                client.close()
                client = HttpSession(url)
                continue
            dt = time.perf_counter() - t0
            ids = [x["item_id"] for x in out["recommendations"]]
            bad = [
                b["item_id"] for x in out["recommendations"] for b in x["because"] if b["item_id"] not in liked[user]
            ]
            changed = any([x["item_id"] for x in m["recommendations"]] != ids for m in messages)
            with lock:
                latencies.append(dt)
                if first is not None:
                    first_tokens.append(first)
                if out["user_id"] != user or bad or changed:
                    leaks.append(f"{user}: {bad}")
                for x in out["recommendations"]:
                    if x.get("blurb"):
                        blurbs += 1
                        templated += x.get("blurb_source") == "template"
        client.close()

    threads = [threading.Thread(target=session, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 300)
    turns = max(1, len(latencies))
    server_cpu, client_cpu = cpu_seconds(server_pid) - cpu[0], cpu_seconds(os.getpid()) - cpu[1]
    return {
        "sessions": len(users),
        "turns": len(latencies),
        "turns_per_s": round(len(latencies) / seconds, 2),
        "p50_s": percentile(latencies, 0.5),
        "p95_s": percentile(latencies, 0.95),
        "first_token_p50_s": percentile(first_tokens, 0.5),
        "template_share": round(templated / blurbs, 3) if blurbs else None,
        "errors": len(errors),
        "cross_session_leaks": len(leaks),
        "first_errors": errors[:3],
        # where the 2 cores went: the page's process and this one (the sessions' clients)
        "server_cpu_ms_per_turn": round(1000 * server_cpu / turns, 1),
        "client_cpu_ms_per_turn": round(1000 * client_cpu / turns, 1),
    }


def generation_ratio(data_dir: str, requests: int = 20, k: int = 5) -> dict[str, Any]:
    """Tokens/s of one generate over ``requests`` x ``k`` prompts against ``requests`` calls of ``k``."""
    from recbot import Recommender
    from recbot.generation.writer import GPT2Writer, resolve_generator

    with Recommender.open(data_dir) as rec:
        writer = GPT2Writer.load(resolve_generator(rec.settings), rec.settings)
        users = rec.users()
        catalog = rec.catalog()
        jobs = []
        for n in range(requests):
            user = users[n % len(users)]
            recs = rec.recommend(user, k=k, blurbs=False)
            jobs.append(writer.jobs(rec.history(user), recs, catalog))
    n = writer.settings.num_candidates

    def call(group: list[Any]) -> int:
        out = writer.generate_now(
            [j.prompt.text for j in group],
            num_return_sequences=n,
            sources=[j.source for j in group],
            supports=[j.support for j in group],
            leads=[j.prompt.opening for j in group],
            options=[j.options for j in group] if writer.frames else None,
        )
        return sum(len(writer.tokenizer(c).input_ids) for cands in out for c in cands)

    t0 = time.perf_counter()
    sequential = sum(call(group) for group in jobs)
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = call([j for group in jobs for j in group])
    t_batch = time.perf_counter() - t0
    return {
        "prompts": requests * k,
        "candidates_each": n,
        "sequential_tokens_per_s": round(sequential / t_seq, 1),
        "batched_tokens_per_s": round(batched / t_batch, 1),
        "ratio": round((batched / t_batch) / (sequential / t_seq), 2),
        "sequential_s": round(t_seq, 2),
        "batched_s": round(t_batch, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=".recbot")
    parser.add_argument("--sessions", default="1,5,20", help="comma-separated session counts")
    parser.add_argument("--seconds", type=float, default=20.0, help="per cell")
    parser.add_argument("--only", choices=list(MODES), action="append", help="run these modes only")
    parser.add_argument("--no-ratio", action="store_true", help="skip the generation-level ratio")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--today-src",
        type=Path,
        help="a source tree (e.g. a git worktree of an older commit) served as the 'today' mode, on a data dir copy",
    )
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from recbot import Recommender

    counts = [int(c) for c in args.sessions.split(",")]
    rec = Recommender.open(args.data_dir)
    users = rec.users()[: max(counts)]
    items = sorted(rec.catalog())
    rng = random.Random(0)
    for n in range(max(counts) - len(users)):  # enough distinct users: new ones with a few likes each
        user = f"load-{n}"
        if not rec.history(user):
            for item in rng.sample(items, 5):
                rec.add_feedback(user, item, liked=True)
        users.append(user)
    liked = {u: {i.id for i, h in rec.history(u) if h.liked} for u in users}
    rec.close()

    results: dict[str, Any] = {"seconds_per_cell": args.seconds, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        modes = args.only or [m for m in MODES if m != "today" or args.today_src]
        for mode in modes:
            data_dir, src = args.data_dir, None
            if mode == "today":
                if args.today_src is None:
                    raise SystemExit("--only today needs --today-src")
                # the other tree may migrate or write the data dir: give it its own copy
                data_dir, src = str(Path(tmp) / "today-data"), args.today_src
                shutil.copytree(args.data_dir, data_dir)
            api = {"no-blurbs": "recommend", "today": "recommend"}.get(mode, "recommend_stream")
            server, url, ready = start_server(data_dir, mode, Path(tmp), src)
            try:
                cells = [run_cell(url, users[:c], liked, args.seconds, api, server.pid) for c in counts]
            finally:
                server.terminate()
                server.wait(timeout=30)
            results["modes"][mode] = {"page_ready_s": round(ready, 1), "cells": cells}
            print(f"{mode}: done", file=sys.stderr)
    if not args.no_ratio:
        results["generation_ratio"] = generation_ratio(args.data_dir)

    print(
        "| mode | sessions | turns | turns/s | p50 s | p95 s | first token p50 s | template share | errors | leaks "
        "| page CPU ms/turn | clients CPU ms/turn |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mode, m in results["modes"].items():
        for c in m["cells"]:
            print(
                f"| {mode} | {c['sessions']} | {c['turns']} | {c['turns_per_s']} | {c['p50_s']} | {c['p95_s']} "
                f"| {c['first_token_p50_s']} | {c['template_share']} | {c['errors']} | {c['cross_session_leaks']} "
                f"| {c['server_cpu_ms_per_turn']} | {c['client_cpu_ms_per_turn']} |"
            )
    if "generation_ratio" in results:
        g = results["generation_ratio"]
        print(
            f"\ngeneration: one call of {g['prompts']} prompts x {g['candidates_each']} candidates "
            f"{g['batched_tokens_per_s']} tokens/s vs 20 calls of 5: {g['sequential_tokens_per_s']} tokens/s "
            f"(x{g['ratio']})"
        )
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
