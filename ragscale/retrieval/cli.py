"""``ragscale index``: build (or reuse, or resume) a retrieval index, from a dataset or a corpus;
``ragscale bench retrieval`` / ``bench ingest``: how long indexing, embedding and querying take."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ragscale.commandline import progress_bar
from ragscale.errors import UserError
from ragscale.retrieval.bench import register_bench  # noqa: F401  (ragscale.cli registers it from here)
from ragscale.retrieval.options import add_retrieval_args, retriever_settings_from_args


def register(commands) -> None:
    parser = commands.add_parser("index", help="build, resume or reuse a retrieval index (a dataset's or a corpus')")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", default=None, help="dataset file or 'demo' (default: demo)")
    source.add_argument("--corpus", default=None, metavar="PATH",
                        help="corpus to index: FlashRAG/KILT-style .jsonl(.gz), .parquet, or a folder of dataset files")
    parser.add_argument("--out", default=None, metavar="NAME", help="with --corpus: the index's name (required)")
    parser.add_argument("--embeddings", default=None, metavar="PATH",
                        help="with --corpus: import vectors computed elsewhere (.npy, passages x 384, corpus order)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="with --corpus: where to embed (auto: a CUDA GPU if torch sees one)")
    parser.add_argument("--chunk", type=int, default=None, metavar="N",
                        help="passages per saved shard of vectors: the most a kill can cost (default 1024)")
    add_retrieval_args(parser)
    parser.add_argument("--url", default=None, help=argparse_suppress())
    parser.add_argument("--query", default=None, help="also retrieve for this text and print the documents")
    parser.add_argument("-k", type=int, default=5, help="documents to retrieve for --query (default 5)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=index_command)


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS  # --url: the old name of --chroma-url, still accepted


def _settings(args):
    if getattr(args, "url", None) and args.chroma_url is None:
        args.chroma_url = args.url
    return retriever_settings_from_args(args)


def index_command(args) -> int:
    from ragscale.config import prefer_passive_openmp

    prefer_passive_openmp()  # before torch loads
    settings = _settings(args)
    if args.corpus is None and (args.out or args.embeddings):
        raise UserError("--out and --embeddings go with --corpus")
    bar, progress = progress_bar("indexing", unit="passage", leave=False)  # rate and ETA from tqdm

    def notice(message: str) -> None:
        bar.write(f"ragscale: notice: {message}", file=sys.stderr)

    try:
        if args.corpus is not None:
            result, retriever = _index_corpus(args, settings.url, progress, notice)
        else:
            result, retriever = _index_dataset(args, settings.url, progress, notice)
    finally:
        bar.close()
    if args.query is not None:
        result["documents"] = [{"doc_id": d.doc_id, "title": d.title, "text": d.text}
                               for d in retriever.search(args.query, args.k)]
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key != "documents":
                print(f"{key:>16}: {value}")
        for rank, doc in enumerate(result.get("documents", []), start=1):
            print(f"{rank:>3}. [{doc['title']}] {doc['text'][:100]}")
    return 0


def _index_dataset(args, url, progress, notice):
    from ragscale.datasets import load_dataset
    from ragscale.retrieval import build_retriever, collection_name

    dataset = load_dataset(args.dataset or "demo")
    retriever = build_retriever(dataset, url=url, progress=progress, notice=notice)
    return {
        "dataset": dataset.name,
        "collection": collection_name(dataset.corpus),
        "passages": retriever.stats.passages,
        "embedded": retriever.stats.embedded,
        "build_seconds": round(retriever.stats.build_seconds, 2),
    }, retriever


def _index_corpus(args, url, progress, notice):
    from ragscale.retrieval.corpus import iter_corpus
    from ragscale.retrieval.embeddings import EMBEDDING_MODEL
    from ragscale.retrieval.corpus import hash_documents
    from ragscale.retrieval.index import (INDEX_VERSION, Retriever, ensure_collection, imported_vectors, index_name,
                                          text_embedder)

    if not args.out:
        raise UserError("--corpus needs --out NAME (the index's name)")
    name = index_name(args.out)
    corpus_hash, passages = hash_documents(iter_corpus(args.corpus))  # first pass: constant memory
    if passages == 0:
        raise UserError(f"{args.corpus}: no passages")
    facts = {"corpus_key": corpus_hash, "embedding_model": EMBEDDING_MODEL, "passages": passages,
             "index_version": INDEX_VERSION}
    if args.embeddings:
        source, embedder_name = imported_vectors(args.embeddings, passages), f"imported from {Path(args.embeddings).name}"
    else:
        embedder = _LazyEmbedder(args.device)
        source, embedder_name = text_embedder(embedder.embed), None
    collection, stats = ensure_collection(name, lambda: iter_corpus(args.corpus), passages, facts, source=source,
                                          url=url, progress=progress, notice=notice, chunk_size=args.chunk)
    if embedder_name is None:
        embedder_name = embedder.name if embedder.loaded else "none (index reused)"
    result = {
        "index": args.out, "collection": name, "corpus_sha256": corpus_hash, "passages": passages,
        "embedded": stats.embedded, "embedder": embedder_name, "embedding_model": EMBEDDING_MODEL,
        "build_seconds": round(stats.build_seconds, 2),
        "passages_per_second": round(stats.embedded / stats.embed_seconds, 1) if stats.embed_seconds else None,
    }
    return result, Retriever(collection, passages=passages)


class _LazyEmbedder:
    """Loads the model only if some passage needs embedding (a reused index needs none)."""

    def __init__(self, device: str):
        from ragscale.retrieval.embeddings import resolve_device

        self.device = resolve_device(device)  # a bad --device fails before the corpus is read twice
        self._embedder = None

    @property
    def loaded(self) -> bool:
        return self._embedder is not None

    @property
    def name(self) -> str:
        return self._embedder.name if self._embedder else "none"

    def embed(self, texts):
        if self._embedder is None:
            from ragscale.retrieval.embeddings import BulkEmbedder

            self._embedder = BulkEmbedder(self.device)
        return self._embedder.embed(texts)
