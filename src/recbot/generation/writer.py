"""GPT-2 blurb writer: prompts (pure) -> one batched generate -> finish and guard (pure)."""

from __future__ import annotations

import itertools
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recbot.config import Settings
from recbot.errors import ModelNotFoundError
from recbot.generation.guard import TitleIndex, check_blurb, template_blurb
from recbot.generation.prompts import END, MARKERS, PAD, BlurbPrompt, build_prompt, finish
from recbot.types import Interaction, Item, Recommendation

if TYPE_CHECKING:
    import torch

__all__ = ["GPT2Writer", "LazyWriter", "resolve_generator"]

logger = logging.getLogger(__name__)

GENERATOR_DIR = "generator"  # inside the data dir: where train-generator writes
_WORD = re.compile(r"[a-z]{3,}")
_STOP = frozenset(
    (
        "the and for you your with this that are was were have has had but not all from they them its "
        "it's because liked like should suit worth look natural next pick could favourite"
    ).split()
)


def resolve_generator(settings: Settings) -> str:
    """Explicit setting -> the trained generator in the data dir -> gpt2 from the local cache."""
    if settings.generator:
        return settings.generator
    trained = Path(settings.data_dir) / GENERATOR_DIR
    if (trained / "config.json").exists():
        return str(trained)
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache("gpt2", "config.json"), str):
            return "gpt2"
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        pass
    raise ModelNotFoundError(
        f"no generator: none configured, none trained in {trained}, and no gpt2 in the local cache; "
        "run: recbot train-generator"
    )


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def trim_ungrounded(continuation: str, source: str, *, min_share: float = 0.5) -> str:
    """Keep the continuation's sentences up to the first one that drifts off its sources.

    A sentence drifts when under ``min_share`` of its content words come from ``source``
    (the item's facts and the user's words): a small model that wanders into another
    item's description is cut there. Sentences without content words ("is worth a
    look.") are kept.
    """
    allowed = _content_words(source)
    kept: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", continuation.strip()):
        words = _content_words(sentence)
        if words and len(words & allowed) / len(words) < min_share:
            break
        kept.append(sentence)
    return " ".join(kept)


def score_candidate(continuation: str, item: Item, history_text: str) -> float:
    """Prefer continuations that reuse the item's facts and the user's own words."""
    words = _content_words(continuation)
    if not words:
        return 0.0
    facts = _content_words(f"{item.title} {item.category} {' '.join(item.tags)} {item.description}")
    grounding = len(words & facts) / len(words)
    personal = len(words & _content_words(history_text)) / len(words)
    return grounding + 0.5 * personal + 0.01 * min(len(words), 20)


class GPT2Writer:
    """Writes a short blurb per recommendation with a GPT2LMHeadModel.

    All k items (times ``num_candidates``) go through one left-padded ``generate`` call;
    each candidate is finished and guarded, the best passing one is kept, items with
    none are regenerated once, then templated.

    Args:
        model: a GPT2LMHeadModel.
        tokenizer: its tokenizer; must know the marker tokens and a pad token.
        settings: generation knobs (max_new_tokens, temperature, top_p, seed, ...).
    """

    def __init__(self, model: Any, tokenizer: Any, settings: Settings) -> None:
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if settings.generator_dtype == "bfloat16":
            self.model.to(torch.bfloat16)
        self._lock = threading.Lock()  # one generate at a time: the model is not re-entrant
        self._index: tuple[int, TitleIndex] | None = None

    @classmethod
    def load(cls, name_or_path: str, settings: Settings) -> GPT2Writer:
        """Load a GPT-2 checkpoint (hub id or path), offline first, safetensors only."""
        import os

        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from transformers import AutoTokenizer, GPT2LMHeadModel

        from recbot.retrieval.embedder import load_pretrained

        tokenizer = load_pretrained(AutoTokenizer, name_or_path)
        model = load_pretrained(GPT2LMHeadModel, name_or_path, use_safetensors=True)
        return cls(model, tokenizer, settings)

    # -- step 2: the model --
    def generate(
        self,
        prompts: Sequence[str],
        *,
        num_return_sequences: int = 1,
        seed: int | None = None,
        sources: Sequence[str] | None = None,
    ) -> list[list[str]]:
        """Continuations (new text only) for each prompt, from one batched generate call.

        ``sources`` (one text per prompt: the item's facts and the user's words) get a
        copy bias: their tokens' logits are raised by ``settings.copy_bias``, which a
        small model needs to stay on its item rather than drift to the catalog at large.
        """
        import torch

        if not prompts:
            return []
        max_prompt = int(self.model.config.n_positions) - self.settings.max_new_tokens
        batch = self.tokenizer(list(prompts), return_tensors="pt", padding=True, truncation=True, max_length=max_prompt)
        sample = self.settings.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.settings.max_new_tokens,
            "do_sample": sample,
            "num_return_sequences": num_return_sequences,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            "use_cache": True,
        }
        if sample:
            kwargs.update(temperature=self.settings.temperature, top_p=self.settings.top_p)
        kwargs["logits_processor"] = self._processors(batch["input_ids"].shape[1], sources, num_return_sequences)
        with self._lock, torch.inference_mode():
            torch.manual_seed(self.settings.seed if seed is None else seed)
            out = self.model.generate(**batch, **kwargs)
        new = out[:, batch["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=False)
        return [texts[i * num_return_sequences : (i + 1) * num_return_sequences] for i in range(len(prompts))]

    def _processors(self, prompt_len: int, sources: Sequence[str] | None, repeat: int) -> Any:
        """Repetition control on the *new* text only, and the copy bias.

        transformers' own repetition_penalty and no_repeat_ngram_size look at the prompt
        too, so they punish exactly what a grounded blurb must do: copy the item's facts.
        """
        from transformers import LogitsProcessorList

        processors: list[Any] = []
        n = self.settings.no_repeat_ngram_size
        penalty = self.settings.repetition_penalty
        if n > 0 or penalty != 1.0:
            processors.append(_NewTextRepetition(prompt_len, n, penalty))
        if sources is not None and self.settings.copy_bias:
            processors.append(self._copy_bias(sources, repeat))
        return LogitsProcessorList(processors)

    def _copy_bias(self, sources: Sequence[str], repeat: int) -> Any:
        """A logits processor that copies well: every source token gets ``copy_bias``, and
        the tokens that *continue* a source span from the last one or two generated tokens
        get ``2 * copy_bias`` more (an induction head the small model has not learned)."""
        import torch

        vocab = int(self.model.config.vocab_size)
        special = set(self.tokenizer.all_special_ids)
        seqs: list[list[int]] = []
        for text in sources:
            ids = self.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
            seqs.append([i for i in ids if i not in special and i < vocab])
        mask = torch.zeros((len(sources), vocab), dtype=torch.float32)
        follow1: list[dict[int, set[int]]] = []
        follow2: list[dict[tuple[int, int], set[int]]] = []
        for row, ids in enumerate(seqs):
            mask[row, list(set(ids))] = 1.0
            f1: dict[int, set[int]] = {}
            f2: dict[tuple[int, int], set[int]] = {}
            for a, b in itertools.pairwise(ids):
                f1.setdefault(a, set()).add(b)
            for a, b, c in zip(ids, ids[1:], ids[2:], strict=False):
                f2.setdefault((a, b), set()).add(c)
            follow1.append(f1)
            follow2.append(f2)
        bias = float(self.settings.copy_bias)

        def process(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            width = scores.shape[-1]
            extra = torch.zeros_like(scores)
            extra += bias * mask.repeat_interleave(repeat, dim=0)[:, :width].to(scores.device, scores.dtype)
            last = input_ids[:, -2:].tolist()
            for r, (a, b) in enumerate(last):
                src = r // repeat
                nxt = follow2[src].get((a, b)) or follow1[src].get(b)
                if nxt:
                    extra[r, [t for t in nxt if t < width]] += 2 * bias
            return scores + extra

        return process

    def stream(self, prompt: BlurbPrompt, source: str | None = None) -> Iterator[str]:
        """Yield the blurb as it is produced: the opening first, then raw text pieces.

        ``source`` gets the copy bias (see ``generate``). The caller finishes and guards
        the text (``stream_write`` does); streaming shows one sampled candidate, so it
        can differ from the batched ``write``.
        """
        import torch
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=False)
        batch = self.tokenizer([prompt.text], return_tensors="pt")

        failed: list[BaseException] = []

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    torch.manual_seed(self.settings.seed)
                    self.model.generate(
                        **batch,
                        streamer=streamer,
                        max_new_tokens=self.settings.max_new_tokens,
                        do_sample=self.settings.temperature > 0,
                        temperature=self.settings.temperature if self.settings.temperature > 0 else None,
                        top_p=self.settings.top_p if self.settings.temperature > 0 else None,
                        logits_processor=self._processors(batch["input_ids"].shape[1], [source] if source else None, 1),
                        pad_token_id=self.tokenizer.pad_token_id,
                        eos_token_id=self.tokenizer.eos_token_id,
                    )
            except BaseException as exc:  # handed to the reader: a dead thread must not leave it waiting forever
                failed.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield prompt.opening
        for piece in streamer:
            stop = [piece.find(m) for m in (END, PAD, *MARKERS, "\n") if m in piece]
            if stop:
                if min(stop) > 0:
                    yield piece[: min(stop)]
                break
            yield piece
        thread.join()
        if failed:
            raise failed[0]

    def stream_write(
        self,
        history: Sequence[tuple[Item, Interaction]],
        rec: Recommendation,
        catalog: Mapping[str, Item],
    ) -> Iterator[tuple[str, Recommendation | None]]:
        """Stream one blurb: yields ``(text so far, None)`` while it is written, then
        ``(final text, recommendation)`` once it is finished and guarded (templated if
        the streamed text fails the guard)."""
        prompt = self.prompt_for(history, rec, catalog)
        source = copy_source(rec.item, history)
        text = ""
        for piece in self.stream(prompt, source):
            text += piece
            yield text, None
        index = self.title_index(catalog)
        allowed = {item.id for item, _ in history}
        raw = text[len(prompt.opening) :]
        cont = finish(raw, max_chars=max(40, self.settings.max_blurb_chars - len(prompt.opening)))
        cont = trim_ungrounded(cont, source)
        final = _join(prompt.opening, cont)
        verdict = check_blurb(final, rec.item, index, allowed=allowed, max_chars=self.settings.max_blurb_chars)
        if verdict.ok:
            done = replace(rec, blurb=final, grounded=True, blurb_note=None)
        else:
            because = catalog.get(rec.because[0].item_id) if rec.because else None
            final = template_blurb(rec.item, because, index, allowed=allowed, max_chars=self.settings.max_blurb_chars)
            done = replace(rec, blurb=final, grounded=False, blurb_note=f"templated: generated text {verdict.reason}")
        yield final, done

    # -- steps 1 and 3 around it --
    def write(
        self,
        history: Sequence[tuple[Item, Interaction]],
        recs: Sequence[Recommendation],
        catalog: Mapping[str, Item],
    ) -> list[Recommendation]:
        """Fill ``blurb``/``grounded``/``blurb_note`` of each recommendation."""
        return self.write_many([(history, rec) for rec in recs], catalog)

    def write_many(
        self, jobs: Sequence[tuple[Sequence[tuple[Item, Interaction]], Recommendation]], catalog: Mapping[str, Item]
    ) -> list[Recommendation]:
        """``write`` for many (history, recommendation) pairs, possibly of different users,
        in batches of ``generation_batch`` prompts (offline evaluation uses this)."""
        out: list[Recommendation] = []
        step = max(1, self.settings.generation_batch)
        for start in range(0, len(jobs), step):
            out.extend(self._write_batch(jobs[start : start + step], catalog))
        return out

    def _write_batch(
        self, jobs: Sequence[tuple[Sequence[tuple[Item, Interaction]], Recommendation]], catalog: Mapping[str, Item]
    ) -> list[Recommendation]:
        index = self.title_index(catalog)
        recs = [rec for _, rec in jobs]
        allowed = [{item.id for item, _ in history} for history, _ in jobs]
        history_text = [" ".join(f"{it.title} {h.review or ''}" for it, h in history) for history, _ in jobs]
        prompts = [self.prompt_for(history, rec, catalog) for history, rec in jobs]
        sources = [copy_source(rec.item, history) for history, rec in jobs]
        chosen: list[str | None] = [None] * len(recs)
        notes: list[str | None] = [None] * len(recs)
        todo = list(range(len(recs)))
        for attempt in range(2):  # generate, then regenerate once what failed
            n = self.settings.num_candidates
            outs = self.generate(
                [prompts[i].text for i in todo],
                num_return_sequences=n,
                seed=self.settings.seed + attempt,
                sources=[sources[i] for i in todo],
            )
            still = []
            for i, candidates in zip(todo, outs, strict=True):
                best, best_score = None, -1.0
                for raw in candidates:
                    cont = finish(raw, max_chars=max(40, self.settings.max_blurb_chars - len(prompts[i].opening)))
                    cont = trim_ungrounded(cont, sources[i])
                    text = _join(prompts[i].opening, cont)
                    verdict = check_blurb(
                        text, recs[i].item, index, allowed=allowed[i], max_chars=self.settings.max_blurb_chars
                    )
                    if verdict.ok:
                        s = score_candidate(cont, recs[i].item, history_text[i])
                        if s > best_score:
                            best, best_score = text, s
                    else:
                        notes[i] = verdict.reason
                if best is None:
                    still.append(i)
                else:
                    chosen[i], notes[i] = best, None
            todo = still
            if not todo:
                break
        out = []
        for i, rec in enumerate(recs):
            if chosen[i] is not None:
                out.append(replace(rec, blurb=chosen[i], grounded=True, blurb_note=None))
            else:
                because = catalog.get(rec.because[0].item_id) if rec.because else None
                text = template_blurb(
                    rec.item, because, index, allowed=allowed[i], max_chars=self.settings.max_blurb_chars
                )
                out.append(replace(rec, blurb=text, grounded=False, blurb_note=f"templated: generated text {notes[i]}"))
        return out

    def prompt_for(
        self, history: Sequence[tuple[Item, Interaction]], rec: Recommendation, catalog: Mapping[str, Item]
    ) -> BlurbPrompt:
        because = catalog.get(rec.because[0].item_id) if rec.because else None
        return build_prompt(rec.item, history, because)

    def title_index(self, catalog: Mapping[str, Item]) -> TitleIndex:
        key = id(catalog)
        if self._index is None or self._index[0] != key:
            self._index = (key, TitleIndex(catalog.values()))
        return self._index[1]


class _NewTextRepetition:
    """No n-gram twice and a repetition penalty, counted over generated tokens only."""

    def __init__(self, prompt_len: int, n: int, penalty: float) -> None:
        self.prompt_len = prompt_len
        self.n = n
        self.penalty = penalty

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        new = input_ids[:, self.prompt_len :]
        if new.shape[1] == 0:
            return scores
        scores = scores.clone()
        for r, row in enumerate(new.tolist()):
            if self.penalty != 1.0:
                seen = [t for t in set(row) if t < scores.shape[-1]]
                vals = scores[r, seen]
                scores[r, seen] = torch.where(vals > 0, vals / self.penalty, vals * self.penalty)
            if self.n > 0 and len(row) >= self.n:
                prefix = tuple(row[-(self.n - 1) :]) if self.n > 1 else ()
                banned = [
                    row[i + self.n - 1]
                    for i in range(len(row) - self.n + 1)
                    if tuple(row[i : i + self.n - 1]) == prefix
                ]
                if banned:
                    scores[r, banned] = float("-inf")
        return scores


def copy_source(item: Item, history: Sequence[tuple[Item, Interaction]]) -> str:
    """The text a blurb may copy from: the item's facts and the user's own words."""
    words = " ".join(h.review for _, h in history[-5:] if h.review)
    return f"{item.title} {item.category} {' '.join(item.tags)} {item.description} {words}"


def _join(opening: str, continuation: str) -> str:
    if not continuation:
        return opening + "."
    if continuation[0] in ".,;:!?":
        return opening + continuation
    return f"{opening} {continuation.lstrip()}"


class LazyWriter:
    """Resolves and loads the generator on the first blurb, so --no-blurbs loads nothing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._writer: GPT2Writer | None = None
        self._lock = threading.Lock()

    def get(self) -> GPT2Writer:
        from recbot.retrieval.embedder import MODEL_LOAD_LOCK

        with MODEL_LOAD_LOCK, self._lock:
            if self._writer is None:
                name = resolve_generator(self.settings)
                logger.info("loading generator %s", name)
                self._writer = GPT2Writer.load(name, self.settings)
            return self._writer

    def write(
        self, history: Sequence[tuple[Item, Interaction]], recs: Sequence[Recommendation], catalog: Mapping[str, Item]
    ) -> list[Recommendation]:
        return self.get().write(history, recs, catalog)
