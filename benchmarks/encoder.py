"""Ingest's encoder, torch against ONNX Runtime, side by side (run by hand).

Encodes the same catalog texts with ``BertEmbedder`` (the bundled all-MiniLM-L6-v2 unless
``--encoder``) on each backend, in one run, and prints items/s, the ratio, and how close
each ONNX vector is to torch's (cosine). The ONNX model is exported on first use into
``--onnx-dir`` (not timed).

    python benchmarks/encoder.py --catalog ../shared/data/ml-latest-small --format movielens
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from recbot.catalog import read_catalog
from recbot.retrieval.embedder import BertEmbedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--format", default="auto")
    parser.add_argument("--encoder", default=None, help="BERT model id or path (default: the bundled MiniLM)")
    parser.add_argument("--items", type=int, default=2000, help="texts to encode")
    parser.add_argument("--onnx-dir", type=Path, default=None)
    args = parser.parse_args()
    texts = [item.text for item in read_catalog(args.catalog, args.format).items[: args.items]]
    onnx_dir = args.onnx_dir or Path(tempfile.mkdtemp())
    embedders = {
        "torch": BertEmbedder(args.encoder),
        "onnx": BertEmbedder(args.encoder, backend="onnx", onnx_dir=onnx_dir),
    }
    vectors, rates = {}, {}
    for embedder in embedders.values():
        embedder.encode(texts[:64])  # warm up
    for name, embedder in embedders.items():
        started = time.perf_counter()
        vectors[name] = embedder.encode(texts, show_progress=False)
        rates[name] = len(texts) / (time.perf_counter() - started)
    cosine = np.sum(vectors["torch"] * vectors["onnx"], axis=1)
    result = {
        "texts": len(texts),
        "torch_items_per_s": round(rates["torch"], 1),
        "onnx_items_per_s": round(rates["onnx"], 1),
        "onnx_over_torch": round(rates["onnx"] / rates["torch"], 2),
        "cosine_min": round(float(cosine.min()), 6),
        "cosine_mean": round(float(cosine.mean()), 6),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
