"""`rag chat` end to end in a real pseudo-terminal.

pexpect plays the terminal: it types, sends Ctrl-C and Ctrl-D, and answers prompt-toolkit's cursor
position requests (without a reply prompt-toolkit hides the bottom toolbar, as a real terminal would
not). Assertions are on the output with escape sequences removed, i.e. the text on the screen.

Two sessions: one with the real embedder and the default GGUF model (slow), for everything that does
not depend on timing; and one where the model blocks after two tokens until Ctrl-C has arrived, so
that Ctrl-C during an answer goes through the terminal's real SIGINT every time (a real model may
finish its answer before the key press, and then there is nothing to cancel).
"""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys

import pytest

from tests.conftest import CORPUS, subprocess_env

pexpect = pytest.importorskip("pexpect")

TIMEOUT = 120  # per step; a loaded 2-core machine needs it, an idle one answers in a few seconds
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|[\x08\r]")
_CPR_REQUEST = r"\x1b\[6n"


def screen(log: io.StringIO) -> str:
    return _ESCAPES.sub("", log.getvalue())


def expect(child, pattern: str) -> None:
    """Wait for `pattern` (a regex), answering cursor position requests on the way."""
    while child.expect([pattern, _CPR_REQUEST], timeout=TIMEOUT) == 1:
        child.send("\x1b[20;1R")  # "the cursor is on row 20": room below for the toolbar


def terminal_env() -> dict[str, str]:
    env = subprocess_env(RAG_THREADS="1", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    return env


def _default_sigint() -> None:
    """A terminal user's Ctrl-C, even when the suite itself runs with SIGINT ignored (a CI job or a
    shell's background `&` starts it so, and a child would inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn_chat(argv: list[str], cwd, log: io.StringIO):
    child = pexpect.spawn(sys.executable, argv, env=terminal_env(), cwd=str(cwd), dimensions=(40, 120),
                          encoding="utf-8", timeout=TIMEOUT, preexec_fn=_default_sigint)
    child.logfile_read = log
    return child


@pytest.mark.slow
def test_chat_session_in_a_terminal(tmp_path):
    index = tmp_path / "idx"
    subprocess.run([sys.executable, "-m", "rag.cli", "index", str(CORPUS), "--index", str(index)],
                   check=True, capture_output=True, env=terminal_env(), cwd=tmp_path, timeout=300)

    history = tmp_path / "history"
    log = io.StringIO()
    child = spawn_chat(["-m", "rag.cli", "chat", "--index", str(index), "--history", str(history)], tmp_path, log)
    try:
        expect(child, "rag>")
        expect(child, "mode llm │ k 6 │ filters none")  # the bottom toolbar, once the height is known
        child.sendline("What did the US urge Pakistan to do?")
        expect(child, "Sources:")
        expect(child, r"\(llm · retrieve")
        expect(child, "rag>")
        answered = screen(log)
        assert "draft: " in answered and "[1] " in answered and "Pakistan" in answered.split("Sources:")[0]
        assert re.search(r"\d{3}_[0-9a-f]{16}\.txt:\d+-\d+", answered)

        child.sendline("/sources")
        expect(child, "    “")
        expect(child, "rag>")
        child.sendline("/open 1")
        expect(child, r"\x1b\[1;7m")  # the cited span in bold reverse video
        expect(child, "rag>")

        child.send("this line is never sent")
        expect(child, "never sent")
        child.sendcontrol("c")  # at the prompt: clears the line (Ctrl-C during an answer: the next test)
        expect(child, "rag>")

        child.sendline("Which group claimed the Pulwama suicide attack?")
        start = len(screen(log))
        expect(child, "Sources:")
        expect(child, "rag>")
        assert "[1]" in screen(log)[start:]

        child.sendcontrol("d")
        child.expect(pexpect.EOF, timeout=TIMEOUT)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, screen(log)[-2000:]
    text = screen(log)
    assert "Traceback" not in text and "(cancelled)" not in text
    saved = history.read_text(encoding="utf-8")
    assert "+What did the US urge Pakistan to do?" in saved and "+/open 1" in saved and "never sent" not in saved


# `rag chat` with the fast fake embedder (wearing MiniLM's identity) and a model that streams two
# pieces of its first answer and then waits, up to 10 minutes, for Ctrl-C; later answers stream whole.
BLOCKING_CHAT = """
import sys, time

import rag.pipeline
from rag.cli import main
from rag.llm import FakeLLM
from tests.hardening import shaped_embedder

ANSWER = "The US urged Pakistan to fully cooperate with the investigation [1]."


class BlockingLLM(FakeLLM):
    def stream_chat(self, messages, config):
        pieces = super().stream_chat(messages, config)
        if len(self.calls) > 1:
            return pieces

        def blocked():
            yield "The US "
            yield "urged "
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:  # short sleeps: SIGINT may land on another thread
                time.sleep(0.05)
            raise SystemExit("rag chat: no Ctrl-C arrived")

        return blocked()


llm = BlockingLLM().enqueue(ANSWER, ANSWER)
rag.pipeline.load_model = lambda *a, **k: llm
rag.pipeline.query_embedder_for = lambda *a, **k: shaped_embedder()
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_in_a_terminal_cancels_the_answer(tmp_path):
    from tests.hardening import build_index

    index = tmp_path / "idx"
    build_index(index, [CORPUS])
    log = io.StringIO()
    child = spawn_chat(["-c", BLOCKING_CHAT, "chat", "--index", str(index), "--history", str(tmp_path / "history")],
                       tmp_path, log)
    try:
        expect(child, "rag>")
        child.sendline("What did the US urge Pakistan to do?")
        expect(child, "The US urged ")  # the model is now waiting: the answer cannot finish first
        child.sendcontrol("c")  # the terminal turns this into SIGINT for the process
        expect(child, r"\(cancelled\)")
        expect(child, "rag>")
        child.sendline("What did the US urge Pakistan to do?")
        expect(child, "Sources:")
        expect(child, "rag>")
        child.sendcontrol("d")
        child.expect(pexpect.EOF, timeout=TIMEOUT)
    finally:
        child.close(force=True)
    text = screen(log)
    assert child.exitstatus == 0, text[-2000:]
    assert "Traceback" not in text and "(interrupted)" not in text and text.count("(cancelled)") == 1
    assert text.index("(cancelled)") < text.index("Sources:")
