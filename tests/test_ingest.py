"""scan(): what is read, what metadata is found, and how every bad input becomes a Problem."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag import ingest
from rag.ingest import MAX_LINE_CHARS, Problem, scan

CORPUS = Path(__file__).resolve().parent.parent / "eval" / "corpus"
GOOD = "A good article that sits next to the bad one.\n"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def by_id(result) -> dict:
    return {a.doc_id: a for a in result.articles}


def only_article(path: Path):
    result = scan([path])
    assert result.problems == []
    assert len(result.articles) == 1
    return result.articles[0]


def reasons(result) -> dict[str, str]:
    return {p.path: p.reason for p in result.problems}


def scan_with_good(tmp_path: Path, name: str, content: str | bytes):
    """Write a bad file next to a good one; the good one must still be read."""
    write(tmp_path / "good.txt", GOOD)
    write(tmp_path / name, content)
    result = scan([tmp_path])
    assert [a.doc_id for a in result.articles] == ["good.txt"]
    assert len(result.problems) == 1
    return result.problems[0]


# --- the sample corpus -------------------------------------------------------------------


def test_corpus_metadata_from_text_alone(tmp_path):
    for path in CORPUS.glob("*.txt"):  # without the sidecars: what the text itself says
        (tmp_path / path.name).write_bytes(path.read_bytes())
    articles = by_id(scan([tmp_path]))
    assert sorted(articles) == sorted(p.name for p in CORPUS.glob("*.txt"))
    a000 = articles["000_7e1cbb29f31f5564.txt"]
    assert (a000.date, a000.source) == ("2019-02-20", "AFP")
    assert a000.title.startswith("WASHINGTON (AFP) - The United States")  # the date header is not title
    assert len(a000.title) <= 200
    a001 = articles["001_d3539caef9fae320.txt"]
    assert (a001.date, a001.source) == (None, "Agence France-Presse")  # its upper-case sign-off
    assert articles["003_bec82752a72c5b16.txt"].source == "PTI"
    a004 = articles["004_54675ee963de578f.txt"]
    assert a004.date is None  # "Washington, May 1:" has no year: never guess
    assert a004.source is None


def test_corpus_sidecars_supply_editorial_dates():
    articles = by_id(scan([CORPUS]))
    assert articles["001_d3539caef9fae320.txt"].date == "2019-02-20"
    assert articles["004_54675ee963de578f.txt"].date == "2025-05-01"
    assert articles["002_52908c8bc44237eb.txt"].date is None  # no sidecar: stays unknown


def test_corpus_text_is_kept_exactly():
    for article in scan([CORPUS]).articles:
        assert article.text == (CORPUS / article.doc_id).read_bytes().decode("utf-8")
        assert article.path == str(CORPUS / article.doc_id)
        assert len(article.content_hash) == 64


# --- inputs, doc ids, counting -----------------------------------------------------------


def test_doc_ids_are_relative_to_the_given_folder(tmp_path):
    write(tmp_path / "root" / "a.txt", GOOD)
    write(tmp_path / "root" / "sub" / "deeper" / "b.md", "# B\n\nbody\n")
    write(tmp_path / "elsewhere" / "c.txt", GOOD + "c")
    result = scan([tmp_path / "root", str(tmp_path / "elsewhere" / "c.txt")])
    assert [a.doc_id for a in result.articles] == ["a.txt", "sub/deeper/b.md", "c.txt"]
    assert result.problems == []


def test_files_are_read_in_sorted_order(tmp_path):
    for name in ["b.txt", "a.txt", "c.md", "B.txt"]:
        write(tmp_path / name, f"article {name}\n")
    first = [a.doc_id for a in scan([tmp_path]).articles]
    assert first == ["B.txt", "a.txt", "b.txt", "c.md"]
    assert [a.doc_id for a in scan([tmp_path]).articles] == first


def test_hidden_and_unsupported_are_counted_not_problems(tmp_path):
    write(tmp_path / "a.txt", GOOD)
    write(tmp_path / ".hidden.txt", GOOD)
    write(tmp_path / ".git" / "x.txt", GOOD)  # a hidden folder counts once, its files are not walked
    write(tmp_path / "sub" / ".DS_Store", b"\x00\x01")
    write(tmp_path / "photo.jpg", b"\xff\xd8\xff")
    write(tmp_path / "notes.docx", b"PK\x03\x04")
    write(tmp_path / "README", "no extension")
    result = scan([tmp_path])
    assert [a.doc_id for a in result.articles] == ["a.txt"]
    assert result.problems == []
    assert result.skipped_hidden == 3
    assert result.skipped_unsupported == 3


def test_missing_path_is_a_problem_and_the_rest_is_read(tmp_path):
    write(tmp_path / "a.txt", GOOD)
    missing = tmp_path / "nope"
    result = scan([missing, tmp_path])
    assert [a.doc_id for a in result.articles] == ["a.txt"]
    assert reasons(result) == {str(missing): "no such file or folder; check the path"}


def test_explicit_unsupported_file_is_a_problem(tmp_path):
    docx = write(tmp_path / "x.docx", b"PK\x03\x04")
    result = scan([docx])
    assert result.articles == []
    assert "unsupported file type" in result.problems[0].reason


def test_uppercase_extension_is_supported(tmp_path):
    assert only_article(write(tmp_path / "A.TXT", GOOD)).doc_id == "A.TXT"


def test_duplicate_doc_ids_keep_the_first(tmp_path):
    write(tmp_path / "one" / "a.txt", "first\n")
    write(tmp_path / "two" / "a.txt", "second\n")
    result = scan([tmp_path / "one", tmp_path / "two"])
    assert [a.text for a in result.articles] == ["first\n"]
    [problem] = result.problems
    assert problem.path == str(tmp_path / "two" / "a.txt")
    assert "duplicate doc id 'a.txt'" in problem.reason


def test_same_file_given_twice_is_one_article(tmp_path):
    path = write(tmp_path / "a.txt", GOOD)
    result = scan([path, path])
    assert len(result.articles) == 1
    assert "duplicate doc id" in result.problems[0].reason


def test_problem_prints_as_one_line():
    assert str(Problem("a.txt", "empty")) == "a.txt: empty"


# --- bad files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty or whitespace only"),
        (b" \n\t\r\n  ", "empty or whitespace only"),
        ("caf\xe9 au lait".encode("latin-1"), "not UTF-8 text"),
        (b"text\x00\x01\x02 binary", "binary file"),
        (b"\xff\xfe\x00\xd8", "not valid UTF-16"),
    ],
)
def test_bad_content_is_a_problem(tmp_path, content, reason):
    problem = scan_with_good(tmp_path, "bad.txt", content)
    assert problem.path == str(tmp_path / "bad.txt")
    assert reason in problem.reason


def test_not_utf8_reason_says_what_to_do(tmp_path):
    problem = scan_with_good(tmp_path, "bad.txt", b"\xe9t\xe9")
    assert problem.reason.endswith("convert it to UTF-8")


def test_utf8_bom_is_stripped_and_crlf_kept(tmp_path):
    article = only_article(write(tmp_path / "a.txt", b"\xef\xbb\xbfTitle line\r\nBody\r\n"))
    assert article.text == "Title line\r\nBody\r\n"
    assert article.title == "Title line"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_utf16_with_bom_is_decoded(tmp_path, encoding):
    data = "Dépêche\nPTI".encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    article = only_article(write(tmp_path / "a.txt", data))
    assert article.text == "Dépêche\nPTI"
    assert article.source == "PTI"


def test_file_over_the_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "MAX_FILE_BYTES", 100)
    problem = scan_with_good(tmp_path, "big.txt", "x " * 60)
    assert "limit; split it into articles" in problem.reason


def test_sparse_file_over_20_mb_is_not_read(tmp_path):
    write(tmp_path / "good.txt", GOOD)
    with open(tmp_path / "huge.txt", "wb") as f:
        f.truncate(ingest.MAX_FILE_BYTES + 1)
    result = scan([tmp_path])
    assert [a.doc_id for a in result.articles] == ["good.txt"]
    assert "over the 20 MB limit" in reasons(result)[str(tmp_path / "huge.txt")]


def test_single_huge_line(tmp_path):
    problem = scan_with_good(tmp_path, "line.txt", "a" * (MAX_LINE_CHARS + 1))
    assert "single line" in problem.reason and "is not an article" in problem.reason


def test_long_but_normal_file_is_fine(tmp_path):
    text = ("word " * 100 + "\n") * (MAX_LINE_CHARS // 400)
    assert only_article(write(tmp_path / "a.txt", text)).text == text


def test_unreadable_file(tmp_path, monkeypatch):
    real_open = open

    def fake_open(path, *args, **kwargs):
        if str(path).endswith("locked.txt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(ingest, "open", fake_open, raising=False)
    problem = scan_with_good(tmp_path, "locked.txt", GOOD)
    assert "permission denied" in problem.reason


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file_for_real(tmp_path):
    write(tmp_path / "good.txt", GOOD)
    locked = write(tmp_path / "locked.txt", GOOD)
    locked.chmod(0)
    try:
        result = scan([tmp_path])
    finally:
        locked.chmod(0o644)
    assert [a.doc_id for a in result.articles] == ["good.txt"]
    assert "permission denied" in reasons(result)[str(locked)]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_does_not_hang(tmp_path):
    write(tmp_path / "good.txt", GOOD)
    os.mkfifo(tmp_path / "pipe.txt")
    result = scan([tmp_path])
    assert [a.doc_id for a in result.articles] == ["good.txt"]
    assert "not a regular file" in reasons(result)[str(tmp_path / "pipe.txt")]


def test_file_name_that_is_not_utf8(tmp_path):
    write(tmp_path / "good.txt", GOOD)
    bad = os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt")
    try:
        with open(bad, "wb") as f:
            f.write(b"text")
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    result = scan([tmp_path])
    assert [a.doc_id for a in result.articles] == ["good.txt"]
    assert "not valid UTF-8; rename it" in result.problems[0].reason


# --- symlinks ----------------------------------------------------------------------------


def test_symlink_outside_the_root_is_a_problem(tmp_path):
    write(tmp_path / "outside" / "secret.txt", GOOD)
    root = tmp_path / "root"
    write(root / "good.txt", GOOD)
    (root / "link.txt").symlink_to(tmp_path / "outside" / "secret.txt")
    (root / "linkdir").symlink_to(tmp_path / "outside", target_is_directory=True)
    result = scan([root])
    assert [a.doc_id for a in result.articles] == ["good.txt"]
    assert set(reasons(result)) == {str(root / "link.txt"), str(root / "linkdir")}
    assert all("outside the indexed folder" in r for r in reasons(result).values())


def test_symlink_inside_the_root_is_read(tmp_path):
    write(tmp_path / "real.txt", GOOD)
    (tmp_path / "alias.txt").symlink_to(tmp_path / "real.txt")
    result = scan([tmp_path])
    assert [a.doc_id for a in result.articles] == ["alias.txt", "real.txt"]


def test_symlink_loops_do_not_hang(tmp_path):
    write(tmp_path / "good.txt", GOOD)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to(tmp_path, target_is_directory=True)  # folder loop
    (tmp_path / "a.txt").symlink_to(tmp_path / "b.txt")  # file loop a -> b -> a
    (tmp_path / "b.txt").symlink_to(tmp_path / "a.txt")
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "missing.txt")
    result = scan([tmp_path])
    assert [a.doc_id for a in result.articles] == ["good.txt"]
    assert set(reasons(result)) == {str(tmp_path / n) for n in ["a.txt", "b.txt", "dangling.txt"]}


# --- metadata from text ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, date, source",
    [
        ("WASHINGTON, Feb. 20, 2019 (Reuters) - The US said.", "2019-02-20", "Reuters"),
        ("May 1, 2025 The ministry said.", "2025-05-01", None),
        ("LONDON, 20 February 2019 (AP) - Talks.", "2019-02-20", "AP"),
        ("NEW DELHI, Wednesday, Sept. 4, 2019: Talks.", "2019-09-04", None),
        ("Washington, May 1: Amidst the tensions of 2025.", None, None),
        ("WASHINGTON, Feb. 30, 2019 (Reuters) - Not a real day.", None, "Reuters"),
        ("NEW DELHI (PTI): The government said.", None, "PTI"),
        ("MUMBAI (IANS) The police said.", None, "IANS"),
        ("NEW YORK (CNN Business) — Shares fell.", None, "CNN Business"),
        ("The company (Apple) said on Monday.", None, None),
        ("He told the Associated Press (AP) on Monday that...", None, None),
        ("date 2019-02-20 WASHINGTON (AFP) - Text.", "2019-02-20", "AFP"),
        ("  date 2019-02-29 Not a leap year.", None, None),
        ("The talks began in 2019 and ended on May 1, 2025.", None, None),
    ],
)
def test_date_and_source_from_the_text(tmp_path, text, date, source):
    article = only_article(write(tmp_path / "a.txt", text))
    assert (article.date, article.source) == (date, source)


@pytest.mark.parametrize(
    "last_line, source",
    [
        ("PTI", "PTI"),
        ("AFP", "AFP"),
        ("AGENCE FRANCE-PRESSE", "Agence France-Presse"),
        ("PRESS TRUST OF INDIA", "Press Trust of India"),
        ("XINHUA", "XINHUA"),
        ("(Reuters)", "Reuters"),
        ("— Kyodo News", "Kyodo News"),
        ("Reuters", None),  # a bare capitalised word could be any last line
        ("ADVERTISEMENT", None),  # upper case, but too long for an acronym
        ("Advertisement", None),
        ("IANS", "IANS"),
        ("ANI", "ANI"),
        ("AP", "AP"),
        ("-- PTI", "PTI"),
        ("(AFP)", "AFP"),
        ("Comments are closed.", None),
        ("Reuters reported this first.", None),
    ],
)
def test_source_from_a_sign_off(tmp_path, last_line, source):
    article = only_article(write(tmp_path / "a.txt", f"Headline\n\nBody text.\n{last_line}\n\n"))
    assert article.source == source


def test_title_skips_the_date_header_and_is_trimmed(tmp_path):
    text = " date 2019-02-20 " + "word " * 100 + "\nsecond line"
    article = only_article(write(tmp_path / "a.txt", text))
    assert article.title.startswith("word word")
    assert len(article.title) <= 200
    assert article.title.endswith("…")
    assert article.text == text


def test_title_of_a_header_only_file_falls_back_to_the_doc_id(tmp_path):
    assert only_article(write(tmp_path / "a.txt", "date 2019-02-20")).title == "a.txt"


def test_markdown_front_matter(tmp_path):
    text = '---\ntitle: "Talks resume"\ndate: 2019-02-20\nsource: PTI\nurl: https://x.test/a\n---\n# Other\n'
    article = only_article(write(tmp_path / "a.md", text))
    assert (article.title, article.date, article.source) == ("Talks resume", "2019-02-20", "PTI")
    assert article.url == "https://x.test/a"
    assert article.text == text  # front matter stays: offsets are into the file as written


def test_front_matter_in_txt_with_crlf(tmp_path):
    article = only_article(write(tmp_path / "a.txt", "---\r\ndate: 2019-02-20\r\n---\r\nFirst line\r\n"))
    assert (article.date, article.title) == ("2019-02-20", "First line")


def test_bad_front_matter_date_is_null(tmp_path):
    assert only_article(write(tmp_path / "a.md", "---\ndate: 2019-13-45\n---\nBody\n")).date is None


def test_markdown_heading_is_the_title(tmp_path):
    article = only_article(write(tmp_path / "a.md", "Intro paragraph.\n\n# The real title #\n\nBody\n"))
    assert article.title == "The real title"


def test_txt_first_line_is_the_title(tmp_path):
    article = only_article(write(tmp_path / "a.txt", "\n\n  ## Heading marks go  \nBody\n"))
    assert article.title == "Heading marks go"


# --- JSON and JSONL ----------------------------------------------------------------------


def test_json_object_with_field_aliases(tmp_path):
    record = {
        "headline": "Talks",
        "published_at": "2019-02-20T23:30:00-05:00",
        "publisher": "Dawn",
        "url": "https://x.test",
        "body": "Body text.",
    }
    article = only_article(write(tmp_path / "a.json", json.dumps(record)))
    assert article.doc_id == "a.json"
    assert (article.title, article.date, article.source, article.url) == (
        "Talks",
        "2019-02-20",
        "Dawn",
        "https://x.test",
    )
    assert article.text == "Body text."


def test_json_list_ids_and_fallback_ids(tmp_path):
    records = [
        {"id": "r1", "title": "One", "text": "First."},
        {"title": "Two", "content": "Second."},
        {"id": 7, "text": "Third.\nPTI"},
    ]
    result = scan([write(tmp_path / "sub" / "all.json", json.dumps(records)).parent.parent])
    assert [a.doc_id for a in result.articles] == ["r1", "sub/all.json#1", "7"]
    assert result.articles[2].source == "PTI"  # text extraction still applies to JSON records
    assert result.articles[1].path == str(tmp_path / "sub" / "all.json") + "[1]"


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"title": "No text"}, "record has no text"),
        ({"text": ["a", "list"]}, "not a string"),
        ({"text": 42}, "not a string"),
        ({"text": "   "}, "record text is empty"),
        ({"text": "\ud800 lone"}, "invalid Unicode"),
        ("just a string", "not an object"),
    ],
)
def test_bad_json_records(tmp_path, record, reason):
    path = write(tmp_path / "a.json", json.dumps([{"text": "Good."}, record]))
    result = scan([path])
    assert [a.doc_id for a in result.articles] == ["a.json#0"]
    assert result.problems[0].path == f"{path}[1]"
    assert reason in result.problems[0].reason


def test_json_field_types_are_coerced_or_dropped(tmp_path):
    record = {"id": ["x"], "title": {"a": 1}, "date": 20190220, "source": True, "url": 3, "text": "Body."}
    article = only_article(write(tmp_path / "a.json", json.dumps(record)))
    assert (article.doc_id, article.title, article.date, article.source, article.url) == (
        "a.json",
        "Body.",
        None,
        None,
        "3",
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2019-02-20", "2019-02-20"),
        ("2019-02-20T10:00:00Z", "2019-02-20"),
        ("2019-02-20 10:00", "2019-02-20"),
        ("2019-02-30", None),
        ("yesterday", None),
        ("", None),
    ],
)
def test_json_dates(tmp_path, value, expected):
    article = only_article(write(tmp_path / "a.json", json.dumps({"date": value, "text": "Body."})))
    assert article.date == expected


def test_bad_json_date_falls_back_to_the_text(tmp_path):
    record = {"date": "soon", "text": "WASHINGTON, Feb. 20, 2019 (Reuters) - Body."}
    assert only_article(write(tmp_path / "a.json", json.dumps(record))).date == "2019-02-20"


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{not json", "not valid JSON"),
        ('"a string"', "expected an article object or a list"),
        ("[]", "empty JSON list"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_bad_json_files(tmp_path, content, reason):
    problem = scan_with_good(tmp_path, "bad.json", content)
    assert reason in problem.reason


def test_jsonl_bad_lines_do_not_lose_good_ones(tmp_path):
    lines = [
        json.dumps({"id": "a", "text": "First."}),
        "{broken",
        "",
        json.dumps({"text": "Fourth, no id."}),
        json.dumps({"id": "x"}),
        "[1, 2]",
    ]
    path = write(tmp_path / "feed.jsonl", "\n".join(lines) + "\n")
    result = scan([tmp_path])
    assert [a.doc_id for a in result.articles] == ["a", "feed.jsonl#4"]
    assert [a.path for a in result.articles] == [f"{path}:1", f"{path}:4"]
    got = reasons(result)
    assert set(got) == {f"{path}:2", f"{path}:5", f"{path}:6"}
    assert "not valid JSON" in got[f"{path}:2"]
    assert "no text" in got[f"{path}:5"]
    assert "not an object" in got[f"{path}:6"]


def test_jsonl_duplicate_ids(tmp_path):
    lines = [json.dumps({"id": "same", "text": t}) for t in ["one", "two"]]
    path = write(tmp_path / "f.jsonl", "\n".join(lines))
    result = scan([path])
    assert [a.text for a in result.articles] == ["one"]
    assert result.problems[0].path == f"{path}:2"
    assert "duplicate doc id 'same'" in result.problems[0].reason


# --- sidecars ----------------------------------------------------------------------------


def test_sidecar_overrides_extracted_metadata(tmp_path):
    write(tmp_path / "002_x.txt", "WASHINGTON (AFP) - Body.\n")
    sidecar = {"title": "Better title", "date": "2025-04-30", "source": "The Hindu", "url": "https://x.test"}
    write(tmp_path / "002_x.txt.meta.json", json.dumps(sidecar))
    result = scan([tmp_path])
    [article] = result.articles
    assert (article.title, article.date, article.source, article.url) == tuple(sidecar.values())
    assert result.problems == [] and result.skipped_unsupported == 0


def test_sidecar_null_clears_a_field(tmp_path):
    write(tmp_path / "a.txt", "date 2019-02-20 Body (AFP) - x")
    write(tmp_path / "a.txt.meta.json", '{"date": null}')
    assert scan([tmp_path]).articles[0].date is None


def test_sidecar_change_changes_the_content_hash(tmp_path):
    write(tmp_path / "a.txt", GOOD)
    before = scan([tmp_path]).articles[0].content_hash
    assert scan([tmp_path]).articles[0].content_hash == before  # stable
    write(tmp_path / "a.txt.meta.json", '{"source": "PTI"}')
    assert scan([tmp_path]).articles[0].content_hash != before


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{bad json", "not valid JSON"),
        ('{"date": "2019-02-30"}', "not a real YYYY-MM-DD date"),
        ('{"title": 5}', "'title' must be a non-empty string"),
        ('{"author": "me"}', "unknown field(s) author"),
        ("[1]", "expected an object"),
        (b"\xff\xfe\x00", "sidecar ignored"),
    ],
)
def test_bad_sidecar_keeps_extracted_metadata(tmp_path, content, reason):
    write(tmp_path / "a.txt", "date 2019-02-20 Title here\nPTI\n")
    write(tmp_path / "a.txt.meta.json", content)
    result = scan([tmp_path])
    [article] = result.articles
    assert (article.title, article.date, article.source) == ("Title here", "2019-02-20", "PTI")
    [problem] = result.problems
    assert problem.path == str(tmp_path / "a.txt.meta.json")
    assert reason in problem.reason and "sidecar ignored" in problem.reason


def test_sidecar_without_article_is_ignored_silently(tmp_path):
    write(tmp_path / "gone.txt.meta.json", '{"title": "x"}')
    write(tmp_path / "report.meta.json", json.dumps({"text": "An article named like a sidecar."}))
    result = scan([tmp_path])
    assert [a.doc_id for a in result.articles] == ["report.meta.json"]  # "report" is no article file
    assert result.problems == [] and result.skipped_unsupported == 0


def test_sidecar_given_directly_is_a_problem(tmp_path):
    write(tmp_path / "a.txt", GOOD)
    sidecar = write(tmp_path / "a.txt.meta.json", "{}")
    assert "sidecar metadata for a.txt" in scan([sidecar]).problems[0].reason


def test_sidecar_applies_to_every_record_of_a_json_file(tmp_path):
    write(tmp_path / "a.jsonl", '{"text": "one"}\n{"text": "two"}\n')
    write(tmp_path / "a.jsonl.meta.json", '{"source": "Reuters"}')
    assert [a.source for a in scan([tmp_path]).articles] == ["Reuters", "Reuters"]


# --- properties --------------------------------------------------------------------------


def decoded(data: bytes) -> str:
    """What the article text must be: the file decoded, with a UTF-8 BOM removed."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")


file_bytes = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.text(max_size=100).map(lambda t: b"\xef\xbb\xbf" + t.encode("utf-8", "surrogatepass")),
    st.text(max_size=100).map(lambda t: t.encode("utf-16", "surrogatepass")),
    st.builds(
        lambda head, text, tail: (head + text + tail).encode("utf-8", "surrogatepass"),
        st.sampled_from(
            ["", " date 2019-02-20 ", "---\ndate: 2019-02-30\n---\n", "LONDON, May 1, 2025 (AFP) - "]
        ),
        st.text(max_size=100),
        st.sampled_from(["", "\nPTI", "\n\nAGENCE FRANCE-PRESSE\n"]),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=file_bytes, ext=st.sampled_from([".txt", ".md", ".json", ".jsonl"]))
def test_scan_never_raises_on_arbitrary_bytes(data, ext):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"a{ext}"
        path.write_bytes(data)
        (Path(tmp) / f"a{ext}.meta.json").write_bytes(data)  # the same bytes as a sidecar
        result = scan([tmp])
    for article in result.articles:
        assert isinstance(article.text, str) and article.text.strip()
        assert isinstance(article.title, str) and 0 < len(article.title) <= 200
        if ext in (".txt", ".md"):
            assert article.text == decoded(data)
    assert result.articles or result.problems


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
records = st.fixed_dictionaries(
    {},
    optional={
        k: json_values | st.text(max_size=40)
        for k in [
            "id",
            "title",
            "headline",
            "date",
            "published_at",
            "source",
            "url",
            "text",
            "body",
            "content",
        ]
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(json_values, records, st.lists(records, max_size=4)))
def test_scan_never_raises_on_arbitrary_json(value):
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "a.json").write_text(json.dumps(value), encoding="utf-8")
        lines = value if isinstance(value, list) else [value]
        Path(tmp, "b.jsonl").write_text("\n".join(json.dumps(v) for v in lines), encoding="utf-8")
        result = scan([tmp])
    for article in result.articles:
        assert isinstance(article.doc_id, str) and article.doc_id
        assert article.date is None or len(article.date) == 10
        for name in ("title", "source", "url"):
            assert getattr(article, name) is None or isinstance(getattr(article, name), str)
