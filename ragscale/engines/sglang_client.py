"""An HTTP client for SGLang's native API (one server, or sglang-router in front of many).

Prompts are always sent as ``input_ids`` so that token counts are exact and continuing a branch
(prompt ids + output ids) hits the server's radix cache for the whole prefix; re-sending text
could tokenise differently at the join. That needs the server model's tokenizer on this side:

- ``tokenizer=`` a local folder (or hub name already in the local HF cache) with its tokenizer;
- otherwise the server's ``tokenizer_path`` from /get_model_info, if that folder exists here;
- otherwise, if the server runs SmolLM2, the embedded SmolLM2 tokenizer;
- otherwise a clear EngineError asking for ``tokenizer=`` (guessing a vocabulary would send
  garbage ids). SGLang's /tokenize endpoint is not used: it is missing from older servers and
  from sglang-router, and chat templates need the tokenizer anyway.

Run-level cache hit rate comes from the per-request ``cached_tokens`` (``stats()``) and, when the
server runs with --enable-metrics, from deltas of the ``sglang:*_tokens_total`` counters
(``metrics_hit_rate()``) — not from the ``sglang:cache_hit_rate`` gauge, which covers one batch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import requests
from requests.adapters import HTTPAdapter

from ragscale.engines.base import (
    CacheStats, Engine, EngineInfo, Generation, Prompt, SamplingParams, Usage, sample_seed,
)
from ragscale.errors import EngineError

DEFAULT_CONTEXT_WINDOW = 8192  # only when the server does not say


class SGLangEngine(Engine):
    def __init__(self, url: str, tokenizer=None, timeout: float = 600.0,
                 connect_timeout: float = 5.0, retries: int = 3, backoff: float = 0.5):
        url = (url or "").strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise EngineError(f"an SGLang URL looks like http://host:30000, got {url!r}")
        self.url = url
        self.timeout = (connect_timeout, timeout)
        self.retries = retries
        self.backoff = backoff
        # A path/name to load, or a ready tokenizer object (tests pass one).
        self._tokenizer_path = tokenizer if isinstance(tokenizer, (str, Path)) else None
        self._tokenizer = None if self._tokenizer_path or tokenizer is None else tokenizer
        self._info: EngineInfo | None = None
        self._stats = CacheStats()
        self._metrics_baseline: dict[str, float] | None = None
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=32))
        self.session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=32))

    # -- server endpoints ------------------------------------------------------------------
    def health(self) -> None:
        """Raise EngineError unless the server answers /health with 200."""
        self._request("GET", "/health", retries=0, timeout=(self.timeout[0], 10))

    def model_info(self) -> dict:
        return self._request("GET", "/get_model_info").json()

    def server_info(self) -> dict:
        return self._request("GET", "/get_server_info").json()

    @property
    def known_info(self) -> EngineInfo | None:
        """``info`` if it was already fetched (status displays must not block on the network)."""
        return self._info

    @property
    def info(self) -> EngineInfo:
        if self._info is None:
            model = self.model_info()
            try:
                server = self.server_info()
            except EngineError:
                server = {}  # sglang-router may not forward it
            context = server.get("context_length") or server.get("max_model_len")
            if not context:
                for state in server.get("internal_states") or []:
                    context = context or state.get("context_len") or state.get("max_req_input_len")
            self._info = EngineInfo(kind="sglang", model=str(model.get("model_path", "unknown")),
                                    context_window=int(context or DEFAULT_CONTEXT_WINDOW), url=self.url)
        return self._info

    def flush_cache(self) -> None:
        # SGLang refuses (400) while requests are running; say so rather than fail silently.
        self._request("POST", "/flush_cache")

    def metrics(self) -> dict[str, float] | None:
        """The server's Prometheus counters (summed over label sets), or None without --enable-metrics."""
        try:
            text = self._request("GET", "/metrics", retries=0).text
        except EngineError:
            return None
        return parse_prometheus(text)

    def metrics_hit_rate(self) -> float | None:
        """Cached / prompt tokens over all requests the server saw since ``reset_stats``."""
        now = self.metrics()
        if now is None or "sglang:prompt_tokens_total" not in now:
            return None
        base = self._metrics_baseline or {}
        prompt = now["sglang:prompt_tokens_total"] - base.get("sglang:prompt_tokens_total", 0.0)
        cached = now.get("sglang:cached_tokens_total", 0.0) - base.get("sglang:cached_tokens_total", 0.0)
        return cached / prompt if prompt > 0 else 0.0

    # -- Engine interface ------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def stats(self) -> CacheStats:
        return self._stats

    def reset_stats(self) -> None:
        self._stats = CacheStats()
        self._metrics_baseline = self.metrics()

    def close(self) -> None:
        self.session.close()

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]:
        ids = [self._ids(p) for p in prompts]
        for prompt in ids:
            self._check_fits(prompt, params.max_new_tokens)
        # Samples are sent as separate requests (prompt-major), so the order is ours and each
        # can carry its own seed; the server's radix cache shares the prompt between them.
        batch = [p for p in ids for _ in range(params.n)]
        sampling = [_sampling_params(params, i) for _ in ids for i in range(params.n)]
        payload = {"input_ids": batch, "sampling_params": sampling}
        if params.return_logprobs:
            payload["return_logprob"] = True
        items = self._timed_generate(payload)
        results = []
        for prompt, item in zip(batch, items):
            meta = item.get("meta_info", {})
            logprobs = meta.get("output_token_logprobs")
            out_ids = item.get("output_ids")
            if out_ids is None:
                out_ids = [entry[1] for entry in logprobs] if logprobs else self.encode(item.get("text", ""))
            usage = Usage(int(meta.get("prompt_tokens", len(prompt))), int(meta.get("cached_tokens", 0)),
                          int(meta.get("completion_tokens", len(out_ids))))
            finish = meta.get("finish_reason")
            finish = finish.get("type") if isinstance(finish, dict) else finish
            results.append(Generation(
                text=item.get("text", ""), output_ids=list(out_ids),
                finish_reason="length" if finish == "length" else "stop", usage=usage, prompt_ids=list(prompt),
                logprobs=[float(e[0]) for e in logprobs] if params.return_logprobs and logprobs else None,
            ))
            self._count(usage)
        return results

    def _timed_generate(self, payload: dict) -> list[dict]:
        """``post_generate``, with its time counted as generation time in the run statistics."""
        started = time.perf_counter()
        items = self.post_generate(payload)
        self._stats.generation_seconds += time.perf_counter() - started
        return items

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
        items = self._timed_generate(payload)
        scores = []
        for cont, item in zip(conts, items):
            meta = item.get("meta_info", {})
            entries = meta.get("input_token_logprobs") or []
            tail = entries[len(entries) - len(cont):] if cont else []
            if len(tail) != len(cont) or any(e[1] is not None and int(e[1]) != t for e, t in zip(tail, cont)):
                raise EngineError("the server's input_token_logprobs do not line up with the continuation tokens")
            scores.append([float(e[0]) for e in tail])
            self._count(Usage(int(meta.get("prompt_tokens", len(prompt_ids) + len(cont))),
                              int(meta.get("cached_tokens", 0)), 0))
        return scores

    def post_generate(self, payload: dict) -> list[dict]:
        """A raw native /generate call in batch form (for SGLang-only options such as
        ``token_ids_logprob``); returns one result dict per input."""
        body = self._request("POST", "/generate", json=payload).json()
        items = body if isinstance(body, list) else [body]
        sent = payload.get("input_ids", payload.get("text"))
        expected = len(sent) if isinstance(sent, list) and sent and isinstance(sent[0], (list, str)) else 1
        if len(items) != expected:
            raise EngineError(f"the server returned {len(items)} results for {expected} prompts")
        return items

    # -- internals -------------------------------------------------------------------------
    def _request(self, method: str, path: str, retries: int | None = None, timeout=None, **kwargs) -> requests.Response:
        """One HTTP call with retries (connection errors and 5xx) and errors a person can act on."""
        retries = self.retries if retries is None else retries
        last = ""
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self.session.request(method, self.url + path, timeout=timeout or self.timeout, **kwargs)
            except requests.Timeout as exc:
                # A generation that timed out is not retried: it may still be running on the server.
                if isinstance(exc, requests.ConnectTimeout):
                    last = f"could not connect to the SGLang server at {self.url} (connect timeout)"
                    continue
                raise EngineError(f"the SGLang server at {self.url} did not answer {path} within "
                                  f"{(timeout or self.timeout)[1]:.0f} s") from exc
            except requests.ConnectionError:
                last = f"cannot reach the SGLang server at {self.url} (is it running? is the URL right?)"
                continue
            if response.status_code >= 500:
                last = f"the SGLang server at {self.url} failed on {path}: HTTP {response.status_code} {_message(response)}"
                continue
            if response.status_code >= 400:
                raise EngineError(f"the SGLang server rejected {path}: HTTP {response.status_code} {_message(response)}")
            return response
        raise EngineError(last)

    def _ids(self, prompt: Prompt) -> list[int]:
        ids = self.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise EngineError("empty prompt")
        return ids

    def _check_fits(self, ids: list[int], max_new_tokens: int) -> None:
        window = self.info.context_window
        if len(ids) + max_new_tokens > window:
            raise EngineError(f"prompt of {len(ids)} tokens + {max_new_tokens} new tokens exceeds the "
                              f"server's context window of {window} tokens")

    def _count(self, usage: Usage) -> None:
        self._stats.requests += 1
        self._stats.prompt_tokens += usage.prompt_tokens
        self._stats.cached_tokens += usage.cached_tokens
        self._stats.generated_tokens += usage.completion_tokens

    def _load_tokenizer(self):
        from transformers import AutoTokenizer

        if self._tokenizer_path:
            try:
                return AutoTokenizer.from_pretrained(self._tokenizer_path)
            except Exception as exc:  # noqa: BLE001 - any loader failure means the same to the user
                raise EngineError(f"cannot load the tokenizer {self._tokenizer_path!r}: {exc}") from exc
        model = self.model_info()
        local = model.get("tokenizer_path") or model.get("model_path")
        if local and Path(local).is_dir():
            return AutoTokenizer.from_pretrained(local)
        if "smollm2" in str(model.get("model_path", "")).lower():
            from ragscale.engines.model_files import load_tokenizer

            return load_tokenizer()
        raise EngineError(
            f"the server runs {model.get('model_path')!r}; give the client its tokenizer "
            "(a local folder) so prompts can be sent as exact token ids"
        )


def _sampling_params(params: SamplingParams, sample: int) -> dict:
    out = {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p}
    if params.stop:
        out["stop"] = list(params.stop)
    if params.seed is not None and params.temperature > 0:
        # SGLang's per-request seed (honoured with --enable-deterministic-inference).
        out["sampling_seed"] = sample_seed(params.seed, sample)
    return out


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error)[:300]
        return str(error)[:300]
    return str(body)[:300]


def parse_prometheus(text: str) -> dict[str, float]:
    """Metric name -> value summed over label sets (enough for sglang's token counters)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # name{labels} value [timestamp]; label values may contain spaces, so split after "}".
        if "}" in line:
            name, rest = line.split("{", 1)[0], line.rsplit("}", 1)[1]
        else:
            name, _, rest = line.partition(" ")
        fields = rest.split()
        try:
            values[name.strip()] = values.get(name.strip(), 0.0) + float(fields[0])
        except (ValueError, IndexError):
            continue
    return values
