"""The engine flags every command that runs a model shares, and the one way to build from them.

Commands call ``add_engine_args(parser)`` and later ``engine_from_args(args)``, so a new engine
setting (a model path, a timeout) is added here once and reaches every command.
"""

from __future__ import annotations

import argparse

from ragscale.engines import ENGINE_KINDS, Engine, EngineSpec, make_engine
from ragscale.errors import UserError


def add_engine_args(parser: argparse.ArgumentParser, *, choose_engine: bool = True) -> None:
    """``--engine``/``--url``/``--timeout`` (unless ``choose_engine`` is False: embedded only) and
    the embedded engine's ``--threads``/``--dtype``."""
    if choose_engine:
        parser.add_argument("--engine", choices=ENGINE_KINDS, default="embedded",
                            help="embedded: the in-process CPU engine; sglang: an SGLang server or sglang-router")
        parser.add_argument("--url", help="SGLang server or router URL (with --engine sglang)")
        parser.add_argument("--timeout", type=float, metavar="SECONDS",
                            help="with --engine sglang: seconds to wait for one answer (default 600)")
    parser.add_argument("--threads", type=int, help="torch threads of the embedded engine (default: every core)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                        help="compute dtype of the embedded engine (default: bfloat16 where the CPU has it natively)")


def spec_from_args(args: argparse.Namespace, **overrides) -> EngineSpec:
    """The ``EngineSpec`` the flags describe; ``overrides`` (e.g. ``prefix_cache=False``) win."""
    fields = {"kind": getattr(args, "engine", "embedded"), "url": getattr(args, "url", None),
              "threads": getattr(args, "threads", None), "dtype": getattr(args, "dtype", None),
              "timeout": getattr(args, "timeout", None)}
    fields.update(overrides)
    try:
        return EngineSpec(**fields)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def engine_from_args(args: argparse.Namespace, **overrides) -> Engine:
    return make_engine(spec_from_args(args, **overrides))
