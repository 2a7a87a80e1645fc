"""The loopback server under hostile clients (issue #24): odd inputs get a 4xx, never a 500, and
slow clients never lock others out. Every attack targets a server this test starts on 127.0.0.1,
and every loop is bounded in count and time."""

from __future__ import annotations

import json
import socket
import threading
import time

import requests

from ragscale.engines.sglang_protocol import ServerLimits
from tests.fakes import ScriptedEngine
from tests.test_sglang_server import CountingEngine, raw_exchange, reply, serve


def _stop(server):
    server.shutdown()
    server.server_close()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def test_the_three_inputs_that_were_500s_are_4xx():
    server, url = serve(ScriptedEngine(reply), limits=ServerLimits(socket_timeout=2))
    try:
        superscript = raw_exchange(url, "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: ²\r\n\r\n".encode("latin-1"))
        assert 400 <= _status(superscript) < 500, superscript[:80]
        digits = raw_exchange(url, b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
        assert 400 <= _status(digits) < 500, digits[:80]
        huge_wait = requests.post(url + "/flush_cache?timeout=1e10", timeout=10)
        assert huge_wait.status_code == 400 and "timeout" in huge_wait.json()["message"]
        surrogate = requests.post(url + "/generate", data=b'{"text": "\\ud800"}', timeout=10)
        assert surrogate.status_code == 400 and "surrogate" in surrogate.text
        nested = requests.post(url + "/generate", data=b'{"text": ["\\udfff", "ok"]}', timeout=10)
        assert nested.status_code == 400
        # A real pair of surrogate escapes is one character, and fine.
        pair = requests.post(url + "/generate", data=b'{"text": "\\ud83d\\ude00", "sampling_params": '
                                                    b'{"max_new_tokens": 1}}', timeout=10)
        assert pair.status_code == 200
    finally:
        _stop(server)


def test_an_http_0_9_request_line_is_refused_at_once():
    server, url = serve(ScriptedEngine(reply), limits=ServerLimits(socket_timeout=30))
    try:
        started = time.monotonic()
        answer = raw_exchange(url, b"GET /health\r\n", read_timeout=10)
        assert time.monotonic() - started < 2
        assert _status(answer) == 400
    finally:
        _stop(server)


def test_token_ids_logprob_is_capped():
    server, url = serve(ScriptedEngine(reply), limits=ServerLimits(max_logprob_entries=1000))
    try:
        body = {"input_ids": [65] * 64, "token_ids_logprob": list(range(32)), "return_logprob": True,
                "logprob_start_len": 0, "sampling_params": {"max_new_tokens": 0}}
        wide = requests.post(url + "/generate", json=body, timeout=30)
        assert wide.status_code == 400 and "token_ids_logprob" in wide.json()["error"]["message"]
        body["token_ids_logprob"] = list(range(8))  # 64 x 8 = 512 entries: within the cap
        assert requests.post(url + "/generate", json=body, timeout=30).status_code == 200
    finally:
        _stop(server)


def _slow_loris(port: int, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"G")  # one byte of a request line, then nothing for a long while
        sockets.append(sock)
    return sockets


def _health_within(url: str, seconds: float) -> tuple[int, float]:
    started = time.monotonic()
    try:
        status = requests.get(url + "/health", timeout=seconds).status_code
    except requests.RequestException:
        status = 0
    return status, time.monotonic() - started


def test_256_slow_loris_sockets_never_lock_health_out():
    """The issue's attack: 256 sockets dribbling a request head. /health still answers 200 within
    5 s, during the attack and after the 30 s socket timeout would have been reset by a byte."""
    server, url = serve(ScriptedEngine(reply))  # the default limits: 256 connections
    port = int(url.rsplit(":", 1)[1])
    attackers = _slow_loris(port, 256)
    try:
        time.sleep(0.5)
        for _ in range(3):
            status, took = _health_within(url, 5)
            assert (status, took < 5) == (200, True), (status, took)
            for sock in attackers[:64]:  # keep some of them alive the way the attack does
                try:
                    sock.sendall(b"E")
                except OSError:
                    pass
            time.sleep(0.5)
    finally:
        for sock in attackers:
            sock.close()
        _stop(server)


def test_a_request_head_has_a_deadline_even_when_bytes_keep_coming():
    server, url = serve(ScriptedEngine(reply), limits=ServerLimits(socket_timeout=5, request_timeout=1.5))
    port = int(url.rsplit(":", 1)[1])
    (sock,) = _slow_loris(port, 1)
    try:
        closed_after = None
        started = time.monotonic()
        while time.monotonic() - started < 8:  # a byte every 0.3 s: the socket timeout alone never fires
            try:
                sock.sendall(b"E")
                sock.settimeout(0.3)
                if sock.recv(1024) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None and closed_after < 4, closed_after
    finally:
        sock.close()
        _stop(server)


def test_one_client_cannot_take_every_slot_and_working_requests_are_never_dropped():
    engine = CountingEngine(reply)
    engine.gate.clear()  # generations block until the gate opens: those connections are working
    server, url = serve(engine, limits=ServerLimits(max_connections=8, per_client_connections=3))
    port = int(url.rsplit(":", 1)[1])
    results = []

    def generate():
        results.append(requests.post(url + "/generate", json={"input_ids": [104],
                                     "sampling_params": {"max_new_tokens": 1}}, timeout=30).status_code)

    busy = [threading.Thread(target=generate) for _ in range(3)]
    for t in busy:
        t.start()
    time.sleep(0.5)
    try:
        # A fourth connection from the same client, while its three are all working: refused at once.
        fourth = raw_exchange(url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(fourth) == 503 and json.loads(fourth.split(b"\r\n\r\n", 1)[1])["error"]["message"]
        # Another client (127.0.0.2 is loopback too) is not held back by the first one's cap.
        other = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0))
        with other:
            other.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert other.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        engine.gate.set()
        for t in busy:
            t.join(20)
        _stop(server)
    assert results == [200, 200, 200]  # nothing that was working got dropped
