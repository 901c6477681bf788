"""rag.formats.tables: CSV/TSV exports into Entries, column roles, encodings, dates, and nothing but
FormatError on bad input."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.formats import FormatError
from rag.formats.tables import parse_date, read_table


def table(rows: list[list[str]], delimiter: str = ",") -> bytes:
    """`rows` written by the csv module, as UTF-8 bytes."""
    out = io.StringIO(newline="")
    csv.writer(out, delimiter=delimiter).writerows(rows)
    return out.getvalue().encode()


NEWS = [
    ["Headline", "Published", "Publisher", "Link", "Body"],
    ["Floods in Sindh", "2024-03-03", "Dawn", "https://dawn.example/floods", "Floods displaced thousands.\r\nMore."],
    ["Bridge reopens", "March 4, 2024", "Gazette", "https://gazette.example/bridge", "The bridge reopened."],
]


# --- columns and roles ------------------------------------------------------------------------------


def test_csv_with_the_usual_columns():
    entries, skipped = read_table(table(NEWS), ",", {})
    assert skipped == []
    floods, bridge = entries
    assert floods.key == "https://dawn.example/floods"
    assert floods.text == "Floods displaced thousands.\nMore."
    assert floods.meta == {
        "title": "Floods in Sindh", "date": "2024-03-03", "source": "Dawn", "url": "https://dawn.example/floods",
    }
    assert bridge.meta["date"] == "2024-03-04"


def test_tsv():
    entries, _ = read_table(table(NEWS, "\t"), "\t", {})
    assert [e.meta["title"] for e in entries] == ["Floods in Sindh", "Bridge reopens"]


def test_header_names_ignore_case_spaces_and_underscores():
    data = table([[" TITLE ", "Published At", "Site", "URL", "Story"], ["T", "2024-01-02", "S", "u", "words"]])
    (entry,), _ = read_table(data, ",", {})
    assert entry.text == "words"
    assert entry.meta == {"title": "T", "date": "2024-01-02", "source": "S", "url": "u"}


def test_override_mapping_wins():
    data = table([["text", "summary", "when", "date"], ["teaser", "the real body", "3 Mar 2024", "junk"]])
    (entry,), _ = read_table(data, ",", {"text": "summary", "date": "When"})
    assert entry.text == "the real body"
    assert entry.meta["date"] == "2024-03-03"


def test_override_unknown_column_names_the_columns():
    with pytest.raises(FormatError, match="no column 'bodytext' for text; the file has columns: 'Headline', "):
        read_table(table(NEWS), ",", {"text": "bodytext"})


def test_override_unknown_role():
    with pytest.raises(FormatError, match="unknown role 'author'.*the file has columns: 'Headline'"):
        read_table(table(NEWS), ",", {"author": "Publisher"})


def test_no_text_column():
    data = table([["headline", "summary"], ["a", "b"]])
    with pytest.raises(FormatError) as err:
        read_table(data, ",", {})
    assert str(err.value).startswith(
        "no text column (looked for body, text, content, article, story); name it with --csv-columns text=COLUMN"
    )
    assert "'summary'" in str(err.value)


def test_wrong_delimiter_gets_a_hint():
    with pytest.raises(FormatError, match="another character"):
        read_table(b"headline;body\na;b\n", ",", {})


def test_empty_file_and_header_only():
    for data in (b"", b"\xef\xbb\xbf", b"\n\n"):
        with pytest.raises(FormatError, match="empty file"):
            read_table(data, ",", {})
    with pytest.raises(FormatError, match="only a header row"):
        read_table(b"headline,body\r\n\r\n", ",", {})


# --- encodings --------------------------------------------------------------------------------------


def test_utf8_bom_is_dropped():
    (entry,), _ = read_table("\ufeffbody,title\ncafé,x\n".encode(), ",", {})
    assert entry.text == "café" and entry.meta["title"] == "x"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_bom(encoding):
    text = "body\ttitle\nnaïve café\tx\n"
    data = text.encode(encoding) if encoding == "utf-16" else "\ufeff".encode(encoding) + text.encode(encoding)
    (entry,), _ = read_table(data, "\t", {})
    assert entry.text == "naïve café"


def test_legacy_encoding_is_refused():
    with pytest.raises(FormatError, match=r"^not UTF-8 text .*; save the export as UTF-8 CSV$"):
        read_table("body\ncafé\n".encode("cp1252"), ",", {})
    with pytest.raises(FormatError, match="not UTF-8 text"):
        read_table("body\nx\n".encode("utf-32"), ",", {})
    with pytest.raises(FormatError, match="not UTF-8 text"):
        read_table("body\nx\n".encode("utf-16-le"), ",", {})  # no BOM: not guessed


# --- rows ---------------------------------------------------------------------------------------------


def test_empty_text_rows_are_skipped():
    data = table([["body", "title"], ["", "no body"], ["   ", "blank"], ["text", "ok"]])
    entries, skipped = read_table(data, ",", {})
    assert [e.key for e in entries] == ["row3"]
    assert [(s.key, s.reason) for s in skipped] == [("row 1", "empty text; skipped"), ("row 2", "empty text; skipped")]


def test_keys_by_url_and_by_row():
    data = table([
        ["body", "url"],
        ["a", "https://x/1"],
        ["b", ""],
        ["c", "https://x/dup"],
        ["d", "https://x/dup"],
        ["e", "row9"],
    ])
    entries, _ = read_table(data, ",", {})
    assert [e.key for e in entries] == ["https://x/1", "row2", "row3", "row4", "row5"]
    assert entries[2].meta["url"] == "https://x/dup"  # still the url, only not the key
    (entry,), _ = read_table(table([["body"], ["x"]]), ",", {})
    assert entry.key == "row1" and entry.meta["url"] is None


def test_row_keys_count_data_rows_not_blank_lines():
    entries, _ = read_table(b"body\n\nfirst\n\n\nsecond\n", ",", {})
    assert [(e.key, e.text) for e in entries] == [("row1", "first"), ("row2", "second")]


def test_rows_with_missing_or_extra_fields():
    entries, skipped = read_table(b"title,body,url\nshort\nT,long body,https://x/1,extra,more\n", ",", {})
    assert [(s.key, s.reason) for s in skipped] == [("row 1", "empty text; skipped")]
    assert [(e.key, e.text) for e in entries] == [("https://x/1", "long body")]


def test_huge_field_fits():
    body = "word " * 2_000_000  # 10 MB, far over csv's default 128 KiB field limit
    (entry,), _ = read_table(table([["body"], [body]]), ",", {})
    assert entry.text == body.strip()


def test_unclosed_quote_is_read_not_crashed():
    entries, _ = read_table(b'body,title\n"never closed,x\nmore\n', ",", {})
    assert entries[0].text.startswith("never closed")


# --- dates --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-03-03", "2024-03-03"),
    ("2024-03-03T23:30:00-05:00", "2024-03-03"),  # the date as written, not moved to UTC
    ("2024-03-03 10:00:00Z", "2024-03-03"),
    ("20240303", "2024-03-03"),
    ("2024/3/5", "2024-03-05"),
    ("March 3, 2024", "2024-03-03"),
    ("03 Mar 2024", "2024-03-03"),
    ("Tuesday, 5 March 2024", "2024-03-05"),
    ("Sun, 03 Mar 2024 10:00:00 GMT", "2024-03-03"),
    ("Sun, 03 Mar 2024 23:30:00 -0500", "2024-03-03"),
    ("13/03/2024", "2024-03-13"),
    ("03/13/2024", "2024-03-13"),
    ("05.05.2024 10:00", "2024-05-05"),
    ("  2024-03-03  ", "2024-03-03"),
])
def test_dates_that_are_read(value, expected):
    assert parse_date(value) == expected


@pytest.mark.parametrize("value", [
    "", "March 2024", "2024", "3 March", "yesterday", "2 days ago", "today", "Monday",
    "03/04/2024",  # March 4 or April 3: not guessed
    "Mar 3 24",  # two-digit year
    "1709460000",  # a timestamp, or not
    "2024-02-30", "31 Feb 2024", "not a date", "2024-03-03 and then some",
])
def test_dates_that_are_not_guessed(value):
    assert parse_date(value) is None


def test_row_dates_in_several_formats():
    data = table([
        ["body", "date"],
        ["a", "2024-03-03"], ["b", "Mar 4, 2024"], ["c", "Tue, 05 Mar 2024 08:00:00 +0000"], ["d", "March 2024"],
    ])
    entries, _ = read_table(data, ",", {})
    assert [e.meta["date"] for e in entries] == ["2024-03-03", "2024-03-04", "2024-03-05", None]


# --- fuzz ---------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CELL_BITS = list('ab ,;\t"\r\n\x00é\ufeff') + ["body", "date", "url", "2024-03-03", "March 3, 2024"]
CELL = st.lists(st.sampled_from(CELL_BITS), max_size=12).map("".join)


def assert_only_format_error(data: bytes, delimiter: str, columns: dict[str, str]) -> None:
    try:
        entries, skipped = read_table(data, delimiter, columns)
    except FormatError as err:
        assert str(err) and "\n" not in str(err)
        return
    keys = [e.key for e in entries]
    assert len(keys) == len(set(keys))
    assert all(e.text and e.text == e.text.strip() for e in entries)
    assert all(s.key.startswith("row ") for s in skipped)


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from([",", "\t"]))
def test_fuzz_arbitrary_bytes(data, delimiter):
    assert_only_format_error(data, delimiter, {})
    assert_only_format_error(b"body,url,date\n" + data, delimiter, {})


@FUZZ
@given(
    st.lists(st.lists(CELL, max_size=5), max_size=8),
    st.dictionaries(st.sampled_from(["text", "date", "url", "Title", "bogus"]), CELL, max_size=2),
    st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
)
def test_fuzz_tables(rows, columns, encoding):
    text = "\n".join(",".join(row) for row in rows)
    assert_only_format_error(text.encode(encoding, "surrogatepass"), ",", columns)


@FUZZ
@given(st.text(max_size=60))
def test_fuzz_parse_date(value):
    result = parse_date(value)
    assert result is None or (len(result) == 10 and result[4] == "-" and result[7] == "-")
