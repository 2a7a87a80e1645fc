"""The one interface every experiment runs on.

Two implementations: ``EmbeddedEngine`` (SmolLM2 on CPU with a radix prefix cache, in-process)
and ``SGLangEngine`` (HTTP client of an SGLang server or sglang-router). Strategies and tree
search only see this file, so the same experiment runs on a laptop and on a GPU server.

Conventions, chosen to match SGLang's native API so that numbers mean the same on both:
- a prompt is text or a list of token ids; continuing a branch passes prompt ids + output ids
  so that the prefix cache matches exactly (re-tokenising text can differ at the join);
- ``generate`` returns ``len(prompts) * params.n`` results, prompt-major
  (prompt 0's n samples, then prompt 1's, ...);
- ``usage.cached_tokens`` is the prefix-cache hit of that request, at most prompt_tokens - 1.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Protocol, Sequence, Union

Prompt = Union[str, list[int]]


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    return_logprobs: bool = False  # per output token
    ignore_eos: bool = False  # SGLang's ignore_eos: decode max_new_tokens even past end-of-turn (benchmarks)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.n < 1:
            raise ValueError("n must be >= 1")
        object.__setattr__(self, "stop", tuple(self.stop))


def sample_seed(seed: int | None, sample: int) -> int | None:
    """The sampler seed of sample ``sample`` of a request with ``seed`` (same rule on every engine),
    so sample i draws the same stream whatever else is batched with it."""
    return None if seed is None else (seed * 1_000_003 + sample) % (2**63)


@dataclass
class Usage:
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int

    @property
    def uncached_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens


@dataclass
class Generation:
    text: str
    output_ids: list[int]
    finish_reason: str  # "stop" (stop string or EOS) or "length"
    usage: Usage
    prompt_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None  # one per output token when asked

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EngineInfo:
    kind: str  # "embedded", "sglang" or "openai"
    model: str
    context_window: int
    url: str | None = None


@dataclass
class CacheStats:
    """Run-level counters since the engine started (or since ``reset_stats``)."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    generation_seconds: float = 0.0
    cache_tokens_held: int = 0  # tokens of KV the prefix cache holds now (embedded only)
    cache_capacity_tokens: int | None = None

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.generation_seconds if self.generation_seconds else 0.0


class Tokenizer(Protocol):
    """The subset of a Hugging Face tokenizer the project relies on."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...

    def apply_chat_template(self, conversation, tokenize: bool = ..., add_generation_prompt: bool = ...): ...


class Engine(ABC):
    """Batched generation, continuation scoring, cache control and exact token counts."""

    info: EngineInfo

    @property
    @abstractmethod
    def tokenizer(self) -> Tokenizer: ...

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]:
        """Generate for every prompt; ``len(prompts) * params.n`` results, prompt-major."""

    @abstractmethod
    def score(self, prompt: Prompt, continuations: Sequence[Prompt]) -> list[list[float]]:
        """Log-probability of each token of each continuation, given the prompt (verifiers use it)."""

    @abstractmethod
    def flush_cache(self) -> None: ...

    @abstractmethod
    def stats(self) -> CacheStats: ...

    def reset_stats(self) -> None:
        """Start run-level counters afresh (the cache itself is kept)."""

    def close(self) -> None:
        """Release connections or memory."""

    # Helpers shared by both engines.
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def chat_prompt(self, user: str, system: str | None = None, assistant_prefix: str = "") -> str:
        """The model's chat template around one user turn, ready for the assistant to continue.

        ``assistant_prefix`` forces the start of the reply (IterDRAG's ``Follow up:`` etc.).
        """
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + assistant_prefix
