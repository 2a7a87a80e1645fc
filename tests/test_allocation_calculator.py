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
