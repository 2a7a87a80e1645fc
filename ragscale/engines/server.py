"""Serve an Engine over SGLang's native HTTP API, answering as SGLang 0.5.x does.

``ragscale serve embedded --port P`` runs this with the embedded engine; ``SGLangEngine`` and
sglang-router talk to it exactly as to a real SGLang server. It is the stand-in for SGLang in
every test, so it keeps SGLang's contract (``sglang_protocol``): the same fields, the same three
error-body shapes and status codes, unknown top-level fields ignored, unknown sampling keys refused.

Endpoints: ``POST /generate`` (single and batch, ``text`` or ``input_ids``, one ``sampling_params``
object or one per prompt, ``return_logprob``, ``logprob_start_len``, ``token_ids_logprob`` for
prompt scoring); ``GET /health`` and ``/health_generate`` (503 while the model loads);
``/model_info``, ``/server_info`` and their old names ``/get_model_info``, ``/get_server_info``;
``/v1/models``; ``/v1/completions`` and ``/v1/chat/completions`` (``openai_routes``);
``/metrics`` (SGLang's metric names); ``POST /flush_cache[?timeout=S]`` (400 while
requests run, unless they finish within S seconds); ``/classify`` and ``/v1/classify`` when the
engine is a reward model (has ``classify``), else SGLang's 400.

Requests that arrive while the engine is busy wait and are merged into its next call
(``MergingQueue``), as SGLang's scheduler batches them. Each request is parsed and checked in
full before it joins a batch, so a bad request is refused alone and never makes the good ones
run twice.

Hardening (the server is reachable by a team): listen backlog 128; caps on open connections, in
all and per client address, where a newcomer takes the place of the connection that has waited
longest for its request and only a server whose connections are all working answers 503
(``_Connections``); a deadline for receiving a whole request, so a client dribbling bytes never
holds a thread past it; a socket timeout for stalled reads and writes; HTTP/0.9 request lines
refused at once; a body-size cap (413) read in bounded chunks, a Content-Length of ASCII digits
only; lone surrogates in the JSON refused (400); limits on prompts, n, total tokens and
token_ids_logprob entries per request (400); no exception text in any answer (500s say "internal
error" and the detail goes to the server log).

``ragscale serve sglang`` builds the real ``sglang.launch_server`` command (``sglang_command``).
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from ragscale.engines import openai_routes
from ragscale.engines.base import Engine
from ragscale.engines.sglang_protocol import (
    SAMPLING_KEYS, GenerateBody, PromptRequest, ProtocolError, ServerLimits, http_error, parse_generate, value_error,
)
from ragscale.errors import EngineError

SGLANG_VERSION = "0.5.23"  # the release whose protocol this server speaks
__all__ = ["EngineService", "MergingQueue", "SAMPLING_KEYS", "ServerLimits", "make_server", "sglang_command"]


@dataclass
class _Job:
    """One /generate request, parsed: its prompts, results per prompt (a list of n items each)."""

    prompts: list[PromptRequest]
    results: list = field(default_factory=list)
    error: Exception | None = None
    done: threading.Event = field(default_factory=threading.Event)


class MergingQueue:
    """Runs jobs on a single engine, merging the jobs that queue up while it is busy.

    Leader/follower: every request queues its job, then takes the engine lock; whoever holds it
    runs everything queued so far in one call of ``run``, and the others find their job done.
    ``run`` sets each job's results or error; if it raises instead (an unexpected failure with no
    culprit named), each job of the call is run again alone so that one bad job fails alone.
    """

    def __init__(self, run, max_jobs: int | None = None):
        self._run = run
        self.max_jobs = max_jobs  # None: merge everything queued; 1: one request at a time (A/B runs)
        self._queued: list[_Job] = []
        self._queue_lock = threading.Lock()
        self.engine_lock = threading.Lock()
        self.largest_merge = 0  # most jobs run in one call (for tests and /server_info)

    @property
    def waiting(self) -> int:
        return len(self._queued)

    def submit(self, job: _Job) -> list:
        with self._queue_lock:
            self._queued.append(job)
        while not job.done.is_set():  # with max_jobs, a leader may run older jobs before its own
            with self.engine_lock:
                if job.done.is_set():
                    break
                with self._queue_lock:
                    cut = len(self._queued) if self.max_jobs is None else self.max_jobs
                    jobs, self._queued = self._queued[:cut], self._queued[cut:]
                self.largest_merge = max(self.largest_merge, len(jobs))
                self._run_all(jobs)
        if job.error is not None:
            raise job.error
        return job.results

    def _run_all(self, jobs: list[_Job]) -> None:
        try:
            self._run(jobs)
        except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
            if len(jobs) == 1:
                jobs[0].error = exc
            else:
                for job in jobs:
                    self._run_all([job])
        finally:
            for job in jobs:
                job.done.set()


class EngineService:
    """The SGLang-shaped view of an Engine: JSON in, JSON out, no HTTP.

    ``engine`` may be an Engine or a zero-argument factory; a factory is called on a background
    thread, and until it returns the service is "starting" (``/health`` answers 503, as SGLang's
    does while it loads)."""

    def __init__(self, engine: Engine | Callable[[], Engine], merge_requests: bool = True,
                 limits: ServerLimits = ServerLimits(), context_length: int | None = None,
                 launch_command: str = ""):
        self.limits = limits
        self.context_length_arg = context_length  # reported as SGLang reports --context-length
        self.launch_command = launch_command
        self.queue = MergingQueue(self._run_jobs, max_jobs=None if merge_requests else 1)
        self.started = time.time()
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.last_batch_hit_rate = 0.0
        self.aborted = 0
        self.engine: Engine | None = None
        if isinstance(engine, Engine):
            self._attach(engine)
        else:
            threading.Thread(target=self._load, args=(engine,), daemon=True, name="engine-load").start()

    def _load(self, factory: Callable[[], Engine]) -> None:
        try:
            self._attach(factory())
        except Exception as exc:  # noqa: BLE001 - reported by /health and the serve command
            self.load_error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)

    def _attach(self, engine: Engine) -> None:
        self.engine = engine
        window = engine.info.context_window
        self.context_len = min(self.context_length_arg or window, window)
        # SGLang: max_req_len = context - 1, max_req_input_len = max_req_len - 5; longer inputs are
        # aborted by its scheduler (HTTP 200, finish_reason abort).
        self.max_req_input_len = self.context_len - 6
        self.vocab_size = _vocab_size(engine)
        self.ready.set()

    def require_engine(self) -> Engine:
        if not self.ready.is_set():
            raise value_error("the server is still starting (loading the model)", 503)
        return self.engine

    # -- info endpoints --------------------------------------------------------------------
    def model_info(self) -> dict:
        engine = self.require_engine()
        folder = _tokenizer_folder(engine)
        return {
            # A local folder, as SGLang reports a model launched from one, so that sglang-router
            # loads the tokenizer from disk instead of trying the model hub.
            "model_path": folder or engine.info.model, "served_model_name": engine.info.model,
            "tokenizer_path": folder, "is_generation": not hasattr(engine, "classify"),
            "preferred_sampling_params": None, "weight_version": "default", "load_format": "auto",
            "reasoning_parser": None, "tool_call_parser": None, "disaggregation_mode": "null",
            "has_image_understanding": False, "has_audio_understanding": False,
            "model_type": None, "architectures": None,
        }

    def server_info(self) -> dict:
        engine = self.require_engine()
        stats = engine.stats()
        info = self.model_info()
        return {
            # Server arguments (SGLang flattens them here); context_length is null unless given.
            "model_path": info["model_path"], "served_model_name": info["served_model_name"],
            "tokenizer_path": info["tokenizer_path"], "context_length": self.context_length_arg,
            "disable_radix_cache": not getattr(engine, "prefix_cache", True), "schedule_policy": "lpm",
            "enable_metrics": True, "dp_size": 1, "tp_size": 1, "max_running_requests": None,
            "launch_command": self.launch_command,
            # Scheduler info.
            "status": "ready", "max_total_num_tokens": stats.cache_capacity_tokens,
            "max_req_input_len": self.max_req_input_len, "startup_time": round(self.started, 3),
            "internal_states": [{"last_gen_throughput": round(stats.tokens_per_second, 3),
                                 "num_used_tokens": stats.cache_tokens_held}],
            "version": f"{SGLANG_VERSION} (ragscale loopback)",
            # ragscale's own fields.
            "largest_merged_requests": self.queue.largest_merge,
            "limits": {k: getattr(self.limits, k) for k in ("max_body_bytes", "max_prompts", "max_n",
                                                            "max_total_tokens", "max_connections")},
            "uptime_seconds": round(time.time() - self.started, 1),
        }

    def models(self) -> dict:
        engine = self.require_engine()
        card = {"id": engine.info.model, "object": "model", "created": int(self.started), "owned_by": "sglang",
                "root": engine.info.model, "parent": None, "max_model_len": self.context_len}
        return {"object": "list", "data": [card]}

    def metrics(self) -> str:
        engine = self.engine
        s = engine.stats() if engine is not None else None
        model = (engine.info.model if engine is not None else "loading").replace("\\", "\\\\").replace('"', '\\"')
        base = f'model_name="{model}"'
        held, capacity = (s.cache_tokens_held, s.cache_capacity_tokens) if s else (0, 0)
        rows = [  # SGLang 0.5.23's names (srt/observability/metrics_collector.py)
            ("sglang:prompt_tokens_total", "counter", "Number of prefill tokens processed.", "", s.prompt_tokens if s else 0),
            ("sglang:generation_tokens_total", "counter", "Number of generation tokens processed.", "",
             s.generated_tokens if s else 0),
            ("sglang:cached_tokens_total", "counter", "Number of cached prompt tokens by source (device/host/storage).",
             ',cache_source="device"', s.cached_tokens if s else 0),
            ("sglang:num_requests_total", "counter", "Number of requests processed.", "", s.requests if s else 0),
            ("sglang:num_aborted_requests_total", "counter", "Number of requests aborted.", "", self.aborted),
            ("sglang:cache_hit_rate", "gauge", "The prefix cache hit rate.", "", self.last_batch_hit_rate),
            ("sglang:num_used_tokens", "gauge", "The number of used tokens.", "", held),
            ("sglang:max_total_num_tokens", "gauge", "Maximum total number of tokens in the KV cache pool.", "",
             capacity or 0),
            ("sglang:token_usage", "gauge", "The token usage.", "", held / capacity if capacity else 0.0),
            ("sglang:num_running_reqs", "gauge", "The number of running requests.", "",
             1 if self.queue.engine_lock.locked() else 0),
            ("sglang:num_queue_reqs", "gauge", "The number of requests in the waiting queue.", "", self.queue.waiting),
            ("sglang:context_len", "gauge", "The context length.", "", getattr(self, "context_len", 0)),
        ]
        lines = []
        for name, kind, help_text, extra, value in rows:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name}{{{base}{extra}}} {float(value)}"]
        return "\n".join(lines) + "\n"

    # -- cache -----------------------------------------------------------------------------
    def flush_cache(self, timeout: float = 0.0) -> tuple[bool, str]:
        """SGLang's rule: flush only when nothing runs or waits; ``timeout`` seconds to get idle."""
        engine = self.require_engine()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            lock = self.queue.engine_lock
            if lock.acquire(timeout=remaining) if remaining > 0 else lock.acquire(blocking=False):
                try:
                    if self.queue.waiting == 0:
                        # Releasing the memory the cache held is the engine's business (flush_cache).
                        engine.flush_cache()
                        return True, ("Cache flushed.\nPlease check backend logs for more details. (When there are "
                                      "running or waiting requests, the operation will not be performed.)\n")
                finally:
                    self.queue.engine_lock.release()
            if time.monotonic() >= deadline:
                running = 1 if self.queue.engine_lock.locked() else 0
                return False, (f"Cache not flushed because there are pending requests. "
                               f"#queue-req: {self.queue.waiting}, #running-req: {running}\n")
            time.sleep(0.01)

    # -- generation ------------------------------------------------------------------------
    def parse(self, body) -> GenerateBody:
        engine = self.require_engine()
        return parse_generate(body, engine.encode, self.context_len, self.vocab_size, self.limits)

    def generate(self, body) -> dict | list:
        request = self.parse(body)
        started = time.perf_counter()
        # Inputs SGLang's scheduler would abort (>= max_req_input_len) never reach the engine.
        runnable = [p for p in request.prompts if len(p.ids) < self.max_req_input_len]
        results = self.queue.submit(_Job(runnable)) if runnable else []
        latency = time.perf_counter() - started
        by_prompt = iter(results)
        flat = []
        for i, prompt in enumerate(request.prompts):
            items = next(by_prompt) if len(prompt.ids) < self.max_req_input_len else self._aborted(prompt)
            for j, item in enumerate(items):
                rid = prompt.rid or uuid.uuid4().hex
                item["meta_info"].update(id=rid if len(items) == 1 else f"{rid}-{j}", e2e_latency=round(latency, 6))
                flat.append(item)
        return flat[0] if request.single and len(flat) == 1 else flat

    def _aborted(self, prompt: PromptRequest) -> list[dict]:
        self.aborted += 1
        message = (f"Input length ({len(prompt.ids)} tokens) exceeds the maximum allowed length "
                   f"({self.max_req_input_len} tokens). Use a shorter input or enable --allow-auto-truncate.")
        meta = {"prompt_tokens": len(prompt.ids), "completion_tokens": 0, "cached_tokens": 0,
                "finish_reason": {"type": "abort", "message": message, "status_code": 400, "err_type": None},
                "weight_version": "default"}
        return [{"text": "", "output_ids": [], "meta_info": dict(meta)} for _ in range(prompt.params.n)]

    def _run_jobs(self, jobs: list[_Job]) -> None:
        """Every prompt of every job, one engine call per distinct sampling setting (so sibling
        requests decode as one batch). A call that fails with several jobs in it is retried job by
        job (each was already checked, so this is an engine fault, not a bad request)."""
        groups: dict = {}
        for j, job in enumerate(jobs):
            job.results = [None] * len(job.prompts)
            for i, prompt in enumerate(job.prompts):
                groups.setdefault(prompt.params, []).append((j, i))
        for params, members in groups.items():
            try:
                outs = self._run_group([jobs[j].prompts[i] for j, i in members], params)
            except Exception as exc:  # noqa: BLE001
                owners = {j for j, _ in members}
                if len(owners) == 1:
                    jobs[owners.pop()].error = exc
                    continue
                for owner in owners:  # find the culprit; jobs of other groups keep their results
                    mine = [(j, i) for j, i in members if j == owner]
                    try:
                        for (j, i), items in zip(mine, self._run_group([jobs[j].prompts[i] for j, i in mine], params)):
                            jobs[j].results[i] = items
                    except Exception as exc2:  # noqa: BLE001
                        jobs[owner].error = exc2
                continue
            for (j, i), items in zip(members, outs):
                jobs[j].results[i] = items

    def _run_group(self, prompts: list[PromptRequest], params) -> list[list[dict]]:
        engine = self.engine
        ids = [p.ids for p in prompts]
        seeds = [p.seed for p in prompts]
        before = engine.stats()
        prompt_before, cached_before = before.prompt_tokens, before.cached_tokens
        if all(s is None for s in seeds) or params.temperature == 0:
            gens = engine.generate(ids, params)
        else:
            # Per-request seeds: sample j of request i gets seed_i + j.
            one = replace(params, n=1)
            expanded = [x for x in ids for _ in range(params.n)]
            row_seeds = [None if s is None else s + j for s in seeds for j in range(params.n)]
            gens = engine.generate_seeded(expanded, one, row_seeds) if hasattr(engine, "generate_seeded") \
                else engine.generate(expanded, one)
        after = engine.stats()
        prompt_delta = after.prompt_tokens - prompt_before
        self.last_batch_hit_rate = (after.cached_tokens - cached_before) / prompt_delta if prompt_delta > 0 else 0.0
        out = []
        for k, prompt in enumerate(prompts):
            items = []
            for g in gens[k * params.n:(k + 1) * params.n]:
                if g.finish_reason == "length":
                    finish = {"type": "length", "length": g.usage.completion_tokens}
                else:
                    finish = {"type": "stop", "matched": None}
                meta = {"prompt_tokens": g.usage.prompt_tokens, "completion_tokens": g.usage.completion_tokens,
                        "cached_tokens": g.usage.cached_tokens, "finish_reason": finish, "weight_version": "default"}
                if prompt.return_logprob:
                    lps = g.logprobs or [None] * len(g.output_ids)
                    meta["output_token_logprobs"] = [[lp, t, None] for lp, t in zip(lps, g.output_ids)]
                    if prompt.logprob_start_len >= 0:
                        meta["input_token_logprobs"] = self._input_logprobs(g.prompt_ids, prompt.logprob_start_len)
                        if prompt.token_ids_logprob:
                            meta["input_token_ids_logprobs"] = self._input_ids_logprobs(
                                g.prompt_ids, prompt.logprob_start_len, prompt.token_ids_logprob)
                items.append({"text": g.text, "output_ids": list(g.output_ids), "meta_info": meta})
            out.append(items)
        return out

    def _input_logprobs(self, ids: list[int], start: int) -> list[list]:
        """[logprob, token_id, None] for the prompt tokens from ``start`` on (None for token 0)."""
        start = min(start, len(ids) - 1)
        entries = [[None, ids[0], None]] if start == 0 else []
        first = max(start, 1)
        if first < len(ids):
            scores = self.engine.score(ids[:first], [ids[first:]])[0]
            entries += [[lp, t, None] for lp, t in zip(scores, ids[first:])]
        return entries

    def _input_ids_logprobs(self, ids: list[int], start: int, candidates: list[int]) -> list:
        """Per prompt position from ``start``: the logprob of each candidate token there (None at 0)."""
        rows = []
        for pos in range(min(start, len(ids) - 1), len(ids)):
            if pos == 0:
                rows.append(None)
                continue
            scores = self.engine.score(ids[:pos], [[t] for t in candidates])
            rows.append([[s[0], t, None] for s, t in zip(scores, candidates)])
        return rows

    # -- reward models ---------------------------------------------------------------------
    def classify(self, body, openai: bool) -> dict | list:
        engine = self.require_engine()
        if not hasattr(engine, "classify"):
            raise value_error("This model does not appear to be an embedding model by default. "
                              "Please add `--is-embedding` when launching the server or try another model.")
        if not isinstance(body, dict):
            raise http_error("the body must be a JSON object", 400)
        key = "input" if openai else "text"
        texts = body.get(key)
        single = isinstance(texts, str)
        texts = [texts] if single else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise http_error(f"{key} must be a string or a non-empty list of strings", 400)
        if len(texts) > self.limits.max_prompts:
            raise value_error(f"a request may carry at most {self.limits.max_prompts} inputs, got {len(texts)}")
        with self.queue.engine_lock:
            logits = engine.classify(texts)
        if not openai:
            rows = [{"embedding": [float(x) for x in row],
                     "meta_info": {"id": uuid.uuid4().hex, "prompt_tokens": len(engine.encode(t))}}
                    for row, t in zip(logits, texts)]
            return rows[0] if single else rows
        data = []
        for i, row in enumerate(logits):
            top = max(row)
            exps = [pow(2.718281828459045, x - top) for x in row]
            probs = [e / sum(exps) for e in exps]
            best = probs.index(max(probs))
            data.append({"index": i, "label": f"LABEL_{best}", "probs": probs, "num_classes": len(probs)})
        tokens = sum(len(engine.encode(t)) for t in texts)
        return {"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                "model": engine.info.model, "data": data,
                "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}}


def _vocab_size(engine: Engine) -> int | None:
    size = getattr(engine, "vocab_size", None)
    if isinstance(size, int):
        return size
    try:
        return len(engine.tokenizer)
    except TypeError:
        return None


def _tokenizer_folder(engine: Engine) -> str | None:
    if engine.info.kind != "embedded":
        return None
    from ragscale.engines.model_files import bf16_copy_dir

    folder = bf16_copy_dir()
    return str(folder) if (folder / "tokenizer_config.json").exists() else None


class _Connections:
    """Every open connection, whether it is still *reading* its request or *working* on it, and
    who gives way when the server is full.

    A thread per connection means a client that dribbles its request head one byte at a time
    holds a thread and a slot; with only a cap on connections, 256 such sockets kept /health at
    503 (issue #24). So: a request must arrive whole (head and body, idle keep-alive time
    included) within ``request_timeout``, whatever trickles in; and when the server, or one
    client address, is at its cap, a newcomer takes the place of the connection that has been
    reading longest. Only when every connection in the way is working is the newcomer refused
    (503 at once). Connections that are working are never dropped.
    """

    def __init__(self, limits: ServerLimits):
        self.limits = limits
        self._lock = threading.Lock()
        self._open: dict[socket.socket, list] = {}  # socket -> [client address, phase, since]
        self._stop = threading.Event()
        threading.Thread(target=self._watch, name="request-deadlines", daemon=True).start()

    def admit(self, sock: socket.socket, client: str) -> bool:
        with self._lock:
            for crowd, cap in ((lambda: self._from(client), self.limits.per_client_connections),
                               (lambda: list(self._open), self.limits.max_connections)):
                crowd = crowd()
                if len(crowd) >= cap:
                    reading = [s for s in crowd if self._open[s][1] == "reading"]
                    if not reading:
                        return False
                    self._drop(min(reading, key=lambda s: self._open[s][2]))
            self._open[sock] = [client, "reading", time.monotonic()]
            return True

    def reading(self, sock: socket.socket) -> None:
        self._set(sock, "reading")

    def working(self, sock: socket.socket) -> None:
        self._set(sock, "working")

    def forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.pop(sock, None)

    def close(self) -> None:
        self._stop.set()

    def _from(self, client: str) -> list[socket.socket]:
        return [s for s, (address, _, _) in self._open.items() if address == client]

    def _set(self, sock: socket.socket, phase: str) -> None:
        with self._lock:
            if sock in self._open:
                self._open[sock][1:] = [phase, time.monotonic()]

    def _drop(self, sock: socket.socket) -> None:
        """Wake the thread blocked reading ``sock`` (its read sees the end of the stream)."""
        self._open.pop(sock, None)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _watch(self) -> None:
        tick = min(0.25, self.limits.request_timeout / 4)
        while not self._stop.wait(tick):
            late = time.monotonic() - self.limits.request_timeout
            with self._lock:
                for sock in [s for s, (_, phase, since) in self._open.items() if phase == "reading" and since < late]:
                    self._drop(sock)


class _Server(ThreadingHTTPServer):
    """The stdlib threading server with a real backlog and ``_Connections`` deciding who gets a thread."""

    request_queue_size = 128  # listen backlog (the stdlib default of 5 resets bursts)
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, handler, limits: ServerLimits):
        self.connections = _Connections(limits)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self.connections.admit(request, client_address[0]):
            # Every connection in the way is working: answer at once (SGLang answers 503 when its
            # queue is full) instead of starting a thread.
            body = json.dumps({"error": {"message": "too many open connections; retry shortly"}}).encode()
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.connections.forget(request)
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.forget(request)

    def server_close(self):
        self.connections.close()
        super().server_close()

    def handle_error(self, request, client_address):
        # A client that hung up, or a connection dropped for being late, is not a server error:
        # the stdlib would print a traceback for each (256 of them when slow clients are cut off).
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


_GET_ONLY = {"/health", "/health_generate", "/model_info", "/get_model_info", "/server_info", "/get_server_info",
             "/v1/models", "/metrics"}
_POST_ONLY = {"/generate", "/flush_cache", "/classify", "/v1/classify", *openai_routes.PATHS}


def make_server(engine: Engine | Callable[[], Engine], host: str = "127.0.0.1", port: int = 30000,
                merge_requests: bool = True, limits: ServerLimits = ServerLimits(),
                context_length: int | None = None, launch_command: str = "") -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) for ``engine`` (or a factory that builds it in the
    background); call ``serve_forever()`` on it. ``merge_requests=False`` runs requests strictly
    one at a time (for A/B measurements). The service is at ``server.service``."""
    service = EngineService(engine, merge_requests, limits, context_length, launch_command)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection pool is used
        timeout = limits.socket_timeout  # idle keep-alive and slow bodies give their thread back
        server_version = "ragscale-sglang"

        def log_message(self, format, *args):  # noqa: A002 - quiet: one line per request is noise here
            pass

        # -- connection layer: phases for _Connections, request lines nobody should send ------
        def handle_one_request(self):
            self.server.connections.reading(self.connection)  # the next request's deadline starts now
            super().handle_one_request()

        def parse_request(self):
            if len(self.raw_requestline.split()) == 2:
                # HTTP/0.9 has no headers to end it; the stdlib would wait for them until the socket timeout.
                self.request_version, self.close_connection = "HTTP/1.0", True
                self.command, self.requestline = None, self.raw_requestline.decode("latin-1").rstrip("\r\n")
                self.send_error(400, "HTTP/0.9 requests are not supported")
                return False
            return super().parse_request()

        def _send(self, status: int, body, content_type: str = "application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _fail(self, error: ProtocolError) -> None:
            self._send(error.status, error.body())

        def _route(self) -> str:
            return urlsplit(self.path).path

        def do_GET(self):  # noqa: N802 - http.server's naming
            self.server.connections.working(self.connection)
            path = self._route()
            try:
                if path in ("/health", "/health_generate"):
                    self._send(200 if service.ready.is_set() else 503, "", "text/plain")
                elif path in ("/model_info", "/get_model_info"):
                    self._send(200, service.model_info())
                elif path in ("/server_info", "/get_server_info"):
                    self._send(200, service.server_info())
                elif path == "/v1/models":
                    self._send(200, service.models())
                elif path == "/metrics":
                    self._send(200, service.metrics(), "text/plain; version=0.0.4")
                elif path in _POST_ONLY:
                    self._send(405, {"detail": "Method Not Allowed"})
                else:
                    self._send(404, {"detail": "Not Found"})
            except ProtocolError as exc:
                self._fail(exc)

        def do_POST(self):  # noqa: N802
            path = self._route()
            try:
                raw = self._read_body()
                if path == "/flush_cache":
                    return self._flush()
                if path in _GET_ONLY:
                    return self._send(405, {"detail": "Method Not Allowed"})
                if path not in _POST_ONLY:
                    return self._send(404, {"detail": "Not Found"})
                body = _json_body(raw)
                if path == "/generate":
                    self._send(200, service.generate(body))
                elif path in openai_routes.PATHS:
                    self._send(200, openai_routes.answer(service, path, body))
                else:
                    self._send(200, service.classify(body, openai=path == "/v1/classify"))
            except ProtocolError as exc:
                self._fail(exc)
            except EngineError as exc:  # the engine refused the request (a ValueError in SGLang)
                self._fail(value_error(str(exc).splitlines()[0][:500] if str(exc) else "request refused"))
            except TimeoutError:
                self.close_connection = True
                self._fail(http_error(f"the request body did not arrive within {limits.socket_timeout:.0f} s", 408))
            except Exception:  # noqa: BLE001 - never an exception text to the client
                traceback.print_exc(file=sys.stderr)
                self._fail(value_error("internal error while serving the request (see the server log)", 500))

        def _method_not_allowed(self):
            self.close_connection = True
            self._send(405, {"detail": "Method Not Allowed"})

        do_PUT = do_DELETE = do_PATCH = _method_not_allowed  # noqa: N815

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                raise http_error("chunked request bodies are not supported; send a Content-Length", 411)
            declared = self.headers.get("Content-Length")
            if declared is None:
                self.server.connections.working(self.connection)
                return b""
            # ASCII digits only ("²".isdigit() is true) and few enough for int().
            if not re.fullmatch(r"[0-9]{1,18}", declared.strip()):
                self.close_connection = True
                raise http_error(f"invalid Content-Length {declared[:20]!r}", 400)
            size = int(declared)
            if size > limits.max_body_bytes:
                self.close_connection = True  # the body is never read: the connection cannot be reused
                raise http_error(f"the request body is {size:,} bytes; this server accepts at most "
                                 f"{limits.max_body_bytes:,}", 413)
            chunks, left = [], size
            while left:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    self.close_connection = True
                    raise http_error("the request body is shorter than its Content-Length", 400)
                chunks.append(chunk)
                left -= len(chunk)
            self.server.connections.working(self.connection)
            return b"".join(chunks)

        def _flush(self):
            query = parse_qs(urlsplit(self.path).query)
            try:
                timeout = float(query.get("timeout", ["0"])[0])
                if not 0 <= timeout <= limits.max_flush_wait:  # 1e10 overflowed the lock's wait
                    raise ValueError
            except ValueError:
                raise http_error(f"timeout: Input should be a number of seconds from 0 to {limits.max_flush_wait:g}",
                                 400) from None
            ok, message = service.flush_cache(timeout)
            self._send(200 if ok else 400, message, "text/plain; charset=utf-8")

    server = _Server((host, port), Handler, limits)
    server.service = service
    return server


def _json_body(raw: bytes):
    if not raw:
        raise http_error("Field required: the request body is empty", 400)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, absurd nesting
        raise http_error(f"JSON decode error: {str(exc)[:120]}", 400) from None
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(body):
        raise http_error("JSON decode error: a string holds a lone surrogate (\\ud800-\\udfff), which is not text", 400)
    return body


# JSON may escape a lone UTF-16 surrogate, which Python decodes into a str no encoder accepts.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def sglang_command(model_path: str, port: int = 30000, host: str = "127.0.0.1", dp_size: int = 1,
                   python: str = "python", context_length: int | None = None) -> list[str]:
    """The launch command with the flags ragscale relies on: metrics on, prefix-aware scheduling.

    ``dp_size`` > 1 uses SGLang's own data-parallel balancer, which ignores prefixes; for
    prefix-aware routing over replicas see ``router_commands`` (ragscale.engines.router)."""
    cmd = [python, "-m", "sglang.launch_server", "--model-path", model_path, "--host", host, "--port", str(port),
           "--enable-metrics", "--schedule-policy", "lpm"]
    if context_length:
        cmd += ["--context-length", str(context_length)]
    if dp_size > 1:
        cmd += ["--dp-size", str(dp_size)]
    return cmd
