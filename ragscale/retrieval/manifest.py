"""Verify an embedded Chroma collection before chromadb opens it.

chromadb trusts its files: with the HNSW segment folder gone, ``count()`` still says every
passage is there while only the unflushed few are found; random bytes in an HNSW file crash
the process in native code, where no ``except`` can catch it. So every finished build writes a
manifest (last, atomically): the collection, its vector segment, each segment file's size and
sha256, a digest of the collection's rows in ``chroma.sqlite3`` (passage ids, texts and
metadata, and any vectors still queued), the corpus hash and the embedding model. Before a
collection is opened all of that is checked with plain Python (``sqlite3`` read-only,
``hashlib``), and a file in the segment folder the manifest does not list fails the check too;
anything that does not match is removed, so the caller rebuilds it with a one-line notice.

``chroma.sqlite3`` is covered by its rows, not its bytes: one file holds every collection of the
store plus chromadb's bookkeeping, so building a second collection (or chromadb tidying its
queue) rewrites it without touching this one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import struct
import tempfile
import time
from pathlib import Path

MANIFEST_DIR = "ragscale-manifests"
MANIFEST_VERSION = 2  # 2: the collection's SQLite rows are covered too (older manifests are rebuilt)


def manifest_path(store: Path, name: str) -> Path:
    return Path(store) / MANIFEST_DIR / f"{name}.json"


def _sqlite(store: Path) -> Path:
    return Path(store) / "chroma.sqlite3"


def vector_segment(store: Path, name: str) -> tuple[str, str] | None:
    """(collection id, vector segment id) of a collection, read without chromadb; None if absent.

    Raises ``sqlite3.DatabaseError`` when the store's database is unreadable."""
    db = _sqlite(store)
    if not db.exists():
        return None
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        row = connection.execute(
            "SELECT c.id, s.id FROM collections c JOIN segments s ON s.collection = c.id "
            "WHERE c.name = ? AND s.scope = 'VECTOR'", (name,)).fetchone()
    finally:
        connection.close()
    return (row[0], row[1]) if row else None


def _file_digest(path: Path, limit: int | None = None) -> str:
    """sha256 of the file, or of its first ``limit`` bytes."""
    digest = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as handle:
        while remaining is None or remaining > 0:
            block = handle.read(1 << 20 if remaining is None else min(1 << 20, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest.hexdigest()


def _hnsw_extent(folder: Path) -> dict[str, int]:
    """How many bytes of each HNSW file hnswlib reads: chromadb rewrites the slots past the last
    stored element with whatever was in memory (seen: ``length.bin`` changed at every exit of a
    process that had opened the collection, with no data added), so only the used part can be
    hashed. The header (hashed in full) says how much is used: chromadb's ``header.bin`` is a
    4-byte format version (1), then hnswlib's size_t fields offset_level0, max_elements,
    cur_element_count, size_data_per_element. Unknown layout: every byte is hashed."""
    try:
        header = (folder / "header.bin").read_bytes()
    except OSError:
        return {}
    if len(header) != 100 or struct.unpack_from("<I", header, 0)[0] != 1:
        return {}
    max_elements, count, per_element = struct.unpack_from("<QQQ", header, 12)
    if count > max_elements:
        return {}  # a damaged header: hash everything, and the header's own hash will differ anyway
    return {"data_level0.bin": count * per_element, "length.bin": count * 4}


def rows_digest(store: Path, collection_id: str) -> str:
    """sha256 over the collection's rows in ``chroma.sqlite3``, in a fixed order: each passage's
    id and every metadata value (the text chromadb returns is one of them), then the vectors
    still waiting in chromadb's queue for this collection. A same-length edit of one passage or
    a deleted row changes it."""
    connection = sqlite3.connect(f"file:{_sqlite(store)}?mode=ro", uri=True, timeout=30)
    digest = hashlib.sha256()
    try:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(embedding_metadata)")}
        values = ", ".join(f"m.{c}" for c in ("key", "string_value", "int_value", "float_value", "bool_value")
                           if c in columns)
        rows = connection.execute(
            f"SELECT e.embedding_id, {values} FROM embeddings e JOIN segments s ON s.id = e.segment_id "
            "LEFT JOIN embedding_metadata m ON m.id = e.id WHERE s.collection = ? AND s.scope = 'METADATA' "
            "ORDER BY e.embedding_id, m.key", (collection_id,))
        queued = connection.execute(
            "SELECT seq_id, operation, id, vector, encoding, metadata FROM embeddings_queue "
            "WHERE topic LIKE ? ORDER BY seq_id", (f"%{collection_id}",))
        for row in [*rows, ("queue",), *queued]:
            digest.update(json.dumps([v.hex() if isinstance(v, bytes) else v for v in row]).encode())
    finally:
        connection.close()
    return digest.hexdigest()


def segment_files(store: Path, segment_id: str) -> dict[str, dict]:
    folder = Path(store) / segment_id
    if not folder.is_dir():
        return {}
    extent = _hnsw_extent(folder)
    return {p.name: {"bytes": p.stat().st_size, "hashed_bytes": extent.get(p.name),
                     "sha256": _file_digest(p, extent.get(p.name))}
            for p in sorted(folder.iterdir()) if p.is_file()}


def write_manifest(store: Path, name: str, **facts) -> dict:
    """Record a finished collection; written to a temp file and renamed, so it is whole or absent."""
    ids = vector_segment(store, name)
    if ids is None:
        raise RuntimeError(f"collection {name} is not in the store at {store}")
    collection_id, segment_id = ids
    manifest = {"version": MANIFEST_VERSION, "collection": name, "collection_id": collection_id,
                "segment_id": segment_id, "files": segment_files(store, segment_id),
                "rows_sha256": rows_digest(store, collection_id), "written": time.time(), **facts}
    path = manifest_path(store, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{name}.", suffix=".tmp", delete=False) as tmp:
        json.dump(manifest, tmp, indent=1)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)
    return manifest


def read_manifest(store: Path, name: str) -> dict | None:
    try:
        manifest = json.loads(manifest_path(store, name).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("version") == MANIFEST_VERSION else None


def check_collection(store: Path, name: str, expected: dict) -> str | None:
    """Why the collection cannot be trusted (None: it is whole and matches ``expected``).

    ``"absent"`` when the store holds no such collection. Hashing reads every segment file once:
    ~1 s per GB, far less than re-embedding."""
    ids = vector_segment(store, name)
    manifest = read_manifest(store, name)
    if ids is None:
        return "absent"
    if manifest is None:
        return "no manifest (an interrupted build, or the manifest was removed)"
    if (manifest.get("collection_id"), manifest.get("segment_id")) != ids:
        return "the manifest belongs to another copy of the collection"
    for key, value in expected.items():
        if manifest.get(key) != value:
            return f"built for another {key.replace('_', ' ')}"
    recorded = manifest.get("files") or {}
    folder = Path(store) / ids[1]
    actual = {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()
    if not recorded or actual != set(recorded):
        return "its index files are missing or unexpected"
    current = segment_files(store, ids[1])
    if current != recorded:
        changed = next(n for n, facts in current.items() if facts != recorded.get(n))
        return f"its index file {changed} changed since it was built"
    if rows_digest(store, ids[0]) != manifest.get("rows_sha256"):
        return "its passages in chroma.sqlite3 changed since it was built"
    return None


def discard_collection_files(store: Path, name: str) -> None:
    """Remove a distrusted collection's segment folder and manifest, so no chromadb code reads them.

    The collection's rows in chroma.sqlite3 stay until ``delete_collection`` (safe once the
    HNSW files are gone)."""
    ids = vector_segment(store, name)
    if ids is not None:
        shutil.rmtree(Path(store) / ids[1], ignore_errors=True)
    manifest_path(store, name).unlink(missing_ok=True)


def collection_names(store: Path) -> list[str]:
    """Every collection in an embedded store, read from chroma.sqlite3 without chromadb."""
    db = _sqlite(store)
    if not db.exists():
        return []
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return sorted(row[0] for row in connection.execute("SELECT name FROM collections"))
    finally:
        connection.close()
