"""The calculator's figures: the window greys out cells, the star stays in the frame, costs read well."""

from dataclasses import replace

import numpy as np
import pytest

from ragscale.allocation import (
    PAPER_PROFILE,
    STRATEGIES,
    AllocationModel,
    CostModel,
    TokenSizes,
    cost_breakdown,
    frontier,
    largest_call,
    load_table1,
    optimise,
)
from ragscale.plots.allocation import (
    FRONTIER_BUDGETS,
    HEATMAP_K,
    HEATMAP_M,
    cost_figure,
    frontier_figure,
    heatmap_figure,
)


def _in_log_range(value, axis_range) -> bool:
    return axis_range[0] < np.log10(value) < axis_range[1]


@pytest.mark.parametrize("window", [None, 1_000_000, 50_000])
def test_heatmap_colours_only_cells_that_fit_budget_and_window(window):
    model = AllocationModel.from_profile(replace(PAPER_PROFILE, context_window=window))
    sizes, budget = TokenSizes(), 5_000_000
    fig = heatmap_figure(model, "drag", 1, sizes, budget, HEATMAP_K, HEATMAP_M)
    shown = np.asarray(fig.data[0].z, float)
    calls = largest_call("drag", np.asarray(HEATMAP_K)[None, :], np.asarray(HEATMAP_M)[:, None], 1, sizes)
    coloured = ~np.isnan(shown)
    if window is not None:
        assert (calls[coloured] <= window).all()
        assert (np.isnan(shown[calls > window])).all()
        assert np.asarray(fig.data[1].z, float)[calls > window].tolist() == [1.0] * int((calls > window).sum())
        assert "window" in fig.layout.title.text
    else:
        assert coloured.sum() > (calls <= 1_000_000).sum()  # unbounded: more of the grid is allowed


def test_frontier_star_and_table_points_sit_inside_the_frame_at_the_smallest_budget():
    sizes = TokenSizes()
    table = frontier(PAPER_PROFILE, FRONTIER_BUDGETS, list(STRATEGIES) + ["auto"], sizes)
    chosen = optimise(PAPER_PROFILE, 1_000, "auto", sizes).to_dict()  # ~900 tokens: left of every budget
    fig = frontier_figure(table, 1_000, load_table1(), "em", "hotpotqa", chosen, context_window=1_000_000, compact=True)
    assert _in_log_range(chosen["effective_tokens"], fig.layout.xaxis.range)
    low, high = fig.layout.yaxis.range
    assert low < chosen["predicted_score"] < high and low < 22.7 and high > 51.7  # Table 1's extremes on hotpotqa
    names = [t.name for t in fig.data]
    assert "drag" in names and "Table 1" in names and "chosen" in names
    # The default (Explorer) layout keeps its names and autoranges.
    plain = frontier_figure(table, 1_000, chosen=chosen)
    assert "drag (model)" in [t.name for t in plain.data] and plain.layout.xaxis.range is None


def test_cost_figure_shows_small_costs_in_full():
    tiny = cost_breakdown(optimise(PAPER_PROFILE, 1_000), TokenSizes(), CostModel())
    fig = cost_figure([("chosen", tiny)], per="query")
    assert fig.layout.xaxis.exponentformat == "none"
    labels = [c for trace in fig.data for c in trace.customdata]
    assert all(any(ch in "123456789" for ch in label) or label == "$0" for label in labels)
