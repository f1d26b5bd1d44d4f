"""Dynamic batching of blurb generation across requests.

Every ``GPT2Writer.generate`` call — from any chat session, tool call or API request — is
a *request*: a few prompts, each sampled ``n`` times. A ``Batcher`` owns the model; its
worker thread decodes the waiting requests together, in one of two ways:

- ``continuous`` (the default when sampling): requests join the running decode between
  two steps and leave it as soon as their rows end, so a request never waits for a batch
  it was not part of, and rows that ended stop costing compute. Each request keeps its
  own logits processors and token ids; the model's forward pass is shared
  (``decode.RunningBatch``), and so is the work of the processors ``write`` uses (new-text
  repetition, copy bias, word or sentence constraint: ``_Shared``), done once a step for
  the running rows of all requests, on each row's few allowed tokens only, with the
  values each request's own processors give (bit for bit, float32). A request with other
  processors runs its own.
- ``window``: the first waiting request waits up to ``window_s`` for company (or until
  ``max_rows`` rows are waiting), then all are decoded in one ``generate`` call, which
  runs to its end before the next batch starts. Beam search (``temperature == 0``) always
  goes this way.

Because sampling is seeded per row (``writer._RowSampler``) and prompts are left-padded
with an attention mask, a request gets the same text (float32) whatever it was batched
with, in either mode.

- Streaming: a request may pass ``on_text(prompt_index, text_so_far)``; the batch's
  streamer routes each row's new tokens to its own request only (candidate 0 of each prompt).
- Back-pressure: at most ``max_queue_rows`` rows wait; a request that would exceed it gets
  ``BusyError`` at once, which each surface turns into its "busy, try again" answer.
- Failures: if a merged batch fails, each of its requests is retried alone, so one bad
  request fails on its own and the others get their text.

- Cancelling: a request whose future is cancelled leaves the running batch at the next step.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recbot.errors import BusyError

if TYPE_CHECKING:
    from recbot.generation.writer import GPT2Writer

__all__ = ["Batcher", "GenerateRequest"]

logger = logging.getLogger(__name__)

OnText = Callable[[int, str], None]


PER_PROMPT = ("sources", "supports", "leads", "options")  # generate_now's arguments with one value a prompt


@dataclass
class GenerateRequest:
    """One caller's ``generate``: its prompts, ``generate_now``'s other keyword arguments
    (``on_text`` apart), and the future it waits on."""

    prompts: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    on_text: OnText | None = None
    future: Future[list[list[str]]] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)
    queued_step: int = -1  # the continuous batcher's step when it first saw this request

    @property
    def rows(self) -> int:
        return len(self.prompts) * int(self.options.get("num_return_sequences", 1))

    def key(self) -> tuple[Any, ...]:
        """Requests with the same key can share one generate call: the same scalar arguments,
        and the same per-prompt arguments given."""
        return tuple(
            sorted((name, value is None if name in PER_PROMPT else value) for name, value in self.options.items())
        )


def _merge(requests: Sequence[GenerateRequest]) -> dict[str, Any]:
    """One set of keyword arguments for the requests (same key): per-prompt lists joined."""
    merged = dict(requests[0].options)
    for name in PER_PROMPT:
        if merged.get(name) is not None:
            merged[name] = [x for r in requests for x in r.options[name]]
    return merged


class Batcher:
    """Owns one ``GPT2Writer``'s model and decodes concurrent requests together.

    Args:
        writer: the writer whose ``generate_now`` runs the batches.
        window_s: how long the first waiting request waits for company.
        max_rows: rows (prompts x candidates) in one generate call at most.
        max_queue_rows: rows allowed to wait; more is ``BusyError``.
    """

    def __init__(
        self,
        writer: GPT2Writer,
        *,
        window_s: float = 0.03,
        max_rows: int = 60,
        max_queue_rows: int = 1200,
        mode: str = "continuous",
    ) -> None:
        if mode not in ("continuous", "window"):
            raise ValueError(f"mode must be 'continuous' or 'window', got {mode!r}")
        self.writer = writer
        self.window_s = window_s
        self.max_rows = max_rows
        self.max_queue_rows = max_queue_rows
        # beam search reorders whole beams inside generate: it cannot share steps with others
        self.mode = mode if writer.settings.temperature > 0 else "window"
        self._waiting: list[GenerateRequest] = []
        self._cond = threading.Condition()
        self._closed = False
        self.batches = 0  # generate calls (window) or prefills (continuous) made, for tests and benchmarks
        self.batched_requests = 0
        self.peak_requests = 0  # the most requests decoded in one step
        run = self._run_continuous if self.mode == "continuous" else self._run
        self._thread = threading.Thread(target=run, name="recbot-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: GenerateRequest) -> list[list[str]]:
        """Queue ``request`` and wait for its candidates.

        Raises:
            BusyError: the queue is full (the caller answers "busy, try again").
        """
        with self._cond:
            if self._closed:
                raise BusyError("the blurb generator is shutting down")
            queued = sum(r.rows for r in self._waiting)
            if self._waiting and queued + request.rows > self.max_queue_rows:
                raise BusyError(f"the blurb generator is busy ({queued} rows waiting); try again")
            self._waiting.append(request)
            self._cond.notify()
        return request.future.result()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _take(self) -> list[GenerateRequest] | None:
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed and not self._waiting:
                return None
            self._wait_for_company()
            key = self._waiting[0].key()
            batch: list[GenerateRequest] = []
            rows = 0
            for r in list(self._waiting):
                if r.key() == key and (not batch or rows + r.rows <= self.max_rows):
                    batch.append(r)
                    rows += r.rows
                    self._waiting.remove(r)
            return batch

    def _wait_for_company(self) -> None:
        """(Holding the lock) let the first waiting request wait up to ``window_s`` for
        others, or until ``max_rows`` rows wait."""
        deadline = self._waiting[0].queued_at + self.window_s
        while sum(r.rows for r in self._waiting) < self.max_rows and not self._closed:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            self._cond.wait(left)

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._decode(batch)
            except BaseException as exc:  # never let the worker die: fail what it was doing
                logger.exception("blurb batch failed")
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)

    def _decode(self, batch: list[GenerateRequest]) -> None:
        self.batches += 1
        self.batched_requests += len(batch)
        self.peak_requests = max(self.peak_requests, len(batch))
        offsets, start = [], 0
        for r in batch:
            offsets.append(start)
            start += len(r.prompts)
        streams = [(r, off) for r, off in zip(batch, offsets, strict=True) if r.on_text is not None]

        def on_text(prompt: int, text: str) -> None:
            for r, off in streams:
                if off <= prompt < off + len(r.prompts):
                    try:
                        r.on_text(prompt - off, text)  # type: ignore[misc]
                    except Exception:  # a reader that went away must not stop the batch
                        logger.debug("a stream callback failed", exc_info=True)
                    return

        prompts = [p for r in batch for p in r.prompts]
        try:
            out = self.writer.generate_now(prompts, on_text=on_text if streams else None, **_merge(batch))
        except Exception:
            if len(batch) == 1:
                raise
            logger.warning("a batch of %d requests failed; retrying each alone", len(batch))
            for r in batch:
                try:
                    r.future.set_result(self.writer.generate_now(r.prompts, on_text=r.on_text, **_merge([r])))
                except Exception as exc:
                    r.future.set_exception(exc)
            return
        for r, off in zip(batch, offsets, strict=True):
            r.future.set_result(out[off : off + len(r.prompts)])

    # -- continuous batching --
    JOIN_AFTER_STEPS = 4  # a request waits at most this many steps to join a running batch ...
    JOIN_SHARE = 4  # ... unless a 1/JOIN_SHARE of the running rows is waiting (joining copies the cache)

    def _admit(self, running_rows: int, step: int) -> list[GenerateRequest] | None:
        """The waiting requests that fit beside ``running_rows`` (first come, first in);
        with nothing running, wait for one and then up to ``window_s`` for company. With
        rows running, requests join in groups: when enough rows wait, or the oldest has
        waited ``JOIN_AFTER_STEPS`` steps. None: closed, and nothing left to do."""
        with self._cond:
            for r in self._waiting:
                if r.queued_step < 0:
                    r.queued_step = step
            if running_rows == 0:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed and not self._waiting:
                    return None
                self._wait_for_company()
            elif not self._waiting or (
                sum(r.rows for r in self._waiting) * self.JOIN_SHARE < running_rows
                and step - self._waiting[0].queued_step < self.JOIN_AFTER_STEPS
            ):
                return []
            taken: list[GenerateRequest] = []
            rows = running_rows
            while self._waiting:
                r = self._waiting[0]
                if rows and rows + r.rows > self.max_rows:
                    break  # it waits for rows to end; nothing overtakes it
                self._waiting.pop(0)
                if r.future.cancelled():
                    continue
                taken.append(r)
                rows += r.rows
            return taken

    def _run_continuous(self) -> None:
        import torch

        from recbot.generation.decode import RunningBatch

        writer = self.writer
        batch = RunningBatch(writer.model)
        owners: list[tuple[_Group, int]] = []  # each batch row: its request and its row there
        groups: list[_Group] = []
        step = 0

        def live() -> list[int]:
            return [i for i, (g, row) in enumerate(owners) if not g.done and bool(g.live[row])]

        while (admitted := self._admit(len(live()) if groups else 0, step)) is not None:
            joining, joined = [], []
            for request in admitted:
                try:
                    group = _Group.start(writer, request)
                    with writer._lock, torch.inference_mode():
                        prefix = writer.prefix_cache(request.prompts, 1)  # the batch gives it to each candidate
                except BaseException as exc:  # this request fails alone
                    logger.exception("a blurb request could not start")
                    request.future.set_exception(exc)
                    continue
                rows = group.rows
                joining.append((prefix, rows.attention_mask[:, :-1], rows.input_ids[:, -1], rows.per_prompt))
                joined.append(group)
            if joining:  # the rows that ended leave as the new ones join
                groups += joined
                try:
                    order = batch.add(joining, torch.tensor(live(), dtype=torch.long))
                except BaseException as exc:  # the batch is in no state to go on: its requests fail
                    batch, owners, groups = _fail_all(groups, exc, writer.model)
                    continue
                owners = [owners[i] for i in order] + [(g, row) for g in joined for row in range(g.size)]
                self.batches += 1
                self.batched_requests += len(joined)
            if not groups:
                continue
            self.peak_requests = max(self.peak_requests, len(groups))
            try:
                with writer._lock, torch.inference_mode():
                    logits = batch.step(writer.model).float()
            except BaseException as exc:  # the shared step failed: every request in it fails
                batch, owners, groups = _fail_all(groups, exc, writer.model)
                continue
            step += 1
            try:
                self._advance(groups, owners, logits, batch)
            except BaseException as exc:  # the shared draw failed: every request in it fails
                batch, owners, groups = _fail_all(groups, exc, writer.model)
                continue
            groups = [g for g in groups if not g.done]
            kept = live()
            if len(kept) < len(owners):  # rows that ended leave: rows from the end move into their slots
                owners = [owners[i] for i in batch.keep(torch.tensor(kept, dtype=torch.long))]

    @staticmethod
    def _advance(groups: list[_Group], owners: list[tuple[_Group, int]], logits: Any, batch: Any) -> None:
        """Each request's processors on its rows of the step's ``logits``, one draw for all
        rows (each with its own generator: see ``writer._RowSampler``), each request takes
        its tokens, and the batch feeds them next.

        Requests whose processors the batch knows (``_Group.shared``) are scored together,
        on their allowed tokens only (``_shared_scores``: the same float32 scores, token for
        token, as their own processors give); the others run their own processors."""
        import torch

        from recbot.generation.writer import draw_tokens

        where: dict[int, tuple[list[int], list[int]]] = {}
        for i, (group, row) in enumerate(owners):
            entry = where.setdefault(id(group), ([], []))
            entry[0].append(i)
            entry[1].append(row)
        finite: bool | None = None
        shared: dict[tuple[Any, ...], list[tuple[_Group, list[int], list[int]]]] = {}  # by processor settings
        scored: list[tuple[_Group, Any, list[int], list[int]]] = []
        for group in groups:
            batch_rows, rows = where.get(id(group), ([], []))
            if group.shared is not None:
                if finite is None:  # a NaN or inf logit would reach the masked tokens: each its own way then
                    finite = bool(torch.isfinite(logits.sum()))
                if finite:
                    shared.setdefault(group.shared.key, []).append((group, batch_rows, rows))
                    continue
            try:
                with torch.inference_mode():
                    scored.append((group, group.scores(logits, batch_rows, rows), batch_rows, rows))
            except BaseException as exc:  # this request's processors failed: it fails alone
                logger.exception("a blurb request failed while decoding")
                group.fail(exc)
        taken: list[tuple[_Group, Any, list[int], list[int]]] = []  # a request, its drawn tokens, its rows
        for entries in shared.values():
            with torch.inference_mode():
                scores, spans = _shared_scores(entries, logits)
            if not spans:
                continue
            sampler = spans[0][0].sampler
            generators = [group.sampler.generators[r] for group, _, rows in spans for r in rows]
            tokens = draw_tokens(scores, generators, sampler.temperature, sampler.top_p)
            start = 0
            for group, batch_rows, rows in spans:  # rows that ended draw nothing: accept pads them
                drawn = torch.zeros(group.size, dtype=torch.long)
                drawn[rows] = tokens[start : start + len(rows)]
                start += len(rows)
                taken.append((group, drawn, batch_rows, rows))
        if scored:
            sampler = scored[0][0].sampler
            generators = [g for group, *_ in scored for g in group.sampler.generators]
            tokens = draw_tokens(torch.cat([s for _, s, *_ in scored]), generators, sampler.temperature, sampler.top_p)
            start = 0
            for group, _, batch_rows, rows in scored:
                taken.append((group, tokens[start : start + group.size], batch_rows, rows))
                start += group.size
        for group, drawn, batch_rows, rows in taken:
            mine = group.accept(drawn)
            batch.feed[batch_rows] = mine[rows]


@dataclass
class _Group:
    """One request's rows in a continuous batch: its token ids so far (as ``generate``
    would hold them for this request alone), its processors, which rows still run."""

    request: GenerateRequest
    writer: GPT2Writer
    rows: Any  # decode.PreparedRows
    ids: Any  # [rows, prompt + generated]
    live: Any  # [rows] bool
    streamer: Any
    before: Any  # the processors but the sampler
    sampler: Any  # writer._RowSampler
    shared: _Shared | None = None  # its processors, when the batch can run them for many requests at once
    new: list[list[int]] = field(default_factory=list)  # each row's generated tokens (kept with ``shared``)
    steps: int = 0
    done: bool = False

    @classmethod
    def start(cls, writer: GPT2Writer, request: GenerateRequest) -> _Group:
        import torch
        from transformers import LogitsProcessorList

        from recbot.generation.writer import _RowSampler, _RowStreamer

        rows = writer.prepare(request.prompts, **request.options)
        streamer = None
        if request.on_text is not None:
            streamer = _RowStreamer(writer.tokenizer, rows.per_prompt, _safe(request.on_text))
            streamer.put(rows.input_ids)  # the prompt, as generate hands it first
        live = torch.ones(rows.input_ids.shape[0], dtype=torch.bool)
        *before, sampler = rows.processors
        if not isinstance(sampler, _RowSampler):
            raise TypeError("continuous batching needs sampled rows (temperature > 0)")
        group = cls(request, writer, rows, rows.input_ids, live, streamer, LogitsProcessorList(before), sampler)
        group.shared = _Shared.of(before, rows.input_ids)
        group.new = [[] for _ in range(group.size)]
        return group

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])

    def scores(self, logits: Any, batch_rows: list[int], rows: list[int]) -> Any:
        """This request's scores for the next token, from the shared step's ``logits``:
        its processors applied, all but the sampler (rows that ended get zeros)."""
        scores = logits.new_zeros((self.size, logits.shape[1]))
        scores[rows] = logits[batch_rows]
        return self.before(self.ids, scores)

    def accept(self, drawn: Any) -> Any:
        """Take the drawn tokens (pad for rows that ended); finish the request when every
        row has ended or the token budget is spent. Returns the tokens taken."""
        import torch

        tokenizer = self.writer.tokenizer
        tokens = torch.where(self.live, drawn, tokenizer.pad_token_id)
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        if self.shared is not None:
            taken = tokens.tolist()
            for r in self.live.nonzero()[:, 0].tolist():
                self.shared.took(r, self.new[r], taken[r])
                self.new[r].append(taken[r])
        if self.streamer is not None:
            self.streamer.put(tokens)
        self.live &= tokens != tokenizer.eos_token_id
        self.steps += 1
        if self.request.future.cancelled():
            self.done = True
        elif not self.live.any() or self.steps >= self.writer.max_new_tokens:
            prompt = self.rows.input_ids.shape[1]
            texts = self.writer.texts(self.ids[:, prompt:], self.rows.per_prompt)
            with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
                self.request.future.set_result(texts)
            self.done = True
        return tokens

    def fail(self, exc: BaseException) -> None:
        if not self.request.future.done():
            self.request.future.set_exception(exc)
        self.done = True


@dataclass
class _Allowed:
    """The tokens a row may take next, once per text so far (a prompt's candidates often
    share theirs): as a tensor, each token's place in it, and the places of the tokens that
    get the copy bias."""

    tokens: Any  # LongTensor, sorted
    place: dict[int, int]  # token -> its index in ``tokens``
    biased: list[int]  # the places of the copy source's tokens


class _Shared:
    """A request's processors in the form the batch runs for all requests at once: the
    repetition control on new text, the copy bias and the sentence or word constraint
    (``writer._NewTextRepetition``, ``writer._CopyBias``, ``constrain.AllowedSentences`` /
    ``AllowedWords``, in that order, the first two optional), with each row's state kept
    as it grows: the tokens it generated (``_Group.new``), the (n-1)-grams they hold and
    what followed each, and the prompt's last two tokens.

    Because the constraint sends every token but a few to -inf, the others' scores cannot
    matter: ``_shared_scores`` works out the scores of a row's allowed tokens only, with the
    same float32 operations, in the same order, as the processors apply to the whole row;
    ``allowed_after`` says which tokens those are, and which of them each operation touches."""

    def __init__(self, rep: Any, copy: Any, allowed: Any, tails: list[list[int]]) -> None:
        self.rep, self.copy, self.allowed = rep, copy, allowed
        self.tails = tails  # each row's last two prompt tokens
        rows = len(tails)
        self.seen: list[set[int]] = [set() for _ in range(rows)]  # tokens each row generated
        self.grams: list[dict[tuple[int, ...], set[int]]] = [{} for _ in range(rows)]  # (n-1)-gram -> next tokens
        self.step_allowed: dict[tuple[int, tuple[int, ...]], _Allowed] = {}  # this step's, by prompt and text
        # the settings its step's operations take: requests with the same key share one
        self.key = (rep.penalty if rep else 1.0, rep.n if rep else 0, copy.bias if copy else None)

    @classmethod
    def of(cls, before: Sequence[Any], input_ids: Any) -> _Shared | None:
        """The plan for processors ``before`` the sampler, or None when the batch does not
        know them (each runs its own processors then)."""
        from recbot.generation.constrain import AllowedSentences, AllowedWords
        from recbot.generation.writer import _CopyBias, _NewTextRepetition

        procs = list(before)
        if not procs or type(procs[-1]) not in (AllowedSentences, AllowedWords):
            return None
        allowed = procs.pop()
        rep = procs.pop(0) if procs and type(procs[0]) is _NewTextRepetition else None
        copy = procs.pop(0) if procs and type(procs[0]) is _CopyBias else None
        if procs or (copy is not None and input_ids.shape[1] < 2):  # a one-token prompt: the copy bias's own error
            return None
        return cls(rep, copy, allowed, input_ids[:, -2:].tolist())

    def took(self, r: int, new: list[int], token: int) -> None:
        """Row ``r``, which generated ``new``, takes ``token``."""
        self.seen[r].add(token)
        n = self.rep.n if self.rep else 0
        if n > 1 and len(new) >= n - 1:
            self.grams[r].setdefault(tuple(new[len(new) - n + 1 :]), set()).add(token)

    def allowed_after(self, r: int, new: list[int], width: int) -> tuple[_Allowed, list[int], list[int], list[int]]:
        """Row ``r``'s allowed tokens after ``new`` and, as places among them, those the
        repetition penalty lowers, those a repeated n-gram bans, and those that continue a
        source span (``2 * bias`` more)."""
        import torch

        key = (r // self.allowed.repeat, tuple(new))
        allowed = self.step_allowed.get(key)
        if allowed is None:
            tokens = sorted({t for t in self.allowed.allowed_ids(r, new) if t < width})
            place = {t: i for i, t in enumerate(tokens)}
            source = self.copy.source[r // self.copy.repeat] if self.copy is not None else ()
            biased = sorted(place[t] for t in source if t in place)
            allowed = self.step_allowed[key] = _Allowed(torch.tensor(tokens, dtype=torch.long), place, biased)
        place = allowed.place
        penalised: list[int] = []
        banned: list[int] = []
        rep = self.rep
        if rep is not None and new:
            seen = self.seen[r]
            if rep.penalty != 1.0:
                penalised = [place[t] for t in seen if t in place]
            if rep.n == 1:
                banned = [place[t] for t in seen if t in place]
            elif rep.n > 1 and len(new) >= rep.n:
                banned = [place[t] for t in self.grams[r].get(tuple(new[len(new) - rep.n + 1 :]), ()) if t in place]
        following: list[int] = []
        if self.copy is not None:
            a, b = (self.tails[r] + new[-2:])[-2:]
            following = [place[t] for t in self.copy.follows(r, a, b) or () if t in place]
        return allowed, penalised, banned, following


def _shared_scores(
    entries: Sequence[tuple[_Group, list[int], list[int]]], logits: Any
) -> tuple[Any, list[tuple[_Group, list[int], list[int]]]]:
    """The scores of the running rows of requests that share their processors
    (``_Group.shared``, all with the same ``key``), from the step's ``logits``: one row a
    running row, in ``entries`` order, each -inf but at its allowed tokens, where it holds
    what the request's own processors give (the same float32 values, bit for bit, when
    the logits are finite). Returns them and the requests scored (``(group, batch rows,
    rows)``; a request whose constraint fails fails alone and is left out)."""
    import torch

    width = logits.shape[1]
    tokens: list[Any] = []  # each running row's allowed tokens ...
    at: list[int] = []  # ... its row in logits
    # the places, among all rows' allowed tokens, that each operation touches:
    penalised: list[int] = []
    banned: list[int] = []
    biased: list[int] = []
    following: list[int] = []
    done: list[tuple[_Group, list[int], list[int]]] = []
    offset = 0
    for group, batch_rows, rows in entries:
        plan = group.shared
        assert plan is not None
        try:
            plan.step_allowed.clear()
            parts = [plan.allowed_after(r, group.new[r], width) for r in rows]
        except BaseException as exc:  # this request's constraint failed: it fails alone
            logger.exception("a blurb request failed while decoding")
            group.fail(exc)
            continue
        for b, (allowed, pen, ban, follow) in zip(batch_rows, parts, strict=True):
            tokens.append(allowed.tokens)
            at.append(b)
            penalised += [offset + i for i in pen]
            banned += [offset + i for i in ban]
            biased += [offset + i for i in allowed.biased]
            following += [offset + i for i in follow]
            offset += len(allowed.place)
        done.append((group, batch_rows, rows))
    scores = torch.full((len(at), width), float("-inf"), dtype=logits.dtype)
    if not offset:
        return scores, done
    keys = {group.shared.key for group, _, _ in done}  # type: ignore[union-attr]
    if len(keys) > 1:
        raise ValueError(f"requests with different processor settings cannot share a step: {keys}")
    penalty, _, copy_bias = keys.pop()
    token = torch.cat(tokens)
    counts = torch.tensor([len(t) for t in tokens])
    value = logits[torch.repeat_interleave(torch.tensor(at, dtype=torch.long), counts), token]
    # the processors' operations, in their order, on the allowed tokens' scores:
    if penalised:  # _NewTextRepetition: the penalty ...
        i = torch.tensor(penalised, dtype=torch.long)
        v = value[i]
        value[i] = torch.where(v > 0, v / penalty, v * penalty)
    if banned:  # ... and the repeated n-grams
        value[torch.tensor(banned, dtype=torch.long)] = float("-inf")
    if copy_bias is not None:  # _CopyBias: scores + (bias on source tokens, plus 2 * bias after a span's start)
        extra = torch.zeros(offset, dtype=torch.float32)
        extra[torch.tensor(biased, dtype=torch.long)] = copy_bias
        if following:
            i = torch.tensor(following, dtype=torch.long)
            extra[i] = extra[i] + 2 * copy_bias
        value = value + extra.to(value.dtype)
    scores[torch.repeat_interleave(torch.arange(len(at)), counts), token] = (
        value + 0.0
    )  # the constraint: scores + its 0 mask
    return scores, done


def _fail_all(groups: list[_Group], exc: BaseException, model: Any) -> tuple[Any, list[Any], list[_Group]]:
    """Fail every request of a batch that cannot go on; a fresh, empty batch state."""
    from recbot.generation.decode import RunningBatch

    logger.error("a shared blurb decoding step failed; failing its %d request(s)", len(groups), exc_info=exc)
    for group in groups:
        group.fail(exc)
    return RunningBatch(model), [], []


def _safe(on_text: OnText) -> OnText:
    def call(prompt: int, text: str) -> None:
        try:
            on_text(prompt, text)
        except Exception:  # a reader that went away must not stop the batch
            logger.debug("a stream callback failed", exc_info=True)

    return call
