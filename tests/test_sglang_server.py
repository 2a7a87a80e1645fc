"""The loopback SGLang server (``ragscale serve embedded``): SGLang 0.5.x's answers, and holding load.

Every case here is one a real SGLang 0.5.23 answers the way asserted (read in its http_server.py,
api_types.py and sampling_params.py), or a limit this server adds because a team can reach it.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from ragscale.engines.server import make_server
from ragscale.engines.sglang_client import parse_prometheus
from ragscale.engines.sglang_protocol import ServerLimits
from tests.fakes import ScriptedEngine
from tests.sglang_contract import check_response


def reply(prompt, params, i, rng):
    return f"answer {i} to {prompt[-12:]}\n\nmore"


class CountingEngine(ScriptedEngine):
    """Records every prompt it is asked to generate for, and can be held busy."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generated: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()

    def generate(self, prompts, params):
        self.gate.wait(30)
        self.generated += [list(p) if isinstance(p, list) else p for p in prompts]
        return super().generate(prompts, params)


def serve(engine, **kwargs):
    server = make_server(engine, "127.0.0.1", 0, **kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def live():
    engine = CountingEngine(reply)
    server, url = serve(engine, limits=ServerLimits(max_prompts=8, max_n=4, max_total_tokens=4000,
                                                    socket_timeout=1.0, max_body_bytes=64 * 1024))
    yield engine, url, server
    engine.gate.set()
    server.shutdown()
    server.server_close()


def post(url, body, path="/generate", **kw):
    return requests.post(url + path, json=body, timeout=30, **kw)


# ---- SGLang's answers ------------------------------------------------------------------------

def test_three_error_shapes_and_status_codes(live):
    _, url, _ = live
    # Schema violations: 400 {"error": "<serde message>"} (SGLang's generate_contract_error).
    wrong = post(url, {"input_ids": [1, 2], "sampling_params": {"max_new_tokens": "8"}})
    assert wrong.status_code == 400 and wrong.json() == {"error": 'invalid type: string "8", expected i64'}
    fractional = post(url, {"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 4.7}})
    assert fractional.json() == {"error": "invalid type: floating point `4.7`, expected i64"}
    assert post(url, {"input_ids": [1, 2], "sampling_params": {"temperature": "nan"}}).json() == \
        {"error": 'invalid type: string "nan", expected f64'}
    assert post(url, {"input_ids": [1, 2], "sampling_params": {"stop": [5]}}).json() == \
        {"error": "invalid type: integer `5`, expected a string"}
    assert post(url, {"input_ids": [1, 2], "logprob_start_len": "x"}).json() == \
        {"error": 'invalid type: string "x", expected a value or an array of values for Int64OrList'}
    unknown = post(url, {"input_ids": [1, 2], "sampling_params": {"bogus": 1}})
    assert unknown.status_code == 400 and unknown.json()["error"].startswith("unknown field `bogus`, expected one of")
    # ValueErrors: 400 {"error": {"message": ...}}.
    nan = requests.post(url + "/generate", data=b'{"input_ids": [1, 2], "sampling_params": {"temperature": NaN}}',
                        timeout=10)
    assert nan.status_code == 400
    assert nan.json() == {"error": {"message": "temperature must be a non-negative finite number, got nan."}}
    assert post(url, {"input_ids": [1], "sampling_params": {"top_p": 0}}).json()["error"]["message"] == \
        "top_p must be in (0, 1], got 0.0."
    # Not JSON at all: FastAPI's handler, top-level message.
    broken = requests.post(url + "/generate", data=b"{not json", timeout=10)
    assert broken.status_code == 400
    assert broken.json()["object"] == "error" and broken.json()["code"] == 400 and "JSON" in broken.json()["message"]


def test_unknown_top_level_fields_are_ignored_and_known_ones_typed(live):
    engine, url, _ = live
    # sglang-router adds these to every request it forwards.
    extra = {"model": "m", "background": False, "log_metrics": True, "no_logs": False, "return_bytes": False,
             "return_entropy": False, "return_hidden_states": False, "anything_new": {"x": 1}}
    ok = post(url, {"input_ids": [104, 105], "sampling_params": {"max_new_tokens": 3}, **extra})
    assert ok.status_code == 200 and ok.json()["text"] == "ans"
    check_response(ok.json())
    assert post(url, {"input_ids": [1], "stream": "yes"}).json() == {"error": 'invalid type: string "yes", expected a boolean'}
    assert post(url, {"input_ids": [1], "return_prompt_token_ids": None}).json() == \
        {"error": "invalid type: null, expected a boolean"}


def test_sampling_keys_sglang_accepts_are_accepted_and_unhonourable_values_refused(live):
    _, url, _ = live
    defaults = {"max_new_tokens": 3, "top_k": -1, "min_p": 0.0, "stop_token_ids": [], "no_stop_trim": False,
                "skip_special_tokens": True, "spaces_between_special_tokens": True, "ignore_eos": False,
                "repetition_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0, "min_new_tokens": 0,
                "sampling_seed": 7, "n": 1, "stop": "\n", "logit_bias": {}}
    assert post(url, {"input_ids": [104, 105], "sampling_params": defaults}).status_code == 200
    refused = post(url, {"input_ids": [104], "sampling_params": {"top_k": 5, "no_stop_trim": True}})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith("sampling parameters not supported by this server: "
                                                         "no_stop_trim, top_k")
    # top_k at least the vocabulary is no restriction: honoured by doing nothing.
    assert post(url, {"input_ids": [104], "sampling_params": {"top_k": 256, "max_new_tokens": 2}}).status_code == 200


def test_batch_forms_order_and_one_sampling_object_for_all(live):
    _, url, _ = live
    one = post(url, {"input_ids": [[104, 105], [106, 107]], "sampling_params": {"max_new_tokens": 4, "n": 2}})
    items = one.json()
    assert one.status_code == 200 and len(items) == 4  # prompt-major: 2 prompts x n=2
    assert [i["meta_info"]["prompt_tokens"] for i in items] == [2, 2, 2, 2]
    check_response(items)
    per_prompt = post(url, {"text": ["ab", "cd"], "sampling_params": [{"max_new_tokens": 1}, {"max_new_tokens": 2}],
                            "rid": ["r1", "r2"]}).json()
    assert [i["meta_info"]["completion_tokens"] for i in per_prompt] == [1, 2]
    assert [i["meta_info"]["id"] for i in per_prompt] == ["r1", "r2"]
    assert per_prompt[1]["meta_info"]["finish_reason"] == {"type": "length", "length": 2}
    assert post(url, {"text": ["a", "b"], "sampling_params": [{}]}).json()["error"]["message"] == \
        "sampling_params has 1 entries for 2 prompts"


def test_prompt_length_rules_and_abort_as_sglang():
    server, url = serve(ScriptedEngine(reply))
    window = 8192
    too_long = post(url, {"input_ids": [65] * window, "sampling_params": {"max_new_tokens": 0}})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["message"] == ("The input (8192 tokens) is longer than the model's context "
                                                   "length (8192 tokens).")
    total = post(url, {"input_ids": [65] * 8000, "sampling_params": {"max_new_tokens": 193}})
    assert total.status_code == 400 and "maximum context length of 8192" in total.json()["error"]["message"]
    # Between max_req_input_len (8186) and the window, SGLang's scheduler aborts: HTTP 200.
    aborted = post(url, {"input_ids": [65] * 8188, "sampling_params": {"max_new_tokens": 0}})
    assert aborted.status_code == 200
    finish = aborted.json()["meta_info"]["finish_reason"]
    assert finish["type"] == "abort" and "exceeds the maximum allowed length (8186 tokens)" in finish["message"]
    check_response(aborted.json())
    server.shutdown()
    server.server_close()


def test_info_endpoints_new_and_old_names_and_v1_models(live):
    _, url, _ = live
    for new, old in (("/model_info", "/get_model_info"), ("/server_info", "/get_server_info")):
        a, b = requests.get(url + new, timeout=5).json(), requests.get(url + old, timeout=5).json()
        assert {k: v for k, v in a.items() if k != "uptime_seconds"} == \
               {k: v for k, v in b.items() if k != "uptime_seconds"}
    server = requests.get(url + "/server_info", timeout=5).json()
    assert server["context_length"] is None  # as SGLang without --context-length
    assert server["max_req_input_len"] == 8186 and server["version"].startswith("0.5.23")
    model = requests.get(url + "/model_info", timeout=5).json()
    assert model["served_model_name"] == "scripted-bytes" and model["is_generation"] is True
    cards = requests.get(url + "/v1/models", timeout=5).json()
    assert cards["data"][0]["id"] == "scripted-bytes" and cards["data"][0]["max_model_len"] == 8192


def test_context_length_flag_is_reported_and_enforced():
    server, url = serve(ScriptedEngine(reply), context_length=1000)
    try:
        assert requests.get(url + "/server_info", timeout=5).json()["context_length"] == 1000
        assert requests.get(url + "/v1/models", timeout=5).json()["data"][0]["max_model_len"] == 1000
        assert post(url, {"input_ids": [65] * 1000}).status_code == 400
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_use_sglang_names_only(live):
    _, url, _ = live
    post(url, {"input_ids": [104, 105], "sampling_params": {"max_new_tokens": 2}})
    post(url, {"input_ids": [104, 105], "sampling_params": {"max_new_tokens": 2}})
    text = requests.get(url + "/metrics", timeout=5).text
    names = {line.split("{")[0] for line in text.splitlines() if line and not line.startswith("#")}
    sglang_names = {"sglang:prompt_tokens_total", "sglang:generation_tokens_total", "sglang:cached_tokens_total",
                    "sglang:num_requests_total", "sglang:num_aborted_requests_total", "sglang:cache_hit_rate",
                    "sglang:num_used_tokens", "sglang:max_total_num_tokens", "sglang:token_usage",
                    "sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:context_len"}
    assert names == sglang_names and "sglang:token_usage_tokens" not in text
    assert 'cache_source="device"' in text
    values = parse_prometheus(text)
    assert values["sglang:prompt_tokens_total"] == 4 and values["sglang:cached_tokens_total"] == 1
    assert values["sglang:cache_hit_rate"] == 0.5  # the latest batch only, as SGLang's gauge


def test_flush_cache_is_post_only_refused_while_busy_and_waits_with_timeout(live):
    engine, url, _ = live
    assert requests.get(url + "/flush_cache", timeout=5).status_code == 405  # GET changes nothing
    assert requests.post(url + "/flush_cache", timeout=5).status_code == 200
    engine.gate.clear()  # the next generation blocks: the server is busy
    busy = threading.Thread(target=post, args=(url, {"input_ids": [104], "sampling_params": {"max_new_tokens": 1}}))
    busy.start()
    time.sleep(0.3)
    refused = requests.post(url + "/flush_cache", timeout=5)
    assert refused.status_code == 400 and refused.text.startswith("Cache not flushed because there are pending")
    threading.Timer(0.5, engine.gate.set).start()
    waited = requests.post(url + "/flush_cache?timeout=10", timeout=15)
    assert waited.status_code == 200 and waited.text.startswith("Cache flushed.")
    busy.join(10)
    bad = requests.post(url + "/flush_cache?timeout=x", timeout=5)
    assert bad.status_code == 400 and bad.json()["object"] == "error"


def test_health_is_503_while_the_model_loads_then_200():
    release = threading.Event()

    def slow_factory():
        release.wait(20)
        return ScriptedEngine(reply)

    server, url = serve(slow_factory)
    try:
        assert requests.get(url + "/health", timeout=5).status_code == 503
        starting = post(url, {"input_ids": [1]})
        assert starting.status_code == 503 and "starting" in starting.json()["error"]["message"]
        release.set()
        server.service.ready.wait(10)
        assert requests.get(url + "/health", timeout=5).status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_classify_for_reward_models_and_sglang_400_otherwise(live):
    _, url, _ = live
    refused = post(url, {"text": ["a"]}, path="/classify")
    assert refused.status_code == 400 and "not appear to be an embedding model" in refused.json()["error"]["message"]

    class Reward(ScriptedEngine):
        def classify(self, texts):
            return [[0.9] if "good" in t else [1.1] for t in texts]

    server, rurl = serve(Reward(reply))
    try:
        direct = post(rurl, {"text": ["good", "bad"]}, path="/classify").json()
        assert [row["embedding"] for row in direct] == [[0.9], [1.1]]
        openai = post(rurl, {"model": "scripted-bytes", "input": ["good"]}, path="/v1/classify").json()
        assert openai["data"][0]["probs"] == [1.0] and openai["data"][0]["num_classes"] == 1
        assert requests.get(rurl + "/model_info", timeout=5).json()["is_generation"] is False
    finally:
        server.shutdown()
        server.server_close()


# ---- holding load, refusing abuse (issue 11, finding 6) --------------------------------------

def raw_exchange(url: str, data: bytes, read_timeout: float = 5.0) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def test_body_size_cap_bad_lengths_and_short_bodies(live):
    _, url, _ = live
    huge = raw_exchange(url, b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 2000000000\r\n\r\n{")
    assert huge.startswith(b"HTTP/1.1 413") and b"at most 65,536" in huge
    negative = raw_exchange(url, b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
    assert negative.startswith(b"HTTP/1.1 400")
    # A body shorter than declared: the socket timeout (1 s here) frees the thread with a 408.
    started = time.time()
    short = raw_exchange(url, b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"in", 10)
    assert short.startswith(b"HTTP/1.1 408") and time.time() - started < 5
    assert post(url, {"input_ids": [104], "sampling_params": {"max_new_tokens": 1}}).status_code == 200


def test_idle_connections_are_closed_by_the_socket_timeout(live):
    _, url, server = live
    host, port = url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(20)]
    try:
        time.sleep(2.5)  # socket_timeout is 1 s in this fixture
        closed = 0
        for sock in idle:
            try:
                closed += sock.recv(1) == b""
            except (ConnectionResetError, TimeoutError):
                closed += 1
        assert closed == len(idle)
    finally:
        for sock in idle:
            sock.close()


def test_limits_on_prompts_n_and_total_tokens_are_clear_400s(live):
    _, url, _ = live
    many = post(url, {"input_ids": [[104]] * 9, "sampling_params": {"max_new_tokens": 1}})
    assert many.status_code == 400 and many.json()["error"]["message"] == "a request may carry at most 8 prompts, got 9"
    wide = post(url, {"input_ids": [104], "sampling_params": {"n": 64}})
    assert wide.status_code == 400 and wide.json()["error"]["message"] == "n may be at most 4 on this server, got 64"
    heavy = post(url, {"input_ids": [[65] * 900] * 4, "sampling_params": {"max_new_tokens": 200}})
    assert heavy.status_code == 400 and "allows 4,000 per request" in heavy.json()["error"]["message"]
    out_of_vocab = post(url, {"input_ids": [104, 9999], "sampling_params": {"max_new_tokens": 1}})
    assert out_of_vocab.status_code == 400 and "outside the vocabulary" in out_of_vocab.json()["error"]["message"]


def test_a_bad_request_in_a_merged_batch_fails_alone_and_good_ones_run_once(live):
    engine, url, _ = live
    engine.gate.clear()  # hold the engine so that the ten requests queue up and merge
    blocker = threading.Thread(target=post, args=(url, {"input_ids": [120], "sampling_params": {"max_new_tokens": 1}}))
    blocker.start()
    time.sleep(0.3)
    engine.generated.clear()
    outcomes = {}

    def send(i):
        body = {"input_ids": [97 + i], "sampling_params": {"max_new_tokens": 2}}
        if i == 5:
            body["sampling_params"]["temperature"] = -1  # refused by validation, never queued
        outcomes[i] = post(url, body).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    engine.gate.set()
    for t in threads + [blocker]:
        t.join(20)
    assert outcomes == {i: 400 if i == 5 else 200 for i in range(10)}
    good = [p for p in engine.generated if p != [120]]
    assert sorted(map(tuple, good)) == [(97 + i,) for i in range(10) if i != 5]  # 9 prompts, each once


def test_an_engine_failure_never_sends_exception_text():
    class Broken(ScriptedEngine):
        def generate(self, prompts, params):
            raise RuntimeError("secret /etc/path detail")

    server, url = serve(Broken(reply))
    try:
        failed = post(url, {"input_ids": [104]})
        assert failed.status_code == 500 and "secret" not in failed.text
        assert failed.json() == {"error": {"message": "internal error while serving the request (see the server log)"}}
    finally:
        server.shutdown()
        server.server_close()


def test_32_concurrent_fresh_connections_get_no_reset(live):
    _, url, _ = live
    barrier = threading.Barrier(32)
    statuses, resets = [], []

    def client():
        barrier.wait()
        for _ in range(3):
            try:
                statuses.append(requests.post(url + "/generate", json={"input_ids": [104],
                                              "sampling_params": {"max_new_tokens": 1}},
                                              headers={"Connection": "close"}, timeout=30).status_code)
            except requests.ConnectionError as exc:
                resets.append(exc)

    threads = [threading.Thread(target=client) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert resets == [] and statuses == [200] * 96


def test_over_the_connection_cap_idle_connections_give_way_and_working_ones_get_503_not_a_hang():
    engine = CountingEngine(reply)
    server, url = serve(engine, limits=ServerLimits(max_connections=2, socket_timeout=5))
    host, port = url.removeprefix("http://").split(":")
    held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(2)]
    engine.gate.clear()
    busy = [threading.Thread(target=post, args=(url, {"input_ids": [104]})) for _ in range(2)]
    try:
        time.sleep(0.2)
        # Two connections that sent nothing: the newcomer takes the place of the older one.
        assert raw_exchange(url, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
        for t in busy:
            t.start()
        time.sleep(0.5)
        # Both slots working: refused at once.
        third = raw_exchange(url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert third.startswith(b"HTTP/1.1 503")
    finally:
        engine.gate.set()
        for t in busy:
            t.join(10)
        for sock in held:
            sock.close()
        server.shutdown()
        server.server_close()
    assert json.loads(third.split(b"\r\n\r\n", 1)[1])["error"]["message"].startswith("too many open connections")
