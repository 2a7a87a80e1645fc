"""Selection policies, one file each, all with the signature of ``base.SelectFn``:

    select(tree, candidates, remaining_width, config, embed=None) -> {candidate id: n children}
"""

from __future__ import annotations

from ragscale.errors import UserError
from ragscale.search.config import POLICY_NAMES
from ragscale.search.policies import beam, bon, dvts, ets, rebase
from ragscale.search.policies.base import (
    Embed,
    SelectFn,
    Vote,
    apply_allocation,
    rebase_shares,
    remaining_width,
    weighted_vote,
)

POLICIES: dict[str, SelectFn] = {
    "ets": ets.select,
    "rebase": rebase.select,
    "beam": beam.select,
    "dvts": dvts.select,
    "bon": bon.select,
}
assert tuple(POLICIES) == POLICY_NAMES


def get_policy(name: str) -> SelectFn:
    try:
        return POLICIES[name]
    except KeyError:
        raise UserError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}") from None


__all__ = [
    "POLICIES",
    "Embed",
    "SelectFn",
    "Vote",
    "apply_allocation",
    "get_policy",
    "rebase_shares",
    "remaining_width",
    "weighted_vote",
]
