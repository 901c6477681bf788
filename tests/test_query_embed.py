"""The torch-free query embedder must give sentence-transformers' vectors and rankings.

The slow tests export the bundled MiniLM to ONNX once (about 10 s) and compare both paths on a
few hundred varied texts, embedded in mixed-length batches so padding and masks are exercised.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from rag.query_embed import OnnxEmbedder, ensure_onnx, onnx_path, query_embedder, supports_onnx

ROOT = Path(__file__).resolve().parent.parent
GOLD = ROOT / "eval" / "gold.jsonl"


def varied_texts(n: int = 300) -> list[str]:
    """Short, long (past the 256-token limit), unicode, numbers, odd whitespace."""
    rng = random.Random(7)
    corpus = (ROOT / "eval" / "corpus").glob("*.txt")
    words = " ".join(p.read_text(encoding="utf-8") for p in sorted(corpus)).split()
    extras = ["Ünïcødé", "日本語のテキスト", "Привет мир", "🙂", "naïve café", "1,234.56", "2019-02-20", "40",
              "$3.5bn", "e-mail", "U.S.", "Pahalgam's", "\t", "\n", "—", "«quoted»", "x²"]
    texts = ["", "a", "What did the US urge Pakistan to do?", "   padded   ", "word " * 400]
    while len(texts) < n:
        length = rng.choice([1, 3, 8, 20, 60, 150, 300])
        start = rng.randrange(len(words))
        picked = words[start:start + length]
        picked += rng.sample(extras, k=min(len(extras), rng.randint(0, 3)))
        if rng.random() < 0.3:
            rng.shuffle(picked)
        texts.append(" ".join(picked))
    return texts


def test_supports_onnx_only_for_mean_pooling(model_dir, tmp_path):
    assert supports_onnx(model_dir)
    cls = tmp_path / "cls"
    shutil.copytree(model_dir, cls, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    pooling = json.loads((cls / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (cls / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    assert not supports_onnx(cls)
    assert not supports_onnx(tmp_path)  # no modules.json at all


def test_onnx_path_is_named_by_fingerprint(tmp_path):
    assert onnx_path(tmp_path, {"fingerprint": "abc"}) == tmp_path / "embedder-abc.onnx"


def test_without_export_the_query_embedder_is_sentence_transformers(model_dir, tmp_path):
    from rag.embed import SentenceTransformerEmbedder

    assert isinstance(query_embedder(tmp_path, model_dir), SentenceTransformerEmbedder)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, real_embedder) -> Path:
    """One export per test session (test_lazy_imports uses the same folder)."""
    folder = tmp_path_factory.getbasetemp() / "onnx-export"
    folder.mkdir(exist_ok=True)
    assert ensure_onnx(folder, real_embedder) is None
    return onnx_path(folder, real_embedder.identity)


@pytest.fixture(scope="module")
def fast(model_dir, exported) -> OnnxEmbedder:
    return OnnxEmbedder(model_dir, exported)


@pytest.mark.slow
def test_vectors_match_sentence_transformers(fast, real_embedder):
    texts = varied_texts()
    mine, theirs = fast.embed(texts), real_embedder.embed(texts)
    assert mine.shape == theirs.shape == (len(texts), 384)
    assert mine.dtype == np.float32
    cosines = np.sum(mine * theirs, axis=1)
    assert cosines.min() >= 0.999, texts[int(cosines.argmin())][:80]
    assert np.allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_batching_and_cache_do_not_change_vectors(model_dir, exported):
    texts = varied_texts(60)
    together = OnnxEmbedder(model_dir, exported).embed(texts)
    one_by_one = OnnxEmbedder(model_dir, exported)
    alone = np.stack([one_by_one.embed([t])[0] for t in texts])
    assert np.sum(together * alone, axis=1).min() >= 0.99999
    again = one_by_one.embed(list(reversed(texts)))  # from the cache, in the order asked
    assert np.array_equal(again, alone[::-1])
    assert one_by_one.embed([]).shape == (0, 384)


@pytest.mark.slow
def test_same_top10_on_gold_questions(fast, real_embedder, sample_index):
    from rag.retrieve import Ranking, Retriever
    from rag.store import open_index

    questions = [json.loads(line)["question"] for line in GOLD.read_text().splitlines() if line.strip()]
    reader = open_index(sample_index, real_embedder.identity)
    try:
        slow_r, fast_r = Retriever(reader, real_embedder.embed), Retriever(reader, fast.embed)
        for q in questions:
            assert [h.chunk_id for h in fast_r.search(q, k=10)] == [h.chunk_id for h in slow_r.search(q, k=10)], q
            dense = [r.store.ranking(np.asarray(e([q])[0], dtype=np.float32), q, Ranking("dense", 10, None))
                     for r, e in ((slow_r, real_embedder.embed), (fast_r, fast.embed))]
            assert [cid for cid, _ in dense[0]] == [cid for cid, _ in dense[1]], q
    finally:
        reader.close()


@pytest.mark.slow
def test_pipeline_uses_the_export_beside_the_index(sample_index, exported, model_dir, tmp_path):
    from rag.config import Settings
    from rag.embed import SentenceTransformerEmbedder
    from rag.pipeline import Pipeline

    index = tmp_path / "index"
    shutil.copytree(sample_index, index)
    dest = index / exported.name
    try:
        dest.hardlink_to(exported)
    except OSError:
        shutil.copyfile(exported, dest)
    pipeline = Pipeline(Settings(index=str(index)))
    try:
        assert isinstance(pipeline.embedder, OnnxEmbedder)
        assert pipeline.retriever.search("What did the US urge Pakistan to do?", k=3)
    finally:
        pipeline.close()
    dest.unlink()
    dest.write_bytes(b"not an onnx file")  # damaged: the slow path still answers correctly
    assert isinstance(query_embedder(index, model_dir), SentenceTransformerEmbedder)


@pytest.mark.slow
def test_index_exports_once_and_noop_reindex_loads_no_model(tmp_path, corpus, exported, monkeypatch):
    """`rag index` puts the export beside the states; a no-op re-index touches no model."""
    from rag import indexer
    from rag.config import Settings

    index = tmp_path / "index"
    index.mkdir()
    try:
        (index / exported.name).hardlink_to(exported)  # as if an earlier `rag index` exported it
    except OSError:
        shutil.copyfile(exported, index / exported.name)
    settings = Settings(index=str(index))
    indexer.index_paths([str(corpus)], settings)
    int8 = exported.name.replace(".onnx", ".int8.onnx")  # made from the fp32 one to embed the chunks
    assert (index / "CURRENT").is_file()
    assert set(index.glob("embedder-*.onnx")) == {index / exported.name, index / int8}

    def no_model(*args, **kwargs):
        raise AssertionError("a no-op re-index loaded a model")

    monkeypatch.setattr(indexer, "SentenceTransformerEmbedder", no_model)
    monkeypatch.setattr(indexer, "ensure_onnx", no_model)
    summary = indexer.index_paths([str(corpus)], settings)
    assert summary.unchanged == summary.articles and summary.chunks_embedded == 0
    state = index / (index / "CURRENT").read_text().strip()
    assert (state / "bm25" / "ids.npy").is_file()


@pytest.mark.slow
def test_a_full_cache_never_loses_a_text_of_the_current_call(model_dir, exported, monkeypatch):
    monkeypatch.setattr("rag.query_embed.CACHE", 3)
    embedder = OnnxEmbedder(model_dir, exported)
    first = embedder.embed(["alpha beta", "gamma delta"])
    both = embedder.embed(["alpha beta", "a new sentence", "another new one"])  # overflows: cache cleared
    assert np.allclose(both[0], first[0], atol=1e-6)
