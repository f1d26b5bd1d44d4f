"""Blurb requests from many sessions decoded together (recbot.generation.batching): each
request gets the text it gets alone (float32), in window and continuous mode, whatever
joins or leaves the batch, and one request's failure or cancellation is its own."""

import contextlib
import threading
import time
from pathlib import Path

import pytest

from recbot import Settings
from recbot.generation.batching import Batcher, GenerateRequest
from recbot.generation.writer import GPT2Writer

PROMPT = "<|item|> Star Voyage <|blurb|> Because you liked Robot Stars, Star Voyage"
PROMPTS = [
    PROMPT,
    "<|item|> Bread <|blurb|> A loaf",
    "<|item|> Quiet Sea <|blurb|> Because you read Storm, Quiet Sea is",
]


def _writer(tiny_gpt2: Path, **settings: object) -> GPT2Writer:
    return GPT2Writer.load(str(tiny_gpt2), Settings.create(**{"max_new_tokens": 12, "num_candidates": 2, **settings}))


def _ask(batcher: Batcher, name: str, prompts: list[str], results: dict[str, object], **options: object) -> None:
    try:
        results[name] = batcher.submit(GenerateRequest(prompts, {"num_return_sequences": 2, **options}))
    except Exception as exc:
        results[name] = exc


def _run(*threads: threading.Thread) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()


@pytest.mark.parametrize("mode", ["continuous", "window"])
def test_concurrent_requests_get_what_they_get_alone(tiny_gpt2: Path, mode: str) -> None:
    alone = _writer(tiny_gpt2)
    expected = {f"r{i}": alone.generate_now(PROMPTS[i:], num_return_sequences=2) for i in range(3)}
    assert len({len(alone.tokenizer(p).input_ids) for p in PROMPTS}) == 3  # rows of different lengths
    shared = _writer(tiny_gpt2)
    batcher = Batcher(shared, window_s=0.5, mode=mode)  # long enough for all three to arrive
    results: dict[str, object] = {}
    _run(*(threading.Thread(target=_ask, args=(batcher, f"r{i}", PROMPTS[i:], results)) for i in range(3)))
    assert results == expected
    assert batcher.peak_requests == 3  # they really were decoded together


def test_a_request_joining_a_running_decode_gets_what_it_gets_alone(tiny_gpt2: Path) -> None:
    """Continuous batching: the second request joins between steps of the first one's
    decode (its stream has started), left-padded to the running columns."""
    alone = _writer(tiny_gpt2, max_new_tokens=40)
    first_alone = alone.generate_now([PROMPT], num_return_sequences=2)
    second_alone = alone.generate_now(PROMPTS[1:], num_return_sequences=2)
    shared = _writer(tiny_gpt2, max_new_tokens=40)
    batcher = Batcher(shared, window_s=0.0)
    started = threading.Event()
    results: dict[str, object] = {}

    def streamed(prompt: int, text: str) -> None:
        started.set()
        time.sleep(0.02)  # keep the first decode running while the second arrives

    first = GenerateRequest([PROMPT], {"num_return_sequences": 2}, on_text=streamed)
    first_thread = threading.Thread(target=lambda: results.__setitem__("first", batcher.submit(first)))
    first_thread.start()
    assert started.wait(60)
    _ask(batcher, "second", PROMPTS[1:], results)
    first_thread.join(timeout=120)
    assert results == {"first": first_alone, "second": second_alone}
    assert batcher.peak_requests == 2
    assert batcher.batches == 2  # two joins: the second came in while the first ran


@pytest.mark.parametrize("mode", ["continuous", "window"])
def test_a_failing_request_in_a_batch_leaves_the_others_correct(tiny_gpt2: Path, monkeypatch, mode: str) -> None:
    writer = _writer(tiny_gpt2)
    good = writer.generate_now(PROMPTS[:2], num_return_sequences=2)
    batcher = Batcher(writer, window_s=0.5, mode=mode)
    real_prepare = writer.prepare

    class Breaks:
        """A logits processor that fails on the third step, mid-decode."""

        calls = 0

        def __call__(self, input_ids, scores):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("this request breaks mid-decode")
            return scores

    def prepare(prompts, **options):
        rows = real_prepare(prompts, **options)
        if any("POISON" in p for p in prompts):
            rows.processors.insert(0, Breaks())
        return rows

    monkeypatch.setattr(writer, "prepare", prepare)
    results: dict[str, object] = {}
    _run(
        threading.Thread(target=_ask, args=(batcher, "good", PROMPTS[:2], results)),
        threading.Thread(target=_ask, args=(batcher, "bad", ["POISON " + PROMPT], results)),
    )
    assert isinstance(results["bad"], RuntimeError) and "mid-decode" in str(results["bad"])
    assert results["good"] == good
    _run(threading.Thread(target=_ask, args=(batcher, "after", PROMPTS[:2], results)))
    assert results["after"] == good  # the batcher goes on serving


def test_a_cancelled_request_leaves_and_the_others_finish(tiny_gpt2: Path) -> None:
    writer = _writer(tiny_gpt2, max_new_tokens=40)
    expected = writer.generate_now(PROMPTS[1:], num_return_sequences=2)
    batcher = Batcher(writer, window_s=0.3)
    doomed = GenerateRequest([PROMPT], {"num_return_sequences": 2})
    kept = GenerateRequest(PROMPTS[1:], {"num_return_sequences": 2})
    results: dict[str, object] = {}
    threading.Thread(target=lambda: _submit_quietly(batcher, doomed), daemon=True).start()
    worker = threading.Thread(target=lambda: results.__setitem__("kept", batcher.submit(kept)))
    worker.start()
    time.sleep(0.05)
    doomed.future.cancel()
    worker.join(timeout=120)
    assert results["kept"] == expected
    assert doomed.future.cancelled()


def _submit_quietly(batcher: Batcher, request: GenerateRequest) -> None:
    from concurrent.futures import CancelledError

    with contextlib.suppress(CancelledError):
        batcher.submit(request)


def test_beam_search_reorders_the_growing_cache_like_a_dynamic_one(tiny_gpt2: Path, monkeypatch) -> None:
    """Beam search (temperature 0) reorders the cache's rows every step; the in-place
    cache (decode.GrowingLayer) must give what transformers' own DynamicCache gives."""
    from transformers import DynamicCache

    from recbot.generation import writer as writer_module

    writer = _writer(tiny_gpt2, temperature=0.0, max_new_tokens=10)
    growing = writer.generate_now(PROMPTS, num_return_sequences=2, num_beams=3)
    monkeypatch.setattr(writer_module, "growing_cache", DynamicCache)
    assert writer.generate_now(PROMPTS, num_return_sequences=2, num_beams=3) == growing
    assert len({tuple(c) for c in growing}) == 3


def test_one_token_prompts_decode_beside_long_ones(tiny_gpt2: Path) -> None:
    """A prompt of one token has nothing cached before its first step; it joins a batch
    (and starts one) all the same."""
    writer = _writer(tiny_gpt2)
    one = writer.tokenizer.decode([writer.tokenizer("x").input_ids[0]])
    expected = {"short": writer.generate_now([one], num_return_sequences=2), "long": writer.generate_now(PROMPTS)}
    batcher = Batcher(writer, window_s=0.5)
    results: dict[str, object] = {}
    _run(
        threading.Thread(target=_ask, args=(batcher, "short", [one], results)),
        threading.Thread(target=_ask, args=(batcher, "long", PROMPTS, results), kwargs={"num_return_sequences": 1}),
    )
    assert results == expected


def test_a_failed_shared_step_fails_its_requests_and_the_batcher_serves_on(tiny_gpt2: Path, monkeypatch) -> None:
    from recbot.generation.decode import RunningBatch

    writer = _writer(tiny_gpt2)
    expected = writer.generate_now(PROMPTS, num_return_sequences=2)
    batcher = Batcher(writer, window_s=0.5)
    real_step = RunningBatch.step
    calls = {"n": 0}

    def step(self, model):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("out of memory, say")
        return real_step(self, model)

    monkeypatch.setattr(RunningBatch, "step", step)
    results: dict[str, object] = {}
    _run(*(threading.Thread(target=_ask, args=(batcher, f"r{i}", PROMPTS, results)) for i in range(2)))
    assert all(isinstance(results[f"r{i}"], RuntimeError) for i in range(2))  # both were in that step
    _run(threading.Thread(target=_ask, args=(batcher, "after", PROMPTS, results)))
    assert results["after"] == expected
