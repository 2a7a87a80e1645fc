"""Issue #23 (4): the demo QA world must not contradict itself or the calculator.

On the bundled demo sweep (data/demo_results.sqlite) and the shipped engine's model, as the
Explorer shows them: the pick, its notices, the chart's legend and axes, the export.
"""

from __future__ import annotations

import pytest

from ragscale.allocation import PAPER_PROFILE
from ragscale.allocation.calculator import calculate
from ragscale.engines.model_files import MODEL_NAME
from ragscale.explorer import screen as V
from ragscale.explorer.state import ExplorerState
from ragscale.plots.explorer import curves_figure

DEMO = ExplorerState(dataset="demo", pinned=False)


def demo_screen(**changes) -> V.Screen:
    return V.explorer(DEMO.with_(**changes), engine_model=MODEL_NAME)


def test_a_1k_budget_never_picks_iterdrag_without_retrieval():
    """It picked "iterdrag k=0 m=2 n=1", predicted 3%: the only IterDRAG under 1k tokens (the model's token
    sizes) retrieves nothing, which the tree cannot run and the fitted model scores like zero-shot."""
    screen = demo_screen(budget=1_000)
    assert screen.allocation.k >= 1
    assert any("nothing fits a budget of 1,000 tokens" in w and "1,025" in w for w in screen.warnings)
    assert not screen.suggestion.startswith("Optimised")  # the pinned fallback is not called optimised


@pytest.mark.parametrize("budget", [2_000, 16_000, 128_000, 1_000_000])
@pytest.mark.parametrize("strategy", ["auto", "drag", "iterdrag"])
def test_the_explorer_and_the_calculator_pick_alike(budget, strategy):
    """One pick: at 16k the Explorer said "iterdrag k=12 m=1 n=1" while the calculator calls IterDRAG
    with n = 1 'DRAG in self-ask clothes' and says so; both now come from ``calculator.pick``."""
    allocation, notices = V.current_allocation(ExplorerState(budget=budget, strategy=strategy, pinned=False),
                                               V.paper_model())
    calc = calculate(PAPER_PROFILE, budget, strategy)
    assert (allocation.strategy, allocation.k, allocation.m, allocation.n) == \
        (calc.chosen.strategy, calc.chosen.k, calc.chosen.m, calc.chosen.n)
    assert allocation.predicted_score == pytest.approx(calc.chosen.predicted_score)
    assert notices == calc.notices


def test_iterdrag_with_one_iteration_is_flagged_in_the_explorer_too():
    screen = demo_screen(budget=16_000, strategy="iterdrag")
    assert screen.allocation.n == 1
    assert any("self-ask clothes" in w for w in screen.warnings)


@pytest.mark.parametrize("budget", [128_000, 10_000_000])
def test_a_pick_frozen_by_the_context_window_says_so(budget):
    screen = demo_screen(budget=budget)
    assert screen.allocation.largest_call_tokens <= 8_192 < screen.allocation.effective_tokens * 2
    assert any("context window caps this pick" in w and "8,192" in w and "larger budget buys nothing" in w
               for w in screen.warnings)


def test_one_scale_and_name_for_predicted_scores():
    """The export said predicted_score 0.2518 with metric "" while the calculator said 49.8 (EM)."""
    screen = demo_screen(budget=16_000)
    exported = screen.export()["configuration"]
    assert exported["metric"] == "acc" and 5 < exported["predicted_score"] < 100
    shown = next(m for m in screen.headline() if m.label.startswith("Predicted"))
    assert shown.value == f"{exported['predicted_score'] / 100:.0%}"
    assert calculate(PAPER_PROFILE, 16_000).chosen.to_dict()["metric"] == "em"


def test_every_chart_element_is_in_the_legend_and_the_fitted_curve_stays_on_its_data():
    screen = demo_screen(budget=1_000)
    fig = curves_figure(screen.curves, screen.state.budget, screen.allocation.to_dict())
    names = [t.name for t in fig.data]
    assert all(name and t.showlegend is not False for name, t in zip(names, fig.data)), names
    assert ["fitted", "runs", "paper →", "current", "budget"] == names
    assert len(fig.layout.shapes) == 1  # the budget line: its legend entry is "budget"
    low, high = screen.curves.domain
    fitted = fig.data[0]
    assert fitted.name == "fitted" and low <= min(fitted.x) and max(fitted.x) <= high
    assert "fitted: the best iterdrag (k ≥ 1) per budget" in screen.curves.caption
    assert high == 5_457  # the longest run of the demo sweep


@pytest.mark.parametrize("budget", [1_000, 16_000, 10_000_000])
def test_axis_ticks_are_round(budget):
    """The right axis read 7.9, 15.7, 23.6 ..."""
    screen = demo_screen(budget=budget)
    fig = curves_figure(screen.curves, screen.state.budget, screen.allocation.to_dict())
    for axis in (fig.layout.yaxis, fig.layout.yaxis2):
        assert axis.dtick in (1, 2, 5, 10, 20, 25, 50) and axis.range[0] == 0 and axis.range[1] % axis.dtick == 0


def open_page(app_url, page, path):
    from tests.browser_helpers import wait_for_app

    page.goto(app_url)  # app.py first: its navigation is registered before a deep link
    page.get_by_text("Engine:").first.wait_for()
    page.goto(f"{app_url}{path}")
    wait_for_app(page)


@pytest.mark.browser
def test_browser_demo_world_legend_names_every_element(app_url, page, artifacts_dir):
    page.set_viewport_size({"width": 1280, "height": 720})
    open_page(app_url, page, "/explorer?dataset=demo&budget=128k&pinned=0")
    chart = page.locator("[data-testid='stPlotlyChart']", has_text="tokens per question")
    chart.locator(".legendtext").first.wait_for(timeout=60_000)
    texts = "els => els.map(e => e.textContent)"  # SVG text has no innerText
    legend = chart.locator(".legendtext").evaluate_all(texts)
    assert ["fitted", "runs", "paper →", "current", "budget"] == legend
    ticks = chart.locator(".yaxislayer-above .ytick text, .overaxes-above .y2tick text").evaluate_all(texts)
    assert ticks and all(t.isdigit() for t in ticks), ticks  # 0, 10, 20 ..., never 7.9 or 15.7
    assert page.get_by_text("The context window caps this pick").first.is_visible()
    page.screenshot(path=str(artifacts_dir / "explorer_demo_128k_1280x720.png"))
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    chart.screenshot(path=str(artifacts_dir / "explorer_demo_curve_128k.png"))


@pytest.mark.browser
def test_browser_calculator_shows_prices_and_the_tier_without_opening_anything(app_url, page, artifacts_dir):
    page.set_viewport_size({"width": 1280, "height": 720})
    open_page(app_url, page, "/allocation_calculator")
    box = page.get_by_role("textbox", name="Budget (e.g. 16k, 1M, 5_000_000)")
    box.fill("1M")
    box.press("Enter")
    page.get_by_text("1 call at prompts > 128k").first.wait_for(timeout=60_000)
    queries = page.get_by_role("spinbutton", name="Queries per day")
    assert queries.is_visible() and not page.locator("[data-testid='stSidebar']").get_by_text("Queries per day").count()
    assert page.get_by_text("Diminishing returns").first.is_visible()
    page.screenshot(path=str(artifacts_dir / "allocation_calculator_1m_1280x720.png"))
    queries.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts_dir / "allocation_calculator_prices_1280x720.png"))
