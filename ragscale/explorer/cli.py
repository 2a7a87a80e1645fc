"""`ragscale explorer-precompute` (the tree library), `bench explorer` and `bench explorer-live`."""

from __future__ import annotations

import json
import os
import time

from ragscale.engines.options import add_engine_args, engine_from_args, spec_from_args
from ragscale.errors import UserError
from ragscale.explorer.library import ARITHMETIC_WIDTHS, GRID_SHAPES, GRID_WIDTHS, SHIPPED_TREES, task_of
from ragscale.explorer.state import DEFAULT, POLICIES, opening_view
from ragscale.commandline import csv_list, progress_bar
from ragscale.retrieval.options import add_retrieval_args, retriever_settings_from_args


def _shapes(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for part in csv_list(text, "--shapes"):
        try:
            k, m, n = (int(v) for v in part.split(":"))
        except ValueError:
            raise UserError(f"--shapes takes k:m:n triples like 2:1:2,5:1:2; got {part!r}") from None
        if k < 1 or m < 0 or not 1 <= n <= 5:
            raise UserError(f"--shapes: k >= 1, m >= 0 and 1 <= n <= 5 (tree depth n + 1); got {part!r}")
        shapes.append((k, m, n))
    return shapes


def cmd_precompute(args) -> int:
    # On a shared, busy CPU the engine drops to the threads that have a core (spare_cores):
    # spinning OpenMP threads against a busy process cost a precompute 3.5x (917 s vs 264 s for
    # one tree at load ~12).
    from ragscale.explorer.precompute import grid, library_size, pick_questions, precompute, sweep_trees
    from ragscale.search.builder import load_questions
    from ragscale.explorer.library import TreeLibrary
    from ragscale.search.results import BUNDLED_SEARCH_SWEEP, load_sweep_records

    policies = csv_list(args.policies, "--policies")
    bad = [p for p in policies if p not in POLICIES]
    if bad:
        raise UserError(f"--policies takes a comma-separated subset of {', '.join(POLICIES)}; got {args.policies!r}")
    task = task_of(args.dataset)
    default_widths = GRID_WIDTHS if task == "qa" else ARITHMETIC_WIDTHS
    widths = csv_list(args.widths or ",".join(map(str, default_widths)), "--widths", int, minimum=1)
    if max(widths) > 64:
        raise UserError("--widths: the Explorer's width slider stops at 64")
    if task != "qa" and args.shapes:
        raise UserError(f"--shapes: {args.dataset} trees have no documents, demonstrations or iterations")
    shapes = _shapes(args.shapes or ",".join(f"{k}:{m}:{n}" for k, m, n in GRID_SHAPES)) if task == "qa" else [(0, 0, 0)]
    if args.questions < 1:
        raise UserError(f"--questions must be >= 1; got {args.questions}")
    if args.minutes is not None and args.minutes <= 0:
        raise UserError("--minutes must be > 0")
    dataset = load_questions(task, args.dataset)  # bad input fails before a model loads
    if args.question and args.question not in {q.qid for q in dataset.questions}:
        raise UserError(f"no question {args.question!r} in {dataset.name}")
    questions = [q.qid for q in pick_questions(dataset, args.questions, args.question or "")]
    keys = list(grid(dataset.name, questions, policies, widths, shapes))
    retriever_settings_from_args(args)  # an unreachable --chroma-url fails before a model loads
    # Trees the search sweep already made are copied, not searched again (unless --force).
    sweep = BUNDLED_SEARCH_SWEEP if args.from_sweep is None else args.from_sweep
    from_sweep = {} if args.force or not sweep else sweep_trees(load_sweep_records(sweep), dataset.name)
    stored = {} if args.force else TreeLibrary(args.out).index()
    to_search = [key for key in keys if key not in stored and key not in from_sweep]
    engine = engine_from_args(args) if to_search else None  # no model for a library that needs no search

    bar, progress = progress_bar("tree library")
    deadline = None if args.minutes is None else time.time() + 60 * args.minutes
    try:
        summary = precompute(engine, dataset, keys, out=args.out, skip_existing=not args.force, progress=progress,
                             deadline=deadline, from_sweep=from_sweep)
    finally:
        bar.close()
    out = {"dataset": dataset.name, "questions": questions, "policies": policies, "widths": widths,
           "shapes_kmn": [list(s) for s in shapes], "grid_trees": len(keys), **summary.to_dict(),
           "library": library_size(args.out), "load_1min": round(os.getloadavg()[0], 2),
           "complete": summary.trees + summary.skipped + summary.reused == len(keys)}
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


def register(commands) -> None:
    parser = commands.add_parser(
        "explorer-precompute",
        help="fill the Explorer's tree library: every policy x width x (k, m, n) x question (resumable)")
    parser.add_argument("--dataset", default="demo",
                        help="'demo' or a QA file (IterDRAG trees), or 'arithmetic' (the search task)")
    parser.add_argument("--questions", type=int, default=3, help="how many questions (multi-hop first)")
    parser.add_argument("--question", help="the question to put first (default: the first multi-hop question)")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated policies")
    parser.add_argument("--widths", help="comma-separated search widths (default: "
                        f"{','.join(map(str, GRID_WIDTHS))}; arithmetic: {','.join(map(str, ARITHMETIC_WIDTHS))})")
    parser.add_argument("--shapes", help="QA only: comma-separated k:m:n (documents per step, demonstrations, "
                        f"IterDRAG iterations; default: {','.join(f'{k}:{m}:{n}' for k, m, n in GRID_SHAPES)})")
    parser.add_argument("--from-sweep", help="a search-sweep store whose trees with the library's settings are "
                        "copied, not searched (default: the bundled data/search_results.sqlite; '' for none)")
    parser.add_argument("--out", default=str(SHIPPED_TREES), help="the library folder")
    parser.add_argument("--minutes", type=float, help="stop after this long, between two trees (resume later)")
    parser.add_argument("--force", action="store_true",
                        help="search every tree again (ignore the library's trees and the sweep's)")
    add_engine_args(parser)
    add_retrieval_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.set_defaults(func=cmd_precompute)


def cmd_bench(args) -> int:
    """Uncached cost of what one slider move recomputes (the page caches figures as well)."""
    import random

    import numpy as np

    from ragscale.explorer import screen as S
    from ragscale.explorer.state import STRATEGIES
    from ragscale.plots.explorer import curves_figure
    from ragscale.plots.tree import tree_figure

    library = S.default_library()
    rng = random.Random(0)
    budgets = [1_000 * 2 ** i for i in range(14)]
    parts: dict[str, list[float]] = {name: [] for name in ("screen", "curve_figure", "tree_figure")}
    totals = []
    for i in range(args.states + 1):  # the first is a warm-up (imports, first figure): not counted
        state = DEFAULT.with_(budget=rng.choice(budgets), pinned=rng.random() < 0.5, strategy=rng.choice(STRATEGIES),
                              policy=rng.choice(POLICIES), width=rng.choice([1, 2, 4, 8, 16]),
                              k=rng.randint(1, 20), n=rng.randint(1, 5))
        start = time.perf_counter()
        screen = S.explorer(state, library)
        t1 = time.perf_counter()
        c = screen.curves
        curves_figure(c, screen.state.budget, screen.allocation.to_dict())
        t2 = time.perf_counter()
        if screen.tree.record:
            tree_figure(screen.tree.record["tree"], focus=1)
        t3 = time.perf_counter()
        if i:
            for name, seconds in zip(parts, (t1 - start, t2 - t1, t3 - t2)):
                parts[name].append(seconds * 1000)
            totals.append((t3 - start) * 1000)
    median = lambda values: round(float(np.percentile(values, 50)), 1) if values else None  # noqa: E731
    out = {"states": len(totals), "cached": False, "trees_available": len(library.index()),
           "p50_ms": median(totals), "p95_ms": round(float(np.percentile(totals, 95)), 1),
           "max_ms": round(max(totals), 1), "target_ms": 300, "load_1min": round(os.getloadavg()[0], 2),
           "p50_ms_by_part": {name: median(values) for name, values in parts.items()}}
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))  # --json: one line
    return 0


def cmd_bench_live(args) -> int:
    """A live run of the Explorer's opening view, with the engine and index warmed first, as the
    app runs it: the engine's threads follow the cores other processes leave free (``spare_cores``;
    ``--threads`` fixes them), OpenMP's own wait policy (``OMP_WAIT_POLICY`` overrides it)."""
    from ragscale.explorer import live
    from ragscale.explorer import screen as S
    from ragscale.explorer.library import task_of, tree_key

    spec = spec_from_args(args)
    retriever_settings_from_args(args)
    # The opening view (or its configuration in another world): its question and configuration.
    screen = S.explorer(opening_view(args.dataset or DEFAULT.dataset))
    state, question = screen.state, screen.question
    key = tree_key(state.dataset, question.qid, args.policy or state.policy, args.width or state.width,
                   state.n, state.k, state.m)
    started = time.perf_counter()
    engine = live.shared_engine(spec)
    dataset = S.load_dataset(state.dataset)
    if task_of(state.dataset) == "qa":
        live.shared_retriever(dataset)
    from ragscale.retrieval import embed_texts

    embed_texts(["warm up"])
    from ragscale.engines import SamplingParams

    engine.generate(["Hello"], SamplingParams(max_new_tokens=2))
    warmup = time.perf_counter() - started

    runs = []
    for _ in range(args.repeat):
        # Cold prefix cache every time, as a room's first run of a question: a repeat would
        # otherwise reuse the question's prompt pages (measured: 9-10 s against 12 s cold).
        engine.flush_cache()
        first: list[float] = []
        steps: list[float] = []
        generate = engine.generate

        def timed(*a, **kw):  # the engine returns whole generations: the first one is the first text
            out = generate(*a, **kw)
            if not first:
                first.append(time.perf_counter())
            return out

        engine.generate = timed
        begin = time.perf_counter()
        try:
            record = live.run_tree(engine, dataset, question, key,
                                   on_step=lambda report: steps.append(time.perf_counter()))
        finally:
            del engine.generate  # back to the class's method
        seconds = time.perf_counter() - begin
        runs.append({"seconds": seconds, "first_token_s": (first[0] - begin) if first else None,
                     "first_step_s": (steps[0] - begin) if steps else None,
                     "tokens_generated": record["tokens_generated"], "nodes": record["nodes"],
                     "correct": record["correct"]})
    best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]  # the median run
    out = {"seconds": round(best["seconds"], 3), "first_token_s": round(best["first_token_s"] or 0, 3),
           "tokens_per_second": round(best["tokens_generated"] / best["seconds"], 1),
           "first_step_s": round(best["first_step_s"] or 0, 3), "nodes": best["nodes"],
           "tokens_generated": best["tokens_generated"], "correct": best["correct"], "runs": len(runs),
           "all_seconds": [round(r["seconds"], 2) for r in runs], "warmup_s": round(warmup, 2),
           "key": key.to_dict(), "model": engine.info.model, "engine": engine.info.kind,
           "target_s": 10 if state.dataset != DEFAULT.dataset else 3,  # issue #25: the opening view 3 s, demo QA 10 s
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
           "threads_last_call": _engine_threads(), "load_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


def _engine_threads() -> int:
    import torch

    return torch.get_num_threads()


def register_bench(benches) -> None:
    bench = benches.add_parser("explorer", help="uncached time of one Explorer update (no model call)")
    bench.add_argument("--states", type=int, default=40, help="random views to time")
    bench.add_argument("--json", action="store_true", help="print one JSON line")
    bench.set_defaults(func=cmd_bench)

    live = benches.add_parser("explorer-live",
                              help="one live run of the Explorer's opening view, engine and index warmed first")
    live.add_argument("--repeat", type=int, default=1, help="runs; the median is reported")
    live.add_argument("--dataset", help=f"another world than the opening view's ({DEFAULT.dataset}), e.g. demo")
    live.add_argument("--policy", choices=POLICIES, help="another policy than the default view's")
    live.add_argument("--width", type=int, help="another width than the default view's")
    add_engine_args(live)
    add_retrieval_args(live)
    live.add_argument("--json", action="store_true", help="print one JSON line")
    live.set_defaults(func=cmd_bench_live)
