"""rag.formats.web: saved news pages through trafilatura, web archives through warcio.

Every page and archive is written by the test under tmp_path; nothing touches the network.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from rag.formats import Entry, FormatError, Skipped, warc, web
from rag.formats.fragments import html_fragment_text
from rag.formats.warc import read_warc
from rag.formats.web import read_html

# ---------------------------------------------------------------- pages

NEWS_BODY = [
    "The harbour bridge reopened to traffic on Sunday morning after two years of structural repairs "
    "that cost the city 48 million euros.",
    "Engineers replaced all 212 steel cables and resurfaced the deck, according to the city transport "
    "office, which oversaw the project.",
    "Commuters had used a ferry service during the closure, adding roughly 25 minutes to the average "
    "journey across the water.",
    "The mayor said the bridge would carry about 40,000 vehicles a day and that cyclists would get a "
    "protected lane for the first time.",
]
NEWS_BOILERPLATE = [
    "World news section", "Sport and leisure",  # nav
    "We use cookies to improve your experience", "Accept all cookies",  # cookie banner
    "Related stories", "Ferry operator reports record passenger numbers",  # related stories
    "City council approves new tram line budget",
    "Subscribe now to read unlimited articles", "Already a subscriber? Log in",  # subscription prompt
    "All rights reserved", "Privacy policy",  # footer
    "Great reporting, I drive over this bridge every day",  # reader comment
]

NEWS_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Harbour bridge reopens after repairs | The Daily Ledger</title>
<link rel="canonical" href="https://www.dailyledger.example/news/harbour-bridge-reopens">
<script type="application/ld+json">
{"@context": "https://schema.org", "@type": "NewsArticle",
 "headline": "Harbour bridge reopens after two years of repairs",
 "datePublished": "2024-03-03T08:15:00+00:00", "dateModified": "2024-03-05T10:00:00+00:00",
 "author": {"@type": "Person", "name": "Maria Lindqvist"},
 "publisher": {"@type": "Organization", "name": "The Daily Ledger"}}
</script>
<style>body { font-family: serif; }</style>
</head><body>
<header class="site-header"><a class="logo" href="/">The Daily Ledger</a>
<nav class="main-nav"><ul><li><a href="/">Home</a></li><li><a href="/world">World news section</a></li>
<li><a href="/sport">Sport and leisure</a></li></ul></nav></header>
<div id="cookie-banner" class="cookie-consent"><p>We use cookies to improve your experience on our site.
Accept all cookies?</p><button>Accept</button></div>
<main><article>
<h1>Harbour bridge reopens after two years of repairs</h1>
<div class="byline">By <span class="author">Maria Lindqvist</span>, transport reporter</div>
<p>{0}</p>
<p>{1}</p>
<div class="subscribe-box"><p>Subscribe now to read unlimited articles for just 1 euro a week.</p>
<p>Already a subscriber? Log in</p></div>
<p>{2}</p>
<p>{3}</p>
</article>
<section class="comments"><h3>Comments</h3><div class="comment"><p>Great reporting, I drive over this bridge
every day and the ferry was a nightmare.</p></div></section>
<aside class="related"><h2>Related stories</h2><ul>
<li><a href="/a">Ferry operator reports record passenger numbers</a></li>
<li><a href="/b">City council approves new tram line budget</a></li></ul></aside>
</main>
<footer><p>Copyright 2024 The Daily Ledger Media Group. All rights reserved.</p>
<a href="/privacy">Privacy policy</a></footer>
<script>window.dataLayer = [];</script>
</body></html>
""".replace("{0}", NEWS_BODY[0]).replace("{1}", NEWS_BODY[1]).replace("{2}", NEWS_BODY[2]).replace("{3}", NEWS_BODY[3])

BLOG_BODY = [
    "Last spring I stopped digging the vegetable beds and started covering them with a thick layer of "
    "compost and leaves instead.",
    "The soil stayed moist through the August heat, and the number of earthworms I counted in a square "
    "metre nearly doubled.",
    "Tomatoes came in two weeks later than usual, but the squash and beans produced more than in any "
    "previous season.",
]
BLOG_BOILERPLATE = ["About me", "Popular posts", "My favourite heirloom seeds", "Thanks for sharing your experience",
                    "Powered by a static site generator", "Leave a reply"]

BLOG_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8">
<title>Why I switched to a slow garden - Greenfinger Notes</title>
<meta property="og:site_name" content="Greenfinger Notes">
<meta property="og:title" content="Why I switched to a slow garden">
<meta property="og:url" content="https://greenfinger.example/posts/slow-garden">
<meta property="og:type" content="article">
<meta property="article:published_time" content="2023-09-14T19:30:00Z">
<meta name="author" content="Tomas Berg">
</head><body>
<div class="site-header"><a href="/">Greenfinger Notes</a>
<div class="menu"><a href="/about">About me</a> <a href="/archive">Archive</a></div></div>
<div class="post">
<h1 class="post-title">Why I switched to a slow garden</h1>
<div class="post-content">
<p>BODY0</p>
<p>BODY1</p>
<p>BODY2</p>
</div></div>
<div id="comments" class="comments-area"><h3 class="comments-title">3 Comments</h3>
<ol class="comment-list"><li class="comment"><p>Thanks for sharing your experience, I will try it this autumn!</p>
</li></ol>
<div id="respond"><h3>Leave a reply</h3><form><textarea></textarea></form></div></div>
<div class="sidebar"><h3>Popular posts</h3><a href="/x">My favourite heirloom seeds this year</a></div>
<div class="footer">Powered by a static site generator.</div>
</body></html>
""".replace("BODY0", BLOG_BODY[0]).replace("BODY1", BLOG_BODY[1]).replace("BODY2", BLOG_BODY[2])

BYLINE_BODY = [
    "The central library will stay open until 10 pm on weekdays from next month, the culture committee "
    "decided on Tuesday.",
    "Visitor numbers rose by 18 percent last year, and students had asked for more evening study space "
    "during exam periods.",
    "The longer hours will cost about 300,000 crowns a year, paid from the committee's existing budget.",
    "A similar trial, which ran from 12 May 2019 until the summer, was stopped because of staff shortages.",
]
BYLINE_BOILERPLATE = ["Events calendar", "Contact the editors", "Newsletter sign-up", "Main Street 1"]

BYLINE_PAGE = """<html><head><title>Library extends opening hours</title>
<link rel="canonical" href="https://www.towngazette.example/news/library-hours"></head><body>
<div class="menu"><a href="/">Start</a> | <a href="/events">Events calendar</a> |
<a href="/contact">Contact the editors</a></div>
<div id="content">
<h1>Library extends opening hours</h1>
<p class="meta">Published March 3, 2024 by <a rel="author" href="/staff/anna">Anna Svensson</a></p>
<p>BODY0</p>
<p>BODY1</p>
<p>BODY2</p>
<p>BODY3</p>
</div>
<div class="footer">Town Gazette, Main Street 1. Newsletter sign-up: enter your email here.</div>
</body></html>
""".replace("BODY0", BYLINE_BODY[0]).replace("BODY1", BYLINE_BODY[1]).replace("BODY2", BYLINE_BODY[2]).replace(
    "BODY3", BYLINE_BODY[3])


def page_file(tmp_path, html: str | bytes, name: str = "page.html"):
    """Write a page the way a user saved it and read it back as the ingest would."""
    path = tmp_path / name
    path.write_bytes(html.encode("utf-8") if isinstance(html, str) else html)
    return path.read_bytes()


def one_entry(data: bytes) -> Entry:
    entries, skipped = read_html(data)
    assert skipped == [] and len(entries) == 1
    return entries[0]


def assert_article(entry: Entry, body: list[str], boilerplate: list[str]) -> None:
    for sentence in body:
        assert sentence in entry.text
    for phrase in boilerplate:
        assert phrase not in entry.text, phrase
    assert entry.key is None
    assert "<" not in entry.text


def assert_paragraphs(entry: Entry, body: list[str]) -> None:
    """Each body paragraph stands alone between blank lines."""
    paragraphs = entry.text.split("\n\n")
    for sentence in body:
        assert sentence in paragraphs


def test_news_cms_article(tmp_path):
    entry = one_entry(page_file(tmp_path, NEWS_PAGE))
    assert_article(entry, NEWS_BODY, NEWS_BOILERPLATE)
    assert_paragraphs(entry, NEWS_BODY)
    assert entry.meta == {
        "title": "Harbour bridge reopens after two years of repairs",
        "date": "2024-03-03",  # datePublished, not dateModified
        "author": "Maria Lindqvist",
        "source": "The Daily Ledger",
        "url": "https://www.dailyledger.example/news/harbour-bridge-reopens",
    }


def test_blog_post(tmp_path):
    entry = one_entry(page_file(tmp_path, BLOG_PAGE))
    assert_article(entry, BLOG_BODY, BLOG_BOILERPLATE)
    assert_paragraphs(entry, BLOG_BODY)
    assert entry.meta == {
        "title": "Why I switched to a slow garden",
        "date": "2023-09-14",
        "author": "Tomas Berg",
        "source": "Greenfinger Notes",
        "url": "https://greenfinger.example/posts/slow-garden",
    }


def test_date_only_in_a_visible_byline(tmp_path):
    entry = one_entry(page_file(tmp_path, BYLINE_PAGE))
    assert_article(entry, BYLINE_BODY, BYLINE_BOILERPLATE)
    assert_paragraphs(entry, BYLINE_BODY)
    assert entry.meta == {
        "title": "Library extends opening hours",
        "date": "2024-03-03",  # the byline, not "12 May 2019" further down
        "author": "Anna Svensson",
        "source": "towngazette.example",  # no site name stated: the host without www.
        "url": "https://www.towngazette.example/news/library-hours",
    }


def page_with(byline: str, body: list[str] = BYLINE_BODY, footer: str = "") -> str:
    paragraphs = "".join(f"<p>{p}</p>" for p in body)
    return (f"<html><head><title>Library extends opening hours</title></head><body>"
            f"<div class='menu'><a href='/'>Start</a></div><div id='content'>"
            f"<h1>Library extends opening hours</h1>{byline}{paragraphs}</div>{footer}</body></html>")


@pytest.mark.parametrize(("byline", "date"), [
    ("<p>Published March 3, 2024</p>", "2024-03-03"),
    ("<div>Published: 03.03.2024 by Anna</div>", "2024-03-03"),
    ("<span>March 3, 2024</span>", "2024-03-03"),
    ("<p>Updated March 9, 2024. Published March 3, 2024</p>", "2024-03-03"),  # the original date
    ("<p>By Anna Svensson | <time datetime='2024-03-03T09:00'>3 March</time></p>", "2024-03-03"),
    ("", None),  # a date in the body only ("12 May 2019") is not the publication date
])
def test_byline_dates(tmp_path, byline, date):
    entry = one_entry(page_file(tmp_path, page_with(byline)))
    assert entry.meta["date"] == date


def test_body_dates_and_copyright_years_are_not_publication_dates(tmp_path):
    body = [BYLINE_BODY[0], "The report, dated 2019-05-12, said visitor numbers were falling.",
            "Flights resumed in the evening."]
    footer = "<footer>Copyright 2024 Town Gazette. All rights reserved.</footer>"
    entry = one_entry(page_file(tmp_path, page_with("", body=body, footer=footer)))
    assert entry.meta["date"] is None


def test_legacy_charset_is_detected(tmp_path):
    html = ("<html><head><meta charset='windows-1252'><title>Caf\u00e9 culture returns</title></head><body>"
            "<article><h1>Caf\u00e9 culture returns</h1><p>The na\u00efve hope that every caf\u00e9 in the old "
            "town would reopen by spring has come true, the owners\u2019 association said on Friday.</p>"
            "<p>Forty-two caf\u00e9s now serve customers again, two more than before the crisis began.</p>"
            "</article></body></html>")
    entry = one_entry(page_file(tmp_path, html.encode("windows-1252")))
    assert "The na\u00efve hope that every caf\u00e9 in the old town" in entry.text
    assert "owners\u2019 association" in entry.text


def test_malformed_html_still_extracts(tmp_path):
    html = ("<html><head><title>Storm closes airport</title><body><div class=story></span><h1>Storm closes airport"
            "<p>The city airport closed for six hours on Monday as gusts reached 120 km/h, the operator said."
            "<p>Flights resumed in the evening after crews cleared debris from the <b><i>main runway</b></i>"
            "<p>Airlines expect delays to last until Wednesday <div><span>as crews rebook passengers</td>"
            "<ul><li>stranded travellers get hotel vouchers<li>refunds open next week")
    entry = one_entry(page_file(tmp_path, html))
    assert "The city airport closed for six hours on Monday as gusts reached 120 km/h" in entry.text
    assert "Flights resumed in the evening" in entry.text
    assert entry.text.strip()


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(random.Random(1).randrange(256) for _ in range(4000)),
    bytes(range(1, 9)) * 2000,  # no NUL, but control characters throughout once decoded
])
def test_binary_data_named_html(tmp_path, data):
    with pytest.raises(FormatError, match="^binary data, not a web page; "):
        read_html(page_file(tmp_path, data, "image.html"))


def test_subscriber_only_article_body_is_kept(tmp_path):
    """The subscription-prompt pruning spares a container that holds the article itself."""
    html = NEWS_PAGE.replace("<main><article>", "<main><article class='subscriber-only premium-content'>")
    entry = one_entry(page_file(tmp_path, html))
    assert_article(entry, NEWS_BODY, NEWS_BOILERPLATE)


@pytest.mark.parametrize("html", [
    "",
    "   \n",
    "<html><body></body></html>",
    "<html><head><title>Front</title></head><body><header><nav><ul><li><a href=/>Home</a></li>"
    "<li><a href=/world>World news</a></li></ul></nav></header>"
    "<footer>Copyright 2024 Example Media. All rights reserved.</footer></body></html>",
    "<html><body><nav><a href=/>Home</a> <a href=/x>World</a></nav><script>var x = 1;</script></body></html>",
])
def test_page_without_article(tmp_path, html):
    with pytest.raises(FormatError) as err:
        read_html(page_file(tmp_path, html))
    assert str(err.value) == "no article text found in the page (a front page or an index?); skipped"


def test_a_library_failure_becomes_a_format_error(tmp_path, monkeypatch):
    import trafilatura

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(trafilatura, "bare_extraction", broken)
    with pytest.raises(FormatError) as err:
        read_html(page_file(tmp_path, NEWS_PAGE))
    assert "RuntimeError: boom second line" in str(err.value) and "\n" not in str(err.value)


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=3000))
def test_fuzz_bytes_raise_only_format_error(data):
    try:
        entries, skipped = read_html(data)
    except FormatError as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert len(entries) == 1 and entries[0].text.strip() and skipped == []


@FUZZ
@given(st.text(max_size=2000), st.sampled_from(["", "<html><body><article><p>", "<p>", "<div><h1>T</h1><p>"]))
def test_fuzz_text_raise_only_format_error(text, prefix):
    try:
        entries, _ = read_html((prefix + text).encode("utf-8", "surrogatepass"))
    except FormatError:
        return
    assert entries[0].text.strip()
    assert entries[0].meta["date"] is None or len(entries[0].meta["date"]) == 10


# ---------------------------------------------------------------- HTML fragments


def test_fragment_text():
    html = ("<p>First &amp; foremost, the <b>council</b> voted.</p><script>alert('x')</script>"
            "<style>p {color: red}</style><!-- a comment --><div>Second<br>line two</div>"
            "<ul><li>one</li><li>two</li></ul>Loose tail text")
    assert html_fragment_text(html) == (
        "First & foremost, the council voted.\n\nSecond\nline two\n\none\n\ntwo\n\nLoose tail text")


@pytest.mark.parametrize(("html", "text"), [
    ("", ""),
    ("   ", ""),
    ("<script>only()</script>", ""),
    ("plain &eacute;t&eacute; text", "plain \u00e9t\u00e9 text"),
    ("Para one &amp; more.\n\nPara two.", "Para one & more.\n\nPara two."),
    ("<?xml version='1.0' encoding='utf-8'?><p>declared</p>", "declared"),
    ("<pre>a  b\nc</pre>", "a b\nc"),
    ("<table><tr><td>Item</td><td>800</td></tr><tr><td>Total</td><td>900</td></tr></table>", "Item 800\nTotal 900"),
    ("x\x00y\x0bz \ud800", "xyz"),
])
def test_fragment_text_edges(html, text):
    assert html_fragment_text(html) == text


@FUZZ
@given(st.text(max_size=500))
def test_fuzz_fragment_text(html):
    out = html_fragment_text(html)
    assert isinstance(out, str)
    assert "\n\n\n" not in out
    assert out == out.strip()


def test_fragment_text_deeply_nested():
    assert html_fragment_text("<div>" * 200 + "deep" + "</div>" * 200) == "deep"
    assert isinstance(html_fragment_text("<div><b>" * 5000 + "deep"), str)  # past libxml2's depth limit: no crash


# ---------------------------------------------------------------- web archives

PAGE_ONE = "https://www.dailyledger.example/news/harbour-bridge-reopens"
PAGE_TWO = "https://towngazette.example/news/library-hours"
NO_DATE_PAGE = page_with("", body=BYLINE_BODY[:3])


def html_response(writer, uri, html, date, status="200 OK", content_type="text/html; charset=utf-8"):
    body = html.encode("utf-8")
    headers = StatusAndHeaders(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))],
                               protocol="HTTP/1.1")
    return writer.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=headers,
                                     warc_headers_dict={"WARC-Date": date})


def standard_records(writer) -> list:
    """warcinfo, request, page one, an image, page two: two entries, three counted records."""
    request = writer.create_warc_record(
        PAGE_ONE, "request", payload=io.BytesIO(b""),
        http_headers=StatusAndHeaders("GET /news/harbour-bridge-reopens HTTP/1.1",
                                      [("Host", "www.dailyledger.example")], is_http_request=True),
        warc_headers_dict={"WARC-Date": "2024-05-01T10:00:00Z"})
    image = writer.create_warc_record(
        "https://www.dailyledger.example/logo.png", "response", payload=io.BytesIO(b"\x89PNG\r\n\x1a\n" + bytes(300)),
        http_headers=StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.1"),
        warc_headers_dict={"WARC-Date": "2024-05-01T10:00:01Z"})
    return [
        writer.create_warcinfo_record("crawl.warc", {"software": "test", "format": "WARC File Format 1.0"}),
        request,
        html_response(writer, PAGE_ONE, NEWS_PAGE, "2024-05-01T10:00:00Z"),
        image,
        html_response(writer, PAGE_TWO, NO_DATE_PAGE, "2024-05-02T23:59:59Z"),
    ]


def write_warc(path, records_of, compress: bool) -> list[int]:
    """Write the records; the file offset after each one is returned (to cut the file between or inside)."""
    offsets = []
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=compress)
        for record in records_of(writer):
            writer.write_record(record)
            offsets.append(f.tell())
    return offsets


@pytest.mark.parametrize("name", ["crawl.warc.gz", "crawl.warc"])
def test_warc_pages_and_counted_records(tmp_path, name):
    path = tmp_path / name
    write_warc(path, standard_records, compress=name.endswith(".gz"))
    entries, skipped = read_warc(str(path))
    assert [e.key for e in entries] == [PAGE_ONE, PAGE_TWO]
    one, two = entries
    assert one.meta["url"] == PAGE_ONE and two.meta["url"] == PAGE_TWO
    assert one.meta["date"] == "2024-03-03"  # the page's own date
    assert two.meta["date"] == "2024-05-02"  # no date on the page: the capture's
    assert one.meta["title"] == "Harbour bridge reopens after two years of repairs"
    assert two.meta["source"] == "towngazette.example"  # the captured host
    for sentence in NEWS_BODY:
        assert sentence in one.text
    for phrase in NEWS_BOILERPLATE:
        assert phrase not in one.text
    assert all(s.counted for s in skipped) and len(skipped) == 3
    assert sorted(s.reason for s in skipped) == ["not a web page (image/png)", "request record", "warcinfo record"]


def test_whole_file_gzip_warc(tmp_path):
    """One gzip member for the whole archive (not per record) reads the same."""
    plain = tmp_path / "crawl.warc"
    write_warc(plain, standard_records, compress=False)
    packed = tmp_path / "crawl.warc.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    entries, skipped = read_warc(str(packed))
    assert [e.key for e in entries] == [PAGE_ONE, PAGE_TWO] and len(skipped) == 3


@pytest.mark.parametrize("newer_first", [False, True])
def test_same_uri_captured_twice_keeps_the_latest(tmp_path, newer_first):
    old = page_with("<p>Published March 3, 2024</p>", body=BYLINE_BODY[:2])
    new = page_with("<p>Published March 3, 2024</p>", body=BYLINE_BODY[:2] + ["A correction was added later."])

    def records(writer):
        captures = [html_response(writer, PAGE_TWO, old, "2024-03-03T12:00:00Z"),
                    html_response(writer, PAGE_TWO, new, "2024-03-10T12:00:00Z")]
        return captures[::-1] if newer_first else captures

    path = tmp_path / "twice.warc.gz"
    write_warc(path, records, compress=True)
    entries, skipped = read_warc(str(path))
    assert len(entries) == 1 and entries[0].key == PAGE_TWO
    assert "A correction was added later." in entries[0].text
    assert len(skipped) == 1 and skipped[0].counted and skipped[0].key == PAGE_TWO


def test_warc_page_without_article_and_error_statuses(tmp_path):
    nav_only = "<html><body><nav><a href=/>Home</a> <a href=/x>World</a></nav></body></html>"

    def records(writer):
        return [html_response(writer, "https://example.org/", nav_only, "2024-01-01T00:00:00Z"),
                html_response(writer, "https://example.org/gone", NEWS_PAGE, "2024-01-01T00:00:00Z",
                              status="404 Not Found"),
                html_response(writer, "https://example.org/a", BYLINE_PAGE, "2024-01-01T00:00:00Z")]

    path = tmp_path / "mixed.warc.gz"
    write_warc(path, records, compress=True)
    entries, skipped = read_warc(str(path))
    assert [e.key for e in entries] == ["https://example.org/a"]
    lines = [s for s in skipped if not s.counted]
    assert lines == [Skipped(key="https://example.org/", reason=web.NO_ARTICLE)]
    assert [s.reason for s in skipped if s.counted] == ["HTTP status 404, not a page capture"]


@pytest.mark.parametrize("compress", [True, False])
def test_truncated_warc_keeps_the_records_before(tmp_path, compress):
    full = tmp_path / ("full.warc.gz" if compress else "full.warc")
    offsets = write_warc(full, standard_records, compress=compress)
    cut = (offsets[3] + offsets[4]) // 2  # inside the last record, page two
    path = tmp_path / ("cut.warc.gz" if compress else "cut.warc")
    path.write_bytes(full.read_bytes()[:cut])
    entries, skipped = read_warc(str(path))
    assert [e.key for e in entries] == [PAGE_ONE]
    damage = [s for s in skipped if not s.counted]
    assert len(damage) == 1 and damage[0].key == "record 5"
    assert "truncated" in damage[0].reason
    assert len([s for s in skipped if s.counted]) == 3


def test_truncated_inside_the_first_record_is_a_format_error(tmp_path):
    full = tmp_path / "full.warc.gz"
    offsets = write_warc(full, standard_records, compress=True)
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(full.read_bytes()[: offsets[0] // 2])
    with pytest.raises(FormatError, match=r"^the archive is truncated inside its first record \(the compressed data"):
        read_warc(str(path))


def zeros_gzip(path, header: bytes, total: int) -> None:
    """`header` then `total` zero bytes, gzipped cheaply: one compressed block, repeated as members."""
    block = gzip.compress(bytes(64 * 2**20), compresslevel=1)
    with open(path, "wb") as f:
        f.write(gzip.compress(header))
        for _ in range(total // (64 * 2**20)):
            f.write(block)


def test_gzip_bomb_without_warc_header_stops_at_once(tmp_path):
    path = tmp_path / "bomb.warc.gz"
    zeros_gzip(path, b"", 8 * 2**30)  # 8 GiB of zeros in about 8 MB
    start = time.monotonic()
    with pytest.raises(FormatError, match="^not a WARC archive"):
        read_warc(str(path))
    assert time.monotonic() - start < 2


def test_gzip_bomb_behind_a_warc_header_stops_at_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(warc, "MAX_WARC_EXPANDED", 256 * 2**20)
    header = (b"WARC/1.0\r\nWARC-Type: resource\r\nWARC-Record-ID: <urn:uuid:1>\r\n"
              b"WARC-Target-URI: https://example.org/big\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
              b"Content-Type: application/octet-stream\r\nContent-Length: 8589934592\r\n\r\n")
    path = tmp_path / "bomb.warc.gz"
    zeros_gzip(path, header, 8 * 2**30)
    start = time.monotonic()
    with pytest.raises(FormatError) as err:
        read_warc(str(path))
    assert time.monotonic() - start < 5
    assert "expands to more than 256 MiB (a decompression bomb?)" in str(err.value)


def test_expansion_cap_after_some_records_keeps_them(tmp_path, monkeypatch):
    monkeypatch.setattr(warc, "MAX_WARC_EXPANDED", 8 * 2**20)
    path = tmp_path / "grows.warc.gz"
    write_warc(path, standard_records, compress=True)
    with open(path, "ab") as f:
        big = (b"WARC/1.0\r\nWARC-Type: resource\r\nWARC-Target-URI: https://example.org/big\r\n"
               b"Content-Length: 67108864\r\n\r\n")
        f.write(gzip.compress(big + bytes(64 * 2**20), compresslevel=1))
    entries, skipped = read_warc(str(path))
    assert [e.key for e in entries] == [PAGE_ONE, PAGE_TWO]
    damage = [s for s in skipped if not s.counted]
    assert [s.key for s in damage] == ["record 6"]
    assert damage[0].reason.startswith("the archive is read up to record 6 only (it expands to more than 8 MiB")


def test_page_over_the_record_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(warc, "MAX_RECORD_BYTES", 2000)
    path = tmp_path / "big.warc"
    write_warc(path, standard_records, compress=False)
    entries, skipped = read_warc(str(path))
    assert [e.key for e in entries] == [PAGE_TWO]  # page one is over 2000 bytes
    lines = [s for s in skipped if not s.counted]
    assert lines == [Skipped(key=PAGE_ONE, reason="page over the 2000 bytes limit; skipped")]


def test_content_encoded_payload_is_decoded(tmp_path):
    def records(writer):
        body = gzip.compress(BYLINE_PAGE.encode("utf-8"))
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), ("Content-Encoding", "gzip"),
                                              ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
        return [writer.create_warc_record(PAGE_TWO, "response", payload=io.BytesIO(body), http_headers=headers,
                                          warc_headers_dict={"WARC-Date": "2024-05-02T08:00:00Z"})]

    path = tmp_path / "encoded.warc.gz"
    write_warc(path, records, compress=True)
    entries, skipped = read_warc(str(path))
    assert skipped == [] and len(entries) == 1
    assert BYLINE_BODY[0] in entries[0].text and entries[0].meta["date"] == "2024-03-03"


def test_header_flood_stops(tmp_path):
    """A record header of millions of short lines would take hours in warcio; it stops at the cap."""
    flood = b"WARC/1.0\r\nWARC-Type: resource\r\n" + b"X-A: b\r\n" * (4 * 2**20)
    path = tmp_path / "flood.warc.gz"
    path.write_bytes(gzip.compress(flood, compresslevel=1))
    start = time.monotonic()
    with pytest.raises(FormatError, match="headers run over"):
        read_warc(str(path))
    assert time.monotonic() - start < 5


def test_blank_line_flood_after_a_record_is_damage(tmp_path):
    path = tmp_path / "blank.warc.gz"
    write_warc(path, standard_records, compress=True)
    with open(path, "ab") as f:
        f.write(gzip.compress(b"\r\n" * (2 * 2**20)))
    entries, skipped = read_warc(str(path))
    assert [e.key for e in entries] == [PAGE_ONE, PAGE_TWO]
    assert [s.key for s in skipped if not s.counted] == ["record 6"]  # five read, the flood after


@pytest.mark.parametrize(("name", "content"), [
    ("random.warc", bytes(random.Random(7).randrange(256) for _ in range(20000))),
    ("random.warc.gz", b"\x1f\x8b" + bytes(random.Random(8).randrange(256) for _ in range(20000))),
    ("notes.warc", b"These are my notes about the crawl.\nNothing else.\n"),
    ("empty.warc", b""),
    ("text.warc.gz", gzip.compress(b"hello, this is not an archive\n")),
])
def test_not_a_warc(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FormatError, match="^not a WARC archive"):
        read_warc(str(path))


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        read_warc(str(tmp_path / "absent.warc"))


@pytest.fixture(scope="module")
def small_warc(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("warc") / "small.warc.gz"
    write_warc(path, lambda w: standard_records(w)[:3], compress=True)
    return path.read_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_damaged_warc_raises_only_format_error(tmp_path, small_warc, data):
    blob = bytearray(small_warc[: data.draw(st.integers(0, len(small_warc)))])
    for _ in range(data.draw(st.integers(0, 3))):
        if blob:
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "fuzz.warc.gz"
    path.write_bytes(bytes(blob))
    try:
        entries, skipped = read_warc(str(path))
    except FormatError as err:
        assert "\n" not in str(err)
    else:
        assert all(isinstance(e, Entry) and e.key for e in entries)
        assert all(isinstance(s, Skipped) for s in skipped)


@FUZZ
@given(st.sampled_from([b"", b"WARC/1.0\r\n", b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 40\r\n\r\n"]),
       st.binary(max_size=2000), st.booleans())
def test_fuzz_warc_bytes(tmp_path_factory, prefix, content, compress):
    """Arbitrary bytes, with or without a WARC start, plain or gzipped: FormatError or a result."""
    blob = prefix + content
    path = tmp_path_factory.mktemp("fuzz") / "x.warc"
    path.write_bytes(gzip.compress(blob) if compress else blob)
    try:
        entries, skipped = read_warc(str(path))
    except FormatError as err:
        assert "\n" not in str(err)
    else:
        assert all(e.key for e in entries) and all(isinstance(s, Skipped) for s in skipped)
    finally:
        os.remove(path)
