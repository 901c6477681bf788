"""Where the index lives: the file store (FAISS + SQLite in a folder; the default) or another store.

The pipeline, indexer, eval, chat and serve open stores only through these functions, and use only
the methods of `rag.retrieve.SearchStore` (readers) and of `rag.store.IndexWriter` (writers), so
they never know which store holds the index.
"""

from __future__ import annotations

from pathlib import Path

from rag.config import Settings


def location(settings: Settings) -> str:
    """The index the settings name, as an absolute folder."""
    return str(Path(settings.index).resolve())


def open_store(settings: Settings, embedder: dict | None = None, load_vectors: bool = True):
    """The published index, checked, for reading; refuses one built by another embedder."""
    from rag.store import open_index

    return open_index(settings.index, embedder, load_vectors=load_vectors)


def store_writer(settings: Settings, rebuild: bool = False):
    """A context manager that writes the next version of the index; one writer at a time."""
    from rag.store import IndexWriter

    return IndexWriter(settings.index, settings.lock_timeout, rebuild=rebuild)


def published_state(settings: Settings) -> str | None:
    """The name of the version published now (cheap: read before every question by `rag serve`)."""
    try:
        return (Path(settings.index) / "CURRENT").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def local_folder(settings: Settings) -> Path:
    """The folder for this index's local helper files (the ONNX query embedder export)."""
    return Path(settings.index)
