"""Inference engines behind one interface (see ``base.py``).

``make_engine(EngineSpec())`` gives the embedded CPU engine; ``EngineSpec("sglang", url=...)``
an SGLang client. Heavy imports (torch, transformers) happen only when an engine is built.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from ragscale.engines.base import (
    CacheStats,
    Engine,
    EngineInfo,
    Generation,
    Prompt,
    SamplingParams,
    Usage,
)

ENGINE_KINDS = ("embedded", "sglang")


@dataclass(frozen=True)
class EngineSpec:
    """Which engine to use; hashable so apps can cache one engine per spec."""

    kind: str = "embedded"
    url: str | None = None  # sglang: one server or an sglang-router
    prefix_cache: bool = True  # embedded: False is like SGLang's --disable-radix-cache
    tokenizer: str | None = None  # sglang: local folder with the server model's tokenizer (see sglang_client)
    dtype: str | None = None  # embedded: "float32" | "bfloat16"; None picks by CPU (model_files.default_dtype)
    threads: int | None = None  # embedded: torch threads; None = RAGSCALE_THREADS or every core
    timeout: float | None = None  # sglang: seconds to wait for one answer; None = the client's default (600)

    def __post_init__(self) -> None:
        if self.kind not in ENGINE_KINDS:
            raise ValueError(f"unknown engine {self.kind!r}; choose one of {', '.join(ENGINE_KINDS)}")
        if self.kind == "sglang" and not self.url:
            raise ValueError("the sglang engine needs a URL, e.g. http://127.0.0.1:30000")
        if self.timeout is not None and not (isinstance(self.timeout, (int, float)) and 0 < self.timeout < float("inf")):
            raise ValueError(f"the timeout must be a positive number of seconds, got {self.timeout!r}")


# Engines built by make_engine and still alive, so status displays can show one without building it.
_live: dict[EngineSpec, weakref.ref] = {}


def make_engine(spec: EngineSpec) -> Engine:
    if spec.kind == "embedded":
        from ragscale.engines.embedded import EmbeddedEngine

        engine = EmbeddedEngine(prefix_cache=spec.prefix_cache, dtype=spec.dtype, threads=spec.threads)
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
        return f"embedded CPU · SmolLM2-135M-Instruct{cache}"
    return f"SGLang at {spec.url}"


__all__ = [
    "CacheStats", "Engine", "EngineInfo", "EngineSpec", "Generation", "Prompt", "SamplingParams",
    "Usage", "describe_spec", "live_engine", "make_engine", "ENGINE_KINDS",
]
