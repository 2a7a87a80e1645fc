"""Streaming readers for the corpus formats analysts bring, one passage at a time.

- JSONL (``.jsonl``/``.jsonl.gz``): FlashRAG (``{"id", "contents": "\\"Title\\"\\ntext"}``),
  KILT knowledge source (``{"wikipedia_id", "wikipedia_title", "text": [paragraphs]}``: one
  passage per paragraph) or plain ``{"id", "title", "text"}`` records.
- Parquet: columns ``id`` and ``text`` or ``contents`` (``title`` optional), read in row batches.
- A folder of the loaders' JSON files (HotpotQA / MuSiQue / 2Wiki style): every file's paragraphs,
  de-duplicated by (title, text).

Nothing holds the whole corpus: ``ragscale index`` reads it twice (hash, then embed) in
constant memory. The corpus hash covers every passage's id, title and text in order.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Iterator

from ragscale.datasets.types import Document
from ragscale.errors import DatasetError

PARQUET_BATCH = 4096


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")


def _from_record(record: dict, where: str) -> Iterator[Document]:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object per line")
    doc_id = next((record[k] for k in ("id", "_id", "doc_id", "wikipedia_id") if record.get(k) not in (None, "")), None)
    if doc_id is None:
        raise DatasetError(f"{where}: no 'id' field")
    title = record.get("title", record.get("wikipedia_title", "")) or ""
    text = record.get("text", record.get("contents", record.get("passage")))
    if "contents" in record and "text" not in record and not title:
        # FlashRAG's contents: '"Title"\ntext'
        head, _, body = str(text).partition("\n")
        if body:
            title, text = head.strip().strip('"'), body
    if isinstance(text, list):  # KILT: one passage per paragraph
        for i, paragraph in enumerate(text):
            if str(paragraph).strip():
                yield Document(doc_id=f"{doc_id}_{i}", title=str(title), text=str(paragraph).strip())
        return
    if text is None:
        raise DatasetError(f"{where}: no 'text' or 'contents' field")
    yield Document(doc_id=str(doc_id), title=str(title), text=str(text))


def _jsonl(path: Path) -> Iterator[Document]:
    with _open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path.name} line {number}: not JSON ({exc.msg})") from None
            except RecursionError:  # json.loads recurses once per level of nesting
                raise DatasetError(f"{path.name} line {number}: JSON nested too deeply to be a passage") from None
            yield from _from_record(record, f"{path.name} line {number}")


def _parquet(path: Path) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid and OSError subclasses
        raise DatasetError(f"{path.name}: not a readable Parquet file ({exc})") from None
    columns = set(table.schema_arrow.names)
    text_column = next((c for c in ("text", "contents", "passage") if c in columns), None)
    if "id" not in columns or text_column is None:
        raise DatasetError(f"{path.name}: needs columns 'id' and 'text' (or 'contents'); has {sorted(columns)}")
    wanted = ["id", text_column] + (["title"] if "title" in columns else [])
    for number, batch in enumerate(table.iter_batches(batch_size=PARQUET_BATCH, columns=wanted)):
        for row in batch.to_pylist():
            yield from _from_record(row, f"{path.name} batch {number}")


def _loader_folder(path: Path) -> Iterator[Document]:
    from ragscale.datasets import load_dataset

    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl"))
    if not files:
        raise DatasetError(f"{path}: no .json/.jsonl dataset files in this folder")
    seen: set[str] = set()  # hashes of (title, text): 16 bytes a passage, not the passages
    count = 0
    for file in files:
        for doc in load_dataset(str(file)).corpus:
            key = hashlib.blake2b(f"{doc.title}\x00{doc.text}".encode(), digest_size=16).hexdigest()
            if key not in seen:
                seen.add(key)
                yield Document(doc_id=f"p{count}", title=doc.title, text=doc.text)
                count += 1


def iter_corpus(path: str | Path) -> Iterator[Document]:
    """The passages of a corpus file or folder, in a fixed order."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"corpus not found: {path}")
    if path.is_dir():
        return _loader_folder(path)
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return _jsonl(path)
    if name.endswith(".parquet"):
        return _parquet(path)
    raise DatasetError(f"{path.name}: unknown corpus format (expected .jsonl, .jsonl.gz, .parquet or a folder)")


def hash_documents(documents, prefix: str = "") -> tuple[str, int]:
    """(sha256 of ids, titles and texts in order, count), streaming."""
    digest = hashlib.sha256(prefix.encode())
    count = 0
    for doc in documents:
        for part in (doc.doc_id, doc.title, doc.text):
            digest.update(part.encode("utf-8"))
            digest.update(b"\x00")
        count += 1
    return digest.hexdigest(), count
