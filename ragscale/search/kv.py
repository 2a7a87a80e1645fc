"""Exact KV accounting of a search (Hooper et al. 2025 measure KV *size*, which sets throughput).

After each selection step the retained KV is the number of unique tokens on the paths from the
root (the prompt included) to the kept nodes: a prefix shared by many kept nodes is stored
once, as in a radix cache, and pruned nodes hold nothing. Unlike the public ETS code, pruned
candidates are not counted and the prompt is counted in tokens.

Two figures, everywhere KV is shown:

- **retained KV** (with the prompt): what the cache really holds;
- **search KV** (without it): the same minus the root's prompt tokens. The prompt is shared by
  every branch and no policy can prune it, so it dilutes any ratio toward 1; the public code's
  logged KV leaves the question out, so Hooper et al.'s 1.8x is a ratio of search KV.
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
    prompt: int = 0  # the root's tokens, always retained

    def record(self, tree: Tree, kept_ids: Iterable[int]) -> int:
        kept_ids = sorted(set(kept_ids))
        tokens = retained_kv_tokens(tree, kept_ids)
        self.prompt = tree.root.num_tokens
        self.steps.append(tokens)
        self.kept.append(kept_ids)
        return tokens

    @property
    def search_steps(self) -> list[int]:
        return [t - self.prompt for t in self.steps]

    @property
    def peak(self) -> int:
        return max(self.steps, default=0)

    @property
    def mean(self) -> float:
        return sum(self.steps) / len(self.steps) if self.steps else 0.0

    def to_dict(self) -> dict:
        return {**kv_two_ways(self.steps, self.prompt), "kept": [list(k) for k in self.kept]}


def kv_two_ways(per_step: list[int], prompt: int) -> dict:
    """Retained KV (with the prompt) and search KV (without it), per step, peak and mean."""
    search = [t - prompt for t in per_step]
    mean = (lambda xs: sum(xs) / len(xs) if xs else 0.0)
    return {"per_step": list(per_step), "peak": max(per_step, default=0), "mean": mean(per_step),
            "prompt": prompt, "search_per_step": search, "search_peak": max(search, default=0),
            "search_mean": mean(search)}


def record_kv(record: dict) -> dict:
    """A search record's KV two ways; older records (retained KV only) get the search figures from
    their tree's root, which is the prompt."""
    kv = dict(record.get("kv") or {})
    if "search_mean" in kv:
        return kv
    prompt = kv.get("prompt")
    if prompt is None:
        nodes = (record.get("tree") or {}).get("nodes") or []
        root = next((n for n in nodes if n.get("parent") is None), None)
        if root is None:
            raise ValueError(f"search record {record.get('qid')!r} has no tree to read its prompt from")
        prompt = len(root.get("token_ids") or [])
    return {**kv, **kv_two_ways(list(kv.get("per_step") or []), int(prompt))}
