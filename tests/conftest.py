"""Shared fixtures: an isolated environment for every test, the real embedder loaded once per
session, and small corpora."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# No network in tests: a socket to anything but loopback fails the test (tests/network_guard.py).
pytest_plugins = ["network_guard"]

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "eval" / "corpus"

# Set by `isolated_environment` for every test, in this process and so in every subprocess.
ISOLATION_VARS = ("RAG_CACHE_DIR", "RAG_CONFIG", "XDG_CACHE_HOME")


@pytest.fixture(scope="session")
def rag_home(tmp_path_factory) -> Path:
    """What stands in for the user's folders, under pytest's temporary folder: `cache/` (the 139 MB
    Q8_0 model copy is made there once per session and shared), an empty `rag.toml`, and an empty
    `work/` folder for subprocesses that have no tmp_path to run in."""
    home = tmp_path_factory.mktemp("rag-home")
    (home / "cache" / "rag").mkdir(parents=True)
    (home / "work").mkdir()  # see neutral_cwd()
    (home / "rag.toml").write_text("# tests run with the default settings\n", encoding="utf-8")
    return home


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch, rag_home) -> None:
    """No test reads the user's settings or writes into the user's folders.

    - Every RAG_* variable of the user is removed (RAG_MODEL, RAG_INDEX, RAG_MAX_ANSWER_TOKENS ...).
    - RAG_CONFIG names an empty config file, so a ./rag.toml in whatever folder pytest or a `rag`
      subprocess runs in is not read.
    - RAG_CACHE_DIR (Settings.cache_dir) is the session cache; XDG_CACHE_HOME points at the same
      folder, so code that builds `Settings()` directly (cache_dir None: the platform's user cache
      folder) writes there too, and so do libraries that cache under ~/.cache.
    Chat history is kept beside the index (or where --history says), which tests put in tmp_path.
    """
    for name in [n for n in os.environ if n.startswith("RAG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RAG_CACHE_DIR", str(rag_home / "cache" / "rag"))
    monkeypatch.setenv("RAG_CONFIG", str(rag_home / "rag.toml"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(rag_home / "cache"))


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a `rag` subprocess started by a test: the isolated environment above
    (no RAG_* settings of the user, the test cache and config), `rag` importable from any working
    folder, plus `extra`. Run it in tmp_path (a neutral folder), not in the checkout."""
    if any(name not in os.environ for name in ISOLATION_VARS):
        raise RuntimeError("subprocess_env() is for tests: the isolated_environment fixture has not run")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_") or k in ISOLATION_VARS}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def model_dir():
    from rag.embed import embedder_dir

    return embedder_dir(None)


@pytest.fixture(scope="session")
def counter(model_dir):
    from rag.embed import TokenCounter

    return TokenCounter(model_dir)


@pytest.fixture(scope="session")
def real_embedder(model_dir):
    from rag.embed import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(model_dir)


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A private copy of the sample corpus that a test may change."""
    dest = tmp_path / "corpus"
    shutil.copytree(CORPUS, dest)
    return dest


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory, real_embedder, counter) -> Path:
    """The sample corpus indexed once with the real embedder; tests must not change it."""
    from rag.config import Settings
    from rag.indexer import index_paths

    index = tmp_path_factory.mktemp("sample") / "index"
    index_paths([str(CORPUS)], Settings(index=str(index)), embedder=real_embedder, counter=counter)
    return index


def neutral_cwd() -> Path:
    """An empty working folder for a `rag` subprocess (no rag.toml, no ./index): the session's
    rag_home/work. Tests that have a tmp_path can run in that instead."""
    if "RAG_CONFIG" not in os.environ:
        raise RuntimeError("neutral_cwd() is for tests: the isolated_environment fixture has not run")
    return Path(os.environ["RAG_CONFIG"]).parent / "work"
