"""What a configuration costs per query and per month, and how long a query takes.

Prices come from a price sheet (``prices``: provider, model, date, source, tiers by prompt length).
Every model call is billed on its own prompt length: an IterDRAG question's early calls can sit in
the cheap tier while its last, longest calls pay the long-prompt rates. Cached input (prefix-cache
or context-cache hits) is billed at the tier's cached rate and skips prefill. The default sheet is
Gemini 1.5 Flash (the paper's model); the throughputs are illustrative: replace them with yours.

The cost of a configuration whose call exceeds the context window is still computed (the
calculator shows what a manual choice would cost) but ``largest_call_tokens`` is reported beside it
and the calculator flags it; the optimiser never proposes one.

Latency is sequential: all of one question's calls run one after another (IterDRAG's calls depend
on each other), so latency = uncached input / prefill speed + output / decode speed. Queueing,
retrieval and network time are not modelled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ragscale.allocation.context_length import TokenSizes, calls, canonical_theta
from ragscale.allocation.prices import PriceSheet, load_sheet
from ragscale.errors import UserError


@dataclass(frozen=True)
class CostModel:
    prices: PriceSheet = field(default_factory=load_sheet)
    queries_per_day: float = 1000.0
    cache_hit_fraction: float | None = None  # share of input served from cache; None = all cacheable
    prefill_tokens_per_s: float = 5000.0
    decode_tokens_per_s: float = 100.0
    days_per_month: float = 30.0

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "prices" or value is None:
                continue
            if not np.isfinite(value) or value < 0:
                raise UserError(f"{f.name} must be a non-negative number, got {value!r}")
        if self.prefill_tokens_per_s <= 0 or self.decode_tokens_per_s <= 0:
            raise UserError("prefill and decode speeds must be positive")
        if self.cache_hit_fraction is not None and self.cache_hit_fraction > 1:
            raise UserError(f"cache_hit_fraction must be between 0 and 1, got {self.cache_hit_fraction}")

    def to_dict(self) -> dict:
        return {**asdict(self), "prices": self.prices.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "CostModel":
        data = dict(data)
        if isinstance(data.get("prices"), dict):
            data["prices"] = PriceSheet.from_dict(data["prices"])
        return cls(**data)


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
    call_bills: tuple = ()  # per call: prompt, cached, output tokens, its tier and what it costs

    @property
    def tiers_used(self) -> list[str]:
        """The price tiers this question's calls fall in, in order of first use."""
        return list(dict.fromkeys(bill["tier"] for bill in self.call_bills))

    def to_dict(self) -> dict:
        return asdict(self)


def _config(config) -> tuple[str, float, float, float]:
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key)
    try:
        return str(get("strategy")), float(get("k")), float(get("m")), float(get("n"))
    except (AttributeError, KeyError, TypeError) as exc:
        raise UserError(f"a configuration needs strategy, k, m and n: {exc}") from exc


def bill_calls(strategy: str, k, m, n, sizes: TokenSizes, cost: CostModel) -> list[dict]:
    """Every call of one question with the tier its prompt falls in and its cost in USD."""
    bills = []
    for call in calls(strategy, k, m, n, sizes):
        tier = cost.prices.tier_for(call["prompt"])
        cached = call["cacheable"] if cost.cache_hit_fraction is None else cost.cache_hit_fraction * call["prompt"]
        uncached = call["prompt"] - cached
        bills.append({
            "prompt_tokens": call["prompt"], "cached_tokens": cached, "output_tokens": call["output"],
            "tier": tier.label, "input_per_m": tier.input, "cached_per_m": tier.cached_input,
            "output_per_m": tier.output,
            "uncached_usd": uncached * tier.input / 1e6, "cached_usd": cached * tier.cached_input / 1e6,
            "output_usd": call["output"] * tier.output / 1e6,
        })
    return bills


def cost_breakdown(config, sizes: TokenSizes | None = None, cost: CostModel | None = None) -> CostBreakdown:
    """Cost and latency of one configuration (an Allocation, or a dict with strategy, k, m, n)."""
    sizes, cost = sizes or TokenSizes(), cost or CostModel()
    strategy, k, m, n = _config(config)
    canonical_theta(strategy, k, m, n)  # one clear line for a bad strategy or knob
    bills = bill_calls(strategy, k, m, n, sizes, cost)
    total = sum(b["prompt_tokens"] for b in bills)
    cached = sum(b["cached_tokens"] for b in bills)
    output = sum(b["output_tokens"] for b in bills)
    cost_uncached = sum(b["uncached_usd"] for b in bills)
    cost_cached = sum(b["cached_usd"] for b in bills)
    cost_output = sum(b["output_usd"] for b in bills)
    per_query = cost_uncached + cost_cached + cost_output
    per_day = per_query * cost.queries_per_day
    return CostBreakdown(
        input_tokens=total, cached_input_tokens=cached, uncached_input_tokens=total - cached,
        output_tokens=output, calls=float(len(bills)),
        cost_uncached_input_usd=cost_uncached, cost_cached_input_usd=cost_cached, cost_output_usd=cost_output,
        cost_per_query_usd=per_query, cost_per_day_usd=per_day, cost_per_month_usd=per_day * cost.days_per_month,
        latency_s=(total - cached) / cost.prefill_tokens_per_s + output / cost.decode_tokens_per_s,
        largest_call_tokens=bills[-1]["prompt_tokens"] + bills[-1]["output_tokens"],
        call_bills=tuple(bills),
    )


def tier_summary(costs: CostBreakdown) -> list[str]:
    """'1 call at prompts > 128k' for each tier the calls fall in."""
    counts = {}
    for bill in costs.call_bills:
        counts[bill["tier"]] = counts.get(bill["tier"], 0) + 1
    return [f"{count} call{'s' if count > 1 else ''} at {tier}" for tier, count in counts.items()]
