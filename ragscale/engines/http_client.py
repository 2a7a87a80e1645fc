"""What ragscale's two HTTP engine clients share: ``SGLangEngine`` (SGLang's native API) and
``OpenAIEngine`` (OpenAI-compatible ``/v1``) both derive from ``HTTPEngine``.

Shared: a requests session that reads nothing from the environment (no proxy, no .netrc) and
follows no redirect; one retry loop (connection errors and 5xx, never a generation that timed
out: it may still run on the server); a body reader with a size cap; per-request token counts;
the tokenizer (given, else a folder the server names, else SmolLM2's); hit rates from deltas of
two server counters since ``reset_stats``.

What differs between the two APIs stays in each client, stated there:

- ``max_answer_bytes``: the largest answer that API can send (SGLang's hold logprobs);
- ``server_words`` (how errors name the server) and the messages of ``_oversize``,
  ``_cut_short``, ``_not_json``, ``_rejection`` (a 4xx) and ``redirect_advice``;
- ``_message``: which error bodies are echoed (SGLang's shapes only; OpenAI's with the key
  redacted), ``_headers`` (the API key, OpenAI only);
- ``metrics``: which counters a server has, and ``_tokenizer_sources``: where its folder is named.
"""

from __future__ import annotations

import json
import math
import time
from abc import abstractmethod
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from ragscale.engines.base import CacheStats, Engine, EngineInfo, Prompt, Usage
from ragscale.errors import EngineError, UserError

MAX_MESSAGE_CHARS = 200
NOT_JSON = object()


class HTTPEngine(Engine):
    max_answer_bytes: int  # each client sets its API's
    redirect_advice: str  # what to do about a redirect (it is never followed)

    def __init__(self, url: str, tokenizer, timeout: float | None, default_timeout: float, connect_timeout: float,
                 retries: int, backoff: float, pool_connections: int, pool_maxsize: int):
        """``url``: already checked by the client. ``tokenizer``: a path/name to load, or a ready
        tokenizer object (tests pass one), or None (found from the server, see ``_load_tokenizer``)."""
        read = default_timeout if timeout is None else float(timeout)
        if not (read > 0 and math.isfinite(read)):
            raise EngineError(f"the timeout must be a positive number of seconds, got {timeout!r}")
        self.url = url
        self.timeout = (connect_timeout, read)
        self.retries, self.backoff = retries, backoff
        self._tokenizer_path = tokenizer if isinstance(tokenizer, (str, Path)) else None
        self._tokenizer = None if self._tokenizer_path or tokenizer is None else tokenizer
        self._info: EngineInfo | None = None
        self._stats = CacheStats()
        self._metrics_baseline: dict[str, float] | None = None
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy or .netrc credentials sent to a typed URL
        adapter = HTTPAdapter(pool_connections=pool_connections, pool_maxsize=pool_maxsize)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @property
    def known_info(self) -> EngineInfo | None:
        """``info`` if it was already fetched (status displays must not block on the network)."""
        return self._info

    @abstractmethod
    def metrics(self) -> dict[str, float] | None:
        """The server's Prometheus counters, or None where it has none of the client's."""

    def _counter_ratio(self, part: str, whole: str) -> float | None:
        """The growth of counter ``part`` over that of ``whole`` since ``reset_stats``, or None
        when the server does not count ``whole``."""
        now = self.metrics()
        if now is None or whole not in now:
            return None
        base = self._metrics_baseline or {}
        grown = now[whole] - base.get(whole, 0.0)
        return (now.get(part, 0.0) - base.get(part, 0.0)) / grown if grown > 0 else 0.0

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

    def _ids(self, prompt: Prompt) -> list[int]:
        ids = self.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise EngineError("empty prompt")
        return ids

    def _count(self, usage: Usage) -> None:
        self._stats.requests += 1
        self._stats.prompt_tokens += usage.prompt_tokens
        self._stats.cached_tokens += usage.cached_tokens
        self._stats.generated_tokens += usage.completion_tokens

    # -- HTTP ------------------------------------------------------------------------------
    @property
    def server_words(self) -> str:
        """How error messages name the server."""
        return self.url

    def _headers(self) -> dict:
        return {}

    def _request(self, method: str, path: str, retries: int | None = None, timeout=None, base: str | None = None,
                 **kwargs) -> requests.Response:
        """One HTTP call to ``base`` (default: the client's URL) + ``path``, with retries
        (connection errors and 5xx) and one-line errors a person can act on. The body is not
        read yet (``stream=True``): ``_read`` reads it with a size cap."""
        retries = self.retries if retries is None else retries
        timeout = timeout or self.timeout
        name = path.split("?", 1)[0]
        last = ""
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self.session.request(method, (base or self.url) + path, timeout=timeout, stream=True,
                                                allow_redirects=False, headers=self._headers(), **kwargs)
            except requests.Timeout as exc:
                # A generation that timed out is not retried: it may still be running on the server.
                if isinstance(exc, requests.ConnectTimeout):
                    last = f"could not connect to {self.server_words} (connect timeout)"
                    continue
                raise EngineError(f"{self.server_words} did not answer {name} within {timeout[1]:.0f} s "
                                  "(raise it with --timeout)") from None
            except requests.ConnectionError:
                last = f"cannot reach {self.server_words} (is it running? is the URL right?)"
                continue
            except requests.RequestException as exc:
                raise EngineError(f"cannot call {name} on {self.url}: {type(exc).__name__}") from None
            status = response.status_code
            if 300 <= status < 400:
                response.close()
                raise EngineError(f"{self.url} answered {name} with a redirect (HTTP {status}); "
                                  + self.redirect_advice)
            if status >= 500:
                last = f"{self.server_words} failed on {name}: HTTP {status}{self._message(response, name)}"
                response.close()
                continue
            if status >= 400:
                raise EngineError(self._rejection(response, name))
            return response
        raise EngineError(last)

    def _read(self, response: requests.Response, path: str) -> bytes:
        """The whole body (closed after), or EngineError when it is cut short or over
        ``max_answer_bytes`` (not held in memory)."""
        chunks, size = [], 0
        try:
            for chunk in response.iter_content(1 << 16):
                size += len(chunk)
                if size > self.max_answer_bytes:
                    raise EngineError(self._oversize(path))
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise EngineError(self._cut_short(path, exc)) from None
        finally:
            response.close()
        return b"".join(chunks)

    def _get_json(self, path: str, method: str = "GET", retries: int | None = None, **kwargs) -> Any:
        response = self._request(method, path, retries=retries, **kwargs)
        name = path.split("?", 1)[0]
        raw = self._read(response, name)
        body = parse_json(raw)
        if body is NOT_JSON:
            raise EngineError(self._not_json(name, raw, response))
        return body

    # Each client's own words for these (see the module docstring).
    @abstractmethod
    def _rejection(self, response: requests.Response, path: str) -> str: ...

    @abstractmethod
    def _message(self, response: requests.Response, path: str) -> str: ...

    @abstractmethod
    def _oversize(self, path: str) -> str: ...

    @abstractmethod
    def _cut_short(self, path: str, exc: requests.RequestException) -> str: ...

    @abstractmethod
    def _not_json(self, path: str, raw: bytes, response: requests.Response) -> str: ...

    # -- tokenizer -------------------------------------------------------------------------
    @abstractmethod
    def _tokenizer_sources(self) -> tuple[list[str], list[str], str]:
        """(folders the server names, model names it gives, the error when neither serves)."""

    def _load_tokenizer(self):
        from transformers import AutoTokenizer

        from ragscale.deploy import viewer_folder

        if self._tokenizer_path:
            try:
                return AutoTokenizer.from_pretrained(self._tokenizer_path)
            except Exception as exc:  # noqa: BLE001 - any loader failure means the same to the user
                raise EngineError(f"cannot load the tokenizer {str(self._tokenizer_path)[:200]!r}: "
                                  f"{type(exc).__name__}") from None
        folders, names, missing = self._tokenizer_sources()
        for local in folders:
            if not local:
                continue
            try:  # the server chose this path: the checks of a folder a viewer types
                folder = viewer_folder(local)
            except UserError:
                continue
            try:
                return AutoTokenizer.from_pretrained(str(folder))
            except Exception:  # noqa: BLE001 - fall through to the next source
                pass
        if any("smollm2" in name.lower() for name in names):
            from ragscale.engines.model_files import load_tokenizer

            return load_tokenizer()
        raise EngineError(missing)


# ---- answer parsing -------------------------------------------------------------------------

def parse_json(raw: bytes):
    """The JSON value, or ``NOT_JSON``."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # also bad UTF-8; a truncated JSON body lands here
        return NOT_JSON


def token_count(value: Any, name: str, default: int) -> int:
    """A token count the server sent under ``name``: a whole number >= 0, or ``default`` when absent."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0 \
            or value != int(value):
        raise EngineError(f"the server's {name} is not a token count: {str(value)[:20]!r}")
    return int(value)


def one_line(text: str) -> str:
    """``text`` on one printable line of at most MAX_MESSAGE_CHARS (for server text in messages)."""
    text = " ".join(text.split())
    text = "".join(ch for ch in text if ch.isprintable())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS - 1] + "…"


def parse_prometheus(text: str) -> dict[str, float]:
    """Metric name -> value summed over label sets (enough for the servers' token counters)."""
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
            value = float(fields[0])
        except (ValueError, IndexError):
            continue
        if math.isfinite(value):
            values[name.strip()] = values.get(name.strip(), 0.0) + value
    return values
