"""A small SQLite store for per-item experiment results (RAG sweeps, tree searches).

One table of JSON records keyed by (kind, key). Every ``add`` commits at once and ignores a
key that is already there, so a sweep can be killed at any moment and rerun: it asks
``done_keys`` what is finished and repeats none of it. WAL mode lets a background writer and
page readers (other threads or processes) work on one file at the same time.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pandas as pd

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind    TEXT NOT NULL,
    key     TEXT NOT NULL,
    record  TEXT NOT NULL,
    added   REAL NOT NULL DEFAULT (julianday('now')),
    PRIMARY KEY (kind, key)
)
"""


class ResultsStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            with self._connect() as con:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            from ragscale.errors import UserError

            raise UserError(f"{self.path} is not a ragscale results store ({exc})") from exc

    def _connect(self) -> sqlite3.Connection:
        # A connection per operation: cheap for SQLite, and safe across threads.
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.execute("PRAGMA busy_timeout=30000")
        return con

    def add(self, kind: str, key: str, record: dict[str, Any]) -> bool:
        """Store one record; returns False when (kind, key) was already there (it is kept)."""
        text = json.dumps(record, default=_jsonable)
        with self._lock:
            con = self._connect()
            try:
                cur = con.execute("INSERT OR IGNORE INTO records (kind, key, record) VALUES (?, ?, ?)", (kind, key, text))
                return cur.rowcount == 1
            finally:
                con.close()

    def done_keys(self, kind: str) -> set[str]:
        con = self._connect()
        try:
            return {row[0] for row in con.execute("SELECT key FROM records WHERE kind = ?", (kind,))}
        finally:
            con.close()

    def records(self, kind: str) -> list[dict]:
        con = self._connect()
        try:
            rows = con.execute("SELECT key, record FROM records WHERE kind = ? ORDER BY rowid", (kind,)).fetchall()
        finally:
            con.close()
        return [dict(json.loads(text), key=key) for key, text in rows]

    def frame(self, kind: str) -> pd.DataFrame:
        return pd.DataFrame(self.records(kind))

    def count(self, kind: str) -> int:
        con = self._connect()
        try:
            return con.execute("SELECT COUNT(*) FROM records WHERE kind = ?", (kind,)).fetchone()[0]
        finally:
            con.close()


def _jsonable(value: Any) -> Any:
    # numpy scalars and other odd values a record may carry
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
