"""Saved web pages through trafilatura: `read_html` turns one news page into one Entry.

The text is the article body as trafilatura extracts it (no menus, banners, comments or "related
stories"), its paragraphs separated by blank lines, with the metadata the page states about
itself. `rag.formats.warc` reads each page of a web archive through `page_entry`.

The publication date is the one place where trafilatura's defaults are not used as they are:
htmldate's extensive search takes any date it finds in the body text ("a trial from 12 May 2019"),
and even its fast mode takes the first ISO date anywhere in the text, while it misses a plain
"Published March 3, 2024" byline. So htmldate is run here on a probe made of what the page says
about itself (its <meta> tags, JSON-LD, datePublished microdata, its URL) and the short lines next
to the headline, never the article body.
"""

from __future__ import annotations

import copy
import re
from urllib.parse import urlsplit

from rag.formats import Entry, FormatError, Skipped

SNIFF_BYTES = 8192  # a NUL byte in this many leading bytes means binary data

NO_ARTICLE = "no article text found in the page (a front page or an index?); skipped"
BINARY = "binary data, not a web page; check what the file holds (an image or an archive named .html?)"

# Subscription and sign-up prompts inside the article: trafilatura keeps them (its own boilerplate
# list has newsletters, not paywalls). An element with 3+ paragraphs or the headline is content
# ("subscriber-only" article bodies), never pruned.
PROMPT_TOKENS = ("subscri", "paywall", "regwall", "signup", "sign-up", "promo", "membership")
_LOWER = "translate({}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
PROMPT_XPATH = (
    "//*[self::div or self::section or self::aside or self::p or self::form]["
    + " or ".join(f"contains({_LOWER.format(attr)}, '{token}')"
                  for attr in ("@class", "@id") for token in PROMPT_TOKENS)
    + "][count(.//p) < 3][not(.//h1)]"
)

# Page chrome: a page whose every extracted line is found in these is not an article
# (trafilatura's fallbacks return the menu or the copyright line of a page with nothing else).
CHROME_XPATH = (
    "//nav | //footer | //aside | //header[not(ancestor::article or ancestor::main)]"
    " | //*[@role='navigation' or @role='banner' or @role='contentinfo' or @role='complementary']"
    " | //*[not(self::body or self::html)]["
    + " or ".join(f"contains({_LOWER.format(attr)}, '{token}')" for attr in ("@class", "@id")
                  for token in ("cookie", "consent", "footer", "menu", "navbar", "breadcrumb"))
    + "][not(.//article or .//main or .//h1)]"
)

# The byline zone: short elements after the headline, before the article body gets going.
BYLINE_CHARS = 100  # an element with more text is body (or a standfirst), not a byline
ZONE_CHARS = 400  # text taken into the zone, at most
ZONE_ELEMENTS = 6
ZONE_LONG_ELEMENTS = 2  # stop at the second paragraph of body text in any case
ZONE_SCAN = 2000  # elements looked at after the headline, at most (a page of empty <div>s ends the zone)
BYLINE_START = re.compile(r"\W*(by|published|posted|updated|last updated|first published|date)\b", re.IGNORECASE)
SEGMENT_SPLIT = re.compile(r"(?<=[.;|·•])\s+|\s+[|·•–—-]\s+")
SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "iframe"}


# ---------------------------------------------------------------- one web page


def read_html(data: bytes) -> tuple[list[Entry], list[Skipped]]:
    """The article of one saved web page (key None). FormatError when there is none."""
    return [page_entry(data)], []


def page_entry(data: bytes, url: str | None = None) -> Entry:
    """The page's article; `url` is where it was captured (a WARC), used when the page names none.

    Only FormatError leaves: trafilatura, htmldate and lxml raise odd things on odd input.
    """
    if not isinstance(data, bytes | bytearray) or b"\x00" in data[:SNIFF_BYTES]:
        raise FormatError(BINARY)
    try:
        return _extract(bytes(data), url)
    except FormatError:
        raise
    except Exception as err:  # noqa: BLE001 - any library failure is this file's problem, not the run's
        raise FormatError(f"the page could not be read ({one_line(err)}); check it is a saved web page") from err


def _extract(data: bytes, url: str | None) -> Entry:
    import trafilatura
    from trafilatura.utils import decode_file, load_html

    text = decode_file(data)  # charset detection (and gzip/brotli undone, capped) by trafilatura
    if _looks_binary(text):
        raise FormatError(BINARY)
    tree = load_html(text)
    if tree is None:
        raise FormatError(NO_ARTICLE)
    doc = trafilatura.bare_extraction(
        tree,  # copied by trafilatura: the tree stays whole for the date probe and the chrome check
        url=url,
        output_format="python",
        with_metadata=True,
        include_comments=False,
        prune_xpath=PROMPT_XPATH,
        # The date found here is replaced by _publication_date (see the module docstring); the
        # fast search keeps this one cheap.
        date_extraction_params={"extensive_search": False, "original_date": True},
    )
    if doc is None:
        raise FormatError(NO_ARTICLE)
    body = _paragraphs(doc)
    if not body.strip() or _only_chrome(tree, body):
        raise FormatError(NO_ARTICLE)
    page_url = _http_url(doc.url) or _http_url(url)
    meta = {
        "title": _clean(doc.title),
        "date": _publication_date(tree, doc.title, page_url),
        "author": _clean(doc.author),
        "source": _clean(doc.sitename) or _hostname(page_url),
        "url": _http_url(doc.url),
    }
    return Entry(key=None, text=body, meta=meta)


def _looks_binary(text: str) -> bool:
    """Decoded text that is mostly control characters or U+FFFD came from binary data
    (decode_file falls back to a lossy decode rather than fail)."""
    head = text[:SNIFF_BYTES]
    if not head:
        return False
    bad = sum(1 for ch in head if ch == "\ufffd" or (ch < " " and ch not in "\t\n\r\f"))
    return bad > len(head) // 10


def _paragraphs(doc) -> str:
    """trafilatura's text with a blank line between its blocks (paragraphs, headings, lists...).

    Its text output puts one newline between blocks and between the lines of a block alike; each
    top-level element of the extracted body is one block, converted by the same function. If the
    blocks do not add up to exactly its text, its text is kept as it is.
    """
    from trafilatura.xml import xmltotxt

    text = doc.text or ""
    if doc.body is None:
        return text
    blocks = [block for block in (xmltotxt(child, False) for child in doc.body) if block]
    if "\n".join(blocks) != text:
        return text
    return "\n\n".join(blocks)


def _only_chrome(tree, text: str) -> bool:
    """True when every line of the extracted text is menu, banner or footer text of the page."""
    chrome = " ".join(norm(el.text_content()) for el in tree.xpath(CHROME_XPATH))
    lines = [norm(line) for line in text.splitlines()]
    return all(line in chrome for line in lines if line)


def _publication_date(tree, title: str | None, url: str | None) -> str | None:
    """YYYY-MM-DD from the page's metadata or URL, else from a byline by the headline; None otherwise.

    The metadata probe is searched without htmldate's extensive search (markup and URL only); the
    byline zone with it (free text), but a result must be a day the zone states: htmldate falls
    back on a bare year or month ("(c) 2024" -> 2024-01-01), which is a guess, not a date.
    """
    from htmldate import find_date

    try:
        found = find_date(_meta_probe(tree), extensive_search=False, original_date=True, url=url)
        if found:
            return found
        headline = _headline(tree, title)
        if headline is None:
            return None
        zone = _byline_zone(headline)
        if not zone:
            return None
        found = find_date(_zone_probe(zone), extensive_search=True, original_date=True)
        return found if found and _states_day(_stated(zone), found) else None
    except Exception:  # noqa: BLE001 - a date is optional; the article is still good without one
        return None


def _meta_probe(tree):
    """A page holding only what the page says about itself: <meta> tags, JSON(-LD) scripts and
    datePublished microdata (the rest of the body is left out: its dates are not the page's)."""
    probe, head, body = _empty_page()
    for el in tree.iter("meta"):
        head.append(_detached(el))
    for el in tree.iter("script"):
        if "json" in (el.get("type") or "").lower():
            head.append(_detached(el))
    for el in tree.xpath("//*[@itemprop='datePublished' or @itemprop='dateCreated'][not(self::meta)]"):
        body.append(_detached(el))
    return probe


def _zone_probe(zone: list):
    """A page holding the byline zone, each of its segments ("Updated May 9. Published May 3")
    also on its own: htmldate compares dates across segments (original_date: the earliest wins)
    but takes the first date within one."""
    import lxml.html

    probe, _, body = _empty_page()
    for el in zone:
        body.append(_detached(el))
        for segment in SEGMENT_SPLIT.split(norm(el.text_content())):
            if segment.strip():
                p = lxml.html.Element("p")
                p.text = segment.strip()
                body.append(p)
    return probe


def _empty_page():
    import lxml.html

    probe = lxml.html.fromstring("<html><head></head><body></body></html>")
    return probe, probe[0], probe[1]


def _stated(zone: list) -> str:
    """What the zone says: its text and the date attributes of its markup (<time datetime=...>)."""
    values = [norm(el.text_content()) for el in zone]
    values += [value for el in zone for value in el.xpath(".//@datetime | .//@title | .//@content")]
    return " ".join(values)


def _states_day(text: str, found: str) -> bool:
    """Whether `text` states the day of `found` (a YYYY-MM-DD): its year, and its day number.

    Only the first of the month needs the check in fact: htmldate's guesses are the 1st.
    """
    year, _, day = found.split("-")
    if year not in text:
        return False
    return day != "01" or re.search(r"(?<![0-9])0?1(?![0-9])", text.replace(year, " ")) is not None


def _headline(tree, title: str | None):
    """The article's <h1>: the one that reads as the title, else the one in <article>/<main>, else
    the only one; a site logo in an <h1> is not taken for it."""
    wanted = norm(title or "").casefold()
    heads = tree.xpath("//h1")
    if wanted:
        texts = [(h, norm(h.text_content()).casefold()) for h in heads + tree.xpath("//h2")]
        for h, text in texts:
            if text == wanted:
                return h
        for h, text in texts:
            shorter, longer = sorted((text, wanted), key=len)
            if shorter and shorter in longer and 2 * len(shorter) >= len(longer):
                return h
    in_article = [h for h in heads if h.xpath("ancestor::article or ancestor::main")]
    if in_article:
        return in_article[0]
    return heads[0] if len(heads) == 1 else None


def _byline_zone(headline) -> list:
    """Short elements just before and after the headline: the kicker, the byline, the dateline.

    After it, short lines that are not sentences are taken until the body starts: a sentence or
    a long paragraph once something was taken (one long paragraph before is a standfirst), the
    second one in any case, ZONE_CHARS of text or ZONE_ELEMENTS. Menus, asides and footers in
    between are passed over. Before it, at most two short siblings within the article's header.
    """
    zone: list = []
    parent = headline.getparent()
    if parent is not None and parent.tag not in ("body", "html"):
        before = [el for el in headline.itersiblings(preceding=True) if _is_element(el)][:2]
        zone.extend(el for el in before if not _is_chrome(el) and _is_byline(norm(el.text_content())))
    taken, passed, used, long_seen = [], set(), 0, 0
    for seen, el in enumerate(headline.xpath("following::*")):
        if seen >= ZONE_SCAN:
            break
        if el.tag in SKIP_TAGS or any(a in passed for a in el.iterancestors()):
            continue
        if _is_chrome(el):
            passed.add(el)
            continue
        text = norm(el.text_content())
        if _is_byline(text):
            if text or el.tag in ("time", "abbr"):
                taken.append(el)
                passed.add(el)  # its descendants are in it already
                used += len(text)
        elif len(el) == 0 or el.tag in ("p", "blockquote", "pre", "table", "li"):
            long_seen += 1  # body text; a long container is looked into instead
            if taken or long_seen >= ZONE_LONG_ELEMENTS:
                break
        if used >= ZONE_CHARS or len(taken) >= ZONE_ELEMENTS:
            break
    return zone + taken


def _is_byline(text: str) -> bool:
    """Short, and not a sentence of the article ("By Ann Lee | Published 3 May 2024" is not)."""
    if len(text) > BYLINE_CHARS:
        return False
    sentence = len(text.split()) >= 4 and text.rstrip("\"'”’ ").endswith((".", "!", "?"))
    return not sentence or BYLINE_START.match(text) is not None


def _is_chrome(el) -> bool:
    """A menu, aside or page footer (a short line there is not a byline)."""
    if el.tag in ("nav", "aside", "footer"):
        return True
    if el.get("role") in ("navigation", "banner", "contentinfo", "complementary"):
        return True
    return el.tag == "header" and not el.xpath("ancestor::article or ancestor::main")


def _is_element(el) -> bool:
    return isinstance(el.tag, str) and el.tag not in SKIP_TAGS


def _detached(el):
    """A copy of `el` without the text that follows it in the page."""
    clone = copy.deepcopy(el)
    clone.tail = None
    return clone


def norm(text: str) -> str:
    return " ".join(text.split())


def _clean(value) -> str | None:
    return norm(value) or None if isinstance(value, str) else None


def _http_url(url) -> str | None:
    """`url` if it is an absolute http(s) URL, else None."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    return url.strip() if parts.scheme in ("http", "https") and parts.hostname else None


def _hostname(url: str | None) -> str | None:
    """The site's host name without "www.", the source when the page names none."""
    if not url:
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if host and host.startswith("www."):
        host = host[4:]
    return host or None


def one_line(err: BaseException) -> str:
    detail = norm(str(err))[:160]
    return f"{type(err).__name__}: {detail}" if detail else type(err).__name__


