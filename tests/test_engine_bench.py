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


def test_a_named_command_imports_only_the_modules_up_to_its_own():
    """`bench prefix-cache` and `serve embedded` measure and hold the engine's memory, not pandas,
    pyarrow and scipy, which other commands' modules import (a fresh interpreter: the test
    process has them already)."""
    import subprocess
    import sys

    code = ("import sys\nfrom ragscale.cli import build_parser\n"
            "for argv in (['bench', 'prefix-cache', '--json'], ['serve', 'embedded', '--max-total-tokens', '64']):\n"
            "    print(build_parser(argv).parse_args(argv).func.__name__)\n"
            "print(sorted(m for m in ('pandas', 'pyarrow', 'scipy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["_bench_prefix_cache", "_serve_embedded", "[]"]


def test_the_whole_command_line_still_has_every_command():
    from ragscale.cli import COMMAND_MODULES, build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"bench", "serve", "allocate", "sweep", "search", "explorer-precompute"} <= set(commands)
    benches = commands["bench"]._subparsers._group_actions[0].choices
    assert {"prefix-cache", "engine", "allocation", "fidelity", "explorer"} <= set(benches)
    assert len(COMMAND_MODULES) == 8
    # a name that is no command falls back to the whole parser (argparse's own error lists them all)
    assert "allocate" in build_parser(["nosuch"])._subparsers._group_actions[0].choices


def test_serve_embedded_passes_its_cache_budget_to_the_engine(monkeypatch, capsys):
    """``--max-total-tokens`` (SGLang's name) is the prefix cache's budget; a negative one is one line."""
    from ragscale.cli import main
    from ragscale.engines import embedded, server

    built, factories = [], []
    monkeypatch.setattr(embedded, "EmbeddedEngine", lambda **options: built.append(options))

    def no_listening(factory, *args, **kwargs):
        factories.append(factory)
        raise OSError("stop here")

    monkeypatch.setattr(server, "make_server", no_listening)
    assert main(["serve", "embedded", "--port", "0", "--max-total-tokens", "2048"]) == 2
    factories[0]()
    assert built == [{"prefix_cache": True, "model": None, "cache_tokens": 2048}]
    assert main(["serve", "embedded", "--max-total-tokens", "-1"]) == 2
    assert "--max-total-tokens must be >= 0" in capsys.readouterr().err
