"""Store round trip, incremental add/update/delete, no-op re-index, consistency refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.config import Settings
from rag.embed import FakeEmbedder
from rag.errors import IndexBroken, IndexLocked, IndexMissing, RagError, UsageError
from rag.indexer import index_paths
from rag.status import index_status
from rag.store import IndexWriter, open_index


def _index(paths, tmp_path, counter, embedder=None, **kw):
    settings = Settings(index=str(tmp_path / "idx"), **{k: v for k, v in kw.items() if k != "rebuild"})
    return index_paths([str(p) for p in paths], settings, embedder=embedder or FakeEmbedder(),
                       counter=counter, rebuild=kw.get("rebuild", False))


def _contents(index_dir: Path) -> dict:
    reader = open_index(index_dir)
    rows = reader.db.execute('SELECT chunk_id, text FROM chunks ORDER BY chunk_id').fetchall()
    articles = dict(reader.db.execute("SELECT doc_id, content_hash FROM articles").fetchall())
    n = reader.vectors.ntotal
    reader.close()
    return {"chunks": rows, "articles": articles, "vectors": n}


def test_round_trip_and_noop(corpus, tmp_path, counter):
    first = _index([corpus], tmp_path, counter)
    assert (first.added, first.updated, first.removed, first.unchanged) == (5, 0, 0, 0)
    assert first.chunks_embedded == first.chunks > 5
    reader = open_index(tmp_path / "idx")
    assert reader.vectors.ntotal == first.chunks
    article = reader.article("000_7e1cbb29f31f5564.txt")
    assert article.date == "2019-02-20"
    for row in reader.db.execute('SELECT doc_id, start, "end", text FROM chunks'):
        assert reader.article(row[0]).text[row[1]:row[2]] == row[3]
    reader.close()
    embedder = FakeEmbedder()
    again = _index([corpus], tmp_path, counter, embedder=embedder)
    assert (again.unchanged, again.chunks_embedded, embedder.calls) == (5, 0, 0)


def test_update_and_delete(corpus, tmp_path, counter):
    _index([corpus], tmp_path, counter)
    before = _contents(tmp_path / "idx")
    changed = corpus / "003_bec82752a72c5b16.txt"
    changed.write_text(changed.read_text(encoding="utf-8") + "\nA new closing sentence.\n", encoding="utf-8")
    (corpus / "004_54675ee963de578f.txt").unlink()
    summary = _index([corpus], tmp_path, counter)
    assert (summary.updated, summary.removed, summary.unchanged) == (1, 1, 3)
    assert summary.removed_ids == ["004_54675ee963de578f.txt"]
    after = _contents(tmp_path / "idx")
    assert "004_54675ee963de578f.txt" not in after["articles"]
    assert after["vectors"] == len(after["chunks"])
    assert after["articles"]["003_bec82752a72c5b16.txt"] != before["articles"]["003_bec82752a72c5b16.txt"]


def test_other_folder_is_not_removed(corpus, tmp_path, counter):
    _index([corpus], tmp_path, counter)
    other = tmp_path / "other"
    other.mkdir()
    (other / "new.txt").write_text("A different article about rainfall in Lahore.\n", encoding="utf-8")
    summary = _index([other], tmp_path, counter)
    assert (summary.added, summary.removed, summary.articles) == (1, 0, 6)


def test_chunker_change_reembeds_and_embedder_change_is_never_mixed(corpus, tmp_path, counter):
    _index([corpus], tmp_path, counter)
    changed = _index([corpus], tmp_path, counter, chunk_tokens=100)
    assert changed.updated == 5 and changed.chunks_embedded == changed.chunks
    other = FakeEmbedder(dim=32, name="other-embedder")
    swapped = _index([corpus], tmp_path, counter, embedder=other, chunk_tokens=100)
    assert swapped.updated == 5
    reader = open_index(tmp_path / "idx", other.identity)
    assert reader.manifest["embedder"]["name"] == "other-embedder" and reader.vectors.d == 32
    reader.close()
    with pytest.raises(IndexBroken, match="embedder"):
        open_index(tmp_path / "idx", FakeEmbedder().identity)


def test_missing_index_and_nothing_to_index(tmp_path, counter):
    with pytest.raises(IndexMissing):
        open_index(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="nothing to index"):
        _index([empty], tmp_path, counter)


def test_second_writer_fails_cleanly(corpus, tmp_path, counter):
    _index([corpus], tmp_path, counter)
    with IndexWriter(tmp_path / "idx", lock_timeout=0.1):
        with pytest.raises(IndexLocked, match="another `rag index`"):
            _index([corpus], tmp_path, counter, lock_timeout=0.2)
    assert _index([corpus], tmp_path, counter).unchanged == 5


def test_failed_write_keeps_previous_state(corpus, tmp_path, counter, monkeypatch):
    _index([corpus], tmp_path, counter)
    before = _contents(tmp_path / "idx")
    (corpus / "new.txt").write_text("Something new happened in Islamabad today.\n", encoding="utf-8")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("rag.store._fsync_path", boom)
    with pytest.raises(RagError, match="No space left on device.*unchanged"):
        _index([corpus], tmp_path, counter)
    monkeypatch.undo()
    assert _contents(tmp_path / "idx") == before
    assert not list((tmp_path / "idx").glob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate_faiss", "flip_sqlite", "edit_manifest", "plant_pickle",
                                    "bad_current"])
def test_damaged_index_is_refused_with_a_hint(corpus, tmp_path, counter, damage):
    _index([corpus], tmp_path, counter)
    state = open_index(tmp_path / "idx").path
    if damage == "truncate_faiss":
        f = state / "vectors.faiss"
        f.write_bytes(f.read_bytes()[:200])
    elif damage == "flip_sqlite":
        f = state / "meta.sqlite"
        data = bytearray(f.read_bytes())
        for i in range(0, len(data), 97):
            data[i] ^= 0xFF
        f.write_bytes(bytes(data))
    elif damage == "edit_manifest":
        m = json.loads((state / "manifest.json").read_text())
        m["counts"]["chunks"] += 3
        (state / "manifest.json").write_text(json.dumps(m))
    elif damage == "plant_pickle":
        (state / "evil.pkl").write_bytes(b"\x80\x04K\x01.")
    else:
        (tmp_path / "idx" / "CURRENT").write_text("../../etc")
    with pytest.raises(IndexBroken) as err:
        open_index(tmp_path / "idx")
    assert err.value.hint and ("rebuild" in err.value.hint or "delete" in err.value.hint)
    report = index_status(Settings(index=str(tmp_path / "idx")), deep=True)
    assert report["consistent"] is False and report["problem"]
