"""`ragscale search`, `ragscale search-sweep` and `ragscale bench kv`.

Every flag of a search setting is generated from ``SearchConfig``'s fields (their help lives
there); searches are assembled by ``ragscale.search.builder``. Each command checks all of its
input before it loads a model or builds an index.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from ragscale.commandline import csv_list, progress_bar, with_run_cost
from ragscale.engines.options import add_engine_args, engine_from_args
from ragscale.retrieval.options import add_retrieval_args, retriever_settings_from_args
from ragscale.errors import UserError
from ragscale.search import builder
from ragscale.search.config import POLICY_NAMES, RULE_VERIFIERS, SearchConfig, flag_name

# bench kv: a fixed, small question set that runs in about 3 minutes on 2 CPU cores.
KV_BENCH_QUESTIONS = 3
KV_BENCH_WIDTH = 8
KV_BENCH_DEPTH = 3
TASK_DEFAULTS = "the task's: qa 3 steps of 48 tokens, reasoning 10 of 256"


def add_config_args(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = (), defaults: dict | None = None) -> None:
    """One flag per ``SearchConfig`` field (not in ``exclude``); without a value the recipe decides."""
    defaults = defaults or {}
    for f in dataclasses.fields(SearchConfig):
        if f.name in exclude:
            continue
        default = defaults.get(f.name)
        if default is not None:
            note = f"default: {default}"
        elif f.name in ("max_depth", "step_max_tokens"):
            note = f"default: {TASK_DEFAULTS}"
        elif f.name == "policy":
            note = "default: --recipe's policy, else ets"
        else:
            note = f"default: the recipe's; ets: {f.default}"
        parser.add_argument(flag_name(f), dest=f.name, type=type(f.default), default=default,
                            metavar=None if f.metadata.get("choices") else f.name.upper(),
                            choices=f.metadata.get("choices"), help=f"{f.metadata['help']} ({note})")


def config_overrides(args: argparse.Namespace, **fixed) -> dict:
    """The ``SearchConfig`` values given on the command line (None: not given), ``fixed`` winning."""
    values = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(SearchConfig)}
    values.update(fixed)
    return values


def _check_task_flags(args) -> None:
    """Task-dependent flags, checked before a model loads."""
    if args.task == "qa" and args.k < 1:
        raise UserError(f"--k must be >= 1 (documents retrieved per step); got {args.k}")
    if args.verifier in RULE_VERIFIERS and args.task != "arithmetic":
        raise UserError(f"--verifier {args.verifier} checks arithmetic steps only; use it with --task arithmetic")


def _build(args, dataset, engine, policies):
    return builder.build_search(engine, dataset, args.task, k=args.k, verifier=args.verifier,
                                use_embedding=builder.needs_embedding(args.task, args.verifier, policies),
                                prm_url=args.prm_url, prm_mode=args.prm_mode)


def compact_nodes(tree) -> list[dict]:
    """The tree as the CLI prints it: one small dict per node (token ids left out)."""
    return [{"id": n.id, "parent": n.parent, "depth": n.depth, "tokens": n.num_tokens,
             "text": n.text if n.parent is not None else n.meta.get("question", ""), "score": n.score,
             "status": n.status, "answer": n.answer, "cluster": n.cluster, "cached_tokens": n.cached_tokens,
             **({"sub_query": n.meta["sub_query"]} if "sub_query" in n.meta else {}),
             **({"intermediate": n.meta["intermediate"]} if "intermediate" in n.meta else {})}
            for n in tree]


def cmd_search(args) -> int:
    # Everything that can be wrong with the input fails here, before a model loads.
    config = builder.search_config(args.recipe or args.policy or "ets", args.task, **config_overrides(args))
    _check_task_flags(args)
    dataset = builder.load_questions(args.task, args.dataset)
    question = builder.require_question(dataset, args.question)
    retriever_settings_from_args(args)  # an unreachable --chroma-url fails before a model loads
    engine = engine_from_args(args)
    search = _build(args, dataset, engine, [config.policy])
    bar, progress = progress_bar(f"search {config.policy} w={config.width}")
    try:
        result = search.run(question, config, progress=progress)
    finally:
        bar.close()
    if args.save:
        # The full result, tree with token ids: Tree.from_dict(saved["tree"]) rebuilds it exactly.
        Path(args.save).write_text(json.dumps(result.to_dict(), ensure_ascii=False), encoding="utf-8")
    out = with_run_cost({**result.summary(), "tree": {"nodes": compact_nodes(result.tree)}}, engine, args.json)
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(f"question : {result.question}")
    print(f"gold     : {' | '.join(result.golds)}")
    print(f"answer   : {result.answer}  ({'correct' if result.correct else 'wrong'})")
    print(f"votes    : {json.dumps({k: round(v, 3) for k, v in result.votes.items()}, ensure_ascii=False)}")
    print(f"KV       : retained (with the prompt) per step {result.kv_per_step}, peak {result.kv_peak:,}, mean "
          f"{result.kv_mean:,.1f} tokens; search (without its {result.kv['prompt']:,}) mean {result.kv['search_mean']:,.1f}")
    print(f"engine   : {result.prompt_tokens:,} prompt tokens ({result.cached_tokens:,} cached), "
          f"{result.tokens_generated:,} generated, {result.model_calls} model calls, {result.wall_seconds:.1f} s")
    if "cost" in out:
        print(f"cost     : {out['cost']}")
    for node in result.tree:
        first = (node.text if node.parent is not None else f"[prompt] {node.meta.get('question', '')}").splitlines()
        score = "" if node.score is None else f" score={node.score:.2f}"
        cluster = "" if node.cluster is None else f" c{node.cluster}"
        print(f"{'  ' * node.depth}#{node.id} {node.status}{score}{cluster} {node.num_tokens}t: {(first or [''])[0][:90]}")
    return 0


def cmd_search_sweep(args) -> int:
    from ragscale.search.runner import run_search_sweep
    from ragscale.store import ResultsStore

    policies = csv_list(args.policies, "--policies")
    unknown = [p for p in policies if p not in POLICY_NAMES]
    if unknown:
        raise UserError(f"unknown policy {unknown[0]!r}; choose from {', '.join(POLICY_NAMES)}")
    widths = csv_list(args.widths, "--widths", int, minimum=1)
    seeds = csv_list(args.seeds, "--seeds", int, minimum=0)
    if args.limit < 1:
        raise UserError(f"--limit must be >= 1; got {args.limit}")
    base = builder.search_config(args.recipe or policies[0], args.task, **config_overrides(args))
    for policy in policies:  # every combination is valid before anything runs
        base.replace(policy=policy, width=max(widths))
    _check_task_flags(args)
    dataset = builder.load_questions(args.task, args.dataset)
    retriever_settings_from_args(args)
    questions = dataset.questions[: args.limit]
    store = ResultsStore(args.out)  # not a store, damaged or read-only: refused before a model loads
    load_before = _load()
    with store.discarded_if_unused():
        engine = engine_from_args(args)
        search = _build(args, dataset, engine, policies)
        bar, progress = progress_bar("search-sweep")
        with bar:
            summary = run_search_sweep(engine, search.task, questions, base, policies, widths, seeds,
                                       search.verifier, store, embed=search.embed, dataset=dataset.name,
                                       progress=progress)
    out = {"out": str(args.out), "dataset": dataset.name, "task": search.task.name, "verifier": search.verifier.name,
           "policies": policies, "widths": widths, "seeds": seeds, "questions": len(questions),
           "runs_total": summary.runs_total, "runs_written": summary.runs_written,
           "runs_already_done": summary.runs_already_done, "seconds": round(summary.seconds, 1)}
    if args.report:
        out["report"] = write_sweep_report(args, store, dataset.name, engine, search.task, search.verifier, base,
                                           questions, policies, widths, seeds,
                                           summary.seconds if summary.runs_already_done == 0 else None, load_before)
    out = with_run_cost(out, engine, args.json)
    print(json.dumps(out, indent=2) if args.json else "\n".join(f"{k:>18}: {v}" for k, v in out.items()))
    return 0


def _load() -> str:
    """The 1/5/15-minute load averages, as `uptime` prints them."""
    import os

    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _commit() -> str:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes" if dirty else "")


def sweep_command(args) -> str:
    """The search-sweep command that reproduces this sweep (the settings that change its rows)."""
    import shlex

    parts = ["python -m ragscale search-sweep", f"--task {args.task}", f"--verifier {args.verifier}",
             f"--dataset {shlex.quote(args.dataset)}", f"--policies {args.policies}", f"--widths {args.widths}",
             f"--seeds {args.seeds}", f"--limit {args.limit}"]
    flags = [("--recipe", "recipe")] + [(flag_name(f), f.name) for f in dataclasses.fields(SearchConfig)
                                        if f.name not in ("policy", "width", "seed")]
    for flag, dest in flags + [("--dtype", "dtype"), ("--threads", "threads")]:
        value = getattr(args, dest, None)
        if value is not None:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    parts += [f"--out {shlex.quote(str(args.out))}", f"--report {shlex.quote(str(args.report))}"]
    return " ".join(parts)


def write_sweep_report(args, store, dataset_name, engine, task, verifier, base, questions, policies, widths,
                       seeds, seconds, load_before) -> str:
    """Write the markdown report of exactly this sweep's records (other records in the store are
    left out) and return its path. The store is checkpointed out of WAL mode so the bundled
    .sqlite file is complete on its own."""
    from ragscale.search.runner import SEARCH_KIND, canonical_key, sweep_key
    from ragscale.search.sweep_report import sweep_report

    keys = {sweep_key(dataset_name, engine.info.model, task.name, verifier.name, q.qid,
                      base.replace(policy=p, width=w, seed=s))
            for p in policies for w in widths for s in seeds for q in questions}
    records = [r for r in store.records(SEARCH_KIND) if canonical_key(r["key"]) in keys]
    # ``seconds`` is None for a resumed sweep: this invocation's time is not the sweep's.
    text = sweep_report(records, sweep_command(args), _commit(), {"before": load_before, "after": _load()},
                        seconds=seconds)
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(text, encoding="utf-8")
    store.close_as_one_file()
    return str(args.report)


def cmd_bench_kv(args) -> int:
    """ETS against REBASE at one width on a fixed question set: accuracy and mean retained KV."""
    from ragscale.search.results import tradeoff_table
    from ragscale.search.runner import canonical_key, run_search_sweep, sweep_key
    from ragscale.store import ResultsStore

    base = builder.search_config("ets", "qa", **config_overrides(args, policy="ets"))
    if args.questions < 1:
        raise UserError(f"--questions must be >= 1; got {args.questions}")
    if args.k < 1:
        raise UserError(f"--k must be >= 1; got {args.k}")
    dataset = builder.load_questions("qa", args.dataset)
    questions = dataset.questions[: args.questions]
    engine = engine_from_args(args)
    search = builder.build_search(engine, dataset, "qa", k=args.k, verifier=args.verifier)
    with tempfile.TemporaryDirectory() as tmp:
        # --out keeps the records (the search-sweep format), e.g. for the trade-off plot.
        store = ResultsStore(args.out or Path(tmp) / "bench.sqlite")
        bar, progress = progress_bar("bench kv")
        started = time.perf_counter()
        try:
            run_search_sweep(engine, search.task, questions, base, ["ets", "rebase"], [base.width], [base.seed],
                             search.verifier, store, embed=search.embed, dataset=dataset.name, progress=progress)
        finally:
            bar.close()
        keys = {sweep_key(dataset.name, engine.info.model, search.task.name, search.verifier.name, q.qid,
                          base.replace(policy=p)) for p in ("ets", "rebase") for q in questions}
        records = [r for r in store.records("search") if canonical_key(r["key"]) in keys]
    seconds = time.perf_counter() - started
    table = tradeoff_table(records).set_index("policy")
    per = {}
    for policy in ("ets", "rebase"):
        rows = [r for r in records if r["policy"] == policy]
        per[policy] = {
            "accuracy": round(float(table.loc[policy, "accuracy"]), 4),
            "mean_retained_kv_tokens": round(float(table.loc[policy, "kv_mean"]), 1),  # with the prompt
            "mean_search_kv_tokens": round(float(table.loc[policy, "kv_search_mean"]), 1),  # without it
            "peak_retained_kv_tokens": max(r["kv"]["peak"] for r in rows),
            "tokens_generated": sum(r["tokens_generated"] for r in rows),
            "model_calls": sum(r["model_calls"] for r in rows),
            "seconds": round(sum(r["wall_seconds"] for r in rows), 1),
        }
    out = {
        "dataset": dataset.name, "questions": len(questions), "width": base.width, "max_depth": base.max_depth,
        "k": args.k, "verifier": search.verifier.name, "model": engine.info.model, "seed": base.seed,
        "ets_settings": {"lambda_b": base.lambda_b, "lambda_d": base.lambda_d,
                         "cluster_threshold": base.cluster_threshold, "kv_cost": base.kv_cost},
        "ets": per["ets"], "rebase": per["rebase"],
        "kv_ratio_rebase_over_ets": round(per["rebase"]["mean_retained_kv_tokens"]
                                          / max(per["ets"]["mean_retained_kv_tokens"], 1e-9), 3),
        "kv_ratio_search_only": round(per["rebase"]["mean_search_kv_tokens"]
                                      / max(per["ets"]["mean_search_kv_tokens"], 1e-9), 3),
        "seconds": round(seconds, 1),
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))  # --json: one line
    return 0


def _task_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=("qa", "reasoning", "arithmetic"), default="qa",
                        help="qa: tree search over IterDRAG steps; reasoning: GSM8K-style step-wise math; "
                        "arithmetic: generated running-total problems, one line per step (use --verifier rules)")
    parser.add_argument("--dataset", default="demo", help="a QA dataset file, a shared sample name, 'demo', "
                        "GSM8K-style JSONL for --task reasoning, or 'arithmetic' (generated; arithmetic-s<SEED>: the three-operation problems of seed SEED, arithmetic-s<SEED>-o<OPS>: OPS operations) "
                        "for --task arithmetic")
    parser.add_argument("--recipe", help="a recipe name or YAML file (without it, the policy's own recipe)")
    parser.add_argument("--k", type=int, default=2, help="qa: documents retrieved per step")
    parser.add_argument("--verifier", choices=("judge", "grounding", "prm", *RULE_VERIFIERS), default="judge",
                        help="judge: the model's P(Yes); grounding: answer-evidence similarity; prm: SGLang PRM; "
                        "rules: the arithmetic task's rule-based step checker (pass/fail); rules-graded: its "
                        "pass/fail times the generator's confidence in the step (never sees the gold answer)")
    parser.add_argument("--prm-url", help="SGLang server with a reward model (--verifier prm)")
    parser.add_argument("--prm-mode", choices=("classify", "step_tag"), default="classify",
                        help="how the PRM is read: a reward model's /classify, or step-tag logprobs")
    add_retrieval_args(parser)


def register(commands) -> None:
    search = commands.add_parser("search", help="tree search on one question (ETS, REBASE, beam, DVTS, best-of-N)")
    search.add_argument("--question", help="question id (or index) in the dataset (without it, the first)")
    search.add_argument("--save", help="also write the full result as JSON to this file (the tree with token ids, "
                        "which the Tree search page and ragscale.plots.tree read)")
    _task_args(search)
    add_config_args(search)
    add_engine_args(search)
    search.add_argument("--json", action="store_true", help="print the result as JSON")
    search.set_defaults(func=cmd_search)

    sweep = commands.add_parser("search-sweep", help="policies x widths over a question set into the results store")
    sweep.add_argument("--policies", default=",".join(POLICY_NAMES), help="comma-separated policies")
    sweep.add_argument("--widths", default="4,8,16", help="comma-separated search widths")
    sweep.add_argument("--seeds", default="0", help="comma-separated sampling seeds")
    sweep.add_argument("--limit", type=int, default=20, help="questions (the first N of the dataset)")
    sweep.add_argument("--out", default="results.sqlite", help="SQLite results store (resumed if it exists)")
    sweep.add_argument("--report", help="also write a markdown report of this sweep's rows to this file "
                       "(accuracy and retained KV per width per policy, REBASE/ETS KV ratio at matched accuracy)")
    _task_args(sweep)
    add_config_args(sweep, exclude=("policy", "width", "seed"))
    add_engine_args(sweep)
    sweep.add_argument("--json", action="store_true", help="print the summary as JSON")
    sweep.set_defaults(func=cmd_search_sweep)


def register_bench(benches) -> None:
    kv = benches.add_parser("kv", help="ETS vs REBASE at one width: accuracy, mean KV with and without the prompt, "
                            "KV ratios")
    kv.add_argument("--dataset", default="demo", help="QA dataset ('demo' or a file)")
    kv.add_argument("--questions", type=int, default=KV_BENCH_QUESTIONS, help="the first N questions")
    kv.add_argument("--k", type=int, default=1, help="documents retrieved per step")
    kv.add_argument("--verifier", choices=("judge", "grounding"), default="judge", help="step verifier")
    add_config_args(kv, exclude=("policy", "temperature", "sampling_temperature"),
                    defaults={"width": KV_BENCH_WIDTH, "max_depth": KV_BENCH_DEPTH})
    add_engine_args(kv)
    kv.add_argument("--out", help="keep the search records in this results store (without it, a temporary one)")
    kv.add_argument("--json", action="store_true", help="print one JSON line")
    kv.set_defaults(func=cmd_bench_kv)
