"""Shared fixtures: the real embedder loaded once per session, and small corpora."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# No network in tests: a socket to anything but loopback fails the test (tests/network_guard.py).
pytest_plugins = ["network_guard"]

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "eval" / "corpus"


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
