"""Scale-out and load benchmarks: ``ragscale bench router`` and ``ragscale bench serve-load``.

router: two ``ragscale serve embedded`` workers (separate processes) behind sglang-router; the
same small DRAG sweep (HotpotQA sample, k=2, m=2, 6 questions, as ``bench sweep``) runs once with
``--policy cache_aware`` and once with ``--policy round_robin`` over the same workers, their
caches flushed between runs. Hit rate is read through the router (``/engine_metrics`` counter
deltas, merged over both workers).

serve-load: one embedded server in this process, 32 clients that each open a fresh connection
for every request and fire together (a burst like a team's notebooks), 4 short requests each.
Counts connection resets, reports latency percentiles and the process's resident memory.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

Progress = Callable[[int, int, str], None]

ROUTER_WORKERS = 2
POLICIES = ("cache_aware", "round_robin")


def router_benchmark(progress: Progress | None = None) -> dict:
    import subprocess

    from ragscale.config import SHARED_DATASETS_DIR
    from ragscale.datasets import load_dataset
    from ragscale.engines.router import LocalCluster, free_port, router_command
    from ragscale.engines.sglang_client import SGLangEngine
    from ragscale.rag.sweep import SweepSpec, load_rows, run_sweep
    from ragscale.retrieval import build_retriever
    from ragscale.store import ResultsStore

    dataset = load_dataset(SHARED_DATASETS_DIR / "hotpotqa_sample70.json")
    retriever = build_retriever(dataset)
    spec = SweepSpec(dataset=dataset.source, strategies=("drag",), ks=(2,), ms=(2,), ns=(1,), limit=6,
                     pool_size=2, generate_chains=False, batch_size=8)
    runs, predictions = [], {}
    # The workers start once (each loads the model); a fresh router per policy sits in front of them.
    with LocalCluster(workers=ROUTER_WORKERS, policy=POLICIES[0]) as cluster, \
            tempfile.TemporaryDirectory() as tmp:
        cluster.router.terminate()
        cluster.router.wait(10)
        for step, policy in enumerate(POLICIES, start=1):
            port = free_port()
            router = subprocess.Popen(router_command(cluster.worker_urls, port, policy=policy, log_level="error"),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cluster.router, cluster.url, cluster.policy = router, f"http://127.0.0.1:{port}", policy
            try:
                cluster._await_router()
                client = SGLangEngine(cluster.url, timeout=600)
                client.flush_cache(timeout=60)
                client.reset_stats()
                store = ResultsStore(Path(tmp) / f"{policy}.sqlite")
                started = time.perf_counter()
                run_sweep(spec, client, store, dataset=dataset, retriever=retriever)
                seconds = time.perf_counter() - started
                rows = load_rows(store)
                predictions[policy] = rows.sort_values("key")["prediction"].tolist()
                runs.append({"policy": policy, "seconds": round(seconds, 2),
                             "hit_rate": round(client.metrics_hit_rate() or 0.0, 4),
                             "client_hit_rate": round(client.stats().hit_rate, 4),
                             "requests": client.stats().requests})
                client.close()
            finally:
                router.terminate()
                router.wait(10)
            if progress:
                progress(step, len(POLICIES), policy)
    by = {r["policy"]: r for r in runs}
    return {
        "workers": ROUTER_WORKERS, "questions": spec.limit, "sweep": "drag k=2 m=2, HotpotQA sample",
        "runs": runs,
        "cache_aware_higher_hit_rate": by["cache_aware"]["hit_rate"] > by["round_robin"]["hit_rate"],
        "same_predictions": predictions["cache_aware"] == predictions["round_robin"],
    }


LOAD_CLIENTS = 32
LOAD_REQUESTS_PER_CLIENT = 4


def serve_load_benchmark(progress: Progress | None = None) -> dict:
    import requests

    from ragscale.engines.bench import process_memory_mb
    from ragscale.engines.embedded import EmbeddedEngine
    from ragscale.engines.model_files import bench_threads
    from ragscale.engines.server import make_server

    engine = EmbeddedEngine(threads=bench_threads())
    server = make_server(engine, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    prompts = [engine.encode(engine.chat_prompt(f"Say one word about the number {i}.")) for i in range(LOAD_CLIENTS)]
    requests.post(url + "/generate", json={"input_ids": prompts[0], "sampling_params": {"max_new_tokens": 2}},
                  timeout=120).raise_for_status()  # first-call overheads
    rss_before = process_memory_mb()["rss_mb"]
    if progress:
        progress(1, 2, "warm")
    latencies, resets, errors = [], 0, 0
    lock = threading.Lock()
    barrier = threading.Barrier(LOAD_CLIENTS)

    def client(i: int) -> None:
        nonlocal resets, errors
        barrier.wait()
        for _ in range(LOAD_REQUESTS_PER_CLIENT):
            started = time.perf_counter()
            try:
                # A fresh connection per request: the burst the listen backlog has to absorb.
                response = requests.post(url + "/generate", timeout=600, headers={"Connection": "close"},
                                         json={"input_ids": prompts[i], "sampling_params": {"max_new_tokens": 4,
                                                                                             "temperature": 0}})
                ok = response.status_code == 200
            except requests.ConnectionError:
                with lock:
                    resets += 1
                continue
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(LOAD_CLIENTS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    rss_after = process_memory_mb()["rss_mb"]
    server.shutdown()
    server.server_close()
    if progress:
        progress(2, 2, "load")
    latencies.sort()
    return {
        "clients": LOAD_CLIENTS, "requests": LOAD_CLIENTS * LOAD_REQUESTS_PER_CLIENT, "resets": resets,
        "errors": errors, "ok": len(latencies),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
        "seconds": round(seconds, 2), "largest_merged_requests": server.service.queue.largest_merge,
        "rss_mb_before": rss_before, "rss_mb_after": rss_after,
    }
