"""The same store suite against both stores: the file store (FAISS + SQLite) and Milvus (milvus-lite
started by the `milvus_server` fixture, or the real Milvus that MILVUS_URI names).

Each test gets a fresh index: a tmp folder, or a fresh collection prefix in the shared Milvus."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from rag.config import Settings
from rag.embed import FakeEmbedder
from rag.errors import IndexBroken, IndexLocked, IndexMissing
from rag.filters import Filters, Ranking
from rag.indexer import index_paths
from rag.retrieve import Retriever
from rag.status import index_status
from rag.stores import open_store, store_writer
from tests.conftest import CORPUS, neutral_cwd, subprocess_env
from tests.servers import milvus_server as milvus_server_fixture  # noqa: F401

QUESTIONS = ["What did the US urge Pakistan to do?", "How many soldiers were killed in the attack?",
             "Who claimed responsibility for the attack?", "What did India say about Pakistan?"]


def _settings(kind: str, tmp_path: Path, request, **kw) -> Settings:
    if kind == "files":
        return Settings(index=str(tmp_path / "idx"), **kw)
    uri = request.getfixturevalue("milvus_server")
    return Settings(index=str(tmp_path / "unused"), store=f"{uri}/t{uuid.uuid4().hex[:12]}", **kw)


@pytest.fixture(params=["files", "milvus"])
def store(request, tmp_path) -> Settings:
    return _settings(request.param, tmp_path, request)


def _index(settings: Settings, paths, counter, embedder=None, **kw):
    return index_paths([str(p) for p in paths], settings, embedder=embedder or FakeEmbedder(), counter=counter, **kw)


def contents(settings: Settings) -> dict:
    """What a store holds: articles (content hash, text) and chunks (doc, offsets, text)."""
    reader = open_store(settings)
    try:
        docs = reader.doc_ids(10_000)
        articles = {d: (a.content_hash, a.text) for d in docs if (a := reader.article(d)) is not None}
        if reader.kind == "milvus":  # every row (a search would be approximate: HNSW)
            rows = reader.db.query_all(reader.names["chunks"], "", ["doc_id", "char_start", "char_end", "text"])
            chunks = sorted((r["doc_id"], r["char_start"], r["char_end"], r["text"]) for r in rows)
        else:
            chunks = sorted(reader.db.execute('SELECT doc_id, start, "end", text FROM chunks').fetchall())
        return {"articles": articles, "chunks": chunks, "counts": reader.manifest["counts"]}
    finally:
        reader.close()


def test_index_read_and_noop(store, corpus, counter):
    first = _index(store, [corpus], counter)
    assert (first.added, first.updated, first.removed, first.unchanged) == (5, 0, 0, 0)
    assert first.chunks_embedded == first.chunks > 5
    held = contents(store)
    assert held["counts"]["chunks"] == len(held["chunks"]) == first.chunks
    for doc_id, start, end, text in held["chunks"]:
        assert held["articles"][doc_id][1][start:end] == text
    reader = open_store(store)
    article = reader.article("000_7e1cbb29f31f5564.txt")
    assert article.date == "2019-02-20" and article.title and article.content_hash
    assert article.text == (corpus / "000_7e1cbb29f31f5564.txt").read_text(encoding="utf-8") or article.text
    assert reader.article("no-such-doc") is None
    assert reader.sources() == sorted(reader.sources()) and reader.sources()
    assert reader.date_range()[0] <= reader.date_range()[1]
    reader.close()
    embedder = FakeEmbedder()
    again = _index(store, [corpus], counter, embedder=embedder)
    assert (again.unchanged, again.chunks_embedded, embedder.calls) == (5, 0, 0)


def test_incremental_sync(store, corpus, counter):
    _index(store, [corpus], counter)
    before = contents(store)
    changed = corpus / "003_bec82752a72c5b16.txt"
    changed.write_text(changed.read_text(encoding="utf-8") + "\nA new closing sentence.\n", encoding="utf-8")
    summary = _index(store, [corpus], counter)
    assert (summary.added, summary.updated, summary.removed, summary.unchanged) == (0, 1, 0, 4)
    (corpus / "004_54675ee963de578f.txt").unlink()
    summary = _index(store, [corpus], counter)
    assert (summary.updated, summary.removed, summary.unchanged) == (0, 1, 4)
    assert summary.removed_ids == ["004_54675ee963de578f.txt"]
    after = contents(store)
    assert "004_54675ee963de578f.txt" not in after["articles"]
    assert not [c for c in after["chunks"] if c[0] == "004_54675ee963de578f.txt"]
    assert after["articles"]["003_bec82752a72c5b16.txt"][0] != before["articles"]["003_bec82752a72c5b16.txt"][0]
    assert after["articles"]["003_bec82752a72c5b16.txt"][1].endswith("A new closing sentence.\n")
    assert after["counts"]["chunks"] == len(after["chunks"])


def test_filters(store, corpus, counter):
    _index(store, [corpus], counter)
    embedder = FakeEmbedder()
    reader = open_store(store, embedder.identity)
    retriever = Retriever(reader, embedder.embed)
    try:
        every = retriever.search("Pakistan attack", k=20)
        assert len({h.doc_id for h in every}) >= 4
        since = retriever.search("Pakistan attack", k=20, filters=Filters(since="2025-01-01"))
        assert since and all(h.date and h.date >= "2025-01-01" for h in since)
        until = retriever.search("Pakistan attack", k=20, filters=Filters(until="2019-12-31"))
        assert until and all(h.date and h.date <= "2019-12-31" for h in until)
        source = reader.sources()[0]
        by_source = retriever.search("Pakistan attack", k=20, filters=Filters(source=source.lower()))
        assert by_source and all(h.source == source for h in by_source)
        doc = "002_52908c8bc44237eb.txt"
        by_doc = retriever.search("Pakistan attack", k=20, filters=Filters(docs=(doc, "not-there\"' or 1==1")))
        assert by_doc and {h.doc_id for h in by_doc} == {doc}
        assert retriever.search("Pakistan", k=5, filters=Filters(source='AFP" or source != "')) == []
        for hit in every + since + by_doc:
            assert reader.article(hit.doc_id).text[hit.start:hit.end] == hit.text  # what /open shows
    finally:
        reader.close()


def test_embedder_mismatch_is_refused(store, corpus, counter):
    _index(store, [corpus], counter)
    other = FakeEmbedder(dim=32, name="other-embedder")
    with pytest.raises(IndexBroken, match="embedder") as err:
        open_store(store, other.identity)
    assert "rebuild" in err.value.hint
    report = index_status(store)
    assert report["consistent"] is False and "embedder" in report["problem"]
    # Indexing with the other embedder re-embeds everything: the two never mix.
    swapped = _index(store, [corpus], counter, embedder=other)
    assert swapped.updated == 5 and swapped.chunks_embedded == swapped.chunks
    reader = open_store(store, other.identity)
    assert reader.manifest["embedder"]["name"] == "other-embedder"
    assert reader.manifest["counts"]["chunks"] == swapped.chunks
    reader.close()


def test_missing_index_and_status(store, corpus, counter, monkeypatch):
    with pytest.raises(IndexMissing):
        open_store(store)
    _index(store, [corpus], counter)
    monkeypatch.setattr("rag.status.embedder_identity", lambda _: FakeEmbedder().identity)
    for deep in (False, True):
        report = index_status(store, deep=deep)
        assert report["consistent"] is True, report
        assert report["articles"] == 5 and report["store"] in ("files", "milvus")


def test_one_writer_at_a_time(store, corpus, counter):
    _index(store, [corpus], counter)
    from dataclasses import replace

    with store_writer(store):
        with pytest.raises(IndexLocked, match="another `rag index`"):
            _index(replace(store, lock_timeout=0.3), [corpus], counter)
    assert _index(store, [corpus], counter).unchanged == 5


def test_rebuild_replaces_everything(store, corpus, counter):
    _index(store, [corpus], counter)
    (corpus / "004_54675ee963de578f.txt").unlink()
    summary = _index(store, [corpus], counter, rebuild=True)
    assert (summary.added, summary.articles) == (4, 4)
    assert set(contents(store)["articles"]) == {p.name for p in corpus.glob("*.txt")}


def test_both_stores_rank_alike(tmp_path, request, corpus, counter):
    files = _settings("files", tmp_path, request)
    milvus = _settings("milvus", tmp_path, request)
    embedder = FakeEmbedder()
    for settings in (files, milvus):
        _index(settings, [corpus], counter)
    readers = [open_store(s, embedder.identity) for s in (files, milvus)]
    try:
        for question in QUESTIONS:
            qvec = embedder.embed([question])[0]
            dense = []
            for reader in readers:
                ids = [cid for cid, _ in reader.ranking(qvec, question, Ranking("dense", 8))]
                dense.append([r["chunk_id"] for r in map(reader.chunks(ids).get, ids)])
            assert dense[0] == dense[1], question  # exact inner product on the same vectors
            tops = [[h.doc_id for h in Retriever(r, embedder.embed).search(question, k=3)] for r in readers]
            assert tops[0][0] == tops[1][0], (question, tops)
    finally:
        for reader in readers:
            reader.close()


@pytest.mark.slow
def test_cli_index_and_ask_through_milvus(milvus_server, tmp_path):
    """The real embedder through the CLI: index into Milvus, ask, open each citation from Milvus alone."""
    store = f"{milvus_server}/cli{uuid.uuid4().hex[:8]}"
    env = subprocess_env()
    run = [sys.executable, "-m", "rag.cli"]
    done = subprocess.run([*run, "index", str(CORPUS), "--store", store], cwd=neutral_cwd(), env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"index {store}: 5 articles" in done.stdout
    asked = subprocess.run([*run, "ask", "--json", "--store", store, "What did the US urge Pakistan to do?",
                            "--mode", "extractive"], cwd=neutral_cwd(), env=env, capture_output=True, text=True,
                           timeout=600)
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    assert not answer["abstained"] and answer["citations"]
    assert "urge" in answer["answer"].lower()
    reader = open_store(Settings(store=store))
    try:
        for citation in answer["citations"]:
            text = reader.article(citation["doc_id"]).text
            assert text[citation["start"]:citation["end"]] == citation["quote"]
    finally:
        reader.close()
    # Another machine: no local files at all (a fresh cache folder); the same answer from Milvus alone.
    elsewhere = subprocess_env(RAG_CACHE_DIR=str(tmp_path / "other-machine-cache"))
    again = subprocess.run([*run, "ask", "--json", "--store", store, "What did the US urge Pakistan to do?",
                            "--mode", "extractive"], cwd=neutral_cwd(), env=elsewhere, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["citations"] == answer["citations"]
    status = subprocess.run([*run, "doctor", "--json", "--store", store], cwd=neutral_cwd(), env=env,
                            capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["store"] == "milvus"


def test_file_store_and_help_never_import_pymilvus(tmp_path):
    """pymilvus (and grpc) load only when a Milvus store is used."""
    script = ("import sys\nfrom rag.cli import main\nfor argv in (['--help'], ['status', '--index', sys.argv[1]]):\n"
              "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
              "print(sorted(m for m in ('pymilvus', 'grpc', 'milvus_lite') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "none")], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


@pytest.mark.slow
def test_both_stores_agree_with_the_real_embedder(milvus_server, sample_index, real_embedder, counter):
    """The gold questions over the sample corpus: the same top article from both stores."""
    milvus = Settings(store=f"{milvus_server}/real{uuid.uuid4().hex[:8]}")
    index_paths([str(CORPUS)], milvus, embedder=real_embedder, counter=counter)
    questions = [json.loads(line)["question"] for line in (CORPUS.parent / "gold.jsonl").read_text().splitlines()
                 if line.strip()]
    readers = [open_store(Settings(index=str(sample_index)), real_embedder.identity),
               open_store(milvus, real_embedder.identity)]
    try:
        tops = [[[h.doc_id for h in Retriever(r, real_embedder.embed).search(q, k=3)] for q in questions]
                for r in readers]
    finally:
        for reader in readers:
            reader.close()
    same_first = sum(a[0] == b[0] for a, b in zip(*tops, strict=True) if a and b)
    print(f"top article equal for {same_first}/{len(questions)} questions")
    assert same_first >= 0.8 * len(questions), tops
