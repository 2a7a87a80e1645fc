"""Exact KV accounting of a search (Hooper et al. 2025 measure KV *size*, which sets throughput).

After each selection step the retained KV is the number of unique tokens on the paths from the
root (the prompt included) to the kept nodes: a prefix shared by many kept nodes is stored
once, as in a radix cache, and pruned nodes hold nothing. Unlike the public ETS code, pruned
candidates are not counted and the prompt is counted in tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ragscale.search.tree import Tree


def retained_nodes(tree: Tree, node_ids: Iterable[int]) -> set[int]:
    """Every node on a path from the root to one of ``node_ids``."""
    out: set[int] = set()
    for node_id in node_ids:
        node = tree[node_id]
        while node.id not in out:
            out.add(node.id)
            if node.parent is None:
                break
            node = tree[node.parent]
    return out


def retained_kv_tokens(tree: Tree, node_ids: Iterable[int]) -> int:
    """Unique tokens on the root-to-node paths of ``node_ids`` (prompt included)."""
    return sum(tree[i].num_tokens for i in retained_nodes(tree, node_ids))


@dataclass
class KVTracker:
    """Retained KV after each step; ``peak`` and ``mean`` over the search."""

    steps: list[int] = field(default_factory=list)  # retained tokens after step 1, 2, ...
    kept: list[list[int]] = field(default_factory=list)  # the kept node ids behind each figure

    def record(self, tree: Tree, kept_ids: Iterable[int]) -> int:
        kept_ids = sorted(set(kept_ids))
        tokens = retained_kv_tokens(tree, kept_ids)
        self.steps.append(tokens)
        self.kept.append(kept_ids)
        return tokens

    @property
    def peak(self) -> int:
        return max(self.steps, default=0)

    @property
    def mean(self) -> float:
        return sum(self.steps) / len(self.steps) if self.steps else 0.0

    def to_dict(self) -> dict:
        return {"per_step": list(self.steps), "peak": self.peak, "mean": self.mean,
                "kept": [list(k) for k in self.kept]}
