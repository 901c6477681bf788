"""The lexical index: BM25 built by bm25s at `rag index` time, saved in each state of the file store.

Querying needs only numpy: the saved CSC arrays are memory-mapped, so a cold `rag ask` neither
imports bm25s and scipy nor rebuilds the matrix.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEXICAL_DIR = "bm25"  # in a state folder: bm25s's .npy arrays (no pickle) and JSON, plus ids.npy

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


def top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n highest scores, as np.argsort(-scores, kind="stable")[:n] without sorting them all."""
    if len(scores) <= n:
        return np.argsort(-scores, kind="stable")
    threshold = np.partition(scores, len(scores) - n)[len(scores) - n]
    candidates = np.flatnonzero(scores >= threshold)
    return candidates[np.argsort(-scores[candidates], kind="stable")][:n]
