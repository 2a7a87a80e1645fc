"""The SQLite results store: idempotent adds, kinds kept apart, a writer thread beside readers."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from ragscale.errors import UserError
from ragscale.store import ResultsStore


def test_add_is_insert_or_ignore_and_kinds_are_separate(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    assert store.add("rag", "a", {"x": 1, "golds": ["p", "q"]}) is True
    assert store.add("rag", "a", {"x": 2}) is False  # the first record is kept
    assert store.add("search", "a", {"y": 3}) is True
    assert store.done_keys("rag") == {"a"} and store.done_keys("search") == {"a"}
    assert store.records("rag") == [{"x": 1, "golds": ["p", "q"], "key": "a"}]
    frame = store.frame("search")
    assert list(frame["y"]) == [3] and store.count("rag") == 1
    assert store.frame("nothing").empty


def test_records_survive_reopening_and_use_wal(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultsStore(path).add("rag", "k1", {"v": 1.5})
    again = ResultsStore(path)
    assert again.records("rag")[0]["v"] == 1.5
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_background_writer_with_concurrent_readers(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    seen_counts = []

    def write():
        for i in range(200):
            store.add("rag", f"k{i}", {"i": i})

    writer = threading.Thread(target=write)
    writer.start()
    reader = ResultsStore(tmp_path / "r.sqlite")  # a page opens its own store on the same file
    while writer.is_alive():
        seen_counts.append(len(reader.records("rag")))
    writer.join()
    assert seen_counts == sorted(seen_counts)  # readers only ever see committed, growing data
    assert reader.count("rag") == 200 and reader.done_keys("rag") == {f"k{i}" for i in range(200)}


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_text("this is not sqlite " * 100)
    with pytest.raises(UserError, match="not a ragscale results store"):
        ResultsStore(bad)


def _store_with_rows(path, n=300):
    store = ResultsStore(path)
    con = sqlite3.connect(path)  # one transaction: quicker than n commits
    con.executemany("INSERT INTO records (kind, key, record) VALUES ('rag', ?, ?)",
                    [(f"k{i}", json.dumps({"i": i, "pad": "x" * 200})) for i in range(n)])
    con.commit()
    con.close()
    return store


def test_read_only_viewing_creates_nothing_and_changes_nothing(tmp_path):
    import os

    # a plain (rollback-journal) SQLite store someone else made: viewing it must not switch it to WAL
    path = tmp_path / "theirs.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE records (kind TEXT, key TEXT, record TEXT, added REAL, PRIMARY KEY (kind, key))")
    con.execute("INSERT INTO records VALUES ('rag', 'a', '{\"v\": 1}', 0)")
    con.commit()
    con.close()
    before = path.read_bytes()
    viewer = ResultsStore(path, read_only=True)
    assert viewer.records("rag") == [{"v": 1, "key": "a"}]
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["theirs.sqlite"]
    with pytest.raises(UserError, match="read-only"):
        viewer.add("rag", "b", {})
    # a WAL store of ours, no writer attached: no -wal/-shm side files appear either
    _store_with_rows(tmp_path / "ours.sqlite", 3)
    assert ResultsStore(tmp_path / "ours.sqlite", read_only=True).count("rag") == 3
    assert sorted(os.listdir(tmp_path)) == ["ours.sqlite", "theirs.sqlite"]
    # a typed path in a folder that does not exist: no folder is made
    with pytest.raises(UserError, match="no results file"):
        ResultsStore(tmp_path / "new" / "dir" / "r.sqlite", read_only=True)
    assert not (tmp_path / "new").exists()


def test_files_that_are_no_store_give_one_clear_line(tmp_path):
    import os

    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    before = other.read_bytes()
    os.mkfifo(tmp_path / "pipe.sqlite")
    for path, says in (("/etc/passwd", "not an SQLite file"), ("/dev/zero", "not a regular file"),
                       (tmp_path / "pipe.sqlite", "not a regular file"), (other, "not a ragscale results store")):
        for read_only in (True, False):
            with pytest.raises(UserError, match=says):
                ResultsStore(path, read_only=read_only)
    assert other.read_bytes() == before  # no table was added to someone else's database


def test_a_damaged_store_is_found_when_opened_for_writing_and_when_read(tmp_path):
    import random

    path = tmp_path / "r.sqlite"
    _store_with_rows(path)
    size = path.stat().st_size
    with open(path, "r+b") as handle:  # random bytes over the last page
        handle.seek(size - 4096)
        handle.write(random.Random(0).randbytes(4096))
    with pytest.raises(UserError, match="is damaged"):
        ResultsStore(path)
    viewer = ResultsStore(path, read_only=True)
    with pytest.raises(UserError, match="is damaged"):
        viewer.records("rag")


def _make_immutable(path) -> bool:
    """chattr +i (even root cannot write then), or chmod when not root; False when neither works."""
    import os
    import subprocess

    if os.geteuid() != 0:
        path.chmod(0o444)
        return True
    try:
        return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def _undo_immutable(path) -> None:
    import os
    import subprocess

    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o644)


def test_a_store_that_cannot_be_written_is_refused_when_opened(tmp_path):
    path = tmp_path / "r.sqlite"
    _store_with_rows(path, 2)
    if not _make_immutable(path):
        pytest.skip("cannot make a file read-only here (root without chattr)")
    try:
        with pytest.raises(UserError, match="cannot write the results store"):
            ResultsStore(path)
        assert ResultsStore(path, read_only=True).count("rag") == 2  # viewing still works
    finally:
        _undo_immutable(path)


def test_discard_if_empty_removes_only_a_file_this_writer_created(tmp_path):
    fresh = ResultsStore(tmp_path / "fresh.sqlite")
    assert fresh.discard_if_empty() and not (tmp_path / "fresh.sqlite").exists()
    kept = ResultsStore(tmp_path / "kept.sqlite")
    kept.add("rag", "a", {})
    assert not kept.discard_if_empty() and (tmp_path / "kept.sqlite").exists()
    again = ResultsStore(tmp_path / "kept.sqlite")  # it existed before: never removed
    assert not again.discard_if_empty()


def test_a_read_only_viewer_watches_a_live_writer_and_leaves_nothing_behind(tmp_path):
    import os

    path = tmp_path / "r.sqlite"
    writer = ResultsStore(path)
    viewer = ResultsStore(path, read_only=True)
    seen = []

    def write():
        for i in range(200):
            writer.add("rag", f"k{i}", {"i": i})

    thread = threading.Thread(target=write)
    thread.start()
    while thread.is_alive():
        seen.append(viewer.count("rag"))  # through the WAL while the writer lives: never torn
    thread.join()
    assert seen == sorted(seen) and viewer.count("rag") == 200
    writer.close()  # the writer's last close checkpoints and removes its side files
    assert viewer.count("rag") == 200 and sorted(os.listdir(tmp_path)) == ["r.sqlite"]
