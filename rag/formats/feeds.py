"""RSS and Atom feeds: one Entry per feed entry, read with feedparser.

feedparser is always handed a BytesIO: given a str it fetches URLs, and given bytes it first
tries them as a *file name*; a stream is the one input it only ever reads.
"""

from __future__ import annotations

import hashlib
import io
import re
import time

from rag.formats import Entry, FormatError, Skipped
from rag.formats.fragments import html_fragment_text

HTML_TYPES = ("text/html", "application/xhtml+xml")

def read_feed(data: bytes) -> tuple[list[Entry], list[Skipped]]:
    """The entries of an RSS or Atom feed; FormatError when `data` is not a feed or has no entries.

    A malformed feed (feedparser's "bozo") still gives whatever entries it could read.
    """
    parsed = _parse(data)
    entries = parsed.get("entries") or []
    if not parsed.get("version") and not entries:
        if b"<" not in data[:4096]:
            raise FormatError("not XML, so not an RSS or Atom feed; nothing to index")
        raise FormatError("XML but not an RSS or Atom feed; only RSS and Atom feeds are indexed from .xml files")
    if not entries:
        raise FormatError("a feed with no entries; nothing to index")
    source = _clean(_detail_text(parsed.get("feed") or {}, "title"))
    try:
        return _entries(entries, source)
    except FormatError:
        raise
    except Exception as err:  # a feedparser oddity must not escape as a traceback
        raise FormatError(f"could not read the feed's entries ({type(err).__name__}: {err})") from err


def _parse(data: bytes):
    """feedparser's result for `data`, never touching the network or the file system."""
    import feedparser

    try:
        return feedparser.parse(io.BytesIO(data))
    except Exception as err:  # feedparser is lenient but not proven total
        raise FormatError(f"could not parse the feed ({type(err).__name__}: {err})") from err


def _entries(raw_entries, source: str | None) -> tuple[list[Entry], list[Skipped]]:
    """Entries in feed order; the first of several with one key wins, since keys must be unique."""
    entries: list[Entry] = []
    skipped: list[Skipped] = []
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(raw_entries, start=1):
        title = _clean(_detail_text(raw, "title"))
        text = _entry_text(raw)
        named_key = _named_key(raw)
        if not text:
            skipped.append(Skipped(named_key or f"entry {number}", "entry has no content or summary; skipped"))
            continue
        key = named_key or _content_key(title, text)
        if key in first_seen:
            skipped.append(Skipped(f"entry {number}", f"same id as entry {first_seen[key]} ({key}); skipped"))
            continue
        first_seen[key] = number
        entries.append(Entry(key=key, text=text, meta=_meta(raw, title, source)))
    return entries, skipped


def _named_key(raw) -> str | None:
    """The entry's own id (guid), else its link: what the publisher uses to name it."""
    for field in ("id", "link"):
        value = _get(raw, field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _content_key(title: str | None, text: str) -> str:
    """A key for an entry with neither id nor link, from its own title and text only, so it stays
    the same when other entries of the feed change."""
    digest = hashlib.sha256(f"{title or ''}\n{text}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest[:16]}"


def _meta(raw, title: str | None, source: str | None) -> dict[str, str | None]:
    link = _get(raw, "link")
    url = link.strip() if isinstance(link, str) and link.strip().lower().startswith(("http://", "https://")) else None
    meta: dict[str, str | None] = {"title": title, "url": url, "date": _entry_date(raw), "source": source}
    author = _clean(_get(raw, "author")) if isinstance(_get(raw, "author"), str) else None
    if author:
        meta["author"] = author
    return meta


def _entry_text(raw) -> str:
    """The full content when the feed has it, else the summary/description, as plain text."""
    for item in _get(raw, "content") or []:
        text = _as_text(item.get("value"), item.get("type"))
        if text:
            return text
    detail = _get(raw, "summary_detail") or {}
    return _as_text(_get(raw, "summary"), detail.get("type", "text/html"))


def _as_text(value, content_type) -> str:
    """Plain text of one content value: HTML is converted, plain text kept (outer blanks trimmed).

    feedparser types every RSS description text/html; one with no tag and no entity is plain text
    in fact, and converting it would merge its paragraphs.
    """
    if not isinstance(value, str):
        return ""
    if content_type in HTML_TYPES and ("<" in value or "&" in value):
        value = html_fragment_text(value)
    return value.strip()


def _detail_text(raw, field: str) -> str | None:
    """A title-like field as plain text (Atom titles may be typed HTML)."""
    value = _get(raw, field)
    if not isinstance(value, str):
        return None
    detail = _get(raw, f"{field}_detail") or {}
    if detail.get("type") in HTML_TYPES and ("<" in value or "&" in value):
        return html_fragment_text(value)
    return value


def _get(raw, field: str):
    """A field as feedparser stored it: FeedParserDict.get("updated") answers with `published`
    when there is no updated date (and warns), which would hide the real fallback order."""
    return dict.get(raw, field) if isinstance(raw, dict) else None


def _clean(value: str | None) -> str | None:
    """One line with single spaces, or None when nothing is left."""
    if not value:
        return None
    return " ".join(value.split()) or None


def _entry_date(raw) -> str | None:
    """published, else updated, as YYYY-MM-DD, the day the publisher wrote.

    The stamp as written comes first: feedparser's *_parsed tuples are in UTC, so an entry stamped
    late in the evening west of UTC would get the next day. The tuples are the fallback for
    stamps that tables.parse_date cannot read.
    """
    from rag.formats.tables import parse_date

    for field in ("published", "updated"):
        value = _get(raw, field)
        if isinstance(value, str) and value.strip() and (date := parse_date(value)):
            return date
        parsed = _get(raw, f"{field}_parsed")
        if isinstance(parsed, time.struct_time) and 1 <= parsed.tm_year <= 9999:
            return f"{parsed.tm_year:04d}-{parsed.tm_mon:02d}-{parsed.tm_mday:02d}"
    return None


def _spaced(text: str | None) -> str | None:
    """HTML source whitespace (newlines included) is one space; only block and <br> markers break lines."""
    return re.sub(r"\s+", " ", text) if text else text


def _paragraphs(text: str) -> str:
    """Blank-line separated paragraphs, spaces trimmed; the single newline of a <br> kept."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [" ".join(line.split()) for line in block.split("\n")]
        paragraph = "\n".join(line for line in lines if line)
        if paragraph:
            paragraphs.append(paragraph)
    return "\n\n".join(paragraphs)
