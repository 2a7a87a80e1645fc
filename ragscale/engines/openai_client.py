"""An HTTP client for OpenAI-compatible servers: vLLM, llama.cpp's server, SGLang's /v1, Ollama,
the embedded server's /v1, and hosted APIs.

The URL is the OpenAI base URL (what ``openai.OpenAI(base_url=...)`` takes); a bare
``http://host:port`` means ``http://host:port/v1``. Everything goes through ``/v1/completions``
(one request per prompt, because servers report one ``usage`` per request: vLLM's answer to a
batch carries the cached tokens of its last prompt only).

What depends on the server, read from ``/v1/models`` (``owned_by``), never guessed:

- **prompts as token ids** (vLLM, SGLang, llama.cpp): a continued branch (prompt ids + output ids)
  then hits the prefix cache exactly. Elsewhere the prompt goes out as text, and a continuation
  is re-tokenised by the server, which can differ at the join from the ids this side holds (a
  cache hit may stop a block early, and the server's token counts are the ones recorded);
- **output token ids**: ``return_token_ids`` (vLLM's and SGLang's); elsewhere the output text is
  encoded here;
- ``ignore_eos`` (vLLM, SGLang, llama.cpp) and prompt log-probabilities (``echo`` with
  ``logprobs``: vLLM, SGLang) — asked of any other server, they are a one-line EngineError;
- the context window: ``max_model_len`` of the model's card; a server that does not report it
  needs ``context_window=`` (``--context-window``);
- the flush: vLLM's ``POST /reset_prefix_cache`` (served in its dev mode, which ``ragscale serve
  vllm`` turns on), SGLang's ``POST /flush_cache``; elsewhere an EngineError;
- the server-wide hit rate: vLLM's ``vllm:prefix_cache_hits`` / ``vllm:prefix_cache_queries``
  counters (tokens) from ``/metrics``, as deltas since ``reset_stats``; None where absent.

Cached tokens come from ``usage.prompt_tokens_details.cached_tokens`` (vLLM needs
``--enable-prompt-tokens-details``); a server that leaves it out reports 0 cached, and
``reports_cached_tokens`` says so. ``n`` samples of one prompt are ``n`` concurrent requests on
servers with a prefix cache (each sample's usage measured; the server batches them), when seeded
(sample i gets seed ``sample_seed(seed, i)``, as on every engine) and when greedy (vLLM refuses
greedy ``n`` > 1). Elsewhere (a hosted API) they are one request with ``n``, whose prompt is billed
once: its usage is kept whole, as the provider sent it, on the first sample (the others carry
zeros), so sums over samples equal what the provider billed.

API keys come from the environment only (``RAGSCALE_OPENAI_API_KEY``, else ``OPENAI_API_KEY``), are
sent only to the configured URL (no redirects are followed, no proxy settings or .netrc are read)
and never appear in an error message, a log line, a record or a page: ``EngineInfo.url`` is the
URL alone, and every message from the server passes through ``_redacted``. In shared mode
(``RAGSCALE_MODE=shared``) the key goes only to URLs the operator listed in
``RAGSCALE_ALLOWED_URLS``, never to a loopback URL a viewer typed.

Hosted APIs bill by that usage: ``cost_usd(sheet)`` / ``usage_cost_usd`` price each request at
its prompt length's tier of an ``allocation.prices.PriceSheet``, cached input apart
(``allocation.prices.run_cost`` finds the sheet of the served model for run summaries).
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence
from urllib.parse import urlsplit

import requests

from ragscale.engines.base import EngineInfo, Generation, Prompt, SamplingParams, Usage, sample_seed
from ragscale.engines.http_client import HTTPEngine, one_line, parse_json, parse_prometheus, token_count
from ragscale.errors import EngineError

API_KEY_VARIABLES = ("RAGSCALE_OPENAI_API_KEY", "OPENAI_API_KEY")
DEFAULT_TIMEOUT = 600.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024
MAX_CONCURRENT = 16
# Servers known to take prompts as token ids and the sampling extensions ragscale uses.
_TOKEN_PROMPTS = {"vllm", "sglang", "llamacpp"}
_IGNORE_EOS = {"vllm", "sglang", "llamacpp"}
_PROMPT_LOGPROBS = {"vllm", "sglang"}
_TOKEN_IDS_OUT = {"vllm", "sglang"}  # return_token_ids (vLLM's extension, also SGLang's)
_FLUSH_PATHS = {"vllm": "/reset_prefix_cache", "sglang": "/flush_cache"}
_KEYISH = re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_\-*]{6,}")


def api_key_from_env() -> str | None:
    for name in API_KEY_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def base_url(url: str) -> str:
    """The OpenAI base URL: as given, or with ``/v1`` added to a bare ``http://host:port``."""
    url = (url or "").strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise EngineError(f"an OpenAI-compatible URL looks like http://host:8000/v1, got {url[:80]!r}")
    return url if urlsplit(url).path not in ("", "/") else url + "/v1"


def key_allowed_for(url: str) -> bool:
    """Whether the API key may go to ``url``: always in local mode; in shared mode only to a URL
    the operator listed (``RAGSCALE_ALLOWED_URLS``), never to one a viewer typed."""
    from ragscale.deploy import _normal, allowed_urls, shared

    if not shared():
        return True
    listed = allowed_urls()
    root = url[: -len("/v1")] if url.endswith("/v1") else url
    return _normal(url) in listed or _normal(root) in listed


class _Secret:
    """The API key, held so that no repr, vars() dump or pickle of the client carries it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<api key>"

    def __reduce__(self):
        raise TypeError("an API key is not pickled")


class OpenAIEngine(HTTPEngine):
    max_answer_bytes = MAX_ANSWER_BYTES
    redirect_advice = "give the server's own URL (redirects are not followed, so an API key goes nowhere else)"

    def __init__(self, url: str, tokenizer=None, model: str | None = None, context_window: int | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT, connect_timeout: float = 5.0, retries: int = 2,
                 backoff: float = 0.5, api_key: str | None = None, use_env_key: bool = True):
        """``tokenizer``: a local folder (or a ready tokenizer) of the served model; without it the
        model card's ``root`` folder if it exists here, else SmolLM2's for a SmolLM2 model.
        ``model``: the model to request (default: the first ``/v1/models`` lists).
        ``api_key``: for tests; normally the environment's (``use_env_key``)."""
        super().__init__(base_url(url), tokenizer, timeout, DEFAULT_TIMEOUT, connect_timeout, retries, backoff,
                         pool_connections=2, pool_maxsize=MAX_CONCURRENT * 2)
        self.root = self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url
        if context_window is not None and (isinstance(context_window, bool) or int(context_window) < 2):
            raise EngineError(f"the context window must be a number of tokens >= 2, got {context_window!r}")
        self.requested_model = model
        self.given_window = int(context_window) if context_window else None
        key = api_key if api_key is not None else (api_key_from_env() if use_env_key else None)
        # The session reads no proxy or .netrc settings and follows no redirect: the key goes nowhere else.
        self.__key = _Secret(key) if key and key_allowed_for(self.url) else None
        self._card: dict = {}
        self.server_kind = "unknown"  # owned_by of the model card: vllm, sglang, llamacpp, openai, ...
        self._billed: list[tuple[int, int, int]] = []  # (prompt, cached, completion) per request, for cost_usd
        self.reports_cached_tokens: bool | None = None  # None until an answer said

    def __repr__(self) -> str:  # never the key
        return f"OpenAIEngine({self.url!r})"

    @property
    def has_api_key(self) -> bool:
        return self.__key is not None

    # -- server endpoints ------------------------------------------------------------------
    def health(self) -> None:
        """Raise EngineError unless the server lists a model (``/v1/models``)."""
        self._info = None
        self.info  # noqa: B018 - fetches and checks the model card

    @property
    def info(self) -> EngineInfo:
        if self._info is None:
            card = self._model_card()
            window = self.given_window or _positive_int(card, "max_model_len")
            if window is None:
                raise EngineError(f"{self.url} does not report the model's context window (max_model_len in "
                                  "/v1/models); give it with --context-window N")
            self._card = card
            self.server_kind = str(card.get("owned_by") or "unknown").lower()
            self._info = EngineInfo(kind="openai", model=one_line(str(card.get("id")))[:120],
                                    context_window=window, url=self.url)
        return self._info

    def _model_card(self) -> dict:
        try:
            listing = self._get_json("/models", retries=0)
        except EngineError as exc:
            if self.requested_model and "HTTP 404" in str(exc):
                return {"id": self.requested_model}  # a server without /v1/models: the name given
            raise
        cards = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(cards, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), str) for c in cards):
            raise EngineError(f"{self.url} answered /models with JSON that is not an OpenAI model list; "
                              "is this an OpenAI-compatible server?")
        if not cards:
            raise EngineError(f"{self.url} serves no model (its /models list is empty)")
        if self.requested_model is None:
            return cards[0]
        for card in cards:
            if card["id"] == self.requested_model:
                return card
        names = ", ".join(one_line(c["id"])[:40] for c in cards[:5])
        raise EngineError(f"{self.url} does not serve {self.requested_model[:80]!r} (it lists {names})")

    def flush_cache(self) -> None:
        """vLLM's ``POST /reset_prefix_cache`` or SGLang's ``/flush_cache``; an EngineError where the
        server has neither, or refuses (vLLM: while requests hold cache blocks)."""
        self.info  # noqa: B018 - the server kind decides the path
        path = _FLUSH_PATHS.get(self.server_kind)
        if path is None:
            raise EngineError(f"{self.url} has no prefix-cache flush that ragscale knows "
                              f"(server: {self.server_kind}); vLLM's needs VLLM_SERVER_DEV_MODE=1")
        try:
            response = self._request("POST", path, retries=0, base=self.root)
        except EngineError as exc:
            if "HTTP 404" in str(exc):
                raise EngineError(f"{self.root} has no {path}: start vLLM with VLLM_SERVER_DEV_MODE=1 "
                                  "(ragscale serve vllm does)") from None
            raise
        body = parse_json(self._read(response, path))
        if isinstance(body, dict) and body.get("success") is False:
            raise EngineError("the server did not reset its prefix cache: requests still hold cache blocks; "
                              "retry when idle")

    def metrics(self) -> dict[str, float] | None:
        """The server's Prometheus counters (summed over label sets), or None when it has none."""
        try:
            response = self._request("GET", "/metrics", retries=0, base=self.root)
            text = self._read(response, "/metrics").decode("utf-8", "replace")
        except EngineError:
            return None
        values = parse_prometheus(text)
        return values if "vllm:prefix_cache_queries_total" in values else None

    def metrics_hit_rate(self) -> float | None:
        """Prefix-cache hits / queries (tokens) the server counted since ``reset_stats``, or None
        where the server does not count them (only vLLM does, of the servers ragscale knows)."""
        return self._counter_ratio("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total")

    # -- Engine interface ------------------------------------------------------------------
    def reset_stats(self) -> None:
        super().reset_stats()
        self._billed = []

    def stream_timings(self, prompt_ids: list[int], max_new_tokens: int) -> tuple[float, float, int]:
        """(seconds to the first token, seconds to the last, tokens) of one streamed greedy completion
        that decodes all ``max_new_tokens`` (``ignore_eos``): how benchmarks time a server's prefill
        and decode inside one request. Needs a server that streams token ids (vLLM)."""
        body = self._body(prompt_ids, prompt_ids, SamplingParams(max_new_tokens=max_new_tokens, ignore_eos=True), 1,
                          None)
        body["stream"] = True
        started, first, tokens = time.perf_counter(), None, 0
        response = self._request("POST", "/completions", json=body)
        try:
            for line in response.iter_lines():
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                chunk = parse_json(line[len(b"data: "):])
                for choice in chunk.get("choices") or [] if isinstance(chunk, dict) else []:
                    count = len(choice.get("token_ids") or []) if isinstance(choice, dict) else 0
                    if count and first is None:
                        first = time.perf_counter() - started
                    tokens += count
        except requests.RequestException:
            raise EngineError(f"the streamed answer from {self.url} was cut short") from None
        finally:
            response.close()
        if first is None:
            raise EngineError(f"{self.url} streamed no token ids (a streaming vLLM is needed here)")
        return first, time.perf_counter() - started, tokens

    @property
    def billed_requests(self) -> int:
        """How many requests ``cost_usd`` bills now: a mark, so that ``cost_usd(sheet, since=mark)``
        is the bill of what runs after it."""
        return len(self._billed)

    def cost_usd(self, sheet, since: int = 0) -> dict:
        """What the requests since ``reset_stats`` (from the ``since``-th on) cost by ``sheet`` (a
        ``PriceSheet``), request by request at the tier of each one's prompt (see ``usage_cost_usd``)."""
        totals = {"uncached_input_usd": 0.0, "cached_input_usd": 0.0, "output_usd": 0.0, "total_usd": 0.0}
        for usage in self._billed[since:]:
            for key, value in usage_cost_usd(*usage, sheet).items():
                totals[key] += value
        return totals

    @property
    def sends_token_ids(self) -> bool:
        self.info  # noqa: B018
        return self.server_kind in _TOKEN_PROMPTS

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]:
        info = self.info
        if params.ignore_eos and self.server_kind not in _IGNORE_EOS:
            raise EngineError(f"{self.url} ({self.server_kind}) does not take ignore_eos")
        ids = [self._ids(p) for p in prompts]
        for prompt in ids:
            _check_fits(prompt, params.max_new_tokens, info.context_window)
        seeded = params.seed is not None and params.temperature > 0
        # One request per sample where each must be its own (seeded; vLLM refuses greedy n > 1) or
        # where the server caches prefixes (every sample's usage is then measured, and the server
        # batches the concurrent requests itself); else one request with n (billed the prompt once).
        per_sample = params.n > 1 and (seeded or params.temperature == 0 or self.server_kind in _TOKEN_PROMPTS)
        jobs = []  # (prompt index, first sample, body)
        for p, (prompt, prompt_ids) in enumerate(zip(prompts, ids)):
            if per_sample:
                jobs += [(p, s, self._body(prompt, prompt_ids, params, 1,
                                           sample_seed(params.seed, s) if seeded else None)) for s in range(params.n)]
            else:
                jobs.append((p, 0, self._body(prompt, prompt_ids, params, params.n,
                                              sample_seed(params.seed, 0) if seeded else None)))
        started = time.perf_counter()
        if len(jobs) == 1:
            answers = [self._completion(jobs[0][2])]
        else:
            with ThreadPoolExecutor(max_workers=min(len(jobs), MAX_CONCURRENT)) as pool:
                answers = list(pool.map(lambda job: self._completion(job[2]), jobs))
        self._stats.generation_seconds += time.perf_counter() - started
        out: list[Generation | None] = [None] * (len(ids) * params.n)
        for (p, first, body), answer in zip(jobs, answers):
            for j, generation in enumerate(self._generations(answer, ids[p], body["n"], params)):
                out[p * params.n + first + j] = generation
                self._count(generation.usage)
        return out  # type: ignore[return-value]

    def score(self, prompt: Prompt, continuations: Sequence[Prompt]) -> list[list[float]]:
        """Prompt log-probabilities (``echo`` with ``max_tokens`` 0) of each continuation's tokens."""
        info = self.info
        if self.server_kind not in _PROMPT_LOGPROBS:
            raise EngineError(f"{self.url} ({self.server_kind}) does not return prompt log-probabilities, "
                              "which scoring (the judge verifier) needs; use another verifier")
        prompt_ids = self._ids(prompt)
        conts = [self._ids(c) for c in continuations]
        for cont in conts:
            _check_fits(prompt_ids + cont, 0, info.context_window)
        # vLLM scores with max_tokens 0; SGLang refuses 0, so it decodes one token, not read.
        new = 0 if self.server_kind == "vllm" else 1
        bodies = [{"model": info.model, "prompt": prompt_ids + cont, "max_tokens": new, "echo": True, "logprobs": 0,
                   "temperature": 0.0} for cont in conts]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, min(len(bodies), MAX_CONCURRENT))) as pool:
            answers = list(pool.map(self._completion, bodies))
        self._stats.generation_seconds += time.perf_counter() - started
        scores = []
        for cont, answer in zip(conts, answers):
            choice = _choices(answer, 1)[0]
            logprobs = choice.get("logprobs") or {}
            values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
            if not isinstance(values, list) or len(values) < len(prompt_ids) + len(cont):
                raise EngineError("the server's echoed log-probabilities do not cover the prompt")
            tail = values[len(prompt_ids): len(prompt_ids) + len(cont)]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in tail):
                raise EngineError("the server sent a non-numeric log-probability")
            scores.append([float(v) for v in tail])
            prompt_tokens, cached, _ = self._usage(answer, len(prompt_ids) + len(cont))
            self._count(Usage(prompt_tokens, cached, 0))
        return scores

    # -- requests and answers --------------------------------------------------------------
    def _body(self, prompt: Prompt, ids: list[int], params: SamplingParams, n: int, seed: int | None) -> dict:
        kind = self.server_kind
        body: dict[str, Any] = {
            "model": self.info.model,
            # Text only where the server cannot take ids (see the module docstring for the caveat).
            "prompt": ids if kind in _TOKEN_PROMPTS else (prompt if isinstance(prompt, str) else self.decode(ids)),
            "max_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p, "n": n,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if seed is not None:
            body["seed"] = seed
        if params.return_logprobs:
            body["logprobs"] = 0  # the sampled token's own log-probability, no alternatives
        if params.ignore_eos:
            body["ignore_eos"] = True
        if kind in _TOKEN_IDS_OUT:
            body["return_token_ids"] = True
        return body

    def _completion(self, body: dict) -> dict:
        answer = self._get_json("/completions", method="POST", json=body)
        if not isinstance(answer, dict):
            raise EngineError("the server's answer to /completions is not a JSON object")
        return answer

    def _generations(self, answer: dict, prompt_ids: list[int], n: int, params: SamplingParams) -> list[Generation]:
        choices = _choices(answer, n)
        prompt_tokens, cached, completion = self._usage(answer, len(prompt_ids))
        out = []
        for j, choice in enumerate(choices):
            text = choice.get("text")
            if not isinstance(text, str):
                raise EngineError("the server's completion text is not a string")
            token_ids = choice.get("token_ids")
            if token_ids is None:
                token_ids = self.encode(text)  # the server sent no ids: the text's own (see docstring)
            elif not isinstance(token_ids, list) or not all(isinstance(t, int) and not isinstance(t, bool)
                                                             for t in token_ids):
                raise EngineError("the server's token_ids is not a list of token ids")
            logprobs = None
            if params.return_logprobs:
                block = choice.get("logprobs")
                values = block.get("token_logprobs") if isinstance(block, dict) else None
                if not isinstance(values, list):
                    raise EngineError(f"{self.url} did not return the log-probabilities asked for")
                logprobs = [float(v) if isinstance(v, (int, float)) else float("nan") for v in values]
            # One usage per request, kept whole on its first sample (the provider's own counts).
            usage = Usage(prompt_tokens, cached, len(token_ids) if completion is None else completion) if j == 0 \
                else Usage(0, 0, 0)
            out.append(Generation(
                text=text, output_ids=list(token_ids),
                finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                usage=usage, prompt_ids=list(prompt_ids), logprobs=logprobs))
        return out

    def _usage(self, answer: dict, default_prompt: int) -> tuple[int, int, int | None]:
        """(prompt tokens, cached tokens, completion tokens or None) of one request's usage."""
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            raise EngineError(f"{self.url} sent no usage with its completion")
        prompt = token_count(usage.get("prompt_tokens"), "usage.prompt_tokens", default_prompt)
        details = usage.get("prompt_tokens_details")
        value = details.get("cached_tokens") if isinstance(details, dict) else None
        self.reports_cached_tokens = value is not None or bool(self.reports_cached_tokens)
        cached = token_count(value, "usage.prompt_tokens_details.cached_tokens", 0)
        if cached > prompt:
            raise EngineError(f"the server reports {cached} cached of {prompt} prompt tokens")
        completion = usage.get("completion_tokens")
        return prompt, cached, None if completion is None else token_count(completion, "usage.completion_tokens", 0)

    def _count(self, usage: Usage) -> None:
        if usage.prompt_tokens or usage.completion_tokens:  # one per request (a request's other samples carry 0)
            self._billed.append((usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens))
        super()._count(usage)

    # -- HTTP ------------------------------------------------------------------------------
    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.__key.reveal()}"} if self.__key else {}

    def _rejection(self, response: requests.Response, path: str) -> str:
        status = response.status_code
        if status in (401, 403):
            response.close()  # its message may quote the key: never shown
            return (f"{self.url} refused the request (HTTP {status}): "
                    + ("check the API key in RAGSCALE_OPENAI_API_KEY or OPENAI_API_KEY" if self.__key
                       else "it needs an API key (RAGSCALE_OPENAI_API_KEY or OPENAI_API_KEY)"))
        return f"{self.url} rejected {path}: HTTP {status}{self._message(response, path)}"

    def _oversize(self, path: str) -> str:
        return f"the answer to {path} from {self.url} is over {MAX_ANSWER_BYTES // 2**20} MB; not read"

    def _cut_short(self, path: str, exc: requests.RequestException) -> str:
        return f"the answer to {path} from {self.url} was cut short"

    def _not_json(self, path: str, raw: bytes, response: requests.Response) -> str:
        return (f"{self.url} answered {path} with something that is not JSON ({len(raw)} bytes); "
                "is this an OpenAI-compatible server?")

    def _message(self, response: requests.Response, path: str) -> str:
        """': <message>' from an OpenAI-style (or FastAPI) error body, key-free; never a foreign body."""
        try:
            body = parse_json(self._read(response, path)[:65536])
        except EngineError:
            return ""
        if not isinstance(body, dict):
            return ""
        error = body.get("error")
        for message in (error.get("message") if isinstance(error, dict) else error, body.get("message"),
                        body.get("detail")):
            if isinstance(message, str) and message.strip():
                return ": " + self._redacted(one_line(message))
        return ""

    def _redacted(self, text: str) -> str:
        if self.__key:
            text = text.replace(self.__key.reveal(), "[key]")
        return _KEYISH.sub("[key]", text)

    def _tokenizer_sources(self) -> tuple[list[str], list[str], str]:
        self.info  # noqa: B018 - the model card names the model and (vLLM) its folder
        root = self._card.get("root")
        names = [str(self._card.get(k) or "") for k in ("id", "root")]
        return [root] if isinstance(root, str) else [], names, (
            f"the server runs {self.info.model!r}; give its tokenizer (a local folder, --tokenizer) so "
            "prompts can be counted and sent as exact token ids")


def usage_cost_usd(prompt_tokens: int, cached_tokens: int, completion_tokens: int, sheet) -> dict:
    """What a provider bills for one request's usage, cached input at its own price.

    ``sheet``: a ``ragscale.allocation.prices.PriceSheet``; the request is billed at the tier of its
    own prompt length, as providers bill each call. The counts are the provider's own (``usage``)."""
    if not 0 <= cached_tokens <= prompt_tokens or completion_tokens < 0:
        raise ValueError(f"not a usage: {prompt_tokens} prompt, {cached_tokens} cached, {completion_tokens} completion")
    tier = sheet.tier_for(prompt_tokens)
    uncached = (prompt_tokens - cached_tokens) * tier.input / 1e6
    cached = cached_tokens * tier.cached_input / 1e6
    output = completion_tokens * tier.output / 1e6
    return {"uncached_input_usd": uncached, "cached_input_usd": cached, "output_usd": output,
            "total_usd": uncached + cached + output}


def _check_fits(ids: list[int], max_new_tokens: int, window: int) -> None:
    if len(ids) + max_new_tokens > window:
        raise EngineError(f"prompt of {len(ids)} tokens + {max_new_tokens} new tokens exceeds the server's "
                          f"context window of {window} tokens")


def _choices(answer: dict, n: int) -> list[dict]:
    choices = answer.get("choices")
    if not isinstance(choices, list) or len(choices) != n or not all(isinstance(c, dict) for c in choices):
        raise EngineError(f"the server returned {len(choices) if isinstance(choices, list) else 'no'} choices "
                          f"for n = {n}")
    return sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0)


def _positive_int(source: dict, key: str) -> int | None:
    value = source.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise EngineError(f"the server's {key} is not a positive integer: {str(value)[:20]!r}")
    return value
