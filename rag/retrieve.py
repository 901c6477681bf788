"""Retrieval: dense (FAISS) + lexical (BM25), reciprocal-rank fusion, near-duplicate collapse, filters.

Data shapes: a query -> dense ranks over chunk ids and BM25 ranks over the same ids -> RRF score
per chunk id -> Hits in fused order, where a chunk that repeats an already kept chunk of another
article (the same wire story in two outlets) is folded into it as `also_reported_by`.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np

from rag.errors import UsageError
from rag.llm import default_threads
from rag.store import IndexReader
from rag.types import Hit
from rag.words import names_publisher, recency_days

RRF_K = 60  # the usual constant from Cormack et al.; damps the weight of the very top ranks
DUPLICATE_COSINE = 0.9  # chunk vectors this close from two articles are the same story
DUPLICATE_SHINGLES = 0.5  # or: this share of the shorter chunk's word 3-grams are in the other

LEXICAL_DIR = "bm25"  # in a state folder: bm25s's .npy arrays (no pickle) and JSON, plus ids.npy

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


def recent_window(query: str, as_of: str | None) -> Filters | None:
    """The dates that "this week", "recently" or "last year" in the query mean when asked on `as_of`."""
    days = recency_days(query)
    if days is None or not as_of or not _DATE.match(as_of):
        return None
    try:
        asked = date.fromisoformat(as_of)
    except ValueError:  # 2023-02-30
        return None
    return Filters(since=(asked - timedelta(days=days)).isoformat(), until=asked.isoformat())


@lru_cache(maxsize=1024)  # a kept hit is compared with every later candidate: compute its shingles once
def _shingles(text: str) -> frozenset[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return frozenset(zip(words, words[1:], words[2:], strict=False))


class Retriever:
    """Searches one opened index. Lexical structures are built once, on first use."""

    def __init__(self, reader: IndexReader, embed_query: EmbedQuery):
        self.reader = reader
        self.embed_query = embed_query
        self._lex: Lexical | None = None
        self._publishers: list[str] | None = None

    def named_publishers(self, query: str) -> list[str]:
        """The indexed articles' publishers that the query names ("according to Reuters")."""
        if self._publishers is None:
            rows = self.reader.db.execute("SELECT DISTINCT source FROM articles WHERE source IS NOT NULL")
            self._publishers = sorted(r[0] for r in rows)
        return [p for p in self._publishers if names_publisher(query, p)]

    def _lexical(self) -> Lexical:
        if self._lex is None:
            folder = self.reader.path / LEXICAL_DIR
            self._lex = Lexical.load(folder, self.reader.manifest["counts"]["chunks"]) or Lexical.build(self.reader.db)
        return self._lex

    def _lexical_ranks(self, query: str, pool: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        lex = self._lexical()
        scores = lex.scores(query)
        if scores is None:
            return []
        if allowed is not None:
            scores = np.where(np.isin(lex.ids, allowed), scores, 0.0)
        return [(int(lex.ids[i]), float(scores[i])) for i in _top(scores, pool) if scores[i] > 0]

    def _dense_ranks(self, qvec: np.ndarray, pool: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        import faiss

        index = self.reader.vectors
        if index.ntotal == 0:
            return []
        # One query scans the vectors once; OpenMP threads only add barrier waits (at 10k chunks:
        # 13 ms with 2 threads beside a busy process vs 2.5 ms with 1).
        faiss.omp_set_num_threads(default_threads())
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed)) if allowed is not None else None
        scores, ids = index.search(qvec.reshape(1, -1), min(pool, index.ntotal), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def search(self, query: str, k: int = 6, filters: Filters | None = None, as_of: str | None = None) -> list[Hit]:
        """The top k chunks for the query. `as_of` is the day the question is asked (ISO date):
        "this week" or "recently" in the query then also ranks the articles of those days apart."""
        filters = filters or Filters()
        allowed = filters.allowed_ids(self.reader) if filters.active else None
        if allowed is not None and not len(allowed):
            return []
        pool = max(4 * k, 30)
        qvec = np.asarray(self.embed_query([query])[0], dtype=np.float32)
        dense = self._dense_ranks(qvec, pool, allowed)
        lexical = self._lexical_ranks(query, pool, allowed)
        rankings = [dense, lexical]
        # "According to X": X's own articles are ranked apart too, so they reach the top even
        # when other outlets' copies of the story use the question's words more.
        preferred = [Filters(source=publisher) for publisher in self.named_publishers(query)]
        window = recent_window(query, as_of)
        if window is not None:  # "this week": the articles of those days, ranked apart in the same way
            preferred.append(window)
        for prefer in preferred:
            own = prefer.allowed_ids(self.reader)
            own = own if allowed is None else np.intersect1d(own, allowed)
            if len(own):
                rankings += [self._dense_ranks(qvec, k, own), self._lexical_ranks(query, k, own)]
        fused: dict[int, float] = {}
        for ranking in rankings:
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


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n highest scores, as np.argsort(-scores, kind="stable")[:n] without sorting them all."""
    if len(scores) <= n:
        return np.argsort(-scores, kind="stable")
    threshold = np.partition(scores, len(scores) - n)[len(scores) - n]
    candidates = np.flatnonzero(scores >= threshold)
    return candidates[np.argsort(-scores[candidates], kind="stable")][:n]


# --- the lexical index: BM25 built by bm25s, persisted in each state by `rag index` ----------

_QUERY_FILE = "query.json"  # how bm25s cut the texts: the token pattern and the stopwords


@dataclass
class Lexical:
    """BM25 (bm25s's "lucene" variant) scored with numpy from its precomputed sparse matrix.

    bm25s builds the matrix (a CSC array per term: which chunks, what score); querying it needs
    no bm25s, so a cold `rag ask` skips importing bm25s and scipy (about 0.2 s here) and
    memory-maps the saved arrays instead of rebuilding them (about 20 s at 100k chunks).
    Query words are cut exactly as bm25s.tokenize does: lowercase, token pattern, stopwords.
    """

    ids: np.ndarray  # chunk id of each matrix row
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    vocab: dict[str, int]
    pattern: re.Pattern
    stopwords: frozenset[str]

    def scores(self, query: str) -> np.ndarray | None:
        """One BM25 score per chunk (in `ids` order), or None when no query word is indexed."""
        words = [w for w in self.pattern.findall(query.lower()) if w not in self.stopwords]
        terms = [self.vocab[w] for w in words if w in self.vocab]
        if not terms or not len(self.ids):
            return None
        scores = np.zeros(len(self.ids), dtype=np.float32)
        for t in terms:  # a repeated word counts again, as in bm25s
            start, end = int(self.indptr[t]), int(self.indptr[t + 1])
            np.add.at(scores, self.indices[start:end], self.data[start:end])
        return scores

    @classmethod
    def build(cls, db: sqlite3.Connection) -> Lexical:
        return cls._from_bm25(*_bm25_of(db))

    @classmethod
    def _from_bm25(cls, bm25, ids: np.ndarray) -> Lexical:
        from bm25s.stopwords import STOPWORDS_EN

        pattern, stopwords = _BM25_PATTERN, frozenset(STOPWORDS_EN)
        if not len(ids):
            return cls(ids, np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(1, np.int32), {},
                       re.compile(pattern), stopwords)
        m = bm25.scores
        return cls(ids, m["data"], m["indices"], m["indptr"], _words_only(bm25.vocab_dict), re.compile(pattern),
                   stopwords)

    @classmethod
    def load(cls, folder: Path, n_chunks: int) -> Lexical | None:
        """The saved index, memory-mapped; None when absent, damaged or not for this state."""
        try:
            ids = np.load(folder / "ids.npy", allow_pickle=False)
            if len(ids) != n_chunks:
                return None
            arrays = [np.load(folder / f"{name}.csc.index.npy", mmap_mode="r", allow_pickle=False)
                      for name in ("data", "indices", "indptr")]
            vocab = _words_only(json.loads((folder / "vocab.index.json").read_text(encoding="utf-8")))
            query = json.loads((folder / _QUERY_FILE).read_text(encoding="utf-8"))
            lex = cls(ids, *arrays, vocab, re.compile(query["pattern"]), frozenset(query["stopwords"]))
        except (OSError, ValueError, KeyError, TypeError, re.error):
            return None
        return lex if max(lex.vocab.values(), default=-1) < len(lex.indptr) - 1 else None


def _words_only(vocab: dict) -> dict[str, int]:
    """bm25s's vocabulary without its "" entry (which has no matrix column; queries never produce it)."""
    return {w: int(i) for w, i in vocab.items() if w}


_BM25_PATTERN = r"(?u)\b\w\w+\b"  # bm25s.tokenize's default token_pattern


def _bm25_of(db: sqlite3.Connection):
    """(bm25s.BM25, chunk ids in its row order) over every chunk's text."""
    import bm25s

    rows = db.execute("SELECT id, text FROM chunks ORDER BY id").fetchall()
    ids = np.asarray([r[0] for r in rows], dtype=np.int64)
    bm25 = bm25s.BM25()
    if rows:
        tokens = bm25s.tokenize([r[1] for r in rows], stopwords="en", token_pattern=_BM25_PATTERN,
                                show_progress=False)
        bm25.index(tokens, show_progress=False)
    return bm25, ids


def save_lexical(db: sqlite3.Connection, folder: Path, previous: Path | None = None) -> None:
    """Persist the lexical index of `db` in `folder` (a state being written): .npy and JSON, no pickle.

    When `previous` holds one for exactly the same chunk ids (ids are never reused within a
    database, so the same ids mean the same texts), its immutable files are hard-linked instead.
    """
    ids = np.asarray([r[0] for r in db.execute("SELECT id FROM chunks ORDER BY id")], dtype=np.int64)
    if not len(ids):
        return
    folder.mkdir()
    try:
        if (previous is not None and (previous / _QUERY_FILE).is_file()
                and np.array_equal(np.load(previous / "ids.npy", allow_pickle=False), ids)):
            for f in previous.iterdir():
                os.link(f, folder / f.name)
            return
    except (OSError, ValueError):
        for f in folder.iterdir():
            f.unlink()
    from bm25s.stopwords import STOPWORDS_EN

    bm25, ids = _bm25_of(db)
    bm25.save(str(folder), allow_pickle=False)
    (folder / _QUERY_FILE).write_text(json.dumps({"pattern": _BM25_PATTERN,
                                                  "stopwords": sorted(STOPWORDS_EN)}), encoding="utf-8")
    np.save(folder / "ids.npy", ids, allow_pickle=False)
    for f in folder.iterdir():  # durable before IndexWriter.publish() makes the state current
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
