"""Generation on an OpenAI-compatible server (--llm-url / RAG_LLM_URL) instead of a local GGUF.

`RemoteLLM` has LlamaModel's interface (name, n_ctx, count_tokens, count_chat_tokens, stream_chat,
chat, close, last_finish_reason) and generates through the official `openai` client. What an
OpenAI-compatible server offers beyond /v1/models and /v1/chat/completions differs, so at start
it asks once which of these it has and remembers the answer (`flavour`):

    server             tokenizer endpoint (at the server root)          context size
    llama-cpp-python   POST /extras/tokenize {"input"}                  not told: the n_ctx argument
    llama.cpp          POST /apply-template, then POST /tokenize        GET /props
    vLLM               POST /tokenize {"model", "messages"}             max_model_len in /v1/models
    anything else      none: counted from characters                    the n_ctx argument

vLLM and llama.cpp render the chat template themselves, so their counts are exact. For
llama-cpp-python each message is tokenized on the server and a fixed overhead is added for the
template it does not show (see MESSAGE_OVERHEAD_TOKENS). Elsewhere the count is a deliberate
overestimate from characters: packing a little less evidence is better than a prompt that
overflows.

Every failure becomes a one-line RagError (UsageError for what the user must change: the URL,
the model name, the API key). Nothing waits forever: the connect timeout is CONNECT_TIMEOUT and
every read waits at most `timeout` seconds. That timeout counts bytes, not words: a server that
keeps sending SSE keep-alive comments (llama-cpp-python's pings every 15 s) counts as answering,
which is right while it reads a long prompt. A server that rejects a prompt as too long for its
context gives ContextOverflow, and its context size, when it says it, replaces n_ctx from then on.
Only the given URL is contacted: proxies from the environment are ignored (trust_env=False, so
SSL_CERT_FILE is not read either), redirects are not followed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import openai

try:
    import httpx2 as httpx  # what the openai client is built on from 3.x
except ImportError:  # pragma: no cover - openai 1.x/2.x use httpx
    import httpx

from rag.errors import RagError, UsageError
from rag.llm import ContextOverflow, GenerationConfig

# Long enough for a server on another continent, short enough that a wrong host fails fast.
CONNECT_TIMEOUT = 5.0

# The chat template is invisible when only a plain tokenizer is available. Per message, ChatML
# adds 5 tokens (<|im_start|>, role, newline, <|im_end|>, newline), Llama 3 and Gemma 5, Mistral
# fewer; 8 also covers the 1-2 tokens that merge differently where a message meets the template.
MESSAGE_OVERHEAD_TOKENS = 8
# Once per prompt: BOS, the generation prompt (ChatML 3 tokens, Llama 3 5) and what templates add
# on their own (Llama 3.1 writes "Cutting Knowledge Date: ... Today Date: ..." into the system
# message, about 20 tokens).
PROMPT_OVERHEAD_TOKENS = 32
# No tokenizer at all: English runs at 3.5-4.5 characters a token with common vocabularies, so
# 2.5 overestimates by a third or more. Other scripts cost more per character: counted by UTF-8
# bytes, 2 a token (1.5 tokens for a CJK character, 1 for Cyrillic or Greek).
ASCII_CHARS_PER_TOKEN = 2.5
NON_ASCII_BYTES_PER_TOKEN = 2.0

LLAMA_CPP_PYTHON, LLAMA_CPP, VLLM = "llama-cpp-python", "llama.cpp", "vllm"

_CACHE_SIZE = 512  # token counts kept: the pipeline recounts the same system prompt and sources
_SHOWN_MODELS = 8
_CONTEXT_WORDS = re.compile(r"context[ _](length|window|size)|maximum context|exceed_context|too many tokens", re.I)
_CONTEXT_SIZE = re.compile(r"(?:maximum context length is|context window of|context size of|n_ctx\D{0,4})\s*(\d+)",
                           re.I)


def parse_url(url: str) -> tuple[str, str, str]:
    """(base URL of the OpenAI API, server root, URL to show), or a UsageError.

    A bare server address (no path) gets /v1 appended: that is where llama.cpp, llama-cpp-python
    and vLLM serve the API, and what they print on start is the bare address. Any other path is
    kept as given (some hosted APIs live under /openai or /v1beta); if /models is not found
    there, the error says the URL usually ends in /v1. The root, where the tokenizer endpoints
    live, is the base without its trailing /v1.
    """
    text = (url or "").strip()
    example = "e.g. --llm-url http://127.0.0.1:8080/v1"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise UsageError(f"--llm-url is not a valid URL: {text!r}", example) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--llm-url must be an http:// or https:// URL, not {text!r}", example)
    if parts.query or parts.fragment:
        raise UsageError(f"--llm-url must not have a ?query or #fragment: {text!r}", example)
    path = parts.path.rstrip("/") or "/v1"
    base = f"{parts.scheme.lower()}://{parts.netloc}{path}"
    root = base[: -len("/v1")] if path.endswith("/v1") else f"{parts.scheme.lower()}://{parts.netloc}"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    shown = f"{parts.scheme.lower()}://{host}{f':{port}' if port else ''}{path}"  # without user:password@
    return base, root, shown


def short_model_name(model_id: str) -> str:
    """A GGUF path (llama-cpp-python lists its models by path) shown by its file name."""
    if model_id.lower().endswith(".gguf") or model_id.startswith("/"):
        return re.split(r"[\\/]", model_id)[-1] or model_id
    return model_id


def estimate_tokens(text: str) -> int:
    """Tokens from characters, for servers without a tokenizer endpoint: an overestimate."""
    ascii_chars = sum(1 for c in text if c < "\x80")
    other_bytes = len(text.encode("utf-8", errors="replace")) - ascii_chars
    return math.ceil(ascii_chars / ASCII_CHARS_PER_TOKEN + other_bytes / NON_ASCII_BYTES_PER_TOKEN)


def _one_line(text: object, limit: int = 200) -> str:
    """The first non-empty line, shortened: a server's message may carry a traceback after it."""
    first = next((line for line in str(text).splitlines() if line.strip()), "")
    line = " ".join(first.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _is_token_list(data: object, key: str) -> bool:
    return isinstance(data, dict) and isinstance(data.get(key), list)


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _error_text(body: object, fallback: str = "") -> str:
    """The server's own words from an error body: {"error": {"message"}}, {"message"}, {"detail"}."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            for key in ("message", "detail", "msg"):
                if inner.get(key):
                    return _one_line(inner[key])
        elif isinstance(inner, str):
            return _one_line(inner)
        if body.get("detail"):
            return _one_line(body["detail"])
    return _one_line(fallback or body or "no details")


def _response_text(response) -> str:
    try:
        return _error_text(response.json())
    except ValueError:
        return _one_line(response.text or response.reason_phrase or "no details")


class RemoteLLM:
    """A model served over HTTP by an OpenAI-compatible server; see the module docstring."""

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None, timeout: float = 120.0,
                 n_ctx: int = 2048):
        self.base_url, self._root, self.url = parse_url(url)
        self.timeout = float(timeout)
        if not self.timeout > 0:
            raise UsageError(f"llm_timeout must be a positive number of seconds, not {timeout!r}")
        self._api_key = api_key or None
        # max_retries=0: a retry repeats the whole wait (a dead server at timeout=120 would take
        # minutes to report) and a local server that just failed rarely succeeds 0.5 s later;
        # one clear error now is better, and asking again is the user's (or the caller's) choice.
        self._http = httpx.Client(timeout=httpx.Timeout(self.timeout, connect=min(CONNECT_TIMEOUT, self.timeout)),
                                  headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
                                  trust_env=False, follow_redirects=False)
        # The client requires some key; "none" is what keyless local servers ignore.
        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "none", max_retries=0,
                                     timeout=self._http.timeout, http_client=self._http)
        self._counts: dict[tuple, int | None] = {}
        self._server_ctx: int | None = None  # vLLM's max_model_len as its /tokenize tells it
        self.last_finish_reason: str | None = None  # "stop" or "length" after a generation
        try:
            entries = self._list_models()
            self.model = self._pick_model(model, [e["id"] for e in entries])
            self.flavour = self._probe()
            entry = next(e for e in entries if e["id"] == self.model)
            self.n_ctx = self._discover_n_ctx(entry) or n_ctx
        except BaseException:
            self.close()
            raise
        self.name = f"{short_model_name(self.model)} @ {urlsplit(self.url).netloc}"

    # --- start: models, flavour, context size ---------------------------------------------

    def _list_models(self) -> list[dict]:
        data = self._request("GET", f"{self.base_url}/models", what="GET /models")
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("id"), str)
                                                    for e in entries):
            raise RagError(f"{self.url}/models does not list models the OpenAI way",
                           "check --llm-url: it should be the server's OpenAI API, usually ending in /v1")
        if not entries:
            raise RagError(f"the LLM server at {self.url} lists no models", "load a model in it")
        return entries

    def _pick_model(self, wanted: str | None, ids: list[str]) -> str:
        """The requested model as the server names it; the first listed when none is requested."""
        if not wanted:
            return ids[0]
        if wanted in ids:
            return wanted
        by_file_name = [i for i in ids if short_model_name(i) == wanted]
        if len(by_file_name) == 1:
            return by_file_name[0]
        shown = ", ".join(ids[:_SHOWN_MODELS]) + (f" and {len(ids) - _SHOWN_MODELS} more" if len(ids) > _SHOWN_MODELS
                                                  else "")
        raise UsageError(f"the LLM server at {self.url} has no model {wanted!r}; it lists: {shown}",
                         "set --llm-model / RAG_LLM_MODEL to one of them, or leave it unset for the first")

    def _probe(self) -> str | None:
        """Which tokenizer endpoint the server has (asked once, at start); None when it has none."""
        hello = [{"role": "user", "content": "Hello"}]
        got = self._post(f"{self._root}/extras/tokenize", {"input": "Hello", "model": self.model})
        if _is_token_list(got, "tokens"):
            return LLAMA_CPP_PYTHON
        got = self._post(f"{self._root}/tokenize", {"model": self.model, "messages": hello,
                                                    "add_generation_prompt": True})
        if isinstance(got, dict) and _positive_int(got.get("count")):  # llama.cpp answers {"tokens": []}
            self._server_ctx = _positive_int(got.get("max_model_len"))
            return VLLM
        got = self._post(f"{self._root}/apply-template", {"messages": hello})
        if isinstance(got, dict) and isinstance(got.get("prompt"), str):
            tokens = self._post(f"{self._root}/tokenize", {"content": "Hello"})
            if _is_token_list(tokens, "tokens") and tokens["tokens"]:
                return LLAMA_CPP
        return None

    def _discover_n_ctx(self, entry: dict) -> int | None:
        """The context size the server reports: vLLM in /v1/models (or /tokenize), llama.cpp in /props."""
        if _positive_int(entry.get("max_model_len")):
            return entry["max_model_len"]
        if self.flavour == LLAMA_CPP:
            props = self._request("GET", f"{self._root}/props", quiet=True)
            if isinstance(props, dict):
                settings = props.get("default_generation_settings")
                n = _positive_int(settings.get("n_ctx")) if isinstance(settings, dict) else None
                return n or _positive_int(props.get("n_ctx"))
        return self._server_ctx

    # --- counting ------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return self._cached(("text", text), lambda: self._tokenize(text))

    def count_chat_tokens(self, messages: list[dict]) -> int:
        """Tokens of the prompt the server will build from `messages`, never counted low.

        Exact where the server renders its template for us (vLLM, llama.cpp); otherwise each
        message's text through the server's tokenizer (or estimate_tokens) plus the overheads.
        """
        if self.flavour in (VLLM, LLAMA_CPP):
            key = ("chat", *((str(m.get("role")), str(m.get("content") or "")) for m in messages))
            exact = self._cached(key, lambda: self._templated_count(messages))
            if exact is not None:
                return exact
        return PROMPT_OVERHEAD_TOKENS + sum(self.count_tokens(str(m.get("content") or "")) + MESSAGE_OVERHEAD_TOKENS
                                            for m in messages)

    def _cached(self, key: tuple, compute):
        if key not in self._counts:
            if len(self._counts) >= _CACHE_SIZE:
                self._counts.clear()
            self._counts[key] = compute()
        return self._counts[key]

    def _tokenize(self, text: str) -> int:
        """Tokens of `text` by the server's tokenizer; estimated when it has none or refuses."""
        if self.flavour == LLAMA_CPP_PYTHON:  # special=True there, as in its chat prompts
            got = self._post(f"{self._root}/extras/tokenize", {"input": text, "model": self.model})
        elif self.flavour == LLAMA_CPP:
            got = self._post(f"{self._root}/tokenize", {"content": text, "add_special": False, "parse_special": True})
        elif self.flavour == VLLM:
            got = self._post(f"{self._root}/tokenize", {"model": self.model, "prompt": text,
                                                        "add_special_tokens": False})
        else:
            got = None
        return len(got["tokens"]) if _is_token_list(got, "tokens") else estimate_tokens(text)

    def _templated_count(self, messages: list[dict]) -> int | None:
        """The exact prompt length from a server that applies its own chat template; None if it fails."""
        if self.flavour == VLLM:
            got = self._post(f"{self._root}/tokenize", {"model": self.model, "messages": messages,
                                                        "add_generation_prompt": True})
            return _positive_int(got.get("count")) if isinstance(got, dict) else None
        got = self._post(f"{self._root}/apply-template", {"messages": messages})
        if not (isinstance(got, dict) and isinstance(got.get("prompt"), str)):
            return None
        # As llama.cpp tokenizes a chat prompt: BOS added if the model wants one, special tokens parsed.
        tokens = self._post(f"{self._root}/tokenize", {"content": got["prompt"], "add_special": True,
                                                       "parse_special": True})
        return len(tokens["tokens"]) if _is_token_list(tokens, "tokens") else None

    # --- generating ------------------------------------------------------------------------

    def stream_chat(self, messages: list[dict], config: GenerationConfig) -> Iterator[str]:
        """Yield the answer in pieces as the server sends them.

        Raises ContextOverflow before sending anything if the prompt alone fills the context.
        """
        n_prompt = self.count_chat_tokens(messages)  # checked now, not at the first next()
        if n_prompt >= self.n_ctx:
            raise ContextOverflow(f"the prompt is {n_prompt} tokens but the model context is {self.n_ctx}",
                                  "lower k or raise n_ctx")
        return self._stream(messages, config)

    def _stream(self, messages: list[dict], config: GenerationConfig) -> Iterator[str]:
        self.last_finish_reason = None
        started = False
        try:
            stream = self._client.chat.completions.create(**self._request_args(messages, config))
            started = True
            with stream:  # closes the response (and so stops the server) if the caller stops early
                for chunk in stream:
                    choice = chunk.choices[0] if chunk.choices else None
                    piece = getattr(getattr(choice, "delta", None), "content", None)
                    if piece:
                        yield piece
                    if choice is not None and choice.finish_reason:
                        self.last_finish_reason = choice.finish_reason
        except openai.APIError as e:
            raise self._api_error(e, started) from None
        except ValueError as e:  # a data line that is not JSON, or not a chat chunk
            raise RagError(f"the LLM server at {self.url} sent something that is not an OpenAI chat stream "
                           f"({_one_line(e, 120)})", "check --llm-url") from None
        if self.last_finish_reason is None:
            raise RagError(f"the LLM server at {self.url} ended the answer without finishing it",
                           "another request may have cut it off, since llama-cpp-python's server answers one "
                           "at a time; or the prompt is over the server's context: set RAG_N_CTX to its size")

    def _request_args(self, messages: list[dict], config: GenerationConfig) -> dict:
        args = dict(model=self.model, messages=messages, stream=True, temperature=config.temperature, top_p=1.0,
                    max_tokens=config.max_tokens, seed=config.seed)
        if config.stop:
            args["stop"] = list(config.stop)
        extra = self._extra_body(config)
        if extra:
            args["extra_body"] = extra
        return args

    def _extra_body(self, config: GenerationConfig) -> dict:
        """Sampling knobs beyond the OpenAI API, only for servers known to take them.

        llama.cpp and llama-cpp-python: top_k, min_p and repeat_penalty (min_p=0 as LlamaModel
        sets it: llama-cpp-python's server defaults to 0.05). vLLM calls the penalty
        repetition_penalty. Hosted APIs reject unknown parameters, so they get none.
        """
        if self.flavour in (LLAMA_CPP_PYTHON, LLAMA_CPP):
            return {"top_k": config.top_k, "min_p": 0.0, "repeat_penalty": config.repeat_penalty}
        if self.flavour == VLLM:
            extra = {"min_p": 0.0, "repetition_penalty": config.repeat_penalty}
            return extra | ({"top_k": config.top_k} if config.top_k > 0 else {})
        return {}

    def chat(self, messages: list[dict], config: GenerationConfig) -> str:
        return "".join(self.stream_chat(messages, config))

    def close(self) -> None:
        self._client.close()  # closes self._http too

    # --- HTTP and its errors ---------------------------------------------------------------

    def _post(self, url: str, body: dict):
        return self._request("POST", url, body, quiet=True)

    def _request(self, method: str, url: str, body: dict | None = None, *, quiet: bool = False,
                 what: str = ""):
        """The JSON answer. Transport failures raise; an HTTP error or a body that is not JSON
        raises too, or gives None when `quiet` (probes and optional endpoints: a gateway may deny
        a path it does not know with 401 or 403 although the key is good for /models)."""
        try:
            response = self._http.request(method, url, json=body)
        except httpx.HTTPError as e:
            raise self._transport_error(e, started=False) from None
        if not response.is_success:
            if quiet:
                return None
            if response.status_code in (401, 403):
                raise self._auth_error(response.status_code, _response_text(response))
            if response.status_code == 404:
                raise UsageError(f"no OpenAI API at {self.url} ({what}: HTTP 404)",
                                 "the base URL usually ends in /v1, e.g. http://127.0.0.1:8080/v1")
            raise self._status_error(response.status_code, _response_text(response))
        try:
            return response.json()
        except ValueError:
            if quiet:
                return None
            raise RagError(f"the LLM server at {self.url} did not answer {what} with JSON",
                           "check --llm-url: it should be the server's OpenAI API, usually ending in /v1") from None

    def _transport_error(self, e: Exception, started: bool) -> RagError:
        """Connection refused, timeouts, a dropped connection: what happened and what to do."""
        if isinstance(e, httpx.ConnectTimeout):
            return RagError(f"cannot reach the LLM server at {self.url} (no answer to connect within "
                            f"{min(CONNECT_TIMEOUT, self.timeout):g} s)", "start it or check --llm-url")
        if isinstance(e, httpx.TimeoutException):
            return RagError(f"the LLM server at {self.url} sent nothing for {self.timeout:g} s",
                            "it may be overloaded or stuck: check it, or raise llm_timeout (RAG_LLM_TIMEOUT)")
        if isinstance(e, httpx.ConnectError) or not started:
            reason = "connection refused" if "refused" in str(e).lower() else _one_line(e, 120) or type(e).__name__
            return RagError(f"cannot reach the LLM server at {self.url} ({reason})", "start it or check --llm-url")
        reason = _one_line(e, 120) or type(e).__name__
        return RagError(f"lost the connection to the LLM server at {self.url} while it answered ({reason})",
                        "check that it is still running, then ask again")

    def _auth_error(self, status: int, text: str) -> UsageError:
        hint = ("check RAG_LLM_API_KEY: the server did not accept it" if self._api_key
                else "set RAG_LLM_API_KEY to the server's API key")
        return UsageError(f"the LLM server at {self.url} refused the request (HTTP {status}: {text})", hint)

    def _status_error(self, status: int, text: str) -> RagError:
        if status == 429:
            return RagError(f"the LLM server at {self.url} is busy or rate-limited (HTTP 429: {text})",
                            "wait a little and ask again")
        if status >= 500:
            return RagError(f"the LLM server at {self.url} failed (HTTP {status}: {text})",
                            "check its log, then ask again")
        return RagError(f"the LLM server at {self.url} rejected the request (HTTP {status}: {text})",
                        "check --llm-url and --llm-model")

    def _api_error(self, e: openai.APIError, started: bool) -> RagError:
        """An error from the openai client as a RagError; a context overflow as ContextOverflow."""
        if isinstance(e, openai.APIConnectionError):  # includes APITimeoutError
            cause = e.__cause__ if isinstance(e.__cause__, httpx.HTTPError) else e
            if isinstance(e, openai.APITimeoutError) and not isinstance(cause, httpx.TimeoutException):
                cause = httpx.ReadTimeout(str(e))
            return self._transport_error(cause, started)
        text = _error_text(e.body, e.message)
        if isinstance(e, openai.APIStatusError):
            if e.status_code in (401, 403):
                return self._auth_error(e.status_code, text)
            if e.status_code in (400, 413) and (_CONTEXT_WORDS.search(text) or _CONTEXT_WORDS.search(str(e.code))):
                return self._overflow(e.body, text)
            return self._status_error(e.status_code, text)
        return RagError(f"the LLM server at {self.url} reported an error while answering: {text}",
                        "check its log, then ask again")

    def _overflow(self, body: object, text: str) -> ContextOverflow:
        """The server says the prompt does not fit: remember its context size so the next prompt is packed to it."""
        inner = body.get("error", body) if isinstance(body, dict) else None
        found = _CONTEXT_SIZE.search(text)
        n = (_positive_int(inner.get("n_ctx")) if isinstance(inner, dict) else None) or (
            int(found.group(1)) if found else None)
        if n:
            self.n_ctx = min(self.n_ctx, n)
        return ContextOverflow(f"the prompt does not fit the LLM server's context ({text})",
                               f"lower k, or set n_ctx (RAG_N_CTX) to {n}" if n else "lower k or n_ctx")
