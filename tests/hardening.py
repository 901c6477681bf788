"""Helpers shared by the hardening tests (test_faults, test_fuzz, test_injection).

`ShapedEmbedder` is FakeEmbedder wearing the bundled MiniLM's identity (name, fingerprint, dim
384), so an index it builds passes the CLI's embedder check: `rag status`, `rag ask` and
`rag index` then run in-process, in milliseconds, with `use_shaped_embedder(monkeypatch)`.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "eval" / "corpus"
QUESTION = "What did the US urge Pakistan to do?"


@cache
def real_identity() -> dict:
    from rag.embed import embedder_dir, embedder_identity

    return embedder_identity(embedder_dir(None))


@cache
def token_counter():
    from rag.embed import TokenCounter, embedder_dir

    return TokenCounter(embedder_dir(None))


def shaped_embedder():
    from rag.embed import FakeEmbedder

    embedder = FakeEmbedder(dim=real_identity()["dim"])
    embedder.identity = dict(real_identity())
    return embedder


def use_shaped_embedder(monkeypatch) -> None:
    """Make the CLI (in this process) embed with the fast fake instead of sentence-transformers."""
    import rag.indexer
    import rag.pipeline

    monkeypatch.setattr(rag.indexer, "SentenceTransformerEmbedder", lambda *a, **k: shaped_embedder())
    monkeypatch.setattr(rag.indexer, "ensure_onnx", lambda *a, **k: None)  # no ONNX export
    monkeypatch.setattr(rag.pipeline, "query_embedder_for", lambda *a, **k: shaped_embedder())  # what Pipeline builds


def build_index(index_dir: Path, paths: list[Path], embedder=None, **settings):
    """index_paths() with the shaped embedder; returns the Summary."""
    from rag.config import Settings
    from rag.indexer import index_paths

    return index_paths([str(p) for p in paths], Settings(index=str(index_dir), **settings),
                       embedder=embedder or shaped_embedder(), counter=token_counter())


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """rag.cli.main(args) in this process: (exit code, stdout, stderr). An exception escaping main()
    would be a traceback for the user, so it is left to fail the test."""
    from rag.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as e:  # argparse errors and --help
            code = e.code
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(err: str, *words: str) -> str:
    """stderr is one `rag: ...` line (never a traceback) containing every word in `words`."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rag: "), err
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(index_dir: Path) -> tuple:
    """What a published state holds: (doc_id, content_hash) pairs and chunk ids (which carry offsets)."""
    from rag.store import open_index

    reader = open_index(index_dir, load_vectors=False)
    try:
        articles = tuple(sorted(reader.db.execute("SELECT doc_id, content_hash FROM articles")))
        chunks = tuple(sorted(r[0] for r in reader.db.execute("SELECT chunk_id FROM chunks")))
    finally:
        reader.close()
    return articles, chunks


def deep_status(index_dir: Path) -> dict:
    from rag.config import Settings
    from rag.status import index_status

    return index_status(Settings(index=str(index_dir)), deep=True)


def clean_env() -> dict[str, str]:
    """The environment for a `rag` subprocess: tests/conftest.py's subprocess_env()."""
    from tests.conftest import subprocess_env

    return subprocess_env()


def rag_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rag.cli", *args]


def report(config, line: str) -> None:
    """Print a count so that it shows in `make test` output, past pytest's output capture."""
    print(line)
    capture = config.pluginmanager.get_plugin("capturemanager")
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or terminal is None:
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line("")
        terminal.write_line(line)


def remove_tree(path: Path) -> None:
    """shutil.rmtree without recursion: Python 3.11's rmtree overflows on a 1,000-deep folder tree
    (and pytest's own clean-up of old temporary folders would then fail every later session)."""
    stack = [str(path)]
    while stack:
        current = stack[-1]
        subfolders = []
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(entry.path)
                else:
                    os.unlink(entry.path)
        if subfolders:
            stack.extend(subfolders)
        else:
            os.rmdir(current)
            stack.pop()
