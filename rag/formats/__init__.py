"""Readers for the formats news is kept in beyond plain text: web pages, feeds, PDFs, CSV, WARC.

Each reader turns a file's bytes into `Entry` objects, one per article, using the maintained
library for its format (trafilatura, feedparser, pypdf, csv, warcio); none parses by hand.
`rag.ingest` owns everything around them: walking, size limits, sidecars, doc ids, Problems.

A reader raises `FormatError(reason)` when the whole file is unusable (the reason is one line:
what is wrong and what to do); an entry it cannot use becomes a `Skipped` next to the good ones.
Readers are imported lazily, so `rag ask` never pays for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class FormatError(Exception):
    """The whole file cannot be read; str(err) is the one-line reason for the user."""


@dataclass
class Entry:
    """One article found in a file.

    key: stable id inside the file (a feed entry's id or link, a WARC record's target URL, a CSV
    row's url or number); None when the file is one article. It is part of the doc id, so it must
    not change when other entries of the same file change.
    text: the extracted article text; citations are offsets into exactly this string.
    meta: "title", "date" (ISO YYYY-MM-DD), "source", "url"; absent or None when not stated.
    pages: PDF only, the offset in `text` where each page starts (page 1 first, at 0).
    """

    key: str | None
    text: str
    meta: dict[str, str | None] = field(default_factory=dict)
    pages: tuple[int, ...] = ()


@dataclass
class Skipped:
    """An entry left out of an otherwise readable file (a WARC record without an article, ...)."""

    key: str  # where in the file: "entry 3", "row 7", the record's URL
    reason: str
    counted: bool = False  # True: only counted in a summary line (non-HTML WARC records), no line of its own


@dataclass
class Options:
    """Reader settings the user can give (`rag index --csv-columns text=body,date=published`)."""

    csv_columns: dict[str, str] = field(default_factory=dict)  # role -> column name


# The extensions each reader takes; ".xml" is read as a feed only when its content is one.
EXTENSIONS = {
    ".html": "html", ".htm": "html",
    ".xml": "feed", ".rss": "feed", ".atom": "feed",
    ".pdf": "pdf",
    ".csv": "csv", ".tsv": "csv",
    ".warc": "warc", ".warc.gz": "warc",
}


def extension(name: str) -> str | None:
    """The format extension of a file name (".warc.gz" counts as one), lower-cased, or None."""
    lower = name.lower()
    for ext in sorted(EXTENSIONS, key=len, reverse=True):
        if lower.endswith(ext):
            return ext
    return None


# Largest file each kind may be (ingest checks before reading). A WARC is streamed record by
# record, and what it decompresses to is capped separately (rag.formats.web.MAX_WARC_EXPANDED).
MAX_BYTES = {"html": 20 * 2**20, "feed": 50 * 2**20, "pdf": 200 * 2**20, "csv": 500 * 2**20, "warc": 4 * 2**30}


def kind(ext: str) -> str:
    return EXTENSIONS[ext]


def read(ext: str, path: str, options: Options) -> tuple[list[Entry], list[Skipped]]:
    """The articles in the file at `path`, of format `ext` (from `extension()`).

    OSError passes through (ingest turns it into a Problem); anything else wrong is FormatError.
    """
    which = EXTENSIONS[ext]
    if which == "warc":
        from rag.formats.warc import read_warc
        return read_warc(path)
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES[which] + 1)
    if len(data) > MAX_BYTES[which]:
        raise FormatError(f"file is over the {MAX_BYTES[which] // 2**20} MB limit for this format; split it")
    if which == "html":
        from rag.formats.web import read_html
        return read_html(data)
    if which == "feed":
        from rag.formats.feeds import read_feed
        return read_feed(data)
    if which == "pdf":
        from rag.formats.pdf import read_pdf
        return read_pdf(data)
    from rag.formats.tables import read_table
    return read_table(data, "\t" if ext == ".tsv" else ",", options.csv_columns)
