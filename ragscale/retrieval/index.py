"""Chroma collections per corpus, built resumably and verified before use, and their retrievers.

A collection's name is a hash of the corpus (ids, titles, texts) and of the embedding model, so
the same corpus is embedded once and reused by every run, page and sweep. chromadb's default
embedding function is never used (it downloads a model).

Building has two stages, so a kill at any point loses at most one chunk of work and no passage
ends up in the index twice or not at all:
1. embed the corpus chunk by chunk (stream order) into ``.npy`` shards under
   ``cache_dir()/index-work/NAME`` (each written to a temp file and renamed); a resumed build
   skips the chunks that have a shard;
2. load the shards into a fresh collection, then mark it finished: embedded store → a manifest
   with the segment files' hashes (see ``manifest.py``); Chroma server → ``complete`` in the
   collection's metadata. The shards are deleted afterwards.
A collection that is unfinished or fails verification is dropped and loaded again from shards.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import urlparse

import numpy as np

from ragscale.config import cache_dir
from ragscale.datasets.types import Dataset, Document
from ragscale.errors import DatasetError, UserError
from ragscale.retrieval import manifest
from ragscale.retrieval.corpus import hash_documents
from ragscale.retrieval.embeddings import EMBEDDING_DIM, EMBEDDING_MODEL, embed_texts

Progress = Callable[[int, int, str], None]
Notice = Callable[[str], None]
# (index of the first passage, the chunk's documents) -> L2-normalised vectors, one row each
VectorSource = Callable[[int, list[Document]], np.ndarray]

INDEX_VERSION = 1  # bump when the text that gets embedded changes
CHUNK = 1024  # passages per shard: the most a kill can cost
ADD_BATCH = 1024
# Exact-enough neighbours for corpora of a few thousand passages; costs little at query time.
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 200}

_clients: dict[str, object] = {}
_clients_lock = threading.Lock()
_build_lock = threading.Lock()  # two Streamlit sessions must not build the same collection at once


@contextlib.contextmanager
def _builder_lock(key: str):
    """Hold an exclusive lock shared by every process building ``key``.

    The shards of a build live in one folder of the user cache; a second process (the app and a
    CLI sweep, say) building the same index at once would resume from, then delete, the other's
    shards. The second one waits here and then finds the index finished."""
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"index-{key}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def corpus_key(corpus: Iterable[Document]) -> str:
    return hash_documents(corpus, prefix=f"v{INDEX_VERSION}|{EMBEDDING_MODEL}|")[0][:32]


def collection_name(corpus: Iterable[Document]) -> str:
    return f"ragscale-{corpus_key(corpus)}"


def _embedding_text(doc: Document) -> str:
    return doc.render()


def print_notice(message: str) -> None:
    print(f"ragscale: notice: {message}", file=sys.stderr)


def store_path(path: str | Path | None = None) -> Path:
    return Path(path) if path else cache_dir() / "chroma"


def chroma_client(url: str | None = None, path: str | Path | None = None):
    """``HttpClient`` for a Chroma server URL, else an embedded ``PersistentClient`` (one per path)."""
    import chromadb

    settings = chromadb.Settings(anonymized_telemetry=False)
    if url:
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UserError("not a Chroma server URL (expected e.g. http://localhost:8000)")
        ssl = parsed.scheme == "https"
        try:
            client = chromadb.HttpClient(host=parsed.hostname, port=parsed.port or (443 if ssl else 8000), ssl=ssl,
                                         settings=settings)
            client.heartbeat()
        except Exception as exc:  # chromadb raises several types for an unreachable server
            # The type only: a foreign server's words are not repeated to whoever typed the URL.
            raise UserError(f"cannot reach the Chroma server at {parsed.hostname}:{parsed.port or ''} "
                            f"({type(exc).__name__})") from None
        return client
    path = str(store_path(path))
    with _clients_lock:
        if path not in _clients:
            _clients[path] = chromadb.PersistentClient(path=path, settings=settings)
        return _clients[path]


def _forget_client(path: Path) -> None:
    """Drop this process's handle on a store that is being removed."""
    with _clients_lock:
        _clients.pop(str(path), None)
    try:
        from chromadb.api.shared_system_client import SharedSystemClient

        SharedSystemClient.clear_system_cache()
    except Exception:  # an internal API; the next client still reads the new files
        pass


@dataclass
class BuildStats:
    """What building (or reusing) an index cost."""

    passages: int
    embedded: int  # passages embedded by this call; 0 when the index was reused
    embed_seconds: float
    build_seconds: float
    load_seconds: float = 0.0  # adding the vectors to Chroma


def _chunks(documents: Iterable[Document], size: int) -> Iterator[list[Document]]:
    iterator = iter(documents)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _save_atomically(path: Path, vectors: np.ndarray) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}.", suffix=".npy", delete=False) as tmp:
        np.save(tmp, vectors)
    Path(tmp.name).replace(path)


def _check_vectors(vectors: np.ndarray, rows: int, where: str) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (rows, EMBEDDING_DIM):
        raise DatasetError(f"{where}: expected {rows} vectors of {EMBEDDING_DIM} numbers, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise DatasetError(f"{where}: vectors contain NaN or infinity")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise DatasetError(f"{where}: a vector is all zeros")
    return vectors / norms


def text_embedder(embed: Callable[[list[str]], np.ndarray]) -> VectorSource:
    return lambda start, docs: embed([_embedding_text(doc) for doc in docs])


def imported_vectors(path: str | Path, passages: int) -> VectorSource:
    """Vectors computed elsewhere: a ``.npy`` array (passages x 384) in corpus order, memory-mapped."""
    path = Path(path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"--embeddings {path.name}: not a readable .npy array ({exc})") from None
    if array.ndim != 2 or array.shape[1] != EMBEDDING_DIM:
        raise DatasetError(f"--embeddings {path.name}: shape {array.shape}, expected (passages, {EMBEDDING_DIM})")
    if array.shape[0] != passages:
        raise DatasetError(f"--embeddings {path.name}: {array.shape[0]} vectors for {passages} passages")
    return lambda start, docs: np.array(array[start:start + len(docs)])


def _embed_into_shards(work: Path, documents: Callable[[], Iterable[Document]], total: int, source: VectorSource,
                       progress: Progress | None, chunk_size: int) -> tuple[int, float]:
    work.mkdir(parents=True, exist_ok=True)
    done = embedded = 0
    seconds = 0.0
    for number, chunk in enumerate(_chunks(documents(), chunk_size)):
        shard = work / f"{number:07d}.npy"
        if shard.exists():
            done += len(chunk)
            continue
        if done and not embedded and progress:
            progress(done, total, f"resuming: {done} passages were embedded before")
        t0 = time.perf_counter()
        vectors = _check_vectors(source(done, chunk), len(chunk), f"passages {done}-{done + len(chunk) - 1}")
        seconds += time.perf_counter() - t0
        _save_atomically(shard, vectors)
        done += len(chunk)
        embedded += len(chunk)
        if progress:
            progress(done, total, f"embedded {done}/{total} passages")
    if done != total:
        raise DatasetError(f"the corpus changed while it was read ({done} passages, expected {total})")
    return embedded, seconds


def _load_shards(collection, work: Path, documents: Callable[[], Iterable[Document]], total: int,
                 progress: Progress | None, chunk_size: int) -> None:
    done = 0
    for number, chunk in enumerate(_chunks(documents(), chunk_size)):
        vectors = np.load(work / f"{number:07d}.npy", allow_pickle=False)
        if len(vectors) != len(chunk):  # a shard from another corpus under the same name cannot happen; be safe
            raise DatasetError(f"saved vectors do not match the corpus (shard {number}); remove {work}")
        for start in range(0, len(chunk), ADD_BATCH):
            batch = chunk[start:start + ADD_BATCH]
            # Text and title are stored, so a corpus index serves documents and Chroma's own tools can read it.
            collection.add(ids=[doc.doc_id for doc in batch], embeddings=vectors[start:start + len(batch)],
                           documents=[doc.text for doc in batch], metadatas=[{"title": doc.title} for doc in batch])
        done += len(chunk)
        if progress:
            progress(done, total, f"stored {done}/{total} passages in Chroma")


def _usable_embedded(store: Path, name: str, facts: dict, notice: Notice) -> bool:
    """True when the embedded store holds a whole, verified copy; else removes what is there."""
    try:
        reason = manifest.check_collection(store, name, facts)
    except (sqlite3.DatabaseError, OSError) as exc:
        notice(f"the embedded Chroma store at {store} is unreadable ({type(exc).__name__}); "
               "removing it and rebuilding (it is a cache)")
        _forget_client(store)
        shutil.rmtree(store, ignore_errors=True)
        return False
    if reason is None:
        return True
    if reason != "absent":
        notice(f"index {name}: {reason}; rebuilding it")
        manifest.discard_collection_files(store, name)
        try:
            chroma_client(None, store).delete_collection(name)
        except Exception:  # already gone, or half-created: a new store replaces it below
            _forget_client(store)
            shutil.rmtree(store, ignore_errors=True)
    return False


def _usable_server(client, name: str, facts: dict, total: int, notice: Notice) -> bool:
    try:
        collection = client.get_collection(name, embedding_function=None)
    except Exception:  # NotFoundError on chromadb 1.x, ValueError on older servers
        return False
    metadata = collection.metadata or {}
    whole = metadata.get("complete") is True and all(metadata.get(k) == v for k, v in facts.items())
    if whole and collection.count() == total:
        return True
    notice(f"index {name} on the Chroma server is unfinished or differs; rebuilding it")
    client.delete_collection(name)
    return False


def ensure_collection(name: str, documents: Callable[[], Iterable[Document]], total: int, facts: dict, *,
                      source: VectorSource, url: str | None = None, path: str | Path | None = None,
                      progress: Progress | None = None, notice: Notice | None = None, chunk_size: int | None = None):
    """The finished collection ``name`` holding ``documents()``; built (or resumed) when needed.

    ``documents`` is called once per pass (each pass streams the corpus); ``facts`` (corpus
    hash, model, passages) are recorded with the index and must match for it to be reused.
    ``chunk_size`` passages go into one saved shard (default ``CHUNK``): the most a kill can cost.
    Returns (collection, BuildStats)."""
    notice = notice or print_notice
    chunk_size = chunk_size or CHUNK
    if chunk_size < 1:
        raise UserError("the chunk size must be at least 1 passage")
    started = time.perf_counter()
    with _build_lock, _builder_lock(f"{name}-c{chunk_size}"):
        if url:
            client = chroma_client(url)
            usable = _usable_server(client, name, facts, total, notice)
        else:
            store = store_path(path)
            usable = _usable_embedded(store, name, facts, notice)
            client = chroma_client(None, store)
        if usable:
            if progress:
                progress(total, total, "index ready")
            collection = client.get_collection(name, embedding_function=None)
            return collection, BuildStats(total, 0, 0.0, time.perf_counter() - started)
        # The chunk size is part of the folder's name: shards cut differently never mix.
        work = cache_dir() / "index-work" / f"{name}-c{chunk_size}"
        if progress:
            progress(0, total, f"embedding {total} passages")
        embedded, embed_seconds = _embed_into_shards(work, documents, total, source, progress, chunk_size)
        t0 = time.perf_counter()
        try:
            client.delete_collection(name)  # a half-loaded copy: load again from the shards
        except Exception:
            pass
        collection = client.create_collection(name, embedding_function=None, configuration={"hnsw": HNSW},
                                              metadata={**facts, "complete": False})
        _load_shards(collection, work, documents, total, progress, chunk_size)
        count = collection.count()
        if count != total:
            client.delete_collection(name)
            raise DatasetError(f"the corpus has duplicate passage ids ({count} distinct of {total})")
        if url:
            collection.modify(metadata={**facts, "complete": True})
        else:
            # Querying once makes chromadb flush its HNSW files before they are hashed.
            collection.query(query_embeddings=np.ones((1, EMBEDDING_DIM), np.float32), n_results=1, include=[])
            manifest.write_manifest(store_path(path), name, **facts)
        shutil.rmtree(work, ignore_errors=True)
        try:
            work.parent.rmdir()  # only when no other build is under way
        except OSError:
            pass
        stats = BuildStats(total, embedded, embed_seconds, time.perf_counter() - started,
                           load_seconds=time.perf_counter() - t0)
        return collection, stats


class Retriever:
    """Dense retrieval over one corpus: ``search(query, k)`` returns documents best first."""

    def __init__(self, collection, corpus: list[Document] | None = None, stats: BuildStats | None = None,
                 passages: int | None = None):
        self.collection = collection
        self.corpus = corpus
        self.stats = stats
        self._by_id = {doc.doc_id: doc for doc in corpus} if corpus is not None else None
        self._size = len(corpus) if corpus is not None else (passages if passages is not None else collection.count())

    @property
    def size(self) -> int:
        return self._size

    def search(self, query: str, k: int) -> list[Document]:
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: list[str], k: int) -> list[list[Document]]:
        if k < 0:
            raise UserError(f"k must be at least 0, got {k}")
        k = min(k, self.size)
        if k == 0 or not queries:
            return [[] for _ in queries]
        vectors = embed_texts(list(queries))
        if self._by_id is not None:
            result = self.collection.query(query_embeddings=vectors, n_results=k, include=[])
            return [[self._by_id[doc_id] for doc_id in ids] for ids in result["ids"]]
        # A corpus index: the documents come from the collection itself.
        result = self.collection.query(query_embeddings=vectors, n_results=k, include=["documents", "metadatas"])
        return [[Document(doc_id=i, title=(meta or {}).get("title", ""), text=text or "")
                 for i, text, meta in zip(ids, texts, metas)]
                for ids, texts, metas in zip(result["ids"], result["documents"], result["metadatas"])]


def _facts(key: str, passages: int) -> dict:
    return {"corpus_key": key, "embedding_model": EMBEDDING_MODEL, "passages": passages}


def build_retriever(dataset: Dataset | list[Document], url: str | None = None, progress: Progress | None = None,
                    path: str | None = None, notice: Notice | None = None) -> Retriever:
    """The retriever for a dataset's corpus, embedding only what no saved index or shard holds.

    ``url`` selects a Chroma server; without ``url`` and ``path`` the process's retrieval
    setting decides (``--chroma-url`` / ``RAGSCALE_CHROMA_URL``, see ``options.py``); otherwise
    the embedded store under ``cache_dir()/chroma`` (or ``path``).
    ``progress(done, total, message)`` is called after every chunk.
    """
    corpus = dataset.corpus if isinstance(dataset, Dataset) else list(dataset)
    if not corpus:
        name = dataset.name if isinstance(dataset, Dataset) else "the corpus"
        raise DatasetError(f"{name} has no passages to retrieve from (the file carries no paragraphs)")
    if len({doc.doc_id for doc in corpus}) != len(corpus):
        raise DatasetError("document ids in the corpus are not unique")
    if url is None and path is None:
        from ragscale.retrieval.options import current_settings

        url = current_settings().url
    key = corpus_key(corpus)
    collection, stats = ensure_collection(
        f"ragscale-{key}", lambda: corpus, len(corpus), _facts(key, len(corpus)),
        source=text_embedder(lambda texts: embed_texts(texts)), url=url, path=path, progress=progress, notice=notice)
    return Retriever(collection, corpus, stats)


def index_name(out: str) -> str:
    """The Chroma collection of ``ragscale index --out NAME``."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,60}[A-Za-z0-9]", out or ""):
        raise UserError("--out must be 2-62 letters, digits, '.', '_' or '-', starting and ending with a letter or digit")
    return f"corpus-{out}"


def open_index(out: str, url: str | None = None, path: str | Path | None = None) -> Retriever:
    """A finished ``ragscale index --out NAME``, verified, for search."""
    name = index_name(out)
    if url:
        client = chroma_client(url)
        try:
            collection = client.get_collection(name, embedding_function=None)
        except Exception:
            raise UserError(f"no index {out!r} on the Chroma server (build it with ragscale index)") from None
        if (collection.metadata or {}).get("complete") is not True:
            raise UserError(f"index {out!r} on the Chroma server is unfinished; run ragscale index again")
        return Retriever(collection)
    store = store_path(path)
    saved = manifest.read_manifest(store, name)
    reason = "absent" if saved is None else manifest.check_collection(
        store, name, {k: saved.get(k) for k in ("corpus_key", "embedding_model", "passages")})
    if reason is not None:
        raise UserError(f"index {out!r} is not usable ({'not built' if reason == 'absent' else reason}); "
                        "run ragscale index again")
    return Retriever(chroma_client(None, store).get_collection(name, embedding_function=None),
                     passages=int(saved["passages"]))
