"""Beam search: keep the top ceil(sqrt(width)) candidates; they share the width equally."""

from __future__ import annotations

import math

from ragscale.search.config import SearchConfig
from ragscale.search.policies.base import Embed, check_candidates, equal_shares, ranked
from ragscale.search.tree import Tree


def beam_size(width: int) -> int:
    return math.ceil(math.sqrt(width))


def select(
    tree: Tree, candidates: list[int], remaining_width: int, config: SearchConfig, embed: Embed | None = None
) -> dict[int, int]:
    check_candidates(tree, candidates, remaining_width)
    order = ranked(tree, candidates)
    # never keep more beams than there are children to give them
    keep = order[: min(beam_size(config.width), remaining_width)]
    shares = equal_shares(keep, remaining_width)
    return {i: shares.get(i, 0) for i in candidates}
