"""`rag chat` end to end in a real pseudo-terminal with the real embedder and the default GGUF model.

pexpect plays the terminal: it types, sends Ctrl-C and Ctrl-D, and answers prompt-toolkit's cursor
position requests (without a reply prompt-toolkit hides the bottom toolbar, as a real terminal would
not). Assertions are on the output with escape sequences removed, i.e. the text on the screen.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import CORPUS, ROOT

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


@pytest.mark.slow
def test_chat_session_in_a_terminal(tmp_path):
    index = tmp_path / "idx"
    env = {**os.environ, "RAG_THREADS": "1", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    subprocess.run([sys.executable, "-m", "rag.cli", "index", str(CORPUS), "--index", str(index)],
                   check=True, capture_output=True, env=env, cwd=ROOT, timeout=300)

    history = tmp_path / "history"
    log = io.StringIO()
    child = pexpect.spawn(sys.executable, ["-m", "rag.cli", "chat", "--index", str(index), "--history",
                                           str(history)], env=env, cwd=str(ROOT), dimensions=(40, 120),
                          encoding="utf-8", timeout=TIMEOUT)
    child.logfile_read = log
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

        child.sendline("Describe everything the articles say about India and Pakistan, in detail.")
        expect(child, r"draft: \S*\w")
        child.sendcontrol("c")
        expect(child, r"\(cancelled\)")
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
    assert "Traceback" not in text and text.count("(cancelled)") == 1
    saved = history.read_text(encoding="utf-8")
    assert "+What did the US urge Pakistan to do?" in saved and "+/open 1" in saved
