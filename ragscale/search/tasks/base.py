"""What every tree-search task shares: the node types, frontier sampling and the Task interface.

A task says what one step of the tree is (``expand``), what the verifier sees of it
(``trajectory``) and how a final answer is graded (``grade``). Tasks expand a whole frontier at
once and continue every branch from token ids (the root prompt plus every step's ids, exactly as
the engine returned them), so siblings share their prefix in the engine's radix cache and nothing
is re-tokenised at the joins.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from ragscale.datasets.types import Question
from ragscale.engines.base import Engine, Generation, SamplingParams
from ragscale.search.config import SearchConfig
from ragscale.search.verifiers import Trajectory


@dataclass
class Branch:
    """A node to continue: its id, the tokens the engine is sent, how deep it is."""

    node_id: int
    prompt_ids: list[int]
    depth: int  # steps taken so far (0 at the root)
    doc_ids: tuple[str, ...] = ()  # QA: documents already in the trajectory, oldest first
    steps: tuple[str, ...] = ()  # text of each step on the path


@dataclass
class Step:
    """One generated step: what the tree stores and what the verifier judges."""

    text: str
    token_ids: list[int]
    finished: bool
    answer: str | None = None
    sub_query: str | None = None
    intermediate: str | None = None
    doc_ids: list[str] = field(default_factory=list)  # retrieved in this step
    requests: list[dict] = field(default_factory=list)  # usage of each engine request behind it
    confidence: float | None = None  # the generator's own: geometric mean probability of the step's tokens

    @property
    def cached_tokens(self) -> int:
        return sum(r["cached_tokens"] for r in self.requests)

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"requests": self.requests}
        if self.sub_query is not None:
            meta["sub_query"] = self.sub_query
        if self.intermediate is not None:
            meta["intermediate"] = self.intermediate
        if self.doc_ids:
            meta["doc_ids"] = list(self.doc_ids)
        if self.confidence is not None:
            meta["confidence"] = self.confidence
        return meta


def step_confidence(gen: Generation) -> float | None:
    """exp(mean log-probability) of the generated tokens, under the model's unscaled distribution;
    None when the engine returned no log-probabilities."""
    if not gen.logprobs:
        return None
    return math.exp(sum(gen.logprobs) / len(gen.logprobs))


def usage_record(gen: Generation, phase: str, depth: int) -> dict:
    return {"phase": phase, "depth": depth, "prompt_tokens": gen.usage.prompt_tokens,
            "cached_tokens": gen.usage.cached_tokens, "completion_tokens": gen.usage.completion_tokens}


def sample_frontier(engine: Engine, prompts: Sequence[list[int]], counts: Sequence[int],
                    params: SamplingParams) -> list[list[Generation]]:
    """``counts[i]`` samples for ``prompts[i]``, prompt by prompt.

    Identical prompts (duplicate branches) are merged into one prompt with the summed count, so
    their samples are drawn as ``n`` distinct streams of one request instead of repeating one
    seeded stream: duplicates can diverge again. Prompts with the same number of samples then go
    into one ``engine.generate`` with that ``n``: with equal shares (beam, DVTS, best-of-N) the
    whole frontier is one request, unequal REBASE/ETS shares take one per distinct share.
    """
    merged: dict[tuple[int, ...], list[int]] = {}
    for i, count in enumerate(counts):
        if count > 0:
            merged.setdefault(tuple(prompts[i]), []).append(i)
    groups: dict[int, list[tuple[int, ...]]] = defaultdict(list)
    for key, members in merged.items():
        groups[sum(counts[i] for i in members)].append(key)
    out: list[list[Generation]] = [[] for _ in prompts]
    for n, keys in sorted(groups.items(), reverse=True):
        gens = engine.generate([list(key) for key in keys], replace(params, n=n))
        for j, key in enumerate(keys):
            samples = gens[j * n:(j + 1) * n]
            for i in merged[key]:  # hand the merged samples back, in order
                out[i], samples = samples[:counts[i]], samples[counts[i]:]
    return out


def step_ids(engine: Engine, gen: Generation, tail: str = "") -> list[int]:
    """Output ids trimmed to exactly ``gen.text`` (+ ``tail``), reusing the engine's own ids.

    Engines differ at the end of an output: the embedded engine keeps the stop string's tokens
    and the end-of-turn token in ``output_ids``, SGLang and the scripted engine do not. Trailing
    tokens beyond the returned text are dropped and the missing text (+ tail) is encoded, so the
    branch continues with the engine's ids everywhere but the last token or two.
    """
    ids = list(gen.output_ids)
    while ids and (engine.decode(ids[-1:]) == "" or not gen.text.startswith(engine.decode(ids))):
        ids.pop()
    missing = gen.text[len(engine.decode(ids)):] + tail
    return ids + (engine.encode(missing) if missing else [])


def ended_turn(engine: Engine, gen: Generation) -> bool:
    """Whether the model closed its reply (end-of-turn token) rather than hitting a stop string."""
    return bool(gen.output_ids) and gen.finish_reason == "stop" and engine.decode(gen.output_ids[-1:]) == ""


class Task(ABC):
    name: str
    default_max_depth: int
    default_step_tokens: int

    @abstractmethod
    def root(self, engine: Engine, question: Question) -> tuple[list[int], str, dict]:
        """(prompt ids, prompt text, meta) of the root node."""

    @abstractmethod
    def expand(self, engine: Engine, question: Question, branches: Sequence[Branch], counts: Sequence[int],
               config: SearchConfig) -> list[list[Step]]:
        """``counts[i]`` new steps below ``branches[i]`` (``[]`` where the count is 0)."""

    @abstractmethod
    def grade(self, question: Question, answer: str | None) -> dict[str, float]:
        """Metrics of a final answer; always includes ``correct`` (0 or 1)."""

    @abstractmethod
    def trajectory(self, question: Question, branch: Branch, step: Step) -> Trajectory:
        """What the verifier sees of ``step`` appended to ``branch``."""

    def normalize(self, answer: str) -> str:
        """The key under which answers count as the same vote (tasks override it)."""
        return answer.strip()


def step_params(config: SearchConfig, stop: tuple[str, ...], seed: int, temperature: float | None = None,
                logprobs: bool = False):
    return SamplingParams(max_new_tokens=config.step_max_tokens,
                          temperature=config.sampling_temperature if temperature is None else temperature,
                          stop=stop, seed=seed, return_logprobs=logprobs)
