"""CSV and TSV exports (one article per row), read with the stdlib csv module.

Also home of `parse_date`, the one place a written date becomes YYYY-MM-DD (feeds use it too).
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import re
from datetime import date, datetime

from rag.formats import Entry, FormatError, Skipped

# Header names (compared by `_norm`) that give each role, the preferred first.
ROLES = {
    "text": ("body", "text", "content", "article", "story"),
    "title": ("headline", "title"),
    "date": ("published", "date", "published_at", "pubdate"),
    "source": ("publisher", "source", "site"),
    "url": ("link", "url"),
}
# Largest field the csv module may return: a long article with its markup fits, a runaway
# unclosed quote does not eat the whole file. (csv's default is 128 KiB.)
FIELD_LIMIT = 32 * 2**20
UTF32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)  # checked first: UTF-32 LE starts like UTF-16 LE
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def read_table(data: bytes, delimiter: str, columns: dict[str, str]) -> tuple[list[Entry], list[Skipped]]:
    """One Entry per data row; `columns` (role -> header name, from --csv-columns) overrides the
    roles found by header name. FormatError when the file as a whole cannot be used."""
    rows = _rows(_decode(data), delimiter)
    if not rows:
        raise FormatError("empty file; nothing to index")
    header, body = rows[0], rows[1:]
    if not body:
        raise FormatError("only a header row, no data rows; nothing to index")
    roles = _roles(header, columns)
    if "text" not in roles:
        raise FormatError(
            f"no text column (looked for {', '.join(ROLES['text'])}); name it with --csv-columns text=COLUMN"
            f"{_has_columns(header)}"
        )
    return _entries(body, roles)


def _decode(data: bytes) -> str:
    """UTF-8 (BOM dropped) or UTF-16 with a BOM: what spreadsheet programs save as "CSV UTF-8"
    and "Unicode text"; a legacy code page would silently garble, so it is refused."""
    if data.startswith(UTF32_BOMS):
        raise FormatError("not UTF-8 text (UTF-32); save the export as UTF-8 CSV")
    try:
        if data.startswith(UTF16_BOMS):
            return data.decode("utf-16")
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise FormatError(
            f"not UTF-8 text ({err.encoding}: {err.reason} at byte {err.start}); save the export as UTF-8 CSV"
        ) from None
    if "\x00" in text[:4096]:  # valid UTF-8, but text has no NULs: UTF-16 without its BOM, or not text
        raise FormatError("not UTF-8 text (NUL characters; UTF-16 without a BOM?); save the export as UTF-8 CSV")
    return text


def _rows(text: str, delimiter: str) -> list[list[str]]:
    """All non-blank rows, as csv.reader gives them."""
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)  # process-wide, only ever raised
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        return [row for row in reader if row]
    except csv.Error as err:
        raise FormatError(f"CSV error at line {reader.line_num}: {err}; check the quoting there") from None


def _norm(name: str) -> str:
    """Header names compare without case, spaces, underscores or hyphens ("Published At" = published_at)."""
    return re.sub(r"[\s_\-]+", "", name).casefold()


def _find(header: list[str], name: str) -> int | None:
    """Index of the column called `name`: an exact match first, else the first matching `_norm`."""
    if name in header:
        return header.index(name)
    wanted = _norm(name)
    return next((i for i, column in enumerate(header) if _norm(column) == wanted), None)


def _roles(header: list[str], columns: dict[str, str]) -> dict[str, int]:
    """role -> column index: the --csv-columns mapping wins over header names."""
    roles: dict[str, int] = {}
    for role, names in ROLES.items():
        found = (i for i in (_find(header, name) for name in names) if i is not None)
        index = next(found, None)
        if index is not None:
            roles[role] = index
    for role, name in columns.items():
        role_name = role.strip().lower()
        if role_name not in ROLES:
            raise FormatError(
                f"--csv-columns: unknown role {role!r}; use {', '.join(ROLES)}{_has_columns(header)}"
            )
        index = _find(header, name.strip())
        if index is None:
            raise FormatError(f"--csv-columns: no column {name!r} for {role_name}{_has_columns(header)}")
        roles[role_name] = index
    return roles


def _has_columns(header: list[str]) -> str:
    """'; the file has columns: ...' for an error line, with a hint when the delimiter looks wrong."""
    shown = ", ".join(repr(column) for column in header[:30]) + (", ..." if len(header) > 30 else "")
    hint = ""
    if len(header) == 1 and any(mark in header[0] for mark in ";\t|,"):
        hint = " (one column only: is the file separated by another character?)"
    return f"; the file has columns: {shown}{hint}"


def _entries(body: list[list[str]], roles: dict[str, int]) -> tuple[list[Entry], list[Skipped]]:
    """Rows in file order; a row's key is its url when that url names one row only, else its number."""
    def cell(row: list[str], role: str) -> str:
        index = roles.get(role)
        return row[index].strip() if index is not None and index < len(row) else ""

    url_counts: dict[str, int] = {}
    for row in body:
        url = cell(row, "url")
        url_counts[url] = url_counts.get(url, 0) + 1
    entries: list[Entry] = []
    skipped: list[Skipped] = []
    for number, row in enumerate(body, start=1):
        text = cell(row, "text").replace("\r\n", "\n").replace("\r", "\n")
        if not text:
            skipped.append(Skipped(f"row {number}", "empty text; skipped"))
            continue
        url = cell(row, "url")
        unique = url and url_counts[url] == 1 and not re.fullmatch(r"row\d+", url)
        meta = {
            "title": " ".join(cell(row, "title").split()) or None,
            "date": parse_date(cell(row, "date")),
            "source": cell(row, "source") or None,
            "url": url or None,
        }
        entries.append(Entry(key=url if unique else f"row{number}", text=text, meta=meta))
    return entries, skipped


# --- dates ----------------------------------------------------------------------------------------

# Day, month and year in digits: year first is unambiguous; day and month first is read only when
# one of them is over 12 (or both are equal), since 03/04/2024 is March in the US and April elsewhere.
YEAR_FIRST = re.compile(r"(\d{4})([-/.])(\d{1,2})\2(\d{1,2})")
YEAR_LAST = re.compile(r"(\d{1,2})([-/.])(\d{1,2})\2(\d{4})")
TIME_TAIL = re.compile(r"(?:[ T]+\d{1,2}:\d{2}.*)?", re.S)
NUMERIC_DATE = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}")
FOUR_DIGITS = re.compile(r"(?<!\d)\d{4}(?!\d)")
DATEPARSER_SETTINGS = {
    "REQUIRE_PARTS": ["day", "month", "year"],  # "March 2024" is not a day
    "PARSERS": ["absolute-time"],  # no "yesterday", "2 days ago", bare timestamps or run-together digits
    "RETURN_AS_TIMEZONE_AWARE": False,  # the date as written, never moved to this machine's zone
}


@functools.lru_cache(maxsize=4096)
def parse_date(value: str) -> str | None:
    """YYYY-MM-DD for a value stating day, month and year, else None: a date is never guessed.

    Reads ISO dates and datetimes (the date as written, before any UTC offset), unambiguous digit
    dates, and English written ones ("March 3, 2024", "03 Mar 2024", RFC 2822) with a 4-digit year.
    """
    value = value.strip() if isinstance(value, str) else ""
    if not value or len(value) > 80:
        return None
    found = _iso_date(value)
    if found is None and NUMERIC_DATE.search(value):
        found = _digit_date(value)
    elif found is None and re.search(r"[^\W\d_]", value):
        found = _written_date(value)
    return found.isoformat() if found else None


def _iso_date(value: str) -> date | None:
    try:
        return datetime.fromisoformat(value).date()
    except ValueError:
        return None


def _digit_date(value: str) -> date | None:
    """A date all in digits, with an optional time after it; None when day and month could swap."""
    if match := YEAR_FIRST.match(value):
        year, month, day = int(match[1]), int(match[3]), int(match[4])
    elif match := YEAR_LAST.match(value):
        first, second, year = int(match[1]), int(match[3]), int(match[4])
        if first > 12 >= second:
            day, month = first, second
        elif second > 12 >= first or first == second:
            day, month = second, first
        else:
            return None
    else:
        return None
    if not TIME_TAIL.fullmatch(value, match.end()):
        return None
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _written_date(value: str) -> date | None:
    """dateparser's reading of an English date, kept only when its year is written out in full in
    the value (dateparser would otherwise read "Mar 3 24" as 2024)."""
    years = {int(digits) for digits in FOUR_DIGITS.findall(value)}
    if not years:
        return None
    try:
        parsed = _date_parser().get_date_data(value).date_obj
    except Exception:  # dateparser on odd input is not proven total; no date is the safe answer
        return None
    return parsed.date() if parsed is not None and parsed.year in years else None


@functools.cache
def _date_parser():
    """One English dateparser, built on first use (importing dateparser costs ~0.1 s)."""
    from dateparser.date import DateDataParser

    return DateDataParser(languages=["en"], settings=DATEPARSER_SETTINGS)
