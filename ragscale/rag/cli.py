"""`ragscale sweep | fit | report` and `ragscale bench sweep`."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ragscale.commandline import csv_list, progress_bar, with_run_cost
from ragscale.engines.options import add_engine_args, engine_from_args
from ragscale.errors import UserError
from ragscale.retrieval.options import add_retrieval_args, retriever_settings_from_args

HOTPOT_SAMPLE = "hotpotqa_sample70.json"


def _ints(text: str, name: str) -> tuple[int, ...]:
    from ragscale.rag.sweep import parse_int_list

    return parse_int_list(text, f"--{name}")


def _print_summary(summary: dict, as_json: bool) -> None:
    """One JSON object, or the same keys as an aligned listing for people."""
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    width = max(map(len, summary))
    for key, value in summary.items():
        print(f"{key:>{width}}: {value}")


def cmd_sweep(args) -> int:
    # Every check that needs no model comes first: flags, dataset, engine choice, results file.
    from ragscale.datasets import load_dataset
    from ragscale.engines import make_engine
    from ragscale.engines.options import spec_from_args
    from ragscale.rag.sweep import SweepSpec, run_sweep, split_for
    from ragscale.store import ResultsStore

    spec = SweepSpec(
        dataset=args.dataset, strategies=tuple(csv_list(args.strategies, "--strategies")),
        ks=_ints(args.k, "k"), ms=_ints(args.m, "m"), ns=_ints(args.n, "n"), limit=args.limit,
        pool_size=args.pool_size, batch_size=args.batch_size, generate_chains=not args.no_chains,
    )
    dataset = load_dataset(args.dataset)
    split_for(spec, dataset)
    retriever_settings_from_args(args)  # an unreachable --chroma-url fails before a model loads
    engine_spec = spec_from_args(args)
    store = ResultsStore(args.out)  # not a store, damaged or read-only: refused here
    with store.discarded_if_unused():
        engine = make_engine(engine_spec)
        bar, progress = progress_bar("sweep", unit="row")
        with bar:
            result = run_sweep(spec, engine, store, dataset=dataset, progress=progress)
    summary = {
        "out": str(args.out), "dataset": result.dataset, "model": result.model,
        "configurations": result.configurations, "questions": result.questions,
        "rows_total": result.rows_total, "rows_written": result.rows_written,
        "rows_already_done": result.rows_already_done, "rows_skipped_over_context": result.rows_skipped_over_context,
        "seconds": round(result.seconds, 1), "demonstration_chains": result.chain_note,
    }
    _print_summary(with_run_cost(summary, engine, args.json), args.json)
    return 0


def cmd_fit(args) -> int:
    from ragscale.rag.sweep import config_table, fit_allocation, load_rows

    table = config_table(load_rows(args.results), args.metric)
    if args.dataset:
        if args.dataset not in set(table["dataset"]):
            raise UserError(f"--dataset {args.dataset!r}: {args.results} holds "
                            f"{', '.join(sorted(set(table['dataset']))) or 'no RAG results'}")
        table = table[table["dataset"] == args.dataset]
    # Several datasets: i is measured per dataset and one model is shared, as in the paper.
    model = fit_allocation(table, args.sigmoid)
    out = {
        "metric": args.metric, "sigmoid": args.sigmoid, "configurations": int(model.n_rows_),
        "a": [round(float(x), 4) for x in model.a_], "b": [round(float(x), 4) for x in model.b_],
        "c": round(float(model.c_), 4), "i_doc": round(model.i_doc_, 4), "i_shot": round(model.i_shot_, 4),
        "r2": None if model.r2_ != model.r2_ else round(model.r2_, 4), "mse": round(model.mse_, 4),
        "datasets": sorted(table["dataset"].unique().tolist()),
    }
    _print_summary(out, args.json)
    return 0


def cmd_report(args) -> int:
    from ragscale.rag.sweep import best_per_budget, config_table, load_rows

    table = config_table(load_rows(args.results), args.metric)
    if table.empty:
        raise UserError(f"{args.results} holds no RAG results yet")
    budgets = _ints(args.budgets, "budgets") if args.budgets else None
    if budgets and min(budgets) < 1:
        raise UserError(f"--budgets are token counts >= 1; got {min(budgets)}")
    parts = []
    for dataset, group in table.groupby("dataset"):
        best = best_per_budget(group, budgets)
        best.insert(0, "dataset", dataset)
        parts.append(best)
    import pandas as pd

    report = pd.concat(parts, ignore_index=True)
    if args.json:
        print(report.to_json(orient="records", indent=2))
    else:
        print(f"best configuration per budget (metric {args.metric}; a configuration fits a budget when "
              "every question's effective context length does)")
        print(report.astype(object).where(report.notna(), "-").to_string(index=False))
    return 0


def cmd_bench_sweep(args) -> int:
    """A small DRAG sweep with the prefix cache on, then off, on the same questions and index."""
    from ragscale.config import SHARED_DATASETS_DIR
    from ragscale.datasets import load_dataset
    from ragscale.retrieval import build_retriever
    from ragscale.rag.sweep import SweepSpec, load_rows, run_sweep
    from ragscale.store import ResultsStore

    dataset = load_dataset(args.dataset or SHARED_DATASETS_DIR / HOTPOT_SAMPLE)
    retriever = build_retriever(dataset)
    spec = SweepSpec(dataset=dataset.source, strategies=("drag",), ks=_ints(args.k, "k"), ms=_ints(args.m, "m"),
                     ns=(1,), limit=args.limit, pool_size=max(_ints(args.m, "m")), generate_chains=False,
                     batch_size=args.batch_size)
    seconds, rows = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, cache in (("on", True), ("off", False)):
            engine = engine_from_args(args, prefix_cache=cache)
            store = ResultsStore(Path(tmp) / f"cache_{label}.sqlite")
            started = time.perf_counter()
            run_sweep(spec, engine, store, dataset=dataset, retriever=retriever)
            seconds[label] = time.perf_counter() - started
            rows[label] = load_rows(store)
            engine.close()
    on = rows["on"]
    same = (on.sort_values("key")["prediction"].tolist() == rows["off"].sort_values("key")["prediction"].tolist())
    out = {
        "questions": int(on["qid"].nunique()),
        "configurations": int(on.groupby(["k", "m"]).ngroups),
        "calls": int(on["calls"].sum()),
        "prompt_tokens": int(on["effective_length"].sum()),
        "seconds_cache_on": round(seconds["on"], 2),
        "seconds_cache_off": round(seconds["off"], 2),
        "speedup": round(seconds["off"] / seconds["on"], 2),
        "cache_hit_fraction": round(float(on["cached_tokens"].sum() / on["effective_length"].sum()), 4),
        "same_predictions": bool(same),
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))  # --json: one line
    return 0


def register(commands) -> None:
    sweep = commands.add_parser("sweep", help="run a DRAG/IterDRAG grid and store every per-question result")
    sweep.add_argument("--dataset", default="demo", help="a dataset file, a shared sample name, or 'demo'")
    sweep.add_argument("--strategies", default="rag,drag,iterdrag",
                       help="comma-separated: zero-shot, many-shot, rag, drag, iterdrag")
    sweep.add_argument("--k", default="0,1,2,5", help="retrieved documents per query")
    sweep.add_argument("--m", default="0,1,2", help="in-context demonstrations")
    sweep.add_argument("--n", default="1,2,3", help="IterDRAG maximum iterations")
    sweep.add_argument("--limit", type=int, default=30, help="test questions")
    sweep.add_argument("--pool-size", type=int, default=8, help="demonstration pool questions")
    sweep.add_argument("--batch-size", type=int, default=8, help="questions sent to the engine together")
    sweep.add_argument("--no-chains", action="store_true",
                       help="IterDRAG demonstrations from gold decompositions, without generating chains")
    add_engine_args(sweep)
    add_retrieval_args(sweep)
    sweep.add_argument("--out", default="results.sqlite", help="SQLite results store; an existing one is resumed")
    sweep.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    sweep.set_defaults(func=cmd_sweep)

    fit = commands.add_parser("fit", help="fit the allocation model to sweep results")
    fit.add_argument("--results", required=True, help="results store written by `ragscale sweep --out`")
    fit.add_argument("--metric", choices=("acc", "em", "f1"), default="acc",
                     help="score to fit: acc = a gold answer appears in the prediction, em = exact match, "
                          "f1 = token F1")
    fit.add_argument("--sigmoid", choices=("paper", "logistic"), default="paper",
                     help="paper: the paper's fitted sigmoid on per-dataset z-scored scores; logistic: the plain "
                          "logistic on the score as a fraction")
    fit.add_argument("--dataset", help="fit only this dataset's rows (by its name in the store)")
    fit.add_argument("--json", action="store_true", help="print one JSON object")
    fit.set_defaults(func=cmd_fit)

    report = commands.add_parser("report", help="best configuration per budget per strategy")
    report.add_argument("--results", required=True, help="results store written by `ragscale sweep --out`")
    report.add_argument("--metric", choices=("acc", "em", "f1"), default="acc",
                        help="score to rank configurations by: acc, em or f1, as for fit")
    report.add_argument("--budgets", help="comma-separated token budgets per question "
                                          "(default: 1-2-5 steps up to the largest run)")
    report.add_argument("--json", action="store_true", help="print a JSON list of rows")
    report.set_defaults(func=cmd_report)


def bench_demo_reach(args) -> int:
    from ragscale.datasets import load_dataset
    from ragscale.rag.reach import retrieval_reach
    from ragscale.retrieval import build_retriever

    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be >= 1")
    dataset = load_dataset(args.dataset)
    questions = dataset.questions[: args.limit] if args.limit else dataset.questions
    started = time.perf_counter()
    reach = retrieval_reach(questions, build_retriever(dataset))
    summary = {"bench": "demo-reach", "dataset": dataset.name, "questions": len(questions),
               "passages": len(dataset.corpus), "by_hops": reach, "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(summary) if args.json else json.dumps(summary, indent=2))
    return 0


def register_bench(benches) -> None:
    reach = benches.add_parser("demo-reach", help="where a question's supporting passages rank when the question "
                                                  "is the query, per hop count (what more documents can reach)")
    reach.add_argument("--dataset", default="demo", help="dataset name or file (default: demo)")
    reach.add_argument("--limit", type=int, default=None, help="first N test questions (default: all)")
    reach.add_argument("--json", action="store_true", help="print one JSON line")
    reach.set_defaults(func=bench_demo_reach)
    bench = benches.add_parser("sweep", help="DRAG sweep with the prefix cache on and off")
    bench.add_argument("--dataset", help=f"default: the shared {HOTPOT_SAMPLE}")
    bench.add_argument("--k", default="2")
    bench.add_argument("--m", default="2")
    bench.add_argument("--limit", type=int, default=6)
    bench.add_argument("--batch-size", type=int, default=8)
    add_engine_args(bench, choose_engine=False)
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench_sweep)
