"""An API key never appears in any file, page or log the project writes.

The CLI runs as a user would run it (a subprocess, the key in its environment) against the
embedded server's OpenAI routes: a DRAG sweep into a results store and a tree search saved as
JSON, in a cache folder of their own; then a server that refuses the key and quotes it back (as
OpenAI's own 401 does). The key must reach the server (as a bearer token) and nowhere else: not in
stdout or stderr, not in any byte of any file written under the run's folders. The Engine page's
side is in test_page_engine.py (the key is never rendered).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ragscale.engines.server import make_server

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-hygiene-" + "Vt4p" * 10


@pytest.fixture(scope="module")
def recording_server():
    """The embedded engine (SmolLM2) behind the embedded server, recording each Authorization header."""
    from ragscale.engines.embedded import EmbeddedEngine

    seen: list[str | None] = []
    server = make_server(EmbeddedEngine(), "127.0.0.1", 0)

    class Recording(server.RequestHandlerClass):
        def parse_request(self):
            ok = super().parse_request()
            if ok:
                seen.append(self.headers.get("Authorization"))
            return ok

    server.RequestHandlerClass = Recording
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    server.shutdown()
    server.server_close()


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAGSCALE_OPENAI_API_KEY=KEY, RAGSCALE_CACHE_DIR=str(tmp / "cache"),
               RAGSCALE_RESULTS_DIR=str(tmp / "results"), HOME=str(tmp / "home"))
    (tmp / "home").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "ragscale", *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=tmp)


def _files_containing(folder: Path, needle: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.model
def test_a_key_reaches_the_server_and_no_file_or_output(recording_server, tmp_path):
    url, seen = recording_server
    sweep = _run(["sweep", "--dataset", "demo", "--strategies", "zero-shot", "--k", "0", "--m", "0", "--limit", "2",
                  "--engine", "openai", "--url", url, "--out", str(tmp_path / "results.sqlite"), "--json"], tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert json.loads(sweep.stdout)["rows_written"] == 2
    search = _run(["search", "--task", "arithmetic", "--dataset", "arithmetic", "--verifier", "rules", "--policy",
                   "ets", "--width", "2", "--max-depth", "2", "--engine", "openai", "--url", url,
                   "--save", str(tmp_path / "tree.json"), "--json"], tmp_path)
    assert search.returncode == 0, search.stderr[-2000:]
    assert json.loads(search.stdout)["tree"]["nodes"]
    assert seen and all(header == f"Bearer {KEY}" for header in seen)  # sent, to the configured server
    for run in (sweep, search):
        assert KEY not in run.stdout + run.stderr
    assert _files_containing(tmp_path, KEY.encode()) == []
    assert _files_containing(tmp_path, KEY[-12:].encode()) == []  # not even its tail (OpenAI shows the last 4)


def test_a_refusal_that_quotes_the_key_shows_none_of_it(tmp_path):
    class Refusing(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            body = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}", "code": "invalid_api_key"}})
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = _run(["search", "--task", "arithmetic", "--dataset", "arithmetic", "--verifier", "rules",
                    "--engine", "openai", "--url", f"http://127.0.0.1:{server.server_address[1]}/v1",
                    "--context-window", "2048", "--json"], tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 2 and last.startswith("ragscale: error: ") and "HTTP 401" in last
    assert KEY not in run.stdout + run.stderr and KEY[-8:] not in run.stderr
    assert _files_containing(tmp_path, KEY[-12:].encode()) == []
