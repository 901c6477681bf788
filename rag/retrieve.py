"""Retrieval: dense + lexical (BM25) rankings, reciprocal-rank fusion, near-duplicate collapse, filters.

Data shapes: a query -> dense ranks over chunk ids and BM25 ranks over the same ids -> RRF score
per chunk id -> Hits in fused order, where a chunk that repeats an already kept chunk of another
article (the same wire story in two outlets) is folded into it as `also_reported_by`.

The rankings come from the store (`rag.stores`): the file store ranks with FAISS and a saved BM25
matrix and the fusion happens here; a store that fuses on its own server (Milvus) gets the same
ranking requests and returns the fused order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from typing import Protocol

import numpy as np

from rag.filters import Filters, Ranking, recent_window
from rag.types import Article, Hit
from rag.words import names_publisher

RRF_K = 60  # the usual constant from Cormack et al.; damps the weight of the very top ranks
DUPLICATE_COSINE = 0.9  # chunk vectors this close from two articles are the same story
DUPLICATE_SHINGLES = 0.5  # or: this share of the shorter chunk's word 3-grams are in the other

EmbedQuery = Callable[[list[str]], np.ndarray]
_WORD = re.compile(r"\w+")


class SearchStore(Protocol):
    """What retrieval, the pipeline and chat need from an opened store (file store or Milvus)."""

    manifest: dict  # embedder, chunker, counts

    @property
    def state(self) -> str: ...  # changes whenever a new version is published

    def article(self, doc_id: str) -> Article | None: ...

    def sources(self) -> list[str]: ...

    def doc_ids(self, limit: int) -> list[str]: ...

    def chunks(self, ids: list[int]) -> dict[int, dict]: ...  # rows with text, offsets, metadata, vector

    def ranking(self, qvec: np.ndarray, query: str, request: Ranking) -> list[tuple[int, float]]: ...

    def close(self) -> None: ...


def fuse(rankings: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: each list adds 1 / (RRF_K + rank) to its chunks; ties by chunk id."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (cid, _) in enumerate(ranking, 1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


@lru_cache(maxsize=1024)  # a kept hit is compared with every later candidate: compute its shingles once
def _shingles(text: str) -> frozenset[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return frozenset(zip(words, words[1:], words[2:], strict=False))


class Retriever:
    """Searches one opened store."""

    def __init__(self, store: SearchStore, embed_query: EmbedQuery):
        self.store = store
        self.embed_query = embed_query

    def named_publishers(self, query: str) -> list[str]:
        """The indexed articles' publishers that the query names ("according to Wire Service")."""
        return [p for p in self.store.sources() if names_publisher(query, p)]

    def requests(self, query: str, k: int, filters: Filters, as_of: str | None) -> list[Ranking]:
        """The rankings one search fuses: dense and lexical over what the filters allow, then the
        same over the articles the query points at ("according to X", "this week"), top k each."""
        scope = filters if filters.active else None
        pool = max(4 * k, 30)
        requests = [Ranking("dense", pool, scope), Ranking("lexical", pool, scope)]
        # "According to X": X's own articles are ranked apart too, so they reach the top even
        # when other outlets' copies of the story use the question's words more.
        preferred = [Filters(source=publisher) for publisher in self.named_publishers(query)]
        window = recent_window(query, as_of)
        if window is not None:  # "this week": the articles of those days, ranked apart in the same way
            preferred.append(window)
        for prefer in preferred:
            narrowed = prefer.narrowed(filters)
            if narrowed is not None:
                requests += [Ranking("dense", k, narrowed), Ranking("lexical", k, narrowed)]
        return requests

    def search_more(self, hits: list[Hit], query: str, k: int, filters: Filters | None = None,
                    as_of: str | None = None) -> list[Hit]:
        """`hits`, then the top k chunks for `query` that are not among them, ranked on."""
        held = {h.chunk_id for h in hits}
        more = [h for h in self.search(query, k, filters, as_of) if h.chunk_id not in held]
        return hits + [replace(h, rank=len(hits) + i) for i, h in enumerate(more, 1)]

    def search(self, query: str, k: int = 6, filters: Filters | None = None, as_of: str | None = None) -> list[Hit]:
        """The top k chunks for the query. `as_of` is the day the question is asked (ISO date):
        "this week" or "recently" in the query then also ranks the articles of those days apart."""
        filters = filters or Filters()
        qvec = np.asarray(self.embed_query([query])[0], dtype=np.float32)
        requests = self.requests(query, k, filters, as_of)
        fuse_on_server = getattr(self.store, "fused", None)
        if fuse_on_server is not None:
            fused, dense, lexical = fuse_on_server(qvec, query, requests, RRF_K), [], []
        else:
            rankings = [self.store.ranking(qvec, query, request) for request in requests]
            fused, dense, lexical = fuse(rankings), rankings[0], rankings[1]
        order = [cid for cid, _ in fused]
        score = dict(fused)
        rows = self.store.chunks(order)
        dense_rank = {cid: (r, s) for r, (cid, s) in enumerate(dense, 1)}
        lexical_rank = {cid: (r, s) for r, (cid, s) in enumerate(lexical, 1)}
        kept: list[tuple[Hit, np.ndarray]] = []
        for cid in order:
            row = rows.get(cid)
            if row is None:  # removed between ranking and fetching (a store another writer changes)
                continue
            vector = row["vector"]
            twin = _duplicate_of(row, vector, kept)
            if twin is not None:
                if row["doc_id"] not in twin.also_reported_by:
                    twin.also_reported_by.append(row["doc_id"])
                continue
            if len(kept) == k:
                continue  # still scanning, to record duplicates of the kept hits
            kept.append((Hit(
                rank=len(kept) + 1, chunk_id=row["chunk_id"], doc_id=row["doc_id"], start=row["start"],
                end=row["end"], text=row["text"], title=row["title"], date=row["date"], source=row["source"],
                score=round(score[cid], 6), dense_score=float(np.dot(qvec, vector)),
                dense_rank=dense_rank.get(cid, (None,))[0], lexical_score=lexical_rank.get(cid, (0, None))[1],
                lexical_rank=lexical_rank.get(cid, (None,))[0]), vector))
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
