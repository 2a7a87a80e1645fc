"""Engine commands: ``ragscale serve embedded|sglang|vllm|router`` and
``ragscale bench prefix-cache|engine|serve|serve-load|router|vllm``."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
import threading
import time

from ragscale.errors import UserError


def register(commands) -> None:
    serve = commands.add_parser("serve", help="serve an engine over HTTP (SGLang's native API and OpenAI's /v1)")
    kinds = serve.add_subparsers(dest="serve_kind", metavar="ENGINE", required=True)

    embedded = kinds.add_parser("embedded", help="the embedded engine (SmolLM2 or --model): SGLang's native API, "
                                                 "and OpenAI's /v1/completions, /v1/chat/completions, /v1/models")
    embedded.add_argument("--port", type=int, default=30000)
    embedded.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve a team (no authentication!)")
    embedded.add_argument("--disable-radix-cache", action="store_true", help="turn the prefix cache off (A/B runs)")
    embedded.add_argument("--model", metavar="PATH",
                          help="a local Hugging Face folder or .gguf file, Llama architecture (default: SmolLM2-135M-Instruct)")
    embedded.add_argument("--max-total-tokens", type=int, metavar="N",
                          help="tokens of KV the prefix cache keeps before evicting least-recently-used prefixes "
                               "(SGLang's flag; default 16384: ~0.37 GB for SmolLM2 in bf16)")
    embedded.add_argument("--kv-budget-tokens", type=int, metavar="N",
                          help="tokens of KV for running requests and the prefix cache together (default 65536: "
                               "~1.5 GB for SmolLM2 in bf16); merged requests beyond it run in turn, and a prompt "
                               "that alone needs more is refused (400)")
    embedded.set_defaults(func=_serve_embedded)

    sglang = kinds.add_parser("sglang", help="run sglang.launch_server with the flags ragscale needs")
    sglang.add_argument("--model-path", required=True)
    sglang.add_argument("--port", type=int, default=30000)
    sglang.add_argument("--host", default="127.0.0.1")
    sglang.add_argument("--context-length", type=int, help="the model's context window (SGLang's --context-length)")
    sglang.add_argument("--dp-size", type=int, default=1,
                        help="data-parallel replicas behind SGLang's own balancer, which ignores prefixes; for "
                             "prefix-aware routing use --workers N (separate workers behind sglang-router)")
    sglang.add_argument("--workers", type=int, default=1,
                        help="N > 1: print the commands for N workers (one GPU each) behind sglang-router "
                             "--policy cache_aware, instead of launching one server")
    sglang.add_argument("--dry-run", action="store_true", help="print the command only")
    sglang.set_defaults(func=_serve_sglang)

    vllm = kinds.add_parser("vllm", help="vLLM's OpenAI-compatible server (its CPU build, from .venv-vllm: make vllm) "
                                         "with prefix caching and cached-token usage; use it with --engine openai")
    vllm.add_argument("--model", metavar="PATH",
                      help="a local Hugging Face folder or .gguf file (default: the embedded model's verified copy, "
                           "SmolLM2-135M-Instruct)")
    vllm.add_argument("--port", type=int, default=8000)
    vllm.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve a team (no authentication!)")
    vllm.add_argument("--max-model-len", type=int, default=8192, metavar="TOKENS",
                      help="context window vLLM serves (default 8192, SmolLM2's own)")
    vllm.add_argument("--dry-run", action="store_true", help="print the command only")
    vllm.set_defaults(func=_serve_vllm)

    router = kinds.add_parser("router", help="N embedded workers behind sglang-router on this box (the scale-out path)")
    router.add_argument("--workers", type=int, default=2, help="embedded workers to start (each loads the model)")
    router.add_argument("--port", type=int, default=30000, help="the router's port")
    router.add_argument("--policy", default="cache_aware", help="cache_aware (prefix-aware), round_robin, random, power_of_two")
    router.add_argument("--disable-radix-cache", action="store_true", help="workers without a prefix cache (A/B runs)")
    router.set_defaults(func=_serve_router)


def register_bench(benches) -> None:
    for name, help_text, run in (
        ("prefix-cache", "tree workload with the radix cache on vs off", _bench_prefix_cache),
        ("engine", "embedded engine: start-up, prefill and decode tokens/s (1 stream, 8 branches)", _bench_engine),
        ("llamacpp", "the engine workloads on llama.cpp (llama-cpp-python, optional) side by side with the "
                     "embedded engine", _bench_llamacpp),
        ("decode-kernels", "quantised decode with each candidate kernel (4-bit, int8 weights; ragscale vs torch "
                           "attention), side by side", _bench_kernels),
        ("serve", "embedded server, 8 concurrent requests: merged vs one at a time", _bench_serve),
        ("serve-kv", "serve embedded under issue #24's KV requests: 2,000 tokens x n = 16; 6,000 + 255 x 1 tokens",
         _bench_serve_kv),
        ("router", "the same sweep through sglang-router over 2 workers: cache_aware vs round_robin", _bench_router),
        ("serve-load", "embedded server under 32 concurrent clients: resets, latency, memory", _bench_serve_load),
        ("serve-memory", "resident memory of serve embedded: ready, after 24 long requests, after /flush_cache "
                         "(default and a small cache budget)", _bench_serve_memory),
        ("vllm", "embedded engine vs vLLM (CPU build, same model) in one run: the prefix-cache tree workload, "
                 "single-stream and 8-branch decode, as ratios", _bench_vllm),
        ("serve-slow-clients", "embedded server while 256 clients dribble request heads: /health and /generate "
                               "of a well-behaved client", _bench_serve_slow_clients),
    ):
        bench = benches.add_parser(name, help=help_text)
        bench.add_argument("--json", action="store_true", help="print only the JSON result")
        if name == "vllm":
            bench.add_argument("--url", help="a vLLM already running with `ragscale serve vllm` (its /v1 URL); "
                                             "without it the benchmark starts one and stops it")
        bench.set_defaults(func=run)


def _serve_embedded(args) -> int:
    from ragscale.engines.embedded import EmbeddedEngine
    from ragscale.engines.server import make_server

    if not 0 <= args.port < 65536:
        raise UserError(f"--port must be in 0..65535 (0: any free port), got {args.port}")
    if args.max_total_tokens is not None and args.max_total_tokens < 0:
        raise UserError(f"--max-total-tokens must be >= 0, got {args.max_total_tokens}")
    options = {"prefix_cache": not args.disable_radix_cache, "model": args.model}
    if args.max_total_tokens is not None:
        options["cache_tokens"] = args.max_total_tokens
    if args.kv_budget_tokens is not None:
        if args.kv_budget_tokens < 1:
            raise UserError(f"--kv-budget-tokens must be >= 1, got {args.kv_budget_tokens}")
        options["kv_tokens"] = args.kv_budget_tokens
    try:
        # The model loads in the background; /health answers 503 until it is ready, as SGLang's does.
        server = make_server(lambda: EmbeddedEngine(**options), args.host, args.port,
                             launch_command=shlex.join(sys.argv))
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    host, port = server.server_address[:2]
    print(f"serving the embedded engine (SGLang-compatible API) on http://{host}:{port}", flush=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    service = server.service
    try:
        while not service.ready.wait(0.2):
            if service.load_error:
                raise UserError(f"the model did not load: {service.load_error}")
        print(f"ready: {service.engine.info.model}", flush=True)
        thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0


def _serve_router(args) -> int:
    from ragscale.engines.router import LocalCluster, embedded_worker_command

    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    cluster = LocalCluster(workers=args.workers, policy=args.policy, router_port=args.port,
                           worker_command=lambda: embedded_worker_command(disable_radix_cache=args.disable_radix_cache))
    print(f"starting {args.workers} embedded workers and sglang-router ({args.policy}) ...", flush=True)
    with cluster:
        print(f"workers: {', '.join(cluster.worker_urls)}", flush=True)
        print(f"router: {cluster.url}  (use --engine sglang --url {cluster.url})", flush=True)
        try:
            while cluster.router.poll() is None:
                time.sleep(1)
            raise UserError("sglang-router exited: " + " ".join(cluster.router_log[-3:])[:300])
        except KeyboardInterrupt:
            pass
    return 0


def _serve_sglang(args) -> int:
    from ragscale.engines.server import sglang_command

    if args.context_length is not None and args.context_length < 1:
        raise UserError("--context-length must be a positive number of tokens")
    if args.workers > 1:
        from ragscale.engines.router import gpu_router_plan

        print(f"# {args.workers} SGLang workers, one GPU each, behind sglang-router (prefix-aware routing):")
        for line in gpu_router_plan(args.model_path, args.workers, base_port=args.port + 1, host=args.host,
                                    router_port=args.port, context_length=args.context_length, python=sys.executable):
            print(line)
        print(f"# or, one command: {sys.executable} -m sglang_router.launch_server --model-path {args.model_path} "
              f"--dp-size {args.workers}")
        return 0
    cmd = sglang_command(args.model_path, port=args.port, host=args.host, dp_size=args.dp_size, python=sys.executable,
                         context_length=args.context_length)
    printable = shlex.join(cmd)
    if args.dry_run:
        print(printable)
        return 0
    if not sglang_runnable():
        print(printable)
        raise UserError("SGLang's server cannot run in this environment (it needs the sglang package with its "
                        "GPU stack); run the command above on a GPU host, then point ragscale at http://HOST:PORT")
    print(f"running: {printable}", flush=True)
    return subprocess.call(cmd, env=os.environ.copy())


def _serve_vllm(args) -> int:
    from ragscale.engines.vllm_server import require_vllm_python, served_model, vllm_command, vllm_env

    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    if args.max_model_len < 16:
        raise UserError(f"--max-model-len must be at least 16 tokens, got {args.max_model_len}")
    python = require_vllm_python()
    folder, name = served_model(args.model)
    cmd = vllm_command(folder, name, port=args.port, host=args.host, max_model_len=args.max_model_len, python=python)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    print(f"starting vLLM on http://{args.host}:{args.port}/v1 (ready in ~2 min; a first start compiles); "
          f"then: --engine openai --url http://{args.host}:{args.port}/v1", flush=True)
    try:
        return subprocess.call(cmd, env=vllm_env())
    except KeyboardInterrupt:
        return 0


def sglang_runnable() -> bool:
    """sglang importable with its serving stack (the contract-test install has the package alone)."""
    return all(importlib.util.find_spec(name) is not None for name in ("sglang", "sgl_kernel", "zmq"))


def _bench_router(args) -> int:
    from ragscale.engines.bench_router import router_benchmark

    return _run_bench(router_benchmark, 2, "router", args.json)


def _bench_serve_load(args) -> int:
    from ragscale.engines.bench_router import serve_load_benchmark

    return _run_bench(serve_load_benchmark, 2, "serve-load", args.json)


def _bench_serve_slow_clients(args) -> int:
    from ragscale.engines.bench_clients import slow_clients_benchmark

    return _run_bench(slow_clients_benchmark, 2, "serve-slow-clients", args.json)


def _bench_prefix_cache(args) -> int:
    from ragscale.engines.bench import prefix_cache_benchmark

    return _run_bench(prefix_cache_benchmark, 8, "prefix-cache", args.json)


def _bench_engine(args) -> int:
    from ragscale.engines.bench import engine_benchmark

    return _run_bench(engine_benchmark, 5, "engine", args.json)


def _bench_kernels(args) -> int:
    from ragscale.engines.bench import decode_kernels_benchmark

    return _run_bench(decode_kernels_benchmark, 3, "decode-kernels", args.json)


def _bench_llamacpp(args) -> int:
    from ragscale.engines.bench import llamacpp_benchmark, llamacpp_missing

    if llamacpp_missing():
        print("skipped: llama-cpp-python is not installed (optional: make compare-engines, ~16 min to compile)")
        return 0
    return _run_bench(llamacpp_benchmark, 5, "llamacpp", args.json)


def _bench_serve_kv(args) -> int:
    from ragscale.engines.bench import server_kv_benchmark

    return _run_bench(server_kv_benchmark, 2, "serve-kv", args.json)


def _bench_serve_memory(args) -> int:
    from ragscale.engines.bench import server_memory_benchmark

    return _run_bench(server_memory_benchmark, 2, "serve-memory", args.json)


def _bench_vllm(args) -> int:
    from functools import partial

    from ragscale.engines.bench_vllm import vllm_benchmark
    from ragscale.engines.vllm_server import require_vllm_python

    if not args.url:
        require_vllm_python()
    return _run_bench(partial(vllm_benchmark, url=args.url), 4, "vllm", args.json)


def _bench_serve(args) -> int:
    from ragscale.engines.bench import serving_benchmark

    return _run_bench(serving_benchmark, 2, "serve", args.json)


def _run_bench(benchmark, steps: int, name: str, quiet: bool) -> int:
    """Run ``benchmark(progress)`` under a progress bar; print its JSON."""
    from tqdm import tqdm

    bar = tqdm(total=steps, disable=quiet, desc=name)

    def progress(done, total, message):
        bar.set_postfix_str(message)
        bar.update(1)

    result = benchmark(progress)
    bar.close()
    print(json.dumps(result, indent=None if quiet else 2))
    return 0
