"""A chromadb collection per corpus, and the Retriever that searches it.

The collection's name is a hash of the corpus (ids, titles, texts) and of the embedding
model, so the same corpus is embedded once and reused by every later run, page and sweep; a
changed corpus gets a new collection. Vectors are computed by ``embed_texts`` and added in
batches; chromadb's own default embedding function is never used (it downloads a model).
A build that was interrupted resumes: only the passages not yet in the collection are embedded.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlparse

from ragscale.config import cache_dir
from ragscale.datasets.types import Dataset, Document
from ragscale.errors import DatasetError, UserError
from ragscale.retrieval.embeddings import EMBEDDING_MODEL, embed_texts

Progress = Callable[[int, int, str], None]

INDEX_VERSION = 1  # bump when the text that gets embedded changes
ADD_BATCH = 256
# Exact-enough neighbours for corpora of a few thousand passages; costs little at query time.
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 200}

_clients: dict[str, object] = {}
_clients_lock = threading.Lock()


def corpus_key(corpus: list[Document]) -> str:
    digest = hashlib.sha256(f"v{INDEX_VERSION}|{EMBEDDING_MODEL}|".encode())
    for doc in corpus:
        for part in (doc.doc_id, doc.title, doc.text):
            digest.update(part.encode("utf-8"))
            digest.update(b"\x00")
    return digest.hexdigest()[:32]


def collection_name(corpus: list[Document]) -> str:
    return f"ragscale-{corpus_key(corpus)}"


def _embedding_text(doc: Document) -> str:
    return doc.render()


def chroma_client(url: str | None = None, path: str | None = None):
    """``HttpClient`` for a Chroma server URL, else an embedded ``PersistentClient`` (one per path)."""
    import chromadb

    settings = chromadb.Settings(anonymized_telemetry=False)
    if url:
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if not parsed.hostname:
            raise UserError(f"not a Chroma server URL: {url!r} (expected e.g. http://localhost:8000)")
        ssl = parsed.scheme == "https"
        try:
            client = chromadb.HttpClient(host=parsed.hostname, port=parsed.port or (443 if ssl else 8000), ssl=ssl,
                                         settings=settings)
            client.heartbeat()
        except Exception as exc:  # chromadb raises several types for an unreachable server
            raise UserError(f"cannot reach the Chroma server at {url}: {exc}") from exc
        return client
    path = str(path or cache_dir() / "chroma")
    with _clients_lock:
        if path not in _clients:
            _clients[path] = chromadb.PersistentClient(path=path, settings=settings)
        return _clients[path]


@dataclass
class BuildStats:
    """What building (or reusing) an index cost."""

    passages: int
    embedded: int  # passages embedded by this call; 0 when the index was reused
    embed_seconds: float
    build_seconds: float


class Retriever:
    """Dense retrieval over one corpus: ``search(query, k)`` returns documents best first."""

    def __init__(self, collection, corpus: list[Document], stats: BuildStats | None = None):
        self.collection = collection
        self.corpus = corpus
        self.stats = stats
        self._by_id = {doc.doc_id: doc for doc in corpus}

    @property
    def size(self) -> int:
        return len(self.corpus)

    def search(self, query: str, k: int) -> list[Document]:
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: list[str], k: int) -> list[list[Document]]:
        if k < 0:
            raise UserError(f"k must be at least 0, got {k}")
        k = min(k, self.size)
        if k == 0 or not queries:
            return [[] for _ in queries]
        result = self.collection.query(query_embeddings=embed_texts(list(queries)), n_results=k, include=[])
        return [[self._by_id[doc_id] for doc_id in ids] for ids in result["ids"]]


def build_retriever(dataset: Dataset | list[Document], url: str | None = None, progress: Progress | None = None,
                    path: str | None = None) -> Retriever:
    """The retriever for a dataset's corpus, embedding only passages its collection lacks.

    ``url`` selects a Chroma server; otherwise the index lives under ``cache_dir()/chroma``
    (or ``path``). ``progress(done, total, message)`` is called after every batch.
    """
    corpus = dataset.corpus if isinstance(dataset, Dataset) else list(dataset)
    if not corpus:
        name = dataset.name if isinstance(dataset, Dataset) else "the corpus"
        raise DatasetError(f"{name} has no passages to retrieve from (the file carries no paragraphs)")
    if len({doc.doc_id for doc in corpus}) != len(corpus):
        raise DatasetError("document ids in the corpus are not unique")
    started = time.perf_counter()
    client = chroma_client(url, path)
    collection = client.get_or_create_collection(
        collection_name(corpus), embedding_function=None, configuration={"hnsw": HNSW},
        metadata={"passages": len(corpus), "embedding_model": EMBEDDING_MODEL},
    )
    total = len(corpus)
    missing = corpus
    if collection.count():
        present = set(collection.get(include=[])["ids"]) if collection.count() < total else None
        missing = [] if present is None else [doc for doc in corpus if doc.doc_id not in present]
    done = total - len(missing)
    # Similar lengths in a batch waste less padding; the order passages are added in is irrelevant.
    missing = sorted(missing, key=lambda doc: len(doc.text))
    embed_seconds = 0.0
    if progress:
        progress(done, total, "index ready" if not missing else f"embedding {len(missing)} passages")
    for start in range(0, len(missing), ADD_BATCH):
        batch = missing[start:start + ADD_BATCH]
        t0 = time.perf_counter()
        vectors = embed_texts([_embedding_text(doc) for doc in batch])
        embed_seconds += time.perf_counter() - t0
        # Stored documents make the collection readable with Chroma's own tools too.
        collection.upsert(ids=[doc.doc_id for doc in batch], embeddings=vectors,
                          documents=[_embedding_text(doc) for doc in batch])
        done += len(batch)
        if progress:
            progress(done, total, f"indexed {done}/{total} passages")
    stats = BuildStats(passages=total, embedded=len(missing), embed_seconds=embed_seconds,
                       build_seconds=time.perf_counter() - started)
    return Retriever(collection, corpus, stats)
