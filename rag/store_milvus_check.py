"""Consistency of the Milvus store: `rag status`/`rag doctor` checks, and the sweep of rows left by a
writer that was killed (chunks and text pieces whose article has no head row)."""

from __future__ import annotations

from collections import Counter

from rag.errors import IndexBroken
from rag.store_milvus import Milvus, keys_in, rebuild_hint

_KEYS_PER_EXPR = 500


def verify(reader, deep: bool = False) -> None:
    """Raise IndexBroken unless Milvus holds what the manifest says.

    Quick: the chunk and article counts. Deep (`rag doctor`): also the vector dimension, that every
    chunk's article exists with all its text pieces, and that each chunk's text is its article's text
    at its offsets (reads every row)."""
    db: Milvus = reader.db
    names, manifest, uri = reader.names, reader.manifest, db.target.uri
    hint = (f"a `rag index` may be writing now; if one was killed, run it again (or {rebuild_hint(db.target)})")
    counts = manifest["counts"]
    n_chunks, n_articles = db.count(names["chunks"]), db.count(names["articles"], "part == 0")
    if (n_articles, n_chunks) != (counts["articles"], counts["chunks"]):
        raise IndexBroken(f"Milvus at {uri} is inconsistent: the manifest says {counts['articles']} articles/"
                          f"{counts['chunks']} chunks, the collections hold {n_articles}/{n_chunks}", hint)
    if not deep:
        return
    info = db.call("describing chunks", "describe_collection", names["chunks"])
    dim = next((int((f.get("params") or {}).get("dim", 0)) for f in info.get("fields", []) if f["name"] == "vector"), 0)
    if dim != manifest["embedder"]["dim"]:
        raise IndexBroken(f"collection {names['chunks']} holds vectors of dimension {dim}, the manifest says "
                          f"{manifest['embedder']['dim']}", rebuild_hint(db.target))
    pieces = db.query_all(names["articles"], "", ["doc_key", "doc_id", "part", "parts"])
    heads = {p["doc_key"]: p for p in pieces if p["part"] == 0}
    have = Counter(p["doc_key"] for p in pieces)
    broken = [h["doc_id"] for k, h in heads.items() if have[k] != h["parts"]]
    if broken:
        raise IndexBroken(f"{len(broken)} articles in Milvus at {uri} are missing text pieces (e.g. {broken[0]})", hint)
    chunks = db.query_all(names["chunks"], "", ["doc_key", "doc_id", "char_start", "char_end", "text"])
    orphans = {c["doc_id"] for c in chunks if c["doc_key"] not in heads}
    if orphans:
        raise IndexBroken(f"{len(orphans)} articles have chunks in Milvus at {uri} but no article row "
                          f"(e.g. {sorted(orphans)[0]})", hint)
    by_doc: dict[str, list[dict]] = {}
    for c in chunks:
        by_doc.setdefault(c["doc_id"], []).append(c)
    for doc_id, rows in by_doc.items():
        article = reader.article(doc_id)
        bad = [c for c in rows if article is None or article.text[c["char_start"]:c["char_end"]] != c["text"]]
        if bad:
            raise IndexBroken(f"chunk offsets of {doc_id} do not match its text in Milvus at {uri}",
                              rebuild_hint(db.target))


def sweep_orphans(db: Milvus, names: dict) -> int:
    """Delete chunks and text pieces of doc keys that have no head row; returns the rows removed."""
    heads = {r["doc_key"] for r in db.query_all(names["articles"], "part == 0", ["doc_key"])}
    removed = 0
    for collection in (names["chunks"], names["articles"]):
        if not db.has(collection):
            continue
        stray = sorted({r["doc_key"] for r in db.query_all(collection, "", ["doc_key"])} - heads)
        for i in range(0, len(stray), _KEYS_PER_EXPR):
            expr = keys_in("doc_key", stray[i:i + _KEYS_PER_EXPR])
            removed += db.count(collection, expr)
            db.call("removing leftover rows", "delete", collection, filter=expr)
    return removed
