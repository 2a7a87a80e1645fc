"""A scripted Engine for fast tests of code that sits on the Engine interface.

Tokens are UTF-8 bytes, so counts are exact and cheap; replies come from a function the test
gives; ``cached_tokens`` follows SGLang's rule (longest prefix seen before, at most
prompt_tokens - 1). It loads no model, so strategy and search tests run in milliseconds.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from ragscale.engines.base import CacheStats, Engine, EngineInfo, Generation, Prompt, SamplingParams, Usage


class ByteTokenizer:
    def __len__(self) -> int:  # vocabulary size: one token per byte value
        return 256

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def apply_chat_template(self, conversation, tokenize: bool = False, add_generation_prompt: bool = True):
        text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in conversation)
        if add_generation_prompt:
            text += "<|assistant|>\n"
        return self.encode(text) if tokenize else text


# reply(prompt_text, params, sample_index, rng) -> completion text (before stop-string trimming)
Reply = Callable[[str, SamplingParams, int, random.Random], str]


class ScriptedEngine(Engine):
    def __init__(self, reply: Reply, context_window: int = 8192, logprob: Callable[[str, str], float] | None = None):
        self.info = EngineInfo(kind="scripted", model="scripted-bytes", context_window=context_window)
        self._tok = ByteTokenizer()
        self._reply = reply
        self._logprob = logprob or (lambda prompt, continuation: -1.0)
        self._seen: list[list[int]] = []
        self._stats = CacheStats()
        self.calls: list[str] = []  # every prompt text, in order

    @property
    def tokenizer(self):
        return self._tok

    def _ids(self, prompt: Prompt) -> list[int]:
        return list(prompt) if isinstance(prompt, list) else self._tok.encode(prompt)

    def _cached(self, ids: list[int]) -> int:
        best = 0
        for seen in self._seen:
            n = 0
            for a, b in zip(ids, seen):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        return min(best, max(len(ids) - 1, 0))

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]:
        results = []
        for prompt in prompts:
            ids = self._ids(prompt)
            if len(ids) + params.max_new_tokens > self.info.context_window:
                from ragscale.errors import EngineError

                raise EngineError(f"prompt of {len(ids)} tokens exceeds the context window {self.info.context_window}")
            text_in = self._tok.decode(ids)
            for i in range(params.n):
                rng = random.Random((params.seed or 0) * 1000 + i)
                out = self._reply(text_in, params, i, rng)
                finish = "length"
                for stop in params.stop:
                    if stop in out:
                        out = out[: out.index(stop)]
                        finish = "stop"
                out_ids = self._tok.encode(out)[: params.max_new_tokens]
                if finish == "length" and len(out_ids) < params.max_new_tokens:
                    finish = "stop"
                cached = self._cached(ids)
                self._seen.append(ids + out_ids)
                self.calls.append(text_in)
                self._stats.requests += 1
                self._stats.prompt_tokens += len(ids)
                self._stats.cached_tokens += cached
                self._stats.generated_tokens += len(out_ids)
                results.append(Generation(
                    text=self._tok.decode(out_ids), output_ids=out_ids, finish_reason=finish,
                    usage=Usage(len(ids), cached, len(out_ids)), prompt_ids=ids,
                    logprobs=[-0.5] * len(out_ids) if params.return_logprobs else None,
                ))
        return results

    def score(self, prompt: Prompt, continuations: Sequence[Prompt]) -> list[list[float]]:
        text_in = self._tok.decode(self._ids(prompt))
        out = []
        for cont in continuations:
            cont_text = cont if isinstance(cont, str) else self._tok.decode(cont)
            n = max(len(self._ids(cont)), 1)
            out.append([self._logprob(text_in, cont_text) / n] * n)
        return out

    def flush_cache(self) -> None:
        self._seen.clear()

    def stats(self) -> CacheStats:
        return self._stats

    def reset_stats(self) -> None:
        self._stats = CacheStats()
