"""Citation parsing, support scoring, verification, rendering and renumbering."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rag.citations import (
    MARKER_RE,
    Verified,
    content_tokens,
    is_abstention,
    parse_answer,
    render,
    renumber,
    support_score,
    verify,
)
from rag.prompts import ABSTAIN_PHRASE
from rag.types import Evidence, Sentence
from rag.words import same_family


def ev(n: int, text: str, date: str | None = "2019-02-20", doc_id: str | None = None) -> Evidence:
    return Evidence(n=n, doc_id=doc_id or f"doc{n}.txt", chunk_id=f"doc{n}.txt:0-{len(text)}", start=0,
                    end=len(text), text=text, title=f"Title {n}", date=date, source="AFP", score=1.0 / n)


EVIDENCE = [
    ev(1, "The United States urged Pakistan to punish those responsible for the attack."),
    ev(2, "The suicide attack in Kashmir killed 40 Indian security personnel."),
    ev(3, "India blamed the Pakistan-based group Jaish-e-Mohammed for the bombing."),
    ev(4, "Tourists were shot in Pahalgam, killing 26 civilians.", date="2025-04-22"),
]


# --------------------------------------------------------------------------------------------
# Markers


@pytest.mark.parametrize("marker, ids", [
    ("[1]", ["1"]), ("[12]", ["12"]), ("[1, 2]", ["1, 2"]), ("[1,2,3]", ["1,2,3"]), ("[ 4 ]", ["4"]),
    ("[1][2]", ["1", "2"]), ("[1; 2]", ["1; 2"]),
])
def test_marker_re(marker, ids):
    assert [m.group(1) for m in MARKER_RE.finditer(marker)] == ids


@pytest.mark.parametrize("not_marker", ["[a]", "[]", "(1)", "[1-2]", "1]"])
def test_marker_re_ignores_other_brackets(not_marker):
    assert MARKER_RE.search(not_marker) is None


@pytest.mark.parametrize("answer, expected", [
    ("The US urged Pakistan to act [1].", [("The US urged Pakistan to act.", [1])]),
    ("The US urged Pakistan to act. [1]", [("The US urged Pakistan to act.", [1])]),
    ("The US urged Pakistan to act.[1][2]", [("The US urged Pakistan to act.", [1, 2])]),
    ("The US urged Pakistan to act [1, 2].", [("The US urged Pakistan to act.", [1, 2])]),
    ("The US urged Pakistan to act [1,2,3].", [("The US urged Pakistan to act.", [1, 2, 3])]),
    ("The US [2] urged Pakistan [1] to act [2].", [("The US urged Pakistan to act.", [2, 1])]),
    ("First claim. [1] Second claim. [2]", [("First claim.", [1]), ("Second claim.", [2])]),
    ("First claim [1]. Second claim [2][3].", [("First claim.", [1]), ("Second claim.", [2, 3])]),
    ("First claim\n[1] Second claim [2]", [("First claim", [1]), ("Second claim", [2])]),
    ("First claim.\n[1][2]", [("First claim.", [1, 2])]),
    ("[1] First claim. Second claim [2].", [("First claim.", [1]), ("Second claim.", [2])]),
    ('He said "we will act." [3] Then he left.', [('He said "we will act."', [3]), ("Then he left.", [])]),
    ("No citation here.", [("No citation here.", [])]),
    ("- First point [1].\n- Second point [2].", [("First point.", [1]), ("Second point.", [2])]),
    ("1. First point [1]\n2. Second point [2]", [("First point", [1]), ("Second point", [2])]),
    ("", []),
    ("[1][2]", []),
    # the prompt's own source-line opening, copied: the marker opens its sentence, the label goes
    ("[2] (2023-02-14, usatoday.com) Haley runs.", [("Haley runs.", [2])]),
    ("Biden spoke in March. [2] (2022-03-01, AP) He left.", [("Biden spoke in March.", []), ("He left.", [2])]),
    ("[1] (date unknown, AFP) Troops left. Talks began [3].", [("Troops left.", [1]), ("Talks began.", [3])]),
])
def test_parse_answer(answer, expected):
    assert parse_answer(answer) == expected


def test_parse_answer_tidies_whitespace():
    assert parse_answer("  The   US\turged ( [1] ) Pakistan [2] , firmly .  ") == [
        ("The US urged () Pakistan, firmly.", [1, 2])]


# --------------------------------------------------------------------------------------------
# Support


def test_support_full_and_partial():
    passage = EVIDENCE[0].text
    assert support_score("The US urged Pakistan to punish those responsible.", passage) == 1.0
    assert support_score("Pakistan was urged to punish the bombers.", passage) == pytest.approx(3 / 4)
    assert support_score("Aliens landed in Ohio.", passage) == 0.0
    assert 0.0 <= support_score("The US urged China to punish.", passage) < 1.0


def test_support_stems_and_acronyms():
    passage = "The U.S. urges Pakistan to punish attackers."
    assert support_score("The United States urged Pakistan to punish the attacker", passage) == 1.0


def test_unsupported_number_scores_zero():
    passage = EVIDENCE[1].text
    assert support_score("The attack killed 40 Indian security personnel.", passage) == 1.0
    assert support_score("The attack killed 50 Indian security personnel.", passage) == 0.0
    assert support_score("The attack killed fifty Indian security personnel.", passage) == 0.0
    assert support_score("The attack killed forty Indian security personnel.", passage) == 1.0


def test_number_forms():
    assert support_score("Twenty-six civilians were killed.", "26 civilians were killed") == 1.0
    assert support_score("1,200 people fled.", "1200 people fled") == 1.0
    assert support_score("Two hundred and six people fled.", "206 people fled") == 1.0
    assert support_score("3 million people fled.", "three million people fled") == 1.0
    assert support_score("One of the attackers fled.", "The attackers fled") == 1.0  # "one" is a pronoun
    assert support_score("It happened in 2019.", "It happened in 2025.") == 0.0


def test_sentence_without_content_tokens_scores_zero():
    assert support_score("It is what it is.", "It is what it is.") == 0.0
    assert support_score("", "anything") == 0.0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_support_score_in_unit_interval(sentence, passage):
    score = support_score(sentence, passage)
    assert 0.0 <= score <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_a_sentence_supports_itself_unless_empty(sentence):
    assert support_score(sentence, sentence) in (0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Verify


def test_supported_answer_is_kept():
    v = verify("The US urged Pakistan to punish those responsible [1].", EVIDENCE)
    assert isinstance(v, Verified)
    assert v.sentences == [Sentence("The US urged Pakistan to punish those responsible.", [1], True)]
    assert v.used == [1] and v.invented == [] and not v.abstained


def test_a_cited_source_that_lacks_the_claim_is_no_longer_cited():
    v = verify("The US urged Pakistan to punish those responsible [1][2].", EVIDENCE)
    assert v.sentences == [Sentence("The US urged Pakistan to punish those responsible.", [1], True)]
    assert v.used == [1] and any("removed citation [2]" in n for n in v.notes)


def test_invented_ids_removed_and_counted():
    v = verify("The US urged Pakistan to punish those responsible [1][7]. It was bad [9][7].", EVIDENCE)
    assert v.invented == [7, 9]
    assert "removed citation [7]: no such source" in v.notes
    assert "removed citation [9]: no such source" in v.notes
    assert all(n in (1, 2, 3, 4) for s in v.sentences for n in s.citations)
    assert v.sentences[0] == Sentence("The US urged Pakistan to punish those responsible.", [1], True)


def test_uncited_supported_sentence_gets_its_citation():
    v = verify("The suicide attack in Kashmir killed 40 Indian security personnel.", EVIDENCE)
    assert v.sentences == [Sentence("The suicide attack in Kashmir killed 40 Indian security personnel.",
                                    [2], True)]
    assert v.used == [2]
    assert any("cited [2]" in note for note in v.notes)


def test_wrongly_cited_sentence_gets_the_supporting_citation():
    v = verify("India blamed Jaish-e-Mohammed for the bombing [1].", EVIDENCE)
    assert v.sentences == [Sentence("India blamed Jaish-e-Mohammed for the bombing.", [3], True)]


def test_unsupported_number_replaced_by_evidence():
    v = verify("The attack killed 50 Indian soldiers [2].", EVIDENCE)
    assert v.sentences == [Sentence(EVIDENCE[1].text, [2], True)]
    assert any("replaced unsupported sentence with source [2]" in note for note in v.notes)


def test_unsupported_number_flagged_when_not_replacing():
    v = verify("The attack killed 50 Indian security personnel [2].", EVIDENCE, replace_unsupported=False)
    assert v.sentences == [Sentence("The attack killed 50 Indian security personnel.", [2], False)]
    assert v.used == [2] and not v.abstained


def test_unsupported_sentence_replaced_by_closest_evidence():
    v = verify("Tourists in Pahalgam were attacked by aliens [1].", EVIDENCE)
    assert v.sentences == [Sentence(EVIDENCE[3].text, [4], True)]


def test_unsupported_sentence_dropped_when_its_evidence_is_already_cited():
    answer = ("The suicide attack in Kashmir killed 40 Indian security personnel [2]. "
              "The Kashmir attack killed many Indian troops and police with a truck bomb.")
    v = verify(answer, EVIDENCE)
    assert v.sentences == [Sentence(EVIDENCE[1].text, [2], True)]
    assert any("already cited" in note for note in v.notes)


def test_chit_chat_is_dropped_not_replaced():
    v = verify("Sure, here you go! The US urged Pakistan to punish those responsible [1].", EVIDENCE)
    assert [s.text for s in v.sentences] == ["The US urged Pakistan to punish those responsible."]
    assert any(note.startswith("dropped unsupported sentence") for note in v.notes)


@pytest.mark.parametrize("answer", [
    ABSTAIN_PHRASE, ABSTAIN_PHRASE.upper(), ABSTAIN_PHRASE.rstrip(".") + "!", ABSTAIN_PHRASE.rstrip("."),
    f"I checked the sources. {ABSTAIN_PHRASE} [1]",
])
def test_abstain_phrase(answer):
    assert is_abstention(answer)
    v = verify(answer, EVIDENCE)
    assert v.abstained and v.sentences == [] and v.used == []


def test_empty_answer_abstains():
    assert verify("", EVIDENCE).abstained
    assert verify("   [1] ", EVIDENCE).abstained
    assert verify("The attack killed 50 people.", []).abstained


def test_nothing_supported_abstains():
    v = verify("Aliens landed in Ohio [1]. Martians cheered [2].", EVIDENCE)
    assert v.abstained and v.sentences == []


def test_duplicates_removed():
    answer = ("The US urged Pakistan to punish those responsible [1]. "
              "The US urged Pakistan to punish those responsible.")
    v = verify(answer, EVIDENCE)
    assert v.sentences == [Sentence("The US urged Pakistan to punish those responsible.", [1], True)]


def test_date_of_the_cited_article_supports_a_dated_claim():
    v = verify("In February 2019 the US urged Pakistan to punish those responsible [1].", EVIDENCE)
    assert v.sentences[0].supported and v.sentences[0].citations == [1]
    v = verify("In 2025 the US urged Pakistan to punish those responsible [1].", EVIDENCE,
               replace_unsupported=False)
    assert not v.sentences[0].supported


def test_used_in_first_use_order():
    answer = ("India blamed the Pakistan-based group Jaish-e-Mohammed [3]. "
              "The US urged Pakistan to punish those responsible [1][3].")
    v = verify(answer, EVIDENCE)
    assert v.used == [3, 1]


_words = st.sampled_from("the US urged Pakistan India attack killed forty 40 50 Kashmir aliens bombing "
                         "blamed tourists Pahalgam group".split())
# "40." alone is no sentence: a sentence starts with a word
_sentence = st.lists(_words, min_size=1, max_size=8).map(" ".join).filter(lambda s: s[:1].isalpha())
_answer = st.lists(st.tuples(_sentence, st.lists(st.integers(0, 9), max_size=3)), max_size=5).map(
    lambda parts: " ".join(f"{s.capitalize()} {''.join(f'[{i}]' for i in ids)}." for s, ids in parts))


@settings(max_examples=200, deadline=None)
@given(_answer, st.booleans())
def test_verify_invariants(answer, replace_unsupported):
    v = verify(answer, EVIDENCE, replace_unsupported=replace_unsupported)
    valid = {e.n for e in EVIDENCE}
    for s in v.sentences:
        assert set(s.citations) <= valid
        if replace_unsupported:
            assert s.supported
    assert v.used == list(dict.fromkeys(n for s in v.sentences for n in s.citations))
    assert not (set(v.invented) & valid)
    assert v.abstained == (v.sentences == [])
    texts = [" ".join(s.text.lower().split()) for s in v.sentences]
    assert len(texts) == len(set(texts))


# --------------------------------------------------------------------------------------------
# Render and renumber


def test_render_places_markers_before_final_punctuation():
    sentences = [
        Sentence("The US urged Pakistan to punish those responsible.", [1], True),
        Sentence("Was it over?", [2, 3], True),
        Sentence('He said "we will act."', [4], True),
        Sentence("Pakistan denies role", [2], True),
        Sentence("No citation.", [], True),
    ]
    assert render(sentences) == ('The US urged Pakistan to punish those responsible [1]. Was it over [2][3]? '
                                 'He said "we will act." [4] Pakistan denies role [2]. No citation.')
    assert render([]) == ""


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_sentence, st.lists(st.integers(1, 20), max_size=3, unique=True),
                          st.sampled_from([".", "!", "?", "", '."'])), min_size=1, max_size=5))
def test_render_then_parse_round_trip(parts):
    sentences = [Sentence(f"{s.capitalize()}{end}", ids, True) for s, ids, end in parts]
    parsed = parse_answer(render(sentences))
    assert [ids for _, ids in parsed] == [s.citations for s in sentences]
    for (text, _), s in zip(parsed, sentences, strict=True):
        assert text.rstrip(".") == s.text.rstrip(".")


def test_renumber_dense_in_first_use_order():
    sentences = [Sentence("a.", [3], True), Sentence("b.", [1, 3], True), Sentence("c.", [4], False)]
    new, used = renumber(sentences, EVIDENCE)
    assert [s.citations for s in new] == [[1], [2, 1], [3]]
    assert [e.n for e in used] == [1, 2, 3]
    assert [e.doc_id for e in used] == ["doc3.txt", "doc1.txt", "doc4.txt"]
    assert [e.text for e in used] == [EVIDENCE[2].text, EVIDENCE[0].text, EVIDENCE[3].text]
    assert EVIDENCE[2].n == 3  # the input is not modified
    assert [s.supported for s in new] == [True, True, False]


def test_renumber_drops_unknown_ids_and_handles_empty():
    new, used = renumber([Sentence("a.", [9, 2], True)], EVIDENCE)
    assert new[0].citations == [1] and [e.doc_id for e in used] == ["doc2.txt"]
    assert renumber([], EVIDENCE) == ([], [])


def test_verify_render_renumber_end_to_end():
    answer = ("India blamed Jaish-e-Mohammed for the bombing [3]. The attack killed 50 people [2][8]. "
              "The US urged Pakistan to punish those responsible.")
    v = verify(answer, EVIDENCE)
    sentences, used = renumber(v.sentences, EVIDENCE)
    assert render(sentences) == (
        "India blamed Jaish-e-Mohammed for the bombing [1]. "
        "The suicide attack in Kashmir killed 40 Indian security personnel [2]. "
        "The US urged Pakistan to punish those responsible [3].")
    assert [e.doc_id for e in used] == ["doc3.txt", "doc2.txt", "doc1.txt"]
    assert v.invented == [8]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.one_of(st.sampled_from(list("[]0123456789,;. !?\n\"”")), st.characters()),
               max_size=200))
def test_parse_and_verify_any_text(text):
    for clean, ids in parse_answer(text):
        assert clean == clean.strip() and clean
        assert MARKER_RE.search(clean) is None
        assert len(ids) == len(set(ids))
    v = verify(text, EVIDENCE)
    assert v.abstained == (v.sentences == [])


@pytest.mark.parametrize("a, b", [
    ("carried", "carry"), ("tried", "try"), ("urges", "urging"), ("stopped", "stop"), ("investigations", "investigate"),
])
def test_word_forms_meet(a, b):
    assert content_tokens(a) == content_tokens(b)


@pytest.mark.parametrize("a, b", [("Pakistani", "Pakistan"), ("Kenyan", "Kenya"), ("Canadian", "Canada")])
def test_regular_derivations_are_one_family(a, b):
    (x,), (y,) = content_tokens(a), content_tokens(b)
    assert same_family(x, y)


@pytest.mark.parametrize("a, b", [("minister", "ministry"), ("four", "hour"), ("tour", "tor"), ("lost", "list"),
                                  ("news", "new"), ("rose", "rise"), ("left", "leave")])
def test_different_words_stay_apart(a, b):
    assert content_tokens(a) != content_tokens(b)


def test_a_clause_glued_on_from_another_source_is_unsupported():
    passage = ("The US is urging both India and Pakistan to de-escalate the situation and has backed direct "
               "dialogue between the two sides.")
    blended = "The US urges Pakistan to de-escalate the situation and to punish those responsible for the attack."
    assert support_score("The US urged India and Pakistan to de-escalate the situation.", passage) == 1.0
    assert support_score(blended, passage) == 0.0
    short = "The US urges Pakistan to de-escalate the situation and to punish those responsible."
    assert support_score(short, passage) == 0.0  # a two-word clause from elsewhere sinks it too
    items = [ev(1, passage, date=None), ev(2, EVIDENCE[0].text)]
    verified = verify(f"{blended} [1]", items)
    assert all(s.text != blended for s in verified.sentences)
    assert all(s.supported for s in verified.sentences)


PULWAMA = ("The attack in Pulwama was claimed by the Pakistan-based Islamist group Jaish-e-Mohammed (JeM), "
           "which killed 40 troopers.")


@pytest.mark.parametrize("answer", [
    "Question: How did Pakistan retaliate against Indian airlines [1]?",
    "The State Department spokesperson quoted by the answer is: [1].",
    "According to the provided sources, the attack in Pulwama was claimed [1].",
    "The attack in Pulwama was claimed [1].",  # adds nothing the question lacks
    "The answer is: 40 [1].",  # a bare figure is no checkable claim, whatever the source holds
])
def test_non_answers_are_never_printed_as_supported(answer):
    question = "Who claimed the attack in Pulwama?"
    verified = verify(answer, [ev(1, PULWAMA)], question=question)
    assert all(s.text not in answer for s in verified.sentences)


@pytest.mark.parametrize("answer", [
    "According to the provided sources, the attack was claimed by Jaish-e-Mohammed [1].",
    "The answer is: the Islamist group Jaish-e-Mohammed [1].",
    "Based on the information provided in the sources, the attack was claimed by Jaish-e-Mohammed [1].",
])
def test_a_lead_in_about_the_sources_goes_and_the_claim_is_judged_alone(answer):
    verified = verify(answer, [ev(1, PULWAMA)], question="Who claimed the attack in Pulwama?")
    [sentence] = verified.sentences
    assert sentence.supported and "Jaish-e-Mohammed" in sentence.text
    assert not re.search(r"(?i)sources|answer is", sentence.text)
    assert sentence.text[0].isupper()


def test_a_name_the_cited_source_lacks_sinks_the_sentence():
    blended = "The attack on Pahalgam was claimed by the Pakistan-based Islamist group Jaish-e-Mohammed (JeM)."
    assert support_score(blended, PULWAMA) == 0.0  # the source is about Pulwama, never Pahalgam
    assert support_score(blended.replace("Pahalgam", "Pulwama"), PULWAMA) > 0.6
    assert support_score("The group claimed the attack in March.", PULWAMA) == 0.0  # a date the source lacks


def test_a_spelled_out_name_matches_its_abbreviation_both_ways():
    assert support_score("The United States urged Pakistan to act.", "The U.S. urged Pakistan to act.") == 1.0
    assert support_score("The US urged Pakistan to act.", "The United States urged Pakistan to act.") == 1.0


def test_two_sentences_of_one_article_never_vouch_for_a_claim_together():
    """Joining sentences of one article lets a blend through: each half is in the article, the
    claim is false. Measured on the calibration split: +1 question, 35 joined claims, some false."""
    article = [ev(1, "Lena Kovac won the 2023 Harbour Open at Porto Marina.", doc_id="tennis.txt"),
               ev(2, "Sofia Marchetti won the Harbour Open in 2014 as well.", doc_id="tennis.txt")]
    blend = "The 2023 Harbour Open was won by Sofia Marchetti at Porto Marina."
    verified = verify(f"{blend} [1][2]", article)
    assert all(s.text != blend for s in verified.sentences)
