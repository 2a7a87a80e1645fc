"""The embedded engine: SmolLM2-135M-Instruct on CPU with a radix prefix cache.

One ``generate`` call runs like a small SGLang scheduler step:
1. each prompt looks up its longest cached prefix (at most prompt_tokens - 1 tokens) and only
   the rest is prefilled; the prompt's KV goes back into the tree at once, so a later prompt in
   the same call that shares the prefix prefills it once;
2. every sample of every prompt then decodes in one left-padded batch (sibling branches share
   the prompt's KV, copied per row);
3. a finished sequence (prompt + output) is inserted into the tree, so continuing a branch with
   ``prompt_ids + output_ids`` recomputes nothing but its last token.

``prefix_cache=False`` is SGLang's --disable-radix-cache: nothing is matched or kept between
requests (samples of one prompt still share its prefill, as in SGLang).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ragscale.engines.base import (
    CacheStats, Engine, EngineInfo, Generation, Prompt, SamplingParams, Usage, sample_seed,
)
from ragscale.engines.model_files import CONTEXT_WINDOW, MODEL_NAME, load_model, set_threads
from ragscale.engines.radix_cache import RadixCache
from ragscale.errors import EngineError

# 32k tokens of SmolLM2 KV (30 layers x 3 heads x 64 dims x K,V in bf16) is about 0.7 GiB.
DEFAULT_CACHE_TOKENS = 32768


class LayerKV:
    """K/V of a run of tokens for every layer: a tuple of (keys, values), each [heads, tokens, dim].

    Slicing copies (``clone``) so that a node of the radix tree owns exactly its tokens' memory.
    """

    __slots__ = ("layers",)

    def __init__(self, layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]):
        self.layers = layers

    def __len__(self) -> int:
        return self.layers[0][0].shape[1]

    def __getitem__(self, item: slice) -> "LayerKV":
        return LayerKV(tuple((k[:, item].clone(), v[:, item].clone()) for k, v in self.layers))

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


@dataclass
class _Row:
    """One sequence being decoded: sample ``sample`` of prompt ``prompt``."""

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
                 batch_prefill: bool = False, dtype: str | None = None, threads: int | None = None):
        """``dtype``: compute dtype, "float32" or "bfloat16" (default: bf16 only where the CPU has
        it natively; see ``model_files.default_dtype``). ``threads``: torch threads (process-wide).
        ``batch_prefill``: prefill the uncached suffixes of all prompts of a call in one padded
        batch. Faster for many short suffixes, but padding and batch shape change float rounding,
        so greedy tokens with the cache on and off can then differ; off by default."""
        self.prefix_cache = prefix_cache
        self.batch_prefill = batch_prefill
        self.info = EngineInfo(kind="embedded", model=MODEL_NAME, context_window=CONTEXT_WINDOW)
        set_threads(threads)
        self.model, self._tokenizer = load_model(dtype)
        self.cache = RadixCache(token_budget=cache_tokens, disable=not prefix_cache)
        self._stats = CacheStats(cache_capacity_tokens=cache_tokens if prefix_cache else 0)
        self._lock = threading.RLock()  # one request at a time (the server and app tabs share us)
        tok = self._tokenizer
        self._stop_ids = {i for i in (tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")) if isinstance(i, int)}

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
            rows, prefills, cached, pins = [], [], [], []
            try:
                for p, (ids, (kv, logits, matched, node)) in enumerate(zip(prompt_ids, self._prefill_all(prompt_ids, pins))):
                    prefills.append((kv, logits))
                    # Sample 0 pays for the prompt; its siblings reuse it (SGLang reports them cached).
                    sibling = len(ids) - 1 if self.prefix_cache else 0
                    cached.append([matched] + [sibling] * (params.n - 1))
                    for s in range(params.n):
                        seed = sample_seed(params.seed, s) if seeds is None else seeds[p]
                        rows.append(_Row(p, s, len(ids), _generator(seed, params.temperature)))
                if params.max_new_tokens > 0:
                    self._decode(rows, prompt_ids, prefills, params)
            finally:
                for node in pins:
                    self.cache.dec_ref(node)
            elapsed = time.perf_counter() - started

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
        with self._lock, torch.inference_mode():
            started = time.perf_counter()
            # The prompt's last token is fed again with the continuation so that its logits
            # predict the continuation's first token (SGLang caps the match the same way).
            pins = []
            kv, _, matched, _ = self._prefill_all([ids[:-1]], pins)[0] if len(ids) > 1 else (None, None, 0, None)
            try:
                width = max(len(c) for c in conts) + 1
                batch = torch.tensor([[ids[-1]] + c + [0] * (width - 1 - len(c)) for c in conts])
                cache = _padded_cache(self.model, [[kv] if kv is not None else []] * len(conts), width)
                # Right padding needs no mask: causal attention never looks forward.
                logits = self.model(input_ids=batch, past_key_values=cache, use_cache=True).logits.float()
                logp = torch.log_softmax(logits, dim=-1)
                out = [[logp[i, j, c[j]].item() for j in range(len(c))] for i, c in enumerate(conts)]
            finally:
                for node in pins:
                    self.cache.dec_ref(node)
            self._stats.generation_seconds += time.perf_counter() - started
        for i, c in enumerate(conts):
            reused = len(ids) - 1 if self.prefix_cache else 0
            self._count(Usage(len(ids) + len(c), matched if i == 0 else reused, 0))
        return out

    # -- internals -------------------------------------------------------------------------
    def _ids(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.encode(prompt)
        ids = [int(t) for t in prompt]
        vocab = self.model.config.vocab_size
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

    def _prefill_all(self, prompt_ids: list[list[int]], pins: list) -> list[tuple]:
        """(KV, logits after the last token, matched tokens, pinned node) for every prompt.

        Each prompt reuses its longest cached prefix (at most len - 1 tokens, like SGLang) and is
        inserted into the tree at once, so a prefix shared inside one call is computed once. With
        ``batch_prefill`` the prompts' suffixes go through one padded forward pass, except that a
        prompt sharing more with a waiting prompt than with the cache waits for it. Pinned nodes
        go to ``pins``.
        """
        results: list = [None] * len(prompt_ids)
        pending: list[tuple[int, int, list]] = []  # (prompt index, matched, prefix KV parts)
        for i, ids in enumerate(prompt_ids):
            matched, node, parts = self.cache.match_prefix(ids[:-1])
            shares_more = self.prefix_cache and any(_common(ids[:-1], prompt_ids[j]) > matched for j, _, _ in pending)
            if pending and (shares_more or not self.batch_prefill):
                self._prefill_batch(prompt_ids, pending, results)
                pending = []
                matched, node, parts = self.cache.match_prefix(ids[:-1])
            self.cache.inc_ref(node)
            pins.append(node)
            pending.append((i, matched, parts))
        if pending:
            self._prefill_batch(prompt_ids, pending, results)
        return results

    def _prefill_batch(self, prompt_ids, pending, results) -> None:
        """One forward pass over the uncached suffixes: row = [left pad | cached prefix | suffix | right pad]."""
        rows = [(i, matched, parts, prompt_ids[i][matched:]) for i, matched, parts in pending]
        width_prefix = max(m for _, m, _, _ in rows)
        width_suffix = max(len(s) for _, _, _, s in rows)
        ragged = any(m != width_prefix or len(s) != width_suffix for _, m, _, s in rows)
        cache = _padded_cache(self.model, [parts for _, _, parts, _ in rows], width_suffix)
        tokens = torch.tensor([s + [0] * (width_suffix - len(s)) for _, _, _, s in rows])
        positions = torch.stack([torch.arange(m, m + width_suffix) for _, m, _, _ in rows])
        mask = None
        if ragged:  # padding is masked out; with none, the call is exactly the unbatched one
            mask = torch.zeros(len(rows), width_prefix + width_suffix, dtype=torch.long)
            for j, (_, m, _, s) in enumerate(rows):
                mask[j, width_prefix - m: width_prefix + len(s)] = 1
        # The body only, then the LM head at each row's last real token: full logits for a
        # long prompt (tokens x 49k vocabulary) would be a waste of memory.
        hidden = self.model.model(input_ids=tokens, attention_mask=mask, position_ids=positions,
                                  past_key_values=cache, use_cache=True).last_hidden_state
        last = torch.stack([hidden[j, len(s) - 1] for j, (_, _, _, s) in enumerate(rows)])
        logits = self.model.lm_head(last).float()
        for j, (i, m, _, s) in enumerate(rows):
            start, end = width_prefix - m, width_prefix + len(s)
            kv = LayerKV(tuple((layer.keys[j, :, start:end], layer.values[j, :, start:end]) for layer in cache.layers))
            self._insert(prompt_ids[i], kv)
            results[i] = (kv, logits[j], m, None)

    def _insert(self, ids: list[int], kv: LayerKV) -> None:
        self.cache.insert(ids, kv)

    def _decode(self, rows: list[_Row], prompt_ids, prefills, params: SamplingParams) -> None:
        """Sample every row to completion in one left-padded batch; finished rows leave the batch."""
        for row in rows:
            self._accept(row, self._sample(prefills[row.prompt][1][None], [row], params)[0], params)
        active = [r for r in rows if r.finish is None]
        for row in rows:
            if row.finish is not None:
                self._insert_row(row, prompt_ids, prefills[row.prompt][0], None)
        if not active:
            return
        longest = max(r.prompt_len for r in active)
        cache = _padded_cache(self.model, [[prefills[r.prompt][0]] for r in active], params.max_new_tokens)
        mask = torch.zeros(len(active), longest, dtype=torch.long)
        for j, r in enumerate(active):
            mask[j, longest - r.prompt_len:] = 1

        while active:
            tokens = torch.tensor([[r.out[-1]] for r in active])
            positions = torch.tensor([[r.prompt_len + len(r.out) - 1] for r in active])
            mask = torch.cat([mask, torch.ones(len(active), 1, dtype=torch.long)], dim=1)
            logits = self.model(input_ids=tokens, attention_mask=mask, position_ids=positions,
                                past_key_values=cache, use_cache=True).logits[:, -1].float()
            for r, tok in zip(active, self._sample(logits, active, params)):
                self._accept(r, tok, params)
            keep = [j for j, r in enumerate(active) if r.finish is None]
            if len(keep) < len(active):
                width = mask.shape[1]
                for j, r in enumerate(active):
                    if r.finish is not None:
                        seq = r.prompt_len + len(r.out) - 1  # the last sampled token has no KV yet
                        kv = LayerKV(tuple((layer.keys[j, :, width - seq:], layer.values[j, :, width - seq:])
                                           for layer in cache.layers))
                        self._insert_row(r, prompt_ids, None, kv)
                if keep:
                    index = torch.tensor(keep)
                    cache.batch_select_indices(index)
                    mask = mask[index]
                active = [active[j] for j in keep]

    def _insert_row(self, row: _Row, prompt_ids, prompt_kv: LayerKV | None, kv: LayerKV | None) -> None:
        """Put prompt + output (minus the last token, whose KV was never computed) into the tree."""
        ids = prompt_ids[row.prompt] + row.out[:-1]
        if kv is None:
            kv = prompt_kv
        if len(kv) == len(ids):
            self._insert(ids, kv)

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
        if tok in self._stop_ids:
            row.finish = "stop"
        for stop in params.stop:
            if stop and stop in text:
                text = text[: text.index(stop)]
                row.finish = "stop"
        if row.finish is None and len(row.out) >= params.max_new_tokens:
            row.finish = "length"
        row.text = text


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _generator(seed: int | None, temperature: float) -> torch.Generator | None:
    if temperature == 0:
        return None
    return torch.Generator().manual_seed(seed if seed is not None else random.getrandbits(63))


class _ReservedLayer(DynamicLayer):
    """A DynamicLayer over a buffer with room to spare: new tokens are written in place.

    DynamicLayer concatenates on every update, copying the layer's whole KV once per decoded
    token; at batch 8 over 1,100 tokens that was a fifth of each decode step here. ``keys`` and
    ``values`` are views of the filled part, so attention never sees the spare room.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self._keys, self._values, self.length = keys, values, length
        self._expose()

    def update(self, key_states, value_states, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if end > self._keys.shape[-2]:  # out of room: grow by doubling (rare; callers reserve enough)
            extra = max(end, 2 * self._keys.shape[-2]) - self.length
            self._keys = torch.nn.functional.pad(self._keys[:, :, :self.length], (0, 0, 0, extra))
            self._values = torch.nn.functional.pad(self._values[:, :, :self.length], (0, 0, 0, extra))
        self._keys[:, :, self.length:end] = key_states
        self._values[:, :, self.length:end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._expose()

    def _expose(self) -> None:
        self.keys, self.values = self._keys[:, :, :self.length], self._values[:, :, :self.length]


def _padded_cache(model, rows: Sequence[Sequence[LayerKV]], spare: int):
    """A cache holding one row per entry of ``rows`` (each a list of KV parts, in order), left-padded
    with zeros to the longest row, with room for ``spare`` more tokens per row. Each part is copied
    once, straight into place."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    lengths = [sum(len(part) for part in parts) for parts in rows]
    width = max(lengths, default=0)
    layers = []
    for layer in range(config.num_hidden_layers):
        shape = (len(rows), config.num_key_value_heads, width + spare, head_dim)
        keys, values = torch.zeros(shape, dtype=model.dtype), torch.zeros(shape, dtype=model.dtype)
        for j, parts in enumerate(rows):
            at = width - lengths[j]
            for part in parts:
                k, v = part.layers[layer]
                keys[j, :, at:at + len(part)] = k
                values[j, :, at:at + len(part)] = v
                at += len(part)
        layers.append(_ReservedLayer(keys, values, width))
    cache = DynamicCache(config=config)
    cache.layers = layers
    return cache
