"""GPT-2 blurb writer: prompts (pure) -> one batched generate -> finish and guard (pure)."""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recbot.config import Settings
from recbot.errors import BusyError, ModelNotFoundError
from recbot.generation.decode import PreparedRows, growing_cache, prefill
from recbot.generation.fluency import FluencyModel
from recbot.generation.guard import OPENING_WORD, TitleIndex, check_blurb, template_blurb
from recbot.generation.prompts import (
    END,
    MARKERS,
    PAD,
    BlurbPrompt,
    build_prompt,
    fact_continuation,
    finish,
    sentence_options,
)
from recbot.generation.support import Support, personal_evidence, quotes, support_for, words
from recbot.types import BlurbUpdate, Interaction, Item, Recommendation

if TYPE_CHECKING:
    import torch

__all__ = ["GPT2Writer", "LazyWriter", "read_card", "resolve_generator"]

logger = logging.getLogger(__name__)

GENERATOR_DIR = "generator"  # inside the data dir: where train-generator writes
FLUENCY_FILE = "fluency_corpus.txt"  # beside the weights: the text the fluency model is fitted on


def read_card(generator_dir: str | Path) -> dict[str, Any]:
    """The ``card.json`` beside a trained generator ({} when there is none). Cards are
    written as strict JSON (a measure that could not be taken, such as the held-out
    perplexity without held-out examples, is ``null``); a ``NaN`` or ``Infinity`` in a card
    written before that is read as None too."""
    path = Path(generator_dir) / "card.json"
    if not path.is_file():
        return {}
    card = json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda _name: None)
    return card if isinstance(card, dict) else {}


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


@dataclass(frozen=True)
class BlurbJob:
    """Everything one blurb needs: its prompt, and what it may say."""

    history: Sequence[tuple[Item, Interaction]]
    rec: Recommendation
    because: Item | None
    prompt: BlurbPrompt
    support: Support
    history_ids: frozenset[str]  # items the blurb may name besides its own
    source: str  # text the copy bias favours
    options: tuple[list[str], list[str]]  # the sentences a facts continuation may use (prompts.sentence_options)
    quotable: Sequence[tuple[Item, Interaction]] = ()  # history whose reviews this blurb may quote


class GPT2Writer:
    """Writes a short blurb per recommendation with a GPT2LMHeadModel.

    Three steps, as in transformers' pipelines: prompts (pure) -> one batched
    ``generate`` for all k items -> finish and guard (pure). Decoding is held inside each
    blurb's support (``constrain.AllowedWords``) or, for a generator taught fact
    continuations, its sentence grammar (``constrain.AllowedSentences``). Candidates are
    sampled with a fixed seed (``temperature == 0``: beam search), each is finished and
    guarded, and a passing one wins: personal ones first, then the most fluent. Items
    with none are regenerated once (another seed, or a wider beam), then templated;
    ``blurb_source`` says which.

    Args:
        model: a GPT2LMHeadModel.
        tokenizer: its tokenizer; must know the marker tokens and a pad token.
        settings: generation knobs (max_new_tokens, num_candidates, temperature, seed, ...).
        fluency: the n-gram fluency model that ranks candidates and rejects word salad;
            None uses the salad rules alone.
        frames: the model was taught fact continuations (``targets="facts"`` in its card):
            each generated sentence must be a taught frame or a description sentence.
        target_tokens: the longest taught continuation in tokens (from the card); the
            token budget when ``settings.max_new_tokens`` is None (at most 96; 40 if unknown).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        settings: Settings,
        fluency: FluencyModel | None = None,
        *,
        frames: bool = False,
        target_tokens: int | None = None,
    ) -> None:
        import torch

        from recbot.generation.constrain import TokenTable

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.settings = settings
        self.fluency = fluency
        self.frames = frames  # taught fact continuations: the guard holds sentences to the frames
        # a continuation cut short loses its last sentence: room for the longest taught one
        self.max_new_tokens = settings.max_new_tokens or min(96, target_tokens or 40)
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if settings.generator_dtype == "bfloat16":
            self.model.to(torch.bfloat16)
        self.tokens = TokenTable(tokenizer, int(model.config.vocab_size))
        self._lock = threading.Lock()  # one generate at a time: the model is not re-entrant
        self.batcher: Any = None  # a recbot.generation.batching.Batcher shares generate calls across requests
        self._index: tuple[int, TitleIndex] | None = None

    @classmethod
    def load(cls, name_or_path: str, settings: Settings) -> GPT2Writer:
        """Load a GPT-2 checkpoint (hub id or path), offline first, safetensors only; and
        the fluency model fitted on the corpus saved beside it, when there is one."""
        from transformers import AutoTokenizer, GPT2LMHeadModel

        from recbot.retrieval.embedder import load_pretrained

        tokenizer = load_pretrained(AutoTokenizer, name_or_path)
        model = load_pretrained(GPT2LMHeadModel, name_or_path, use_safetensors=True)
        corpus = Path(name_or_path) / FLUENCY_FILE
        fluency = FluencyModel.fit(corpus.read_text(encoding="utf-8").splitlines()) if corpus.is_file() else None
        card = read_card(name_or_path)
        return cls(
            model,
            tokenizer,
            settings,
            fluency,
            frames=card.get("targets") == "facts",
            target_tokens=card.get("target_tokens"),
        )

    # -- step 1: what each blurb may say --
    def job(
        self, history: Sequence[tuple[Item, Interaction]], rec: Recommendation, catalog: Mapping[str, Item]
    ) -> BlurbJob:
        return make_job(history, rec, catalog)

    def prompt_for(
        self, history: Sequence[tuple[Item, Interaction]], rec: Recommendation, catalog: Mapping[str, Item]
    ) -> BlurbPrompt:
        return self.job(history, rec, catalog).prompt

    # -- step 2: the model --
    def generate(self, prompts: Sequence[str], **options: Any) -> list[list[str]]:
        """``generate_now`` (the same keyword arguments), through the ``batcher`` when there
        is one: concurrent callers share one batched generate call
        (``recbot.generation.batching``), and each gets the text it would get alone (float32).

        Raises:
            BusyError: the batcher's queue is full.
        """
        if not prompts:
            return []
        if self.batcher is None:
            return self.generate_now(prompts, **options)
        from recbot.generation.batching import GenerateRequest

        on_text = options.pop("on_text", None)
        return self.batcher.submit(GenerateRequest(list(prompts), options, on_text))

    def generate_now(
        self, prompts: Sequence[str], *, on_text: Callable[[int, str], None] | None = None, **options: Any
    ) -> list[list[str]]:
        """Continuations (new text only) for each prompt, from one batched generate call.
        ``on_text(prompt, text_so_far)`` is called as each prompt's first candidate grows;
        ``options`` are ``prepare``'s (``num_return_sequences``, ``seed``, ``sources``, ...).
        """
        import torch

        if not prompts:
            return []
        rows = self.prepare(prompts, **options)
        n = int(options.get("num_return_sequences", 1))
        sample = rows.beams == 1 and self.settings.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": False,  # sampling happens in _RowSampler; generate takes its one allowed token
            "num_return_sequences": 1 if sample else n,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            "use_cache": True,
            "logits_processor": rows.processors,
        }
        if not sample:
            kwargs.update(num_beams=rows.beams, **({"early_stopping": True} if rows.beams > 1 else {}))
        if on_text is not None and rows.beams == 1:
            kwargs["streamer"] = _RowStreamer(self.tokenizer, rows.per_prompt, on_text)
        with self._lock, torch.inference_mode():
            kwargs["cache"] = self.prefix_cache(prompts, n) if sample and n > 1 else growing_cache()
            out = self.model.generate(input_ids=rows.input_ids, attention_mask=rows.attention_mask, **kwargs)
        return self.texts(out[:, rows.input_ids.shape[1] :], n)

    def texts(self, new: Any, n: int) -> list[list[str]]:
        """Each prompt's ``n`` continuations from the generated token ids (rows in prompt order)."""
        eos = self.tokenizer.eos_token or ""
        # what a row holds after its end of text is the batch waiting for others: not its text
        texts = [t.split(eos, 1)[0] + eos if eos and eos in t else t for t in self.tokenizer.batch_decode(new)]
        return [texts[i * n : (i + 1) * n] for i in range(len(texts) // n)]

    def prepare(
        self,
        prompts: Sequence[str],
        *,
        num_return_sequences: int = 1,
        seed: int | None = None,
        sources: Sequence[str] | None = None,
        supports: Sequence[Support] | None = None,
        leads: Sequence[str] | None = None,
        num_beams: int | None = None,
        options: Sequence[tuple[list[str], list[str]]] | None = None,
    ) -> PreparedRows:
        """What decoding ``prompts`` needs: the left-padded rows (one a candidate when
        sampling, one a prompt for beam search) and their logits processors, ending with
        the per-row sampler. ``generate_now`` hands them to ``generate``; the continuous
        batcher (``recbot.generation.batching``) decodes them beside other requests' rows.

        With ``temperature == 0`` the candidates are the ``num_return_sequences`` best
        beams of a beam search (``num_beams``, at least that many); otherwise they are
        sampled. ``sources`` get a copy bias (their tokens' logits raised by
        ``settings.copy_bias``); ``supports`` restrict every generated word to that
        prompt's supported words (``leads``: the text each prompt ends with, so a title's
        last word is not extended); ``options`` instead hold each continuation to its
        sentence grammar (``constrain.AllowedSentences``)."""
        n = num_return_sequences
        sample = self.settings.temperature > 0
        # Sampling: each candidate is its own row, drawn by its own generator seeded from
        # (seed, prompt, candidate), so a prompt's blurbs do not depend on what it is batched with.
        texts = [p for p in prompts for _ in range(n)] if sample else list(prompts)
        max_prompt = int(self.model.config.n_positions) - self.max_new_tokens
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_prompt)
        beams = 1 if sample else max(num_beams or 1, n)
        rows = n if sample else beams
        processors = self._processors(batch["input_ids"].shape[1], sources, rows, supports, leads, options)
        if sample:
            base = self.settings.seed if seed is None else seed
            seeds = [row_seed(base, p, j) for p in prompts for j in range(n)]
            processors.append(_RowSampler(seeds, self.settings.temperature, self.settings.top_p))
        return PreparedRows(batch["input_ids"], batch["attention_mask"], processors, beams, rows)

    def prefix_cache(self, prompts: Sequence[str], n: int) -> Any:
        """The KV cache of each prompt but its last token, computed once and repeated for its
        ``n`` candidate rows: prompts are half the work of a generate call here, and the
        candidates of a prompt share it (generate then reads the cache and runs from the
        last prompt token on). Positions follow the left padding, as generate's own do."""
        max_prompt = int(self.model.config.n_positions) - self.max_new_tokens
        unique = self.tokenizer(
            list(prompts), return_tensors="pt", padding=True, truncation=True, max_length=max_prompt
        )
        ids, mask = unique["input_ids"][:, :-1], unique["attention_mask"][:, :-1]
        if not ids.shape[1]:
            return growing_cache()
        cache = prefill(self.model, ids, mask)
        cache.batch_repeat_interleave(n)
        return cache

    def _processors(
        self,
        prompt_len: int,
        sources: Sequence[str] | None,
        repeat: int,
        supports: Sequence[Support] | None = None,
        leads: Sequence[str] | None = None,
        options: Sequence[tuple[list[str], list[str]]] | None = None,
    ) -> Any:
        """Repetition control on the *new* text only, the copy bias, and the support
        constraint (last, so nothing raises a masked token again).

        transformers' own repetition_penalty and no_repeat_ngram_size look at the prompt
        too, so they punish exactly what a grounded blurb must do: copy the item's facts.
        """
        from transformers import LogitsProcessorList

        from recbot.generation.constrain import AllowedSentences, AllowedWords

        processors: list[Any] = []
        n = self.settings.no_repeat_ngram_size
        penalty = self.settings.repetition_penalty
        if n > 0 or penalty != 1.0:
            processors.append(_NewTextRepetition(prompt_len, n, penalty))
        if sources is not None and self.settings.copy_bias:
            processors.append(self._copy_bias(sources, repeat))
        if options is not None:
            processors.append(AllowedSentences(self.tokens, options, prompt_len, repeat, self.tokenizer.decode))
        elif supports is not None:
            processors.append(
                AllowedWords(
                    self.tokens,
                    [s.allowed for s in supports],
                    leads or [""] * len(supports),
                    prompt_len,
                    repeat,
                    self.tokenizer.decode,
                )
            )
        return LogitsProcessorList(processors)

    def _copy_bias(self, sources: Sequence[str], repeat: int) -> _CopyBias:
        """The copy-bias processor of ``sources`` (one a prompt; ``repeat`` rows each)."""
        vocab = int(self.model.config.vocab_size)
        special = set(self.tokenizer.all_special_ids)
        seqs: list[list[int]] = []
        for text in sources:
            ids = self.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
            seqs.append([i for i in ids if i not in special and i < vocab])
        return _CopyBias(seqs, repeat, vocab, float(self.settings.copy_bias))

    def stream_jobs(self, jobs: Sequence[BlurbJob], catalog: Mapping[str, Item]) -> Iterator[BlurbUpdate]:
        """``write`` for one list, streamed: ``BlurbUpdate(i, opening + text so far)`` as
        each item's first candidate is decoded (all items at once, in one batched call
        with whatever else is waiting), then each item's finished recommendation, after
        the same choice, guard, regeneration and template as ``write``. The final text
        may differ from the streamed one: another candidate can win, or the template."""
        updates: queue.Queue[tuple[int, str] | BaseException | list[Recommendation]] = queue.Queue()
        openings = [job.prompt.opening for job in jobs]

        def on_text(i: int, text: str) -> None:
            updates.put((i, text))

        def run() -> None:
            try:
                updates.put(self._write_jobs(jobs, catalog, on_text=on_text))
            except BaseException as exc:  # handed to the reader: it must not wait forever
                updates.put(exc)

        threading.Thread(target=run, name="recbot-blurbs", daemon=True).start()
        for i, opening in enumerate(openings):
            yield BlurbUpdate(i, opening)
        while True:
            got = updates.get()
            if isinstance(got, BaseException):
                raise got
            if isinstance(got, list):
                for i, done in enumerate(got):
                    yield BlurbUpdate(i, done.blurb or "", done)
                return
            i, text = got
            yield BlurbUpdate(i, _join(openings[i], _streamed(text)) if _streamed(text) else openings[i])

    def jobs(
        self, history: Sequence[tuple[Item, Interaction]], recs: Sequence[Recommendation], catalog: Mapping[str, Item]
    ) -> list[BlurbJob]:
        """The jobs for one user's list, as ``write`` builds them (one quote each)."""
        return _one_quote_each([self.job(history, r, catalog) for r in recs])

    # -- steps 1 and 3 around it --
    def write(
        self,
        history: Sequence[tuple[Item, Interaction]],
        recs: Sequence[Recommendation],
        catalog: Mapping[str, Item],
    ) -> list[Recommendation]:
        """Fill ``blurb``/``blurb_source``/``grounded``/``blurb_note`` of each recommendation."""
        return self.write_many([(history, rec) for rec in recs], catalog)

    def write_many(
        self, jobs: Sequence[tuple[Sequence[tuple[Item, Interaction]], Recommendation]], catalog: Mapping[str, Item]
    ) -> list[Recommendation]:
        """``write`` for many (history, recommendation) pairs, possibly of different users,
        in batches of ``generation_batch`` prompts (offline evaluation uses this)."""
        out: list[Recommendation] = []
        step = max(1, self.settings.generation_batch)
        built = _one_quote_each([self.job(h, r, catalog) for h, r in jobs])
        for start in range(0, len(built), step):
            out.extend(self._write_jobs(built[start : start + step], catalog))
        return out

    def _write_jobs(
        self,
        jobs: Sequence[BlurbJob],
        catalog: Mapping[str, Item],
        *,
        on_text: Callable[[int, str], None] | None = None,
    ) -> list[Recommendation]:
        index = self.title_index(catalog)
        chosen: list[str | None] = [None] * len(jobs)
        notes: list[str | None] = [None] * len(jobs)
        todo = list(range(len(jobs)))
        n = self.settings.num_candidates
        for attempt in range(2):  # generate, then regenerate once what failed, with a wider beam
            outs = self.generate(
                [jobs[i].prompt.text for i in todo],
                num_return_sequences=n,
                seed=self.settings.seed + attempt,
                sources=[jobs[i].source for i in todo],
                supports=[jobs[i].support for i in todo],
                leads=[jobs[i].prompt.opening for i in todo],
                num_beams=n * (attempt + 1),
                options=[jobs[i].options for i in todo] if self.frames else None,
                on_text=on_text if attempt == 0 else None,  # the first round covers every item, in order
            )
            still = []
            for i, candidates in zip(todo, outs, strict=True):
                chosen[i], notes[i] = self._choose(jobs[i], candidates, index)
                if chosen[i] is None:
                    still.append(i)
            todo = still
            if not todo:
                break
        return [self._finalize(job, chosen[i], notes[i], index) for i, job in enumerate(jobs)]

    def _choose(self, job: BlurbJob, candidates: Sequence[str], index: TitleIndex) -> tuple[str | None, str | None]:
        """The best candidate that passes the guard (personal first, then most fluent),
        or None and why the last one failed."""
        best: tuple[tuple[bool, float], str] | None = None
        note: str | None = "produced no text"
        opening = job.prompt.opening
        for raw in candidates:
            cont = finish(raw, max_chars=max(40, self.settings.max_blurb_chars - len(opening)))
            if not cont.strip():
                note = "no whole sentence"
                continue
            text = _join(opening, cont)
            verdict = self.check(job, text, index)
            if not verdict.ok:
                note = verdict.reason
                continue
            personal = bool(personal_evidence(text[len(opening) :], job.rec.item, job.support, job.because))
            fluent = self.fluency.score(OPENING_WORD + text[len(opening) :]) if self.fluency else 0.0
            key = (personal, fluent)
            if best is None or key > best[0]:
                best = (key, text)
        return (best[1], None) if best else (None, note)

    def check(self, job: BlurbJob, text: str, index: TitleIndex) -> Any:
        """The guard, with this blurb's support and the fluency model."""
        return check_blurb(
            text,
            job.rec.item,
            index,
            allowed=job.history_ids,
            max_chars=self.settings.max_blurb_chars,
            support=job.support,
            fluency=self.fluency,
            lead=job.prompt.opening,
            frames=self.frames,
            because=job.because,
        )

    def _finalize(self, job: BlurbJob, text: str | None, note: str | None, index: TitleIndex) -> Recommendation:
        if text is not None:
            return replace(job.rec, blurb=text, blurb_source="generated", grounded=True, blurb_note=None)
        return templated(job, index, self.settings, f"templated: generated {note}", fluency=self.fluency)

    def title_index(self, catalog: Mapping[str, Item]) -> TitleIndex:
        key = id(catalog)
        if self._index is None or self._index[0] != key:
            self._index = (key, TitleIndex(catalog.values()))
        return self._index[1]


def _one_quote_each(jobs: Sequence[BlurbJob]) -> list[BlurbJob]:
    """In a user's list, each of their reviews is quoted in one blurb at most: the same
    words of theirs three times in five blurbs read as a template. Each item, in rank
    order, claims the review its template would quote; later items may not quote it.
    (Decided before generating, so one batched generate still writes the whole list.)"""
    claimed: dict[frozenset[str], set[tuple[str, str]]] = {}  # per user: (item id, user id) of quoted reviews
    out = []
    for job in jobs:
        taken = claimed.setdefault(job.history_ids, set())
        quotable = [(it, replace(h, review=None) if (it.id, h.user_id) in taken else h) for it, h in job.history]
        job = replace(job, options=sentence_options(job.rec.item, job.because, quotable), quotable=quotable)
        quoted = set(quotes(fact_continuation(job.rec.item, job.because, quotable)))
        taken.update((it.id, h.user_id) for it, h in quotable if h.review and _quotes_review(quoted, h.review))
        out.append(job)
    return out


def _quotes_review(quoted: set[str], review: str) -> bool:
    """Whether one of the ``quoted`` spans (normalised) comes from ``review``."""
    text = " ".join(words(review))
    return any(q and q in text for q in quoted)


def _streamed(text: str) -> str:
    """Raw streamed text up to the first marker or newline (what finish would cut at)."""
    stops = [text.find(m) for m in (END, PAD, *MARKERS, "\n") if m in text]
    return text[: min(stops)] if stops else text


class _RowStreamer:
    """A transformers streamer for a batch: decodes each prompt's first candidate row as it
    grows and calls ``on_text(prompt, text_so_far)``; rows never see each other's tokens."""

    def __init__(self, tokenizer: Any, rows_per_prompt: int, on_text: Callable[[int, str], None]) -> None:
        self.tokenizer = tokenizer
        self.n = rows_per_prompt
        self.on_text = on_text
        self.tokens: dict[int, list[int]] = {}
        self.last: dict[int, str] = {}
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate first hands over the prompt ids
            self.prompt_seen = True
            return
        ids = value.reshape(-1).tolist()
        for row in range(0, len(ids), self.n):
            toks = self.tokens.setdefault(row, [])
            if toks and toks[-1] == self.tokenizer.eos_token_id:
                continue  # this row ended; the batch goes on for others
            toks.append(int(ids[row]))
            text = self.tokenizer.decode(toks)
            if text != self.last.get(row):
                self.last[row] = text
                self.on_text(row // self.n, text)

    def end(self) -> None:
        return None


def row_seed(seed: int, prompt: str, candidate: int) -> int:
    """The sampling seed of one candidate: a function of the seed, the prompt and the
    candidate's number only (crc32, stable across processes and machines)."""
    return (seed * 1_000_003 + zlib.crc32(prompt.encode("utf-8")) * 31 + candidate) % (2**63 - 1)


class _RowSampler:
    """Temperature and nucleus (top-p) sampling, one seeded generator per row, as the last
    logits processor: every token but the drawn one goes to -inf, so greedy decoding takes
    it. Unlike ``do_sample=True`` (one global random stream for the whole batch), a row's
    draws depend on its own seed and logits only, so batching many requests together
    gives each the text it would get alone (in float32, where the logits match)."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float) -> None:
        import torch

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return draw(scores, self.generators[: scores.shape[0]], self.temperature, self.top_p)


NUCLEUS_K = 64  # a nucleus is looked for among a row's 64 most likely tokens first


def draw(scores: torch.Tensor, generators: Sequence[torch.Generator], temperature: float, top_p: float) -> torch.Tensor:
    """``_RowSampler``'s step: row r's token drawn with ``generators[r]``; every other
    token's score -inf (a row with nothing allowed keeps its scores)."""
    import torch

    token, stuck = _draw(scores, generators, temperature, top_p)
    out = torch.full_like(scores, float("-inf"))
    out[torch.arange(scores.shape[0]), token] = 0.0
    out[stuck] = scores[stuck]
    return out


def draw_tokens(
    scores: torch.Tensor, generators: Sequence[torch.Generator], temperature: float, top_p: float
) -> torch.Tensor:
    """The tokens greedy decoding takes after ``draw``: ``draw(...).argmax(-1)``, without
    the scores matrix (the continuous batcher needs the tokens only)."""
    token, stuck = _draw(scores, generators, temperature, top_p)
    if bool(stuck.any()):
        token[stuck] = scores[stuck].argmax(dim=-1)
    return token


def _draw(
    scores: torch.Tensor, generators: Sequence[torch.Generator], temperature: float, top_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's drawn token, and which rows have nothing allowed (``stuck``).

    Nucleus sampling by Gumbel-max: argmax(log p + Gumbel noise) over the nucleus is a draw
    from it. A row's nucleus is found among its ``NUCLEUS_K`` most likely tokens when their
    mass reaches ``top_p`` (nearly always: decoding is held to a few allowed words), else
    over the whole vocabulary; either way the choice, and the noise drawn, depend on that
    row's logits and generator only, so one row's draw never depends on the others.
    """
    import torch

    rows, vocab = scores.shape
    logp = torch.log_softmax(scores.float() / temperature, dim=-1)
    k = vocab if top_p >= 1.0 else min(NUCLEUS_K, vocab)
    top_logp, top = torch.topk(logp, k, dim=-1)  # sorted, most likely first
    if top_p < 1.0:
        top_prob = top_logp.exp()
        drop = (torch.cumsum(top_prob, dim=-1) - top_prob) >= top_p  # the most likely token always stays
        top_logp = top_logp.masked_fill(drop, float("-inf"))
        wide = (top_prob.sum(-1) < top_p).tolist()  # the nucleus reaches past the top k
    else:
        wide = [False] * rows
    token = torch.empty(rows, dtype=torch.long)
    narrow = [r for r in range(rows) if not wide[r]]
    if narrow:
        uniform = torch.stack([torch.rand(k, generator=generators[r]) for r in narrow])
        pick = (top_logp[narrow] + _gumbel(uniform)).argmax(dim=-1)
        token[narrow] = top[narrow].gather(1, pick[:, None])[:, 0]
    for r in (r for r in range(rows) if wide[r]):
        sorted_logp, order = torch.sort(logp[r], descending=True)
        sorted_p = sorted_logp.exp()
        kept = sorted_logp.masked_fill((torch.cumsum(sorted_p, 0) - sorted_p) >= top_p, float("-inf"))
        token[r] = order[(kept + _gumbel(torch.rand(vocab, generator=generators[r]))).argmax()]
    stuck = ~torch.isfinite(logp).any(dim=-1)  # nothing allowed: leave the row to greedy as it is
    return token, stuck


def _gumbel(uniform: torch.Tensor) -> torch.Tensor:
    import torch

    return -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))


class _NewTextRepetition:
    """No n-gram twice and a repetition penalty, counted over generated tokens only."""

    def __init__(self, prompt_len: int, n: int, penalty: float) -> None:
        self.prompt_len = prompt_len
        self.n = n
        self.penalty = penalty

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        new = input_ids[:, self.prompt_len :]
        length = new.shape[1]
        if length == 0:
            return scores
        new = new.clamp(max=scores.shape[-1] - 1)
        scores = scores.clone()
        if self.penalty != 1.0:  # every generated token once, as transformers' RepetitionPenalty does
            vals = scores.gather(1, new)
            scores.scatter_(1, new, torch.where(vals > 0, vals / self.penalty, vals * self.penalty))
        n = self.n
        if n == 1:
            scores.scatter_(1, new, float("-inf"))
        elif n > 1 and length >= n:
            prefix = new[:, length - (n - 1) :]  # the last n-1 tokens
            windows = new.unfold(1, n - 1, 1)[:, : length - n + 1]  # every earlier (n-1)-gram ...
            follows = new[:, n - 1 :]  # ... and the token after it
            rows, cols = (windows == prefix[:, None, :]).all(dim=-1).nonzero(as_tuple=True)
            scores[rows, follows[rows, cols]] = float("-inf")
        return scores


class _CopyBias:
    """A logits processor that copies well: every source token gets ``bias``, and the
    tokens that *continue* a source span from the last one or two generated tokens get
    ``2 * bias`` more (an induction head the small model has not learned).

    ``sources`` holds each prompt's source token ids (``repeat`` rows a prompt). The
    continuous batcher reads ``source``, ``follows`` and ``bias`` to give the same biases
    to the allowed tokens of many requests' rows at once (``batching._Shared``).
    """

    def __init__(self, sources: Sequence[list[int]], repeat: int, vocab: int, bias: float) -> None:
        import torch

        self.repeat = repeat
        self.bias = bias
        self.source = [frozenset(ids) for ids in sources]  # per prompt: the tokens that get ``bias``
        mask = torch.zeros((len(sources), vocab), dtype=torch.float32)
        self.follow1: list[dict[int, set[int]]] = []
        self.follow2: list[dict[tuple[int, int], set[int]]] = []
        for row, ids in enumerate(sources):
            mask[row, list(self.source[row])] = 1.0
            f1: dict[int, set[int]] = {}
            f2: dict[tuple[int, int], set[int]] = {}
            for a, b in itertools.pairwise(ids):
                f1.setdefault(a, set()).add(b)
            for a, b, c in zip(ids, ids[1:], ids[2:], strict=False):
                f2.setdefault((a, b), set()).add(c)
            self.follow1.append(f1)
            self.follow2.append(f2)
        # every row's base bias, made once: the same float32 values each step
        self.base = torch.zeros((len(sources) * repeat, vocab), dtype=torch.float32)
        self.base += bias * mask.repeat_interleave(repeat, dim=0)

    def follows(self, row: int, a: int, b: int) -> set[int] | None:
        """The tokens that continue a source span of ``row``'s prompt after ``a``, ``b``."""
        src = row // self.repeat
        return self.follow2[src].get((a, b)) or self.follow1[src].get(b)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        rows, width = scores.shape
        extra = self.base[:rows, :width].to(scores.device, scores.dtype, copy=True)
        for r, (a, b) in enumerate(input_ids[:, -2:].tolist()):
            nxt = self.follows(r, a, b)
            if nxt:
                extra[r, [t for t in nxt if t < width]] += 2 * self.bias
        return scores + extra


def copy_source(item: Item, history: Sequence[tuple[Item, Interaction]]) -> str:
    """The text a blurb may copy from: the item's facts and the user's own words."""
    words = " ".join(h.review for _, h in history[-5:] if h.review)
    return f"{item.title} {item.category} {' '.join(item.tags)} {item.description} {words}"


def _join(opening: str, continuation: str) -> str:
    continuation = continuation.strip()
    if not continuation:
        return opening + "."
    if continuation[0] in ".,;:!?":
        return opening + continuation
    return f"{opening} {continuation.lstrip()}"


def make_job(history: Sequence[tuple[Item, Interaction]], rec: Recommendation, catalog: Mapping[str, Item]) -> BlurbJob:
    """Everything one blurb needs (no model): the liked item behind it, its prompt, support and sentences."""
    because = catalog.get(rec.because[0].item_id) if rec.because else None
    return BlurbJob(
        history=history,
        rec=rec,
        because=because,
        prompt=build_prompt(rec.item, history, because),
        support=support_for(rec.item, history, because),
        history_ids=frozenset(item.id for item, _ in history),
        source=copy_source(rec.item, history),
        options=sentence_options(rec.item, because, history),
        quotable=history,
    )


def template_write(
    history: Sequence[tuple[Item, Interaction]],
    recs: Sequence[Recommendation],
    catalog: Mapping[str, Item],
    settings: Settings,
    note: str,
) -> list[Recommendation]:
    """Template blurbs (from facts) for every recommendation, marked as such: the same
    jobs, quotes claimed once per list, and guard as the generated ones."""
    index = TitleIndex(catalog.values())
    jobs = _one_quote_each([make_job(history, rec, catalog) for rec in recs])
    return [templated(job, index, settings, note) for job in jobs]


def templated(
    job: BlurbJob, index: TitleIndex, settings: Settings, note: str, *, fluency: FluencyModel | None = None
) -> Recommendation:
    """The template blurb for ``job`` (the one fallback of the generated and the
    generator-less paths), marked ``template``; ``grounded`` is the full guard's verdict,
    frames included, since a template is made of them."""
    text = template_blurb(
        job.rec.item,
        job.because,
        index,
        history=job.quotable,
        allowed=job.history_ids,
        max_chars=settings.max_blurb_chars,
    )
    grounded = check_blurb(
        text,
        job.rec.item,
        index,
        allowed=job.history_ids,
        max_chars=settings.max_blurb_chars,
        support=job.support,
        fluency=fluency,
        lead=job.prompt.opening,
        frames=True,
        because=job.because,
    ).ok
    return replace(job.rec, blurb=text, blurb_source="template", grounded=grounded, blurb_note=note)


class LazyWriter:
    """Resolves and loads the generator on the first blurb, so --no-blurbs loads nothing;
    then serves every request through one ``Batcher`` (concurrent requests share batched
    generate calls; ``generation_window_ms``, ``generation_batch_rows``, ``generation_queue_rows``).

    Blurbs never fail a list. They come from the template, marked
    ``blurb_source="template"`` with the reason in ``blurb_note``, when there is no
    generator (none trained, configured or cached: one warning says how to get one), when
    it fails to load or to generate, and when the batcher's queue is full ("busy": the
    recommendations are not delayed; the next turn tries again).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._writer: GPT2Writer | None = None
        self._failed: str | None = None  # why no generator could be loaded (logged once)
        self._lock = threading.Lock()

    def get(self) -> GPT2Writer:
        from recbot.generation.batching import Batcher
        from recbot.retrieval.embedder import MODEL_LOAD_LOCK

        with MODEL_LOAD_LOCK, self._lock:
            if self._writer is None:
                name = resolve_generator(self.settings)
                logger.info("loading generator %s", name)
                writer = GPT2Writer.load(name, self.settings)
                if self.settings.generation_window_ms >= 0:
                    writer.batcher = Batcher(
                        writer,
                        window_s=self.settings.generation_window_ms / 1000,
                        max_rows=self.settings.generation_batch_rows,
                        max_queue_rows=self.settings.generation_queue_rows,
                        mode=self.settings.generation_batching,
                    )
                self._writer = writer
            return self._writer

    def write(
        self, history: Sequence[tuple[Item, Interaction]], recs: Sequence[Recommendation], catalog: Mapping[str, Item]
    ) -> list[Recommendation]:
        writer = self._load()
        if writer is None:
            return template_write(history, recs, catalog, self.settings, f"templated: no generator ({self._failed})")
        try:
            return writer.write(history, recs, catalog)
        except Exception as exc:  # one failed generate costs that request its generated blurbs, nothing more
            return template_write(history, recs, catalog, self.settings, _failure_note(exc))

    def stream(
        self, history: Sequence[tuple[Item, Interaction]], recs: Sequence[Recommendation], catalog: Mapping[str, Item]
    ) -> Iterator[BlurbUpdate]:
        """Each blurb as it is written (all items at once, batched with other requests),
        then each finished recommendation (``BlurbUpdate.done``); marked templates when
        there is no generator, when it fails, or when it is busy."""
        writer = self._load()
        if writer is None:
            note = f"templated: no generator ({self._failed})"
            templated_recs = template_write(history, recs, catalog, self.settings, note)
            for i, filled in enumerate(templated_recs):
                yield BlurbUpdate(i, filled.blurb or "", filled)
            return
        finished: set[int] = set()
        try:
            for update in writer.stream_jobs(writer.jobs(history, recs, catalog), catalog):
                if update.done is not None:
                    finished.add(update.index)
                yield update
        except Exception as exc:  # the unfinished items are templated; the list goes on
            rest = [i for i in range(len(recs)) if i not in finished]
            templates = template_write(history, [recs[i] for i in rest], catalog, self.settings, _failure_note(exc))
            for i, template in zip(rest, templates, strict=True):
                yield BlurbUpdate(i, template.blurb or "", template)

    def warm_up(self) -> None:
        """Load the generator now if there is one (a missing or broken one is logged once)."""
        self._load()

    def _load(self) -> GPT2Writer | None:
        """The writer, or None (with the reason logged once) when none can be loaded."""
        if self._failed is not None:
            return None
        try:
            return self.get()
        except ModelNotFoundError as exc:
            self._failed = str(exc)
        except Exception as exc:  # a broken generator file: recommendations still come back
            self._failed = f"the generator failed to load ({type(exc).__name__}: {exc}); run: recbot train-generator"
        logger.warning("template blurbs: %s", self._failed)
        return None


def _failure_note(exc: BaseException) -> str:
    """``blurb_note`` of a template written because generation did not happen: busy or failed."""
    if isinstance(exc, BusyError):
        logger.info("blurb generator busy: template blurbs for this request")
        return f"templated: busy ({exc})"
    logger.error("blurb generation failed; template blurbs for this request", exc_info=exc)
    return f"templated: generation failed ({type(exc).__name__}: {exc})"
