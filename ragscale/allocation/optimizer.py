"""P*(L_max): the best configuration theta = (k, m, n) whose effective length fits a token budget
and whose every model call fits the profile's context window.

Bounds, as in Yue et al. 2025: the grid is the paper's range (k <= 1000 documents, m <= 256
demonstrations, n <= 5 iterations; sections 4-5); the budget L_max bounds the effective length, the
input tokens summed over all calls of one question; and the model's context window bounds each
call on its own (``largest_call``). The paper states the window ("Gemini 1.5 Flash with context
length window up to 1M tokens") and its Table 1 follows from it: DRAG (one call) stops at 1M, only
IterDRAG, whose 2n + 1 calls each fit, is reported at 5M.

A dense grid per strategy is evaluated at once with numpy broadcasting. Two facts keep it fast
and exact on the grid:
- the predicted score is an increasing function of the model's linear predictor, so the search
  maximises the linear predictor and applies the sigmoid only to the winners;
- for many budgets at once (the frontier) each configuration is binned to the smallest budget it
  fits, and a running maximum over the bins gives P*(L), which therefore never decreases.
Configurations with a call over the window are dropped before either step. Ties go to the shorter
(cheaper) configuration; so "auto" never picks IterDRAG with n = 1, which the model scores exactly
like DRAG with the same k and m (it has no term for the strategy) at about three times the tokens.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import yaml

from ragscale.allocation.budget import parse_budget
from ragscale.allocation.context_length import (
    STRATEGIES,
    TokenSizes,
    canonical_theta,
    check_strategy,
    effective_length,
    largest_call,
)
from ragscale.allocation.model import AllocationModel, sigmoid
from ragscale.allocation.profiles import Profile
from ragscale.errors import UserError
from ragscale.formatting import fmt_tokens


def _dense_axis(low_ints: int, high: int, log_points: int) -> np.ndarray:
    """Every integer up to ``low_ints``, then ``log_points`` log-spaced integers up to ``high``."""
    tail = np.round(np.geomspace(low_ints, high, log_points))
    return np.unique(np.concatenate([np.arange(low_ints + 1), tail])).astype(float)


@dataclass(frozen=True)
class Grid:
    """Candidate values of each knob. The paper's own grid is ``Grid.paper()``."""

    k: tuple
    m: tuple
    n: tuple

    @classmethod
    def dense(cls) -> "Grid":
        # k 0..100 every integer then log-spaced to 1000; m 0..64 then to 256; n 1..5.
        return cls(tuple(_dense_axis(100, 1000, 100)), tuple(_dense_axis(64, 256, 40)), (1.0, 2.0, 3.0, 4.0, 5.0))

    @classmethod
    def paper(cls) -> "Grid":
        return cls((0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), (0, 1, 2, 4, 8, 16, 32, 64, 128, 256), (1, 2, 3, 4, 5))

    def size(self, strategies=STRATEGIES) -> int:
        """How many configurations ``optimise`` evaluates over these strategies."""
        return sum(int(np.prod([len(axis) for axis in _axes(s, self)])) for s in strategies)


def _axes(strategy: str, grid: Grid):
    """The knobs a strategy actually has; the others are pinned (k=0, m=0, n=1)."""
    k = np.asarray(grid.k, float) if strategy in ("rag", "drag", "iterdrag") else np.zeros(1)
    m = np.asarray(grid.m, float) if strategy in ("many-shot", "drag", "iterdrag") else np.zeros(1)
    n = np.asarray(grid.n, float) if strategy == "iterdrag" else np.ones(1)
    return k, m, n


@dataclass
class Allocation:
    """One configuration and what the model predicts for it."""

    strategy: str
    k: int
    m: int
    n: int
    effective_tokens: int
    budget: int
    predicted_score: float                # percent, of ``metric`` (every profile: one scale)
    profile: str = ""
    metric: str = ""
    largest_call_tokens: int = 0          # the biggest single call (prompt + output)
    context_window: int | None = None     # the profile's window; None: unknown

    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def fits_window(self) -> bool:
        return self.context_window is None or self.largest_call_tokens <= self.context_window

    @property
    def same_as_drag(self) -> bool:
        """IterDRAG with n = 1: the model predicts what DRAG with the same k, m predicts, for more tokens."""
        return self.strategy == "iterdrag" and self.n == 1


def as_model(model) -> AllocationModel:
    return AllocationModel.from_profile(model) if isinstance(model, Profile) else model


def context_window_of(model) -> int | None:
    """The window a model (or profile) was measured under; None when unknown."""
    window = model.context_window if isinstance(model, Profile) else getattr(model, "context_window_", None)
    return None if window is None else int(window)


def evaluate(model, strategy: str, sizes: TokenSizes | None = None, grid: Grid | None = None):
    """Lengths and linear predictors of every grid configuration of one strategy whose every call
    fits the model's context window (flat arrays; all of the grid when the window is unknown)."""
    model = as_model(model)
    check_strategy(strategy)
    sizes = sizes or TokenSizes()
    k, m, n = _axes(strategy, grid or DEFAULT_GRID)
    kk, mm, nn = k[:, None, None], m[None, :, None], n[None, None, :]
    length = effective_length(strategy, kk, mm, nn, sizes)
    slope = model.coefficients()
    linear = (slope[0] * np.log(kk + model.eps) + slope[1] * np.log(mm + model.eps)
              + slope[2] * np.log(nn + model.eps) + model.c_)
    shape = np.broadcast_shapes(length.shape, linear.shape)
    grids = [np.broadcast_to(x, shape).ravel() for x in (kk, mm, nn)]
    length, linear = np.broadcast_to(length, shape).ravel(), np.broadcast_to(linear, shape).ravel()
    window = context_window_of(model)
    if window is not None:
        keep = np.broadcast_to(largest_call(strategy, kk, mm, nn, sizes), shape).ravel() <= window
        length, linear, grids = length[keep], linear[keep], [g[keep] for g in grids]
    return length, linear, grids


def best_per_budget(length: np.ndarray, linear: np.ndarray, budgets) -> np.ndarray:
    """Index of the best configuration within each of the ascending ``budgets`` (-1: nothing fits).

    Each configuration goes to the smallest budget it fits (one binary search each), the best of
    each bin is kept, and a running maximum over the bins gives P*: no full sort of the grid, and
    P* cannot decrease. Ties go to the shorter configuration.
    """
    budgets = np.asarray(budgets, float)
    bins = np.searchsorted(budgets, length, side="left")  # bin j: length <= budgets[j]
    fits = bins < len(budgets)
    best = np.full(len(budgets), -np.inf)
    np.maximum.at(best, bins[fits], linear[fits])
    winners = np.flatnonzero(fits & (linear >= best[np.minimum(bins, len(budgets) - 1)] - 1e-12))
    # The shortest winner of each bin: order the few winners by (bin, length), keep each bin's first.
    winners = winners[np.lexsort((length[winners], bins[winners]))]
    bin_ids, first = np.unique(bins[winners], return_index=True)
    bin_winner = np.full(len(budgets), -1)
    bin_winner[bin_ids] = winners[first]
    picks, current, current_score = np.full(len(budgets), -1), -1, -np.inf
    for j in range(len(budgets)):  # running maximum that remembers where it came from
        if bin_winner[j] >= 0 and best[j] > current_score + 1e-12:
            current, current_score = bin_winner[j], best[j]
        picks[j] = current
    return picks


def model_sigmoid(model: AllocationModel, linear):
    return sigmoid(linear, model.sigmoid)


def _strategies(strategy) -> tuple[str, ...]:
    if strategy in (None, "auto"):
        return STRATEGIES
    if isinstance(strategy, str):
        return (check_strategy(strategy),)
    return tuple(check_strategy(s) for s in strategy)


def _allocation(model, strategy, k, m, n, length, budget, linear, sizes) -> Allocation:
    score = float(model.to_percent(model_sigmoid(model, linear)))
    call = float(largest_call(strategy, k, m, n, sizes))
    return Allocation(strategy, int(k), int(m), int(n), int(np.ceil(length)), budget, score,
                      getattr(model, "name_", "fitted"), getattr(model, "metric_", ""),
                      int(math.ceil(call)), context_window_of(model))


def _nothing_fits(model, budget: int, strategies, sizes: TokenSizes, grid: Grid | None = None) -> UserError:
    # The smallest configuration of each strategy on the grid (a grid may start at k = 1).
    smallest = [(s, *(axis.min() for axis in _axes(s, grid or DEFAULT_GRID))) for s in strategies]
    cheapest = min(float(effective_length(s, k, m, n, sizes)) for s, k, m, n in smallest)
    window = context_window_of(model)
    smallest_call = min(float(largest_call(s, k, m, n, sizes)) for s, k, m, n in smallest)
    if window is not None and smallest_call > window:
        return UserError(f"no call fits the profile's context window of {window:,} tokens: the smallest "
                         f"call needs {smallest_call:,.0f}")
    return UserError(f"nothing fits a budget of {budget:,} tokens: the cheapest configuration needs {cheapest:,.0f}")


def optimise(model, budget, strategy="auto", sizes: TokenSizes | None = None, grid: Grid | None = None) -> Allocation:
    """The best grid configuration with effective length <= budget and every call within the
    model's context window; UserError when nothing fits.

    ``model`` is an AllocationModel or a Profile. It predicts with its default informativeness
    (i_doc_, i_shot_; for a model fitted on several datasets, their average).
    """
    model = as_model(model)
    budget = parse_budget(budget)
    sizes = sizes or TokenSizes()
    best = None
    for name in _strategies(strategy):
        length, linear, (k, m, n) = evaluate(model, name, sizes, grid)
        fits = length <= budget
        if not fits.any():
            continue
        top = linear[fits].max()
        # Among the best-scoring configurations, the shortest (cheapest).
        candidates = np.flatnonzero(fits & (linear >= top - 1e-12))
        i = candidates[np.argmin(length[candidates])]
        if best is None or top > best[0] + 1e-12 or (abs(top - best[0]) <= 1e-12 and length[i] < best[1]):
            best = (top, length[i], name, k[i], m[i], n[i])
    if best is None:
        raise _nothing_fits(model, budget, _strategies(strategy), sizes, grid)
    top, length, name, k, m, n = best
    return _allocation(model, name, k, m, n, length, budget, top, sizes)


def manual_allocation(model, strategy: str, k, m, n, budget, sizes: TokenSizes | None = None
                      ) -> tuple[Allocation, list[str]]:
    """A configuration the user chose, with what the model predicts and what is wrong with it.

    Knobs the strategy lacks are zeroed (rag has no demonstrations ...). The notices say, in one
    line each, when it is over the budget, when a call is over the profile's context window (it
    cannot run as configured), and when it is IterDRAG with n = 1.
    """
    model = as_model(model)
    budget = parse_budget(budget)
    sizes = sizes or TokenSizes()
    k, m, n = (float(x) for x in canonical_theta(strategy, k, m, n))
    length = float(effective_length(strategy, k, m, n, sizes))
    linear = float(model.linear_predictor(k, m, n))
    allocation = _allocation(model, strategy, k, m, n, length, budget, linear, sizes)
    notices = []
    if length > budget:
        notices.append(f"This configuration needs {length:,.0f} tokens, {length - budget:,.0f} over the budget "
                       f"of {budget:,}.")
    if not allocation.fits_window:
        notices.append(f"Its largest call holds {allocation.largest_call_tokens:,} tokens, more than the "
                       f"profile's context window of {fmt_tokens(allocation.context_window)}: it cannot run "
                       "as configured.")
    if allocation.same_as_drag:
        notices.append(SAME_AS_DRAG)
    return allocation, notices


SAME_AS_DRAG = ("IterDRAG with n = 1 is DRAG in self-ask clothes for this model: it has no term for the "
                "strategy, so it predicts exactly what DRAG with the same k and m predicts, for about three "
                "times the tokens (three calls re-sending the prompt).")


def frontier(model, budgets, strategies=STRATEGIES, sizes: TokenSizes | None = None,
             grid: Grid | None = None) -> pd.DataFrame:
    """P*(L) per strategy (and "auto" = best of all) at each budget; budgets nothing fits are left out.

    Every row's calls fit the model's context window; ``largest_call_tokens`` says how close they come.
    """
    model = as_model(model)
    sizes = sizes or TokenSizes()
    budgets = [parse_budget(b) for b in np.atleast_1d(budgets)]
    names = [s for s in (strategies if not isinstance(strategies, str) else [strategies])]
    plain = [s for s in names if s != "auto"]
    needed = STRATEGIES if "auto" in names else tuple(check_strategy(s) for s in plain)
    order = np.argsort(budgets, kind="stable")
    picks = {}  # strategy -> (length, linear, (k, m, n), best index per budget in input order)
    for s in needed:
        length, linear, knobs = evaluate(model, s, sizes, grid)
        index = np.empty(len(budgets), int)
        index[order] = best_per_budget(length, linear, np.asarray(budgets, float)[order])
        picks[s] = (length, linear, knobs, index)
    records = []
    for b, budget in enumerate(budgets):
        for name in names:
            options = [s for s in (needed if name == "auto" else [name]) if picks[s][3][b] >= 0]
            if not options:
                continue
            # Best score; among equal scores the shorter configuration.
            chosen = max(options, key=lambda s: (picks[s][1][picks[s][3][b]], -picks[s][0][picks[s][3][b]]))
            length, linear, (k, m, n), index = picks[chosen]
            i = index[b]
            records.append({
                "budget": budget, "strategy": name, "k": int(k[i]), "m": int(m[i]), "n": int(n[i]),
                "effective_tokens": int(np.ceil(length[i])),
                "predicted_score": float(model.to_percent(model_sigmoid(model, linear[i]))),
                "chosen_strategy": chosen,
                "largest_call_tokens": int(np.ceil(float(largest_call(chosen, k[i], m[i], n[i], sizes)))),
            })
    columns = ["budget", "strategy", "k", "m", "n", "effective_tokens", "predicted_score", "chosen_strategy",
               "largest_call_tokens"]
    return pd.DataFrame.from_records(records, columns=columns)


DEFAULT_GRID = Grid.dense()
