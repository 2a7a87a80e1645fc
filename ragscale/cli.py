"""Command line: ``ragscale <command>`` or ``python -m ragscale <command>``.

Each concern owns its commands in its own ``cli.py`` and registers them here, so this file
stays a table of contents. Benchmarks live under one ``bench`` command and print JSON.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ragscale import __version__
from ragscale.commandline import use_help_formatter
from ragscale.errors import UserError

# Modules with ``register(commands)`` and/or ``register_bench(benches)``.
COMMAND_MODULES = (
    "ragscale.allocation.cli",
    "ragscale.engines.cli",
    "ragscale.retrieval.cli",
    "ragscale.rag.cli",
    "ragscale.search.cli",
    "ragscale.search.bench",
    "ragscale.explorer.cli",
    "ragscale.plots.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragscale",
        description="Inference-time scaling lab: DRAG/IterDRAG allocation and ETS tree search.",
    )
    parser.add_argument("--version", action="version", version=f"ragscale {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    bench = commands.add_parser("bench", help="benchmarks that print JSON")
    benches = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "register"):
            module.register(commands)
        if hasattr(module, "register_bench"):
            module.register_bench(benches)
    use_help_formatter(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"ragscale: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ragscale: interrupted", file=sys.stderr)
        return 130
