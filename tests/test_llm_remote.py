"""rag.llm_remote: generation on an OpenAI-compatible server.

Fast tests talk to tiny local servers written here (each failure mode, and the vLLM and llama.cpp
endpoints as their documentation describes them); slow ones to llama-cpp-python's real server
(tests/servers.py) on the bundled GGUF, against the same model run locally.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rag.config import Settings
from rag.errors import RagError, UsageError
from rag.llm import LLM, ContextOverflow, GenerationConfig, LlamaModel, default_model_path
from rag.llm_remote import (
    LLAMA_CPP,
    LLAMA_CPP_PYTHON,
    VLLM,
    RemoteLLM,
    estimate_tokens,
    parse_url,
    short_model_name,
)
from tests.servers import free_port, running_llm_server
from tests.servers import llm_server as llm_server_fixture  # noqa: F401 (registered as llm_server)

CORPUS = Path(__file__).resolve().parent.parent / "eval" / "corpus"
GREEDY = GenerationConfig(max_tokens=48)
HELLO = [{"role": "system", "content": "You answer in one short sentence."},
         {"role": "user", "content": "What is the capital of France?"}]


def one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text
    return text


# --- tiny local servers ----------------------------------------------------------------------


def chunk(content: str | None = None, finish: str | None = None) -> dict:
    delta = {"content": content} if content is not None else {"role": "assistant"}
    return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def sse(*events: dict | str) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, str) else json.dumps(e)).encode() + b"\n\n" for e in events)


ANSWER = sse(chunk(), chunk("Paris"), chunk(" is"), chunk(" the capital."), chunk(finish="stop"), "[DONE]")


class FakeServer:
    """An OpenAI-style server in a thread. `routes[(method, path)]` is a function of the JSON body
    (and the request headers) that returns (status, JSON body) or (status, bytes, options):
    options "stall" (seconds to wait after sending) and "short" (announce more bytes than sent,
    then close: a dropped connection). Requests are recorded in `seen`."""

    def __init__(self, routes: dict):
        self.routes = routes
        self.seen: list[tuple[str, str, dict, dict]] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._answer("GET")

            def do_POST(self):
                self._answer("POST")

            def _answer(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                server.seen.append((method, self.path, body, {k.lower(): v for k, v in self.headers.items()}))
                route = server.routes.get((method, self.path))
                status, payload, options = (404, {"error": "not found"}, {}) if route is None else (
                    (*route(body, self.headers), {})[:3])
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream" if isinstance(payload, bytes)
                                 else "application/json")
                self.send_header("Content-Length", str(len(data) + (1000 if options.get("short") else 0)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                if options.get("stall"):
                    server.release.wait(options["stall"])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def chat_requests(self) -> list[dict]:
        return [body for method, path, body, _ in self.seen if path == "/v1/chat/completions"]

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def models(*ids: str, **extra):
    return lambda body, headers: (200, {"object": "list", "data": [{"id": i, "object": "model", **extra}
                                                                   for i in ids]})


@pytest.fixture
def fake():
    made = []

    def make(routes: dict | None = None, ids=("tiny-model",), chat=ANSWER, **model_extra) -> FakeServer:
        table = {("GET", "/v1/models"): models(*ids, **model_extra),
                 ("POST", "/v1/chat/completions"): lambda body, headers: (200, chat)}
        server = FakeServer(table | (routes or {}))
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
def silent_port():
    """A port that accepts connections and then never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # held open, never read, never answered
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    listener.close()


# --- URLs and names --------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/v1", "file:///tmp/socket", "localhost:8080/v1", "127.0.0.1:8080",
                                 "http://", "", "http://127.0.0.1:99999/v1", "http://127.0.0.1:8080/v1?key=1"])
def test_non_http_url_is_a_usage_error(url):
    started = time.monotonic()
    with pytest.raises(UsageError) as e:
        RemoteLLM(url)
    assert "--llm-url" in one_line(e.value) and time.monotonic() - started < 1


def test_parse_url():
    assert parse_url("http://127.0.0.1:8080") == ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080",
                                                 "http://127.0.0.1:8080/v1")
    assert parse_url(" HTTP://h:1/v1/ ")[:2] == ("http://h:1/v1", "http://h:1")
    assert parse_url("https://api.example.com/proxy/llm/v1")[1] == "https://api.example.com/proxy/llm"
    assert parse_url("https://example.com/v1beta/openai")[:2] == ("https://example.com/v1beta/openai",
                                                                 "https://example.com")
    base, _, shown = parse_url("http://user:secret@h:1/v1")
    assert "secret" in base and "secret" not in shown


def test_short_model_name():
    assert short_model_name("/models/SmolLM2-135M-Instruct.Q4_1.gguf") == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert short_model_name("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"


def test_estimate_overcounts_english_and_other_scripts():
    english = (CORPUS / "000_7e1cbb29f31f5564.txt").read_text(encoding="utf-8")
    assert estimate_tokens(english) >= len(english) / 4 * 1.4  # real tokenizers: 3.5-4.5 characters a token
    assert estimate_tokens("東京都の人口") >= 6 and estimate_tokens("") == 0


# --- reaching the server ---------------------------------------------------------------------


def test_server_not_there_fails_quickly():
    started = time.monotonic()
    with pytest.raises(RagError) as e:
        RemoteLLM(f"http://127.0.0.1:{free_port()}/v1")
    text = one_line(e.value)
    assert "cannot reach the LLM server at http://127.0.0.1:" in text and "--llm-url" in text
    assert time.monotonic() - started < 3


def test_server_that_never_answers_times_out(silent_port):
    started = time.monotonic()
    with pytest.raises(RagError) as e:
        RemoteLLM(f"http://127.0.0.1:{silent_port}/v1", timeout=1)
    assert "sent nothing for 1 s" in one_line(e.value) and "RAG_LLM_TIMEOUT" in str(e.value)
    assert 0.9 < time.monotonic() - started < 4


def test_401_asks_for_the_api_key(fake):
    deny = {("GET", "/v1/models"): lambda body, headers: (401, {"error": {"message": "Invalid API key"}})}
    server = fake(deny)
    with pytest.raises(UsageError) as e:
        RemoteLLM(server.url)
    assert "RAG_LLM_API_KEY" in one_line(e.value) and "HTTP 401" in str(e.value) and "Invalid API key" in str(e.value)
    with pytest.raises(UsageError, match="check RAG_LLM_API_KEY"):
        RemoteLLM(server.url, api_key="wrong")
    assert server.seen[-1][3]["authorization"] == "Bearer wrong"


def test_api_key_is_sent_to_every_endpoint(fake):
    def only_with_key(reply):
        return lambda body, headers: reply if headers.get("Authorization") == "Bearer k1" else (403, {})

    server = fake()
    server.routes = {key: only_with_key(route(None, None)) for key, route in server.routes.items()}
    llm = RemoteLLM(server.url, api_key="k1")
    assert llm.chat(HELLO, GREEDY) == "Paris is the capital."
    assert {h.get("authorization") for _, _, _, h in server.seen} == {"Bearer k1"}


def test_no_openai_api_at_the_url(fake):
    server = fake({("GET", "/v1/models"): lambda body, headers: (404, {"detail": "Not Found"})})
    with pytest.raises(UsageError, match="usually ends in /v1"):
        RemoteLLM(server.url)


def test_bare_address_gets_v1(fake):
    server = fake()
    llm = RemoteLLM(server.url.removesuffix("/v1"))
    assert llm.base_url == server.url and llm.chat(HELLO, GREEDY) == "Paris is the capital."


def test_model_choice(fake):
    server = fake(ids=("/srv/models/Big.Q4_K_M.gguf", "small"))
    first = RemoteLLM(server.url)
    assert first.model == "/srv/models/Big.Q4_K_M.gguf"
    assert first.name == f"Big.Q4_K_M.gguf @ 127.0.0.1:{server.url.split(':')[2].split('/')[0]}"
    assert RemoteLLM(server.url, model="small").model == "small"
    assert RemoteLLM(server.url, model="Big.Q4_K_M.gguf").model == "/srv/models/Big.Q4_K_M.gguf"  # by file name
    with pytest.raises(UsageError) as e:
        RemoteLLM(server.url, model="gpt-4")
    assert "'gpt-4'" in one_line(e.value) and "/srv/models/Big.Q4_K_M.gguf, small" in str(e.value)


def test_server_without_models(fake):
    with pytest.raises(RagError, match="lists no models"):
        RemoteLLM(fake(ids=()).url)


# --- the server families -----------------------------------------------------------------------


def test_unknown_server_counts_from_characters_and_sends_only_openai_parameters(fake):
    server = fake()
    llm = RemoteLLM(server.url, n_ctx=3000)
    assert isinstance(llm, LLM) and llm.flavour is None and llm.n_ctx == 3000
    text = (CORPUS / "001_d3539caef9fae320.txt").read_text(encoding="utf-8")
    assert llm.count_tokens(text) == estimate_tokens(text)
    assert llm.count_chat_tokens([{"role": "user", "content": text}]) == estimate_tokens(text) + 8 + 32
    config = GenerationConfig(max_tokens=20, temperature=0.0, stop=("<|im_end|>",), seed=7)
    assert list(llm.stream_chat(HELLO, config)) == ["Paris", " is", " the capital."]
    assert llm.last_finish_reason == "stop"
    sent = server.chat_requests()[-1]
    assert sent["stream"] is True and sent["model"] == "tiny-model" and sent["messages"] == HELLO
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["seed"], sent["stop"]) == (
        20, 0.0, 1.0, 7, ["<|im_end|>"])
    assert not {"top_k", "min_p", "repeat_penalty", "repetition_penalty"} & set(sent)
    llm.close()
    llm.close()  # twice is harmless


def test_vllm_counts_with_its_chat_tokenizer_and_tells_its_context(fake):
    def tokenize(body, headers):
        if "messages" in body:  # the chat template applied: here 10 tokens a message + 3
            return 200, {"count": 10 * len(body["messages"]) + 3, "max_model_len": 8192, "tokens": []}
        return 200, {"count": len(body["prompt"].split()), "max_model_len": 8192,
                     "tokens": body["prompt"].split()}

    server = fake({("POST", "/tokenize"): tokenize}, ids=("Qwen/Qwen2.5-7B-Instruct",), max_model_len=32768)
    llm = RemoteLLM(server.url)
    assert (llm.flavour, llm.n_ctx, llm.name) == (VLLM, 32768, f"Qwen/Qwen2.5-7B-Instruct @ {server.url[7:-3]}")
    assert llm.count_chat_tokens(HELLO) == 23 and llm.count_tokens("three words here") == 3
    llm.chat(HELLO, GenerationConfig(top_k=1, repeat_penalty=1.0))
    sent = server.chat_requests()[-1]
    assert (sent["top_k"], sent["min_p"], sent["repetition_penalty"]) == (1, 0.0, 1.0) and "repeat_penalty" not in sent


def test_llama_cpp_counts_the_templated_prompt_and_reads_props(fake):
    def tokenize(body, headers):
        words = body.get("content", "").split()  # llama.cpp: no content, no tokens
        return 200, {"tokens": list(range(len(words) + (1 if body.get("add_special") else 0)))}

    def apply_template(body, headers):
        return 200, {"prompt": " ".join(f"<|{m['role']}|> {m['content']} <|end|>" for m in body["messages"])
                     + " <|assistant|>"}

    server = fake({("POST", "/tokenize"): tokenize, ("POST", "/apply-template"): apply_template,
                   ("GET", "/props"): lambda body, headers: (200, {"default_generation_settings": {"n_ctx": 4096}})})
    llm = RemoteLLM(server.url)
    assert (llm.flavour, llm.n_ctx) == (LLAMA_CPP, 4096)
    prompt = apply_template({"messages": HELLO}, None)[1]["prompt"]
    assert llm.count_chat_tokens(HELLO) == len(prompt.split()) + 1  # + BOS
    assert llm.count_tokens("a b c") == 3
    llm.chat(HELLO, GenerationConfig(top_k=1, repeat_penalty=1.1))
    sent = server.chat_requests()[-1]
    assert (sent["top_k"], sent["min_p"], sent["repeat_penalty"]) == (1, 0.0, 1.1)


# --- failures while answering --------------------------------------------------------------------


def test_stream_that_stalls_times_out(fake):
    stalled = sse(chunk(), chunk("Paris"))
    server = fake(chat=None)
    server.routes[("POST", "/v1/chat/completions")] = lambda body, headers: (200, stalled, {"stall": 30, "short": 1})
    llm = RemoteLLM(server.url, timeout=1)
    pieces = []
    started = time.monotonic()
    with pytest.raises(RagError) as e:
        for piece in llm.stream_chat(HELLO, GREEDY):
            pieces.append(piece)
    assert pieces == ["Paris"] and "sent nothing for 1 s" in one_line(e.value)
    assert time.monotonic() - started < 4


def test_dropped_connection(fake):
    server = fake(chat=None)
    server.routes[("POST", "/v1/chat/completions")] = lambda body, headers: (200, sse(chunk(), chunk("Par")),
                                                                             {"short": 1})
    with pytest.raises(RagError) as e:
        RemoteLLM(server.url).chat(HELLO, GREEDY)
    assert "lost the connection to the LLM server" in one_line(e.value)


def test_stream_ending_without_a_finish_reason(fake):
    server = fake(chat=sse(chunk(), chunk("Paris"), "[DONE]"))
    with pytest.raises(RagError, match="ended the answer without finishing it") as e:
        RemoteLLM(server.url).chat(HELLO, GREEDY)
    one_line(e.value)


def test_stream_that_is_not_an_openai_stream(fake):
    server = fake(chat=b"data: <html>oops</html>\n\n")
    with pytest.raises(RagError, match="not an OpenAI chat stream") as e:
        RemoteLLM(server.url).chat(HELLO, GREEDY)
    one_line(e.value)


@pytest.mark.parametrize("status, words", [(500, "failed (HTTP 500: model crashed"), (429, "rate-limited"),
                                           (422, "rejected the request (HTTP 422")])
def test_http_errors_on_chat(fake, status, words):
    server = fake()
    server.routes[("POST", "/v1/chat/completions")] = lambda body, headers: (
        status, {"error": {"message": "model crashed\nTraceback (most recent call last): ...", "type": "x"}})
    with pytest.raises(RagError) as e:
        RemoteLLM(server.url).chat(HELLO, GREEDY)
    assert words in one_line(e.value) and not isinstance(e.value, ContextOverflow)


LLAMA_CPP_PYTHON_OVERFLOW = {"error": {  # llama-cpp-python (non-streamed) and vLLM word it alike
    "message": "This model's maximum context length is 512 tokens. However, you requested 900 tokens (740 in the "
               "messages, 160 in the completion). Please reduce the length of the messages or completion.",
    "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}
LLAMA_CPP_OVERFLOW = {"error": {"code": 400, "message": "the request exceeds the available context size, try "
                                "increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 900,
                                "n_ctx": 512}}


@pytest.mark.parametrize("body", [LLAMA_CPP_PYTHON_OVERFLOW, LLAMA_CPP_OVERFLOW])
def test_server_context_error_becomes_context_overflow(fake, body):
    server = fake()
    server.routes[("POST", "/v1/chat/completions")] = lambda b, h: (400, body)
    llm = RemoteLLM(server.url, n_ctx=2048)
    with pytest.raises(ContextOverflow, match="set n_ctx \\(RAG_N_CTX\\) to 512"):
        llm.chat(HELLO, GREEDY)
    assert llm.n_ctx == 512  # the next prompt is packed to the server's real context


def test_prompt_over_n_ctx_is_refused_before_sending(fake):
    server = fake()
    llm = RemoteLLM(server.url, n_ctx=256)
    with pytest.raises(ContextOverflow):
        llm.stream_chat([{"role": "user", "content": "word " * 1000}], GREEDY)  # raised before any next()
    assert server.chat_requests() == []


# --- llama-cpp-python's real server -----------------------------------------------------------


def long_messages() -> list[dict]:
    """About 1,400 tokens: a pipeline-like prompt with two articles as numbered sources."""
    sources = "\n".join(f"[{n}] {path.read_text(encoding='utf-8')}"
                        for n, path in enumerate(sorted(CORPUS.glob("*.txt"))[:2], start=1))
    return [{"role": "system", "content": "Answer from the numbered sources only and cite them like [1]."},
            {"role": "user", "content": f"Sources:\n{sources}\n\nQuestion: What did the US urge Pakistan to do?"}]


@pytest.fixture(scope="module")
def remote(llm_server):
    llm = RemoteLLM(llm_server)
    yield llm
    llm.close()


@pytest.mark.slow
def test_real_server_is_recognised(remote, llm_server):
    assert remote.flavour == LLAMA_CPP_PYTHON
    assert remote.name == f"SmolLM2-135M-Instruct.Q4_1.gguf @ {llm_server[7:-3]}"
    assert remote.n_ctx == 2048  # not told by llama-cpp-python's server: the n_ctx argument
    other = RemoteLLM(llm_server, n_ctx=1024)
    assert other.n_ctx == 1024
    other.close()


@pytest.mark.slow
def test_real_server_streams_greedy_pieces_that_join_to_chat(remote):
    pieces = list(remote.stream_chat(HELLO, GREEDY))
    assert len(pieces) > 3 and all(pieces)
    assert remote.last_finish_reason in ("stop", "length")
    assert "".join(pieces) == remote.chat(HELLO, GREEDY)  # greedy: the same again


@pytest.mark.slow
def test_real_server_answers_as_the_local_model_does(remote):
    """Same GGUF, same greedy settings, same chat template (llama-cpp-python's server uses the GGUF's
    template, as LlamaModel does): the same text, and the same prompt length."""
    local = LlamaModel(default_model_path(), n_ctx=2048)
    try:
        for messages in (HELLO, [{"role": "user", "content": "Name three colours."}]):
            config = GenerationConfig(max_tokens=40, stop=("<|im_end|>", "\n\n\n"))
            assert remote.chat(messages, config) == local.chat(messages, config)
            assert remote.last_finish_reason == local.last_finish_reason
        exact = local.count_chat_tokens(long_messages())
    finally:
        local.close()
    assert exact <= remote.count_chat_tokens(long_messages()) <= exact * 1.1


@pytest.mark.slow
def test_real_server_count_is_never_below_its_prompt_tokens(remote):
    import openai

    messages = long_messages()
    client = openai.OpenAI(base_url=remote.base_url, api_key="none", max_retries=0)
    done = client.chat.completions.create(model=remote.model, messages=messages, max_tokens=1, temperature=0.0)
    client.close()
    real = done.usage.prompt_tokens
    counted = remote.count_chat_tokens(messages)
    assert real > 1000 and real <= counted <= 1.3 * real, (counted, real)


@pytest.mark.slow
def test_real_server_prompt_over_context_is_refused_up_front(remote):
    started = time.monotonic()
    with pytest.raises(ContextOverflow, match="model context is 2048"):
        remote.stream_chat([{"role": "user", "content": "The cat sat on the mat. " * 400}], GREEDY)
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_real_server_context_smaller_than_assumed(llm_server):
    """llama-cpp-python's server does not tell its context size, and a streamed prompt over it gets
    an empty stream (status 200, no error, no finish reason): reported, not taken for an empty answer."""
    llm = RemoteLLM(llm_server, n_ctx=8192)
    with pytest.raises(RagError, match="ended the answer without finishing it.*RAG_N_CTX") as e:
        llm.chat([{"role": "user", "content": "The cat sat on the mat. " * 400}], GREEDY)
    llm.close()
    one_line(e.value)


@pytest.mark.slow
def test_real_server_cuts_off_an_answer_when_another_request_comes(remote, llm_server):
    """llama-cpp-python's server answers one request at a time and ends the running stream (with
    [DONE], no finish reason) when another arrives: the cut-off answer is an error, not a short answer."""
    first = remote.stream_chat([{"role": "user", "content": "Write a long story about a dragon."}],
                               GenerationConfig(max_tokens=400))
    assert next(first)
    other = RemoteLLM(llm_server)
    assert other.chat(HELLO, GREEDY)
    other.close()
    with pytest.raises(RagError, match="ended the answer without finishing it.*one at a time"):
        for _ in first:
            pass


@pytest.mark.slow
def test_real_server_with_an_api_key(tmp_path):
    with running_llm_server(tmp_path, "--api_key", "sekret") as url:
        for key in (None, "wrong"):
            with pytest.raises(UsageError, match="RAG_LLM_API_KEY") as e:
                RemoteLLM(url, api_key=key)
            assert "HTTP 401" in one_line(e.value)
        llm = RemoteLLM(url, api_key="sekret")
        try:
            assert llm.flavour == LLAMA_CPP_PYTHON  # its tokenizer endpoint wants the key too
            assert llm.count_tokens("Hello world") == 2 and llm.chat(HELLO, GREEDY)
        finally:
            llm.close()


@pytest.mark.slow
def test_real_server_unknown_model_lists_its_models(llm_server):
    with pytest.raises(UsageError) as e:
        RemoteLLM(llm_server, model="gpt-4o")
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in one_line(e.value) and "RAG_LLM_MODEL" in str(e.value)


@pytest.mark.slow
def test_pipeline_answers_through_the_server(llm_server, sample_index, real_embedder):
    from rag.pipeline import Pipeline
    from rag.store import open_index

    p = Pipeline(Settings(index=str(sample_index), mode="llm", llm_url=llm_server), embedder=real_embedder)
    try:
        answer = p.ask("What did the US urge Pakistan to do?")
        assert isinstance(p.llm, RemoteLLM)
    finally:
        p.llm.close()
        p.close()
    assert answer.model["llm"].startswith("SmolLM2-135M-Instruct.Q4_1.gguf @ 127.0.0.1:")
    assert not answer.abstained and answer.citations and answer.draft  # the server wrote a draft
    assert answer.timings_ms["first_token"] <= answer.timings_ms["total"]
    reader = open_index(sample_index)
    try:
        for c in answer.citations:
            assert reader.article(c.doc_id).text[c.start:c.end] == c.quote
    finally:
        reader.close()


@pytest.mark.slow
def test_cli_ask_through_llm_url(llm_server, sample_index, tmp_path):
    """`rag ask --llm-url URL --json`, as a script would run it: answered by the server's model."""
    import subprocess

    from tests.conftest import subprocess_env
    from tests.hardening import rag_command

    done = subprocess.run(rag_command("ask", "What did the US urge Pakistan to do?", "--index", str(sample_index),
                                      "--llm-url", llm_server, "--json"),
                          capture_output=True, text=True, cwd=tmp_path, env=subprocess_env(), timeout=300)
    assert done.returncode in (0, 3), done.stderr
    answer = json.loads(done.stdout)
    assert "@ 127.0.0.1:" in answer["model"]["llm"]
    assert answer["draft"]  # the server wrote a draft that was then verified
