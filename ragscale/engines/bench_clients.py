"""``ragscale bench serve-slow-clients``: the embedded server while 256 clients dribble request heads.

The attack of issue #24: 256 sockets on 127.0.0.1, each sending one byte of a request line and
then one more every 20 s (so a socket timeout alone never fires). Throughout, a well-behaved client
asks ``/health`` every 2 s and, once a probe, ``/generate`` for 4 tokens; the result is what it got
and how long it waited. Only a server this benchmark starts on 127.0.0.1 is attacked.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable

Progress = Callable[[int, int, str], None]

SLOW_CLIENTS = 256
DRIP_SECONDS = 20.0
PROBE_SECONDS = 2.0
DURATION_SECONDS = 60.0  # past the 30 s socket timeout the attack outlasted before


def slow_clients_benchmark(progress: Progress | None = None) -> dict:
    import requests

    from ragscale.engines.embedded import EmbeddedEngine
    from ragscale.engines.server import make_server

    server = make_server(EmbeddedEngine, "127.0.0.1", 0)
    port = server.server_address[1]
    url = f"http://127.0.0.1:{port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    attackers: list[socket.socket] = []
    try:
        if not server.service.ready.wait(600):
            raise RuntimeError("the model did not load within 600 s")
        prompt = server.service.engine.encode("Say one word.")
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"G")
            attackers.append(sock)
        if progress:
            progress(1, 2, f"{SLOW_CLIENTS} slow clients connected")
        health, generate = [], []
        started = last_drip = time.monotonic()
        while time.monotonic() - started < DURATION_SECONDS:
            health.append(_timed(lambda: requests.get(url + "/health", timeout=10).status_code))
            generate.append(_timed(lambda: requests.post(url + "/generate", timeout=60, json={
                "input_ids": prompt, "sampling_params": {"max_new_tokens": 4, "temperature": 0}}).status_code))
            if time.monotonic() - last_drip >= DRIP_SECONDS:
                for sock in attackers:
                    try:
                        sock.sendall(b"E")
                    except OSError:
                        pass  # the server dropped it: its request was overdue
                last_drip = time.monotonic()
            time.sleep(PROBE_SECONDS)
        if progress:
            progress(2, 2, "done")
    finally:
        for sock in attackers:
            sock.close()
        server.shutdown()
        server.server_close()
    return {"slow_clients": SLOW_CLIENTS, "seconds": DURATION_SECONDS, "health": _summary(health),
            "generate": _summary(generate)}


def _timed(call) -> tuple[str, float]:
    begun = time.perf_counter()
    try:
        outcome = str(call())
    except Exception as exc:  # noqa: BLE001 - a refused or reset probe is a result here
        outcome = type(exc).__name__
    return outcome, time.perf_counter() - begun


def _summary(probes: list[tuple[str, float]]) -> dict:
    seconds = sorted(s for _, s in probes)
    return {"probes": len(probes), "ok": sum(o == "200" for o, _ in probes),
            "outcomes": sorted({o for o, _ in probes}), "max_seconds": round(seconds[-1], 3),
            "median_seconds": round(seconds[len(seconds) // 2], 3)}
