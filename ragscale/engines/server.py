"""Serve an Engine over SGLang's native JSON, so one CPU box can serve a team.

``ragscale serve embedded --port P`` runs this with the embedded engine; ``SGLangEngine`` talks
to it exactly as to a real SGLang server. Implemented: /generate (single and batch form,
``text`` or ``input_ids``, per-request ``sampling_params``, ``return_logprob``,
``logprob_start_len``), /health, /get_model_info, /get_server_info, /flush_cache and /metrics
(Prometheus text with SGLang's counter names). Unknown sampling parameters get HTTP 400, as in
SGLang. The engine runs one call at a time; requests that arrive while it is busy wait and are
merged into its next call (``MergingQueue``), so concurrent single-prompt requests decode as one
batch, as SGLang's scheduler would batch them. The standard library's threading server is enough.

``ragscale serve sglang`` builds the real ``sglang.launch_server`` command (see ``sglang_command``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ragscale.engines.base import Engine, SamplingParams
from ragscale.errors import EngineError

# The sampling parameters we implement; SGLang rejects unknown keys and so do we.
SAMPLING_KEYS = {"max_new_tokens", "temperature", "top_p", "stop", "n", "sampling_seed"}
REQUEST_KEYS = {"text", "input_ids", "sampling_params", "return_logprob", "logprob_start_len",
                "top_logprobs_num", "rid", "stream", "return_text_in_logprobs"}


class BadRequest(ValueError):
    pass


@dataclass
class _Job:
    """One /generate request, parsed: per prompt its ids, (sampling params, seed), logprob options."""

    prompts: list[list[int]]
    params: list[tuple[SamplingParams, int | None]]
    want_logprob: list
    start_len: list
    results: list = field(default_factory=list)
    error: Exception | None = None
    done: threading.Event = field(default_factory=threading.Event)


class MergingQueue:
    """Runs jobs on a single engine, merging the jobs that queue up while it is busy.

    Leader/follower: every request queues its job, then takes the engine lock; whoever holds it
    runs everything queued so far in one call of ``run``, and the others find their job done.
    A merged call that fails is retried job by job, so one bad request fails alone.
    """

    def __init__(self, run, max_jobs: int | None = None):
        self._run = run
        self.max_jobs = max_jobs  # None: merge everything queued; 1: one request at a time (A/B runs)
        self._queued: list[_Job] = []
        self._queue_lock = threading.Lock()
        self.engine_lock = threading.Lock()
        self.largest_merge = 0  # most jobs run in one call (for tests and /get_server_info)

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
    """The SGLang-shaped view of an Engine: JSON in, JSON out, no HTTP."""

    def __init__(self, engine: Engine, merge_requests: bool = True):
        self.engine = engine
        self.queue = MergingQueue(self._run_jobs, max_jobs=None if merge_requests else 1)
        self.started = time.time()

    def model_info(self) -> dict:
        info = self.engine.info
        tokenizer_path = None
        if info.kind == "embedded":
            from ragscale.engines.model_files import bf16_copy_dir

            tokenizer_path = str(bf16_copy_dir())
        return {"model_path": info.model, "tokenizer_path": tokenizer_path, "is_generation": True,
                "preferred_sampling_params": None, "weight_version": "default"}

    def server_info(self) -> dict:
        info, stats = self.engine.info, self.engine.stats()
        return {
            "version": "ragscale-embedded", "model_path": info.model, "context_length": info.context_window,
            "disable_radix_cache": not getattr(self.engine, "prefix_cache", True),
            "schedule_policy": "lpm", "cache_tokens_held": stats.cache_tokens_held,
            "cache_capacity_tokens": stats.cache_capacity_tokens, "largest_merged_requests": self.queue.largest_merge,
            "uptime_seconds": round(time.time() - self.started, 1),
        }

    def flush_cache(self) -> None:
        with self.queue.engine_lock:
            self.engine.flush_cache()

    def metrics(self) -> str:
        s = self.engine.stats()
        lines = []
        for name, kind, value, help_text in [
            ("sglang:prompt_tokens_total", "counter", s.prompt_tokens, "Prompt tokens processed"),
            ("sglang:cached_tokens_total", "counter", s.cached_tokens, "Prompt tokens served from the prefix cache"),
            ("sglang:generation_tokens_total", "counter", s.generated_tokens, "Tokens generated"),
            ("sglang:num_requests_total", "counter", s.requests, "Requests served"),
            ("sglang:cache_hit_rate", "gauge", s.hit_rate, "Cached / prompt tokens since start"),
            ("sglang:token_usage_tokens", "gauge", s.cache_tokens_held, "Tokens of KV held by the prefix cache"),
        ]:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}",
                      f'{name}{{model_name="{self.engine.info.model}"}} {float(value)}']
        return "\n".join(lines) + "\n"

    def generate(self, body: dict) -> dict | list:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        unknown = set(body) - REQUEST_KEYS
        if unknown:
            raise BadRequest(f"unknown request fields: {', '.join(sorted(unknown))}")
        if body.get("stream"):
            raise BadRequest("stream=true is not supported by this server")
        if body.get("top_logprobs_num"):
            raise BadRequest("top_logprobs_num is not supported by this server")
        if ("text" in body) == ("input_ids" in body):
            raise BadRequest("give exactly one of text or input_ids")
        single, prompts = self._prompts(body)
        sampling = self._per_request(body.get("sampling_params") or {}, len(prompts), "sampling_params")
        want_logprob = self._per_request(body.get("return_logprob", False), len(prompts), "return_logprob")
        start_len = self._per_request(body.get("logprob_start_len", -1), len(prompts), "logprob_start_len")
        params = [self._sampling(sp) for sp in sampling]

        started = time.perf_counter()
        results = self.queue.submit(_Job(prompts, params, want_logprob, start_len))
        latency = time.perf_counter() - started
        flat = []
        for i, per_prompt in enumerate(results):
            for item in per_prompt:
                item["meta_info"].update(id=str(i), e2e_latency=latency)
                flat.append(item)
        return flat[0] if single and len(flat) == 1 else flat

    def _run_jobs(self, jobs: list[_Job]) -> None:
        """Every prompt of every job, one engine call per distinct sampling setting (so sibling
        requests decode as one batch); each job gets its own prompts' results back."""
        prompts = [ids for job in jobs for ids in job.prompts]
        params = [p for job in jobs for p in job.params]
        want_logprob = [w for job in jobs for w in job.want_logprob]
        start_len = [s for job in jobs for s in job.start_len]
        results: list[list[dict]] = [[] for _ in prompts]
        groups: dict[SamplingParams, list[int]] = {}
        for i, (p, _) in enumerate(params):
            groups.setdefault(p, []).append(i)
        for p, members in groups.items():
            for i, item in zip(members, self._run(prompts, members, p, [params[i][1] for i in members],
                                                  want_logprob, start_len)):
                results[i] = item
        at = 0
        for job in jobs:
            job.results, at = results[at:at + len(job.prompts)], at + len(job.prompts)

    # -- helpers ---------------------------------------------------------------------------
    def _run(self, prompts, members, params: SamplingParams, seeds, want_logprob, start_len) -> list[list[dict]]:
        engine = self.engine
        ids = [prompts[i] for i in members]
        expanded = [x for x in ids for _ in range(params.n)]
        if all(s is None for s in seeds) or params.temperature == 0:
            gens = engine.generate(ids, params)
        else:
            # Per-request seeds: sample j of request i gets seed_i + j (n is usually 1 here).
            from dataclasses import replace

            one = replace(params, n=1)
            row_seeds = [None if s is None else s + j for s in seeds for j in range(params.n)]
            gens = engine.generate_seeded(expanded, one, row_seeds) if hasattr(engine, "generate_seeded") \
                else engine.generate(expanded, one)
        out = []
        for k, i in enumerate(members):
            items = []
            for g in gens[k * params.n:(k + 1) * params.n]:
                meta = {
                    "prompt_tokens": g.usage.prompt_tokens,
                    "cached_tokens": g.usage.cached_tokens,
                    "completion_tokens": g.usage.completion_tokens,
                    "finish_reason": {"type": g.finish_reason},
                }
                if want_logprob[i]:
                    lps = g.logprobs or [None] * len(g.output_ids)
                    meta["output_token_logprobs"] = [[lp, t, None] for lp, t in zip(lps, g.output_ids)]
                    if start_len[i] is not None and start_len[i] >= 0:
                        meta["input_token_logprobs"] = self._input_logprobs(g.prompt_ids, start_len[i])
                items.append({"text": g.text, "output_ids": g.output_ids, "meta_info": meta})
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

    def _prompts(self, body: dict) -> tuple[bool, list[list[int]]]:
        if "text" in body:
            text = body["text"]
            single = isinstance(text, str)
            texts = [text] if single else text
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise BadRequest("text must be a string or a list of strings")
            return single, [self.engine.encode(t) for t in texts]
        ids = body["input_ids"]
        if isinstance(ids, list) and ids and all(isinstance(t, int) for t in ids):
            return True, [ids]
        if isinstance(ids, list) and ids and all(isinstance(x, list) and all(isinstance(t, int) for t in x) for x in ids):
            return False, ids
        raise BadRequest("input_ids must be a list of token ids or a list of such lists")

    @staticmethod
    def _per_request(value, count: int, name: str) -> list:
        if isinstance(value, list):  # one entry per prompt
            if len(value) != count:
                raise BadRequest(f"{name} has {len(value)} entries for {count} prompts")
            return value
        return [value] * count

    @staticmethod
    def _sampling(sp) -> tuple[SamplingParams, int | None]:
        if not isinstance(sp, dict):
            raise BadRequest("sampling_params must be an object")
        unknown = set(sp) - SAMPLING_KEYS
        if unknown:
            raise BadRequest(f"unknown sampling parameters: {', '.join(sorted(unknown))} "
                             f"(supported: {', '.join(sorted(SAMPLING_KEYS))})")
        stop = sp.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        try:
            params = SamplingParams(
                max_new_tokens=int(sp.get("max_new_tokens", 128)), temperature=float(sp.get("temperature", 1.0)),
                top_p=float(sp.get("top_p", 1.0)), stop=stop, n=int(sp.get("n", 1)), return_logprobs=True,
            )
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"bad sampling parameters: {exc}") from exc
        seed = sp.get("sampling_seed")
        if seed is not None and not isinstance(seed, int):
            raise BadRequest("sampling_seed must be an integer")
        return params, seed


def make_server(engine: Engine, host: str = "127.0.0.1", port: int = 30000,
                merge_requests: bool = True) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) for ``engine``; call ``serve_forever()`` on it.
    ``merge_requests=False`` runs requests strictly one at a time (for A/B measurements)."""
    service = EngineService(engine, merge_requests)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection pool is used

        def log_message(self, format, *args):  # noqa: A002 - quiet: one line per request is noise here
            pass

        def _send(self, status: int, body, content_type: str = "application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"message": message, "code": status}})

        def do_GET(self):  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path in ("/health", "/health_generate"):
                self._send(200, "", "text/plain")
            elif path == "/get_model_info":
                self._send(200, service.model_info())
            elif path == "/get_server_info":
                self._send(200, service.server_info())
            elif path == "/metrics":
                self._send(200, service.metrics(), "text/plain; version=0.0.4")
            elif path == "/flush_cache":
                self._flush()
            else:
                self._error(404, f"no such endpoint: {path}")

        def do_POST(self):  # noqa: N802
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if path == "/flush_cache":
                return self._flush()
            if path != "/generate":
                return self._error(404, f"no such endpoint: {path}")
            try:
                body = json.loads(raw or b"{}")
                self._send(200, service.generate(body))
            except json.JSONDecodeError as exc:
                self._error(400, f"the body is not JSON: {exc}")
            except (BadRequest, EngineError) as exc:
                self._error(400, str(exc))
            except Exception as exc:  # noqa: BLE001 - report, keep serving
                self._error(500, f"{type(exc).__name__}: {exc}")

        def _flush(self):
            service.flush_cache()
            self._send(200, "Cache flushed.\n", "text/plain")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def sglang_command(model_path: str, port: int = 30000, host: str = "127.0.0.1", dp_size: int = 1,
                   python: str = "python") -> list[str]:
    """The launch command with the flags ragscale relies on: metrics on, prefix-aware scheduling."""
    cmd = [python, "-m", "sglang.launch_server", "--model-path", model_path, "--host", host, "--port", str(port),
           "--enable-metrics", "--schedule-policy", "lpm"]
    if dp_size > 1:
        cmd += ["--dp-size", str(dp_size)]
    return cmd
