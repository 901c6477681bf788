"""`rag status`: what the index holds and whether it passes the consistency check.

Each store checks itself (`verify`): the file store's quick check reads the FAISS file's header
instead of loading it, so `rag status` never imports faiss; `deep=True` (`rag doctor`) loads the
vectors, checks every file against the sha256 the manifest recorded at publish, and runs SQLite's
integrity check.
"""

from __future__ import annotations

import sqlite3

from rag.config import Settings
from rag.embed import embedder_dir, embedder_identity
from rag.errors import RagError
from rag.store import REBUILD_HINT
from rag.stores import location, open_store
from rag.vector_index import summary as vector_index_summary


def index_status(settings: Settings, deep: bool = False) -> dict:
    report: dict = {"index": location(settings)}
    try:
        identity = embedder_identity(embedder_dir(settings.embedder))
        identity.pop("precision")  # the model must match; which export queries use is `rag ask`'s choice
        reader = open_store(settings, identity, load_vectors=deep)
    except RagError as e:
        report.update(consistent=False, problem=e.message, hint=e.hint)
        return report
    try:
        manifest = reader.manifest
        reader.verify(deep)
        first, last = reader.date_range()
        report.update(
            state=reader.state,
            store=reader.kind,
            articles=manifest["counts"]["articles"],
            chunks=manifest["counts"]["chunks"],
            vectors=manifest["counts"]["vectors"],
            vector_index=getattr(reader, "vector_index", None) or vector_index_summary(manifest.get("vector_index")),
            embedder=manifest["embedder"]["name"],
            embedder_dim=manifest["embedder"]["dim"],
            chunker=manifest["chunker"],
            sources=len(reader.sources()),
            dates=f"{first} .. {last}" if first else None,
            created=manifest.get("created_at"),
            updated=manifest.get("updated_at"),
            consistent=True,
        )
    except RagError as e:
        report.update(consistent=False, problem=e.message, hint=e.hint)
    except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
        report.update(consistent=False, problem=f"metadata database of {location(settings)} is damaged ({e})",
                      hint=REBUILD_HINT)
    finally:
        reader.close()
    return report
