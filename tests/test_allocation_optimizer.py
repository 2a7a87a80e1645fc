"""The optimiser: never over budget, P* never falls as the budget grows, agrees with brute force."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragscale.allocation import (
    PAPER_PROFILE,
    STRATEGIES,
    AllocationModel,
    Grid,
    TokenSizes,
    effective_length,
    frontier,
    largest_call,
    optimise,
    paper_profile,
    parse_budget,
)
from ragscale.errors import UserError

MODEL = AllocationModel.from_profile(PAPER_PROFILE)
sizes_strategy = st.builds(
    TokenSizes,
    doc=st.floats(1, 2000), question=st.floats(1, 200), answer=st.floats(1, 50), subquery=st.floats(1, 100),
    intermediate=st.floats(1, 100), instruction=st.floats(0, 500), demo_steps=st.floats(0, 5),
)
budgets = st.integers(min_value=1_000, max_value=20_000_000)
choices = st.sampled_from(("auto",) + STRATEGIES)


@settings(max_examples=60, deadline=None)
@given(sizes=sizes_strategy, budget=budgets, strategy=choices)
def test_never_over_budget(sizes, budget, strategy):
    try:
        best = optimise(MODEL, budget, strategy, sizes)
    except UserError:
        # Only allowed when even the cheapest configuration of the strategy is too long.
        cheapest = min(float(effective_length(s, 0, 0, 1, sizes))
                       for s in (STRATEGIES if strategy == "auto" else (strategy,)))
        assert cheapest > budget
        return
    assert best.effective_tokens <= budget
    assert float(effective_length(best.strategy, best.k, best.m, best.n, sizes)) <= budget


@settings(max_examples=40, deadline=None)
@given(sizes=sizes_strategy, b1=budgets, b2=budgets, strategy=choices)
def test_best_score_never_decreases_with_budget(sizes, b1, b2, strategy):
    low, high = sorted((b1, b2))
    try:
        small = optimise(MODEL, low, strategy, sizes)
    except UserError:
        return
    large = optimise(MODEL, high, strategy, sizes)
    assert large.predicted_score >= small.predicted_score - 1e-9


@settings(max_examples=20, deadline=None)
@given(sizes=sizes_strategy)
def test_frontier_is_monotone_and_within_budget(sizes):
    table = frontier(MODEL, np.geomspace(1e3, 1e7, 30).astype(int), list(STRATEGIES) + ["auto"], sizes)
    assert (table["effective_tokens"] <= table["budget"]).all()
    for _, part in table.groupby("strategy"):
        assert np.all(np.diff(part["predicted_score"].to_numpy()) >= -1e-9)


def test_agrees_with_brute_force_on_the_papers_grid():
    grid, sizes = Grid.paper(), TokenSizes()
    configs = []
    for strategy in STRATEGIES:
        for k, m, n in itertools.product(grid.k, grid.m, grid.n):
            if (strategy in ("zero-shot", "many-shot") and k) or (strategy in ("zero-shot", "rag") and m) \
                    or (strategy != "iterdrag" and n != 1):
                continue
            if float(largest_call(strategy, k, m, n, sizes)) > PAPER_PROFILE.context_window:
                continue  # a call Gemini 1.5 Flash could not take
            configs.append((float(MODEL.predict(k, m, n)), float(effective_length(strategy, k, m, n, sizes)), strategy))
    for budget in (500, 16_000, 32_000, 128_000, 1_000_000, 5_000_000):
        expected = max(score for score, length, _ in configs if length <= budget)
        got = optimise(MODEL, budget, "auto", sizes, grid)
        assert got.predicted_score == pytest.approx(expected)
        for strategy in ("drag", "iterdrag"):
            want = max(s for s, length, name in configs if length <= budget and name == strategy)
            assert optimise(MODEL, budget, strategy, sizes, grid).predicted_score == pytest.approx(want)


def test_frontier_matches_optimise():
    budgets = [16_000, 128_000, 1_000_000]
    table = frontier(PAPER_PROFILE, budgets, ["drag", "iterdrag", "auto"])
    for row in table.itertuples():
        best = optimise(PAPER_PROFILE, row.budget, row.strategy)
        assert row.predicted_score == pytest.approx(best.predicted_score)


def test_ties_go_to_the_cheaper_configuration():
    # With a = 0 for n, more iterations buy nothing: the optimiser must not spend tokens on them.
    flat = AllocationModel.from_profile(paper_profile())
    flat.a_ = np.array([0.3, 0.1, 0.0])
    assert optimise(flat, 1_000_000, "iterdrag").n == 1


def test_nothing_fits_is_a_user_error():
    with pytest.raises(UserError, match="nothing fits"):
        optimise(PAPER_PROFILE, 10)


@pytest.mark.parametrize("text, value", [
    ("16k", 16_000), ("1M", 1_000_000), ("5_000_000", 5_000_000), ("128K", 128_000), ("1.5m", 1_500_000),
    (" 32k tokens ", 32_000), ("128,000", 128_000), (4096, 4096),
])
def test_parse_budget_accepts(text, value):
    assert parse_budget(text) == value


@pytest.mark.parametrize("text", ["0", "-5", "-16k", "abc", "", "1e", "k", "0.1", True, float("nan")])
def test_parse_budget_rejects(text):
    with pytest.raises(UserError):
        parse_budget(text)


def test_allocation_exports():
    best = optimise(PAPER_PROFILE, "128k")
    data = best.to_dict()
    assert {"strategy", "k", "m", "n", "effective_tokens", "budget", "predicted_score"} <= set(data)
    import yaml

    assert yaml.safe_load(best.to_yaml()) == data


@settings(max_examples=25, deadline=None)
@given(sizes=sizes_strategy, picks=st.lists(budgets, min_size=1, max_size=6), strategy=choices)
def test_frontier_agrees_with_optimise_at_every_budget(sizes, picks, strategy):
    table = frontier(MODEL, picks, [strategy], sizes)
    for budget in picks:
        rows = table[table["budget"] == budget]
        try:
            best = optimise(MODEL, budget, strategy, sizes)
        except UserError:
            assert rows.empty
            continue
        assert rows["predicted_score"].iloc[0] == pytest.approx(best.predicted_score, abs=1e-9)


@pytest.mark.parametrize("text, value", [("1e6", 1_000_000), ("2.5E5", 250_000), ("1e3k", 1_000_000),
                                         (1e6, 1_000_000), ("1G", 1_000_000_000), (10**9, 10**9)])
def test_parse_budget_reads_exponents(text, value):
    assert parse_budget(text) == value


@pytest.mark.parametrize("text", ["1e12", "1000000000000", 10**12, 1e12, "1_000_000_000_001", "2G", 10**40,
                                  "9" * 60, "1e999999999", float("inf")])
def test_parse_budget_out_of_range_is_one_clear_error_whatever_the_spelling(text):
    with pytest.raises(UserError, match=r"use 1 to 1,000,000,000 tokens \(1G\) per question"):
        parse_budget(text)


def test_huge_values_never_crash_the_slider_snap():
    from ragscale.allocation import BUDGET_OPTIONS, nearest_budget_option

    # Was a TypeError: np.log on a Python int too large for int64.
    assert nearest_budget_option(10**20) == max(BUDGET_OPTIONS)
    assert nearest_budget_option(1) == min(BUDGET_OPTIONS)
    assert nearest_budget_option(130_000) == 128_000
