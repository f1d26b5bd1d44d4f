"""A canary in one user's review never reaches another user's blurb (issue 15).

The guarantee is by construction: a blurb may only use words of its item's facts, the
user's own liked titles and the user's own reviews (``support.support_for``), and
decoding is restricted to them. Here a small generator is trained on reviews that include
the canary (so it has seen, and been taught, the digits), then writes blurbs for every
other user; the canary's digits must not appear. The same support check shows that the
canary *is* allowed in its own user's blurbs, so the test could fail if support leaked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from recbot import Recommender
from recbot.generation.support import support_for
from recbot.generation.train import TrainConfig
from recbot.generation.writer import GPT2Writer
from tests.conftest import TOY_INTERACTIONS, TOY_ITEMS, write_jsonl

CODE = "4 7 2 1"
CANARY = f"My locker code is {CODE}."
OWNER = "spacefan"
# A small from-scratch GPT-2 taught the reviews themselves, so the canary is a training target.
CONFIG = TrainConfig(
    base="scratch",
    n_layer=2,
    n_embd=32,
    n_head=2,
    vocab_size=300,
    block_size=96,
    targets="reviews",
    max_steps=30,
    batch_size=8,
    eval_every=0,
    learning_rate=5e-3,
    augment_per_item=1,
)


@pytest.fixture
def planted(tmp_path: Path, make_recommender: Callable[..., Recommender]) -> tuple[Recommender, GPT2Writer]:
    rows = [dict(r) for r in TOY_INTERACTIONS]
    for row in rows:
        if row["user_id"] == OWNER and row["item_id"] in ("s1", "s2"):
            row["review"] = CANARY
    rows += [  # other users who like the owner's space items, and one elsewhere
        {"user_id": "astro", "item_id": "s1", "rating": 5, "timestamp": 1735689600, "review": "robots in space"},
        {"user_id": "astro", "item_id": "s3", "rating": 5, "timestamp": 1735689700, "review": "a fine station"},
        {"user_id": "hiker", "item_id": "h1", "rating": 5, "timestamp": 1735689600, "review": "sturdy boots"},
    ]
    catalog = write_jsonl(tmp_path / "catalog.jsonl", TOY_ITEMS)
    interactions = write_jsonl(tmp_path / "interactions.jsonl", rows)
    rec = make_recommender(num_candidates=2, max_new_tokens=24)
    rec.ingest(catalog, interactions=interactions)
    out = tmp_path / "gen"
    rec.train_generator(CONFIG, out_dir=out)
    return rec, GPT2Writer.load(str(out), rec.settings)


def _leaks(text: str) -> bool:
    return "locker" in text.lower() or re.search(r"(?<!\d)" + r"\W?".join(CODE.split()) + r"(?!\d)", text) is not None


def _rank(writer: GPT2Writer, code: str, n: int = 100) -> int:
    """Rank of ``code`` among itself and ``n - 1`` other 4-digit codes by the log-likelihood
    of the review target ": My locker code is d d d d." (1: the likeliest)."""
    import random

    import torch

    rng = random.Random(0)
    others = {" ".join(rng.choice("0123456789") for _ in range(4)) for _ in range(3 * n)} - {code}
    codes = [code, *sorted(others)[: n - 1]]
    batch = writer.tokenizer([f": My locker code is {c}." for c in codes], return_tensors="pt", padding=True)
    with torch.inference_mode():
        logp = torch.log_softmax(writer.model(**batch).logits[:, :-1].float(), -1)
    target = batch["input_ids"][:, 1:]
    mask = (batch["attention_mask"][:, 1:] * batch["attention_mask"][:, :-1]).bool()
    scores = (logp.gather(-1, target[..., None])[..., 0] * mask).sum(-1)
    return 1 + int((scores > scores[0]).sum())


def test_canary_is_in_its_owner_support_only(planted: tuple[Recommender, GPT2Writer]) -> None:
    rec, _ = planted
    catalog = rec.catalog()
    digits = set(CODE.split())
    own = support_for(catalog["s4"], rec.history(OWNER))
    assert {"locker", *digits} <= own.allowed  # the owner's blurbs may quote their own review
    others = [u for u in rec.users() if u != OWNER]
    assert len(others) >= 3
    for user in others:
        for item in catalog.values():
            allowed = support_for(item, rec.history(user)).allowed
            assert "locker" not in allowed and not digits & allowed, (user, item.id)


def test_other_users_blurbs_never_carry_the_canary(planted: tuple[Recommender, GPT2Writer]) -> None:
    rec, writer = planted
    catalog = rec.catalog()
    # the model has learnt the canary: the true code is likelier than most other codes
    assert _rank(writer, CODE) <= 10
    jobs = [
        (rec.history(user), r)
        for user in rec.users()
        if user != OWNER
        for r in rec.recommend(user, k=len(catalog), blurbs=False)
    ]
    assert len(jobs) >= 20
    written = writer.write_many(jobs, catalog)
    assert all(r.blurb for r in written)
    assert sum(r.blurb_source == "generated" for r in written) > 0  # the model wrote, not only templates
    leaked = [r.blurb for r in written if r.blurb and _leaks(r.blurb)]
    assert leaked == []
