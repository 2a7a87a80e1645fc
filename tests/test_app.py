"""The landing page: renders, names the active engine, and every link opens a page that renders."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["pages/explorer.py", "pages/allocation_calculator.py", "pages/scaling_runs.py", "pages/tree_search.py",
         "pages/engine.py"]


def landing() -> AppTest:
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.run()
    assert not app.exception, app.exception
    return app


def test_landing_page_links_every_page_and_shows_the_engine():
    app = landing()
    assert any("Active engine: **embedded CPU" in info.value for info in app.info)
    markdown = " ".join(m.value for m in app.markdown)
    for heading in ("DRAG and IterDRAG", "ETS tree search"):
        assert heading in " ".join(h.value for h in app.subheader)
    assert "effective context length" in markdown and "KV cache" in markdown
    links = app.get("page_link")
    helpers = {"common.py", "widgets.py", "explorer_view.py"}  # shared page code, not pages
    assert sorted(p.name for p in (ROOT / "pages").glob("*.py") if p.name not in helpers) == sorted(
        Path(p).name for p in PAGES)
    assert len(links) == len(PAGES)
    assert [link.proto.page for link in links] == [Path(p).stem for p in PAGES]  # in the menu's order


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_through_the_app_without_an_error(page):
    app = landing()
    app.switch_page(page).run()
    assert not app.exception, app.exception
    assert app.title and app.title[0].value  # the page drew its own content inside the app's frame


def test_sidebar_follows_the_engine_warm_up(monkeypatch):
    from ragscale.explorer import live
    from tests.fakes import ScriptedEngine

    captions = lambda app: " ".join(c.value for c in app.sidebar.caption)  # noqa: E731
    assert "Not started yet" in captions(landing())
    monkeypatch.setattr(live, "warm_status", lambda spec: live.WarmStatus("warming", "building the demo index", 12.0))
    assert "Warming up: building the demo index (12 s)" in captions(landing())
    engine = ScriptedEngine(lambda *a: " x\n")
    monkeypatch.setattr(live, "warm_status", lambda spec: live.WarmStatus("ready", "", 7.0))
    monkeypatch.setattr(live, "started_engine", lambda spec: engine)
    text = captions(landing())
    assert "Ready (warmed up in 7 s)" in text and f"Model: {engine.info.model}" in text and "Not started" not in text


def test_a_crashing_page_shows_a_friendly_box_and_logs_the_details(monkeypatch, caplog):
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    app.run()  # imports pages.common (the sidebar keeps its own describe_spec) first
    assert not app.exception, app.exception

    def broken(spec):
        raise RuntimeError("internal detail /srv/secret/path")

    # the landing page, run by app.py's navigation, now crashes
    monkeypatch.setattr("ragscale.engines.describe_spec", broken)
    app.run()
    assert not app.exception, app.exception  # nothing reached Streamlit's own error display
    shown = " ".join(e.value for e in app.error)
    assert "unexpected error" in shown and "secret" not in shown
    logged = [r for r in caplog.records if r.name == "ragscale.app"]
    assert logged and "internal detail" in str(logged[0].exc_info[1])


def test_streamlit_config_hides_error_details_and_does_not_watch_files():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"  # "false" would still show tracebacks
    assert config["server"]["fileWatcherType"] == "none"


def test_the_app_leaves_openmp_spinning_and_the_engine_picks_its_threads():
    """The app no longer makes OpenMP threads sleep (15 s against 9.6 s for the Demo QA live view on
    free cores); contention is met by the engine's thread count instead (tests/test_spare_cores.py)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import os, sys; src = open('app.py').read(); exec(src[:src.index('import streamlit')]); "
            "print(os.environ.get('OMP_WAIT_POLICY', 'unset'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["unset"]
