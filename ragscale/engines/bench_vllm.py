"""``ragscale bench vllm``: the embedded engine and vLLM (CPU build, same model) side by side.

One run starts vLLM (``VLLMServer``: the embedded model's verified copy, bf16) and loads the
embedded engine, then runs on both, alternating, the workloads of ``bench prefix-cache`` and
``bench engine``:

- the prefix-cache tree workload (``bench.run_tree``: 1,000 shared tokens, 8 branches, 4 steps of
  32 greedy tokens, every branch continued by token ids), from a flushed cache: seconds, the cached
  fraction from per-request usage, and vLLM's own hit rate from its /metrics counters;
- single-stream decode (the ~1,015-token prompt, 128 tokens, ``ignore_eos``), ``rounds`` times;
- 8-branch decode (the tree's 8 prompts, 32 tokens each, one batch / 8 concurrent requests).

How rates are timed: the embedded engine inside one ``generate`` (prefill to first token, then
decode; ``bench.embedded_rates``); vLLM from the client over HTTP, streamed, on a flushed cache:
prefill until every stream had its first token, decode the rest (``OpenAIEngine.stream_timings``).
Ratios are embedded / vLLM (above 1: embedded faster); the tree ratio is vLLM's seconds / the
embedded engine's (below 1: vLLM faster).
Greedy outputs of the tree's first step are compared token by token (same prompts on both).
``--url`` runs it on a vLLM already started with ``ragscale serve vllm`` (its cache is flushed).
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from pathlib import Path

from ragscale.engines.base import SamplingParams
from ragscale.engines.bench import (
    NEW_TOKENS, STREAM_NEW_TOKENS, Progress, _common, _rates, embedded_rates, ideal_cached_tokens, run_tree, stream_prompt,
    workload_prompts,
)


def vllm_benchmark(progress: Progress | None = None, rounds: int = 3, url: str | None = None) -> dict:
    """The comparison on a vLLM this run starts (and stops), or on one already running at ``url``."""
    from ragscale.engines.vllm_server import VLLMServer

    if url:
        return {**_compare(url, progress, rounds), "vllm_started_by_the_benchmark": False}
    with tempfile.TemporaryDirectory(prefix="ragscale-vllm-") as tmp:
        started = time.perf_counter()
        with VLLMServer(log_path=Path(tmp) / "vllm.log") as server:
            start_seconds = time.perf_counter() - started
            if progress:
                progress(0, 4, f"vLLM ready in {start_seconds:.0f} s")
            result = _compare(server.url, progress, rounds)
            log = Path(server.log_path).read_text(errors="replace")
    return {**result, "vllm_started_by_the_benchmark": True, "vllm_start_seconds": round(start_seconds, 1),
            "vllm_compute_cores": _bound_cores(log)}


def _compare(url: str, progress: Progress | None, rounds: int) -> dict:
    import torch

    from ragscale.engines.embedded import EmbeddedEngine
    from ragscale.engines.model_files import bench_threads
    from ragscale.engines.openai_client import OpenAIEngine

    def say(step: int, message: str) -> None:
        if progress:
            progress(step, 4, message)

    remote = OpenAIEngine(url)
    local = EmbeddedEngine(prefix_cache=True, threads=bench_threads())
    for engine in (local, remote):  # first-call overheads
        engine.generate([engine.encode("Warm up.")], SamplingParams(max_new_tokens=2))
    say(1, "warm")

    tree = {}
    for name, engine in (("embedded", local), ("vllm", remote)):
        engine.flush_cache()
        engine.reset_stats()
        generations, seconds = run_tree(engine)
        prompt_tokens = sum(g.usage.prompt_tokens for g in generations)
        tree[name] = {"seconds": round(seconds, 3), "generations": generations,
                      "cached_token_fraction": round(sum(g.usage.cached_tokens for g in generations)
                                                     / prompt_tokens, 4),
                      "ideal_cached_fraction": round(ideal_cached_tokens(generations) / prompt_tokens, 4)}
    tree["vllm"]["metrics_hit_rate"] = _rounded(remote.metrics_hit_rate())
    say(2, "tree workload")

    singles: dict[str, list[dict]] = {"embedded": [], "vllm": []}
    for _ in range(rounds):  # alternating, so a burst of other load lands on both
        local.flush_cache()
        singles["embedded"].append(embedded_rates(local, [stream_prompt(local)], STREAM_NEW_TOKENS))
        singles["vllm"].append(_remote_rates(remote, [stream_prompt(remote)], STREAM_NEW_TOKENS))
    say(3, "single stream")
    local.flush_cache()
    branches = {"embedded": embedded_rates(local, workload_prompts(local), NEW_TOKENS),
                "vllm": _remote_rates(remote, workload_prompts(remote), NEW_TOKENS)}
    say(4, "8 branches")

    first_step = [(a.output_ids, b.output_ids) for a, b in
                  zip(tree["embedded"]["generations"][:8], tree["vllm"]["generations"][:8])]
    medians = {name: statistics.median(r["decode_tok_s"] for r in runs) for name, runs in singles.items()}
    for side in tree.values():
        side.pop("generations")
    return {
        "embedded_threads": torch.get_num_threads(),
        "embedded_decode": "4-bit" if local.decoder.quantized_decode else "dense",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "tree": tree,
        "tree_speed_ratio": round(tree["vllm"]["seconds"] / tree["embedded"]["seconds"], 2),
        "single_stream": {name: {**sorted(runs, key=lambda r: r["decode_tok_s"])[len(runs) // 2],
                                 "decode_tok_s_rounds": [r["decode_tok_s"] for r in runs]}
                          for name, runs in singles.items()},
        "single_stream_decode_ratio": round(medians["embedded"] / medians["vllm"], 2),
        "branches_8": branches,
        "branches_8_decode_ratio": round(branches["embedded"]["decode_tok_s"] / branches["vllm"]["decode_tok_s"], 2),
        # the tree's first step: the same 8 prompts on both engines, greedy
        "greedy_first_step_identical": f"{sum(a == b for a, b in first_step)} of {len(first_step)}",
        "greedy_first_step_common_prefix_tokens": [f"{_common(a, b)} of {max(len(a), len(b))}" for a, b in first_step],
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def _remote_rates(engine, prompts: list[list[int]], new_tokens: int) -> dict:
    """vLLM's prefill and decode rates from streamed answers (all prompts at once, a flushed cache):
    prefill = prompt tokens / time until every stream had its first token; decode = the other
    tokens / the rest of the time (the embedded engine's split, ``bench.embedded_rates``)."""
    from concurrent.futures import ThreadPoolExecutor

    engine.flush_cache()
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        timings = list(pool.map(lambda p: engine.stream_timings(p, new_tokens), prompts))
    prefill_seconds = max(t[0] for t in timings)
    decode_seconds = max(t[1] for t in timings) - prefill_seconds
    decoded = sum(t[2] for t in timings) - len(prompts)
    return _rates(sum(len(p) for p in prompts), prefill_seconds, decoded, decode_seconds)


def _bound_cores(log: str) -> list[int] | None:
    """The cores vLLM bound its compute threads to, as its start-up log says ("core ids=[0]")."""
    match = re.search(r"core ids=\[([\d, ]*)\]", log)
    return [int(c) for c in match.group(1).split(",") if c.strip()] if match else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
