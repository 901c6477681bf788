"""Evidence selection and the abstain decision, with hand-made hits and a bag-of-words embedder."""

from __future__ import annotations

import zlib
from datetime import date, timedelta

import numpy as np
import pytest

from rag import evidence, policy
from rag.filters import Filters, news_window, recent_window
from rag.types import Evidence, Hit
from rag.words import content_tokens


def bag_embed(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for the embedder: normalised hashed bags of content tokens."""
    out = np.zeros((len(texts), 256), dtype=np.float32)
    for i, text in enumerate(texts):
        for token in content_tokens(text):
            out[i, zlib.crc32(token.encode()) % 256] += 1.0
        norm = np.linalg.norm(out[i])
        if norm:
            out[i] /= norm
    return out


def hit(text: str, *, doc_id: str = "a.txt", date: str | None = "2019-02-20", rank: int = 1) -> Hit:
    return Hit(rank=rank, chunk_id=f"{doc_id}:0-{len(text)}", doc_id=doc_id, start=0, end=len(text), text=text,
               title="A title", date=date, source=None, score=1.0)


def ev(text: str, score: float = 0.6, date: str | None = "2019-02-20") -> Evidence:
    return Evidence(n=1, doc_id="a.txt", chunk_id="a.txt:0-1", start=0, end=len(text), text=text,
                    title="A title", date=date, source=None, score=score)


@pytest.mark.parametrize("question, kind", [
    ("When did the border reopen?", "a date"),
    ("On what date did the strikes happen?", "a date"),
    ("How many people were arrested?", "a number"),
    ("How long did the phone call last?", "a duration"),
    ("Who leads the group?", "a name"),
    ("What was the name of the bomber?", "a name"),
    ("What did the US urge Pakistan to do?", None),
])
def test_answer_type(question, kind):
    found = evidence.answer_type(question)
    assert (found and evidence.KIND_NAMES[found]) == kind


def test_a_name_the_question_already_holds_is_not_new():
    who = evidence.answer_type("Who warned of an Indian incursion?")
    assert not evidence.holds_new(who, "Officials said India would act soon.", "Who warned of an Indian incursion?")
    assert evidence.holds_new(who, "Officials said Khawaja Asif warned of it.", "Who warned of an Indian incursion?")


def test_the_kind_asked_for_is_one_feature_not_a_veto():
    question = "When did the Wagah border reopen?"
    closed = "The Wagah border has also been closed to travellers from both countries."
    reopened = "The Wagah border reopened on March 3 after talks between both countries."
    without, _ = evidence.features(question, [ev(closed)], [hit(closed)])
    with_date, _ = evidence.features(question, [ev(reopened)], [hit(reopened)])
    assert without["typed"] == 0.0 and with_date["typed"] == 1.0
    assert policy.answer_score(without) < policy.answer_score(with_date)


def test_no_single_feature_refuses_on_its_own():
    strong = dict.fromkeys(policy.FEATURES, 1.0)
    for name in policy.FEATURES:
        assert policy.answer_score({**strong, name: 0.0}) >= policy.ANSWER_AT, name


def test_a_question_that_asks_two_things_is_covered_part_by_part():
    question = "Which team won the cycling race in Lyon, and who chaired the water board meeting in Porto?"
    race = "A Dutch team won the cycling race in Lyon on Sunday."
    board = "Maria Silva chaired the water board meeting in Porto."
    both, _ = evidence.features(question, [ev(race, 0.7), ev(board, 0.5)], [hit(race), hit(board)])
    one, _ = evidence.features(question, [ev(race, 0.7)], [hit(race)])
    # Each sentence holds all of its part's words: the question is covered in full, though no
    # one sentence covers it. Without the second part's sentence, only the first part is.
    assert both["covered"] == 1.0
    assert one["covered"] == 0.5
    assert policy.answer_score(one) < policy.answer_score(both)


def test_parts_not_found_are_the_standalone_parts_no_hit_speaks_to():
    question = "Which union called the ferry strike in Harbor City, and who won the chess championship in Dunmore?"
    ferry = hit("The Dockworkers Guild called the ferry strike in Harbor City on Monday.")
    chess = hit("Ines Marlow won the chess championship in Dunmore.", doc_id="b.txt")
    assert evidence.parts_not_found(question, [ferry]) == ["who won the chess championship in Dunmore"]
    assert evidence.parts_not_found(question, [chess]) == ["Which union called the ferry strike in Harbor City"]
    assert evidence.parts_not_found(question, [ferry, chess]) == []
    # a part that leans on the other ("and who in 2025?") is not searched alone, nor is a one-part question
    assert evidence.parts_not_found("Who chaired the ferry strike talks in 2019, and who in 2025?", [chess]) == []
    assert evidence.parts_not_found("Which union called the ferry strike in Harbor City?", [chess]) == []


def test_the_publisher_counts_as_evidence_for_a_question_naming_it():
    text = "The company said its profits doubled in the last quarter."
    question = "According to Reuters, what happened to the company's profits?"
    named = hit(text)
    named.source = "Reuters"
    with_source, _ = evidence.features(question, [ev(text)], [named])
    without, missing = evidence.features(question, [ev(text)], [hit(text)])
    assert with_source["keys"] == 1.0 and without["keys"] < 1.0 and missing == ["reuter"]


def test_date_header_is_not_quoted_as_evidence():
    text = "date 2019-02-20 WASHINGTON (AFP) - The United States pressed Pakistan to punish the attackers."
    (chosen,) = evidence.select("What did the US press Pakistan to do?", [hit(text)], bag_embed)
    assert chosen.text.startswith("WASHINGTON (AFP)")
    assert text[chosen.start:chosen.end] == chosen.text


def test_front_matter_is_not_quoted_as_evidence():
    text = ("---\ntitle: Halvorsen Foods makes $4.2 billion bid for Brightmeadow Dairy\ndate: 2023-05-10\n"
            "source: Financial Ledger\n---\nHalvorsen Foods offered $38 per share for Brightmeadow Dairy.")
    chosen = evidence.select("How much did Halvorsen bid for Brightmeadow Dairy?", [hit(text)], bag_embed)
    assert [e.text for e in chosen] == ["Halvorsen Foods offered $38 per share for Brightmeadow Dairy."]


def test_a_question_or_a_lead_in_is_no_evidence_but_reads_as_context():
    text = ("Who won the city marathon on a record-breaking morning? "
            "A schoolteacher from Ventura won the city marathon in record time.")
    chosen = evidence.select("Who won the city marathon?", [hit(text)], bag_embed)
    assert [e.text for e in chosen] == ["A schoolteacher from Ventura won the city marathon in record time."]
    answer = evidence.candidates([hit(text)])[1]
    assert answer.before.startswith("Who won")  # the teaser still tells what the next sentence is about
    baseline = evidence.top_by_cosine("Who won the city marathon?", [hit(text)], bag_embed)
    assert len(baseline) == 2  # the plain baseline keeps every sentence, as defined
    listed = "The council named three winners of the design contest:\nThe Ventura ferry terminal won the first prize."
    chosen = evidence.select("Which design won the first prize in the contest?", [hit(listed)], bag_embed)
    assert [e.text for e in chosen] == ["The Ventura ferry terminal won the first prize."]
    quoted = '“Who will pay for the repairs?” the mayor asked at the council meeting on Monday.'
    assert [e.text for e in evidence.select("Who will pay for the repairs?", [hit(quoted)], bag_embed)] == [quoted]


def test_a_year_in_the_question_is_covered_by_the_article_date():
    question = "Who claimed the 2019 attack?"
    old = hit("The attack was claimed by the group Jaish-e-Mohammed in Kashmir.", doc_id="old.txt")
    new = hit("The attack was claimed by the group The Resistance Front in Kashmir.", doc_id="new.txt",
              date="2025-05-01", rank=2)
    chosen = evidence.select(question, [new, old], bag_embed)
    assert chosen[0].doc_id == "old.txt"


def test_unrelated_evidence_abstains():
    verdict = evidence.assess("Who won the cricket match?", [ev("Rain fell in Delhi.", score=0.1)],
                              [hit("Rain fell in Delhi.")])
    assert not verdict.answerable and "weakly related" in verdict.reason


def test_a_name_missing_from_the_passages_abstains():
    text = "Pakistan's prime minister called for calm after the attack in Kashmir."
    verdict = evidence.assess("What did Imran Khan say about the attack?", [ev(text)], [hit(text)])
    assert verdict.missing == ["imran", "khan"]
    assert verdict.features["keys"] == 0.0


def test_a_sentence_that_only_restates_the_question_ranks_below_the_answer():
    question = "Which species does the genetics company Colossal want to bring back to life?"
    echo = "The genetics company Colossal wants to bring species back to life."
    answer = "The genetics company Colossal wants to bring the Dodo back to life."
    text = f"{echo} {answer}"

    def equally_close(texts: list[str]) -> np.ndarray:  # an embedder that cannot tell the two apart
        return np.ones((len(texts), 4), dtype=np.float32) / 2

    assert evidence.select(question, [hit(text)], equally_close)[0].text == answer
    saved = policy.NOVELTY_WEIGHT, policy.NEW_NAME_BONUS
    try:  # without the novelty and new-name terms the echo, which holds every asked word, wins
        policy.NOVELTY_WEIGHT = policy.NEW_NAME_BONUS = 0.0
        assert evidence.select(question, [hit(text)], equally_close)[0].text == echo
    finally:
        policy.NOVELTY_WEIGHT, policy.NEW_NAME_BONUS = saved


def test_a_sentence_is_also_read_after_the_one_before_it():
    question = "When will the steel plant close?"
    ferry = hit("The harbour ferry timetable was reviewed. She said it would close in March.", doc_id="ferry.txt")
    plant = hit("The steel plant was sold to a rival. He said it would close in March.", doc_id="plant.txt", rank=2)

    def quoted() -> str:  # the two "close in March" sentences are near-copies: one is quoted, one folded
        return next(e.doc_id for e in evidence.select(question, [ferry, plant], bag_embed)
                    if e.text.endswith("close in March."))

    assert quoted() == "plant.txt"  # the same words alone; only the sentence before tells them apart
    saved = policy.CONTEXT_WEIGHT
    try:  # read alone, the two tie and the better-ranked hit wins
        policy.CONTEXT_WEIGHT = 0.0
        assert quoted() == "ferry.txt"
    finally:
        policy.CONTEXT_WEIGHT = saved


def test_this_week_prefers_the_report_from_those_days():
    question = "Which company recalled its heaters this week?"
    old = hit("Orbis recalled its heaters after fires in homes.", doc_id="old.txt", date="2021-03-02")
    new = hit("Kestrel recalled its heaters after fires in homes.", doc_id="new.txt", date="2023-05-08", rank=2)
    window = recent_window(question, "2023-05-10")
    assert window == Filters(since="2023-05-01", until="2023-05-10")
    assert evidence.select(question, [old, new], bag_embed)[0].doc_id == "old.txt"  # no date asked: rank wins
    assert evidence.select(question, [old, new], bag_embed, window=window)[0].doc_id == "new.txt"


def test_a_news_question_prefers_the_reports_of_the_days_before_it_is_asked():
    question = "Which company recalled its heaters?"
    old = hit("Orbis recalled its heaters after fires in homes.", doc_id="old.txt", date="2021-03-02")
    new = hit("Kestrel recalled its heaters after fires in homes.", doc_id="new.txt", date="2023-05-08", rank=2)
    window = news_window(question, "2023-05-10")
    assert window == Filters(since=f"{date(2023, 5, 10) - timedelta(days=policy.NEWS_DAYS)}", until="2023-05-10")
    assert evidence.select(question, [old, new], bag_embed, window=window)[0].doc_id == "new.txt"
    # its own "this week" wins, and a question about an earlier year is not about the latest news
    assert news_window("Which company recalled its heaters this week?", "2023-05-10") == \
        recent_window("Which company recalled its heaters this week?", "2023-05-10")
    assert news_window("Which company recalled its heaters in 2021?", "2023-05-10") is None
    assert news_window("Which city will host the 2024 convention?", "2023-05-10") is not None
    assert news_window(question, None) is None and news_window(question, "May 10") is None


def test_a_window_holds_only_dated_articles_inside_it():
    window = Filters(since="2023-05-01", until="2023-05-10")
    assert window.holds_date("2023-05-01") and window.holds_date("2023-05-10T08:00:00")
    assert not window.holds_date("2023-04-30") and not window.holds_date(None)
    assert Filters().holds_date(None)
    assert recent_window("Who won the 2019 election?", "2023-05-10") is None


@pytest.mark.parametrize("question, kind", [
    ("A former president celebrated a milestone birthday this week. How old did he turn?", "a number"),
    ("Since what year has the region been split?", "a date"),
    ("Roughly how many babies were born last year?", "a number"),
    ("When did the U.S. Senate vote on the bill?", "a date"),
    ("What date did the border reopen?", "a date"),
    ("What year did the plant open?", "a date"),
    ("When the storm hit, the town flooded. Who led the rescue?", "a name"),
])
def test_the_asking_sentence_decides_what_kind_of_answer_is_wanted(question, kind):
    assert evidence.KIND_NAMES[evidence.answer_type(question)] == kind


def test_a_number_in_the_question_is_read_as_passages_read_it():
    from rag.evidence import key_terms
    from rag.words import passage_tokens

    terms = key_terms("Which city counted 43.8 million visitors in 2024?")
    assert {t for t in terms if t[0].isdigit()} <= passage_tokens("The city had 43.8 million visitors in 2024.")


def test_the_per_article_cap_is_read_when_selecting(monkeypatch):
    """eval/calibrate.py grids PER_ARTICLE by setting it on rag.policy: select must read it per call."""
    long = hit(" ".join(f"The council voted on plan number {i} for the harbour." for i in range(1, 7)))
    other = hit("A second report says the harbour council met on Monday.", doc_id="b.txt", rank=2)
    question = "What did the harbour council vote on?"
    for cap in (1, 2, 4):
        monkeypatch.setattr(policy, "PER_ARTICLE", cap)
        chosen = evidence.select(question, [long, other], bag_embed)
        assert sum(e.doc_id == "a.txt" for e in chosen) == cap


def test_each_part_of_a_two_part_question_names_what_only_it_asks():
    terms = evidence.part_terms("Who chaired the 2019 inquiry, and who chairs the 2024 one?")
    assert terms == [{"2019", "inquiri"}, {"2024"}]
    assert evidence.part_terms("Who chaired the 2019 inquiry?") == []
    # a part with nothing of its own to look for leaves the question whole
    assert evidence.part_terms("Who chaired the inquiry, and who chaired the inquiry?") == []


def test_a_two_part_question_gets_a_sentence_for_each_part_into_the_evidence():
    question = "Who chaired the 2019 harbour inquiry, and who chairs the 2024 one?"
    old = ["The 2019 harbour inquiry heard the port authority on the dredging contract.",
           "Fishermen told the 2019 harbour inquiry that catches had fallen.",
           "The 2019 harbour inquiry cost the city two million.",
           "Divers gave evidence to the 2019 harbour inquiry about silt."]
    old.insert(0, "Judge Mara Fenwick chaired the 2019 harbour inquiry into the dredging contract.")
    new = "Lawyer Tomas Reyes now chairs the panel."
    hits = [hit(t, doc_id=f"old{i}.txt", date="2019-05-01", rank=i + 1) for i, t in enumerate(old)]
    hits.append(hit(new, doc_id="new.txt", date="2024-03-01", rank=len(old) + 1))
    limit = 4
    chosen = evidence.select(question, hits, bag_embed, limit)
    assert len(chosen) == limit and old[0] in [e.text for e in chosen]
    assert new in [e.text for e in chosen]  # below every 2019 sentence, yet the 2024 part's only answer
    assert [e.n for e in chosen] == [1, 2, 3, 4] and chosen == sorted(chosen, key=lambda e: -e.score)
    # without the second ask it stays out: the reservation is for parts, not a quota of articles
    assert new not in [e.text for e in evidence.select("Who chaired the 2019 harbour inquiry?", hits, bag_embed, limit)]


def test_a_part_that_names_a_year_is_answered_from_that_year():
    question = "Which official spoke for the harbour board in 2024, and which envoy held talks in 2019?"
    spoke_2019 = "The board's official spoke to the fishermen."  # a word of the 2024 part, in a 2019 report
    spoke_2024 = "Ana Lind now speaks for the harbour board."
    envoy_2019 = "Envoy Piet Hols held talks with the union."
    items = [(spoke_2019, "2019-05-01"), (spoke_2024, "2024-03-01"), (envoy_2019, "2019-05-02")]

    def words(item):
        text, day = item
        return content_tokens(text) | evidence.context_tokens(None, None, day), day

    (for_2024, for_2019) = evidence.speaking_to_parts(question, items, words)
    assert [t for t, _ in for_2024] == [spoke_2024]
    assert [t for t, _ in for_2019] == [spoke_2019, envoy_2019]
    # an undated report may be from either year
    undated = ("The board's official spoke again.", None)
    assert all(undated in part for part in evidence.speaking_to_parts(question, [undated], words))


def test_a_sentence_is_as_relevant_as_it_is_to_the_part_it_answers():
    question = "Which union called the ferry strike in Harbor City, and who won the chess championship in Dunmore?"
    parts = evidence.standalone_parts(question)
    assert parts == ["Which union called the ferry strike in Harbor City", "who won the chess championship in Dunmore"]
    ferry = "The Dockworkers Guild called the ferry strike in Harbor City on Monday."
    chess = "Ines Marlow won the chess championship in Dunmore."
    hits = [hit(ferry), hit(chess, doc_id="b.txt", rank=2)]
    chosen = {e.text: e for e in evidence.select(question, hits, bag_embed, apart=True)}
    together = {e.text: e for e in evidence.select(question, hits, bag_embed)}

    def cosine(a: str, b: str) -> float:
        va, vb = bag_embed([a, b])
        return float(va @ vb)

    # searched apart, each sentence is scored against the part it answers, not against the whole
    # question, whose other half it lacks; found together (one story), against the whole question
    for text, part in ((ferry, parts[0]), (chess, parts[1])):
        assert chosen[text].cosine == pytest.approx(cosine(part, text), abs=1e-4)
        assert together[text].cosine == pytest.approx(cosine(question, text), abs=1e-4)
        assert chosen[text].score > together[text].score
    # a question that asks one thing is scored against itself, as before
    single = "Which union called the ferry strike in Harbor City?"
    (alone,) = evidence.select(single, [hit(ferry)], bag_embed, apart=True)
    assert evidence.standalone_parts(single) == [] and alone.cosine == pytest.approx(cosine(single, ferry), abs=1e-4)


def test_the_abstain_decision_was_fitted_at_the_settings_its_features_read():
    """A setting that moves relevance or the evidence kept moves the features the decision weighs:
    changing one means refitting with eval/calibrate.py (on calibration) and pasting its block."""
    now = policy.feature_settings()
    assert policy.FITTED_AT == now, f"refit the abstain decision with eval/calibrate.py: fitted at {policy.FITTED_AT}"
    assert set(policy.FEATURES) == set(policy.WEIGHTS)
