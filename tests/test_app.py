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
