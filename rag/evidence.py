"""Evidence: the few sentences inside the retrieved chunks that bear on the question, and whether
they are enough to answer at all.

Shape: Hits (chunks) -> candidate sentences with absolute offsets -> relevance = blend of the
embedder's cosine and the share of the question's content words the sentence holds -> greedy
selection that skips near-copies (folded into `also_reported_by`) and keeps at most a few
sentences per article, so two crises reported on two dates both reach the prompt.

The abstain check is deliberately simple and explainable: the best sentence must be close enough
to the question, the question's specific terms (names, places, numbers) must be found in the
retrieved passages, and when the question plainly asks for a date, a number, a duration or a
name, some evidence sentence must hold one that the question does not already contain.
Thresholds are calibrated on eval/gold.jsonl (see README).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rag.citations import content_tokens
from rag.ingest import date_header_length
from rag.injection import in_instruction
from rag.sentences import sentence_spans
from rag.types import Evidence, Hit

DENSE_WEIGHT = 0.6  # relevance = 0.6 * cosine + 0.4 * question-word coverage (+ answer-type bonus)
ANSWER_TYPE_BONUS = 0.1  # the sentence holds something of the kind asked for that the question lacks
MIN_WORDS = 4  # shorter "sentences" are headings or bylines, not evidence
PER_ARTICLE = 3
NEAR_COPY = 0.75  # token Jaccard at which two sentences say the same thing

# Abstention thresholds (calibrated with `rag eval`; see README "Abstention").
MIN_RELEVANCE = 0.25  # best evidence sentence relevance below this: nothing relevant was found
MIN_KEY_COVERAGE = 1.0  # share of the question's key terms that must occur in the evidence

_CAPITALISED = re.compile(r"\b[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)*")
_NUMBER = re.compile(r"\b\d[\d,.]*\b")
_YEAR = re.compile(r"(19|20)\d\d")
_GENERIC = {"us", "un"}  # too common in this domain to prove anything on their own
# News writes capitals for their governments ("New Delhi suspended ..."): a capital in the question
# is covered by its country in the articles.
_METONYMS = {"washington": "us", "delhi": "india", "new delhi": "india", "islamabad": "pakistan",
             "beijing": "china", "moscow": "russia", "london": "britain", "kabul": "afghanistan",
             "tehran": "iran", "riyadh": "saudi", "kyiv": "ukraine", "tokyo": "japan", "paris": "france"}


_MONTH_NAMES = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
                r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_DATE_TEXT = re.compile(rf"\b{_MONTH_NAMES}\.? \d{{1,2}}\b|\b\d{{1,2}} {_MONTH_NAMES}\b|\b(?:19|20)\d\d\b|"
                        r"\b(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day\b")
_COUNT_TEXT = re.compile(r"\b\d[\d,.]*\b|\b(?:two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|"
                         r"forty|fifty|sixty|seventy|eighty|ninety|hundred|dozens?|hundreds|thousands?|millions?)\b",
                         re.IGNORECASE)
_DURATION_TEXT = re.compile(r"\b(?:\d[\d,.]*|an?|one|two|three|four|five|six|seven|eight|nine|ten|several|few|many)"
                            r"[ -](?:seconds?|minutes?|hours?|days?|weeks?|months?|years?|decades?)\b"
                            r"|\b(?:overnight|hours-long|hour-long|day-long)\b", re.IGNORECASE)
_ASKS = [  # (question pattern, what an answer holds)
    (re.compile(r"^\s*(when\b|on what date|what date|which (year|month|day)s?|in which (year|month)s?)", re.I),
     _DATE_TEXT),
    (re.compile(r"^\s*(how many|how much|what (number|weight|amount|percentage))\b", re.I), _COUNT_TEXT),
    (re.compile(r"^\s*how long\b", re.I), _DURATION_TEXT),
    (re.compile(r"^\s*(who|whom|whose)\b|^\s*which [\w-]+ (envoy|official|minister|leader|president|spokes\w*|"
                r"group|outfit|country|countries|force|treaty|border|site|camp)\b|^\s*where\b|"
                r"^\s*what (is|was|were|are) the names? of\b", re.I), _CAPITALISED),
]
KIND_NAMES = {_DATE_TEXT: "a date", _COUNT_TEXT: "a number", _DURATION_TEXT: "a duration", _CAPITALISED: "a name"}


def answer_type(question: str) -> re.Pattern[str] | None:
    """What kind of thing the question asks for (a date, a count, a name), if it says so plainly."""
    return next((kind for pattern, kind in _ASKS if pattern.search(question)), None)


def holds_new(kind: re.Pattern[str], text: str, question: str) -> bool:
    """Whether `text` holds an instance of `kind` that the question itself does not contain.

    A name counts as already asked when the question holds it or a word it begins ("India" in a
    question about an "Indian incursion", "Pakistan" for "Pakistani").
    """
    asked = {m.group(0).lower() for m in kind.finditer(question)}
    words = [w.lower() for w in re.findall(r"\w+", question)]

    def new(found: str) -> bool:
        if found.lower() in asked:
            return False
        return kind is not _CAPITALISED or not all(
            any(w.startswith(n.lower()) for w in words) for n in re.findall(r"\w+", found))

    return any(m.start() > 0 and new(m.group(0)) for m in kind.finditer(text))


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
            s += date_header_length(hit.text[s:e])  # "date 2019-02-20 WASHINGTON ..." quotes from WASHINGTON
            start, end = hit.start + s, hit.start + e
            text = hit.text[s:e]
            if (hit.doc_id, start) in seen or len(text.split()) < MIN_WORDS or _is_heading(text):
                continue
            if in_instruction(hit.text, s, e):  # a planted order to the model is no evidence (rag.injection)
                continue
            seen.add((hit.doc_id, start))
            out.append(Candidate(hit, start, end, text, tokens=content_tokens(text)))
    return out


def _is_heading(text: str) -> bool:
    """A short line without final punctuation ("Pakistan's Response and US Concerns") is no evidence."""
    return len(text.split()) <= 8 and not text.rstrip("”\"’')").endswith((".", "!", "?", ":"))


def key_terms(question: str) -> set[str]:
    """The question's specific terms: capitalised names (not the first word), numbers, quoted text."""
    terms: set[str] = set()
    body = question.strip()
    for m in _CAPITALISED.finditer(body):
        words = m.group(0).split()
        phrase = " ".join(words[1:] if m.start() == 0 else words)  # not "What", "How"
        phrase = _METONYMS.get(phrase.lower().removesuffix("'s").removesuffix("’s"), phrase)
        terms |= content_tokens(phrase)
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
    kind = answer_type(question)
    # A sentence from a 2019 article covers the "2019" of a question about "the 2019 attack".
    dated = {c.hit.date: content_tokens(date_words(c.hit.date)) for c in pool}
    for c, cos in zip(pool, cosines, strict=True):
        coverage = len(asked & (c.tokens | dated[c.hit.date])) / len(asked) if asked else 0.0
        bonus = ANSWER_TYPE_BONUS if kind is not None and holds_new(kind, c.text, question) else 0.0
        c.relevance = DENSE_WEIGHT * float(cos) + (1 - DENSE_WEIGHT) * coverage + bonus
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


_MONTHS = ("January February March April May June July August September October November December").split()


def date_words(date: str | None) -> str:
    """'2019-02-20' -> '2019 February 20': a question about "February 2019" is covered by the date."""
    if not date or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date) or not 1 <= int(date[5:7]) <= 12:
        return ""
    return f"{date[:4]} {_MONTHS[int(date[5:7]) - 1]} {int(date[8:])}"


def evidence_tokens(e: Evidence) -> set[str]:
    """What an evidence sentence can vouch for: its words, its article's title and date."""
    return content_tokens(f"{e.text} {e.title} {date_words(e.date)}")


def assess(question: str, evidence: list[Evidence], hits: list[Hit]) -> Assessment:
    """Whether the evidence can answer the question at all, and if not, why (shown to the user).

    Key terms are looked up in the whole retrieved chunks (text, title, date), not only in the
    few selected sentences, so a name one sentence away from the best evidence still counts.
    """
    if not evidence:
        return Assessment(False, "no passage in the index matches the question")
    best = max(e.score for e in evidence)
    if best < MIN_RELEVANCE:
        return Assessment(False, f"the closest passages are only weakly related (relevance {best:.2f})")
    terms = key_terms(question)
    present: set[str] = set()
    for h in hits:
        present |= content_tokens(f"{h.text} {h.title} {date_words(h.date)}")
    if any(h.date is None for h in hits):  # an undated article may be from any year asked about
        present |= {t for t in terms if _YEAR.fullmatch(t)}
    missing = sorted(terms - present)
    if terms and (len(terms) - len(missing)) / len(terms) < MIN_KEY_COVERAGE:
        return Assessment(False, "the articles never mention " + ", ".join(missing), missing)
    kind = answer_type(question)
    if kind is not None and not any(e.score >= MIN_RELEVANCE and holds_new(kind, e.text, question) for e in evidence):
        return Assessment(False, f"the question asks for {KIND_NAMES[kind]} and no passage found gives one")
    return Assessment(True, f"relevance {best:.2f}")
