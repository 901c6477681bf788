"""`rag serve`: the question-answering pipeline behind a local HTTP API (FastAPI on uvicorn).

Endpoints:

    POST /v1/ask         {"question", "k"?, "mode"?, "since"?, "until"?, "source"?, "docs"?, "as_of"?}
                         -> exactly the JSON `rag ask --json` prints; 200 whether answered or abstained
    POST /v1/ask/stream  the same as server-sent events: `token` events (llm draft pieces), one `answer`
    GET  /v1/status      `rag status --json` of the published index, plus "server": mode, workers, queue
    GET  /healthz        {"ok": true}, never behind the token; /docs and /openapi.json from FastAPI
                         (Swagger UI's own files served by rag: the page works offline)

Every error is {"error": "one line: what is wrong and what to do"} with its HTTP status.

Concurrency. Answering an extractive question is ~25 ms of pure Python (evidence selection), so
threads only take turns at the GIL: 16 threads over one pipeline answered fewer questions per
second than one thread. Extractive and baseline questions therefore go to a pool of worker
processes, each with its own index reader (SQLite connection, FAISS vectors, BM25 arrays) and
query embedder, so nothing is shared between threads. llm questions go to the one thread of the
server process that owns the one llama.cpp context: generations run one at a time, in order.

Reload. Before each question the CURRENT file of the index is read (a few bytes). When it names
another state than the one loaded, that state is opened and swapped in; questions already being
answered finish on the old one, which is closed when the last of them is done. A state that
cannot be opened is reported once on stderr and the last good one keeps answering.

fastapi and uvicorn are imported only when the app is built: worker processes import this module
for the functions they run and need neither. No `from __future__ import annotations`: FastAPI reads
the endpoints' annotations, and the request model is a class local to _request_model().
"""

import asyncio
import hmac
import ipaddress
import json
import logging
import multiprocessing
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from rag.config import Settings
from rag.errors import IndexBroken, IndexLocked, IndexMissing, ModelError, RagError, UsageError

MAX_BODY = 64 * 1024  # bytes of a request body; a question is at most 2,000 characters
MAX_DOCS = 100  # doc ids in one request's "docs" filter
MAX_K = 100  # chunks retrieved for one question
LLM_QUEUE = 32  # llm questions waiting for the model before new ones are turned away (503)
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
OPEN_PATHS = ("/healthz",)  # reachable without the bearer token


def log(message: str) -> None:
    """One line on stderr (access lines, reloads, failures): never a traceback."""
    print(f"rag serve: {message}", file=sys.stderr, flush=True)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


# --- errors as HTTP statuses ----------------------------------------------------------------------


def error_status(e: BaseException) -> tuple[int, str]:
    """(HTTP status, one-line message) for an exception raised while answering.

    The index or the model being unusable is the server's problem (503: the operator must act);
    a question that cannot be asked is the client's (422); anything else is a 500.
    """
    if isinstance(e, (ModelError, IndexMissing, IndexBroken, IndexLocked)):
        return 503, str(e)
    if isinstance(e, UsageError):
        return 422, str(e)
    if isinstance(e, RagError):
        return 500, str(e)
    if isinstance(e, sqlite3.DatabaseError):
        from rag.store import REBUILD_HINT

        return 503, f"the index database is damaged ({first_line(e)}) ({REBUILD_HINT})"
    if isinstance(e, MemoryError):
        return 503, "out of memory while answering; retry later or lower k"
    return 500, f"internal error ({type(e).__name__}: {first_line(e)})"


# --- the loaded index, swapped when a new state is published -------------------------------------


class LockedEmbedder:
    """The query embedder behind a lock: its vector cache is a plain dict, cleared when full,
    which two threads must not use at once (the llm thread and the in-process extractive one)."""

    def __init__(self, embedder):
        self.inner = embedder
        self.identity = embedder.identity
        self._lock = threading.Lock()

    def embed(self, texts):
        with self._lock:
            return self.inner.embed(texts)


class SharedModel:
    """The LLM, loaded on first use and kept across index swaps (a new state must not reload it)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._model = None
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if self._model is None:
                from rag.llm import load_model

                self._model = load_model(None, self.settings)
            return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def __getattr__(self, name):  # the LLM protocol: name, n_ctx, count_chat_tokens, stream_chat ...
        return getattr(self.get(), name)

    def close(self) -> None:
        if self._model is not None and hasattr(self._model, "close"):
            self._model.close()


@dataclass
class _State:
    pipeline: object  # rag.pipeline.Pipeline
    name: str
    users: int = 0
    retired: bool = False


class LiveIndex:
    """The published state of the index, reopened when `rag index` publishes a new one."""

    def __init__(self, settings: Settings, embedder=None, llm=None):
        from rag.stores import query_embedder_for

        self.settings = settings
        self.embedder = embedder or LockedEmbedder(query_embedder_for(settings))
        self.llm = llm
        self._lock = threading.Lock()
        self._failed: str | None = None  # a published state that would not open: not retried
        self._state = self._open()

    @property
    def state(self) -> str:
        return self._state.name

    @property
    def counts(self) -> dict:
        return self._state.pipeline.reader.manifest["counts"]

    def _open(self) -> _State:
        from rag.pipeline import Pipeline

        pipeline = Pipeline(self.settings, embedder=self.embedder, llm=self.llm)
        return _State(pipeline, pipeline.reader.state)

    def published(self) -> str | None:
        """The state published now (None when unreadable): the cheap check before each question."""
        from rag.stores import published_state

        return published_state(self.settings)

    @contextmanager
    def use(self):
        """The pipeline of the newest openable state, kept open until the caller is done with it."""
        state = self._acquire()
        try:
            yield state.pipeline
        finally:
            self._release(state)

    def _acquire(self) -> _State:
        name = self.published()
        with self._lock:
            if name and name not in (self._state.name, self._failed):
                self._swap(name)
            self._state.users += 1
            return self._state

    def _release(self, state: _State) -> None:
        with self._lock:
            state.users -= 1
            if state.retired and not state.users:
                state.pipeline.close()

    def _swap(self, name: str) -> None:
        try:
            new = self._open()
        except (RagError, sqlite3.DatabaseError, OSError, UnicodeDecodeError) as e:
            self._failed = name
            log(f"the index now names {name}, which cannot be opened ({first_line(e)}); still answering "
                f"from {self._state.name}")
            return
        old, self._state = self._state, new
        old.retired = True
        if not old.users:
            old.pipeline.close()
        self._failed = None

    def close(self) -> None:
        with self._lock:
            self._state.retired = True
            if not self._state.users:
                self._state.pipeline.close()


# --- one question, in whichever process answers it -------------------------------------------------


def answer_json(pipeline, request: dict, on_token=None) -> tuple[str, bool]:
    """(the JSON `rag ask --json` prints for this request, abstained)."""
    from rag.retrieve import Filters

    filters = Filters(since=request.get("since"), until=request.get("until"), source=request.get("source"),
                      docs=tuple(request.get("docs") or ()))
    answer = pipeline.ask(request["question"], k=request.get("k"), mode=request.get("mode"), filters=filters,
                          on_token=on_token, as_of=request.get("as_of"))
    return json.dumps(asdict(answer), ensure_ascii=False), answer.abstained


def answer_with(live: LiveIndex, request: dict, on_token=None) -> tuple:
    """("ok", json, abstained, state) or ("error", status, message): never raises, so that a
    worker process returns plain tuples (a RagError would lose its hint when pickled)."""
    try:
        with live.use() as pipeline:
            text, abstained = answer_json(pipeline, request, on_token)
            return "ok", text, abstained, pipeline.reader.state
    except _Cancelled:
        return "error", 499, "the client went away"
    except Exception as e:
        status, message = error_status(e)
        if status == 500:
            log(f"{message} while answering {request.get('question', '')[:80]!r}")
        return "error", status, message


class _Cancelled(Exception):
    """Raised from the token callback when the client of a streamed answer has gone."""


# --- worker processes (extractive and baseline questions) -----------------------------------------

_worker: dict = {}  # in a worker process: "live" (LiveIndex) or "error" (why it could not open)


def _worker_start(settings: Settings, parent: int, ready) -> None:
    """Runs once in each worker process: open the index and warm it up before taking questions."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the server decides
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _worker["settings"] = settings
    _worker_open(settings)
    if ready is not None:
        ready.release()


def _worker_open(settings: Settings) -> None:
    try:
        live = LiveIndex(settings)
        warm_up(live)
        _worker.update(live=live, error=None)
    except Exception as e:
        _worker.update(live=None, error=error_status(e))


def _exit_with_parent(parent: int) -> None:
    """A worker must not outlive a server that was killed (SIGKILL skips the pool's shutdown)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _worker_answer(request: dict) -> tuple:
    if _worker.get("live") is None:
        _worker_open(_worker["settings"])
        if _worker.get("live") is None:
            return ("error", *_worker["error"])
    return answer_with(_worker["live"], request)


def warm_up(live: LiveIndex) -> None:
    """Load what the first question would (BM25 arrays, stemmer, ONNX session) before serving."""
    with live.use() as pipeline:
        pipeline.ask("What happened?", mode="extractive")


def default_workers() -> int:
    from rag.llm import physical_cores

    return physical_cores()


# --- the answering side of the server --------------------------------------------------------------


class Busy(Exception):
    """Too many llm questions are already waiting for the model."""


class Answerer:
    """Routes each question: llm mode to the model's one thread, the others to the worker pool."""

    def __init__(self, settings: Settings, workers: int):
        self.settings = settings
        self.workers = workers
        self.model = SharedModel(settings)
        self.live = LiveIndex(settings, llm=self.model)
        self._llm_thread = ThreadPoolExecutor(1, thread_name_prefix="rag-llm")
        self._local_thread = ThreadPoolExecutor(1, thread_name_prefix="rag-answer") if not workers else None
        self._llm_waiting = 0
        self._pool = None
        self._pool_lock = threading.Lock()

    def start(self) -> None:
        """Load the model now when llm is the default mode (a bad file is exit 2, not a 503 later),
        and start the warm worker processes."""
        if self.settings.mode == "llm":
            from rag.llm import check_model_file, resolve_model_path

            if not self.settings.llm_url:
                check_model_file(resolve_model_path(None, self.settings.model))
            self.model.get()
        if self.workers:
            self._pool = self._new_pool(wait=True)
        else:
            warm_up(self.live)

    def _new_pool(self, wait: bool) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")  # no fork of a process holding threads and models
        ready = context.Semaphore(0) if wait else None
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_worker_start,
                                   initargs=(self.settings, os.getpid(), ready))
        if wait:
            pings = [pool.submit(int) for _ in range(self.workers)]  # each submit starts a process while none is idle
            _wait_ready(ready, self.workers, pings)
        return pool

    def route(self, request: dict) -> str:
        return request.get("mode") or self.settings.mode

    async def answer(self, request: dict, on_token=None, cancel: threading.Event | None = None) -> tuple:
        """("ok", json, abstained, state) or ("error", status, message)."""
        loop = asyncio.get_running_loop()
        if self.route(request) == "llm":
            return await self._in_llm_thread(loop, request, on_token, cancel)
        if self._local_thread is not None:
            return await loop.run_in_executor(self._local_thread, answer_with, self.live, request)
        return await self._in_pool(loop, request)

    async def _in_llm_thread(self, loop, request: dict, on_token, cancel) -> tuple:
        if self._llm_waiting >= LLM_QUEUE:
            raise Busy(f"{self._llm_waiting} questions are waiting for the model; retry later, or ask with "
                       '"mode": "extractive"')
        cancel = cancel or threading.Event()

        def job():
            if cancel.is_set():
                return "error", 499, "the client went away"
            return answer_with(self.live, request, _cancellable(on_token, cancel))

        self._llm_waiting += 1
        try:
            return await loop.run_in_executor(self._llm_thread, job)
        finally:
            self._llm_waiting -= 1

    async def _in_pool(self, loop, request: dict) -> tuple:
        pool = self._pool
        try:
            return await loop.run_in_executor(pool, _worker_answer, request)
        except BrokenProcessPool:
            self._replace_pool(pool)
            return "error", 503, "an answering process died (out of memory?); retry"

    def _replace_pool(self, broken) -> None:
        with self._pool_lock:
            if self._pool is broken:
                log("a worker process died; starting new ones")
                self._pool = self._new_pool(wait=False)
                broken.shutdown(wait=False, cancel_futures=True)

    @property
    def llm_waiting(self) -> int:
        return self._llm_waiting

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for thread in (self._llm_thread, self._local_thread):
            if thread is not None:
                thread.shutdown(wait=True, cancel_futures=True)
        self.live.close()
        self.model.close()


def _wait_ready(ready, count: int, pings: list, timeout: float = 300.0) -> None:
    """Until every worker process has opened and warmed up its index (each releases `ready` once)."""
    deadline = time.monotonic() + timeout
    for _ in range(count):
        while not ready.acquire(timeout=0.5):
            failed = [f for f in pings if f.done() and f.exception() is not None]
            if failed or time.monotonic() > deadline:
                why = first_line(failed[0].exception()) if failed else "they did not start in time"
                raise RagError(f"the worker processes failed ({why})", "try --workers 0")


def _cancellable(on_token, cancel: threading.Event):
    """The token callback, which stops the generation once the client has gone."""
    def emit(piece: str) -> None:
        if cancel.is_set():
            raise _Cancelled
        if on_token is not None:
            on_token(piece)

    return emit


# --- the HTTP layer ------------------------------------------------------------------------------


def _request_model():
    """The POST body, validated by pydantic (and documented in /openapi.json)."""
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field, field_validator

    from rag.pipeline import MAX_QUESTION_CHARS

    class AskRequest(BaseModel):
        """One question and the options of `rag ask`; absent options take the server's settings."""

        model_config = ConfigDict(extra="forbid")
        question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS,
                              examples=["Which company recalled its heaters this week?"])
        k: int | None = Field(None, ge=1, le=MAX_K, description="chunks retrieved (server default: 6)")
        mode: Literal["llm", "extractive", "baseline"] | None = Field(None, description="server default if absent")
        since: str | None = Field(None, pattern=DATE_PATTERN, description="articles dated on or after (YYYY-MM-DD)")
        until: str | None = Field(None, pattern=DATE_PATTERN, description="articles dated on or before")
        source: str | None = Field(None, min_length=1, max_length=200, description="only this source, e.g. Wire News")
        docs: list[str] = Field(default_factory=list, max_length=MAX_DOCS, description="only these doc ids")
        as_of: str | None = Field(None, pattern=DATE_PATTERN, description="the day the question is asked")

        @field_validator("as_of")
        @classmethod
        def _real_date(cls, value: str | None) -> str | None:
            from datetime import date

            if value is not None:
                date.fromisoformat(value)  # 2023-02-30 fails: a ValueError becomes a 422
            return value

    return AskRequest


def describe_invalid(errors: list[dict]) -> tuple[int, str, list[dict]]:
    """FastAPI's validation errors as (status, one line, details): malformed JSON is a 400."""
    example = 'send a JSON object like {"question": "Which company recalled its heaters this week?"}'
    for e in errors:
        if e.get("type") == "json_invalid":
            why = (e.get("ctx") or {}).get("error", "JSON decode error")
            return 400, f"the body is not valid JSON ({why} at character {e['loc'][-1]}); {example}", []
    details = [{"field": ".".join(str(x) for x in e.get("loc", ())[1:]) or "body", "problem": e.get("msg", "")}
               for e in errors]
    if any(d["field"] == "body" for d in details):
        return 422, f"the body must be a JSON object sent with Content-Type: application/json; {example}", details
    parts = [f"{d['field']}: {_problem(d['problem'])}" for d in details]
    return 422, f"invalid request: {'; '.join(parts[:3])}{' ...' if len(parts) > 3 else ''} ({example})", details


def _problem(message: str) -> str:
    return {"Field required": "missing", "Extra inputs are not permitted": "unknown field"}.get(message, message)


def create_app(answerer: Answerer, token: str | None):
    """The FastAPI app, wrapped in the guard that checks the token and the body size."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from fastapi_offline import FastAPIOffline  # /docs with Swagger UI's files served here, not from a CDN
    from starlette.exceptions import HTTPException

    from rag import __version__
    from rag.pipeline import check_question
    from rag.types import Answer

    AskRequest = _request_model()
    errors = {code: {"description": text, "content": {"application/json": {"example": {"error": "..."}}}}
              for code, text in ((400, "malformed JSON"), (401, "missing or wrong bearer token"),
                                 (413, "body over 64 KB"), (422, "invalid fields"),
                                 (503, "index or model unusable, or too many questions waiting"))}
    app = FastAPIOffline(title="rag", version=__version__, description="Citation-first question answering over the "
                  "indexed news articles. Every error is {\"error\": \"one line\"}.")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        status, message, details = describe_invalid(exc.errors())
        return JSONResponse({"error": message, **({"details": details} if details else {})}, status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        allowed = (getattr(exc, "headers", None) or {}).get("Allow", "")
        messages = {404: f"no such endpoint: {request.method} {request.url.path} (see /docs)",
                    405: f"{request.method} is not allowed on {request.url.path}; use {allowed or 'another method'}"}
        message = messages.get(exc.status_code, str(exc.detail))
        return JSONResponse({"error": message}, exc.status_code, headers=getattr(exc, "headers", None))

    def refuse(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status, headers=headers)

    def checked(body) -> tuple[dict | None, JSONResponse | None]:
        request = body.model_dump(exclude_none=True)
        try:
            request["question"] = check_question(body.question)
        except UsageError as e:
            return None, refuse(422, str(e))
        return request, None

    @app.post("/v1/ask", responses={200: {"model": Answer, "description": "the answer, as `rag ask --json`"},
                                    **errors})
    async def ask(body: AskRequest, request: Request):
        """Answer one question: exactly the JSON `rag ask --json` prints (200 answered or abstained)."""
        question, refused = checked(body)
        if refused:
            return refused
        cancel = threading.Event()
        llm = answerer.route(question) == "llm"
        watcher = asyncio.create_task(_watch_disconnect(request, cancel)) if llm else None
        try:
            result = await answerer.answer(question, cancel=cancel)
        except Busy as e:
            return refuse(503, str(e), {"Retry-After": "5"})
        finally:
            if watcher is not None:
                watcher.cancel()
        if result[0] == "error":
            return refuse(result[1], result[2])
        return Response(result[1].encode("utf-8"), media_type="application/json", headers={"X-Rag-State": result[3]})

    @app.post("/v1/ask/stream", responses={200: {"description": "text/event-stream: `token` events "
                                                 '{"text": piece} (llm mode), then one `answer` event with the '
                                                 "answer JSON, or one `error` event {\"error\", \"status\"}",
                                                 "content": {"text/event-stream": {}}}, **errors})
    async def ask_stream(body: AskRequest):
        """The same answer as server-sent events: the model's draft as it is written, then the answer."""
        question, refused = checked(body)
        if refused:
            return refused
        if answerer.route(question) != "llm":
            result = await answerer.answer(question)
            if result[0] == "error":
                return refuse(result[1], result[2])
            return StreamingResponse(_one_event("answer", result[1]), media_type="text/event-stream",
                                     headers=SSE_HEADERS)
        if answerer.llm_waiting >= LLM_QUEUE:
            return refuse(503, f"{answerer.llm_waiting} questions are waiting for the model; retry later",
                          {"Retry-After": "5"})
        return StreamingResponse(_llm_events(answerer, question), media_type="text/event-stream",
                                 headers=SSE_HEADERS)

    @app.get("/v1/status")
    async def status():
        """`rag status --json` of the published index, plus what this server has loaded."""
        from rag.status import index_status

        report = await asyncio.get_running_loop().run_in_executor(None, index_status, answerer.settings)
        report["server"] = {"mode": answerer.settings.mode,
                            "workers": answerer.workers, "model_loaded": answerer.model.loaded,
                            "llm_waiting": answerer.llm_waiting, "token_required": bool(token)}
        if not report["consistent"]:
            report["error"] = f"{report.get('problem')} ({report.get('hint')})"
            return JSONResponse(report, 503)
        return report

    @app.get("/healthz")
    async def healthz():
        """The process is up (no token needed; says nothing about the index)."""
        return {"ok": True}

    return Guard(app, token)


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(kind: str, data: str) -> bytes:
    """One server-sent event; `data` is one line of JSON (json.dumps escapes newlines)."""
    return f"event: {kind}\ndata: {data}\n\n".encode()


async def _one_event(kind: str, data: str):
    yield sse(kind, data)


async def _llm_events(answerer: Answerer, request: dict):
    """Token events as the model writes them, then the answer (or an error) event."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()

    def on_token(piece: str) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, ("token", json.dumps({"text": piece}, ensure_ascii=False)))
        except RuntimeError:  # the event loop is gone: the server is stopping
            cancel.set()

    job = asyncio.ensure_future(answerer.answer(request, on_token=on_token, cancel=cancel))
    getter = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield sse(*getter.result())
                continue
            while not queue.empty():  # tokens that arrived with the end of the job
                yield sse(*queue.get_nowait())
            yield _final_event(job)
            return
    finally:
        cancel.set()  # the client went away (or all is sent): a generation still running stops
        if getter is not None:
            getter.cancel()


def _final_event(job: asyncio.Future) -> bytes:
    try:
        result = job.result()
    except Busy as e:
        result = ("error", 503, str(e))
    if result[0] == "ok":
        return sse("answer", result[1])
    return sse("error", json.dumps({"error": result[2], "status": result[1]}, ensure_ascii=False))


async def _watch_disconnect(request, cancel: threading.Event) -> None:
    """Set `cancel` when the client of a waiting question hangs up (its llm turn is then skipped)."""
    while not await request.is_disconnected():
        await asyncio.sleep(0.5)
    cancel.set()


class Guard:
    """ASGI middleware around the app: bearer token, body size, one access line, no tracebacks."""

    def __init__(self, app, token: str | None):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 0}

        async def tracked(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, tracked)
        except Exception as e:  # a bug: one line on stderr, a JSON 500 if nothing was sent yet
            log(f"internal error on {scope['method']} {scope['path']}: {type(e).__name__}: {first_line(e)}")
            if not status["code"]:
                await _reply(tracked, 500, f"internal error ({type(e).__name__}); see the server's log")
        client = (scope.get("client") or ("-",))[0]
        took = (time.perf_counter() - started) * 1000
        log(f"{client} {scope['method']} {scope['path']} {status['code']} {took:.0f} ms")

    async def _handle(self, scope, receive, send):
        if self.token and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
            return await _reply(send, 401, "missing or wrong bearer token: send the header 'Authorization: Bearer "
                                "TOKEN' with the token in the server's RAG_SERVE_TOKEN",
                                [(b"www-authenticate", b"Bearer")])
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            if not length.isdigit():
                return await _reply(send, 400, f"bad Content-Length header {length[:20]!r}")
            return await _reply(send, 413, _too_large(f"{int(length):,} bytes"), [(b"connection", b"close")])
        body, over = await _read_body(receive)
        if over:
            return await _reply(send, 413, _too_large(f"over {MAX_BODY:,} bytes"), [(b"connection", b"close")])
        await self.app(scope, _replay(body, receive), send)

    def _authorized(self, scope) -> bool:
        given = _header(scope, b"authorization") or ""
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())


def _too_large(size: str) -> str:
    return f"the request body is {size}; the limit is {MAX_BODY:,} bytes (send one question per request)"


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


async def _read_body(receive) -> tuple[bytes, int]:
    """(the body, 0), or (b"", bytes read so far) once it passes MAX_BODY: a missing or false
    Content-Length (chunked uploads) is caught by counting what actually arrives."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", 0
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return b"", size
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts), 0


def _replay(body: bytes, receive):
    """A receive() that gives the app the body already read, then waits for the disconnect."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _reply(send, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


# --- starting and stopping -----------------------------------------------------------------------


def check_exposure(host: str, token: str | None) -> None:
    """Anything but a loopback address needs a token: the API answers from private articles."""
    if token or _is_loopback(host):
        return
    raise UsageError(f"--host {host} would expose the API beyond this machine without a token",
                     "set RAG_SERVE_TOKEN to a long random secret (clients send it as a bearer token), or "
                     "keep the default --host 127.0.0.1")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """The listening address, taken before anything loads (a port in use fails in a second).
    uvicorn calls listen() on it: until then connections are refused, so /healthz answering means ready."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise RagError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                       "pick another --port, or stop what is using it") from None
    sock.set_inheritable(True)
    return sock


class _Stop(Exception):
    """SIGTERM or SIGINT: stop serving and exit 0."""


def _raise_stop(sig, frame) -> None:
    raise _Stop


def _quiet_uvicorn_logs() -> None:
    """uvicorn's own messages as one line each ('rag serve: ...'), warnings and worse only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    logger = logging.getLogger("uvicorn")
    logger.handlers = [handler]
    logger.setLevel(logging.WARNING)
    logger.propagate = False


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = (record.getMessage().strip().splitlines() or [record.levelname])[0][:300]
        if record.exc_info and record.exc_info[1] is not None:
            message += f" ({type(record.exc_info[1]).__name__}: {first_line(record.exc_info[1])})"
        return f"rag serve: {message}"


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int | None = None) -> int:
    """`rag serve`: check, bind, load, then serve until SIGTERM or Ctrl-C (exit 0)."""
    token = os.environ.get("RAG_SERVE_TOKEN") or None
    check_exposure(host, token)
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, not {port}")
    if workers is not None and not 0 <= workers <= 64:
        raise UsageError(f"--workers must be between 0 and 64, not {workers}")
    sock = bind(host, port)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    answerer = None
    try:
        answerer = Answerer(settings, default_workers() if workers is None else workers)
        answerer.start()
        _run(create_app(answerer, token), sock, answerer, host, token)
    except _Stop:
        pass
    except (RagError, OSError, sqlite3.DatabaseError, MemoryError):
        raise  # the CLI's one-line messages and exit codes
    except Exception as e:
        raise RagError(f"rag serve could not start: {type(e).__name__}: {first_line(e)}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        if answerer is not None:
            answerer.close()
    log("stopped")
    return 0


def _run(app, sock: socket.socket, answerer: Answerer, host: str, token: str | None) -> None:
    import uvicorn

    from rag.stores import location

    _quiet_uvicorn_logs()
    port = sock.getsockname()[1]
    where = f"[{host}]" if ":" in host else host
    counts = answerer.live.counts
    log(f"answering from {location(answerer.settings)} ({answerer.live.state}: {counts['articles']} "
        f"articles, {counts['chunks']} chunks) on http://{where}:{port} (mode {answerer.settings.mode}, "
        f"{answerer.workers} worker processes{', bearer token required' if token else ''}); API at /docs")
    config = uvicorn.Config(app, log_config=None, access_log=False, server_header=False, lifespan="off",
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])  # re-raises SIGTERM/SIGINT after a graceful stop: _Stop
