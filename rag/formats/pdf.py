"""PDF reports: one file is one article, its text taken page by page with pypdf.

Pages are joined by a blank line and their start offsets kept in `Entry.pages`, so a citation at
offset x is on page `bisect_right(entry.pages, x)`. pypdf raises many kinds of exception on damaged
files (its own, but also TypeError, AssertionError, NotImplementedError ...): every one of them
becomes a one-line FormatError, so ingest never sees a traceback.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from io import BytesIO

from pypdf import DocumentInformation, PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PyPdfError

from rag.formats import Entry, FormatError, Skipped

# pypdf extracts text in pure Python, about 1 ms for a plain page but seconds for one with megabytes of
# drawing operators: the caps keep one huge (or hostile) file from taking hours. The time is checked
# between pages, so one page can still run past it (pypdf caps a content stream at 75 MB decoded).
MAX_PAGES = 5_000
MAX_SECONDS = 600
PAGE_SEPARATOR = "\n\n"

ENCRYPTED = "encrypted PDF (it needs a password to open); save an unencrypted copy and index that"
NO_TEXT = "no text layer (a scanned PDF?); run OCR first, e.g. ocrmypdf, then index the result"
NEEDS_CRYPTOGRAPHY = ("PDF is encrypted with AES, which pypdf reads only with the 'cryptography' package; "
                      "install it (pip install cryptography) or save an unencrypted copy")


def read_pdf(data: bytes) -> tuple[list[Entry], list[Skipped]]:
    """The report in a PDF file's bytes as one Entry (key None); raises only FormatError."""
    with _quiet_pypdf():
        try:
            return [_read(data)], []
        except FormatError:
            raise
        except Exception as err:  # pypdf raises far more than PyPdfError on damaged files
            raise FormatError(_reason(err)) from err


@contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """pypdf logs a warning for each repair it makes on a damaged file; the user gets one line from ingest instead."""
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _read(data: bytes) -> Entry:
    reader = _open(data)
    texts = _page_texts(reader)
    text = PAGE_SEPARATOR.join(texts)
    return Entry(key=None, text=text, meta=_meta(reader), pages=_page_starts(texts))


def _open(data: bytes) -> PdfReader:
    """A reader ready for text: an encrypted file is opened with the empty password, as viewers do."""
    try:
        reader = PdfReader(BytesIO(data))
    except NotImplementedError as err:
        if _about_encryption(str(err)):  # a security handler other than the standard password one
            raise FormatError(ENCRYPTED) from err
        raise
    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise FormatError(ENCRYPTED)
    return reader


def _about_encryption(message: str) -> bool:
    """pypdf says "encryption handler", "Encryption V=5 NOT supported", "/SubFilter NOT supported"."""
    return bool(re.search(r"encrypt|subfilter", message, re.IGNORECASE))


def _page_texts(reader: PdfReader) -> list[str]:
    """Each page's text, trailing whitespace stripped (an empty string for a page without text)."""
    count = len(reader.pages)
    if count == 0:
        raise FormatError("damaged PDF (it has no pages); re-download it or export it again from the source")
    if count > MAX_PAGES:
        raise FormatError(f"PDF has {count:,} pages, over the {MAX_PAGES:,}-page limit; split it, e.g. with "
                          "qpdf --split-pages, and index the parts")
    texts = _extract(reader, count)
    if not any(texts):
        raise FormatError(NO_TEXT)
    return texts


def _extract(reader: PdfReader, count: int) -> list[str]:
    """extract_text() of every page, within MAX_SECONDS."""
    deadline = time.monotonic() + MAX_SECONDS
    texts = []
    for number, page in enumerate(reader.pages, start=1):
        if time.monotonic() > deadline:
            raise FormatError(f"PDF text extraction passed the {MAX_SECONDS // 60}-minute limit at page {number:,} of "
                              f"{count:,}; split it, e.g. with qpdf --split-pages, and index the parts")
        texts.append(_valid_unicode(page.extract_text()).rstrip())
    return texts


def _valid_unicode(text: str) -> str:
    """pypdf decodes with "surrogatepass", so a bad /ToUnicode map yields lone surrogates, which UTF-8
    (the index) cannot store: a split pair is joined, a lone half becomes U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _page_starts(texts: list[str]) -> tuple[int, ...]:
    """Where each page starts in PAGE_SEPARATOR.join(texts)."""
    starts, offset = [], 0
    for text in texts:
        starts.append(offset)
        offset += len(text) + len(PAGE_SEPARATOR)
    return tuple(starts)


def _meta(reader: PdfReader) -> dict[str, str | None]:
    """Title, author and date from the document info; a broken info dictionary loses the metadata, not the text."""
    try:
        info = reader.metadata
        fields = {"title": _one_line(info.title), "author": _one_line(info.author), "date": _date(info)} if info else {}
    except Exception:  # see read_pdf; metadata is optional, the text is what matters
        return {}
    return {name: value for name, value in fields.items() if value}


def _one_line(value: object) -> str | None:
    """Whitespace collapsed; None for a missing, empty or non-text value (a damaged /Title can be a number)."""
    if not isinstance(value, str):
        return None
    return " ".join(_valid_unicode(value).split()) or None


def _date(info: DocumentInformation) -> str | None:
    """/CreationDate as YYYY-MM-DD, the day the document states (no shift to UTC); None when malformed.

    pypdf validates the whole string, but its strptime takes one-digit fields, so it reads
    "D:20241399" as January 3rd and "D:2024" as January 1st: the day comes from the fixed-width digits.
    """
    raw = info.creation_date_raw
    day = re.match(r"(?:D:)?(\d{4})(\d{2})(\d{2})", raw.strip()) if isinstance(raw, str) else None
    if day is None:
        return None
    try:
        info.creation_date  # noqa: B018 - raises ValueError when the string is not a PDF date
        return date(*map(int, day.groups())).isoformat()
    except ValueError:
        return None


def _reason(err: Exception) -> str:
    """The one-line FormatError reason for an exception pypdf raised."""
    if isinstance(err, FileNotDecryptedError):
        return ENCRYPTED
    if isinstance(err, DependencyError):
        if "AES" in str(err):
            return NEEDS_CRYPTOGRAPHY
        return f"PDF needs a package pypdf lacks ({_detail(err)}); install it"
    if isinstance(err, LimitReachedError):
        return f"PDF goes past a safety limit of pypdf ({_detail(err)}); split it or export it again, then index that"
    return f"damaged or not a PDF ({_detail(err)}); re-download it or export it again from the source"


def _detail(err: Exception) -> str:
    """pypdf's own message on one short line, with the exception's type when it is not pypdf's (say "mypy")."""
    message = " ".join(str(err).split())
    if not isinstance(err, PyPdfError):
        message = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return message[:117] + "..." if len(message) > 120 else message or type(err).__name__
