"""A re-index skips files unchanged since the last run, and still notices every change."""

from __future__ import annotations

import os
import sqlite3

import pytest

from rag import ingest
from rag.file_stamps import FILE_NAME
from rag.store import IndexWriter, open_index
from tests.hardening import build_index


@pytest.fixture
def trusting(monkeypatch):
    """Files written by the test count as settled at once (the real rule waits RACY_SECONDS)."""
    monkeypatch.setattr(ingest, "RACY_SECONDS", 0.0)


@pytest.fixture
def reads(monkeypatch):
    """The files actually read, in order."""
    seen: list[str] = []
    original = ingest._read_file_records

    def spy(path, rel, ext, out, walk):
        seen.append(rel)
        return original(path, rel, ext, out, walk)

    monkeypatch.setattr(ingest, "_read_file_records", spy)
    return seen


def _folder(tmp_path, n=4):
    folder = tmp_path / "news"
    folder.mkdir()
    for i in range(n):
        (folder / f"a{i}.txt").write_text(f"Story {i}\n\nThe council met on day {i} and voted on the budget.\n")
    return folder


def test_unchanged_files_are_not_read_again(tmp_path, trusting, reads):
    folder = _folder(tmp_path)
    first = build_index(tmp_path / "idx", [folder])
    assert first.added == 4 and sorted(reads) == ["a0.txt", "a1.txt", "a2.txt", "a3.txt"]
    published = (tmp_path / "idx" / "CURRENT").read_text()
    states = sorted(p.name for p in (tmp_path / "idx").glob("state-*"))
    reads.clear()
    again = build_index(tmp_path / "idx", [folder])
    assert (again.unchanged, again.added, again.updated, again.removed) == (4, 0, 0, 0)
    assert (again.articles, again.chunks) == (first.articles, first.chunks)
    assert reads == []
    # Nothing changed, so nothing was written: the same state stays published, no new one appears.
    assert (tmp_path / "idx" / "CURRENT").read_text() == published
    assert sorted(p.name for p in (tmp_path / "idx").glob("state-*")) == states


def test_a_changed_file_is_read_even_with_its_old_size_and_mtime(tmp_path, trusting, reads):
    folder = _folder(tmp_path)
    build_index(tmp_path / "idx", [folder])
    target = folder / "a2.txt"
    before = target.stat()
    target.write_text(target.read_text().replace("budget", "bridge"))  # same length
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back; ctime moves on
    reads.clear()
    again = build_index(tmp_path / "idx", [folder])
    assert (again.updated, again.unchanged) == (1, 3) and reads == ["a2.txt"]
    reader = open_index(tmp_path / "idx")
    assert "bridge" in reader.article("a2.txt").text
    reader.close()


def test_sidecar_change_deleted_file_and_new_file(tmp_path, trusting, reads):
    folder = _folder(tmp_path)
    build_index(tmp_path / "idx", [folder])
    (folder / "a1.txt.meta.json").write_text('{"source": "Wire Service"}')
    (folder / "a3.txt").unlink()
    (folder / "a9.txt").write_text("Story 9\n\nA new story about the harbour.\n")
    reads.clear()
    again = build_index(tmp_path / "idx", [folder])
    assert (again.updated, again.removed, again.added, again.unchanged) == (1, 1, 1, 2)
    assert sorted(reads) == ["a1.txt", "a9.txt"]
    reader = open_index(tmp_path / "idx")
    assert reader.article("a1.txt").source == "Wire Service" and reader.article("a3.txt") is None
    reader.close()


def test_the_store_decides_when_it_disagrees_with_the_stamps(tmp_path, trusting, reads):
    """An article removed from the store behind the stamps' back is read and added again."""
    folder = _folder(tmp_path)
    build_index(tmp_path / "idx", [folder])
    with IndexWriter(tmp_path / "idx") as writer:
        writer.remove(["a0.txt"])
        writer.publish(writer.previous["embedder"], writer.previous["chunker"])
    reads.clear()
    again = build_index(tmp_path / "idx", [folder])
    assert (again.added, again.unchanged) == (1, 3) and reads == ["a0.txt"]


def test_recent_files_and_a_damaged_stamp_file_are_read(tmp_path, monkeypatch, reads):
    folder = _folder(tmp_path)
    monkeypatch.setattr(ingest, "RACY_SECONDS", 1e9)  # everything was just written
    build_index(tmp_path / "idx", [folder])
    reads.clear()
    assert build_index(tmp_path / "idx", [folder]).unchanged == 4 and len(reads) == 4
    monkeypatch.setattr(ingest, "RACY_SECONDS", 0.0)
    build_index(tmp_path / "idx", [folder])
    (tmp_path / "idx" / FILE_NAME).write_bytes(b"not a database at all" * 100)
    reads.clear()
    assert build_index(tmp_path / "idx", [folder]).unchanged == 4 and len(reads) == 4


def test_other_reader_settings_read_everything_again(tmp_path, trusting, reads):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "rows.csv").write_text("body,headline\nThe port reopened after the storm.,Port reopens\n")
    from rag.config import Settings
    from rag.formats import Options
    from rag.indexer import index_paths
    from tests.hardening import shaped_embedder, token_counter

    def run(columns):
        return index_paths([str(folder)], Settings(index=str(tmp_path / "idx")), embedder=shaped_embedder(),
                           counter=token_counter(), options=Options(csv_columns=columns))

    run({"text": "body", "title": "headline"})
    reads.clear()
    run({"text": "body", "title": "headline"})
    assert reads == []
    run({"text": "body"})
    assert reads == ["rows.csv"]
    rows = sqlite3.connect(tmp_path / "idx" / FILE_NAME).execute("SELECT count(*) FROM files").fetchone()[0]
    assert rows == 1  # the latest settings' stamp replaced the earlier one
