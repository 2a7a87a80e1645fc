"""``ragscale index``: build (or reuse) a dataset's retrieval index, optionally try a query;
``ragscale bench retrieval``: how long indexing and querying take on real passages."""

from __future__ import annotations

import json
import statistics
import tempfile
import time

from ragscale.config import SHARED_DATASETS_DIR
from ragscale.errors import UserError

DEFAULT_DATASETS = ("hotpotqa_sample70.json", "musique_sample70.json")


def register(commands) -> None:
    parser = commands.add_parser("index", help="build or reuse the retrieval index of a dataset")
    parser.add_argument("--dataset", default="demo", help="dataset file or 'demo' (default)")
    parser.add_argument("--url", default=None, help="Chroma server URL (default: embedded store in the cache dir)")
    parser.add_argument("--query", default=None, help="also retrieve for this text and print the documents")
    parser.add_argument("-k", type=int, default=5, help="documents to retrieve for --query (default 5)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=index_command)


def index_command(args) -> int:
    from ragscale.datasets import load_dataset
    from ragscale.retrieval import build_retriever, collection_name

    dataset = load_dataset(args.dataset)
    bar, progress = _tqdm_progress()
    retriever = build_retriever(dataset, url=args.url, progress=progress)
    bar.close()
    result = {
        "dataset": dataset.name,
        "collection": collection_name(dataset.corpus),
        "passages": retriever.stats.passages,
        "embedded": retriever.stats.embedded,
        "build_seconds": round(retriever.stats.build_seconds, 2),
    }
    if args.query is not None:
        result["documents"] = [{"doc_id": d.doc_id, "title": d.title, "text": d.text}
                               for d in retriever.search(args.query, args.k)]
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key != "documents":
                print(f"{key:>14}: {value}")
        for rank, doc in enumerate(result.get("documents", []), start=1):
            print(f"{rank:>3}. [{doc['title']}] {doc['text'][:100]}")
    return 0


def register_bench(benches) -> None:
    parser = benches.add_parser("retrieval", help="index N passages into a fresh collection; query latency")
    parser.add_argument("--dataset", action="append", default=None,
                        help="dataset file or 'demo' (repeatable; default: the HotpotQA and MuSiQue samples)")
    parser.add_argument("--passages", type=int, default=None, help="index only the first N pooled passages")
    parser.add_argument("--queries", type=int, default=100, help="questions to time as queries (default 100)")
    parser.add_argument("-k", type=int, default=10, help="documents per query (default 10)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=bench_retrieval)


def _tqdm_progress():
    from tqdm import tqdm

    bar = tqdm(total=0, unit="passage", desc="indexing", leave=False)

    def progress(done: int, total: int, message: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    return bar, progress


def bench_retrieval(args) -> int:
    from ragscale.datasets import load_dataset
    from ragscale.datasets.types import Document
    from ragscale.retrieval import build_retriever, embed_texts

    names = args.dataset or [str(SHARED_DATASETS_DIR / name) for name in DEFAULT_DATASETS]
    datasets = [load_dataset(name) for name in names]
    # Pool the corpora of every dataset, de-duplicated by (title, text), with fresh unique ids.
    seen: set[tuple[str, str]] = set()
    corpus: list[Document] = []
    for dataset in datasets:
        for doc in dataset.corpus:
            if (doc.title, doc.text) not in seen:
                seen.add((doc.title, doc.text))
                corpus.append(Document(doc_id=f"b{len(corpus)}", title=doc.title, text=doc.text))
    if args.passages is not None:
        if args.passages < 1:
            raise UserError("--passages must be at least 1")
        if args.passages > len(corpus):
            raise UserError(f"--passages {args.passages}: the datasets hold only {len(corpus)} passages")
        corpus = corpus[: args.passages]
    queries = [q.question for dataset in datasets for q in dataset.questions][: max(args.queries, 1)]

    # Loading the model and importing chromadb are one-offs per process, not part of building an index.
    import chromadb  # noqa: F401

    embed_texts(["warm-up"])
    bar, progress = _tqdm_progress()
    with tempfile.TemporaryDirectory(prefix="ragscale-bench-") as tmp:
        retriever = build_retriever(corpus, path=tmp, progress=progress)
        bar.close()
        latencies = []  # what a caller sees: embed the query, then search
        for query in queries:
            t0 = time.perf_counter()
            retriever.search(query, args.k)
            latencies.append((time.perf_counter() - t0) * 1000)
        vector_latencies = []  # the vector store alone, with the query already embedded
        for vector in embed_texts(queries):
            t0 = time.perf_counter()
            retriever.collection.query(query_embeddings=vector[None, :], n_results=min(args.k, len(corpus)), include=[])
            vector_latencies.append((time.perf_counter() - t0) * 1000)
    quantiles = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) > 1 else latencies * 19
    result = {
        "passages": len(corpus),
        "build_seconds": round(retriever.stats.build_seconds, 2),
        "embed_seconds": round(retriever.stats.embed_seconds, 2),
        "query_p50_ms": round(statistics.median(latencies), 2),
        "query_p95_ms": round(quantiles[18], 2),
        "queries": len(latencies),
        "vector_query_p50_ms": round(statistics.median(vector_latencies), 2),
        "k": args.k,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")
    return 0
