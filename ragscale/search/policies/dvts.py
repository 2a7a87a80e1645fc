"""DVTS (diverse verifier tree search): ceil(sqrt(width)) independent subtrees, each extended
greedily by its best child.

The root's children are split, in id order, into ceil(sqrt(width)) contiguous blocks; block b
is subtree b and owns an equal share of the width (the first ones one unit more when it does
not divide). At every depth each subtree keeps only its best candidate, which gets the
subtree's share minus the subtree's finished nodes. Subtrees never lend each other width, as
in the public code (Hooper et al. 2025); the shares still add up to the remaining width.
"""

from __future__ import annotations

import math

from ragscale.search.config import SearchConfig
from ragscale.search.policies.base import Embed, equal_shares, ranked, zero_allocation
from ragscale.search.tree import Tree


def num_subtrees(width: int) -> int:
    return math.ceil(math.sqrt(width))


def subtree_of(tree: Tree, config: SearchConfig) -> dict[int, int]:
    """Subtree index of every depth-1 node (the root's children, split into blocks)."""
    firsts = [n.id for n in tree.children(tree.root.id)]
    blocks = min(num_subtrees(config.width), len(firsts)) or 1
    # near-equal contiguous blocks; the first len % blocks get one more node
    size, extra = divmod(len(firsts), blocks)
    out, start = {}, 0
    for b in range(blocks):
        stop = start + size + (1 if b < extra else 0)
        for node_id in firsts[start:stop]:
            out[node_id] = b
        start = stop
    return out


def select(
    tree: Tree, candidates: list[int], remaining_width: int, config: SearchConfig, embed: Embed | None = None
) -> dict[int, int]:
    out = zero_allocation(tree, candidates, remaining_width)
    if remaining_width == 0 or not candidates:
        return out
    if candidates == [tree.root.id]:  # first step: sample every trajectory's first step
        out[tree.root.id] = remaining_width
        return out
    if any(tree[i].depth == 0 for i in candidates):
        raise ValueError("the root cannot be a candidate together with other nodes")

    block = subtree_of(tree, config)
    budget = equal_shares(sorted(set(block.values())), config.width)
    for leaf in tree.finished_leaves():
        budget[block[tree.ancestors(leaf.id)[1] if leaf.depth > 1 else leaf.id]] -= 1

    best: dict[int, int] = {}
    for i in ranked(tree, candidates):
        first = tree.ancestors(i)[1] if tree[i].depth > 1 else i
        best.setdefault(block[first], i)
    for b, i in best.items():
        out[i] = max(budget[b], 0)

    # the subtree budgets add up to the tree's remaining width only if the caller kept REBASE
    # bookkeeping; never hand out more than the caller has
    excess = sum(out.values()) - remaining_width
    for i in sorted(best.values(), key=lambda i: (-out[i], i)):
        if excess <= 0:
            break
        cut = min(excess, out[i])
        out[i] -= cut
        excess -= cut
    return out
