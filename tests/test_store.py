"""The SQLite results store: idempotent adds, kinds kept apart, a writer thread beside readers."""

from __future__ import annotations

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
