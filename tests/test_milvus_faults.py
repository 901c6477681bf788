"""Faults of the Milvus store, with real processes: a bad store URI, Milvus down, Milvus killed with
SIGKILL in the middle of `rag index` (and `rag index` itself killed), Milvus restarted between
questions. After each, re-running the same `rag index` must leave exactly what a clean build holds.

The crash tests index a synthetic corpus big enough to take several seconds of writes, in a
subprocess that runs rag.indexer.index_paths with the FakeEmbedder (the real embedder would spend
minutes embedding before the first write); everything else is the real path: real Milvus (lite),
real pymilvus, real kill -9."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rag.cli import main
from rag.config import Settings
from rag.embed import FakeEmbedder
from rag.indexer import index_paths
from rag.retrieve import Retriever
from rag.status import index_status
from rag.stores import open_store
from tests.conftest import CORPUS, neutral_cwd, subprocess_env
from tests.servers import MilvusLite, free_port
from tests.test_store_backends import contents

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

DEADLINE = 120.0
INDEX_SCRIPT = """
import sys
from rag.config import Settings
from rag.embed import FakeEmbedder, TokenCounter, embedder_dir
from rag.errors import RagError
from rag.indexer import index_paths
try:
    s = index_paths([sys.argv[1]], Settings(store=sys.argv[2]), embedder=FakeEmbedder(),
                    counter=TokenCounter(embedder_dir(None)))
except RagError as e:
    print(f"rag: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
print(s.added, s.updated, s.removed, s.unchanged)
"""


@pytest.fixture
def milvus(tmp_path) -> MilvusLite:
    """A milvus-lite of this test's own (it gets killed)."""
    if os.environ.get("MILVUS_URI"):
        pytest.skip("kills and restarts the server: runs on milvus-lite only")
    folder = tmp_path / "milvus-own"
    folder.mkdir()
    server = MilvusLite(folder).start()
    yield server
    server.stop()


def _synthetic(folder: Path, n: int, edition: int = 0) -> Path:
    """n articles made from the sample corpus's sentences, each distinct (its number in it)."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = [p.read_text(encoding="utf-8") for p in sorted(CORPUS.glob("*.txt"))]
    for i in range(n):
        body = texts[i % len(texts)]
        (folder / f"a{i:04d}.txt").write_text(f"Report {i} (edition {edition})\n\n{body}\nArticle number {i}.\n",
                                              encoding="utf-8")
    return folder


def _start_index(corpus: Path, store: str, log: Path) -> subprocess.Popen:
    with open(log, "wb") as err:
        return subprocess.Popen([sys.executable, "-c", INDEX_SCRIPT, str(corpus), store], cwd=neutral_cwd(),
                                env=subprocess_env(), stdout=subprocess.PIPE, stderr=err)


def _heads(server: MilvusLite, prefix: str) -> int | None:
    """Articles written so far while nothing is published yet (None: published, or not started)."""
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=f"http://127.0.0.1:{server.port}", timeout=2)
        names = client.list_collections(timeout=2)
        meta = f"{prefix}_meta"
        if meta in names:
            client.load_collection(meta, timeout=5)
            if client.get(meta, ids=["manifest"], timeout=5):
                return None
        arts = [n for n in names if n.startswith(f"{prefix}_articles_g")]
        if not arts:
            return 0
        client.load_collection(arts[0], timeout=5)
        return int(client.query(arts[0], filter="part == 0", output_fields=["count(*)"], timeout=5)[0]["count(*)"])
    except Exception:
        return 0


def _wait_for(condition, what: str, deadline: float = DEADLINE):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _run_index(corpus: Path, store: str, tmp_path: Path) -> str:
    log = tmp_path / f"index-{uuid.uuid4().hex[:6]}.log"
    process = _start_index(corpus, store, log)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, log.read_text()
    return out.decode()


def _same_as_clean_build(settings: Settings, corpus: Path, base_uri: str) -> None:
    clean = Settings(store=f"{base_uri}/clean{uuid.uuid4().hex[:8]}")
    index_paths([str(corpus)], clean, embedder=FakeEmbedder(), counter=_counter())
    got, want = contents(settings), contents(clean)
    assert set(got["articles"]) == set(want["articles"])
    assert got["articles"] == want["articles"]  # content hashes and texts
    assert got["chunks"] == want["chunks"]  # doc ids, offsets and texts
    assert got["counts"] == want["counts"]
    from unittest import mock

    with mock.patch("rag.status.embedder_identity", lambda _: FakeEmbedder().identity):
        report = index_status(settings, deep=True)
    assert report["consistent"] is True, report


_COUNTER = []


def _counter():
    if not _COUNTER:
        from rag.embed import TokenCounter, embedder_dir

        _COUNTER.append(TokenCounter(embedder_dir(None)))
    return _COUNTER[0]


# --- bad input and Milvus away --------------------------------------------------------------------

@pytest.mark.parametrize("uri", ["milvus://", "milvus://127.0.0.1", "milvus://127.0.0.1:0", "milvus://host:99999",
                                 "milvus://host:port", "milvus://:19530", "milvus://h:19530/bad-name",
                                 "s3://bucket/index", "milvus://user:pw@h:19530"])
def test_bad_store_uri_is_one_line_and_exit_2(uri, capsys, tmp_path):
    code = main(["status", "--store", uri])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("rag: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "milvus://HOST:PORT" in err or "RAG_MILVUS_TOKEN" in err


def test_bad_store_uri_in_environment(monkeypatch, capsys):
    monkeypatch.setenv("RAG_STORE", "milvus://nowhere:70000")
    assert main(["index", str(CORPUS)]) == 2
    assert "bad port" in capsys.readouterr().err


def test_milvus_down_is_one_line(tmp_path):
    uri = f"milvus://127.0.0.1:{free_port()}/rag"  # nothing listens there
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "rag.cli", "index", str(CORPUS), "--store", uri], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith(f"rag: cannot reach Milvus at {uri}") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - started < 60
    status = subprocess.run([sys.executable, "-m", "rag.cli", "status", "--json", "--store", uri], cwd=tmp_path,
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert status.returncode == 1 and "cannot reach Milvus" in status.stdout and "Traceback" not in status.stderr


# --- crashes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("restart", ["at-once", "after-the-index-failed"])
def test_milvus_killed_mid_index_then_rerun_equals_clean_build(milvus, tmp_path, restart, monkeypatch):
    monkeypatch.setenv("RAG_MILVUS_TIMEOUT", "3")  # how long a call retries while Milvus is away
    corpus = _synthetic(tmp_path / "corpus", 300)
    prefix = "crash"
    store = f"{milvus.uri}/{prefix}"
    process = _start_index(corpus, store, tmp_path / "first.log")
    _wait_for(lambda: (_heads(milvus, prefix) or 0) > 0 or process.poll() is not None, "the first articles")
    assert process.poll() is None, "the index finished before Milvus could be killed: make the corpus bigger"
    milvus.kill()
    if restart == "at-once":
        milvus.start()  # the same data folder and port: pymilvus's retries may reach it and finish
    process.wait(DEADLINE)
    log = (tmp_path / "first.log").read_text()
    assert "Traceback" not in log, log
    if restart != "at-once":
        assert process.returncode == 1 and log.count("\n") == 1, log
        assert log.startswith(f"rag: cannot reach Milvus at {store}") and "run the same `rag index` again" in log
        milvus.start()
    _run_index(corpus, store, tmp_path)
    _same_as_clean_build(Settings(store=store), corpus, milvus.uri)


def test_index_killed_mid_write_then_rerun_equals_clean_build(milvus, tmp_path):
    corpus = _synthetic(tmp_path / "corpus", 300)
    store = f"{milvus.uri}/crash2"
    _run_index(corpus, store, tmp_path)
    for i in range(0, 300, 3):  # then: 1/3 changed, some deleted, some new; killed while writing those
        (corpus / f"a{i:04d}.txt").write_text(f"Changed report {i}.\n\n" + (corpus / f"a{i:04d}.txt").read_text(),
                                              encoding="utf-8")
    for i in range(1, 60, 3):
        (corpus / f"a{i:04d}.txt").unlink()
    _synthetic(tmp_path / "extra", 30, edition=1)
    for p in (tmp_path / "extra").iterdir():
        shutil.move(p, corpus / f"new-{p.name}")
    before = open_store(Settings(store=store)).state
    process = _start_index(corpus, store, tmp_path / "second.log")
    _wait_for(lambda: _written_since(store, before) or process.poll() is not None, "the second run's writes")
    assert process.poll() is None, "the index finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    out = _run_index(corpus, store, tmp_path)  # the dead writer's lock is taken over at once (same host)
    assert out.split()[2] == "0" or out  # removed count is whatever was left to remove
    _same_as_clean_build(Settings(store=store), corpus, milvus.uri)


def _written_since(store: str, state: str) -> bool:
    """Whether the running writer has started writing articles (its "writing" record exists and some
    article has a newer indexed_at than the published state... approximated by the record alone plus
    a changed head)."""
    from rag.store_milvus import Milvus, collection_names, read_article
    from rag.stores import parse_store

    target = parse_store(store)
    db = Milvus(target)
    names = collection_names(target.prefix, 0)
    try:
        if db.meta(names, "writing") is None:
            return False
        manifest = db.meta(names, "manifest")
        article = read_article(db, manifest["collections"], "a0000.txt")
        return article is None or article.text.startswith("Changed")
    except Exception:
        return False


def test_milvus_restarted_between_questions(milvus, tmp_path):
    settings = Settings(store=f"{milvus.uri}/restart")
    index_paths([str(CORPUS)], settings, embedder=FakeEmbedder(), counter=_counter())
    embedder = FakeEmbedder()
    reader = open_store(settings, embedder.identity)
    retriever = Retriever(reader, embedder.embed)
    first = [h.chunk_id for h in retriever.search("What did the US urge Pakistan to do?", k=4)]
    milvus.kill()
    milvus.start()  # comes back with its collections unloaded
    again = [h.chunk_id for h in retriever.search("What did the US urge Pakistan to do?", k=4)]
    assert again == first
    assert reader.article(reader.doc_ids(1)[0]) is not None
    reopened = open_store(settings, embedder.identity)  # a new open loads the collections too
    assert [h.chunk_id for h in Retriever(reopened, embedder.embed).search(
        "What did the US urge Pakistan to do?", k=4)] == first


def test_killed_writer_lock_is_taken_over(milvus, tmp_path):
    """A writer killed while holding the lock leaves it behind; the next writer takes it at once
    (same machine, dead process) instead of waiting for the heartbeat to go stale."""
    store = f"{milvus.uri}/lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from rag.config import Settings\n"
        "from rag.stores import store_writer\n"
        "w = store_writer(Settings(store=sys.argv[1])).__enter__()\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n"), store], cwd=neutral_cwd(), env=subprocess_env(), stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        from rag.errors import IndexLocked

        with pytest.raises(IndexLocked):
            index_paths([str(CORPUS)], Settings(store=store, lock_timeout=0.5), embedder=FakeEmbedder(),
                        counter=_counter())
    finally:
        holder.kill()
        holder.wait(10)
    summary = index_paths([str(CORPUS)], Settings(store=store, lock_timeout=5), embedder=FakeEmbedder(),
                          counter=_counter())
    assert summary.added == 5
