"""``ragscale bench allocation-page``: what one calculator interaction computes, figures included.

It lives with the figures so that ``ragscale.allocation`` stays free of plotting; plotly is imported
only when the benchmark runs, so other commands do not pay for it at start-up.
"""

from __future__ import annotations

import json
import time

import numpy as np


def bench_page(args) -> int:
    """Time what one calculator interaction computes when nothing is cached (worst case): all six
    optima and cost breakdowns, the frontier over 80 budgets, and the three figures."""
    from ragscale.allocation import (
        STRATEGIES,
        AllocationModel,
        CostModel,
        TokenSizes,
        cost_breakdown,
        frontier,
        load_table1,
        optimise,
        paper_profile,
    )
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
        best = optimise(profile, budget, "auto", sizes)
        bars = [("chosen", cost_breakdown(best, sizes, cost))]
        for name in STRATEGIES:
            bars.append((name, cost_breakdown(optimise(profile, budget, name, sizes), sizes, cost)))
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
