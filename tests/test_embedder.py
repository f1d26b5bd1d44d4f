from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from recbot.errors import ModelNotFoundError
from recbot.retrieval.embedder import BertEmbedder, EncoderPool, LazyEmbedder, default_encoder_path


def test_tiny_bert_embeds_unit_rows_in_input_order(tiny_bert: Path) -> None:
    texts = ["space robots", "a much longer text about bread and cake in the oven", "stars"]
    batched = BertEmbedder(tiny_bert, batch_size=2).encode(texts)
    one_by_one = np.vstack([BertEmbedder(tiny_bert, batch_size=1).encode([t]) for t in texts])
    assert batched.shape == (3, 32) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, rtol=1e-5)
    # length-sorted batching with padding must not change any vector
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_truncates_long_text_instead_of_failing(tiny_bert: Path) -> None:
    out = BertEmbedder(tiny_bert, max_length=8).encode(["space " * 500])
    assert out.shape == (1, 32)


def test_lazy_embedder_loads_on_first_use(tiny_bert: Path) -> None:
    lazy = LazyEmbedder(str(tiny_bert))
    assert lazy.model_id == str(tiny_bert) and not lazy.loaded
    assert lazy.encode(["stars"]).shape == (1, 32) and lazy.loaded


def test_default_encoder_is_found_offline() -> None:
    path = default_encoder_path()
    assert (path / "model.safetensors").exists() and (path / "config.json").exists()


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="offline"):
        BertEmbedder("no-such-org/no-such-model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError):
        BertEmbedder(empty)


def test_bundled_minilm_separates_topics() -> None:
    emb = BertEmbedder()
    v = emb.encode(["a science fiction novel about space", "a space opera book", "a cast iron frying pan"])
    assert emb.dim == 384
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_the_onnx_backend_gives_the_torch_vectors_and_exports_once(tiny_bert, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    import numpy as np

    from recbot.retrieval.embedder import BertEmbedder

    texts = ["a cosy mystery", "space robots and a long voyage home", "bread"]
    torch_vectors = BertEmbedder(str(tiny_bert)).encode(texts)
    onnx_vectors = BertEmbedder(str(tiny_bert), backend="onnx", onnx_dir=tmp_path).encode(texts)
    assert np.min(np.sum(torch_vectors * onnx_vectors, axis=1)) > 0.9999
    (exported,) = tmp_path.glob("encoder-*.onnx")
    made = exported.stat().st_mtime_ns
    BertEmbedder(str(tiny_bert), backend="onnx", onnx_dir=tmp_path).encode(texts[:1])
    assert exported.stat().st_mtime_ns == made  # reused, not exported again


def test_the_onnx_backend_without_its_extra_is_a_clear_error(tiny_bert, tmp_path, monkeypatch) -> None:
    import sys

    from recbot.errors import MissingExtraError
    from recbot.retrieval.embedder import BertEmbedder

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"recbot\[onnx\]"):
        BertEmbedder(str(tiny_bert), backend="onnx", onnx_dir=tmp_path)


def test_a_configured_onnx_backend_without_its_extra_falls_back_to_torch(tiny_bert, tmp_path, monkeypatch) -> None:
    """Served through LazyEmbedder (what Recommender uses), a missing ONNX Runtime costs
    speed, not the answer: the same vectors come from torch."""
    import sys

    import numpy as np

    from recbot.retrieval.embedder import BertEmbedder, LazyEmbedder

    expected = BertEmbedder(str(tiny_bert)).encode(["bread"])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    lazy = LazyEmbedder(str(tiny_bert), backend="onnx", onnx_dir=tmp_path)
    np.testing.assert_allclose(lazy.encode(["bread"]), expected, atol=1e-6)


# -- encoder workers (bulk encoding in processes; the GPU plans are checked as plans only) --


@pytest.mark.parametrize(
    ("device", "workers", "gpus", "expected"),
    [
        ("cpu", 1, 0, ["cpu"]),  # today's path: in-process
        ("cpu", 0, 4, ["cpu"]),  # auto on the CPU: in-process (2 workers gained 1-13% on 2 cores)
        ("cpu", 2, 0, ["cpu", "cpu"]),
        ("auto", 0, 0, ["cpu"]),
        ("auto", 0, 2, ["cuda:0", "cuda:1"]),  # one worker per GPU
        ("cuda", 0, 1, ["cuda"]),  # one GPU: in-process on it
        ("cuda", 0, 4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]),
        ("cuda", 1, 4, ["cuda"]),  # asked for one: in-process
        ("cuda", 3, 2, ["cuda:0", "cuda:1", "cuda:0"]),  # more workers than GPUs: round robin
        ("cuda:1", 0, 2, ["cuda:1"]),  # a named GPU stays the one device
        ("cuda:1", 2, 2, ["cuda:1", "cuda:1"]),
    ],
)
def test_plan_workers(device: str, workers: int, gpus: int, expected: list[str]) -> None:
    from recbot.retrieval.embedder import plan_workers

    assert plan_workers(device, workers, gpus=gpus) == expected


def test_worker_plans_that_cannot_work_are_clear_errors(tmp_path: Path) -> None:
    from recbot import Settings
    from recbot.errors import ConfigError
    from recbot.retrieval.embedder import plan_workers

    with pytest.raises(ConfigError, match="device is 'cuda' but torch sees no CUDA GPU"):
        plan_workers("cuda", 0, gpus=0)
    with pytest.raises(ConfigError, match=r"encoder_workers must be 0 \(auto\) or more, got -1"):
        LazyEmbedder(workers=-1)
    with pytest.raises(ConfigError, match=r"encoder_workers must be 0 \(auto\) or more, got -2"):
        Settings.create(data_dir=tmp_path, encoder_workers=-2)


def test_lazy_embedder_plans_one_worker_per_visible_gpu(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert LazyEmbedder(workers=0, device="auto").worker_devices() == ["cuda:0", "cuda:1"]
    assert LazyEmbedder(workers=0, device="cpu").worker_devices() == ["cpu"]


def test_the_onnx_backend_encodes_on_the_cpu_whatever_gpu_is_seen(tiny_bert, tmp_path, monkeypatch) -> None:
    """ONNX Runtime runs here on its CPU provider: "auto" means the CPU for it (an H200 run
    exporting from a model on the GPU failed with a device mismatch), and a GPU asked for
    by name is a clear error, in the settings and in the encoder."""
    import torch

    from recbot import Settings
    from recbot.errors import ConfigError
    from recbot.retrieval.embedder import BertEmbedder

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert LazyEmbedder(workers=0, device="auto", backend="onnx").worker_devices() == ["cpu"]
    assert LazyEmbedder(workers=0, device="auto", backend="torch").worker_devices() == ["cuda:0", "cuda:1"]
    with pytest.raises(ConfigError, match="'onnx' runs on the CPU"):
        Settings.create(data_dir=tmp_path, encoder_backend="onnx", device="cuda")
    with pytest.raises(ConfigError, match=r"'onnx' runs on the CPU .* not on 'cuda:1'"):
        BertEmbedder(tiny_bert, device="cuda:1", backend="onnx", onnx_dir=tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    embedder = BertEmbedder(tiny_bert, device="auto", backend="onnx", onnx_dir=tmp_path)
    assert embedder.device.type == "cpu" and embedder.batch_size == 64


def test_a_half_precision_checkpoint_encodes_in_float32(tiny_bert, tmp_path) -> None:
    """Transformers 5 keeps a checkpoint's own dtype; the encoder asks for float32, so a
    float16 copy of a model gives (within its rounding) the vectors of the original."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from recbot.retrieval.embedder import BertEmbedder

    AutoModel.from_pretrained(tiny_bert).to(torch.float16).save_pretrained(tmp_path / "half")
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path / "half")
    half, full = BertEmbedder(tmp_path / "half"), BertEmbedder(tiny_bert)
    assert half.model.dtype == torch.float32
    texts = ["stars and ships", "bread"]
    assert (half.encode(texts) * full.encode(texts)).sum(axis=1).min() > 0.999


def test_a_bulk_job_on_a_gpu_brings_bigger_chunks(monkeypatch) -> None:
    """Each chunk is sorted by length: a GPU's batches of 256 padded as much as batches of
    64 inside chunks of 256 (an H200: 7.4k against 7.0-7.9k items/s) and ran x1.75 faster
    in chunks of 4,096 (benchmarks/gpu_encoder.py)."""
    import torch

    from recbot.retrieval.embedder import CPU_CHUNK, GPU_CHUNK, BulkEncoder

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert BulkEncoder(LazyEmbedder(device="cuda")).chunk == GPU_CHUNK
    assert BulkEncoder(LazyEmbedder(device="auto", workers=0)).chunk == GPU_CHUNK
    assert BulkEncoder(LazyEmbedder(device="auto", backend="onnx")).chunk == CPU_CHUNK  # ONNX: the CPU
    assert BulkEncoder(LazyEmbedder(device="cpu")).chunk == CPU_CHUNK


def test_the_batch_follows_the_device_unless_set(tiny_bert) -> None:
    from recbot.retrieval.embedder import CPU_BATCH, BertEmbedder

    assert BertEmbedder(tiny_bert).batch_size == CPU_BATCH
    assert BertEmbedder(tiny_bert, batch_size=7).batch_size == 7


def test_a_small_bulk_job_stays_in_process(tiny_bert: Path) -> None:
    """Starting workers costs seconds: a job with under two chunks per worker does not."""
    import multiprocessing

    from recbot.retrieval.embedder import BulkEncoder

    embedder = LazyEmbedder(str(tiny_bert), workers=2)
    before = set(multiprocessing.active_children())
    with BulkEncoder(embedder) as bulk:
        (vectors,) = bulk.map([["stars", "bread"]])
    assert vectors.shape == (2, 32) and embedder.loaded and set(multiprocessing.active_children()) <= before


@pytest.fixture(scope="module")
def worker_pool(tiny_bert: Path) -> Iterator[EncoderPool]:
    from recbot.retrieval.embedder import EncoderPool

    with EncoderPool(str(tiny_bert), devices=["cpu", "cpu"], batch_size=2) as pool:
        yield pool


def test_workers_give_the_in_process_vectors_in_order(worker_pool: EncoderPool, tiny_bert: Path) -> None:
    """Each chunk is batched in the worker exactly as in-process; only the threads differ
    (one per worker here), which may reorder float sums: a few float32 ulps at most."""
    import os

    words = ["space", "robots", "bread", "cake", "oven", "stars", "mountain", "tent", "film", "galaxy"]
    texts = [" ".join(words[(n * k) % 10] for k in range(1 + n % 7)) for n in range(40)]
    chunks = [texts[i : i + 3] for i in range(0, len(texts), 3)]  # 14 chunks, the last one short
    in_process = BertEmbedder(str(tiny_bert), batch_size=2)
    expected = [in_process.encode(chunk) for chunk in chunks]
    got = list(worker_pool.map(chunks, ahead=3))
    assert [g.shape for g in got] == [e.shape for e in expected]
    np.testing.assert_allclose(np.vstack(got), np.vstack(expected), rtol=0, atol=1e-6)
    assert len({w.pid for w in worker_pool.workers}) == 2 and os.getpid() not in worker_pool.pids
    assert {(w.device, w.threads) for w in worker_pool.workers} == {("cpu", max(1, len(os.sched_getaffinity(0)) // 2))}


def test_a_chunk_that_fails_in_a_worker_is_an_error_and_the_pool_goes_on(worker_pool: EncoderPool) -> None:
    from recbot.errors import EncoderError

    with pytest.raises(EncoderError, match=r"encoder worker \d \(cpu\) failed: \w+Error"):
        list(worker_pool.map([["stars"], [None]]))  # None: the tokenizer raises in the worker
    (vectors,) = worker_pool.map([["stars"]])
    assert vectors.shape == (1, 32)


def test_a_worker_that_dies_is_an_error_not_a_hang(tiny_bert: Path) -> None:
    import multiprocessing
    import os
    import signal
    from concurrent.futures import ThreadPoolExecutor

    from recbot.errors import EncoderError
    from recbot.retrieval.embedder import EncoderPool

    pool = EncoderPool(str(tiny_bert), devices=["cpu"])  # one worker shows it: each costs seconds to start
    runner = ThreadPoolExecutor(1)  # a hang fails the test instead of stalling the suite
    try:
        os.kill(pool.pids[0], signal.SIGKILL)
        work = runner.submit(lambda: list(pool.map([["stars"], ["bread"], ["cake"]])))
        with pytest.raises(EncoderError, match=r"encoder worker 0 \(cpu\) died \(killed, out of memory or crashed\)"):
            work.result(timeout=60)
    finally:
        runner.shutdown(wait=False)
        pool.close()
    assert not set(pool.pids) & {child.pid for child in multiprocessing.active_children()}


def test_a_worker_that_cannot_load_the_model_says_why(tmp_path: Path) -> None:
    import multiprocessing

    from recbot.retrieval.embedder import EncoderPool

    before = set(multiprocessing.active_children())
    with pytest.raises(ModelNotFoundError, match="cannot load"):
        EncoderPool(str(tmp_path / "no-model"), devices=["cpu"])
    assert set(multiprocessing.active_children()) <= before
