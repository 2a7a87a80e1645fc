"""The landing page: renders, names the active engine, and links every page."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def test_landing_page_links_every_page_and_shows_the_engine():
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    app.run()
    assert not app.exception, app.exception
    assert any("Active engine: **embedded CPU" in info.value for info in app.info)
    pages = sorted(p.name for p in (ROOT / "pages").glob("*.py") if p.name != "common.py")
    assert pages == ["allocation_calculator.py", "engine.py", "explorer.py", "scaling_runs.py", "tree_search.py"]
    markdown = " ".join(m.value for m in app.markdown)
    for heading in ("DRAG and IterDRAG", "ETS tree search"):
        assert heading in " ".join(h.value for h in app.subheader)
    assert "effective context length" in markdown and "KV cache" in markdown
    links = app.get("page_link")
    assert len(links) == len(pages)


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
