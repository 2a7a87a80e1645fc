"""``ragscale bench allocation-page``: what one calculator interaction computes, figures included.

It lives with the figures so that ``ragscale.allocation`` stays free of plotting; plotly is imported
only when the benchmark runs, so other commands do not pay for it at start-up.
"""

from __future__ import annotations

import json
import time

import numpy as np


def bench_page(args) -> int:
    """Time what one calculator interaction computes when nothing is cached (worst case): the page's
    ``calculate`` (all six optima, the window check, per-call bills, the last point's frontier), the
    frontier over 80 budgets, and the three figures."""
    from ragscale.allocation import (
        STRATEGIES,
        AllocationModel,
        CostModel,
        TokenSizes,
        frontier,
        load_table1,
        paper_profile,
    )
    from ragscale.allocation.calculator import calculate
    from ragscale.plots.allocation import (
        FRONTIER_BUDGETS,
        HEATMAP_K,
        HEATMAP_M,
        cost_figure,
        frontier_figure,
        heatmap_figure,
    )

    sizes, cost = TokenSizes(), CostModel()

    def interaction(budget: int) -> None:
        profile = paper_profile()
        model = AllocationModel.from_profile(profile)
        calc = calculate(profile, budget, "auto", sizes, cost)  # what the page computes: pick, bills, last point
        best = calc.chosen
        bars = [("chosen", calc.costs)] + [(name, option_cost) for name, (_, option_cost) in calc.per_strategy.items()]
        table = frontier(model, FRONTIER_BUDGETS, list(STRATEGIES) + ["auto"], sizes)
        frontier_figure(table, budget, load_table1(), "em", "hotpotqa", best.to_dict(),
                        context_window=profile.context_window, compact=True)
        heatmap_figure(model, "drag", 1, sizes, budget, HEATMAP_K, HEATMAP_M, best.to_dict())
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


def register_bench(benches) -> None:
    page = benches.add_parser("allocation-page", help="seconds one uncached allocation-calculator interaction computes")
    page.add_argument("--repeats", type=int, default=10)
    page.add_argument("--json", action="store_true")
    page.set_defaults(func=bench_page)
