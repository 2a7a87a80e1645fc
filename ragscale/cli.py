"""Command line: ``ragscale <command>`` or ``python -m ragscale <command>``.

Each concern owns its commands in its own ``cli.py`` and registers them here, so this file
stays a table of contents. Benchmarks live under one ``bench`` command and print JSON.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ragscale import __version__
from ragscale.commandline import Parser, use_help_formatter
from ragscale.errors import UserError

# Modules with ``register(commands)`` and/or ``register_bench(benches)``. Light ones first: a
# command line that names its command imports modules only until that command is registered, so
# `serve embedded` or `bench prefix-cache` do not carry pandas, pyarrow and scipy (which the
# allocation, search and explorer modules import: +114 MB resident, measured) for nothing.
COMMAND_MODULES = (
    "ragscale.engines.cli",
    "ragscale.retrieval.cli",
    "ragscale.rag.cli",
    "ragscale.plots.cli",
    "ragscale.search.cli",
    "ragscale.search.bench",
    "ragscale.explorer.cli",
    "ragscale.allocation.cli",
)


def _named_command(argv: list[str] | None) -> tuple[str, ...] | None:
    """The command (and benchmark) ``argv`` names, e.g. ("bench", "prefix-cache"); None when it
    names none (help, a bare ``bench``): then every module is registered."""
    if not argv or argv[0].startswith("-"):
        return None
    if argv[0] == "bench":
        return ("bench", argv[1]) if len(argv) > 1 and not argv[1].startswith("-") else None
    return (argv[0],)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line, or (given ``argv``) enough of it to parse ``argv``."""
    parser = Parser(
        prog="ragscale",
        description="Inference-time scaling lab: DRAG/IterDRAG allocation and ETS tree search.",
    )
    parser.add_argument("--version", action="version", version=f"ragscale {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    bench = commands.add_parser("bench", help="benchmarks that print JSON")
    benches = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    wanted = _named_command(argv)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "register"):
            module.register(commands)
        if hasattr(module, "register_bench"):
            module.register_bench(benches)
        if wanted and wanted[0] in commands.choices and (len(wanted) == 1 or wanted[1] in benches.choices):
            break
    use_help_formatter(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"ragscale: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ragscale: interrupted", file=sys.stderr)
        return 130
