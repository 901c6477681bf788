"""Read articles from folders and files: .txt, .md, .json (an object or a list), .jsonl, and
through `rag.formats`: web pages, RSS/Atom feeds, PDFs, CSV/TSV exports and WARC archives.

`scan()` never raises on a bad file: every file or record it cannot use becomes a Problem
(one stderr line for the CLI) and the good files next to it are still read. Article text is
kept exactly as decoded (no stripping, no newline changes) because citations are character
offsets into it.

Metadata is taken only where it is stated: a `date YYYY-MM-DD` header, `key: value` front
matter, a JSON field, a dateline that carries a year, an agency in a dateline parenthesis or
a sign-off line, and a sidecar `NAME.meta.json`. Nothing is guessed: no year, no date.

A file that holds several articles (a JSON list, a JSONL file, a feed, a CSV export, a web
archive) gives each its own doc id, `FILE#KEY`, so an entry that changes is re-embedded alone.
A file that cannot be read as a whole is listed in `Scan.unreadable`: the indexer keeps what it
had indexed from it instead of deleting it.

Left out on purpose: encodings other than UTF-8/UTF-16 for plain text, real YAML parsing,
following symlinked folders (their targets inside the root are walked anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from rag import formats
from rag.types import Article
from rag.words import STOPWORDS

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_LINE_CHARS = 1_000_000
TITLE_CHARS = 200
SNIFF_BYTES = 8192  # a NUL byte in this many leading bytes means binary
TEXT_FORMATS = (".txt", ".md", ".json", ".jsonl")
SUPPORTED = TEXT_FORMATS + tuple(formats.EXTENSIONS)
SUPPORTED_HINT = "use .txt, .md, .json, .jsonl, .html, .htm, .xml/.rss/.atom feeds, .pdf, .csv, .tsv, .warc or .warc.gz"
SIDECAR_SUFFIX = ".meta.json"
SIDECAR_FIELDS = ("title", "date", "source", "url")
OUTSIDE_ROOT = "symlink points outside the indexed folder; skipped (index its target folder instead)"

# JSON and front matter field names, first match wins.
TEXT_KEYS = ("text", "body", "content")
TITLE_KEYS = ("title", "headline")
DATE_KEYS = ("date", "published_at", "published")
SOURCE_KEYS = ("source", "publisher")
URL_KEYS = ("url",)

# A credited agency or publisher, by shape rather than by a table of names: one to five words,
# each capitalised (small joining words such as "of" and "the" aside), letters, hyphens, dots
# and ampersands only. "ABC", "Wire Service", "Example News Agency", "Press Union of Somewhere".
CREDIT_MAX_CHARS = 40
ACRONYM_MAX = 6  # a bare all-caps sign-off word this short reads as an acronym ("ABC", "WIREX")

@dataclass
class Problem:
    """One skipped file or record (or an ignored sidecar), shown as one stderr line."""

    path: str  # file path; "path:LINE" for a JSONL line, "path[i]" for a JSON list item
    reason: str  # what is wrong and what to do

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Known:
    """An article of a file that has not changed since the last `rag index` read it (same size,
    times and inode, same sidecar): not read again. The indexer checks the store still holds
    `content_hash` for it, and reads the file (`read_file`) if it must."""

    doc_id: str
    content_hash: str
    path: str  # locator, as Article.path
    file: str  # the file it came from
    rel: str  # that file's name relative to its root (the doc id's stem)


@dataclass(frozen=True)
class FileRecord:
    """What a file looked like when it was read, and the articles it gave (doc id, hash, locator)."""

    stamp: str
    rel: str
    articles: tuple[tuple[str, str, str], ...]


@dataclass
class Scan:
    """Everything scan() found; the CLI prints the problems and decides the exit code."""

    articles: list[Article | Known] = field(default_factory=list)
    files: dict[str, FileRecord] = field(default_factory=dict)  # absolute path -> record, to remember
    problems: list[Problem] = field(default_factory=list)
    skipped_hidden: int = 0
    skipped_unsupported: int = 0
    skipped_records: int = 0  # archive records that hold no article (requests, images, ...): counted only
    unreadable: set[str] = field(default_factory=set)  # doc ids of files that could not be read at all


@dataclass
class _Record:
    """An article before sidecar overrides and hashing."""

    locator: str  # where it came from, for messages
    doc_id: str
    text: str
    meta: dict[str, str | None]
    pages: tuple[int, ...] = ()


@dataclass
class _Walk:
    """What one scan() carries from file to file."""

    options: formats.Options
    seen: _Walk = field(default_factory=dict)  # doc_id -> where it was first read
    known: dict[str, FileRecord] = field(default_factory=dict)  # from the last run: not read again


def scan(paths: list[str | Path], options: formats.Options | None = None,
         known: dict[str, FileRecord] | None = None) -> Scan:
    """Read every supported article under `paths`, in the given order, folders in sorted order.

    The first article with a given doc_id wins; later ones become Problems. A file whose stamp
    is in `known` unchanged gives `Known` articles instead of being read.
    """
    out = Scan()
    seen = _Walk(options or formats.Options(), known=known or {})
    for given in paths:
        path = str(given)
        try:
            mode = os.stat(path).st_mode
        except OSError as err:
            out.problems.append(Problem(path, _missing_reason(path, err)))
            continue
        if stat.S_ISDIR(mode):
            _scan_folder(path, out, seen)
        elif stat.S_ISREG(mode):
            _scan_given_file(path, out, seen)
        else:
            out.problems.append(Problem(path, "not a regular file or folder; give files or folders"))
    return out


def _missing_reason(path: str, err: OSError) -> str:
    if os.path.islink(path):
        return "broken symlink or symlink loop; fix or remove the link"
    if isinstance(err, PermissionError):
        return "permission denied; check its permissions"
    if isinstance(err, FileNotFoundError | NotADirectoryError):
        return "no such file or folder; check the path"
    return f"cannot read: {err.strerror}"


# --- walking -----------------------------------------------------------------------------


def _scan_folder(root: str, out: Scan, seen: _Walk) -> None:
    """Walk `root` without following symlinked folders, so loops cannot hang the walk."""
    root_real = os.path.realpath(root)

    def on_error(err: OSError) -> None:
        reason = f"cannot read folder ({err.strerror}); check its permissions"
        out.problems.append(Problem(str(err.filename or root), reason))

    for dirpath, dirnames, filenames, links in _walk(root, on_error):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in sorted(dirnames) if _enter_folder(os.path.join(dirpath, d), out, root_real)]
        listed = _Listing(os.path.abspath(dirpath), frozenset(filenames), links)
        for name in sorted(filenames):
            rel = name if rel_dir == "." else os.path.join(rel_dir, name)
            _scan_walked_file(os.path.join(dirpath, name), rel.replace(os.sep, "/"), out, seen, root_real, listed)


@dataclass(frozen=True)
class _Listing:
    """One folder's listing, so that per-file checks need no extra system calls."""

    folder: str  # absolute
    names: frozenset[str]
    links: frozenset[str]  # names that are symlinks


def _walk(root: str, on_error):
    """os.walk(root, followlinks=False) without recursion (Python 3.11's os.walk recurses, so a
    folder tree 1,000 levels deep would raise RecursionError). The caller may prune `dirnames`."""
    stack = [root]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as entries:
                listed = list(entries)
        except OSError as err:
            on_error(err)
            continue
        dirnames, filenames, links = [], [], set()
        for entry in listed:
            try:
                is_dir = entry.is_dir()
                if entry.is_symlink():
                    links.add(entry.name)
            except OSError:
                is_dir = False
            (dirnames if is_dir else filenames).append(entry.name)
        yield top, dirnames, filenames, frozenset(links)
        stack.extend(os.path.join(top, d) for d in reversed(dirnames) if not os.path.islink(os.path.join(top, d)))


def _enter_folder(path: str, out: Scan, root_real: str) -> bool:
    """Hidden folders are counted; symlinked folders are never entered (outside the root: a Problem)."""
    name = os.path.basename(path)
    if name.startswith("."):
        out.skipped_hidden += 1
        return False
    if os.path.islink(path):
        if not _inside(path, root_real):
            out.problems.append(Problem(path, OUTSIDE_ROOT))
        return False
    if not _utf8_ok(name):
        out.problems.append(Problem(path, "folder name is not valid UTF-8; rename it"))
        return False
    return True


def _scan_walked_file(path: str, rel: str, out: Scan, seen: _Walk, root_real: str, listed: _Listing) -> None:
    name = os.path.basename(path)
    if name.startswith("."):
        out.skipped_hidden += 1
        return
    if _is_sidecar(name):
        return  # read together with its article
    ext = _ext(name)
    if ext not in SUPPORTED:
        out.skipped_unsupported += 1
        return
    if not _utf8_ok(rel):
        out.problems.append(Problem(path, "file name is not valid UTF-8; rename it"))
        return
    if name in listed.links and not _inside(path, root_real):
        out.problems.append(Problem(path, OUTSIDE_ROOT))
        return
    _scan_file(path, rel, ext, out, seen, os.path.join(listed.folder, name), name + SIDECAR_SUFFIX in listed.names)


def _scan_given_file(path: str, out: Scan, seen: _Walk) -> None:
    """A file named on the command line: the user asked for it, so a wrong type is a Problem."""
    name = os.path.basename(path)
    if _is_sidecar(name):
        reason = f"is sidecar metadata for {name[: -len(SIDECAR_SUFFIX)]}, not an article; give that file"
        out.problems.append(Problem(path, reason))
        return
    ext = _ext(name)
    if ext not in SUPPORTED:
        out.problems.append(Problem(path, f"unsupported file type; {SUPPORTED_HINT}"))
        return
    if not _utf8_ok(name):
        out.problems.append(Problem(path, "file name is not valid UTF-8; rename it"))
        return
    _scan_file(path, name, ext, out, seen)


def _inside(path: str, root_real: str) -> bool:
    try:
        return Path(os.path.realpath(path)).is_relative_to(root_real)
    except (OSError, ValueError, RuntimeError):
        return False


def _is_sidecar(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(SIDECAR_SUFFIX) and _ext(name[: -len(SIDECAR_SUFFIX)]) in SUPPORTED


def _ext(name: str) -> str:
    return formats.extension(name) or os.path.splitext(name)[1].lower()


def _utf8_ok(s: str) -> bool:
    """False for strings carrying surrogates (undecodable file names, lone JSON escapes)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- one file ----------------------------------------------------------------------------


def read_file(path: str, rel: str, options: formats.Options | None = None) -> Scan:
    """Read one file as a folder walk would have, its doc ids based on `rel` (never from a stamp)."""
    out = Scan()
    _scan_file(path, rel, _ext(path), out, _Walk(options or formats.Options()))
    return out


RACY_SECONDS = 2.0  # a file changed this recently may change again within the same timestamp tick


def _stamp(path: str, sidecar: bool | None = None) -> str | None:
    """Size, mtime, ctime and inode of the file and of its sidecar, as one string; None when the
    file changed too recently to trust. `sidecar` False: the folder listing shows none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if time.time() - max(st.st_mtime, st.st_ctime) < RACY_SECONDS:
        return None
    stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
    if sidecar is False:
        return stamp
    try:
        side = os.stat(path + SIDECAR_SUFFIX)
    except OSError:
        return stamp
    return f"{stamp}+{side.st_size}:{side.st_mtime_ns}:{side.st_ctime_ns}:{side.st_ino}"


def _scan_known(key: str, stamp: str | None, rel: str, out: Scan, seen: _Walk) -> bool:
    """Give the articles a file gave last time, if it is unchanged since; False to read it."""
    record = seen.known.get(key) if stamp is not None else None
    if record is None or record.stamp != stamp or record.rel != rel:
        return False
    if any(doc_id in seen.seen for doc_id, _, _ in record.articles):
        return False  # a clash with another file: read it, so the message is the usual one
    for doc_id, digest, locator in record.articles:
        seen.seen[doc_id] = locator
        out.articles.append(Known(doc_id, digest, locator, key, rel))
    out.files[key] = record
    return True


def _scan_file(path: str, rel: str, ext: str, out: Scan, seen: _Walk, key: str | None = None,
               sidecar: bool | None = None) -> None:
    key = key or os.path.abspath(path)
    stamp = _stamp(path, sidecar)
    if _scan_known(key, stamp, rel, out, seen):
        return
    first = len(out.articles)
    problems_before = len(out.problems)
    _read_file_records(path, rel, ext, out, seen)
    if stamp is not None and len(out.problems) == problems_before and len(out.articles) > first:
        out.files[key] = FileRecord(stamp, rel, tuple((a.doc_id, a.content_hash, a.path)
                                                      for a in out.articles[first:]))


def _read_file_records(path: str, rel: str, ext: str, out: Scan, seen: _Walk) -> None:
    if ext in formats.EXTENSIONS:
        records, problems = _format_records(path, rel, ext, out, seen.options)
    else:
        records, problems = _read_records(path, rel, ext)
    out.problems.extend(problems)
    if not records:
        if problems and any(p.path == path for p in problems):
            out.unreadable.add(rel)  # keep what an earlier run indexed from it
        return
    overrides, problem = _read_sidecar(path + SIDECAR_SUFFIX)
    if problem:
        out.problems.append(problem)
    for record in records:
        if record.doc_id in seen.seen:
            reason = f"duplicate doc id {record.doc_id!r}, first read from {seen.seen[record.doc_id]}; skipped"
            out.problems.append(Problem(record.locator, reason + " (rename it or change its id)"))
            continue
        seen.seen[record.doc_id] = record.locator
        out.articles.append(_article(record, {**record.meta, **overrides}))


def _article(record: _Record, meta: dict[str, str | None]) -> Article:
    title = meta.get("title") or record.doc_id
    fields = [record.text, title, meta.get("date"), meta.get("source"), meta.get("url")]
    if meta.get("author") or record.pages:  # only the new formats: older indexes keep their hashes
        fields += [meta.get("author"), list(record.pages)]
    digest = hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode("utf-8")).hexdigest()
    return Article(
        doc_id=record.doc_id,
        text=record.text,
        title=title,
        date=meta.get("date"),
        source=meta.get("source"),
        url=meta.get("url"),
        path=record.locator,
        content_hash=digest,
        author=meta.get("author"),
        pages=record.pages,
    )


def _read_records(path: str, rel: str, ext: str) -> tuple[list[_Record], list[Problem]]:
    text, reason = _read_text(path)
    if reason:
        return [], [Problem(path, reason)]
    if not text.strip():
        return [], [Problem(path, "empty or whitespace only; nothing to index")]
    if ext == ".json":
        return _json_records(text, path, rel)
    if ext == ".jsonl":
        return _jsonl_records(text, path, rel)
    reason = _long_line_reason(text)
    if reason:
        return [], [Problem(path, reason)]
    return [_Record(path, rel, text, _text_meta(text, markdown=ext == ".md"))], []


def _read_text(path: str) -> tuple[str, str | None]:
    """Decoded text, or a reason it cannot be used. Reads at most MAX_FILE_BYTES + 1 bytes."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return "", "not a regular file; skipped"
        if st.st_size > MAX_FILE_BYTES:
            return "", _too_big_reason(st.st_size)
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except PermissionError:
        return "", "cannot read: permission denied; check its permissions"
    except OSError as err:
        return "", f"cannot read ({err.strerror}); check the file or link"
    if len(data) > MAX_FILE_BYTES:
        return "", _too_big_reason(len(data))
    return _decode(data)


def _too_big_reason(size: int) -> str:
    limit = MAX_FILE_BYTES // (1024 * 1024)
    return f"file is {size / (1024 * 1024):.1f} MB, over the {limit} MB limit; split it into articles"


def _decode(data: bytes) -> tuple[str, str | None]:
    """UTF-8 (BOM stripped), or UTF-16 when it starts with a UTF-16 BOM. Nothing else is guessed."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), None
        except UnicodeDecodeError:
            return "", "not valid UTF-16 text despite its byte-order mark; convert it to UTF-8"
    if b"\x00" in data[:SNIFF_BYTES]:
        return "", "binary file (NUL bytes), not text; convert it to UTF-8 text or remove it"
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as err:
        return "", f"not UTF-8 text (bad byte at offset {err.start}); convert it to UTF-8"


def _long_line_reason(text: str) -> str | None:
    if len(text) <= MAX_LINE_CHARS:
        return None
    longest = max(len(line) for line in text.splitlines())
    if longest <= MAX_LINE_CHARS:
        return None
    return (
        f"has a single line of {longest:,} characters (limit {MAX_LINE_CHARS:,}); a 10 MB single line "
        "is not an article: split it into paragraphs or check it is really text"
    )


# --- web pages, feeds, PDFs, CSV, WARC ---------------------------------------------------


def _format_records(path: str, rel: str, ext: str, out: Scan,
                    options: formats.Options) -> tuple[list[_Record], list[Problem]]:
    """The articles of a rich-format file, through its reader in rag.formats."""
    limit = formats.MAX_BYTES[formats.kind(ext)]
    try:
        size = os.stat(path).st_size
        if size > limit:
            return [], [Problem(path, f"file is {size / 2**20:.1f} MB, over the {limit // 2**20} MB limit for "
                                      f"{ext} files; split it")]
        entries, skipped = formats.read(ext, path, options)
    except formats.FormatError as err:
        return [], [Problem(path, str(err))]
    except PermissionError:
        return [], [Problem(path, "cannot read: permission denied; check its permissions")]
    except OSError as err:
        return [], [Problem(path, f"cannot read ({err.strerror or err}); check the file or link")]
    problems = [Problem(f"{path}#{s.key}", s.reason) for s in skipped if not s.counted]
    out.skipped_records += sum(1 for s in skipped if s.counted)
    records = []
    for entry in entries:
        if not entry.text.strip():
            problems.append(Problem(_locator(path, entry.key), "no text; nothing to index"))
            continue
        meta = _text_meta(entry.text, markdown=False)  # what the text states; the format's own fields win
        meta.update({k: v for k, v in entry.meta.items() if v})
        meta["title"] = _clean_title(meta.get("title")) or meta.get("title")
        doc_id = rel if entry.key is None else f"{rel}#{entry.key}"
        records.append(_Record(_locator(path, entry.key), doc_id, entry.text, meta, tuple(entry.pages)))
    if not records and not problems:
        problems.append(Problem(path, "no articles found in it; nothing to index"))
    return records, problems


def _locator(path: str, key: str | None) -> str:
    return path if key is None else f"{path}#{key}"


# --- JSON --------------------------------------------------------------------------------


def _json_records(text: str, path: str, rel: str) -> tuple[list[_Record], list[Problem]]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        return [], [Problem(path, f"not valid JSON ({_json_error(err)}); fix the file")]
    if isinstance(data, dict):
        items = [(path, rel, data)]  # one article: its doc_id is the file's, like a .txt
    elif isinstance(data, list):
        if not data:
            return [], [Problem(path, "an empty JSON list: no articles to index")]
        items = [(f"{path}[{i}]", f"{rel}#{i}", obj) for i, obj in enumerate(data)]
    else:
        return [], [Problem(path, f"a JSON {_kind(data)}; expected an article object or a list of them")]
    return _collect(_record(obj, locator, fallback_id) for locator, fallback_id, obj in items)


def _jsonl_records(text: str, path: str, rel: str) -> tuple[list[_Record], list[Problem]]:
    results: list[_Record | Problem] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        locator = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as err:
            results.append(Problem(locator, f"not valid JSON ({_json_error(err)}); fix or remove this line"))
            continue
        results.append(_record(obj, locator, f"{rel}#{number}"))
    return _collect(results)


def _collect(results) -> tuple[list[_Record], list[Problem]]:
    results = list(results)
    return [r for r in results if isinstance(r, _Record)], [r for r in results if isinstance(r, Problem)]


def _json_error(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} at line {err.lineno} column {err.colno}"
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err)


def _kind(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _record(obj: object, locator: str, fallback_id: str) -> _Record | Problem:
    """One JSON article object -> a record, or the Problem that keeps it out."""
    if not isinstance(obj, dict):
        return Problem(locator, f"record is a JSON {_kind(obj)}, not an object; write one article object")
    text = next((obj[k] for k in TEXT_KEYS if obj.get(k) is not None), None)
    if text is None:
        return Problem(locator, "record has no text; add a 'text', 'body' or 'content' field")
    if not isinstance(text, str):
        return Problem(locator, f"record text is a JSON {_kind(text)}, not a string; make it a string")
    if not _utf8_ok(text):
        return Problem(locator, "record text holds invalid Unicode (a lone surrogate escape); fix the JSON")
    if not text.strip():
        return Problem(locator, "record text is empty; nothing to index")
    reason = _long_line_reason(text)
    if reason:
        return Problem(locator, reason)
    meta = _text_meta(text, markdown=False)
    meta.update(_json_meta(obj))
    return _Record(locator, _clean_str(obj.get("id")) or fallback_id, text, meta)


def _json_meta(obj: dict) -> dict[str, str | None]:
    """Metadata from JSON fields; a field of the wrong type or a bad date is treated as absent."""
    found = {
        "title": _first(obj, TITLE_KEYS, lambda v: _clean_title(_clean_str(v))),
        "date": _first(obj, DATE_KEYS, _iso_date),
        "source": _first(obj, SOURCE_KEYS, _clean_str),
        "url": _first(obj, URL_KEYS, _clean_str),
    }
    return {k: v for k, v in found.items() if v}


def _first(obj: dict, keys: tuple[str, ...], parse) -> str | None:
    return next((v for k in keys if (v := parse(obj.get(k))) is not None), None)


def _clean_str(value: object) -> str | None:
    """Strings and numbers become trimmed strings; anything else (lists, booleans, ...) is absent."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value).strip()
    return text if text and _utf8_ok(text) else None


def _iso_date(value: object) -> str | None:
    """YYYY-MM-DD from an ISO date or datetime string (its date part, as written); else None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    try:
        if len(value) == 10:
            return date.fromisoformat(value).isoformat()
        return datetime.fromisoformat(value).date().isoformat()
    except ValueError:
        return None


# --- sidecars ----------------------------------------------------------------------------


def _read_sidecar(path: str) -> tuple[dict[str, str | None], Problem | None]:
    """Overrides from NAME.meta.json. Any fault ignores the whole sidecar, with a Problem."""
    if not os.path.isfile(path):
        return {}, None
    text, reason = _read_text(path)
    if reason:
        return {}, _sidecar_problem(path, reason)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        return {}, _sidecar_problem(path, f"not valid JSON ({_json_error(err)})")
    if not isinstance(data, dict):
        return {}, _sidecar_problem(path, f"a JSON {_kind(data)}, expected an object")
    unknown = sorted(set(data) - set(SIDECAR_FIELDS))
    if unknown:
        allowed = ", ".join(SIDECAR_FIELDS)
        return {}, _sidecar_problem(path, f"unknown field(s) {', '.join(unknown)}; use {allowed}")
    overrides: dict[str, str | None] = {}
    for key, value in data.items():
        parsed, reason = _sidecar_value(key, value)
        if reason:
            return {}, _sidecar_problem(path, reason)
        overrides[key] = parsed
    return overrides, None


def _sidecar_value(key: str, value: object) -> tuple[str | None, str | None]:
    """(value, None) or (None, reason). null clears date/source/url; a title must be text."""
    if value is None and key != "title":
        return None, None
    if not isinstance(value, str) or not value.strip() or not _utf8_ok(value):
        return None, f"'{key}' must be a non-empty string"
    if key == "date":
        parsed = _iso_date(value)
        return (parsed, None) if parsed else (None, f"date {value!r} is not a real YYYY-MM-DD date")
    if key == "title":
        return _clean_title(value), None
    return value.strip(), None


def _sidecar_problem(path: str, reason: str) -> Problem:
    return Problem(path, f"sidecar ignored: {reason}; the article keeps its own metadata")


# --- metadata from text ------------------------------------------------------------------

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^(?:---|\.\.\.)[ \t]*\r?(?:\n|\Z)", re.S | re.M)
_FRONT_LINE = re.compile(r"^[ \t]*([A-Za-z_][\w-]*)[ \t]*:[ \t]*(.*?)[ \t]*\r?$", re.M)
_DATE_HEADER = re.compile(r"\A\s*date:?[ \t]+(\d{4}-\d{2}-\d{2})\b[ \t]*", re.I)
_MD_TITLE = re.compile(r"^ {0,3}#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$", re.M)
_FIRST_LINE = re.compile(r"\S[^\r\n]*")
_HEADING_MARKS = re.compile(r"^#{1,6}[ \t]+")

_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)}
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_PLACE = r"(?:[A-Za-z][A-Za-z .'’/-]{0,40}?[ \t]*(?:\([^()\n]{1,30}\)[ \t]*)?[,:–—-][ \t]*)?"
_WEEKDAY = r"(?:(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day,?[ \t]+)?"
# "SPRINGFIELD, Feb. 20, 2019 (Wire) -", "May 1, 2025", "RIVERTON, 20 February 2019": a year is required.
_DATELINES = [
    re.compile(
        rf"\A\s*{_PLACE}{_WEEKDAY}(?P<mon>{_MONTH})[ \t]+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?,?[ \t]+"
        r"(?P<year>\d{4})\b",
        re.I,
    ),
    re.compile(
        rf"\A\s*{_PLACE}{_WEEKDAY}(?P<day>\d{{1,2}})(?:st|nd|rd|th)?[ \t]+(?P<mon>{_MONTH}),?[ \t]+"
        r"(?P<year>\d{4})\b",
        re.I,
    ),
]
_PAREN = re.compile(r"\(([^()\n]{1,40})\)")
_SIGNOFF_STRIP = " \t\r-–—()[].,:;*_\"'"


def date_header_length(text: str) -> int:
    """Length of a leading `date YYYY-MM-DD` header line in `text` (0 if none): metadata, not prose."""
    header = _DATE_HEADER.match(text[:100])
    return header.end() if header else 0


def front_matter_length(text: str) -> int:
    """Length of `---` fenced `key: value` lines at the very start of `text` (0 if none): the
    article's metadata (read into its title, date and source), not prose to quote."""
    match = _FRONT_MATTER.match(text[:20_000])
    return match.end() if match else 0


def _text_meta(text: str, markdown: bool) -> dict[str, str | None]:
    """Title, date and source stated in the text itself; front matter wins over the rest."""
    front, body = _front_matter(text)
    header = _DATE_HEADER.match(body[:100])
    if header:
        body = body[header.end() :]
    title = _md_title(body) if markdown else None
    found = {
        "title": title or _first_line_title(body),
        "date": (header and _iso_date(header[1])) or _dateline_date(body),
        "source": _dateline_source(body) or _signoff_source(text),
    }
    meta = {k: v for k, v in found.items() if v}
    meta.update(front)
    return meta


def _front_matter(text: str) -> tuple[dict[str, str | None], str]:
    """`---` fenced `key: value` lines at the very start -> (fields, the text after them)."""
    match = _FRONT_MATTER.match(text[:20_000])
    if not match:
        return {}, text
    raw = {key.lower(): _unquote(value) for key, value in _FRONT_LINE.findall(match[1])}
    fields = {
        "title": _first(raw, TITLE_KEYS, lambda v: _clean_title(_clean_str(v))),
        "date": _first(raw, DATE_KEYS, _iso_date),
        "source": _first(raw, SOURCE_KEYS, _clean_str),
        "url": _first(raw, URL_KEYS, _clean_str),
    }
    return {k: v for k, v in fields.items() if v}, text[match.end() :]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _md_title(body: str) -> str | None:
    match = _MD_TITLE.search(body)
    return _clean_title(match[1]) if match else None


def _first_line_title(body: str) -> str | None:
    match = _FIRST_LINE.search(body)
    return _clean_title(_HEADING_MARKS.sub("", match[0])) if match else None


def _clean_title(title: str | None) -> str | None:
    """One line, whitespace collapsed, at most TITLE_CHARS (cut at a word, with an ellipsis)."""
    if title is None:
        return None
    title = " ".join(title.split())
    if len(title) > TITLE_CHARS:
        cut = title[: TITLE_CHARS - 1]
        space = cut.rfind(" ")
        title = (cut[:space] if space > TITLE_CHARS // 2 else cut).rstrip() + "…"
    return title or None


def _dateline_date(body: str) -> str | None:
    head = body[:300]
    for pattern in _DATELINES:
        match = pattern.match(head)
        if match:
            month = _MONTHS[match["mon"][:3].lower()]
            try:
                return date(int(match["year"]), month, int(match["day"])).isoformat()
            except ValueError:
                return None  # "Feb. 30, 2019": stated, but not a real date
    return None


def _dateline_source(body: str) -> str | None:
    """A credit in parentheses in the dateline: "SPRINGFIELD (ABC) - ...", "RIVERTON (XYZ): ...".

    The text before it must read as a dateline (no lower-case letters) unless a dash or colon
    follows the parentheses ("Springfield (Wire) - "); "told the Associated Press (AP) on
    Monday" is prose, not a credit.
    """
    head = body[:300].lstrip()[:150].split("\n", 1)[0]
    for match in _PAREN.finditer(head):
        credit = _credit_name(match[1])
        dashed = re.match(r"\s*[-–—:]", head[match.end() :]) is not None
        if credit and (dashed or not any(c.islower() for c in head[: match.start()])):
            return credit
    return None


def _signoff_source(text: str) -> str | None:
    """A last line that only credits an agency: "ABC", "EXAMPLE NEWS AGENCY", "(Wire)", "-- XYZ".

    A bare line must be upper case, and one word of at most ACRONYM_MAX letters or several
    words; bracketed or dash-led, any credit shape will do. A bare "Advertisement" or
    "Comments are closed." is not a credit.
    """
    last = text[-300:].rstrip().rsplit("\n", 1)[-1].strip()
    name = last.strip(_SIGNOFF_STRIP)
    credit = _credit_name(name)
    if credit is None:
        return None
    marked = last[:1] in "([-–—" or last[-1:] == ")"
    words = name.split()
    shouted = not any(c.islower() for c in name) and (len(words) > 1 or len(name) <= ACRONYM_MAX)
    return credit if marked or shouted else None


_CREDIT_WORD = re.compile(r"[A-Z][A-Za-z.&'’-]*|&")


def _credit_name(name: str) -> str | None:
    """`name` tidied if it has the shape of an agency or publisher credit, else None.

    Upper-case names longer than an acronym are title-cased ("EXAMPLE NEWS AGENCY" ->
    "Example News Agency"); acronyms and mixed case stay as written.
    """
    words = name.split()
    if not 1 <= len(words) <= 5 or len(name) > CREDIT_MAX_CHARS:
        return None
    named = [w for w in words if w.lower() not in STOPWORDS]
    if not named or not all(_CREDIT_WORD.fullmatch(w) for w in named):
        return None
    if any(not _CREDIT_WORD.fullmatch(w) and not w.islower() for w in words):
        return None
    tidy = " ".join(words)
    if tidy.isupper() and not (len(words) == 1 and len(tidy) <= ACRONYM_MAX):
        tidy = " ".join(w.lower() if w.lower() in STOPWORDS and i else w.title() for i, w in enumerate(words))
    return tidy
