"""Blurb quality on an ingested data dir (run by hand after `recbot demo`).

For every user x top-k: the share of blurbs generated (not templated), that every final
blurb passes the guard, distinct-1/2 over all blurbs; and a personalisation check: for
the same item, the blurb written with another user's history instead (the "because" item
recomputed for that user), the share that change, and the blurb's embedding similarity
to its own user's history minus to the swapped user's.

    python benchmarks/blurbs.py --data-dir .recbot --show u1 u3 u4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import numpy as np

from recbot import Reason, Recommender
from recbot.eval.text import distinct_n
from recbot.generation.guard import TitleIndex, check_blurb


def history_text(rec: Recommender, user: str) -> str:
    return " ".join(f"{item.title}. {h.review or ''}" for item, h in rec.history(user))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=".recbot")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--show", nargs="*", default=["u1", "u3", "u4"])
    args = parser.parse_args()
    rec = Recommender.open(args.data_dir)
    catalog = rec.storage.items()
    index = TitleIndex(catalog.values())
    users = rec.users()
    blurbs, generated, passed, total = [], 0, 0, 0
    per_user = {}
    t0 = time.perf_counter()
    for user in users:
        recs = rec.recommend(user, k=args.k)
        per_user[user] = recs
        allowed = {i.id for i, _ in rec.history(user)}
        for r in recs:
            total += 1
            generated += bool(r.grounded)
            passed += check_blurb(r.blurb or "", r.item, index, allowed=allowed, min_words=1).ok
            blurbs.append(r.blurb or "")
    seconds = time.perf_counter() - t0
    for user in args.show:
        print(f"\n== {user} ==")
        for r in per_user[user]:
            print(f"- [{'generated' if r.grounded else r.blurb_note}] {r.blurb}")

    # personalisation: same item, the next user's history instead
    writer = rec.writer.get()  # type: ignore[union-attr]
    embed = rec.embedder
    changed, margins = 0, []
    for a, b in zip(users, users[1:] + users[:1], strict=True):
        hist_b = rec.history(b)
        vec_b = rec.store.get_vectors([i.id for i, _ in hist_b])
        text_a, text_b = history_text(rec, a), history_text(rec, b)
        ha, hb = embed.encode([text_a, text_b], show_progress=False)
        for r in per_user[a]:
            item_vec = rec.store.get_vectors([r.item.id])[r.item.id]
            liked = [(i, h) for i, h in hist_b if h.rating is None or h.rating >= 4]
            because = ()
            if liked:
                sims = [float(item_vec @ vec_b[i.id]) for i, _ in liked]
                j = int(np.argmax(sims))
                because = (Reason(liked[j][0].id, liked[j][0].title, sims[j]),)
            swapped = writer.write(hist_b, [replace(r, because=because, blurb=None)], catalog)[0]
            changed += swapped.blurb != r.blurb
            own, _ = embed.encode([r.blurb or "", swapped.blurb or ""], show_progress=False)
            # the original blurb should sit closer to its own user's history than to b's
            margins.append(float(own @ ha) - float(own @ hb))
    print(
        json.dumps(
            {
                "users": len(users),
                "blurbs": total,
                "generated_rate": round(generated / total, 4),
                "templated_rate": round(1 - generated / total, 4),
                "guard_pass_rate_final": round(passed / total, 4),
                "distinct_1": round(distinct_n(blurbs, 1), 4),
                "distinct_2": round(distinct_n(blurbs, 2), 4),
                "swap_changed_share": round(changed / total, 4),
                "personalisation_margin_mean": round(statistics.mean(margins), 4),
                "personalisation_margin_positive_share": round(sum(m > 0 for m in margins) / len(margins), 4),
                "seconds_for_all_recommend_calls": round(seconds, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
