"""Sentence-aware, token-bounded chunks with character offsets into the original text.

Shape: an article's text -> sentence spans (rag.sentences) -> pieces no longer than the token
limit (an over-long sentence is cut at token boundaries) -> greedy packing of whole pieces into
chunks of at most `max_tokens` embedder tokens, each new chunk repeating up to `overlap` tokens
of whole trailing pieces from the previous one. Every chunk is re-counted at the end, so no chunk
is ever truncated by the embedder, whatever the tokenizer does at piece joins.
"""

from __future__ import annotations

from typing import Protocol

from rag.sentences import sentence_spans
from rag.types import Chunk


class Counter(Protocol):
    def count(self, texts: list[str]) -> list[int]: ...

    def offsets(self, text: str) -> list[tuple[int, int]]: ...


def _pieces(text: str, spans: list[tuple[int, int]], counts: list[int], counter: Counter,
            max_tokens: int) -> list[tuple[int, int, int]]:
    """(start, end, n_tokens) for every sentence, with over-long sentences cut into windows."""
    pieces: list[tuple[int, int, int]] = []
    window = max(8, max_tokens - 8)  # margin for tokens that change at a cut inside a word
    for (s, e), n in zip(spans, counts, strict=True):
        if n <= max_tokens:
            pieces.append((s, e, n))
            continue
        offs = [(s + a, s + b) for a, b in counter.offsets(text[s:e])]
        for i in range(0, len(offs), window):
            group = offs[i:i + window]
            pieces.append((group[0][0], group[-1][1], len(group)))
    return pieces


def _pack(pieces: list[tuple[int, int, int]], max_tokens: int, overlap: int) -> list[list[int]]:
    """Group piece indexes into chunks; returns lists of piece indexes."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    fresh = 0  # pieces in `current` not repeated from the previous chunk
    for i, (_, _, n) in enumerate(pieces):
        if current and total + n > max_tokens and fresh:
            groups.append(current)
            carry: list[int] = []
            carried = 0
            for j in reversed(current):
                if carried + pieces[j][2] > overlap or carried + pieces[j][2] + n > max_tokens:
                    break
                carry.insert(0, j)
                carried += pieces[j][2]
            current, total, fresh = carry, carried, 0
        current.append(i)
        total += n
        fresh += 1
    if current and fresh:
        groups.append(current)
    return groups


def chunk_text(doc_id: str, text: str, counter: Counter, max_tokens: int = 200,
               overlap: int = 40) -> list[Chunk]:
    """Split one article into chunks; `text[chunk.start:chunk.end] == chunk.text` always."""
    return chunk_texts([(doc_id, text)], counter, max_tokens, overlap)[0]


def chunk_texts(articles: list[tuple[str, str]], counter: Counter, max_tokens: int = 200,
                overlap: int = 40) -> list[list[Chunk]]:
    """chunk_text for many (doc_id, text) at once: the tokenizer gets two large batches (every
    sentence, then every packed chunk) instead of one small call per chunk, which is most of the
    cost of chunking a big collection."""
    spans = [sentence_spans(text) for _, text in articles]
    counts = iter(counter.count([text[s:e] for (_, text), sp in zip(articles, spans, strict=True) for s, e in sp]))
    packed = []  # per article: the (start, end) of each packed group
    for (_, text), sp in zip(articles, spans, strict=True):
        pieces = _pieces(text, sp, [next(counts) for _ in sp], counter, max_tokens)
        packed.append([(pieces[g[0]][0], pieces[g[-1]][1]) for g in _pack(pieces, max_tokens, overlap)])
    totals = iter(counter.count([text[s:e] for (_, text), groups in zip(articles, packed, strict=True)
                                 for s, e in groups]))
    out = []
    for (doc_id, text), groups in zip(articles, packed, strict=True):
        chunks: list[Chunk] = []
        for start, end in groups:
            n = next(totals)
            chunks.extend([Chunk("", "", 0, start, end, text[start:end], n)] if n <= max_tokens
                          else _bounded(text, start, end, counter, max_tokens))
        out.append([Chunk(chunk_id=f"{doc_id}:{c.start}-{c.end}", doc_id=doc_id, ordinal=i, start=c.start,
                          end=c.end, text=c.text, n_tokens=c.n_tokens) for i, c in enumerate(chunks)])
    return out


def _bounded(text: str, start: int, end: int, counter: Counter, max_tokens: int) -> list[Chunk]:
    """The span as one chunk when its real token count fits, else halved at a token boundary."""
    n = counter.count([text[start:end]])[0]
    if n <= max_tokens:
        return [Chunk("", "", 0, start, end, text[start:end], n)]
    offs = counter.offsets(text[start:end])
    cut = start + offs[len(offs) // 2][0]
    while cut < end and text[cut].isspace():
        cut += 1
    left_end = cut
    while left_end > start and text[left_end - 1].isspace():
        left_end -= 1
    if left_end <= start or cut >= end:  # cannot cut: a single token run (never happens in practice)
        return [Chunk("", "", 0, start, end, text[start:end], n)]
    return _bounded(text, start, left_end, counter, max_tokens) + _bounded(text, cut, end, counter,
                                                                          max_tokens)
