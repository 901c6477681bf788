"""`rag ask --server URL`: the question goes to a running `rag serve`; the output is `rag ask`'s.

Only the standard library (urllib) and rag's light modules (types, render, errors): a script on
another machine needs neither the models nor the index, and loads neither torch, faiss nor
llama_cpp. The server's defaults apply to every option not given on the command line (the local
config and RAG_* settings describe a local index, not the server's).

Exit codes as `rag ask`: 0 answered, 3 abstained; 2 for a request the server refuses (4xx, a
missing or wrong token); 1 when the server cannot be reached or fails (5xx).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import fields
from urllib.parse import urlsplit

from rag.errors import EXIT_ABSTAINED, EXIT_OK, RagError, UsageError
from rag.types import Answer, Citation, Retrieved, Sentence

TIMEOUT = 600.0  # seconds: an llm question may wait for the questions ahead of it
LOCAL_ONLY = ("index", "config", "model", "llm_url", "llm_model")  # the server's own settings


def ask_server(server: str, args: argparse.Namespace) -> int:
    """Send the question of `rag ask ARGS` to the server; print what `rag ask` prints; its exit code."""
    _refuse_local_options(args)
    base = server_url(server)
    request = ask_request(args)
    token = os.environ.get("RAG_SERVE_TOKEN") or None
    if not args.json and _draft_wanted():
        body = _stream(base, request, token)
    else:
        body = post(base, "/v1/ask", request, token)
    answer = answer_from_json(_parse(body, base))
    if args.json:
        print(body)
    else:
        from rag.render import print_answer

        print_answer(answer, sys.stdout)  # the stream now: render's default was bound at its import
    return EXIT_ABSTAINED if answer.abstained else EXIT_OK


def _refuse_local_options(args: argparse.Namespace) -> None:
    if getattr(args, "batch", None):
        raise UsageError("--batch does not go through a server yet", "ask one question per call, or run the "
                         "batch where the index is (without --server / RAG_SERVER)")
    for name in LOCAL_ONLY:
        if getattr(args, name, None):
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} applies to a local index, not to a server",
                             "drop it, or give it to `rag serve`; without --server / RAG_SERVER the question is "
                             "answered here")


def server_url(server: str) -> str:
    """http://HOST:PORT without a trailing slash; a bare HOST:PORT gets http://."""
    url = server.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--server must be an http(s) URL like http://127.0.0.1:8000, not {server!r}")
    return url


def ask_request(args: argparse.Namespace) -> dict:
    """The JSON body: the question and only the options given (absent ones take the server's)."""
    request = {"question": args.question, "k": args.k, "mode": args.mode, "since": args.since,
               "until": args.until, "source": args.source, "docs": list(args.doc or []),
               "as_of": getattr(args, "as_of", None)}
    return {k: v for k, v in request.items() if v not in (None, [])}


def _opener(url: str):
    """No proxy for a server on this machine (an http_proxy variable must not reroute loopback)."""
    host = urlsplit(url).hostname or ""
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    return urllib.request.build_opener(urllib.request.ProxyHandler({})) if local else urllib.request.build_opener()


def _send(base: str, path: str, request: dict, token: str | None, accept: str):
    data = json.dumps(request, ensure_ascii=False).encode("utf-8")
    headers = {"Content-Type": "application/json", "Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, headers=headers, method="POST")
    try:
        return _opener(base).open(req, timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        raise _refusal(e, base, token) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        reason = getattr(reason, "strerror", None) or str(reason)
        raise RagError(f"cannot reach the rag server at {base} ({reason})",
                       "start it with `rag serve`, or check --server / RAG_SERVER") from None


def post(base: str, path: str, request: dict, token: str | None) -> str:
    """POST the request; the response body (text), or a RagError saying what went wrong."""
    with _send(base, path, request, token, "application/json") as response:
        return _read(response, base)


def _read(response, base: str) -> str:
    try:
        return response.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RagError(f"the connection to {base} broke while reading the answer ({e})", "ask again") from None


def _refusal(e: urllib.error.HTTPError, base: str, token: str | None) -> RagError:
    """The server's own one-line error; 401 is about RAG_SERVE_TOKEN."""
    try:
        message = json.loads(e.read().decode("utf-8"))["error"]
    except (OSError, ValueError, KeyError, TypeError):
        message = f"HTTP {e.code} {e.reason}"
    if e.code == 401:
        told = ("the token in RAG_SERVE_TOKEN was refused" if token
                else "it needs a token and RAG_SERVE_TOKEN is not set")
        return UsageError(f"the rag server at {base} refused the request: {told}",
                          "set RAG_SERVE_TOKEN to the token the server was started with")
    if 400 <= e.code < 500:
        return UsageError(f"the rag server refused the question: {message}")
    return RagError(f"the rag server at {base} failed (HTTP {e.code}): {message}")


def _parse(body: str, base: str) -> dict:
    try:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError
        return data
    except ValueError:
        raise RagError(f"the server at {base} did not answer with rag's JSON", "is it a `rag serve`?") from None


def answer_from_json(data: dict) -> Answer:
    """The Answer the server serialised (fields a newer server adds are ignored)."""
    try:
        answer = _make(Answer, data)
        answer.sentences = [_make(Sentence, s) for s in data.get("sentences", [])]
        answer.citations = [_make(Citation, c) for c in data.get("citations", [])]
        answer.retrieved = [_make(Retrieved, r) for r in data.get("retrieved", [])]
    except (TypeError, AttributeError) as e:
        raise RagError(f"the server's answer does not have the shape of `rag ask --json` ({e})") from None
    return answer


def _make(cls, data: dict):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


# --- the draft, streamed to a terminal as `rag ask` does ---------------------------------------------


def _draft_wanted() -> bool:
    from rag.render import use_colour

    return use_colour(sys.stderr)


def _stream(base: str, request: dict, token: str | None) -> str:
    """Show the model's draft dimmed on stderr as it arrives; return the answer event's JSON."""
    shown = False
    try:
        with _send(base, "/v1/ask/stream", request, token, "text/event-stream") as response:
            for kind, data in events(response):
                if kind == "token":
                    if not shown:
                        sys.stderr.write("\x1b[2mdraft: ")
                        shown = True
                    sys.stderr.write(json.loads(data).get("text", ""))
                    sys.stderr.flush()
                elif kind == "answer":
                    return data
                elif kind == "error":
                    detail = json.loads(data)
                    status, message = detail.get("status", 500), detail.get("error", "unknown error")
                    error = UsageError if 400 <= status < 500 else RagError
                    raise error(f"the rag server failed to answer (HTTP {status}): {message}")
    except (OSError, ValueError) as e:
        raise RagError(f"the stream from {base} broke ({e})", "ask again") from None
    finally:
        if shown:
            sys.stderr.write("\x1b[0m\n")
    raise RagError(f"the stream from {base} ended without an answer", "ask again")


def events(lines):
    """(event, data) pairs of a text/event-stream read line by line (bytes)."""
    kind, data = "message", []
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield kind, "\n".join(data)
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield kind, "\n".join(data)
