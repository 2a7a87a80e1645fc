"""How well the paper's allocation model reproduces the paper's own Table 1.

For each Table 1 dataset and budget (16k, 32k, 128k, 1M, 5M) the paper profile (Table 8
coefficients, read back on that dataset and metric, 1M-token window) picks its best configuration
per strategy; that is set beside the best score Table 1 reports within the same budget.

Reading Table 1 as "best within a budget": a method's best score within L_max can only grow with
L_max, so a method the table stops reporting keeps its last reported score at larger budgets
(``table_carried``; a lower bound on its true best there). The paper stops reporting a method when
it cannot use more: zero-shot and many-shot after 16k, RAG (k <= 1000) after 128k, DRAG (one call,
1M window) after 1M.

Two yardsticks per cell, both against Table 1's best (the oracle):
- ``predicted_share``: the model's predicted best score as a share of it;
- ``winner_share``: Table 1's score for the strategy the model picks, as a share of it. This is the
  nearest analogue of the paper's Table 3 (the oracle share reached by running the predicted
  configuration, 96.6% on average at 1M) that can be computed without running Gemini: Table 1
  gives each strategy's best, not the score of the model's exact (k, m, n), so it is an upper bound.

Nothing here is tuned to the table: the coefficients are the paper's. Only the map from z-scores
back to raw scores (mean and spread per dataset and metric) and the default i_doc / i_shot come from
Table 1, because the paper does not publish them (see ``profiles``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from ragscale.allocation.context_length import STRATEGIES, TokenSizes
from ragscale.allocation.optimizer import Grid, frontier
from ragscale.allocation.profiles import (
    GEMINI_15_FLASH_WINDOW as PAPER_WINDOW,
    METRICS,
    TABLE1_DATASETS,
    load_table1,
    paper_profile,
)
from ragscale.errors import UserError

PAPER_BUDGETS = (16_000, 32_000, 128_000, 1_000_000, 5_000_000)
_TIE = 1e-9


def table1_best_within(table: pd.DataFrame, dataset: str, metric: str, budget: int) -> pd.DataFrame:
    """Per method: the best Table 1 score within ``budget`` and whether it was carried from a smaller one."""
    rows = table[(table["dataset"] == dataset) & (table["l_max"] <= budget)]
    out = []
    for method, part in rows.groupby("method", sort=False):
        top = part.loc[part[metric].idxmax()]
        out.append({"strategy": method, "table_score": float(top[metric]),
                    "table_carried": int(part["l_max"].max()) < budget})
    return pd.DataFrame(out, columns=["strategy", "table_score", "table_carried"])


def fidelity_rows(metric: str = "em", sizes: TokenSizes | None = None, grid: Grid | None = None,
                  budgets=PAPER_BUDGETS, datasets=TABLE1_DATASETS, context_window=PAPER_WINDOW) -> pd.DataFrame:
    """One row per dataset x budget x strategy: the model's best configuration and Table 1's score.

    ``context_window`` replaces the paper profile's (None: no per-call bound, to show what the
    window changes).
    """
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    table = load_table1()
    records = []
    for dataset in datasets:
        profile = paper_profile(dataset, metric)
        if context_window != PAPER_WINDOW:
            profile = replace(profile, context_window=context_window)
        best = frontier(profile, list(budgets), list(STRATEGIES), sizes, grid)
        for budget in budgets:
            reported = table1_best_within(table, dataset, metric, budget).set_index("strategy")
            for strategy in STRATEGIES:
                pick = best[(best["budget"] == budget) & (best["strategy"] == strategy)]
                row = {"dataset": dataset, "budget": int(budget), "strategy": strategy, "metric": metric}
                if len(pick):
                    p = pick.iloc[0]
                    row.update(k=int(p["k"]), m=int(p["m"]), n=int(p["n"]), effective_tokens=int(p["effective_tokens"]),
                               largest_call_tokens=int(p["largest_call_tokens"]), predicted=float(p["predicted_score"]))
                else:  # nothing of this strategy fits the budget
                    row.update(k=None, m=None, n=None, effective_tokens=None, largest_call_tokens=None, predicted=np.nan)
                if strategy in reported.index:
                    row.update(table_score=float(reported.at[strategy, "table_score"]),
                               table_carried=bool(reported.at[strategy, "table_carried"]))
                else:
                    row.update(table_score=np.nan, table_carried=False)
                records.append(row)
    return pd.DataFrame.from_records(records)


def _winners(scores: pd.Series) -> list[str]:
    scores = scores.dropna()
    return [] if scores.empty else sorted(scores.index[scores >= scores.max() - _TIE])


def fidelity_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset x budget: the model's pick against Table 1's best (from ``fidelity_rows``)."""
    cells = []
    for (dataset, budget), part in rows.groupby(["dataset", "budget"], sort=False):
        part = part.set_index("strategy")
        predicted, reported = part["predicted"], part["table_score"]
        # The model's overall pick: highest prediction, the cheaper one on a tie (as the optimiser).
        ranked = part.dropna(subset=["predicted"]).sort_values(["predicted", "effective_tokens"],
                                                               ascending=[False, True])
        pick = ranked.iloc[0]
        table_winners = _winners(reported)
        table_best = float(reported.max())
        winner_table_score = float(reported.get(pick.name, np.nan))
        cells.append({
            "dataset": dataset, "budget": int(budget), "metric": pick["metric"],
            "model_strategy": pick.name, "k": int(pick["k"]), "m": int(pick["m"]), "n": int(pick["n"]),
            "effective_tokens": int(pick["effective_tokens"]), "largest_call_tokens": int(pick["largest_call_tokens"]),
            "model_score": float(pick["predicted"]),
            "model_strategies_tied": "/".join(_winners(predicted)),
            "table_strategy": "/".join(table_winners), "table_best": table_best,
            "same_winner": pick.name in table_winners,
            "gap_points": float(pick["predicted"]) - table_best,
            "predicted_share": float(pick["predicted"]) / table_best,
            "winner_table_score": winner_table_score,
            "winner_share": winner_table_score / table_best if np.isfinite(winner_table_score) else np.nan,
        })
    return pd.DataFrame.from_records(cells)


def fidelity_summary(cells: pd.DataFrame) -> dict:
    """Agreement over all cells, and per budget: how often the winner matches, gaps, shares."""
    def summarise(part: pd.DataFrame) -> dict:
        return {
            "cells": int(len(part)),
            "same_winner": int(part["same_winner"].sum()),
            "mean_gap_points": round(float(part["gap_points"].mean()), 2),
            "mean_abs_gap_points": round(float(part["gap_points"].abs().mean()), 2),
            "mean_predicted_share": round(float(part["predicted_share"].mean()), 4),
            "mean_winner_share": round(float(part["winner_share"].mean()), 4),
        }

    out = summarise(cells)
    out["by_budget"] = {str(int(b)): summarise(part) for b, part in cells.groupby("budget")}
    out["model_picks"] = {str(k): int(v) for k, v in cells["model_strategy"].value_counts().items()}
    out["table_picks"] = {str(k): int(v) for k, v in cells["table_strategy"].value_counts().items()}
    return out


def fidelity_findings(cells: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """Plain sentences about where the model and Table 1 agree and disagree, computed from the data."""
    from ragscale.formatting import fmt_tokens

    found = []
    total, same = len(cells), int(cells["same_winner"].sum())
    found.append(f"The model picks Table 1's winning strategy in {same} of {total} cells "
                 f"(datasets × budgets); its predicted best is off by {cells['gap_points'].abs().mean():.1f} "
                 f"points on average ({cells['gap_points'].mean():+.1f} signed).")

    def counted(values: pd.Series) -> str:
        return ", ".join(f"{name} on {count}" for name, count in values.value_counts().items())

    for budget, part in cells.groupby("budget"):
        found.append(f"{fmt_tokens(budget)}: the model picks {counted(part['model_strategy'])} of {len(part)} "
                     f"datasets; Table 1's winner is {counted(part['table_strategy'])}; Table 1's score for the "
                     f"model's pick is {part['winner_share'].mean():.1%} of its best.")
    low, high = cells["budget"].min(), cells["budget"].max()
    rise = cells.pivot_table(index="dataset", columns="budget", values=["model_score", "table_best"])
    model_rise = (rise["model_score"][high] - rise["model_score"][low]).mean()
    table_rise = (rise["table_best"][high] - rise["table_best"][low]).mean()
    found.append(f"From {fmt_tokens(low)} to {fmt_tokens(high)} the model's best rises by {model_rise:.1f} points "
                 f"on average, Table 1's by {table_rise:.1f}: the model's curve is flatter, so it is high at small "
                 "budgets and low at large ones.")
    iter_rows = rows[(rows["strategy"] == "iterdrag") & rows["predicted"].notna()]
    if len(iter_rows):
        ones = iter_rows[iter_rows["n"] == 1]
        found.append(f"The model's best IterDRAG uses n = 1 in {len(ones)} of {len(iter_rows)} cells: it credits "
                     "iterations only through a_n log n, while each one re-sends the whole prompt twice.")
    return found


def fidelity_report(metric: str = "em", sizes: TokenSizes | None = None, grid: Grid | None = None,
                    context_window=PAPER_WINDOW) -> dict:
    """Everything ``ragscale bench fidelity`` prints: the cells, per-strategy picks and the summary."""
    rows = fidelity_rows(metric, sizes, grid, context_window=context_window)
    cells = fidelity_table(rows)
    per_strategy = {}
    for (dataset, budget), part in rows.groupby(["dataset", "budget"], sort=False):
        per_strategy[f"{dataset}@{budget}"] = {
            r.strategy: None if pd.isna(r.predicted) else {
                "k": r.k, "m": r.m, "n": r.n, "tokens": r.effective_tokens, "largest_call": r.largest_call_tokens,
                "predicted": round(float(r.predicted), 2),
                "table": None if pd.isna(r.table_score) else r.table_score,
                "table_carried": bool(r.table_carried)}
            for r in part.itertuples()
        }
    return {"rows": rows, "cells": cells, "per_strategy": per_strategy, "summary": fidelity_summary(cells),
            "findings": fidelity_findings(cells, rows)}


__all__ = ["PAPER_BUDGETS", "table1_best_within", "fidelity_rows", "fidelity_table", "fidelity_summary",
           "fidelity_findings", "fidelity_report", "fidelity_markdown", "fidelity_display"]


def fidelity_display(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells as the calculator's compact table: one readable row per dataset and budget."""
    from ragscale.formatting import fmt_tokens

    return pd.DataFrame({
        "dataset": cells["dataset"], "budget": cells["budget"].map(fmt_tokens),
        "model picks (k·m·n)": [f"{c.model_strategy} {c.k}·{c.m}·{c.n}" for c in cells.itertuples()],
        "predicted": cells["model_score"].round(1), "Table 1 winner": cells["table_strategy"],
        "Table 1 best": cells["table_best"], "same winner": cells["same_winner"],
        "gap": cells["gap_points"].round(1),
    })


def fidelity_markdown(cells: pd.DataFrame) -> str:
    """The cells as a Markdown table (the README's and the CLI's)."""
    from ragscale.formatting import fmt_tokens

    lines = ["| dataset | budget | model picks (k·m·n) | predicted | Table 1 best | same winner | gap (points) |",
             "|---|---|---|---|---|---|---|"]
    for c in cells.itertuples():
        lines.append(f"| {c.dataset} | {fmt_tokens(c.budget)} | {c.model_strategy} ({c.k}·{c.m}·{c.n}) | "
                     f"{c.model_score:.1f} | {c.table_strategy} {c.table_best:.1f} | "
                     f"{'yes' if c.same_winner else 'no'} | {c.gap_points:+.1f} |")
    return "\n".join(lines)
