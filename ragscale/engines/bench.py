"""Engine benchmarks: ``ragscale bench prefix-cache | engine | serve``.

prefix-cache (fixed workload): a shared 1,000-token prefix, 8 branches (each its own short
instruction after the prefix), 4 steps of 32 new tokens, greedy. Every step continues each branch
with ``prompt_ids + output_ids`` and submits the 8 branches as one batch, as a tree search does.
``ideal_cached_fraction`` is what an unbounded cache with SGLang's rule (match at most
prompt_tokens - 1, requests in submission order) could reuse on the same requests; it is
computed with a RadixCache holding no KV, so it is independent of the engine.

engine: start-up in fresh processes and tokens/s per dtype. serve: the SGLang-compatible server
under concurrent requests, merged vs one at a time.
"""

from __future__ import annotations

import resource
import time
from typing import Callable

from ragscale.engines.base import SamplingParams
from ragscale.engines.radix_cache import RadixCache

PREFIX_TOKENS = 1000
BRANCHES = 8
STEPS = 4
NEW_TOKENS = 32

_PASSAGE = (
    "The lighthouse on the northern cape was built in 1871 from granite quarried two valleys away. "
    "Its keepers logged the weather every four hours, and the logs, kept in a cedar chest, describe "
    "storms, shipwrecks, migrating birds and the slow arrival of the telegraph. In 1923 the lamp was "
    "electrified; in 1967 the last keeper left, and the light has run automatically ever since. "
)
_BRANCH_TASKS = [
    "Summarise the passage in one sentence.", "List three facts from the passage.",
    "Write a question about the passage.", "Describe the lighthouse to a child.",
    "What changed in 1923?", "Write a short poem about the keepers.",
    "Explain why the logs matter to historians.", "Continue the story of the last keeper.",
]

Progress = Callable[[int, int, str], None]


def workload_prompts(engine) -> list[list[int]]:
    """The 8 branch prompts: 1,000 shared tokens, then each branch's own instruction."""
    prefix = engine.encode(_PASSAGE * 40)[:PREFIX_TOKENS]
    assert len(prefix) == PREFIX_TOKENS, "passage too short for the prefix"
    return [prefix + engine.encode(f"\n\nTask {i + 1}: {task}\nAnswer:") for i, task in enumerate(_BRANCH_TASKS)]


def run_tree(engine, progress: Progress | None = None) -> tuple[list, float]:
    """All steps on ``engine``; returns (every Generation in order, seconds)."""
    prompts = workload_prompts(engine)
    params = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0.0)
    generations = []
    started = time.perf_counter()
    for step in range(STEPS):
        outs = engine.generate(prompts, params)
        generations += outs
        prompts = [g.prompt_ids + g.output_ids for g in outs]
        if progress:
            progress(step + 1, STEPS, f"step {step + 1}/{STEPS}")
    return generations, time.perf_counter() - started


def ideal_cached_tokens(generations) -> int:
    """Cached tokens an unbounded SGLang-rule cache would report for the same requests."""
    tree, total = RadixCache(), 0
    by_step = [generations[i:i + BRANCHES] for i in range(0, len(generations), BRANCHES)]
    for step in by_step:
        for g in step:  # each prompt is prefilled and inserted before the next is matched
            total += tree.match_prefix(g.prompt_ids[:-1])[0]
            tree.insert(g.prompt_ids, [0] * len(g.prompt_ids))
        for g in step:  # outputs enter the tree when the batch finishes
            seq = g.prompt_ids + g.output_ids[:-1]
            tree.insert(seq, [0] * len(seq))
    return total


def prefix_cache_benchmark(progress: Progress | None = None) -> dict:
    from ragscale.engines.embedded import EmbeddedEngine

    on, off = EmbeddedEngine(prefix_cache=True), EmbeddedEngine(prefix_cache=False)  # shared weights
    on.generate([on.encode("Warm up.")], SamplingParams(max_new_tokens=2))  # first-call overheads
    on.flush_cache()
    on.reset_stats()

    def stage(name):
        return (lambda done, total, msg: progress(done, total, f"cache {name}: {msg}")) if progress else None

    gens_on, seconds_on = run_tree(on, stage("on"))
    gens_off, seconds_off = run_tree(off, stage("off"))
    prompt_tokens = sum(g.usage.prompt_tokens for g in gens_on)
    return {
        "tokens_generated": sum(g.usage.completion_tokens for g in gens_on),
        "seconds_cache_on": round(seconds_on, 3),
        "seconds_cache_off": round(seconds_off, 3),
        "speedup": round(seconds_off / seconds_on, 3),
        "cached_token_fraction": round(sum(g.usage.cached_tokens for g in gens_on) / prompt_tokens, 4),
        "ideal_cached_fraction": round(ideal_cached_tokens(gens_on) / prompt_tokens, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "greedy_outputs_identical": [g.output_ids for g in gens_on] == [g.output_ids for g in gens_off],
        "prompt_tokens": prompt_tokens,
    }


# Run in a fresh interpreter so that nothing is loaded yet; prints one JSON line.
_START_PROBE = """
import json, time
started = time.perf_counter()
import transformers.models.llama.modeling_llama, transformers.models.auto  # library import, paid once per process
imported = time.perf_counter()
from ragscale.engines.model_files import load_model
load_model()
print(json.dumps({"import_seconds": imported - started, "load_seconds": time.perf_counter() - imported}))
"""


def engine_benchmark(progress: Progress | None = None) -> dict:
    """The embedded engine's start-up and throughput.

    Start-up runs in fresh processes: a first start (no bf16 copy yet: the GGUF is dequantised
    and the copy written) and a later start (from the copy), side by side. Throughput is 4 prompts
    of ~300 tokens + 32 new tokens each, no prefix cache, in float32 and in bfloat16."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    import torch

    def probe(cache_dir: str | None) -> dict:
        env = dict(os.environ, **({"RAGSCALE_CACHE_DIR": cache_dir} if cache_dir else {}))
        done = subprocess.run([sys.executable, "-c", _START_PROBE], env=env, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory(prefix="ragscale-start-") as empty:
        first = probe(empty)
        if progress:
            progress(1, 5, "first start (from the GGUF)")
        later = probe(empty)  # the copy written by the first start
        if progress:
            progress(2, 5, "later start (from the bf16 copy)")
    usual = probe(None)  # the user's own cache directory, as the app starts
    if progress:
        progress(3, 5, "later start, user cache")
    throughput = {}
    for step, dtype in enumerate(("float32", "bfloat16"), start=4):
        throughput[dtype] = decode_throughput(dtype)
        if progress:
            progress(step, 5, f"throughput {dtype}")
    return {
        "first_start_load_seconds": round(first["load_seconds"], 2),
        "later_start_load_seconds": round(later["load_seconds"], 2),
        "user_cache_load_seconds": round(usual["load_seconds"], 2),
        "library_import_seconds": round(later["import_seconds"], 2),
        "first_over_later": round(first["load_seconds"] / later["load_seconds"], 1),
        "tokens_per_second": throughput,
        "threads": torch.get_num_threads(),
    }


def decode_throughput(dtype: str, prompts: int = 4, new_tokens: int = 32) -> float:
    """Generated tokens per second (prefill included), cache off, one batch of ~300-token prompts."""
    from ragscale.engines.embedded import EmbeddedEngine

    engine = EmbeddedEngine(prefix_cache=False, dtype=dtype)
    batch = [engine.encode(f"Note {i}. " + _PASSAGE * 4 + "\nSummary:") for i in range(prompts)]
    engine.generate([batch[0][:8]], SamplingParams(max_new_tokens=2))  # first-call overheads
    started = time.perf_counter()
    outs = engine.generate(batch, SamplingParams(max_new_tokens=new_tokens, temperature=0.0))
    return round(sum(len(g.output_ids) for g in outs) / (time.perf_counter() - started), 1)


CLIENTS = 8  # concurrent users of one embedded server, one single-prompt request each


def serving_benchmark(progress: Progress | None = None) -> dict:
    """``ragscale serve embedded`` under 8 concurrent single-prompt chat requests (a few hundred
    tokens each, 32 new tokens at most, greedy), with requests merged into batches vs one at a
    time, side by side on one engine. The prefix cache is flushed before each run."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from ragscale.engines.embedded import EmbeddedEngine
    from ragscale.engines.server import make_server
    from ragscale.engines.sglang_client import SGLangEngine

    engine = EmbeddedEngine(prefix_cache=True)
    # Different users, different documents: no prefix is shared beyond the chat template.
    sentences = _PASSAGE.split(". ")
    prompts = [engine.encode(engine.chat_prompt(f"{'. '.join(sentences[i % 4:] + sentences[:i % 4]) * 3}\n\n{task}"))
               for i, task in enumerate(_BRANCH_TASKS[:CLIENTS])]
    params = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0.0)
    engine.generate([prompts[0][:8]], SamplingParams(max_new_tokens=2))  # first-call overheads

    def run(merge: bool) -> tuple[float, list, int]:
        engine.flush_cache()
        server = make_server(engine, "127.0.0.1", 0, merge_requests=merge)  # port 0: any free port
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            client = SGLangEngine(f"http://127.0.0.1:{port}", tokenizer=engine.tokenizer, timeout=600)
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
                outs = list(pool.map(lambda ids: client.generate([ids], params)[0], prompts))
            seconds = time.perf_counter() - started
            merged = client.server_info().get("largest_merged_requests", 0)
        finally:
            server.shutdown()
            server.server_close()
        return seconds, [g.output_ids for g in outs], merged

    serial_seconds, serial_out, _ = run(merge=False)
    if progress:
        progress(1, 2, "one request at a time")
    merged_seconds, merged_out, largest = run(merge=True)
    if progress:
        progress(2, 2, "requests merged")
    return {
        "clients": CLIENTS,
        "tokens_generated": sum(len(o) for o in merged_out),
        "seconds_one_at_a_time": round(serial_seconds, 3),
        "seconds_merged": round(merged_seconds, 3),
        "speedup": round(serial_seconds / merged_seconds, 3),
        "largest_merged_requests": largest,
        # Batching changes float rounding, so greedy tokens can differ; reported, not assumed.
        "same_outputs": serial_out == merged_out,
    }
