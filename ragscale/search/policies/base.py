"""What every selection policy shares: the interface, REBASE width bookkeeping, the final vote.

A policy is one function

    select(tree, candidates, remaining_width, config, embed=None) -> {candidate id: n children}

called once per depth with the unfinished nodes of the newest step. Width bookkeeping follows
REBASE (Hooper et al. 2025, section 2 of papers.md): the search owns ``width`` trajectories,
each finished node uses up one of them, and at every depth the children handed out add up to
the remaining width. A candidate that gets 0 children is pruned.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from ragscale.search.config import SearchConfig
from ragscale.search.tree import Tree

# embed(texts) -> (len(texts), dim) float array, rows L2-normalised.
Embed = Callable[[Sequence[str]], np.ndarray]


class SelectFn(Protocol):
    def __call__(
        self, tree: Tree, candidates: list[int], remaining_width: int, config: SearchConfig, embed: Embed | None = None
    ) -> dict[int, int]: ...


def remaining_width(tree: Tree, width: int) -> int:
    """Width left for the next depth: each finished node used one unit."""
    return width - len(tree.finished_leaves())


def score_of(tree: Tree, node_id: int) -> float:
    """A candidate's score for ranking; unscored nodes (the root) rank as 0."""
    score = tree[node_id].score
    return 0.0 if score is None else float(score)


def ranked(tree: Tree, candidates: Sequence[int]) -> list[int]:
    """Candidates by descending score; ties keep the lower id first, so results are reproducible."""
    return sorted(candidates, key=lambda i: (-score_of(tree, i), i))


def check_candidates(tree: Tree, candidates: Sequence[int], remaining: int) -> None:
    if len(set(candidates)) != len(candidates):
        raise ValueError("candidate ids must be distinct")
    for i in candidates:
        if tree[i].finished:
            raise ValueError(f"node {i} is finished and cannot be a candidate")
    if remaining < 0:
        raise ValueError(f"remaining width must be >= 0, got {remaining}")


def zero_allocation(tree: Tree, candidates: Sequence[int], remaining: int) -> dict[int, int]:
    """Check a policy call and return the allocation it starts from: every candidate pruned."""
    check_candidates(tree, candidates, remaining)
    return {i: 0 for i in candidates}


def rebase_shares(scores: Sequence[float], width: int, temperature: float) -> list[int]:
    """REBASE allocation: weights exp(score / T); in descending score order each node gets
    ceil(remaining * w_i / sum of the remaining weights). Returns counts in input order,
    summing to ``width`` (when there is at least one score)."""
    n = len(scores)
    out = [0] * n
    if n == 0 or width <= 0:
        return out
    s = np.asarray(scores, dtype=float)
    w = np.exp((s - s.max()) / temperature)  # shifting by the max changes no ratio, avoids overflow
    order = sorted(range(n), key=lambda i: (-s[i], i))
    left, weight_left = width, float(w.sum())
    for i in order:
        if left <= 0 or weight_left <= 0:
            break
        # the tolerance keeps rounding noise (4.0000000001) from taking a unit that is not due
        k = min(left, math.ceil(left * w[i] / weight_left - 1e-9))
        out[i] = k
        left -= k
        weight_left -= w[i]
    if left > 0:  # only when trailing weights underflow to 0: the best node takes the rest
        out[order[0]] += left
    return out


def equal_shares(ordered: Sequence[int], width: int) -> dict[int, int]:
    """``width`` split as evenly as possible over ``ordered``; the first ones get the remainder."""
    if not ordered:
        return {}
    base, extra = divmod(width, len(ordered))
    return {i: base + (1 if rank < extra else 0) for rank, i in enumerate(ordered)}


def apply_allocation(tree: Tree, allocation: dict[int, int]) -> None:
    """Mark candidates kept (> 0 children) or pruned (0 children)."""
    for node_id, n in allocation.items():
        tree.set_status(node_id, "kept" if n > 0 else "pruned")


# ---------------------------------------------------------------------- the final answer
@dataclass
class Vote:
    answer: str | None
    weight: float  # total score behind the answer
    votes: dict[str, float] = field(default_factory=dict)  # answer -> total score
    counts: dict[str, int] = field(default_factory=dict)  # answer -> number of leaves


def weighted_vote(tree: Tree, normalize: Callable[[str], str] | None = None) -> Vote:
    """Score-weighted majority vote over finished leaves with an answer.

    Each leaf votes for ``normalize(answer)`` with its score (negative or missing scores count
    0). When every weight is 0 the vote falls back to plain counts. Ties go to more leaves, then
    to the single best-scored leaf, then to the answer seen first.
    """
    normalize = normalize or (lambda a: a.strip())
    votes: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    best: dict[str, float] = {}
    first: dict[str, int] = {}
    for node in tree.finished_leaves():
        if node.answer is None:
            continue
        key = normalize(node.answer)
        weight = max(0.0, node.score or 0.0)
        votes[key] += weight
        counts[key] += 1
        best[key] = max(best.get(key, -math.inf), weight)
        first.setdefault(key, node.id)
    if not votes:
        return Vote(None, 0.0)
    use_counts = all(v <= 0 for v in votes.values())
    primary = counts if use_counts else votes
    answer = max(votes, key=lambda a: (primary[a], counts[a], best[a], -first[a]))
    return Vote(answer, votes[answer], dict(votes), dict(counts))
