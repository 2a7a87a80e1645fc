"""Best-of-N: ``width`` independent samples. The root gets all the width; after that every
unfinished sample continues as its own chain with exactly one child, so nothing is pruned and
chains never share more than the prompt. The answer is picked from the finished leaves."""

from __future__ import annotations

from ragscale.search.config import SearchConfig
from ragscale.search.policies.base import Embed, ranked, zero_allocation
from ragscale.search.tree import Tree


def select(
    tree: Tree, candidates: list[int], remaining_width: int, config: SearchConfig, embed: Embed | None = None
) -> dict[int, int]:
    out = zero_allocation(tree, candidates, remaining_width)
    if remaining_width == 0 or not candidates:
        return out
    if candidates == [tree.root.id]:
        out[tree.root.id] = remaining_width
        return out
    # one child per chain; with REBASE bookkeeping there are exactly remaining_width chains
    for i in ranked(tree, candidates)[:remaining_width]:
        out[i] = 1
    return out
