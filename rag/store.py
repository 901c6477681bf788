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

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag import vector_index
from rag.errors import IndexBroken, IndexLocked, IndexMissing, RagError
from rag.filters import Filters, Ranking
from rag.lexical import LEXICAL_DIR, Lexical, save_lexical, top_indices
from rag.llm import default_threads
from rag.types import Article, Chunk

FORMAT_VERSION = 1
REBUILD_HINT = "run `rag index --rebuild PATH...` to rebuild it from your articles"

SCHEMA = """
CREATE TABLE IF NOT EXISTS articles (
    doc_id TEXT PRIMARY KEY, root TEXT, path TEXT, title TEXT, date TEXT, source TEXT, url TEXT,
    content_hash TEXT NOT NULL, chunker TEXT NOT NULL, text TEXT NOT NULL, indexed_at REAL NOT NULL,
    author TEXT, pages TEXT);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id TEXT UNIQUE NOT NULL,
    doc_id TEXT NOT NULL REFERENCES articles(doc_id), ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, n_tokens INTEGER NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
"""


# Columns added after the first release: an older index gets them on its next write, and
# readers of an older index see them as NULL.
ADDED_COLUMNS = {"author": "TEXT", "pages": "TEXT"}
_ARTICLE_FIELDS = "doc_id, text, title, date, source, url, path, content_hash"


def _article_row_query(db: sqlite3.Connection) -> str:
    have = {r[1] for r in db.execute("PRAGMA table_info(articles)")}
    extra = ", ".join(c if c in have else f"NULL AS {c}" for c in ADDED_COLUMNS)
    return f"SELECT {_ARTICLE_FIELDS}, {extra} FROM articles WHERE doc_id = ?"


def _article_from_row(row) -> Article:
    *fields, author, pages = row
    return Article(*fields, author=author, pages=tuple(json.loads(pages)) if pages else ())


def _add_missing_columns(db: sqlite3.Connection) -> None:
    have = {r[1] for r in db.execute("PRAGMA table_info(articles)")}
    for name, kind in ADDED_COLUMNS.items():
        if name not in have:
            db.execute(f"ALTER TABLE articles ADD COLUMN {name} {kind}")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_digest(path: Path) -> dict:
    """Size and sha256 of a state file, as the manifest records them."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


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
    _lexical: Lexical | None = None
    _sources: list[str] | None = None
    _allowed_cache: dict = field(default_factory=dict)

    @property
    def vectors(self):
        if self._vectors is None:
            self._vectors = _read_faiss(self.path / "vectors.faiss")
        return self._vectors

    def article(self, doc_id: str) -> Article | None:
        row = self.db.execute(_article_row_query(self.db), (doc_id,)).fetchone()
        return _article_from_row(row) if row else None

    kind = "files"  # `rag status` shows which store holds the index

    def verify(self, deep: bool = False) -> None:
        """Raise IndexBroken unless the files agree with the manifest; `deep` reads every byte."""
        if deep:
            check_vectors(self)
            check_checksums(self)
            verdict = self.db.execute("PRAGMA integrity_check").fetchone()[0]
            if verdict != "ok":
                raise IndexBroken(f"metadata database fails its integrity check: {verdict}", REBUILD_HINT)
            return
        dim, count = faiss_header(self.path / "vectors.faiss")
        if (dim, count) != (self.manifest["embedder"]["dim"], self.manifest["counts"]["chunks"]):
            raise IndexBroken(f"{count} vectors of dimension {dim} for {self.manifest['counts']['chunks']} "
                              "chunks", REBUILD_HINT)

    @property
    def state(self) -> str:
        """The published state this reader sees; another name means the index has changed."""
        return self.path.name

    def sources(self) -> list[str]:
        """Every publisher named by an indexed article, sorted."""
        if self._sources is None:
            rows = self.db.execute("SELECT DISTINCT source FROM articles WHERE source IS NOT NULL")
            self._sources = sorted(r[0] for r in rows)
        return self._sources

    def doc_ids(self, limit: int) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT doc_id FROM articles ORDER BY doc_id LIMIT ?", (limit,))]

    def date_range(self) -> tuple[str | None, str | None]:
        """The first and last publication dates of the dated articles."""
        return self.db.execute("SELECT min(date), max(date) FROM articles").fetchone()

    def ranking(self, qvec: np.ndarray, query: str, request: Ranking) -> list[tuple[int, float]]:
        """Chunk ids with their scores, best first: one dense (FAISS) or lexical (BM25) list."""
        allowed = self._allowed(request.filters) if request.filters is not None else None
        if allowed is not None and not len(allowed):
            return []
        if request.kind == "dense":
            return self._dense(qvec, request.limit, allowed)
        return self._lexical_ranking(query, request.limit, allowed)

    def chunks(self, ids: list[int]) -> dict[int, dict]:
        """Chunk ids -> chunk rows joined with their article's metadata, and the chunk's vector."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f'SELECT c.id, c.chunk_id, c.doc_id, c.start, c."end", c.text, a.title, a.date, a.source '
            f"FROM chunks c JOIN articles a USING (doc_id) WHERE c.id IN ({marks})", ids).fetchall()
        keys = ("id", "chunk_id", "doc_id", "start", "end", "text", "title", "date", "source")
        found = {r[0]: dict(zip(keys, r, strict=True)) for r in rows}
        for cid, row in found.items():
            row["vector"] = self.vectors.reconstruct(cid)
        return found

    def _allowed(self, filters: Filters) -> np.ndarray:
        """The chunk ids of the articles that pass `filters` (cached: a question asks for a few)."""
        if filters in self._allowed_cache:
            return self._allowed_cache[filters]
        clauses, params = [], []
        if filters.since:
            clauses.append("a.date >= ?")
            params.append(filters.since)
        if filters.until:
            clauses.append("a.date <= ?")
            params.append(filters.until)
        if filters.source:
            clauses.append("lower(a.source) = lower(?)")
            params.append(filters.source)
        if filters.docs:
            clauses.append(f"a.doc_id IN ({','.join('?' * len(filters.docs))})")
            params.extend(filters.docs)
        rows = self.db.execute("SELECT c.id FROM chunks c JOIN articles a USING (doc_id) WHERE "
                               + (" AND ".join(clauses) or "1"), params).fetchall()
        if len(self._allowed_cache) > 64:
            self._allowed_cache.clear()
        allowed = self._allowed_cache[filters] = np.asarray([r[0] for r in rows], dtype=np.int64)
        return allowed

    def _dense(self, qvec: np.ndarray, pool: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        faiss = _faiss()
        index = self.vectors
        if index.ntotal == 0:
            return []
        # One query scans the vectors once; OpenMP threads only add barrier waits (at 10k chunks:
        # 13 ms with 2 threads beside a busy process vs 2.5 ms with 1).
        faiss.omp_set_num_threads(default_threads())
        # Exact index: the same search as always; IVF: nprobe from the file, widened for filters.
        scores, ids = vector_index.search(index, qvec, pool, allowed)
        return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]

    def _lexical_ranking(self, query: str, pool: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        if self._lexical is None:
            self._lexical = Lexical.load(self.path / LEXICAL_DIR, self.manifest["counts"]["chunks"]) \
                or Lexical.build(self.db)
        lex = self._lexical
        scores = lex.scores(query)
        if scores is None:
            return []
        if allowed is not None:
            scores = np.where(np.isin(lex.ids, allowed), scores, 0.0)
        return [(int(lex.ids[i]), float(scores[i])) for i in top_indices(scores, pool) if scores[i] > 0]

    def close(self) -> None:
        self.db.close()


# File tags of the indexes rag writes, with the fewest bytes a vector takes in each: the exact
# IndexIDMap2(IndexFlatIP) (float32 vector + int64 id) and IVF-SQ8 (8-bit codes + int64 id).
_FAISS_TAGS = {b"IxM2": 4, b"IxMp": 4, b"IwSq": 1}


def faiss_header(path: Path) -> tuple[int, int]:
    """(dimension, vector count) from a FAISS file header, checking the file is long enough.

    Every FAISS index header starts with a 4-byte tag, then d (int32) and ntotal (int64).
    """
    try:
        with path.open("rb") as f:
            head = f.read(16)
        size = path.stat().st_size
    except OSError as e:
        raise IndexBroken(f"cannot read vector file {path}: {e.strerror}", REBUILD_HINT) from None
    if len(head) < 16 or head[:4] not in _FAISS_TAGS:
        raise IndexBroken(f"vector file {path} is not a rag FAISS index", REBUILD_HINT)
    dim, count = struct.unpack("<iq", head[4:16])
    if dim <= 0 or count < 0 or size < count * (dim * _FAISS_TAGS[head[:4]] + 8):
        raise IndexBroken(f"vector file {path} is truncated ({size} bytes for {count} vectors)", REBUILD_HINT)
    return dim, count


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or ["unreadable"])[0][:120]


def _read_faiss(path: Path):
    try:
        return _faiss().read_index(str(path))
    except RuntimeError as e:
        raise IndexBroken(f"vector file {path} is damaged ({_first_line(e)})", REBUILD_HINT) from None


def _current_state(index_dir: Path) -> Path | None:
    current = index_dir / "CURRENT"
    if not current.is_file():
        return None
    name = current.read_text(encoding="utf-8", errors="replace").strip()
    if not name.startswith("state-") or "/" in name or name.endswith(".tmp"):
        raise IndexBroken(f"{current} names no valid state ({name[:40]!r})", REBUILD_HINT)
    return index_dir / name


def _refuse_pickles(index_dir: Path, state: Path) -> None:
    """Refuse an index folder or published state holding a pickle: someone put it there."""
    for p in [*index_dir.glob("*"), *(state.rglob("*") if state.is_dir() else [])]:
        if p.suffix.lower() in (".pkl", ".pickle", ".joblib"):
            hint = f"delete it, or {REBUILD_HINT}" if p.is_relative_to(state) else "delete it"
            raise IndexBroken(f"unexpected pickle file {p} in the index; rag never writes pickles and "
                              "will not load one", hint)


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
    _refuse_pickles(index_dir, state)
    if not state.is_dir():
        raise IndexBroken(f"the published state {state} is missing", REBUILD_HINT)
    manifest = _read_manifest(state / "manifest.json")
    if embedder is not None:
        check_embedder(manifest, embedder)
    _check_sizes(state, manifest)
    try:
        db = sqlite3.connect(f"file:{state / 'meta.sqlite'}?mode=ro", uri=True, check_same_thread=False)
        n_articles = db.execute("SELECT count(*) FROM articles").fetchone()[0]
        n_chunks = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
    except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
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


def _check_sizes(state: Path, manifest: dict) -> None:
    """Each state file has the size the manifest recorded (cheap: catches truncation and swaps)."""
    for name, info in manifest.get("files", {}).items():
        try:
            size = (state / name).stat().st_size
        except OSError:
            raise IndexBroken(f"{name} is missing from {state}", REBUILD_HINT) from None
        if size != info["bytes"]:
            raise IndexBroken(f"{state / name} is {size} bytes but was written with {info['bytes']}: it was "
                              "truncated or changed", REBUILD_HINT)


def check_checksums(reader: IndexReader) -> None:
    """Each state file still has the sha256 it was published with (reads every byte: `rag doctor`)."""
    for name, info in reader.manifest.get("files", {}).items():
        if _file_digest(reader.path / name)["sha256"] != info["sha256"]:
            raise IndexBroken(f"{reader.path / name} has changed since it was written (checksum mismatch)",
                              REBUILD_HINT)


def check_vectors(reader: IndexReader) -> None:
    vectors = reader.vectors
    n_chunks = reader.manifest["counts"]["chunks"]
    if vectors.ntotal != n_chunks or vectors.d != reader.manifest["embedder"]["dim"]:
        raise IndexBroken(f"index at {reader.path.parent} is inconsistent: {vectors.ntotal} vectors of "
                          f"dimension {vectors.d} for {n_chunks} chunks", REBUILD_HINT)
    recorded = reader.manifest.get("vector_index", {}).get("type", vector_index.FLAT)  # older: exact
    if vector_index.kind(vectors) != recorded:
        raise IndexBroken(f"index at {reader.path.parent} is inconsistent: the manifest says a {recorded} "
                          f"vector index, the file holds {vector_index.kind(vectors)}", REBUILD_HINT)


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(manifest, dict)
        assert manifest["format"] == FORMAT_VERSION
        assert isinstance(manifest["embedder"]["dim"], int)
        assert isinstance(manifest["embedder"]["name"], str)
        assert isinstance(manifest["chunker"], dict)
        assert all(isinstance(manifest["counts"][k], int) for k in ("articles", "chunks", "vectors"))
        files = manifest.get("files", {})
        assert isinstance(files, dict) and all(
            name in ("meta.sqlite", "vectors.faiss") and isinstance(info["bytes"], int)
            and isinstance(info["sha256"], str) for name, info in files.items())
    except (OSError, ValueError, AssertionError, KeyError, TypeError):
        raise IndexBroken(f"manifest {path} is missing, damaged or from another rag version",
                          REBUILD_HINT) from None
    return manifest


def same_embedder(built: dict, embedder: dict) -> bool:
    """Whether vectors made by `embedder` may sit beside (or be searched against) the `built` ones:
    the same model and, where the caller says, the same precision (older manifests: fp32)."""
    if any(built.get(k) != embedder.get(k) for k in ("name", "fingerprint", "dim")):
        return False
    return "precision" not in embedder or built.get("precision", "fp32") == embedder["precision"]


def check_embedder(manifest: dict, embedder: dict) -> None:
    built = manifest["embedder"]
    model_only = {k: v for k, v in embedder.items() if k != "precision"}
    if same_embedder(built, model_only) and not same_embedder(built, embedder):
        raise IndexBroken(f"index was built at {built.get('precision', 'fp32')} precision, but queries would be "
                          f"embedded at {embedder['precision']} (the matching ONNX export is missing?)",
                          "run `rag index PATH...` again to restore the export, or `rag index --rebuild PATH...`")
    if not same_embedder(built, embedder):
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
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)  # removes the .tmp folder; may raise a RagError
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if getattr(self, "db", None) is not None:
                self.db.close()
                self.db = None
            if getattr(self, "tmp", None) is not None:  # failed, or left without publish(): discarded
                shutil.rmtree(self.tmp, ignore_errors=True)
                renamed = self.tmp.with_name(self.tmp.name.removesuffix(".tmp"))  # failed before CURRENT named it
                shutil.rmtree(renamed, ignore_errors=True)
        finally:
            self._lock.release()
        error = _writer_error(exc, self.index_dir) if exc is not None else None
        if error is not None:
            raise error from exc

    def _start(self) -> None:
        for leftover in self.index_dir.glob("state-*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)  # abandoned by a killed writer
        try:
            published = _current_state(self.index_dir)
        except IndexBroken:
            published = None
        for orphan in self.index_dir.glob("state-[0-9]*"):  # renamed, but killed before CURRENT named it
            if published is not None and orphan.name > published.name and not orphan.name.endswith(".tmp"):
                shutil.rmtree(orphan, ignore_errors=True)
        current = _current_state(self.index_dir) if not self.rebuild else None
        self._published = current
        self.tmp = None
        self.vectors = None
        if current is not None:
            # Read what is published in place; the copy is made by the first change (`_materialize`),
            # so a run that changes nothing (a re-index of unchanged files) copies and writes nothing.
            reader = open_index(self.index_dir, load_vectors=False)  # refuses a broken index
            try:
                reader.verify()  # the vector file's header, without loading it
            except RagError:
                reader.close()
                raise
            self.previous = reader.manifest
            self.db = reader.db
        else:
            self._materialize()

    def _materialize(self) -> None:
        """Start the next state: a copy of the published one, with its vectors loaded, to change."""
        if self.tmp is not None:
            return
        number = max([int(p.name[6:12]) for p in self.index_dir.glob("state-[0-9]*")
                      if p.name[6:12].isdigit()] or [0]) + 1
        self.tmp = self.index_dir / f"state-{number:06d}.tmp"
        self.tmp.mkdir()
        if self._published is not None:
            self.db.close()
            self.db = None
            reader = open_index(self.index_dir)  # refuses damaged vectors: --rebuild is the way out
            self.vectors = reader.vectors
            reader.close()
            shutil.copyfile(self._published / "meta.sqlite", self.tmp / "meta.sqlite")
        self.db = sqlite3.connect(self.tmp / "meta.sqlite")
        self.db.executescript(SCHEMA)
        _add_missing_columns(self.db)

    @property
    def changed(self) -> bool:
        """Whether anything was added, removed or replaced since the writer opened."""
        return self.tmp is not None

    # --- reading what is there -------------------------------------------------------------

    @property
    def location(self) -> str:
        return str(self.index_dir)

    def existing(self) -> dict[str, tuple[str, str, str]]:
        """doc_id -> (content_hash, chunker settings key, root) of what the current state holds."""
        rows = self.db.execute("SELECT doc_id, content_hash, chunker, root FROM articles")
        return {d: (h, c, r) for d, h, c, r in rows}

    def article(self, doc_id: str) -> Article:
        return _article_from_row(self.db.execute(_article_row_query(self.db), (doc_id,)).fetchone())

    # --- changing it ------------------------------------------------------------------------

    def remove(self, doc_ids: list[str]) -> int:
        """Drop articles with their chunks and vectors; returns the number of chunks removed."""
        if not doc_ids:
            return 0
        self._materialize()
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
        self._materialize()
        self.vectors = None

    def add(self, article: Article, root: str, chunker_key: str, chunks: list[Chunk],
            vectors: np.ndarray) -> None:
        """Insert one article, its chunks and their vectors (one row of `vectors` per chunk)."""
        assert len(chunks) == len(vectors)
        self._materialize()
        self.db.execute(
            "INSERT INTO articles (doc_id, root, path, title, date, source, url, content_hash, chunker, text, "
            "indexed_at, author, pages) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (article.doc_id, root, article.path, article.title, article.date, article.source,
             article.url, article.content_hash, chunker_key, article.text, time.time(), article.author,
             json.dumps(list(article.pages)) if article.pages else None))
        ids = []
        for c in chunks:
            cur = self.db.execute(
                'INSERT INTO chunks (chunk_id, doc_id, ordinal, start, "end", n_tokens, text) '
                "VALUES (?,?,?,?,?,?,?)", (c.chunk_id, c.doc_id, c.ordinal, c.start, c.end, c.n_tokens, c.text))
            ids.append(cur.lastrowid)
        if chunks:
            if self.vectors is None:
                self.vectors = vector_index.new_exact(vectors.shape[1])
            self.vectors.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                      np.asarray(ids, dtype=np.int64))
            # Past the threshold: IVF-SQ8 (trained here, so a big build never holds 1.5 GB of floats).
            self.vectors = vector_index.maintain(self.vectors)

    def publish(self, embedder: dict, chunker: dict) -> dict:
        """Write vectors and manifest, fsync, and make this state the index. Returns the manifest."""
        self._materialize()
        self.db.commit()
        # Chunk ids never repeat within one database; --rebuild starts a new one, so reuses nothing.
        previous = self._published / LEXICAL_DIR if self._published is not None else None
        save_lexical(self.db, self.tmp / LEXICAL_DIR, previous)
        n_articles = self.db.execute("SELECT count(*) FROM articles").fetchone()[0]
        n_chunks = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        self.db.close()
        self.db = None
        if self.vectors is None:
            self.vectors = vector_index.new_exact(embedder["dim"])
        self.vectors = vector_index.maintain(self.vectors)  # after removals: maybe back to exact
        try:
            _faiss().write_index(self.vectors, str(self.tmp / "vectors.faiss"))
        except RuntimeError as e:  # faiss reports a failed fwrite (disk full) as RuntimeError
            raise OSError(errno.EIO, f"cannot write vectors ({_first_line(e)})",
                          str(self.tmp / "vectors.faiss")) from None
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        manifest = {
            "format": FORMAT_VERSION,
            "embedder": embedder,
            "chunker": chunker,
            "counts": {"articles": n_articles, "chunks": n_chunks, "vectors": int(self.vectors.ntotal)},
            "vector_index": vector_index.describe(self.vectors),
            "created_at": (self.previous or {}).get("created_at", now),
            "updated_at": now,
            "files": {name: _file_digest(self.tmp / name) for name in ("meta.sqlite", "vectors.faiss")},
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
        self.tmp = None  # published: from here on a failure must not remove it
        _fsync_path(self.index_dir)
        self._prune(keep=final.name)
        manifest["state"] = final.name
        return manifest

    def _prune(self, keep: str) -> None:
        """Keep the new state and the newest older one; a reader may still be opening that one."""
        states = sorted(p for p in self.index_dir.glob("state-[0-9]*") if not p.name.endswith(".tmp"))
        for old in states[:-2]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)


def _writer_error(exc: BaseException, index_dir: Path) -> RagError | None:
    """The RagError a failed write becomes (None: leave the exception as it is).

    Disk full, a write error, or a damaged database found while copying it: the new state was
    discarded and CURRENT still names the previous one, so the message says the index is unchanged.
    """
    unchanged = f"the index at {index_dir} is unchanged"
    space = "free some disk space, then run again"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        hint = space if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else \
            "check the disk (free space, permissions), then run again"
        return RagError(f"writing the new index failed: {exc.strerror or exc}{where}; {unchanged}", hint)
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
        if ((getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF) in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
            return RagError(f"writing the new index failed: {exc}; {unchanged}", space)
        return IndexBroken(f"the metadata database of {index_dir} is damaged ({exc})", REBUILD_HINT)
    if isinstance(exc, UnicodeDecodeError):
        return IndexBroken(f"the metadata database of {index_dir} is damaged ({exc.reason})", REBUILD_HINT)
    return None
