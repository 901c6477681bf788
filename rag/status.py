"""`rag status`: what the index holds and whether it passes the consistency check.

The quick check reads the FAISS file's header (dimension and vector count) instead of loading
it, so `rag status` never imports faiss; `deep=True` (`rag doctor`) loads the vectors, checks
every file against the sha256 the manifest recorded at publish, and runs SQLite's integrity check.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

from rag.config import Settings
from rag.embed import embedder_dir, embedder_identity
from rag.errors import IndexBroken, RagError
from rag.store import REBUILD_HINT, check_checksums, check_vectors, open_index


def faiss_header(path: Path) -> tuple[int, int]:
    """(dimension, vector count) from an IndexIDMap2 file header, checking the file is long enough."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
        size = path.stat().st_size
    except OSError as e:
        raise IndexBroken(f"cannot read vector file {path}: {e.strerror}", REBUILD_HINT) from None
    if len(head) < 16 or head[:4] not in (b"IxM2", b"IxMp"):
        raise IndexBroken(f"vector file {path} is not a rag FAISS index", REBUILD_HINT)
    dim, count = struct.unpack("<iq", head[4:16])
    if dim <= 0 or count < 0 or size < count * (dim * 4 + 8):
        raise IndexBroken(f"vector file {path} is truncated ({size} bytes for {count} vectors)", REBUILD_HINT)
    return dim, count


def index_status(settings: Settings, deep: bool = False) -> dict:
    report: dict = {"index": str(Path(settings.index).resolve())}
    try:
        identity = embedder_identity(embedder_dir(settings.embedder))
        reader = open_index(settings.index, identity, load_vectors=deep)
    except RagError as e:
        report.update(consistent=False, problem=e.message, hint=e.hint)
        return report
    try:
        manifest = reader.manifest
        if deep:
            check_vectors(reader)
            check_checksums(reader)
            verdict = reader.db.execute("PRAGMA integrity_check").fetchone()[0]
            if verdict != "ok":
                raise IndexBroken(f"metadata database fails its integrity check: {verdict}", REBUILD_HINT)
        else:
            dim, count = faiss_header(reader.path / "vectors.faiss")
            if (dim, count) != (manifest["embedder"]["dim"], manifest["counts"]["chunks"]):
                raise IndexBroken(f"{count} vectors of dimension {dim} for {manifest['counts']['chunks']} "
                                  "chunks", REBUILD_HINT)
        sources = reader.db.execute("SELECT count(DISTINCT source), min(date), max(date) FROM articles").fetchone()
        report.update(
            state=reader.path.name,
            articles=manifest["counts"]["articles"],
            chunks=manifest["counts"]["chunks"],
            vectors=manifest["counts"]["vectors"],
            embedder=manifest["embedder"]["name"],
            embedder_dim=manifest["embedder"]["dim"],
            chunker=manifest["chunker"],
            sources=sources[0],
            dates=f"{sources[1]} .. {sources[2]}" if sources[1] else None,
            created=manifest.get("created_at"),
            updated=manifest.get("updated_at"),
            consistent=True,
        )
    except RagError as e:
        report.update(consistent=False, problem=e.message, hint=e.hint)
    except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
        report.update(consistent=False, problem=f"metadata database in {reader.path} is damaged ({e})",
                      hint=REBUILD_HINT)
    finally:
        reader.close()
    return report
