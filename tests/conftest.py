"""Shared fixtures: the real embedder loaded once per session, and small corpora."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
