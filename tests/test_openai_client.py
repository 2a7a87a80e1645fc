"""``--engine openai``: the OpenAI-compatible client against the embedded server's /v1 (which
reports itself as SGLang) and against a scripted stand-in for servers with fewer capabilities
(a hosted API: no token-id prompts, no window, no flush, no cached-token details)."""

from __future__ import annotations

import pytest

from ragscale.engines import EngineSpec, make_engine
from ragscale.engines.base import SamplingParams
from ragscale.engines.openai_client import OpenAIEngine, base_url
from ragscale.engines.server import make_server
from ragscale.errors import EngineError
from tests.fakes import ByteTokenizer, ScriptedEngine
from tests.http_fakes import JSONHandler, serving, start, stop


def reply(prompt, params, i, rng):
    return f"sample {i} says {rng.randint(0, 99)}. then more"


@pytest.fixture(scope="module")
def embedded():
    with serving(make_server(ScriptedEngine(reply, context_window=512), "127.0.0.1", 0)) as url:
        yield url


@pytest.fixture
def client(embedded):
    engine = OpenAIEngine(embedded, tokenizer=ByteTokenizer())
    yield engine
    engine.close()


def test_base_url_adds_v1_to_a_bare_server():
    assert base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert base_url("https://api.example.com/v1/") == "https://api.example.com/v1"
    assert base_url("https://host/openai/v1") == "https://host/openai/v1"
    with pytest.raises(EngineError, match="looks like"):
        base_url("127.0.0.1:8000")


def test_info_from_the_model_card(client, embedded):
    info = client.info
    assert (info.kind, info.model, info.context_window, info.url) == ("openai", "scripted-bytes", 512, embedded + "/v1")
    assert client.server_kind == "sglang" and client.sends_token_ids


def test_generate_continues_a_branch_by_token_ids_and_reads_cached_tokens(client):
    prompt = client.encode("A shared prefix for the whole tree. Branch A:")
    first = client.generate([prompt], SamplingParams(max_new_tokens=12))[0]
    assert first.prompt_ids == prompt and first.output_ids == client.encode("sample 0 say")
    assert first.usage.prompt_tokens == len(prompt) and first.finish_reason == "length"
    # The continuation goes out as prompt ids + output ids: the cache holds all of the prompt.
    second = client.generate([first.prompt_ids + first.output_ids], SamplingParams(max_new_tokens=4))[0]
    assert second.usage.cached_tokens >= len(prompt)
    stats = client.stats()
    assert (stats.requests, stats.prompt_tokens) == (2, 2 * len(prompt) + 12)


def test_n_stop_logprobs_and_seeds(client):
    params = SamplingParams(max_new_tokens=30, n=3, stop=(".",), temperature=0.8, return_logprobs=True)
    outs = client.generate(["one", "two"], params)
    assert len(outs) == 6 and [o.prompt_ids for o in outs] == [client.encode("one")] * 3 + [client.encode("two")] * 3
    assert all(o.finish_reason == "stop" and len(o.logprobs) == len(o.output_ids) for o in outs)
    # A server with a prefix cache: one request per sample, each with its own measured usage.
    assert all(o.usage.prompt_tokens == 3 for o in outs[:3])
    seeded = SamplingParams(max_new_tokens=30, n=2, temperature=0.8, seed=7)
    assert [o.text for o in client.generate(["x"], seeded)] == [o.text for o in client.generate(["x"], seeded)]


def test_score_reads_echoed_prompt_logprobs(client):
    scores = client.score("Question: 2+2?", [" 4", " five"])
    assert [len(s) for s in scores] == [2, 5] and all(isinstance(v, float) for s in scores for v in s)


def test_flush_and_metrics_on_an_sglang_server(client):
    client.flush_cache()  # SGLang's /flush_cache
    assert client.metrics_hit_rate() is None  # only vLLM's counters are read


def test_window_is_checked_before_sending(client):
    with pytest.raises(EngineError, match="context window of 512"):
        client.generate(["x" * 500], SamplingParams(max_new_tokens=20))


def test_make_engine_and_spec():
    with pytest.raises(ValueError, match="needs a URL"):
        EngineSpec("openai")
    engine = make_engine(EngineSpec("openai", url="http://127.0.0.1:9/v1", served_model="m", context_window=64))
    assert isinstance(engine, OpenAIEngine) and engine.requested_model == "m"


# ---- a server with fewer capabilities --------------------------------------------------------

class Hosted:
    """A scripted OpenAI-like server: records each request (path, headers, body), answers scripts."""

    def __init__(self, models: dict | None = None, status: int = 200, error: dict | None = None):
        self.requests: list[tuple[str, dict, dict | None]] = []
        self.models = models if models is not None else {"object": "list",
                                                         "data": [{"id": "hosted-1", "owned_by": "acme"}]}
        self.status, self.error = status, error
        hosted = self

        class Handler(JSONHandler):
            def do_GET(self):  # noqa: N802
                hosted.requests.append((self.path, dict(self.headers), None))
                if hosted.status != 200:
                    return self.reply(hosted.status, hosted.error or {})
                if self.path == "/v1/models":
                    return self.reply(200, hosted.models)
                self.reply(404, {"error": {"message": "not here"}})

            def do_POST(self):  # noqa: N802
                body = self.json_body()
                hosted.requests.append((self.path, dict(self.headers), body))
                if hosted.status != 200:
                    return self.reply(hosted.status, hosted.error or {})
                if self.path != "/v1/completions":
                    return self.reply(404, {"error": {"message": "not here"}})
                n = body.get("n", 1)
                self.reply(200, {"choices": [{"index": i, "text": " Paris.", "finish_reason": "stop"}
                                               for i in range(n)],
                                   "usage": {"prompt_tokens": 9, "completion_tokens": 3 * n,
                                             "total_tokens": 9 + 3 * n}})

        self.server, root = start(Handler)
        self.url = root + "/v1"

    def close(self):
        stop(self.server)


@pytest.fixture
def hosted():
    server = Hosted()
    yield server
    server.close()


def test_a_server_without_a_window_needs_one(hosted):
    with pytest.raises(EngineError, match="--context-window"):
        OpenAIEngine(hosted.url, tokenizer=ByteTokenizer()).info  # noqa: B018


def test_text_prompts_and_missing_capabilities_are_one_line_errors(hosted):
    engine = OpenAIEngine(hosted.url, tokenizer=ByteTokenizer(), context_window=128)
    out = engine.generate(["The capital of France is"], SamplingParams(max_new_tokens=5, temperature=0.0))[0]
    path, _, body = hosted.requests[-1]
    assert path == "/v1/completions" and body["prompt"] == "The capital of France is"  # text, not ids
    assert "return_token_ids" not in body and "ignore_eos" not in body
    assert out.text == " Paris." and out.output_ids == engine.encode(" Paris.")  # encoded here
    assert out.usage.cached_tokens == 0 and engine.reports_cached_tokens is False
    # n samples: one request with n, billed the prompt once; the first sample carries that usage.
    outs = engine.generate(["Capital?"], SamplingParams(max_new_tokens=5, temperature=0.7, n=3))
    assert hosted.requests[-1][2]["n"] == 3 and [o.usage.prompt_tokens for o in outs] == [9, 0, 0]
    assert [o.usage.completion_tokens for o in outs] == [9, 0, 0] and [o.text for o in outs] == [" Paris."] * 3
    for call, words in ((lambda: engine.generate(["x"], SamplingParams(ignore_eos=True)), "ignore_eos"),
                        (lambda: engine.score("x", ["y"]), "prompt log-probabilities"),
                        (engine.flush_cache, "no prefix-cache flush")):
        with pytest.raises(EngineError, match=words) as caught:
            call()
        assert "\n" not in str(caught.value)
    assert engine.metrics_hit_rate() is None


def test_a_requested_model_must_be_served(hosted):
    with pytest.raises(EngineError, match="does not serve 'gpt-x'"):
        OpenAIEngine(hosted.url, model="gpt-x", context_window=128).info  # noqa: B018


# ---- API keys ----------------------------------------------------------------------------------

KEY = "sk-test-" + "Zq7" * 12


def test_the_key_comes_from_the_environment_and_goes_as_a_bearer_token(hosted, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("RAGSCALE_OPENAI_API_KEY", raising=False)
    OpenAIEngine(hosted.url, context_window=64).info  # noqa: B018
    assert "Authorization" not in hosted.requests[-1][1]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other-key-123456")
    monkeypatch.setenv("RAGSCALE_OPENAI_API_KEY", KEY)  # ragscale's own variable wins
    engine = OpenAIEngine(hosted.url, context_window=64)
    engine.info  # noqa: B018
    assert hosted.requests[-1][1]["Authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(engine) and KEY not in repr(engine.info) and KEY not in str(vars(engine))


def test_a_refusal_never_echoes_the_key(monkeypatch):
    # OpenAI's own 401 quotes the key it was given; the client never shows the server's words there.
    server = Hosted(status=401, error={"error": {"message": f"Incorrect API key provided: {KEY}."}})
    monkeypatch.setenv("RAGSCALE_OPENAI_API_KEY", KEY)
    try:
        with pytest.raises(EngineError) as caught:
            OpenAIEngine(server.url, context_window=64).info  # noqa: B018
        assert "HTTP 401" in str(caught.value) and KEY not in str(caught.value) and "Zq7Zq7" not in str(caught.value)
        server.status, server.error = 400, {"error": {"message": f"bad request from {KEY[:20]}abc and {KEY}"}}
        with pytest.raises(EngineError) as caught:
            OpenAIEngine(server.url, context_window=64).info  # noqa: B018
        assert "[key]" in str(caught.value) and "Zq7Zq7" not in str(caught.value)
    finally:
        server.close()


def test_shared_mode_sends_the_key_only_to_the_operators_endpoints(hosted, monkeypatch):
    monkeypatch.setenv("RAGSCALE_OPENAI_API_KEY", KEY)
    monkeypatch.setenv("RAGSCALE_MODE", "shared")
    OpenAIEngine(hosted.url, context_window=64).info  # noqa: B018 - a loopback URL a viewer may type
    assert "Authorization" not in hosted.requests[-1][1]
    monkeypatch.setenv("RAGSCALE_ALLOWED_URLS", hosted.url)
    OpenAIEngine(hosted.url, context_window=64).info  # noqa: B018
    assert hosted.requests[-1][1]["Authorization"] == f"Bearer {KEY}"


def test_a_redirect_is_not_followed(monkeypatch):
    class Redirect(JSONHandler):  # quiet; answers no JSON
        def do_GET(self):  # noqa: N802
            self.send_response(307)
            self.send_header("Location", "http://169.254.169.254/v1/models")
            self.send_header("Content-Length", "0")
            self.end_headers()

    monkeypatch.setenv("RAGSCALE_OPENAI_API_KEY", KEY)
    with serving(Redirect) as url, pytest.raises(EngineError, match="redirect"):
        OpenAIEngine(url + "/v1", context_window=64).info  # noqa: B018


def test_cost_from_the_providers_usage_prices_cached_input_apart(hosted):
    from ragscale.allocation.prices import PriceSheet, Tier
    from ragscale.engines.openai_client import usage_cost_usd

    flat = PriceSheet.flat(input=2.0, cached_input=0.5, output=8.0)
    cost = usage_cost_usd(1_000_000, 400_000, 100_000, flat)
    assert cost == {"uncached_input_usd": 1.2, "cached_input_usd": 0.2, "output_usd": 0.8,
                    "total_usd": pytest.approx(2.2)}
    engine = OpenAIEngine(hosted.url, tokenizer=ByteTokenizer(), context_window=128)
    engine.generate(["a", "b"], SamplingParams(max_new_tokens=3))  # the server bills 9 prompt + 3 output each
    assert engine.cost_usd(flat)["total_usd"] == pytest.approx((18 * 2.0 + 6 * 8.0) / 1e6)
    # Each request at its own prompt length's tier (9 prompt tokens: past the first tier's 8).
    tiered = PriceSheet("p", "m", "2026", "test", (Tier(8, 1.0, 0.1, 1.0), Tier(None, 3.0, 0.3, 3.0)))
    assert engine.cost_usd(tiered)["total_usd"] == pytest.approx((18 * 3.0 + 6 * 3.0) / 1e6)
    engine.reset_stats()
    assert engine.cost_usd(flat)["total_usd"] == 0
    with pytest.raises(ValueError):
        usage_cost_usd(10, 11, 0, flat)


def test_a_runs_cost_needs_a_sheet_that_names_the_model_exactly(monkeypatch, tmp_path):
    from ragscale.allocation.prices import load_sheet, run_cost, sheet_for_model

    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path))
    # The sheet's file name or its model field, case, spacing and a provider prefix aside.
    for name in ("gemini-1.5-flash", "models/gemini-1.5-flash", "Gemini 1.5 Flash", "google/GEMINI-1.5-FLASH"):
        assert sheet_for_model(name)[0] == "gemini-1.5-flash"
    for name in ("gemini-1.5-flash-8b", "gemini-1.5-pro", "scripted-bytes"):  # variants are priced apart
        assert sheet_for_model(name) is None
    server = Hosted(models={"object": "list", "data": [{"id": "models/gemini-1.5-flash", "owned_by": "google"}]})
    try:
        engine = OpenAIEngine(server.url, tokenizer=ByteTokenizer(), context_window=128)
        assert run_cost(engine) is None  # nothing asked yet: no model known, no figure
        engine.generate(["a"], SamplingParams(max_new_tokens=3))
        mark = engine.billed_requests
        engine.generate(["b", "c"], SamplingParams(max_new_tokens=3))
        sheet = load_sheet("gemini-1.5-flash")
        rate = sheet.tiers[0]
        assert run_cost(engine)["total_usd"] == pytest.approx(3 * (9 * rate.input + 3 * rate.output) / 1e6)
        since = run_cost(engine, since=mark)
        assert since["total_usd"] == pytest.approx(2 * (9 * rate.input + 3 * rate.output) / 1e6)
        assert since["line"].endswith(f"at gemini-1.5-flash prices, {sheet.date}")
    finally:
        server.close()
    assert run_cost(ScriptedEngine(reply)) is None  # an engine that bills nothing
