"""Which articles a search may return: dates, publisher, doc ids. Each store turns them into its own
query (SQL for the file store, a filter expression for Milvus)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from rag import policy
from rag.errors import UsageError
from rag.words import recency_days, years_named

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Filters:
    since: str | None = None  # ISO date, inclusive; undated articles are excluded when set
    until: str | None = None
    source: str | None = None  # case-insensitive match on the article's source
    docs: tuple[str, ...] = ()  # doc ids

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and not _DATE.match(value):
                raise UsageError(f"--{name} must be a date like 2019-02-20, not {value!r}")

    @property
    def active(self) -> bool:
        return bool(self.since or self.until or self.source or self.docs)

    def describe(self) -> str:
        parts = [f"since={self.since}" if self.since else "", f"until={self.until}" if self.until else "",
                 f"source={self.source}" if self.source else "", *(f"doc={d}" for d in self.docs)]
        return " ".join(p for p in parts if p) or "none"

    def holds_date(self, day: str | None) -> bool:
        """Whether an article dated `day` passes the date bounds (an undated one never does when set)."""
        if not (self.since or self.until):
            return True
        return bool(day) and (not self.since or day[:10] >= self.since) and (not self.until or day[:10] <= self.until)

    def narrowed(self, other: Filters) -> Filters | None:
        """Articles that pass both filters; None when no article can (two different sources)."""
        if self.source and other.source and self.source.lower() != other.source.lower():
            return None
        docs = tuple(d for d in self.docs if d in other.docs) if self.docs and other.docs else \
            self.docs or other.docs
        if self.docs and other.docs and not docs:
            return None
        since = max(d for d in (self.since, other.since) if d) if self.since or other.since else None
        until = min(d for d in (self.until, other.until) if d) if self.until or other.until else None
        if since and until and since > until:
            return None
        return Filters(since=since, until=until, source=self.source or other.source, docs=docs)


@dataclass(frozen=True)
class Ranking:
    """One ranked list a search asks a store for: dense (vectors) or lexical (BM25), how many, of which articles."""

    kind: str  # "dense" | "lexical"
    limit: int
    filters: Filters | None = None  # None: every article


def recent_window(query: str, as_of: str | None) -> Filters | None:
    """The dates that "this week", "recently" or "last year" in the query mean when asked on `as_of`."""
    days = recency_days(query)
    asked = _day(as_of)
    if days is None or asked is None:
        return None
    return Filters(since=(asked - timedelta(days=days)).isoformat(), until=asked.isoformat())


def _day(as_of: str | None) -> date | None:
    """The ISO date `as_of`, or None when it is missing or no date (2023-02-30)."""
    if not as_of or not _DATE.match(as_of):
        return None
    try:
        return date.fromisoformat(as_of)
    except ValueError:
        return None


def news_window(query: str, as_of: str | None) -> Filters | None:
    """The days whose articles a question asked on `as_of` is most likely about: those its "this
    week" or "recently" names; else, a question about the news being the news of the days before
    it is asked, the last policy.NEWS_DAYS days, unless it names an earlier year ("the 2019 election")."""
    window = recent_window(query, as_of)
    asked = _day(as_of)
    if window is not None or asked is None:
        return window
    if any(year < asked.year for year in years_named(query)):
        return None
    return Filters(since=(asked - timedelta(days=policy.NEWS_DAYS)).isoformat(), until=asked.isoformat())
