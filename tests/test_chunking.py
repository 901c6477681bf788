"""Chunker properties: offsets reproduce the text, no empty chunk, within the embedder's limit."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.chunking import chunk_text, chunk_texts
from tests.conftest import CORPUS

WORDS = st.sampled_from(["Pakistan", "urged", "the", "U.S.", "Mr.", "Guterres", "40", "attack.", "said:",
                         "“quoted”", "(AFP)", "de-escalation", "Kashmir's", "\n", "\n\n", "?", "é", "!",
                         "supercalifragilisticexpialidocious", "२०१९", "中文", "\t", "..."])
TEXTS = st.one_of(st.lists(WORDS, max_size=400).map(" ".join), st.text(max_size=2000))


def _check(text, chunks, counter, limit):
    for c in chunks:
        assert c.text == text[c.start:c.end]
        assert c.text.strip() == c.text and c.text
        assert counter.count([c.text])[0] <= limit
    starts = [c.start for c in chunks]
    assert starts == sorted(starts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS, limit=st.integers(16, 254), overlap_share=st.floats(0, 0.49))
def test_chunk_properties(counter, text, limit, overlap_share):
    overlap = int(limit * overlap_share)
    chunks = chunk_text("doc", text, counter, limit, overlap)
    _check(text, chunks, counter, limit)
    assert chunks == chunk_text("doc", text, counter, limit, overlap)  # deterministic
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())  # nothing dropped


def test_real_articles_fit_the_embedder(counter):
    for path in sorted(CORPUS.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        chunks = chunk_text(path.name, text, counter, 200, 40)
        assert len(chunks) >= 2
        _check(text, chunks, counter, 200)
        assert len({c.chunk_id for c in chunks}) == len(chunks)


def test_overlap_repeats_whole_sentences(counter):
    text = " ".join(f"Sentence number {i} talks about the attack in Kashmir." for i in range(40))
    chunks = chunk_text("d", text, counter, 60, 20)
    assert len(chunks) > 3
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start < a.end  # overlapping
        assert text[b.start:b.start + 8] == "Sentence"  # starts at a sentence boundary


def test_overlong_sentence_is_split_within_limit(counter):
    text = "word " * 3000 + "end."
    chunks = chunk_text("d", text, counter, 100, 10)
    _check(text, chunks, counter, 100)
    assert chunks[-1].text.endswith("end.")


def test_many_articles_at_once_chunk_exactly_as_one_by_one(counter):
    """The indexer chunks 1,000 articles per tokenizer batch: the chunks must not depend on it."""
    root = Path(__file__).resolve().parent.parent / "eval"
    articles = [(p.name, p.read_text()) for p in sorted((root / "corpus").glob("*.txt"))]
    articles += [(p.name, p.read_text()) for p in sorted((root / "news" / "articles").glob("*.txt"))]
    articles.append(("long", "word " * 700 + "end."))  # an over-long sentence, cut into windows
    for limit, overlap in ((200, 40), (60, 20)):
        assert chunk_texts(articles, counter, limit, overlap) == [chunk_text(d, t, counter, limit, overlap)
                                                                  for d, t in articles]
