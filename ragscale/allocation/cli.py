"""``ragscale allocate`` (the best (k, m, n) for a budget), ``ragscale bench allocation`` and
``ragscale bench fidelity`` (the paper's model against its Table 1). No plotting here: the page
benchmark (``bench allocation-page``) lives with the figures, in ``ragscale.plots.cli``."""

from __future__ import annotations

import json
import time

import numpy as np

from ragscale.allocation.context_length import STRATEGIES, TokenSizes
from ragscale.allocation.cost import CostModel, cost_breakdown, tier_summary
from ragscale.allocation.fidelity import (
    fidelity_findings,
    fidelity_markdown,
    fidelity_report,
    fidelity_rows,
    fidelity_summary,
    fidelity_table,
)
from ragscale.allocation.optimizer import DEFAULT_GRID, optimise, parse_budget
from ragscale.allocation.profiles import (
    GEMINI_15_FLASH_WINDOW,
    METRICS,
    PAPER_NAME,
    TABLE1_DATASETS,
    get_profile,
    paper_profile,
)
from ragscale.allocation.prices import DEFAULT_SHEET, PriceSheet, available_sheets, load_sheet
from ragscale.formatting import fmt_tokens, fmt_usd
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


COST_FLAGS = {"queries_per_day": "--queries-per-day", "cache_hit_fraction": "--cache-hit"}


def price_sheet(args) -> PriceSheet:
    """The sheet named by --prices, or flat rates when any --price-* flag is given (the others
    default to the sheet's first tier)."""
    sheet = load_sheet(args.prices)
    flat = (args.price_input, args.price_cached, args.price_output)
    if all(value is None for value in flat):
        return sheet
    first = sheet.tiers[0]
    rates = [given if given is not None else default
             for given, default in zip(flat, (first.input, first.cached_input, first.output))]
    for flag, value in zip(("--price-input", "--price-cached", "--price-output"), rates):
        if not np.isfinite(value) or value < 0:
            raise UserError(f"{flag} must be a non-negative number, got {value!r}")
    return PriceSheet.flat(*rates)


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
        cost = CostModel(prices=price_sheet(args), queries_per_day=args.queries_per_day,
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
        "price_sheet": {key: cost.prices.to_dict()[key] for key in ("provider", "model", "date", "source")},
        "call_bills": [bill for bill in costs.call_bills],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    unit = f"{profile.metric.upper()} on {profile.dataset}" if profile.dataset else "score"
    lines = [
        ("profile", profile.name), ("budget", f"{budget:,} tokens"),
        ("strategy", allocation.strategy), ("k documents", allocation.k), ("m demonstrations", allocation.m),
        ("n iterations", allocation.n), ("effective tokens", f"{allocation.effective_tokens:,}"),
        ("largest call", f"{allocation.largest_call_tokens:,} tokens of a "
                         + (f"{fmt_tokens(allocation.context_window)} window" if allocation.context_window
                            else "window the profile does not know (calls not bounded)")),
        ("predicted score", f"{allocation.predicted_score:.1f} ({unit})"),
        ("cost per query", f"{fmt_usd(costs.cost_per_query_usd)} ({', '.join(tier_summary(costs))})"),
        ("cost per month", f"${costs.cost_per_month_usd:,.2f} at {cost.queries_per_day:,.0f} queries/day"),
        ("latency", f"{costs.latency_s:.1f} s"),
        ("prices", f"{cost.prices.title}; source {cost.prices.source.split()[0]} (--json: the whole record)"),
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


def bench_fidelity(args) -> int:
    """The paper profile against the paper's Table 1: 4 datasets x 5 budgets (see allocation.fidelity)."""
    report = fidelity_report(args.metric)
    cells, summary = report["cells"], report["summary"]
    no_window = fidelity_summary(fidelity_table(fidelity_rows(args.metric, context_window=None)))
    compact = [{
        "dataset": c.dataset, "budget": c.budget, "model": c.model_strategy, "k": c.k, "m": c.m, "n": c.n,
        "largest_call": c.largest_call_tokens, "predicted": round(c.model_score, 1),
        "table": c.table_strategy, "table_best": c.table_best, "same_winner": bool(c.same_winner),
        "gap_points": round(c.gap_points, 1), "winner_share": round(c.winner_share, 3),
    } for c in cells.itertuples()]
    result = {
        "metric": args.metric, "profile": PAPER_NAME, "context_window": GEMINI_15_FLASH_WINDOW,
        **{key: value for key, value in summary.items()},
        "without_window": {key: no_window[key] for key in ("same_winner", "mean_gap_points", "mean_winner_share",
                                                            "model_picks")},
        "table": compact,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"Paper profile vs Yue et al. 2025 Table 1 ({args.metric.upper()}; context window "
          f"{GEMINI_15_FLASH_WINDOW:,} tokens per call)")
    print(fidelity_markdown(cells))
    for line in fidelity_findings(cells, report["rows"]):
        print(f"- {line}")
    return 0


def register(commands) -> None:
    parser = commands.add_parser("allocate", help="the best (k, m, n) for a token budget, and its cost")
    parser.add_argument("--budget", required=True,
                        help="effective-context budget per question: 16k, 128000, 1M, 1e6 (up to 1G tokens)")
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
    parser.add_argument("--prices", default=DEFAULT_SHEET,
                        help=f"price sheet: a name ({', '.join(available_sheets())}) or a YAML file; each call is "
                             "billed at the tier its own prompt length falls in")
    flat = "flat USD per 1M {} tokens for every prompt length, replacing the sheet's tiers (without it: the sheet)"
    parser.add_argument("--price-input", type=float, default=None, help=flat.format("input"))
    parser.add_argument("--price-cached", type=float, default=None, help=flat.format("cached input"))
    parser.add_argument("--price-output", type=float, default=None, help=flat.format("output"))
    parser.add_argument("--queries-per-day", type=float, default=CostModel.queries_per_day)
    parser.add_argument("--cache-hit", type=float, default=None,
                        help="fraction of input tokens served from cache (default: all cacheable tokens)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=allocate)


def register_bench(benches) -> None:
    parser = benches.add_parser("allocation", help="configurations the allocation optimiser evaluates per second")
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=bench)
    fidelity = benches.add_parser("fidelity", help="the paper's allocation model against its own Table 1 "
                                                   "(4 datasets x 5 budgets)")
    fidelity.add_argument("--metric", default="em", choices=METRICS, help="Table 1 metric to compare")
    fidelity.add_argument("--json", action="store_true", help="print one JSON object")
    fidelity.set_defaults(func=bench_fidelity)
