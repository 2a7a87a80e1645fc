"""The results viewer reads with bounds and creates no side files (issue #24, item 6)."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from ragscale.errors import UserError
from ragscale.store import ResultsStore

MAX_RECORD_BYTES = 16 * 2**20  # ragscale.store.MAX_RECORD_BYTES


def _view_store(path, row_bytes: int, rows: int = 2):
    """A 4 KB file whose ``records`` is a view that makes huge rows out of nothing."""
    con = sqlite3.connect(path)
    con.execute(f"CREATE VIEW records AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) "
                f"SELECT 'rag' AS kind, 'k' || i AS key, '{{\"t\": \"' || printf('%.*c', {row_bytes}, 'x') || '\"}}' AS record, "
                "0.0 AS added FROM n")
    con.commit()
    con.close()


def test_a_records_view_is_refused(tmp_path):
    path = tmp_path / "view.sqlite"
    _view_store(path, 20 * 2**20)
    assert path.stat().st_size < 16_384
    with pytest.raises(UserError, match="not a ragscale results store"):
        ResultsStore(path, read_only=True).records("rag")


def test_a_row_over_the_cap_is_refused_without_being_built(tmp_path, monkeypatch):
    """The same rows from a real table: SQLite refuses a value over the length limit."""
    path = tmp_path / "big.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE records (kind TEXT NOT NULL, key TEXT NOT NULL, record TEXT NOT NULL, "
                "added REAL NOT NULL DEFAULT 0, PRIMARY KEY (kind, key))")
    con.execute("INSERT INTO records (kind, key, record) VALUES ('rag', 'k', ?)", ('{"t": "' + "x" * (MAX_RECORD_BYTES + 10) + '"}',))
    con.commit()
    con.close()
    with pytest.raises(UserError, match="record over"):
        ResultsStore(path, read_only=True).records("rag")


def test_total_bytes_read_are_capped(tmp_path, monkeypatch):
    path = tmp_path / "many.sqlite"
    store = ResultsStore(path)
    for i in range(40):
        store.add("rag", f"k{i}", {"text": "y" * 50_000})
    store.close()
    monkeypatch.setenv("RAGSCALE_MAX_FILE_MB", "1")
    with pytest.raises(UserError, match="more than 1 MB"):
        ResultsStore(path, read_only=True).records("rag")
    monkeypatch.setenv("RAGSCALE_MAX_FILE_MB", "4")
    assert len(ResultsStore(path, read_only=True).records("rag")) == 40


def test_viewing_a_wal_store_with_a_wal_but_no_shm_creates_no_shm(tmp_path):
    source = tmp_path / "live.sqlite"
    writer = ResultsStore(source)
    writer.add("rag", "a", {"x": 1})
    assert (tmp_path / "live.sqlite-wal").exists()
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(source, copy / "s.sqlite")  # a crashed writer's files: the -wal, no -shm
    shutil.copy(f"{source}-wal", copy / "s.sqlite-wal")
    writer.close()
    before = sorted(p.name for p in copy.iterdir())
    viewer = ResultsStore(copy / "s.sqlite", read_only=True)
    viewer.records("rag")
    viewer.count("rag")
    assert sorted(p.name for p in copy.iterdir()) == before
