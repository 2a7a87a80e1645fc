"""Grid sweeps over (strategy, k, m, n), resumable, and the tables and fits built from them.

``run_sweep`` writes one row per (configuration, question) to a ``ResultsStore`` as soon as it
is done; a rerun asks the store which keys are finished and repeats none, so killing a sweep
loses at most the batch in flight. The questions of one configuration go to the engine in
batches (the embedded engine batches them; SGLang gets them concurrently).

Analysis follows Yue et al. 2025: a configuration fits a budget L when *every* question's
effective context length is <= L, and the optimum at L is the best mean score among those.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ragscale.commandline import csv_list
from ragscale.datasets.types import Dataset
from ragscale.engines.base import Engine
from ragscale.errors import UserError
from ragscale.rag.demonstrations import build_demo_pool, split_questions
from ragscale.rag.strategies import STRATEGIES, STRATEGY_MEMBERS, RunConfig, StrategyRunner, expand_grid
from ragscale.store import ResultsStore

KIND = "rag"          # per-question rows
RUN_KIND = "rag_run"  # one summary record per sweep invocation
METRICS = ("acc", "em", "f1")
MAX_K, MAX_N = 10_000, 64
# What config_table reads from every per-question row.
ROW_FIELDS = ("dataset", "model", "strategy", "k", "m", "n", "status", "effective_length", "cached_tokens",
              "uncached_tokens", "em", "f1", "acc", "calls", "iterations", "seconds", "skip_reason")

Progress = Callable[[int, int, str], None]


@dataclass
class SweepSpec:
    dataset: str = "demo"
    strategies: tuple[str, ...] = ("rag", "drag", "iterdrag")
    ks: tuple[int, ...] = (0, 1, 2, 5)
    ms: tuple[int, ...] = (0, 1, 2)
    ns: tuple[int, ...] = (1, 2, 3)
    limit: int | None = 30
    pool_size: int = 8          # demonstration pool, kept apart from the test questions
    batch_size: int = 8         # questions per engine call (progress and cancel act between batches)
    chain_k: int = 2            # IterDRAG demonstration chains: k and max n when generating them
    chain_n: int = 3
    generate_chains: bool = True

    def __post_init__(self):
        # Everything checked here, so a bad value fails before a dataset, index or model loads.
        if not self.strategies:
            raise UserError("--strategies: give at least one of " + ", ".join(STRATEGIES))
        expand_grid(self.strategies, (0,), (0,), (1,))  # unknown names raise, naming the flag
        for name in ("ks", "ms"):
            values = getattr(self, name)
            if not values or any(v < 0 for v in values):
                raise UserError(f"--{name[0]} values must be non-negative integers, got {list(values)}")
        if not self.ns or any(v < 1 for v in self.ns):
            raise UserError(f"--n values must be >= 1, got {list(self.ns)}")
        # Far beyond the paper's grid (k <= 1,000, n <= 5); a typo must not start a run of days.
        for name, values, top in (("k", self.ks, MAX_K), ("m", self.ms, MAX_K), ("n", self.ns, MAX_N)):
            if max(values) > top:
                raise UserError(f"--{name} values must be <= {top:,}, got {max(values):,}")
        if self.limit is not None and self.limit < 1:
            raise UserError("--limit must be >= 1")
        if self.batch_size < 1:
            raise UserError("--batch-size must be >= 1")
        if self.pool_size < 0:
            raise UserError("--pool-size must be >= 0")
        if max(self.ms) > self.pool_size:
            raise UserError(f"--m up to {max(self.ms)} needs a demonstration pool of at least that size "
                            f"(--pool-size {self.pool_size})")


@dataclass
class SweepResult:
    configurations: int
    questions: int
    rows_total: int
    rows_written: int = 0
    rows_already_done: int = 0
    rows_skipped_over_context: int = 0
    cancelled: bool = False
    seconds: float = 0.0
    chain_note: str = ""
    model: str = ""
    dataset: str = ""
    extra: dict = field(default_factory=dict)


def row_key(dataset: str, model: str, config: RunConfig, qid: str) -> str:
    return f"{dataset}|{model}|{config.strategy}|k={config.k}|m={config.m}|n={config.n}|{qid}"


def split_for(spec: SweepSpec, dataset: Dataset) -> tuple[list, list]:
    """(test questions, demonstration pool) of this sweep; call it before loading a model to
    refuse a grid the dataset cannot serve."""
    tests, pool = split_questions(dataset, spec.limit, spec.pool_size)
    if max(spec.ms) > len(pool):
        raise UserError(f"--m up to {max(spec.ms)} needs {max(spec.ms)} pool questions; {dataset.name} leaves {len(pool)}")
    return tests, pool


def run_sweep(spec: SweepSpec, engine: Engine, store: ResultsStore, *, dataset: Dataset | None = None,
              retriever=None, progress: Progress | None = None, cancel: threading.Event | None = None) -> SweepResult:
    started = time.perf_counter()
    say = progress or (lambda done, total, message: None)
    if dataset is None:
        from ragscale.datasets import load_dataset

        dataset = load_dataset(spec.dataset)
    tests, pool = split_for(spec, dataset)
    configs = expand_grid(spec.strategies, spec.ks, spec.ms, spec.ns)
    model = engine.info.model
    total = len(configs) * len(tests)
    result = SweepResult(len(configs), len(tests), total, model=model, dataset=dataset.name)
    done = store.done_keys(KIND)
    todo = [(c, [q for q in tests if row_key(dataset.name, model, c, q.qid) not in done]) for c in configs]
    result.rows_already_done = total - sum(len(qs) for _, qs in todo)
    finished = result.rows_already_done
    say(finished, total, f"{result.rows_already_done} of {total} rows already done")
    if finished == total:
        result.seconds = time.perf_counter() - started
        return result

    remaining = [c for c, qs in todo if qs]
    needs_chains = spec.generate_chains and any(c.iterative and c.m for c in remaining)
    needs_docs = any(c.k > 0 for c in remaining) or needs_chains  # chains are generated with retrieval
    if retriever is None and needs_docs:
        from ragscale.retrieval import build_retriever

        retriever = build_retriever(dataset, progress=lambda d, t, msg="": say(finished, total, f"index: {msg or f'{d}/{t}'}"))
    runner = StrategyRunner(engine, retriever, retrieve_depth=max(spec.ks))
    if any(c.m for c in remaining):
        runner.demonstrations = build_demo_pool(dataset, pool, runner, spec.chain_k, spec.chain_n,
                                                generate_chains=needs_chains,
                                                progress=lambda d, t, msg: say(finished, total, msg))
        result.chain_note = runner.demonstrations.chain_note

    for config, questions in todo:
        for start in range(0, len(questions), spec.batch_size):
            if cancel is not None and cancel.is_set():
                result.cancelled = True
                break
            batch = questions[start:start + spec.batch_size]
            say(finished, total, f"{config.name}: questions {start + 1}-{start + len(batch)} of {len(questions)}")
            for row in runner.run(config, batch):
                row.update(dataset=dataset.name, model=model, engine=engine.info.kind,
                           context_window=engine.info.context_window)
                if store.add(KIND, row_key(dataset.name, model, config, row["qid"]), row):
                    result.rows_written += 1
                    result.rows_skipped_over_context += row["status"] == "skipped"
                finished += 1
            say(finished, total, config.name)
        if result.cancelled:
            break
    result.seconds = time.perf_counter() - started
    store.add(RUN_KIND, f"{time.strftime('%Y-%m-%dT%H:%M:%S')}-{id(result)}",
              {"spec": asdict(spec), "result": asdict(result)})
    return result


# ---- analysis -----------------------------------------------------------------------------

def _context_window(group: pd.DataFrame, model: str):
    """The engine's window the rows ran under (recorded since the window joined the allocation model;
    older stores of the embedded model get its fixed window, others stay unknown)."""
    if "context_window" in group:
        recorded = pd.to_numeric(group["context_window"], errors="coerce").dropna()
        if len(recorded):
            return int(recorded.min())
    from ragscale.engines.model_files import CONTEXT_WINDOW, MODEL_NAME

    return CONTEXT_WINDOW if model == MODEL_NAME else None


def config_table(rows: pd.DataFrame, metric: str = "acc") -> pd.DataFrame:
    """One row per configuration: mean scores, per-question length max/mean, cache hits, skips."""
    if metric not in METRICS:
        raise UserError(f"metric must be one of {', '.join(METRICS)}")
    columns = ["dataset", "model", "strategy", "k", "m", "n", "questions", "skipped", "complete", "score",
               "em", "f1", "acc", "length_max", "length_mean", "cached_mean", "uncached_mean", "cache_hit",
               "calls_mean", "iterations_mean", "seconds_mean", "skip_reason", "context_window"]
    if rows is None or rows.empty:
        return pd.DataFrame(columns=columns)
    missing = sorted(set(ROW_FIELDS) - set(rows.columns))
    if missing:  # a store of something else, or hand-edited
        raise UserError(f"these are not ragscale sweep rows (missing {', '.join(missing[:5])})")
    out = []
    for (ds, model, strategy, k, m, n), group in rows.groupby(["dataset", "model", "strategy", "k", "m", "n"], sort=False):
        ok = group[group["status"] == "ok"]
        prompt = ok["effective_length"].sum()
        out.append({
            "dataset": ds, "model": model, "strategy": strategy, "k": int(k), "m": int(m), "n": int(n),
            "questions": len(group), "skipped": int((group["status"] != "ok").sum()),
            "complete": bool((group["status"] == "ok").all()),
            "score": float(ok[metric].mean()) if len(ok) else np.nan,
            "em": float(ok["em"].mean()) if len(ok) else np.nan,
            "f1": float(ok["f1"].mean()) if len(ok) else np.nan,
            "acc": float(ok["acc"].mean()) if len(ok) else np.nan,
            "length_max": int(ok["effective_length"].max()) if len(ok) else np.nan,
            "length_mean": float(ok["effective_length"].mean()) if len(ok) else np.nan,
            "cached_mean": float(ok["cached_tokens"].mean()) if len(ok) else np.nan,
            "uncached_mean": float(ok["uncached_tokens"].mean()) if len(ok) else np.nan,
            "cache_hit": float(ok["cached_tokens"].sum() / prompt) if prompt else np.nan,
            "calls_mean": float(ok["calls"].mean()) if len(ok) else np.nan,
            "iterations_mean": float(ok["iterations"].mean()) if len(ok) else np.nan,
            "seconds_mean": float(ok["seconds"].mean()) if len(ok) else np.nan,
            "skip_reason": next((r for r in group["skip_reason"] if r), None),
            "context_window": _context_window(group, model),
        })
    return pd.DataFrame(out, columns=columns).sort_values(["dataset", "model", "strategy", "k", "m", "n"]).reset_index(drop=True)


def strategy_view(table: pd.DataFrame, strategy: str) -> pd.DataFrame:
    """The configurations on a strategy's curve (DRAG's includes its m = 0 / k = 0 corners)."""
    members = STRATEGY_MEMBERS[strategy]
    return table[table["strategy"].isin(members)]


def curve_strategies(table: pd.DataFrame) -> list[str]:
    """Strategies worth a curve: every family present, the widest first (drag covers rag)."""
    present = set(table["strategy"]) if len(table) else set()
    curves = [s for s in ("iterdrag", "drag", "rag", "many-shot", "zero-shot") if s in present]
    if "drag" in curves:  # DRAG's grid holds its k = 0 and m = 0 corners; they are not runs of their own
        curves = [s for s in curves if s not in ("zero-shot", "many-shot")]
    if "rag" in curves or "many-shot" in curves:
        curves = [s for s in curves if s != "zero-shot"]
    return curves


def frontier(table: pd.DataFrame, strategy: str | None = None) -> pd.DataFrame:
    """Best score reachable within each budget: complete configurations sorted by their
    per-question maximum length, keeping those that beat every cheaper one."""
    view = strategy_view(table, strategy) if strategy else table
    view = view[view["complete"] & view["score"].notna()].sort_values(["length_max", "score"], ascending=[True, False])
    best, keep = -np.inf, []
    for index, row in view.iterrows():
        if row["score"] > best:
            best = row["score"]
            keep.append(index)
    return view.loc[keep].reset_index(drop=True)


def default_budgets(table: pd.DataFrame) -> list[int]:
    top = table["length_max"].max() if len(table) else 0
    budgets = [b * 10 ** e for e in range(2, 8) for b in (1, 2, 5)]
    chosen = [b for b in budgets if b < top * 2]
    return chosen[max(0, len(chosen) - 10):] if chosen else [1000]


def best_per_budget(table: pd.DataFrame, budgets: Sequence[int] | None = None, strategies: Sequence[str] | None = None) -> pd.DataFrame:
    """For each strategy and budget L: the best complete configuration whose every question fits in L."""
    budgets = list(budgets or default_budgets(table))
    strategies = list(strategies or curve_strategies(table))
    out = []
    for strategy in strategies:
        view = strategy_view(table, strategy)
        view = view[view["complete"] & view["score"].notna()]
        for budget in budgets:
            fits = view[view["length_max"] <= budget]
            if fits.empty:
                out.append({"strategy": strategy, "budget": budget, "k": None, "m": None, "n": None,
                            "score": np.nan, "length_max": np.nan, "configurations": 0})
                continue
            best = fits.sort_values(["score", "length_max"], ascending=[False, True]).iloc[0]
            out.append({"strategy": strategy, "budget": budget, "k": int(best["k"]), "m": int(best["m"]),
                        "n": int(best["n"]), "score": float(best["score"]), "length_max": int(best["length_max"]),
                        "configurations": len(fits)})
    frame = pd.DataFrame(out)
    if len(frame):  # whole numbers, with a gap where nothing fits the budget
        frame[["k", "m", "n", "length_max"]] = frame[["k", "m", "n", "length_max"]].astype("Int64")
    return frame


MIN_FIT_CONFIGS = 7  # six free parameters, and one to spare


def fit_allocation(table: pd.DataFrame, sigmoid: str = "paper"):
    """The allocation model of ragscale.allocation fitted to the complete configurations."""
    from ragscale.allocation.model import AllocationModel

    rows = table[table["complete"] & table["score"].notna()]
    if len(rows) < MIN_FIT_CONFIGS:
        raise UserError(f"the fit needs at least {MIN_FIT_CONFIGS} complete configurations with scores; "
                        f"these results have {len(rows)} (run a larger grid)")
    # The engine's context window travels into the fit, so the optimiser never proposes a call it could not take.
    keep = ["dataset", "strategy", "k", "m", "n", "score"] + (["context_window"] if "context_window" in rows else [])
    # Name the metric the score is (config_table copies one of acc / em / f1 into it): predictions then say what they are.
    metric = next((m for m in METRICS if m in rows and np.allclose(rows[m].to_numpy(float), rows["score"].to_numpy(float))),
                  None)
    rows = rows[keep].reset_index(drop=True)
    return AllocationModel(sigmoid=sigmoid).fit(rows.assign(metric=metric) if metric else rows)


def load_rows(path_or_store) -> pd.DataFrame:
    store = path_or_store if isinstance(path_or_store, ResultsStore) else open_results(path_or_store)
    return store.frame(KIND)


def open_results(path) -> ResultsStore:
    """A results store opened read-only (``report``, ``fit`` and pages never change the file)."""
    from pathlib import Path

    if not Path(path).exists():
        raise UserError(f"no results file at {path} (run `ragscale sweep --out {path}` first)")
    return ResultsStore(path, read_only=True)


# ---- what the Scaling runs page shows ------------------------------------------------------

def parse_int_list(text: str, name: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> (0, 1, 2); ``name`` is how the caller's user knows the value (a flag or a label)."""
    return tuple(csv_list(text, name, int))


def fit_or_note(table: pd.DataFrame, sigmoid: str = "paper"):
    """(fitted allocation model, "") or (None, why there is no fit): a page shows either."""
    try:
        return fit_allocation(table, sigmoid), ""
    except UserError as exc:
        return None, str(exc)
    except (ValueError, ArithmeticError, RuntimeError, np.linalg.LinAlgError) as exc:  # a degenerate fit
        return None, f"fit failed: {exc}"


def describe_fit(model) -> str:
    return (f"Allocation model (Yue et al. 2025, σ⁻¹(P) = (a + b·i)ᵀ log(θ + 0.01) + c) fitted to "
            f"{model.n_rows_} configurations: a = {[round(float(x), 3) for x in model.a_]}, "
            f"b = {[round(float(x), 3) for x in model.b_]}, c = {model.c_:.3f}, i_doc = {model.i_doc_:.3f}, "
            f"i_shot = {model.i_shot_:.3f}, R² = {model.r2_:.3f}, MSE = {model.mse_:.3f}.")


def describe_rows(rows: pd.DataFrame, table: pd.DataFrame) -> str:
    return (f"{len(table)} configurations · {len(rows)} question rows · "
            f"{int((rows['status'] != 'ok').sum())} skipped over the context window · "
            f"models: {', '.join(sorted(rows['model'].unique()))}")


def config_label(row) -> str:
    return f"{row.strategy} k={row.k} m={row.m} n={row.n} · {row.dataset}"


def config_rows(rows: pd.DataFrame, config) -> pd.DataFrame:
    """The per-question rows of one configuration (a row of ``config_table``)."""
    return rows[(rows["strategy"] == config.strategy) & (rows["k"] == config.k) & (rows["m"] == config.m)
                & (rows["n"] == config.n) & (rows["dataset"] == config.dataset)]


def question_label(row) -> str:
    mark = {1.0: "right ·", 0.0: "wrong ·"}.get(row.acc, "skipped ·")
    return f"{mark} {row.question}"


def rows_for_csv(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-question rows flattened for a CSV download (lists as JSON, packed prompts dropped)."""
    import json

    flat = rows.drop(columns=["calls_z"], errors="ignore")
    return flat.assign(**{c: flat[c].map(json.dumps) for c in ("golds", "steps", "documents", "demo_sources") if c in flat})


def last_run_note(store: ResultsStore) -> str | None:
    """One line on the last sweep written into ``store``, if any."""
    runs = store.records(RUN_KIND)
    if not runs:
        return None
    result = runs[-1]["result"]
    return (f"Last sweep in this file: {result['rows_written']} rows written in {result['seconds']:.0f} s; "
            f"demonstrations: {result['chain_note'] or '—'}")


def open_for_viewing(text: str) -> ResultsStore:
    """The results store a page viewer named, read-only (confined to the results roots in shared mode)."""
    from ragscale.deploy import viewer_path

    return ResultsStore(viewer_path(text, "results"), read_only=True)


def question_figures(row) -> list[tuple[str, str, str | None]]:
    """(label, value, note) of one question's result, as the drill-down shows them."""
    calls = f"{row['calls']} call{'s' if row['calls'] != 1 else ''}"
    return [
        ("Prediction", row["prediction"] or "—", None),
        ("Gold", " / ".join(row["golds"][:3]), None),
        ("EM · F1 · Acc", "skipped" if row["status"] != "ok" else f"{row['em']:.0f} · {row['f1']:.2f} · {row['acc']:.0f}", None),
        ("Effective length", f"{row['effective_length']:,} tokens", f"{row['cached_tokens']:,} cached · {calls}"),
    ]


def call_label(call: dict) -> str:
    return (f"{call['role']} · {call['prompt_tokens']:,} prompt tokens ({call['cached_tokens']:,} cached) "
            f"→ {call['completion_tokens']} new")


def paper_model_like(model):
    """The paper's allocation model (Table 8) on the document/shot informativeness ``model`` measured."""
    from ragscale.allocation import AllocationModel, paper_profile

    return AllocationModel.from_profile(paper_profile("hotpotqa", "em", model.i_doc_, model.i_shot_))
