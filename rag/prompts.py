"""Prompt templates live in prompts/*.txt; this module loads them and checks their variables.

A template file is plain text. Its first line declares the variables it uses:

    # variables: question, sources

and the rest is the text, with `{question}`-style placeholders (Python `str.format`; a
literal brace is written `{{` or `}}`). Loading checks that the declared variables are
exactly the placeholders used, so a typo in a template fails at load time, not as a
half-rendered prompt. Placeholders are plain names only: no `{x.attr}` or `{x[0]}`.

Where the files are found: the top-level `prompts/` folder when running from a checkout,
else `rag/prompts/` inside the installed package (see pyproject's package data).

Also here: `sanitize_source_text()`, which makes retrieved article text safe to put
between the prompt's data delimiters.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rag.errors import RagError

# The one phrase the model is told to use when the sources do not hold the answer.
# Prompts, the pipeline's abstain detection and the tests all use this constant.
ABSTAIN_PHRASE = "The articles do not say."

# The delimiters answer_user.txt wraps the evidence in; sanitize_source_text() removes
# anything in retrieved text that could close or reopen them.
SOURCES_OPEN = "<<<SOURCES"
SOURCES_CLOSE = "SOURCES>>>"

# How each source line opens inside them: "[2] (2023-02-14, usatoday.com) ..." (rag.pipeline
# writes it). An article that holds one forges evidence (rag.injection); an answer that holds one
# copies the prompt, and its number cites the sentence it opens (rag.citations). Group 1: the number.
SOURCE_LINE_OPENING = r"\[\s*(\d+)\s*\]\s*\((?:\d{4}-\d\d-\d\d|undated|date unknown)\b"

_HEADER = re.compile(r"#\s*variables:\s*(.*)")
_CHECKOUT_DIR = Path(__file__).resolve().parent.parent / "prompts"


class PromptError(RagError):
    """A template that is missing, malformed, or rendered with the wrong variables (a bug, exit 1)."""


@dataclass(frozen=True)
class Template:
    name: str
    text: str  # the body, without the header line
    variables: frozenset[str]

    def render(self, **values: object) -> str:
        """Fill the placeholders; every declared variable must be given, and nothing else."""
        missing = sorted(self.variables - values.keys())
        extra = sorted(values.keys() - self.variables)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"unexpected {', '.join(extra)}")
            raise PromptError(f"prompt {self.name!r}: {'; '.join(parts)}",
                              f"it declares: {', '.join(sorted(self.variables)) or 'nothing'}")
        return self.text.format(**values)


def prompts_dir() -> Path:
    """The checkout's prompts/ folder if present, else the copy installed inside the package."""
    if (_CHECKOUT_DIR / "answer_system.txt").is_file():
        return _CHECKOUT_DIR
    return Path(str(resources.files("rag") / "prompts"))


def template_names() -> list[str]:
    """Names (file stems) of all templates, sorted."""
    return sorted(p.stem for p in prompts_dir().glob("*.txt"))


def load(name: str) -> Template:
    """Read prompts/<name>.txt and check its header against its placeholders."""
    path = prompts_dir() / f"{name}.txt"
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError:
        raise PromptError(f"prompt template {name!r} not found at {path}",
                          "reinstall rag; the templates ship inside the package") from None
    return parse(name, raw)


def parse(name: str, raw: str) -> Template:
    """Build a Template from file text (split out of load() so tests can feed strings)."""
    header, _, body = raw.partition("\n")
    match = _HEADER.fullmatch(header.strip())
    if not match:
        raise PromptError(f"prompt {name!r}: first line must be '# variables: a, b, ...'")
    declared = frozenset(v.strip() for v in match.group(1).split(",") if v.strip())
    used = _placeholders(name, body)
    if declared != used:
        raise PromptError(f"prompt {name!r}: declares {sorted(declared)} but uses {sorted(used)}")
    return Template(name=name, text=body.rstrip("\n"), variables=declared)


def _placeholders(name: str, body: str) -> frozenset[str]:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(body) if f is not None]
    except ValueError as e:  # a lone { or }
        raise PromptError(f"prompt {name!r}: {e} (write a literal brace as {{{{ or }}}})") from None
    for field in fields:
        if not field.isidentifier():
            raise PromptError(f"prompt {name!r}: placeholder {{{field}}} must be a plain name")
    return frozenset(fields)


# --- retrieved text is data ----------------------------------------------------------------

# Chat-control tokens a tokenizer may turn into real control tokens when the prompt is
# tokenized with special tokens on (llama-cpp-python does that for chat prompts):
# <|im_start|>, <|eot_id|>, <s>, </s>, <end_of_turn>, <file_sep>, ... -> (im_start), (/s), ...
_TAG = re.compile(r"<\|?\s*(/?[A-Za-z_][\w.:\-]{0,40})\s*\|?>")
_PIPE_BRACKETS = re.compile(r"<\||\|>")
# Runs of 2+ angle brackets: <<<SOURCES, SOURCES>>>, <<SYS>> can no longer close the data block.
_ANGLE_RUN = re.compile(r"<{2,}|>{2,}")
# [INST], [/INST], [SYSTEM_PROMPT], [TOOL_CALLS] (Mistral/Llama-2 control markers).
_BRACKET_WORD = re.compile(r"\[\s*(/?[A-Z][A-Z_]{1,30})\s*\]")
# Fake citation markers: [3], [1, 2], [2-4] -> (3), (1, 2), (2-4).
_CITATION = re.compile(r"\[\s*(\d+(?:\s*[,;\u2013-]\s*\d+)*)\s*\]")
# Newlines would let an article start a fake "Question:" or "[n]" line; control chars
# (ESC, NUL...) have no business in a prompt or a terminal.
_NEWLINES = re.compile(r"\s*[\r\n\u2028\u2029]+\s*")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def sanitize_source_text(text: str) -> str:
    """Neutralise what would let an article act as prompt structure rather than data.

    Chat-control tokens become harmless look-alikes in parentheses, the data delimiters
    and bracketed numbers (fake citations) are broken, and newlines become spaces so one
    evidence item stays on one line. Substitutions repeat until nothing changes, so
    nested tricks such as "<|im_<|x|>start|>" cannot reassemble a token.
    """
    text = _NEWLINES.sub(" ", text)
    text = _CONTROL.sub("", text)
    for _ in range(10):
        before = text
        text = _TAG.sub(r"(\1)", text)
        text = _PIPE_BRACKETS.sub(lambda m: "(" if m.group() == "<|" else ")", text)
        text = _ANGLE_RUN.sub(lambda m: m.group()[0], text)
        text = _BRACKET_WORD.sub(r"(\1)", text)
        text = _CITATION.sub(r"(\1)", text)
        if text == before:
            break
    return text
