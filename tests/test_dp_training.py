"""Differentially private training of the generator (DP-SGD through Opacus)."""

from __future__ import annotations

import builtins
import json
import math
import sys
from pathlib import Path

import pytest

from recbot.cli import main
from recbot.errors import ConfigError, MissingExtraError
from recbot.generation.train import TrainConfig
from tests.test_cli import cli_ingest

TINY = {"base": "scratch", "n_layer": 1, "n_embd": 16, "n_head": 2, "vocab_size": 300, "block_size": 96}


def test_dp_training_spends_at_most_the_target_and_saves_a_plain_gpt2(tmp_path: Path, toy_recommender) -> None:
    pytest.importorskip("opacus")
    from recbot.generation.writer import GPT2Writer

    out = tmp_path / "gen"
    report = toy_recommender.train_generator(
        TrainConfig(**TINY, max_steps=4, batch_size=4, dp_epsilon=8.0), out_dir=out
    )
    card = json.loads((out / "card.json").read_text())  # strict JSON: no Infinity/NaN in the dp entry
    dp = card["dp"]
    assert report.dp == dp and report.steps == 4 and dp["steps"] == 4
    assert 0 < dp["epsilon"] <= 8.0 + 0.1 and math.isfinite(dp["epsilon"])
    assert dp["target_epsilon"] == 8.0 and dp["unit"] == "example" and dp["accountant"] == "prv"
    n_train = report.examples_train
    assert dp["delta"] == min(1e-5, 10.0 ** -(math.floor(math.log10(n_train)) + 1)) and dp["delta"] < 1 / n_train
    assert dp["max_grad_norm"] == 1.0 and dp["noise_multiplier"] > 0 and 0 < dp["sample_rate"] <= 1
    assert dp["examples_per_user_max"] >= 1
    assert any("differentially private: epsilon" in line for line in report.lines())
    assert "Privacy: differentially private" in (out / "README.md").read_text()
    # no review text beside the weights: the toy reviews are "loved the robots", "great bread"
    beside = (out / "fluency_corpus.txt").read_text() + (out / "tokenizer.json").read_text()
    assert "loved" not in beside and "great bread" not in beside
    writer = GPT2Writer.load(str(out), toy_recommender.settings)
    assert type(writer.model).__name__ == "GPT2LMHeadModel"
    assert not any(hasattr(p, "grad_sample") for p in writer.model.parameters())


def test_without_dp_the_card_says_null(tmp_path: Path, toy_recommender) -> None:
    report = toy_recommender.train_generator(TrainConfig(**TINY, max_steps=1), out_dir=tmp_path / "g")
    assert report.dp is None and json.loads((tmp_path / "g" / "card.json").read_text())["dp"] is None


def test_conv1d_grad_sampler_matches_one_backward_per_example() -> None:
    pytest.importorskip("opacus")
    import torch
    from opacus.grad_sample import GradSampleModule
    from transformers.pytorch_utils import Conv1D

    from recbot.generation.privacy import quiet_opacus, register_conv1d_grad_sampler

    register_conv1d_grad_sampler()
    torch.manual_seed(0)
    layer = Conv1D(5, 3).double()  # nf=5 outputs, nx=3 inputs: weight [3, 5]
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(4, 6, 3, dtype=torch.float64)  # 4 examples of 6 positions
    target = torch.randn(4, 6, 5, dtype=torch.float64)

    def losses(module: torch.nn.Module, xs: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        return ((module(xs) - ts) ** 2).sum(dim=(1, 2)) + module(xs).sin().mean(dim=(1, 2))

    expected = {"weight": [], "bias": []}
    for i in range(len(x)):
        layer.zero_grad()
        losses(layer, x[i : i + 1], target[i : i + 1]).sum().backward()
        expected["weight"].append(layer.weight.grad.clone())
        expected["bias"].append(layer.bias.grad.clone())
    wrapped = GradSampleModule(layer, loss_reduction="mean")
    layer.zero_grad()
    with quiet_opacus():  # x needs no gradient: torch warns about the hook on the layer's output
        losses(wrapped, x, target).mean().backward()  # Opacus undoes the mean: per-example gradients
    torch.testing.assert_close(layer.weight.grad_sample, torch.stack(expected["weight"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.bias.grad_sample, torch.stack(expected["bias"]), atol=1e-6, rtol=0)
    wrapped.cleanup()


def test_whole_gpt2_per_example_gradients_tied_and_positions_included() -> None:
    """The hooks' per-example gradients for every parameter of a GPT-2, with lm_head tied
    to the token embedding, padded rows and the position ids the DP loop passes, equal
    one backward pass per example."""
    pytest.importorskip("opacus")
    import torch
    from opacus.grad_sample import GradSampleModule
    from transformers import GPT2Config, GPT2LMHeadModel

    from recbot.generation.privacy import per_example_loss, quiet_opacus, register_conv1d_grad_sampler

    register_conv1d_grad_sampler()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=40, n_positions=16, n_embd=8, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0, pad_token_id=1
    )
    model = GPT2LMHeadModel(config).double()
    for m in model.modules():  # no dropout: both ways must compute the same function (hooks need train())
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    assert model.lm_head.weight is model.transformer.wte.weight
    ids = torch.randint(2, 40, (3, 7))
    labels = ids.clone()
    labels[:, :3] = -100
    mask = torch.ones_like(ids)
    mask[1, 5:], labels[1, 5:], ids[1, 5:] = 0, -100, 1

    def loss(module: torch.nn.Module, rows: slice) -> torch.Tensor:
        n, width = ids[rows].shape
        logits = module(
            input_ids=ids[rows], attention_mask=mask[rows], position_ids=torch.arange(width).expand(n, width)
        ).logits
        return per_example_loss(logits, labels[rows])

    expected: dict[str, list[torch.Tensor]] = {}
    for i in range(3):
        model.zero_grad()
        loss(model, slice(i, i + 1)).sum().backward()
        for name, p in model.named_parameters():
            expected.setdefault(name, []).append(p.grad.clone())
    wrapped = GradSampleModule(model, loss_reduction="mean")
    model.zero_grad()
    with quiet_opacus():
        loss(wrapped, slice(None)).mean().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad_sample, torch.stack(expected[name]), atol=1e-9, rtol=0, msg=name)
    wrapped.cleanup()


def test_cli_trains_with_dp(tmp_path: Path, tiny_bert: Path, capsys) -> None:
    pytest.importorskip("opacus")
    data = cli_ingest(tmp_path, tiny_bert)
    args = ["--data-dir", data, "train-generator", "--base", "scratch", "--max-steps", "3", "--layers", "1"]
    assert main([*args, "--width", "16", "--batch-size", "4", "--dp-epsilon", "8", "--dp-delta", "1e-6"]) == 0
    assert "differentially private: epsilon" in capsys.readouterr().out
    dp = json.loads((Path(data) / "generator" / "card.json").read_text())["dp"]
    assert 0 < dp["epsilon"] <= 8.1 and dp["delta"] == 1e-6 and dp["steps"] == 3


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"dp_epsilon": 0.0}, "--dp-epsilon must be a positive number"),
        ({"dp_epsilon": 8.0, "dp_delta": 1.0}, "--dp-delta must lie between 0 and 1"),
        ({"dp_epsilon": 8.0, "dp_max_grad_norm": 0.0}, "--dp-max-grad-norm must be a positive number"),
        ({"dp_epsilon": 8.0, "dp_accountant": "gdp"}, "the DP accountant must be one of prv, rdp"),
        ({"dp_epsilon": 8.0, "mixed_precision": "bf16"}, "DP training runs in float32"),
        ({"dp_delta": 1e-6}, "--dp-delta needs --dp-epsilon"),
    ],
)
def test_dp_settings_that_cannot_work(tmp_path: Path, toy_recommender, settings, message) -> None:
    pytest.importorskip("opacus")
    with pytest.raises(ConfigError, match=message):
        toy_recommender.train_generator(TrainConfig(**TINY, max_steps=1, **settings), out_dir=tmp_path / "g")


def test_missing_opacus_is_a_named_extra(tmp_path: Path, toy_recommender, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "opacus", None)  # import opacus now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'recbot\[privacy\]'"):
        toy_recommender.train_generator(TrainConfig(**TINY, max_steps=1, dp_epsilon=8.0), out_dir=tmp_path / "g")
    assert not (tmp_path / "g").exists()
    assert main(["--data-dir", str(tmp_path / "d"), "train-generator", "--dp-epsilon", "8"]) == 1
    assert capsys.readouterr().err.strip() == (
        "MissingExtraError: recbot train-generator --dp-epsilon needs the 'privacy' extra "
        "(opacus not installed): pip install 'recbot[privacy]'"
    )
    real_import = builtins.__import__
    monkeypatch.delitem(sys.modules, "opacus")

    def no_opacus(name: str, *args: object, **kwargs: object) -> object:
        if name == "opacus" or name.startswith("opacus."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_opacus)
    from recbot.generation.privacy import require_opacus

    with pytest.raises(MissingExtraError):
        require_opacus()
