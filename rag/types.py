"""The data shapes that flow through rag. `dataclasses.asdict()` of an Answer is the JSON.

Offsets (`start`, `end`) are always character offsets into the article's original text
(after decoding), so `article.text[start:end]` is the passage.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Article:
    doc_id: str  # path relative to the indexed root, or the record id for JSON input
    text: str
    title: str
    date: str | None = None  # ISO YYYY-MM-DD, never guessed
    source: str | None = None  # publisher or agency when stated ("Daily Ledger", "Wire Service")
    url: str | None = None
    path: str | None = None  # where it was read from, for messages
    content_hash: str = ""  # sha256 of text + metadata; drives incremental indexing
    author: str | None = None  # when the page, feed or PDF states it
    pages: tuple[int, ...] = ()  # PDF: offset in `text` where each page starts (page 1 at 0)

    def page_at(self, offset: int) -> int | None:
        """The 1-based PDF page holding `offset`, or None for articles without pages."""
        return bisect.bisect_right(self.pages, offset) if self.pages else None


@dataclass(frozen=True)
class Chunk:
    chunk_id: str  # f"{doc_id}:{start}-{end}", stable while the text is unchanged
    doc_id: str
    ordinal: int
    start: int
    end: int
    text: str  # == article.text[start:end]
    n_tokens: int = 0


@dataclass
class Hit:
    """One retrieved chunk with its article metadata and how it was found."""

    rank: int
    chunk_id: str
    doc_id: str
    start: int
    end: int
    text: str
    title: str
    date: str | None
    source: str | None
    score: float  # fused score, higher is better
    dense_score: float | None = None
    dense_rank: int | None = None
    lexical_score: float | None = None
    lexical_rank: int | None = None
    also_reported_by: list[str] = field(default_factory=list)  # near-duplicate doc_ids


@dataclass
class Evidence:
    """One sentence selected from a retrieved chunk: the unit the prompt carries and citations point to."""

    n: int  # citation number shown to the model, 1-based
    doc_id: str
    chunk_id: str
    start: int
    end: int
    text: str
    title: str
    date: str | None
    source: str | None
    score: float
    also_reported_by: list[str] = field(default_factory=list)
    cosine: float = 0.0  # the embedder's cosine alone (score blends in word coverage)


@dataclass
class Citation:
    n: int
    doc_id: str
    chunk_id: str
    title: str
    date: str | None
    source: str | None
    start: int
    end: int
    quote: str
    score: float
    also_reported_by: list[str] = field(default_factory=list)
    url: str | None = None  # the article's web address when known
    page: int | None = None  # PDF page of the quote's start (1-based)


@dataclass
class Sentence:
    text: str
    citations: list[int]
    supported: bool
    label: str | None = None  # "2023-05-08, Wire Service" when the answer spans articles of several dates


@dataclass
class Retrieved:
    rank: int
    doc_id: str
    chunk_id: str
    score: float
    also_reported_by: list[str] = field(default_factory=list)
    dense_rank: int | None = None  # rank among the dense (FAISS) results, None if not found there
    lexical_rank: int | None = None  # rank among the BM25 results
    dense_score: float | None = None  # cosine between question and chunk


@dataclass
class Answer:
    question: str
    answer: str
    abstained: bool
    sentences: list[Sentence]
    citations: list[Citation]
    retrieved: list[Retrieved]
    model: dict[str, str | None]
    timings_ms: dict[str, int]
    mode: str = "llm"
    notes: list[str] = field(default_factory=list)  # e.g. "removed citation [7]: no such source"
    draft: str | None = None  # the model's text before verification (llm mode)
