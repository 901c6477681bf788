"""Tests for rag.evaluate with hand-made answer dicts: no model, no index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag import evaluate as ev
from rag.errors import RagError, UsageError

ROOT = Path(__file__).resolve().parents[1]
GOLD = ROOT / "eval" / "gold.jsonl"
CORPUS = ROOT / "eval" / "corpus"

A0, A1, A2 = "000_7e1cbb29f31f5564.txt", "001_d3539caef9fae320.txt", "002_52908c8bc44237eb.txt"


def make_answer(sentences=(), citations=(), retrieved=(), abstained=False, timings=None, text=None):
    """An answer dict in the DESIGN.md shape; sentences are (text, [n, ...]) pairs."""
    sentences = [{"text": t, "citations": list(ns), "supported": True} for t, ns in sentences]
    return {
        "question": "q",
        "answer": text if text is not None else " ".join(s["text"] for s in sentences),
        "abstained": abstained,
        "sentences": sentences,
        "citations": [_citation(*c) for c in citations],
        "retrieved": [{"rank": i, "doc_id": d, "chunk_id": f"{d}:{i}", "score": 1 / i}
                      for i, d in enumerate(retrieved, 1)],
        "timings_ms": timings or {},
    }


def _citation(n, doc_id, quote, extra=None):
    return {"n": n, "doc_id": doc_id, "chunk_id": f"{doc_id}:0", "quote": quote, **(extra or {})}


# ---------------------------------------------------------------- text matching

def test_normalise_case_whitespace_quotes_dashes():
    assert ev.normalise("  The  US\n\tURGED “Pakistan” — now’s ") == 'the us urged "pakistan" - now\'s'


def test_is_correct_needs_every_group_case_and_whitespace_insensitive():
    must = [["40", "forty"], ["Jaish-e-Mohammed", "JeM"]]
    assert ev.is_correct("FORTY   troops were killed;\nJEM claimed it.", must)
    assert ev.is_correct("The   jaish-e-mohammed  group killed 40.", must)
    assert not ev.is_correct("Forty troops were killed.", must)
    assert ev.is_correct("Multi word  alias\nsplit", [["word alias split"]])


def test_alias_does_not_match_inside_longer_number_or_word():
    assert not ev.is_correct("About 400 were killed in 1940.", [["40"]])
    assert not ev.is_correct("A letter was sent.", [["let"]])
    assert ev.is_correct("Killed: 40.", [["40"]])


def test_token_f1():
    assert ev.token_f1("The Masood Azhar", "masood azhar") == 1.0
    assert ev.token_f1("nothing", "masood azhar") == 0.0
    assert ev.token_f1("Masood Azhar leads JeM", "masood azhar") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert ev.token_f1("", "") == 1.0
    assert ev.reference_text([["40", "forty"], ["jem"]]) == "40 jem"


# ---------------------------------------------------------------- citations

QUOTE_2019 = ("We urge Pakistan to fully cooperate with the investigation into the attack "
              "and to punish anyone.")


def test_lexical_support():
    assert ev.lexical_support("The US urged Pakistan to punish anyone responsible [1].", QUOTE_2019)
    assert not ev.lexical_support("China blocked the listing in 2016.", QUOTE_2019)
    # the right words but a number the quote does not carry
    assert not ev.lexical_support("The attack killed 41 personnel.", "A suicide attack killed 40 personnel.")
    assert ev.lexical_support("The attack killed 40 personnel.", "A suicide attack killed 40 personnel.")
    assert not ev.lexical_support("[1]", QUOTE_2019)


def test_citation_precision_and_recall():
    answer = make_answer(
        sentences=[("The US urged Pakistan to punish anyone responsible [1].", [1]),
                   ("It also urged Pakistan to fully cooperate with the investigation [2].", [2, 3]),
                   ("Pakistan called it absurd.", [])],
        citations=[(1, A0, QUOTE_2019), (2, A2, QUOTE_2019), (3, A0, "Kashmir has been split since 1947.")],
    )
    precision, recall = ev.citation_scores(answer, [A0])
    # [1] good; [2] supports but wrong article; [3] right article but no support
    assert precision == pytest.approx(1 / 3)
    # sentences 1 and 2 have a supporting citation, sentence 3 has none
    assert recall == pytest.approx(2 / 3)


def test_citation_to_near_duplicate_counts_for_precision():
    answer = make_answer(
        sentences=[("The US urged Pakistan to punish anyone responsible.", [1])],
        citations=[(1, A1, QUOTE_2019, {"also_reported_by": [A0]})],
    )
    assert ev.citation_scores(answer, [A0]) == (1.0, 1.0)
    plain = make_answer(sentences=[("The US urged Pakistan to punish anyone responsible.", [1])],
                        citations=[(1, A1, QUOTE_2019)])
    assert ev.citation_scores(plain, [A0]) == (0.0, 1.0)


def test_citation_scores_edge_cases_and_custom_support():
    assert ev.citation_scores(make_answer(abstained=True), [A0]) == (None, None)
    uncited = make_answer(sentences=[("An unsupported claim.", [])])
    assert ev.citation_scores(uncited, [A0]) == (None, 0.0)
    dangling = make_answer(sentences=[("The US urged Pakistan to punish.", [9])], citations=[])
    assert ev.citation_scores(dangling, [A0]) == (0.0, 0.0)
    always = make_answer(sentences=[("Anything.", [1])], citations=[(1, A0, "unrelated")])
    assert ev.citation_scores(always, [A0], supports=lambda s, q: True) == (1.0, 1.0)


# ---------------------------------------------------------------- retrieval, abstention, timing

def test_retrieval_recall_hit_and_rr():
    retrieved = make_answer(retrieved=[A2, A0, A2, A1])["retrieved"]
    scores = ev.retrieval_scores(retrieved, [A0, A1], ks=(1, 2, 5))
    assert scores["recall@1"] == 0.0 and scores["hit@1"] == 0.0
    assert scores["recall@2"] == 0.5 and scores["hit@2"] == 1.0
    assert scores["recall@5"] == 1.0
    assert scores["rr"] == 0.5
    assert ev.retrieval_scores([], [A0])["rr"] == 0.0


def test_retrieval_counts_near_duplicates_listed_on_the_hit():
    retrieved = [{"rank": 1, "doc_id": A0, "chunk_id": "c", "score": 1.0, "also_reported_by": [A1]}]
    assert ev.retrieval_scores(retrieved, [A0, A1], ks=(1,))["recall@1"] == 1.0


def test_abstention_scores():
    rows = [{"answerable": False, "abstained": True}, {"answerable": False, "abstained": False},
            {"answerable": True, "abstained": True}, {"answerable": True, "abstained": False},
            {"answerable": True, "abstained": False}, {"answerable": True, "abstained": False}]
    scores = ev.abstention_scores(rows)
    assert scores["abstain_precision"] == 0.5
    assert scores["abstain_recall"] == 0.5
    assert scores["false_abstain_rate"] == 0.25
    assert ev.abstention_scores([{"answerable": True, "abstained": False}])["abstain_precision"] is None


def test_percentile_and_timing_scores_skip_missing_keys():
    assert ev.percentile([], 50) is None
    assert ev.percentile([10, 20, 30, 40], 50) == 25
    assert ev.percentile([1, 2, 3, 4, 5], 95) == pytest.approx(4.8)
    rows = [{"timings_ms": {"retrieve": 4, "total": 100}, "tokens_per_s": 20.0},
            {"timings_ms": {"retrieve": 6, "total": 300}, "tokens_per_s": None}]
    scores = ev.timing_scores(rows)
    assert scores["latency_retrieve_p50_ms"] == 5
    assert scores["latency_total_p50_ms"] == 200
    assert "latency_first_token_p50_ms" not in scores
    assert scores["tokens_per_s_p50"] == 20.0
    assert ev.tokens_per_s({"timings_ms": {"tokens_per_s": 31.5}}) == 31.5
    assert ev.tokens_per_s({"timings_ms": {}}) is None


# ---------------------------------------------------------------- runner and report

GOLD_SMALL = [
    {"id": "a1", "question": "What did the US urge Pakistan to do in 2019?", "must": [["punish"]],
     "sources": [A0, A1], "answerable": True, "kind": "fact"},
    {"id": "a2", "question": "How many civilians died at Pahalgam?", "must": [["26"]],
     "sources": [A2], "answerable": True, "kind": "fact"},
    {"id": "u1", "question": "Who was the Pulwama bomber?", "must": [], "sources": [],
     "answerable": False, "kind": "unanswerable"},
]

ANSWERS = {
    GOLD_SMALL[0]["question"]: make_answer(
        sentences=[("The US urged Pakistan to punish anyone responsible [1].", [1])],
        citations=[(1, A0, QUOTE_2019)], retrieved=[A0, A2],
        timings={"retrieve": 5, "first_token": 300, "total": 900}),
    GOLD_SMALL[1]["question"]: make_answer(abstained=True, text="The articles do not say.",
                                           retrieved=[A1, A2], timings={"retrieve": 7, "total": 100}),
    GOLD_SMALL[2]["question"]: {**make_answer(abstained=True, text="The articles do not say.",
                                              timings={"retrieve": 6, "total": 80}),
                                "notes": ["abstained: weakly related"], "draft": "The articles do not say."},
}


def test_run_eval_rows_and_report():
    rows, report = ev.run_eval(GOLD_SMALL, lambda q, _day: ANSWERS[q], {"mode": "llm", "k": 6})
    assert [r["id"] for r in rows] == ["a1", "a2", "u1"]
    first = rows[0]
    assert first["correct"] and first["f1"] > 0
    assert (first["citation_precision"], first["citation_recall"]) == (1.0, 1.0)
    assert first["retrieval"]["hit@1"] == 1.0 and first["retrieval"]["recall@1"] == 0.5
    assert first["citations"][0]["doc_id"] == A0 and "wall" in first["timings_ms"]
    assert rows[1]["correct"] is False and rows[1]["abstained"]
    assert rows[2]["correct"] is True
    assert rows[2]["notes"] == ["abstained: weakly related"] and rows[2]["draft"] == "The articles do not say."
    assert rows[0]["notes"] == [] and rows[0]["draft"] is None

    m = report["metrics"]
    assert m["accuracy"] == 0.5
    assert m["citation_precision"] == 1.0  # the abstained answer has no citations to score
    assert m["mrr"] == pytest.approx((1 + 1 / 2) / 2)
    assert m["abstain_precision"] == 0.5 and m["abstain_recall"] == 1.0 and m["false_abstain_rate"] == 0.5
    assert m["latency_retrieve_p50_ms"] == 6 and "latency_first_token_p50_ms" in m
    assert report["counts"] == {"questions": 3, "answerable": 2, "unanswerable": 1, "abstained": 2,
                                "correct": 1, "citation_scored": 1, "errors": 0}
    assert report["by_kind"]["fact"]["correct"] == 1 and report["by_kind"]["unanswerable"]["accuracy"] == 1.0
    assert report["config"] == {"mode": "llm", "k": 6}
    json.dumps(report)  # the report must be plain JSON


def test_run_eval_records_rag_errors_but_stops_on_usage_errors():
    def flaky(question, day):
        raise RagError("model crashed")

    rows, report = ev.run_eval(GOLD_SMALL[:1], flaky, {})
    assert rows[0]["error"] == "model crashed" and rows[0]["correct"] is False
    assert report["counts"]["errors"] == 1

    def no_index(question, day):
        raise UsageError("no index")

    with pytest.raises(UsageError):
        ev.run_eval(GOLD_SMALL[:1], no_index, {})


def test_write_report_and_format_table(tmp_path):
    rows, report = ev.run_eval(GOLD_SMALL, lambda q, _day: ANSWERS[q], {"k": 6})
    rows_path, report_path = ev.write_report(tmp_path / "reports" / "run1", rows, report)
    assert [json.loads(line)["id"] for line in rows_path.read_text().splitlines()] == ["a1", "a2", "u1"]
    assert json.loads(report_path.read_text())["metrics"]["accuracy"] == 0.5
    assert ev.load_report(report_path.parent)["counts"]["questions"] == 3
    table = ev.format_table(report)
    assert "accuracy" in table and "50.0%" in table and "ms" in table and "unanswerable" in table


def test_compare_marks_regressions():
    before = {"metrics": {"accuracy": 0.80, "f1": 0.50, "false_abstain_rate": 0.10,
                          "latency_total_p50_ms": 1000.0, "mrr": None}}
    now = {"metrics": {"accuracy": 0.79, "f1": 0.504, "false_abstain_rate": 0.05,
                       "latency_total_p50_ms": 1500.0, "mrr": 0.7}}
    lines = {line.split()[0]: line for line in ev.compare(now, before).splitlines()[1:]}
    assert "REGRESSION" in lines["accuracy"] and "-1.0 pp" in lines["accuracy"]
    assert "REGRESSION" not in lines["f1"]  # better
    assert "REGRESSION" not in lines["false_abstain_rate"]  # lower is better here
    assert "REGRESSION" in lines["latency_total_p50_ms"]  # slower
    assert "REGRESSION" not in lines["mrr"]  # nothing to compare against
    small = {"metrics": {"accuracy": 0.797}}
    assert "REGRESSION" not in ev.compare(small, {"metrics": {"accuracy": 0.80}})


def test_check_floors_pass_and_fail(tmp_path):
    report = {"metrics": {"accuracy": 0.6, "abstain_recall": 0.9, "latency_total_p95_ms": 2500.0}}
    assert ev.check_floors(report, {"accuracy": 0.5, "max_latency_total_p95_ms": 3000}) == []
    failures = ev.check_floors(report, {"accuracy": 0.7, "abstain_recall": 0.8,
                                        "max_latency_total_p95_ms": 2000, "mrr": 0.5})
    assert len(failures) == 3
    assert any(f.startswith("accuracy") and "under the floor" in f for f in failures)
    assert any(f.startswith("latency_total_p95_ms") and "above the ceiling" in f for f in failures)
    assert any(f.startswith("mrr") and "not measured" in f for f in failures)
    path = tmp_path / "floors.json"
    path.write_text('{"accuracy": 0.5}')
    assert ev.load_floors(path) == {"accuracy": 0.5}
    path.write_text('{"accuracy": "high"}')
    with pytest.raises(UsageError):
        ev.load_floors(path)


# ---------------------------------------------------------------- load_gold

GOOD_LINE = json.dumps({"id": "x", "question": "q?", "must": [["a"]], "sources": [A0], "answerable": True})


@pytest.mark.parametrize("bad_line, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"id": "y", "question": "q?", "must": [], "sources": []}), "missing field(s) answerable"),
    (json.dumps({"id": "y", "question": "q?", "must": "a", "sources": [A0], "answerable": True}), "'must'"),
    (json.dumps({"id": "y", "question": "q?", "must": [], "sources": [], "answerable": True}), "needs"),
    (json.dumps({"id": "y", "question": "q?", "must": [["a"]], "sources": [], "answerable": False}), "empty"),
    (json.dumps({"id": "y", "question": "q?", "must": [["a"]], "sources": [A0], "answerable": "yes"}),
     "true or false"),
    (GOOD_LINE, "duplicate id"),
    ("[1, 2]", "JSON object"),
])
def test_load_gold_errors_name_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "gold.jsonl"
    path.write_text(GOOD_LINE + "\n\n" + bad_line + "\n")
    with pytest.raises(UsageError) as info:
        ev.load_gold(path)
    assert f"{path}:3" in str(info.value)
    assert message in str(info.value)


def test_load_gold_missing_or_empty_file(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        ev.load_gold(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UsageError, match="no questions"):
        ev.load_gold(tmp_path / "empty.jsonl")


# ---------------------------------------------------------------- the real gold set

def test_real_gold_set_is_well_formed_and_honest():
    gold = ev.load_gold(GOLD)
    assert len(gold) >= 50
    assert sum(not g["answerable"] for g in gold) >= 10
    assert len({g["id"] for g in gold}) == len(gold)
    card = next(g for g in gold if g["id"] == "design-card")
    assert card["question"] == "What did the US urge Pakistan to do?"
    assert len(card["must"]) >= 2 and len(card["sources"]) >= 2

    corpus = {p.name: p.read_text(encoding="utf-8") for p in CORPUS.glob("*.txt")}
    problems = []
    for g in gold:
        missing = [s for s in g["sources"] if s not in corpus]
        if missing:
            problems.append(f"{g['id']}: unknown sources {missing}")
            continue
        for group in g["must"]:
            for alias in group:
                if not any(ev.contains_alias(corpus[s], alias) for s in g["sources"]):
                    problems.append(f"{g['id']}: alias {alias!r} is in none of its sources")
    assert problems == []
