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

from rag.prompts import ABSTAIN_PHRASE
from rag.sentences import split_sentences
from rag.types import Evidence, Sentence

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


def parse_answer(text: str) -> list[tuple[str, list[int]]]:
    """Each answer sentence's clean text (markers removed) with its marker ids, in order, de-duplicated.

    A marker after a sentence's final punctuation, or at the start of the next sentence, belongs
    to the preceding sentence; a sentence that is only markers gives its ids to the one before.
    List bullets ("- ", "1. ") at line starts are dropped so they do not read as sentences.
    """
    text = _LIST_BULLET_RE.sub("", text)
    text = _AFTER_END_RE.sub(_move_markers_before_end, text)
    out: list[tuple[str, list[int]]] = []
    pending: list[int] = []  # markers seen before the first sentence with words
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

_TOKEN_RE = re.compile(r"[0-9]+(?:[.,][0-9]+)*|[^\W\d_]+")
_THOUSANDS_RE = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_ACRONYMS_RE = re.compile(r"\b(?:[A-Z]\.){2,}")  # U.S. -> US, U.N. -> UN
_PHRASES = {"united states": "US", "united kingdom": "UK", "united nations": "UN"}
_PHRASES_RE = re.compile(r"\b(" + "|".join(_PHRASES) + r")\b", re.IGNORECASE)

_SMALL = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}
_SCALES = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}

_STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had
has have having he her here hers herself him himself his how i if in into is it its itself just
me more most my myself no nor not now of off on once only or other our ours ourselves out over
own same she should so some such than that the their theirs them themselves then there these
they this those through to too under until up upon very was we were what when where which while
who whom why will with would you your yours yourself yourselves us one ones s t th st nd rd
said says say saying told tell according article articles source sources text passage evidence
however meanwhile
""".split())


def _number(token: str) -> str:
    """Canonical form of a numeric token: 1,200 -> 1200, 040 -> 40, 3.50 -> 3.5."""
    whole, _, frac = token.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def _format(value: float) -> str:
    return str(int(value)) if value.is_integer() else _number(f"{value:f}")


def _is_number(token: str) -> bool:
    return token[0] in "0123456789"


def _raw_tokens(text: str) -> list[str]:
    """Word and number tokens; commas inside numbers handled, case kept for acronyms."""
    text = _ACRONYMS_RE.sub(lambda m: m.group(0).replace(".", ""), text)
    text = _PHRASES_RE.sub(lambda m: _PHRASES[m.group(0).lower()], text)
    out: list[str] = []
    for tok in _TOKEN_RE.findall(text):
        if _is_number(tok):
            if _THOUSANDS_RE.fullmatch(tok):
                out.append(_number(tok.replace(",", "")))
            else:
                out.extend(_number(part) for part in tok.split(","))
        else:
            out.append(tok)
    return out


# Which number word may follow which: "forty two", "two hundred and six", "three million".
# A unit after a unit ("six; one of them") starts a new number.
_FOLLOWS = {
    "": {"unit", "ten", "scale"},
    "unit": {"hundred", "scale"},
    "ten": {"unit", "hundred", "scale"},
    "hundred": {"unit", "ten", "scale", "and"},
    "scale": {"unit", "ten", "hundred", "and"},
    "and": {"unit", "ten"},
}


def _number_word_kind(word: str, following: str) -> str:
    if word in _SMALL:
        return "ten" if _SMALL[word] >= 20 else "unit"
    if word == "hundred":
        return "hundred"
    if word in _SCALES:
        return "scale"
    if word == "and" and following in _SMALL:
        return "and"
    return ""


def _merge_numbers(tokens: list[str]) -> list[str]:
    """Number words become digits ("forty-two" -> 42, "two hundred and six" -> 206, "3 million" -> 3000000).

    A lone "one" stays a word: it is far more often a pronoun ("one of the ...") than a count.
    """
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok, low = tokens[i], tokens[i].lower()
        nxt = tokens[i + 1].lower() if i + 1 < len(tokens) else ""
        if _is_number(tok):
            if nxt in _SCALES and tok.replace(".", "", 1).isdigit():
                out.append(_format(float(tok) * _SCALES[nxt]))
                i += 2
            else:
                out.append(tok)
                i += 1
            continue
        if low not in _SMALL and low not in _SCALES:
            out.append(tok)
            i += 1
            continue
        total, current, j, prev = 0, 0, i, ""
        while j < len(tokens):
            word = tokens[j].lower()
            kind = _number_word_kind(word, tokens[j + 1].lower() if j + 1 < len(tokens) else "")
            if not kind or kind not in _FOLLOWS[prev] or (prev == "ten" and kind == "unit"
                                                           and _SMALL[word] > 9):
                break
            if kind in ("unit", "ten"):
                current += _SMALL[word]
            elif kind == "hundred":
                current = (current or 1) * 100
            elif kind == "scale":
                total += (current or 1) * _SCALES[word]
                current = 0
            prev = kind
            j += 1
        out.append(tok if (j == i + 1 and low == "one") else str(total + current))
        i = j
    return out


# Irregular forms of verbs news prose uses all the time, mapped to their base form.
_IRREGULAR = {
    "spoke": "speak", "spoken": "speak", "took": "take", "taken": "take", "held": "hold",
    "met": "meet", "won": "win", "led": "lead", "fought": "fight", "struck": "strike",
    "sought": "seek", "began": "begin", "begun": "begin", "gave": "give", "given": "give",
    "went": "go", "gone": "go", "made": "make", "came": "come", "saw": "see", "seen": "see",
    "knew": "know", "known": "know", "thought": "think", "brought": "bring", "bought": "buy",
    "caught": "catch", "left": "leave", "lost": "lose", "kept": "keep", "sent": "send",
    "spent": "spend", "stood": "stand", "ran": "run", "wrote": "write", "written": "write",
    "chose": "choose", "chosen": "choose", "drew": "draw", "drawn": "draw", "flew": "fly",
    "flown": "fly", "grew": "grow", "grown": "grow", "rose": "rise", "risen": "rise",
    "shot": "shoot", "hit": "hit", "fell": "fall", "fallen": "fall", "broke": "break",
    "broken": "break", "froze": "freeze", "frozen": "freeze", "hid": "hide", "hidden": "hide",
    "paid": "pay", "laid": "lay", "meant": "mean", "felt": "feel", "heard": "hear",
    "found": "find", "became": "become", "withdrew": "withdraw", "withdrawn": "withdraw",
}
# Demonyms folded into their country: "Pakistani officials" are Pakistan's officials.
_DEMONYMS = {
    "indian": "india", "pakistani": "pakistan", "chinese": "china", "afghan": "afghanistan",
    "british": "britain", "french": "france", "russian": "russia", "iranian": "iran",
    "israeli": "israel", "ukrainian": "ukraine", "japanese": "japan", "german": "germany",
    "bangladeshi": "bangladesh", "kashmiri": "kashmir", "nepali": "nepal", "nepalese": "nepal",
    "turkish": "turkey", "egyptian": "egypt", "syrian": "syria",
    "iraqi": "iraq", "american": "america", "canadian": "canada", "australian": "australia",
}
# British spellings folded into American ones: "defence" and "defense" are one word.
_SPELLINGS = [
    (re.compile(r"(?<=\w{3})is(e|ed|es|ing|ation|ations)$"), r"iz\1"),  # organise -> organize
    (re.compile(r"(?<=\w\w[^aeiou])our(s|ed|ing|ite|ites)?$"), r"or\1"),  # labour -> labor
    (re.compile(r"(?<=[fc])ence$"), "ense"),  # defence -> defense, licence -> license
    (re.compile(r"(?<=\w\w[bt])re(s)?$"), r"er\1"),  # centre -> center, theatre -> theater
]


def _stem(word: str) -> str:
    """Light suffix stripping so 'urges', 'urged', 'urging' and 'urge' meet (and 'spoke' and
    'speak', 'carried' and 'carry', 'defence' and 'defense')."""
    word = _IRREGULAR.get(word, word)
    if word.endswith("s") and word[:-1] in _DEMONYMS:  # Pakistanis, Afghans
        word = word[:-1]
    word = _DEMONYMS.get(word, word)
    for pattern, replacement in _SPELLINGS:
        word = pattern.sub(replacement, word)
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if word[-1] == word[-2] and word[-1] not in "lsz":  # stopped -> stop
                word = word[:-1]
            elif suffix == "ed" and word[-1] == "i":  # carried -> carry
                word = word[:-1] + "y"
            break
    else:
        if word.endswith(("sses", "xes", "zes", "ches", "shes")):
            word = word[:-2]
        elif word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
            word = word[:-1]
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def content_tokens(text: str) -> set[str]:
    """Stemmed, lower-cased content words and canonical numbers of `text`."""
    out: set[str] = set()
    for tok in _merge_numbers(_raw_tokens(text)):
        if _is_number(tok):
            out.add(tok)
            continue
        low = tok.lower()
        acronym = len(tok) >= 2 and tok.isupper()  # US, UN: not the pronoun "us"
        if (low in _STOPWORDS and not acronym) or (len(low) < 2 and not acronym):
            continue
        out.add(_stem(low))
    return out


def _overlap(claim: set[str], passage: set[str]) -> float:
    return len(claim & passage) / len(claim) if claim else 0.0


def _capped(claim: set[str], passage: set[str]) -> float:
    if any(_is_number(t) and t not in passage for t in claim):
        return 0.0
    return _overlap(claim, passage)


# A clause ("..., and to punish those responsible") with at least CLAUSE_TOKENS content words
# must find CLAUSE_FLOOR of them in the passage (the same share a whole sentence needs), or the
# whole sentence is unsupported: a small model glues a clause from one crisis onto a sentence
# about the other, and the sentence-wide share alone can still pass.
CLAUSE_TOKENS = 2
CLAUSE_FLOOR = 0.6
_CLAUSE_SPLIT = re.compile(r"[,;:()]|\s[–—-]\s|\b(?:and|but|while|whereas|which|who|after|before|because)\b",
                           re.IGNORECASE)


def _clauses(sentence: str) -> list[set[str]]:
    """The content tokens of each clause of `sentence` that is long enough to be checked alone."""
    clauses = (content_tokens(clause) for clause in _CLAUSE_SPLIT.split(sentence))
    return [words for words in clauses if len(words) >= CLAUSE_TOKENS]


def _claim_support(claim: set[str], clauses: list[set[str]], passage: set[str]) -> float:
    """Share of the claim's tokens in the passage; 0 when a number or a whole clause is missing."""
    if any(_overlap(words, passage) < CLAUSE_FLOOR for words in clauses):
        return 0.0
    return _capped(claim, passage)


def support_score(sentence: str, passage: str) -> float:
    """Share of the sentence's content tokens found in the passage, in [0, 1].

    0 when the sentence states a number the passage does not hold (numbers are where small
    models hallucinate most, and a wrong count must never pass as supported), or when one of
    its clauses is nearly all foreign to the passage.
    """
    return _claim_support(content_tokens(sentence), _clauses(sentence), content_tokens(passage))


# ---------------------------------------------------------------------------------------------
# Verification

# An unsupported sentence is only replaced by an evidence sentence that shares at least this
# share of words with it (either way round); below that it is chit-chat ("Sure!") and dropped.
REPLACE_FLOOR = 0.25

_MONTHS = ("January February March April May June July August September October November "
           "December").split()
_DATE_RE = re.compile(r"(\d{4})-(\d{2})(?:-(\d{2}))?")


@dataclass
class Verified:
    """What survives verification, and what was changed on the way (notes are for --verbose and JSON)."""

    sentences: list[Sentence]
    used: list[int]  # evidence n cited, in first-use order
    invented: list[int]  # cited ids that are not among the evidence (removed)
    notes: list[str] = field(default_factory=list)
    abstained: bool = False


def _date_words(date: str | None) -> str:
    """'2019-02-20' -> '2019 February 20': an answer may date a claim from its article's date."""
    m = _DATE_RE.fullmatch(date or "")
    if not m or not 1 <= int(m.group(2)) <= 12:
        return ""
    return " ".join(x for x in (m.group(1), _MONTHS[int(m.group(2)) - 1], m.group(3)) if x)


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(" .!?")


def is_abstention(answer_text: str) -> bool:
    """Whether the answer uses the fixed abstain phrase (case-insensitive, any final punctuation)."""
    return _norm(ABSTAIN_PHRASE) in " ".join(answer_text.lower().split())


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verify(answer_text: str, evidence: list[Evidence], threshold: float = 0.6,
           replace_unsupported: bool = True) -> Verified:
    """Keep only answer sentences the evidence supports, each with a valid citation.

    Per sentence: invented ids are removed; supported when its best cited evidence scores
    >= threshold; else any evidence that scores >= threshold is cited instead (the model forgot
    or mis-numbered the citation); else, with replace_unsupported, the sentence becomes the
    text of the evidence sentence it is closest to (dropped when that evidence is cited
    elsewhere in the answer, or nothing is close), or without it, is kept with supported=False.
    The answer is abstained when it holds ABSTAIN_PHRASE or nothing is left.
    """
    by_n = {e.n: e for e in evidence}
    tokens = {e.n: content_tokens(f"{e.text} {_date_words(e.date)}") for e in evidence}
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
        claim, clauses = content_tokens(text), _clauses(text)
        scores = {n: _claim_support(claim, clauses, tokens[n]) for n in by_n}
        best_cited = max((scores[n] for n in valid), default=0.0)
        if best_cited >= threshold:
            rows.append((text, valid, Sentence(text, valid, True)))
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
    if not evidence or max(near) < REPLACE_FLOOR:
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

    "The US urged Pakistan to punish those responsible [1][2]." A sentence ending in a closing
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
