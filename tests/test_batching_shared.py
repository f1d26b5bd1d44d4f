"""The continuous batcher's shared step (recbot.generation.batching._shared_scores): the
processors of many requests run once for all their rows, on each row's allowed tokens
only, and give every row exactly (bit for bit, float32) the scores its own request's
processors give; and the prompt prefill that stops at the last layer's cache
(recbot.generation.decode.prefill) keeps exactly the full forward pass's cache."""

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from recbot import Settings
from recbot.generation import batching
from recbot.generation.batching import Batcher, GenerateRequest, _Group, _shared_scores
from recbot.generation.decode import growing_cache, positions, prefill
from recbot.generation.writer import GPT2Writer, draw

USERS = ("spacefan", "baker")


def _writer(tiny_gpt2: Path, **settings: object) -> GPT2Writer:
    return GPT2Writer.load(str(tiny_gpt2), Settings.create(**{"max_new_tokens": 30, "num_candidates": 2, **settings}))


def _requests(rec, writer: GPT2Writer) -> dict[str, tuple[list[str], dict[str, object]]]:
    """Blurb requests as ``write`` makes them: per user, with the word constraint and with
    the sentence grammar (``options``), and one without sources (no copy bias)."""

    def request(jobs, **extra: object) -> tuple[list[str], dict[str, object]]:
        options = {
            "num_return_sequences": 2,
            "sources": [j.source for j in jobs],
            "supports": [j.support for j in jobs],
            "leads": [j.prompt.opening for j in jobs],
        }
        return [j.prompt.text for j in jobs], {**options, **extra}

    out = {}
    for user in USERS:
        recs = rec.recommend(user, k=3, blurbs=False)
        jobs = writer.jobs(rec.history(user), recs, rec.storage.items())
        out[f"{user}-words"] = request(jobs)
        out[f"{user}-sentences"] = request(jobs[1:], seed=5, options=[j.options for j in jobs[1:]])
        if user == USERS[0]:
            out["no-sources"] = request(jobs[:2], seed=9, sources=None)
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def test_shared_scores_are_each_requests_own_bit_for_bit(toy_recommender, tiny_gpt2: Path) -> None:
    """Step after step, with rows ending and logits of both signs: each running row's
    shared scores equal, bit for bit, what its request's own processors give it; and the
    penalty, the n-gram ban and the copy bias's span continuation all come into play."""
    writer = _writer(tiny_gpt2)
    groups = [_Group.start(writer, GenerateRequest(p, o)) for p, o in _requests(toy_recommender, writer).values()]
    assert all(g.shared is not None for g in groups)
    assert {type(g.shared.allowed).__name__ for g in groups} == {"AllowedWords", "AllowedSentences"}
    vocab = int(writer.model.config.vocab_size)
    noise = torch.Generator().manual_seed(0)
    used: Counter[str] = Counter()
    for _ in range(writer.max_new_tokens):
        owners = [(g, r) for g in groups if not g.done for r in range(g.size) if g.live[r]]
        if not owners:
            break
        logits = torch.randn((len(owners), vocab), generator=noise) * 3
        buckets: dict[tuple, list] = {}  # requests with the same processor settings share a step, as in _advance
        for g in groups:
            mine = [i for i, (o, _) in enumerate(owners) if o is g]
            if mine:
                buckets.setdefault(g.shared.key, []).append((g, mine, [owners[i][1] for i in mine]))
        assert len(buckets) <= 2  # with and without copy bias
        for entries in buckets.values():
            shared, spans = _shared_scores(entries, logits)
            assert [g for g, *_ in spans] == [g for g, *_ in entries]
            start = 0
            for g, batch_rows, rows in spans:
                own = g.scores(logits, batch_rows, rows)
                assert torch.equal(_bits(shared[start : start + len(rows)]), _bits(own[rows]))
                start += len(rows)
                for r in rows:
                    _, penalised, banned, following = g.shared.allowed_after(r, g.new[r], vocab)
                    flags = [("penalty", penalised), ("ban", banned), ("follow", following)]
                    used.update(name for name, f in flags if any(f))
                sampler = g.sampler
                g.accept(draw(own, sampler.generators, sampler.temperature, sampler.top_p).argmax(dim=-1))
    assert used["penalty"] and used["ban"] and used["follow"], used
    assert all(g.done for g in groups)


def _ask(batcher: Batcher, name: str, prompts: list[str], options: dict, results: dict) -> None:
    try:
        results[name] = batcher.submit(GenerateRequest(prompts, options))
    except Exception as exc:
        results[name] = exc


def test_constrained_requests_batched_get_what_they_get_alone(toy_recommender, tiny_gpt2: Path, monkeypatch) -> None:
    """Requests with copy bias, word constraint or sentence grammar, decoded together
    through the shared step (some joining a running decode), get what each gets alone."""
    alone = _writer(tiny_gpt2)
    requests = _requests(toy_recommender, alone)
    expected = {name: alone.generate_now(p, **o) for name, (p, o) in requests.items()}
    shared_steps = Counter[str]()
    real = batching._shared_scores

    def spy(entries, logits):
        shared_steps["steps"] += 1
        shared_steps["most"] = max(shared_steps["most"], len(entries))
        return real(entries, logits)

    monkeypatch.setattr(batching, "_shared_scores", spy)
    writer = _writer(tiny_gpt2)
    batcher = Batcher(writer, window_s=0.0)
    started = threading.Event()

    def streamed(prompt: int, text: str) -> None:
        started.set()
        time.sleep(0.01)  # keep the first decode running while the others arrive

    (first_name, (first_prompts, first_options)), *rest = requests.items()
    results: dict[str, object] = {}
    first = threading.Thread(
        target=lambda: results.__setitem__(
            first_name, batcher.submit(GenerateRequest(first_prompts, first_options, on_text=streamed))
        )
    )
    first.start()
    assert started.wait(60)
    threads = [threading.Thread(target=_ask, args=(batcher, n, p, o, results)) for n, (p, o) in rest]
    for t in threads:  # they join the running decode
        t.start()
    for t in [first, *threads]:
        t.join(timeout=120)
    assert {n: r for n, r in results.items() if r != expected[n]} == {}
    assert shared_steps["most"] >= 2  # the shared step served several requests at once
    assert batcher.batches >= 2  # and some joined a running decode


def test_a_constraint_failing_in_the_shared_step_fails_its_request_alone(
    toy_recommender, tiny_gpt2: Path, monkeypatch
) -> None:
    alone = _writer(tiny_gpt2)
    requests = _requests(toy_recommender, alone)
    good_prompts, good_options = requests[f"{USERS[1]}-words"]
    good = alone.generate_now(good_prompts, **good_options)
    writer = _writer(tiny_gpt2)
    real_prepare = writer.prepare

    def prepare(prompts, **options):
        rows = real_prepare(prompts, **options)
        if options.get("seed") == 13:
            constraint = rows.processors[-2]
            calls = Counter[str]()

            def allowed_ids(r, new):
                calls["n"] += 1
                if calls["n"] > 5:
                    raise RuntimeError("this constraint breaks mid-decode")
                return type(constraint).allowed_ids(constraint, r, new)

            constraint.allowed_ids = allowed_ids  # the instance only: still a shared request
        return rows

    monkeypatch.setattr(writer, "prepare", prepare)
    batcher = Batcher(writer, window_s=0.5)
    bad_prompts, bad_options = requests[f"{USERS[0]}-words"]
    results: dict[str, object] = {}
    threads = [
        threading.Thread(target=_ask, args=(batcher, "good", good_prompts, good_options, results)),
        threading.Thread(target=_ask, args=(batcher, "bad", bad_prompts, {**bad_options, "seed": 13}, results)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert isinstance(results["bad"], RuntimeError) and "mid-decode" in str(results["bad"])
    assert results["good"] == good
    assert batcher.peak_requests == 2


def test_non_finite_logits_send_each_request_through_its_own_processors(
    toy_recommender, tiny_gpt2: Path, monkeypatch
) -> None:
    """A NaN or inf logit would reach the masked tokens in a request's own processors:
    the shared step leaves such a step to them."""
    writer = _writer(tiny_gpt2)
    prompts, options = _requests(toy_recommender, writer)[f"{USERS[0]}-words"]
    group = _Group.start(writer, GenerateRequest(prompts, options))
    logits = torch.zeros((group.size, int(writer.model.config.vocab_size)))
    logits[0, 0] = float("inf")
    calls = Counter[str]()
    real = batching._shared_scores
    monkeypatch.setattr(batching, "_shared_scores", lambda *a: calls.update(["shared"]) or real(*a))

    class Batch:
        feed = torch.zeros(group.size, dtype=torch.long)

    owners = [(group, r) for r in range(group.size)]
    Batcher._advance([group], owners, logits, Batch())
    assert not calls
    Batcher._advance([group], owners, torch.zeros_like(logits), Batch())
    assert calls["shared"] == 1
    assert group.steps == 2


@pytest.mark.parametrize("prompts", [["<|item|> Bread <|blurb|> A loaf", "<|item|> Quiet Sea <|blurb|> Because you"]])
def test_prefill_keeps_the_full_forward_passs_cache(tiny_gpt2: Path, prompts: list[str]) -> None:
    writer = _writer(tiny_gpt2)
    batch = writer.tokenizer(prompts, return_tensors="pt", padding=True)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert not bool(mask.all())  # left padding really happens
    full = growing_cache()
    with torch.inference_mode():
        writer.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), cache=full, use_cache=True)
        early = prefill(writer.model, ids, mask)
    assert len(early.layers) == len(full.layers) == writer.model.config.n_layer
    for a, b in zip(early.layers, full.layers, strict=True):
        assert torch.equal(_bits(a.keys), _bits(b.keys)) and torch.equal(_bits(a.values), _bits(b.values))
    with torch.inference_mode():  # and it goes on as a plain growing cache
        step = {"input_ids": ids[:, -1:], "attention_mask": torch.cat([mask, mask[:, -1:]], 1), "use_cache": True}
        after_full = writer.model(**step, cache=full).logits
        after_early = writer.model(**step, cache=early).logits
    assert torch.equal(after_full, after_early)


def test_draw_tokens_are_the_tokens_draw_leaves_to_greedy() -> None:
    """``draw_tokens`` (the batcher's) against ``draw(...).argmax`` (what generate takes
    after ``_RowSampler``): narrow and wide nuclei, a row with one allowed token and a row
    with none."""
    from recbot.generation.writer import draw_tokens

    scores = torch.randn((6, 300), generator=torch.Generator().manual_seed(1)) * 4
    scores[1] = 0.0  # flat: the nucleus reaches past the top k
    scores[2, 1:] = float("-inf")  # one allowed token
    scores[3] = float("-inf")  # none: the row is left to greedy as it is

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(10 + r) for r in range(6)]

    for top_p in (0.9, 1.0):
        expected = draw(scores, generators(), 0.7, top_p).argmax(dim=-1)
        assert torch.equal(draw_tokens(scores, generators(), 0.7, top_p), expected)
