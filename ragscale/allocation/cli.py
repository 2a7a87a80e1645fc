"""``ragscale allocate`` (the best (k, m, n) for a budget) and ``ragscale bench allocation``."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ragscale.allocation.context_length import STRATEGIES, TokenSizes
from ragscale.allocation.cost import CostModel, cost_breakdown
from ragscale.allocation.optimizer import DEFAULT_GRID, optimise, parse_budget
from ragscale.allocation.profiles import METRICS, PAPER_NAME, TABLE1_DATASETS, get_profile, paper_profile
from ragscale.errors import UserError


def _sizes(pairs: list[str]) -> TokenSizes:
    values = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UserError(f"--size takes name=value (e.g. doc=150), got {pair!r}")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            raise UserError(f"--size {key.strip()} must be a number, got {value!r}") from None
    return TokenSizes.from_dict(values)


COST_FLAGS = {"price_input_per_m": "--price-input", "price_cached_per_m": "--price-cached",
              "price_output_per_m": "--price-output", "queries_per_day": "--queries-per-day",
              "cache_hit_fraction": "--cache-hit"}


def resolve_profile(name: str, dataset: str, metric: str, i_doc=None, i_shot=None):
    """``paper`` is read back on the chosen dataset/metric; other names come from available_profiles."""
    if name in ("paper", PAPER_NAME):
        return paper_profile(dataset, metric, i_doc, i_shot)
    return get_profile(name)


def allocate(args) -> int:
    budget = parse_budget(args.budget)
    profile = resolve_profile(args.profile, args.dataset, args.metric, args.i_doc, args.i_shot)
    sizes = _sizes(args.size)
    try:
        cost = CostModel(price_input_per_m=args.price_input, price_cached_per_m=args.price_cached,
                         price_output_per_m=args.price_output, queries_per_day=args.queries_per_day,
                         cache_hit_fraction=args.cache_hit)
    except UserError as exc:  # CostModel names its fields; a CLI user typed flags
        message = str(exc)
        for field, flag in COST_FLAGS.items():
            message = message.replace(field, flag)
        raise UserError(message) from None
    allocation = optimise(profile, budget, args.strategy, sizes)
    costs = cost_breakdown(allocation, sizes, cost)
    result = allocation.to_dict() | {
        "dataset": profile.dataset, "cost_per_query_usd": costs.cost_per_query_usd,
        "cost_per_month_usd": costs.cost_per_month_usd, "latency_s": costs.latency_s,
        "input_tokens": costs.input_tokens, "cached_input_tokens": costs.cached_input_tokens,
        "output_tokens": costs.output_tokens, "calls": costs.calls,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    unit = f"{profile.metric.upper()} on {profile.dataset}" if profile.dataset else "score"
    lines = [
        ("profile", profile.name), ("budget", f"{budget:,} tokens"),
        ("strategy", allocation.strategy), ("k documents", allocation.k), ("m demonstrations", allocation.m),
        ("n iterations", allocation.n), ("effective tokens", f"{allocation.effective_tokens:,}"),
        ("predicted score", f"{allocation.predicted_score:.1f} ({unit})"),
        ("cost per query", f"${costs.cost_per_query_usd:.5f}"),
        ("cost per month", f"${costs.cost_per_month_usd:,.2f} at {cost.queries_per_day:,.0f} queries/day"),
        ("latency", f"{costs.latency_s:.1f} s"),
    ]
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"{name:<{width}}  {value}")
    return 0


def bench(args) -> int:
    """Time one optimise() over the dense default grid (every strategy); the median of repeats."""
    profile = paper_profile()
    configs = DEFAULT_GRID.size()
    optimise(profile, "128k")  # warm-up: imports and numpy's first-call costs
    times = []
    for budget in np.geomspace(16_000, 5_000_000, args.repeats).astype(int):
        start = time.perf_counter()
        optimise(profile, int(budget))
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    result = {"configs": configs, "seconds": round(seconds, 6), "configs_per_second": round(configs / seconds),
              "repeats": args.repeats, "max_seconds": round(max(times), 6)}
    print(json.dumps(result) if args.json else
          f"{configs:,} configurations in {seconds * 1000:.1f} ms (median of {args.repeats}) "
          f"= {configs / seconds:,.0f} configs/s")
    return 0


def bench_page(args) -> int:
    """Time what one calculator interaction computes when nothing is cached (worst case): all six
    optima and cost breakdowns, the frontier over 80 budgets, and the three figures."""
    from ragscale.allocation.optimizer import frontier
    from ragscale.allocation.profiles import load_table1
    from ragscale.plots.allocation import cost_figure, frontier_figure, heatmap_figure
    from ragscale.allocation.model import AllocationModel

    sizes, cost = TokenSizes(), CostModel()
    budgets = np.unique(np.geomspace(1_000, 10_000_000, 80).astype(int))
    k_axis = np.unique(np.concatenate([[0], np.round(np.geomspace(1, 1000, 60))]))
    m_axis = np.unique(np.concatenate([np.arange(9), np.round(np.geomspace(8, 256, 25))]))

    def interaction(budget: int) -> None:
        profile = paper_profile()
        model = AllocationModel.from_profile(profile)
        best = optimise(profile, budget, "auto", sizes)
        bars = [("chosen", cost_breakdown(best, sizes, cost))]
        for name in STRATEGIES:
            bars.append((name, cost_breakdown(optimise(profile, budget, name, sizes), sizes, cost)))
        table = frontier(model, budgets, list(STRATEGIES) + ["auto"], sizes)
        frontier_figure(table, budget, load_table1(), "em", "hotpotqa", best.to_dict())
        heatmap_figure(model, "drag", 1, sizes, budget, k_axis, m_axis, best.to_dict())
        cost_figure(bars)

    interaction(128_000)  # warm-up
    times = []
    for budget in np.geomspace(16_000, 5_000_000, args.repeats).astype(int):
        start = time.perf_counter()
        interaction(int(budget))
        times.append(time.perf_counter() - start)
    result = {"seconds_median": round(float(np.median(times)), 4), "seconds_max": round(max(times), 4),
              "repeats": args.repeats}
    print(json.dumps(result) if args.json else
          f"one uncached calculator interaction: {result['seconds_median'] * 1000:.0f} ms median, "
          f"{result['seconds_max'] * 1000:.0f} ms max")
    return 0


def register(commands) -> None:
    parser = commands.add_parser("allocate", help="the best (k, m, n) for a token budget, and its cost",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--budget", required=True, help="effective-context budget per question: 16k, 128000, 1M")
    parser.add_argument("--profile", default="paper", help="'paper', a fitted profile's name, or a profile .json")
    parser.add_argument("--strategy", default="auto", choices=("auto",) + STRATEGIES)
    parser.add_argument("--dataset", default="hotpotqa", choices=TABLE1_DATASETS,
                        help="paper profile: which Table 1 dataset its scores are read back on")
    parser.add_argument("--metric", default="em", choices=METRICS, help="paper profile: em, f1 or acc")
    parser.add_argument("--i-doc", type=float, default=None, help="override the profile's i_doc")
    parser.add_argument("--i-shot", type=float, default=None, help="override the profile's i_shot")
    parser.add_argument("--size", action="append", metavar="NAME=TOKENS",
                        help="token size override, repeatable: doc, question, answer, subquery, intermediate, "
                             "instruction, demo_steps")
    defaults = CostModel()
    parser.add_argument("--price-input", type=float, default=defaults.price_input_per_m, help="USD per 1M input")
    parser.add_argument("--price-cached", type=float, default=defaults.price_cached_per_m, help="USD per 1M cached")
    parser.add_argument("--price-output", type=float, default=defaults.price_output_per_m, help="USD per 1M output")
    parser.add_argument("--queries-per-day", type=float, default=defaults.queries_per_day)
    parser.add_argument("--cache-hit", type=float, default=None,
                        help="fraction of input tokens served from cache (default: all cacheable tokens)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=allocate)


def register_bench(benches) -> None:
    parser = benches.add_parser("allocation", help="configurations the allocation optimiser evaluates per second")
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=bench)
    page = benches.add_parser("allocation-page", help="seconds one uncached allocation-calculator interaction computes")
    page.add_argument("--repeats", type=int, default=10)
    page.add_argument("--json", action="store_true")
    page.set_defaults(func=bench_page)
