"""Start a Chroma server (``chroma run``, shipped with chromadb) on loopback, for benchmarks and tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from ragscale.errors import UserError


def chroma_executable() -> str | None:
    """The ``chroma`` CLI of this Python's install, else one on PATH."""
    beside = Path(sys.executable).parent / "chroma"
    return str(beside) if beside.exists() else shutil.which("chroma")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def chroma_server(path: str | Path, timeout: float = 60.0) -> Iterator[str]:
    """``chroma run`` with its data under ``path`` on a free loopback port; yields its URL."""
    import requests

    executable = chroma_executable()
    if executable is None:
        raise UserError("the chroma CLI is not installed (it ships with the chromadb package)")
    port = _free_port()
    log = Path(path).with_suffix(".log")
    with open(log, "w") as out:
        process = subprocess.Popen([executable, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise UserError(f"chroma run exited early (code {process.returncode}); see {log}")
            try:
                if requests.get(f"{url}/api/v2/heartbeat", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise UserError(f"chroma run did not answer within {timeout:.0f} s; see {log}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
