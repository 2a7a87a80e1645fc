"""What the calculator page shows, computed by ragscale.allocation.calculator (no Streamlit)."""

from dataclasses import replace

import pytest

from ragscale.allocation import PAPER_PROFILE, STRATEGIES, CostModel, optimise
from ragscale.allocation.calculator import calculate, headline, summary_line


def test_auto_matches_the_optimiser_and_lists_every_strategy_that_fits():
    calc = calculate(PAPER_PROFILE, 128_000)
    best = optimise(PAPER_PROFILE, 128_000)
    assert calc.error is None and calc.chosen == best == calc.best
    assert set(calc.per_strategy) == set(STRATEGIES)
    assert calc.notices == [] and calc.costs.largest_call_tokens == best.largest_call_tokens


def test_manual_configuration_notices_and_delta():
    calc = calculate(PAPER_PROFILE, 16_000, "iterdrag", manual=(1000, 256, 2))
    assert (calc.chosen.strategy, calc.chosen.k, calc.chosen.m, calc.chosen.n) == ("iterdrag", 1000, 256, 2)
    assert any("over the budget" in n for n in calc.notices) and any("context window" in n for n in calc.notices)
    assert calc.delta_vs_best == pytest.approx(calc.chosen.predicted_score - calc.best.predicted_score)
    shown = {m["label"]: m for m in headline(calc, PAPER_PROFILE, CostModel(), manual=True)}
    assert shown["Predicted EM"]["delta"].endswith("vs best")


def test_best_iterdrag_with_one_iteration_is_flagged():
    calc = calculate(PAPER_PROFILE, 128_000, "iterdrag")
    assert calc.chosen.n == 1 and any("self-ask clothes" in n for n in calc.notices)


def test_nothing_fits_is_one_line():
    calc = calculate(PAPER_PROFILE, 10)
    assert calc.chosen is None and calc.error.startswith("nothing fits")


def test_headline_and_summary_read_well_at_1k():
    calc = calculate(PAPER_PROFILE, 1_000)
    shown = {m["label"]: m["value"] for m in headline(calc, PAPER_PROFILE, CostModel())}
    assert shown["Cost per query"] != "$0.0000" and any(ch in "123456789" for ch in shown["Cost per query"])
    assert "of a 1M context window" in summary_line(calc)
    unknown = calculate(replace(PAPER_PROFILE, context_window=None), 1_000)
    assert "unknown context window" in summary_line(unknown)


def test_the_last_point_and_diminishing_returns_are_read_off_the_frontier():
    """Issue #23 (3): going from 128k to 5M bought +1.6 EM for many times the monthly cost, unflagged."""
    calc = calculate(PAPER_PROFILE, 5_000_000)
    value, chosen = calc.value, calc.chosen
    assert value.below["score"] >= chosen.predicted_score - 1 and value.below["month_usd"] < calc.costs.cost_per_month_usd
    assert value.last_point_month_usd == pytest.approx(calc.costs.cost_per_month_usd - value.below["month_usd"])
    assert value.near["score"] >= chosen.predicted_score - 2 and value.cost_ratio >= 5
    assert value.warning.startswith("Diminishing returns") and f"{value.cost_ratio:.0f}x" in value.warning
    small = calculate(PAPER_PROFILE, 16_000).value
    assert small.warning is None and small.cost_ratio < 5  # at 16k the last points are still cheap


def test_the_window_note_appears_only_where_the_window_decides():
    capped = calculate(PAPER_PROFILE, 5_000_000)  # one DRAG call would need more than 1M tokens
    assert any(n.startswith("The context window caps this pick") for n in capped.notices)
    for budget in (16_000, 128_000, 1_000_000):  # no call can exceed 1M within these budgets
        assert not any("context window caps" in n for n in calculate(PAPER_PROFILE, budget).notices)
