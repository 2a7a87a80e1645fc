"""The SGLang client against answers recorded in SGLang 0.5.x's and sglang-router 0.3.x's shapes,
and against servers that are not SGLang (issue 10 points 2, 4-6, 8-9; issue 11 findings 1, 7)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ragscale.engines import EngineSpec, make_engine
from ragscale.engines.base import SamplingParams
from ragscale.engines.options import add_engine_args, spec_from_args
from ragscale.engines.sglang_client import HEALTH_TIMEOUT, SGLangEngine
from ragscale.errors import EngineError
from tests.fakes import ByteTokenizer

# /server_info of `python -m sglang.launch_server --model-path Qwen/Qwen2.5-7B-Instruct` (0.5.23, no
# --context-length), abridged: server args flattened, context_length null, scheduler info on top.
SERVER_INFO_0_5 = {
    "model_path": "Qwen/Qwen2.5-7B-Instruct", "tokenizer_path": "Qwen/Qwen2.5-7B-Instruct",
    "served_model_name": "Qwen/Qwen2.5-7B-Instruct", "context_length": None, "host": "0.0.0.0", "port": 30000,
    "mem_fraction_static": 0.88, "max_running_requests": None, "chunked_prefill_size": 8192,
    "schedule_policy": "fcfs", "enable_metrics": False, "dp_size": 1, "tp_size": 1,
    "launch_command": "python -m sglang.launch_server --model-path Qwen/Qwen2.5-7B-Instruct",
    "status": "ready", "max_total_num_tokens": 411284, "max_req_input_len": 32762, "startup_time": 1764300000.0,
    "internal_states": [{"attention_backend": "fa3", "last_gen_throughput": 0.0, "memory_usage": {"kvcache": 21.9}}],
    "version": "0.5.23", "frontend": "python",
}
MODEL_INFO_0_5 = {"model_path": "Qwen/Qwen2.5-7B-Instruct", "served_model_name": "Qwen/Qwen2.5-7B-Instruct",
                  "tokenizer_path": "Qwen/Qwen2.5-7B-Instruct", "is_generation": True,
                  "preferred_sampling_params": None, "weight_version": "default", "load_format": "auto",
                  "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}
MODELS_0_5 = {"object": "list", "data": [{"id": "Qwen/Qwen2.5-7B-Instruct", "object": "model", "created": 1764300000,
                                           "owned_by": "sglang", "root": "Qwen/Qwen2.5-7B-Instruct",
                                           "parent": None, "max_model_len": 32768}]}


class Canned(BaseHTTPRequestHandler):
    """Answers from a table: path -> (status, body bytes, content type); records what it was sent."""

    routes: dict = {}
    seen: list = []

    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Canned.seen.append((self.command, self.path, json.loads(body) if body else None))
        route = Canned.routes.get(self.path) or Canned.routes.get(self.path.split("?")[0])
        if route is None:
            status, data, kind = 404, b'{"detail":"Not Found"}', "application/json"
        else:
            status, data, kind = route(self) if callable(route) else route
        if isinstance(data, (dict, list)):
            data = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


def ok(body, kind="application/json"):
    return 200, body, kind


@pytest.fixture
def canned():
    Canned.routes, Canned.seen = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Canned)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Canned.routes, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def client(url, **kw):
    return SGLangEngine(url, tokenizer=ByteTokenizer(), retries=0, backoff=0.01, **kw)


def generate_answer(meta_extra=None, **item):
    meta = {"id": "x", "prompt_tokens": 3, "completion_tokens": 2, "cached_tokens": 1,
            "finish_reason": {"type": "stop", "matched": 2}, "e2e_latency": 0.1, **(meta_extra or {})}
    return ok([{"text": "hi", "output_ids": [104, 105], "meta_info": meta, **item}])


# ---- point 2: the context window of a default SGLang 0.5 launch ------------------------------

def test_context_window_of_a_default_0_5_launch_is_the_models(canned):
    routes, url = canned
    routes.update({"/model_info": ok(MODEL_INFO_0_5), "/server_info": ok(SERVER_INFO_0_5), "/v1/models": ok(MODELS_0_5)})
    c = client(url)
    assert c.info.context_window == 32768 and c.info.model == "Qwen/Qwen2.5-7B-Instruct"
    assert c.max_input_tokens == 32762
    # Without /v1/models, the scheduler's input limit is the best the server says.
    del routes["/v1/models"]
    assert client(url).info.context_window == 32762
    # With --context-length the server's own number wins.
    routes["/server_info"] = ok({**SERVER_INFO_0_5, "context_length": 16384})
    assert client(url).info.context_window == 16384
    routes["/server_info"] = ok({**SERVER_INFO_0_5, "context_length": "abc"})
    with pytest.raises(EngineError, match="context_length that is not a positive integer"):
        client(url).info


def test_new_endpoint_names_first_old_names_as_fallback(canned):
    routes, url = canned
    routes.update({"/get_model_info": ok(MODEL_INFO_0_5), "/get_server_info": ok(SERVER_INFO_0_5)})
    c = client(url)
    assert c.info.context_window == 32762
    asked = [path for _, path, _ in Canned.seen]
    assert asked[:2] == ["/model_info", "/get_model_info"] and "/server_info" in asked
    Canned.seen.clear()
    c.model_info()
    assert [path for _, path, _ in Canned.seen] == ["/get_model_info"]  # remembered


def test_through_the_router_the_window_comes_from_a_worker(canned):
    routes, url = canned
    # sglang-router 0.3.2: its own server info has no model fields; /workers lists the workers.
    routes.update({"/get_model_info": ok(MODEL_INFO_0_5),
                   "/get_server_info": ok({"router_manager": True, "routers_count": 1, "workers_count": 1}),
                   "/workers": ok({"workers": [{"url": url, "is_healthy": True}], "total": 1}),
                   "/server_info": ok(SERVER_INFO_0_5), "/v1/models": ok(MODELS_0_5)})
    routes.pop("/model_info", None)
    assert client(url).info.context_window == 32768


# ---- point 9: prompts refused as SGLang refuses them ----------------------------------------

def test_prompts_are_refused_by_sglangs_rules_before_sending(canned):
    routes, url = canned
    routes.update({"/model_info": ok(MODEL_INFO_0_5), "/server_info": ok({**SERVER_INFO_0_5, "max_req_input_len": 90}),
                   "/v1/models": ok({"data": [{"id": "m", "max_model_len": 100}]}), "/generate": generate_answer()})
    c = client(url)
    with pytest.raises(EngineError, match="does not fit the server's context window of 100"):
        c.score([65] * 99, [[66]])  # input of the window's length: SGLang refuses it
    with pytest.raises(EngineError, match="exceeds the server's context window of 100"):
        c.generate([[65] * 50], SamplingParams(max_new_tokens=51))
    with pytest.raises(EngineError, match="input limit of 90 tokens"):
        c.generate([[65] * 90], SamplingParams(max_new_tokens=1))
    assert not any(path == "/generate" for _, path, _ in Canned.seen)
    assert c.generate([[65] * 89], SamplingParams(max_new_tokens=2))[0].text == "hi"


def test_an_abort_finish_is_an_error_not_a_stop(canned):
    routes, url = canned
    routes.update({"/model_info": ok(MODEL_INFO_0_5), "/server_info": ok(SERVER_INFO_0_5)})
    routes["/generate"] = generate_answer({"finish_reason": {"type": "abort", "message": "Input length (40000 tokens) "
                                                             "exceeds the maximum allowed length", "status_code": 400}})
    with pytest.raises(EngineError, match="the server aborted the request: Input length"):
        client(url).generate([[1, 2, 3]], SamplingParams(max_new_tokens=2))


# ---- point 1: one sampling_params object -----------------------------------------------------

def test_one_sampling_params_object_per_request_even_with_seeds(canned):
    routes, url = canned
    routes.update({"/model_info": ok(MODEL_INFO_0_5), "/server_info": ok(SERVER_INFO_0_5)})

    def answer(handler):
        body = Canned.seen[-1][2]
        one = {"text": "x", "output_ids": [120], "meta_info": {"prompt_tokens": 1, "completion_tokens": 1,
                                                              "cached_tokens": 0, "finish_reason": {"type": "length"}}}
        return ok([one] * len(body["input_ids"]))

    routes["/generate"] = answer
    gens = client(url).generate([[1], [2]], SamplingParams(max_new_tokens=1, temperature=0.8, seed=4, n=3))
    sent = [body for _, path, body in Canned.seen if path == "/generate"]
    assert len(gens) == 6 and len(sent) == 3  # one request per sample seed, each for both prompts
    assert all(isinstance(b["sampling_params"], dict) and b["input_ids"] == [[1], [2]] for b in sent)
    assert len({b["sampling_params"]["sampling_seed"] for b in sent}) == 3
    Canned.seen.clear()
    client(url).generate([[1], [2]], SamplingParams(max_new_tokens=1, n=2))
    sent = [body for _, path, body in Canned.seen if path == "/generate"]
    assert len(sent) == 1 and sent[0]["input_ids"] == [[1], [1], [2], [2]]


# ---- points 4 and 5: hit rate and flush through the router ----------------------------------

ROUTER_METRICS = """# HELP sglang_prompt_tokens_total Number of prefill tokens processed.
# TYPE sglang_prompt_tokens_total counter
sglang_prompt_tokens_total{model_name="m",worker_addr="http://127.0.0.1:30001"} 100
sglang_prompt_tokens_total{model_name="m",worker_addr="http://127.0.0.1:30002"} 300
# TYPE sglang_cached_tokens_total counter
sglang_cached_tokens_total{cache_source="device",model_name="m",worker_addr="http://127.0.0.1:30001"} 50
sglang_cached_tokens_total{cache_source="device",model_name="m",worker_addr="http://127.0.0.1:30002"} 150
"""


def test_hit_rate_through_the_router_from_engine_metrics(canned):
    routes, url = canned
    routes["/engine_metrics"] = ok(ROUTER_METRICS.encode(), "text/plain")
    c = client(url)
    assert c.metrics()["sglang:prompt_tokens_total"] == 400  # merged workers, name restored
    assert c.metrics_hit_rate() == pytest.approx(0.5)
    c.reset_stats()
    routes["/engine_metrics"] = ok(ROUTER_METRICS.replace(" 300", " 400").replace(" 150", " 240").encode(), "text/plain")
    assert c.metrics_hit_rate() == pytest.approx(0.9)  # 90 of the 100 new prompt tokens


def test_a_refused_flush_is_an_error_direct_and_through_the_router(canned):
    routes, url = canned
    routes["/flush_cache"] = (400, b"Cache not flushed because there are pending requests. #queue-req: 0, "
                                   b"#running-req: 1\n", "text/plain")
    with pytest.raises(EngineError, match="HTTP 400: Cache not flushed because there are pending requests"):
        client(url).flush_cache()
    routes["/flush_cache"] = (206, {"status": "partial_success", "message": "Cache flush: 1 succeeded, 1 failed",
                                    "workers_flushed": 1, "total_http_workers": 2}, "application/json")
    with pytest.raises(EngineError, match=r"did not flush its cache: requests were running \(1 of 2 workers"):
        client(url).flush_cache()
    routes["/flush_cache"] = ok({"status": "success", "workers_flushed": 2, "total_http_workers": 2})
    client(url).flush_cache(timeout=5)
    assert Canned.seen[-1][1] == "/flush_cache?timeout=5"


# ---- point 9 and issue 11 finding 7: health, timeouts, every failure one clean line -------------

def test_health_waits_at_least_20_s_and_checks_a_model_is_behind(canned, monkeypatch):
    routes, url = canned
    routes["/health"] = ok(b"", "text/plain")
    c = client(url, timeout=5)
    seen = []
    original = c.session.request
    monkeypatch.setattr(c.session, "request", lambda *a, **kw: seen.append(kw["timeout"]) or original(*a, **kw))
    with pytest.raises(EngineError, match="HTTP 404"):  # a router with no worker: /health alone says 200
        c.health()
    assert seen[0][1] >= HEALTH_TIMEOUT == 20.0
    routes["/model_info"] = ok(MODEL_INFO_0_5)
    c.health()


def test_timeout_flag_reaches_the_client():
    import argparse

    parser = argparse.ArgumentParser()
    add_engine_args(parser)
    spec = spec_from_args(parser.parse_args(["--engine", "sglang", "--url", "http://127.0.0.1:9", "--timeout", "42"]))
    assert spec == EngineSpec("sglang", url="http://127.0.0.1:9", timeout=42.0)
    assert make_engine(spec).timeout[1] == 42.0
    assert make_engine(EngineSpec("sglang", url="http://127.0.0.1:9")).timeout[1] == 600.0
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        EngineSpec("sglang", url="http://x", timeout=-1)


def raw_server(answer: bytes):
    """A socket server that sends ``answer`` verbatim and closes (for broken HTTP)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def run():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(answer)
            conn.close()

    threading.Thread(target=run, daemon=True).start()
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("answer, message", [
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"model_path\": \"m\"",
     "was cut short"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"model_path\":",
     "not SGLang's JSON"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 27\r\n\r\n<html>secret intranet</html>",
     r"not SGLang's JSON \(text/html"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"mod\r\n", "was cut short"),
    (b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n", "redirect"),
])
def test_broken_answers_are_one_line_engine_errors(answer, message):
    sock, url = raw_server(answer)
    try:
        with pytest.raises(EngineError, match=message) as failure:
            client(url).model_info()
        text = str(failure.value)
        assert "\n" not in text and "secret" not in text and "Traceback" not in text
    finally:
        sock.close()


def test_non_numeric_fields_and_foreign_error_bodies(canned):
    routes, url = canned
    routes.update({"/model_info": ok(MODEL_INFO_0_5), "/server_info": ok(SERVER_INFO_0_5)})
    routes["/generate"] = generate_answer({"prompt_tokens": "abc"})
    with pytest.raises(EngineError, match="meta_info.prompt_tokens is not a token count"):
        client(url).generate([[1, 2, 3]], SamplingParams(max_new_tokens=2))
    routes["/generate"] = ok(["not a result"])
    with pytest.raises(EngineError, match="not a list of results"):
        client(url).generate([[1]], SamplingParams(max_new_tokens=2))
    # A foreign 4xx body is never echoed; SGLang's shapes are, cut short, on one line.
    routes["/generate"] = (403, b"<html>admin password: hunter2</html>", "text/html")
    with pytest.raises(EngineError) as failure:
        client(url).generate([[1]], SamplingParams(max_new_tokens=2))
    assert str(failure.value) == "the SGLang server rejected /generate: HTTP 403"
    routes["/generate"] = (400, {"error": {"message": "bad\nthing " + "x" * 500}}, "application/json")
    with pytest.raises(EngineError) as failure:
        client(url).generate([[1]], SamplingParams(max_new_tokens=2))
    assert str(failure.value).startswith("the SGLang server rejected /generate: HTTP 400: bad thing xxx")
    assert "\n" not in str(failure.value) and len(str(failure.value)) < 260
    # A JSON 200 from a foreign service is not SGLang's model info: a clean error, nothing echoed.
    routes["/model_info"] = ok({"model_path": "secret-internal-model-name", "token": "s3cr3t"})
    routes["/health"] = ok(b"", "text/plain")
    with pytest.raises(EngineError, match="not SGLang's; is this an SGLang server") as failure:
        client(url).health()
    assert "secret" not in str(failure.value) and "s3cr3t" not in str(failure.value)


def test_engine_page_timeout_input_reaches_the_engine_spec():
    from streamlit.testing.v1 import AppTest

    from tests.fakes import ScriptedEngine
    from tests.test_page_engine import PAGE, SPEC_KEY
    from tests.test_sglang_client import reply, serve

    server, url = serve(ScriptedEngine(reply))  # the page makes only a healthy server active
    try:
        at = AppTest.from_file(PAGE, default_timeout=60).run()
        at.radio[0].set_value("SGLang server or sglang-router").run()
        at.text_input[0].set_value(url).run()
        at.number_input[0].set_value(120.0).run()
        next(b for b in at.button if b.label == "Use this server").click().run()
        assert not at.exception, at.exception
        assert at.session_state[SPEC_KEY] == EngineSpec("sglang", url=url, timeout=120.0)
    finally:
        server.shutdown()
        server.server_close()
