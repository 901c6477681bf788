"""The exact -> IVF-SQ8 switch of the file store, with a low threshold (RAG_ANN_THRESHOLD) so that it
happens at a few thousand vectors: add/update/delete, filters, reopening, recall, `rag status`."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from rag import vector_index
from rag.config import Settings
from rag.embed import embedder_dir, embedder_identity
from rag.errors import IndexBroken
from rag.filters import Filters, Ranking
from rag.status import index_status
from rag.store import IndexWriter, faiss_header, open_index
from rag.types import Article, Chunk

PER_ARTICLE = 5
IDENTITY = embedder_identity(embedder_dir(None))  # `rag status` checks it against the configured one
DIM = IDENTITY["dim"]


def structured(n: int, seed: int, queries: int = 0) -> np.ndarray:
    """Unit vectors in clusters, not uniform: 256 topics, articles of PER_ARTICLE chunks around a
    topic, chunks around their article. `queries` > 0: that many query vectors near the articles
    of the same set (a question is about an indexed article) instead of the n chunks."""
    topics = np.random.default_rng(0).standard_normal((256, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    articles = topics[rng.integers(0, 256, n // PER_ARTICLE)] + rng.standard_normal(
        (n // PER_ARTICLE, DIM)).astype(np.float32)
    if queries:
        rng = np.random.default_rng(seed + 1000)
        x = articles[rng.integers(0, len(articles), queries)] + 0.6 * rng.standard_normal((queries, DIM))
    else:
        x = np.repeat(articles, PER_ARTICLE, axis=0) + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _article(doc_id: str, n: int) -> tuple[Article, list[Chunk]]:
    text = " ".join(f"sentence {k} of {doc_id}." for k in range(n))
    chunks, pos = [], 0
    for k in range(n):
        t = f"sentence {k} of {doc_id}."
        chunks.append(Chunk(f"{doc_id}:{pos}-{pos + len(t)}", doc_id, k, pos, pos + len(t), t, 8))
        pos += len(t) + 1
    return Article(doc_id, text, doc_id, f"20{10 + int(doc_id[4:]) % 10}-01-01", "S" + str(int(doc_id[4:]) % 7),
                   content_hash=hashlib.sha256(text.encode()).hexdigest()), chunks


def write(index_dir, vectors: np.ndarray, first: int = 0, remove: tuple[str, ...] = ()) -> dict:
    """Add articles doc_{first}... holding `vectors` (PER_ARTICLE each), after removing `remove`."""
    with IndexWriter(index_dir) as writer:
        writer.remove(list(remove))
        for a in range(len(vectors) // PER_ARTICLE):
            article, chunks = _article(f"doc_{first + a:05d}", PER_ARTICLE)
            writer.add(article, "/r", "{}", chunks, vectors[a * PER_ARTICLE:(a + 1) * PER_ARTICLE])
        return writer.publish(IDENTITY, {"test": True})


def dense(reader, qvec, limit=10, filters=None) -> list[int]:
    return [i for i, _ in reader.ranking(qvec, "", Ranking("dense", limit, filters))]


def chunk_ids(reader, doc_ids) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for cid, doc in reader.db.execute("SELECT id, doc_id FROM chunks ORDER BY id"):
        if doc in doc_ids:
            out.setdefault(doc, []).append(cid)
    return out


@pytest.fixture
def low_threshold(monkeypatch):
    monkeypatch.setenv("RAG_ANN_THRESHOLD", "2000")


def test_below_the_threshold_the_index_is_exact_as_before(tmp_path, low_threshold):
    x = structured(1500, 1)
    manifest = write(tmp_path / "idx", x)
    assert manifest["vector_index"]["type"] == "flat"
    reader = open_index(tmp_path / "idx")
    assert type(reader.vectors).__name__ == "IndexIDMap2"
    q = structured(20, 2)
    for v in q:  # exactly the brute-force inner-product ranking (chunk ids start at 1)
        want = list(np.argsort(-(x @ v), kind="stable")[:10] + 1)
        assert dense(reader, v) == [int(i) for i in want]
    reader.close()


def test_switch_keeps_add_update_delete_and_counts(tmp_path, low_threshold):
    index_dir = tmp_path / "idx"
    x = structured(3000, 1)
    manifest = write(index_dir, x)
    record = manifest["vector_index"]
    assert record["type"] == "ivf-sq8" and record["nlist"] == vector_index.ideal_nlist(2005) == 16
    assert record["nprobe"] == vector_index.nprobe_for(16) == 8
    assert faiss_header(next(index_dir.glob("state-*")) / "vectors.faiss") == (DIM, 3000)

    # update one article (remove + add under new chunk ids), delete two, add new ones
    new = structured(500, 7)
    with IndexWriter(index_dir) as writer:
        writer.remove(["doc_00003", "doc_00004", "doc_00010"])
        article, chunks = _article("doc_00010", PER_ARTICLE)
        writer.add(article, "/r", "{}", chunks, new[:PER_ARTICLE])
        for a in range(1, 100):
            article, chunks = _article(f"doc_{1000 + a:05d}", PER_ARTICLE)
            writer.add(article, "/r", "{}", chunks, new[a * PER_ARTICLE:(a + 1) * PER_ARTICLE])
        manifest = writer.publish(IDENTITY, {"test": True})
    assert manifest["vector_index"]["type"] == "ivf-sq8"
    assert manifest["counts"]["chunks"] == manifest["counts"]["vectors"] == 3000 - 15 + 500
    reader = open_index(index_dir)
    ids = chunk_ids(reader, {"doc_00010", "doc_01050"})
    assert min(ids["doc_00010"]) > 3000  # the updated article's chunks are new rows
    gone = set(range(16, 26))  # chunks of doc_00003 and doc_00004, and the old ones of doc_00010:
    gone |= set(range(51, 56))
    for k in range(0, 3000, 37):
        assert not gone & set(dense(reader, x[k], 20))
    # every chunk finds itself first, including the updated and the added ones
    rows = reader.chunks(ids["doc_00010"] + ids["doc_01050"])
    for cid, row in rows.items():
        assert dense(reader, row["vector"], 1) == [cid]
    np.testing.assert_allclose(rows[ids["doc_00010"][0]]["vector"], new[0], atol=0.05)  # 8-bit codes
    reader.close()
    deep = index_status(Settings(index=str(index_dir)), deep=True)
    assert deep["consistent"] and deep["vectors"] == 3485, deep


def test_recall_against_exact_and_reopen_gives_the_same_results(tmp_path, low_threshold):
    x = structured(6000, 3)
    write(tmp_path / "idx", x)
    q = structured(6000, 3, queries=200)
    reader = open_index(tmp_path / "idx")
    got = [dense(reader, v) for v in q]
    reader.close()
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10] + 1
    recall = np.mean([len(set(g) & set(e.tolist())) / 10 for g, e in zip(got, exact, strict=True)])
    assert recall >= 0.95, recall
    again = open_index(tmp_path / "idx")
    assert [dense(again, v) for v in q] == got
    again.close()


def test_filtered_search_is_exact_among_the_allowed_chunks(tmp_path, low_threshold, monkeypatch):
    x = structured(5000, 5)
    write(tmp_path / "idx", x)
    reader = open_index(tmp_path / "idx")
    docs = tuple(f"doc_{k:05d}" for k in range(0, 1000, 50))  # 20 articles = 100 of 5000 chunks
    allowed = sorted(c for ids in chunk_ids(reader, set(docs)).values() for c in ids)
    decoded = {cid: row["vector"] for cid, row in reader.chunks(allowed).items()}
    for v in structured(30, 6):
        got = dense(reader, v, 10, Filters(docs=docs))
        want = sorted(decoded, key=lambda c: -float(decoded[c] @ v))[:10]
        assert got == want
    # a wide filter (a publisher: about 1/7 of the index), searched through the IVF lists with a
    # selector (forced here: at this size it would be searched exactly), finds the exact top 10
    monkeypatch.setattr(vector_index, "EXACT_FILTER", 0)
    reader._allowed_cache.clear()
    wide = Filters(source="S3")
    allowed = [r[0] for r in reader.db.execute("SELECT c.id FROM chunks c JOIN articles a USING (doc_id) "
                                               "WHERE a.source = 'S3'")]
    sub = x[np.asarray(allowed) - 1]
    hits = []
    for v in structured(50, 8):
        got = dense(reader, v, 10, wide)
        assert set(got) <= set(allowed)
        want = set((np.asarray(allowed)[np.argsort(-(sub @ v))[:10]]).tolist())
        hits.append(len(want & set(got)) / 10)
    assert np.mean(hits) >= 0.95
    reader.close()


def test_growth_retrains_and_shrinking_goes_back_to_exact(tmp_path, low_threshold):
    index_dir = tmp_path / "idx"
    x = structured(2500, 9)
    first = write(index_dir, x)["vector_index"]
    reader = open_index(index_dir)
    before = reader.chunks([1, 2, 3])
    reader.close()
    grown = write(index_dir, structured(2500, 10), first=1000)["vector_index"]
    assert grown["nlist"] >= 4 * first["nlist"]  # retrained on the grown index
    reader = open_index(index_dir)
    after = reader.chunks([1, 2, 3])
    for cid in (1, 2, 3):  # moving to the new lists re-encodes to the very same codes
        np.testing.assert_array_equal(before[cid]["vector"], after[cid]["vector"])
    reader.close()
    gone = [f"doc_{k:05d}" for k in [*range(100, 500), *range(1000, 1500)]]
    manifest = write(index_dir, x[:0], remove=tuple(gone))  # 500 left: under half the threshold
    assert manifest["vector_index"]["type"] == "flat" and manifest["counts"]["vectors"] == 500
    status = index_status(Settings(index=str(index_dir)))
    assert status["vector_index"] == "flat (exact)"


def test_status_shows_the_type_and_an_old_manifest_means_exact(tmp_path, low_threshold, monkeypatch):
    write(tmp_path / "idx", structured(2500, 11))
    status = index_status(Settings(index=str(tmp_path / "idx")))
    assert status["consistent"] and status["vector_index"] == "ivf-sq8 (approximate; nlist 16, nprobe 8)"
    monkeypatch.delenv("RAG_ANN_THRESHOLD")
    old = tmp_path / "old"
    write(old, structured(100, 12))
    manifest_path = next(old.glob("state-*")) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["vector_index"]  # as written before the switch existed
    manifest_path.write_text(json.dumps(manifest))
    status = index_status(Settings(index=str(old)), deep=True)
    assert status["consistent"] and status["vector_index"] == "flat (exact)"
    # a manifest that names the other type than the file holds is refused
    manifest["vector_index"] = {"type": "ivf-sq8"}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexBroken):
        open_index(old)
