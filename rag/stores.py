"""Where the index lives: the file store (FAISS + SQLite in a folder; the default) or Milvus.

The pipeline, indexer, eval, chat and serve open stores only through these functions, and use only
the methods of `rag.retrieve.SearchStore` (readers) and of `rag.store.IndexWriter` (writers), so
they never know which store holds the index.

`Settings.store` (`--store`, `RAG_STORE`) chooses: unset, the folder `Settings.index`; a plain
path, that folder; `milvus://HOST:PORT[/NAME]`, the collections NAME_* in that Milvus (NAME
defaults to "rag"; the token comes from RAG_MILVUS_TOKEN only). `rag.store_milvus` (and pymilvus)
is imported only when a Milvus store is used.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from rag.config import Settings
from rag.errors import UsageError

MILVUS_SCHEME = "milvus://"
DEFAULT_PREFIX = "rag"
_HOST = re.compile(r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?|\[[0-9A-Fa-f:.]+\])$")
_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")  # Milvus collection names: letters, digits, _
_URI_HINT = "use milvus://HOST:PORT[/NAME], e.g. milvus://127.0.0.1:19530/rag, or a folder"


@dataclass(frozen=True)
class MilvusTarget:
    """A parsed `milvus://HOST:PORT[/NAME]`."""

    host: str
    port: int
    prefix: str  # collection name prefix (NAME)

    @property
    def uri(self) -> str:
        return f"{MILVUS_SCHEME}{self.host}:{self.port}/{self.prefix}"

    @property
    def address(self) -> str:
        """What pymilvus.MilvusClient(uri=...) takes."""
        return f"http://{self.host}:{self.port}"


def parse_store(text: str) -> MilvusTarget | Path:
    """`milvus://HOST:PORT[/NAME]` -> MilvusTarget; a path -> Path; anything else: UsageError."""
    text = text.strip()
    if not text.lower().startswith(MILVUS_SCHEME):
        if "://" in text:
            raise UsageError(f"store {text!r} has an unknown scheme {text.split('://')[0]!r}", _URI_HINT)
        return Path(text)
    rest = text[len(MILVUS_SCHEME):]
    address, _, prefix = rest.partition("/")
    prefix = prefix.rstrip("/") or DEFAULT_PREFIX
    if "@" in address or "?" in text:
        raise UsageError(f"store {text!r}: put no user, password or options in the URI",
                         "give the token in RAG_MILVUS_TOKEN")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not _HOST.match(host):
        raise UsageError(f"store {text!r} names no HOST:PORT", _URI_HINT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"store {text!r} has a bad port {port!r} (1-65535)", _URI_HINT)
    if not _PREFIX.match(prefix):
        raise UsageError(f"store {text!r}: NAME {prefix!r} must be letters, digits and _ (not starting with a "
                         "digit, at most 64)", _URI_HINT)
    return MilvusTarget(host, int(port), prefix)


def milvus_target(settings: Settings) -> MilvusTarget | None:
    """The Milvus store the settings name, or None for the file store."""
    if not settings.store:
        return None
    target = parse_store(settings.store)
    return target if isinstance(target, MilvusTarget) else None


def _folder(settings: Settings) -> Path:
    if settings.store:
        target = parse_store(settings.store)
        if isinstance(target, Path):
            return target
    return Path(settings.index)


def location(settings: Settings) -> str:
    """The index the settings name: a folder (absolute), or the Milvus URI."""
    target = milvus_target(settings)
    return target.uri if target is not None else str(_folder(settings).resolve())


def open_store(settings: Settings, embedder: dict | None = None, load_vectors: bool = True):
    """The published index, checked, for reading; refuses one built by another embedder."""
    target = milvus_target(settings)
    if target is not None:
        from rag.store_milvus import open_milvus

        return open_milvus(target, embedder)
    from rag.store import open_index

    return open_index(_folder(settings), embedder, load_vectors=load_vectors)


def store_writer(settings: Settings, rebuild: bool = False):
    """A context manager that writes the next version of the index; one writer at a time."""
    target = milvus_target(settings)
    if target is not None:
        from rag.store_milvus_write import MilvusWriter

        return MilvusWriter(target, settings.lock_timeout, rebuild=rebuild)
    from rag.store import IndexWriter

    return IndexWriter(_folder(settings), settings.lock_timeout, rebuild=rebuild)


def published_state(settings: Settings) -> str | None:
    """The name of the version published now (cheap: read before every question by `rag serve`)."""
    target = milvus_target(settings)
    if target is not None:
        from rag.store_milvus import milvus_published_state

        return milvus_published_state(target)
    try:
        return (_folder(settings) / "CURRENT").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def local_folder(settings: Settings) -> Path:
    """The folder for this index's local helper files (the ONNX query embedder export).

    For Milvus: a folder per URI under the cache folder (Settings.cache_dir, else the user's)."""
    target = milvus_target(settings)
    if target is None:
        return _folder(settings)
    if settings.cache_dir:
        root = Path(settings.cache_dir).expanduser()
    else:
        from platformdirs import user_cache_dir

        root = Path(user_cache_dir("rag"))
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{target.host}_{target.port}_{target.prefix}")
    folder = root / "milvus" / f"{slug}-{hashlib.sha256(target.uri.encode()).hexdigest()[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # then no fast query embedder is kept: queries load sentence-transformers instead
    return folder


def query_embedder_for(settings: Settings):
    """The embedder for questions to this store, at the precision its vectors were made with.

    A Milvus store's vectors have the model's default precision (there are no older Milvus stores):
    a client with no local files makes that export on its first question. The file store's own
    manifest says which."""
    from rag.embed import default_precision, embedder_dir
    from rag.query_embed import query_embedder

    model_dir = embedder_dir(settings.embedder)
    precision = default_precision(model_dir) if milvus_target(settings) is not None else None
    return query_embedder(local_folder(settings), model_dir, precision)
