"""Live tests against a real vLLM (its CPU build, ``make vllm``), through ``--engine openai``.

One vLLM server for the session (``ragscale serve vllm``'s command: the embedded model's verified
copy, bf16, prefix caching, cached-token usage), then: a DRAG sweep and an ETS search through the
CLI, the hit rate read back from vLLM's own counters, the sweep's records in the embedded
engine's shape, and greedy outputs compared with the embedded engine on the same model.

``make test`` builds ``.venv-vllm`` first, so CI runs these; without it they skip with one line.
"""

from __future__ import annotations

import json
import os

import pytest

from ragscale.engines.base import SamplingParams
from ragscale.engines.vllm_server import VLLMServer, vllm_python

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="session")
def vllm_url(tmp_path_factory):
    running = os.environ.get("RAGSCALE_TEST_VLLM_URL")  # a vLLM already started with `ragscale serve vllm`
    if running:
        yield running
        return
    if vllm_python() is None:
        pytest.skip("vLLM is not installed (.venv-vllm is missing): `make vllm` builds it, and `make test` does")
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    server = VLLMServer(log_path=log)
    server.start(timeout=1200)  # a first start compiles; on a loaded 2-core box it took ~8 min
    yield server.url
    server.stop()


@pytest.fixture
def vllm(vllm_url):
    from ragscale.engines.openai_client import OpenAIEngine

    engine = OpenAIEngine(vllm_url)
    yield engine
    engine.close()


def _sweep(argv_engine: list[str], out, capsys) -> dict:
    from ragscale.cli import main

    code = main(["sweep", "--dataset", "demo", "--strategies", "drag", "--k", "2", "--m", "1", "--limit", "4",
                 "--batch-size", "4", *argv_engine, "--out", str(out), "--json"])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_drag_sweep_records_ok_rows_with_cached_tokens_in_the_embedded_shape(vllm_url, tmp_path, capsys):
    from ragscale.rag.sweep import load_rows

    summary = _sweep(["--engine", "openai", "--url", vllm_url], tmp_path / "vllm.sqlite", capsys)
    assert summary["rows_written"] == 4 and summary["model"] == "SmolLM2-135M-Instruct"
    rows = load_rows(tmp_path / "vllm.sqlite")
    assert (rows["status"] == "ok").all() and (rows["engine"] == "openai").all()
    assert rows["cached_tokens"].sum() > 0  # the demonstrations are a prefix every question shares
    assert (rows["context_window"] == 8192).all()
    # The same sweep on the embedded engine: the same record shape, field for field.
    _sweep(["--dtype", "float32"], tmp_path / "embedded.sqlite", capsys)
    embedded = load_rows(tmp_path / "embedded.sqlite")
    assert list(rows.columns) == list(embedded.columns)
    for column in rows.columns:
        assert {type(v) for v in rows[column]} == {type(v) for v in embedded[column]}, column
    assert (rows["effective_length"].values == embedded["effective_length"].values).all()  # same prompts, same ids


def test_ets_search_returns_a_tree_with_cache_hits(vllm_url, capsys):
    from ragscale.cli import main

    code = main(["search", "--task", "arithmetic", "--dataset", "arithmetic", "--verifier", "rules", "--policy", "ets",
                 "--width", "4", "--max-depth", "3", "--engine", "openai", "--url", vllm_url, "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    nodes = out["tree"]["nodes"]
    assert len(nodes) > 4 and nodes[0]["parent"] is None and any(n["depth"] >= 2 for n in nodes)
    assert out["cached_tokens"] > 0  # children continue their parent by token ids


def test_hit_rate_read_back_from_vllm(vllm):
    prefix = vllm.encode("A long shared context about lighthouses and their keepers. " * 30)
    vllm.flush_cache()
    vllm.reset_stats()
    outs = vllm.generate([prefix + vllm.encode(f" Question {i}?") for i in range(4)],
                         SamplingParams(max_new_tokens=4))
    assert outs[0].usage.cached_tokens < len(prefix)
    later = vllm.generate([prefix + vllm.encode(" Question 9?")], SamplingParams(max_new_tokens=4))[0]
    assert later.usage.cached_tokens >= len(prefix) // 64 * 64 - 64  # whole 64-token blocks of the prefix
    server_rate = vllm.metrics_hit_rate()
    client_rate = vllm.stats().hit_rate
    assert server_rate is not None and server_rate > 0.3
    assert server_rate == pytest.approx(client_rate, abs=0.05)  # vLLM's counters agree with its usage
    vllm.flush_cache()
    again = vllm.generate([prefix + vllm.encode(" Question 9?")], SamplingParams(max_new_tokens=4))[0]
    assert again.usage.cached_tokens == 0  # POST /reset_prefix_cache emptied it


def test_sampling_options_reach_vllm(vllm):
    prompt = vllm.encode(vllm.chat_prompt("Count from one to ten in words."))
    seeded = SamplingParams(max_new_tokens=12, temperature=0.9, seed=5, n=2, return_logprobs=True)
    first, second = vllm.generate([prompt], seeded), vllm.generate([prompt], seeded)
    assert [g.output_ids for g in first] == [g.output_ids for g in second]  # seed per sample
    assert all(len(g.logprobs) == len(g.output_ids) for g in first)
    first_token, last_token, tokens = vllm.stream_timings(prompt, 8)  # how bench vllm times vLLM
    assert tokens == 8 and 0 < first_token <= last_token
    long = vllm.generate([prompt], SamplingParams(max_new_tokens=40, ignore_eos=True))[0]
    assert len(long.output_ids) == 40 and long.finish_reason == "length"
    stopped = vllm.generate([prompt], SamplingParams(max_new_tokens=40, stop=("\n",)))[0]
    assert stopped.text and "\n" not in stopped.text and stopped.finish_reason == "stop"
    assert long.text.startswith(stopped.text + "\n")  # greedy: the same text, cut at the stop string

    from ragscale.engines.embedded import EmbeddedEngine

    question = vllm.chat_prompt("Is Paris in France? Answer Yes or No.")
    answers = [vllm.encode("Yes"), vllm.encode("No, it is in Spain.")]
    theirs, ours = vllm.score(question, answers), EmbeddedEngine(dtype="float32").score(question, answers)
    assert [len(s) for s in theirs] == [len(a) for a in answers]
    assert theirs == [pytest.approx(s, abs=0.15) for s in ours]  # the same model's log-probabilities


def test_greedy_predictions_agree_with_the_embedded_engine_except_at_near_ties(vllm, capsys):
    """Same model, same prompts, greedy: outputs are identical except where the two engines' arithmetic
    (vLLM: bf16 kernels; embedded: float32 on the same bf16 weights) tips a near-tie the other way.
    At the first differing token, the embedded engine's own log-probabilities of its token and of
    vLLM's must be close; the agreement is reported."""
    from ragscale.datasets import load_dataset
    from ragscale.engines.embedded import EmbeddedEngine

    local = EmbeddedEngine(dtype="float32")
    questions = load_dataset("demo").questions[:12]
    prompts = [local.encode(local.chat_prompt(f"Answer briefly: {q.question}")) for q in questions]
    params = SamplingParams(max_new_tokens=24)
    ours, theirs = local.generate(prompts, params), vllm.generate(prompts, params)
    identical, gaps = 0, []
    for prompt, a, b in zip(prompts, ours, theirs):
        if a.output_ids == b.output_ids:
            identical += 1
            continue
        at = next((i for i, (x, y) in enumerate(zip(a.output_ids, b.output_ids)) if x != y), None)
        if at is None:  # one stopped earlier: compare the token the other one had there
            continue
        mine, other = local.score(prompt + a.output_ids[:at], [[a.output_ids[at]], [b.output_ids[at]]])
        gaps.append(mine[0] - other[0])
    # The default embedded engine on this CPU (bf16, 4-bit decode from the GGUF's Q4_1 blocks) decodes
    # with other weights than vLLM's dense copy: reported, not asserted.
    quantized = EmbeddedEngine(dtype="bfloat16")
    same_4bit = sum(a.output_ids == b.output_ids for a, b in zip(quantized.generate(prompts, params), theirs))
    with capsys.disabled():
        print(f"\ngreedy agreement with vLLM (bf16, dense): embedded float32 {identical}/{len(prompts)} identical, "
              f"log-prob gaps at the first difference {[round(g, 3) for g in gaps]}; embedded bf16 with 4-bit "
              f"decode {same_4bit}/{len(prompts)}")
    assert identical >= len(prompts) // 2
    assert all(0 <= g < 1.0 for g in gaps)  # near-ties only (the embedded argmax, by under one nat)
