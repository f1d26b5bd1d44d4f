from pathlib import Path

import pytest

from recbot import Settings
from recbot.errors import ModelNotFoundError
from recbot.generation.guard import TitleIndex, check_blurb
from recbot.generation.prompts import build_prompt
from recbot.generation.writer import GPT2Writer, LazyWriter, resolve_generator


@pytest.fixture
def writer(tiny_gpt2: Path) -> GPT2Writer:
    return GPT2Writer.load(str(tiny_gpt2), Settings.create(max_new_tokens=12, num_candidates=2))


def _recs_and_context(rec, user="spacefan", k=4):
    recs = rec.recommend(user, k=k, blurbs=False)
    catalog = rec.storage.items()
    history = rec.history(user)
    return list(recs), history, catalog


def test_every_final_blurb_passes_the_guard_in_one_batched_call(toy_recommender, writer, monkeypatch) -> None:
    calls = []
    original = writer.model.generate

    def spy(**kwargs):
        calls.append(kwargs["input_ids"].shape[0] * kwargs["num_return_sequences"])  # sampled: one row a candidate
        return original(**kwargs)

    monkeypatch.setattr(writer.model, "generate", spy)
    recs, history, catalog = _recs_and_context(toy_recommender)
    out = writer.write(history, recs, catalog)
    assert calls[0] == len(recs) * 2  # all k items, all candidates, one call
    assert len(calls) <= 2  # at most one retry round
    index = TitleIndex(catalog.values())
    allowed = {i.id for i, _ in history}
    for before, after in zip(recs, out, strict=True):
        assert after.item == before.item and after.blurb
        assert check_blurb(after.blurb, after.item, index, allowed=allowed, min_words=1).ok
        assert after.blurb_source in ("generated", "template")
        assert (after.blurb_note is None) == (after.blurb_source == "generated")


def test_same_seed_same_blurbs(toy_recommender, writer) -> None:
    recs, history, catalog = _recs_and_context(toy_recommender)
    assert writer.write(history, recs, catalog) == writer.write(history, recs, catalog)


def test_fp32_left_padded_batch_matches_one_at_a_time_greedy(toy_recommender, tiny_gpt2) -> None:
    greedy = GPT2Writer.load(str(tiny_gpt2), Settings.create(max_new_tokens=10, temperature=0.0))
    recs, history, catalog = _recs_and_context(toy_recommender)
    prompts = [greedy.prompt_for(history, r, catalog).text for r in recs]
    assert len({len(greedy.tokenizer(p).input_ids) for p in prompts}) > 1  # padding really happens
    batched = [c[0] for c in greedy.generate(prompts)]
    single = [greedy.generate([p])[0][0] for p in prompts]
    assert batched == single


def test_fp32_sampled_blurbs_do_not_depend_on_what_they_are_batched_with(toy_recommender, writer) -> None:
    """Seeded sampling draws per row (recbot.generation.writer._RowSampler): a prompt's
    candidates are the same alone, in a batch, and in another order."""
    recs, history, catalog = _recs_and_context(toy_recommender)
    jobs = [writer.job(history, r, catalog) for r in recs]
    prompts = [j.prompt.text for j in jobs]
    assert len({len(writer.tokenizer(p).input_ids) for p in prompts}) > 1  # padding really happens

    def run(idx: list[int]) -> list[list[str]]:
        picked = [jobs[i] for i in idx]
        return writer.generate(
            [j.prompt.text for j in picked],
            num_return_sequences=2,
            sources=[j.source for j in picked],
            supports=[j.support for j in picked],
            leads=[j.prompt.opening for j in picked],
        )

    batched = run(list(range(len(jobs))))
    assert [run([i])[0] for i in range(len(jobs))] == batched
    assert run(list(reversed(range(len(jobs))))) == list(reversed(batched))
    assert any(len(set(c)) > 1 for c in batched)  # the two candidates of a prompt differ: it does sample


def test_stream_jobs_streams_first_candidates_then_the_same_blurbs_as_write(toy_recommender, writer) -> None:
    recs, history, catalog = _recs_and_context(toy_recommender, k=3)
    jobs = writer.jobs(history, recs, catalog)
    updates = list(writer.stream_jobs(jobs, catalog))
    assert [u.text for u in updates[:3]] == [j.prompt.opening for j in jobs]  # every card starts at once
    assert any(u.done is None and len(u.text) > len(jobs[u.index].prompt.opening) for u in updates)  # text grows
    finished = [u.done for u in updates if u.done is not None]
    assert finished == writer.write(history, recs, catalog)  # the same choice, guard and template as write


def test_a_failing_generation_is_raised_not_waited_for(toy_recommender, writer, monkeypatch) -> None:
    import threading

    recs, history, catalog = _recs_and_context(toy_recommender, k=1)
    jobs = writer.jobs(history, recs, catalog)

    def boom(**kwargs):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(writer.model, "generate", boom)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            list(writer.stream_jobs(jobs, catalog))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)  # a regression would block forever: bound it
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive(), "the reader still waits for text from a dead generation thread"
    assert len(outcome) == 1 and "out of memory" in str(outcome[0])
    assert not writer._lock.locked()  # the next blurb can still be written


def test_recommender_fills_blurbs_only_when_asked(toy_recommender, tiny_gpt2) -> None:
    toy_recommender.writer = LazyWriter(toy_recommender.settings.replace(generator=str(tiny_gpt2), max_new_tokens=8))
    plain = toy_recommender.recommend("spacefan", k=2, blurbs=False)
    assert all(r.blurb is None for r in plain) and toy_recommender.writer._writer is None  # nothing loaded
    with_blurbs = toy_recommender.recommend("spacefan", k=2)
    assert all(r.blurb and r.blurb.startswith("Because you liked") for r in with_blurbs)
    assert all(r.to_dict()["grounded"] in (True, False) for r in with_blurbs)


def test_stream_yields_the_list_then_each_blurb_then_its_finished_recommendation(toy_recommender, tiny_gpt2) -> None:
    from recbot import Recommendations
    from recbot.types import BlurbUpdate

    toy_recommender.writer = LazyWriter(toy_recommender.settings.replace(generator=str(tiny_gpt2), max_new_tokens=8))
    events = list(toy_recommender.stream("spacefan", k=2))
    recs = events[0]
    assert isinstance(recs, Recommendations) and all(r.blurb is None for r in recs)
    updates = events[1:]
    assert updates and all(isinstance(u, BlurbUpdate) for u in updates)
    finished = [u.done for u in updates if u.done is not None]
    assert [d.item.id for d in finished] == [r.item.id for r in recs]  # one finished recommendation each, in order
    assert all(d.blurb and d.blurb_source in ("generated", "template") for d in finished)
    assert [u.index for u in updates[:2]] == [0, 1]  # every card gets its opening at once, then text as written
    # the same list as recommend; no blurbs asked for: the list alone
    assert [r.item.id for r in toy_recommender.recommend("spacefan", k=2, blurbs=False)] == [r.item.id for r in recs]
    assert len(list(toy_recommender.stream("spacefan", k=2, blurbs=False))) == 1


def test_stream_without_a_generator_gives_marked_templates(toy_recommender, tmp_path: Path) -> None:
    toy_recommender.writer = LazyWriter(toy_recommender.settings.replace(generator=str(tmp_path / "none")))
    events = list(toy_recommender.stream("spacefan", k=3))
    finished = [e.done for e in events[1:] if e.done is not None]
    assert len(finished) == 3 and all(d.blurb_source == "template" and d.blurb for d in finished)


def test_resolution_order(tmp_path: Path, tiny_gpt2: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache" / "hub"))
    settings = Settings.create(data_dir=tmp_path / "d")
    with pytest.raises(ModelNotFoundError, match="recbot train-generator"):
        resolve_generator(settings)
    trained = tmp_path / "d" / "generator"
    trained.mkdir(parents=True)
    (trained / "config.json").write_text("{}")
    assert resolve_generator(settings) == str(trained)
    assert resolve_generator(settings.replace(generator=str(tiny_gpt2))) == str(tiny_gpt2)


def test_prompt_for_uses_the_top_reason(toy_recommender, writer) -> None:
    recs, history, catalog = _recs_and_context(toy_recommender, k=1)
    prompt = writer.prompt_for(history, recs[0], catalog)
    because = catalog[recs[0].because[0].item_id]
    assert prompt == build_prompt(recs[0].item, history, because)


def test_concurrent_requests_share_one_generate_and_get_their_own_blurbs(toy_recommender, tiny_gpt2) -> None:
    """Two users' lists written at the same time through the batcher: one batched generate,
    and each list gets exactly the blurbs it gets alone (float32)."""
    import threading

    from recbot.generation.batching import Batcher

    settings = Settings.create(max_new_tokens=12, num_candidates=2)
    alone = GPT2Writer.load(str(tiny_gpt2), settings)
    shared = GPT2Writer.load(str(tiny_gpt2), settings)
    shared.batcher = Batcher(shared, window_s=0.5)  # long enough for both to arrive
    lists = {u: _recs_and_context(toy_recommender, user=u, k=3) for u in ("spacefan", "baker")}
    expected = {u: alone.write(h, r, c) for u, (r, h, c) in lists.items()}
    got: dict[str, object] = {}

    def write(user: str) -> None:
        recs, history, catalog = lists[user]
        got[user] = shared.write(history, recs, catalog)

    threads = [threading.Thread(target=write, args=(u,)) for u in lists]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert got == expected
    assert shared.batcher.batched_requests > shared.batcher.batches  # some generate call served both


def test_a_full_queue_answers_busy_with_marked_templates_at_once(toy_recommender, tiny_gpt2) -> None:
    import threading
    import time

    from recbot.errors import BusyError
    from recbot.generation.batching import Batcher, GenerateRequest

    writer = GPT2Writer.load(str(tiny_gpt2), Settings.create(max_new_tokens=8))
    batcher = Batcher(writer, max_queue_rows=4, window_s=3.0)  # the first request waits 3 s for company
    first = threading.Thread(target=batcher.submit, args=(GenerateRequest(["x"] * 4),))
    first.start()
    while not batcher._waiting:
        time.sleep(0.01)
    started = time.perf_counter()
    with pytest.raises(BusyError, match="busy"):
        batcher.submit(GenerateRequest(["y"]))
    assert time.perf_counter() - started < 1.0  # at once, not after the queue drains
    first.join(timeout=60)

    lazy = LazyWriter(toy_recommender.settings.replace(generator=str(tiny_gpt2), max_new_tokens=8))
    lazy.get().batcher = batcher  # the served writer, with its queue full again
    hold = threading.Thread(target=batcher.submit, args=(GenerateRequest(["x"] * 4),))
    hold.start()
    while not batcher._waiting:
        time.sleep(0.01)
    recs, history, catalog = _recs_and_context(toy_recommender, k=2)
    out = lazy.write(history, recs, catalog)
    assert [r.item.id for r in out] == [r.item.id for r in recs]  # the list is never held back
    assert all(r.blurb_source == "template" and r.blurb_note.startswith("templated: busy") for r in out)
    streamed = [u.done for u in lazy.stream(history, recs, catalog) if u.done]
    assert all(d.blurb_note.startswith("templated: busy") for d in streamed) and len(streamed) == 2
    hold.join(timeout=60)


def test_new_text_repetition_matches_a_plain_reference() -> None:
    """The vectorised processor against the obvious loops: a repetition penalty once per
    generated token, and no n-gram of the generated text twice."""
    import torch

    from recbot.generation.writer import _NewTextRepetition

    def reference(ids: torch.Tensor, scores: torch.Tensor, prompt: int, n: int, penalty: float) -> torch.Tensor:
        out = scores.clone()
        for r, row in enumerate(ids[:, prompt:].tolist()):
            for t in set(row):
                v = out[r, t]
                out[r, t] = v / penalty if v > 0 else v * penalty
            if n > 0 and len(row) >= n:
                last = row[len(row) - n + 1 :] if n > 1 else []
                for i in range(len(row) - n + 1):
                    if row[i : i + n - 1] == last:
                        out[r, row[i + n - 1]] = float("-inf")
        return out

    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        length = int(torch.randint(0, 12, (1,), generator=gen))
        ids = torch.randint(0, 7, (4, 3 + length), generator=gen)
        scores = torch.randn(4, 7, generator=gen)
        for n in (0, 1, 2, 3):
            assert torch.equal(_NewTextRepetition(3, n, 1.2)(ids, scores), reference(ids, scores, 3, n, 1.2))
