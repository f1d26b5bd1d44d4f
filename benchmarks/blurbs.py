"""Blurb quality on an ingested data dir (run by hand after `recbot demo --no-chat`).

For every user x top-k, recbot's blurbs against three baselines written for the same
items and users: the template (``prompts.fact_continuation``), copy (the item's first
description sentence) and constant (" should suit you." for everyone). For each: the
unsupported-word, misquote, word-salad and personal-beyond-the-opening shares and the
n-gram fluency (``recbot.eval.blurbs``), measured on the continuation (the text after
the fixed opening); the templated share of recbot's. Then the counterfactual swap, on
the continuation only: the same item written for the next user's history (the "because"
item recomputed for them) — the share whose continuation changes, and the continuation's
embedding similarity to its own user's history minus to the swapped user's.

    python benchmarks/blurbs.py --data-dir .recbot            # prints the top 2 of every user too
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import numpy as np

from recbot import Reason, Recommender
from recbot.eval.blurbs import blurb_measures
from recbot.eval.text import distinct_n
from recbot.generation.prompts import fact_continuation, first_sentences


def history_text(rec: Recommender, user: str) -> str:
    return " ".join(f"{item.title}. {h.review or ''}" for item, h in rec.history(user))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=".recbot")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--show", type=int, default=2, help="blurbs printed per user")
    args = parser.parse_args()
    rec = Recommender.open(args.data_dir)
    catalog = rec.storage.items()
    writer = rec.writer.get()  # type: ignore[union-attr]
    users = rec.users()
    t0 = time.perf_counter()
    per_user = {user: rec.recommend(user, k=args.k) for user in users}
    seconds = time.perf_counter() - t0
    jobs = [(user, writer.job(rec.history(user), r, catalog), r) for user in users for r in per_user[user]]
    for user in users:
        print(f"\n== {user} ==")
        for r in per_user[user][: args.show]:
            print(f"- [{r.blurb_source}{'' if r.grounded else ', NOT grounded'}] {r.blurb}")

    def cont(job, blurb: str) -> str:  # type: ignore[no-untyped-def]
        return blurb[len(job.prompt.opening) :]

    methods = {
        "recbot": [cont(j, r.blurb or "") for _, j, r in jobs],
        "template": [fact_continuation(j.rec.item, j.because, j.history) for _, j, _ in jobs],
        "copy": [" " + first_sentences(j.rec.item.description, 1) for _, j, _ in jobs],
        "constant": [" should suit you." for _ in jobs],
    }
    items = [j.rec.item for _, j, _ in jobs]
    supports = [j.support for _, j, _ in jobs]
    becauses = [j.because for _, j, _ in jobs]
    table = {
        name: {
            **blurb_measures(conts, items, supports, becauses, writer.fluency),
            "distinct_2": round(distinct_n(conts, 2), 4),
        }
        for name, conts in methods.items()
    }
    table["recbot"]["templated_rate"] = round(float(np.mean([r.blurb_source == "template" for _, _, r in jobs])), 4)
    table["recbot"]["grounded_rate"] = round(float(np.mean([bool(r.grounded) for _, _, r in jobs])), 4)
    table["template"]["templated_rate"] = 1.0

    # counterfactual swap, continuation only
    embed = rec.embedder
    changed, margins = 0, []
    for a, b in zip(users, users[1:] + users[:1], strict=True):
        hist_b = rec.history(b)
        vec_b = rec.store.get_vectors([i.id for i, _ in hist_b])
        ha, hb = embed.encode([history_text(rec, a), history_text(rec, b)], show_progress=False)
        for r in per_user[a]:
            item_vec = rec.store.get_vectors([r.item.id])[r.item.id]
            liked = [(i, h) for i, h in hist_b if (h.rating is None or h.rating >= 4) and i.id in vec_b]
            because: tuple[Reason, ...] = ()
            if liked:
                sims = [float(item_vec @ vec_b[i.id]) for i, _ in liked]
                j = int(np.argmax(sims))
                because = (Reason(liked[j][0].id, liked[j][0].title, sims[j]),)
            own_job = writer.job(rec.history(a), r, catalog)
            swapped = writer.write(hist_b, [replace(r, because=because, blurb=None)], catalog)[0]
            swap_job = writer.job(hist_b, replace(r, because=because), catalog)
            mine, theirs = cont(own_job, r.blurb or ""), cont(swap_job, swapped.blurb or "")
            changed += mine.strip() != theirs.strip()
            (v,) = embed.encode([mine.strip() or "."], show_progress=False)
            margins.append(float(v @ ha) - float(v @ hb))
    print(
        json.dumps(
            {
                "users": len(users),
                "blurbs": len(jobs),
                "methods": table,
                "swap_continuation_changed_share": round(changed / len(jobs), 4),
                "continuation_personalisation_margin_mean": round(statistics.mean(margins), 4),
                "continuation_personalisation_margin_positive_share": round(
                    sum(m > 0 for m in margins) / len(margins), 4
                ),
                "seconds_for_all_recommend_calls": round(seconds, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
