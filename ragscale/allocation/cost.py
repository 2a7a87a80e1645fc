"""What a configuration costs per query and per month, and how long a query takes.

Prices are per 1M tokens. Cached input (prefix-cache or context-cache hits) is billed at its own,
lower price and skips prefill. The defaults are illustrative list prices for Gemini 1.5 Flash
(prompts up to 128k tokens, 2024: $0.075 input, $0.01875 cached input, $0.30 output per 1M) and
illustrative throughputs; replace them with your provider's prices and your measured speeds.

The cost of a configuration whose call exceeds the context window is still computed (the
calculator shows what a manual choice would cost) but ``largest_call_tokens`` is reported beside it
and the calculator flags it; the optimiser never proposes one.

Latency is sequential: all of one question's calls run one after another (IterDRAG's calls depend
on each other), so latency = uncached input / prefill speed + output / decode speed. Queueing,
retrieval and network time are not modelled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ragscale.allocation.context_length import TokenSizes, token_usage
from ragscale.errors import UserError


@dataclass(frozen=True)
class CostModel:
    price_input_per_m: float = 0.075     # USD per 1M uncached input tokens
    price_cached_per_m: float = 0.01875  # USD per 1M cached input tokens
    price_output_per_m: float = 0.30     # USD per 1M output tokens
    queries_per_day: float = 1000.0
    cache_hit_fraction: float | None = None  # share of input served from cache; None = all cacheable
    prefill_tokens_per_s: float = 5000.0
    decode_tokens_per_s: float = 100.0
    days_per_month: float = 30.0

    def __post_init__(self):
        for name, value in asdict(self).items():
            if value is None:
                continue
            if not np.isfinite(value) or value < 0:
                raise UserError(f"{name} must be a non-negative number, got {value!r}")
        if self.prefill_tokens_per_s <= 0 or self.decode_tokens_per_s <= 0:
            raise UserError("prefill and decode speeds must be positive")
        if self.cache_hit_fraction is not None and self.cache_hit_fraction > 1:
            raise UserError(f"cache_hit_fraction must be between 0 and 1, got {self.cache_hit_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CostBreakdown:
    input_tokens: float
    cached_input_tokens: float
    uncached_input_tokens: float
    output_tokens: float
    calls: float
    cost_uncached_input_usd: float
    cost_cached_input_usd: float
    cost_output_usd: float
    cost_per_query_usd: float
    cost_per_day_usd: float
    cost_per_month_usd: float
    latency_s: float
    largest_call_tokens: float = 0.0  # the biggest single call: what must fit the context window

    def to_dict(self) -> dict:
        return asdict(self)


def _config(config) -> tuple[str, float, float, float]:
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key)
    try:
        return str(get("strategy")), float(get("k")), float(get("m")), float(get("n"))
    except (AttributeError, KeyError, TypeError) as exc:
        raise UserError(f"a configuration needs strategy, k, m and n: {exc}") from exc


def cost_breakdown(config, sizes: TokenSizes | None = None, cost: CostModel | None = None) -> CostBreakdown:
    """Cost and latency of one configuration (an Allocation, or a dict with strategy, k, m, n)."""
    sizes, cost = sizes or TokenSizes(), cost or CostModel()
    strategy, k, m, n = _config(config)
    usage = {key: float(value) for key, value in token_usage(strategy, k, m, n, sizes).items()}
    total = usage["input"]
    cached = usage["cacheable"] if cost.cache_hit_fraction is None else cost.cache_hit_fraction * total
    uncached = total - cached
    cost_uncached = uncached * cost.price_input_per_m / 1e6
    cost_cached = cached * cost.price_cached_per_m / 1e6
    cost_output = usage["output"] * cost.price_output_per_m / 1e6
    per_query = cost_uncached + cost_cached + cost_output
    per_day = per_query * cost.queries_per_day
    return CostBreakdown(
        input_tokens=total, cached_input_tokens=cached, uncached_input_tokens=uncached,
        output_tokens=usage["output"], calls=usage["calls"],
        cost_uncached_input_usd=cost_uncached, cost_cached_input_usd=cost_cached, cost_output_usd=cost_output,
        cost_per_query_usd=per_query, cost_per_day_usd=per_day, cost_per_month_usd=per_day * cost.days_per_month,
        latency_s=uncached / cost.prefill_tokens_per_s + usage["output"] / cost.decode_tokens_per_s,
        largest_call_tokens=usage["largest_call"],
    )
