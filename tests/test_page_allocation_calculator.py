"""The Allocation calculator page: renders in AppTest, reacts to the budget, works in a real browser."""

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "allocation_calculator.py")


def metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


@pytest.fixture
def app():
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_renders_with_headline_metrics_and_plots(app):
    shown = metrics(app)
    assert shown["Strategy"] == "drag"  # the paper model's choice at the 128k default
    assert shown["Tokens per question"] == "127k"
    assert len(app.get("plotly_chart")) == 4  # frontier, heatmap, cost, fidelity
    assert len(app.get("download_button")) == 2


def test_text_budget_moves_the_slider_and_the_answer(app):
    before = metrics(app)
    app.text_input(key="alloc_budget_text").set_value("5M").run()
    assert not app.exception
    after = metrics(app)
    assert app.select_slider(key="alloc_budget_slider").value == 5_000_000
    assert after["Tokens per question"] != before["Tokens per question"]
    assert float(after[next(k for k in after if k.startswith("Predicted"))]) > \
        float(before[next(k for k in before if k.startswith("Predicted"))])


def test_slider_updates_the_text_box(app):
    app.select_slider(key="alloc_budget_slider").set_value(16_000).run()
    assert app.text_input(key="alloc_budget_text").value == "16k"
    assert metrics(app)["Tokens per question"].endswith("k")


def test_invalid_budget_shows_an_error_and_keeps_the_last_answer(app):
    before = metrics(app)
    app.text_input(key="alloc_budget_text").set_value("-3").run()
    assert any("invalid budget" in e.value for e in app.error)
    assert metrics(app) == before


def test_manual_mode_flags_over_budget(app):
    app.radio(key="alloc_mode").set_value("Manual k, m, n").run()
    app.selectbox(key="alloc_strategy").set_value("iterdrag").run()
    app.slider(key="alloc_k").set_value(1000).run()
    app.slider(key="alloc_m").set_value(256).run()
    assert not app.exception
    assert metrics(app)["Strategy"] == "iterdrag" and metrics(app)["k · m · n"] == "1000 · 256 · 2"
    assert any("over the budget" in w.value for w in app.warning)


def test_dataset_changes_the_scale(app):
    before = metrics(app)
    app.selectbox(key="alloc_dataset").set_value("musique").run()
    assert not app.exception
    label = next(k for k in before if k.startswith("Predicted"))
    assert float(metrics(app)[label]) < float(before[label])  # MuSiQue EM is far lower in Table 1


def test_a_fitted_profile_can_be_chosen(tmp_path, monkeypatch):
    from ragscale.allocation import Profile, save_profile

    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path))
    save_profile(Profile(name="fitted to runs (test)", a=(0.2, 0.05, 0.3), b=(0.0, 0.0, 0.0), c=-0.2,
                         mean=30.0, std=10.0, r2=0.8, n_rows=40))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    at.selectbox(key="alloc_profile").set_value("fitted to runs (test)").run()
    assert not at.exception, at.exception
    shown = metrics(at)
    assert "Predicted score" in shown and 20 < float(shown["Predicted score"]) < 42


@pytest.mark.parametrize("typed", ["1e12", "1000000000000", "99999999999999999999999"])
def test_huge_typed_budgets_get_one_clear_error(app, typed):
    before = metrics(app)
    app.text_input(key="alloc_budget_text").set_value(typed).run()
    assert not app.exception, app.exception  # was a TypeError from np.log in the slider snap
    assert any("use 1 to 1,000,000,000 tokens" in e.value for e in app.error)
    assert metrics(app) == before


def test_exponent_budget_is_read_like_the_cli(app):
    app.text_input(key="alloc_budget_text").set_value("1e6").run()
    assert not app.exception
    assert app.select_slider(key="alloc_budget_slider").value == 1_000_000


def test_a_tiny_cost_per_query_is_not_shown_as_zero(app):
    app.text_input(key="alloc_budget_text").set_value("1k").run()
    cost = metrics(app)["Cost per query"]
    assert cost.startswith("$0.0000") and any(ch in "123456789" for ch in cost), cost


def test_5m_is_spent_by_iterdrag_within_the_window(app):
    app.text_input(key="alloc_budget_text").set_value("5M").run()
    shown = metrics(app)
    assert shown["Strategy"] == "iterdrag"
    assert any("largest call" in c.value and "1M context window" in c.value for c in app.caption)


def test_manual_call_over_the_window_is_flagged(app):
    app.radio(key="alloc_mode").set_value("Manual k, m, n").run()
    app.selectbox(key="alloc_strategy").set_value("drag").run()
    app.text_input(key="alloc_budget_text").set_value("5M").run()
    app.slider(key="alloc_k").set_value(1000).run()
    app.slider(key="alloc_m").set_value(64).run()
    assert not app.exception
    assert any("context window" in w.value and "cannot run" in w.value for w in app.warning)


def test_iterdrag_with_one_iteration_is_called_what_it_is(app):
    app.selectbox(key="alloc_strategy").set_value("iterdrag").run()  # the best IterDRAG at 128k has n = 1
    assert metrics(app)["k · m · n"].endswith("· 1")
    assert any("self-ask clothes" in w.value for w in app.warning)


def test_fidelity_section(app):
    assert any(h.value == "How well does the model reproduce the paper?" for h in app.subheader)
    frame = next(d.value for d in app.dataframe if "dataset" in d.value.columns)
    assert len(frame) == 20 and {"dataset", "budget", "same winner", "gap"} <= set(frame.columns)
    text = " ".join(m.value for m in app.markdown)
    assert "of 20 cells" in text and "Why they disagree" in text


def test_prices_and_traffic_sit_in_the_page_not_a_collapsed_sidebar(app):
    """Issue #23 (3): the inputs a budget owner changes were in collapsed sidebar expanders."""
    main_labels = {w.label for w in app.main.number_input} | {w.label for w in app.main.selectbox}
    assert {"Queries per day", "Price sheet"} <= main_labels
    assert not any("Queries per day" == w.label for w in app.sidebar.number_input)
    tiers = next(d.value for d in app.main.dataframe if "input $/1M" in d.value.columns)  # the sheet, editable
    assert list(tiers["input $/1M"]) == [0.075, 0.15] and list(tiers["output $/1M"]) == [0.30, 0.60]


def test_1m_shows_the_long_prompt_tier_and_the_last_point(app):
    app.text_input(key="alloc_budget_text").set_value("1M").run()
    text = " ".join(c.value for c in app.caption) + " ".join(m.value for m in app.markdown)
    assert "1 call at prompts > 128k" in text
    assert "The last EM point costs $" in text
    assert any(w.value.startswith("Diminishing returns") for w in app.warning)
    bill = next(d.value for d in app.dataframe if "tier" in d.value.columns)
    assert list(bill["tier"]) == ["prompts > 128k"]


def test_queries_per_day_in_the_page_moves_the_monthly_cost(app):
    before = metrics(app)["Cost per month"]
    app.number_input(key="alloc_qpd").set_value(10_000.0).run()
    assert not app.exception
    assert metrics(app)["Cost per month"] != before


@pytest.mark.browser
def test_browser_budget_change(app_url, page, artifacts_dir):
    from tests.browser_helpers import wait_for_app

    # The home page first: a fresh server that is asked for a page before app.py has run once
    # serves it without app.py's navigation (Streamlit's pages/ fallback).
    page.goto(app_url)
    page.get_by_text("Engine:").first.wait_for()  # app.py has run once: its navigation is registered
    page.goto(f"{app_url}/allocation_calculator")
    wait_for_app(page)
    page.get_by_text("Tokens per question").first.wait_for()

    def tokens_metric() -> str:
        card = page.locator("[data-testid='stMetric']").filter(has_text="Tokens per question").first
        return card.locator("[data-testid='stMetricValue']").inner_text().strip()

    before = tokens_metric()
    box = page.get_by_label(re.compile("^Budget \\(e.g."))
    box.fill("1M")
    box.press("Enter")
    page.wait_for_function(
        "(old) => [...document.querySelectorAll('[data-testid=stMetric]')]"
        ".some(e => e.innerText.includes('Tokens per question') && !e.innerText.includes(old))",
        arg=before, timeout=60_000,
    )
    wait_for_app(page)
    after = tokens_metric()
    assert after != before and after.endswith("k")
    page.wait_for_selector(".js-plotly-plot")
    page.wait_for_timeout(1500)  # let plotly finish drawing before the screenshot
    page.set_viewport_size({"width": 1400, "height": 3400})  # Streamlit scrolls inside; show the whole page
    page.wait_for_timeout(1000)
    page.screenshot(path=str(artifacts_dir / "allocation_calculator.png"), full_page=True)
    # The fidelity section: its chart has one panel per Table 1 dataset, its table 20 rows.
    heading = page.get_by_text("How well does the model reproduce the paper?").first
    heading.scroll_into_view_if_needed()
    charts = page.locator(".js-plotly-plot")
    assert charts.count() == 4
    titles = charts.nth(3).locator("text.annotation-text").all_text_contents()
    assert {"bamboogle", "hotpotqa", "musique", "2wikimultihopqa"} <= set(titles)
    box = heading.bounding_box()
    page.screenshot(path=str(artifacts_dir / "allocation_fidelity.png"),
                    clip={"x": 0, "y": max(box["y"] - 20, 0), "width": 1400, "height": 1250})
