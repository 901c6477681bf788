"""`rag index`: scan -> diff against the published index by content hash -> chunk -> embed -> publish.

Nothing is embedded for an unchanged article, and no model is loaded when nothing changed. An
article whose file is gone is removed only when its folder is one of the roots being indexed
now, so indexing folder B never drops what was indexed from folder A. A different embedder or
chunker setting re-embeds every affected article from the text kept in the index.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rag import file_stamps, formats, ingest
from rag.chunking import chunk_texts
from rag.config import Settings
from rag.embed import Embedder, SentenceTransformerEmbedder, TokenCounter, embedder_dir, embedder_identity
from rag.errors import UsageError
from rag.query_embed import ensure_onnx, index_embedder, onnx_path
from rag.store import IndexWriter, same_embedder
from rag.stores import local_folder, store_writer
from rag.types import Article

SPLITTER_VERSION = 1  # bump when rag.sentences or rag.chunking change how text is cut
EMBED_BATCH = 256  # chunks handed to the embedder per progress step
ARTICLE_BATCH = 1000  # articles chunked, embedded and stored together: bounds the memory of a big run


@dataclass
class Summary:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    reembedded: int = 0  # kept articles re-embedded because the embedder or chunker changed
    chunks_embedded: int = 0
    seconds: float = 0.0
    articles: int = 0
    chunks: int = 0
    skipped_hidden: int = 0
    skipped_unsupported: int = 0
    skipped_records: int = 0  # archive records without an article (requests, images, ...)
    kept_unreadable: int = 0  # articles kept from files that could not be read this time
    problems: list[ingest.Problem] = field(default_factory=list)
    removed_ids: list[str] = field(default_factory=list)


def _root_of(path: Path) -> Path:
    return path.resolve() if path.is_dir() else path.resolve().parent


def _chunker_key(settings: Settings, embedder: dict) -> dict:
    return {"chunk_tokens": settings.chunk_tokens, "chunk_overlap": settings.chunk_overlap,
            "splitter": SPLITTER_VERSION, "tokenizer": embedder["fingerprint"]}


def index_paths(paths: list[str], settings: Settings, *, rebuild: bool = False,
                embedder: Embedder | None = None, counter=None,
                progress: Callable[[int, int], None] | None = None,
                options: formats.Options | None = None) -> Summary:
    """Bring the index at settings.index up to date with `paths`; returns what changed."""
    started = time.monotonic()
    summary = Summary()
    folder = local_folder(settings)
    stamps_before = {} if rebuild else file_stamps.load(folder, options)
    stamps_now: dict[str, ingest.FileRecord] = {}
    scanned: list[tuple[Article | ingest.Known, str]] = []  # (article, root)
    seen: set[str] = set()
    unreadable: set[str] = set()  # files that failed as a whole: what they gave before is kept
    for p in paths:
        scan = ingest.scan([p], options, known=stamps_before)
        summary.problems += scan.problems
        summary.skipped_hidden += scan.skipped_hidden
        summary.skipped_unsupported += scan.skipped_unsupported
        summary.skipped_records += scan.skipped_records
        unreadable |= scan.unreadable
        stamps_now.update(scan.files)
        root = str(_root_of(Path(p))) if Path(p).exists() else ""
        for article in scan.articles:
            if article.doc_id in seen:
                summary.problems.append(ingest.Problem(article.path or article.doc_id,
                                                       f"duplicate doc id {article.doc_id}; kept the first"))
                continue
            seen.add(article.doc_id)
            scanned.append((article, root))
        scan.articles.clear()  # `scanned` holds them now; it lets each go once it is stored
    if not scanned:
        why = "; ".join(f"{p.path}: {p.reason}" for p in summary.problems[:3]) or "no articles found"
        raise UsageError(f"nothing to index in {', '.join(paths)} ({why})",
                         "give folders or article files (" + ingest.SUPPORTED_HINT.removeprefix("use ") + ")")

    model_dir = None if embedder is not None else embedder_dir(settings.embedder)
    identity = embedder.identity if embedder is not None else embedder_identity(model_dir)
    chunker = _chunker_key(settings, identity)
    chunker_json = json.dumps(chunker, sort_keys=True)
    roots = {root for _, root in scanned}

    with store_writer(settings, rebuild=rebuild) as writer:
        existing = writer.existing()
        if model_dir is not None and writer.previous is not None:
            # An index keeps the precision it was built with (older ones: fp32), so an upgrade of rag
            # never re-embeds a whole archive; --rebuild starts afresh at the default.
            identity = embedder_identity(model_dir, writer.previous["embedder"].get("precision", "fp32"))
        compatible = writer.previous is None or same_embedder(writer.previous["embedder"], identity)
        scanned = _read_stale(scanned, existing, chunker_json, compatible, options, stamps_now, summary)
        todo: list[tuple[Article, str]] = []
        for article, root in scanned:
            old = existing.get(article.doc_id)
            if old and old[2] != root and old[2] not in roots and not rebuild:
                summary.problems.append(ingest.Problem(
                    article.path or article.doc_id,
                    f"doc id {article.doc_id} is already indexed from {old[2]}; skipped (rename it, "
                    "or index from the same folder)"))
                continue
            if old and old[0] == article.content_hash and old[1] == chunker_json and compatible:
                summary.unchanged += 1
                continue
            if old:
                summary.updated += 1
            else:
                summary.added += 1
            todo.append((article, root))
        scanned_ids = {a.doc_id for a, _ in scanned}
        del scanned  # the unchanged articles' texts are not needed any more
        kept = [d for d in existing if d not in scanned_ids and _from_any(d, unreadable)]
        summary.kept_unreadable = len(kept)
        gone = [d for d, (_, _, r) in existing.items() if r in roots and d not in scanned_ids and d not in kept]
        summary.removed, summary.removed_ids = len(gone), gone
        # Articles from other roots stay, but must be re-embedded if the embedder/chunker changed.
        for doc_id, (_, chunker_old, root) in existing.items():
            if root not in roots and (not compatible or chunker_old != chunker_json):
                todo.append((writer.article(doc_id), root))
                summary.reembedded += 1
        if not compatible:
            writer.drop_vectors()  # another embedder: every vector is replaced, none is mixed in
        writer.remove(gone + [a.doc_id for a, _ in todo if a.doc_id in existing])

        if todo:
            counter = counter or TokenCounter(model_dir or embedder_dir(settings.embedder))
            embedder = embedder or SentenceTransformerEmbedder(model_dir)
            # In slices, so that memory holds one slice's chunks and vectors, not the whole run's.
            for first in range(0, len(todo), ARTICLE_BATCH):
                batch = todo[first:first + ARTICLE_BATCH]
                cut = chunk_texts([(a.doc_id, a.text) for a, _ in batch], counter, settings.chunk_tokens,
                                  settings.chunk_overlap)
                chunked = [(a, r, chunks) for (a, r), chunks in zip(batch, cut, strict=True)]
                summary.chunks_embedded += _embed_and_add(writer, chunked, embedder, chunker_json, None,
                                                          folder=folder, identity=identity)
                for i in range(first, min(first + ARTICLE_BATCH, len(todo))):
                    todo[i] = (None, todo[i][1])  # done: let its text go
                if progress:
                    progress(min(first + ARTICLE_BATCH, len(todo)), len(todo))
        # Nothing changed: the published version stays as it is (no new state, no rewrite).
        manifest = writer.publish(identity, chunker) if writer.changed or rebuild else writer.previous
        if model_dir is not None and not onnx_path(folder, identity).is_file():
            # Once per index: the torch-free query embedder that `rag ask` loads in 0.3 s instead of 6.
            why = ensure_onnx(folder, embedder or SentenceTransformerEmbedder(model_dir))
            if why:
                summary.problems.append(ingest.Problem(str(onnx_path(folder, identity)),
                                                       f"no fast query embedder ({why}); queries load torch"))
    file_stamps.save(folder, options, stamps_before, stamps_now, sorted(roots))
    summary.articles = manifest["counts"]["articles"]
    summary.chunks = manifest["counts"]["chunks"]
    summary.seconds = time.monotonic() - started
    return summary


def _read_stale(scanned, existing: dict, chunker_json: str, compatible: bool, options,
                stamps: dict, summary: Summary) -> list[tuple[Article | ingest.Known, str]]:
    """Read the unchanged-looking files whose articles the store does not hold as recorded (another
    hash, chunker or embedder, or missing): their stamps were a hint, the store decides."""
    stale: dict[str, ingest.Known] = {}
    for article, _ in scanned:
        if isinstance(article, ingest.Known):
            old = existing.get(article.doc_id)
            if not (old and old[0] == article.content_hash and old[1] == chunker_json and compatible):
                stale.setdefault(article.file, article)
    if not stale:
        return scanned
    fresh: dict[str, Article] = {}
    for file, known in stale.items():
        scan = ingest.read_file(file, known.rel, options)
        summary.problems += scan.problems
        stamps.pop(file, None)
        stamps.update(scan.files)
        fresh.update((a.doc_id, a) for a in scan.articles)
    out = []
    for article, root in scanned:
        if isinstance(article, ingest.Known) and article.file in stale:
            if article.doc_id in fresh:
                out.append((fresh[article.doc_id], root))
        else:
            out.append((article, root))
    return out


def _from_any(doc_id: str, files: set[str]) -> bool:
    """Whether `doc_id` came from one of `files` (itself, or an entry `FILE#KEY` of it)."""
    return doc_id in files or doc_id.split("#", 1)[0] in files


def _embed_and_add(writer: IndexWriter, chunked, embedder: Embedder, chunker_json: str,
                   progress: Callable[[int, int], None] | None, *, folder: Path, identity: dict) -> int:
    """Embed every chunk in large batches (the embedder sorts by length inside), then store.

    The vectors must be what `identity` (the manifest's embedder) says: for the real model at int8
    they come from the quantised ONNX export kept in `folder` (rag.query_embed.index_embedder)."""
    import numpy as np

    embedder = index_embedder(folder, embedder, identity)
    texts = [c.text for _, _, chunks in chunked for c in chunks]
    parts = []
    for i in range(0, len(texts), EMBED_BATCH):
        parts.append(embedder.embed(texts[i:i + EMBED_BATCH]))
        if progress:
            progress(min(i + EMBED_BATCH, len(texts)), len(texts))
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.identity["dim"]), np.float32)
    row = 0
    for article, root, chunks in chunked:
        writer.add(article, root, chunker_json, chunks, vectors[row:row + len(chunks)])
        row += len(chunks)
    return len(texts)


def tty_progress() -> Callable[[int, int], None] | None:
    """A progress bar on stderr when it is a terminal; None (no output) otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar: dict[str, tqdm] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, unit="article", desc="embedding", file=sys.stderr, leave=False)
        bar["bar"].update(done - bar["bar"].n)
        if done >= total:
            bar["bar"].close()

    return update
