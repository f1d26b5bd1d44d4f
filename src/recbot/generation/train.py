"""Train the blurb generator on the stored catalog and interactions.

Examples: for each interaction, the prompt is the user's *earlier* history plus the
item's facts (see ``prompts.build_prompt``). The target depends on the catalog:

- ``reviews`` (review dumps such as Amazon, where most interactions carry one): the
  user's own review of the item;
- ``facts`` (catalogs with descriptions and tags): a continuation built from what the
  item shares with the liked item behind it, the user's own words about a liked item,
  and the item's first description sentence (``prompts.fact_continuation``), in one of
  a few connective frames. It depends on the user, not only on the item.

Extra examples pair every catalog item with other users' histories, so the model sees
the whole catalog. Loss is on the target only.

Training stops after ``max_steps`` or when the held-out loss stops improving
(``patience`` evaluations in a row without a relative gain of ``min_delta``), never on
the clock unless ``time_budget_s`` is set explicitly: the same data and seed give the
same weights on a busy machine as on a quiet one. The best weights seen are kept.

With a pretrained GPT-2 (``--base gpt2`` or a path) the model is fine-tuned, with the
marker tokens added; where none loads (``--base scratch``, or ``auto`` offline), a
byte-level BPE tokenizer and a small GPT-2 are trained from scratch. ``accelerate``
runs the loop, so the same command uses a GPU (or several) where there is one.

With ``dp_epsilon`` set (``--dp-epsilon``), training is differentially private (DP-SGD
through Opacus, ``recbot.generation.privacy``): per-example clipping, Gaussian noise,
Poisson sampling, float32 on one device, no accelerate, no checkpoints to resume from,
and the held-out examples do not choose the weights. The guarantee is per training
example, i.e. per (user, item) text; a user with m examples is covered only at the
group level (about m·ε). ``card.json`` records the ε actually spent under ``dp`` (null
without DP).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recbot.errors import ConfigError, IndexNotBuiltError, ModelNotFoundError
from recbot.generation.guard import OPENING_WORD
from recbot.generation.prompts import (
    BECAUSE,
    BLURB,
    END,
    ITEM,
    LINK_FRAMES,
    PAD,
    PLAIN_FRAMES,
    USER,
    build_prompt,
    clean,
    fact_continuation,
    review_words,
)
from recbot.generation.support import liked
from recbot.generation.writer import FLUENCY_FILE
from recbot.types import Interaction, Item

__all__ = ["Example", "TrainConfig", "TrainReport", "build_examples", "train_generator", "unigram_perplexity"]

logger = logging.getLogger(__name__)
MARKER_TOKENS = [ITEM, USER, BECAUSE, BLURB]


@dataclass(frozen=True)
class TrainConfig:
    """How to train the generator. Defaults suit the bundled demo on 2 CPU cores."""

    base: str = "auto"  # auto: gpt2 from the local cache if any, else scratch; or scratch; or an id/path
    epochs: int = 3  # passes over the training examples (max_steps wins when smaller)
    max_steps: int | None = None  # stop after this many optimizer steps
    eval_every: int = 50  # steps between held-out evaluations (convergence check); 0: never
    patience: int = 2  # stop after this many evaluations without a relative gain of min_delta
    min_delta: float = 0.01  # relative held-out loss gain that counts as improving
    time_budget_s: float | None = None  # explicit opt-in: stop after this many seconds (not reproducible)
    targets: str = "auto"  # "reviews", "facts", or auto: reviews when >= 80% of interactions carry one
    batch_size: int = 16
    learning_rate: float | None = None  # None: 1e-3 from scratch, 5e-5 fine-tuning
    n_layer: int = 4  # from-scratch model shape (5.3M parameters with the defaults)
    n_embd: int = 256
    n_head: int = 4
    vocab_size: int = 8000  # BPE vocabulary (a small corpus stops earlier)
    block_size: int = 256  # tokens of prompt + target
    holdout_last: bool = False  # hold out each user's last interaction (leave-last-out)
    eval_fraction: float = 0.1  # otherwise: this share of examples is held out
    augment_per_item: int = 3  # fact-based examples per catalog item
    max_target_chars: int = 220  # of a review used as target
    mixed_precision: str = "no"  # float32: the same weights on any CPU; "auto" (bf16 where supported), "bf16", "fp16"
    checkpoint_every: int = 200  # steps between resumable checkpoints (never under DP)
    seed: int = 0
    # Differential privacy (DP-SGD through Opacus, the 'privacy' extra); None: off.
    dp_epsilon: float | None = None  # the ε to spend at most, per training example
    dp_delta: float | None = None  # None: the largest power of ten below 1/examples, at most 1e-5
    dp_max_grad_norm: float = 1.0  # each example's gradient is clipped to this L2 norm
    dp_accountant: str = "prv"  # Opacus accountant: "prv" (tighter) or "rdp"


# What `recbot demo` trains when no generator exists: a step budget (not a clock) sized
# to finish within ~5 minutes on 2 quiet CPU cores, stopping earlier on convergence.
DEMO_STEPS = 400
DEMO_CONFIG = TrainConfig(epochs=40, max_steps=DEMO_STEPS, eval_every=40, patience=3)


@dataclass(frozen=True)
class Example:
    prompt: str  # ends with the fixed opening
    target: str  # the continuation the model learns to write
    user_id: str
    item_id: str
    held_out: bool = False


@dataclass
class TrainReport:
    out_dir: str
    base: str
    steps: int
    examples_train: int
    examples_held_out: int
    held_out_perplexity: float | None  # None: no held-out examples (or a loss that was not finite)
    unigram_perplexity: float | None  # None: likewise
    seconds: float
    parameters: int
    stopped_by: str
    targets: str = "facts"  # what the model was taught to write: "facts" continuations or "reviews"
    target_tokens: int = 0  # the longest taught continuation, in tokens (the writer's budget)
    config: dict[str, Any] = field(default_factory=dict)
    dp: dict[str, Any] | None = None  # differential privacy spent (privacy.PrivateTraining.summary); None: off

    def lines(self) -> list[str]:
        out = [
            f"generator saved to {self.out_dir} ({self.parameters / 1e6:.1f}M parameters, base: {self.base})",
            f"{self.steps} steps on {self.examples_train} examples in {self.seconds:.0f}s "
            f"(stopped by {self.stopped_by})",
            _perplexity_line(self),
        ]
        if self.dp:
            out.append(_dp_line(self.dp))
        return out


def _perplexity_line(report: TrainReport, label: str = "held-out perplexity") -> str:
    if report.held_out_perplexity is None:
        why = "no held-out examples" if not report.examples_held_out else "the held-out loss was not finite"
        return f"{label} not measured ({why})"
    unigram = f"{report.unigram_perplexity:.1f}" if report.unigram_perplexity is not None else "not measured"
    return (
        f"{label} {report.held_out_perplexity:.1f} on {report.examples_held_out} examples "
        f"(unigram baseline on the same text: {unigram})"
    )


def _finite(value: float) -> float | None:
    """``value`` rounded to 2 decimals, or None when it is NaN or infinite: ``card.json`` is
    strict JSON, which has no NaN."""
    return round(value, 2) if math.isfinite(value) else None


def _dp_line(dp: Mapping[str, Any]) -> str:
    return (
        f"differentially private: epsilon {dp['epsilon']:.2f} spent (target {dp['target_epsilon']:g}) "
        f"at delta {dp['delta']:g} per training example ({dp['accountant']} accountant, noise multiplier "
        f"{dp['noise_multiplier']:.3f}, clip {dp['max_grad_norm']:g}); a user with m examples "
        f"(here up to {dp['examples_per_user_max']}) is covered only at about m x epsilon"
    )


def _variant(user: str, item: str) -> int:
    """A stable choice of frame per (user, item): Python's hash() is salted per process."""
    return zlib.crc32(f"{user}|{item}".encode())


def target_mode(interactions: Sequence[Interaction], config: TrainConfig) -> str:
    if config.targets in ("reviews", "facts"):
        return config.targets
    if config.targets != "auto":
        raise ConfigError(f"targets must be 'auto', 'reviews' or 'facts', got {config.targets!r}")
    reviewed = sum(bool(h.review) for h in interactions)
    return "reviews" if interactions and reviewed >= 0.8 * len(interactions) else "facts"


def _review_target(review: str, limit: int) -> str:
    text = review_words(review, limit)
    return ": " + text if text else ""


def build_examples(
    catalog: Mapping[str, Item],
    interactions: Sequence[Interaction],
    vectors: Mapping[str, np.ndarray],
    config: TrainConfig,
) -> list[Example]:
    """(prompt, target) pairs from the catalog and interactions; see the module docstring."""
    rng = random.Random(config.seed)
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for h in interactions:
        if h.item_id in catalog:
            by_user[h.user_id].append(h)
    for hist in by_user.values():
        hist.sort(key=lambda h: (h.timestamp or 0, h.item_id))

    def because_for(item_id: str, earlier: Sequence[Interaction]) -> Item | None:
        liked_items = [h for h in earlier if liked(h) and h.item_id in vectors]
        if not liked_items or item_id not in vectors:
            return None
        sims = [float(vectors[item_id] @ vectors[h.item_id]) for h in liked_items]
        return catalog[liked_items[int(np.argmax(sims))].item_id]

    mode = target_mode(interactions, config)

    def example(user: str, h: Interaction | None, item: Item, earlier: Sequence[Interaction], held: bool) -> Example:
        pairs = [(catalog[e.item_id], e) for e in earlier[-10:]]
        because = because_for(item.id, earlier)
        target = _review_target(h.review, config.max_target_chars) if mode == "reviews" and h and h.review else ""
        target = target or fact_continuation(item, because, pairs, variant=_variant(user, item.id))
        return Example(build_prompt(item, pairs, because).text, target, user, item.id, held)

    examples: list[Example] = []
    for user, hist in sorted(by_user.items()):
        for j, h in enumerate(hist):
            held_out = config.holdout_last and j == len(hist) - 1
            if not held_out and h.disliked:
                continue  # a blurb recommends: do not learn from complaints
            examples.append(example(user, h, catalog[h.item_id], hist[:j], held_out))
    users = sorted(by_user)
    if users and config.augment_per_item:
        for item in catalog.values():
            for _ in range(config.augment_per_item):
                user = rng.choice(users)
                hist = [h for h in by_user[user] if h.item_id != item.id]
                if config.holdout_last:
                    hist = hist[:-1]
                cut = rng.randint(0, len(hist))
                examples.append(example(user, None, item, hist[:cut], False))
    if not config.holdout_last:
        order = list(range(len(examples)))
        rng.shuffle(order)
        n_eval = max(1, int(len(examples) * config.eval_fraction)) if len(examples) > 1 else 0
        held = set(order[:n_eval])
        examples = [Example(e.prompt, e.target, e.user_id, e.item_id, i in held) for i, e in enumerate(examples)]
    return examples


def unigram_perplexity(train: Sequence[Sequence[int]], held_out: Sequence[Sequence[int]], vocab_size: int) -> float:
    """Perplexity of an add-one unigram model fitted on ``train`` token ids."""
    counts: Counter[int] = Counter(t for seq in train for t in seq)
    total = sum(counts.values()) + vocab_size
    tokens = [t for seq in held_out for t in seq]
    if not tokens:
        return float("nan")
    nll = -sum(math.log((counts[t] + 1) / total) for t in tokens)
    return math.exp(nll / len(tokens))


def _make_scratch_tokenizer(corpus: Sequence[str], vocab_size: int) -> Any:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus, vocab_size=vocab_size, min_frequency=2, special_tokens=[END, PAD, *MARKER_TOKENS], show_progress=False
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=END,
        eos_token=END,
        unk_token=END,
        pad_token=PAD,
        additional_special_tokens=MARKER_TOKENS,
        model_max_length=100_000,
    )


def _load_base(config: TrainConfig, corpus: Sequence[str]) -> tuple[Any, Any, str]:
    """(model, tokenizer, what it is) for the configured base."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from recbot.retrieval.embedder import load_pretrained

    base = config.base
    if base == "auto":
        from huggingface_hub import try_to_load_from_cache

        base = "gpt2" if isinstance(try_to_load_from_cache("gpt2", "config.json"), str) else "scratch"
    if base != "scratch":
        try:
            tokenizer = load_pretrained(AutoTokenizer, base)
            model = load_pretrained(GPT2LMHeadModel, base, use_safetensors=True)
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(f"{exc}; use --base scratch to train a small GPT-2 from scratch") from exc
        added = tokenizer.add_special_tokens({"pad_token": PAD, "additional_special_tokens": MARKER_TOKENS})
        if added:
            model.resize_token_embeddings(len(tokenizer))
        return model, tokenizer, f"fine-tuned from {base}"
    tokenizer = _make_scratch_tokenizer(corpus, config.vocab_size)
    gpt_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(gpt_config), tokenizer, "trained from scratch"


def _encode(examples: Sequence[Example], tokenizer: Any, block_size: int) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per example; labels mask the prompt with -100."""
    out = []
    eos = tokenizer.eos_token_id
    for e in examples:
        p = tokenizer(e.prompt, add_special_tokens=False)["input_ids"]
        t = tokenizer(e.target, add_special_tokens=False)["input_ids"] + [eos]
        room = block_size - len(t)
        if room < 16:
            t = t[: block_size - 16]
            room = 16
        p = p[-room:]
        out.append((p + t, [-100] * len(p) + t))
    return out


def _collate(batch: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _auto_precision() -> str:
    """bf16 where the hardware has it (measured here: 1.6-1.7x faster steps on an
    avx512_bf16 CPU), else full precision."""
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "no"
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "no"


def _held_out_perplexity(model: Any, data: Sequence[tuple[list[int], list[int]]], pad_id: int, device: Any) -> float:
    import torch

    if not data:
        return float("nan")
    nll, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(data), 32):
            batch = {k: v.to(device) for k, v in _collate(data[start : start + 32], pad_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            shift_logits, shift_labels = logits[:, :-1], batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)),
                shift_labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            nll += float(loss)
            count += int((shift_labels != -100).sum())
    model.train()
    return math.exp(nll / max(count, 1))


def train_generator(
    catalog: Mapping[str, Item],
    interactions: Sequence[Interaction],
    vectors: Mapping[str, np.ndarray],
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
) -> TrainReport:
    """Train (or fine-tune) the generator and save it to ``out_dir``.

    Saves safetensors weights, the tokenizer and ``card.json``/``README.md`` (data,
    steps, held-out perplexity, time). ``card.json`` is strict JSON: a perplexity that
    could not be measured (no held-out examples) is ``null``, never ``NaN``; read it with
    ``recbot.generation.writer.read_card``. Checkpoints under ``out_dir.checkpoints`` let
    an interrupted run resume with the same command.

    With ``config.dp_epsilon``, trains with DP-SGD (Opacus): the saved weights are
    (ε, δ)-differentially private with respect to each *training example* (one user's
    text about one item), with ε the value spent, recorded in ``card.json`` under ``dp``
    with δ, the noise multiplier, the clipping norm and the accountant. A user with m
    examples is protected only at the group level, about m·ε (``dp.examples_per_user_max``
    gives the largest m). The catalog counts as public; a from-scratch tokenizer and the
    fluency corpus are then built from it alone. δ defaults to the largest power of ten
    below 1/(training examples), at most 1e-5. See ``recbot.generation.privacy``.

    Raises:
        IndexNotBuiltError: the catalog is empty.
        ModelNotFoundError: an explicit base model cannot be loaded.
        MissingExtraError: ``dp_epsilon`` is set and Opacus is not installed.
        ConfigError: a setting that cannot work (a DP setting out of range too).
    """
    from accelerate.utils import set_seed

    private = config.dp_epsilon is not None
    if config.dp_epsilon is not None:
        from recbot.generation.privacy import check_settings, require_opacus

        require_opacus()
        check_settings(config.dp_epsilon, config.dp_delta, config.dp_max_grad_norm, config.dp_accountant)
        if config.mixed_precision not in ("no", "auto"):
            raise ConfigError("DP training runs in float32: leave mixed_precision at 'no'")
    elif config.dp_delta is not None:
        raise ConfigError("--dp-delta needs --dp-epsilon")
    if not catalog:
        raise IndexNotBuiltError("no catalog ingested: run recbot ingest first")
    if config.batch_size < 1 or config.epochs < 1:
        raise ConfigError("batch_size and epochs must be at least 1")
    started = time.perf_counter()
    set_seed(config.seed)
    out_dir = Path(out_dir)
    examples = build_examples(catalog, interactions, vectors, config)
    train = [e for e in examples if not e.held_out]
    held = [e for e in examples if e.held_out]
    if not train:
        raise IndexNotBuiltError("no training examples: ingest a catalog and interactions first")
    if private:  # a tokenizer learnt from the users' text would carry their rare words outside the guarantee
        corpus = [i.text for i in catalog.values()] + [
            build_prompt(i, [], None).text + c for i in catalog.values() for c in _public_continuations(i)
        ]
    else:
        corpus = [e.prompt + e.target for e in train] + [i.text for i in catalog.values()]
    model, tokenizer, base_desc = _load_base(config, corpus)
    pad_id = tokenizer.pad_token_id
    block = min(config.block_size, int(model.config.n_positions))
    train_data = _encode(train, tokenizer, block)
    held_data = _encode(held, tokenizer, block)
    steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    lr = config.learning_rate or (5e-5 if config.base not in ("scratch",) and base_desc.startswith("fine") else 1e-3)
    ckpt = out_dir.with_name(out_dir.name + ".checkpoints")
    dp: dict[str, Any] | None = None
    if private:
        most = max(Counter(e.user_id for e in train).values())  # group privacy: a user's examples
        unwrapped, step, stopped_by, dp = _train_private(model, train_data, pad_id, config, lr, total, most)
        device = next(unwrapped.parameters()).device
    else:
        unwrapped, step, stopped_by, device = _train_accelerated(
            model, train_data, held_data, pad_id, config, lr, total, steps_per_epoch, ckpt
        )
    ppl = _held_out_perplexity(unwrapped, held_data, pad_id, device)
    targets = [[t for t in y if t != -100] for _, y in train_data]
    uni = unigram_perplexity(targets, [[t for t in y if t != -100] for _, y in held_data], len(tokenizer))
    report = TrainReport(
        out_dir=str(out_dir),
        base=base_desc,
        steps=step,
        examples_train=len(train),
        examples_held_out=len(held),
        held_out_perplexity=_finite(ppl),
        unigram_perplexity=_finite(uni),
        seconds=round(time.perf_counter() - started, 1),
        parameters=sum(p.numel() for p in unwrapped.parameters()),
        stopped_by=stopped_by,
        targets=target_mode(interactions, config),
        target_tokens=max((sum(1 for t in y if t != -100) for _, y in train_data), default=0),
        config=asdict(config),
        dp=dp,
    )
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    unwrapped.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "card.json").write_text(json.dumps(asdict(report), indent=2, allow_nan=False))  # strict JSON
    fluency = _public_fluency_texts(catalog) if private else _fluency_texts(catalog, interactions, train)
    (tmp / FLUENCY_FILE).write_text("\n".join(fluency) + "\n", encoding="utf-8")
    (tmp / "README.md").write_text(_card(report, catalog, interactions))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    shutil.rmtree(ckpt, ignore_errors=True)
    return report


def _train_accelerated(
    model: Any,
    train_data: list[tuple[list[int], list[int]]],
    held_data: list[tuple[list[int], list[int]]],
    pad_id: int,
    config: TrainConfig,
    lr: float,
    total: int,
    steps_per_epoch: int,
    ckpt: Path,
) -> tuple[Any, int, str, Any]:
    """The ordinary loop under accelerate: (unwrapped model, steps, stopped by, device)."""
    import torch
    from accelerate import Accelerator
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    mp = config.mixed_precision if config.mixed_precision != "auto" else _auto_precision()
    accelerator = Accelerator(mixed_precision=mp)
    generator = torch.Generator().manual_seed(config.seed)
    loader: Any = torch.utils.data.DataLoader(
        train_data,  # type: ignore[arg-type]
        batch_size=config.batch_size,
        shuffle=True,
        generator=generator,
        collate_fn=lambda b: _collate(b, pad_id),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, total // 20), total)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    device = accelerator.device
    step = 0
    if (ckpt / "state.json").exists():
        saved = json.loads((ckpt / "state.json").read_text())
        if saved.get("config") == asdict(config) and saved.get("examples") == len(train_data):
            accelerator.load_state(str(ckpt))
            step = int(saved["step"])
            logger.info("resuming from step %d", step)
    model.train()
    stopped_by = "epochs" if config.max_steps is None or total < config.max_steps else "max_steps"
    show = logger.getEffectiveLevel() <= logging.INFO
    desc = "Training generator" + (f" (at most {config.time_budget_s:.0f}s)" if config.time_budget_s else "")
    bar = tqdm(total=total, initial=step, desc=desc, unit="step", disable=not show)
    train_start = time.perf_counter()
    best: tuple[float, int, dict[str, Any]] | None = None  # (held-out loss, step, weights)
    stale = 0
    done = step >= total
    while not done:
        epoch, skip = divmod(step, steps_per_epoch)
        generator.manual_seed(config.seed + epoch)  # same order on resume
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in batches:
            loss = model(**batch).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                accelerator.save_state(str(ckpt))
                (ckpt / "state.json").write_text(
                    json.dumps({"step": step, "config": asdict(config), "examples": len(train_data)})
                )
            if held_data and config.eval_every and step % config.eval_every == 0:
                held_loss = math.log(_held_out_perplexity(accelerator.unwrap_model(model), held_data, pad_id, device))
                logger.info("step %d: held-out loss %.4f", step, held_loss)
                if best is None or held_loss < best[0] * (1 - config.min_delta):
                    stale = 0
                else:
                    stale += 1
                if best is None or held_loss < best[0]:
                    weights = accelerator.unwrap_model(model).state_dict()
                    best = (held_loss, step, {k: v.detach().clone() for k, v in weights.items()})
                if stale >= config.patience:
                    stopped_by, done = f"convergence (best held-out loss at step {best[1]})", True
                    break
            if step >= total:
                done = True
                break
            if config.time_budget_s is not None and time.perf_counter() - train_start > config.time_budget_s:
                stopped_by, done = "time_budget", True
                break
    bar.close()
    if best is not None and held_data:  # keep the best weights seen, if the last ones are worse
        last = math.log(_held_out_perplexity(accelerator.unwrap_model(model), held_data, pad_id, device))
        if best[0] < last:
            accelerator.unwrap_model(model).load_state_dict(best[2])
    return accelerator.unwrap_model(model), step, stopped_by, device


def _train_private(
    model: Any,
    train_data: list[tuple[list[int], list[int]]],
    pad_id: int,
    config: TrainConfig,
    lr: float,
    total: int,
    examples_per_user_max: int,
) -> tuple[Any, int, str, dict[str, Any]]:
    """DP-SGD through Opacus: (plain model, steps, stopped by, the card's ``dp`` entry).

    Opacus must see the raw module, optimizer and loader, so accelerate is not used: one
    device, float32 (no autocast: per-example gradients and the noise stay in full
    precision). No checkpoints: a resumed run would restart the accountant. No
    held-out checks: choosing weights or the stopping step on the held-out examples would
    release something about them that the accountant does not count.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    from recbot.generation.privacy import default_delta, make_private, per_example_loss, quiet_opacus

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device=device, dtype=torch.float32)
    model.train()
    loader: Any = torch.utils.data.DataLoader(
        train_data,  # type: ignore[arg-type]
        batch_size=config.batch_size,  # the expected size of the Poisson batches
        collate_fn=lambda b: _collate(b, pad_id),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, total // 20), total)
    delta = config.dp_delta if config.dp_delta is not None else default_delta(len(train_data))
    assert config.dp_epsilon is not None
    session = make_private(
        model,
        optimizer,
        loader,
        target_epsilon=config.dp_epsilon,
        delta=delta,
        steps=total,
        max_grad_norm=config.dp_max_grad_norm,
        accountant=config.dp_accountant,
    )
    logger.info(
        "DP-SGD: noise multiplier %.3f for %d steps at sample rate %.4f (epsilon <= %g, delta %g)",
        session.noise_multiplier,
        total,
        session.sample_rate,
        config.dp_epsilon,
        delta,
    )
    stopped_by = "epochs" if config.max_steps is None or total < config.max_steps else "max_steps"
    show = logger.getEffectiveLevel() <= logging.INFO
    bar = tqdm(total=total, desc="Training generator (DP-SGD)", unit="step", disable=not show)
    train_start = time.perf_counter()
    step = 0
    try:
        while step < total and stopped_by != "time_budget":
            for batch in session.loader:
                n = batch["input_ids"].shape[0] if isinstance(batch, Mapping) else 0
                if n == 0:  # an empty Poisson batch still takes its (noise-only) step
                    session.empty_batch()
                else:
                    batch = {k: v.to(device) for k, v in batch.items()}
                    width = batch["input_ids"].shape[1]
                    # [n, T], not GPT-2's default [1, T]: Opacus reads dim 0 as the batch
                    positions = torch.arange(width, device=device).expand(n, width)
                    logits = model(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=positions
                    ).logits
                    loss = per_example_loss(logits, batch["labels"]).mean()
                    with quiet_opacus():
                        loss.backward()
                session.optimizer.step()  # clip per example, add noise, count the step
                scheduler.step()
                session.optimizer.zero_grad()
                step += 1
                bar.update(1)
                if step % 10 == 0 and n:
                    bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
                if step >= total:
                    break
                if config.time_budget_s is not None and time.perf_counter() - train_start > config.time_budget_s:
                    stopped_by = "time_budget"
                    break
    finally:
        bar.close()
        session.close()
    return model, step, stopped_by, session.summary(step, examples_per_user_max)


def _public_continuations(item: Item) -> list[str]:
    """Every connective frame filled from the catalog alone: no user's words or choices
    (what a DP run's tokenizer and fluency corpus may see of the frames)."""
    out = [fact_continuation(item, None, (), variant=v) for v in range(len(PLAIN_FRAMES))]
    if item.tags:  # the item as its own liked item: every tag shared
        out += [fact_continuation(item, item, (), variant=v) for v in range(len(LINK_FRAMES))]
    if item.category:
        out.append(fact_continuation(item, Item(id="", title="", category=item.category), ()))
    return out


def _fluency_texts(
    catalog: Mapping[str, Item], interactions: Sequence[Interaction], train: Sequence[Example]
) -> list[str]:
    """What the fluency model is fitted on: the catalog's descriptions, the reviews, and
    the taught continuations after the opening's stand-in word (one text a line)."""
    descriptions = [clean(i.description) for i in catalog.values() if i.description]
    reviews = [clean(h.review) for h in interactions if h.review]
    frames = sorted({OPENING_WORD + e.target for e in train})
    return [t for t in (*descriptions, *reviews, *frames) if t]


def _public_fluency_texts(catalog: Mapping[str, Item]) -> list[str]:
    """The fluency corpus of a DP run: the catalog's descriptions and the frames filled
    from the catalog alone, no review or history (it is saved beside the weights)."""
    descriptions = [clean(i.description) for i in catalog.values() if i.description]
    frames = sorted({OPENING_WORD + c for i in catalog.values() for c in _public_continuations(i)})
    return [t for t in (*descriptions, *frames) if t]


def _card(report: TrainReport, catalog: Mapping[str, Item], interactions: Sequence[Interaction]) -> str:
    return (
        "# recbot blurb generator\n\n"
        f"- Base: {report.base}; {report.parameters / 1e6:.1f}M parameters.\n"
        f"- Data: {len(catalog)} catalog items, {len(interactions)} interactions; "
        f"{report.examples_train} training and {report.examples_held_out} held-out examples.\n"
        f"- Training: {report.steps} steps in {report.seconds:.0f}s (stopped by {report.stopped_by}).\n"
        f"- {_perplexity_line(report, 'Held-out perplexity (target tokens):')}.\n"
        "- Prompt frame: see recbot.generation.prompts.\n"
        + (f"- Privacy: {_dp_line(report.dp)}.\n" if report.dp else "- Privacy: not differentially private.\n")
    )
