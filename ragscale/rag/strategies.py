"""Zero-shot QA, many-shot QA, RAG, DRAG and IterDRAG (Yue et al. 2025), with token accounting.

A configuration theta = (k, m, n). The four one-call strategies are one prompt layout with k or
m possibly zero, so a grid point is run once and labelled by what it is: k=0, m=0 is zero-shot
QA; k=0 is many-shot QA; m=0 is RAG; otherwise DRAG. IterDRAG makes up to 2n + 1 calls.

Accounting follows the paper: the effective context length of a question is the sum of the
prompt tokens of *every* call made for it (the engine's own count), output tokens excluded.
Beside it we keep the cached / uncached split the engine reports. A prompt that does not fit
the engine's context window is never sent or truncated: the question is recorded as skipped.

All questions of one configuration go to the engine together, step by step, so the embedded
engine batches them and an SGLang server gets them concurrently.
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, Sequence

from ragscale.datasets.types import Document, Question
from ragscale.engines.base import Engine, Generation, SamplingParams
from ragscale.rag import prompts
from ragscale.rag.metrics import score_answer

# The names ragscale.allocation uses too.
STRATEGIES = ("zero-shot", "many-shot", "rag", "drag", "iterdrag")
ALIASES = {"zeroshot": "zero-shot", "manyshot": "many-shot", "zero_shot": "zero-shot", "many_shot": "many-shot"}
# Which labelled runs belong to a strategy's curve: DRAG with m = 0 *is* RAG, etc.
STRATEGY_MEMBERS = {
    "zero-shot": ("zero-shot",),
    "many-shot": ("zero-shot", "many-shot"),
    "rag": ("zero-shot", "rag"),
    "drag": ("zero-shot", "many-shot", "rag", "drag"),
    "iterdrag": ("iterdrag",),
}


@dataclass(frozen=True, order=True)
class RunConfig:
    strategy: str
    k: int
    m: int
    n: int = 1

    @property
    def iterative(self) -> bool:
        return self.strategy == "iterdrag"

    @property
    def name(self) -> str:
        return f"{self.strategy} k={self.k} m={self.m} n={self.n}"


def one_call_label(k: int, m: int) -> str:
    if k == 0:
        return "zero-shot" if m == 0 else "many-shot"
    return "rag" if m == 0 else "drag"


def expand_grid(strategies: Iterable[str], ks: Sequence[int], ms: Sequence[int], ns: Sequence[int]) -> list[RunConfig]:
    """Every distinct configuration the requested strategies need, cheapest families first."""
    configs: set[RunConfig] = set()
    for strategy in strategies:
        strategy = ALIASES.get(strategy, strategy)
        if strategy not in STRATEGIES:
            from ragscale.errors import UserError

            raise UserError(f"--strategies: unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        if strategy == "iterdrag":
            configs.update(RunConfig("iterdrag", k, m, n) for k in ks for m in ms for n in ns)
            continue
        k_values = [0] if strategy in ("zero-shot", "many-shot") else ks
        m_values = [0] if strategy in ("zero-shot", "rag") else ms
        for k in k_values:
            for m in m_values:
                configs.add(RunConfig(one_call_label(k, m), k, m, 1))
    return sorted(configs, key=lambda c: (c.iterative, c.n, c.k, c.m))


class Retriever(Protocol):
    def search_batch(self, queries: Sequence[str], k: int) -> list[list[Document]]: ...


class Demonstrations(Protocol):
    def examples(self, k: int, m: int, iterative: bool, retrieve: Callable[[Sequence[str], int], list[list[Document]]],
                 hops: int | None = None) -> list[prompts.Example]: ...

    def sources(self, m: int, iterative: bool, hops: int | None = None) -> list[str]: ...


@dataclass
class Budget:
    """Output caps per call (tokens). Small models ramble; the answer is a short phrase."""

    answer_tokens: int = 20
    follow_up_tokens: int = 24
    intermediate_tokens: int = 32


def pack_calls(calls: list[dict]) -> str:
    """Calls (with their full prompts) compressed: IterDRAG re-sends near-identical prompts."""
    return base64.b64encode(zlib.compress(json.dumps(calls).encode("utf-8"), 6)).decode("ascii")


def unpack_calls(packed: str | None) -> list[dict]:
    if not packed:
        return []
    return json.loads(zlib.decompress(base64.b64decode(packed)).decode("utf-8"))


@dataclass
class _Work:
    """One question's state while its configuration runs."""

    question: Question
    documents: list[Document]
    queries: list[str]  # which query retrieved each document
    steps: list[tuple[str, str]]
    calls: list[dict]
    prediction: str | None = None
    skip_reason: str | None = None
    done: bool = False
    started: float = 0.0


class StrategyRunner:
    """Runs one configuration over a batch of questions and returns one result row per question."""

    def __init__(self, engine: Engine, retriever: Retriever | None, demonstrations: Demonstrations | None = None,
                 budget: Budget | None = None, retrieve_depth: int = 0, concurrency: int = 8):
        self.engine = engine
        self.retriever = retriever
        self.demonstrations = demonstrations
        self.budget = budget or Budget()
        self.retrieve_depth = retrieve_depth  # fetch this many once per query, slice for smaller k
        self.concurrency = concurrency
        self._retrieved: dict[str, list[Document]] = {}

    # ---- retrieval, memoised per query text ------------------------------------------------
    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Document]]:
        if k <= 0:
            return [[] for _ in queries]
        if self.retriever is None:
            from ragscale.errors import UserError

            raise UserError("k > 0 needs a retriever")
        depth = max(k, self.retrieve_depth)
        missing = list(dict.fromkeys(q for q in queries if len(self._retrieved.get(q, ())) < k))
        if missing:
            for query, docs in zip(missing, self.retriever.search_batch(missing, depth)):
                self._retrieved[query] = list(docs)
        return [self._retrieved[q][:k] for q in queries]

    # ---- engine calls ----------------------------------------------------------------------
    def _generate(self, prompt_texts: list[str], params: SamplingParams) -> list[Generation]:
        if self.engine.info.kind == "sglang" and len(prompt_texts) > 1:
            # One HTTP request per prompt, in flight together: the server batches them itself.
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                return [g[0] for g in pool.map(lambda p: self.engine.generate([p], params), prompt_texts)]
        return self.engine.generate(prompt_texts, params)

    def _call(self, works: list[_Work], build: Callable[[_Work], str], params: SamplingParams, role: str) -> list[tuple[_Work, Generation]]:
        """Render, check the context window, generate; a question that does not fit is skipped."""
        limit = self.engine.info.context_window
        ready, texts = [], []
        for work in works:
            text = build(work)
            size = self.engine.count_tokens(text)
            if size + params.max_new_tokens > limit:
                work.skip_reason = (
                    f"{role} prompt of {size} tokens + {params.max_new_tokens} new tokens exceeds the "
                    f"context window of {limit}"
                )
                work.done = True
                continue
            ready.append(work)
            texts.append(text)
        if not texts:
            return []
        outputs = self._generate(texts, params)
        for work, text, gen in zip(ready, texts, outputs):
            work.calls.append({
                "role": role, "prompt": text, "output": gen.text, "finish_reason": gen.finish_reason,
                "prompt_tokens": gen.usage.prompt_tokens, "cached_tokens": gen.usage.cached_tokens,
                "completion_tokens": gen.usage.completion_tokens,
            })
        return list(zip(ready, outputs))

    # ---- strategies ------------------------------------------------------------------------
    def run(self, config: RunConfig, questions: Sequence[Question]) -> list[dict]:
        started = time.perf_counter()
        works = []
        for q, docs in zip(questions, self.retrieve([q.question for q in questions], config.k)):
            works.append(_Work(q, list(docs), [q.question] * len(docs), [], [], started=started))
        # Hop-aware demonstrations: questions with as many hops share one set (and one cached
        # prefix); with m = 0 or a dataset without hop counts this is a single group.
        groups: dict = {}
        for work in works:
            groups.setdefault(work.question.hops if config.m else None, []).append(work)
        for hops, group in groups.items():
            demos = self._demos(config, hops)
            if config.iterative:
                self._run_iterdrag(config, group, demos)
            else:
                self._run_one_call(group, demos)
        seconds = (time.perf_counter() - started) / max(len(works), 1)
        return [self._row(config, work, seconds) for work in works]

    def _demos(self, config: RunConfig, hops: int | None = None) -> list[prompts.Example]:
        if config.m == 0:
            return []
        if self.demonstrations is None:
            from ragscale.errors import UserError

            raise UserError("m > 0 needs a demonstration pool")
        return self.demonstrations.examples(config.k, config.m, config.iterative, self.retrieve, hops)

    def _run_one_call(self, works: list[_Work], demos: list[prompts.Example]) -> None:
        tok = self.engine.tokenizer
        params = SamplingParams(max_new_tokens=self.budget.answer_tokens, stop=("\n",))
        build = lambda w: prompts.render_prompt(tok, demos, prompts.Example(w.question.question, w.documents), False,
                                                prompts.ANSWER)
        for work, gen in self._call(works, build, params, "answer"):
            work.prediction = prompts.clean_answer(gen.text)
            work.done = True

    def _run_iterdrag(self, config: RunConfig, works: list[_Work], demos: list[prompts.Example]) -> None:
        tok = self.engine.tokenizer

        def build(work: _Work, forced: str) -> str:
            test = prompts.Example(work.question.question, work.documents)
            return prompts.render_prompt(tok, demos, test, True, prompts.chain_text(work.steps) + forced)

        follow_params = SamplingParams(max_new_tokens=self.budget.follow_up_tokens,
                                       stop=("\n", prompts.INTERMEDIATE))
        inter_params = SamplingParams(max_new_tokens=self.budget.intermediate_tokens,
                                      stop=("\n" + prompts.FOLLOW_UP, "\n" + prompts.INTERMEDIATE, "<|im_end|>"))
        final_params = SamplingParams(max_new_tokens=self.budget.answer_tokens, stop=("\n",))

        # Forced starts end at the colon: the model writes the space itself (" Paris" is one BPE
        # token; a prompt ending in a bare space makes small models emit a newline instead).
        for _ in range(config.n):
            active = [w for w in works if not w.done]
            if not active:
                break
            # 1. the sub-query, forced to begin with "Follow up:"
            asked = self._call(active, lambda w: build(w, prompts.FOLLOW_UP), follow_params, "follow_up")
            sub_queries = [prompts.parse_follow_up(g.text, w.question.question) for w, g in asked]
            # 2. k more documents for it, appended to what the question already has
            for (work, _), sub_query, docs in zip(asked, sub_queries, self.retrieve(sub_queries, config.k)):
                seen = {d.doc_id for d in work.documents}
                for doc in docs:
                    if doc.doc_id not in seen:
                        work.documents.append(doc)
                        work.queries.append(sub_query)
                        seen.add(doc.doc_id)
                work.steps.append((sub_query, ""))
            # 3. the intermediate answer; the model may go on to "So the final answer is:"
            pending = [w for w, _ in asked if not w.done]

            def build_inter(work: _Work) -> str:
                sub_query = work.steps[-1][0]
                test = prompts.Example(work.question.question, work.documents)
                prefix = prompts.chain_text(work.steps[:-1]) + f"{prompts.FOLLOW_UP} {sub_query}\n{prompts.INTERMEDIATE}"
                return prompts.render_prompt(tok, demos, test, True, prefix)

            for work, gen in self._call(pending, build_inter, inter_params, "intermediate"):
                answer, final = prompts.parse_intermediate(gen.text)
                work.steps[-1] = (work.steps[-1][0], answer)
                if final is not None:  # the model chose to answer (if the cap cut the answer, use the step's)
                    work.prediction = final or answer
                    work.done = True
        # 4. questions still open after n iterations are forced to answer
        open_works = [w for w in works if not w.done]
        for work, gen in self._call(open_works, lambda w: build(w, prompts.FINAL), final_params, "final"):
            # A model that ends its turn right after the marker said nothing new: its last
            # intermediate answer is the answer it reached.
            last = next((a for _, a in reversed(work.steps) if a), "")
            work.prediction = prompts.clean_answer(gen.text) or last
            work.done = True

    def _row(self, config: RunConfig, work: _Work, seconds: float) -> dict:
        q = work.question
        calls = work.calls
        skipped = work.skip_reason is not None
        scores = score_answer(work.prediction or "", q.answers) if not skipped else {"em": None, "f1": None, "acc": None}
        prompt_tokens = sum(c["prompt_tokens"] for c in calls)
        cached = sum(c["cached_tokens"] for c in calls)
        return {
            "strategy": config.strategy, "k": config.k, "m": config.m, "n": config.n,
            "qid": q.qid, "question": q.question, "golds": list(q.answers), "hops": q.hops,
            "status": "skipped" if skipped else "ok", "skip_reason": work.skip_reason,
            "prediction": work.prediction, **scores,
            # the paper's effective context length: input tokens summed over every call
            "effective_length": prompt_tokens,
            "cached_tokens": cached, "uncached_tokens": prompt_tokens - cached,
            "completion_tokens": sum(c["completion_tokens"] for c in calls),
            "calls": len(calls), "iterations": len(work.steps),
            "steps": [list(s) for s in work.steps],
            "documents": [{"doc_id": d.doc_id, "title": d.title, "query": qq} for d, qq in zip(work.documents, work.queries)],
            "demo_sources": (self.demonstrations.sources(config.m, config.iterative, q.hops)
                             if (self.demonstrations and config.m) else []),
            "seconds": round(seconds, 4),
            "calls_z": pack_calls(calls),
        }
