"""The SGLang client against our SGLang-compatible server on a loopback port, and its error paths.

Most tests serve the model-free ScriptedEngine (fast); one serves the real embedded engine and
checks that the round trip gives the same tokens and cache accounting as calling it directly.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from ragscale.engines import EngineSpec, make_engine
from ragscale.engines.base import SamplingParams
from ragscale.engines.server import make_server, sglang_command
from ragscale.engines.sglang_client import SGLangEngine, parse_prometheus
from ragscale.errors import EngineError
from tests.fakes import ByteTokenizer, ScriptedEngine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(engine):
    server = make_server(engine, "127.0.0.1", _free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def reply(prompt, params, i, rng):
    return f"answer {i} to {prompt[-12:]}\n\nmore"


@pytest.fixture
def scripted():
    # Per-token logprob = -(length of the text it is conditioned on) / 10: shows what was scored.
    engine = ScriptedEngine(reply, logprob=lambda p, c: -len(p) / 10 * len(c))
    server, url = serve(engine)
    yield engine, SGLangEngine(url, tokenizer=ByteTokenizer(), retries=1, backoff=0.01)
    server.shutdown()
    server.server_close()


def test_round_trip_matches_the_engine_behind_the_server(scripted):
    engine, client = scripted
    client.health()
    assert client.info.kind == "sglang" and client.info.model == "scripted-bytes"
    assert client.info.context_window == 8192
    params = SamplingParams(max_new_tokens=40, stop=("\n\n",), n=2, return_logprobs=True)
    gens = client.generate(["first question", "second question"], params)
    assert len(gens) == 4  # prompt-major: 2 prompts x n=2
    assert [g.prompt_ids for g in gens] == [list(b"first question")] * 2 + [list(b"second question")] * 2
    assert gens[0].text == "answer 0 to rst question" and gens[0].finish_reason == "stop"
    assert gens[0].output_ids == list(gens[0].text.encode())
    assert gens[0].logprobs == [-0.5] * len(gens[0].output_ids)
    # Continuing a branch with prompt ids + output ids: the server's cache covers all but one token.
    branch = gens[0].prompt_ids + gens[0].output_ids
    cont = client.generate([branch], SamplingParams(max_new_tokens=5))[0]
    assert cont.usage.prompt_tokens == len(branch)
    assert cont.usage.cached_tokens == len(branch) - 1
    assert client.stats().requests == 5
    assert client.stats().cached_tokens == sum(g.usage.cached_tokens for g in gens) + cont.usage.cached_tokens


def test_score_uses_input_token_logprobs(scripted):
    _, client = scripted
    scores = client.score("Question: 2+2? Answer:", [" 4", " five"])
    # One logprob per continuation token; the server scored from the prompt's last position
    # (logprob_start_len = len(prompt) - 1), i.e. conditioned on the 21 tokens before it.
    assert scores == [[-2.1] * 2, [-2.1] * 5]


def test_metrics_counters_give_a_run_level_hit_rate(scripted):
    _, client = scripted
    client.reset_stats()
    client.generate(["abcdefgh"], SamplingParams(max_new_tokens=3))
    client.generate(["abcdefgh"], SamplingParams(max_new_tokens=3))
    assert client.metrics_hit_rate() == pytest.approx(7 / 16)
    assert client.stats().hit_rate == pytest.approx(7 / 16)
    client.reset_stats()
    assert client.metrics_hit_rate() == 0.0
    client.flush_cache()
    assert client.generate(["abcdefgh"], SamplingParams(max_new_tokens=3))[0].usage.cached_tokens == 0


def test_unknown_sampling_parameter_is_http_400(scripted):
    _, client = scripted
    with pytest.raises(EngineError, match="HTTP 400: unknown field `bogus`, expected one of `max_new_tokens`"):
        client.post_generate({"input_ids": [[1, 2, 3]], "sampling_params": {"bogus": 1}})
    with pytest.raises(EngineError, match="HTTP 400"):
        client.post_generate({"text": "hi", "input_ids": [1]})


def test_prompt_over_context_is_refused_before_sending(scripted):
    _, client = scripted
    with pytest.raises(EngineError, match="context window of 8192"):
        client.generate([[65] * 8190], SamplingParams(max_new_tokens=10))


def test_server_down_gives_a_clear_error():
    client = SGLangEngine(f"http://127.0.0.1:{_free_port()}", retries=2, backoff=0.01)
    started = time.time()
    with pytest.raises(EngineError, match="cannot reach the SGLang server"):
        client.health()
    with pytest.raises(EngineError, match="cannot reach"):
        client.generate([[1, 2]], SamplingParams())
    assert time.time() - started < 10


def test_timeout_gives_a_clear_error():
    # A listener that accepts and never answers.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        client = SGLangEngine(f"http://127.0.0.1:{sock.getsockname()[1]}", tokenizer=ByteTokenizer(), timeout=0.5)
        with pytest.raises(EngineError, match="did not answer /model_info within 0 s"):
            client.info
    finally:
        sock.close()


def test_server_errors_are_retried_then_reported():
    calls = []

    class Flaky(ScriptedEngine):
        def generate(self, prompts, params):
            calls.append(1)
            if len(calls) < 2:
                raise RuntimeError("transient")
            return super().generate(prompts, params)

    server, url = serve(Flaky(reply))
    try:
        client = SGLangEngine(url, tokenizer=ByteTokenizer(), retries=2, backoff=0.01)
        assert client.generate(["x"], SamplingParams(max_new_tokens=3))[0].text == "ans"
        assert len(calls) == 2
        broken = SGLangEngine(url, tokenizer=ByteTokenizer(), retries=0)
        calls.clear()
        with pytest.raises(EngineError, match="HTTP 500: internal error") as failure:
            broken.generate(["x"], SamplingParams(max_new_tokens=3))
        assert "transient" not in str(failure.value)  # no exception text leaves the server
    finally:
        server.shutdown()
        server.server_close()


def test_bad_urls_and_unknown_tokenizers_are_clear(scripted):
    with pytest.raises(EngineError, match="looks like http"):
        SGLangEngine("localhost:30000")
    _, client = scripted
    bare = SGLangEngine(client.url)
    with pytest.raises(EngineError, match="give the client its tokenizer"):
        bare.tokenizer


def test_prometheus_parser_sums_label_sets():
    text = ('# HELP x\n# TYPE sglang:prompt_tokens_total counter\n'
            'sglang:prompt_tokens_total{model_name="a b",dp="0"} 10.0\n'
            'sglang:prompt_tokens_total{model_name="a b",dp="1"} 5\nplain 3 1700000000\n')
    assert parse_prometheus(text) == {"sglang:prompt_tokens_total": 15.0, "plain": 3.0}


def test_serve_sglang_command_context_length_router_plan_and_missing_sglang():
    cmd = sglang_command("Qwen/Qwen2.5-7B-Instruct", port=31000, dp_size=2, python="python", context_length=32768)
    assert cmd[:3] == ["python", "-m", "sglang.launch_server"]
    assert "--enable-metrics" in cmd and cmd[cmd.index("--schedule-policy") + 1] == "lpm"
    assert cmd[cmd.index("--dp-size") + 1] == "2" and cmd[cmd.index("--port") + 1] == "31000"
    assert cmd[cmd.index("--context-length") + 1] == "32768"
    assert "--context-length" not in sglang_command("m")
    proc = subprocess.run([sys.executable, "-m", "ragscale", "serve", "sglang", "--model-path", "m",
                           "--context-length", "4096"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "sglang.launch_server --model-path m" in proc.stdout and "--context-length 4096" in proc.stdout
    assert "cannot run in this environment" in proc.stderr  # the contract-test install has no GPU stack
    # Several GPU workers: one launch command per GPU, then the prefix-aware router in front.
    plan = subprocess.run([sys.executable, "-m", "ragscale", "serve", "sglang", "--model-path", "m", "--workers", "2",
                           "--port", "32000"], capture_output=True, text=True, timeout=120)
    lines = [line for line in plan.stdout.splitlines() if not line.startswith("#")]
    assert plan.returncode == 0 and len(lines) == 3
    assert lines[0].startswith("CUDA_VISIBLE_DEVICES=0 ") and "--port 32001" in lines[0]
    assert lines[1].startswith("CUDA_VISIBLE_DEVICES=1 ") and "--port 32002" in lines[1]
    assert "sglang_router launch" in lines[2] and "--policy cache_aware" in lines[2] and "--port 32000" in lines[2]
    assert "http://127.0.0.1:32001 http://127.0.0.1:32002" in lines[2]
    helptext = subprocess.run([sys.executable, "-m", "ragscale", "serve", "sglang", "--help"], capture_output=True,
                              text=True, timeout=120).stdout
    assert "ignores prefixes" in " ".join(helptext.split())  # --dp-size is SGLang's own balancer


def test_make_engine_builds_the_client_without_network():
    engine = make_engine(EngineSpec("sglang", url="http://127.0.0.1:9"))
    assert isinstance(engine, SGLangEngine) and engine.url == "http://127.0.0.1:9"


@pytest.mark.model
def test_embedded_server_round_trip_equals_direct_calls():
    from ragscale.engines.embedded import EmbeddedEngine

    direct, served = EmbeddedEngine(), EmbeddedEngine()  # one copy of the weights, two caches
    server, url = serve(served)
    try:
        client = SGLangEngine(url)
        assert client.info.model == "SmolLM2-135M-Instruct" and client.info.context_window == 8192
        prompts = [client.chat_prompt("What is the capital of France?"), client.chat_prompt("Name a colour.")]
        greedy = SamplingParams(max_new_tokens=12, return_logprobs=True)
        remote, local = client.generate(prompts, greedy), direct.generate(prompts, greedy)
        assert [g.output_ids for g in remote] == [g.output_ids for g in local]
        assert [g.text for g in remote] == [g.text for g in local]
        assert [g.usage for g in remote] == [g.usage for g in local]
        assert remote[0].logprobs == pytest.approx(local[0].logprobs, abs=1e-4)
        seeded = SamplingParams(max_new_tokens=8, temperature=0.9, seed=3, n=2)
        direct.flush_cache()
        client.flush_cache()
        assert [g.output_ids for g in client.generate(prompts[:1], seeded)] == \
               [g.output_ids for g in direct.generate(prompts[:1], seeded)]
        remote_scores = client.score(prompts[0], [" Paris", " Rome"])
        local_scores = direct.score(prompts[0], [" Paris", " Rome"])
        assert len(remote_scores) == 2 and [len(s) for s in remote_scores] == [len(s) for s in local_scores]
        for remote_row, local_row in zip(remote_scores, local_scores):
            assert remote_row == pytest.approx(local_row, rel=0.02, abs=0.05)  # bf16 rounding
        metrics = parse_prometheus(requests.get(f"{url}/metrics", timeout=5).text)
        assert metrics["sglang:prompt_tokens_total"] > 0
    finally:
        server.shutdown()
        server.server_close()


def _echo_run(calls: list, cursed: int | None = None):
    """A MergingQueue ``run``: records each call's job count, echoes prompts, fails on ``cursed``."""
    def run(jobs):
        calls.append(len(jobs))
        if any(job.prompts == [[cursed]] for job in jobs):
            raise EngineError(f"prompt {cursed} is cursed")
        for job in jobs:
            job.results = [[{"echo": ids}] for ids in job.prompts]
    return run


def _submit_while_busy(queue, prompt_ids) -> dict:
    """Submit one single-prompt job per id from its own thread while the engine is busy (its lock
    held), then let the engine go; returns each id's results, or its error message."""
    from ragscale.engines.server import _Job

    outcomes = {}

    def submit(ids):
        try:
            outcomes[ids] = queue.submit(_Job([[ids]]))
        except EngineError as exc:
            outcomes[ids] = str(exc)

    with queue.engine_lock:
        threads = [threading.Thread(target=submit, args=(ids,)) for ids in prompt_ids]
        for t in threads:
            t.start()
        deadline = time.time() + 5
        while len(queue._queued) < len(prompt_ids) and time.time() < deadline:
            time.sleep(0.005)
    for t in threads:
        t.join(5)
    return outcomes


def test_merging_queue_runs_waiting_jobs_in_one_call_and_a_bad_job_fails_alone():
    from ragscale.engines.server import MergingQueue

    calls = []
    queue = MergingQueue(_echo_run(calls, cursed=666))
    outcomes = _submit_while_busy(queue, (1, 666, 2))
    assert calls[0] == 3 and queue.largest_merge == 3  # merged into one call...
    assert sorted(calls[1:]) == [1, 1, 1]  # ...which failed, so each job ran alone
    assert outcomes == {1: [[{"echo": [1]}]], 2: [[{"echo": [2]}]], 666: "prompt 666 is cursed"}


def test_merging_queue_with_max_jobs_one_runs_every_job_alone_and_each_gets_its_own_result():
    from ragscale.engines.server import MergingQueue

    calls = []
    queue = MergingQueue(_echo_run(calls), max_jobs=1)
    outcomes = _submit_while_busy(queue, range(4))
    assert calls == [1, 1, 1, 1] and queue.largest_merge == 1
    assert outcomes == {i: [[{"echo": [i]}]] for i in range(4)}
