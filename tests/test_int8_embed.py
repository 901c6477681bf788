"""Indexing at int8: the manifest records the precision and queries use the same arithmetic.

An index built before int8 (no "precision" in its manifest) keeps fp32 query vectors; a new one is
embedded and queried through the int8 export. The slow tests export the bundled MiniLM once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rag.embed import FakeEmbedder, SentenceTransformerEmbedder, default_precision, embedder_identity
from rag.query_embed import OnnxEmbedder, ensure_onnx, index_embedder, index_precision, onnx_path, query_embedder

ROOT = Path(__file__).resolve().parent.parent


def write_manifest(index: Path, embedder: dict) -> None:
    (index / "state-000001").mkdir(parents=True)
    (index / "state-000001" / "manifest.json").write_text(json.dumps({"embedder": embedder}))
    (index / "CURRENT").write_text("state-000001")


def test_identity_records_precision(model_dir):
    assert default_precision(model_dir) == "int8"  # MiniLM: Transformer + mean pooling
    assert embedder_identity(model_dir)["precision"] == "int8"
    assert embedder_identity(model_dir, "fp32")["precision"] == "fp32"
    assert SentenceTransformerEmbedder(model_dir).identity["precision"] == "fp32"


def test_int8_export_has_its_own_name(tmp_path):
    assert onnx_path(tmp_path, {"fingerprint": "abc", "precision": "int8"}) == tmp_path / "embedder-abc.int8.onnx"
    assert onnx_path(tmp_path, {"fingerprint": "abc", "precision": "fp32"}) == tmp_path / "embedder-abc.onnx"


def test_a_manifest_without_precision_is_fp32(tmp_path, model_dir):
    old = {k: v for k, v in embedder_identity(model_dir).items() if k != "precision"}
    write_manifest(tmp_path / "old", old)
    assert index_precision(tmp_path / "old") == "fp32"
    write_manifest(tmp_path / "new", embedder_identity(model_dir))
    assert index_precision(tmp_path / "new") == "int8"
    assert index_precision(tmp_path / "none") is None


def test_other_embedders_are_used_as_they_are(tmp_path):
    fake = FakeEmbedder()
    assert index_embedder(tmp_path, fake, {**fake.identity, "precision": "int8"}) is fake


@pytest.fixture(scope="module")
def exports(tmp_path_factory, real_embedder) -> Path:
    folder = tmp_path_factory.mktemp("int8-export")
    assert ensure_onnx(folder, real_embedder) is None
    return folder


@pytest.mark.slow
def test_ensure_onnx_makes_both_exports(exports, model_dir):
    assert onnx_path(exports, embedder_identity(model_dir, "fp32")).is_file()
    assert onnx_path(exports, embedder_identity(model_dir, "int8")).is_file()


@pytest.mark.slow
def test_int8_vectors_stay_close_to_fp32(exports, model_dir, real_embedder):
    from tests.test_query_embed import varied_texts

    texts = varied_texts(120)
    int8 = OnnxEmbedder(model_dir, onnx_path(exports, embedder_identity(model_dir, "int8")))
    assert int8.identity["precision"] == "int8"
    cosines = np.sum(int8.embed(texts) * real_embedder.embed(texts), axis=1)
    # measured: mean 0.993, min 0.973 (odd unicode, one-word texts); chunks of news text: min 0.99
    assert cosines.min() >= 0.96 and cosines.mean() >= 0.99, (cosines.min(), cosines.mean())


@pytest.mark.slow
def test_int8_weights_fit_in_7_bits_so_every_cpu_computes_the_same_vectors(exports, model_dir):
    # onnxruntime multiplies uint8 activations by int8 weights in pairs summed into 16 bits
    # (VPMADDUBSW) on CPUs without VNNI: 255 * 127 * 2 overflows and saturates, 255 * 64 * 2 does not.
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path(exports, embedder_identity(model_dir, "int8")))).graph
    weights = [numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("_quantized")]
    assert len(weights) >= 12  # the attention and feed-forward weights of MiniLM's 6 layers
    assert all(2 * 255 * int(np.abs(w.astype(np.int32)).max()) <= 32767 for w in weights)


@pytest.mark.slow
def test_an_int8_vector_does_not_depend_on_the_texts_embedded_with_it(exports, model_dir):
    from tests.test_query_embed import varied_texts

    texts = varied_texts(40)
    int8 = OnnxEmbedder(model_dir, onnx_path(exports, embedder_identity(model_dir, "int8")), cache=False)
    together = int8.embed(texts)
    alone = np.stack([int8.embed([t])[0] for t in texts])
    assert np.array_equal(together, alone)  # the same question gets the same answer whatever came before


@pytest.mark.slow
def test_query_embedder_follows_the_manifest(exports, model_dir, tmp_path):
    for precision, manifest in (("int8", embedder_identity(model_dir)),
                                ("fp32", {k: v for k, v in embedder_identity(model_dir).items() if k != "precision"})):
        index = tmp_path / precision
        write_manifest(index, manifest)
        for f in exports.glob("embedder-*.onnx"):
            shutil.copyfile(f, index / f.name)
        embedder = query_embedder(index, model_dir)
        assert isinstance(embedder, OnnxEmbedder) and embedder.identity["precision"] == precision
        assert embedder.onnx_file.name.endswith(".int8.onnx") == (precision == "int8")


@pytest.mark.slow
def test_rag_index_embeds_at_int8_and_records_it(tmp_path, corpus, exports, model_dir):
    from rag.config import Settings
    from rag.indexer import index_paths
    from rag.pipeline import Pipeline

    index = tmp_path / "index"
    index.mkdir()
    for f in exports.glob("embedder-*.onnx"):
        (index / f.name).hardlink_to(f)  # as if an earlier `rag index` had exported them
    index_paths([str(corpus)], Settings(index=str(index)))
    state = index / (index / "CURRENT").read_text().strip()
    assert json.loads((state / "manifest.json").read_text())["embedder"]["precision"] == "int8"
    pipeline = Pipeline(Settings(index=str(index)))
    try:
        assert pipeline.embedder.identity["precision"] == "int8"
        hit = pipeline.retriever.search("What did the US urge Pakistan to do?", k=3)[0]
        assert "Pakistan" in hit.text
    finally:
        pipeline.close()
