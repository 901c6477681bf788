"""Evidence: the few sentences inside the retrieved chunks that bear on the question, and whether
they are enough to answer at all.

Shape: Hits (chunks) -> candidate sentences with absolute offsets -> relevance = blend of the
embedder's cosine (raised, for the leading candidates, by what reading the sentence after the one
before it adds) and the share of the question's content words the sentence and its article's
title, publisher and date hold -> greedy selection that skips near-copies (folded into
`also_reported_by`), at most policy.PER_ARTICLE sentences per article; a question that asks two
things gets the best sentence for each part into the evidence (`speaking_to_parts`).

The abstain decision is one calibrated score over a handful of features (`features`, scored by
rag.policy.answer_score): how close the best sentence is, whether the question's names and
numbers occur in the retrieved articles (their text, title, publisher and date), and whether a
question that plainly asks for a date, number or name finds one. None of them refuses alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rag import policy
from rag.filters import Filters
from rag.ingest import date_header_length, front_matter_length
from rag.injection import in_instruction
from rag.sentences import asks_or_leads_in, sentence_spans
from rag.types import Evidence, Hit
from rag.words import (
    ASKS,
    ASKS_ENTITY,
    COUNT_TEXT,
    DATE_TEXT,
    DURATION_TEXT,
    NAME_TEXT,
    QUESTION_CLAUSES,
    content_tokens,
    covered,
    date_words,
    is_number,
    mentioned,
    names_publisher,
    passage_tokens,
    publisher_words,
    question_parts,
)

_YEAR = re.compile(r"(19|20)\d\d")

KIND_NAMES = {DATE_TEXT: "a date", COUNT_TEXT: "a number", DURATION_TEXT: "a duration", NAME_TEXT: "a name"}


def answer_type(question: str) -> re.Pattern[str] | None:
    """What kind of thing the question asks for (a date, a count, a name), if it says so plainly.
    Read from the last sentence that says so: context comes first, the asking sentence last.
    """
    for clause in reversed(QUESTION_CLAUSES.split(question.strip())):
        kind = next((kind for pattern, kind in ASKS if pattern.search(clause)), None)
        if kind is not None:
            return kind
    return None


def holds_new(kind: re.Pattern[str], text: str, question: str) -> bool:
    """Whether `text` holds an instance of `kind` that the question itself does not contain.

    A name counts as already asked when each of its words is in the question, directly or as
    the same word family ("Kenya" in a question about the "Kenyan government").
    """
    asked = {m.group(0).lower() for m in kind.finditer(question)}
    words = content_tokens(question)

    def new(found: str) -> bool:
        if found.lower() in asked:
            return False
        return kind is not NAME_TEXT or not all(covered(t, words) for t in content_tokens(found))

    return any(m.start() > 0 and new(m.group(0)) for m in kind.finditer(text))


@dataclass
class Candidate:
    hit: Hit
    start: int
    end: int
    text: str
    before: str = ""  # the sentence just before it in the article, when the chunk holds it
    relevance: float = 0.0
    cosine: float = 0.0
    lexical: float = 0.0  # the relevance that is not the embedder's: word coverage and bonuses
    ask: int = 0  # what it answers best: 0 the question, 1.. a part of it that stands alone (select)
    tokens: set[str] = field(default_factory=set)


def candidates(hits: list[Hit]) -> list[Candidate]:
    """Every sentence of every hit once (chunks overlap), with offsets into the article."""
    seen: set[tuple[str, int]] = set()
    out: list[Candidate] = []
    for hit in hits:
        previous = ""
        metadata = front_matter_length(hit.text) if hit.start == 0 else 0  # "title: ...", "date: ..."
        for s, e in sentence_spans(hit.text):
            if e <= metadata:
                continue
            before, previous = previous, hit.text[s:e]
            s += date_header_length(hit.text[s:e])  # "date 2019-02-20 SPRINGFIELD ..." quotes from SPRINGFIELD
            start, end = hit.start + s, hit.start + e
            text = hit.text[s:e]
            if (hit.doc_id, start) in seen or len(text.split()) < policy.MIN_WORDS or _is_heading(text):
                continue
            if in_instruction(hit.text, s, e):  # a planted order to the model is no evidence (rag.injection)
                continue
            seen.add((hit.doc_id, start))
            out.append(Candidate(hit, start, end, text, before, tokens=content_tokens(text)))
    return out


def _is_heading(text: str) -> bool:
    """A short line without final punctuation ("Markets React to the Vote") is no evidence."""
    return len(text.split()) <= 8 and not text.rstrip("”\"’')").endswith((".", "!", "?", ":"))


def key_terms(question: str) -> set[str]:
    """A question's (or a sentence's) specific terms: capitalised names (not the first word) and numbers."""
    terms: set[str] = set()
    first = len(question) - len(question.lstrip())
    for m in NAME_TEXT.finditer(question):
        words = m.group(0).split()
        terms |= content_tokens(" ".join(words[1:] if m.start() == first else words))  # not "What", "How"
    terms |= {t for t in content_tokens(question) if is_number(t)}  # "43.8 million" as passages read it
    return terms


def part_terms(question: str) -> list[set[str]]:
    """For a question that asks two or more things ("Who offered to mediate in 2019, and who in
    2025?"), the words only each part uses ({"offer", "mediat", "2019"}, {"2025"}); else [].
    A part that shares all its words with the others adds nothing to look for and is left out."""
    own = [o for o in _own_words([content_tokens(p) for p in question_parts(question)]) if o]
    return own if len(own) >= 2 else []


def _own_words(parts: list[set[str]]) -> list[set[str]]:
    """For each part's words, those no other part uses."""
    return [p - set().union(*(o for j, o in enumerate(parts) if j != i)) for i, p in enumerate(parts)]


def speaking_to_parts(question: str, ranked: list, words: Callable) -> list[list]:
    """For each part of a question that asks several things (see `part_terms`), the items of
    `ranked` that speak to it, in `ranked` order: those holding one of the part's own words.
    `words(item)` gives an item's tokens (with its article's title, publisher and date) and its
    article's date, None when undated: an undated article may be from any year a part asks about."""
    held = [words(x) for x in ranked]
    return [[x for x, (tokens, dated) in zip(ranked, held, strict=True) if _speaks(terms, tokens, dated)]
            for terms in part_terms(question)]


def _speaks(terms: set[str], tokens: set[str], dated: str | None) -> bool:
    """Whether an item holds one of a part's own words. A part that names a year asks about that
    year: a dated item speaks to it only when it names the year too (its article's date counts)."""
    years = {t for t in terms if _YEAR.fullmatch(t)}
    if not dated:
        return bool(years) or any(mentioned(t, tokens) for t in terms)
    if years and not any(mentioned(y, tokens) for y in years):
        return False
    return any(mentioned(t, tokens) for t in terms)


def standalone_parts(question: str) -> list[str]:
    """The parts of a question that asks several things (rag.words.question_parts) that each name
    policy.STANDALONE_WORDS content words or more, when at least two do; else []. "..., and who in
    2025?" leans on the first part: it is no question on its own."""
    alone = [p for p in question_parts(question) if len(content_tokens(p)) >= policy.STANDALONE_WORDS]
    return alone if len(alone) >= 2 else []


def parts_not_found(question: str, hits: list[Hit]) -> list[str]:
    """The parts of a question that asks several unrelated things ("Who won the runoff, and which
    star ...?") that stand alone (`standalone_parts`) and that none of its hits speaks to, to be
    searched on their own. A hit speaks to a part when it holds half of the part's words (with its
    article's title, publisher and date). One search for the whole finds chunks about both parts
    only when one story holds both."""
    alone = standalone_parts(question)
    if not alone:
        return []
    held = [_hit_tokens(h) for h in hits]

    def found(part: str) -> bool:
        asked = content_tokens(part)
        return any(2 * sum(mentioned(t, tokens) for t in asked) >= len(asked) for tokens in held)

    return [p for p in alone if not found(p)]


def _hit_tokens(h: Hit) -> set[str]:
    """What a retrieved chunk can vouch for: its words, its article's title, publisher and date."""
    return passage_tokens(h.text) | context_tokens(h.title, h.source, h.date)


def context_tokens(title: str | None, source: str | None, date: str | None) -> set[str]:
    """What an article says about itself: its title, its publisher and its date, as tokens."""
    return content_tokens(f"{title or ''} {publisher_words(source)} {date_words(date)}")


def select(question: str, hits: list[Hit], embed: Callable[[list[str]], np.ndarray],
           limit: int = policy.EVIDENCE_SENTENCES, window: Filters | None = None,
           apart: bool = False) -> list[Evidence]:
    """The best `limit` distinct sentences, numbered 1..n by relevance. `window` holds the days a
    question is about (rag.filters.news_window: its "this week", else the days before asking):
    sentences of articles from those days are preferred over older reports of the same story. A sentence that asks ("So
    which areas were the germiest?") or leads in ("Here are the winners:") is no evidence (the
    plain baseline keeps it). It still reads as context for the sentence after it (Candidate.before).
    `apart`: the question's parts were searched apart (Pipeline.search): they are scored apart too."""
    pool = [c for c in candidates(hits) if not asks_or_leads_in(c.text)]
    if not pool:
        return []
    # A question that asks unrelated things (its one search found no chunk for a part) is that many
    # questions: a sentence is as relevant as it is to the one it answers best.
    asks = [question] + (standalone_parts(question) if apart else [])
    lexical = [_lexical_relevance(ask, question, window) for ask in asks]
    context = {c.hit.doc_id: context_tokens(c.hit.title, c.hit.source, c.hit.date) for c in pool}
    vectors = embed(asks + [c.text for c in pool])
    for c, cosines in zip(pool, vectors[len(asks):] @ vectors[:len(asks)].T, strict=True):
        lex = [score(c, context[c.hit.doc_id]) for score in lexical]
        per_ask = [policy.DENSE_WEIGHT * float(cos) + x for cos, x in zip(cosines, lex, strict=True)]
        c.ask = max(range(len(asks)), key=lambda n: (per_ask[n], -n))
        c.cosine, c.lexical, c.relevance = float(cosines[c.ask]), lex[c.ask], per_ask[c.ask]
    pool.sort(key=lambda c: (-c.relevance, c.hit.rank, c.start))
    # "He said it would close in March" says what closes only after the sentence before it. The
    # leading candidates are read that way too (further down, few could climb into the sentences kept).
    # The context can only add: a sentence clear on its own loses nothing to an unrelated predecessor.
    head = [c for c in pool[:policy.CONTEXT_POOL] if c.before]
    if head and policy.CONTEXT_WEIGHT:
        read_on = embed(asks + [f"{c.before} {c.text}" for c in head])
        for c, cosines in zip(head, read_on[len(asks):] @ read_on[:len(asks)].T, strict=True):
            dense = c.cosine + policy.CONTEXT_WEIGHT * max(0.0, float(cosines[c.ask]) - c.cosine)
            c.relevance = policy.DENSE_WEIGHT * dense + c.lexical
        pool.sort(key=lambda c: (-c.relevance, c.hit.rank, c.start))
    # A question that asks two things gets the best sentence for each part into the evidence, even
    # when every sentence about one part outranks every sentence about the other.
    reserved = []
    for speaks in speaking_to_parts(question, pool, lambda c: (c.tokens | context[c.hit.doc_id], c.hit.date)):
        if speaks and speaks[0] not in reserved:
            reserved.append(speaks[0])
    if reserved:
        pool = sorted(reserved, key=pool.index) + [c for c in pool if c not in reserved]
    return _distinct(pool, limit)


def _lexical_relevance(ask: str, question: str, window: Filters | None) -> Callable[[Candidate, set[str]], float]:
    """Scores a candidate's relevance to `ask` (the question or one part of it) that is not the
    embedder's, given the candidate and its article's context tokens (title, publisher, date): the
    share of the ask's words they hold, and the bonuses of rag.policy. What an answer must add is
    judged against the whole `question`: a name another part already states answers nothing."""
    asked = content_tokens(ask)
    whole = content_tokens(question)
    kind = answer_type(ask)
    asks_entity = bool(ASKS_ENTITY.search(ask))

    def score(c: Candidate, context: set[str]) -> float:
        words = c.tokens | context
        coverage = sum(mentioned(t, words) for t in asked) / len(asked) if asked else 0.0
        bonus = policy.ANSWER_TYPE_BONUS if kind is not None and holds_new(kind, c.text, question) else 0.0
        bonus += policy.SOURCE_BONUS if names_publisher(question, c.hit.source) else 0.0
        # An answer adds something the question lacks: a sentence that only restates it answers nothing.
        bonus += policy.NOVELTY_WEIGHT * sum(not covered(t, whole) for t in c.tokens) / max(1, len(c.tokens))
        bonus += policy.NEW_NAME_BONUS if asks_entity and holds_new(NAME_TEXT, c.text, question) else 0.0
        bonus += policy.RECENT_BONUS if window is not None and window.holds_date(c.hit.date) else 0.0
        return (1 - policy.DENSE_WEIGHT) * coverage + bonus

    return score


def top_by_cosine(question: str, hits: list[Hit], embed: Callable[[list[str]], np.ndarray],
                  limit: int = policy.BASELINE_SENTENCES) -> list[Evidence]:
    """The plain extractive baseline: the `limit` sentences closest to the question by cosine."""
    pool = candidates(hits)
    if not pool:
        return []
    vectors = embed([question] + [c.text for c in pool])
    for c, cos in zip(pool, vectors[1:] @ vectors[0], strict=True):
        c.cosine = c.relevance = float(cos)
    pool.sort(key=lambda c: (-c.relevance, c.hit.rank, c.start))
    return _distinct(pool, limit, per_article=limit)


def _distinct(pool: list[Candidate], limit: int, per_article: int | None = None) -> list[Evidence]:
    """Greedy pick in `pool` order, folding near-copies into `also_reported_by`; at most
    `per_article` (default policy.PER_ARTICLE, read per call: eval/calibrate.py grids it) per article."""
    per_article = per_article or policy.PER_ARTICLE
    chosen: list[Candidate] = []
    copies: dict[int, list[str]] = {}
    per_doc: dict[str, int] = {}
    for c in pool:
        twin = next((i for i, o in enumerate(chosen) if _jaccard(o.tokens, c.tokens) >= policy.NEAR_COPY), None)
        if twin is not None:
            if c.hit.doc_id != chosen[twin].hit.doc_id:
                copies.setdefault(twin, []).append(c.hit.doc_id)
            continue
        if per_doc.get(c.hit.doc_id, 0) >= per_article or len(chosen) >= limit:
            continue
        per_doc[c.hit.doc_id] = per_doc.get(c.hit.doc_id, 0) + 1
        chosen.append(c)
    by_relevance = sorted(range(len(chosen)), key=lambda i: -chosen[i].relevance)  # reserved ones included
    return [_evidence(n, chosen[i], copies.get(i, [])) for n, i in enumerate(by_relevance, 1)]


def _evidence(n: int, c: Candidate, copies: list[str]) -> Evidence:
    return Evidence(n=n, doc_id=c.hit.doc_id, chunk_id=c.hit.chunk_id, start=c.start, end=c.end, text=c.text,
                    title=c.hit.title, date=c.hit.date, source=c.hit.source, score=round(c.relevance, 4),
                    cosine=round(c.cosine, 4), also_reported_by=_unique(c.hit.also_reported_by + copies, c.hit.doc_id))


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def _unique(doc_ids: list[str], own: str) -> list[str]:
    return [d for i, d in enumerate(doc_ids) if d != own and d not in doc_ids[:i]]


@dataclass
class Assessment:
    answerable: bool
    reason: str
    missing: list[str] = field(default_factory=list)
    score: float = 0.0
    features: dict[str, float] = field(default_factory=dict)


def evidence_tokens(e: Evidence) -> set[str]:
    """What an evidence sentence can vouch for: its words, its article's title, publisher and date."""
    return passage_tokens(e.text) | context_tokens(e.title, e.source, e.date)


def features(question: str, evidence: list[Evidence], hits: list[Hit]) -> tuple[dict[str, float], list[str]]:
    """The abstain decision's inputs (see rag.policy), and the question's terms no article holds."""
    if not evidence:
        return dict.fromkeys(policy.FEATURES, 0.0), []
    best = max(evidence, key=lambda e: e.score)
    terms = key_terms(question)
    present: set[str] = set()
    for h in hits:
        present |= _hit_tokens(h)
    if any(h.date is None for h in hits):  # an undated article may be from any year asked about
        present |= {t for t in terms if _YEAR.fullmatch(t)}
    missing = sorted(t for t in terms if not mentioned(t, present))
    kind = answer_type(question)
    typed = kind is None or any(holds_new(kind, e.text, question) for e in evidence)
    values = {
        "best": max(0.0, min(1.0, best.score)),
        "cosine": max(0.0, max(e.cosine for e in evidence)),
        "keys": 1.0 - len(missing) / len(terms) if terms else 1.0,
        "covered": _covered_by_parts(question, evidence),
        "typed": 1.0 if typed else 0.0,
    }
    return values, missing


def _covered_by_parts(question: str, evidence: list[Evidence]) -> float:
    """Share of the question's content words found around its best evidence sentence (the
    sentence, its article's title, publisher and date). A question that asks several things
    (rag.words.question_parts) is answered part by part: each part is measured around the best
    sentence that speaks to it (holds one of the words only that part uses), and the shares are
    averaged. One sentence rarely covers two unrelated asks, and needs not."""
    ranked = sorted(evidence, key=lambda e: -e.score)
    around = [evidence_tokens(e) for e in ranked]
    parts = [p for p in (content_tokens(part) for part in question_parts(question)) if p]
    shares = []
    for asked, own in zip(parts, _own_words(parts), strict=True):
        speaks = next((n for n, tokens in enumerate(around) if any(mentioned(t, tokens) for t in own)), 0)
        shares.append(sum(mentioned(t, around[speaks]) for t in asked) / len(asked))
    return sum(shares) / len(shares) if shares else 0.0


def assess(question: str, evidence: list[Evidence], hits: list[Hit]) -> Assessment:
    """Whether the evidence can answer the question at all, and if not, why (shown to the user)."""
    if not evidence:
        return Assessment(False, "no passage in the index matches the question")
    values, missing = features(question, evidence, hits)
    score = policy.answer_score(values)
    if score >= policy.ANSWER_AT:
        return Assessment(True, f"answer score {score:.2f}", missing, score, values)
    reasons = [f"the closest passages are only weakly related (relevance {values['best']:.2f})"]
    if missing:
        reasons.append("the articles never mention " + ", ".join(missing[:5]))
    kind = answer_type(question)
    if values["typed"] == 0.0 and kind is not None:
        reasons.append(f"the question asks for {KIND_NAMES[kind]} and no passage found gives one")
    return Assessment(False, "; ".join(reasons) + f" (answer score {score:.2f})", missing, score, values)
