"""A live sglang-router (0.3.2, installed by the project's requirements) in front of our workers.

The fast tests run model-free workers (``python -m tests.scripted_worker``, the loopback server
with the ScriptedEngine); the ``model`` test runs two real ``ragscale serve embedded`` workers.
Each checks what a deployment needs from the scale-out path: a DRAG sweep and an ETS search give
the same predictions as one server directly, the hit rate is read through the router, the cache
is flushed through it, and a worker killed mid-sweep loses no row and repeats none.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import requests

from ragscale.engines.router import LocalCluster, free_port, router_command
from ragscale.engines.server import make_server
from ragscale.engines.sglang_client import SGLangEngine
from ragscale.errors import EngineError
from ragscale.rag.sweep import KIND, run_sweep
from ragscale.search.runner import run_search
from ragscale.search.tasks import QATask
from ragscale.search.verifiers import LMJudge, SGLangPRM, Trajectory
from ragscale.store import ResultsStore
from tests.fakes import ByteTokenizer
from tests.scripted_worker import SeededScriptedEngine, logprob, reply
from tests.test_rag_strategies import WordRetriever, tiny_dataset
from tests.test_search_runner import QUESTION, config, fake_embed, retrieve
from tests.test_sweep import SPEC


def scripted(*extra):
    return lambda: [sys.executable, "-m", "tests.scripted_worker", *extra]


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(workers=2, policy="cache_aware", worker_command=scripted(), log_level="error",
                      startup_timeout=60) as running:
        yield running


@pytest.fixture
def direct():
    """One worker, reached directly: the reference the router's results must equal."""
    server = make_server(SeededScriptedEngine(reply, logprob=logprob), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def client(url):
    return SGLangEngine(url, tokenizer=ByteTokenizer(), retries=2, backoff=0.2)


def sweep_rows(url, path):
    data = tiny_dataset()
    result = run_sweep(SPEC, client(url), ResultsStore(path), dataset=data, retriever=WordRetriever(data.corpus))
    return result, comparable(path)


def comparable(path):
    keep = ("key", "prediction", "em", "effective_length", "calls", "steps")
    return sorted(tuple(r.get(c) for c in keep) for r in ResultsStore(path).records(KIND))


def test_drag_sweep_through_the_router_equals_direct_with_hit_rate_and_flush(cluster, direct, tmp_path):
    via = client(cluster.url)
    via.flush_cache(timeout=10)
    via.reset_stats()
    data = tiny_dataset()
    result = run_sweep(SPEC, via, ResultsStore(tmp_path / "router.sqlite"), dataset=data,
                       retriever=WordRetriever(data.corpus))
    _, reference = sweep_rows(direct, tmp_path / "direct.sqlite")
    assert result.rows_written == result.rows_total == len(reference)
    assert comparable(tmp_path / "router.sqlite") == reference
    # The hit rate read through the router (/engine_metrics, both workers merged) is the one the
    # per-request cached_tokens add up to.
    served = via.metrics_hit_rate()
    assert served is not None and served > 0.3
    assert served == pytest.approx(via.stats().hit_rate, abs=1e-9)
    # Both workers took part, and the cache is flushed through the router.
    per_worker = [requests.get(u + "/metrics", timeout=5).text for u in cluster.worker_urls]
    assert all("sglang:prompt_tokens_total" in text for text in per_worker)
    prompt = [104, 101, 108, 108, 111] * 20
    via.generate([prompt], SPEC_PARAMS)
    assert via.generate([prompt], SPEC_PARAMS)[0].usage.cached_tokens == len(prompt) - 1
    via.flush_cache()
    assert via.generate([prompt], SPEC_PARAMS)[0].usage.cached_tokens == 0


from ragscale.engines.base import SamplingParams  # noqa: E402

SPEC_PARAMS = SamplingParams(max_new_tokens=2)


def test_ets_search_through_the_router_equals_direct(cluster, direct):
    def search(url):
        engine = client(url)
        result = run_search(engine, QATask(retrieve, k=2), QUESTION, config("ets", width=4), LMJudge(engine),
                            fake_embed)
        return result.answer, sorted((n.depth, n.text) for n in result.tree), result.kv_per_step

    assert search(cluster.url) == search(direct)


def test_a_worker_killed_mid_sweep_loses_no_row_and_repeats_none(direct, tmp_path):
    path = tmp_path / "killed.sqlite"
    with LocalCluster(workers=2, worker_command=scripted("--delay", "0.15"), log_level="error",
                      startup_timeout=60) as running:
        data = tiny_dataset()
        failure = []

        def sweep():
            try:
                run_sweep(SPEC, client(running.url), ResultsStore(path), dataset=data,
                          retriever=WordRetriever(data.corpus))
            except EngineError as exc:
                failure.append(exc)

        worker = threading.Thread(target=sweep)
        worker.start()
        deadline = time.time() + 60
        while len(ResultsStore(path).records(KIND)) < 10 and time.time() < deadline:
            time.sleep(0.1)
        running.kill_worker(0)
        worker.join(120)
        rows_before_resume = len(ResultsStore(path).records(KIND))
        if failure:  # the sweep stopped with a clear error: resuming finishes it on the other worker
            time.sleep(3)  # the router's health check marks the dead worker
            run_sweep(SPEC, client(running.url), ResultsStore(path), dataset=data,
                      retriever=WordRetriever(data.corpus))
    _, reference = sweep_rows(direct, tmp_path / "direct.sqlite")
    rows = ResultsStore(path).records(KIND)
    assert 10 <= rows_before_resume and len(rows) == len(reference)
    assert len({r["key"] for r in rows}) == len(rows)  # none repeated
    assert comparable(path) == reference  # none lost, same predictions


def test_router_health_passes_with_no_worker_but_the_client_does_not():
    port = free_port()
    router = subprocess.Popen(router_command([], port, log_level="error"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        assert requests.get(url + "/health", timeout=2).status_code == 200
        with pytest.raises(EngineError):
            SGLangEngine(url, retries=0).health()
    finally:
        router.terminate()
        router.wait(10)


def test_prm_through_the_router_uses_v1_classify():
    with LocalCluster(workers=1, worker_command=scripted("--reward"), log_level="error", startup_timeout=60) as running:
        prm = SGLangPRM(running.url)
        scores = prm.score([Trajectory(question="q", prompt_ids=[], steps=[f"step {v}"]) for v in (-1.0, 0.9, 1.1, 3.0)])
        assert prm._classify_path == "/v1/classify"
        assert scores == sorted(scores) and len(set(scores)) == 4


@pytest.mark.model
def test_two_embedded_workers_behind_the_router(tmp_path):
    """Real `ragscale serve embedded` workers: a DRAG sweep and an ETS search through the router."""
    from ragscale.engines.router import embedded_worker_command

    data = tiny_dataset()
    spec = SPEC.__class__(dataset="tiny", strategies=("drag",), ks=(1,), ms=(1,), ns=(1,), limit=2, pool_size=2,
                          batch_size=2, generate_chains=False)
    with LocalCluster(workers=2, worker_command=embedded_worker_command) as running:
        via = SGLangEngine(running.url, timeout=600)
        via.flush_cache(timeout=30)
        via.reset_stats()
        result = run_sweep(spec, via, ResultsStore(tmp_path / "r.sqlite"), dataset=data,
                           retriever=WordRetriever(data.corpus))
        assert result.rows_written == result.rows_total == 2
        rate = via.metrics_hit_rate()
        assert rate is not None and rate == pytest.approx(via.stats().hit_rate, abs=1e-9)
        search = run_search(via, QATask(retrieve, k=1), QUESTION, config("ets", width=2, depth=2), LMJudge(via),
                            fake_embed)
        assert search.tree.max_depth >= 1 and search.tokens_generated > 0
        via.flush_cache(timeout=30)
        # Router log: the workers report a local model folder, so no model-hub fetch was tried.
        assert not any("HuggingFace" in line for line in running.router_log)
        # One worker alone gives the same sweep predictions (greedy, one prompt per request).
        alone = SGLangEngine(running.worker_urls[0], timeout=600)
        alone.flush_cache(timeout=30)
        run_sweep(spec, alone, ResultsStore(tmp_path / "d.sqlite"), dataset=data, retriever=WordRetriever(data.corpus))
    assert comparable(tmp_path / "r.sqlite") == comparable(tmp_path / "d.sqlite")


@pytest.mark.model
def test_serve_router_command_runs_workers_and_router_until_interrupted():
    import re
    import signal

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ragscale", "serve", "router", "--workers", "1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not any(line.startswith("router:") for line in lines):
            lines.append(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        assert f"router: {url}" in "".join(lines)
        engine = SGLangEngine(url, timeout=600)
        engine.health()
        assert engine.info.model == "SmolLM2-135M-Instruct" and engine.info.context_window == 8192
        out = engine.generate([engine.chat_prompt("Say hi.")], SamplingParams(max_new_tokens=3))
        assert 1 <= out[0].usage.completion_tokens <= 3
        worker = re.search(r"workers: (\S+)", "".join(lines)).group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(180)  # a loaded machine took over 60 s to stop the worker and router
    assert proc.returncode == 0
    with pytest.raises(requests.ConnectionError):  # the worker went down with it
        requests.get(worker + "/health", timeout=2)
