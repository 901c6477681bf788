"""Sentence splitting: offsets are exact and complete on any text; the rules fit news prose."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag.sentences import sentence_spans, split_sentences


def check_spans(text: str) -> list[tuple[int, int]]:
    """Assert every offset property and return the spans."""
    spans = sentence_spans(text)
    prev_end = 0
    covered = []
    for start, end in spans:
        assert prev_end <= start < end <= len(text)
        piece = text[start:end]
        assert piece == piece.strip(), (piece, text)
        covered.append(piece)
        # nothing but whitespace between sentences
        assert text[prev_end:start].strip() == ""
        prev_end = end
    assert text[prev_end:].strip() == ""
    # every non-space character exactly once, in order
    assert "".join("".join(c.split()) for c in covered) == "".join(text.split())
    return spans


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_offsets_any_text(text):
    check_spans(text)


# Text made mostly of the characters the rules look at, plus any character at all.
@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(
    st.sampled_from(list(".!?\"'”“’‘()[] \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029\xa0\u3000\x00")),
    st.sampled_from(["Mr", "Dr", "U", "S", "J", "No", "e.g", "etc", "A", "a", "5", "é", "É", "Σ", "İ"]),
    st.characters(),
), max_size=120).map("".join))
def test_offsets_punctuation_heavy_text(text):
    spans = check_spans(text)
    assert sentence_spans(text) == spans  # deterministic
    assert split_sentences(text) == [text[s:e] for s, e in spans]


@given(st.text(max_size=100), st.text(max_size=100))
@settings(max_examples=200, deadline=None)
def test_line_break_always_ends_a_sentence(left, right):
    text = f"{left}\n{right}"
    for s, e in check_spans(text):
        assert "\n" not in text[s:e]


def test_empty_and_blank():
    assert sentence_spans("") == []
    assert sentence_spans(" \n\t\r\n ") == []
    assert split_sentences("  One.  ") == ["One."]


def test_basic_news_prose():
    text = ('WASHINGTON (AFP) - The United States pressed Pakistan on Tuesday. "We urge Pakistan to '
            'cooperate," he said. Is it over? No! 40 people died. “It was awful,” she said.')
    assert split_sentences(text) == [
        "WASHINGTON (AFP) - The United States pressed Pakistan on Tuesday.",
        '"We urge Pakistan to cooperate," he said.',
        "Is it over?",
        "No!",
        "40 people died.",
        "“It was awful,” she said.",
    ]


def test_closing_quotes_and_brackets_stay_with_their_sentence():
    text = 'He said "go." Then he left. (It was late.) Next day.'
    assert split_sentences(text) == ['He said "go."', "Then he left.", "(It was late.)", "Next day."]
    assert split_sentences("“We will act.” The minister left.") == ["“We will act.”", "The minister left."]


def test_no_split_before_lowercase_or_without_space():
    assert split_sentences("It cost 3.5 million. prices rose.") == ["It cost 3.5 million. prices rose."]
    assert split_sentences("See example.com.Then") == ["See example.com.Then"]


@pytest.mark.parametrize("abbr", [
    "Mr.", "Mrs.", "Ms.", "Dr.", "St.", "Gen.", "Col.", "Lt.", "Sgt.", "Rep.", "Sen.", "Gov.",
    "Prof.", "Jr.", "Sr.", "Inc.", "Ltd.", "Co.", "Corp.", "vs.", "etc.", "e.g.", "i.e.", "U.S.",
    "U.K.", "U.N.", "Jan.", "Feb.", "Mar.", "Apr.", "Jun.", "Jul.", "Aug.", "Sep.", "Sept.", "Oct.",
    "Nov.", "Dec.", "J.",
])
def test_abbreviations_do_not_end_sentences(abbr):
    text = f"They met {abbr} Smith at noon. Then they left."
    assert split_sentences(text) == [f"They met {abbr} Smith at noon.", "Then they left."]


def test_abbreviation_after_opening_bracket_and_numbers():
    assert split_sentences("It was signed (Gen. Musharraf agreed) on Feb. 21. Talks followed.") == [
        "It was signed (Gen. Musharraf agreed) on Feb. 21.", "Talks followed."]
    assert split_sentences("Resolution No. 1267 applies. No. They refused.") == [
        "Resolution No. 1267 applies.", "No.", "They refused."]


def test_initials():
    assert split_sentences("J. R. R. Tolkien wrote it. U.S. officials agreed.") == [
        "J. R. R. Tolkien wrote it.", "U.S. officials agreed."]


def test_newlines_headings_and_paragraphs():
    text = "Pakistan denies role\n\nThe attack killed 40.\r\nIndia vowed to respond\u2028Talks\x0cend"
    assert split_sentences(text) == [
        "Pakistan denies role", "The attack killed 40.", "India vowed to respond", "Talks", "end"]
    assert split_sentences("Mr.\nSmith") == ["Mr.", "Smith"]


def test_offsets_point_into_original_text():
    text = "  First one.   Second one!\n\n  Third  "
    assert sentence_spans(text) == [(2, 12), (15, 26), (30, 35)]


def test_unicode_uppercase_starts_a_sentence():
    assert split_sentences("Il est parti. Étienne est resté.") == ["Il est parti.", "Étienne est resté."]


def test_ellipsis_and_repeated_marks():
    assert split_sentences("Wait... What?! Yes.") == ["Wait...", "What?!", "Yes."]


def test_ten_megabytes_single_line_is_fast():
    unit = ("The attack killed 40 people in Kashmir on Feb. 14, officials said. Mr. Palladino told "
            "reporters the U.S. was \"deeply concerned\" about it! Was it over? ")
    text = unit * (10_000_000 // len(unit) + 1)
    t0 = time.perf_counter()
    spans = sentence_spans(text)
    elapsed = time.perf_counter() - t0
    assert len(spans) == 3 * (10_000_000 // len(unit) + 1)
    assert elapsed < 10, elapsed


@pytest.mark.parametrize("text", [
    "." * 2_000_000, "a. " * 700_000, "A. " * 700_000, " " * 2_000_000, "\n" * 2_000_000,
    "x" * 2_000_000, "!?" * 1_000_000, "Mr. " * 500_000, "\u2028 " * 1_000_000,
])
def test_pathological_inputs_stay_linear(text):
    t0 = time.perf_counter()
    check_spans(text)
    assert time.perf_counter() - t0 < 10
