"""What the allocation calculator shows for one set of inputs, computed in one place.

The page turns its widgets into a ``Calculation`` (chosen configuration, its notices and cost, the
best of each strategy with its cost) and only lays it out; the CLI and tests can ask for the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ragscale.allocation.context_length import STRATEGIES, TokenSizes
from ragscale.allocation.cost import CostBreakdown, CostModel, cost_breakdown
from ragscale.allocation.optimizer import SAME_AS_DRAG, Allocation, manual_allocation, optimise
from ragscale.allocation.profiles import Profile
from ragscale.errors import UserError


@dataclass
class Calculation:
    chosen: Allocation | None
    costs: CostBreakdown | None
    best: Allocation | None = None                 # the best of all strategies ("auto")
    notices: list[str] = field(default_factory=list)
    per_strategy: dict = field(default_factory=dict)  # strategy -> (Allocation, CostBreakdown) when it fits
    error: str | None = None                       # nothing fits: one line for the page

    @property
    def delta_vs_best(self) -> float | None:
        if self.chosen is None or self.best is None:
            return None
        return self.chosen.predicted_score - self.best.predicted_score


def calculate(profile: Profile, budget: int, strategy: str = "auto", sizes: TokenSizes | None = None,
              cost: CostModel | None = None, manual: tuple[int, int, int] | None = None) -> Calculation:
    """The optimiser's choice for ``strategy`` (or the user's ``manual`` (k, m, n)) within ``budget``."""
    sizes, cost = sizes or TokenSizes(), cost or CostModel()
    per_strategy = {}
    for name in STRATEGIES:
        try:
            option = optimise(profile, budget, name, sizes)
        except UserError:
            continue
        per_strategy[name] = (option, cost_breakdown(option, sizes, cost))
    try:
        best = optimise(profile, budget, "auto", sizes)
    except UserError as exc:
        return Calculation(None, None, error=str(exc))
    if manual is None:
        try:
            chosen = best if strategy == "auto" else optimise(profile, budget, strategy, sizes)
        except UserError as exc:
            return Calculation(None, None, best, error=str(exc), per_strategy=per_strategy)
        notices = [SAME_AS_DRAG] if chosen.same_as_drag else []
    else:
        # "auto" has no knobs of its own: a manual configuration is DRAG's.
        chosen, notices = manual_allocation(profile, "drag" if strategy == "auto" else strategy, *manual, budget, sizes)
    return Calculation(chosen, cost_breakdown(chosen, sizes, cost), best, notices, per_strategy)


__all__ = ["Calculation", "calculate"]
