"""The Engine page: renders, health-checks an SGLang URL, switches engines (no model load)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ragscale.engines import EngineSpec
from ragscale.formatting import md_literal
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
    assert at.radio(key="engine_kind").value.startswith("Embedded")
    assert any("not started yet" in m.value for m in at.markdown)


def _sglang_section(url: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.radio(key="engine_kind").set_value("SGLang server or sglang-router").run()
    at.text_input(key="engine_url").set_value(url).run()
    return at


def test_health_check_of_an_unreachable_server_shows_a_clear_error():
    url = _closed_port_url()
    at = _sglang_section(url)
    at.button(key="engine_check").click().run()
    assert not at.exception
    assert at.error and "cannot reach the SGLang server" in at.error[0].value and md_literal(url) in at.error[0].value


def test_a_dead_server_is_not_made_active():
    url = _closed_port_url()
    at = _sglang_section(url)
    at.button(key="engine_use").click().run()
    assert not at.exception
    assert at.session_state[SPEC_KEY] == EngineSpec()  # still the embedded engine
    assert "embedded CPU" in at.info[0].value
    assert at.error and "cannot reach the SGLang server" in at.error[0].value


@pytest.mark.parametrize("typed, says", [
    ("not a url", "is not a URL"),
    ("http://169.254.169.254/", "link-local"),
    ("http://127.0.0.1:30000/get_model_info#", "no user name, query or fragment"),
])
def test_urls_a_viewer_may_not_use_are_refused_before_any_request(typed, says, monkeypatch):
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("a refused URL must never be requested")

    monkeypatch.setattr(requests.Session, "request", no_network)
    at = _sglang_section(typed)
    for button in ("engine_check", "engine_use"):
        at.button(key=button).click().run()
        assert not at.exception, at.exception
        assert at.error and says in at.error[0].value, [e.value for e in at.error]
    assert at.session_state[SPEC_KEY] == EngineSpec()


def test_shared_mode_allows_only_loopback_and_listed_urls(monkeypatch):
    monkeypatch.setenv("RAGSCALE_MODE", "shared")
    monkeypatch.setenv("RAGSCALE_ALLOWED_URLS", "http://gpu-box.internal:30000")
    at = _sglang_section("http://10.1.2.3:30000")
    at.button(key="engine_check").click().run()
    assert not at.exception
    assert "not an engine this server may call" in at.error[0].value


def _foreign_server(secret: str, json_404: bool):
    """A loopback web server that is not SGLang: healthy, then HTML (or a JSON 404) with a secret."""
    import http.server
    import json
    import threading

    class Foreign(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = 200, f"<html>{secret}</html>"
            if json_404 and self.path != "/health":
                status, body = 404, json.dumps({"model_path": secret, "error": secret})
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Foreign)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("mode, json_404", [("shared", True), ("shared", False), ("local", False)])
def test_nothing_a_foreign_server_sends_reaches_the_page(mode, json_404, monkeypatch):
    secret = "SECRET-BODY-4242"
    server, url = _foreign_server(secret, json_404)
    monkeypatch.setenv("RAGSCALE_MODE", mode)
    try:
        at = _sglang_section(url)
        at.button(key="engine_check").click().run()
        assert not at.exception, at.exception  # an HTML 200 used to end in a traceback
        shown = " ".join(e.value for e in at.error) + " ".join(s.value for s in at.success)
        assert at.error and not at.success and secret not in shown
        if mode == "shared":  # a fixed line; the client's own words only in local mode
            assert "did not answer as an SGLang server (details are in the app's log)" in shown
        at.button(key="engine_use").click().run()
        assert at.session_state[SPEC_KEY] == EngineSpec()
    finally:
        server.shutdown()
        server.server_close()


def test_turning_the_prefix_cache_off_is_a_different_spec():
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.checkbox(key="engine_prefix_cache").uncheck().run()
    at.button(key="engine_use_embedded").click().run()
    assert at.session_state[SPEC_KEY] == EngineSpec("embedded", prefix_cache=False)
    assert "prefix cache off" in at.info[0].value


def test_a_live_server_is_healthy_and_once_chosen_shows_its_model_and_cache_counters():
    import requests

    from tests.fakes import ScriptedEngine
    from tests.test_sglang_client import reply, serve

    server, url = serve(ScriptedEngine(reply))
    try:
        at = _sglang_section(url)
        at.button(key="engine_check").click().run()
        assert not at.exception, at.exception
        assert at.success and at.success[0].value == "Healthy: scripted-bytes · context window 8,192 tokens"
        at.button(key="engine_use").click().run()  # checked again, healthy: it becomes the active engine
        assert at.session_state[SPEC_KEY] == EngineSpec("sglang", url=url)
        assert md_literal(f"SGLang at {url}") in at.info[0].value
        at.button(key="engine_start").click().run()
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
def test_browser_health_check_error(fresh_app_url, page, artifacts_dir):
    """A failed health check loads no model: on an app of the test's own, whose engine has not
    started (the session's app may have started it for an earlier test)."""
    url, app_url = _closed_port_url(), fresh_app_url
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


# ---- Retrieval section ------------------------------------------------------------------------

def _retrieval_section(monkeypatch, tmp_path, url: str | None = None, mode: str = "local") -> AppTest:
    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RAGSCALE_MODE", mode)
    monkeypatch.delenv("RAGSCALE_CHROMA_URL", raising=False)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    if url is not None:
        at.radio(key="retrieval_kind").set_value("Chroma server").run()
        at.text_input(key="retrieval_url").set_value(url).run()
    return at


def test_retrieval_section_checks_the_embedded_store(monkeypatch, tmp_path):
    at = _retrieval_section(monkeypatch, tmp_path)
    assert any("embedded Chroma store" in m.value for m in at.markdown)
    at.button(key="retrieval_check").click().run()
    assert not at.exception
    assert at.success and "The store answered" in at.success[-1].value


@pytest.mark.parametrize("typed, says", [
    ("not a url", "is not a URL"),
    ("http://169.254.169.254:8000", "never a Chroma server"),
])
def test_retrieval_urls_a_viewer_may_not_use_are_refused(monkeypatch, tmp_path, typed, says):
    at = _retrieval_section(monkeypatch, tmp_path, typed)
    at.button(key="retrieval_check").click().run()
    assert not at.exception
    assert at.error and says in at.error[-1].value


def test_an_unreachable_chroma_server_is_not_made_the_store(monkeypatch, tmp_path):
    from ragscale.retrieval import options

    at = _retrieval_section(monkeypatch, tmp_path, _closed_port_url())
    at.button(key="retrieval_use").click().run()
    assert not at.exception
    assert at.error and "did not answer" in at.error[-1].value
    assert options.current_settings().url is None


def test_shared_mode_only_checks_the_operators_store(monkeypatch, tmp_path):
    at = _retrieval_section(monkeypatch, tmp_path, mode="shared")
    assert at.button(key="retrieval_use").disabled
    at = _retrieval_section(monkeypatch, tmp_path, "http://10.1.2.3:8000", mode="shared")
    at.button(key="retrieval_check").click().run()
    assert at.error and "not a Chroma server this server may call" in at.error[-1].value


def test_a_live_chroma_server_is_checked_and_chosen(monkeypatch, tmp_path):
    from ragscale.retrieval import options
    from ragscale.retrieval.server import chroma_executable, chroma_server

    if chroma_executable() is None:
        pytest.skip("the chroma CLI is not installed")
    try:
        with chroma_server(tmp_path / "chroma") as url:
            at = _retrieval_section(monkeypatch, tmp_path, url)
            at.button(key="retrieval_use").click().run()
            assert not at.exception
            assert options.current_settings().url == url
            assert any(md_literal(f"Chroma server {url}") in m.value for m in at.markdown)  # shown as text
    finally:
        options.use_settings(None)


def _folder_with_config(root: Path) -> Path:
    model = root / "my-llama"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    return model


def test_a_local_model_folder_becomes_the_embedded_spec(tmp_path):
    model = _folder_with_config(tmp_path)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.text_input(key="engine_model").set_value(str(model)).run()
    assert not at.error
    at.button(key="engine_use_embedded").click().run()
    assert at.session_state[SPEC_KEY] == EngineSpec("embedded", model=str(model.resolve()))
    assert "my-llama" in at.info[0].value  # the active engine names the model, not SmolLM2


@pytest.mark.parametrize("typed, says", [("/nonexistent/model", "no such folder"),
                                         ("{tmp}", "config.json"),
                                         ("{tmp}/weights.gguf", "no such dataset file")])
def test_a_model_that_is_not_one_is_refused_and_the_button_disabled(tmp_path, typed, says):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.text_input(key="engine_model").set_value(typed.format(tmp=tmp_path)).run()
    assert says in at.error[0].value
    assert at.button(key="engine_use_embedded").disabled
    assert "SmolLM2-135M-Instruct" in at.info[0].value  # the active engine is unchanged


def test_shared_mode_takes_models_only_under_the_data_roots(monkeypatch, tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    inside_model, outside_model = _folder_with_config(root), _folder_with_config(outside)
    monkeypatch.setenv("RAGSCALE_MODE", "shared")
    monkeypatch.setenv("RAGSCALE_DATA_ROOTS", str(root))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.text_input(key="engine_model").set_value(str(outside_model)).run()
    assert "not a folder this server offers" in at.error[0].value
    at.text_input(key="engine_model").set_value("my-llama").run()  # relative: looked up under the roots
    assert not at.error
    at.button(key="engine_use_embedded").click().run()
    assert at.session_state[SPEC_KEY].model == str(inside_model.resolve())


def _openai_section(url: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.radio(key="engine_kind").set_value("OpenAI-compatible server").run()
    at.text_input(key="engine_openai_url").set_value(url).run()
    return at


def test_an_openai_compatible_server_is_checked_and_chosen(monkeypatch):
    from tests.fakes import ScriptedEngine
    from tests.test_sglang_client import reply, serve

    key = "sk-page-test-" + "Qx9" * 10
    monkeypatch.setenv("RAGSCALE_OPENAI_API_KEY", key)
    server, url = serve(ScriptedEngine(reply))  # the embedded server's /v1 routes
    try:
        at = _openai_section(url + "/v1")
        at.button(key="engine_check").click().run()
        assert not at.exception, at.exception
        assert at.success and at.success[0].value == "Healthy: scripted-bytes · context window 8,192 tokens"
        at.button(key="engine_use").click().run()
        assert at.session_state[SPEC_KEY] == EngineSpec("openai", url=url + "/v1")
        assert md_literal(f"OpenAI-compatible server at {url}/v1") in at.info[0].value
        at.text_input(key="engine_tokenizer").set_value("").run()
        rendered = " ".join(str(e.value) for kind in ("markdown", "caption", "info", "success", "error", "metric")
                            for e in getattr(at, kind))
        assert key not in rendered and "Qx9Qx9" not in rendered
    finally:
        server.shutdown()
        server.server_close()


def test_openai_urls_follow_the_shared_mode_rules(monkeypatch):
    monkeypatch.setenv("RAGSCALE_MODE", "shared")
    monkeypatch.delenv("RAGSCALE_ALLOWED_URLS", raising=False)
    at = _openai_section("https://api.example.com/v1")
    at.button(key="engine_check").click().run()
    assert not at.exception and at.error and "only loopback" in at.error[0].value
    # Loopback with /v1 is the loopback server itself; an unreachable one is a plain failure.
    at = _openai_section(_closed_port_url() + "/v1")
    at.button(key="engine_check").click().run()
    assert at.error and "only loopback" not in at.error[0].value
