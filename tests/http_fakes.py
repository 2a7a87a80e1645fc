"""Scripted HTTP servers for client tests: a quiet handler that answers JSON, and servers on
127.0.0.1 at a free port, each in a daemon thread."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


class JSONHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def json_body(self):
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def reply(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def start(server_or_handler) -> tuple[ThreadingHTTPServer, str]:
    """Serve a bound server, or a handler class on 127.0.0.1 at a free port: (server, base URL)."""
    server = server_or_handler
    if isinstance(server_or_handler, type):
        server = ThreadingHTTPServer(("127.0.0.1", 0), server_or_handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def stop(server) -> None:
    server.shutdown()
    server.server_close()


@contextmanager
def serving(server_or_handler) -> Iterator[str]:
    """``start`` for the block; yields the base URL."""
    server, url = start(server_or_handler)
    try:
        yield url
    finally:
        stop(server)


@contextmanager
def serving_model(engine, model: str) -> Iterator[str]:
    """The embedded server's API over ``engine`` (a scripted one), which it names ``model`` (e.g. a
    model a price sheet names); yields the base URL."""
    from ragscale.engines.base import EngineInfo
    from ragscale.engines.server import make_server

    engine.info = EngineInfo(kind="scripted", model=model, context_window=engine.info.context_window)
    with serving(make_server(engine, "127.0.0.1", 0)) as url:
        yield url
