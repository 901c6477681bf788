"""Writing the Milvus store: the single-writer lock and `MilvusWriter`
(the same protocol as rag.store.IndexWriter, driven by rag.indexer).

Crash safety without transactions. Every article is written as: delete whatever rows its doc key
has (chunks, text pieces; left by an earlier attempt), upsert its chunks, upsert its text pieces
after the first, and last the head row (piece 0) whose metadata carries the content hash. Removing
deletes the head first. So after a `kill -9` (of `rag index` or of Milvus) an article is either
whole with its head, or has no head: `existing()` lists only heads, and the next `rag index` sees a
half-written article as new or changed and writes it again. Rows of articles that will not come
back (their file is gone) are swept at the next publish: the "writing" record left behind by a
killed writer makes that writer's successor compare every chunk's and piece's doc key with the heads.

The lock: creating NAME_lock with a field named after the writer (w_<start>_<pid>_<host>_<random>)
succeeds for one writer only (Milvus refuses another schema under the same name), and dropping it
releases the lock. A killed writer cannot hold it forever: its heartbeat record (every 15 s) goes
stale after LOCK_STALE seconds, or at once when the writer ran on this machine and its process is
gone; the next writer then drops the lock and takes it. Two writers that find the same stale lock
at the same moment could both take it; that is left as a known limit (rare: a crashed writer and
two new ones within the same second).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import threading
import time

import numpy as np

from rag.errors import IndexBroken, IndexLocked, RagError
from rag.store_milvus import (
    FORMAT,
    PIECE_CHARS,
    Milvus,
    chunk_pk,
    collection_names,
    day_number,
    doc_key,
    fit,
    keys_in,
    read_article,
    read_manifest,
    rebuild_hint,
    source_key,
)
from rag.store_milvus_schema import SHORT, TEXT_BYTES, create_articles, create_chunks, create_meta, new_schema
from rag.stores import MilvusTarget
from rag.types import Article, Chunk

LOCK_STALE = 90.0  # seconds after a writer's last heartbeat that its lock counts as abandoned
HEARTBEAT = 15.0
BATCH_ARTICLES = 64  # articles written per round of calls
BATCH_ROWS = 500  # rows per upsert
KEYS_PER_EXPR = 500  # doc keys in one `in [...]` expression
_HOST_KEY = re.sub(r"[^a-z0-9]", "", socket.gethostname().lower())[:12] or "host"


# --- the lock -----------------------------------------------------------------------------------

class MilvusLock:
    """One writer per prefix: see the module docstring."""

    def __init__(self, db: Milvus, names: dict, timeout: float):
        self.db, self.names, self.timeout = db, names, timeout
        self.owner = f"w_{int(time.time())}_{os.getpid()}_{_HOST_KEY}_{secrets.token_hex(4)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        from pymilvus.exceptions import MilvusException

        schema, DataType, _ = new_schema(self.db)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
        schema.add_field(self.owner, DataType.INT64)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.db.client.create_collection(self.names["lock"], schema=schema, timeout=30)
                if self._holder() == self.owner:  # real Milvus accepts an identical schema: check the field
                    break
            except MilvusException as e:
                if not self.db.has(self.names["lock"]):
                    raise self.db.error(e, "taking the lock") from None
            holder = self._holder()
            if holder is not None and self._stale(holder):
                self.db.call("dropping an abandoned lock", "drop_collection", self.names["lock"])
                continue
            if time.monotonic() >= deadline:
                raise IndexLocked(f"another `rag index` is writing {self.db.target.uri} (waited {self.timeout:g} s)",
                                  f"wait for it to finish; a killed writer's lock expires {LOCK_STALE:g} s after "
                                  "its last heartbeat")
            time.sleep(0.2)
        self.beat()
        self._thread = threading.Thread(target=self._beat_loop, name="rag-milvus-heartbeat", daemon=True)
        self._thread.start()

    def _holder(self) -> str | None:
        try:
            info = self.db.call("reading the lock", "describe_collection", self.names["lock"])
        except RagError:
            return None
        owners = [f["name"] for f in info.get("fields", []) if f["name"].startswith("w_")]
        return owners[0] if owners else None

    def _stale(self, holder: str) -> bool:
        try:
            _, started, pid, host, _ = holder.split("_", 4)
            last = int(started)
        except ValueError:
            return True
        beat = self.db.meta(self.names, "heartbeat") or {}
        if beat.get("owner") == holder:
            last = max(last, int(beat.get("at", 0)))
        if host == _HOST_KEY and pid.isdigit() and not _alive(int(pid)):
            return True
        return time.time() - last > LOCK_STALE

    def beat(self) -> None:
        put_meta(self.db, self.names, "heartbeat", {"owner": self.owner, "at": int(time.time())})

    def _beat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                self.beat()
            except Exception:  # Milvus away: the main thread's next call reports it
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._holder() == self.owner:
            self.db.call("releasing the lock", "drop_collection", self.names["lock"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def put_meta(db: Milvus, names: dict, key: str, value: dict) -> None:
    db.call(f"writing {key}", "upsert", names["meta"], [{"key": key, "value": json.dumps(value), "v": [1.0, 0.0]}])


# --- the writer ---------------------------------------------------------------------------------

class MilvusWriter:
    """Writes into the published collections (or new ones for --rebuild); `publish()` writes the manifest."""

    def __init__(self, target: MilvusTarget, lock_timeout: float = 10.0, rebuild: bool = False):
        self.target = target
        self.rebuild = rebuild
        self.lock_timeout = lock_timeout
        self.previous: dict | None = None
        self._pending: list[tuple[Article, str, str, list[Chunk], np.ndarray]] = []
        self._lock: MilvusLock | None = None

    @property
    def location(self) -> str:
        return self.target.uri

    def __enter__(self) -> MilvusWriter:
        self.db = Milvus(self.target)
        base = collection_names(self.target.prefix, 0)
        if not self.db.has(base["meta"]):
            create_meta(self.db, base["meta"])
        self.db.load(base["meta"])
        self._lock = MilvusLock(self.db, base, self.lock_timeout)
        self._lock.acquire()
        try:
            self._start(base)
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def _start(self, base: dict) -> None:
        manifest = read_manifest(self.db)
        published = manifest["collections"] if manifest else {}
        self.previous = manifest if not self.rebuild else None
        self._published = manifest
        self._dim: int | None = None
        self._sweep = self.db.meta(base, "writing") is not None  # the last writer was killed mid-write
        self._drop_after: set[str] = set()
        for name in self._generations():
            if name not in published.values():  # left by a killed --rebuild or a killed first index
                self.db.call(f"dropping {name}", "drop_collection", name)
        if manifest is None or self.rebuild:  # new collections, named by the manifest at publish
            self.names = {**base, **collection_names(self.target.prefix, self._next_generation())}
        else:
            self.names = {**base, **published}
        if not self.db.has(self.names["articles"]):
            create_articles(self.db, self.names["articles"])
        self.db.load(self.names["articles"])
        if self.db.has(self.names["chunks"]):
            self.db.load(self.names["chunks"])
            self._dim = self._vector_dim(self.names["chunks"])
        self._changed = False
        if self._sweep or self.rebuild:
            self._touch()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._lock is not None:
                self._lock.release()
        except RagError:
            pass  # Milvus is away: the lock expires (see MilvusLock)
        finally:
            self._lock = None
        if isinstance(exc, RagError) and exc_type is not IndexLocked and "Milvus" in exc.message:
            raise RagError(f"{exc.message}; the index at {self.target.uri} may be partly updated",
                           "run the same `rag index` again to complete it") from exc

    @property
    def changed(self) -> bool:
        """Whether anything was written (or a killed writer left changes behind): then publish."""
        return self._changed

    def _touch(self) -> None:
        """Before the first change: the "writing" record, which tells the next writer to sweep if this
        one is killed before it publishes."""
        if not self._changed:
            put_meta(self.db, self.names, "writing", {"owner": self._lock.owner, "at": int(time.time())})
            self._changed = True

    def _vector_dim(self, name: str) -> int | None:
        info = self.db.call(f"describing {name}", "describe_collection", name)
        for f in info.get("fields", []):
            if f["name"] == "vector":
                return int((f.get("params") or {}).get("dim"))
        return None

    # --- reading what is there -----------------------------------------------------------------

    def existing(self) -> dict[str, tuple[str, str, str]]:
        """doc_id -> (content_hash, chunker settings key, root) of every whole article (with its head)."""
        if self.rebuild:
            return {}
        rows = self.db.query_all(self.names["articles"], "part == 0", ["doc_id", "meta"])
        out = {}
        for r in rows:
            meta = json.loads(r["meta"])
            out[r["doc_id"]] = (meta.get("content_hash", ""), meta.get("chunker", ""), meta.get("root", ""))
        return out

    def article(self, doc_id: str) -> Article:
        article = read_article(self.db, self.names, doc_id)
        if article is None:
            raise IndexBroken(f"article {doc_id} is incomplete in Milvus at {self.target.uri}",
                              rebuild_hint(self.target))
        return article

    # --- changing it ------------------------------------------------------------------------------

    def remove(self, doc_ids: list[str]) -> int:
        """Drop articles (heads first) with their chunks; returns the number of chunks removed."""
        self._flush()
        removed = 0
        keys = sorted({doc_key(d) for d in doc_ids})
        if keys:
            self._touch()
        for i in range(0, len(keys), KEYS_PER_EXPR):
            removed += self._delete_docs(keys[i:i + KEYS_PER_EXPR], count=True)
        return removed

    def _delete_docs(self, keys: list[str], count: bool = False) -> int:
        expr = keys_in("doc_key", keys)
        arts, chunks = self.names["articles"], self.names["chunks"]
        self.db.call("removing articles", "delete", arts, filter=f"part == 0 and {expr}")
        n = 0
        if self.db.has(chunks):
            n = self.db.count(chunks, expr) if count else 0
            self.db.call("removing chunks", "delete", chunks, filter=expr)
        self.db.call("removing articles", "delete", arts, filter=expr)
        return n

    def drop_vectors(self) -> None:
        """Another embedder: chunks go to a new collection (its dimension may differ); the old one is
        dropped when the manifest names the new one."""
        self._flush()
        self._touch()
        if self.db.has(self.names["chunks"]):
            self._drop_after.add(self.names["chunks"])
        self.names["chunks"] = collection_names(self.target.prefix, self._next_generation())["chunks"]
        self._dim = None

    def _generations(self) -> list[str]:
        """The data collections of this prefix that exist (NAME_chunks_gN, NAME_articles_gN)."""
        pattern = re.compile(rf"^{re.escape(self.target.prefix)}_(?:chunks|articles)_g\d+$")
        return [n for n in self.db.call("listing collections", "list_collections") if pattern.match(n)]

    def _next_generation(self) -> int:
        taken = [*self._generations(), *self.names.values()] if hasattr(self, "names") else self._generations()
        return max([int(n.rsplit("_g", 1)[1]) for n in taken if re.search(r"_g\d+$", n)] or [0]) + 1

    def add(self, article: Article, root: str, chunker_key: str, chunks: list[Chunk], vectors: np.ndarray) -> None:
        assert len(chunks) == len(vectors)
        self._touch()
        self._pending.append((article, root, chunker_key, chunks, vectors))
        if len(self._pending) >= BATCH_ARTICLES or sum(len(p[3]) for p in self._pending) >= 4 * BATCH_ROWS:
            self._flush()

    def _ensure_chunks(self, dim: int) -> None:
        if self._dim is None:
            if not self.db.has(self.names["chunks"]):
                create_chunks(self.db, self.names["chunks"], dim)
            self.db.load(self.names["chunks"])
            self._dim = self._vector_dim(self.names["chunks"])
        if self._dim != dim:
            raise IndexBroken(f"collection {self.names['chunks']} holds vectors of dimension {self._dim}, not {dim}",
                              rebuild_hint(self.target))

    def _flush(self) -> None:
        """Write the pending articles: old rows out, chunks, text pieces, heads last."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        dim = next((int(v.shape[1]) for *_, v in pending if len(v)), None)
        if dim is not None:
            self._ensure_chunks(dim)
        self._delete_docs(sorted({doc_key(a.doc_id) for a, *_ in pending}))
        chunk_rows, pieces, heads = [], [], []
        for article, root, chunker_key, chunks, vectors in pending:
            chunk_rows += _chunk_rows(article, chunks, vectors)
            rows = _article_rows(article, root, chunker_key)
            heads.append(rows[0])
            pieces += rows[1:]
        for rows, where in ((chunk_rows, "chunks"), (pieces, "articles"), (heads, "articles")):
            for i in range(0, len(rows), BATCH_ROWS):
                self.db.call(f"writing {where}", "upsert", self.names[where], rows[i:i + BATCH_ROWS])

    def publish(self, embedder: dict, chunker: dict) -> dict:
        """Write the manifest (its `state` names this version) and drop what it no longer names."""
        from rag.store_milvus_check import sweep_orphans

        self._flush()
        self._ensure_chunks(embedder["dim"])
        if self._sweep:
            sweep_orphans(self.db, self.names)
        for name in (self.names["chunks"], self.names["articles"]):
            # Seal what was written: searches then use the segments' built indexes (Milvus Lite
            # otherwise rebuilds its in-memory BM25 and vector index on every search: 1.9 s vs 28 ms
            # at 5k chunks; real Milvus searches growing segments without their index too).
            self.db.call(f"flushing {name}", "flush", name)
        heads = self.db.query_all(self.names["articles"], "part == 0", ["meta"])
        metas = [json.loads(r["meta"]) for r in heads]
        dates = sorted(m["date"] for m in metas if m.get("date"))
        n_chunks = self.db.count(self.names["chunks"])
        number = int(str((self._published or {}).get("state", "milvus-0")).rsplit("-", 1)[-1] or 0) + 1
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        manifest = {
            "format": FORMAT, "embedder": embedder, "chunker": chunker,
            "counts": {"articles": len(heads), "chunks": n_chunks, "vectors": n_chunks},
            "dates": [dates[0], dates[-1]] if dates else [None, None],
            "created_at": (self.previous or {}).get("created_at", now), "updated_at": now,
            "state": f"milvus-{number:06d}",
            "collections": {"chunks": self.names["chunks"], "articles": self.names["articles"]},
        }
        sources = sorted({m["source"] for m in metas if m.get("source")})
        while len(json.dumps({"sources": sources}).encode()) > TEXT_BYTES - 64:  # one row holds them
            sources = sources[: len(sources) * 3 // 4]
        put_meta(self.db, self.names, "sources", {"sources": sources})
        put_meta(self.db, self.names, "manifest", manifest)  # the switch: readers see this version now
        for name in {*(self._published or {}).get("collections", {}).values(), *self._drop_after} - \
                set(manifest["collections"].values()):
            if self.db.has(name):
                self.db.call(f"dropping {name}", "drop_collection", name)
        self.db.call("finishing", "delete", self.names["meta"], ids=["writing"])
        self._published = manifest
        return manifest


def _chunk_rows(article: Article, chunks: list[Chunk], vectors: np.ndarray) -> list[dict]:
    key, skey, day = doc_key(article.doc_id), source_key(article.source), day_number(article.date)
    return [{
        "id": chunk_pk(c.chunk_id), "vector": np.asarray(v, dtype=np.float32).tolist(), "text": c.text,
        "chunk_id": fit(c.chunk_id, SHORT + 64), "doc_id": fit(article.doc_id, SHORT), "doc_key": key,
        "title": fit(article.title, SHORT), "date": article.date or "", "day": day,
        "source": fit(article.source, 1024), "source_key": skey, "url": fit(article.url, SHORT),
        "content_hash": article.content_hash, "char_start": c.start, "char_end": c.end, "ordinal": c.ordinal,
        "n_tokens": c.n_tokens} for c, v in zip(chunks, vectors, strict=True)]


def _article_rows(article: Article, root: str, chunker_key: str) -> list[dict]:
    """The head row (piece 0, with the metadata) then the other pieces of the text."""
    if len(article.doc_id.encode("utf-8", "surrogatepass")) > SHORT:
        raise RagError(f"doc id {article.doc_id[:80]}... is longer than the Milvus store keeps ({SHORT} bytes)",
                       "use shorter paths or record ids")
    key = doc_key(article.doc_id)
    texts = [article.text[i:i + PIECE_CHARS] for i in range(0, len(article.text), PIECE_CHARS)] or [""]
    meta = {"title": article.title, "date": article.date, "source": article.source, "url": article.url,
            "path": article.path, "content_hash": article.content_hash, "author": article.author,
            "pages": list(article.pages), "root": root, "chunker": chunker_key, "indexed_at": time.time()}
    meta_json = json.dumps(meta, ensure_ascii=False)
    if len(meta_json.encode("utf-8", "surrogatepass")) > TEXT_BYTES:
        meta["pages"] = []
        meta["title"] = fit(article.title, SHORT)
        meta_json = json.dumps(meta, ensure_ascii=False)
    return [{"key": f"{key}:{i:06d}", "doc_key": key, "doc_id": article.doc_id, "part": i, "parts": len(texts),
             "text": t, "meta": meta_json if i == 0 else "{}", "v": [1.0, 0.0]} for i, t in enumerate(texts)]


