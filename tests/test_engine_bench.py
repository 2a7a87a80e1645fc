"""The prefix-cache benchmark's reference figure: what an ideal SGLang-rule cache would reuse."""

from __future__ import annotations

from ragscale.engines.base import Generation, Usage
from ragscale.engines.bench import BRANCHES, ideal_cached_tokens


def _gen(prompt: list[int], output: list[int]) -> Generation:
    return Generation(text="", output_ids=output, finish_reason="length",
                      usage=Usage(len(prompt), 0, len(output)), prompt_ids=prompt)


def test_ideal_cached_tokens_follows_the_sglang_rule_step_by_step():
    shared = list(range(10))
    step1 = [_gen(shared + [100 + b], [200 + b, 300 + b]) for b in range(BRANCHES)]
    step2 = [_gen(g.prompt_ids + g.output_ids, [400 + b]) for b, g in enumerate(step1)]
    # Step 1: the first branch finds nothing; each later one matches the 10 shared tokens (its own
    # last token is never matched). Step 2: each continuation matches its prompt + output minus the
    # last output token, which the engine never computed KV for: 12 of its 13 tokens.
    assert ideal_cached_tokens(step1) == 10 * (BRANCHES - 1)
    assert ideal_cached_tokens(step1 + step2) == 10 * (BRANCHES - 1) + 12 * BRANCHES


def test_llama_cpp_is_opened_without_its_extra_cpu_buffers(monkeypatch):
    """The AMX buffer type crashed llama.cpp on this CPU; the bench's Llama turns it off for its
    own construction only (a stand-in module: llama-cpp-python is optional)."""
    import sys
    import types

    from ragscale.engines.bench import _llama

    class Params:
        use_extra_bufts = True

    fake = types.ModuleType("llama_cpp")
    fake.llama_model_default_params = Params
    seen = []

    class Llama:
        def __init__(self, **kwargs):
            seen.append((fake.llama_model_default_params().use_extra_bufts, kwargs))

    fake.Llama = Llama
    fake.llama = types.ModuleType("llama_cpp.llama")
    fake.llama.llama_cpp = fake
    monkeypatch.setitem(sys.modules, "llama_cpp", fake)
    monkeypatch.setitem(sys.modules, "llama_cpp.llama", fake.llama)
    _llama(fake)(n_threads=2)
    assert seen == [(False, {"n_threads": 2})]
    assert fake.llama_model_default_params is Params  # restored afterwards
