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


# ---- hostile paths and k = 0 grids (ragscale.deploy, ragscale.store) -------------------------

def _page_on(results: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["scaling_runs.results_path"] = results
    return at.run()


def test_results_box_opens_stores_read_only_and_gives_one_line_for_anything_else(tmp_path):
    import os
    import sqlite3

    plain = tmp_path / "plain.sqlite"  # a copied store in rollback-journal mode
    con = sqlite3.connect(plain)
    con.execute("CREATE TABLE records (kind TEXT, key TEXT, record TEXT, added REAL, PRIMARY KEY (kind, key))")
    con.commit()
    con.close()
    before = plain.read_bytes()
    at = _page_on(str(plain))
    assert not at.exception, at.exception
    assert any("No finished rows yet" in i.value for i in at.info)
    assert plain.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["plain.sqlite"]
    os.mkfifo(tmp_path / "pipe.sqlite")
    for typed, says in (("/etc/passwd", "not a ragscale results store"), ("/dev/zero", "not a regular file"),
                        (str(tmp_path / "pipe.sqlite"), "not a regular file"),
                        (str(tmp_path / "new" / "r.sqlite"), "no results file at")):
        at = _page_on(typed)
        assert not at.exception, (typed, at.exception)
        assert any(says in i.value for i in at.info), (typed, [i.value for i in at.info])
    assert not (tmp_path / "new").exists()


def test_shared_mode_confines_every_path_box(tmp_path, monkeypatch):
    results, data = tmp_path / "results", tmp_path / "data"
    results.mkdir()
    data.mkdir()
    (data / "link.json").symlink_to("/etc/passwd")
    monkeypatch.setenv("RAGSCALE_MODE", "shared")
    monkeypatch.setenv("RAGSCALE_RESULTS_DIR", str(results))
    monkeypatch.setenv("RAGSCALE_DATA_ROOTS", str(data))
    for typed in ("/etc/passwd", "../../../../etc/passwd", str(tmp_path / "nothing.sqlite")):
        at = _page_on(typed)
        assert not at.exception, at.exception
        assert any("is not a results file this server offers" in i.value for i in at.info), [i.value for i in at.info]
    at = _page_on(str(ROOT / "data" / "demo_results.sqlite"))  # the shipped demo sweep stays viewable
    assert not at.exception and not any("this server offers" in i.value for i in at.info)
    at.radio(key="sr_dataset_kind").set_value("path").run()
    for typed in ("/dev/zero", "/etc/passwd", "link.json", "../link.json"):
        at.text_input(key="sr_path").set_value(typed).run()
        assert not at.exception, at.exception
        assert any("is not a dataset file this server offers" in e.value for e in at.error), [e.value for e in at.error]
        assert at.button(key="sr_start").disabled
    at.radio(key="sr_dataset_kind").set_value("demo (generated)").run()
    for typed in ("/etc/passwd", "../escape.sqlite", "sub/x.sqlite"):
        at.text_input(key="sr_out").set_value(typed).run()
        at.button(key="sr_start").click().run()
        assert not at.exception, at.exception
        assert any("sweeps here write a .sqlite file directly in" in e.value for e in at.error)
    assert sorted(p.name for p in results.iterdir()) == []


def test_a_k_0_sweep_started_on_the_page_finishes(tmp_path, monkeypatch):
    from ragscale.rag.jobs import REGISTRY

    monkeypatch.setattr("pages.common.get_engine", lambda: ScriptedEngine(lambda *args: "Paris"))
    out = tmp_path / "k0.sqlite"
    at = _page_on(str(tmp_path / "none.sqlite"))
    at.multiselect(key="sr_strategies").set_value(["zero-shot", "many-shot"])
    at.text_input(key="sr_k").set_value("0")
    at.text_input(key="sr_m").set_value("0,1")
    at.text_input(key="sr_n").set_value("1")
    at.number_input(key="sr_limit").set_value(2)
    at.text_input(key="sr_out").set_value(str(out))
    at.button(key="sr_start").click().run()
    assert not at.exception, at.exception
    job = REGISTRY.job_for(out)
    assert job is not None, [e.value for e in at.error]
    job.thread.join(60)
    assert job.status == "finished", job.error
    at.run()
    assert not at.exception, at.exception
    assert ResultsStore(out, read_only=True).count(KIND) == job.total == 4  # 2 configurations x 2 questions
    assert not at.error


def test_a_sweep_into_a_file_that_is_no_store_never_makes_an_engine(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr("pages.common.get_engine", lambda: made.append(1) or ScriptedEngine(lambda *a: "x"))
    at = _page_on(str(tmp_path / "none.sqlite"))
    (tmp_path / "notes.sqlite").write_text("my notes, not a database " * 50)
    at.text_input(key="sr_out").set_value(str(tmp_path / "notes.sqlite")).run()
    at.button(key="sr_start").click().run()
    assert not at.exception, at.exception
    assert any("not a ragscale results store" in e.value for e in at.error) and not made


def test_a_store_of_other_rows_is_one_line_not_a_crash(tmp_path):
    store = ResultsStore(tmp_path / "odd.sqlite")
    store.add(KIND, "a", {"x": 1})  # a ragscale store, but not rows a sweep wrote
    at = _page_on(str(tmp_path / "odd.sqlite"))
    assert not at.exception, at.exception
    assert any("not ragscale sweep rows" in e.value for e in at.error)
