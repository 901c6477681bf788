"""Plain text of an HTML fragment (a feed entry's content), through lxml and lxml_html_clean."""

from __future__ import annotations

import re

from rag.formats.web import norm

BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "center", "dd", "details", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "ul",
}
LINE_TAGS = {"br", "tr"}
CELL_TAGS = {"td", "th"}
BLANK_LINE = re.compile(r"\n[^\S\n]*\n")
# What lxml refuses in text: C0 controls but tab and newlines, lone surrogates, U+FFFE and U+FFFF.
XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def html_fragment_text(html: str) -> str:
    """Plain text of an HTML fragment: blocks separated by blank lines, <br> as a line break,
    spaces collapsed; no tags, scripts, styles or comments. "" for a fragment with no text."""
    import lxml.etree
    import lxml.html
    from lxml_html_clean import Cleaner

    cleaned = XML_INVALID.sub("", html)
    if not cleaned.strip():
        return ""
    parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True)
    try:
        root = lxml.html.document_fromstring(cleaned.encode("utf-8"), parser=parser)
        root = Cleaner(scripts=True, javascript=True, comments=True, style=True, inline_style=True,
                       links=True, meta=True, page_structure=False, processing_instructions=True,
                       embedded=True, frames=True, forms=False, annoying_tags=True,
                       kill_tags=["noscript", "template", "svg", "math"]).clean_html(root)
    except (lxml.etree.LxmlError, ValueError):
        return ""  # lxml finds no element at all ("Document is empty"): nothing but markup
    body = root.find("body")
    return _FragmentText().run(body if body is not None else root)


class _FragmentText:
    """Walks a cleaned tree (no recursion: a deep fragment cannot overflow the stack)."""

    def __init__(self) -> None:
        self.paragraphs: list[str] = []
        self.lines: list[str] = []
        self.words: list[str] = []

    def run(self, root) -> str:
        import lxml.etree

        pre_depth = 0
        for event, el in lxml.etree.iterwalk(root, events=("start", "end")):
            tag = el.tag if isinstance(el.tag, str) else ""
            if event == "start":
                if tag in BLOCK_TAGS:
                    self.paragraph()
                elif tag in LINE_TAGS:
                    self.line()
                elif tag in CELL_TAGS and self.words:
                    self.words.append(" ")
                pre_depth += tag == "pre"
                self.text(el.text, pre_depth > 0)
            else:
                pre_depth -= tag == "pre"
                if tag in BLOCK_TAGS:
                    self.paragraph()
                elif tag == "tr":
                    self.line()
                if el is not root:
                    self.text(el.tail, pre_depth > 0)
        self.paragraph()
        return "\n\n".join(self.paragraphs)

    def text(self, value: str | None, pre: bool) -> None:
        """Add text; in <pre> its lines are kept, elsewhere a blank line in it starts a paragraph."""
        if not value:
            return
        if pre:
            first, *rest = value.split("\n")
            self.words.append(first)
            for piece in rest:
                self.line()
                self.words.append(piece)
            return
        first, *rest = _split_blank_lines(value)
        self.words.append(first)
        for piece in rest:
            self.paragraph()
            self.words.append(piece)

    def line(self) -> None:
        self.lines.append(norm("".join(self.words)))
        self.words = []

    def paragraph(self) -> None:
        self.line()
        text = "\n".join(line for line in self.lines if line)
        if text:
            self.paragraphs.append(text)
        self.lines = []


def _split_blank_lines(value: str) -> list[str]:
    """`value` cut at each blank line (a newline, optional blanks, a newline)."""
    return BLANK_LINE.split(value)


# ---------------------------------------------------------------- web archives
