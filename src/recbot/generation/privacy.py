"""Differentially private training of the blurb generator (DP-SGD through Opacus).

``recbot train-generator --dp-epsilon E [--dp-delta D]`` trains with DP-SGD: each
step draws a Poisson sample of the training examples (Opacus's ``DPDataLoader``),
clips every example's gradient to ``max_grad_norm`` and adds Gaussian noise whose scale
Opacus's accountant (PRV by default, RDP on request) chooses so that the planned number
of steps spends at most (E, D). Training may stop earlier (``time_budget_s``); the
epsilon actually spent is what ``card.json`` records.

What the guarantee covers, plainly:

- The unit is one **training example**: one (user, item) text, a prompt of the user's
  earlier items plus a target. One user has many examples (one per interaction, plus
  the fact-based examples built from their history), so a user with m examples is
  covered only at the group-privacy level: (m·ε, m·e^((m-1)·ε)·δ). For m > 1 and the
  usual ε this bound is weak; ``examples_per_user_max`` in the card gives m.
- It covers the saved weights. The catalog (titles, descriptions, tags) is treated as
  public: it shapes the prompts and, under DP, alone trains a from-scratch tokenizer and
  the guard's fluency corpus, so no review or history text is saved beside the weights.
  Amazon catalogs build item text from reviews: those reviews are outside the guarantee.
- Held-out examples are never trained on and, under DP, do not choose the weights or
  the stopping step. The card's summary numbers (held-out perplexity, unigram baseline,
  ``target_tokens``: the longest taught continuation, example counts) are computed
  without noise and are not covered.
- The noise and the sampling draw from torch generators seeded from the operating
  system's entropy (not from ``TrainConfig.seed``, which an attacker could know); they
  are not the cryptographically secure streams of Opacus's ``secure_mode``.
"""

from __future__ import annotations

import math
import re
import secrets
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from recbot.errors import ConfigError, MissingExtraError

__all__ = [
    "ACCOUNTANTS",
    "PrivateTraining",
    "check_settings",
    "compute_conv1d_grad_sample",
    "default_delta",
    "make_private",
    "per_example_loss",
    "quiet_opacus",
    "register_conv1d_grad_sampler",
    "require_opacus",
]

ACCOUNTANTS = ("prv", "rdp")
DEFAULT_DELTA_CAP = 1e-5


# Warnings that say nothing about this use, silenced where they arise (not globally):
_EXPECTED_WARNINGS = (
    # secure_mode needs torchcsprng; make_private seeds its generators from os entropy instead
    "Secure RNG turned off",
    # the accountant's search tries noise levels whose best Renyi order is the largest one
    # tried: the bound is then looser than it could be (epsilon over-, never under-stated)
    "Optimal order is the",
    # Opacus's hook on the token embedding, whose input (token ids) needs no gradient
    "Full backward hook is firing when gradients are computed with respect to module outputs",
)


@contextmanager
def quiet_opacus() -> Iterator[None]:
    """Silence the warnings Opacus and torch give for what this module does on purpose."""
    with warnings.catch_warnings():
        for message in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=re.escape(message))
        yield


def require_opacus(what: str = "training with --dp-epsilon") -> None:
    """Raise ``MissingExtraError`` naming the pip command when Opacus cannot be imported."""
    try:
        import opacus  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            f"{what} needs the 'privacy' extra (opacus not installed): pip install 'recbot[privacy]'"
        ) from exc


def check_settings(epsilon: float, delta: float | None, max_grad_norm: float, accountant: str) -> None:
    """Raise ``ConfigError`` for DP settings that cannot work (``delta`` None: the default)."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ConfigError(f"--dp-epsilon must be a positive number, got {epsilon}")
    if delta is not None and not 0 < delta < 1:
        raise ConfigError(f"--dp-delta must lie between 0 and 1, got {delta}")
    if not (max_grad_norm > 0 and math.isfinite(max_grad_norm)):
        raise ConfigError(f"--dp-max-grad-norm must be a positive number, got {max_grad_norm}")
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"the DP accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")


def default_delta(n_examples: int) -> float:
    """The largest power of ten below 1/n, and at most 1e-5 (δ must be well below 1/n:
    δ = 1/n would allow releasing one whole example)."""
    if n_examples < 1:
        raise ConfigError("no training examples to set a DP delta for")
    return min(DEFAULT_DELTA_CAP, 10.0 ** -(math.floor(math.log10(n_examples)) + 1))


def compute_conv1d_grad_sample(layer: Any, activations: list[Any], backprops: Any) -> dict[Any, Any]:
    """Per-example gradients of ``transformers.pytorch_utils.Conv1D`` (y = x @ W + b, W
    shaped [in, out]): the ``nn.Linear`` rule with the weight transposed, summed over the
    sequence positions. ``activations``: the layer's input [n, ..., in]; ``backprops``:
    the gradient of the loss at its output [n, ..., out], already scaled by Opacus."""
    import torch

    x = activations[0].to(backprops.dtype)
    out = {}
    if layer.weight.requires_grad:
        out[layer.weight] = torch.einsum("n...i,n...j->nij", x, backprops)
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = torch.einsum("n...j->nj", backprops)
    return out


def register_conv1d_grad_sampler() -> None:
    """Teach Opacus's hooks GPT-2's ``Conv1D``.

    Opacus 1.6 would otherwise fall back to functorch for it (``vmap(grad)`` of the
    layer's forward, run again on the saved input): that works, but costs a second
    forward per layer and per step. The einsum rule above reads the activations and
    backprops the hooks already keep, as Opacus's own ``nn.Linear`` sampler does, and
    ``tests/test_dp_training.py`` checks it against one backward pass per example.
    Registering is idempotent (a dict entry keyed by the class)."""
    from opacus.grad_sample import register_grad_sampler
    from transformers.pytorch_utils import Conv1D

    register_grad_sampler(Conv1D)(compute_conv1d_grad_sample)


def per_example_loss(logits: Any, labels: Any) -> Any:
    """Each example's mean next-token loss over its own target tokens, shape [n].

    Hugging Face's loss averages over every target token of the batch, which makes one
    example's gradient depend on the other examples' lengths: then removing an example
    changes the others' gradients too and per-example clipping no longer bounds its
    influence. The mean of these is what DP-SGD differentiates."""
    import torch

    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    tokens = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100, reduction="none"
    ).view(shift_labels.shape)
    counts = (shift_labels != -100).sum(dim=1).clamp(min=1)
    return tokens.sum(dim=1) / counts


@dataclass
class PrivateTraining:
    """What ``make_private`` set up: use ``optimizer`` and ``loader`` in place of the
    plain ones, call ``close()`` when done (the model is plain again)."""

    model: Any  # the plain model, with Opacus's hooks until close()
    engine: Any  # opacus.PrivacyEngine
    hooks: Any  # opacus GradSampleHooks on the unwrapped model
    optimizer: Any  # opacus DPOptimizer around the given optimizer
    loader: Any  # opacus DPDataLoader (Poisson sampling)
    noise_multiplier: float
    sample_rate: float
    target_epsilon: float
    delta: float
    max_grad_norm: float
    accountant: str

    def empty_batch(self) -> None:
        """Prepare the step of an empty Poisson batch (GPT-2 cannot run a forward on
        zero rows): zero per-example gradients, so ``optimizer.step()`` adds the noise
        alone and the accountant counts the step, as it assumes every step happens."""
        import torch

        for p in self.model.parameters():
            if p.requires_grad:
                p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)

    def spent_epsilon(self) -> float:
        """ε spent so far at ``delta`` (0 before the first step)."""
        if len(self.engine.accountant) == 0:
            return 0.0
        with quiet_opacus():
            return float(self.engine.get_epsilon(self.delta))

    def summary(self, steps: int, examples_per_user_max: int) -> dict[str, Any]:
        """The card's ``dp`` entry; every value finite (valid JSON)."""
        spent = self.spent_epsilon()
        if not math.isfinite(spent):
            raise ConfigError(f"the {self.accountant} accountant returned epsilon {spent}")
        return {
            "epsilon": round(spent, 4),
            "target_epsilon": self.target_epsilon,
            "delta": self.delta,
            "max_grad_norm": self.max_grad_norm,
            "noise_multiplier": round(self.noise_multiplier, 4),
            "accountant": self.accountant,
            "unit": "example",
            "sample_rate": self.sample_rate,
            "steps": steps,
            "examples_per_user_max": examples_per_user_max,
            "secure_mode": False,
        }

    def close(self) -> None:
        """Remove Opacus's hooks and per-parameter attributes from the model."""
        self.hooks.cleanup()


def make_private(
    model: Any,
    optimizer: Any,
    loader: Any,
    *,
    target_epsilon: float,
    delta: float,
    steps: int,
    max_grad_norm: float,
    accountant: str = "prv",
) -> PrivateTraining:
    """Attach DP-SGD to a plain (unwrapped, float32) ``model``, its ``optimizer`` and a
    plain ``loader`` whose ``batch_size`` sets the expected batch size.

    The noise multiplier is the smallest (to Opacus's search tolerance) that keeps ``steps``
    Poisson-sampled steps within (``target_epsilon``, ``delta``) for ``accountant``.

    GPT-2 ties ``lm_head.weight`` to ``transformer.wte.weight``. Opacus's hooks handle a
    parameter shared by several layers: each layer's forward counts up a per-parameter
    counter, each layer's backward adds its per-example gradient to the same buffer, and
    the sum is kept when the count is back to zero (``promote_current_grad_sample``), so
    the tied matrix gets the sum of both uses, clipped as one parameter. The test compares
    the whole model's per-example gradients, tied matrix included, with single-example
    backward passes. Position embeddings have Opacus's ``nn.Embedding`` rule as long as the
    caller passes ``position_ids`` with the batch dimension (GPT-2 builds them as [1, T],
    which would read as a batch of one).
    """
    import torch
    from opacus import PrivacyEngine
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.data_loader import DPDataLoader

    check_settings(target_epsilon, delta, max_grad_norm, accountant)
    if steps < 1:
        raise ConfigError("DP training needs at least one step")
    register_conv1d_grad_sampler()
    device = next(model.parameters()).device
    # Secret randomness: the sampling and the noise must not be reproducible from the seed.
    sampling_rng = torch.Generator().manual_seed(secrets.randbits(63))
    noise_rng = torch.Generator(device=device).manual_seed(secrets.randbits(63))
    dp_loader = DPDataLoader.from_data_loader(loader, generator=sampling_rng)
    sample_rate = 1 / len(dp_loader)  # what make_private hands the accountant
    with quiet_opacus():
        sigma = get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
        )
        engine = PrivacyEngine(accountant=accountant)
    hooks, dp_optimizer, dp_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=dp_loader,
        noise_multiplier=sigma,
        max_grad_norm=max_grad_norm,
        poisson_sampling=False,  # dp_loader already samples (with sampling_rng); the accountant assumes it
        noise_generator=noise_rng,
        grad_sample_mode="hooks",
        wrap_model=False,  # hooks on the model itself: it stays a GPT2LMHeadModel
    )
    hooks.forbid_grad_accumulation()  # one optimizer step per Poisson batch, as accounted
    return PrivateTraining(
        model=model,
        engine=engine,
        hooks=hooks,
        optimizer=dp_optimizer,
        loader=dp_loader,
        noise_multiplier=float(sigma),
        sample_rate=sample_rate,
        target_epsilon=float(target_epsilon),
        delta=float(delta),
        max_grad_norm=float(max_grad_norm),
        accountant=accountant,
    )
