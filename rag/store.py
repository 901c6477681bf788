"""On-disk index: FAISS vectors + SQLite metadata + a JSON manifest, published atomically.

Layout of an index directory:

    CURRENT             name of the published state, e.g. "state-000007"
    .lock               single-writer lock (flock; released by the OS if the writer dies)
    state-000007/       manifest.json, meta.sqlite, vectors.faiss  (immutable once published)
    state-000006/       the previous state, kept so a reader that just read CURRENT stays valid
    state-000008.tmp/   a write in progress; removed by the next writer if it was abandoned

A writer builds a complete new state in a `.tmp` folder (copying the SQLite file, editing it,
writing FAISS), fsyncs it, renames the folder, then replaces CURRENT by an atomic rename. A
`kill -9` at any moment leaves CURRENT naming a complete state. No pickle is read or written.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.errors import IndexBroken, IndexLocked, IndexMissing, RagError
from rag.types import Article, Chunk

FORMAT_VERSION = 1
REBUILD_HINT = "run `rag index --rebuild PATH...` to rebuild it from your articles"

SCHEMA = """
CREATE TABLE IF NOT EXISTS articles (
    doc_id TEXT PRIMARY KEY, root TEXT, path TEXT, title TEXT, date TEXT, source TEXT, url TEXT,
    content_hash TEXT NOT NULL, chunker TEXT NOT NULL, text TEXT NOT NULL, indexed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id TEXT UNIQUE NOT NULL,
    doc_id TEXT NOT NULL REFERENCES articles(doc_id), ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, n_tokens INTEGER NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
"""


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _faiss():
    import faiss  # lazy: `rag --help` and `rag status --quick` must not pay for it

    return faiss


@dataclass
class IndexReader:
    """A published, consistency-checked state. Reads only; safe while a writer works."""

    path: Path
    manifest: dict
    db: sqlite3.Connection
    _vectors: object | None = None

    @property
    def vectors(self):
        if self._vectors is None:
            self._vectors = _read_faiss(self.path / "vectors.faiss")
        return self._vectors

    def article(self, doc_id: str) -> Article | None:
        row = self.db.execute("SELECT doc_id, text, title, date, source, url, path, content_hash "
                              "FROM articles WHERE doc_id = ?", (doc_id,)).fetchone()
        return Article(*row) if row else None

    def chunks_by_ids(self, ids: list[int]) -> dict[int, dict]:
        """FAISS ids -> chunk rows joined with their article's metadata."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f'SELECT c.id, c.chunk_id, c.doc_id, c.start, c."end", c.text, a.title, a.date, a.source '
            f"FROM chunks c JOIN articles a USING (doc_id) WHERE c.id IN ({marks})", ids).fetchall()
        keys = ("id", "chunk_id", "doc_id", "start", "end", "text", "title", "date", "source")
        return {r[0]: dict(zip(keys, r, strict=True)) for r in rows}

    def close(self) -> None:
        self.db.close()


def _read_faiss(path: Path):
    try:
        return _faiss().read_index(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
        raise IndexBroken(f"vector file {path} is damaged ({first[:120]})", REBUILD_HINT) from None


def _current_state(index_dir: Path) -> Path | None:
    current = index_dir / "CURRENT"
    if not current.is_file():
        return None
    name = current.read_text(encoding="utf-8", errors="replace").strip()
    if not name.startswith("state-") or "/" in name or name.endswith(".tmp"):
        raise IndexBroken(f"{current} names no valid state ({name[:40]!r})", REBUILD_HINT)
    return index_dir / name


def _refuse_pickles(index_dir: Path) -> None:
    for p in index_dir.rglob("*"):
        if p.suffix.lower() in (".pkl", ".pickle", ".joblib"):
            raise IndexBroken(f"unexpected pickle file {p} in the index; rag never writes pickles and "
                              "will not load one", f"delete it, or {REBUILD_HINT}")


def open_index(index_dir: str | Path, embedder: dict | None = None,
               load_vectors: bool = True) -> IndexReader:
    """Open the published state and check it, or raise a RagError that says how to fix it.

    `embedder` is the identity of the embedder that will embed queries; a mismatch with the one
    that built the index is refused (mixing vector spaces gives silent nonsense).
    """
    index_dir = Path(index_dir)
    state = _current_state(index_dir) if index_dir.is_dir() else None
    if state is None:
        raise IndexMissing(f"no index at {index_dir}", "build one with `rag index PATH...`")
    _refuse_pickles(index_dir)
    if not state.is_dir():
        raise IndexBroken(f"the published state {state} is missing", REBUILD_HINT)
    manifest = _read_manifest(state / "manifest.json")
    if embedder is not None:
        check_embedder(manifest, embedder)
    try:
        db = sqlite3.connect(f"file:{state / 'meta.sqlite'}?mode=ro", uri=True, check_same_thread=False)
        n_articles = db.execute("SELECT count(*) FROM articles").fetchone()[0]
        n_chunks = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise IndexBroken(f"metadata database in {state} is damaged ({e})", REBUILD_HINT) from None
    counts = manifest.get("counts", {})
    if (n_articles, n_chunks) != (counts.get("articles"), counts.get("chunks")):
        db.close()
        raise IndexBroken(f"index at {index_dir} is inconsistent: manifest says "
                          f"{counts.get('articles')} articles/{counts.get('chunks')} chunks, database has "
                          f"{n_articles}/{n_chunks}", REBUILD_HINT)
    reader = IndexReader(state, manifest, db)
    if load_vectors:
        try:
            check_vectors(reader)
        except RagError:
            db.close()
            raise
    return reader


def check_vectors(reader: IndexReader) -> None:
    vectors = reader.vectors
    n_chunks = reader.manifest["counts"]["chunks"]
    if vectors.ntotal != n_chunks or vectors.d != reader.manifest["embedder"]["dim"]:
        raise IndexBroken(f"index at {reader.path.parent} is inconsistent: {vectors.ntotal} vectors of "
                          f"dimension {vectors.d} for {n_chunks} chunks", REBUILD_HINT)


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(manifest, dict)
        assert manifest["format"] == FORMAT_VERSION
        assert isinstance(manifest["embedder"]["dim"], int)
        assert isinstance(manifest["counts"]["chunks"], int)
    except (OSError, ValueError, AssertionError, KeyError, TypeError):
        raise IndexBroken(f"manifest {path} is missing, damaged or from another rag version",
                          REBUILD_HINT) from None
    return manifest


def check_embedder(manifest: dict, embedder: dict) -> None:
    built = manifest["embedder"]
    keys = ("name", "fingerprint", "dim")
    if any(built.get(k) != embedder.get(k) for k in keys):
        raise IndexBroken(f"index was built with embedder {built.get('name')} ({built.get('fingerprint')}), "
                          f"but the configured one is {embedder.get('name')} ({embedder.get('fingerprint')})",
                          "use the same embedder, or `rag index --rebuild PATH...`")


class IndexWriter:
    """Builds the next state from the current one; `publish()` makes it the index atomically."""

    def __init__(self, index_dir: str | Path, lock_timeout: float = 10.0, rebuild: bool = False):
        from filelock import FileLock

        self.index_dir = Path(index_dir)
        self.rebuild = rebuild
        try:
            self.index_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RagError(f"cannot create index folder {self.index_dir}: {e.strerror}") from None
        self._lock = FileLock(str(self.index_dir / ".lock"), timeout=lock_timeout)
        self._lock_timeout = lock_timeout
        self.previous: dict | None = None  # the manifest of the state we start from

    def __enter__(self) -> IndexWriter:
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise IndexLocked(f"another `rag index` is writing {self.index_dir} (waited "
                              f"{self._lock_timeout:g} s)", "wait for it to finish, then run again") from None
        try:
            self._start()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if getattr(self, "db", None) is not None:
                self.db.close()
            if exc_type is not None and getattr(self, "tmp", None) is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            self._lock.release()

    def _start(self) -> None:
        for leftover in self.index_dir.glob("state-*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)  # abandoned by a killed writer
        current = _current_state(self.index_dir) if not self.rebuild else None
        number = max([int(p.name[6:12]) for p in self.index_dir.glob("state-[0-9]*")
                      if p.name[6:12].isdigit()] or [0]) + 1
        self.tmp = self.index_dir / f"state-{number:06d}.tmp"
        self.tmp.mkdir()
        if current is not None:
            reader = open_index(self.index_dir)  # refuses a broken index: --rebuild is the way out
            self.previous = reader.manifest
            self.vectors = reader.vectors
            reader.close()
            shutil.copyfile(current / "meta.sqlite", self.tmp / "meta.sqlite")
        else:
            self.vectors = None
        self.db = sqlite3.connect(self.tmp / "meta.sqlite")
        self.db.executescript(SCHEMA)

    # --- reading what is there -------------------------------------------------------------

    def existing(self) -> dict[str, tuple[str, str, str]]:
        """doc_id -> (content_hash, chunker settings key, root) of what the current state holds."""
        rows = self.db.execute("SELECT doc_id, content_hash, chunker, root FROM articles")
        return {d: (h, c, r) for d, h, c, r in rows}

    def article(self, doc_id: str) -> Article:
        row = self.db.execute("SELECT doc_id, text, title, date, source, url, path, content_hash "
                              "FROM articles WHERE doc_id = ?", (doc_id,)).fetchone()
        return Article(*row)

    # --- changing it ------------------------------------------------------------------------

    def remove(self, doc_ids: list[str]) -> int:
        """Drop articles with their chunks and vectors; returns the number of chunks removed."""
        ids: list[int] = []
        for doc_id in doc_ids:
            ids += [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
            self.db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
            self.db.execute("DELETE FROM articles WHERE doc_id = ?", (doc_id,))
        if ids and self.vectors is not None:
            self.vectors.remove_ids(np.asarray(ids, dtype=np.int64))
        return len(ids)

    def drop_vectors(self) -> None:
        """Start the vector index afresh (the caller re-adds every article's vectors)."""
        self.vectors = None

    def add(self, article: Article, root: str, chunker_key: str, chunks: list[Chunk],
            vectors: np.ndarray) -> None:
        """Insert one article, its chunks and their vectors (one row of `vectors` per chunk)."""
        assert len(chunks) == len(vectors)
        self.db.execute(
            "INSERT INTO articles VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (article.doc_id, root, article.path, article.title, article.date, article.source,
             article.url, article.content_hash, chunker_key, article.text, time.time()))
        ids = []
        for c in chunks:
            cur = self.db.execute(
                'INSERT INTO chunks (chunk_id, doc_id, ordinal, start, "end", n_tokens, text) '
                "VALUES (?,?,?,?,?,?,?)", (c.chunk_id, c.doc_id, c.ordinal, c.start, c.end, c.n_tokens, c.text))
            ids.append(cur.lastrowid)
        if chunks:
            if self.vectors is None:
                faiss = _faiss()
                self.vectors = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
            self.vectors.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                      np.asarray(ids, dtype=np.int64))

    def publish(self, embedder: dict, chunker: dict) -> dict:
        """Write vectors and manifest, fsync, and make this state the index. Returns the manifest."""
        self.db.commit()
        n_articles = self.db.execute("SELECT count(*) FROM articles").fetchone()[0]
        n_chunks = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        self.db.close()
        self.db = None
        if self.vectors is None:
            faiss = _faiss()
            self.vectors = faiss.IndexIDMap2(faiss.IndexFlatIP(embedder["dim"]))
        _faiss().write_index(self.vectors, str(self.tmp / "vectors.faiss"))
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        manifest = {
            "format": FORMAT_VERSION,
            "embedder": embedder,
            "chunker": chunker,
            "counts": {"articles": n_articles, "chunks": n_chunks, "vectors": int(self.vectors.ntotal)},
            "created_at": (self.previous or {}).get("created_at", now),
            "updated_at": now,
        }
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        for name in ("meta.sqlite", "vectors.faiss", "manifest.json"):
            _fsync_path(self.tmp / name)
        final = self.tmp.with_name(self.tmp.name.removesuffix(".tmp"))
        os.rename(self.tmp, final)
        _fsync_path(self.index_dir)
        pointer = self.index_dir / "CURRENT.tmp"
        with open(pointer, "w", encoding="utf-8") as f:
            f.write(final.name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(pointer, self.index_dir / "CURRENT")
        _fsync_path(self.index_dir)
        self.tmp = None
        self._prune(keep=final.name)
        manifest["state"] = final.name
        return manifest

    def _prune(self, keep: str) -> None:
        """Keep the new state and the newest older one; a reader may still be opening that one."""
        states = sorted(p for p in self.index_dir.glob("state-[0-9]*") if not p.name.endswith(".tmp"))
        for old in states[:-2]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)
