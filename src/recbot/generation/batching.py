"""Dynamic batching of blurb generation across requests (window batching).

Every ``GPT2Writer.generate`` call — from any chat session, tool call or API request — is
a *request*: a few prompts, each sampled ``n`` times. A ``Batcher`` owns the model: its
worker thread takes the waiting requests, waits up to ``window_s`` for more (or until
``max_rows`` rows are waiting), and decodes them in one batched ``generate``, then hands
each request its own rows. Because sampling is seeded per row (``writer._RowSampler``) and
prompts are left-padded with an attention mask, a request gets the same text (float32)
whatever it was batched with.

- Streaming: a request may pass ``on_text(prompt_index, text_so_far)``; the batch's
  streamer routes each row's new tokens to its own request only (candidate 0 of each prompt).
- Back-pressure: at most ``max_queue_rows`` rows wait; a request that would exceed it gets
  ``BusyError`` at once, which each surface turns into its "busy, try again" answer.
- Failures: if a merged batch fails, each of its requests is retried alone, so one bad
  request fails on its own and the others get their text.

Continuous batching (requests joining a decode already running) is not done: transformers'
``generate`` runs a batch to its end. A request that arrives during a decode waits for it
(at most ``max_new_tokens`` steps).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
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
        self, writer: GPT2Writer, *, window_s: float = 0.03, max_rows: int = 60, max_queue_rows: int = 1200
    ) -> None:
        self.writer = writer
        self.window_s = window_s
        self.max_rows = max_rows
        self.max_queue_rows = max_queue_rows
        self._waiting: list[GenerateRequest] = []
        self._cond = threading.Condition()
        self._closed = False
        self.batches = 0  # generate calls made (for tests and benchmarks)
        self.batched_requests = 0
        self._thread = threading.Thread(target=self._run, name="recbot-batcher", daemon=True)
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
            deadline = self._waiting[0].queued_at + self.window_s
            while sum(r.rows for r in self._waiting) < self.max_rows and not self._closed:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            key = self._waiting[0].key()
            batch: list[GenerateRequest] = []
            rows = 0
            for r in list(self._waiting):
                if r.key() == key and (not batch or rows + r.rows <= self.max_rows):
                    batch.append(r)
                    rows += r.rows
                    self._waiting.remove(r)
            return batch

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
