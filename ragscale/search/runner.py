"""Run one tree search: expand, verify, select, account for KV — depth by depth.

    result = run_search(engine, task, question, config, verifier, embed)

At every depth the policy hands each candidate a number of children (REBASE width
bookkeeping: they add up to the width not yet used by finished leaves); the task expands the
whole frontier at once; the verifier scores every new step; finished steps become leaves. After
each selection the retained KV is recorded: the unique tokens on the paths from the root to
the kept nodes. The answer is the score-weighted majority vote over finished leaves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ragscale.datasets.types import Question
from ragscale.engines.base import Engine
from ragscale.search.config import ETS_ONLY_SETTINGS, SearchConfig
from ragscale.search.kv import KVTracker, kv_two_ways
from ragscale.search.policies import get_policy
from ragscale.search.policies.base import (Embed, apply_allocation, rebase_shares, remaining_width, score_of,
                                          weighted_vote)
from ragscale.search.tasks import Branch, Task
from ragscale.search.tree import Tree
from ragscale.search.verifiers import Verifier

Progress = Callable[[int, int, str], None]


@dataclass
class StepReport:
    """What ``on_step`` receives after each depth: enough to redraw the tree live."""

    depth: int
    tree: Tree
    kv_tokens: int  # retained KV after this depth's selection
    kept: int
    pruned: int
    finished: int


@dataclass
class SearchResult:
    qid: str
    question: str
    golds: list[str]
    task: str
    verifier: str
    config: dict[str, Any]
    answer: str | None
    metrics: dict[str, float]
    votes: dict[str, float]
    tree: Tree
    kv_per_step: list[int]  # retained KV tokens after each depth's selection
    kv_peak: int
    kv_mean: float
    kv: dict  # retained KV (with the prompt) and search KV (without it): ``kv.kv_two_ways``
    requests: list[dict]  # every generation request: phase, depth, prompt/cached/completion tokens
    verifier_calls: int
    wall_seconds: float
    engine_stats: dict[str, float] = field(default_factory=dict)  # the engine's own counters, this run
    selections: list[dict] = field(default_factory=list)  # per depth: ``selection_record``

    @property
    def correct(self) -> bool:
        return bool(self.metrics.get("correct"))

    @property
    def tokens_generated(self) -> int:
        return sum(r["completion_tokens"] for r in self.requests)

    @property
    def prompt_tokens(self) -> int:
        return sum(r["prompt_tokens"] for r in self.requests)

    @property
    def cached_tokens(self) -> int:
        return sum(r["cached_tokens"] for r in self.requests)

    @property
    def model_calls(self) -> int:
        """Generation requests (one per sampled sequence, as SGLang counts them) + verifier calls."""
        return len(self.requests) + self.verifier_calls

    def summary(self) -> dict[str, Any]:
        """Everything but the tree: one flat-ish record for the results store and the CLI."""
        return {
            "qid": self.qid, "question": self.question, "golds": self.golds, "task": self.task,
            "verifier": self.verifier, "policy": self.config.get("policy"), "width": self.config.get("width"),
            "seed": self.config.get("seed"), "config": self.config,
            "answer": self.answer, "correct": self.correct, "metrics": self.metrics, "votes": self.votes,
            "kv": self.kv, "selections": self.selections,
            "prompt_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens,
            "uncached_tokens": self.prompt_tokens - self.cached_tokens,
            "tokens_generated": self.tokens_generated, "generation_requests": len(self.requests),
            "verifier_calls": self.verifier_calls, "model_calls": self.model_calls,
            "wall_seconds": self.wall_seconds, "engine_stats": self.engine_stats,
            "nodes": len(self.tree), "finished_leaves": len(self.tree.finished_leaves()),
            "depth": self.tree.max_depth,
        }

    def to_dict(self, with_requests: bool = True) -> dict[str, Any]:
        out = self.summary()
        if with_requests:
            out["requests"] = self.requests
        out["tree"] = self.tree.to_dict()
        return out


def _engine_counters(engine: Engine) -> dict[str, float]:
    s = engine.stats()
    return {"requests": s.requests, "prompt_tokens": s.prompt_tokens, "cached_tokens": s.cached_tokens,
            "generated_tokens": s.generated_tokens, "generation_seconds": s.generation_seconds}


def selection_record(tree: Tree, candidates: list[int], left: int, allocation: dict[int, int],
                     config: SearchConfig) -> dict:
    """One selection step's diagnostics: N candidates, K semantic clusters (ETS; None otherwise),
    how many were kept, and how many REBASE would have funded that the policy pruned."""
    labels = {tree[i].cluster for i in candidates if tree[i].cluster is not None}
    funded = rebase_shares([score_of(tree, i) for i in candidates], left, config.temperature)
    return {"candidates": len(candidates), "clusters": len(labels) if labels else None,
            "kept": sum(1 for n in allocation.values() if n > 0),
            "funded_pruned": sum(1 for i, f in zip(candidates, funded) if f > 0 and allocation[i] == 0)}


def _branch(tree: Tree, node_id: int) -> Branch:
    path = tree.path(node_id)
    doc_ids = tuple(d for n in path for d in n.meta.get("doc_ids", []))
    return Branch(node_id=node_id, prompt_ids=tree.prefix_token_ids(node_id), depth=path[-1].depth,
                  doc_ids=doc_ids, steps=tuple(n.text for n in path[1:]))


def run_search(
    engine: Engine,
    task: Task,
    question: Question,
    config: SearchConfig,
    verifier: Verifier,
    embed: Embed | None = None,
    progress: Progress | None = None,
    on_step: Callable[[StepReport], None] | None = None,
) -> SearchResult:
    started = time.perf_counter()
    before = _engine_counters(engine)
    select = get_policy(config.policy)

    tree = Tree()
    root_ids, root_text, root_meta = task.root(engine, question)
    tree.add_root(root_ids, root_text, meta=root_meta)
    kv = KVTracker()
    requests: list[dict] = []
    verifier_calls = 0
    selections: list[dict] = []

    candidates = [tree.root.id]
    for depth in range(config.max_depth):
        left = remaining_width(tree, config.width)
        if not candidates or left <= 0:
            break
        if progress:
            progress(depth, config.max_depth, f"depth {depth + 1}/{config.max_depth}: "
                                              f"{len(candidates)} candidates, width left {left}")
        allocation = select(tree, candidates, left, config, embed)
        apply_allocation(tree, allocation)
        selections.append(selection_record(tree, candidates, left, allocation, config))
        kept = [(i, n) for i, n in allocation.items() if n > 0]
        kv_now = kv.record(tree, [i for i, _ in kept])

        branches = [_branch(tree, i) for i, _ in kept]
        new_steps = task.expand(engine, question, branches, [n for _, n in kept], config)
        flat = [(b, s) for b, steps in zip(branches, new_steps) for s in steps]
        scores = verifier.score([task.trajectory(question, b, s) for b, s in flat]) if flat else []
        verifier_calls += len(flat)
        for (branch, step), score in zip(flat, scores):
            tree.add_child(branch.node_id, step.text, step.token_ids, score=score, finished=step.finished,
                           answer=step.answer, cached_tokens=step.cached_tokens, meta=step.meta())
            requests.extend(step.requests)
        candidates = [n.id for n in tree.frontier()]

        if on_step:
            on_step(StepReport(depth=depth, tree=tree, kv_tokens=kv_now, kept=len(kept),
                               pruned=sum(1 for n in allocation.values() if n == 0),
                               finished=len(tree.finished_leaves())))

    # Whatever is still active when the depth or width runs out was never continued.
    for node in tree.frontier():
        tree.set_status(node.id, "pruned")
    vote = weighted_vote(tree, normalize=task.normalize)
    answer = vote.answer
    if answer is not None:  # report the answer as one leaf wrote it, not its normalised key
        answer = next((n.answer for n in tree.finished_leaves()
                       if n.answer is not None and task.normalize(n.answer) == vote.answer), answer)
    metrics = task.grade(question, answer)
    after = _engine_counters(engine)
    if progress:
        progress(config.max_depth, config.max_depth, f"done: {answer!r}")
    return SearchResult(
        qid=question.qid, question=question.question, golds=list(question.answers), task=task.name,
        verifier=getattr(verifier, "name", type(verifier).__name__), config=config.to_dict(), answer=answer,
        metrics=metrics, votes=vote.votes, tree=tree, kv_per_step=list(kv.steps), kv_peak=kv.peak, kv_mean=kv.mean,
        kv=kv_two_ways(kv.steps, tree.root.num_tokens), selections=selections, requests=requests, verifier_calls=verifier_calls, wall_seconds=time.perf_counter() - started,
        engine_stats={k: after[k] - before[k] for k in after},
    )


# --------------------------------------------------------------------------------------------
# Sweeps: policies x widths x seeds over a question set, into the results store
# --------------------------------------------------------------------------------------------

SEARCH_KIND = "search"


def sweep_key(dataset: str, model: str, task: str, verifier: str, qid: str, config: SearchConfig) -> str:
    """One record per question x policy x width x seed; the other settings the policy reads are in
    the key too, so a rerun with different settings never mistakes old records for its own. ETS's
    own settings only in ETS's key: one REBASE run serves every ETS setting."""
    c = config
    extra = f"d={c.max_depth}|L={c.step_max_tokens}|st={c.sampling_temperature}|T={c.temperature}"
    if c.policy == "ets":
        extra += "".join(f"|{_ETS_KEY_NAMES[name]}={getattr(c, name)}" for name in ETS_ONLY_SETTINGS)
    return f"{dataset}|{model}|{task}|{verifier}|{c.policy}|w={c.width}|seed={c.seed}|{extra}|{qid}"


# How ETS's own settings are spelled in a key (stores written since 2026-11 use these names)
_ETS_KEY_NAMES = {"lambda_b": "lb", "lambda_d": "ld", "cluster_threshold": "th", "kv_cost": "kv"}
_ETS_KEY_FIELDS = tuple(f"{_ETS_KEY_NAMES[name]}=" for name in ETS_ONLY_SETTINGS)


def canonical_key(key: str) -> str:
    """A stored key as ``sweep_key`` writes it today: older stores wrote ETS's settings into every
    policy's key, which a REBASE record does not depend on."""
    parts = key.split("|")
    if len(parts) > 5 and parts[4] != "ets":
        parts = [p for p in parts[:-1] if not p.startswith(_ETS_KEY_FIELDS)] + parts[-1:]  # the last is the qid
    return "|".join(parts)


@dataclass
class SweepSummary:
    runs_total: int
    runs_written: int = 0
    runs_already_done: int = 0
    seconds: float = 0.0


def run_search_sweep(
    engine: Engine,
    task: Task,
    questions: list[Question],
    base: SearchConfig,
    policies: list[str],
    widths: list[int],
    seeds: list[int],
    verifier: Verifier,
    store,
    embed: Embed | None = None,
    dataset: str = "",
    progress: Progress | None = None,
) -> SweepSummary:
    """Run every (policy, width, seed, question) not yet in ``store``; each record is written as
    soon as its search finishes, so an interrupted sweep resumes where it stopped."""
    started = time.perf_counter()
    say = progress or (lambda done, total, message: None)
    model = engine.info.model
    # Question by question: a sweep stopped part-way leaves its first problems complete in every
    # cell (policy x width), so what it has is still a matched comparison.
    grid = [(base.replace(policy=p, width=w, seed=s), q) for q in questions for p in policies for w in widths for s in seeds]
    summary = SweepSummary(runs_total=len(grid))
    done = {canonical_key(k) for k in store.done_keys(SEARCH_KIND)}
    todo = [(c, q) for c, q in grid if sweep_key(dataset, model, task.name, verifier.name, q.qid, c) not in done]
    summary.runs_already_done = len(grid) - len(todo)
    finished = summary.runs_already_done
    say(finished, len(grid), f"{finished} of {len(grid)} searches already done")
    for config, question in todo:
        label = f"{config.policy} w={config.width} seed={config.seed} {question.qid}"
        say(finished, len(grid), label)
        result = run_search(engine, task, question, config, verifier, embed)
        record = {**result.summary(), "dataset": dataset, "model": model, "engine": engine.info.kind,
                  "tree": result.tree.to_dict()}
        if store.add(SEARCH_KIND, sweep_key(dataset, model, task.name, verifier.name, question.qid, config), record):
            summary.runs_written += 1
        finished += 1
        say(finished, len(grid), f"{label}: {'correct' if result.correct else 'wrong'}, mean KV {result.kv_mean:,.0f} "
                                 f"retained, {result.kv['search_mean']:,.0f} search")
    summary.seconds = time.perf_counter() - started
    return summary
