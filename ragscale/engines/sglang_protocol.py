"""SGLang 0.5.x's native /generate protocol, as the loopback server parses and answers it.

Two stages, in SGLang's own order:

1. **Contract** (SGLang's ``GenerateRequest`` schema, checked before anything runs): every field
   SGLang knows is type-checked strictly (``"8"`` is not an int, ``4.7`` is not an int, ``true`` is
   not a number); unknown *top-level* fields are ignored; unknown *sampling* keys are refused. A
   violation is HTTP 400 with ``{"error": "<serde-style message>"}``.
2. **Semantics** (SGLang's ValueErrors): ranges (temperature finite and >= 0, top_p in (0, 1], ...),
   prompt length against the context window, batch shapes, this server's limits. HTTP 400 with
   ``{"error": {"message": ...}}``.

A third error shape, top-level ``message`` (FastAPI's HTTPException / validation handler), is used
for bodies that are not JSON objects and for query parameters (``/flush_cache?timeout=x``).

The contract is checked against the ``sglang`` package's own ``api_types.py`` in the tests
(tests/test_sglang_contract.py), so a drift between this file and SGLang fails a test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable

from ragscale.engines.base import SamplingParams


class ProtocolError(ValueError):
    """A refused request: HTTP ``status`` and SGLang's error body of the given ``shape``."""

    def __init__(self, message: str, status: int = 400, shape: str = "value"):
        super().__init__(message)
        self.message, self.status, self.shape = message, status, shape

    def body(self) -> dict:
        if self.shape == "schema":
            return {"error": self.message}
        if self.shape == "value":
            return {"error": {"message": self.message}}
        phrase = HTTPStatus(self.status).phrase if self.status in HTTPStatus._value2member_map_ else "Error"
        return {"object": "error", "message": self.message, "type": phrase, "param": None, "code": self.status}


def schema_error(message: str) -> ProtocolError:
    return ProtocolError(message, 400, "schema")


def value_error(message: str, status: int = 400) -> ProtocolError:
    return ProtocolError(message, status, "value")


def http_error(message: str, status: int) -> ProtocolError:
    return ProtocolError(message, status, "http")


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask of the loopback server (SGLang has its own, set at launch)."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_prompts: int = 256  # prompts in one /generate batch
    max_n: int = 16  # samples per prompt
    max_total_tokens: int = 262_144  # sum over prompts of (prompt + max_new_tokens) x n
    max_connections: int = 256  # open connections (see _Connections in server.py for who gives way)
    per_client_connections: int = 128  # open connections from one client address
    socket_timeout: float = 30.0  # seconds one read or write on a connection may stall
    request_timeout: float = 20.0  # seconds to receive a whole request (head and body), idle time included
    max_logprob_entries: int = 65_536  # token_ids_logprob: candidate ids x prompt positions scored
    max_flush_wait: float = 3600.0  # seconds /flush_cache?timeout= may ask to wait


# ---- contract: type checks with serde's wording ----------------------------------------------


def _shown(value: Any) -> str:
    """How serde names an unexpected JSON value in its messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "sequence"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


def _bad(value: Any, expected: str) -> ProtocolError:
    return schema_error(f"invalid type: {_shown(value)}, expected {expected}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(v: Any, expected: str = "i64") -> int:
    if _is_int(v):
        return v
    raise _bad(v, expected)


def _uint(v: Any, expected: str = "u64") -> int:
    if _is_int(v):
        if v < 0:
            raise schema_error(f"invalid value: integer `{v}`, expected {expected}")
        return v
    raise _bad(v, expected)


def _float(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise _bad(v, "f64")


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise _bad(v, "a boolean")


def _str(v: Any) -> str:
    if isinstance(v, str):
        return v
    raise _bad(v, "a string")


def _seq(v: Any) -> list:
    if isinstance(v, list):
        return v
    raise _bad(v, "a sequence")


def _map(v: Any, expected: str) -> dict:
    if isinstance(v, dict):
        return v
    raise _bad(v, expected)


def _or_list(one: Callable, name: str) -> Callable:
    """SGLang's "one value or an array of values" fields."""
    def check(v):
        if isinstance(v, list):
            return [one(e) for e in v]
        if isinstance(v, (list, dict)) or v is None or not _scalar_ok(one, v):
            raise _bad(v, f"a value or an array of values for {name}")
        return one(v)
    return check


def _scalar_ok(one: Callable, v: Any) -> bool:
    try:
        one(v)
    except ProtocolError:
        return False
    return True


def _token_ids(v: Any) -> list[int]:
    return [_int(e) for e in _seq(v)]


def _token_ids_or_list(v: Any) -> list:
    if not isinstance(v, list):
        raise _bad(v, "a value or an array of values for TokenIdsOrList")
    # [] and [number, ...] are one prompt; anything else is a batch.
    if not v or (isinstance(v[0], (int, float)) and not isinstance(v[0], bool)):
        return _token_ids(v)
    return [_token_ids(e) for e in v]


def _optional(one: Callable) -> Callable:
    return lambda v: None if v is None else one(v)


def _optional_or_list(one: Callable, name: str) -> Callable:
    inner = _optional(one)

    def check(v):
        if isinstance(v, list):
            return [inner(e) for e in v]
        if v is None:
            return None
        if isinstance(v, dict) or not _scalar_ok(one, v):
            raise _bad(v, f"a value or an array of values for {name}")
        return one(v)
    return check


def _string_list_or_list(v: Any) -> list:
    if not isinstance(v, list):
        raise _bad(v, "a value or an array of values for StringListOrList")
    if not v or isinstance(v[0], str):
        return [_str(e) for e in v]
    return [[_str(x) for x in _seq(e)] for e in v]


def _map_of(one: Callable) -> Callable:
    return lambda v: {k: one(e) for k, e in _map(v, "a map").items()}


def _anything(v: Any) -> Any:
    return v


# Sampling keys as SGLang 0.5.23 declares them (unknown keys are refused), with their JSON types.
_SAMPLING_TYPES: dict[str, Callable] = {
    "max_new_tokens": _optional(_int), "stop": _optional(_or_list(_str, "StringOrList")),
    "stop_token_ids": _optional(lambda v: [_int(e) for e in _seq(v)]),
    "stop_regex": _optional(_or_list(_str, "StringOrList")),
    "temperature": _optional(_float), "top_p": _optional(_float), "top_k": _optional(_int),
    "min_p": _optional(_float), "frequency_penalty": _optional(_float), "presence_penalty": _optional(_float),
    "repetition_penalty": _optional(_float), "min_new_tokens": _optional(_int), "n": _optional(_int),
    "json_schema": _optional(_str), "regex": _optional(_str), "ebnf": _optional(_str),
    "structural_tag": _optional(_str), "ignore_eos": _optional(_bool), "skip_special_tokens": _optional(_bool),
    "spaces_between_special_tokens": _optional(_bool), "no_stop_trim": _optional(_bool),
    "stream_interval": _optional(_int), "logit_bias": _optional(_map_of(_float)),
    "sampling_seed": _optional(_int), "custom_params": _anything, "beam_width": _optional(_int),
    "watermark": _optional(lambda v: _map(v, "struct WatermarkRequestConfig")),
    "choice": _optional(lambda v: [_str(e) for e in _seq(v)]),
}
SAMPLING_KEYS = tuple(_SAMPLING_TYPES)


def _unknown_field(key: str, fields: tuple[str, ...]) -> ProtocolError:
    listed = ", ".join(f"`{f}`" for f in fields)
    return schema_error(f"unknown field `{key}`, expected one of {listed}")


def _sampling_object(v: Any) -> dict:
    sp = _map(v, "struct SamplingParams")
    out = {}
    for key, value in sp.items():
        check = _SAMPLING_TYPES.get(key)
        if check is None:
            raise _unknown_field(key, SAMPLING_KEYS)
        out[key] = check(value)
    return out


def _sampling_or_list(v: Any):
    if isinstance(v, list):
        return [_sampling_object(e) for e in v]
    return _sampling_object(_map(v, "a value or an array of values for SamplingParamsOrList"))


_UNSUPPORTED = object()  # a contract field this server has no feature for: refused when set

# Top-level fields of SGLang 0.5.23's GenerateRequest; anything else is ignored, as SGLang does.
_REQUEST_TYPES: dict[str, Any] = {
    "rid": _optional(_or_list(_str, "StringOrList")), "text": _optional(_or_list(_str, "StringOrList")),
    "input_ids": _optional(_token_ids_or_list), "stream": _optional(_bool),
    "sampling_params": _optional(_sampling_or_list), "return_logprob": _optional(_or_list(_bool, "BoolOrList")),
    "logprob_start_len": _optional(_or_list(_int, "Int64OrList")),
    "top_logprobs_num": _optional(_or_list(_int, "Int64OrList")),
    "token_ids_logprob": _optional(_token_ids_or_list),
    "return_hidden_states": _optional(_or_list(_bool, "BoolOrList")),
    "return_text_in_logprobs": _optional(_bool),
    "bootstrap_host": _optional_or_list(_str, "OptionalStringOrList"),
    "bootstrap_port": _optional_or_list(_int, "OptionalInt64OrList"),
    "bootstrap_room": _optional_or_list(_int, "OptionalInt64OrList"),
    "bootstrap_pair_key": _optional_or_list(_str, "OptionalStringOrList"),
    "decode_tp_size": _optional_or_list(_int, "OptionalInt64OrList"),
    "routed_dp_rank": _optional(_int), "disagg_prefill_dp_rank": _optional(_int),
    "image_data": _UNSUPPORTED, "video_data": _UNSUPPORTED, "audio_data": _UNSUPPORTED,
    "mm_hashes": _optional(_string_list_or_list), "extra_key": _optional(_or_list(_str, "StringOrList")),
    "priority": _optional(_int), "cache_salt": _optional(_or_list(_str, "StringOrList")),
    "require_reasoning": _optional(_bool), "lora_path": _optional_or_list(_str, "OptionalStringOrList"),
    "session_params": _anything, "kv_hints": _UNSUPPORTED, "routing_key": _optional(_str),
    "max_thinking_tokens": _optional(_uint), "session_id": _optional(_str),
    "custom_logit_processor": _optional_or_list(_str, "OptionalStringOrList"),
    "custom_labels": _optional(_map_of(_str)), "images_config": _UNSUPPORTED,
    "return_prompt_token_ids": _bool, "routed_experts_start_len": _int,
    "return_sampling_mask": _optional(_or_list(_bool, "BoolOrList")),
    "modalities": _optional(lambda v: [None if e is None else _str(e) for e in _seq(v)]),
}

# Fields whose non-empty value asks for a feature this server does not have (refused, not ignored).
_FEATURE_FIELDS = ("image_data", "video_data", "audio_data", "kv_hints", "images_config", "lora_path",
                   "session_params", "session_id", "custom_logit_processor", "return_hidden_states",
                   "return_sampling_mask", "bootstrap_host", "bootstrap_room", "return_prompt_token_ids")


def check_contract(body: Any) -> dict:
    """SGLang's schema check of a parsed /generate body; the typed fields it names."""
    if not isinstance(body, dict):
        raise _bad(body, "struct GenerateRequest")
    typed = {}
    for key, value in body.items():
        check = _REQUEST_TYPES.get(key)
        if check is None:
            continue  # unknown top-level fields are ignored (sglang-router adds several)
        typed[key] = value if check is _UNSUPPORTED else check(value)
    return typed


# ---- semantics ------------------------------------------------------------------------------


@dataclass
class PromptRequest:
    """One prompt of a /generate body, ready for the engine."""

    ids: list[int]
    params: SamplingParams
    seed: int | None
    return_logprob: bool
    logprob_start_len: int
    token_ids_logprob: list[int] | None
    rid: str | None


@dataclass
class GenerateBody:
    single: bool  # answer with one object, not a list
    prompts: list[PromptRequest] = field(default_factory=list)


# Sampling values the embedded engine cannot honour: refused unless they are SGLang's defaults.
_NOOP_DEFAULTS = {
    "min_p": 0.0, "frequency_penalty": 0.0, "presence_penalty": 0.0, "repetition_penalty": 1.0,
    "min_new_tokens": 0, "skip_special_tokens": True, "no_stop_trim": False,
    "json_schema": None, "regex": None, "ebnf": None, "structural_tag": None, "stop_regex": None,
    "beam_width": None, "watermark": None, "custom_params": None,
}
HONOURED = ("max_new_tokens", "temperature", "top_p", "top_k (-1 or >= vocabulary)", "stop", "n", "sampling_seed",
            "ignore_eos")


def check_sampling(sp: dict, vocab_size: int | None) -> tuple[SamplingParams, int | None]:
    """SGLang's SamplingParams.verify ranges, then what this server can honour."""
    get = lambda key, default: default if sp.get(key) is None else sp[key]  # noqa: E731
    max_new = get("max_new_tokens", 128)
    temperature, top_p, top_k = get("temperature", 1.0), get("top_p", 1.0), get("top_k", -1)
    n, seed = get("n", 1), sp.get("sampling_seed")
    if not math.isfinite(temperature) or temperature < 0:
        raise value_error(f"temperature must be a non-negative finite number, got {temperature}.")
    if not 0.0 < top_p <= 1.0:
        raise value_error(f"top_p must be in (0, 1], got {top_p}.")
    if top_k != -1 and top_k < 1:
        raise value_error(f"top_k must be -1 (disable) or at least 1, got {top_k}.")
    if not 0.0 <= get("min_p", 0.0) <= 1.0:
        raise value_error(f"min_p must be in [0, 1], got {sp['min_p']}.")
    for key in ("frequency_penalty", "presence_penalty"):
        if not -2.0 <= get(key, 0.0) <= 2.0:
            raise value_error(f"{key} must be in [-2, 2], got {sp[key]}.")
    if not 0.0 < get("repetition_penalty", 1.0) <= 2.0:
        raise value_error(f"repetition_penalty must be in (0, 2] (1.0 = no penalty), got {sp['repetition_penalty']}.")
    if max_new < 0:
        raise value_error(f"max_new_tokens must be at least 0, got {max_new}.")
    if not 0 <= get("min_new_tokens", 0) <= max_new:
        raise value_error(f"min_new_tokens must be in [0, max_new_tokens({max_new})], got {sp['min_new_tokens']}.")
    if n < 1:
        raise value_error(f"n must be at least 1, got {n}.")
    if seed is not None and not -(2**63) <= seed <= 2**63 - 1:
        raise value_error(f"sampling_seed must be a 64-bit integer, got {seed}.")
    unsupported = [key for key, default in _NOOP_DEFAULTS.items() if sp.get(key) is not None and sp[key] != default]
    if top_k != -1 and not (vocab_size and top_k >= vocab_size):
        unsupported.append("top_k")
    if sp.get("stop_token_ids") or sp.get("logit_bias") or sp.get("choice"):
        unsupported += [k for k in ("stop_token_ids", "logit_bias", "choice") if sp.get(k)]
    if unsupported:
        raise value_error(f"sampling parameters not supported by this server: {', '.join(sorted(unsupported))} "
                          f"(it honours {', '.join(HONOURED)})")
    stop = sp.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    params = SamplingParams(max_new_tokens=max_new, temperature=temperature, top_p=top_p, stop=stop, n=n,
                            return_logprobs=True, ignore_eos=bool(sp.get("ignore_eos")))
    return params, seed


def _per_prompt(value: Any, count: int, name: str, default: Any) -> list:
    if value is None:
        return [default] * count
    if isinstance(value, list):
        if len(value) != count:
            raise value_error(f"{name} has {len(value)} entries for {count} prompts")
        return [default if v is None else v for v in value]
    return [value] * count


def parse_generate(body: Any, encode: Callable[[str], list[int]], context_len: int,
                   vocab_size: int | None = None, limits: ServerLimits = ServerLimits()) -> GenerateBody:
    """A /generate body -> prompts for the engine, or ProtocolError with SGLang's status and body."""
    req = check_contract(body)
    for name in _FEATURE_FIELDS:
        value = req.get(name)
        if value not in (None, False, [], {}) and not (isinstance(value, list) and not any(value)):
            raise value_error(f"{name} is not supported by this server")
    if req.get("stream"):
        raise value_error("stream=true is not supported by this server; send stream=false")
    top = req.get("top_logprobs_num")
    if any(x for x in (top if isinstance(top, list) else [top]) if x):
        raise value_error("top_logprobs_num is not supported by this server")
    text, input_ids = req.get("text"), req.get("input_ids")
    if (text is None) == (input_ids is None):
        raise value_error("Either text or input_ids should be provided (not both).")
    if text is not None:
        single = isinstance(text, str)
        texts = [text] if single else text
        prompts = [encode(t) for t in texts]
    else:
        single = not input_ids or not isinstance(input_ids[0], list)
        prompts = [input_ids] if single else input_ids
    count = len(prompts)
    if count == 0:
        raise value_error("the batch is empty")
    if count > limits.max_prompts:
        raise value_error(f"a request may carry at most {limits.max_prompts} prompts, got {count}")

    sampling = req.get("sampling_params")
    sampling = _per_prompt(sampling, count, "sampling_params", {})
    want_logprob = _per_prompt(req.get("return_logprob"), count, "return_logprob", False)
    start_len = _per_prompt(req.get("logprob_start_len"), count, "logprob_start_len", -1)
    rids = _per_prompt(req.get("rid"), count, "rid", None)
    token_ids_logprob = req.get("token_ids_logprob")
    if token_ids_logprob and isinstance(token_ids_logprob[0], list):
        token_ids_logprob = _per_prompt(token_ids_logprob, count, "token_ids_logprob", None)
    else:
        token_ids_logprob = [token_ids_logprob or None] * count

    out = GenerateBody(single=single and count == 1)
    total = 0
    for i, ids in enumerate(prompts):
        params, seed = check_sampling(sampling[i], vocab_size)
        if params.n > limits.max_n:
            raise value_error(f"n may be at most {limits.max_n} on this server, got {params.n}")
        if not ids:
            raise value_error("The input is empty: give at least one token.")
        if vocab_size and any(t < 0 or t >= vocab_size for t in ids):
            bad = next(t for t in ids if t < 0 or t >= vocab_size)
            raise value_error(f"token id {bad} is outside the vocabulary [0, {vocab_size - 1}]")
        if any(t < 0 for t in ids):
            raise value_error(f"token ids must be >= 0, got {min(ids)}")
        # SGLang's rules: the input must be shorter than the context, and input + new tokens fit in it.
        if len(ids) >= context_len:
            raise value_error(f"The input ({len(ids)} tokens) is longer than the model's context length "
                              f"({context_len} tokens).")
        if len(ids) + params.max_new_tokens > context_len:
            raise value_error(
                f"Requested token count exceeds the model's maximum context length of {context_len} tokens. "
                f"You requested a total of {len(ids) + params.max_new_tokens} tokens: {len(ids)} tokens from "
                f"the input messages and {params.max_new_tokens} tokens for the completion.")
        total += (len(ids) + params.max_new_tokens) * params.n
        tids = token_ids_logprob[i]
        if tids and params.max_new_tokens > 0:
            raise value_error("token_ids_logprob is supported with max_new_tokens 0 (prompt scoring) only")
        if tids and len(tids) * len(ids) > limits.max_logprob_entries:
            # The answer holds one entry per candidate per position: 64 x 32,000 made 71 MB.
            raise value_error(f"token_ids_logprob asks for {len(tids):,} ids at up to {len(ids):,} positions; "
                              f"this server scores at most {limits.max_logprob_entries:,} per prompt")
        rid = rids[i]
        out.prompts.append(PromptRequest(
            ids=list(ids), params=params, seed=seed, return_logprob=bool(want_logprob[i]),
            logprob_start_len=int(start_len[i]), token_ids_logprob=list(tids) if tids else None,
            rid=rid if isinstance(rid, str) else None))
    if total > limits.max_total_tokens:
        raise value_error(f"the request asks for {total:,} tokens (prompt + new, times n); this server "
                          f"allows {limits.max_total_tokens:,} per request")
    return out
