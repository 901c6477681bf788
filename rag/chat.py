"""`rag chat`: questions, follow-ups and slash commands over one loaded Pipeline.

Two layers, so the behaviour can be tested without a terminal:

- `ChatSession` holds the state (pipeline, conversation, filters, k, mode, last answer) and turns
  one input line into output on a given stream: `handle(line) -> keep going?`.
- `run_tty()` wraps it in a prompt-toolkit PromptSession (history file, Esc+Enter for a newline,
  slash-command completion, a bottom toolbar); `run_plain()` reads piped lines with no escape codes.

Follow-ups ("and what did the union do?") are rewritten into a standalone retrieval query by
`rewrite_followup()`, a deterministic rule over the previous turn's names and topic words: the
default 135M model answers the rewrite prompt instead of rewriting, so the model is used for
rewriting only when asked (`--rewrite llm`).

Left out on purpose: answers that draw on earlier answers' text (each question is answered from the
articles alone), and conversation memory across sessions (only the input history persists).
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from prompt_toolkit.completion import Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from rag import prompts, render
from rag.config import MODES
from rag.errors import EXIT_OK, RagError, UsageError
from rag.evidence import key_terms
from rag.llm import GenerationConfig, load_model
from rag.retrieve import Filters
from rag.stores import local_folder, location
from rag.types import Answer, Citation
from rag.words import content_tokens

HISTORY_FILE = ".chat_history"  # beside the index unless --history says otherwise
OPEN_CONTEXT_CHARS = 300  # /open shows this much article text on each side of the cited span
MAX_K = 100

# --- follow-up rewriting -------------------------------------------------------------------

_CONNECTOR = re.compile(r"^(?:and|but|also|so|then|plus|ok|okay)\b[\s,:;-]*", re.I)
_ABOUT = re.compile(r"^(?:what|how)\s+about\b[\s,:;-]*", re.I)
# "that" only at the end ("when was that?"): elsewhere it is usually a relative pronoun.
_PRONOUN = re.compile(r"\b(?:it|its|they|them|their|he|him|his|she|her|this|these|those|there)\b"
                      r"|\bthat\s*[?.!]*$", re.I)
# A pronoun as the subject right after the question word ("when was it ...", "what did he ..."):
# the question is about someone named earlier even when it names something else too.
_PRONOUN_SUBJECT = re.compile(r"^\w+\s+(?:\w+\s+)?(?:it|he|she|they|this|these|those)\b", re.I)
_NAME = re.compile(r"(?<![\w'’-])(?:[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)*|(?:19|20)\d\d)(?![\w])")
_YEAR = re.compile(r"^(?:19|20)\d\d$")
_POSSESSIVE = re.compile(r"['’]s$")
_QUESTION_START = frozenset("""
what which who whom whose when where why how is are was were do does did can could has have had will
would should tell list name describe explain give show summarise summarize compare
""".split())
_PREPOSITIONS = frozenset("in on at for from during after before since by with to of about".split())
_VAGUE = frozenset("many much".split())  # content words that say nothing about the topic
SHORT_FOLLOWUP_WORDS = 3  # "Why?", "How many died?": too short to stand alone


def _name_spans(text: str, skip_first: bool = True) -> list[tuple[int, int, str]]:
    """Capitalised names and years with their spans; the question's capitalised first word is not a name."""
    spans = []
    for m in _NAME.finditer(text):
        start, name = m.start(), m.group(0)
        if skip_first and start == 0 and not _YEAR.match(name):
            first, _, rest = name.partition(" ")
            if not rest:
                continue
            start, name = start + len(first) + 1, rest
        name = _POSSESSIVE.sub("", name)
        if name != "I":
            spans.append((start, start + len(name), name))
    return spans


def _names(text: str, skip_first: bool = True) -> list[str]:
    return list(dict.fromkeys(name for _, _, name in _name_spans(text, skip_first)))


def _mentioned(term: str, text: str) -> bool:
    tokens = content_tokens(term)
    return bool(tokens) and tokens <= content_tokens(text)


def _topic_words(text: str) -> list[str]:
    """The content words of `text`, in order, as written."""
    words = []
    for word in re.findall(r"[\w'’-]+", text):
        if content_tokens(word) and word.lower() not in _VAGUE and word not in words:
            words.append(word)
    return words


def _strip_connectors(question: str) -> str:
    previous = None
    while previous != question:
        previous, question = question, _CONNECTOR.sub("", question, count=1)
    return question


def is_followup(question: str) -> bool:
    """Whether a question leans on the conversation: a leading "and/but/also/what about", or a
    pronoun or a very short question without a name of its own."""
    q = " ".join(question.split())
    if _CONNECTOR.match(q) or _ABOUT.match(q):
        return True
    if key_terms(q):
        return bool(_PRONOUN_SUBJECT.match(q))
    return bool(_PRONOUN.search(q)) or len(q.split()) <= SHORT_FOLLOWUP_WORDS


def rewrite_followup(question: str, history: list[str]) -> str:
    """A standalone retrieval query for `question`, given the earlier standalone queries (oldest first).

    Not a follow-up, or nothing to lean on: the question unchanged. "what about X?" and bare
    fragments ("and in 2019?") put X in place of the previous query's first name of the same kind
    (a year for a year), or append it. Otherwise the previous query's names are added in
    parentheses (its topic words when it has no names); a name of the question's own takes the
    place of the previous subject, so "and what did the union do?" after "What did the council ask
    the mayor to do?" searches "what did the union do? (mayor)".
    """
    q = " ".join(question.split())
    if not history or not is_followup(q):
        return q
    previous = history[-1]
    core = _strip_connectors(q)
    about = _ABOUT.match(core)
    if about:
        return _substitute(previous, core[about.end():])
    first = core.split(" ", 1)[0].lower().strip("?.,!")
    if core and first not in _QUESTION_START:
        return _substitute(previous, core)
    # Measured on follow-up pairs: topic words on top of the names drown the question's own words.
    context = _names(previous) or _topic_words(previous)
    if key_terms(core) and _names(previous) and not _PRONOUN_SUBJECT.match(core):
        # "and what did the union do?": the union takes the previous subject's place. With a pronoun
        # ("when was it added to the UN list?") the previous subject is still the topic.
        context = context[1:]
    context = [t for t in context if not _mentioned(t, core)]
    if not context:
        return core or previous
    return f"{core} ({' '.join(context)})"


def _substitute(previous: str, fragment: str) -> str:
    """`previous` with the fragment's name in place of its first name of the same kind, or appended."""
    x = fragment.strip().rstrip("?.!, ")
    if not x:
        return previous
    candidates = _names(x, skip_first=False)
    if not candidates and len(x.split()) <= 3 and x.split()[0].lower() not in _PREPOSITIONS:
        candidates = [x]
    for new in candidates[:1]:
        if _mentioned(new, previous):
            break
        year = bool(_YEAR.match(new))
        for start, end, old in _name_spans(previous):
            if bool(_YEAR.match(old)) != year or old.lower() == new.lower():
                continue
            if not year and old.isupper() and previous[:start].lower().endswith("the "):
                start -= 4
            return previous[:start] + new + previous[end:]
    if x.split()[0].lower() in _PREPOSITIONS:
        return f"{previous.rstrip().rstrip('?.!')} {x}?"
    return f"{previous} ({x})"


def llm_rewrite(llm, question: str, turns: list[Turn]) -> str:
    """The model's standalone query (prompts/rewrite_query.txt), or "" when it gives nothing usable."""
    lines = []
    for t in turns[-3:]:
        lines.append(f"Q: {t.query}")
        if t.answer is not None:
            lines.append(f"A: {prompts.sanitize_source_text(t.answer.answer)}")
    text = prompts.load("rewrite_query").render(history="\n".join(lines), question=question)
    reply = llm.chat([{"role": "user", "content": text}], GenerationConfig(max_tokens=48, stop=("\n",)))
    line = reply.strip().strip("\"'“”").strip()
    return line if 3 <= len(line) <= 300 else ""


# --- the session -----------------------------------------------------------------------------


@dataclass
class Turn:
    question: str  # as typed
    query: str  # the standalone query that was searched and answered
    answer: Answer | None = None  # None when cancelled or failed
    status: str = "answered"  # answered | cancelled | error
    error: str = ""


COMMANDS: dict[str, tuple[str, str]] = {  # name -> (arguments, what it does)
    "help": ("", "this list"),
    "sources": ("", "the last answer's sources with their quotes"),
    "open": ("N", "source N of the last answer inside its article, the cited span highlighted"),
    "why": ("", "how the last answer's passages were found: ranks and scores per retriever"),
    "filter": ("since=DATE until=DATE source=NAME doc=ID | clear", "restrict the articles searched; "
               "no arguments shows the filters"),
    "k": ("N", "passages retrieved per question"),
    "mode": ("llm|extractive|baseline", "answer with the model (verified), or with evidence sentences only"),
    "model": ("PATH", "load another GGUF model (the current one stays if it fails)"),
    "export": ("FILE.md", "save the conversation as Markdown with footnote citations"),
    "reset": ("", "forget the conversation and clear the filters"),
    "quit": ("", "leave (Ctrl-D does too)"),
}


def _style(text: str, code: str, on: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if on else text


class ChatSession:
    """One conversation over one Pipeline: nothing is loaded again after the first question."""

    def __init__(self, pipeline, out: TextIO, *, colour: bool = False, stream: bool = False,
                 filters: Filters | None = None, k: int | None = None, mode: str | None = None,
                 rewrite: str = "rules", width: int | None = None):
        self.pipeline = pipeline
        self.out = out
        self.colour = colour
        self.stream = stream  # show the model's draft token by token (terminals only)
        self.filters = filters or Filters()
        self.k = k or pipeline.settings.k
        self.mode = mode or pipeline.settings.mode
        self.rewrite = rewrite
        self.width = width or 100
        self.turns: list[Turn] = []
        self.model_name = pipeline.model_name()
        self._drafting = False

    # --- output --------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _dim(self, text: str) -> str:
        return _style(text, "2", self.colour)

    def toolbar(self) -> str:
        """Most-changed first: a narrow terminal cuts the end of the line."""
        return (f" mode {self.mode} │ k {self.k} │ filters {self.filters.describe()} │ model {self.model_name} │ "
                f"index {location(self.pipeline.settings)} │ Esc+Enter newline, /help")

    @property
    def last(self) -> Turn | None:
        return next((t for t in reversed(self.turns) if t.answer is not None), None)

    # --- input ---------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Load the embedder, vectors, lexical index and (in llm mode) the model before the first prompt."""
        self.pipeline.retriever.search("warm up", 1)
        if self.mode == "llm":
            self.model_name = self.pipeline.llm.name

    def handle(self, line: str) -> bool:
        """Run one input line (a question or a /command); False when the session should end."""
        text = line.strip()
        if not text:
            return True
        if text.startswith("/"):
            return self.command(text)
        self.ask(text)
        return True

    def ask(self, question: str) -> None:
        """Answer one question; Ctrl-C or a RagError ends this answer only, never the session."""
        query = question
        try:
            query = self.standalone(question)
            if " ".join(query.split()) != " ".join(question.split()):
                self.say(self._dim(f"searching: {query}"))
            answer = self.pipeline.ask(query, k=self.k, mode=self.mode, filters=self.filters,
                                       on_token=self._show_token if self.stream else None)
        except KeyboardInterrupt:
            self._end_draft()
            self.say("(cancelled)")
            self.turns.append(Turn(question, query, status="cancelled"))
            return
        except RagError as e:
            self._end_draft()
            self.say(f"rag: {e}")
            self.turns.append(Turn(question, query, status="error", error=str(e)))
            return
        self._end_draft()
        self.turns.append(Turn(question, query, answer))
        self.say(render.answer_text(answer, self.colour, self.width))
        self.say(self._dim(_timing(answer)))

    def standalone(self, question: str) -> str:
        """The query to search for: the question, or its rewrite when it is a follow-up."""
        history = [t.query for t in self.turns if t.status != "error"]
        rule = rewrite_followup(question, history)
        if self.rewrite == "llm" and history and is_followup(question):
            return llm_rewrite(self.pipeline.llm, question, self.turns) or rule
        return rule

    def _show_token(self, piece: str) -> None:
        if not self._drafting:
            self._drafting = True
            self.out.write(self._dim("draft: ") + ("\x1b[2m" if self.colour else ""))
        self.out.write(piece)
        self.out.flush()

    def _end_draft(self) -> None:
        if self._drafting:
            self._drafting = False
            self.out.write(("\x1b[0m" if self.colour else "") + "\n\n")
            self.out.flush()

    # --- commands ------------------------------------------------------------------------

    def command(self, text: str) -> bool:
        word, _, arg = text[1:].partition(" ")
        arg = arg.strip()
        matches = [name for name in COMMANDS if name.startswith(word.lower())] if word else []
        if word.lower() in COMMANDS:
            matches = [word.lower()]
        if word.lower() == "exit":
            matches = ["quit"]
        if len(matches) != 1:
            also = f" (could be {', '.join('/' + m for m in matches)})" if matches else ""
            self.say(f"unknown command /{word}{also}; /help lists the commands")
            return True
        return getattr(self, f"_cmd_{matches[0]}")(arg) is not False

    def _usage(self, name: str) -> None:
        args, what = COMMANDS[name]
        self.say(f"usage: /{name} {args}".rstrip() + f"  ({what})")

    def _cmd_help(self, arg: str) -> None:
        width = max(len(f"/{n} {a}".rstrip()) for n, (a, _) in COMMANDS.items() if len(a) < 20)
        for name, (args, what) in COMMANDS.items():
            left = f"/{name} {args}".rstrip()
            self.say(f"{left:<{width}}  {what}" if len(left) <= width else f"{left}\n{'':<{width}}  {what}")
        self.say("Ask a question on its own line; follow-ups (\"and what did the union do?\") use the conversation. "
                 "Esc+Enter inserts a newline, Ctrl-C cancels an answer, Ctrl-D quits.")

    def _cmd_quit(self, arg: str) -> bool:
        return False

    def _cmd_reset(self, arg: str) -> None:
        self.turns.clear()
        self.filters = Filters()
        self.say("conversation and filters cleared")

    def _cmd_k(self, arg: str) -> None:
        if not arg:
            self.say(f"k = {self.k}")
            return
        if not arg.isdigit() or not 1 <= int(arg) <= MAX_K:
            self.say(f"/k needs a whole number from 1 to {MAX_K}, not {arg!r}")
            return
        self.k = int(arg)
        self.say(f"k = {self.k}")

    def _cmd_mode(self, arg: str) -> None:
        if not arg:
            self.say(f"mode = {self.mode}")
            return
        if arg not in MODES:
            self.say(f"/mode is one of {', '.join(MODES)}, not {arg!r}")
            return
        self.mode = arg
        self.say(f"mode = {self.mode}")

    def _cmd_model(self, arg: str) -> None:
        if not arg:
            self.say(f"model = {self.model_name}")
            return
        self.say(self._dim(f"loading {arg} ..."))
        try:
            llm = load_model(arg, self.pipeline.settings)
        except RagError as e:
            self.say(f"rag: {e}")
            self.say(f"still using {self.model_name}")
            return
        self.pipeline.use_model(llm)
        self.model_name = llm.name
        self.say(f"model = {self.model_name}")

    def _cmd_filter(self, arg: str) -> None:
        if not arg:
            self.say(f"filters: {self.filters.describe()}")
            return
        if arg == "clear":
            self.filters = Filters()
            self.say("filters: none")
            return
        try:
            tokens = shlex.split(arg)
        except ValueError as e:
            self.say(f"/filter: {e}")
            return
        values = {"since": self.filters.since, "until": self.filters.until, "source": self.filters.source}
        docs = list(self.filters.docs)
        for token in tokens:
            key, sep, value = token.partition("=")
            if not sep or key not in ("since", "until", "source", "doc"):
                self.say(f"/filter takes since=DATE until=DATE source=NAME doc=ID or clear, not {token!r}")
                return
            if key == "doc" and value and self.pipeline.reader.article(value) is None:
                self.say(f"/filter: no article {value!r} in the index")
                return
            if key == "doc":
                docs = docs + [value] if value else []  # "doc=" drops the doc filters
            else:
                values[key] = value or None  # "since=" drops that filter
        try:
            self.filters = Filters(**values, docs=tuple(dict.fromkeys(docs)))
        except UsageError as e:
            self.say(f"/filter: {e.message.removeprefix('--')}")
            return
        self.say(f"filters: {self.filters.describe()}")

    def _cmd_sources(self, arg: str) -> None:
        answer = self._last_answer()
        if answer is None:
            return
        if not answer.citations:
            self.say("the last answer cites no sources")
            return
        for c in answer.citations:
            self.say(_style(render.citation_line(c), "36", self.colour))
            self.say(textwrap.fill(f"“{' '.join(c.quote.split())}”", self.width,
                                   initial_indent="    ", subsequent_indent="    "))

    def _cmd_open(self, arg: str) -> None:
        answer = self._last_answer()
        if answer is None:
            return
        numbers = [c.n for c in answer.citations]
        if not numbers:
            self.say("the last answer cites no sources")
            return
        if not arg.isdigit() or int(arg) not in numbers:
            self.say(f"/open needs a source number of the last answer: {', '.join(map(str, numbers))}")
            return
        c = next(c for c in answer.citations if c.n == int(arg))
        article = self.pipeline.reader.article(c.doc_id)
        if article is None:
            self.say(f"rag: article {c.doc_id} is no longer in the index")
            return
        self.say(_style(render.citation_line(c), "36", self.colour))
        self.say(open_excerpt(article.text, c.start, c.end, self.colour, self.width))

    def _cmd_why(self, arg: str) -> None:
        turn = self.last
        if turn is None:
            self.say("no answer yet: ask a question first")
            return
        self.say(why_table(turn, self.colour))

    def _cmd_export(self, arg: str) -> None:
        if not arg:
            self._usage("export")
            return
        path = Path(arg).expanduser()
        try:
            path.write_text(export_markdown(self), encoding="utf-8")
        except OSError as e:
            self.say(f"rag: cannot write {path}: {e.strerror or e}")
            return
        answered = sum(t.answer is not None for t in self.turns)
        self.say(f"wrote {path} ({answered} answer{'s' if answered != 1 else ''})")

    def _last_answer(self) -> Answer | None:
        turn = self.last
        if turn is None:
            self.say("no answer yet: ask a question first")
            return None
        return turn.answer


def _timing(answer: Answer) -> str:
    t = answer.timings_ms
    parts = [f"retrieve {t.get('retrieve', 0) / 1000:.1f} s"]
    if "first_token" in t:
        parts.append(f"first token {t['first_token'] / 1000:.1f} s")
    parts.append(f"total {t.get('total', 0) / 1000:.1f} s")
    return f"({answer.mode} · {' · '.join(parts)})"


def open_excerpt(text: str, start: int, end: int, colour: bool = False, width: int = 100) -> str:
    """The article around text[start:end], with the span in bold reverse video (or »…« in plain text)."""
    lo = max(0, start - OPEN_CONTEXT_CHARS)
    hi = min(len(text), end + OPEN_CONTEXT_CHARS)
    if lo > 0:  # start and end on word boundaries
        space = text.find(" ", lo, start)
        lo = space + 1 if space != -1 else lo
    if hi < len(text):
        space = text.rfind(" ", end, hi)
        hi = space if space != -1 else hi
    before, span, after = text[lo:start], text[start:end], text[end:hi]
    opening, closing = ("\x00", "\x01") if colour else ("»", "«")
    body = ("…" if lo > 0 else "") + before + opening + span + closing + after + ("…" if hi < len(text) else "")
    paragraphs = [textwrap.fill(" ".join(p.split()), width, break_on_hyphens=False)
                  for p in body.split("\n") if p.strip()]
    out = "\n".join(paragraphs)
    if colour:  # reverse video across line breaks: close and reopen around each newline
        inside = re.compile("\x00(.*?)\x01", re.S)
        out = inside.sub(lambda m: "\x1b[1;7m" + m.group(1).replace("\n", "\x1b[0m\n\x1b[1;7m") + "\x1b[0m", out)
    return out


def why_table(turn: Turn, colour: bool = False) -> str:
    """Each retrieved chunk: fused rank and score, dense rank and cosine, lexical rank, who found it."""
    answer = turn.answer
    cited: dict[str, list[int]] = {}
    for c in answer.citations:
        cited.setdefault(c.chunk_id, []).append(c.n)
    lines = [f"query: {turn.query}", f"{'rank':>4}  {'fused':>7}  {'dense':>5}  {'cosine':>6}  {'lexical':>7}  "
             f"{'found by':<13}  chunk"]
    for r in answer.retrieved:
        found = "+".join(name for name, rank in (("dense", r.dense_rank), ("lexical", r.lexical_rank))
                         if rank is not None) or "-"
        cosine = f"{r.dense_score:.3f}" if r.dense_score is not None else "-"
        marks = "".join(f"[{n}]" for n in cited.get(r.chunk_id, []))
        also = f" (also {', '.join(r.also_reported_by)})" if r.also_reported_by else ""
        row = (f"{r.rank:>4}  {r.score:>7.4f}  {_rank(r.dense_rank):>5}  {cosine:>6}  {_rank(r.lexical_rank):>7}  "
               f"{found:<13}  {r.chunk_id}{also}")
        lines.append(row + (" " + _style(f"cited {marks}", "36", colour) if marks else ""))
    if not answer.retrieved:
        lines.append("   (nothing retrieved: check /filter)")
    lines.append("fused = reciprocal-rank fusion of the dense (embedding) and lexical (BM25) rankings")
    lines += [f"note: {n}" for n in answer.notes]
    return "\n".join(lines)


def _rank(rank: int | None) -> str:
    return "-" if rank is None else str(rank)


def export_markdown(session: ChatSession) -> str:
    """The conversation as Markdown: one section per question, [n] markers as footnotes [^m]."""
    lines = ["# rag chat", "",
             f"- index: `{location(session.pipeline.settings)}`",
             f"- model: {session.model_name}",
             f"- exported: {datetime.now().strftime('%Y-%m-%d %H:%M')}", ""]
    footnotes: dict[tuple, int] = {}  # (doc_id, start, end) -> footnote number
    notes: list[str] = []
    for i, turn in enumerate(session.turns, 1):
        lines += [f"## {i}. {' '.join(turn.question.split())}", ""]
        if turn.query != turn.question:
            lines += [f"*searching: {turn.query}*", ""]
        if turn.answer is None:
            lines += [f"*({turn.status}{': ' + turn.error if turn.error else ''})*", ""]
            continue
        numbers = {}
        for c in turn.answer.citations:
            key = (c.doc_id, c.start, c.end)
            if key not in footnotes:
                footnotes[key] = len(footnotes) + 1
                notes.append(_footnote(footnotes[key], c))
            numbers[c.n] = footnotes[key]
        lines += [_footnote_markers(turn.answer.answer, numbers), ""]
        if turn.answer.abstained:
            lines += [f"*({n})*" for n in turn.answer.notes if n.startswith("abstained: ")] + [""]
    if notes:
        lines += ["---", ""] + notes + [""]
    return "\n".join(lines)


def _footnote_markers(text: str, numbers: dict[int, int]) -> str:
    """Answer markers as conversation-wide footnotes: "A [1][2]." -> "A [^3][^4]."."""
    return re.sub(r"\[(\d+)\]", lambda m: f"[^{numbers.get(int(m.group(1)), m.group(1))}]", text)


def _footnote(number: int, c: Citation) -> str:
    meta = ", ".join(x for x in (c.date or "date unknown", c.source, c.page and f"page {c.page}") if x)
    url = f", <{c.url}>" if c.url else ""
    return (f"[^{number}]: “{' '.join(c.quote.split())}” — *{c.title}* ({meta}), `{c.doc_id}`, "
            f"characters {c.start}–{c.end}{url}")


# --- the two front ends ------------------------------------------------------------------------


def default_history_path(index: str) -> Path:
    return Path(index) / HISTORY_FILE


class SlashCompleter(Completer):
    """Completes /commands, their fixed arguments, doc ids and sources for /filter, paths for /model and /export."""

    def __init__(self, session: ChatSession):
        self.session = session
        self._paths = PathCompleter(expanduser=True)
        self._values: dict[str, list[str]] | None = None

    def _filter_values(self) -> dict[str, list[str]]:
        if self._values is None:
            reader = self.session.pipeline.reader
            self._values = {
                "doc=": [f"doc={d}" for d in reader.doc_ids(500)],
                "source=": [f"source={s}" for s in reader.sources()[:100]],
            }
        return self._values

    def get_completions(self, document, complete_event) -> Iterable[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/") or "\n" in text:
            return
        if " " not in text:
            for name, (_, what) in COMMANDS.items():
                if f"/{name}".startswith(text.lower()):
                    yield Completion(f"/{name}", start_position=-len(text), display_meta=what)
            return
        name, _, rest = text[1:].partition(" ")
        if name in ("model", "export"):
            yield from self._paths.get_completions(Document(rest, len(rest)), complete_event)
            return
        word = rest.split(" ")[-1]
        options: list[str] = []
        if name == "mode":
            options = ["llm", "extractive"]
        elif name == "open" and self.session.last is not None:
            options = [str(c.n) for c in self.session.last.answer.citations]
        elif name == "filter":
            options = ["since=", "until=", "source=", "doc=", "clear"]
            for prefix, values in self._filter_values().items():
                if word.startswith(prefix):
                    options = values
        for option in options:
            if option.startswith(word) and option != word:
                yield Completion(option, start_position=-len(word))


def _key_bindings():
    """Enter sends (or takes the highlighted completion); Esc+Enter (Meta+Enter) inserts a newline."""
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("enter")
    def _send(event) -> None:
        buffer = event.current_buffer
        if buffer.complete_state and buffer.complete_state.current_completion:
            buffer.apply_completion(buffer.complete_state.current_completion)
            return
        buffer.validate_and_handle()

    @bindings.add("escape", "enter")
    def _newline(event) -> None:
        event.current_buffer.insert_text("\n")

    return bindings


def _history(path: Path | None, warn: TextIO):
    """A FileHistory at `path`, or an in-memory one (with a warning) when the file cannot be written."""
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    if path is None:
        return InMemoryHistory()
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as e:
        print(f"rag: cannot write history file {path} ({e.strerror or e}); history is not kept", file=warn)
        return InMemoryHistory()
    return FileHistory(str(path))


def run_tty(session: ChatSession, history_path: Path | None, *, input=None, output=None,
            warn: TextIO = sys.stderr) -> None:
    """The prompt-toolkit loop: Ctrl-C at the prompt clears the line, Ctrl-D (or /quit) leaves."""
    from prompt_toolkit import PromptSession

    prompt = PromptSession(
        history=_history(history_path, warn), multiline=True, key_bindings=_key_bindings(),
        completer=SlashCompleter(session), complete_while_typing=True, bottom_toolbar=session.toolbar,
        prompt_continuation=lambda width, line_number, wrap: "." * (width - 1) + " ",
        input=input, output=output)
    while True:
        try:
            line = prompt.prompt("rag> ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        try:
            if not session.handle(line):
                break
        except KeyboardInterrupt:  # during a command; ask() handles its own
            session.say("(interrupted)")


def run_plain(session: ChatSession, lines: Iterable[str]) -> None:
    """Piped input: one question or command per line, echoed with "> ", plain text out, ends at EOF."""
    for line in lines:
        text = line.strip()
        if not text:
            continue
        session.say(f"> {text}")
        if not session.handle(text):
            break
        session.say()


def run(settings, filters: Filters, *, history: str | None = None, rewrite: str = "rules",
        stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """`rag chat`: load once, then the prompt-toolkit loop on a terminal or plain lines from a pipe."""
    from rag.pipeline import Pipeline

    interactive = stdin.isatty() and stdout.isatty()
    if interactive:
        print("loading the index and models ...", file=sys.stderr, flush=True)
    pipeline = Pipeline(settings)
    try:
        width = min(100, shutil.get_terminal_size().columns - 1) if interactive else 100
        session = ChatSession(pipeline, stdout, colour=interactive and render.use_colour(stdout),
                              stream=interactive, filters=filters, rewrite=rewrite, width=width)
        session.warm_up()
        if not interactive:
            run_plain(session, stdin)
            return EXIT_OK
        counts = pipeline.reader.manifest.get("counts", {})
        print(f"rag chat: {counts.get('articles', '?')} articles in {location(settings)}, model {session.model_name}. "
              "/help for commands, Ctrl-D to quit.", file=sys.stderr)
        run_tty(session, Path(history) if history else default_history_path(str(local_folder(settings))))
        return EXIT_OK
    finally:
        pipeline.close()
