"""The Milvus store: the index in Milvus collections, reached with `pymilvus.MilvusClient(uri=...)`.

Collections for `milvus://HOST:PORT/NAME` (NAME defaults to "rag"):

    NAME_meta           key -> JSON text: "manifest" (embedder, chunker, counts, dates, the published
                        version `state`, the names of the two data collections), "sources", "writing"
                        (a write in progress), "heartbeat" (of the writer holding the lock)
    NAME_chunks_gN      one row per chunk: id (int64: hash of the chunk id), vector (FLOAT_VECTOR, IP on
                        normalised vectors), text (analysed; a BM25 function fills `sparse`), chunk_id,
                        doc_id, doc_key, title, date, day (20190220; 0 undated), source, source_key,
                        url, char_start, char_end, ordinal, n_tokens, content_hash
    NAME_articles_gN    the article text in pieces of at most 16,000 characters (VARCHAR holds 65,535
                        bytes), key "DOCKEY:000000"; piece 0 is the head row, written last, whose
                        `meta` holds the metadata, root, chunker key and content hash
    NAME_lock           exists while a writer holds the lock (rag.store_milvus_write)

A client needs nothing else: `rag ask` and `/open N` read article text from Milvus. Filters become
filter expressions over fields that rag computes (`doc_key` and `source_key` are hex digests of the
doc id and of the lower-cased source, `day` an integer), so no user text is ever put inside an
expression and nothing needs escaping.

Dense + BM25 are fused on the server (`fused`: one hybrid_search with an RRF ranker). Publishing is
not atomic as in the file store: writes go into the collections as they happen and a reader may see
a partly updated index; the `state` in the manifest changes when `rag index` publishes. A `--rebuild`
writes new collections (gN+1) and switches the manifest to them at publish, so readers keep the old
index until then.

Milvus Lite differences met (milvus-lite 3.2.2, used by the tests): BM25 search reports the score
negated (distance = -score, smaller is better), so lexical scores are read as abs(distance); its
analyzer has no stemmer (the stemmer filter we ask for is ignored) and its BM25 statistics are per
segment, so lexical rankings differ slightly from a real Milvus and from the file store's BM25;
creating a collection that exists fails there, while real Milvus accepts an identical schema (the
lock uses a schema unique to each writer, so both refuse a second writer); its gRPC server refuses
pymilvus's idle keepalive pings (GOAWAY "too_many_pings"), hence GRPC_OPTIONS; AUTOINDEX is HNSW
there as on a cluster (approximate), and until `flush` it rebuilds the index of unsealed rows on
every search (1.9 s vs 28 ms at 5k chunks), hence the flush at publish.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading

import numpy as np

from rag.errors import IndexBroken, IndexMissing, RagError
from rag.filters import Filters, Ranking
from rag.stores import MilvusTarget
from rag.types import Article

CONNECT_TIMEOUT = 5.0  # seconds to reach Milvus when opening
CALL_TIMEOUT = 60.0  # seconds one call (with pymilvus's retries) may take; env RAG_MILVUS_TIMEOUT
# pymilvus pings every 10 s even when idle; a gRPC server with default settings (Milvus Lite's) counts
# that as abuse and sends GOAWAY "too_many_pings" (logged by grpc on stderr, calls in flight fail).
# Pinging only during calls, at most once a minute, suits both it and a real Milvus.
GRPC_OPTIONS = {"grpc.keepalive_time_ms": 60_000, "grpc.keepalive_permit_without_calls": False}
TOPK_MAX = 16384  # Milvus's limit on one search's or query's result count
PIECE_CHARS = 16000  # article text per row: at most 64,000 bytes of UTF-8 in a 65,535-byte VARCHAR
FORMAT = 1
CHUNK_FIELDS = ["chunk_id", "doc_id", "title", "date", "source", "char_start", "char_end", "text"]
_WORD = re.compile(r"\w")
_HEX = re.compile(r"^[0-9a-f]{32}$")
_REBUILD_HINT = "run `rag index --rebuild PATH... --store URI` to rebuild it from your articles"


def rebuild_hint(target: MilvusTarget) -> str:
    return _REBUILD_HINT.replace("URI", target.uri)


# --- values rag computes for rows and expressions ---------------------------------------------

def doc_key(doc_id: str) -> str:
    return hashlib.sha256(doc_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def source_key(source: str | None) -> str:
    return hashlib.sha256(source.lower().encode("utf-8", "surrogatepass")).hexdigest()[:32] if source else ""


def chunk_pk(chunk_id: str) -> int:
    """The int64 primary key of a chunk: 63 bits of the hash of its chunk id (stable across runs)."""
    return int.from_bytes(hashlib.sha256(chunk_id.encode("utf-8", "surrogatepass")).digest()[:8], "big") >> 1


def day_number(date: str | None) -> int:
    return int(date.replace("-", "")) if date and re.fullmatch(r"\d{4}-\d{2}-\d{2}", date) else 0


def fit(text: str | None, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8 (VARCHAR lengths are in bytes)."""
    text = text or ""
    data = text.encode("utf-8", "surrogatepass")
    return text if len(data) <= max_bytes else data[:max_bytes].decode("utf-8", "ignore")


def key_literal(key: str) -> str:
    if not _HEX.match(key):
        raise ValueError(f"not a key: {key!r}")
    return f'"{key}"'


def keys_in(field: str, keys) -> str:
    return f"{field} in [{', '.join(key_literal(k) for k in keys)}]"


def filter_expression(filters: Filters | None) -> str:
    """The Milvus filter expression for `filters` ("" for none). Only rag-made values go in."""
    if filters is None:
        return ""
    parts = []
    if filters.since:
        parts.append(f"day >= {day_number(filters.since)}")
    if filters.until:
        parts.append(f"day > 0 and day <= {day_number(filters.until)}")
    if filters.source:
        parts.append(f"source_key == {key_literal(source_key(filters.source))}")
    if filters.docs:
        parts.append(keys_in("doc_key", sorted({doc_key(d) for d in filters.docs})))
    return " and ".join(f"({p})" for p in parts)


# --- connection ---------------------------------------------------------------------------------

_clients: dict[str, object] = {}
_clients_lock = threading.Lock()


def _quiet_pymilvus() -> None:
    """pymilvus logs every failed call with a traceback on stderr: rag reports one line instead."""
    for name in ("pymilvus", "pymilvus.decorators", "pymilvus.client", "pymilvus.milvus_client"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def _message(e: BaseException) -> str:
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    return (text.strip().splitlines() or [type(e).__name__])[0][:200]


def _unreachable(e: BaseException) -> bool:
    text = _message(e).lower()
    return getattr(e, "code", None) in (2, 14) or any(w in text for w in (
        "unavailable", "connect", "deadline", "timeout", "retry", "closed channel", "connection"))


def _not_loaded(e: BaseException) -> bool:
    text = _message(e).lower()
    return getattr(e, "code", None) == 101 or "not loaded" in text or "released" in text or "load()" in text


class Milvus:
    """One Milvus endpoint: calls with one-line errors, and a reload when a collection comes back
    unloaded (a restarted Milvus keeps the data but not the loaded state)."""

    def __init__(self, target: MilvusTarget):
        self.target = target
        self.client = _client(target)

    def error(self, e: BaseException, doing: str) -> RagError:
        if _unreachable(e):
            return RagError(f"cannot reach Milvus at {self.target.uri} while {doing} ({_message(e)})",
                            "check that Milvus is running there and RAG_MILVUS_TOKEN is right, then run again")
        return RagError(f"Milvus at {self.target.uri} failed while {doing}: {_message(e)}",
                        f"run again; `rag doctor --store {self.target.uri}` checks the index")

    def call(self, doing: str, method: str, *args, reload: tuple[str, ...] = (), **kwargs):
        """`client.method(*args, **kwargs)`; a collection found unloaded is loaded and the call retried."""
        from pymilvus.exceptions import MilvusException

        kwargs.setdefault("timeout", call_timeout())
        for attempt in (1, 2):
            try:
                return getattr(self.client, method)(*args, **kwargs)
            except MilvusException as e:
                if attempt == 1 and reload and _not_loaded(e):
                    self.load(*reload)
                    continue
                raise self.error(e, doing) from None
            except Exception as e:  # grpc errors pymilvus lets through
                if type(e).__module__.startswith(("grpc", "pymilvus")):
                    raise self.error(e, doing) from None
                raise
        raise AssertionError("unreachable")

    def load(self, *names: str) -> None:
        for name in names:
            self.call(f"loading {name}", "load_collection", name)

    def has(self, name: str) -> bool:
        return bool(self.call("listing collections", "has_collection", name))

    def query_all(self, collection: str, expr: str, fields: list[str], batch: int = 1000) -> list[dict]:
        """Every row matching `expr` (a query iterator: Milvus caps one query at 16,384 rows)."""
        iterator = self.call(f"reading {collection}", "query_iterator", collection, batch_size=batch,
                             filter=expr, output_fields=fields, reload=(collection,))
        rows: list[dict] = []
        while True:
            try:
                page = iterator.next()
            except Exception as e:
                raise self.error(e, f"reading {collection}") from None
            if not page:
                iterator.close()
                return rows
            rows.extend(dict(r) for r in page)

    def count(self, collection: str, expr: str = "") -> int:
        rows = self.call(f"counting {collection}", "query", collection, filter=expr, output_fields=["count(*)"],
                         reload=(collection,))
        return int(rows[0]["count(*)"]) if rows else 0

    def meta(self, names: dict, key: str) -> dict | None:
        rows = self.call("reading the manifest", "get", names["meta"], ids=[key], output_fields=["value"],
                         reload=(names["meta"],))
        return json.loads(rows[0]["value"]) if rows else None


def call_timeout() -> float:
    try:
        return max(1.0, float(os.environ.get("RAG_MILVUS_TIMEOUT", CALL_TIMEOUT)))
    except ValueError:
        return CALL_TIMEOUT


def _client(target: MilvusTarget):
    """One MilvusClient per URI and process (pymilvus shares the channel anyway)."""
    with _clients_lock:
        client = _clients.get(target.uri)
        if client is not None:
            return client
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise RagError("the Milvus store needs pymilvus", "pip install 'rag[milvus]'") from None
        _quiet_pymilvus()
        try:
            client = MilvusClient(uri=target.address, token=os.environ.get("RAG_MILVUS_TOKEN", ""),
                                  timeout=CONNECT_TIMEOUT, grpc_options=GRPC_OPTIONS)
        except Exception as e:
            raise RagError(f"cannot reach Milvus at {target.uri} ({_message(e)})",
                           "start Milvus there or fix --store / RAG_STORE (token: RAG_MILVUS_TOKEN)") from None
        _clients[target.uri] = client
        return client


def forget_client(target: MilvusTarget) -> None:
    """Drop the cached client (tests that restart Milvus on another port use a new one)."""
    with _clients_lock:
        _clients.pop(target.uri, None)


def collection_names(prefix: str, generation: int) -> dict:
    return {"meta": f"{prefix}_meta", "lock": f"{prefix}_lock", "chunks": f"{prefix}_chunks_g{generation}",
            "articles": f"{prefix}_articles_g{generation}"}


def read_manifest(db: Milvus) -> dict | None:
    """The published manifest, or None when nothing was published to this prefix yet."""
    names = collection_names(db.target.prefix, 0)
    if not db.has(names["meta"]):
        return None
    db.load(names["meta"])  # every connect: a restarted Milvus has its collections unloaded
    manifest = db.meta(names, "manifest")
    if manifest is None:
        return None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("collections"), dict):
        raise IndexBroken(f"the manifest in Milvus at {db.target.uri} is from another rag version or damaged",
                          rebuild_hint(db.target))
    return manifest


def open_milvus(target: MilvusTarget, embedder: dict | None = None) -> MilvusReader:
    """Connect, check the manifest (and the embedder), load the collections: a reader."""
    from rag.store import check_embedder

    db = Milvus(target)
    manifest = read_manifest(db)
    if manifest is None:
        raise IndexMissing(f"no index in Milvus at {target.uri}",
                           f"build one with `rag index PATH... --store {target.uri}`")
    if embedder is not None:
        try:
            check_embedder(manifest, embedder)
        except IndexBroken as e:
            raise IndexBroken(e.message, f"use the same embedder, or `rag index --rebuild PATH... --store "
                                         f"{target.uri}`") from None
    names = manifest["collections"]
    for kind in ("chunks", "articles"):
        if not db.has(names[kind]):
            raise IndexBroken(f"collection {names[kind]} named by the manifest is missing from Milvus at "
                              f"{target.uri}", rebuild_hint(target))
    db.load(names["chunks"], names["articles"])
    return MilvusReader(db, manifest)


def milvus_published_state(target: MilvusTarget) -> str | None:
    """The published version, in one call (`rag serve` asks before every question)."""
    try:
        manifest = Milvus(target).meta(collection_names(target.prefix, 0), "manifest")
    except RagError:
        return None
    return manifest.get("state") if isinstance(manifest, dict) else None


def read_article(db: Milvus, names: dict, doc_id: str) -> Article | None:
    """The article with its whole text, or None (absent, or being rewritten)."""
    expr = f"doc_key == {key_literal(doc_key(doc_id))}"
    rows = db.call("reading an article", "query", names["articles"], filter=expr,
                   output_fields=["part", "parts", "text", "meta", "doc_id"], limit=TOPK_MAX,
                   reload=(names["articles"],))
    rows = sorted((r for r in rows if r["doc_id"] == doc_id), key=lambda r: r["part"])
    if not rows or rows[0]["part"] != 0 or [r["part"] for r in rows] != list(range(rows[0]["parts"])):
        return None
    meta = json.loads(rows[0]["meta"])
    return Article(doc_id, "".join(r["text"] for r in rows), meta.get("title") or "", meta.get("date"),
                   meta.get("source"), meta.get("url"), meta.get("path"), meta.get("content_hash", ""),
                   author=meta.get("author"), pages=tuple(meta.get("pages") or ()))


class MilvusReader:
    """A connected Milvus store (rag.retrieve.SearchStore). Sees writes as they happen (see above)."""

    kind = "milvus"
    vector_index = "Milvus AUTOINDEX (inner product) + BM25 sparse inverted index"  # for `rag status`

    def __init__(self, db: Milvus, manifest: dict):
        self.db = db
        self.manifest = manifest
        self.names = {**collection_names(db.target.prefix, 0), **manifest["collections"]}
        self._sources: list[str] | None = None

    @property
    def state(self) -> str:
        return self.manifest["state"]

    def article(self, doc_id: str) -> Article | None:
        return read_article(self.db, self.names, doc_id)

    def sources(self) -> list[str]:
        if self._sources is None:
            self._sources = (self.db.meta(self.names, "sources") or {}).get("sources", [])
        return self._sources

    def doc_ids(self, limit: int) -> list[str]:
        rows = self.db.call("listing articles", "query", self.names["articles"], filter="part == 0",
                            output_fields=["doc_id"], limit=min(max(limit, 1), TOPK_MAX),
                            reload=(self.names["articles"],))
        return sorted(r["doc_id"] for r in rows)[:limit]

    def date_range(self) -> tuple[str | None, str | None]:
        first, last = self.manifest.get("dates") or (None, None)
        return first, last

    def chunks(self, ids: list[int]) -> dict[int, dict]:
        if not ids:
            return {}
        rows = self.db.call("reading chunks", "get", self.names["chunks"], ids=list(ids),
                            output_fields=[*CHUNK_FIELDS, "vector"], reload=(self.names["chunks"],))
        found = {}
        for r in rows:
            found[int(r["id"])] = {
                "id": int(r["id"]), "chunk_id": r["chunk_id"], "doc_id": r["doc_id"], "start": int(r["char_start"]),
                "end": int(r["char_end"]), "text": r["text"], "title": r["title"], "date": r["date"] or None,
                "source": r["source"] or None, "vector": np.asarray(r["vector"], dtype=np.float32)}
        return found

    def _request(self, qvec: np.ndarray, query: str, request: Ranking):
        from pymilvus import AnnSearchRequest

        expr = filter_expression(request.filters) or None
        limit = min(request.limit, TOPK_MAX)
        if request.kind == "dense":
            return AnnSearchRequest(data=[qvec.astype(np.float32).tolist()], anns_field="vector",
                                    param={"metric_type": "IP"}, limit=limit, expr=expr)
        if not _WORD.search(query):
            return None  # nothing for BM25 to match
        return AnnSearchRequest(data=[query], anns_field="sparse", param={"metric_type": "BM25"}, limit=limit,
                                expr=expr)

    def ranking(self, qvec: np.ndarray, query: str, request: Ranking) -> list[tuple[int, float]]:
        """One dense or BM25 ranking (a single search), best first."""
        req = self._request(qvec, query, request)
        if req is None:
            return []
        hits = self.db.call("searching", "search", self.names["chunks"], data=req.data, anns_field=req.anns_field,
                            filter=req.expr or "", limit=req.limit, search_params=req.param,
                            reload=(self.names["chunks"],))
        lexical = request.kind != "dense"
        return [(int(h["id"]), abs(float(h["distance"])) if lexical else float(h["distance"])) for h in hits[0]]

    def fused(self, qvec: np.ndarray, query: str, requests: list[Ranking], rrf_k: int) -> list[tuple[int, float]]:
        """All the requests fused by reciprocal rank on the server: one hybrid_search."""
        from pymilvus import RRFRanker

        reqs = [r for r in (self._request(qvec, query, request) for request in requests) if r is not None]
        if not reqs:
            return []
        limit = min(sum(r.limit for r in reqs), TOPK_MAX)
        hits = self.db.call("searching", "hybrid_search", self.names["chunks"], reqs, RRFRanker(rrf_k), limit=limit,
                            reload=(self.names["chunks"],))
        return sorted(((int(h["id"]), float(h["distance"])) for h in hits[0]), key=lambda x: (-x[1], x[0]))

    def verify(self, deep: bool = False) -> None:
        """Counts agree with the manifest; `deep`: also every chunk's article exists and is whole, and
        every chunk's text is its article's text at its offsets."""
        from rag.store_milvus_check import verify

        verify(self, deep)

    def close(self) -> None:
        """Nothing to release: the client is shared by every reader of this URI in the process."""
