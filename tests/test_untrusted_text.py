"""Untrusted text is never rendered as markdown (issue #24, item 4): model names an engine
reports, link values, typed paths echoed in errors and stored records go through
``ragscale.formatting.md_literal`` on every page.

Each page is driven in AppTest with link and image syntax, and every string it hands Streamlit's
markdown renderer (markdown, captions, alerts, headers, labels, table cells) is parsed with
markdown-it (CommonMark, as Streamlit's renderer): no link or image may point at the planted host,
and no bare URL of it may be left for GFM's autolinker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from ragscale.formatting import md_literal
from tests.test_sglang_client_protocol import MODEL_INFO_0_5, SERVER_INFO_0_5, canned, ok  # noqa: F401

PAGES = Path(__file__).resolve().parent.parent / "pages"
IMAGE = "![](http://127.0.0.1:9/i)"
LINK = "[Sign in](http://127.0.0.1:9/login)"
HOSTILE = f"{IMAGE}{LINK} <http://127.0.0.1:9/a> www.evil.test :red[x] $x$"
_PARSER = MarkdownIt("commonmark")


def _links_and_images(source: str) -> list[str]:
    found = []
    for token in _PARSER.parse(source):
        for child in [token, *(token.children or [])]:
            if child.type in ("link_open", "image"):
                found.append(str(child.attrs.get("href") or child.attrs.get("src")))
    return found


def _rendered_text(source: str) -> str:
    return "".join(child.content for token in _PARSER.parse(source) for child in (token.children or [])
                   if child.type in ("text", "code_inline"))


_MARKDOWN_BODIES = {"Markdown", "Caption", "Error", "Warning", "Info", "Success", "Toast", "Title", "Header",
                    "Subheader", "Heading", "Table", "Expander", "Status", "UnknownElement", "Block"}


def _markdown_strings(at: AppTest) -> list[str]:
    """Every string of the page that Streamlit renders as markdown (bodies, labels, table cells)."""
    out = []

    def walk(node):
        # A widget's value (a typed URL in its box) is plain text; its label is markdown.
        names = ("label",) if type(node).__name__ not in _MARKDOWN_BODIES else ("value", "label", "body")
        for name in names:
            try:
                value = getattr(node, name, None)
            except Exception:  # noqa: BLE001 - some element types raise for attributes they lack
                value = None
            if isinstance(value, str):
                out.append(value)
            elif isinstance(value, pd.DataFrame):
                out.extend(str(v) for v in value.to_numpy().ravel())
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return out


def assert_nothing_renders_as_a_link(at: AppTest, planted: bool = True) -> None:
    assert not at.exception, at.exception
    strings = _markdown_strings(at)
    for source in strings:
        assert not [u for u in _links_and_images(source) if "127.0.0.1:9" in u], source
        assert "http://127.0.0.1:9" not in source and "www.evil.test" not in source, source  # GFM autolinks
    if planted:  # the value reached the page (escaped), so the check above was not vacuous
        assert any("127.0.0.1\\:9" in s for s in strings), strings


@pytest.mark.parametrize("text", [HOSTILE, IMAGE, LINK, "**bold** _it_ `code` # head\n- item\n1. x",
                                  ":material/home: a\\b [x]: http://127.0.0.1:9/ref", "<img src=x>", "&#91;x&#93;(y)"])
def test_md_literal_shows_the_text_as_typed_and_never_a_link(text):
    shown = md_literal(text)
    assert _links_and_images(shown) == []
    assert "<" not in _PARSER.render(shown).replace("<p>", "").replace("</p>", "")  # no HTML, no formatting
    # Reads as typed (the word joiners that break bare URLs are invisible).
    assert _rendered_text(shown).replace("\u2060", "") == " ".join(text.splitlines())


# ---- the pages ---------------------------------------------------------------------------------

@pytest.fixture
def hostile_server(canned):
    """A loopback SGLang look-alike whose model name is link and image syntax."""
    routes, url = canned
    routes.update({"/health": ok(""), "/model_info": ok({**MODEL_INFO_0_5, "model_path": HOSTILE,
                                                         "served_model_name": HOSTILE}),
                   "/server_info": ok({**SERVER_INFO_0_5, "context_length": 4096})})
    return url


def test_engine_page_health_line(hostile_server, monkeypatch):
    monkeypatch.setenv("RAGSCALE_WARMUP", "0")
    at = AppTest.from_file(str(PAGES / "engine.py"), default_timeout=60).run()
    at.radio(key="engine_kind").set_value("SGLang server or sglang-router").run()
    at.text_input(key="engine_url").set_value(hostile_server).run()
    at.button(key="engine_check").click().run()
    assert at.success, [e.value for e in at.error]
    assert_nothing_renders_as_a_link(at)
    # A typed URL echoed in an error (local mode shows the client's words).
    at.text_input(key="engine_url").set_value(f"http://127.0.0.1:9/{LINK}").run()
    at.button(key="engine_check").click().run()
    assert_nothing_renders_as_a_link(at)


def test_sidebar_model_name_of_the_active_engine(hostile_server, monkeypatch):
    from ragscale.engines import EngineSpec, make_engine

    monkeypatch.setenv("RAGSCALE_WARMUP", "0")
    spec = EngineSpec("sglang", url=hostile_server)
    engine = make_engine(spec)  # alive in this process: the sidebar shows its model
    engine.info
    at = AppTest.from_file(str(PAGES.parent / "app.py"), default_timeout=60)
    at.session_state["ragscale.engine_spec"] = spec
    at.run()
    assert_nothing_renders_as_a_link(at)
    engine.close()


def test_explorer_link_values(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGSCALE_WARMUP", "0")
    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path))
    at = AppTest.from_file(str(PAGES / "explorer.py"), default_timeout=120)
    at.query_params["question"] = IMAGE
    at.query_params["dataset"] = LINK
    at.run()
    assert_nothing_renders_as_a_link(at)


def test_a_stored_tree_record_with_a_hostile_model_name(monkeypatch, tmp_path):
    """Tree records whose engine named itself with link syntax (and whose answer is a link): the
    Explorer shows both as text."""
    import streamlit as st

    from ragscale.explorer import screen as ex

    trees = tmp_path / "trees"
    trees.mkdir()
    for path in ex.SHIPPED_TREES.glob("*.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        record["engine"] = {"kind": "sglang", "model": HOSTILE, "url": None}
        record["answer"] = LINK
        (trees / path.name).write_text(json.dumps(record), encoding="utf-8")
    monkeypatch.setattr(ex, "SHIPPED_TREES", trees)
    monkeypatch.setenv("RAGSCALE_WARMUP", "0")
    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path))
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(PAGES / "explorer.py"), default_timeout=120)
    at.query_params["dataset"] = "demo"
    at.run()
    assert_nothing_renders_as_a_link(at)


def test_tree_search_stored_runs_and_typed_store(monkeypatch):
    from tests.test_page_tree_search import scripted_run

    monkeypatch.setenv("RAGSCALE_WARMUP", "0")
    run = scripted_run("ets")
    run.update(answer=IMAGE, golds=[LINK], engine=HOSTILE)
    at = AppTest.from_file(str(PAGES / "tree_search.py"), default_timeout=120)
    at.session_state["ts_runs"] = [run]
    at.run()
    assert_nothing_renders_as_a_link(at)
    at.text_input(key="ts_results_path").set_value(f"/nonexistent/{LINK}.sqlite").run()
    assert_nothing_renders_as_a_link(at)


def test_scaling_runs_typed_results_path(monkeypatch):
    monkeypatch.setenv("RAGSCALE_WARMUP", "0")
    at = AppTest.from_file(str(PAGES / "scaling_runs.py"), default_timeout=60)
    at.session_state["scaling_runs.results_path"] = f"/nonexistent/{LINK}{IMAGE}.sqlite"
    at.run()
    assert_nothing_renders_as_a_link(at)


def test_allocation_calculator_typed_budget(monkeypatch):
    monkeypatch.setenv("RAGSCALE_WARMUP", "0")
    at = AppTest.from_file(str(PAGES / "allocation_calculator.py"), default_timeout=120).run()
    at.text_input(key="alloc_budget_text").set_value(LINK).run()
    assert_nothing_renders_as_a_link(at)


def test_md_literal_is_the_one_escaper_pages_use():
    """No page renders an exception, a stored value or a typed value without it (a source check
    of the patterns that leaked: ``st.error(str(exc))`` and bare ``{exc}`` in an f-string)."""
    offenders = []
    for path in [*PAGES.glob("*.py"), PAGES.parent / "app.py"]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"(st\.(error|warning|info|success|caption|markdown|write|toast)\(|label=).*(str\(exc\)|\{exc\})",
                         line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


def test_browser_renders_hostile_link_values_as_text(app_url, page):
    """Streamlit's own renderer (react-markdown with GFM, not markdown-it): the Explorer's warning
    box for ``?question=`` and ``?dataset=`` values holds no link or image to the planted host and
    shows the values as typed."""
    from urllib.parse import urlencode

    from tests.browser_helpers import wait_for_app

    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{app_url}/explorer?{urlencode({'question': IMAGE, 'dataset': LINK + ' www.evil.test'})}")
    wait_for_app(page)
    page.wait_for_selector("[data-testid='stAlert']", timeout=120_000)
    planted = page.eval_on_selector_all("a[href*='127.0.0.1:9'], img[src*='127.0.0.1:9'], a[href*='evil.test']",
                                        "els => els.map(e => e.outerHTML)")
    assert planted == []
    alerts = " ".join(page.eval_on_selector_all("[data-testid='stAlert']", "els => els.map(e => e.innerText)"))
    assert "[Sign in](http://127.0.0.1:9/login)" in alerts.replace("\u2060", ""), alerts
    assert not [u for u in requested if "127.0.0.1:9/" in u]  # the browser never fetched the image
