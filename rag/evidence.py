"""Evidence: the few sentences inside the retrieved chunks that bear on the question, and whether
they are enough to answer at all.

Shape: Hits (chunks) -> candidate sentences with absolute offsets -> relevance = blend of the
embedder's cosine and the share of the question's content words the sentence holds -> greedy
selection that skips near-copies (folded into `also_reported_by`) and keeps at most a few
sentences per article, so two crises reported on two dates both reach the prompt.

The abstain check is deliberately simple and explainable: the best sentence must be close enough
to the question, and the question's specific terms (names, places, numbers, the thing asked for)
must be found in the evidence. Thresholds are calibrated on eval/gold.jsonl (see README).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rag.citations import content_tokens
from rag.sentences import sentence_spans
from rag.types import Evidence, Hit

DENSE_WEIGHT = 0.6  # relevance = 0.6 * cosine + 0.4 * question-word coverage
MIN_WORDS = 4  # shorter "sentences" are headings or bylines, not evidence
PER_ARTICLE = 3
NEAR_COPY = 0.75  # token Jaccard at which two sentences say the same thing

# Abstention thresholds (calibrated with `rag eval`; see README "Abstention").
MIN_RELEVANCE = 0.40  # best evidence sentence relevance below this: nothing relevant was found
MIN_KEY_COVERAGE = 1.0  # share of the question's key terms that must occur in the evidence

_CAPITALISED = re.compile(r"\b[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)*")
_NUMBER = re.compile(r"\b\d[\d,.]*\b")
_GENERIC = {"us", "un"}  # too common in this domain to prove anything on their own


@dataclass
class Candidate:
    hit: Hit
    start: int
    end: int
    text: str
    relevance: float = 0.0
    tokens: set[str] = field(default_factory=set)


def candidates(hits: list[Hit]) -> list[Candidate]:
    """Every sentence of every hit once (chunks overlap), with offsets into the article."""
    seen: set[tuple[str, int]] = set()
    out: list[Candidate] = []
    for hit in hits:
        for s, e in sentence_spans(hit.text):
            start, end = hit.start + s, hit.start + e
            text = hit.text[s:e]
            if (hit.doc_id, start) in seen or len(text.split()) < MIN_WORDS:
                continue
            seen.add((hit.doc_id, start))
            out.append(Candidate(hit, start, end, text, tokens=content_tokens(text)))
    return out


def key_terms(question: str) -> set[str]:
    """The question's specific terms: capitalised names (not the first word), numbers, quoted text."""
    terms: set[str] = set()
    body = question.strip()
    for m in _CAPITALISED.finditer(body):
        words = m.group(0).split()
        terms |= content_tokens(" ".join(words[1:] if m.start() == 0 else words))  # not "What", "How"
    terms |= content_tokens(" ".join(_NUMBER.findall(body)))
    return {t for t in terms if t not in _GENERIC}


def select(question: str, hits: list[Hit], embed: Callable[[list[str]], np.ndarray],
           limit: int = 6) -> list[Evidence]:
    """The best `limit` distinct sentences, numbered 1..n by relevance."""
    pool = candidates(hits)
    if not pool:
        return []
    vectors = embed([question] + [c.text for c in pool])
    cosines = vectors[1:] @ vectors[0]
    asked = content_tokens(question)
    for c, cos in zip(pool, cosines, strict=True):
        coverage = len(asked & c.tokens) / len(asked) if asked else 0.0
        c.relevance = DENSE_WEIGHT * float(cos) + (1 - DENSE_WEIGHT) * coverage
    pool.sort(key=lambda c: (-c.relevance, c.hit.rank, c.start))
    chosen: list[Candidate] = []
    copies: dict[int, list[str]] = {}
    per_article: dict[str, int] = {}
    for c in pool:
        twin = next((i for i, o in enumerate(chosen) if _jaccard(o.tokens, c.tokens) >= NEAR_COPY), None)
        if twin is not None:
            if c.hit.doc_id != chosen[twin].hit.doc_id:
                copies.setdefault(twin, []).append(c.hit.doc_id)
            continue
        if per_article.get(c.hit.doc_id, 0) >= PER_ARTICLE or len(chosen) >= limit:
            continue
        per_article[c.hit.doc_id] = per_article.get(c.hit.doc_id, 0) + 1
        chosen.append(c)
    return [Evidence(n=i + 1, doc_id=c.hit.doc_id, chunk_id=c.hit.chunk_id, start=c.start, end=c.end,
                     text=c.text, title=c.hit.title, date=c.hit.date, source=c.hit.source,
                     score=round(c.relevance, 4),
                     also_reported_by=_unique(c.hit.also_reported_by + copies.get(i, []), c.hit.doc_id))
            for i, c in enumerate(chosen)]


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def _unique(doc_ids: list[str], own: str) -> list[str]:
    return [d for i, d in enumerate(doc_ids) if d != own and d not in doc_ids[:i]]


@dataclass
class Assessment:
    answerable: bool
    reason: str
    missing: list[str] = field(default_factory=list)


def assess(question: str, evidence: list[Evidence]) -> Assessment:
    """Whether the evidence can answer the question at all, and if not, why (shown to the user)."""
    if not evidence:
        return Assessment(False, "no passage in the index matches the question")
    best = max(e.score for e in evidence)
    if best < MIN_RELEVANCE:
        return Assessment(False, f"the closest passages are only weakly related (relevance {best:.2f})")
    terms = key_terms(question)
    present: set[str] = set()
    for e in evidence:
        present |= content_tokens(f"{e.text} {e.title}")
    missing = sorted(terms - present)
    if terms and (len(terms) - len(missing)) / len(terms) < MIN_KEY_COVERAGE:
        return Assessment(False, "the articles never mention " + ", ".join(missing), missing)
    return Assessment(True, f"relevance {best:.2f}")
