"""The Scaling runs page: renders in AppTest on a small store; in Chromium a real tiny sweep shows its point."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ragscale.rag.sweep import KIND, run_sweep
from ragscale.store import ResultsStore
from tests.fakes import ScriptedEngine
from tests.test_rag_strategies import WordRetriever, tiny_dataset
from tests.test_sweep import SPEC, reader

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "scaling_runs.py")


@pytest.fixture
def small_results(tmp_path) -> Path:
    data = tiny_dataset()
    path = tmp_path / "results.sqlite"
    run_sweep(SPEC, ScriptedEngine(reader), ResultsStore(path), dataset=data, retriever=WordRetriever(data.corpus))
    return path


def test_page_renders_results_plots_table_and_drill_down(small_results):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["scaling_runs.results_path"] = str(small_results)
    at.run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 2
    assert any("configurations" in c.value and "question rows" in c.value for c in at.caption)
    assert any("R² =" in c.value for c in at.caption)  # the model was fitted to these runs
    # drill into an IterDRAG question: its sub-queries are listed and every call's prompt is shown
    config = at.selectbox(key="sr_cfg")
    iter_index = next(i for i, label in enumerate(config.options) if label.startswith("iterdrag k=2"))
    config.set_value(iter_index).run()
    assert not at.exception, at.exception
    assert len(at.table) == 1 and "follow-up" in at.table[0].value.columns
    assert any(e.label.startswith("Call 1 · follow_up") for e in at.expander)
    assert any("Where was" in c.value and "Follow up:" in c.value for c in at.code)


def test_page_without_results_explains_what_to_do(tmp_path):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["scaling_runs.results_path"] = str(tmp_path / "none.sqlite")
    at.run()
    assert not at.exception, at.exception
    assert any("no results file at" in i.value for i in at.info)


def test_page_rejects_a_bad_grid(tmp_path):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["scaling_runs.results_path"] = str(tmp_path / "none.sqlite")
    at.run()
    at.text_input(key="sr_k").set_value("1,two")
    at.button(key="sr_start").click().run()
    assert not at.exception, at.exception
    assert any("k: use comma-separated whole numbers" in e.value for e in at.error)


@pytest.mark.browser
@pytest.mark.model
def test_browser_tiny_sweep_shows_its_point(app_url, page, artifacts_dir, tmp_path):
    from tests.browser_helpers import wait_for_app

    out = tmp_path / "browser_sweep.sqlite"
    page.goto(f"{app_url}/scaling_runs")
    wait_for_app(page)
    page.get_by_text("Run a sweep").click()
    strategies = page.locator("[data-testid='stMultiSelect']").filter(has_text="Strategies").locator("input")
    strategies.click()
    strategies.press("Backspace")  # leave rag only: drop iterdrag, then drag
    strategies.press("Backspace")
    page.keyboard.press("Escape")
    page.get_by_label("k (documents)").fill("1")
    page.get_by_label("m (demonstrations)").fill("0")
    page.get_by_label("n (IterDRAG iterations)").fill("1")
    page.get_by_label("Questions").fill("2")
    page.get_by_label("Results file (resumed if it exists)").fill(str(out))
    page.get_by_label("Results file (resumed if it exists)").press("Enter")
    wait_for_app(page)
    page.get_by_role("button", name="Start sweep").click()
    # the background sweep loads the model and the index, then its rows arrive in the live view
    page.get_by_text("1 configurations · 2 question rows").wait_for(timeout=600_000)
    wait_for_app(page)
    assert ResultsStore(out).count(KIND) == 2
    # the configuration's point is drawn in the observed-score chart
    page.wait_for_selector(".js-plotly-plot .scatterlayer .point", timeout=30_000)
    page.get_by_text("Run a sweep").click()  # fold the form so the charts fit the shot
    wait_for_app(page)
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts_dir / "scaling_runs.png"))


def test_first_start_shows_the_shipped_demo_sweep_with_the_paper_fit():
    shipped = ROOT / "data" / "demo_results.sqlite"
    if not shipped.exists():
        pytest.skip("data/demo_results.sqlite not made yet (make demo-results)")
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert at.text_input(key="scaling_runs.results_path").value == str(shipped)
    assert any("question rows" in c.value and "SmolLM2" in c.value for c in at.caption)
    at.toggle(key="sr_paper").set_value(True).run()
    assert not at.exception, at.exception
    assert "paper's fit" in at.get("plotly_chart")[1].proto.spec


class GatedEngine(ScriptedEngine):
    """Every generate call waits for ``gate``: the sweep stays running while the test looks."""

    def __init__(self):
        super().__init__(reader)
        self.gate = threading.Event()

    def generate(self, prompts, params):
        if not self.gate.wait(30):
            raise TimeoutError("the test never opened the gate")
        return super().generate(prompts, params)


def _progress_labels(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def test_two_tabs_watch_one_sweep_and_a_cancel_in_one_shows_in_the_other(tmp_path):
    from ragscale.rag.jobs import REGISTRY

    data = tiny_dataset()
    out = tmp_path / "shared.sqlite"
    engine = GatedEngine()
    job = REGISTRY.start(SPEC, engine, out, engine_label="gated", dataset=data, retriever=WordRetriever(data.corpus))
    try:
        tabs = []
        for _ in range(2):  # two browser tabs are two Streamlit sessions over the one process-wide registry
            at = AppTest.from_file(PAGE, default_timeout=60)
            at.session_state["scaling_runs.results_path"] = str(out)
            at.run()
            assert not at.exception, at.exception
            tabs.append(at)
        for at in tabs:
            assert any(label.startswith("running") for label in _progress_labels(at)), _progress_labels(at)
        first, second = tabs
        first.button(key=f"sr_cancel_{job.id}").click().run()
        assert job.cancel.is_set()
        second.run()
        assert any(label.startswith("cancelling") for label in _progress_labels(second)), _progress_labels(second)
        engine.gate.set()
        job.thread.join(30)
        second.run()
        assert not second.exception, second.exception
        assert any(label.startswith("cancelled") for label in _progress_labels(second)), _progress_labels(second)
        assert job.result is not None and job.result.cancelled
        # the rows finished before the cancel are in the store (a later sweep resumes from them)
        assert len(ResultsStore(out).records(KIND)) == job.result.rows_written
    finally:
        job.cancel.set()
        engine.gate.set()
        job.thread.join(30)
