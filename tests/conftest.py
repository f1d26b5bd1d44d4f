"""Shared fixtures: a toy catalog, a keyword embedder, a tiny BERT built from a config,
and recommenders over real Chroma in temp dirs. Nothing here touches the network."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # a test that tries the hub fails loudly instead
os.environ["ANONYMIZED_TELEMETRY"] = "False"

from recbot import Recommender, Settings
from recbot.recommender import open_storage, open_store

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TOY_ITEMS = [
    {
        "id": "s1",
        "title": "Star Voyage",
        "category": "books",
        "tags": ["space", "robots"],
        "description": "space robots explore stars",
    },
    {
        "id": "s2",
        "title": "Robot Stars",
        "category": "books",
        "tags": ["space"],
        "description": "robots among the stars in space",
    },
    {
        "id": "s3",
        "title": "Space Station",
        "category": "films",
        "tags": ["space"],
        "description": "a film about a space station",
    },
    {
        "id": "s4",
        "title": "Galaxy Robots",
        "category": "games",
        "tags": ["space", "robots"],
        "description": "a game of robots in the galaxy",
    },
    {
        "id": "c1",
        "title": "Bread Basics",
        "category": "books",
        "tags": ["baking"],
        "description": "bake bread and cake in the oven",
    },
    {
        "id": "c2",
        "title": "Cake Oven",
        "category": "kitchen",
        "tags": ["baking"],
        "description": "an oven for cake and bread",
    },
    {
        "id": "c3",
        "title": "Dough Mixer",
        "category": "kitchen",
        "tags": ["baking"],
        "description": "mix dough for bread",
    },
    {
        "id": "c4",
        "title": "Pastry Film",
        "category": "films",
        "tags": ["baking"],
        "description": "a film about cake and pastry",
    },
    {
        "id": "h1",
        "title": "Trail Boots",
        "category": "outdoors",
        "tags": ["hiking"],
        "description": "boots for mountain trail hiking",
    },
    {
        "id": "h2",
        "title": "Mountain Tent",
        "category": "outdoors",
        "tags": ["camping"],
        "description": "a tent for mountain camping and hiking",
    },
]
TOY_INTERACTIONS = [
    {
        "user_id": "spacefan",
        "item_id": "s1",
        "rating": 5,
        "timestamp": "2025-01-01T00:00:00Z",
        "review": "loved the robots",
    },
    {"user_id": "spacefan", "item_id": "s2", "rating": 4, "timestamp": "2025-02-01T00:00:00Z"},
    {"user_id": "baker", "item_id": "c1", "rating": 5, "timestamp": 1735689600},
    {"user_id": "baker", "item_id": "c2", "rating": 5, "timestamp": 1738368000, "review": "great bread"},
    {"user_id": "baker", "item_id": "s3", "rating": 1, "timestamp": 1738368100},
]

_WORD = re.compile(r"[a-z]+")


class KeywordEmbedder:
    """Bag of words hashed into 64 buckets, L2-normalised: deterministic and instant."""

    dim = 64

    def __init__(self, model_id: str = "keyword-test") -> None:
        self.model_id = model_id
        self.calls = 0
        self.texts_encoded = 0

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> np.ndarray:
        self.calls += 1
        self.texts_encoded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
            norm = np.linalg.norm(out[i])
            out[i] = out[i] / norm if norm else out[i]
        return out


def write_jsonl(path: Path, rows: Sequence[dict | str]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture
def toy_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_jsonl(tmp_path / "catalog.jsonl", TOY_ITEMS), write_jsonl(
        tmp_path / "interactions.jsonl", TOY_INTERACTIONS
    )


@pytest.fixture
def make_recommender(tmp_path: Path) -> Iterator[Callable[..., Recommender]]:
    """Build Recommenders over a data dir (fresh by default), with the keyword embedder;
    all are closed at teardown."""
    made: list[Recommender] = []

    def make(data_dir: Path | None = None, embedder: KeywordEmbedder | None = None, **overrides: object) -> Recommender:
        settings = Settings.create(data_dir=data_dir or tmp_path / "data", **overrides)
        rec = Recommender(
            settings,
            storage=open_storage(settings),
            store=open_store(settings),
            embedder=embedder or KeywordEmbedder(),
        )
        made.append(rec)
        return rec

    yield make
    for rec in made:
        rec.close()


@pytest.fixture
def toy_recommender(make_recommender: Callable[..., Recommender], toy_files: tuple[Path, Path]) -> Recommender:
    rec = make_recommender()
    rec.ingest(toy_files[0], interactions=toy_files[1])
    return rec


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT and its WordPiece tokenizer, saved as safetensors."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({w for row in TOY_ITEMS for w in _WORD.findall(json.dumps(row).lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words][:99]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide GPT-2 with a byte-level BPE tokenizer that knows the prompt
    markers; bos/eos/pad ids lie inside its small vocabulary."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from recbot.generation.train import _make_scratch_tokenizer

    path = tmp_path_factory.mktemp("tiny-gpt2")
    corpus = [json.dumps(row) for row in TOY_ITEMS + TOY_INTERACTIONS] * 3
    tokenizer = _make_scratch_tokenizer(corpus, vocab_size=400)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert max(tokenizer.eos_token_id, tokenizer.pad_token_id) < config.vocab_size
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
