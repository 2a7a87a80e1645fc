"""What the allocation calculator shows for one set of inputs, computed in one place.

The page turns its widgets into a ``Calculation`` (chosen configuration, its notices and cost, the
best of each strategy with its cost) and only lays it out; the CLI and tests can ask for the same.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ragscale.allocation.context_length import STRATEGIES, STRATEGY_DESCRIPTIONS, TokenSizes
from ragscale.allocation.cost import CostBreakdown, CostModel, cost_breakdown, tier_summary
from ragscale.allocation.budget import MAX_BUDGET
from ragscale.allocation.optimizer import (SAME_AS_DRAG, Allocation, Grid, as_model, context_window_of, frontier,
                                           manual_allocation, optimise)
from ragscale.allocation.prices import PriceSheet
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
    value: "LastPoints | None" = None              # what the last points of accuracy cost

    @property
    def delta_vs_best(self) -> float | None:
        if self.chosen is None or self.best is None:
            return None
        return self.chosen.predicted_score - self.best.predicted_score


def window_cap(model, chosen: Allocation, strategy: str = "auto", sizes: TokenSizes | None = None,
               grid: Grid | None = None) -> str | None:
    """A note when the context window, not the budget, decides the pick: without the per-call limit
    the model would spend more of the budget on a configuration it predicts higher."""
    model = as_model(model)
    window = context_window_of(model)
    sizes = sizes or TokenSizes()
    # A call holds at most the question's whole input plus its answer: under such a budget no call can
    # reach the window, and the check (two more searches of the grid) is skipped.
    if window is None or chosen.budget + sizes.answer <= window:
        return None
    unbounded = copy.copy(model)
    unbounded.context_window_ = None
    free = optimise(unbounded, chosen.budget, strategy, sizes, grid)
    if free.predicted_score <= chosen.predicted_score + 1e-9:
        return None
    larger = optimise(model, min(chosen.budget * 10, MAX_BUDGET), strategy, sizes, grid)
    frozen = larger.predicted_score <= chosen.predicted_score + 1e-9
    return (f"The context window caps this pick: every call must fit {window:,} tokens"
            + (f", so no configuration longer than {chosen.effective_tokens:,} tokens per question scores higher and a "
               "larger budget buys nothing on this model." if frozen else ".")
            + f" Without that limit the model would pick {free.strategy} k={free.k} m={free.m} n={free.n} "
              f"({free.effective_tokens:,} tokens, predicted {free.predicted_score:.1f}).")


def pick(model, budget, strategy: str = "auto", sizes: TokenSizes | None = None,
         manual: tuple[int, int, int] | None = None, grid: Grid | None = None) -> tuple[Allocation, list[str]]:
    """The configuration on screen and what to say about it: the one pick the calculator, the CLI and
    the Explorer share. ``manual`` (k, m, n): the user's; else the optimiser's best for ``strategy``.

    Notices: over the budget or the window (manual), IterDRAG with n = 1 (DRAG's prediction for more
    tokens), and a context window that caps the pick. UserError when nothing fits.
    """
    if manual is not None:
        # "auto" has no knobs of its own: a manual configuration is DRAG's.
        return manual_allocation(model, "drag" if strategy == "auto" else strategy, *manual, budget, sizes)
    chosen = optimise(model, budget, strategy, sizes, grid)
    notices = [SAME_AS_DRAG] if chosen.same_as_drag else []
    capped = window_cap(model, chosen, strategy, sizes, grid)
    return chosen, notices + ([capped] if capped else [])


@dataclass(frozen=True)
class LastPoints:
    """What the last points of accuracy cost, read off the frontier of the chosen strategy."""

    last_point_month_usd: float | None  # chosen monthly cost less that of the cheapest config one point lower
    below: dict | None                  # that configuration
    near: dict | None                  # the cheapest configuration within NEAR_POINTS of the chosen score
    cost_ratio: float | None           # chosen monthly cost / near's
    warning: str | None                # diminishing returns, in one line


NEAR_POINTS = 2.0   # "almost as good": within this many points of the chosen prediction
COSTLY_RATIO = 5.0  # ... for a fifth of the cost or less: the last points are diminishing returns


def last_points(model, chosen: Allocation, costs: CostBreakdown, strategy: str, sizes: TokenSizes,
                cost: CostModel, unit: str = "points") -> LastPoints:
    """The marginal monthly cost of the last point of accuracy and, when a much cheaper budget comes
    within ``NEAR_POINTS``, a diminishing-returns warning (the frontier of ``strategy`` below the budget)."""
    budgets = np.unique(np.append(np.geomspace(MIN_FRONTIER, max(chosen.budget, MIN_FRONTIER), 60).astype(int),
                                  chosen.budget))
    rows = frontier(model, budgets, [strategy], sizes)
    rows = rows[rows["effective_tokens"] <= chosen.effective_tokens].drop_duplicates(["k", "m", "n", "chosen_strategy"])
    steps = []
    for row in rows.itertuples():
        config = {"strategy": row.chosen_strategy, "k": row.k, "m": row.m, "n": row.n}
        steps.append({**config, "tokens": int(row.effective_tokens), "score": float(row.predicted_score),
                      "month_usd": cost_breakdown(config, sizes, cost).cost_per_month_usd})
    score, month = chosen.predicted_score, costs.cost_per_month_usd
    cheaper = [s for s in steps if s["score"] >= score - 1 and s["month_usd"] < month]
    below = min(cheaper, key=lambda s: s["month_usd"]) if cheaper else None
    last_point = month - below["month_usd"] if below else None
    near_ones = [s for s in steps if s["score"] >= score - NEAR_POINTS and s["month_usd"] > 0]
    near = min(near_ones, key=lambda s: s["month_usd"]) if near_ones else None
    ratio = month / near["month_usd"] if near else None
    warning = None
    if near and ratio >= COSTLY_RATIO and score - near["score"] > 1e-9:
        warning = (f"Diminishing returns: {near['strategy']} k={near['k']} m={near['m']} n={near['n']} at "
                   f"{fmt_tokens(near['tokens'])} tokens is predicted {near['score']:.1f}, only "
                   f"{score - near['score']:.1f} {unit} below this pick, for {fmt_usd(near['month_usd'])} a month: "
                   f"going from there to {fmt_tokens(chosen.effective_tokens)} tokens buys "
                   f"+{score - near['score']:.1f} {unit} for {ratio:.0f}x the monthly cost ({fmt_usd(month)}).")
    return LastPoints(last_point, below, near, ratio, warning)


MIN_FRONTIER = 1_000


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
        chosen, notices = pick(profile, budget, strategy, sizes, manual)
    except UserError as exc:
        return Calculation(None, None, error=str(exc), per_strategy=per_strategy)
    costs = cost_breakdown(chosen, sizes, cost)
    curve = "drag" if manual is not None and strategy == "auto" else strategy
    value = last_points(profile, chosen, costs, curve, sizes, cost, score_unit(profile))
    return Calculation(chosen, costs, best, notices, per_strategy, value=value)


def score_label(profile: Profile) -> str:
    return f"predicted {profile.metric.upper()}" if profile.metric else "predicted score"


def score_unit(profile: Profile) -> str:
    """What one point of a predicted score is: 'EM points' (every score is in percent)."""
    return f"{profile.metric.upper()} points" if profile.metric else "points"


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
        dict(label="Cost per query", value=fmt_usd(costs.cost_per_query_usd),
             help=f"{cost.prices.title}, billed call by call: {', '.join(tier_summary(costs))}"),
        dict(label="Cost per month", value=fmt_usd(costs.cost_per_month_usd),
             help=f"{cost.queries_per_day:,.0f} queries/day, {cost.days_per_month:g} days"),
    ]


def summary_line(calc: Calculation) -> str:
    """Latency, calls, the largest call against the window, and the cached share, in one sentence."""
    costs, window = calc.costs, calc.chosen.context_window
    held = f"a {fmt_tokens(window)} context window" if window else "an unknown context window (calls not bounded)"
    return (f"Latency ≈ {costs.latency_s:.1f} s per question over {costs.calls:.0f} model call(s); largest call "
            f"{fmt_tokens(costs.largest_call_tokens)} tokens of {held}; {costs.cached_input_tokens:,.0f} of "
            f"{costs.input_tokens:,.0f} input tokens billed as cached; billed per call: "
            f"{', '.join(tier_summary(costs))}.")


def value_line(calc: Calculation, profile: Profile) -> str:
    """The marginal monthly cost of the last point of accuracy, in one sentence ("" when there is no step below)."""
    value = calc.value
    if value is None or value.below is None:
        return ""
    below, unit = value.below, score_unit(profile)
    return (f"**The last {unit[:-1]} costs {fmt_usd(value.last_point_month_usd)} a month.** The cheapest configuration "
            f"predicted at most one point lower, {below['strategy']} k={below['k']} m={below['m']} n={below['n']} "
            f"({fmt_tokens(below['tokens'])} tokens, {below['score']:.1f}), costs {fmt_usd(below['month_usd'])} a month "
            f"against this pick's {fmt_usd(calc.costs.cost_per_month_usd)}.")


def bill_table(costs: CostBreakdown) -> pd.DataFrame:
    """One row per model call: its prompt, the tier that prompt falls in, the rates and the cost."""
    return pd.DataFrame([{
        "call": i, "prompt tokens": round(b["prompt_tokens"]), "cached": round(b["cached_tokens"]),
        "output": round(b["output_tokens"]), "tier": b["tier"],
        "USD / 1M in · cached · out": f"{b['input_per_m']:g} · {b['cached_per_m']:g} · {b['output_per_m']:g}",
        "cost": fmt_usd(b["uncached_usd"] + b["cached_usd"] + b["output_usd"]),
    } for i, b in enumerate(costs.call_bills, start=1)])


TIER_COLUMNS = {"name": "tier", "max_prompt_tokens": "prompts up to (tokens; empty: any)",
                "input": "input $/1M", "cached_input": "cached input $/1M", "output": "output $/1M"}


def tier_frame(sheet: PriceSheet) -> pd.DataFrame:
    """A sheet's tiers as an editable table (``sheet_from_frame`` reads it back)."""
    rows = [{TIER_COLUMNS[key]: getattr(t, key) for key in TIER_COLUMNS} for t in sheet.tiers]
    frame = pd.DataFrame(rows, columns=list(TIER_COLUMNS.values()))
    return frame.astype({TIER_COLUMNS["max_prompt_tokens"]: "Int64"})


def sheet_from_frame(sheet: PriceSheet, frame: pd.DataFrame) -> PriceSheet:
    """``sheet`` with the tiers of an edited ``tier_frame``; UserError (one line) when they do not make a sheet."""
    back = {label: key for key, label in TIER_COLUMNS.items()}
    tiers = []
    for row in frame.rename(columns=back).to_dict("records"):
        bound = row["max_prompt_tokens"]
        tiers.append({**row, "max_prompt_tokens": None if pd.isna(bound) else int(bound),
                      **{key: float(row[key]) if pd.notna(row[key]) else -1.0 for key in ("input", "cached_input", "output")}})
    edited = tiers != [dict(vars(t)) for t in sheet.tiers]
    data = {**sheet.to_dict(), "tiers": tiers}
    if edited:
        data.update(provider=f"{sheet.provider}, edited here", source=f"edited on the page from: {sheet.source}")
    return PriceSheet.from_dict(data)


__all__ = ["Calculation", "LastPoints", "calculate", "headline", "last_points", "pick", "score_label", "score_unit",
           "summary_line", "value_line", "window_cap", "bill_table", "tier_frame", "sheet_from_frame"]
