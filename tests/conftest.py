"""Shared fixtures: paths to the real samples, a running app, and headless Chromium.

Browser tests drive Debian's /usr/bin/chromium through Playwright (never a downloaded
browser). Screenshots land in test-artifacts/ so a person can look at them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# The app warms the engine in a background thread when it starts; tests load models only where
# they mean to (pytest.mark.model), so the warm-up is off unless a test turns it on.
os.environ.setdefault("RAGSCALE_WARMUP", "0")


@pytest.fixture(scope="session")
def hotpotqa_path() -> Path:
    path = SHARED_DATASETS / "hotpotqa_sample70.json"
    assert path.exists(), f"real sample missing: {path} (CI clones with ../shared beside the project)"
    return path


@pytest.fixture(scope="session")
def musique_path() -> Path:
    path = SHARED_DATASETS / "musique_sample70.json"
    assert path.exists(), f"real sample missing: {path}"
    return path


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _serve_app(folder: Path):
    """`streamlit run app.py` on a free loopback port until the block ends; yields its URL."""
    port = _free_port()
    log = folder / "streamlit.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
             "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
             "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited early:\n{log.read_text()}")
        try:
            if requests.get(f"{url}/_stcore/health", timeout=1).text == "ok":
                break
        except requests.RequestException:
            pass
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"streamlit did not become healthy:\n{log.read_text()}")
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def app_url(tmp_path_factory) -> str:
    """The app for the whole session. Its process state is shared: once any test has started the
    engine (a tree search, "Run live"), every later test sees it started."""
    with _serve_app(tmp_path_factory.mktemp("streamlit")) as url:
        yield url


@pytest.fixture
def fresh_app_url(tmp_path) -> str:
    """An app process of the test's own: nothing started in it (no engine, no index), whatever
    other tests did to the session's app."""
    with _serve_app(tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (make browser-deps installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    context.close()


@pytest.fixture
def shared_mode(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """The app in shared deployment mode with its own results folder and dataset root (returned),
    a symlink out of the root planted in the latter (``link.json`` -> /etc/passwd)."""
    results, data = tmp_path / "results", tmp_path / "data"
    results.mkdir()
    data.mkdir()
    (data / "link.json").symlink_to("/etc/passwd")
    monkeypatch.setenv("RAGSCALE_MODE", "shared")
    monkeypatch.setenv("RAGSCALE_RESULTS_DIR", str(results))
    monkeypatch.setenv("RAGSCALE_DATA_ROOTS", str(data))
    return results, data
