"""`rag serve` and `rag ask --server`, against real server processes over real HTTP.

Each server is a `rag serve` subprocess on 127.0.0.1 and a free port, started in a temporary
folder, its stderr written to a log there; it is stopped when its `with` block or fixture ends,
also when a test fails, and a log holding a traceback fails the test that ran it. The client's
exit codes and output are also checked against a stub server (stdlib http.server), which needs
no models and so runs in the fast tier.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import CORPUS, subprocess_env
from tests.hardening import rag_command, run_cli
from tests.servers import free_port, stop

QUESTION = "What did the US urge Pakistan to do?"
NEW_FACT_QUESTION = "How many glass harmonicas were restored in Velmora?"  # abstained on the sample articles
START_TIMEOUT = 180.0  # seconds: worker processes, the model and its fast copy on a busy 2-core machine
STOP_TIMEOUT = 15.0
HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "llama_cpp", "onnxruntime", "numpy", "fastapi")


# --- running `rag serve` -------------------------------------------------------------------------


class Served(NamedTuple):
    url: str
    port: int
    process: subprocess.Popen
    log: Path


def log_text(log: Path) -> str:
    try:
        return log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"


@contextmanager
def rag_serve(index: Path, folder: Path, *flags: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """`rag serve --index INDEX FLAGS` on a free port, ready (/healthz answers) when yielded."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"serve-{port}.log"
    with open(log, "wb") as err:
        process = subprocess.Popen(rag_command("serve", "--index", str(index), "--port", str(port), *flags),
                                   env=env or subprocess_env(), cwd=folder, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_ready(process, port, log)
        yield Served(f"http://127.0.0.1:{port}", port, process, log)
    finally:
        stop(process)
    text = log_text(log)
    assert "Traceback" not in text, text
    assert process.returncode == 0, f"rag serve exited {process.returncode}:\n{text[-2000:]}"


def wait_ready(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"rag serve exited with {process.returncode} before answering:\n{log_text(log)[-3000:]}",
                        pytrace=False)
        try:
            if request(f"http://127.0.0.1:{port}", "GET", "/healthz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"rag serve did not answer /healthz within {START_TIMEOUT:g} s:\n{log_text(log)[-3000:]}",
                pytrace=False)


# --- talking to it ---------------------------------------------------------------------------------


def request(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 120.0) -> tuple[int, dict, bytes]:
    """(status, headers with lower-case names, body) over http.client (no proxies)."""
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def ask(url: str, payload: dict, token: str | None = None) -> tuple[int, dict, dict]:
    """POST /v1/ask: (status, JSON body, headers)."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    status, head, body = request(url, "POST", "/v1/ask", json.dumps(payload).encode(), headers)
    return status, json.loads(body), head


def stream(url: str, payload: dict) -> list[tuple[str, str]]:
    """POST /v1/ask/stream: the (event, data) pairs, read line by line as they arrive."""
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", "/v1/ask/stream", body=json.dumps(payload).encode(),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("content-type", "").startswith("text/event-stream")
        events, kind, data = [], None, []
        for raw in response:
            line = raw.decode("utf-8").rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif not line and kind:
                events.append((kind, "\n".join(data)))
                kind, data = None, []
        return events
    finally:
        conn.close()


def stable(answer: dict) -> dict:
    """An answer without what depends on timing."""
    return {k: v for k, v in answer.items() if k != "timings_ms"}


def assert_one_line_error(status: int, body: bytes, expected: int, *words: str) -> str:
    assert status == expected, (status, body)
    data = json.loads(body)
    assert isinstance(data["error"], str) and "\n" not in data["error"] and data["error"], data
    for word in words:
        assert word in data["error"], (word, data["error"])
    return data["error"]


def rag_ask(index: Path, *args: str, env: dict | None = None, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(rag_command("ask", "--index", str(index), *args), capture_output=True, text=True,
                          env=env or subprocess_env(), cwd=cwd, timeout=300, check=False)


def rag_client(*args: str, env: dict | None = None, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(rag_command("ask", *args), capture_output=True, text=True, env=env or subprocess_env(),
                          cwd=cwd, timeout=300, check=False)


# --- fixtures ------------------------------------------------------------------------------------


def add_query_export(index: Path, real_embedder, tmp_path_factory) -> None:
    """Put the ONNX query embedder beside the index, as `rag index` does (the sample_index fixture is
    built in-process without it): servers then load in a second instead of importing torch."""
    from rag.query_embed import ensure_onnx, onnx_path

    folder = tmp_path_factory.getbasetemp() / "onnx-export"  # shared with test_query_embed, test_lazy_imports
    folder.mkdir(exist_ok=True)
    assert ensure_onnx(folder, real_embedder) is None
    exported = onnx_path(folder, real_embedder.identity)
    try:
        (index / exported.name).hardlink_to(exported)
    except OSError:
        shutil.copyfile(exported, index / exported.name)


@pytest.fixture(scope="module")
def module_env(rag_home) -> dict[str, str]:
    """subprocess_env() for module-scoped servers, which start before the per-test isolation
    (conftest's isolated_environment) applies: the same isolation, set for the call."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("RAG_")]:
            mp.delenv(name)
        mp.setenv("RAG_CACHE_DIR", str(rag_home / "cache" / "rag"))
        mp.setenv("RAG_CONFIG", str(rag_home / "rag.toml"))
        mp.setenv("XDG_CACHE_HOME", str(rag_home / "cache"))
        return subprocess_env()


@pytest.fixture(scope="module")
def served_index(tmp_path_factory, sample_index, real_embedder) -> Path:
    """A copy of the sample index with its ONNX query embedder; tests must not change it."""
    index = tmp_path_factory.mktemp("served") / "index"
    shutil.copytree(sample_index, index)
    add_query_export(index, real_embedder, tmp_path_factory)
    return index


@pytest.fixture(scope="module")
def extractive_server(served_index, tmp_path_factory, module_env) -> Iterator[Served]:
    """One `rag serve --mode extractive` (default worker processes) for the tests of this module."""
    with rag_serve(served_index, tmp_path_factory.mktemp("serve-extractive"), "--mode", "extractive",
                   env=module_env) as served:
        yield served


# --- the API --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ask_gives_exactly_what_rag_ask_json_prints(extractive_server, served_index, tmp_path):
    cases = [({"question": QUESTION}, [], 0),
             ({"question": QUESTION, "source": "AFP", "k": 4}, ["--source", "AFP", "-k", "4"], 0),
             ({"question": "Who bombed the bus?", "until": "2020-01-01", "as_of": "2019-03-01"},
              ["--until", "2020-01-01", "--as-of", "2019-03-01"], None),
             ({"question": NEW_FACT_QUESTION}, [], 3)]
    for payload, flags, code in cases:
        status, served, headers = ask(extractive_server.url, payload)
        assert status == 200, served  # answered or abstained alike
        assert headers["content-type"] == "application/json"
        assert headers["x-rag-state"].startswith("state-")
        done = rag_ask(served_index, payload["question"], "--json", "--mode", "extractive", *flags, cwd=tmp_path)
        assert done.returncode == (code if code is not None else 3 if served["abstained"] else 0), done.stderr
        local = json.loads(done.stdout)
        for field in ("answer", "abstained", "citations", "sentences"):
            assert served[field] == local[field], field
        assert stable(served) == stable(local)
        assert set(served) == set(local)
    assert served["abstained"] and not served["citations"]


@pytest.mark.slow
def test_16_concurrent_extractive_questions_each_get_their_own_answer(extractive_server):
    gold = [json.loads(line)["question"] for line in (CORPUS.parent / "gold.jsonl").read_text().splitlines()
            if line.strip()]
    questions = list(dict.fromkeys(gold))[:16]
    assert len(questions) == 16
    alone = {}
    for q in questions:
        status, answer, _ = ask(extractive_server.url, {"question": q, "mode": "extractive"})
        assert status == 200, answer
        alone[q] = stable(answer)
    together: dict[str, tuple[int, dict]] = {}
    start = threading.Barrier(len(questions))

    def client(q: str) -> None:
        start.wait()
        status, answer, _ = ask(extractive_server.url, {"question": q, "mode": "extractive"})
        together[q] = (status, stable(answer))

    threads = [threading.Thread(target=client, args=(q,)) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(together) == 16
    for q in questions:
        assert together[q] == (200, alone[q]), q


@pytest.mark.slow
def test_extractive_stream_is_just_the_answer_event(extractive_server):
    events = stream(extractive_server.url, {"question": QUESTION})
    assert [kind for kind, _ in events] == ["answer"]
    _, answer, _ = ask(extractive_server.url, {"question": QUESTION})
    assert stable(json.loads(events[0][1])) == stable(answer)


@pytest.mark.slow
def test_errors_are_one_line_json_with_the_right_status(extractive_server):
    url = extractive_server.url
    as_json = {"Content-Type": "application/json"}
    for body, expected, words in [
        (b'{"question": "What', 400, ["not valid JSON"]),
        (b"{}", 422, ["question"]),
        (b'{"question": 7}', 422, ["question"]),
        (b'{"question": "Why?", "k": "many"}', 422, ["k"]),
        (b'{"question": "Why?", "mode": "poetry"}', 422, ["mode"]),
        (b'{"question": "Why?", "colour": "red"}', 422, ["colour", "unknown field"]),
        (b'{"question": "Why?", "as_of": "2023-02-30"}', 422, ["as_of"]),
        (b'{"question": "Why?", "since": "last week"}', 422, ["since"]),
        (b'{"question": "   "}', 422, ["empty"]),
        (b'{"question": "?!"}', 422, ["no words"]),
        (json.dumps({"question": "x" * 2001}).encode(), 422, ["question"]),
        (b'["What did the US urge Pakistan to do?"]', 422, ["JSON object"]),
    ]:
        for path in ("/v1/ask", "/v1/ask/stream"):
            status, _, reply = request(url, "POST", path, body, as_json)
            assert_one_line_error(status, reply, expected, *words)
    status, _, reply = request(url, "POST", "/v1/ask", b"{}", as_json)
    assert json.loads(reply)["details"] == [{"field": "question", "problem": "Field required"}]

    big = json.dumps({"question": QUESTION, "docs": ["x" * 1000] * 100}).encode()  # 100 KB
    assert_one_line_error(*request(url, "POST", "/v1/ask", big, as_json)[::2], 413, "limit")
    assert_one_line_error(*chunked_post(url, big)[::2], 413, "limit")  # no Content-Length: the bytes are counted
    assert_one_line_error(*request(url, "GET", "/v1/nothing")[::2], 404, "/v1/nothing")
    status, headers, reply = request(url, "GET", "/v1/ask")
    assert_one_line_error(status, reply, 405, "POST")
    assert headers["allow"] == "POST"
    assert_one_line_error(*request(url, "DELETE", "/healthz")[::2], 405)
    assert request(url, "GET", "/healthz")[0] == 200  # still serving
    log = log_text(extractive_server.log)
    assert "Traceback" not in log
    assert "rag serve: 127.0.0.1 POST /v1/ask 413" in log  # one access line per request


def chunked_post(url: str, body: bytes) -> tuple[int, dict, bytes]:
    """POST with Transfer-Encoding: chunked, 8 KB at a time: the size is known only by reading."""
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/v1/ask", body=(body[i:i + 8192] for i in range(0, len(body), 8192)),
                     headers={"Content-Type": "application/json"}, encode_chunked=True)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    except (BrokenPipeError, ConnectionResetError):  # the server may answer and close before reading it all
        pytest.fail("the server closed the connection without a 413")
    finally:
        conn.close()


@pytest.mark.slow
def test_status_healthz_and_the_openapi_page(extractive_server, served_index):
    url = extractive_server.url
    status, _, body = request(url, "GET", "/healthz")
    assert (status, json.loads(body)) == (200, {"ok": True})
    status, _, body = request(url, "GET", "/v1/status")
    report = json.loads(body)
    assert status == 200 and report["consistent"] is True
    assert (report["articles"], report["chunks"]) == (5, 22)
    assert report["embedder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert report["state"].startswith("state-") and report["index"] == str(served_index.resolve())
    assert report["server"]["mode"] == "extractive" and report["server"]["token_required"] is False
    status, _, body = request(url, "GET", "/openapi.json")
    paths = json.loads(body)["paths"]
    assert status == 200 and {"/v1/ask", "/v1/ask/stream", "/v1/status", "/healthz"} <= set(paths)
    status, headers, body = request(url, "GET", "/docs")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"openapi.json" in body
    # Offline: the page's script and style come from this server, never from a CDN.
    assets = re.findall(rb'(?:src|href)="(/[^"]+\.(?:js|css))"', body)
    assert len(assets) >= 2 and b"http" not in b" ".join(re.findall(rb'(?:src|href)="([^"]+)"', body))
    for asset in assets:
        status, _, content = request(url, "GET", asset.decode())
        assert status == 200 and len(content) > 10_000, asset


@pytest.mark.slow
def test_llm_stream_sends_the_draft_then_the_verified_answer(served_index, tmp_path):
    """The default mode (llm, the bundled model): generation is serialised, so concurrent
    questions get exactly the answers they get alone."""
    other = "How many civilians were killed in the terrorist attack in Pahalgam?"
    with rag_serve(served_index, tmp_path, "--workers", "1") as served:
        events = stream(served.url, {"question": QUESTION})
        kinds = [kind for kind, _ in events]
        assert kinds[-1] == "answer" and kinds.count("answer") == 1
        assert set(kinds[:-1]) == {"token"} and len(kinds) > 2
        streamed = json.loads(events[-1][1])
        assert streamed["mode"] == "llm" and streamed["model"]["llm"]
        assert "".join(json.loads(data)["text"] for kind, data in events[:-1]) == streamed["draft"]
        status, plain, _ = ask(served.url, {"question": QUESTION})
        assert status == 200 and stable(plain) == stable(streamed)
        alone = stable(ask(served.url, {"question": other})[1])

        results: dict[str, dict] = {}
        jobs = {"plain": lambda: ask(served.url, {"question": QUESTION})[1],
                "other": lambda: ask(served.url, {"question": other})[1],
                "stream": lambda: json.loads(stream(served.url, {"question": QUESTION})[-1][1])}
        threads = [threading.Thread(target=lambda n=n, f=f: results.__setitem__(n, stable(f())))
                   for n, f in jobs.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert results == {"plain": stable(plain), "other": alone, "stream": stable(plain)}


# --- security -------------------------------------------------------------------------------------


def test_a_host_beyond_loopback_needs_a_token(tmp_path):
    port = free_port()
    done = subprocess.run(rag_command("serve", "--host", "0.0.0.0", "--port", str(port), "--index",
                                      str(tmp_path / "index")), capture_output=True, text=True,
                          env=subprocess_env(), cwd=tmp_path, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rag: ") and "RAG_SERVE_TOKEN" in lines[0], done.stderr
    with socket.socket() as s:  # it never listened, and it is gone
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_serve_refuses_a_missing_index_and_a_taken_port_in_one_line(tmp_path):
    done = subprocess.run(rag_command("serve", "--index", str(tmp_path / "none"), "--port", str(free_port())),
                          capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=120,
                          check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no index at" in done.stderr, done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = subprocess.run(rag_command("serve", "--port", str(taken.getsockname()[1])), capture_output=True,
                              text=True, env=subprocess_env(), cwd=tmp_path, timeout=60, check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "cannot listen" in done.stderr, done.stderr


@pytest.mark.slow
def test_with_a_token_every_request_but_healthz_needs_it(served_index, tmp_path):
    """Also: the in-process answering path (--workers 0), and a model that cannot load (503)."""
    token = "s3cret-token-for-tests"
    env = subprocess_env(RAG_SERVE_TOKEN=token, RAG_MODEL=str(tmp_path / "missing.gguf"))
    with rag_serve(served_index, tmp_path, "--mode", "extractive", "--workers", "0", env=env) as served:
        payload = {"question": QUESTION}
        assert ask(served.url, payload)[0] == 401
        assert ask(served.url, payload, token="wrong")[0] == 401
        status, reply, headers = ask(served.url, payload, token=token)
        assert status == 200 and not reply["abstained"]
        status, reply, _ = ask(served.url, {**payload, "mode": "llm"}, token=token)
        assert status == 503 and "model file not found" in reply["error"] and "\n" not in reply["error"]
        body = json.dumps(payload).encode()
        for headers in ({"Authorization": f"Basic {token}"}, {"Authorization": token}, {}):
            status, head, reply = request(served.url, "POST", "/v1/ask", body, headers)
            assert_one_line_error(status, reply, 401, "RAG_SERVE_TOKEN")
            assert head["www-authenticate"] == "Bearer"
        for path in ("/v1/status", "/openapi.json", "/docs", "/nowhere"):
            assert request(served.url, "GET", path)[0] == 401, path
        assert request(served.url, "GET", "/v1/status", headers={"Authorization": f"Bearer {token}"})[0] == 200
        assert request(served.url, "GET", "/healthz")[0] == 200

        done = rag_client("--server", served.url, QUESTION, env=env, cwd=tmp_path)
        assert done.returncode == 0 and "[1]" in done.stdout, done.stderr
        for client_env in (subprocess_env(), subprocess_env(RAG_SERVE_TOKEN="wrong")):
            done = rag_client("--server", served.url, QUESTION, env=client_env, cwd=tmp_path)
            assert done.returncode == 2 and not done.stdout
            assert done.stderr.count("\n") == 1 and "RAG_SERVE_TOKEN" in done.stderr, done.stderr
    assert "s3cret" not in log_text(served.log)


# --- a new index without a restart -----------------------------------------------------------------


NEW_ARTICLE = """Velmora restores its glass harmonicas
date 2024-03-05

VELMORA (AFP) - The Zorvath Institute said on Tuesday that 7,412 glass harmonicas were restored in
Velmora last year, more than in any year since the workshops opened.

The institute's director said the restored instruments would be lent to schools across the region.
"""


@pytest.mark.slow
def test_a_newly_published_index_is_answered_from_without_restart(corpus, tmp_path, tmp_path_factory, real_embedder,
                                                                   counter):
    from rag.config import Settings
    from rag.indexer import index_paths

    index = tmp_path / "index"
    index_paths([str(corpus)], Settings(index=str(index)), embedder=real_embedder, counter=counter)
    add_query_export(index, real_embedder, tmp_path_factory)
    with rag_serve(index, tmp_path / "run", "--mode", "extractive") as served:
        status, before, headers = ask(served.url, {"question": NEW_FACT_QUESTION})
        assert status == 200 and before["abstained"]
        (corpus / "900_velmora.txt").write_text(NEW_ARTICLE, encoding="utf-8")
        done = subprocess.run(rag_command("index", str(corpus), "--index", str(index)), capture_output=True,
                              text=True, env=subprocess_env(), cwd=tmp_path, timeout=300, check=False)
        assert done.returncode == 0 and "1 added" in done.stdout, done.stderr
        status, after, new_headers = ask(served.url, {"question": NEW_FACT_QUESTION})
        assert status == 200 and not after["abstained"], after
        assert "7,412" in after["answer"] and after["citations"][0]["doc_id"] == "900_velmora.txt"
        assert new_headers["x-rag-state"] != headers["x-rag-state"]
        status, _, body = request(served.url, "GET", "/v1/status")
        assert json.loads(body)["articles"] == 6
        for _ in range(4):  # every worker process has moved to the new state
            assert not ask(served.url, {"question": NEW_FACT_QUESTION})[1]["abstained"]
        assert served.process.poll() is None


@pytest.mark.slow
def test_a_broken_new_state_leaves_the_last_good_one_answering(served_index, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(served_index, index)
    with rag_serve(index, tmp_path / "run", "--mode", "extractive", "--workers", "1") as served:
        status, good, headers = ask(served.url, {"question": QUESTION})
        assert status == 200
        (index / "state-000099").mkdir()
        (index / "state-000099" / "manifest.json").write_text("{not json", encoding="utf-8")
        previous = (index / "CURRENT").read_text()
        (index / "CURRENT.tmp").write_text("state-000099\n")
        os.replace(index / "CURRENT.tmp", index / "CURRENT")
        status, again, new_headers = ask(served.url, {"question": QUESTION})
        assert status == 200 and stable(again) == stable(good)
        assert new_headers["x-rag-state"] == headers["x-rag-state"]
        status, _, body = request(served.url, "GET", "/v1/status")
        assert status == 503 and "manifest" in json.loads(body)["error"]
        (index / "CURRENT.tmp").write_text(previous)
        os.replace(index / "CURRENT.tmp", index / "CURRENT")
        assert request(served.url, "GET", "/v1/status")[0] == 200
    lines = [line for line in log_text(served.log).splitlines() if "state-000099" in line]
    assert len(lines) == 1 and "still answering from" in lines[0], lines


# --- rag ask --server against the real server -----------------------------------------------------


@pytest.mark.slow
def test_rag_ask_server_prints_what_rag_ask_prints(extractive_server, served_index, tmp_path):
    url = extractive_server.url
    for question, code in ((QUESTION, 0), (NEW_FACT_QUESTION, 3)):
        local = rag_ask(served_index, question, "--mode", "extractive", cwd=tmp_path)
        remote = rag_client("--server", url, question, cwd=tmp_path)
        assert (remote.returncode, local.returncode) == (code, code), remote.stderr
        assert remote.stdout == local.stdout and remote.stdout.strip()
        assert remote.stderr == ""
    remote = rag_client("--server", url, QUESTION, "--json", "--source", "AFP", "-k", "4", cwd=tmp_path)
    _, served, _ = ask(url, {"question": QUESTION, "source": "AFP", "k": 4})
    assert remote.returncode == 0 and stable(json.loads(remote.stdout)) == stable(served)
    remote = rag_client(QUESTION, "--as-of", "2025-13-01", env=subprocess_env(RAG_SERVER=url), cwd=tmp_path)
    assert remote.returncode == 2 and remote.stderr.count("\n") == 1 and "as_of" in remote.stderr, remote.stderr


def test_rag_ask_server_down_is_one_line_exit_1(tmp_path):
    done = rag_client("--server", f"http://127.0.0.1:{free_port()}", QUESTION, cwd=tmp_path)
    assert done.returncode == 1 and not done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rag: cannot reach the rag server"), done.stderr


# --- the client against a stub server (no models: the fast tier) ---------------------------------------


def canned_answer(abstained: bool = False) -> dict:
    from rag.types import Answer, Citation, Retrieved, Sentence

    sentence = Sentence("The US urged Pakistan to cooperate.", [1], True)
    citation = Citation(1, "000.txt", "000.txt:0-35", "A title", "2019-02-20", "AFP", 0, 35,
                        "The US urged Pakistan to cooperate.", 0.8)
    answer = Answer(QUESTION, "The US urged Pakistan to cooperate. [1]", abstained, [] if abstained else [sentence],
                    [] if abstained else [citation], [Retrieved(1, "000.txt", "000.txt:0-35", 0.5)],
                    {"llm": None, "embedder": "e"}, {"retrieve": 1, "total": 2}, "extractive",
                    ["abstained: nothing close"] if abstained else [])
    if abstained:
        answer.answer = "The articles do not say."
    return asdict(answer)


class _Stub(BaseHTTPRequestHandler):
    """Replies by the question: 'abstain', 'refuse' (422), 'token' (401), 'crash' (500), 'html';
    anything else gets an answer. Records the last request."""

    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.seen.append((self.path, dict(self.headers), body))
        q = body["question"]
        status, reply = {"abstain": (200, canned_answer(abstained=True)),
                         "refuse": (422, {"error": "k: must be at most 100"}),
                         "token": (401, {"error": "missing or wrong bearer token"}),
                         "crash": (500, {"error": "internal error (KeyError)"}),
                         "html": (200, "<html>not rag</html>")}.get(q, (200, canned_answer()))
        data = (reply if isinstance(reply, str) else json.dumps(reply, ensure_ascii=False)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Stub.seen.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_client_output_and_exit_codes(stub_server, monkeypatch):
    from rag.client import answer_from_json
    from rag.render import answer_text

    code, out, err = run_cli(["ask", "--server", stub_server + "/", QUESTION, "-k", "3", "--doc", "a.txt",
                              "--doc", "b.txt", "--since", "2019-01-01"])
    assert (code, err) == (0, "")
    assert out == answer_text(answer_from_json(canned_answer())) + "\n"
    path, headers, body = _Stub.seen[-1]
    assert path == "/v1/ask" and "Authorization" not in headers
    assert body == {"question": QUESTION, "k": 3, "docs": ["a.txt", "b.txt"], "since": "2019-01-01"}

    code, out, err = run_cli(["ask", "--server", stub_server, QUESTION, "--json"])
    assert code == 0 and out == json.dumps(canned_answer(), ensure_ascii=False) + "\n"
    code, out, err = run_cli(["ask", "--server", stub_server, "abstain"])
    assert code == 3 and out.startswith("The articles do not say.")

    monkeypatch.setenv("RAG_SERVE_TOKEN", "tok")
    monkeypatch.setenv("RAG_SERVER", stub_server)
    assert run_cli(["ask", QUESTION])[0] == 0
    assert _Stub.seen[-1][1]["Authorization"] == "Bearer tok"
    for question, expected, words in [("refuse", 2, ["k: must be at most 100"]),
                                      ("token", 2, ["RAG_SERVE_TOKEN", "refused"]),
                                      ("crash", 1, ["HTTP 500", "internal error (KeyError)"]),
                                      ("html", 1, ["did not answer with rag's JSON"])]:
        code, out, err = run_cli(["ask", question])
        assert code == expected and out == "", (question, err)
        assert err.count("\n") == 1 and err.startswith("rag: ") and "Traceback" not in err, err
        for word in words:
            assert word in err, (word, err)
    for flags in (["--index", "x"], ["--model", "m.gguf"], ["--llm-url", "http://127.0.0.1:1/v1"]):
        code, out, err = run_cli(["ask", QUESTION, *flags])
        assert code == 2 and "applies to a local index" in err, err
    code, out, err = run_cli(["ask", "--batch", "-"])
    assert code == 2 and "--batch does not go through a server" in err, err
    code, out, err = run_cli(["ask", "--server", "ftp://example", QUESTION])
    assert code == 2 and "http(s) URL" in err


_IMPORTS = """
import json, sys
from rag.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = {heavy!r}
print(json.dumps({{"code": code, "loaded": [m for m in heavy if m in sys.modules]}}), file=sys.stderr)
"""


def test_the_client_and_serve_help_import_no_models(stub_server, tmp_path):
    for argv in (["ask", "--server", stub_server, QUESTION], ["serve", "--help"]):
        done = subprocess.run([sys.executable, "-c", _IMPORTS.format(heavy=HEAVY), *argv], capture_output=True,
                              text=True, env=subprocess_env(), cwd=tmp_path, timeout=120, check=False)
        result = json.loads(done.stderr.strip().splitlines()[-1])
        assert result == {"code": 0, "loaded": []}, (argv, done.stderr)
