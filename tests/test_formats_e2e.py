"""Every article format, end to end: one folder holding a web page, a feed, a PDF, a CSV export, a
web archive and a text file is indexed with the real embedder, and a question that only one
file's body answers is answered from that file, cited to it, with its URL or page.

Bad files of each format sit beside good ones: one stderr line each, the rest indexed, no
traceback, and a file that turns bad keeps what was indexed from it before.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
from pathlib import Path

import pytest
from fpdf import FPDF
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from rag.config import Settings
from rag.indexer import index_paths
from rag.pipeline import Pipeline
from rag.store import open_index
from tests.conftest import subprocess_env
from tests.hardening import rag_command

pytestmark = pytest.mark.slow

BOILERPLATE = ("cookies", "Subscribe", "Related stories", "All rights reserved", "Home", "Sign up")

PAGE = """<!doctype html><html><head><title>Dockworkers end strike | Harbour Times</title>
<link rel="canonical" href="https://harbour.example/2024/03/dock-strike">
<meta property="og:site_name" content="Harbour Times">
<script type="application/ld+json">{"@context": "https://schema.org", "@type": "NewsArticle",
"headline": "Dockworkers end strike", "datePublished": "2024-03-05T08:00:00Z",
"author": {"@type": "Person", "name": "Ana Ruiz"}, "publisher": {"@type": "Organization", "name": "Harbour Times"}}
</script></head><body>
<nav><a href="/">Home</a> <a href="/business">Business</a> <a href="/signup">Sign up</a></nav>
<div id="cookie-banner">We use cookies to improve your experience. Accept all cookies?</div>
<article><h1>Dockworkers end strike</h1><p class="byline">By Ana Ruiz, March 5, 2024</p>
<p>The dockworkers' union in Port Halvard ended its three-week strike on Monday after securing a
nine percent pay rise over two years, union leaders said.</p>
<p>Cargo ships that had waited outside the harbour began unloading on Tuesday morning, and the port
authority said it expected the backlog of containers to clear within ten days.</p>
<p>The agreement still needs a vote of the full membership, which is planned for next week.</p>
</article>
<aside><h2>Related stories</h2><ul><li><a href="/x">Ferry fares rise again</a></li>
<li><a href="/y">New crane arrives at the container terminal</a></li></ul></aside>
<div class="subscribe">Subscribe now for unlimited access to Harbour Times journalism.</div>
<footer>© 2024 Harbour Times. All rights reserved.</footer></body></html>"""

FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>
<title>Lakeside Courier</title><link>https://lakeside.example/</link><description>Local news</description>
<item><title>Lindqvist bridge to close for repairs</title><link>https://lakeside.example/bridge</link>
<guid>lakeside-bridge-2024</guid><pubDate>Mon, 06 May 2024 09:00:00 GMT</pubDate>
<content:encoded><![CDATA[<p>The Lindqvist bridge will close to all traffic for fourteen weeks of
repairs starting on June 3, the regional roads agency announced.</p><p>Buses will use a detour through
the old town during the works.</p>]]></content:encoded></item>
<item><title>Library extends opening hours</title><link>https://lakeside.example/library</link>
<guid>lakeside-library-2024</guid><pubDate>Tue, 07 May 2024 09:00:00 GMT</pubDate>
<description>The central library will stay open until nine in the evening on weekdays from next
month, the council said.</description></item>
</channel></rss>"""

CSV = (
    "headline,published,publisher,link,body\n"
    '"Maravoy approves tram budget",2024-04-02,Maravoy Post,https://maravoy.example/tram,'
    '"The city council of Maravoy approved a budget of 38 million euros for two new tram lines, which '
    'are due to open in 2027."\n'
    '"School year to start earlier",2024-04-03,Maravoy Post,https://maravoy.example/school,'
    '"Schools in the province will open a week earlier in September, the education office said."\n'
)

ARCHIVED_PAGE = """<html><head><title>Bronze anchor found | Coastal Digest</title>
<meta property="og:site_name" content="Coastal Digest"></head><body>
<nav><a href="/">Home</a> <a href="/science">Science</a></nav>
<article><h1>Bronze anchor found off Tessaly Cove</h1>
<p>Divers working with archaeologists near Tessaly Cove recovered a bronze anchor that researchers
dated to the fourth century BC, the regional heritage office said on Thursday.</p>
<p>The anchor, nearly two metres long, will go on display at the maritime museum next year after
conservation work.</p></article>
<footer>Coastal Digest. All rights reserved.</footer></body></html>"""

TEXT = "Orchard growers in the Velmar valley harvested a record 61,000 tonnes of pears this autumn, the growers' cooperative said.\n"  # noqa: E501

PDF_PAGES = [
    "Annual water report. This report reviews reservoir levels across the region during the year.",
    "Rainfall in the Corvel basin reached 412 millimetres in April, the wettest April since records began.",
    "Outlook. Reservoirs are expected to stay above average through the summer months.",
]


def write_pdf(path: Path, pages: list[str]) -> None:
    pdf = FPDF()
    pdf.set_title("Regional water report 2024")
    pdf.set_author("Water Office")
    pdf.set_font("helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))


def write_warc(path: Path, pages: dict[str, str]) -> None:
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=path.name.endswith(".gz"))
        for url, html in pages.items():
            body = html.encode()
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                                  ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          http_headers=headers))
            request = io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")
            writer.write_record(writer.create_warc_record(url, "request", payload=request))


def write_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "story.html").write_text(PAGE, encoding="utf-8")
    (root / "feed.xml").write_text(FEED, encoding="utf-8")
    (root / "export.csv").write_text(CSV, encoding="utf-8")
    (root / "notes.txt").write_text(TEXT, encoding="utf-8")
    write_pdf(root / "report.pdf", PDF_PAGES)
    write_warc(root / "crawl.warc.gz", {"https://coastal.example/anchor": ARCHIVED_PAGE})
    return root


QUESTIONS = [  # question, the doc id cited, its url (None: none known), its page
    ("How large a pay rise did the Port Halvard dockworkers secure?", "story.html",
     "https://harbour.example/2024/03/dock-strike", None),
    ("How long will the Lindqvist bridge close for repairs?", "feed.xml#lakeside-bridge-2024",
     "https://lakeside.example/bridge", None),
    ("How much rain fell in the Corvel basin in April?", "report.pdf", None, 2),
    ("What budget did the Maravoy city council approve for tram lines?", "export.csv#https://maravoy.example/tram",
     "https://maravoy.example/tram", None),
    ("What did archaeologists recover near Tessaly Cove?", "crawl.warc.gz#https://coastal.example/anchor",
     "https://coastal.example/anchor", None),
    ("How many tonnes of pears did Velmar valley growers harvest?", "notes.txt", None, None),
]


@pytest.fixture(scope="module")
def mixed_index(tmp_path_factory, real_embedder, counter):
    root = write_folder(tmp_path_factory.mktemp("mixed") / "news")
    index = root.parent / "index"
    summary = index_paths([str(root)], Settings(index=str(index)), embedder=real_embedder, counter=counter)
    return root, index, vars(summary) | {"problems": summary.problems}


def test_cli_indexes_one_file_of_each_format(tmp_path):
    """The folder indexed by the real CLI, as a user would: exit 0, nothing skipped."""
    root = write_folder(tmp_path / "news")
    done = subprocess.run(rag_command("index", str(root), "--index", str(tmp_path / "index"), "--json"),
                          capture_output=True, text=True, cwd=tmp_path, env=subprocess_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["added"], summary["problems"]) == (8, [])


def test_one_file_of_each_format_indexes(mixed_index):
    _, index, summary = mixed_index
    assert summary["problems"] == []
    assert summary["added"] == 8  # page, 2 feed entries, PDF, 2 CSV rows, archived page, text
    assert summary["skipped_records"] == 1  # the archive's request record
    reader = open_index(index)
    page = reader.article("story.html")
    assert (page.title, page.date, page.source, page.author, page.url) == (
        "Dockworkers end strike", "2024-03-05", "Harbour Times", "Ana Ruiz", "https://harbour.example/2024/03/dock-strike")
    entry = reader.article("feed.xml#lakeside-bridge-2024")
    assert (entry.date, entry.source, entry.url) == ("2024-05-06", "Lakeside Courier", "https://lakeside.example/bridge")
    report = reader.article("report.pdf")
    assert (report.title, report.author, len(report.pages)) == ("Regional water report 2024", "Water Office", 3)
    row = reader.article("export.csv#https://maravoy.example/tram")
    assert (row.title, row.date, row.source) == ("Maravoy approves tram budget", "2024-04-02", "Maravoy Post")
    for doc_id in ("story.html", "crawl.warc.gz#https://coastal.example/anchor"):
        text = reader.article(doc_id).text
        assert not [b for b in BOILERPLATE if b in text], text
    reader.close()


@pytest.mark.parametrize("question, doc_id, url, page", QUESTIONS)
def test_a_question_is_answered_from_the_one_file_that_holds_it(mixed_index, real_embedder, question, doc_id,
                                                                  url, page):
    _, index, _ = mixed_index
    pipeline = Pipeline(Settings(index=str(index), mode="extractive"), embedder=real_embedder)
    try:
        answer = pipeline.ask(question)
    finally:
        pipeline.close()
    assert not answer.abstained, answer.notes
    first = answer.citations[0]
    assert first.doc_id == doc_id, [c.doc_id for c in answer.citations]
    assert (first.url, first.page) == (url, page)
    reader = open_index(index)
    for c in answer.citations:
        assert reader.article(c.doc_id).text[c.start:c.end] == c.quote
        assert not [b for b in BOILERPLATE if b in c.quote], c.quote
    reader.close()


def test_cli_shows_url_and_page(mixed_index):
    root, index, _ = mixed_index
    done = subprocess.run(rag_command("ask", "How much rain fell in the Corvel basin in April?", "--mode",
                                      "extractive", "--index", str(index)),
                          capture_output=True, text=True, cwd=root.parent, env=subprocess_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "page 2" in done.stdout
    done = subprocess.run(rag_command("ask", "How large a pay rise did the Port Halvard dockworkers secure?",
                                      "--mode", "extractive", "--index", str(index), "--json"),
                          capture_output=True, text=True, cwd=root.parent, env=subprocess_env(), timeout=300)
    citation = json.loads(done.stdout)["citations"][0]
    assert (citation["url"], citation["page"]) == ("https://harbour.example/2024/03/dock-strike", None)


def test_a_changed_feed_entry_is_the_only_one_reembedded(tmp_path, real_embedder, counter):
    root = write_folder(tmp_path / "news")
    settings = Settings(index=str(tmp_path / "index"))
    index_paths([str(root)], settings, embedder=real_embedder, counter=counter)
    feed = root / "feed.xml"
    feed.write_text(FEED.replace("nine in the evening", "ten in the evening"), encoding="utf-8")
    summary = index_paths([str(root)], settings, embedder=real_embedder, counter=counter)
    assert (summary.added, summary.updated, summary.removed, summary.unchanged) == (0, 1, 0, 7)


def test_bad_files_of_every_format_are_one_line_each(tmp_path):
    root = tmp_path / "news"
    root.mkdir()
    (root / "good.txt").write_text(TEXT, encoding="utf-8")
    bad = {
        "binary.html": b"\x00\x01\x02\xff" * 100,
        "nav-only.html": b"<html><body><nav><a href='/'>Home</a></nav></body></html>",
        "empty-feed.rss": b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title></channel></rss>',
        "not-a-feed.xml": b'<?xml version="1.0"?><config><value>1</value></config>',
        "no-text.csv": b"headline,published\nA,2024-01-01\n",
        "truncated.pdf": b"%PDF-1.4\n1 0 obj\n<<",
        "truncated.warc.gz": gzip.compress(b"WARC/1.0\r\nWARC-Type: response\r\n")[:20],
        "bomb.warc.gz": gzip.compress(b"\x00" * (64 * 2**20)) * 48,  # 3 GB of zeros in ~3 MB
    }
    for name, data in bad.items():
        (root / name).write_bytes(data)
    done = subprocess.run(rag_command("index", str(root), "--index", str(tmp_path / "idx")), capture_output=True,
                          text=True, cwd=tmp_path, env=subprocess_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    for name in bad:
        mine = [line for line in lines if f"{root / name}" in line]
        assert len(mine) == 1, (name, lines)
        assert mine[0].startswith("rag: skipped ")
    assert "1 added" in done.stdout


def test_a_file_that_turns_bad_keeps_what_was_indexed(tmp_path, real_embedder, counter):
    root = write_folder(tmp_path / "news")
    settings = Settings(index=str(tmp_path / "index"))
    index_paths([str(root)], settings, embedder=real_embedder, counter=counter)
    data = (root / "report.pdf").read_bytes()
    (root / "report.pdf").write_bytes(data[: len(data) // 3])  # a copy cut short
    (root / "export.csv").write_text("headline,published\nA,2024-01-01\n", encoding="utf-8")  # text column gone
    summary = index_paths([str(root)], settings, embedder=real_embedder, counter=counter)
    assert summary.removed == 0 and summary.kept_unreadable == 3  # the PDF and both CSV rows
    assert {p.path for p in summary.problems} == {str(root / "report.pdf"), str(root / "export.csv")}
    reader = open_index(settings.index)
    assert reader.article("report.pdf") is not None
    reader.close()


def test_open_shows_the_extracted_page_around_the_quote(mixed_index, real_embedder):
    import io as _io

    from rag.chat import ChatSession

    _, index, _ = mixed_index
    pipeline = Pipeline(Settings(index=str(index), mode="extractive"), embedder=real_embedder)
    out = _io.StringIO()
    session = ChatSession(pipeline, out)
    try:
        assert session.handle("What did archaeologists recover near Tessaly Cove?")
        first = session.last.answer.citations[0]
        start = out.tell()
        assert session.handle("/open 1")
        shown = " ".join(out.getvalue()[start:].split())
    finally:
        pipeline.close()
    assert "»" + " ".join(first.quote.split()) + "«" in shown
    assert "https://coastal.example/anchor" in shown  # the citation line carries the captured URL
    assert "<" not in shown and "All rights reserved" not in shown  # extracted text, not the HTML


def test_the_same_story_as_a_page_and_a_feed_entry_is_folded(tmp_path, real_embedder, counter):
    root = tmp_path / "news"
    root.mkdir()
    (root / "story.html").write_text(PAGE, encoding="utf-8")
    body = "".join(f"<p>{p}</p>" for p in PAGE.split("<article>")[1].split("</article>")[0].split("<p>")[2:])
    feed = FEED.replace("<content:encoded><![CDATA[", f"<content:encoded><![CDATA[{body}", 1)
    (root / "feed.rss").write_text(feed.replace("Lindqvist bridge will close", "Lindqvist bridge shuts"),
                                   encoding="utf-8")
    index_paths([str(root)], Settings(index=str(tmp_path / "index")), embedder=real_embedder, counter=counter)
    pipeline = Pipeline(Settings(index=str(tmp_path / "index"), mode="extractive"), embedder=real_embedder)
    try:
        answer = pipeline.ask("How large a pay rise did the Port Halvard dockworkers secure?")
    finally:
        pipeline.close()
    top = answer.retrieved[0]
    assert {top.doc_id, *top.also_reported_by} >= {"story.html", "feed.rss#lakeside-bridge-2024"}, answer.retrieved
