"""rag.formats.pdf: PDFs written here with fpdf2 (no fixtures on disk), read back with read_pdf."""

from __future__ import annotations

import importlib.util
import logging
from bisect import bisect_right
from datetime import datetime, timedelta, timezone
from functools import cache
from io import BytesIO

import pytest
from fpdf import FPDF
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pypdf import PageObject, PdfReader, PdfWriter
from pypdf.errors import DependencyError

import rag.formats.pdf as pdf_format
from rag.formats import Entry, FormatError
from rag.formats.pdf import read_pdf

SENTENCE = "The Indus embankment at Sukkur gave way shortly after midnight."
PAGES = [
    "Page 1: Flood report for Sindh province.\nRain fell for six days across the lower basin.",
    f"Page 2: What happened.\n{SENTENCE} Water reached the bazaar by dawn.",
    "Page 3: Relief.\nThe provincial government opened forty camps on Tuesday.",
]
CREATED = datetime(2024, 3, 5, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # March 6th in UTC


def make_pdf(pages: list[str], *, title: str | None = None, author: str | None = None,
             created: datetime | None = None, owner: str | None = None, user: str | None = None) -> bytes:
    """A PDF with one page per string (an empty string is a page with no text); encrypted when `owner` is given."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    if title is not None:
        pdf.set_title(title)
    if author is not None:
        pdf.set_author(author)
    if created is not None:
        pdf.set_creation_date(created)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
    if owner is not None:
        pdf.set_encryption(owner_password=owner, user_password=user)  # RC4: pypdf reads it without `cryptography`
    return bytes(pdf.output())


@cache
def report() -> bytes:
    return make_pdf(PAGES, title="  Floods in Sindh  ", author="Amina Qureshi", created=CREATED)


def with_info(data: bytes, info: dict[str, str]) -> bytes:
    """`data` with document info entries replaced (pypdf writes what fpdf2 would refuse, like a bad date)."""
    writer = PdfWriter(clone_from=BytesIO(data))
    writer.add_metadata(info)
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def read_one(data: bytes) -> Entry:
    entries, skipped = read_pdf(data)
    assert len(entries) == 1 and skipped == []
    return entries[0]


def format_error(data: bytes) -> str:
    with pytest.raises(FormatError) as caught:
        read_pdf(data)
    reason = str(caught.value)
    assert reason and "\n" not in reason and "; " in reason  # one line: what is wrong; what to do
    return reason


# --- a readable report ----------------------------------------------------------------------------


def test_report_text_pages_and_citation_offsets():
    entry = read_one(report())
    assert entry.key is None
    assert len(entry.pages) == 3 and entry.pages[0] == 0
    at = entry.text.index(SENTENCE)
    assert bisect_right(entry.pages, at) == 2
    assert bisect_right(entry.pages, at + len(SENTENCE) - 1) == 2
    for number, start in enumerate(entry.pages, start=1):
        assert entry.text[start:].startswith(f"Page {number}:")
        if number > 1:
            assert entry.text[start - 2:start] == "\n\n"


def test_text_is_the_pages_joined_by_a_blank_line():
    """Exactly pypdf's page texts, trailing whitespace stripped, joined by "\\n\\n": offsets are predictable."""
    pages = [page.extract_text().rstrip() for page in PdfReader(BytesIO(report())).pages]
    entry = read_one(report())
    assert entry.text == "\n\n".join(pages)
    assert entry.pages == (0, len(pages[0]) + 2, len(pages[0]) + len(pages[1]) + 4)


def test_metadata():
    assert read_one(report()).meta == {"title": "Floods in Sindh", "author": "Amina Qureshi", "date": "2024-03-05"}


def test_page_without_text_keeps_its_place():
    entry = read_one(make_pdf(["First page.", "", "Third page.", ""]))
    assert entry.text == "First page.\n\n\n\nThird page.\n\n"
    assert entry.pages == (0, 13, 15, 28)
    assert bisect_right(entry.pages, entry.text.index("Third")) == 3


def test_lone_surrogates_become_replacement_characters(monkeypatch):
    """pypdf decodes /ToUnicode maps with "surrogatepass"; the index stores UTF-8, which has no lone surrogates."""
    monkeypatch.setattr(PageObject, "extract_text", lambda self, *a, **k: "caf\udce9 \ud83d\ude00 \n")
    entry = read_one(report())
    assert entry.text == "\n\n".join(["caf\ufffd \U0001f600"] * 3)
    entry.text.encode("utf-8")


@pytest.mark.parametrize("info", [
    {"/CreationDate": "yesterday"},
    {"/CreationDate": "D:2024"},  # only a year: pypdf would make it January 1st
    {"/CreationDate": "D:20241399"},
    {"/Title": "   ", "/Author": ""},
])
def test_bad_or_empty_metadata_is_absent(info):
    entry = read_one(with_info(report(), info))
    assert SENTENCE in entry.text
    for key in info:
        assert {"/CreationDate": "date", "/Title": "title", "/Author": "author"}[key] not in entry.meta


def test_no_metadata():
    assert read_one(make_pdf(["Just text."])).meta.keys() <= {"date"}  # fpdf2 always writes a creation date


# --- encryption ----------------------------------------------------------------------------------


def test_user_password_is_an_error():
    reason = format_error(make_pdf(PAGES, owner="owner-secret", user="user-secret"))
    assert reason.startswith("encrypted PDF") and "unencrypted copy" in reason


@pytest.mark.parametrize("user", [None, ""])
def test_owner_password_only_is_read(user):
    entry = read_one(make_pdf(PAGES, title="Floods", owner="owner-secret", user=user))
    assert SENTENCE in entry.text and entry.meta["title"] == "Floods"


def test_unsupported_security_handler_is_an_error():
    """A public-key (certificate) handler instead of the password one: pypdf cannot open it at all."""
    data = make_pdf(PAGES, owner="owner-secret").replace(b"/Filter /Standard", b"/Filter /PubSecXX")
    assert format_error(data).startswith("encrypted PDF")


def test_aes_256_pdf():
    """An AES-256 (V5 R6) encryption dictionary spliced in, with made-up keys: fpdf2 writes AES only with
    `cryptography`. pypdf needs that package even to check the empty password of such a file."""
    data = make_pdf(PAGES, owner="owner-secret")
    start, end = data.index(b"/Filter /Standard"), data.index(b">>\nendobj", data.index(b"/Filter /Standard"))
    aes = (b"/Filter /Standard /V 5 /R 6 /Length 256 /P -4 /O <%s> /U <%s> /OE <%s> /UE <%s> /Perms <%s> "
           b"/CF << /StdCF << /CFM /AESV3 /AuthEvent /DocOpen /Length 32 >> >> /StmF /StdCF /StrF /StdCF\n"
           % (b"00" * 48, b"11" * 48, b"22" * 32, b"33" * 32, b"44" * 16))
    reason = format_error(data[:start] + aes + data[end:])
    if importlib.util.find_spec("cryptography"):
        assert reason.startswith("encrypted PDF")
    else:
        assert "pip install cryptography" in reason


def test_aes_without_cryptography_says_what_to_install(monkeypatch):
    """AES-128 files fail later, at the first string or stream pypdf decrypts: simulated here."""
    def no_aes(*args, **kwargs):
        raise DependencyError("cryptography>=3.1 is required for AES algorithm")

    monkeypatch.setattr(PageObject, "extract_text", no_aes)
    assert "pip install cryptography" in format_error(report())


# --- unusable files ------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated_file_is_an_error(cut):
    data = report()
    assert format_error(data[:int(len(data) * cut)]).startswith("damaged or not a PDF")


@pytest.mark.parametrize("data", [b"", b"hello, world", bytes(range(256)) * 8, b"%PDF-1.7\n" + b"\x00" * 500])
def test_not_a_pdf_is_an_error(data):
    assert format_error(data).startswith("damaged or not a PDF")


def test_pdf_without_pages_is_an_error():
    out = BytesIO()
    PdfWriter().write(out)
    assert "no pages" in format_error(out.getvalue())


def test_drawing_only_pdf_needs_ocr():
    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.rect(20, 20, 100, 60, style="F")
    assert "ocrmypdf" in format_error(bytes(pdf.output()))


def test_scanned_image_pdf_needs_ocr():
    pdf = FPDF()
    pdf.add_page()
    pdf.image(Image.new("L", (200, 100), color=180), x=10, y=10, w=150)
    reason = format_error(bytes(pdf.output()))
    assert reason.startswith("no text layer") and "OCR" in reason


def test_page_cap(monkeypatch):
    monkeypatch.setattr(pdf_format, "MAX_PAGES", 2)
    assert "3 pages, over the 2-page limit" in format_error(report())


def test_time_cap(monkeypatch):
    monkeypatch.setattr(pdf_format, "MAX_SECONDS", -60)
    assert "at page 1 of 3" in format_error(report())


@pytest.mark.parametrize("error", [TypeError("can only concatenate str"), AssertionError("mypy"), RecursionError()])
def test_any_pypdf_failure_becomes_format_error(monkeypatch, error):
    """pypdf raises plain Python exceptions on some damaged files; none may reach ingest as a traceback."""
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(PageObject, "extract_text", broken)
    assert type(error).__name__ in format_error(report())


def test_repaired_file_is_read_without_log_noise(caplog):
    """A wrong startxref: pypdf repairs it and logs warnings, which must not reach the user's terminal."""
    data = report()
    pointer = data.rindex(b"startxref\n") + len(b"startxref\n")
    damaged = data[:pointer] + b"12" + data[data.index(b"\n", pointer):]
    pypdf_logger = logging.getLogger("pypdf")
    level = pypdf_logger.level
    with caplog.at_level(logging.DEBUG):
        assert SENTENCE in read_one(damaged).text
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]
    assert pypdf_logger.level == level


# --- fuzz: read_pdf returns a consistent Entry or raises FormatError, nothing else -------------------


def check_any(data: bytes) -> None:
    try:
        entries, skipped = read_pdf(data)
    except FormatError as err:
        assert str(err) and "\n" not in str(err)
        return
    [entry] = entries
    assert skipped == [] and entry.key is None and entry.text.strip()
    assert entry.pages[0] == 0 and list(entry.pages) == sorted(set(entry.pages))
    assert all(entry.text[start - 2:start] == "\n\n" for start in entry.pages[1:])
    assert all(isinstance(value, str) and value for value in entry.meta.values())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000) | st.binary(max_size=2000).map(lambda tail: b"%PDF-1.4\n" + tail))
def test_fuzz_arbitrary_bytes(data):
    check_any(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_truncated_report(data):
    whole = report()
    check_any(whole[:data.draw(st.integers(0, len(whole)))])


@cache
def uncompressed_report() -> bytes:
    """Uncompressed page streams, so mutations hit the text operators too, not only zlib data."""
    pdf = FPDF()
    pdf.set_compression(False)
    pdf.set_font("helvetica", size=12)
    pdf.set_title("Floods")
    for text in PAGES:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([report, uncompressed_report]),
       st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 40), st.binary(max_size=12)),
                min_size=1, max_size=6))
def test_fuzz_damaged_report(make, edits):
    """Splices into a valid PDF: what reaches pypdf's deeper code (it raised TypeError, AssertionError ...)."""
    data = make()
    for where, cut, insert in edits:
        at = int(where * len(data))
        data = data[:at] + insert + data[at + cut:]
    check_any(data)
