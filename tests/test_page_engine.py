"""The Engine page: renders, health-checks an SGLang URL, switches engines (no model load)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ragscale.engines import EngineSpec
from tests.browser_helpers import wait_for_app

SPEC_KEY = "ragscale.engine_spec"
PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "engine.py")


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_page_renders_with_the_embedded_engine_by_default():
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert "embedded CPU" in at.info[0].value
    assert at.radio[0].value.startswith("Embedded")
    assert any("not started yet" in m.value for m in at.markdown)


def test_health_check_of_an_unreachable_server_shows_a_clear_error():
    url = _closed_port_url()
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.radio[0].set_value("SGLang server or sglang-router").run()
    at.text_input[0].set_value(url).run()
    at.button[0].click().run()  # Check health
    assert not at.exception
    assert at.error and "cannot reach the SGLang server" in at.error[0].value and url in at.error[0].value


def test_choosing_a_server_stores_the_spec():
    url = _closed_port_url()
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.radio[0].set_value("SGLang server or sglang-router").run()
    at.text_input[0].set_value(url).run()
    at.button[1].click().run()  # Use this server
    assert at.session_state[SPEC_KEY] == EngineSpec("sglang", url=url)
    assert f"SGLang at {url}" in at.info[0].value


def test_turning_the_prefix_cache_off_is_a_different_spec():
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.checkbox[0].uncheck().run()
    at.button[0].click().run()  # Use the embedded engine
    assert at.session_state[SPEC_KEY] == EngineSpec("embedded", prefix_cache=False)
    assert "prefix cache off" in at.info[0].value


def test_a_live_server_is_healthy_and_once_chosen_shows_its_model_and_cache_counters():
    import requests

    from tests.fakes import ScriptedEngine
    from tests.test_sglang_client import reply, serve

    server, url = serve(ScriptedEngine(reply))
    try:
        at = AppTest.from_file(PAGE, default_timeout=60).run()
        at.radio[0].set_value("SGLang server or sglang-router").run()
        at.text_input[0].set_value(url).run()
        at.button[0].click().run()  # Check health
        assert not at.exception, at.exception
        assert at.success and at.success[0].value == "Healthy: scripted-bytes · context window 8,192 tokens"
        at.button[1].click().run()  # Use this server
        assert at.session_state[SPEC_KEY] == EngineSpec("sglang", url=url)
        next(b for b in at.button if b.label == "Start it now").click().run()
        assert not at.exception, at.exception
        for _ in range(2):  # a teammate's requests; the second reuses the server's cached prefix
            requests.post(f"{url}/generate", json={"text": "a question", "sampling_params": {"max_new_tokens": 8}},
                          timeout=10).raise_for_status()
        at.run()
        assert not at.exception, at.exception
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Model"] == "scripted-bytes" and metrics["Context window"] == "8,192 tokens"
        server_rate = next(c.value for c in at.caption if c.value.startswith("Server-wide hit rate"))
        assert server_rate.endswith(": 45.0%"), server_rate  # 9 of 20 prompt tokens: 0 + (10 - 1)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.browser
def test_browser_health_check_error(app_url, page, artifacts_dir):
    url = _closed_port_url()
    # Home first: a fresh server asked for a deep link before app.py has run once serves the page
    # without app.py's navigation (Streamlit's pages/ fallback).
    page.goto(app_url)
    page.get_by_text("Engine:").first.wait_for()
    page.goto(f"{app_url}/engine")
    wait_for_app(page)
    page.get_by_text("SGLang server or sglang-router").click()
    wait_for_app(page)
    box = page.get_by_role("textbox", name="Server URL")
    box.fill(url)
    box.press("Enter")
    wait_for_app(page)
    page.get_by_role("button", name="Check health").click()
    wait_for_app(page)
    error = page.locator("[data-testid='stAlertContentError']")
    error.wait_for()
    assert "cannot reach the SGLang server" in error.inner_text()
    sidebar = page.locator("[data-testid='stSidebar']")
    assert sidebar.get_by_text("Not started yet").count() == 1  # the engine status; no model was loaded
    page.screenshot(path=str(artifacts_dir / "engine_health_error.png"), full_page=True)
