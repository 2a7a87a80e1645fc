"""The embedded SmolLM2 engine: cache on/off equivalence, SGLang-style usage, sampling, scoring.

Model tests are short (a few dozen tokens) because the machine is shared.
"""

from __future__ import annotations

import pytest

from ragscale.engines import EngineSpec, make_engine
from ragscale.engines.base import SamplingParams
from ragscale.engines.forward import PAGE
from ragscale.errors import EngineError

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def engines():
    from ragscale.engines.embedded import EmbeddedEngine

    # Both share the process's one copy of the weights.
    return EmbeddedEngine(prefix_cache=True), EmbeddedEngine(prefix_cache=False)


@pytest.fixture
def on(engines):
    engines[0].flush_cache()
    engines[0].reset_stats()
    return engines[0]


@pytest.fixture
def off(engines):
    return engines[1]


QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "Write one sentence about the sea.",
    "What is 2 + 2?",
]


def test_greedy_tokens_identical_with_cache_on_and_off(on, off):
    """At the default dtype of this CPU (bf16 where native): pages make it exact by construction."""
    params = SamplingParams(max_new_tokens=16)
    shared = "You answer questions about geography and arithmetic briefly. " * 4
    prompts = [on.chat_prompt(q, system=shared) for q in QUESTIONS]
    first_on = on.generate(prompts, params)
    first_off = off.generate(prompts, params)
    assert [g.output_ids for g in first_on] == [g.output_ids for g in first_off]
    # Continue every branch: with the cache on, the prompt's whole pages are reused.
    branches = [g.prompt_ids + g.output_ids for g in first_on]
    again_on = on.generate(branches, params)
    again_off = off.generate(branches, params)
    assert [g.output_ids for g in again_on] == [g.output_ids for g in again_off]
    assert [g.usage.cached_tokens for g in again_on] == [len(g.prompt_ids) // PAGE * PAGE for g in first_on]
    assert all(g.usage.cached_tokens == 0 for g in again_off)
    # Sent alone, or again on a warm cache, a prompt gets the tokens it got in the batch.
    alone = on.generate([prompts[2]], params)[0]
    assert alone.output_ids == first_on[2].output_ids


def test_shared_prefix_is_prefilled_once_and_cached_tokens_follow_sglang(on):
    system = "Background: " + "The river runs through the old town. " * 20
    a, b = on.chat_prompt("Where does the river run?", system), on.chat_prompt("Is the town old?", system)
    ga, gb = on.generate([a, b], SamplingParams(max_new_tokens=4))
    assert ga.usage.cached_tokens == 0
    common = next(i for i, (x, y) in enumerate(zip(ga.prompt_ids, gb.prompt_ids)) if x != y)
    assert gb.usage.cached_tokens == common // PAGE * PAGE  # the second prompt reused the first one's pages
    assert 50 < common < len(ga.prompt_ids)
    # Re-sending a prompt: every whole page but never its last token is a hit.
    again = on.generate([a], SamplingParams(max_new_tokens=1))[0]
    assert again.usage.cached_tokens == (again.usage.prompt_tokens - 1) // PAGE * PAGE
    stats = on.stats()
    assert stats.requests == 3 and stats.cached_tokens == gb.usage.cached_tokens + again.usage.cached_tokens
    assert 0 < stats.cache_tokens_held <= stats.cache_capacity_tokens


def test_n_samples_are_seeded_and_prompt_major(on):
    prompts = [on.chat_prompt("Tell me a story."), on.chat_prompt("Tell me a joke.")]
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=7, n=3)
    first = on.generate(prompts, params)
    assert len(first) == 6
    assert [g.prompt_ids for g in first[:3]] == [first[0].prompt_ids] * 3
    assert first[3].prompt_ids != first[0].prompt_ids
    assert len({tuple(g.output_ids) for g in first[:3]}) > 1  # samples differ
    on.flush_cache()
    second = on.generate(prompts, params)
    assert [g.output_ids for g in second] == [g.output_ids for g in first]
    other_seed = on.generate(prompts, SamplingParams(max_new_tokens=12, temperature=1.0, seed=8, n=3))
    assert [g.output_ids for g in other_seed] != [g.output_ids for g in first]


def test_stop_strings_trim_text_and_logprobs_are_returned(on):
    prompt = on.chat_prompt("Count from 1 to 20, separated by commas.")
    free = on.generate([prompt], SamplingParams(max_new_tokens=24, return_logprobs=True))[0]
    assert len(free.logprobs) == len(free.output_ids) and all(lp <= 0 for lp in free.logprobs)
    assert "\n" in free.text
    stopped = on.generate([prompt], SamplingParams(max_new_tokens=24, stop=("\n",)))[0]
    assert stopped.finish_reason == "stop" and "\n" not in stopped.text
    assert free.text.startswith(stopped.text)
    assert len(stopped.output_ids) < len(free.output_ids)
    short = on.generate([prompt], SamplingParams(max_new_tokens=3))[0]
    assert short.finish_reason == "length" and len(short.output_ids) == 3


def test_score_prefers_the_right_answer_and_matches_generation(on):
    prompt = on.chat_prompt("What is the capital of France? Answer in one sentence.")
    good, bad = on.score(prompt, ["The capital of France is Paris.", "The capital of France is Rome."])
    assert sum(good) > sum(bad)
    generated = on.generate([prompt], SamplingParams(max_new_tokens=5, return_logprobs=True))[0]
    scored = on.score(prompt, [generated.output_ids])[0]
    assert scored == pytest.approx(generated.logprobs, abs=0.05)


def test_score_is_the_same_when_the_continuation_is_already_cached(on):
    """A verifier scores a branch whose pages the search already cached: the cache may supply the
    prompt, never the continuation being scored (it crashed the Tree search page's live run)."""
    prompt = on.chat_prompt("Write a long paragraph about the sea and its tides.")
    gen = on.generate([prompt], SamplingParams(max_new_tokens=64))[0]
    whole = gen.prompt_ids + gen.output_ids
    assert (len(whole) - 1) // PAGE * PAGE > len(gen.prompt_ids)  # a cached page will reach into the continuation
    cold = on.score(gen.prompt_ids, [gen.output_ids])[0]
    on.generate([whole], SamplingParams(max_new_tokens=1))  # caches the continuation's pages too
    warm = on.score(gen.prompt_ids, [gen.output_ids])[0]
    assert len(warm) == len(gen.output_ids) and warm == pytest.approx(cold, abs=1e-6)


def test_ignore_eos_decodes_the_full_length(on):
    """SGLang's ignore_eos (the benchmarks' decode rate): past end-of-turn, to max_new_tokens."""
    from ragscale.engines.bench import stream_prompt

    prompt = stream_prompt(on)  # SmolLM2 ends its turn at once here: a bench once measured 0 tokens
    plain = on.generate([prompt], SamplingParams(max_new_tokens=24))[0]
    forced = on.generate([prompt], SamplingParams(max_new_tokens=24, ignore_eos=True))[0]
    assert len(forced.output_ids) == 24 and forced.finish_reason == "length"
    assert forced.output_ids[:len(plain.output_ids)] == plain.output_ids  # the same tokens up to where it stopped


def test_zero_new_tokens_prefills_only(on):
    """SGLang's max_new_tokens = 0 (used to warm a prefix): no decode step, the prompt is cached."""
    prompt = on.chat_prompt("Warm this prefix. " * 20)
    for n in (1, 3):
        gens = on.generate([prompt], SamplingParams(max_new_tokens=0, n=n))
        assert [(g.output_ids, g.text, g.finish_reason) for g in gens] == [([], "", "length")] * n
    assert on.generate([prompt], SamplingParams(max_new_tokens=1))[0].usage.cached_tokens > 0


def test_errors_are_clear(on):
    with pytest.raises(EngineError, match="context window"):
        on.generate([[1] * 8000], SamplingParams(max_new_tokens=500))
    with pytest.raises(EngineError, match="token ids"):
        on.generate([[10**9]], SamplingParams(max_new_tokens=1))
    with pytest.raises(EngineError):
        on.generate([""], SamplingParams(max_new_tokens=1))


def test_make_engine_and_tokenizer(on):
    engine = make_engine(EngineSpec())
    assert engine.info.kind == "embedded" and engine.info.context_window == 8192
    assert engine.count_tokens("Hello world") == len(engine.encode("Hello world")) > 0
    assert "<|im_start|>assistant" in engine.chat_prompt("hi", assistant_prefix="Follow up:")


def test_compute_dtype_follows_cpu_and_env(monkeypatch):
    from ragscale.engines import model_files
    from ragscale.errors import EngineError

    monkeypatch.delenv("RAGSCALE_DTYPE", raising=False)
    monkeypatch.setattr(model_files, "cpu_has_native_bf16", lambda: False)
    assert model_files.default_dtype() == "float32"  # bf16 is emulated, and slower, on AVX2-only CPUs
    monkeypatch.setattr(model_files, "cpu_has_native_bf16", lambda: True)
    assert model_files.default_dtype() == "bfloat16"
    monkeypatch.setenv("RAGSCALE_DTYPE", "float32")
    assert model_files.default_dtype() == "float32"
    monkeypatch.setenv("RAGSCALE_DTYPE", "float16")
    with pytest.raises(EngineError, match="RAGSCALE_DTYPE"):
        model_files.default_dtype()


def test_the_default_models_window_constant_is_its_configs(on):
    """Old sweep stores without a recorded window fall back to model_files.CONTEXT_WINDOW."""
    from ragscale.engines import model_files

    assert on.info.model == model_files.MODEL_NAME and on.info.context_window == model_files.CONTEXT_WINDOW


def _page_refs(engine) -> list:
    import weakref

    return [weakref.ref(page) for node in engine.cache._nodes() for page in node.value.pages]


def test_flushing_and_eviction_drop_every_kv_page_the_cache_held(on):
    """The memory half of /flush_cache and LRU eviction: once the tree lets go of a page, nothing
    else holds it, and a page owns just its own KV (not a view keeping a whole batch's buffer)."""
    from ragscale.engines.embedded import EmbeddedEngine

    documents = [on.encode(f"Document {i}. " + "A long passage about lighthouses and their keepers. " * 30)
                 for i in range(3)]
    on.generate(documents[:2], SamplingParams(max_new_tokens=1))
    refs = _page_refs(on)
    assert len(refs) >= 4
    assert all(page.untyped_storage().nbytes() == page.numel() * page.element_size()
               for node in on.cache._nodes() for page in node.value.pages)
    on.flush_cache()
    assert on.cache.total_tokens() == 0 and all(ref() is None for ref in refs)

    small = EmbeddedEngine(prefix_cache=True, cache_tokens=len(documents[0]) // PAGE * PAGE)  # shares the weights
    small.generate([documents[0]], SamplingParams(max_new_tokens=1))
    first = _page_refs(small)
    small.generate([documents[1]], SamplingParams(max_new_tokens=1))  # evicts the first document's pages
    assert small.cache.total_tokens() <= small.cache.token_budget
    assert first and all(ref() is None for ref in first)


def test_a_tied_head_keeps_no_second_copy_of_the_embedding(on):
    """With 4-bit decode (or float32) the dense head only serves prefill and scoring: it runs on
    the embedding itself (same bits as a reordered copy; see the DenseLinear test)."""
    import torch

    decoder = on.decoder
    if decoder.quantized_decode or decoder.dtype == torch.float32:
        from ragscale.engines.forward import DENSE

        assert decoder.head.kernel[0] == DENSE and decoder.head.kernel[1] is decoder.embed
