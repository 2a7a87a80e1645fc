"""Scale-out on one box: N ``ragscale serve embedded`` workers behind sglang-router.

sglang-router (PyPI ``sglang-router``, a prebuilt Rust binary that runs on CPU, offline) is the
path SGLang deployments use to spread requests over replicas; ``--policy cache_aware`` sends a
request to the worker whose radix cache already holds the longest prefix of it. ``LocalCluster``
starts the workers and the router as child processes, waits until the router sees every worker
healthy, and stops them all; ``ragscale serve router --workers N`` runs one until Ctrl-C, and the
tests and ``ragscale bench router`` use it.

The router loads each worker's tokenizer when the worker registers. The embedded workers report a
local folder as their model path (the bf16 copy, which holds the tokenizer), so it is read from
disk; a worker that reports a hub name makes sglang-router 0.3.2 try the model hub once, fail
offline with a WARN line, and route normally — the tests run the router at ``--log-level error``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import requests

from ragscale.errors import UserError

POLICIES = ("cache_aware", "round_robin", "random", "power_of_two")


def router_available() -> bool:
    return importlib.util.find_spec("sglang_router") is not None


def router_command(worker_urls: list[str], port: int, host: str = "127.0.0.1", policy: str = "cache_aware",
                   python: str = sys.executable, log_level: str = "warn") -> list[str]:
    """``python -m sglang_router launch ...`` for workers that are already running."""
    return [python, "-m", "sglang_router", "launch", "--host", host, "--port", str(port),
            "--worker-urls", *worker_urls, "--policy", policy, "--log-level", log_level,
            # Its own metrics exporter listens on a fixed port by default: two routers would collide.
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
            # Notice a dead worker within seconds, so its requests go to the others.
            "--health-check-interval-secs", "2", "--health-failure-threshold", "1"]


def gpu_router_plan(model_path: str, workers: int, base_port: int = 30001, host: str = "127.0.0.1",
                    router_port: int = 30000, context_length: int | None = None, python: str = "python") -> list[str]:
    """Shell lines for N SGLang workers (one GPU each) behind sglang-router with prefix-aware routing."""
    from ragscale.engines.server import sglang_command
    import shlex

    lines, urls = [], []
    for i in range(workers):
        port = base_port + i
        cmd = sglang_command(model_path, port=port, host=host, python=python, context_length=context_length)
        lines.append(f"CUDA_VISIBLE_DEVICES={i} {shlex.join(cmd)} &")
        urls.append(f"http://{host}:{port}")
    lines.append(shlex.join(router_command(urls, router_port, host, python=python)))
    return lines


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_SERVING = re.compile(r"on (http://[\w.\-\[\]:]+)")


def embedded_worker_command(python: str = sys.executable, disable_radix_cache: bool = False) -> list[str]:
    cmd = [python, "-m", "ragscale", "serve", "embedded", "--port", "0", "--host", "127.0.0.1"]
    return cmd + (["--disable-radix-cache"] if disable_radix_cache else [])


@dataclass
class LocalCluster:
    """N workers + sglang-router on loopback. ``worker_command`` builds one worker's argv; the
    worker prints ``... on http://HOST:PORT`` when it listens (``ragscale serve embedded`` does)."""

    workers: int = 2
    policy: str = "cache_aware"
    worker_command: Callable[[], list[str]] = embedded_worker_command
    log_level: str = "warn"
    startup_timeout: float = 300.0
    env: dict | None = None
    router_port: int = 0  # 0: any free port
    worker_urls: list[str] = field(default_factory=list)
    url: str = ""
    _procs: list[subprocess.Popen] = field(default_factory=list)
    router: subprocess.Popen | None = None
    router_log: list[str] = field(default_factory=list)

    def start(self) -> "LocalCluster":
        if not router_available():
            raise UserError("sglang-router is not installed (pip install sglang-router==0.3.2; make install does it)")
        if self.workers < 1:
            raise UserError("--workers must be at least 1")
        if self.policy not in POLICIES:
            raise UserError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **(self.env or {}))
        try:
            for _ in range(self.workers):
                self._procs.append(subprocess.Popen(self.worker_command(), stdout=subprocess.PIPE,
                                                    stderr=subprocess.STDOUT, text=True, env=env))
            self.worker_urls = [self._await_url(p) for p in self._procs]
            for url in self.worker_urls:
                self._await_health(url)
            port = self.router_port or free_port()
            self.router = subprocess.Popen(router_command(self.worker_urls, port, policy=self.policy,
                                                          log_level=self.log_level),
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            threading.Thread(target=self._drain, args=(self.router, self.router_log), daemon=True).start()
            self.url = f"http://127.0.0.1:{port}"
            self._await_router()
        except BaseException:
            self.stop()
            raise
        return self

    def _await_url(self, proc: subprocess.Popen) -> str:
        deadline = time.time() + self.startup_timeout
        seen = []
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                if proc.poll() is not None:
                    raise UserError(f"a worker exited before listening: {' '.join(seen[-3:])[:300]}")
                continue
            seen.append(line.strip())
            match = _SERVING.search(line)
            if match:
                threading.Thread(target=self._drain, args=(proc, []), daemon=True).start()
                return match.group(1)
        raise UserError("a worker did not start listening in time")

    def _await_health(self, url: str) -> None:
        deadline = time.time() + self.startup_timeout
        while time.time() < deadline:
            try:
                if requests.get(url + "/health", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise UserError(f"the worker at {url} did not become healthy in time")

    def _await_router(self) -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.router.poll() is not None:
                raise UserError(f"sglang-router exited: {' '.join(self.router_log[-3:])[:300]}")
            try:
                state = requests.get(self.url + "/readiness", timeout=2).json()
                if state.get("healthy_workers") == self.workers:
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.2)
        raise UserError("sglang-router did not see every worker healthy in time")

    @staticmethod
    def _drain(proc: subprocess.Popen, sink: list) -> None:
        for line in proc.stdout:
            sink.append(line.rstrip())
            del sink[:-200]

    def kill_worker(self, index: int) -> None:
        self._procs[index].kill()
        self._procs[index].wait(10)

    def stop(self) -> None:
        for proc in ([self.router] if self.router else []) + self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in ([self.router] if self.router else []) + self._procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
