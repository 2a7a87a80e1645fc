"""An HTTP client for SGLang's native API (one server, or sglang-router in front of many).

Prompts are always sent as ``input_ids`` so that token counts are exact and continuing a branch
(prompt ids + output ids) hits the server's radix cache for the whole prefix; re-sending text
could tokenise differently at the join. That needs the server model's tokenizer on this side:

- ``tokenizer=`` a local folder (or hub name already in the local HF cache) with its tokenizer;
- otherwise the server's ``tokenizer_path`` from /model_info, if that folder exists here;
- otherwise, if the server runs SmolLM2, the embedded SmolLM2 tokenizer;
- otherwise a clear EngineError asking for ``tokenizer=`` (guessing a vocabulary would send
  garbage ids). SGLang's /tokenize endpoint is not used: it is missing from older servers and
  from sglang-router, and chat templates need the tokenizer anyway.

What SGLang 0.5.x and sglang-router 0.3.x need from a client (all checked in the tests):

- one ``sampling_params`` object per request (the router refuses a list with HTTP 422), so
  samples with different seeds go out as separate, concurrent requests;
- ``/model_info`` and ``/server_info`` first, the deprecated ``/get_model_info`` and
  ``/get_server_info`` as fallback (the router answers only the old names);
- the context window: ``context_length`` (null unless the server was launched with
  ``--context-length``), else ``/v1/models`` ``data[0].max_model_len``, else the top-level
  ``max_req_input_len``; through the router (whose own info has none of them) from the first
  worker it lists. ``max_req_input_len`` is also kept as the input limit of SGLang's scheduler;
- prompts are refused as SGLang refuses them: input >= context, input + max_new_tokens > context,
  input >= max_req_input_len (SGLang would abort it);
- an ``abort`` finish (HTTP 200) is an EngineError, never a silent "stop";
- run-level hit rate from per-request ``cached_tokens`` (``stats()``) and from deltas of the
  ``sglang:*_tokens_total`` counters (``metrics_hit_rate()``): ``/metrics`` on a server,
  ``/engine_metrics`` on the router (which merges the workers' and renames ``sglang:`` to
  ``sglang_``) — not from the ``sglang:cache_hit_rate`` gauge, which covers one batch;
- ``/flush_cache`` is refused while requests run (HTTP 400 from SGLang, 206 with JSON from the
  router): that is an EngineError; ``flush_cache(timeout=S)`` asks the server to wait S seconds.

Every failure is an ``EngineError`` with one line. Error text from the server is shown only when
it has one of SGLang's error shapes, and only its message, cut short: a URL that is not an SGLang
server (a page viewer can type any URL) never has its body echoed back.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import requests

from ragscale.deploy import check_server_given_url
from ragscale.engines.base import EngineInfo, Generation, Prompt, SamplingParams, Usage, sample_seed
from ragscale.engines.http_client import (
    NOT_JSON, HTTPEngine, one_line, parse_json, parse_prometheus, token_count,
)
from ragscale.errors import EngineError, UserError

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_WINDOW = 8192  # only when the server does not say
DEFAULT_TIMEOUT = 600.0  # seconds to wait for one answer (a long generation)
HEALTH_TIMEOUT = 20.0  # SGLang's /health runs a one-token generation and may take this long
MAX_ANSWER_BYTES = 256 * 1024 * 1024  # a larger answer is not SGLang's (or not one we can hold)
# Plain-text answers SGLang and sglang-router give (everything else plain is not echoed).
_PLAIN_MESSAGES = ("Cache not flushed", "Flush cache failed", "Failed to deserialize the JSON body",
                   "Failed to parse the request body", "No available workers", "No healthy workers")


class SGLangEngine(HTTPEngine):
    max_answer_bytes = MAX_ANSWER_BYTES
    redirect_advice = "give the SGLang server's own URL"

    def __init__(self, url: str, tokenizer=None, timeout: float | None = DEFAULT_TIMEOUT,
                 connect_timeout: float = 5.0, retries: int = 3, backoff: float = 0.5,
                 follow_router_workers: bool = True):
        """``follow_router_workers``: behind sglang-router, read the context window from the first
        worker it lists (a second URL, not typed by the user; only numbers are read from it). That
        URL passes the checks of a typed one (``ragscale.deploy.check_server_given_url``: loopback
        or allow-listed in shared mode, never link-local, no path of the router's choosing), and
        the worker's own worker list is never followed."""
        url = (url or "").strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise EngineError(f"an SGLang URL looks like http://host:30000, got {url[:80]!r}")
        super().__init__(url, tokenizer, timeout, DEFAULT_TIMEOUT, connect_timeout, retries, backoff,
                         pool_connections=4, pool_maxsize=32)
        self.follow_router_workers = follow_router_workers
        self.max_input_tokens: int | None = None  # SGLang's max_req_input_len, when known
        self._paths: dict[str, str] = {}  # endpoint family -> the name this server answers

    # -- server endpoints ------------------------------------------------------------------
    def health(self) -> None:
        """Raise EngineError unless the server is up and has a model behind it.

        ``/health`` first (SGLang's may take up to 20 s; 503 while starting); then the model info,
        because sglang-router's /health passes even with no worker behind it."""
        response = self._request("GET", "/health", retries=0,
                                 timeout=(self.timeout[0], max(HEALTH_TIMEOUT, self.timeout[1])))
        self._read(response, "/health")
        self.model_info()

    def model_info(self) -> dict:
        info = self._get_json_fallback("model_info", ("/model_info", "/get_model_info"))
        # SGLang's model info always names its model and says whether it generates; a JSON answer
        # without both is some other service, and nothing of it is shown.
        if not isinstance(info.get("model_path"), str) or not isinstance(info.get("is_generation"), bool):
            raise EngineError(f"{self.url} answered the model-info request with JSON that is not SGLang's; "
                              "is this an SGLang server?")
        return info

    def server_info(self) -> dict:
        return self._get_json_fallback("server_info", ("/server_info", "/get_server_info"))

    @property
    def info(self) -> EngineInfo:
        if self._info is None:
            model = self.model_info()
            name = model.get("served_model_name") or model.get("model_path") or "unknown"
            window, self.max_input_tokens = self._context_window()
            self._info = EngineInfo(kind="sglang", model=one_line(str(name))[:120], context_window=window,
                                    url=self.url)
        return self._info

    def _context_window(self) -> tuple[int, int | None]:
        """(context window, scheduler input limit) from the server, or from a worker of a router."""
        try:
            server = self.server_info()
        except EngineError:
            server = {}
        if self.follow_router_workers and (server.get("router_manager") or "workers_count" in server):
            worker = self._first_worker()
            if worker is not None:
                return worker._context_window()
        limit = _positive_int(server, "max_req_input_len", "/server_info")
        window = _positive_int(server, "context_length", "/server_info")
        if window is None:
            try:
                models = self._get_json("/v1/models", retries=0)
            except EngineError:
                models = {}
            cards = models.get("data") if isinstance(models, dict) else None
            if isinstance(cards, list) and cards and isinstance(cards[0], dict):
                window = _positive_int(cards[0], "max_model_len", "/v1/models")
        for state in server.get("internal_states") or []:  # older SGLang versions
            if isinstance(state, dict):
                window = window or _positive_int(state, "context_len", "/server_info")
                limit = limit or _positive_int(state, "max_req_input_len", "/server_info")
        return window or limit or DEFAULT_CONTEXT_WINDOW, limit

    def _first_worker(self) -> "SGLangEngine | None":
        """A client of the first healthy worker sglang-router lists (only numbers are read from it)."""
        try:
            listing = self._get_json("/workers", retries=0)
        except EngineError:
            return None
        workers = listing.get("workers") if isinstance(listing, dict) else None
        for worker in workers if isinstance(workers, list) else []:
            url = worker.get("url") if isinstance(worker, dict) else None
            if not isinstance(url, str) or not worker.get("is_healthy", True):
                continue
            try:
                url = check_server_given_url(url)
            except UserError as exc:
                log.warning("not following the worker %r that %s lists: %s", url[:200], self.url, exc)
                continue
            return SGLangEngine(url, timeout=self.timeout[1], connect_timeout=self.timeout[0], retries=0,
                                follow_router_workers=False)
        return None

    def flush_cache(self, timeout: float | None = None) -> None:
        """Flush the server's prefix cache. SGLang refuses while requests run; with ``timeout``
        it waits up to that many seconds for them to finish (``?timeout=S``; sglang-router does
        not pass that on, so a refusal is also retried here until the time is up). A refusal
        that outlasts it is an EngineError."""
        deadline = time.monotonic() + (timeout or 0.0)
        while True:
            try:
                return self._flush_once(timeout)
            except EngineError:
                if timeout is None or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _flush_once(self, timeout: float | None) -> None:
        if timeout is not None and not (timeout >= 0 and math.isfinite(timeout)):
            raise EngineError(f"the flush timeout must be a number of seconds >= 0, got {timeout!r}")
        path = "/flush_cache" if timeout is None else f"/flush_cache?timeout={float(timeout):g}"
        read = self.timeout[1] if timeout is None else max(self.timeout[1], float(timeout) + 10)
        response = self._request("POST", path, retries=0, timeout=(self.timeout[0], read))
        status = response.status_code
        body = parse_json(self._read(response, "/flush_cache"))
        if status == 206 or (isinstance(body, dict) and body.get("status") not in (None, "success")):
            # sglang-router: some workers refused (they were busy).
            body = body if isinstance(body, dict) else {}
            flushed, total = body.get("workers_flushed"), body.get("total_http_workers")
            detail = f" ({flushed} of {total} workers flushed)" if isinstance(flushed, int) and isinstance(total, int) else ""
            raise EngineError(f"the server did not flush its cache: requests were running{detail}; "
                              "retry when idle or with a timeout")

    def metrics(self) -> dict[str, float] | None:
        """The server's Prometheus counters (summed over label sets and workers, named
        ``sglang:...``), or None when it serves none (SGLang without --enable-metrics)."""
        for path in (self._paths.get("metrics"), "/metrics", "/engine_metrics"):
            if not path:
                continue
            try:
                text = self._read(self._request("GET", path, retries=0), path).decode("utf-8", "replace")
            except EngineError:
                continue
            values = parse_prometheus(text)
            if any(name.startswith(("sglang:", "sglang_")) for name in values):
                self._paths["metrics"] = path
                # The router renames sglang:x to sglang_x when it merges its workers' metrics.
                return {("sglang:" + name[7:] if name.startswith("sglang_") else name): v for name, v in values.items()}
        return None

    def metrics_hit_rate(self) -> float | None:
        """Cached / prompt tokens over all requests the server saw since ``reset_stats``."""
        return self._counter_ratio("sglang:cached_tokens_total", "sglang:prompt_tokens_total")

    # -- Engine interface ------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]:
        ids = [self._ids(p) for p in prompts]
        for prompt in ids:
            self._check_fits(prompt, params.max_new_tokens)
        # One request per distinct sampling setting, each with ONE sampling_params object (what
        # sglang-router accepts). Sample i of every prompt shares its seed, so n seeded samples
        # are n concurrent requests (the server batches them); otherwise it is one request.
        rows = [(p, _sampling_params(params, i)) for p in ids for i in range(params.n)]
        groups: dict[tuple, list[int]] = {}
        for row, (_, sampling) in enumerate(rows):
            groups.setdefault(tuple(sorted((k, str(v)) for k, v in sampling.items())), []).append(row)
        payloads = []
        for members in groups.values():
            payload = {"input_ids": [rows[r][0] for r in members], "sampling_params": rows[members[0]][1]}
            if params.return_logprobs:
                payload["return_logprob"] = True
            payloads.append(payload)
        answers = self._timed_generate_all(payloads)
        items: list[dict | None] = [None] * len(rows)
        for members, answer in zip(groups.values(), answers):
            for r, item in zip(members, answer):
                items[r] = item
        results = []
        for (prompt, _), item in zip(rows, items):
            meta = _meta(item)
            _check_not_aborted(meta)
            logprobs = meta.get("output_token_logprobs")
            out_ids = item.get("output_ids")
            if out_ids is None:
                out_ids = [entry[1] for entry in logprobs] if isinstance(logprobs, list) else self.encode(_text(item))
            out_ids = _int_list(out_ids, "output_ids")
            usage = Usage(_count(meta, "prompt_tokens", len(prompt)), _count(meta, "cached_tokens", 0),
                          _count(meta, "completion_tokens", len(out_ids)))
            finish = meta.get("finish_reason")
            finish = finish.get("type") if isinstance(finish, dict) else finish
            lps = None
            if params.return_logprobs and isinstance(logprobs, list) and logprobs:
                lps = [_logprob(e) for e in logprobs]
            results.append(Generation(
                text=_text(item), output_ids=out_ids, finish_reason="length" if finish == "length" else "stop",
                usage=usage, prompt_ids=list(prompt), logprobs=lps,
            ))
            self._count(usage)
        return results

    def _timed_generate_all(self, payloads: list[dict]) -> list[list[dict]]:
        """``post_generate`` for each payload (concurrently when several), timed as generation."""
        started = time.perf_counter()
        if len(payloads) == 1:
            answers = [self.post_generate(payloads[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(len(payloads), 16)) as pool:
                answers = list(pool.map(self.post_generate, payloads))
        self._stats.generation_seconds += time.perf_counter() - started
        return answers

    def score(self, prompt: Prompt, continuations: Sequence[Prompt]) -> list[list[float]]:
        prompt_ids = self._ids(prompt)
        conts = [self._ids(c) for c in continuations]
        if not conts:
            return []
        for cont in conts:
            self._check_fits(prompt_ids + cont, 0)
        # Input-token logprobs from the prompt's last position on; asking for them caps the
        # server's prefix match at that position, so the prompt itself still hits the cache.
        payload = {
            "input_ids": [prompt_ids + c for c in conts],
            "sampling_params": {"max_new_tokens": 0, "temperature": 0.0},
            "return_logprob": True,
            "logprob_start_len": max(len(prompt_ids) - 1, 0),
        }
        items = self._timed_generate_all([payload])[0]
        scores = []
        for cont, item in zip(conts, items):
            meta = _meta(item)
            _check_not_aborted(meta)
            entries = meta.get("input_token_logprobs") or []
            if not isinstance(entries, list):
                raise EngineError("the server's input_token_logprobs is not a list")
            tail = entries[len(entries) - len(cont):] if cont else []
            if len(tail) != len(cont) or any(_entry_token(e) not in (None, t) for e, t in zip(tail, cont)):
                raise EngineError("the server's input_token_logprobs do not line up with the continuation tokens")
            scores.append([_logprob(e) for e in tail])
            self._count(Usage(_count(meta, "prompt_tokens", len(prompt_ids) + len(cont)),
                              _count(meta, "cached_tokens", 0), 0))
        return scores

    def post_generate(self, payload: dict) -> list[dict]:
        """A raw native /generate call in batch form (for SGLang-only options such as
        ``token_ids_logprob``); returns one result dict per input."""
        body = self._get_json("/generate", method="POST", json=payload)
        items = body if isinstance(body, list) else [body]
        sent = payload.get("input_ids", payload.get("text"))
        expected = len(sent) if isinstance(sent, list) and sent and isinstance(sent[0], (list, str)) else 1
        n = (payload.get("sampling_params") or {}).get("n", 1) if isinstance(payload.get("sampling_params"), dict) else 1
        if len(items) not in (expected, expected * (n if isinstance(n, int) and n > 0 else 1)):
            raise EngineError(f"the server returned {len(items)} results for {expected} prompts")
        if not all(isinstance(item, dict) for item in items):
            raise EngineError("the server's answer to /generate is not a list of results")
        return items

    # -- SGLang's words (see ragscale.engines.http_client) -----------------------------------
    @property
    def server_words(self) -> str:
        return f"the SGLang server at {self.url}"

    def _rejection(self, response: requests.Response, path: str) -> str:
        return f"the SGLang server rejected {path}: HTTP {response.status_code}{self._message(response, path)}"

    def _oversize(self, path: str) -> str:
        return (f"the answer to {path} from {self.url} is larger than {MAX_ANSWER_BYTES // 2**20} MB; "
                "not an SGLang answer")

    def _cut_short(self, path: str, exc: requests.RequestException) -> str:
        if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
            return (f"the SGLang server at {self.url} stopped sending its answer to {path} "
                    f"(no data for {self.timeout[1]:.0f} s)")
        return f"the answer to {path} from {self.url} was cut short (the connection broke mid-answer)"

    def _not_json(self, path: str, raw: bytes, response: requests.Response) -> str:
        kind = (response.headers.get("Content-Type") or "no content type").split(";")[0][:40]
        return (f"{self.url} answered {path} with something that is not SGLang's JSON ({kind}, {len(raw)} bytes); "
                "is this an SGLang server?")

    # -- internals -------------------------------------------------------------------------
    def _get_json_fallback(self, family: str, paths: tuple[str, ...]) -> dict:
        """GET the first of ``paths`` the server knows (new name first, deprecated name second)."""
        known = self._paths.get(family)
        for path in ([known] if known else list(paths)):
            try:
                body = self._get_json(path)
            except EngineError as exc:
                if "HTTP 404" in str(exc) and path != paths[-1]:
                    continue
                raise
            if not isinstance(body, dict):
                raise EngineError(f"{self.url} answered {path} with JSON that is not an object; "
                                  "is this an SGLang server?")
            self._paths[family] = path
            return body
        raise EngineError(f"{self.url} answers none of {', '.join(paths)}")

    def _message(self, response: requests.Response, path: str) -> str:
        """': <message>' when the error body is SGLang-shaped; never a foreign body."""
        try:
            raw = self._read(response, path)[:65536]
        except EngineError:
            return ""
        return f": {message}" if (message := sglang_error_message(raw)) else ""

    def _check_fits(self, ids: list[int], max_new_tokens: int) -> None:
        """SGLang's rules, so a prompt it would refuse or abort is refused here, before sending."""
        window = self.info.context_window
        if len(ids) >= window:
            raise EngineError(f"prompt of {len(ids)} tokens does not fit the server's context window of "
                              f"{window} tokens (SGLang refuses inputs of the window's length or more)")
        if len(ids) + max_new_tokens > window:
            raise EngineError(f"prompt of {len(ids)} tokens + {max_new_tokens} new tokens exceeds the "
                              f"server's context window of {window} tokens")
        if self.max_input_tokens and len(ids) >= self.max_input_tokens:
            raise EngineError(f"prompt of {len(ids)} tokens reaches the server's input limit of "
                              f"{self.max_input_tokens} tokens (max_req_input_len)")

    def _tokenizer_sources(self) -> tuple[list[str], list[str], str]:
        model = self.model_info()
        names = [str(model.get(k) or "") for k in ("tokenizer_path", "model_path", "served_model_name")]
        return names[:2], names, (
            f"the server runs {names[2] or names[1] or 'an unnamed model'!r}; give the client its tokenizer "
            "(a local folder) so prompts can be sent as exact token ids")


# ---- answer parsing -------------------------------------------------------------------------

def sglang_error_message(raw: bytes) -> str | None:
    """The message of an SGLang (or sglang-router) error body, short and on one line, or None.

    SGLang's shapes: ``{"error": "..."}`` (schema), ``{"error": {"message": "..."}}`` (ValueError),
    top-level ``{"message": "..."}`` (HTTPException), FastAPI's ``{"detail": "..."}``, and a few
    known plain-text answers. Anything else is not echoed."""
    body = parse_json(raw)
    if isinstance(body, dict):
        error = body.get("error")
        candidates = [error.get("message") if isinstance(error, dict) else error, body.get("message"),
                      body.get("detail")]
        for message in candidates:
            if isinstance(message, str) and message.strip():
                return one_line(message)
        return None
    if body is NOT_JSON:
        text = raw[:1024].decode("utf-8", "replace").strip()
        if text.startswith(_PLAIN_MESSAGES):
            return one_line(text)
    return None


def _meta(item: dict) -> dict:
    meta = item.get("meta_info", {})
    if not isinstance(meta, dict):
        raise EngineError("the server's result has no meta_info object")
    return meta


def _text(item: dict) -> str:
    text = item.get("text", "")
    if not isinstance(text, str):
        raise EngineError("the server's result text is not a string")
    return text


def _count(meta: dict, key: str, default: int) -> int:
    return token_count(meta.get(key, default), f"meta_info.{key}", default)


def _int_list(values: Any, name: str) -> list[int]:
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise EngineError(f"the server's {name} is not a list of token ids")
    return list(values)


def _entry_token(entry: Any):
    if not isinstance(entry, (list, tuple)) or len(entry) < 2:
        raise EngineError("the server's logprob entries are not [logprob, token_id, text] triples")
    token = entry[1]
    if token is not None and (isinstance(token, bool) or not isinstance(token, int)):
        raise EngineError("the server's logprob entries carry a non-integer token id")
    return token


def _logprob(entry: Any) -> float:
    _entry_token(entry)
    value = entry[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EngineError(f"the server sent a non-numeric logprob: {str(value)[:20]!r}")
    return float(value)


def _check_not_aborted(meta: dict) -> None:
    finish = meta.get("finish_reason")
    if isinstance(finish, dict) and finish.get("type") == "abort":
        message = finish.get("message")
        detail = f": {one_line(message)}" if isinstance(message, str) and message.strip() else ""
        raise EngineError(f"the server aborted the request{detail}")


def _positive_int(source: dict, key: str, where: str) -> int | None:
    value = source.get(key) if isinstance(source, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise EngineError(f"the server's {where} has a {key} that is not a positive integer: {str(value)[:20]!r}")
    return value


def _sampling_params(params: SamplingParams, sample: int) -> dict:
    out = {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p}
    if params.ignore_eos:
        out["ignore_eos"] = True
    if params.stop:
        out["stop"] = list(params.stop)
    if params.seed is not None and params.temperature > 0:
        # SGLang's per-request seed (honoured with --enable-deterministic-inference).
        out["sampling_seed"] = sample_seed(params.seed, sample)
    return out
