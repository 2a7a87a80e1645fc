"""The embedded server's OpenAI routes: ``POST /v1/completions`` and ``/v1/chat/completions``
(``GET /v1/models`` is ``EngineService.models``), so the official ``openai`` package, and ragscale's
own ``--engine openai``, work against ``ragscale serve embedded`` as against SGLang or vLLM.

Each request is translated into a native ``/generate`` body and answered by ``EngineService.generate``,
so every check, limit, merge and seed rule of the native path holds here too; this module only
maps fields and shapes. What it takes:

- completions: ``prompt`` as text, a list of texts, token ids or a list of token-id lists;
  ``max_tokens`` (default 16), ``temperature`` (default 1), ``top_p``, ``n``, ``stop``, ``seed``,
  ``logprobs`` 0 (the sampled tokens' own log-probabilities; alternatives are not computed),
  ``echo`` (with ``logprobs``: the prompt's log-probabilities too, for scoring),
  ``ignore_eos`` and vLLM's ``return_token_ids``;
- chat completions: ``messages`` (text content) through the model's chat template,
  ``max_tokens``/``max_completion_tokens``, ``logprobs`` (``top_logprobs`` 0), and the same sampling fields.

``usage.prompt_tokens_details.cached_tokens`` is the prefix-cache hit, summed over the prompts of
the request (each prompt's first sample). Tools, response formats, streaming and penalties are
refused with HTTP 400 in OpenAI's error shape, never ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ragscale.engines.sglang_protocol import ProtocolError, http_error

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
PATHS = (COMPLETIONS, CHAT)
# Fields whose non-empty value asks for something this server does not do.
_REFUSED = ("suffix", "tools", "tool_choice", "functions", "function_call", "response_format", "logit_bias",
            "stream_options", "audio", "modalities", "prediction", "web_search_options")
_PENALTIES = ("frequency_penalty", "presence_penalty")


def answer(service, path: str, body: Any) -> dict:
    """The OpenAI answer to ``body`` on ``path`` (one of ``PATHS``), or ProtocolError."""
    if not isinstance(body, dict):
        raise _error("the body must be a JSON object")
    engine = service.require_engine()
    model = body.get("model")
    if model is not None and model != engine.info.model:
        raise _error(f"The model `{str(model)[:80]}` does not exist.", 404, "NotFoundError")
    for key in _REFUSED:
        if body.get(key) not in (None, False, [], {}):
            raise _error(f"{key} is not supported by this server")
    if body.get("stream"):
        raise _error("stream=true is not supported by this server; send stream=false")
    if path == CHAT:
        return _chat(service, engine, body)
    return _completions(service, engine, body)


def _completions(service, engine, body: dict) -> dict:
    prompt = body.get("prompt")
    single_ids = isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt)
    if isinstance(prompt, str) or single_ids:
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(
            isinstance(p, str) or (isinstance(p, list) and all(_is_int(t) for t in p)) for p in prompt):
        prompts = prompt
    else:
        raise _error("prompt must be a string, a list of strings, a list of token ids or a list of such lists",
                     param="prompt")
    logprobs = body.get("logprobs")
    if logprobs is not None and (not _is_int(logprobs) or logprobs < 0):
        raise _error("logprobs must be an integer >= 0", param="logprobs")
    if logprobs:
        raise _error("logprobs > 0 (alternative tokens) is not supported by this server; 0 gives the "
                     "sampled tokens' log-probabilities", param="logprobs")
    echo = bool(body.get("echo"))
    max_tokens = _max_tokens(body, ("max_tokens",), 16)
    want_logprobs = logprobs is not None
    items, prompt_ids = _generate(service, engine, prompts, body, max_tokens, want_logprobs, echo)
    n = len(items) // len(prompts)
    choices = []
    for i, item in enumerate(items):
        ids, meta = prompt_ids[i // n], item["meta_info"]
        text, out_ids = item["text"], item["output_ids"]
        shown_ids, values = list(out_ids), [e[0] for e in meta.get("output_token_logprobs") or []]
        if echo:  # the prompt, then the completion (its log-probabilities from the prompt's first token on)
            text = engine.decode(ids) + text
            shown_ids = ids + shown_ids
            values = [None] + [e[0] for e in meta["input_token_logprobs"][1:]] + values
        block = _logprobs_block(engine, shown_ids, values) if want_logprobs else None
        choice = {"index": i, "text": text, "logprobs": block, "finish_reason": _finish(item)}
        if body.get("return_token_ids"):
            choice.update(token_ids=list(out_ids), prompt_token_ids=list(ids))
        choices.append(choice)
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": engine.info.model, "choices": choices, "usage": _usage(items, n)}


def _chat(service, engine, body: dict) -> dict:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _error("messages must be a non-empty list", param="messages")
    conversation = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user", "assistant"):
            raise _error("each message needs a role: system, developer, user or assistant", param="messages")
        content = message.get("content")
        if isinstance(content, list):  # content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise _error("only text content parts are supported by this server", param="messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise _error("message content must be text", param="messages")
        role = "system" if message["role"] == "developer" else message["role"]
        conversation.append({"role": role, "content": content})
    top = body.get("top_logprobs")
    if top not in (None, 0):
        raise _error("top_logprobs > 0 is not supported by this server", param="top_logprobs")
    want_logprobs = bool(body.get("logprobs"))
    max_tokens = _max_tokens(body, ("max_completion_tokens", "max_tokens"), None)
    text = engine.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    items, _ = _generate(service, engine, [text], body, max_tokens, want_logprobs, False)
    choices = []
    for i, item in enumerate(items):
        logprobs = None
        if want_logprobs:
            content = []
            for lp, token in ((e[0], e[1]) for e in item["meta_info"]["output_token_logprobs"]):
                piece = engine.decode([token])
                content.append({"token": piece, "logprob": lp, "bytes": list(piece.encode()), "top_logprobs": []})
            logprobs = {"content": content}
        choices.append({"index": i, "message": {"role": "assistant", "content": item["text"]},
                        "logprobs": logprobs, "finish_reason": _finish(item)})
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": engine.info.model, "choices": choices, "usage": _usage(items, len(items))}


def _generate(service, engine, prompts: list, body: dict, max_tokens: int | None, logprobs: bool,
              echo: bool) -> tuple[list[dict], list[list[int]]]:
    """The native /generate answer for ``prompts`` (prompt-major, n items each) and their ids."""
    ids = [engine.encode(p) if isinstance(p, str) else list(p) for p in prompts]
    if max_tokens is None:  # chat: up to the end of the window, as vLLM and SGLang do
        max_tokens = max(service.context_len - max(len(i) for i in ids) - 1, 0)
    sampling = {"max_new_tokens": max_tokens, "temperature": _number(body, "temperature", 1.0),
                "top_p": _number(body, "top_p", 1.0), "n": body.get("n") if body.get("n") is not None else 1}
    for key in _PENALTIES:
        if body.get(key) is not None:
            sampling[key] = body[key]  # the native path refuses any but the neutral value
    if body.get("stop") is not None:
        sampling["stop"] = body["stop"]
    if body.get("ignore_eos") is not None:
        sampling["ignore_eos"] = body["ignore_eos"]
    if body.get("seed") is not None:
        if not _is_int(body["seed"]):
            raise _error("seed must be an integer", param="seed")
        sampling["sampling_seed"] = body["seed"]
    native = {"input_ids": ids, "sampling_params": sampling, "return_logprob": logprobs or echo,
              "logprob_start_len": 0 if echo else -1}
    result = service.generate(native)
    items = result if isinstance(result, list) else [result]
    for item in items:
        finish = item["meta_info"].get("finish_reason")
        if isinstance(finish, dict) and finish.get("type") == "abort":
            raise _error(str(finish.get("message") or "the request was aborted"))
    return items, ids


def _usage(items: list[dict], n: int) -> dict:
    prompt = sum(item["meta_info"]["prompt_tokens"] for item in items[::n])
    cached = sum(item["meta_info"]["cached_tokens"] for item in items[::n])
    completion = sum(item["meta_info"]["completion_tokens"] for item in items)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _logprobs_block(engine, ids: list[int], values: list) -> dict:
    tokens = [engine.decode([t]) for t in ids]
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return {"tokens": tokens, "token_logprobs": values, "text_offset": offsets, "top_logprobs": None}


def _finish(item: dict) -> str:
    finish = item["meta_info"].get("finish_reason")
    return "length" if isinstance(finish, dict) and finish.get("type") == "length" else "stop"


def _max_tokens(body: dict, keys: tuple[str, ...], default: int | None) -> int | None:
    for key in keys:
        value = body.get(key)
        if value is not None:
            if not _is_int(value) or value < 0:
                raise _error(f"{key} must be an integer >= 0", param=key)
            return value
    return default


def _number(body: dict, key: str, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error(f"{key} must be a number", param=key)
    return float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _error(message: str, status: int = 400, kind: str = "BadRequestError", param: str | None = None) -> ProtocolError:
    """OpenAI's error shape (``{"error": {"message", "type", "param", "code"}}``)."""
    error = http_error(message, status)
    error.body = lambda: {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return error
