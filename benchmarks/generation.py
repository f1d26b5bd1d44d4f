"""Generation speed (run by hand): batched blurbs against sequential calls and against
transformers' text-generation pipeline, bf16 and int8 dynamic quantization.

A distilgpt2-sized GPT-2 (6 layers, 768 wide, 50,257 vocab) with random weights: speed
does not depend on the weights. The perplexity effect of int8 is measured on a trained
generator (``--trained DIR``, e.g. .recbot/generator) over its held-out examples, rebuilt
the way train-generator builds them.

    python benchmarks/generation.py --prompts-from .recbot --trained .recbot/generator
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, TextIteratorStreamer, pipeline

from recbot import Recommender

NEW = 40


def gen_kwargs(tok: Any) -> dict[str, Any]:
    return {
        "max_new_tokens": NEW,
        "min_new_tokens": NEW,
        "do_sample": False,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
    }


def timed(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def demo_prompts(data_dir: str) -> list[str]:
    rec = Recommender.open(data_dir)
    writer = rec.writer.get()  # type: ignore[union-attr]
    recs = rec.recommend("u1", k=5, blurbs=False)
    catalog = rec.storage.items()
    return [writer.prompt_for(rec.history("u1"), r, catalog).text for r in recs]


def speed(model: Any, tok: Any, prompts: list[str], repeats: int) -> dict[str, float]:
    tok.padding_side = "left"
    kw = gen_kwargs(tok)

    def batched() -> None:
        with torch.inference_mode():
            model.generate(**tok(prompts, return_tensors="pt", padding=True), **kw)

    def sequential() -> None:
        with torch.inference_mode():
            for p in prompts:
                model.generate(**tok([p], return_tensors="pt"), **kw)

    pipe = pipeline("text-generation", model=model, tokenizer=tok, device=-1)

    def per_item_pipeline() -> None:
        for p in prompts:
            pipe(p, return_full_text=False, **kw)

    out = {
        name: timed(fn, repeats)
        for name, fn in [
            ("batched_s", batched),
            ("sequential_s", sequential),
            ("pipeline_per_item_s", per_item_pipeline),
        ]
    }
    tokens = NEW * len(prompts)
    out["batched_tokens_per_s"] = tokens / out["batched_s"]
    out["sequential_tokens_per_s"] = tokens / out["sequential_s"]
    out["pipeline_tokens_per_s"] = tokens / out["pipeline_per_item_s"]
    out["batched_over_pipeline"] = out["pipeline_per_item_s"] / out["batched_s"]
    out["batched_over_sequential"] = out["sequential_s"] / out["batched_s"]

    def first_token() -> float:
        streamer = TextIteratorStreamer(tok, skip_prompt=True)
        t0 = time.perf_counter()
        th = threading.Thread(
            target=lambda: model.generate(**tok([prompts[0]], return_tensors="pt"), streamer=streamer, **kw)
        )
        th.start()
        next(iter(streamer))
        dt = time.perf_counter() - t0
        for _ in streamer:
            pass
        th.join()
        return dt

    first_token()
    out["first_streamed_token_s"] = statistics.median(first_token() for _ in range(repeats))
    return {k: round(v, 4) for k, v in out.items()}


def held_out_ppl(model: Any, data_dir: str, trained: str) -> float:
    from recbot.generation.train import TrainConfig, _encode, _held_out_perplexity, build_examples

    rec = Recommender.open(data_dir)
    catalog = rec.storage.items()
    inter = [h for u in rec.storage.users() for h in rec.storage.history(u)]
    card = json.loads(Path(trained, "card.json").read_text())
    config = TrainConfig(**card["config"])
    held = [e for e in build_examples(catalog, inter, rec.store.get_vectors(list(catalog)), config) if e.held_out]
    tok = AutoTokenizer.from_pretrained(trained)
    return _held_out_perplexity(
        model, _encode(held, tok, min(config.block_size, model.config.n_positions)), tok.pad_token_id, "cpu"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts-from", default=".recbot", help="data dir whose demo user u1 gives 5 real prompts")
    parser.add_argument("--trained", default=".recbot/generator")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    prompts = demo_prompts(args.prompts_from)
    tok = AutoTokenizer.from_pretrained(args.trained)
    config = GPT2Config(
        n_layer=6,
        n_embd=768,
        n_head=12,
        vocab_size=50257,
        n_positions=1024,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    big = GPT2LMHeadModel(config).eval()
    results: dict[str, Any] = {
        "model": "GPT-2 6x768 (distilgpt2 size), random weights",
        "blurbs": len(prompts),
        "new_tokens": NEW,
    }
    results["fp32"] = speed(big, tok, prompts, args.repeats)
    results["bf16"] = speed(big.to(torch.bfloat16), tok, prompts, args.repeats)
    big = big.float()
    q = torch.ao.quantization.quantize_dynamic(big, {torch.nn.Linear}, dtype=torch.qint8)
    results["int8_dynamic"] = speed(q, tok, prompts, args.repeats)
    # GPT-2 uses Conv1D, not nn.Linear, for attention and MLP: count what int8 actually touched
    results["int8_quantized_modules"] = sum(
        1 for m in q.modules() if type(m).__name__ == "Linear" and "quantized" in type(m).__module__
    )
    trained = GPT2LMHeadModel.from_pretrained(args.trained).eval()
    tq = torch.ao.quantization.quantize_dynamic(trained, {torch.nn.Linear}, dtype=torch.qint8)
    results["trained_held_out_ppl_fp32"] = round(held_out_ppl(trained, args.prompts_from, args.trained), 3)
    results["trained_held_out_ppl_int8"] = round(held_out_ppl(tq, args.prompts_from, args.trained), 3)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
