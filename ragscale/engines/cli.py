"""Engine commands: ``ragscale serve embedded|sglang`` and ``ragscale bench prefix-cache|engine|serve``."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys

from ragscale.errors import UserError


def register(commands) -> None:
    serve = commands.add_parser("serve", help="serve an engine over SGLang's native HTTP API")
    kinds = serve.add_subparsers(dest="serve_kind", metavar="ENGINE", required=True)

    embedded = kinds.add_parser("embedded", help="the embedded engine (SmolLM2 or --model), SGLang-compatible JSON")
    embedded.add_argument("--port", type=int, default=30000)
    embedded.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve a team (no authentication!)")
    embedded.add_argument("--disable-radix-cache", action="store_true", help="turn the prefix cache off (A/B runs)")
    embedded.add_argument("--model", metavar="PATH",
                          help="a local Hugging Face folder or .gguf file, Llama architecture (default: SmolLM2-135M-Instruct)")
    embedded.set_defaults(func=_serve_embedded)

    sglang = kinds.add_parser("sglang", help="run sglang.launch_server with the flags ragscale needs")
    sglang.add_argument("--model-path", required=True)
    sglang.add_argument("--port", type=int, default=30000)
    sglang.add_argument("--host", default="127.0.0.1")
    sglang.add_argument("--dp-size", type=int, default=1, help="data-parallel replicas (put sglang-router in front)")
    sglang.add_argument("--dry-run", action="store_true", help="print the command only")
    sglang.set_defaults(func=_serve_sglang)


def register_bench(benches) -> None:
    bench = benches.add_parser("prefix-cache", help="tree workload with the radix cache on vs off")
    bench.add_argument("--json", action="store_true", help="print only the JSON result")
    bench.set_defaults(func=_bench_prefix_cache)
    engine = benches.add_parser("engine", help="embedded engine: start-up, prefill and decode tokens/s (1 stream, 8 branches)")
    engine.add_argument("--json", action="store_true", help="print only the JSON result")
    engine.set_defaults(func=_bench_engine)
    llamacpp = benches.add_parser("llamacpp", help="the engine workloads on llama.cpp (llama-cpp-python, optional) "
                                  "side by side with the embedded engine")
    llamacpp.add_argument("--json", action="store_true", help="print only the JSON result")
    llamacpp.set_defaults(func=_bench_llamacpp)
    serve = benches.add_parser("serve", help="embedded server, 8 concurrent requests: merged vs one at a time")
    serve.add_argument("--json", action="store_true", help="print only the JSON result")
    serve.set_defaults(func=_bench_serve)


def _serve_embedded(args) -> int:
    from ragscale.engines.embedded import EmbeddedEngine
    from ragscale.engines.server import make_server

    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    engine = EmbeddedEngine(prefix_cache=not args.disable_radix_cache, model=args.model)
    try:
        server = make_server(engine, args.host, args.port)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    print(f"serving {engine.info.model} (SGLang-compatible API) on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _serve_sglang(args) -> int:
    from ragscale.engines.server import sglang_command

    cmd = sglang_command(args.model_path, port=args.port, host=args.host, dp_size=args.dp_size, python=sys.executable)
    printable = shlex.join(cmd)
    if args.dry_run:
        print(printable)
        return 0
    if importlib.util.find_spec("sglang") is None:
        print(printable)
        raise UserError("sglang is not installed in this environment; run the command above on a GPU host "
                        "where `pip install sglang` works, then point ragscale at http://HOST:PORT")
    print(f"running: {printable}", flush=True)
    return subprocess.call(cmd, env=os.environ.copy())


def _bench_prefix_cache(args) -> int:
    from ragscale.engines.bench import prefix_cache_benchmark

    return _run_bench(prefix_cache_benchmark, 8, "prefix-cache", args.json)


def _bench_engine(args) -> int:
    from ragscale.engines.bench import engine_benchmark

    return _run_bench(engine_benchmark, 5, "engine", args.json)


def _bench_llamacpp(args) -> int:
    from ragscale.engines.bench import llamacpp_benchmark, llamacpp_missing

    if llamacpp_missing():
        print("skipped: llama-cpp-python is not installed (optional: pip install llama-cpp-python, ~6 min to compile)")
        return 0
    return _run_bench(llamacpp_benchmark, 4, "llamacpp", args.json)


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
