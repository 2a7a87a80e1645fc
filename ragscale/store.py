"""A small SQLite store for per-item experiment results (RAG sweeps, tree searches).

One table of JSON records keyed by (kind, key). Every ``add`` commits at once and ignores a
key that is already there, so a sweep can be killed at any moment and rerun: it asks
``done_keys`` what is finished and repeats none of it. WAL mode lets a background writer and
page readers (other threads or processes) work on one file at the same time.

Two ways to open a store:

- ``ResultsStore(path)`` for one's own sweeps: creates the file (and its folder), switches it
  to WAL, and checks *before any model loads* that it is a ragscale store, undamaged and
  writable.
- ``ResultsStore(path, read_only=True)`` for viewing a file someone typed: never creates a
  folder or a file, never changes the journal mode or the schema (SQLite ``mode=ro``; a WAL
  store with no writer attached, i.e. without both its -wal and -shm, is opened ``immutable``
  so no side file appears; rows a crashed writer left only in a -wal are then not shown), and
  refuses anything that is not a regular ragscale store (``records`` must be a table: a view
  can compute rows of any size or number out of a 4 KB file).

Reads are bounded: no value over ``MAX_RECORD_BYTES`` (SQLite's own length limit, so such a
value is never built), and no more than ``RAGSCALE_MAX_FILE_MB`` of records in one read.

Every SQLite failure reaches the caller as one ``UserError`` line naming the file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from ragscale.errors import UserError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind    TEXT NOT NULL,
    key     TEXT NOT NULL,
    record  TEXT NOT NULL,
    added   REAL NOT NULL DEFAULT (julianday('now')),
    PRIMARY KEY (kind, key)
)
"""
_MAGIC = b"SQLite format 3\x00"
_SIDE_FILES = ("-wal", "-shm", "-journal")
MAX_RECORD_BYTES = 16 * 2**20  # the largest record of the shipped stores is 45 KB


def _header(path: Path) -> bytes | None:
    """The first 100 bytes of a regular file, or None when there is no file.

    Opened without blocking and checked on the descriptor: SQLite itself would wait forever
    on a FIFO.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"{path}: cannot open ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"{path} is not a regular file, so not a ragscale results store")
        return os.read(fd, 100)
    finally:
        os.close(fd)


class ResultsStore:
    def __init__(self, path: str | Path, *, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        self.created = False  # True when this writer made the file (see discard_if_empty)
        self._lock = threading.Lock()
        self._anchor: sqlite3.Connection | None = None
        if read_only:
            self._open_for_reading()
        else:
            self._open_for_writing()

    # -- opening ---------------------------------------------------------------------------
    def _not_a_store(self, why: str = "") -> UserError:
        return UserError(f"{self.path} is not a ragscale results store{f' ({why})' if why else ''}")

    def _open_for_reading(self) -> None:
        header = _header(self.path)
        if header is None:
            raise UserError(f"no results file at {self.path}")
        if not header.startswith(_MAGIC):
            raise self._not_a_store("not an SQLite file")
        with self._reading() as con:
            self._check_schema(con)

    def _open_for_writing(self) -> None:
        header = _header(self.path)
        if header is not None and header and not header.startswith(_MAGIC):
            raise self._not_a_store("not an SQLite file; choose another results file")
        if not self.path.parent.exists():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create the folder {self.path.parent} ({exc.strerror})") from None
        self.created = header is None
        try:
            with self._failures_as_user_errors():
                con = self._connect()
                try:
                    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                    if tables and "records" not in tables:  # someone else's database: leave it alone
                        raise self._not_a_store(f"an SQLite file with tables {', '.join(sorted(tables)[:5])}")
                    con.execute("PRAGMA journal_mode=WAL")
                    con.execute(_SCHEMA)
                    self._check_schema(con)
                    problems = [r[0] for r in con.execute("PRAGMA quick_check(3)")]
                    if problems != ["ok"]:
                        raise self._damaged(problems[0])
                    # Can we write? Found now, not after a model has loaded and a batch was run.
                    con.execute("BEGIN IMMEDIATE")
                    con.execute("INSERT OR IGNORE INTO records (kind, key, record) VALUES ('', '', '{}')")
                    con.execute("ROLLBACK")
                finally:
                    con.close()
                # Held open while this writer lives, so the -wal file exists all that time: readers
                # then know a writer is attached and read through the WAL (see _connect). With a
                # connection per operation only, every add would end in a checkpoint that rewrites
                # pages of the main file under a reader that opened it as immutable.
                self._anchor = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                self._anchor.execute("SELECT 1 FROM records LIMIT 1").fetchall()
        except UserError:
            if self.created:
                self._remove_files()
            raise

    def _check_schema(self, con: sqlite3.Connection) -> None:
        kind = con.execute("SELECT type FROM sqlite_master WHERE name = 'records'").fetchone()
        columns = {row[1] for row in con.execute("PRAGMA table_info(records)")}
        if kind != ("table",) or not {"kind", "key", "record"} <= columns:
            raise self._not_a_store("it has no ragscale records table")

    def _damaged(self, detail: str) -> UserError:
        return UserError(f"the results store {self.path} is damaged ({detail}); its rows cannot be trusted. "
                         "Keep a copy and start a new results file")

    @contextmanager
    def _failures_as_user_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            name = getattr(exc, "sqlite_errorname", "")
            if name.startswith("SQLITE_CORRUPT") or "malformed" in str(exc):
                raise self._damaged(str(exc)) from None
            if name == "SQLITE_NOTADB":
                raise self._not_a_store(str(exc)) from None
            if name == "SQLITE_TOOBIG":
                raise UserError(f"{self.path} holds a record over {MAX_RECORD_BYTES // 2**20} MB; "
                                "not a ragscale record, not read") from None
            if self.read_only:
                raise UserError(f"cannot read the results store {self.path} ({exc})") from None
            if name.startswith("SQLITE_READONLY") or name.startswith("SQLITE_CANTOPEN") or name == "SQLITE_PERM":
                raise UserError(f"cannot write the results store {self.path} ({exc}); "
                                "check its permissions or choose another file") from None
            raise UserError(f"the results store {self.path} cannot be used ({exc})") from None

    def _connect(self) -> sqlite3.Connection:
        # A connection per operation: cheap for SQLite, and safe across threads.
        if self.read_only:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            header = _header(self.path) or b""
            attached = all(Path(f"{self.path}{side}").exists() for side in ("-wal", "-shm"))
            if header[18:19] == b"\x02" and not attached:
                # A WAL store with no writer attached (a writer keeps its -wal and -shm files
                # while it lives): read it without creating side files beside it.
                uri += "&immutable=1"
            con = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        else:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_RECORD_BYTES)
        con.execute("PRAGMA busy_timeout=30000")
        return con

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._failures_as_user_errors():
            con = self._connect()
            try:
                yield con
            finally:
                con.close()

    # -- records ---------------------------------------------------------------------------
    def add(self, kind: str, key: str, record: dict[str, Any]) -> bool:
        """Store one record; returns False when (kind, key) was already there (it is kept)."""
        if self.read_only:
            raise UserError(f"{self.path} was opened read-only")
        text = json.dumps(record, default=_jsonable)
        with self._lock, self._reading() as con:
            cur = con.execute("INSERT OR IGNORE INTO records (kind, key, record) VALUES (?, ?, ?)", (kind, key, text))
            return cur.rowcount == 1

    def done_keys(self, kind: str) -> set[str]:
        with self._reading() as con:
            return {row[0] for row in con.execute("SELECT key FROM records WHERE kind = ?", (kind,))}

    def records(self, kind: str) -> list[dict]:
        from ragscale.deploy import max_file_bytes

        limit, size, rows = max_file_bytes(), 0, []
        with self._reading() as con:
            cursor = con.execute("SELECT key, record FROM records WHERE kind = ? ORDER BY rowid", (kind,))
            while batch := cursor.fetchmany(256):
                size += sum(len(text) for _, text in batch if isinstance(text, str))
                if size > limit:
                    raise UserError(f"the {kind} records in {self.path} hold more than {limit // 2**20:,} MB; "
                                    "not read here (RAGSCALE_MAX_FILE_MB)")
                rows += batch
        try:
            return [dict(json.loads(text), key=key) for key, text in rows]
        except (ValueError, TypeError) as exc:
            raise self._damaged(f"a record is not JSON: {exc}") from None

    def frame(self, kind: str) -> pd.DataFrame:
        return pd.DataFrame(self.records(kind))

    def count(self, kind: str) -> int:
        with self._reading() as con:
            return con.execute("SELECT COUNT(*) FROM records WHERE kind = ?", (kind,)).fetchone()[0]

    def close(self) -> None:
        """Let go of the file (a writer's last close checkpoints and removes the -wal file)."""
        anchor, self._anchor = self._anchor, None
        if anchor is not None:
            anchor.close()

    def close_as_one_file(self) -> None:
        """Let go and leave WAL mode, so the .sqlite file is complete on its own (a store shipped
        in the repository). The writer lets go first: leaving WAL mode needs the file to itself."""
        self.close()
        con = sqlite3.connect(self.path)
        try:
            con.execute("PRAGMA journal_mode=DELETE")
        finally:
            con.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    @contextmanager
    def discarded_if_unused(self):
        """``with store.discarded_if_unused(): ...``: if the block fails, a file this writer created
        and never stored a record in is removed (a failed first run leaves no empty results file)."""
        try:
            yield self
        except BaseException:
            self.discard_if_empty()
            raise

    def discard_if_empty(self) -> bool:
        """Remove the file this writer created if nothing was ever stored in it (a failed first
        run leaves no empty store behind). Returns True when it was removed."""
        if self.read_only or not self.created:
            return False
        try:
            with self._reading() as con:
                if con.execute("SELECT 1 FROM records LIMIT 1").fetchone():
                    return False
        except UserError:
            return False
        self._remove_files()
        return True

    def _remove_files(self) -> None:
        self.close()
        for suffix in ("", *_SIDE_FILES):
            try:
                Path(f"{self.path}{suffix}").unlink()
            except FileNotFoundError:
                pass
            except OSError:
                pass  # best effort: the error the caller sees matters more


def _jsonable(value: Any) -> Any:
    # numpy scalars and other odd values a record may carry
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
