"""KV sharing and admission (issue #24 item 2): samples of a prompt share its KV, a batch's KV is
bounded by one engine-wide budget, and a request over it runs in parts or is refused with a 4xx,
never an allocation failure (HTTP 500)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from ragscale.engines.base import SamplingParams
from ragscale.errors import EngineError
from tests.test_local_model import build_tiny_llama

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-kv"))


def _recording_kv(engine, monkeypatch) -> list[int]:
    """KV tokens (rows x capacity) of every buffer the engine allocates."""
    sizes: list[int] = []
    new_kv = engine.decoder.new_kv

    def recorded(rows, capacity):
        sizes.append(rows * capacity)
        return new_kv(rows, capacity)

    monkeypatch.setattr(engine.decoder, "new_kv", recorded)
    return sizes


def _prompt(length: int, salt: int = 0) -> list[int]:
    return [(7 * i + salt) % 900 + 5 for i in range(length)]


def test_samples_share_the_prompts_kv_instead_of_copying_it(tiny_dir, monkeypatch):
    """2,000-token prompt, n = 16, one new token: the prompt's KV is held once (before: 16 copies,
    ~727 MB of SmolLM2 KV on the server)."""
    from ragscale.engines.embedded import EmbeddedEngine

    engine = EmbeddedEngine(model=str(tiny_dir), dtype="bfloat16", prefix_cache=False)
    sizes = _recording_kv(engine, monkeypatch)
    prompt = _prompt(2000)
    outs = engine.generate([prompt], SamplingParams(max_new_tokens=1, n=16))
    assert len(outs) == 16 and all(len(g.output_ids) == 1 for g in outs)
    assert sum(sizes) < 2 * 2000 + 16 * 2, sizes
    # longer samples (greedy) still agree with the prompt decoded alone, row for row
    many = engine.generate([prompt[:300]], SamplingParams(max_new_tokens=6, n=4))
    alone = engine.generate([prompt[:300]], SamplingParams(max_new_tokens=6))
    assert all(g.output_ids == alone[0].output_ids for g in many)


def test_a_batch_over_the_kv_budget_runs_in_parts_with_the_same_outputs(tiny_dir, monkeypatch):
    """One long prompt and 255 one-token prompts with a small budget: served in batches that fit,
    each output what the prompt gets alone; no buffer beyond the budget."""
    from ragscale.engines.embedded import EmbeddedEngine

    engine = EmbeddedEngine(model=str(tiny_dir), dtype="bfloat16", prefix_cache=False, kv_tokens=2600)
    sizes = _recording_kv(engine, monkeypatch)
    prompts = [_prompt(1900)] + [[10 + i] for i in range(255)]
    params = SamplingParams(max_new_tokens=3)
    outs = engine.generate(prompts, params)
    assert [g.prompt_ids for g in outs] == prompts
    assert max(sizes) <= 2600
    for i in (0, 1, 200, 255):
        assert outs[i].output_ids == engine.generate([prompts[i]], params)[0].output_ids


def test_a_prompt_that_cannot_fit_the_budget_is_refused_before_it_runs(tiny_dir, monkeypatch):
    from ragscale.engines.embedded import EmbeddedEngine

    engine = EmbeddedEngine(model=str(tiny_dir), dtype="bfloat16", prefix_cache=False, kv_tokens=1000)
    sizes = _recording_kv(engine, monkeypatch)
    with pytest.raises(EngineError, match="KV budget"):
        engine.generate([_prompt(600)], SamplingParams(max_new_tokens=30, n=16))
    assert sizes == []  # nothing was allocated


def test_the_server_answers_a_kv_refusal_with_400_and_serves_the_rest(tiny_dir):
    from ragscale.engines.embedded import EmbeddedEngine
    from ragscale.engines.server import make_server

    engine = EmbeddedEngine(model=str(tiny_dir), dtype="bfloat16", kv_tokens=2600)
    server = make_server(engine, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/generate"

    def post(body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:
        status, body = post({"input_ids": _prompt(1200), "sampling_params": {"max_new_tokens": 100, "n": 16}})
        assert status == 400 and "KV budget" in json.dumps(body)
        status, body = post({"input_ids": [_prompt(1900)] + [[10 + i] for i in range(255)],
                             "sampling_params": {"max_new_tokens": 1, "temperature": 0}})
        assert status == 200 and len(body) == 256
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("flags", [
    {"avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"},  # Sapphire Rapids: AMX
    {"avx512f", "avx512_vnni", "avx512_bf16"},  # Zen 4: VNNI, no AMX (int4 measured ahead of int8 here)
    {"avx2", "avx_vnni"},  # Alder Lake class
    {"avx2"},  # no integer dot-product instructions
])
def test_the_decode_kernel_is_int4_unless_the_variable_asks_for_int8(flags, monkeypatch):
    from ragscale.engines import model_files

    monkeypatch.delenv("RAGSCALE_DECODE_KERNEL", raising=False)
    monkeypatch.setattr(model_files, "_cpu_flags", lambda: set(flags))
    assert model_files.decode_kernel() == "int4"
    monkeypatch.setenv("RAGSCALE_DECODE_KERNEL", "int8")
    assert model_files.decode_kernel() == "int8"
    monkeypatch.setenv("RAGSCALE_DECODE_KERNEL", "int3")
    with pytest.raises(EngineError, match="RAGSCALE_DECODE_KERNEL"):
        model_files.decode_kernel()


def test_prompts_group_by_identical_prompt_or_shared_whole_pages():
    from ragscale.engines.embedded import SharedPrefixes
    from ragscale.engines.forward import PAGE

    plan = SharedPrefixes()
    base = _prompt(3 * PAGE + 10)
    for ids in (base, list(base), base[:2 * PAGE + 5] + [1, 2, 3], _prompt(PAGE - 1, salt=3), _prompt(PAGE - 1, salt=3)):
        plan.add(ids)
    # the first three share two whole pages (the third differs inside page 3); then a short prompt twice
    assert [plan.group_of(i) for i in range(5)] == [(0, 2 * PAGE)] * 3 + [(1, PAGE - 1)] * 2
    assert plan.own_tokens() == len(base) - 2 * PAGE
