"""``ragscale bench ingest`` (embedding throughput, fast path vs today's) and ``bench retrieval``
(build time, size on disk and query latency, embedded store vs Chroma server)."""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ragscale.config import SHARED_DATASETS_DIR
from ragscale.errors import UserError

DEFAULT_DATASETS = ("hotpotqa_sample70.json", "musique_sample70.json")
HOTPOT = "hotpotqa_sample70.json"


def register_bench(benches) -> None:
    parser = benches.add_parser("retrieval", help="build an index of N passages; size on disk; query latency "
                                                  "in the embedded store and a Chroma server")
    parser.add_argument("--dataset", action="append", default=None,
                        help="dataset file or 'demo' (repeatable; default: the HotpotQA and MuSiQue samples)")
    parser.add_argument("--passages", type=int, default=None,
                        help="index N passages; beyond the samples' own, a generated corpus (default: the samples')")
    parser.add_argument("--queries", type=int, default=100, help="questions to time as queries (default 100)")
    parser.add_argument("-k", type=int, default=10, help="documents per query (default 10)")
    parser.add_argument("--no-server", action="store_true", help="skip the Chroma server half")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=bench_retrieval)

    ingest = benches.add_parser("ingest", help="passages/s of the indexing embedder vs today's path, same run")
    ingest.add_argument("--passages", type=int, default=512, help="HotpotQA sample paragraphs to embed (default 512)")
    ingest.add_argument("--json", action="store_true", help="print the result as JSON")
    ingest.set_defaults(func=bench_ingest)


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")


def _quantiles(values: list[float]) -> tuple[float, float]:
    if len(values) == 1:
        return values[0], values[0]
    return statistics.median(values), statistics.quantiles(values, n=20, method="inclusive")[18]


def _pooled_corpus(names):
    from ragscale.datasets import load_dataset
    from ragscale.datasets.types import Document

    datasets = [load_dataset(name) for name in names]
    seen: set[tuple[str, str]] = set()
    corpus: list[Document] = []
    for dataset in datasets:
        for doc in dataset.corpus:
            if (doc.title, doc.text) not in seen:
                seen.add((doc.title, doc.text))
                corpus.append(Document(doc_id=f"b{len(corpus)}", title=doc.title, text=doc.text))
    return datasets, corpus


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _generated(corpus, vectors: np.ndarray, passages: int, seed: int = 0):
    """``passages`` documents and vectors shaped like the real ones: each vector mixes two real
    passages' vectors plus noise (so neighbours cluster as in a real corpus, unlike uniform
    random vectors), and reuses one of their texts (so stored bytes are realistic)."""
    from ragscale.datasets.types import Document

    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(corpus), passages)
    second = rng.integers(0, len(corpus), passages)
    weight = rng.uniform(0.5, 1.0, (passages, 1)).astype(np.float32)
    mixed = weight * vectors[first] + (1 - weight) * vectors[second]
    mixed += rng.normal(0, 0.02, mixed.shape).astype(np.float32)
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    docs = [Document(doc_id=f"g{i}", title=corpus[j].title, text=corpus[j].text) for i, j in enumerate(first)]
    return docs, mixed.astype(np.float32)


def _time_store(url, path, docs, vectors, query_vectors, k):
    """Load ``docs``/``vectors`` into a fresh collection; build seconds and per-query latencies (ms)."""
    from ragscale.retrieval.index import ADD_BATCH, HNSW, chroma_client

    client = chroma_client(url, path)
    name = "ragscale-bench"
    try:
        client.delete_collection(name)
    except Exception:
        pass
    started = time.perf_counter()
    collection = client.create_collection(name, embedding_function=None, configuration={"hnsw": HNSW})
    for start in range(0, len(docs), ADD_BATCH):
        batch = docs[start:start + ADD_BATCH]
        collection.add(ids=[d.doc_id for d in batch], embeddings=vectors[start:start + len(batch)],
                       documents=[d.text for d in batch], metadatas=[{"title": d.title} for d in batch])
    collection.query(query_embeddings=query_vectors[:1], n_results=1, include=[])  # flushes the index
    build = time.perf_counter() - started
    latencies = []
    for vector in query_vectors:
        t0 = time.perf_counter()
        collection.query(query_embeddings=vector[None, :], n_results=min(k, len(docs)), include=[])
        latencies.append((time.perf_counter() - t0) * 1000)
    return build, latencies


def bench_retrieval(args) -> int:
    from ragscale.retrieval import embed_texts
    from ragscale.retrieval.server import chroma_executable, chroma_server

    names = args.dataset or [str(SHARED_DATASETS_DIR / name) for name in DEFAULT_DATASETS]
    datasets, corpus = _pooled_corpus(names)
    if args.passages is not None and args.passages < 1:
        raise UserError("--passages must be at least 1")
    queries = [q.question for dataset in datasets for q in dataset.questions][: max(args.queries, 1)]
    import chromadb  # noqa: F401  (a one-off per process, not part of building an index)

    embed_texts(["warm-up"])
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="ragscale-bench-") as tmp:
        tmp = Path(tmp)
        generated = args.passages is not None and args.passages > len(corpus)
        if generated:
            # Embedding 100k passages here would take hours (see bench ingest): vectors are generated
            # from the samples' real vectors, so this measures the vector store alone.
            from ragscale.retrieval.embeddings import BulkEmbedder

            vectors = BulkEmbedder("cpu").embed([d.render() for d in corpus])
            docs, vectors = _generated(corpus, vectors, args.passages)
            embed_seconds = None
        else:
            docs = corpus[: args.passages] if args.passages else corpus
            t0 = time.perf_counter()
            vectors = embed_texts([d.render() for d in docs])
            embed_seconds = time.perf_counter() - t0
        embed_latencies = []
        for query in queries:
            t0 = time.perf_counter()
            embed_texts([query])
            embed_latencies.append((time.perf_counter() - t0) * 1000)
        query_vectors = embed_texts(queries)
        build, latencies = _time_store(None, tmp / "embedded", docs, vectors, query_vectors, args.k)
        p50, p95 = _quantiles(latencies)
        result.update({
            "passages": len(docs), "corpus": "generated" if generated else "samples", "queries": len(queries),
            "k": args.k, "embed_seconds": None if embed_seconds is None else round(embed_seconds, 2),
            "query_embed_p50_ms": round(statistics.median(embed_latencies), 2),
            "embedded_build_seconds": round(build, 2), "embedded_size_mb": round(_du(tmp / "embedded") / 2**20, 1),
            "embedded_query_p50_ms": round(p50, 2), "embedded_query_p95_ms": round(p95, 2),
        })
        if not args.no_server and chroma_executable():
            with chroma_server(tmp / "server") as url:
                build, latencies = _time_store(url, None, docs, vectors, query_vectors, args.k)
            p50, p95 = _quantiles(latencies)
            result.update({"server_build_seconds": round(build, 2),
                           "server_size_mb": round(_du(tmp / "server") / 2**20, 1),
                           "server_query_p50_ms": round(p50, 2), "server_query_p95_ms": round(p95, 2)})
    result["load_1min"] = round(os.getloadavg()[0], 2)
    _print(result, args.json)
    return 0


# ---- bench ingest ----------------------------------------------------------------------------

def _embed_in_child(kind: str, texts: list[str]) -> dict:
    """Runs in a fresh process, so peak RSS belongs to one embedding path alone."""
    if kind != "reference":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as ragscale index runs it; before torch loads
    from ragscale.retrieval import embeddings

    if kind == "reference":
        embeddings.embed_texts(["warm-up"])
        name = f"{embeddings.EMBEDDING_MODEL} float32 (sentence-transformers, batch 64)"
        embed = embeddings.embed_texts
    else:
        embedder = embeddings.BulkEmbedder("cpu")
        embedder.embed(["warm-up"])
        name, embed = embedder.name, embedder.embed
    started = time.perf_counter()
    vectors = embed(texts)
    seconds = time.perf_counter() - started
    return {"name": name, "vectors": vectors, "seconds": seconds,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _matmul_gflops(dtype_name: str, seconds: float = 2.0) -> float:
    """Measured dense matmul rate with every core, at the FFN's shape (tokens x 384 x 1536)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    dtype = getattr(torch, dtype_name)
    a = torch.randn(4096, 384, dtype=dtype)
    b = torch.randn(384, 1536, dtype=dtype)
    for _ in range(3):
        a @ b
    runs = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        runs += 1
    return 2 * 4096 * 384 * 1536 * runs / (time.perf_counter() - started) / 1e9


def _flops_per_passage(texts: list[str]) -> float:
    """MiniLM-L6 (6 layers, width 384, FFN 1536): matmul FLOPs per token (dense layers + attention)
    times tokens, averaged over the passages."""
    from tokenizers import Tokenizer

    from ragscale.retrieval.embeddings import model_dir

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    layers, width, ffn = 6, 384, 1536
    total = 0.0
    for encoding in tokenizer.encode_batch(texts):
        tokens = len(encoding.ids)
        dense = 2 * tokens * (4 * width * width + 2 * width * ffn)
        attention = 2 * 2 * tokens * tokens * width
        total += layers * (dense + attention)
    return total / len(texts)


def _top10(passage_vectors, query_vectors) -> np.ndarray:
    return np.argsort(-(query_vectors @ passage_vectors.T), axis=1, kind="stable")[:, :10]


def _gold_recall(questions, corpus, top) -> float:
    """Fraction of the supporting paragraphs among the 10 retrieved, over every question."""
    found = []
    for q, row in zip(questions, top):
        titles = {corpus[i].title for i in row}
        found.extend(t in titles for t in set(q.supporting_titles))
    return float(np.mean(found))


def bench_ingest(args) -> int:
    from ragscale.datasets import load_dataset
    from ragscale.retrieval import embed_texts

    dataset = load_dataset(str(SHARED_DATASETS_DIR / HOTPOT))
    corpus = dataset.corpus
    if not 1 <= args.passages <= len(corpus):
        raise UserError(f"--passages must be 1-{len(corpus)} (the HotpotQA sample's paragraphs)")
    texts = [doc.render() for doc in corpus[: args.passages]]
    load_before = os.getloadavg()[0]
    context = multiprocessing.get_context("spawn")
    runs = {}
    for kind in ("reference", "fast"):  # one after the other: two at once would share the cores
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            runs[kind] = pool.submit(_embed_in_child, kind, texts).result()
    reference, fast = runs["reference"], runs["fast"]
    cosine = (reference["vectors"] * fast["vectors"]).sum(axis=1)
    # Recall of the gold paragraphs over the whole sample corpus, queries embedded by the reference model
    # (as at search time); passages embedded by each path (the first N) or the reference (the rest).
    all_texts = [doc.render() for doc in corpus]
    rest = embed_texts(all_texts[args.passages:]) if args.passages < len(corpus) else np.zeros((0, 384), np.float32)
    questions = [q for q in dataset.questions if q.supporting_titles]
    query_vectors = embed_texts([q.question for q in questions])
    top_ref = _top10(np.vstack([reference["vectors"], rest]), query_vectors)
    top_fast = _top10(np.vstack([fast["vectors"], rest]), query_vectors)
    same_top10 = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_ref, top_fast)]))
    flops = _flops_per_passage(texts)
    import torch

    dtype = "bfloat16" if "bfloat16" in fast["name"] else "float32"
    peak = _matmul_gflops(dtype)
    fast_rate = len(texts) / fast["seconds"]
    ref_rate = len(texts) / reference["seconds"]
    result = {
        "passages": len(texts),
        "seconds": round(fast["seconds"], 2),
        "passages_per_second": round(fast_rate, 1),
        "peak_rss_mb": round(fast["peak_rss_mb"], 0),
        # Of the reference's top 10 per question, the fraction the fast vectors also retrieve.
        "recall_at_10_vs_reference": round(same_top10, 4),
        "gold_recall_at_10": round(_gold_recall(questions, corpus, top_fast), 4),
        "reference_gold_recall_at_10": round(_gold_recall(questions, corpus, top_ref), 4),
        "embedder": fast["name"],
        "reference": reference["name"],
        "reference_seconds": round(reference["seconds"], 2),
        "reference_passages_per_second": round(ref_rate, 1),
        "reference_peak_rss_mb": round(reference["peak_rss_mb"], 0),
        "speedup": round(fast_rate / ref_rate, 2),
        "omp_wait_policy": fast["omp_wait_policy"],
        "reference_omp_wait_policy": reference["omp_wait_policy"],
        "min_cosine_vs_reference": round(float(cosine.min()), 5),
        "gflop_per_passage": round(flops / 1e9, 3),
        "achieved_gflops": round(flops * fast_rate / 1e9, 1),
        f"matmul_{dtype}_gflops": round(peak, 1),
        "fraction_of_matmul_rate": round(flops * fast_rate / 1e9 / peak, 3),
        "threads": torch.get_num_threads(),
        "load_1min_before": round(load_before, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
    }
    _print(result, args.json)
    return 0
