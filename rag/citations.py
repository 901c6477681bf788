"""Parse, verify and render the citations in a model's answer.

A small local model forgets citations, invents citation ids and invents facts. Nothing here
trusts it: every answer sentence is checked lexically against the evidence sentence it cites
(`support_score`), and `verify` keeps only what the evidence supports, attaches the citation
the model forgot, and swaps an unsupported claim for the evidence sentence it was closest to.

Pure functions over strings and rag.types dataclasses: no model, no I/O.

Left out on purpose: synonyms and paraphrase ("killed" vs "died"), which a lexical check
cannot see; the threshold absorbs some of it, replacement with the evidence text the rest.

Shapes:
    parse_answer("A [1]. B.[2][3]") -> [("A.", [1]), ("B.", [2, 3])]
    render([Sentence("A.", [1, 2], True)]) -> "A [1][2]."
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from rag import policy
from rag.prompts import ABSTAIN_PHRASE, SOURCE_LINE_OPENING
from rag.sentences import asks_or_leads_in, split_sentences
from rag.types import Evidence, Sentence
from rag.words import (
    DATE_TEXT,
    NAME_TEXT,
    content_tokens,
    covered,
    date_words,
    initials,
    is_number,
    name_runs,
    passage_tokens,
)

# ---------------------------------------------------------------------------------------------
# Parsing markers

# One bracketed marker: [1], [1, 2], [1,2,3] (a semicolon also separates ids). [1][2] is two.
MARKER_RE = re.compile(r"\[\s*(\d{1,4}(?:\s*[,;]\s*\d{1,4})*)\s*\]")
_MARKERS = rf"(?:\s*{MARKER_RE.pattern})+"
_CLOSERS = "”\"’')]"
# Markers standing after a sentence's final punctuation: "responsible. [1][2] Next".
_AFTER_END_RE = re.compile(rf"(?<![.!?])([.!?]++[{re.escape(_CLOSERS)}]*+)({_MARKERS})")
_LEADING_MARKERS_RE = re.compile(rf"^{_MARKERS}")
_LIST_BULLET_RE = re.compile(r"^[ \t]*(?:(?:[-*•]|\d{1,2}[.)])[ \t]+)+", re.MULTILINE)
_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([.,;:!?)\]”’])")
_SPACE_AFTER_OPEN_RE = re.compile(r"([(\[“‘])\s+")
_END_RE = re.compile(rf"([.!?]+)([{re.escape(_CLOSERS)}]*)$")


def _ids(markers: str) -> list[int]:
    return [int(x) for m in MARKER_RE.finditer(markers) for x in re.split(r"[,;]", m.group(1))]


def _dedupe(ids: list[int]) -> list[int]:
    return list(dict.fromkeys(ids))


def _tidy(text: str) -> str:
    """Collapse whitespace and drop the spaces a removed marker leaves before punctuation."""
    text = " ".join(text.split())
    text = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", text)
    return _SPACE_AFTER_OPEN_RE.sub(r"\1", text).strip()


def _move_markers_before_end(m: re.Match[str]) -> str:
    markers = "".join(x.group(0) for x in MARKER_RE.finditer(m.group(2)))
    return f" {markers}{m.group(1)}"


# A source line's opening copied by the model, label and all: "[2] (2023-02-14, usatoday.com) Haley ...".
_SOURCE_ECHO_RE = re.compile(SOURCE_LINE_OPENING + r"[^()\n]{0,80}\)\s*")


def parse_answer(text: str) -> list[tuple[str, list[int]]]:
    """Each answer sentence's clean text (markers removed) with its marker ids, in order, de-duplicated.

    A marker after a sentence's final punctuation, or at the start of the next sentence, belongs
    to the preceding sentence; a sentence that is only markers gives its ids to the one before.
    A marker followed by a source's date label ("[2] (2023-02-14, usatoday.com) ...") copies how
    the prompt lists sources: it belongs to the sentence it opens, and the label goes (the answer
    gets its own date labels). List bullets ("- ", "1. ") at line starts are dropped so they do not
    read as sentences.
    """
    text = _LIST_BULLET_RE.sub("", text)
    pieces = _SOURCE_ECHO_RE.split(text)  # [before, number, after, number, after, ...]
    out = _parse_run(pieces[0], [])
    for number, run in zip(pieces[1::2], pieces[2::2], strict=True):
        out += _parse_run(run, [int(number)])
    return out


def _parse_run(text: str, pending: list[int]) -> list[tuple[str, list[int]]]:
    """parse_answer for a stretch of text; `pending` ids go to its first sentence."""
    text = _AFTER_END_RE.sub(_move_markers_before_end, text)
    out: list[tuple[str, list[int]]] = []
    pending = list(pending)  # markers seen before the first sentence with words
    for piece in split_sentences(text):
        lead = _LEADING_MARKERS_RE.match(piece)
        if lead and out:
            out[-1] = (out[-1][0], _dedupe(out[-1][1] + _ids(lead.group(0))))
            piece = piece[lead.end():]
        ids = _ids(piece)
        clean = _tidy(MARKER_RE.sub(" ", piece))
        if not any(c.isalnum() for c in clean):  # only markers and punctuation
            if out:
                out[-1] = (out[-1][0], _dedupe(out[-1][1] + ids))
            else:
                pending += ids
            continue
        out.append((clean, _dedupe(pending + ids)))
        pending = []
    return out


# ---------------------------------------------------------------------------------------------
# Lexical support

def _overlap(claim: set[str], passage: set[str]) -> float:
    return len(claim & passage) / len(claim) if claim else 0.0


# A clause ("..., and to punish those responsible") with at least CLAUSE_TOKENS content words
# must find CLAUSE_FLOOR of them in the passage (the same share a whole sentence needs), or the
# whole sentence is unsupported: a small model glues a clause from one crisis onto a sentence
# about the other, and the sentence-wide share alone can still pass.
_CLAUSE_SPLIT = re.compile(r"[,;:()]|\s[–—-]\s|\b(?:and|but|while|whereas|which|who|after|before|because)\b",
                           re.IGNORECASE)


@dataclass(frozen=True)
class Claim:
    """What a sentence asserts, as tokens: all of them, per clause, and the specific ones
    (names, numbers, dates) that its source must hold every one of."""

    tokens: set[str]
    clauses: list[set[str]]
    specifics: set[str]
    spelled_out: dict[str, set[str]]  # initials -> tokens of a multi-word name ("us" -> united, states)


def claim_of(sentence: str) -> Claim:
    clauses = (content_tokens(clause) for clause in _CLAUSE_SPLIT.split(sentence))
    return Claim(content_tokens(sentence), [w for w in clauses if len(w) >= policy.CLAUSE_TOKENS],
                 specifics(sentence), {initials(name): content_tokens(name) for name in name_runs(sentence)})


def specifics(sentence: str) -> set[str]:
    """The names, numbers and dates a sentence states, as tokens.

    A name is a capitalised word that does not open the sentence (the first word is capitalised
    anyway), or any word of a run of two or more capitalised words.
    """
    out = {t for t in content_tokens(sentence) if is_number(t)}
    first = len(sentence) - len(sentence.lstrip(" \"“‘'("))
    for m in NAME_TEXT.finditer(sentence):
        words = m.group(0).split()
        if m.start() <= first and len(words) == 1:
            continue
        out |= content_tokens(m.group(0))
    for m in DATE_TEXT.finditer(sentence):
        out |= content_tokens(m.group(0))
    return out


def _claim_support(claim: Claim, passage: set[str]) -> float:
    """Share of the claim's tokens in the passage; 0 when a name, number or date, or a whole
    clause, is missing from it. A name the passage abbreviates ("U.S.") counts as present."""
    for abbreviation, words in claim.spelled_out.items():
        if abbreviation in passage:
            passage = passage | words
    if any(not covered(t, passage) for t in claim.specifics):
        return 0.0
    if any(_overlap(words, passage) < policy.CLAUSE_FLOOR for words in claim.clauses):
        return 0.0
    return _overlap(claim.tokens, passage)


def support_score(sentence: str, passage: str) -> float:
    """Share of the sentence's content tokens found in the passage, in [0, 1].

    0 when the sentence states a name, number or date the passage does not hold (that is where
    small models invent most, and a blended claim must never pass as supported), or when one of
    its clauses is nearly all foreign to the passage.
    """
    return _claim_support(claim_of(sentence), passage_tokens(passage))


# A sentence about the sources or the task, not about the news: "The article says ...", "the
# answer is: [1]", "According to the provided sources ...".
_META_RE = re.compile(r"\b(?:the|these|this|those|provided|given|numbered|above|following)\s+"
                      r"(?:sources?|articles?|passages?|context|texts?|documents?|question|answer|instructions?)\b"
                      r"|\bsource\s*\[?\d|\binstructions?\b|^\s*(?:question|answer)\s*:", re.IGNORECASE)


# "According to the sources, Louisiana will ...", "Based on the information provided in the
# sources, ...", "The answer is: 115": a lead-in about the sources
# or the task before a claim. The lead-in goes; the claim is judged like any other sentence.
_LEAD_IN_RE = re.compile(
    r"^\s*(?:(?:according\s+to|based\s+on|as\s+(?:stated|reported|said)\s+in|from|in)\s+"
    r"(?:the\s+(?:information|details|data)\s+(?:(?:provided|given|found)\s+)?(?:in|by)\s+)?"
    r"(?:the|these|this|those)\s+(?:provided\s+|given\s+|numbered\s+|above\s+)?"
    r"(?:sources?|articles?|passages?|context|texts?|documents?)(?:\s*\[\d+\])*\s*,\s*"
    r"|(?:the\s+)?answer(?:\s+is)?\s*:\s*)",
    re.IGNORECASE)


def without_lead_in(sentence: str) -> str:
    """The sentence without a leading "According to the sources," or "The answer is:". Only a
    whole claim is freed: a bare "14" after "The answer is:" is checkable only as "a 14 occurs in
    the source", so that sentence stays as it was (and is dropped as talk about the task)."""
    m = _LEAD_IN_RE.match(sentence)
    if not m or len(sentence[m.end():].split()) < policy.MIN_WORDS:
        return sentence
    rest = sentence[m.end():]
    return rest[:1].upper() + rest[1:]


def non_answer(sentence: str, question: str) -> str | None:
    """Why a sentence is no answer to `question` (None when it may be one).

    A question or a lead-in (ends in "?" or ":"), talk about the sources or the instructions,
    or nothing beyond what the question already says.
    """
    if asks_or_leads_in(sentence):
        return "a question or a lead-in, not an answer"
    if _META_RE.search(sentence):
        return "talks about the sources or the task, not the news"
    asked = content_tokens(question)
    if question and all(covered(t, asked) for t in content_tokens(sentence)):
        return "restates the question"
    return None


# ---------------------------------------------------------------------------------------------
# Verification


@dataclass
class Verified:
    """What survives verification, and what was changed on the way (notes are for --verbose and JSON)."""

    sentences: list[Sentence]
    used: list[int]  # evidence n cited, in first-use order
    invented: list[int]  # cited ids that are not among the evidence (removed)
    notes: list[str] = field(default_factory=list)
    abstained: bool = False


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(" .!?")


def is_abstention(answer_text: str) -> bool:
    """Whether the answer uses the fixed abstain phrase (case-insensitive, any final punctuation)."""
    return _norm(ABSTAIN_PHRASE) in " ".join(answer_text.lower().split())


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verify(answer_text: str, evidence: list[Evidence], threshold: float = policy.SUPPORT_THRESHOLD,
           replace_unsupported: bool = True, question: str = "") -> Verified:
    """Keep only answer sentences the evidence supports, each with a valid citation.

    Per sentence: invented ids are removed; supported when a cited evidence scores >= threshold,
    and then it cites only the evidence that does (each cited source must hold its claim); else
    any evidence that scores >= threshold is cited instead (the model forgot or mis-numbered the
    citation); else, with replace_unsupported, the sentence becomes the text of the evidence
    sentence it is closest to (dropped when that evidence is cited elsewhere in the answer, or
    nothing is close), or without it, is kept with supported=False.
    A non-answer (see `non_answer`) is dropped whatever it cites. The answer is abstained when it
    holds ABSTAIN_PHRASE or nothing is left.
    """
    by_n = {e.n: e for e in evidence}
    # A source vouches for its sentence and for its article's date and publisher.
    tokens = {e.n: passage_tokens(f"{e.text} {date_words(e.date)} {e.source or ''}") for e in evidence}
    text_tokens = {e.n: content_tokens(e.text) for e in evidence}
    notes: list[str] = []
    invented: list[int] = []

    # Pass 1: citations checked, supported sentences settled. Unsupported ones are None for now.
    parsed = parse_answer(answer_text)
    rows: list[tuple[str, list[int], Sentence | None]] = []
    for text, ids in parsed:
        valid = [i for i in ids if i in by_n]
        for i in ids:
            if i not in by_n and i not in invented:
                invented.append(i)
                notes.append(f"removed citation [{i}]: no such source")
        claim_text = without_lead_in(text)
        if claim_text != text:
            notes.append(f"dropped the lead-in of {_short(text)!r}")
            text = claim_text
        why_not = non_answer(text, question)
        if why_not:
            notes.append(f"dropped {_short(text)!r}: {why_not}")
            continue
        claim = claim_of(text)
        scores = {n: _claim_support(claim, tokens[n]) for n in by_n}
        holding = [n for n in valid if scores[n] >= threshold]
        if holding:
            if holding != valid:  # "A [1][2]" where [2] lacks what A states: [2] does not vouch for A
                notes.append(f"removed citation {_marks([n for n in valid if n not in holding])} "
                             f"that does not support {_short(text)!r}")
            rows.append((text, valid, Sentence(text, holding, True)))
            continue
        best = max(by_n, key=lambda n: scores[n], default=None)  # ties: first evidence wins
        if best is not None and scores[best] >= threshold:
            what = "uncited" if not valid else f"wrongly cited ({_marks(valid)})"
            notes.append(f"cited [{best}] for {what} sentence: {_short(text)!r}")
            rows.append((text, valid, Sentence(text, [best], True)))
            continue
        rows.append((text, valid, None))

    if is_abstention(answer_text):
        return Verified([], [], invented, notes + ["the model abstained"], True)

    # Pass 2: unsupported sentences replaced by (or dropped in favour of) evidence.
    cited = {n for _, _, s in rows if s for n in s.citations}
    sentences: list[Sentence] = []
    for text, valid, sentence in rows:
        if sentence is None:
            sentence = _unsupported(text, valid, evidence, text_tokens, cited, replace_unsupported, notes)
        if sentence is not None:
            sentences.append(sentence)

    sentences = _drop_duplicates(sentences, notes)
    if not sentences:
        return Verified([], [], invented, notes + ["no supported sentence left"], True)
    used = _dedupe([n for s in sentences for n in s.citations])
    return Verified(sentences, used, invented, notes, False)


def _marks(ids: list[int]) -> str:
    return "".join(f"[{i}]" for i in ids)


def _unsupported(text: str, valid: list[int], evidence: list[Evidence], text_tokens: dict[int, set[str]],
                 cited: set[int], replace_unsupported: bool, notes: list[str]) -> Sentence | None:
    """What an unsupported sentence becomes: evidence text, itself flagged, or nothing (None)."""
    if not replace_unsupported:
        notes.append(f"unsupported sentence kept: {_short(text)!r}")
        return Sentence(text, valid, False)
    claim = content_tokens(text)
    # Closeness ignores the number cap: "50 soldiers died" should find the "40 soldiers" sentence.
    # Ties go to the evidence the model cited, then to the earlier (better ranked) one.
    near = [max(_overlap(claim, text_tokens[e.n]), _overlap(text_tokens[e.n], claim)) for e in evidence]
    if not evidence or max(near) < policy.REPLACE_FLOOR:
        notes.append(f"dropped unsupported sentence: {_short(text)!r}")
        return None
    best = evidence[max(range(len(evidence)), key=lambda i: (near[i], evidence[i].n in valid, -i))]
    if best.n in cited:
        notes.append(f"dropped unsupported sentence, its closest source [{best.n}] is already cited: "
                     f"{_short(text)!r}")
        return None
    cited.add(best.n)
    notes.append(f"replaced unsupported sentence with source [{best.n}]: {_short(text)!r}")
    return Sentence(best.text, [best.n], True)


def _drop_duplicates(sentences: list[Sentence], notes: list[str]) -> list[Sentence]:
    """Keep the first of sentences with the same text; a later copy's citations join the first."""
    kept: dict[str, Sentence] = {}
    for s in sentences:
        key = _norm(s.text)
        first = kept.get(key)
        if first is None:
            kept[key] = Sentence(s.text, list(s.citations), s.supported)
            continue
        notes.append(f"removed duplicate sentence: {_short(s.text)!r}")
        if first.supported == s.supported:
            first.citations = _dedupe(first.citations + s.citations)
    return list(kept.values())


# ---------------------------------------------------------------------------------------------
# Output


def render(sentences: list[Sentence]) -> str:
    """The answer text, markers placed right before each sentence's final punctuation.

    "The council urged the firm to pay the fine [1][2]." A sentence ending in a closing
    quote or bracket gets its markers after it ('He said "go." [1]'), and one without final
    punctuation (a heading quoted as evidence) gets a period, so the answer reads as prose and
    parse_answer(render(s)) gives the same sentences and ids back.
    """
    parts: list[str] = []
    for s in sentences:
        text = s.text.strip()
        if not text:
            continue
        marks = _marks(s.citations)
        m = _END_RE.search(text)
        if not marks:
            parts.append(text if m else text + ".")
        elif m and not m.group(2):
            parts.append(f"{text[:m.start()].rstrip()} {marks}{m.group(1)}")
        elif m:
            parts.append(f"{text} {marks}")
        else:
            parts.append(f"{text} {marks}.")
    return " ".join(parts)


def renumber(sentences: list[Sentence], evidence: list[Evidence]) -> tuple[list[Sentence], list[Evidence]]:
    """Renumber cited evidence 1..m in first-use order; returns new sentences and the cited evidence.

    The prompt numbers evidence by retrieval rank, the answer may cite [3] before [1] and skip
    some: the user should read [1], [2], ... in order, matching the citations list exactly.
    Citations to ids not in `evidence` are dropped.
    """
    by_n = {e.n: e for e in evidence}
    mapping: dict[int, int] = {}
    for s in sentences:
        for n in s.citations:
            if n in by_n and n not in mapping:
                mapping[n] = len(mapping) + 1
    new_sentences = [replace(s, citations=_dedupe([mapping[n] for n in s.citations if n in mapping]))
                     for s in sentences]
    used = [replace(by_n[old], n=new) for old, new in mapping.items()]
    return new_sentences, used
