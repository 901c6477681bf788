"""What each file looked like when `rag index` last read it, so that a re-index skips unchanged files.

A re-index of 100k unchanged articles would otherwise read, parse and hash every one of them
again. The stamps are only a hint: the indexer still compares each article's content hash with
what the store holds, and reads the file whenever they disagree. They live in one SQLite file
beside the index (`files.sqlite` in its folder; for a remote store, in its local cache folder),
keyed by the reader settings and rag's version, so a different `--csv-columns` or an upgraded
reader reads everything again.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from rag import __version__, formats
from rag.ingest import FileRecord

FILE_NAME = "files.sqlite"


def _key(options: formats.Options | None) -> str:
    columns = (options or formats.Options()).csv_columns
    return json.dumps({"rag": __version__, "csv_columns": sorted(columns.items())})


def _connect(folder: Path) -> sqlite3.Connection:
    db = sqlite3.connect(folder / FILE_NAME)
    db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, settings TEXT NOT NULL, "
               "stamp TEXT NOT NULL, rel TEXT NOT NULL, articles TEXT NOT NULL)")
    return db


def load(folder: Path, options: formats.Options | None) -> dict[str, FileRecord]:
    """The stamps recorded with these reader settings ({} when there are none or the file is bad)."""
    if not (folder / FILE_NAME).is_file():
        return {}
    try:
        db = _connect(folder)
        try:
            rows = db.execute("SELECT path, stamp, rel, articles FROM files WHERE settings = ?", (_key(options),))
            return {path: FileRecord(stamp, rel, tuple(map(tuple, json.loads(articles))))
                    for path, stamp, rel, articles in rows}
        finally:
            db.close()
    except (sqlite3.DatabaseError, ValueError, TypeError):
        return {}  # a damaged hint costs one full read, nothing else


def save(folder: Path, options: formats.Options | None, before: dict[str, FileRecord],
         now: dict[str, FileRecord], roots: list[str]) -> None:
    """Record the stamps of this run: changed ones written, files gone from the scanned roots dropped."""
    key = _key(options)
    changed = [(path, record) for path, record in now.items() if before.get(path) != record]
    prefixes = tuple(root.rstrip("/") + "/" for root in roots)
    gone = [path for path in before if path not in now and path.startswith(prefixes)]
    if not changed and not gone:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        db = _connect(folder)
        try:
            with db:
                db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in gone])
                db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?)",
                               [(path, key, r.stamp, r.rel, json.dumps(r.articles)) for path, r in changed])
        finally:
            db.close()
    except (sqlite3.DatabaseError, OSError):
        pass  # only a hint: the next run reads the files again

