"""REBASE: every candidate gets children in proportion to softmax(score / T); nothing is pruned
on purpose (a low-scored candidate can still round down to 0 children)."""

from __future__ import annotations

from ragscale.search.config import SearchConfig
from ragscale.search.policies.base import Embed, check_candidates, rebase_shares, score_of
from ragscale.search.tree import Tree


def select(
    tree: Tree, candidates: list[int], remaining_width: int, config: SearchConfig, embed: Embed | None = None
) -> dict[int, int]:
    check_candidates(tree, candidates, remaining_width)
    shares = rebase_shares([score_of(tree, i) for i in candidates], remaining_width, config.temperature)
    return dict(zip(candidates, shares))
