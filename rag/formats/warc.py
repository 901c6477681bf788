"""Web archives through warcio: every captured HTML page of a .warc or .warc.gz is an Entry.

A web archive can be hostile: what it decompresses to is capped (MAX_WARC_EXPANDED), so is each
page (MAX_RECORD_BYTES) and each record's header block (MAX_HEADER_BYTES, MAX_HEADER_LINES; warcio
reads headers line by line with no limit, a flood of them would take hours or all memory).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

from rag.formats import MAX_BYTES, Entry, FormatError, Skipped
from rag.formats.web import one_line, page_entry

MAX_WARC_EXPANDED = 2 * 2**30  # what a whole archive may decompress to
MAX_RECORD_BYTES = MAX_BYTES["html"]  # one captured page, as large as a saved .html may be
MAX_HEADER_BYTES = 2**20  # one record's WARC and HTTP header lines, blank lines before it included
MAX_HEADER_LINES = 10_000
HTML_TYPES = ("text/html", "application/xhtml+xml")
NOT_WARC = "not a WARC archive ({}); check the file, only .warc and .warc.gz web archives are read"


class _Damaged(Exception):
    """The archive cannot be read past this point; str() says why, in words for the user.

    what: "truncated" (the data ends early), "damaged" (it is wrong), "too large" (a cap is hit).
    """

    def __init__(self, reason: str, what: str = "damaged") -> None:
        super().__init__(reason)
        self.what = what


@dataclass
class _Capture:
    order: tuple  # (capture time, record number): the latest capture is kept
    entry: Entry


def read_warc(path: str) -> tuple[list[Entry], list[Skipped]]:
    """The articles of a .warc or .warc.gz archive: one Entry per captured HTML page URL.

    Raises FormatError when the file is not a WARC or nothing in it could be read, OSError when it
    cannot be read from disk; damage after the first record is one Skipped next to the entries.
    """
    with open(path, "rb") as raw:
        stream = _open_archive(raw)
        return _Archive().read(stream)


def _open_archive(raw) -> _CappedStream:
    """The archive's uncompressed bytes, counted. gzip.open reads every member of a multi-member
    .warc.gz (the usual one gzip member per record) and a whole-file gzip alike."""
    magic = raw.peek(2)[:2]
    if not magic:
        raise FormatError(NOT_WARC.format("the file is empty"))
    inner = gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw
    stream = _CappedStream(inner)
    try:
        start = stream.peek(16)
    except _Damaged as err:
        raise _unreadable(err) from err
    if not start.lstrip(b"\r\n").startswith(b"WARC/"):
        raise FormatError(NOT_WARC.format("it does not start with a WARC record"))
    return stream


class _CappedStream:
    """A read-only stream that counts what it hands out and stops at MAX_WARC_EXPANDED.

    Decompression errors become _Damaged: an EOFError would otherwise read to warcio as the
    archive's normal end, and gzip's BadGzipFile is an OSError, which means a disk problem here.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.count = 0
        self.pending = b""

    def peek(self, size: int) -> bytes:
        """The first `size` bytes (fewer at the end), read again by the next read()."""
        while len(self.pending) < size:
            chunk = self._read_inner(size - len(self.pending))
            if not chunk:
                break
            self.pending += chunk
        return self.pending

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 2**20  # warcio always asks for a block; never the whole archive at once
        if self.pending:
            data, self.pending = self.pending[:size], self.pending[size:]
        else:
            data = self._read_inner(size)
        self.count += len(data)
        if self.count > MAX_WARC_EXPANDED:
            raise _Damaged(f"it expands to more than {_size(MAX_WARC_EXPANDED)} (a decompression bomb?); "
                           "split it into smaller archives", "too large")
        return data

    def tell(self) -> int:
        return self.count

    def _read_inner(self, size: int) -> bytes:
        try:
            # read1: what one step decompressed; read() would lose it when the next step fails
            return self.inner.read1(size)
        except EOFError as err:
            raise _Damaged("the compressed data ends early", "truncated") from err
        except (zlib.error, gzip.BadGzipFile) as err:
            raise _Damaged(f"damaged gzip data ({one_line(err)})") from err


class _HeaderGuard:
    """Stands in for warcio's line reader and caps the header lines read for one record.

    warcio reads header lines (and the blank lines between records) with no limit: a line of a
    gigabyte is joined block by block (quadratic time), a flood of short lines is kept in a list.
    """

    def __init__(self, reader) -> None:
        self._reader = reader
        self.reset()

    def reset(self) -> None:
        self.lines = 0
        self.bytes = 0

    def readline(self, length=None):
        room = MAX_HEADER_BYTES - self.bytes + 1
        line = self._reader.readline(room if length is None else min(length, room))
        self.lines += 1
        self.bytes += len(line)
        if self.bytes > MAX_HEADER_BYTES or self.lines > MAX_HEADER_LINES:
            raise _Damaged(f"a record's headers run over {_size(MAX_HEADER_BYTES)} or {MAX_HEADER_LINES} lines",
                           "too large")
        return line

    def __getattr__(self, name):
        return getattr(self._reader, name)


class _Archive:
    """One pass over an archive's records, keeping the latest capture of each page."""

    def __init__(self) -> None:
        self.captures: dict[str, _Capture] = {}
        self.failed: dict[str, Skipped] = {}
        self.skipped: list[Skipped] = []
        self.started = 0  # records whose headers were read
        self.complete = 0  # records read to their end

    def read(self, stream: _CappedStream) -> tuple[list[Entry], list[Skipped]]:
        from warcio.archiveiterator import ArchiveIterator

        iterator = ArchiveIterator(stream)
        guard = _HeaderGuard(iterator.reader)
        iterator.reader = guard  # warcio parses every record from this reader
        try:
            while True:
                guard.reset()
                with _quiet():  # warcio prints some warnings to stderr; the damage is reported below
                    record = next(iterator, None)
                    if record is None:
                        break
                    self.started += 1
                    self._record(record)
        except Exception as err:  # noqa: BLE001 - damaged data surfaces as warcio, gzip or parse errors
            if isinstance(err, OSError | FormatError):
                raise  # a disk error (gzip's own errors became _Damaged); FormatError is ours
            self._damaged(err)
        return [capture.entry for capture in self.captures.values()], self.skipped + list(self.failed.values())

    def _damaged(self, err: Exception) -> None:
        """Keep what was read before the damage, and say where it is; nothing read: FormatError."""
        if not self.complete:
            raise _unreadable(err) from err
        what, reason = _why(err)
        where = f"record {self.complete + 1}"
        said = f"read up to {where} only" if what == "too large" else f"{what} from {where} on"
        self.skipped.append(Skipped(
            key=where, reason=f"the archive is {said} ({reason}); the {self.complete} records before it were read"))

    def _record(self, record) -> None:
        """Sort one record out; its page is read only once the whole record is known to be there."""
        uri = record.rec_headers.get_header("WARC-Target-URI")
        key = uri or f"record {self.started}"
        reason = _not_a_page(record)
        data = None
        if reason is None and uri:
            data = record.content_stream().read(MAX_RECORD_BYTES + 1)
        _drain(record)
        self.complete += 1
        if reason is not None:
            return self._count(key, reason)
        if not uri:
            return self.skipped.append(Skipped(key=key, reason="HTML response without a WARC-Target-URI; skipped"))
        if len(data) > MAX_RECORD_BYTES:
            return self._fail(uri, f"page over the {_size(MAX_RECORD_BYTES)} limit; skipped")
        captured = record.rec_headers.get_header("WARC-Date")
        try:
            entry = page_entry(data, url=uri)
        except FormatError as err:
            return self._fail(uri, str(err))
        entry.key = uri
        entry.meta["url"] = uri
        entry.meta["date"] = entry.meta.get("date") or _day(captured)
        self._keep(uri, _Capture(order=(_moment(captured), self.started), entry=entry))

    def _keep(self, uri: str, capture: _Capture) -> None:
        if self.failed.pop(uri, None) is not None:
            self._count(uri, "a capture with no article (a later one has one)")
        old = self.captures.get(uri)
        if old is None:
            self.captures[uri] = capture
            return
        if capture.order > old.order:
            self.captures[uri] = capture
        self._count(uri, "an older capture of a page captured again later")

    def _fail(self, uri: str, reason: str) -> None:
        """A capture with no article: reported once per URL, and only when no capture of it worked."""
        if uri in self.captures or uri in self.failed:
            return self._count(uri, f"a capture with no article ({reason})")
        self.failed[uri] = Skipped(key=uri, reason=reason)

    def _count(self, key: str, reason: str) -> None:
        self.skipped.append(Skipped(key=key, reason=reason, counted=True))


def _unreadable(err: Exception) -> FormatError:
    """The error for an archive of which not one record could be read."""
    what, reason = _why(err)
    if what == "truncated":
        return FormatError(f"the archive is truncated inside its first record ({reason}); nothing could be read")
    if what == "too large":
        return FormatError(f"the archive could not be read: {reason}")
    return FormatError(NOT_WARC.format(reason))


def _why(err: Exception) -> tuple[str, str]:
    """(what, reason) of a failure while reading records: our _Damaged, or a warcio/parse error."""
    if isinstance(err, _Damaged):
        return err.what, str(err)
    return "damaged", f"damaged record data ({one_line(err)})"


def _not_a_page(record) -> str | None:
    """Why a record is not a captured web page (counted, no line of its own), or None if it is one."""
    rec_type = record.rec_type or "unknown"
    if rec_type != "response":
        return f"{rec_type} record"
    if record.http_headers is None:
        return "response without HTTP headers"
    mime = (record.http_headers.get_header("Content-Type") or "").split(";")[0].strip().lower()
    if mime not in HTML_TYPES:
        return f"not a web page ({mime or 'no content type'})"
    status = record.http_headers.get_statuscode() or ""
    if not status.startswith("2"):
        return f"HTTP status {status or 'missing'}, not a page capture"
    return None


def _drain(record) -> None:
    """Read the rest of the record; a record shorter than its Content-Length means the archive
    was cut there (a plain .warc cut off does not raise anywhere else)."""
    from warcio.limitreader import LimitReader

    stream = record.raw_stream
    while stream.read(2**20):
        pass
    if isinstance(stream, LimitReader) and stream.limit > 0:
        raise _Damaged("the last record is cut short", "truncated")


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def _moment(stamp: str | None) -> datetime:
    """A WARC-Date as an aware datetime, for ordering captures; the earliest time if unreadable."""
    try:
        moment = datetime.fromisoformat((stamp or "").strip())
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _day(stamp: str | None) -> str | None:
    """The ISO day of a WARC-Date ("2024-03-03T10:00:00Z" -> "2024-03-03"), or None."""
    try:
        return datetime.fromisoformat((stamp or "").strip()).date().isoformat()
    except ValueError:
        return None


def _size(n: int) -> str:
    if n % 2**30 == 0 and n:
        return f"{n // 2**30} GiB"
    return f"{n // 2**20} MiB" if n % 2**20 == 0 and n else f"{n} bytes"
