"""Chat page under load (run by hand; loopback only, bounded in count and time).

Starts `recbot chat` on a data dir (the demo's by default), measures the time until the
page answers, then runs N concurrent gradio_client sessions, each as a different user,
for a fixed time. Every answer is checked: no error, and every "because you liked" reason
comes from that session's own user's history (a cross-user leak otherwise).

    python benchmarks/load.py --data-dir .recbot --sessions 20 --seconds 60
    python benchmarks/load.py --data-dir .recbot --no-blurbs
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

QUERIES = ["something fun", "a cosy evening", "a gift", "something new", "", "more like my favourites", "surprise me"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=".recbot")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--no-blurbs", action="store_true")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    from gradio_client import Client

    from recbot import Recommender

    # enough distinct users: the data dir's own, then new ones with a few likes each
    rec = Recommender.open(args.data_dir)
    users = rec.users()[: args.sessions]
    items = sorted(rec.storage.items())
    rng = random.Random(0)
    for n in range(args.sessions - len(users)):
        user = f"load-{n}"
        for item in rng.sample(items, 5):
            rec.add_feedback(user, item, liked=True)
        users.append(user)
    liked = {u: {i.id for i, h in rec.history(u) if h.rating is None or h.rating >= 4} for u in users}
    rec.close()

    port = free_port()
    cmd = [sys.executable, "-m", "recbot.cli", "--data-dir", args.data_dir, "chat", "--port", str(port)]
    if args.no_blurbs:
        cmd.append("--no-blurbs")
    started = time.perf_counter()
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.perf_counter() - started > 120:
                    raise SystemExit("the page did not come up within 120 s") from None
                time.sleep(0.1)
        ready = time.perf_counter() - started

        latencies: list[float] = []
        errors: list[str] = []
        leaks: list[str] = []
        lock = threading.Lock()
        deadline = time.perf_counter() + args.seconds

        def session(user: str) -> None:
            client = Client(url, verbose=False)
            r = random.Random(user)
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    out = client.predict(user_id=user, query=r.choice(QUERIES), k=5, category="", api_name="/recommend")
                except Exception as exc:
                    with lock:
                        errors.append(f"{user}: {exc}")
                    continue
                dt = time.perf_counter() - t0
                bad = [
                    b["item_id"]
                    for x in out["recommendations"]
                    for b in x["because"]
                    if b["item_id"] not in liked[user]
                ]
                with lock:
                    latencies.append(dt)
                    if out["user_id"] != user or bad:
                        leaks.append(f"{user}: {bad}")
            client.close()

        threads = [threading.Thread(target=session, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=args.seconds + 300)
        lat = sorted(latencies)
        print(
            json.dumps(
                {
                    "sessions": len(users),
                    "seconds": args.seconds,
                    "blurbs": not args.no_blurbs,
                    "page_ready_s": round(ready, 2),
                    "turns": len(lat),
                    "errors": len(errors),
                    "cross_user_leaks": len(leaks),
                    "p50_s": round(statistics.median(lat), 3) if lat else None,
                    "p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3) if lat else None,
                    "turns_per_s": round(len(lat) / args.seconds, 2),
                    "first_errors": errors[:3],
                },
                indent=2,
            )
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
