"""rag.formats.feeds: RSS and Atom feeds into Entries, offline, and nothing but FormatError on bad input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.formats import FormatError
from rag.formats.feeds import read_feed

RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"
     xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel>
  <title>Daily  Planet</title>
  <link>https://planet.example/</link>
  <item>
    <title>Floods in Sindh</title>
    <link>https://planet.example/floods</link>
    <guid isPermaLink="false">planet-1001</guid>
    <description>Short teaser.</description>
    <content:encoded><![CDATA[<p>Floods <b>displaced</b> thousands
      of families.</p><p>Officials said on Monday.</p><script>track()</script>]]></content:encoded>
    <pubDate>Sun, 03 Mar 2024 10:00:00 GMT</pubDate>
    <dc:creator>Lois Lane</dc:creator>
  </item>
  <item>
    <title>Bridge reopens</title>
    <link>https://planet.example/bridge</link>
    <description>&lt;p&gt;The bridge &lt;i&gt;reopened&lt;/i&gt;&lt;br/&gt;on Tuesday.&lt;/p&gt;
      &lt;ul&gt;&lt;li&gt;Tolls
      stay&lt;/li&gt;&lt;li&gt;Lanes: 4 &amp;amp; 2&lt;/li&gt;&lt;/ul&gt;</description>
  </item>
</channel>
</rss>
"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title type="text">Atom Wire</title>
  <id>urn:uuid:feed</id>
  <updated>2024-03-06T00:00:00Z</updated>
  <entry>
    <id>urn:uuid:aaa</id>
    <title type="html">Markets &amp;amp; &lt;em&gt;rates&lt;/em&gt;</title>
    <link rel="alternate" href="https://wire.example/markets"/>
    <updated>2024-03-05T08:00:00Z</updated>
    <author><name>Clark Kent</name></author>
    <content type="text">Rates held steady.

Markets rose &lt; 1%.</content>
  </entry>
  <entry>
    <id>urn:uuid:bbb</id>
    <title>Weather</title>
    <published>2024-03-04T09:00:00+01:00</published>
    <updated>2024-03-07T09:00:00Z</updated>
    <summary type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Rain.</p><p>Then sun.</p></div></summary>
  </entry>
</feed>
"""


def rss(*items: str, title: str = "Feed") -> bytes:
    """A minimal RSS 2.0 feed around the given <item> bodies."""
    body = "".join(f"<item>{item}</item>" for item in items)
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title>{body}</channel></rss>'.encode()


# --- RSS and Atom -----------------------------------------------------------------------------------


def test_rss_prefers_full_content_and_converts_html():
    entries, skipped = read_feed(RSS)
    assert skipped == []
    assert [e.key for e in entries] == ["planet-1001", "https://planet.example/bridge"]
    full, teaser_only = entries
    assert full.text == "Floods displaced thousands of families.\n\nOfficials said on Monday."
    assert full.meta == {
        "title": "Floods in Sindh", "url": "https://planet.example/floods", "date": "2024-03-03",
        "source": "Daily Planet", "author": "Lois Lane",
    }
    assert teaser_only.text == "The bridge reopened\non Tuesday.\n\nTolls stay\n\nLanes: 4 & 2"
    assert "<" not in teaser_only.text
    assert teaser_only.meta["date"] is None and "author" not in teaser_only.meta


def test_atom_entries():
    entries, skipped = read_feed(ATOM)
    assert skipped == []
    markets, weather = entries
    assert markets.key == "urn:uuid:aaa"
    assert markets.text == "Rates held steady.\n\nMarkets rose < 1%."  # type="text": kept as is
    assert markets.meta == {
        "title": "Markets & rates", "url": "https://wire.example/markets", "date": "2024-03-05",
        "source": "Atom Wire", "author": "Clark Kent",
    }
    assert weather.text == "Rain.\n\nThen sun."
    assert weather.meta["date"] == "2024-03-04"  # published wins over updated
    assert weather.meta["url"] is None  # feedparser copies the urn id into `link`; not a URL


def test_plain_rss_description_keeps_its_line_breaks():
    entries, _ = read_feed(rss("<guid>g</guid><description>First para.\n\nSecond para.</description>"))
    assert entries[0].text == "First para.\n\nSecond para."


def test_feed_saved_as_xml_reads_by_content(tmp_path):
    path = tmp_path / "planet.xml"
    path.write_bytes(RSS)
    entries, _ = read_feed(path.read_bytes())
    assert len(entries) == 2


def test_dates_fall_back_to_updated_and_to_parse_date():
    entries, _ = read_feed(rss(
        "<guid>a</guid><description>x</description><pubDate>not a date</pubDate>",
        "<guid>b</guid><description>y</description><pubDate>Sun, 03 Mar 2024 23:30:00 -0500</pubDate>",
    ))
    assert entries[0].meta["date"] is None
    assert entries[1].meta["date"] == "2024-03-03"  # the publisher's day, not UTC's (feedparser's *_parsed)


# --- not a feed ---------------------------------------------------------------------------------


def test_xml_that_is_not_a_feed():
    with pytest.raises(FormatError, match="^XML but not an RSS or Atom feed"):
        read_feed(b'<?xml version="1.0"?><catalog><book><title>Dune</title></book></catalog>')


def test_not_xml_at_all():
    with pytest.raises(FormatError, match="not XML"):
        read_feed(b"\x00\xff\xfe binary junk")
    with pytest.raises(FormatError):
        read_feed(b"")


def test_feed_without_entries():
    with pytest.raises(FormatError, match="^a feed with no entries; nothing to index$"):
        read_feed(rss())


def test_bytes_are_never_a_file_name_or_url(tmp_path):
    """feedparser opens a bytes argument as a file when it can: read_feed must not."""
    path = tmp_path / "feed.xml"
    path.write_bytes(RSS)
    with pytest.raises(FormatError):
        read_feed(str(path).encode())
    with pytest.raises(FormatError):
        read_feed(b"https://planet.example/feed.xml")  # the network guard fails the test on any attempt


# --- malformed and odd entries --------------------------------------------------------------------


def test_malformed_feed_still_gives_its_entries():
    data = rss(
        "<guid>1</guid><title>Broken<description>an unclosed title tag</description>",
        "<guid>2</guid><title>Fine</title><description>still read</description>",
    )
    entries, _ = read_feed(data)
    assert "still read" in [e.text for e in entries]


def test_entry_without_text_is_skipped():
    entries, skipped = read_feed(rss(
        "<guid>empty</guid><title>Only a title</title>",
        "<title>No id either</title>",
        "<guid>ok</guid><description>body</description>",
    ))
    assert [e.key for e in entries] == ["ok"]
    assert [(s.key, s.reason) for s in skipped] == [
        ("empty", "entry has no content or summary; skipped"),
        ("entry 2", "entry has no content or summary; skipped"),
    ]


def test_duplicate_keys_keep_the_first():
    entries, skipped = read_feed(rss(
        "<guid>same</guid><description>first</description>",
        "<guid>same</guid><description>second</description>",
    ))
    assert [e.text for e in entries] == ["first"]
    assert skipped[0].key == "entry 2" and "same id as entry 1" in skipped[0].reason


def test_key_falls_back_to_link_then_to_a_content_hash():
    entries, _ = read_feed(rss(
        "<link>https://x.example/a</link><description>linked</description>",
        "<title>T</title><description>anonymous</description>",
    ))
    assert entries[0].key == "https://x.example/a"
    assert entries[1].key.startswith("sha256:") and len(entries[1].key) == len("sha256:") + 16


def test_hash_keys_stay_when_other_entries_change():
    keep = "<title>Keep</title><description>unchanged body</description>"
    before, _ = read_feed(rss("<title>Other</title><description>old</description>", keep))
    after, _ = read_feed(rss(
        "<title>New</title><description>brand new</description>",
        "<title>Other</title><description>edited</description>",
        keep,
    ))
    key = before[1].key
    assert [e.key for e in after].count(key) == 1
    assert next(e for e in after if e.key == key).text == "unchanged body"
    assert before[0].key not in [e.key for e in after]


# --- HTML to text -----------------------------------------------------------------------------------


def test_entry_html_becomes_plain_text():
    html = "<h2>Head</h2><p>One <a href='#'>link</a></p><style>p{}</style>"
    escaped = html.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    entries, _ = read_feed(rss(f"<guid>g</guid><description>{escaped}</description>"))
    assert entries[0].text == "Head\n\nOne link"


# --- fuzz -------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
XML_BITS = st.sampled_from([
    "<", ">", "</", "/>", "&", "&amp;", "&#0;", "&#x110000;", "<![CDATA[", "]]>", "<!--", "-->", '"', "'",
    "<?xml version='1.0'?>", '<?xml version="1.0" encoding="utf-16"?>', "<!DOCTYPE x [<!ENTITY e 'v'>]>", "&e;",
    "<rss version='2.0'>", "<channel>", "<item>", "</item>", "<title>", "</title>", "<description>",
    "<guid>", "</guid>", "<link>", "<pubDate>", "Sun, 03 Mar 2024", "<feed xmlns='http://www.w3.org/2005/Atom'>",
    "<entry>", "</entry>", "<content type='html'>", "<content type='xhtml'>", "<summary>", "<id>", "<updated>",
    "<p>", "<script>", "<br>", "\x00", "\ufffd", "é", "\n", " ", "text", "http://x/",
])


def assert_only_format_error(data: bytes) -> None:
    try:
        entries, skipped = read_feed(data)
    except FormatError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert entries or skipped
    keys = [e.key for e in entries]
    assert len(keys) == len(set(keys))
    for entry in entries:
        assert entry.text and entry.text == entry.text.strip()
        assert entry.meta.get("date") is None or len(entry.meta["date"]) == 10


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_arbitrary_bytes(data):
    assert_only_format_error(data)


@FUZZ
@given(st.lists(XML_BITS, max_size=60), st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_fuzz_feedlike_bytes(bits, encoding):
    assert_only_format_error("".join(bits).encode(encoding, "replace"))


@FUZZ
@given(st.text(max_size=200), st.text(max_size=200))
def test_fuzz_entry_text(title, body):
    from xml.sax.saxutils import escape

    assert_only_format_error(rss(f"<title>{escape(title)}</title><description>{escape(body)}</description>"))
    assert_only_format_error(rss(f"<title>{title}</title><description>{body}</description>"))
