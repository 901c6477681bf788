"""ask() end to end on the sample index: the logic with a fake LLM, the real path with the real model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import asdict

import pytest

from rag.config import Settings
from rag.errors import UsageError
from rag.llm import FakeLLM
from rag.pipeline import Pipeline, check_question
from rag.prompts import ABSTAIN_PHRASE
from rag.retrieve import Filters
from tests.conftest import neutral_cwd, subprocess_env

DESIGN_CARD = "What did the US urge Pakistan to do?"
UNANSWERABLE = "What did the Bank of Japan decide about interest rates?"  # a topic the articles lack


@pytest.fixture
def pipeline_with(sample_index, real_embedder):
    made = []

    def make(*answers, **settings):
        fake = FakeLLM().enqueue(*answers)
        p = Pipeline(Settings(index=str(sample_index), **settings), llm=fake, embedder=real_embedder)
        made.append(p)
        return p, fake

    yield make
    for p in made:
        p.close()


def _check_citations(answer, sample_index):
    from rag.store import open_index

    reader = open_index(sample_index)
    numbers = {c.n for c in answer.citations}
    assert numbers == set(range(1, len(answer.citations) + 1))
    for c in answer.citations:
        assert reader.article(c.doc_id).text[c.start:c.end] == c.quote
    for s in answer.sentences:
        assert s.citations and set(s.citations) <= numbers
    reader.close()


def test_invented_citation_is_removed_and_sentence_recited(pipeline_with, sample_index):
    p, fake = pipeline_with("The US urged Pakistan to fully cooperate with the investigation [9].")
    answer = p.ask(DESIGN_CARD)
    assert not answer.abstained
    assert any("removed citation [9]" in n for n in answer.notes)
    _check_citations(answer, sample_index)
    prompt = fake.calls[0]["messages"][1]["content"]
    assert "<<<SOURCES" in prompt and DESIGN_CARD in prompt


def test_unsupported_claim_is_replaced_by_evidence(pipeline_with, sample_index):
    p, _ = pipeline_with("The US urged Pakistan to pay 900 million dollars to Kashmir [1].")
    answer = p.ask(DESIGN_CARD)
    assert "900" not in answer.answer
    assert all(s.supported for s in answer.sentences)
    _check_citations(answer, sample_index)


def test_model_abstaining_on_good_evidence_falls_back_to_evidence(pipeline_with):
    p, _ = pipeline_with(ABSTAIN_PHRASE)
    answer = p.ask(DESIGN_CARD)
    assert not answer.abstained and answer.citations


def test_weak_evidence_abstains_without_calling_the_model(pipeline_with):
    p, fake = pipeline_with()
    answer = p.ask(UNANSWERABLE)
    assert answer.abstained and answer.answer == ABSTAIN_PHRASE and not answer.citations
    assert any("japan" in n and "answer score" in n for n in answer.notes)
    assert fake.calls == []


def test_extractive_design_card_keeps_the_crises_apart(pipeline_with, sample_index):
    p, fake = pipeline_with(mode="extractive")
    answer = p.ask(DESIGN_CARD)
    cited = {c.doc_id[:3] for c in answer.citations}
    assert cited & {"000", "001"} and cited & {"002", "004"}, answer.answer  # the 2019 and the 2025 crisis
    labels = [s.label for s in answer.sentences]
    assert all(labels) and labels == sorted(labels, key=lambda x: (x.startswith("date unknown"), x))
    assert answer.answer.startswith("(2019-02-20")
    assert fake.calls == []
    _check_citations(answer, sample_index)


def test_near_duplicate_wire_story_is_collapsed(pipeline_with):
    p, _ = pipeline_with(mode="extractive")
    answer = p.ask("Who was the UN spokesman who said the UN was deeply concerned about the tensions?")
    docs = [r.doc_id for r in answer.retrieved]
    wire = {"000_7e1cbb29f31f5564.txt", "001_d3539caef9fae320.txt"}
    assert any(r.also_reported_by and ({r.doc_id, *r.also_reported_by} >= wire) for r in answer.retrieved)
    assert len(docs) == len(set(zip(docs, [r.chunk_id for r in answer.retrieved], strict=True)))


def test_filters(pipeline_with):
    p, _ = pipeline_with(mode="extractive")
    recent = p.ask(DESIGN_CARD, filters=Filters(since="2025-01-01"))
    assert {c.date for c in recent.citations} == {"2025-05-01"}
    only = p.ask(DESIGN_CARD, filters=Filters(docs=("003_bec82752a72c5b16.txt",)))
    assert {r.doc_id for r in only.retrieved} == {"003_bec82752a72c5b16.txt"}
    none = p.ask(DESIGN_CARD, filters=Filters(source="Reuters"))
    assert none.abstained and not none.retrieved
    with pytest.raises(UsageError):
        Filters(since="last week")


def test_prompt_never_exceeds_context(sample_index, real_embedder):
    fake = FakeLLM(n_ctx=400).enqueue("The US urged Pakistan to punish anyone responsible [1].")
    p = Pipeline(Settings(index=str(sample_index), n_ctx=400, max_answer_tokens=100, k=20), llm=fake,
                 embedder=real_embedder)
    p.ask("What did the United States urge Pakistan to do about the investigation into the attack in Kashmir, "
          "and whom did it urge Pakistan to punish for the suicide attack that killed Indian security personnel?")
    messages = fake.calls[0]["messages"]
    assert fake.count_chat_tokens(messages) + 100 <= 400
    assert 1 <= messages[1]["content"].count("\n[") < 6  # lowest-ranked evidence was dropped to fit
    p.close()


@pytest.mark.parametrize("bad", ["", "   \n\t", "?!?!...", "x" * 5000])
def test_bad_questions(bad):
    with pytest.raises(UsageError):
        check_question(bad)


@pytest.mark.slow
def test_real_model_design_card(sample_index, real_embedder):
    p = Pipeline(Settings(index=str(sample_index)), embedder=real_embedder)
    answer = p.ask(DESIGN_CARD)
    p.close()
    assert not answer.abstained and answer.model["llm"].endswith(".gguf")
    cited = {c.doc_id[:3] for c in answer.citations}
    assert cited & {"000", "001"} and cited & {"002", "004"}, answer.answer  # the 2019 and the 2025 crisis
    _check_citations(answer, sample_index)
    assert answer.timings_ms["first_token"] <= answer.timings_ms["total"]


def _rag(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "rag.cli", *args], capture_output=True, text=True,
                          input=stdin, cwd=neutral_cwd(), env=subprocess_env(), timeout=300)


@pytest.mark.slow
def test_cli_json_schema_and_exit_codes(sample_index):
    done = _rag("ask", DESIGN_CARD, "--json", "--index", str(sample_index))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) >= {"question", "answer", "abstained", "sentences", "citations", "retrieved", "model",
                         "timings_ms"}
    assert set(data["citations"][0]) >= {"n", "doc_id", "chunk_id", "title", "date", "source", "start", "end",
                                         "quote", "score"}
    assert set(data["sentences"][0]) >= {"text", "citations", "supported"}
    assert set(data["timings_ms"]) >= {"retrieve", "first_token", "total"}
    assert "Traceback" not in done.stderr
    abstain = _rag("ask", UNANSWERABLE, "--index", str(sample_index))
    assert abstain.returncode == 3 and ABSTAIN_PHRASE in abstain.stdout
    empty = _rag("ask", "   ", "--index", str(sample_index))
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1 and "Traceback" not in empty.stderr
    missing = _rag("ask", DESIGN_CARD, "--index", str(sample_index), "--model", "/nonexistent.gguf")
    assert missing.returncode == 2 and "model file not found" in missing.stderr


@pytest.mark.slow
def test_cli_batch(sample_index):
    lines = f'{DESIGN_CARD}\n{{"id": "q2", "question": "{UNANSWERABLE}"}}\n{{"id": "bad"}}\n'
    done = _rag("ask", "--batch", "-", "--mode", "extractive", "--index", str(sample_index), stdin=lines)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["1", "q2", "bad"]
    assert rows[0]["citations"] and rows[1]["abstained"] and "error" in rows[2]


def test_answer_is_json_serialisable(pipeline_with):
    p, _ = pipeline_with(mode="extractive")
    json.dumps(asdict(p.ask(DESIGN_CARD)))


def test_according_to_a_publisher_prefers_its_articles(pipeline_with, sample_index):
    p, _ = pipeline_with(mode="extractive")
    plain = p.ask("What did Pakistan say about the attack?")
    assert "003" not in {c.doc_id[:3] for c in plain.citations}
    named = p.ask("According to PTI, what did Pakistan say about the attack?")  # 003 is PTI's (sidecar)
    assert named.citations and {c.doc_id[:3] for c in named.citations} == {"003"}, named.answer
    _check_citations(named, sample_index)


def test_baseline_mode_answers_with_the_top_sentences_by_cosine(pipeline_with, sample_index):
    from rag import policy

    p, fake = pipeline_with(mode="baseline")
    answer = p.ask(UNANSWERABLE)  # the baseline has no abstain decision: it answers whatever it found
    assert not answer.abstained and 1 <= len(answer.citations) <= policy.BASELINE_SENTENCES
    answer = p.ask(DESIGN_CARD)
    assert len(answer.sentences) == policy.BASELINE_SENTENCES and fake.calls == []
    _check_citations(answer, sample_index)


def test_design_card_on_articles_without_sidecars_cites_both_crises(tmp_path, real_embedder, counter):
    """The articles as a user has them (no .meta.json dates or sources): both demands, each cited."""
    import shutil

    from rag.indexer import index_paths
    from tests.conftest import CORPUS

    raw = tmp_path / "articles"
    raw.mkdir()
    for f in CORPUS.glob("*.txt"):
        shutil.copy(f, raw / f.name)
    index_paths([str(raw)], Settings(index=str(tmp_path / "index")), embedder=real_embedder, counter=counter)
    p = Pipeline(Settings(index=str(tmp_path / "index"), mode="extractive"), llm=FakeLLM(), embedder=real_embedder)
    try:
        answer = p.ask(DESIGN_CARD)
    finally:
        p.close()
    by_doc = {c.doc_id[:3]: c.quote for c in answer.citations}
    assert {"000", "001"} & set(by_doc) and {"002", "004"} & set(by_doc), answer.answer
    assert any("fully cooperate with the investigation" in by_doc.get(d, "") for d in ("000", "001"))


def test_this_week_prefers_the_articles_of_the_days_before_asking(tmp_path, real_embedder, counter):
    """Relative time ("this week") is read against the day of asking (`as_of`), never a filter."""
    from rag.indexer import index_paths
    from rag.words import recency_days

    assert recency_days("Which team won on Sunday?") == recency_days("What happened this week?") == 9
    assert recency_days("How many died in 2019?") is None
    folder = tmp_path / "articles"
    folder.mkdir()
    stories = {  # the same yearly ceremony, three years apart
        "old": ("2019-03-01", "The Harbor Film Prize went to the director Lena Varga at the ceremony in Porto."),
        "new": ("2023-03-03", "The Harbor Film Prize went to the director Tomas Okafor at the ceremony in Porto."),
    }
    for name, (day, text) in stories.items():
        (folder / f"{name}.txt").write_text(f"{text} The jury praised the winning film.\n")
        (folder / f"{name}.txt.meta.json").write_text(json.dumps({"date": day}))
    index_paths([str(folder)], Settings(index=str(tmp_path / "index")), embedder=real_embedder, counter=counter)
    p = Pipeline(Settings(index=str(tmp_path / "index"), mode="extractive", k=1), llm=FakeLLM(), embedder=real_embedder)
    try:
        question = "Which director won the Harbor Film Prize this week?"
        for asked, winner in (("2023-03-05", "Okafor"), ("2019-03-04", "Varga")):
            answer = p.ask(question, as_of=asked)
            assert winner in answer.answer, (asked, answer.answer)
        # without relative time in the question the day of asking changes nothing
        plain = "Which director won the Harbor Film Prize?"
        assert p.ask(plain, as_of="2023-03-05").answer == p.ask(plain, as_of="2019-03-04").answer
    finally:
        p.close()


def _evidence(n: int, text: str, doc: str, score: float):
    from rag.types import Evidence

    return Evidence(n=n, doc_id=doc, chunk_id=f"{doc}:0-1", start=0, end=len(text), text=text, title="t",
                    date="2024-04-01", source=None, score=score)


def test_a_cited_source_comes_in_verbatim_when_the_answer_drops_its_figure():
    from rag.pipeline import complete
    from rag.types import Sentence

    question = "What share of the world will see the eclipse?"
    best = _evidence(1, "Only 0.55% of the world population, or 43.8 million people, will see the eclipse.", "a", 0.9)
    garbled = [Sentence("The share of the world that will see the eclipse is 43.8 million people.", [1], True)]
    notes: list[str] = []
    assert [s.text for s in complete(question, garbled, [best], notes)][-1] == best.text
    assert "drops 0.55" in notes[0] and "43" not in notes[0]  # "43.8 million" was kept

    faithful = [Sentence("Only 0.55% of the world, 43.8 million people, will see it.", [1], True)]
    assert complete(question, faithful, [best], []) == faithful  # nothing of [1] is missing: no copy


def test_extractive_answers_each_part_of_a_two_part_question():
    from rag.pipeline import extractive
    from rag.types import Evidence

    def item(n, text, date, score):
        return Evidence(n=n, doc_id=f"d{n}", chunk_id=f"d{n}:0-1", start=0, end=len(text), text=text, title="t",
                        date=date, source=None, score=score)

    question = "Who chaired the 2019 harbour inquiry, and who chairs the 2024 one?"
    first = item(1, "Judge Mara Fenwick chaired the 2019 harbour inquiry.", "2019-05-01", 0.9)
    again = item(2, "The 2019 harbour inquiry sat for ten weeks.", "2019-05-02", 0.85)
    later = item(3, "Lawyer Tomas Reyes now chairs the panel.", "2024-03-01", 0.4)  # far below GROUP_SHARE
    assert [s.citations for s in extractive(question, [first, again, later])][-1] == [3]
    assert [3] not in [s.citations for s in extractive("Who chaired the 2019 harbour inquiry?", [first, again, later])]
    # an undated report may be the 2024 one: it answers that part, and no other sentence is forced in
    undated = item(3, "Lawyer Tomas Reyes now chairs the panel.", None, 0.4)
    later4 = item(4, "The 2024 budget was approved.", "2024-03-01", 0.3)
    cited = [s.citations for s in extractive(question, [first, again, undated, later4])]
    assert [3] in cited and [4] not in cited


def test_a_part_the_question_search_misses_is_searched_on_its_own(tmp_path, real_embedder, counter):
    """Two unrelated asks in one question: one search of k=1 chunk finds one story; the other part
    is then searched alone, and the extractive answer holds both answers."""
    from rag.indexer import index_paths

    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "ferry.txt").write_text("The Dockworkers Guild called the ferry strike in Harbor City on Monday. "
                                      "Ferries stayed in port all day.\n")
    (folder / "chess.txt").write_text("Ines Marlow won the regional chess championship in Dunmore on Saturday. "
                                      "She beat the defending champion.\n")
    index_paths([str(folder)], Settings(index=str(tmp_path / "index")), embedder=real_embedder, counter=counter)
    p = Pipeline(Settings(index=str(tmp_path / "index"), mode="extractive", k=1), llm=FakeLLM(), embedder=real_embedder)
    try:
        question = "Which union called the ferry strike in Harbor City, and who won the chess championship in Dunmore?"
        assert len(p.retriever.search(question, 1)) == 1  # one story only
        answer = p.ask(question)
        assert {r.doc_id for r in answer.retrieved} == {"ferry.txt", "chess.txt"}
        assert "Dockworkers Guild" in answer.answer and "Ines Marlow" in answer.answer, answer.answer
        # a question about one story is searched once: nothing is added to its k chunks
        assert len(p.ask("Which union called the ferry strike in Harbor City?").retrieved) == 1
    finally:
        p.close()


def test_extractive_quotes_the_other_evidence_sentences_of_the_best_ones_article():
    from rag import policy
    from rag.pipeline import extractive
    from rag.types import Evidence

    def item(n, text, doc, start, score):
        return Evidence(n=n, doc_id=doc, chunk_id=f"{doc}:0-1", start=start, end=start + len(text), text=text,
                        title="t", date="2024-04-01", source=None, score=score)

    question = "Senator Ada Moss will not seek reelection. Since what year has she served?"
    lede = "Senator Ada Moss said on Tuesday that she will not seek reelection next year."
    best = item(1, lede, "a", 0, 0.9)
    served = item(4, "The former mayor has served in the Senate since 1998.", "a", 900, 0.4)
    # far below GROUP_SHARE and far from the best one in the article: it still comes in
    assert [s.citations for s in extractive(question, [best, served])] == [[1], [4]]
    # the same sentence in another article does not, nor a weak sentence of a further picked article
    elsewhere = item(4, served.text, "b", 0, 0.4)
    assert [s.citations for s in extractive(question, [best, elsewhere])] == [[1]]
    other = item(2, "Aides to Senator Ada Moss said last year that she might not seek reelection.", "c", 0, 0.85)
    weak_of_other = item(3, served.text, "c", 500, 0.4)
    assert [s.citations for s in extractive(question, [best, other, weak_of_other])] == [[1], [2]]
    # at most policy.EXTRACTIVE_MAX sentences, the best ones first
    many = [item(n, f"Ada Moss remark number {n} about her plans for the district.", "a", 100 * n, 0.5 - n / 100)
            for n in range(2, 9)]
    cited = [s.citations[0] for s in extractive(question, [best, *many])]
    assert cited == list(range(1, policy.EXTRACTIVE_MAX + 1))


def test_the_model_reads_only_the_best_evidence_sentences(pipeline_with, monkeypatch):
    """More sentences may be quoted than the model reads: its prompt (and first-token wait) stays short."""
    from rag import policy

    monkeypatch.setattr(policy, "PROMPT_SENTENCES", 2)
    p, fake = pipeline_with("The US urged Pakistan to fully cooperate with the investigation [1].")
    p.ask(DESIGN_CARD)
    prompt = fake.calls[0]["messages"][1]["content"]
    assert re.findall(r"^\[(\d+)\]", prompt, flags=re.M) == ["1", "2"]
