"""Issue #23 (11): the Scaling runs form says how big and how long a sweep is, a running sweep says
how long it has left, and the tables read as numbers people use."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from ragscale.rag.plan import Eta, fmt_duration, measured_rates, plan_sweep
from ragscale.rag.sweep import config_table, load_rows

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "scaling_runs.py")
DEMO = ROOT / "data" / "demo_results.sqlite"


@pytest.fixture(scope="module")
def demo_page():
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["scaling_runs.results_path"] = str(DEMO)
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_default_grid_is_small_and_sized_before_it_starts(demo_page):
    """The form defaulted to 3 strategies x 4 k x 3 m x 2 n x 20 questions (720 runs) and said nothing."""
    assert demo_page.number_input(key="sr_limit").value <= 10
    plan = next(i.value for i in demo_page.info if "question runs" in i.value)
    assert "12 configurations x 8 questions = **96 question runs**" in plan
    assert "about" in plan and "per model call" in plan and "measured on 256 stored question rows" in plan


def test_the_estimate_follows_the_grid(demo_page):
    demo_page.text_input(key="sr_k").set_value("0,1,2,5").run()
    plan = next(i.value for i in demo_page.info if "question runs" in i.value)
    assert "24 configurations x 8 questions = **192 question runs**" in plan


def test_rates_are_measured_on_the_stored_rows_and_add_up():
    rows = load_rows(DEMO)
    rates = measured_rates(rows)
    assert rates.rows == int((rows["status"] == "ok").sum()) == 256
    assert rates.per_call_s > 0 and rates.per_1k_tokens_s >= 0 and 0.2 < rates.length_scale < 2
    # planned over the grid the demo sweep ran, the estimate is within a factor of two of what it took
    plan = plan_sweep(["zero-shot", "many-shot", "rag", "drag", "iterdrag"], [1, 3], [0, 1], [1, 2], 16, rates)
    first_command = rows[~((rows["k"] == 5) & rows["strategy"].isin(["rag", "drag"]))]
    assert plan.rows == len(first_command) == 224
    assert 0.5 < plan.seconds / first_command["seconds"].sum() < 2


def test_eta_measures_the_current_phase_only():
    eta = Eta()
    eta.update(0.0, 0, 100)
    assert eta.seconds_left(5.0) is None  # nothing done yet: no rate to go on
    eta.update(10.0, 10, 100)
    assert eta.seconds_left(10.0) == pytest.approx(90.0)  # 1 row/s, 90 rows to go
    eta.update(11.0, 60, 100, "resuming: 50 rows already stored")  # skipped rows are not speed
    eta.update(21.0, 65, 100)
    assert eta.seconds_left(21.0) == pytest.approx(70.0)  # 0.5 row/s since the resume
    assert fmt_duration(45) == "45 s" and fmt_duration(720) == "12 min" and fmt_duration(7500) == "2 h 05 min"


def test_tables_show_percent_and_whole_tokens_not_raw_floats(demo_page):
    """The tables showed 0.3125 and 1061.5625."""
    shown = next(d.value for d in demo_page.dataframe if "acc (%)" in d.value.columns)
    raw = config_table(load_rows(DEMO))
    assert 0.3125 in set(raw["acc"]) and 1061.5625 in set(raw["length_mean"])  # what used to be shown
    assert 31.2 in set(shown["acc (%)"]) and 1062 in set(shown["length_mean"])
    for column in shown.select_dtypes("number").columns:
        values = pd.to_numeric(shown[column], errors="coerce").dropna()
        assert ((values * 10).round(6) % 1 == 0).all(), column  # at most one decimal anywhere


def test_a_running_sweep_shows_time_left(tmp_path, monkeypatch):
    """Progress said only 'rows, seconds': no ETA."""
    import threading
    import time

    from ragscale.rag.jobs import REGISTRY, SweepJob
    from ragscale.rag.sweep import SweepSpec

    from ragscale.store import ResultsStore

    out = tmp_path / "running.sqlite"
    ResultsStore(out).close()  # the file the sweep writes to, still empty
    job = SweepJob(SweepSpec(), out, "scripted")
    release = threading.Event()
    job.thread = threading.Thread(target=release.wait, daemon=True)
    job.thread.start()
    clock = iter([100.0, 110.0, 110.0, 110.0])
    monkeypatch.setattr(time, "time", lambda: next(clock, 110.0))
    job.progress(0, 100, "running")
    job.progress(20, 100, "running")  # 2 rows/s for 10 s: 40 s left
    REGISTRY._jobs[job.id] = job
    try:
        at = AppTest.from_file(PAGE, default_timeout=60)
        at.session_state["scaling_runs.results_path"] = str(out)
        at.run(timeout=60)
        texts = [p.proto.text for p in at.get("progress")]
        assert any("20/100 rows" in t and "about 40 s left" in t for t in texts), texts
    finally:
        release.set()
        REGISTRY._jobs.pop(job.id, None)
