from pathlib import Path

import numpy as np
import pytest

from recbot.errors import ModelNotFoundError
from recbot.retrieval.embedder import BertEmbedder, LazyEmbedder, default_encoder_path


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
