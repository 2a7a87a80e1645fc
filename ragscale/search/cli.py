"""`ragscale search`, `ragscale search-sweep` and `ragscale bench kv`."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from ragscale.engines.options import add_engine_args, engine_from_args
from ragscale.retrieval.options import add_retrieval_args, retriever_settings_from_args
from ragscale.errors import UserError
from ragscale.search.config import POLICY_NAMES

# bench kv: a fixed, small question set that runs in about 3 minutes on 2 CPU cores.
KV_BENCH_QUESTIONS = 3
KV_BENCH_WIDTH = 8
KV_BENCH_DEPTH = 3


def _csv(text: str, name: str, cast=str) -> list:
    try:
        values = [cast(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--{name} takes a comma-separated list; got {text!r}") from None
    if not values:
        raise UserError(f"--{name} is empty")
    return values


def _tqdm(desc: str):
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int, message: str = "") -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(message[:70], refresh=False)
        bar.refresh()

    return bar, progress


def load_questions(task: str, dataset: str):
    """(dataset, questions) for a task: multi-hop QA files / demo, or GSM8K-style JSONL."""
    if task == "arithmetic":  # generated, seeded problems (ragscale.search.tasks.arithmetic)
        if dataset not in ("demo", "arithmetic"):
            raise UserError("the arithmetic task generates its own problems; use --dataset arithmetic")
        from ragscale.search.tasks import arithmetic_dataset

        return arithmetic_dataset()
    if task == "reasoning":
        if dataset == "demo":
            raise UserError("the reasoning task reads GSM8K-style JSONL (question, answer ending '#### N'); "
                            "give --dataset PATH")
        from ragscale.datasets import load_gsm8k

        return load_gsm8k(dataset)
    from ragscale.datasets.loaders import load_dataset

    return load_dataset(dataset)


def pick_question(dataset, qid: str | None):
    if qid is None:
        return dataset.questions[0]
    for q in dataset.questions:
        if q.qid == qid:
            return q
    if qid.isdigit() and int(qid) < len(dataset.questions):  # an index is accepted too
        return dataset.questions[int(qid)]
    some = ", ".join(q.qid for q in dataset.questions[:5])
    raise UserError(f"no question {qid!r} in {dataset.name} ({len(dataset.questions)} questions, e.g. {some})")


def build_config(args, task):
    from ragscale.search.config import load_recipe

    overrides = {
        "policy": args.policy if getattr(args, "policy", None) else None,
        "width": getattr(args, "width", None), "lambda_b": args.lambda_b, "lambda_d": args.lambda_d,
        "temperature": args.temperature, "sampling_temperature": args.sampling_temperature,
        "max_depth": args.max_depth or task.default_max_depth,
        "step_max_tokens": args.step_tokens or task.default_step_tokens,
        "seed": getattr(args, "seed", None), "kv_cost": args.kv_cost,
        "cluster_threshold": getattr(args, "cluster_threshold", None),
    }
    recipe = args.recipe or getattr(args, "policy", None) or "ets"
    return load_recipe(recipe, **overrides)


def embedder():
    """MiniLM sentence embeddings (L2-normalised), shared with retrieval."""
    from ragscale.retrieval import embed_texts

    return embed_texts


def build_task_and_verifier(args, dataset, engine):
    """The task, the verifier and the embedding function (MiniLM) the policies cluster with."""
    from ragscale.search.tasks import make_task
    from ragscale.search.verifiers import make_verifier

    if args.verifier == "rules" and args.task != "arithmetic":
        raise UserError("--verifier rules checks arithmetic steps only; use it with --task arithmetic")
    embed = None
    if args.task == "qa" or args.verifier == "grounding" or "ets" in _policies(args):
        embed = embedder()
    task = make_task(args.task, dataset=dataset, k=args.k)
    if args.verifier == "rules":  # the arithmetic task's step checker (ragscale.search.rule_verifier)
        from ragscale.search.rule_verifier import ArithmeticRules

        return task, ArithmeticRules(), embed
    verifier = make_verifier(args.verifier, engine=engine, embed=embed, prm_url=args.prm_url, prm_mode=args.prm_mode)
    return task, verifier, embed


def _policies(args) -> list[str]:
    if getattr(args, "policies", None):
        return _csv(args.policies, "policies")
    return [getattr(args, "policy", None) or "ets"]


def compact_nodes(tree) -> list[dict]:
    """The tree as the CLI prints it: one small dict per node (token ids left out)."""
    return [{"id": n.id, "parent": n.parent, "depth": n.depth, "tokens": n.num_tokens,
             "text": n.text if n.parent is not None else n.meta.get("question", ""), "score": n.score,
             "status": n.status, "answer": n.answer, "cluster": n.cluster, "cached_tokens": n.cached_tokens,
             **({"sub_query": n.meta["sub_query"]} if "sub_query" in n.meta else {}),
             **({"intermediate": n.meta["intermediate"]} if "intermediate" in n.meta else {})}
            for n in tree]


def cmd_search(args) -> int:
    from ragscale.search.runner import run_search

    dataset = load_questions(args.task, args.dataset)  # bad input fails before a model loads
    question = pick_question(dataset, args.question)
    retriever_settings_from_args(args)  # an unreachable --chroma-url fails before a model loads
    engine = engine_from_args(args)
    task, verifier, embed = build_task_and_verifier(args, dataset, engine)
    config = build_config(args, task)
    bar, progress = _tqdm(f"search {config.policy} w={config.width}")
    try:
        result = run_search(engine, task, question, config, verifier, embed, progress=progress)
    finally:
        bar.close()
    if args.save:
        # The full result, tree with token ids: Tree.from_dict(saved["tree"]) rebuilds it exactly.
        Path(args.save).write_text(json.dumps(result.to_dict(), ensure_ascii=False), encoding="utf-8")
    out = {**result.summary(), "tree": {"nodes": compact_nodes(result.tree)}}
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(f"question : {result.question}")
    print(f"gold     : {' | '.join(result.golds)}")
    print(f"answer   : {result.answer}  ({'correct' if result.correct else 'wrong'})")
    print(f"votes    : {json.dumps({k: round(v, 3) for k, v in result.votes.items()}, ensure_ascii=False)}")
    print(f"KV       : per step {result.kv_per_step}, peak {result.kv_peak:,}, mean {result.kv_mean:,.1f} tokens")
    print(f"engine   : {result.prompt_tokens:,} prompt tokens ({result.cached_tokens:,} cached), "
          f"{result.tokens_generated:,} generated, {result.model_calls} model calls, {result.wall_seconds:.1f} s")
    for node in result.tree:
        first = (node.text if node.parent is not None else f"[prompt] {node.meta.get('question', '')}").splitlines()
        score = "" if node.score is None else f" score={node.score:.2f}"
        cluster = "" if node.cluster is None else f" c{node.cluster}"
        print(f"{'  ' * node.depth}#{node.id} {node.status}{score}{cluster} {node.num_tokens}t: {(first or [''])[0][:90]}")
    return 0


def cmd_search_sweep(args) -> int:
    from ragscale.search.runner import run_search_sweep
    from ragscale.store import ResultsStore

    dataset = load_questions(args.task, args.dataset)
    retriever_settings_from_args(args)
    policies = _csv(args.policies, "policies")
    for p in policies:
        if p not in POLICY_NAMES:
            raise UserError(f"unknown policy {p!r}; choose from {', '.join(POLICY_NAMES)}")
    widths = _csv(args.widths, "widths", int)
    seeds = _csv(args.seeds, "seeds", int)
    if any(w < 1 for w in widths):
        raise UserError("--widths must be >= 1")
    questions = dataset.questions[: args.limit]
    store = ResultsStore(args.out)
    load_before = _load()
    engine = engine_from_args(args)
    task, verifier, embed = build_task_and_verifier(args, dataset, engine)
    args.policy = None
    base = build_config(args, task)
    bar, progress = _tqdm("search-sweep")
    try:
        summary = run_search_sweep(engine, task, questions, base, policies, widths, seeds, verifier, store,
                                   embed=embed, dataset=dataset.name, progress=progress)
    finally:
        bar.close()
    out = {"out": str(args.out), "dataset": dataset.name, "task": task.name, "verifier": verifier.name,
           "policies": policies, "widths": widths, "seeds": seeds, "questions": len(questions),
           "runs_total": summary.runs_total, "runs_written": summary.runs_written,
           "runs_already_done": summary.runs_already_done, "seconds": round(summary.seconds, 1)}
    if args.report:
        out["report"] = write_sweep_report(args, store, dataset.name, engine, task, verifier, base, questions,
                                           policies, widths, seeds,
                                           summary.seconds if summary.runs_already_done == 0 else None, load_before)
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
    for flag in ("recipe", "lambda_b", "lambda_d", "temperature", "sampling_temperature", "max_depth",
                 "step_tokens", "kv_cost", "cluster_threshold", "dtype", "threads"):
        value = getattr(args, flag, None)
        if value is not None:
            parts.append(f"--{flag.replace('_', '-')} {shlex.quote(str(value))}")
    parts += [f"--out {shlex.quote(str(args.out))}", f"--report {shlex.quote(str(args.report))}"]
    return " ".join(parts)


def write_sweep_report(args, store, dataset_name, engine, task, verifier, base, questions, policies, widths,
                       seeds, seconds, load_before) -> str:
    """Write the markdown report of exactly this sweep's records (other records in the store are
    left out) and return its path. The store is checkpointed out of WAL mode so the bundled
    .sqlite file is complete on its own."""
    import sqlite3

    from ragscale.search.runner import SEARCH_KIND, sweep_key
    from ragscale.search.sweep_report import sweep_report

    keys = {sweep_key(dataset_name, engine.info.model, task.name, verifier.name, q.qid,
                      base.replace(policy=p, width=w, seed=s))
            for p in policies for w in widths for s in seeds for q in questions}
    records = [r for r in store.records(SEARCH_KIND) if r["key"] in keys]
    # ``seconds`` is None for a resumed sweep: this invocation's time is not the sweep's.
    text = sweep_report(records, sweep_command(args), _commit(), {"before": load_before, "after": _load()},
                        seconds=seconds)
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(text, encoding="utf-8")
    store.close()  # the writer lets go first: leaving WAL mode needs the file to itself
    con = sqlite3.connect(store.path)
    try:
        con.execute("PRAGMA journal_mode=DELETE")
    finally:
        con.close()
    return str(args.report)


def cmd_bench_kv(args) -> int:
    """ETS against REBASE at one width on a fixed question set: accuracy and mean retained KV."""
    from ragscale.plots.tree import tradeoff_table
    from ragscale.search.runner import run_search_sweep, sweep_key
    from ragscale.store import ResultsStore

    args.task, args.policy, args.recipe = "qa", None, None
    for name in ("temperature", "sampling_temperature"):
        setattr(args, name, None)
    args.prm_url, args.prm_mode, args.policies = None, "classify", "ets,rebase"
    dataset = load_questions("qa", args.dataset)
    questions = dataset.questions[: args.questions]
    engine = engine_from_args(args)
    task, verifier, embed = build_task_and_verifier(args, dataset, engine)
    base = build_config(args, task)
    with tempfile.TemporaryDirectory() as tmp:
        # --out keeps the records (the search-sweep format), e.g. for the trade-off plot.
        store = ResultsStore(args.out or Path(tmp) / "bench.sqlite")
        bar, progress = _tqdm("bench kv")
        started = time.perf_counter()
        try:
            run_search_sweep(engine, task, questions, base, ["ets", "rebase"], [args.width], [args.seed], verifier,
                             store, embed=embed, dataset=dataset.name, progress=progress)
        finally:
            bar.close()
        keys = {sweep_key(dataset.name, engine.info.model, task.name, verifier.name, q.qid,
                          base.replace(policy=p, width=args.width, seed=args.seed))
                for p in ("ets", "rebase") for q in questions}
        records = [r for r in store.records("search") if r["key"] in keys]
    seconds = time.perf_counter() - started
    table = tradeoff_table(records).set_index("policy")
    per = {}
    for policy in ("ets", "rebase"):
        rows = [r for r in records if r["policy"] == policy]
        per[policy] = {
            "accuracy": round(float(table.loc[policy, "accuracy"]), 4),
            "mean_retained_kv_tokens": round(float(table.loc[policy, "kv_mean"]), 1),
            "peak_retained_kv_tokens": max(r["kv"]["peak"] for r in rows),
            "tokens_generated": sum(r["tokens_generated"] for r in rows),
            "model_calls": sum(r["model_calls"] for r in rows),
            "seconds": round(sum(r["wall_seconds"] for r in rows), 1),
        }
    out = {
        "dataset": dataset.name, "questions": len(questions), "width": args.width, "max_depth": base.max_depth,
        "k": args.k, "verifier": verifier.name, "model": engine.info.model, "seed": args.seed,
        "ets_settings": {"lambda_b": base.lambda_b, "lambda_d": base.lambda_d,
                         "cluster_threshold": base.cluster_threshold, "kv_cost": base.kv_cost},
        "ets": per["ets"], "rebase": per["rebase"],
        "kv_ratio_rebase_over_ets": round(per["rebase"]["mean_retained_kv_tokens"]
                                          / max(per["ets"]["mean_retained_kv_tokens"], 1e-9), 3),
        "seconds": round(seconds, 1),
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))  # --json: one line
    return 0


def _common(parser: argparse.ArgumentParser, sweep: bool = False) -> None:
    parser.add_argument("--task", choices=("qa", "reasoning", "arithmetic"), default="qa",
                        help="qa: tree search over IterDRAG steps; reasoning: GSM8K-style step-wise math; "
                        "arithmetic: generated running-total problems, one line per step (use --verifier rules)")
    parser.add_argument("--dataset", default="demo", help="a QA dataset file, a shared sample name, 'demo', "
                        "GSM8K-style JSONL for --task reasoning, or 'arithmetic' (generated) for --task arithmetic")
    parser.add_argument("--recipe", help="a recipe name or YAML file; without it, the policy's own recipe")
    parser.add_argument("--lambda-b", type=float, help="ETS weight of the retained-KV cost")
    parser.add_argument("--lambda-d", type=float, help="ETS weight of semantic diversity")
    parser.add_argument("--temperature", type=float, help="softmax temperature of the REBASE shares")
    parser.add_argument("--sampling-temperature", type=float, help="sampling temperature of each step")
    parser.add_argument("--max-depth", type=int, help="maximum steps; without it, qa 3 and reasoning 10")
    parser.add_argument("--step-tokens", type=int, help="token cap per step; without it, qa 48 and reasoning 256")
    parser.add_argument("--kv-cost", choices=("tokens", "nodes"), help="ETS KV cost of a node")
    parser.add_argument("--cluster-threshold", type=float,
                        help="ETS: cosine distance at which steps' embeddings are cut into clusters (paper: 0.05)")
    parser.add_argument("--k", type=int, default=2, help="qa: documents retrieved per step")
    parser.add_argument("--verifier", choices=("judge", "grounding", "prm", "rules"), default="judge",
                        help="judge: the model's P(Yes); grounding: answer-evidence similarity; prm: SGLang PRM; "
                        "rules: the arithmetic task's rule-based step checker")
    parser.add_argument("--prm-url", help="SGLang server with a reward model (--verifier prm)")
    parser.add_argument("--prm-mode", choices=("classify", "step_tag"), default="classify")
    add_engine_args(parser)
    add_retrieval_args(parser)
    parser.add_argument("--json", action="store_true")


def register(commands) -> None:
    search = commands.add_parser("search", help="tree search on one question (ETS, REBASE, beam, DVTS, best-of-N)",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    search.add_argument("--policy", choices=POLICY_NAMES, default="ets")
    search.add_argument("--width", type=int, default=16)
    search.add_argument("--question", help="question id (or index) in the dataset; without it, the first")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--save", help="also write the full result as JSON to this file (the tree with token ids, "
                        "which the Tree search page and ragscale.plots.tree read)")
    _common(search)
    search.set_defaults(func=cmd_search)

    sweep = commands.add_parser("search-sweep", help="policies x widths over a question set into the results store",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sweep.add_argument("--policies", default="ets,rebase,beam,dvts,bon")
    sweep.add_argument("--widths", default="4,8,16")
    sweep.add_argument("--seeds", default="0")
    sweep.add_argument("--limit", type=int, default=20, help="questions (the first N of the dataset)")
    sweep.add_argument("--out", default="results.sqlite", help="SQLite results store (resumed if it exists)")
    sweep.add_argument("--report", help="also write a markdown report of this sweep's rows to this file "
                       "(accuracy and retained KV per width per policy, REBASE/ETS KV ratio at matched accuracy)")
    _common(sweep, sweep=True)
    sweep.set_defaults(func=cmd_search_sweep)


def register_bench(benches) -> None:
    kv = benches.add_parser("kv", help="ETS vs REBASE at one width: accuracy, mean retained KV, KV ratio",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    kv.add_argument("--dataset", default="demo")
    kv.add_argument("--questions", type=int, default=KV_BENCH_QUESTIONS)
    kv.add_argument("--width", type=int, default=KV_BENCH_WIDTH)
    kv.add_argument("--max-depth", type=int, default=KV_BENCH_DEPTH)
    kv.add_argument("--step-tokens", type=int, default=None)
    kv.add_argument("--k", type=int, default=1, help="documents retrieved per step")
    kv.add_argument("--seed", type=int, default=0)
    kv.add_argument("--verifier", choices=("judge", "grounding"), default="judge")
    kv.add_argument("--lambda-b", type=float, help="ETS weight of the retained-KV cost; None: the ets recipe's")
    kv.add_argument("--lambda-d", type=float, help="ETS weight of semantic diversity; None: the ets recipe's")
    kv.add_argument("--cluster-threshold", type=float, help="ETS clustering cut (cosine distance); None: the ets recipe's")
    kv.add_argument("--kv-cost", choices=("tokens", "nodes"), help="ETS KV cost of a node; None: the ets recipe's (tokens)")
    add_engine_args(kv)
    kv.add_argument("--out", help="keep the search records in this results store; without it, a temporary one")
    kv.add_argument("--json", action="store_true")
    kv.set_defaults(func=cmd_bench_kv)
