"""Command line: ``ragscale <command>`` or ``python -m ragscale <command>``.

Each concern owns its commands in its own ``cli.py`` and registers them here, so this file
stays a table of contents. Benchmarks live under one ``bench`` command and print JSON.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ragscale import __version__
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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every command's help shows its defaults, but never "(default: None)", "(default: False)"
    for a switch, or a second default when the help text already names one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text.lower():
            return text
        return super()._get_help_string(action)


def _use_formatter(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = HelpFormatter
    for action in parser._actions:  # argparse keeps subcommands here; there is no public walk
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _use_formatter(sub)


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
    _use_formatter(parser)
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
