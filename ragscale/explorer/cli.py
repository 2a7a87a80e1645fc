"""`ragscale explorer-precompute`: the trees the Explorer ships for its default view."""

from __future__ import annotations

import argparse
import json
import sys

from ragscale.engines.options import add_engine_args, engine_from_args
from ragscale.errors import UserError
from ragscale.retrieval.options import add_retrieval_args, retriever_settings_from_args
from ragscale.explorer.state import DEFAULT, POLICIES


def cmd_precompute(args) -> int:
    import os

    # On a shared, busy CPU, OpenMP threads that spin at every barrier burn the time the other
    # thread needs: here (load ~12 on 2 cores) the default ETS tree took 917 s, with the passive
    # policy 264 s. Must be set before torch loads; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ragscale.datasets.loaders import load_dataset
    from ragscale.explorer.precompute import precompute

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    bad = [p for p in policies if p not in POLICIES]
    if bad or not policies:
        raise UserError(f"--policies takes a comma-separated subset of {', '.join(POLICIES)}; got {args.policies!r}")
    try:
        state = DEFAULT.with_(dataset=args.dataset, width=args.width, n=args.n, k=args.k, m=args.m, pinned=True)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    dataset = load_dataset(args.dataset)  # bad input fails before a model loads
    retriever_settings_from_args(args)
    engine = engine_from_args(args)

    from tqdm import tqdm

    bar = tqdm(total=len(policies), desc="explorer trees", file=sys.stderr)

    def progress(done: int, total: int, message: str = "") -> None:
        bar.n = done
        bar.set_postfix_str(message[:60], refresh=True)

    try:
        summaries = precompute(engine, dataset, state, policies, out=args.out, question=args.question or "",
                               skip_existing=not args.force, progress=progress)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(summaries, indent=2))
    else:
        for s in summaries:
            print(json.dumps(s))
    return 0


def register(commands) -> None:
    from ragscale.explorer.view import SHIPPED_TREES

    parser = commands.add_parser(
        "explorer-precompute", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="search the Explorer's default question with every policy and store the trees it ships")
    parser.add_argument("--dataset", default=DEFAULT.dataset)
    parser.add_argument("--question", help="question id (default: the first multi-hop question)")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--width", type=int, default=DEFAULT.width)
    parser.add_argument("--n", type=int, default=DEFAULT.n, help="IterDRAG iterations (tree depth n + 1)")
    parser.add_argument("--k", type=int, default=DEFAULT.k, help="documents retrieved per step")
    parser.add_argument("--m", type=int, default=DEFAULT.m, help="demonstrations (part of the key)")
    parser.add_argument("--out", default=str(SHIPPED_TREES))
    parser.add_argument("--force", action="store_true", help="recompute trees that already exist")
    add_engine_args(parser)
    add_retrieval_args(parser)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=cmd_precompute)


def cmd_bench(args) -> int:
    """Uncached cost of what one slider move recomputes (the page caches most of it)."""
    import random
    import time

    import numpy as np

    from ragscale.explorer import state as S
    from ragscale.explorer import view as V
    from ragscale.plots.explorer import explorer_curve_figure, observed_traces
    from ragscale.plots.tree import tree_figure

    model = V.paper_model()
    table = V.observed_table(V.observed_rows(), args.dataset)  # cached per dataset on the page
    points = observed_traces(table)  # the page builds these once per dataset
    library = V.default_library()
    rng = random.Random(0)
    budgets = [1_000 * 2 ** i for i in range(14)]
    parts: dict[str, list[float]] = {name: [] for name in (
        "allocation", "curve", "tree_lookup", "figures", "curve_figure", "tree_figure")}
    totals = []
    for i in range(args.states + 1):  # the first is a warm-up (imports, first figure): not counted
        state = S.DEFAULT.with_(budget=rng.choice(budgets), pinned=rng.random() < 0.5,
                                strategy=rng.choice(S.STRATEGIES), policy=rng.choice(S.POLICIES),
                                width=rng.choice([2, 4, 8, 16]), k=rng.randint(1, 20), n=rng.randint(1, 5))
        clock = [time.perf_counter()]

        def lap(name: str) -> None:
            clock.append(time.perf_counter())
            parts[name].append((clock[-1] - clock[-2]) * 1000)

        allocation, _ = V.current_allocation(state, model)
        state = V.apply_allocation(state, allocation)
        lap("allocation")
        curve = V.predicted_curve(model, state.strategy)  # the page caches this per profile and strategy
        lap("curve")
        shown, _ = library.nearest(V.tree_key(state, args.question))
        record = library.load(shown) if shown else None
        lap("tree_lookup")
        V.figures(state, allocation, record, None, table)
        lap("figures")
        explorer_curve_figure(curve, state.budget, allocation.to_dict(), points)
        lap("curve_figure")
        if record:
            tree_figure(record["tree"], focus=1)
        lap("tree_figure")
        totals.append((clock[-1] - clock[0]) * 1000)
        if i == 0:
            totals.clear()
            for values in parts.values():
                values.clear()
    median = lambda values: round(float(np.percentile(values, 50)), 1) if values else None  # noqa: E731
    out = {"states": len(totals), "cached": False, "trees_available": len(library.index()),
           "p50_ms": median(totals), "p95_ms": round(float(np.percentile(totals, 95)), 1),
           "max_ms": round(max(totals), 1), "target_ms": 300,
           "p50_ms_by_part": {name: median(values) for name, values in parts.items()}}
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))  # --json: one line
    return 0


def register_bench(benches) -> None:
    bench = benches.add_parser("explorer", help="uncached time of one Explorer update (no model call)",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bench.add_argument("--states", type=int, default=40)
    bench.add_argument("--dataset", default="demo")
    bench.add_argument("--question", default="demo-test-2hop-000")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)
