"""Retrieval: dense (FAISS) + lexical (BM25), reciprocal-rank fusion, near-duplicate collapse, filters.

Data shapes: a query -> dense ranks over chunk ids and BM25 ranks over the same ids -> RRF score
per chunk id -> Hits in fused order, where a chunk that repeats an already kept chunk of another
article (the same wire story in two outlets) is folded into it as `also_reported_by`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rag.errors import UsageError
from rag.store import IndexReader
from rag.types import Hit

RRF_K = 60  # the usual constant from Cormack et al.; damps the weight of the very top ranks
DUPLICATE_COSINE = 0.9  # chunk vectors this close from two articles are the same story
DUPLICATE_SHINGLES = 0.5  # or: this share of the shorter chunk's word 3-grams are in the other

EmbedQuery = Callable[[list[str]], np.ndarray]
_WORD = re.compile(r"\w+")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Filters:
    since: str | None = None  # ISO date, inclusive; undated articles are excluded when set
    until: str | None = None
    source: str | None = None  # case-insensitive match on the article's source
    docs: tuple[str, ...] = ()  # doc ids

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and not _DATE.match(value):
                raise UsageError(f"--{name} must be a date like 2019-02-20, not {value!r}")

    @property
    def active(self) -> bool:
        return bool(self.since or self.until or self.source or self.docs)

    def describe(self) -> str:
        parts = [f"since={self.since}" if self.since else "", f"until={self.until}" if self.until else "",
                 f"source={self.source}" if self.source else "", *(f"doc={d}" for d in self.docs)]
        return " ".join(p for p in parts if p) or "none"

    def allowed_ids(self, reader: IndexReader) -> np.ndarray:
        clauses, params = [], []
        if self.since:
            clauses.append("a.date >= ?")
            params.append(self.since)
        if self.until:
            clauses.append("a.date <= ?")
            params.append(self.until)
        if self.source:
            clauses.append("lower(a.source) = lower(?)")
            params.append(self.source)
        if self.docs:
            clauses.append(f"a.doc_id IN ({','.join('?' * len(self.docs))})")
            params.extend(self.docs)
        rows = reader.db.execute("SELECT c.id FROM chunks c JOIN articles a USING (doc_id) WHERE "
                                 + " AND ".join(clauses), params).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i:i + 3]) for i in range(max(0, len(words) - 2))}


class Retriever:
    """Searches one opened index. Lexical structures are built once, on first use."""

    def __init__(self, reader: IndexReader, embed_query: EmbedQuery):
        self.reader = reader
        self.embed_query = embed_query
        self._bm25 = None
        self._bm25_ids: np.ndarray | None = None

    def _lexical(self):
        if self._bm25 is None:
            import bm25s

            rows = self.reader.db.execute("SELECT id, text FROM chunks ORDER BY id").fetchall()
            self._bm25_ids = np.asarray([r[0] for r in rows], dtype=np.int64)
            self._bm25 = bm25s.BM25()
            if rows:
                tokens = bm25s.tokenize([r[1] for r in rows], stopwords="en", show_progress=False)
                self._bm25.index(tokens, show_progress=False)
        return self._bm25

    def _lexical_ranks(self, query: str, pool: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        import bm25s

        bm25 = self._lexical()
        if not len(self._bm25_ids):
            return []
        words = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
        if not words:
            return []
        scores = bm25.get_scores(words)
        if allowed is not None:
            mask = np.isin(self._bm25_ids, allowed)
            scores = np.where(mask, scores, 0.0)
        order = np.argsort(-scores, kind="stable")[:pool]
        return [(int(self._bm25_ids[i]), float(scores[i])) for i in order if scores[i] > 0]

    def _dense_ranks(self, qvec: np.ndarray, pool: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        import faiss

        index = self.reader.vectors
        if index.ntotal == 0:
            return []
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed)) if allowed is not None else None
        scores, ids = index.search(qvec.reshape(1, -1), min(pool, index.ntotal), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def search(self, query: str, k: int = 6, filters: Filters | None = None) -> list[Hit]:
        filters = filters or Filters()
        allowed = filters.allowed_ids(self.reader) if filters.active else None
        if allowed is not None and not len(allowed):
            return []
        pool = max(4 * k, 30)
        qvec = np.asarray(self.embed_query([query])[0], dtype=np.float32)
        dense = self._dense_ranks(qvec, pool, allowed)
        lexical = self._lexical_ranks(query, pool, allowed)
        fused: dict[int, float] = {}
        for ranking in (dense, lexical):
            for rank, (cid, _) in enumerate(ranking, 1):
                fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank)
        order = sorted(fused, key=lambda cid: (-fused[cid], cid))
        rows = self.reader.chunks_by_ids(order)
        dense_rank = {cid: (r, s) for r, (cid, s) in enumerate(dense, 1)}
        lexical_rank = {cid: (r, s) for r, (cid, s) in enumerate(lexical, 1)}
        vectors = {cid: self.reader.vectors.reconstruct(cid) for cid in order}
        kept: list[tuple[Hit, np.ndarray]] = []
        for cid in order:
            row = rows[cid]
            twin = _duplicate_of(row, vectors[cid], kept)
            if twin is not None:
                if row["doc_id"] not in twin.also_reported_by:
                    twin.also_reported_by.append(row["doc_id"])
                continue
            if len(kept) == k:
                continue  # still scanning, to record duplicates of the kept hits
            kept.append((Hit(
                rank=len(kept) + 1, chunk_id=row["chunk_id"], doc_id=row["doc_id"], start=row["start"],
                end=row["end"], text=row["text"], title=row["title"], date=row["date"], source=row["source"],
                score=round(fused[cid], 6), dense_score=float(np.dot(qvec, vectors[cid])),
                dense_rank=dense_rank.get(cid, (None,))[0], lexical_score=lexical_rank.get(cid, (0, None))[1],
                lexical_rank=lexical_rank.get(cid, (None,))[0]), vectors[cid]))
        return [hit for hit, _ in kept]


def _duplicate_of(row: dict, vector: np.ndarray, kept: list[tuple[Hit, np.ndarray]]) -> Hit | None:
    """The kept hit from another article that this chunk repeats, if any."""
    shingles = None
    for hit, other_vector in kept:
        if hit.doc_id == row["doc_id"]:
            continue
        if float(np.dot(vector, other_vector)) >= DUPLICATE_COSINE:
            return hit
        shingles = shingles if shingles is not None else _shingles(row["text"])
        other = _shingles(hit.text)
        if shingles and other and len(shingles & other) / min(len(shingles), len(other)) >= DUPLICATE_SHINGLES:
            return hit
    return None
