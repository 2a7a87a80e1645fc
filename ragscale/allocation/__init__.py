"""The computation allocation model of Yue et al. 2025 and a budget calculator built on it.

- ``effective_length``: input tokens over every call for one question, per strategy.
- ``AllocationModel``: sigma^-1(P) = (a + b*i)^T log(theta + eps) + c; fit / predict.
- ``PAPER_PROFILE``: the paper's Gemini 1.5 Flash coefficients (Table 8); ``available_profiles``
  lists it with any fitted profiles.
- ``optimise`` / ``frontier``: the best (k, m, n) within a token budget, P*(L_max), with every
  model call inside the profile's context window (``largest_call``).
- ``fidelity_table``: the model's best per strategy against the paper's Table 1.
- ``CostModel`` / ``cost_breakdown``: USD per query and per month, and latency.
"""

from ragscale.allocation.context_length import (
    STRATEGIES,
    STRATEGY_DESCRIPTIONS,
    TokenSizes,
    canonical_theta,
    effective_length,
    largest_call,
    token_usage,
)
from ragscale.allocation.budget import BUDGET_OPTIONS, MAX_BUDGET, MIN_BUDGET, nearest_budget_option
from ragscale.allocation.cost import CostBreakdown, CostModel, cost_breakdown
from ragscale.allocation.model import AllocationModel, inverse_sigmoid, sigmoid
from ragscale.allocation.optimizer import (
    DEFAULT_GRID,
    Allocation,
    best_per_budget,
    Grid,
    evaluate,
    context_window_of,
    frontier,
    manual_allocation,
    SAME_AS_DRAG,
    optimise,
    parse_budget,
)
from ragscale.allocation.profiles import (
    GEMINI_15_FLASH_WINDOW,
    PAPER_PROFILE,
    TABLE1_DATASETS,
    Profile,
    available_profiles,
    get_profile,
    load_table1,
    paper_profile,
    profile_dirs,
    register_profile,
    save_profile,
    table1_scale,
)

optimize = optimise

__all__ = [
    "STRATEGIES", "STRATEGY_DESCRIPTIONS", "TokenSizes", "canonical_theta", "effective_length", "largest_call", "token_usage",
    "BUDGET_OPTIONS", "MAX_BUDGET", "MIN_BUDGET", "nearest_budget_option",
    "CostBreakdown", "CostModel", "cost_breakdown",
    "AllocationModel", "inverse_sigmoid", "sigmoid",
    "DEFAULT_GRID", "Allocation", "Grid", "evaluate", "frontier", "optimise", "optimize", "parse_budget", "best_per_budget",
    "context_window_of", "manual_allocation", "SAME_AS_DRAG",
    "GEMINI_15_FLASH_WINDOW", "PAPER_PROFILE", "TABLE1_DATASETS", "Profile", "available_profiles", "get_profile", "load_table1",
    "paper_profile", "profile_dirs", "register_profile", "save_profile", "table1_scale",
]
