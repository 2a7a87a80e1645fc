"""Engine benchmarks: ``ragscale bench prefix-cache | engine | llamacpp | serve``.

prefix-cache (fixed workload): a shared 1,000-token prefix, 8 branches (each its own short
instruction after the prefix), 4 steps of 32 new tokens, greedy. Every step continues each branch
with ``prompt_ids + output_ids`` and submits the 8 branches as one batch, as a tree search does.
``ideal_cached_fraction`` is what an unbounded cache with SGLang's rule (match at most
prompt_tokens - 1, requests in submission order) could reuse on the same requests; it is
computed with a RadixCache holding no KV, so it is independent of the engine.

engine: start-up in fresh processes, prefill and decode tokens/s for one stream and for 8
branches. llamacpp: the same workloads on llama.cpp, side by side. serve: the SGLang-compatible
server under concurrent requests, merged vs one at a time. serve-memory: the server process's
resident memory before and after requests and after ``/flush_cache``.
"""

from __future__ import annotations

import os
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
    from ragscale.engines.model_files import bench_threads

    on, off = EmbeddedEngine(prefix_cache=True, threads=bench_threads()), EmbeddedEngine(prefix_cache=False, threads=bench_threads())  # shared weights
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


# Run in a fresh interpreter so that nothing is loaded yet; prints one JSON line. Libraries are
# imported (what every start imports, ``model_files.import_libraries``) and timed apart from the
# load; modules the load still imports are counted, so a probe that misses some shows it.
_START_PROBE = """
import json, sys, time
started = time.perf_counter()
from ragscale.engines import model_files
model_files.import_libraries()
imported = time.perf_counter()
before = set(sys.modules)
model_files.load()
loaded = time.perf_counter()
by_load = len(set(sys.modules) - before)
from ragscale.engines.bench import process_memory_mb
print(json.dumps({"import_seconds": imported - started, "load_seconds": loaded - imported,
                  "modules_imported": len(before), "modules_imported_by_load": by_load, **process_memory_mb()}))
"""


def process_memory_mb(pid: int | str = "self") -> dict:
    """A process's resident memory now (VmRSS) and at its peak (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {"rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
            "peak_rss_mb": round(int(fields["VmHWM"].split()[0]) / 1024, 1)}

STREAM_NEW_TOKENS = 128  # single-stream decode length (as the README's llama.cpp comparison)


def stream_prompt(engine) -> list[int]:
    """The single-stream workload: the 1,000-token passage and a task that makes the model write."""
    return workload_prompts(engine)[7]


def engine_benchmark(progress: Progress | None = None) -> dict:
    """The embedded engine's start-up and throughput.

    Start-up runs in fresh processes: a first start (no model copy yet: the GGUF is converted and
    the copy written) and a later start (from the verified copy), side by side. Throughput, at the
    default dtype and in float32 (the dense path): see ``throughput``."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    import torch

    from ragscale.engines.model_files import default_dtype

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
            progress(2, 5, "later start (from the copy)")
    usual = probe(None)  # the user's own cache directory, as the app starts
    if progress:
        progress(3, 5, "later start, user cache")
    dtypes = [default_dtype()] + (["float32"] if default_dtype() != "float32" else [])
    results = {}
    for step, dtype in enumerate(dtypes, start=4):
        results[dtype] = throughput(dtype)
        if progress:
            progress(step, 5, f"throughput {dtype}")
    starts = {name: {key: round(value, 2) if isinstance(value, float) else value for key, value in probe_result.items()}
              for name, probe_result in (("first", first), ("later", later), ("user_cache", usual))}
    return {
        "first_start_load_seconds": starts["first"]["load_seconds"],
        "later_start_load_seconds": starts["later"]["load_seconds"],
        "user_cache_load_seconds": starts["user_cache"]["load_seconds"],
        "library_import_seconds": starts["later"]["import_seconds"],
        "first_over_later": round(first["load_seconds"] / later["load_seconds"], 1),
        # each start (fresh process): import and load seconds, modules, resident memory after load
        "starts": starts,
        "default_dtype": dtypes[0],
        "throughput": results,
        "threads": torch.get_num_threads(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def throughput(dtype: str | None = None) -> dict:
    """Prefill and decode tokens/s, cache off, greedy:

    - single stream: one ~1,015-token prompt, then up to 128 new tokens;
    - 8 branches: the 8 prompts of the tree workload (1,000 shared tokens each, prefilled in
      full since the cache is off) and 32 new tokens each, decoded as one batch."""
    engine = _warm_engine(dtype)
    return {"decode": engine.decoder.decode_kernel, "ops": engine.decoder.ops, "cpu": cpu_model(),
            "single_stream": embedded_rates(engine, [stream_prompt(engine)], STREAM_NEW_TOKENS),
            "branches_8": embedded_rates(engine, workload_prompts(engine), NEW_TOKENS)}


def _warm_engine(dtype: str | None = None):
    """An embedded engine, cache off, past its first-call overheads."""
    from ragscale.engines.embedded import EmbeddedEngine
    from ragscale.engines.model_files import bench_threads

    engine = EmbeddedEngine(prefix_cache=False, dtype=dtype, threads=bench_threads())
    engine.generate([engine.encode("Warm up.")], SamplingParams(max_new_tokens=2))
    return engine


def embedded_rates(engine, prompts: list[list[int]], new_tokens: int) -> dict:
    """One ``generate`` of ``prompts`` (``ignore_eos``: every row decodes its full length, whatever
    this model says; a rate, not a text). Prefill rate = prompt tokens / time to the first token;
    decode rate = the other generated tokens / the rest of the time, both timed inside one call
    (on a noisy shared machine, a separately timed prefill made the decode rate swing by 5x)."""
    gens = engine.generate(prompts, SamplingParams(max_new_tokens=new_tokens, ignore_eos=True))
    prefill_seconds, decode_seconds = engine.last_call_seconds
    decoded = sum(len(g.output_ids) - 1 for g in gens)
    return _rates(sum(len(p) for p in prompts), prefill_seconds, decoded, decode_seconds)


def _rates(prompt_tokens: int, prefill_seconds: float, decoded: int, decode_seconds: float) -> dict:
    return {"prompt_tokens": prompt_tokens, "prefill_tok_s": round(prompt_tokens / prefill_seconds, 1),
            "decoded_tokens": decoded, "decode_tok_s": round(decoded / max(decode_seconds, 1e-9), 1)}


def decode_kernels_benchmark(progress: Progress | None = None, rounds: int = 3) -> dict:
    """Quantised decode with each candidate kernel, side by side in one process, alternating round
    by round: the weight kernels (``model_files.DECODE_KERNELS``: torch's 4-bit groups, int8 rows
    on the integer GEMM) with ragscale's decode kernels (attention, norms), and the chosen weight
    kernel on torch's ops (``kernels``). Each runs the single stream and the 8 branches of
    ``throughput``, and the greedy text of one question (the kernels round differently). Also
    the attention op alone: 30 layers' worth of SmolLM2 KV at the single stream's length."""
    import statistics

    import torch

    from ragscale.engines import model_files

    engines = {}
    saved = os.environ.get("RAGSCALE_DECODE_KERNEL")
    try:
        for kernel in model_files.DECODE_KERNELS:
            os.environ["RAGSCALE_DECODE_KERNEL"] = kernel
            engines[kernel] = _warm_engine()
    finally:
        if saved is None:
            os.environ.pop("RAGSCALE_DECODE_KERNEL", None)
        else:
            os.environ["RAGSCALE_DECODE_KERNEL"] = saved
    chosen = model_files.decode_kernel()
    ops = engines[chosen].decoder.ops
    configurations = {f"{k}, {ops} ops": (e, ops) for k, e in engines.items()}
    if ops == "ragscale":
        configurations[f"{chosen}, torch ops"] = (engines[chosen], "torch")
    some = engines[chosen]
    stream, branches = [stream_prompt(some)], workload_prompts(some)
    runs: dict[str, dict[str, list]] = {name: {"single_stream": [], "branches_8": []} for name in configurations}
    question = some.chat_prompt("What is the capital of France? Answer in one sentence.")
    greedy, texts = SamplingParams(max_new_tokens=24), {}
    for done in range(rounds):
        for name, (engine, backend) in configurations.items():
            engine.decoder.use_ops(backend)
            runs[name]["single_stream"].append(embedded_rates(engine, stream, STREAM_NEW_TOKENS)["decode_tok_s"])
            runs[name]["branches_8"].append(embedded_rates(engine, branches, NEW_TOKENS)["decode_tok_s"])
            texts.setdefault(name, engine.generate([question], greedy)[0].text)
        if progress:
            progress(done + 1, rounds, f"round {done + 1}/{rounds}")
    some.decoder.use_ops(None)
    return {
        "chosen_here": {"weights": chosen, "ops": ops, "why": some.decoder.ops_why},
        "cpu": cpu_model(), "rounds": rounds, "threads": torch.get_num_threads(),
        "decode_tok_s": {k: {name: {"median": statistics.median(v), "rounds": v} for name, v in r.items()}
                         for k, r in runs.items()},
        "attention_op_ms_per_token": attention_op_times(some.decoder, len(stream[0]), rounds),
        "greedy_text": texts,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def attention_op_times(decoder, keys: int, rounds: int, repeats: int = 20) -> dict:
    """Milliseconds for one decoded token's attention (every layer, one row) over ``keys`` keys of
    random bf16 KV, a distinct tensor per layer as in the model (so the KV streams from memory),
    on each available build of the op, alternating; the median of ``rounds``."""
    import statistics

    import torch

    from ragscale.engines import kernels

    layers, heads, group, dim = decoder.layers_n, decoder.kv_heads, decoder.heads // decoder.kv_heads, decoder.head_dim
    generator = torch.Generator().manual_seed(0)
    kv = [torch.randn(2, 1, heads, keys, dim, generator=generator).to(torch.bfloat16) for _ in range(layers)]
    q = torch.randn(1, heads, group, dim, generator=generator).to(torch.bfloat16)
    out, lse = torch.empty(1, heads, group, dim), torch.empty(1, heads, group)
    ops = {"torch": torch.ops.ragscale.torch_decode_attention}
    if kernels.ensure():
        ops["ragscale"] = torch.ops.ragscale.decode_attention
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(rounds):
        for name, op in ops.items():
            start = time.perf_counter()
            for _ in range(repeats):
                for layer in kv:
                    op(q, layer, decoder.scaling, out, lse, 0, 1, False)
            times[name].append(round((time.perf_counter() - start) / repeats * 1000, 2))
    return {"keys": keys, "layers": layers,
            **{name: {"median": statistics.median(t), "rounds": t} for name, t in times.items()}}


def cpu_model() -> str:
    """The CPU's model name and the instruction sets the kernel choice looks at."""
    from ragscale.engines.model_files import _cpu_flags

    name = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = _cpu_flags()
    present = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
               if f in flags]
    return f"{name} ({os.cpu_count()} cores; {', '.join(present) or 'no AVX2'})"


def llamacpp_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is None


def llamacpp_benchmark(progress: Progress | None = None, rounds: int = 3) -> dict:
    """The ``throughput`` workloads on llama.cpp (llama-cpp-python, same GGUF, same threads) and on
    the embedded engine, in one process run, so the ratio is measured side by side.

    The single stream runs ``rounds`` times, the two engines alternating, and the ratio is of the
    medians: on a shared machine one engine's lone run can land in another job's burst (a 17x
    "ratio" was seen that way). llama.cpp's 8 branches run one after another on one sequence (its
    prompt cache reuses the shared 1,000 tokens from the second branch on); its prefill rate counts
    the tokens it actually computed. Batching branches needs llama.cpp's low-level multi-sequence
    API, not used here."""
    import statistics

    import llama_cpp
    import torch

    from ragscale.engines.model_files import resolve_model

    steps = rounds + 2
    engine = _warm_engine()
    threads = torch.get_num_threads()  # the engine's (bench_threads): llama.cpp gets the same
    llm = _llama(llama_cpp)(model_path=str(resolve_model(None).path), n_ctx=4096, n_batch=512, n_threads=threads,
                            n_threads_batch=threads, verbose=False)

    def run(prompt: list[int], new_tokens: int, reset: bool) -> tuple[int, float, int, float]:
        """(prompt tokens computed, prefill seconds, decoded tokens after the first, decode seconds)."""
        # llama-cpp-python reuses the longest common prefix with what it holds, even with reset
        computed = len(prompt) - _common(llm._input_ids.tolist(), prompt[:-1])
        started = time.perf_counter()
        produced, first_at = 0, None
        for token in llm.generate(prompt, top_k=1, temp=0.0, reset=reset):
            produced += 1
            if first_at is None:
                first_at = time.perf_counter()
            if produced >= new_tokens:  # past end-of-turn too, as the embedded side (ignore_eos)
                break
        return computed, first_at - started, produced - 1, time.perf_counter() - first_at

    stream = stream_prompt(engine)
    run(engine.encode("Warm up."), 2, True)
    singles: dict[str, list[dict]] = {"llamacpp": [], "embedded": []}
    for done in range(rounds):
        llm.reset()  # the whole prompt is computed again each round, as on the embedded side
        singles["llamacpp"].append(_rates(*run(stream, STREAM_NEW_TOKENS, True)))
        singles["embedded"].append(embedded_rates(engine, [stream], STREAM_NEW_TOKENS))
        if progress:
            progress(done + 1, steps, f"single stream, round {done + 1}/{rounds}")
    totals = [0, 0.0, 0, 0.0]
    for prompt in workload_prompts(engine):
        # reset=True: reset=False failed here with "failed to find a memory slot" (0.3.36); the
        # shared prefix is reused either way (see ``run``)
        for j, value in enumerate(run(prompt, NEW_TOKENS, reset=True)):
            totals[j] += value
    if progress:
        progress(rounds + 1, steps, "llama.cpp 8 branches")
    embedded_branches = embedded_rates(engine, workload_prompts(engine), NEW_TOKENS)
    if progress:
        progress(steps, steps, "embedded 8 branches")

    def median_run(runs: list[dict]) -> dict:
        return {**sorted(runs, key=lambda r: r["decode_tok_s"])[len(runs) // 2],
                "decode_tok_s_rounds": [r["decode_tok_s"] for r in runs]}

    medians = {name: statistics.median(r["decode_tok_s"] for r in runs) for name, runs in singles.items()}
    return {
        "llamacpp_version": getattr(llama_cpp, "__version__", "?"),
        "threads": threads,
        "rounds": rounds,
        "llamacpp": {"single_stream": median_run(singles["llamacpp"]), "branches_8_sequential": _rates(*totals)},
        "cpu": cpu_model(),
        "embedded": {"decode": engine.decoder.decode_kernel, "ops": engine.decoder.ops,
                     "single_stream": median_run(singles["embedded"]), "branches_8": embedded_branches},
        "single_stream_decode_ratio": round(medians["embedded"] / medians["llamacpp"], 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def _llama(llama_cpp):
    """``llama_cpp.Llama`` with llama.cpp's extra CPU buffer types off: its AMX path (chosen on
    CPUs with AMX, as here) crashed in ``ggml_backend_amx_mul_mat`` on this Q4_1 model at the
    first token (llama-cpp-python 0.3.36, gdb backtrace); without it llama.cpp runs its own
    AVX-512 kernels, which is what the 81-86 tok/s in ``offline-stack.md`` were measured on."""
    import llama_cpp.llama as module

    default = llama_cpp.llama_model_default_params

    def params():
        p = default()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    class Llama(llama_cpp.Llama):
        def __init__(self, *args, **kwargs):
            module.llama_cpp.llama_model_default_params = params
            try:
                super().__init__(*args, **kwargs)
            finally:
                module.llama_cpp.llama_model_default_params = default

    return Llama


def _common(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


CLIENTS = 8  # concurrent users of one embedded server, one single-prompt request each


def serving_benchmark(progress: Progress | None = None) -> dict:
    """``ragscale serve embedded`` under 8 concurrent single-prompt chat requests (a few hundred
    tokens each, 32 new tokens at most, greedy), with requests merged into batches vs one at a
    time, side by side on one engine. The prefix cache is flushed before each run."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from ragscale.engines.embedded import EmbeddedEngine
    from ragscale.engines.model_files import bench_threads
    from ragscale.engines.server import make_server
    from ragscale.engines.sglang_client import SGLangEngine

    engine = EmbeddedEngine(prefix_cache=True, threads=bench_threads())
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


MEMORY_DOCUMENTS = 24  # distinct ~900-token prompts: ~22k tokens of prefixes, more than the default cache budget
SMALL_CACHE_TOKENS = 2048


def server_memory_benchmark(progress: Progress | None = None) -> dict:
    """Resident memory of ``ragscale serve embedded`` (its own process, as users start it): when
    ready, after 24 distinct ~900-token requests (4 at a time, 8 new tokens, greedy), and after
    ``POST /flush_cache``; once with the default cache budget (the requests overflow it, so LRU
    eviction runs) and once with ``--max-total-tokens 2048`` (eviction keeps the cache small)."""
    runs = {}
    for step, budget in enumerate((None, SMALL_CACHE_TOKENS), start=1):
        runs["default_budget" if budget is None else f"max_total_tokens_{budget}"] = _server_memory_run(budget)
        if progress:
            progress(step, 2, f"server, cache budget {budget or 'default'}")
    return runs


def server_kv_benchmark(progress: Progress | None = None) -> dict:
    """Issue #24's KV requests against ``ragscale serve embedded`` (its own process): a
    2,000-token prompt with n = 16 and one new token (peak RSS over the ready server's RSS), then
    one 6,000-token prompt with 255 one-token prompts (the HTTP status: served or a clear 4xx,
    never 500)."""
    import json
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    server = subprocess.Popen([sys.executable, "-m", "ragscale", "serve", "embedded", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = _await_server(server)

        def post(body: dict) -> tuple[int, float]:
            request = urllib.request.Request(url + "/generate", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=1800) as response:
                    response.read()
                    return response.status, time.perf_counter() - started
            except urllib.error.HTTPError as error:
                return error.code, time.perf_counter() - started

        ready = process_memory_mb(server.pid)["rss_mb"]
        with open(f"/proc/{server.pid}/clear_refs", "w") as refs:
            refs.write("5")  # peak RSS := current RSS (the load's own peak is not the request's)
        status_n16, seconds_n16 = post({"input_ids": [1000 + (7 * i) % 20000 for i in range(2000)],
                                        "sampling_params": {"max_new_tokens": 1, "n": 16, "temperature": 0}})
        peak = process_memory_mb(server.pid)["peak_rss_mb"]
        if progress:
            progress(1, 2, f"2,000 tokens, n = 16: HTTP {status_n16}, peak RSS +{peak - ready:.0f} MB")
        status_mixed, seconds_mixed = post({"input_ids": [[1000 + (7 * i) % 20000 for i in range(6000)]]
                                            + [[1000 + i] for i in range(255)],
                                            "sampling_params": {"max_new_tokens": 1, "temperature": 0}})
        if progress:
            progress(2, 2, "6,000 + 255 x 1 tokens")
        return {"rss_mb_ready": ready, "n16_status": status_n16, "n16_seconds": round(seconds_n16, 1),
                "n16_peak_rss_rise_mb": round(peak - ready, 1), "target_rise_mb": 250,
                "mixed_6000_plus_255_status": status_mixed, "mixed_seconds": round(seconds_mixed, 1),
                "peak_rss_mb": process_memory_mb(server.pid)["peak_rss_mb"],
                "load_average_1min": round(os.getloadavg()[0], 2)}
    finally:
        server.terminate()
        server.wait(timeout=60)


def _await_server(server) -> str:
    """The URL of a ``ragscale serve`` subprocess once it printed ``ready:``."""
    url = None
    for line in server.stdout:  # "serving ... on http://HOST:PORT", then "ready: MODEL"
        if " on http://" in line:
            url = line.strip().rsplit(" ", 1)[-1]
        if line.startswith("ready:"):
            break
    if url is None or server.poll() is not None:
        raise RuntimeError("the server did not start")
    return url


def _server_memory_run(budget: int | None) -> dict:
    import json
    import subprocess
    import sys
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    command = [sys.executable, "-m", "ragscale", "serve", "embedded", "--port", "0"]
    if budget is not None:
        command += ["--max-total-tokens", str(budget)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def rss_mb() -> float:
        return process_memory_mb(server.pid)["rss_mb"]

    try:
        url = _await_server(server)

        def call(path: str, body: dict | None = None) -> dict | bytes:
            request = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=900) as response:
                return response.read()

        def document(i: int) -> str:
            words = _PASSAGE.split()
            return f"Document {i}: " + " ".join(words[i % len(words):] + words[:i % len(words)]) * 10 + "\nSummarise."

        ready = rss_mb()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: call("/generate", {"text": document(i), "sampling_params": {
                "max_new_tokens": 8, "temperature": 0}}), range(MEMORY_DOCUMENTS)))
        after = rss_mb()
        held = json.loads(call("/get_server_info"))["internal_states"][0]["num_used_tokens"]
        call("/flush_cache", {})
        return {"rss_mb_ready": ready, "rss_mb_after_requests": after, "cache_tokens_held": held,
                "rss_mb_after_flush": rss_mb()}
    finally:
        server.terminate()
        server.wait(timeout=60)
