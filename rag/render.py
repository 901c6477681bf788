"""Human-readable output of an Answer: the answer with [n] markers, then its sources.

Colour only when writing to a terminal (and NO_COLOR is unset); pipes get plain text.
"""

from __future__ import annotations

import os
import sys
import textwrap
from typing import TextIO

from rag.types import Answer, Citation


def use_colour(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def _style(text: str, code: str, on: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if on else text


def citation_line(c: Citation) -> str:
    meta = ", ".join(x for x in (c.date or "date unknown", c.source) if x)
    also = f"; also reported by {', '.join(c.also_reported_by)}" if c.also_reported_by else ""
    page = f", page {c.page}" if c.page else ""
    url = f" {c.url}" if c.url else ""
    return f"[{c.n}] {c.title} ({meta}{page}) {c.doc_id}:{c.start}-{c.end}{url}{also}"


def answer_text(answer: Answer, colour: bool = False, width: int = 100) -> str:
    """The whole human output for one answer."""
    if answer.abstained:
        why = next((n.removeprefix("abstained: ") for n in answer.notes if n.startswith("abstained: ")), "")
        lines = [answer.answer]
        if why:
            lines.append(_style(f"({why})", "2", colour))
        return "\n".join(lines)
    text = textwrap.fill(answer.answer, width, break_on_hyphens=False) if width else answer.answer
    lines = [text, "", _style("Sources:", "1", colour)]
    for c in answer.citations:
        lines.append(_style(citation_line(c), "36", colour))
        quote = " ".join(c.quote.split())
        lines.append(textwrap.fill(f"“{quote}”", width, initial_indent="    ", subsequent_indent="    ",
                                   break_on_hyphens=False))
    return "\n".join(lines)


def print_answer(answer: Answer, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout  # looked up now: a redirected sys.stdout is honoured
    print(answer_text(answer, use_colour(stream)), file=stream)
