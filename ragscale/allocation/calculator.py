"""What the allocation calculator shows for one set of inputs, computed in one place.

The page turns its widgets into a ``Calculation`` (chosen configuration, its notices and cost, the
best of each strategy with its cost) and only lays it out; the CLI and tests can ask for the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ragscale.allocation.context_length import STRATEGIES, STRATEGY_DESCRIPTIONS, TokenSizes
from ragscale.allocation.cost import CostBreakdown, CostModel, cost_breakdown
from ragscale.allocation.optimizer import SAME_AS_DRAG, Allocation, manual_allocation, optimise
from ragscale.allocation.profiles import Profile
from ragscale.errors import UserError
from ragscale.formatting import fmt_tokens, fmt_usd


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


def score_label(profile: Profile) -> str:
    return f"predicted {profile.metric.upper()}" if profile.metric else "predicted score"


def headline(calc: Calculation, profile: Profile, cost: CostModel, manual: bool = False) -> list[dict]:
    """The six headline numbers as ``st.metric`` keyword arguments (label, value, help, delta)."""
    chosen, costs = calc.chosen, calc.costs
    label = score_label(profile)
    read_as = f", read as {profile.metric.upper()} on {profile.dataset}" if profile.dataset else ""
    return [
        dict(label=label[0].upper() + label[1:], value=f"{chosen.predicted_score:.1f}", help=profile.name + read_as,
             delta=f"{calc.delta_vs_best:+.1f} vs best" if manual and calc.delta_vs_best is not None else None),
        dict(label="Strategy", value=chosen.strategy, help=STRATEGY_DESCRIPTIONS.get(chosen.strategy)),
        dict(label="k · m · n", value=f"{chosen.k} · {chosen.m} · {chosen.n}",
             help="k retrieved documents, m demonstrations, n iterations"),
        dict(label="Tokens per question", value=fmt_tokens(chosen.effective_tokens), help=f"budget {chosen.budget:,}"),
        dict(label="Cost per query", value=fmt_usd(costs.cost_per_query_usd)),
        dict(label="Cost per month", value=fmt_usd(costs.cost_per_month_usd),
             help=f"{cost.queries_per_day:,.0f} queries/day, {cost.days_per_month:g} days"),
    ]


def summary_line(calc: Calculation) -> str:
    """Latency, calls, the largest call against the window, and the cached share, in one sentence."""
    costs, window = calc.costs, calc.chosen.context_window
    held = f"a {fmt_tokens(window)} context window" if window else "an unknown context window (calls not bounded)"
    return (f"Latency ≈ {costs.latency_s:.1f} s per question over {costs.calls:.0f} model call(s); largest call "
            f"{fmt_tokens(costs.largest_call_tokens)} tokens of {held}; {costs.cached_input_tokens:,.0f} of "
            f"{costs.input_tokens:,.0f} input tokens billed as cached.")


__all__ = ["Calculation", "calculate", "headline", "score_label", "summary_line"]
