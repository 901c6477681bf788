"""`rag chat`: follow-up rewriting, the ChatSession commands, and the prompt-toolkit loop on a pipe.

Fast tests use the real Pipeline over a sample-corpus index built with FakeEmbedder, with FakeLLM
answering; the last test measures the rewrite on real retrieval (slow).
"""

from __future__ import annotations

import io
import json
import os
import signal
import time

import pytest
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

import rag.pipeline
from rag import chat
from rag.chat import ChatSession, SlashCompleter, is_followup, open_excerpt, rewrite_followup, run_plain, run_tty
from rag.config import Settings
from rag.embed import FakeEmbedder
from rag.errors import ModelError
from rag.llm import FakeLLM
from rag.pipeline import Pipeline
from tests.conftest import CORPUS, ROOT

QUESTION = "What did the US urge Pakistan to do?"

# (previous standalone query, follow-up, gold doc ids, answer must hold one of each alias group)
FOLLOWUP_PAIRS = [
    (QUESTION, "and what did China do?", ["000_7e1cbb29f31f5564.txt", "001_d3539caef9fae320.txt",
                                           "002_52908c8bc44237eb.txt"], [["blocked", "tacitly backed", "opposition"]]),
    ("Which group claimed the Pulwama suicide attack?", "who leads it?",
     ["000_7e1cbb29f31f5564.txt", "001_d3539caef9fae320.txt"], [["masood azhar"]]),
    ("How many civilians were killed in the terrorist attack in Pahalgam?", "who claimed it?",
     ["004_54675ee963de578f.txt"], [["resistance front", "trf"]]),
    ("Which group claimed responsibility for the Pahalgam attack?", "what about Pulwama?",
     ["000_7e1cbb29f31f5564.txt", "001_d3539caef9fae320.txt", "003_bec82752a72c5b16.txt"], [["jaish", "jem"]]),
    ("Who was the US State Department spokesperson in the 2025 crisis?", "and in 2019?",
     ["000_7e1cbb29f31f5564.txt", "001_d3539caef9fae320.txt"], [["palladino"]]),
    ("Which Indian minister did Marco Rubio speak with?", "and which Pakistani leader?",
     ["002_52908c8bc44237eb.txt", "004_54675ee963de578f.txt"], [["sharif"]]),
    ("Where was the JeM training camp that India hit with air strikes?", "who headed it?",
     ["003_bec82752a72c5b16.txt"], [["yousuf azhar"]]),
    ("What measures did India take against Pakistan after the Pahalgam attack?", "how did Pakistan retaliate?",
     ["004_54675ee963de578f.txt"], [["airspace", "cross-border firing"]]),
    ("Who offered to mediate between India and Pakistan in 2019?", "what about in 2025?",
     ["002_52908c8bc44237eb.txt", "004_54675ee963de578f.txt"], [["trump"]]),
    ("Which US envoy was holding talks with the Taliban in 2019?", "which countries did his talks involve?",
     ["000_7e1cbb29f31f5564.txt"], [["saudi arabia"]]),
    ("Which treaty did India suspend after the Pahalgam attack?", "also, which border crossing was closed?",
     ["004_54675ee963de578f.txt"], [["wagah", "attari"]]),
    ("How many Indian security personnel were killed in the February 2019 suicide attack in Kashmir?",
     "when did it happen?", ["000_7e1cbb29f31f5564.txt", "001_d3539caef9fae320.txt", "003_bec82752a72c5b16.txt"],
     [["february 14", "feb 14"]]),
    ("Who is the US Secretary of State who spoke with Jaishankar and Shehbaz Sharif?",
     "what did he urge Pakistan to do?", ["002_52908c8bc44237eb.txt", "004_54675ee963de578f.txt"],
     [["condemn", "cooperate", "assist", "de-escalate", "end support"]]),
    ("Which group claimed the Pulwama suicide attack?", "when was it added to the UN terror list?",
     ["000_7e1cbb29f31f5564.txt", "001_d3539caef9fae320.txt"], [["2001"]]),
    ("Who headed the JeM facility at Balakot?", "how was he related to the JeM chief?",
     ["003_bec82752a72c5b16.txt"], [["brother-in-law"]]),
    ("Which Pakistani official appealed to the UN in 2019?", "what word did he use for blaming Pakistan?",
     ["000_7e1cbb29f31f5564.txt", "001_d3539caef9fae320.txt"], [["absurd"]]),
]


# --- rewrite_followup ------------------------------------------------------------------------


@pytest.mark.parametrize("previous, question, expected", [
    (QUESTION, "and what did China do?", "what did China do? (Pakistan)"),
    (QUESTION, "What about China?", "What did China urge Pakistan to do?"),
    ("Which group claimed responsibility for the Pahalgam attack?", "what about Pulwama?",
     "Which group claimed responsibility for the Pulwama attack?"),
    ("Who was the US State Department spokesperson in the 2025 crisis?", "and in 2019?",
     "Who was the US State Department spokesperson in the 2019 crisis?"),
    ("Who offered to mediate between India and Pakistan?", "how about in 2025?",
     "Who offered to mediate between India and Pakistan in 2025?"),
    ("How many civilians were killed in the terrorist attack in Pahalgam?", "who claimed it?",
     "who claimed it? (Pahalgam)"),
    ("Which Indian minister did Marco Rubio speak with?", "and which Pakistani leader?",
     "which Pakistani leader? (Marco Rubio)"),
    ("Which group claimed the Pulwama suicide attack?", "when was it added to the UN terror list?",
     "when was it added to the UN terror list? (Pulwama)"),
    ("How many people were killed?", "why?", "why? (people killed)"),  # no names: topic words
    (QUESTION, "But why?", "why? (US Pakistan)"),
])
def test_rewrite_followup(previous, question, expected):
    assert rewrite_followup(question, [previous]) == expected


def test_rewrite_leaves_standalone_questions_alone():
    assert rewrite_followup("  What did   China do?  ", []) == "What did China do?"  # no history
    assert rewrite_followup("Which treaty did India suspend after the Pahalgam attack?", [QUESTION]) == \
        "Which treaty did India suspend after the Pahalgam attack?"
    # a name of its own and a pronoun that is not the subject: standalone
    assert rewrite_followup("Which country said it would retaliate against India?", ["Who is Marco Rubio?"]) == \
        "Which country said it would retaliate against India?"


def test_a_pronoun_subject_leans_on_the_previous_turn_even_with_a_name():
    assert rewrite_followup("what did he urge Pakistan to do?", ["Who is Marco Rubio?"]) == \
        "what did he urge Pakistan to do? (Marco Rubio)"


def test_rewrite_uses_the_latest_turn_and_chains():
    history = ["Which group claimed the Pulwama suicide attack?", QUESTION]
    first = rewrite_followup("and what did China do?", history)
    assert first == "what did China do? (Pakistan)"
    assert rewrite_followup("who blocked it?", history + [first]) == "who blocked it? (China Pakistan)"


def test_gold_questions_are_not_followups():
    gold = [json.loads(line)["question"] for line in (ROOT / "eval" / "gold.jsonl").read_text().splitlines()
            if line.strip()]
    assert gold and [q for q in gold if is_followup(q)] == []


def test_followup_detection():
    for q in ("and what did China do?", "What about 2025?", "but why?", "Also, who else?", "who leads it?",
              "When was that?", "How many died?", "what did they say?"):
        assert is_followup(q), q
    for q in (QUESTION, "Who is Guterres?", "Which vehicle carried the explosives that rammed the bus?"):
        assert not is_followup(q), q


# --- the session -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, counter):
    from rag.indexer import index_paths

    path = tmp_path_factory.mktemp("chat") / "idx"
    index_paths([str(CORPUS)], Settings(index=str(path)), embedder=FakeEmbedder(), counter=counter)
    return path


class InterruptOnce(FakeLLM):
    """Streams two pieces of the first answer, then sends this process a real SIGINT (what Ctrl-C in
    a terminal does) and waits for the signal handler to act on it; later calls answer normally.

    Nothing races: the stream cannot end before the signal has been handled, because it does not
    end at all until then (it fails the test if no KeyboardInterrupt comes within 10 s).
    """

    def __init__(self):
        super().__init__()
        self.interrupted = False

    def stream_chat(self, messages, config):
        if self.interrupted:
            return super().stream_chat(messages, config)
        self.interrupted = True

        def pieces():
            yield "The US "
            yield "urged "
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the handler runs in the main thread, between bytecodes
                time.sleep(0.01)
            raise AssertionError("SIGINT was sent but no KeyboardInterrupt arrived")

        return pieces()


@pytest.fixture
def real_sigint_handler():
    """`rag chat` installs no SIGINT handler of its own: Ctrl-C during an answer is Python's default
    handler raising KeyboardInterrupt. The test runs under that handler (set here: a suite started
    with SIGINT ignored, as CI jobs and background shells do, would not have it) and checks that the
    chat left it in place."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def make_session(index_dir, llm=None, mode="llm", **kw):
    llm = llm if llm is not None else FakeLLM()
    pipeline = Pipeline(Settings(index=str(index_dir), mode=mode), llm=llm, embedder=FakeEmbedder())
    out = io.StringIO()
    return ChatSession(pipeline, out, **kw), out, llm


def run_lines(session, out, *lines) -> str:
    start = out.tell()
    for line in lines:
        assert session.handle(line)
    return out.getvalue()[start:]


def test_answer_then_sources_open_and_why(index_dir):
    session, out, llm = make_session(index_dir)
    llm.enqueue("The US urged Pakistan to fully cooperate with the investigation [1].")
    text = run_lines(session, out, QUESTION)
    assert "Sources:" in text and "[1]" in text and "searching:" not in text
    answer = session.last.answer
    assert answer.citations and not answer.abstained

    text = run_lines(session, out, "/sources")
    first = answer.citations[0]
    assert f"{first.doc_id}:{first.start}-{first.end}" in text
    assert " ".join(first.quote.split())[:40] in " ".join(text.split())

    text = run_lines(session, out, "/open 1")
    marked = " ".join(text.split())
    assert "»" + " ".join(first.quote.split()) + "«" in marked
    assert "\x1b" not in text

    text = run_lines(session, out, "/why")
    assert f"query: {QUESTION}" in text
    rows = [line for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == len(answer.retrieved) and "cited [1]" in text
    # The "found by" column: the sample corpus is 22 chunks, so every retrieved chunk is in both
    # the dense and the lexical candidates, and each row must say so in exactly these words.
    assert all(r.dense_rank is not None and r.lexical_rank is not None for r in answer.retrieved)
    assert [row.split()[5] for row in rows] == ["dense+lexical"] * len(rows), text


def test_followup_prints_the_query_used(index_dir):
    session, out, _ = make_session(index_dir, mode="extractive")
    text = run_lines(session, out, QUESTION, "and what did China do?")
    assert "searching: what did China do? (Pakistan)" in text
    assert session.turns[-1].query == "what did China do? (Pakistan)"
    assert session.turns[-1].answer.question == "what did China do? (Pakistan)"


def test_open_highlights_on_a_terminal():
    text = "a" * 400 + " The cited span. " + "b " * 300
    start = text.index("The cited")
    shown = open_excerpt(text, start, start + len("The cited span."), colour=True)
    assert "\x1b[1;7mThe cited span.\x1b[0m" in shown
    assert shown.endswith("…") and len(shown) < 800
    plain = open_excerpt(text, start, start + len("The cited span."))
    assert "»The cited span.«" in plain and "\x1b" not in plain


def test_commands_without_an_answer_and_bad_arguments(index_dir):
    session, out, _ = make_session(index_dir)
    text = run_lines(session, out, "/sources", "/open 1", "/why")
    assert text.count("no answer yet") == 3
    bad = ["/nope", "/k zero", "/k 0", "/mode fast", "/filter since=2019-2-1", "/filter colour=red",
           "/filter doc=missing.txt", "/filter source='unclosed", "/export", "/e"]
    for line in bad:
        start = out.tell()
        assert session.handle(line)
        said = out.getvalue()[start:]
        assert said.count("\n") == 1 and "Traceback" not in said, (line, said)
    assert session.k == 6 and session.mode == "llm" and not session.filters.active


def test_filters_k_mode_and_reset(index_dir):
    session, out, _ = make_session(index_dir)
    text = run_lines(session, out, "/filter since=2025-01-01 source=AFP", "/k 3", "/mode extractive")
    assert "filters: since=2025-01-01 source=AFP" in text and session.k == 3 and session.mode == "extractive"
    assert "since=2025-01-01" in session.toolbar() and "k 3" in session.toolbar()
    run_lines(session, out, "/filter source= doc=000_7e1cbb29f31f5564.txt")
    assert session.filters.source is None and session.filters.docs == ("000_7e1cbb29f31f5564.txt",)
    run_lines(session, out, "/filter clear", "/filter until=2019-12-31", QUESTION)
    answer = session.last.answer
    assert {c.date for c in answer.citations} <= {"2019-02-20", "2019-02-27"}
    assert session.last.answer.mode == "extractive"
    text = run_lines(session, out, "/reset")
    assert "cleared" in text and session.turns == [] and not session.filters.active
    assert session.k == 3  # k and mode stay


def test_errors_print_one_line_and_the_session_goes_on(index_dir):
    session, out, llm = make_session(index_dir)
    text = run_lines(session, out, "x" * 3000)
    assert text.startswith("rag: the question is 3,000 characters")
    assert session.turns[-1].status == "error"
    llm.enqueue("The US urged Pakistan to fully cooperate with the investigation [1].")
    assert "Sources:" in run_lines(session, out, QUESTION)


def test_ctrl_c_during_generation_cancels_that_answer(index_dir, real_sigint_handler):
    session, out, llm = make_session(index_dir, llm=InterruptOnce(), stream=True)
    try:
        text = run_lines(session, out, QUESTION)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C during an answer escaped ChatSession.ask")
    assert "draft: The US urged" in text and text.rstrip().endswith("(cancelled)")
    assert session.turns[-1].status == "cancelled" and session.last is None
    llm.enqueue("The US urged Pakistan to fully cooperate with the investigation [1].")
    assert "Sources:" in run_lines(session, out, QUESTION)


def test_ctrl_c_during_generation_in_the_prompt_loop(index_dir, real_sigint_handler):
    """The same real SIGINT inside run_tty: that answer is cancelled, the loop goes on to the next line."""
    session, out, llm = make_session(index_dir, llm=InterruptOnce(), stream=True)
    llm.enqueue("The US urged Pakistan to fully cooperate with the investigation [1].")
    with create_pipe_input() as pipe:
        pipe.send_text(f"{QUESTION}\r{QUESTION}\r\x04")
        run_tty(session, None, input=pipe, output=DummyOutput())
    text = out.getvalue()
    assert "draft: The US urged" in text and "(cancelled)" in text and "(interrupted)" not in text
    assert text.index("(cancelled)") < text.index("Sources:")
    assert [t.status for t in session.turns] == ["cancelled", "answered"]


def test_nothing_is_reloaded_after_the_first_question(index_dir, monkeypatch):
    session, out, llm = make_session(index_dir, mode="extractive")
    reader, embedder = session.pipeline.reader, session.pipeline.embedder

    def no_reload(*a, **kw):
        raise AssertionError("reloaded")

    monkeypatch.setattr(rag.pipeline, "open_store", no_reload)
    monkeypatch.setattr(rag.pipeline, "load_model", no_reload)
    monkeypatch.setattr(chat, "load_model", no_reload)
    run_lines(session, out, QUESTION, "/mode llm")
    llm.enqueue("The US urged Pakistan to fully cooperate with the investigation [1].")
    run_lines(session, out, "who blocked it?")
    assert session.pipeline.reader is reader and session.pipeline.embedder is embedder
    assert len([t for t in session.turns if t.answer]) == 2


def test_model_command_keeps_the_old_model_on_error(index_dir, tmp_path, monkeypatch):
    session, out, llm = make_session(index_dir)
    text = run_lines(session, out, f"/model {tmp_path / 'missing.gguf'}")
    assert "rag: model file not found" in text and "still using fake" in text
    assert session.pipeline.llm is llm

    other = FakeLLM(name="other.gguf")

    def load(path, settings):
        if "bad" in path:
            raise ModelError(f"not a GGUF model file: {path}")
        return other

    monkeypatch.setattr(chat, "load_model", load)
    run_lines(session, out, "/model bad.gguf")
    assert session.pipeline.llm is llm
    text = run_lines(session, out, "/model other.gguf")
    assert "model = other.gguf" in text and session.pipeline.llm is other and "other.gguf" in session.toolbar()


def test_export_markdown_with_footnotes(index_dir, tmp_path):
    session, out, llm = make_session(index_dir)
    llm.enqueue("The US urged Pakistan to fully cooperate with the investigation [1].")
    target = tmp_path / "talk.md"
    run_lines(session, out, QUESTION, "/mode extractive", "and what did China do?", f"/export {target}")
    md = target.read_text()
    assert f"## 1. {QUESTION}" in md and "## 2. and what did China do?" in md
    assert "*searching: what did China do? (Pakistan)*" in md
    assert "[^1]" in md and "[1]" not in md.split("---")[0]
    notes = [line for line in md.splitlines() if line.startswith("[^")]
    citations = {(c.doc_id, c.start, c.end) for t in session.turns for c in t.answer.citations}
    assert len(notes) == len(citations)
    first = session.turns[0].answer.citations[0]
    assert f"`{first.doc_id}`, characters {first.start}–{first.end}" in md and first.title[:30] in md
    assert "rag: cannot write" in run_lines(session, out, f"/export {tmp_path / 'no' / 'such' / 'x.md'}")


def test_help_lists_every_command_and_quit_ends(index_dir):
    session, out, _ = make_session(index_dir)
    text = run_lines(session, out, "/help")
    for name in chat.COMMANDS:
        assert f"/{name}" in text
    assert session.handle("/quit") is False and session.handle("/exit") is False


def test_completer_offers_commands_and_arguments(index_dir):
    session, out, llm = make_session(index_dir)
    completer = SlashCompleter(session)

    def complete(text):
        return [c.text for c in completer.get_completions(Document(text, len(text)), None)]

    assert complete("/so") == ["/sources"]
    assert set(complete("/")) == {f"/{n}" for n in chat.COMMANDS}
    assert complete("/mode e") == ["extractive"]
    assert "doc=000_7e1cbb29f31f5564.txt" in complete("/filter doc=0")
    assert complete("/filter source=A") == ["source=AFP"]
    assert complete("What did") == []
    llm.enqueue("The US urged Pakistan to fully cooperate with the investigation [1].")
    run_lines(session, out, QUESTION)
    assert complete("/open ") == [str(c.n) for c in session.last.answer.citations]


# --- the two front ends ---------------------------------------------------------------------------


def test_prompt_toolkit_loop(index_dir, tmp_path):
    session, out, _ = make_session(index_dir, mode="extractive")
    history = tmp_path / "history"
    with create_pipe_input() as pipe:
        pipe.send_text("What did the US urge\x1b\rPakistan to do?\r")  # Esc+Enter: a newline, Enter sends
        pipe.send_text("this is never sent\x03")  # Ctrl-C at the prompt clears the line
        pipe.send_text("/sources\r")
        pipe.send_text("/bogus\r")
        pipe.send_text("\x04")  # Ctrl-D on an empty line ends the session
        run_tty(session, history, input=pipe, output=DummyOutput())
    assert [t.question for t in session.turns] == ["What did the US urge\nPakistan to do?"]
    text = out.getvalue()
    assert "Sources:" in text and "unknown command /bogus" in text and "never sent" not in text
    saved = history.read_text()
    assert "+What did the US urge\n+Pakistan to do?" in saved and "never sent" not in saved

    again, out2, _ = make_session(index_dir, mode="extractive")
    with create_pipe_input() as pipe:
        pipe.send_text("\x1b[A\r/quit\r")  # Up recalls the last line of the saved history
        run_tty(again, history, input=pipe, output=DummyOutput())
    assert "unknown command /bogus" in out2.getvalue()


def test_unwritable_history_falls_back_to_memory(index_dir, tmp_path):
    session, _, _ = make_session(index_dir, mode="extractive")
    warn = io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text("/quit\r")
        run_tty(session, tmp_path / "no" / "such" / "history", input=pipe, output=DummyOutput(), warn=warn)
    assert "cannot write history file" in warn.getvalue()


def test_plain_mode_for_piped_input(index_dir):
    session, out, _ = make_session(index_dir, mode="extractive", colour=False)
    run_plain(session, io.StringIO(f"{QUESTION}\n\n/sources\n/why\n/quit\n{QUESTION}\n"))
    text = out.getvalue()
    assert text.startswith(f"> {QUESTION}\n") and "> /sources" in text and "> /why" in text
    assert text.count(f"> {QUESTION}") == 1  # /quit stops reading
    assert "\x1b" not in text


def test_run_with_piped_stdin(index_dir, monkeypatch):
    built = []

    def pipeline(settings):
        built.append(Pipeline(settings, llm=FakeLLM(), embedder=FakeEmbedder()))
        return built[-1]

    monkeypatch.setattr(rag.pipeline, "Pipeline", pipeline)
    out = io.StringIO()
    code = chat.run(Settings(index=str(index_dir), mode="extractive"), chat.Filters(),
                    stdin=io.StringIO(f"{QUESTION}\n/k 2\n"), stdout=out)
    assert code == 0 and len(built) == 1
    assert "Sources:" in out.getvalue() and "k = 2" in out.getvalue() and "\x1b" not in out.getvalue()


def test_cli_chat_reports_a_missing_index(tmp_path, capsys):
    from rag.cli import main

    assert main(["chat", "--index", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("rag: no index at")


# --- measured on real retrieval -------------------------------------------------------------------


@pytest.mark.slow
def test_rewrite_helps_on_followup_pairs(tmp_path_factory, real_embedder, counter):
    """Extractive answers to follow-ups as typed vs rewritten (numbers in the README)."""
    from rag.indexer import index_paths

    path = tmp_path_factory.mktemp("real") / "idx"
    settings = Settings(index=str(path), mode="extractive")
    index_paths([str(CORPUS)], settings, embedder=real_embedder, counter=counter)
    pipeline = Pipeline(settings, llm=FakeLLM(), embedder=real_embedder)
    correct = {"raw": 0, "rules": 0}
    for previous, question, _, must in FOLLOWUP_PAIRS:
        rewritten = rewrite_followup(question, [previous])
        for query in {question, rewritten}:  # a question left as typed is asked once
            answer = pipeline.ask(query)
            text = answer.answer.lower()
            ok = not answer.abstained and all(any(a in text for a in group) for group in must)
            correct["raw"] += ok and query == question
            correct["rules"] += ok and query == rewritten
    pipeline.close()
    print(f"follow-up pairs answered correctly: {correct} of {len(FOLLOWUP_PAIRS)}")
    assert correct["rules"] >= correct["raw"] + 3
