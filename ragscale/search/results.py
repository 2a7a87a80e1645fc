"""Search-sweep results as a trade-off: accuracy against retained KV per policy and width.

``ragscale search-sweep`` writes one record per (question, policy, width, seed); this module
reads them back as the table the Tree search page, ``bench kv`` and the README report, beside
the paper's reference point (Hooper et al. 2025: ETS keeps 1.8x less KV than REBASE at matched
accuracy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from ragscale.config import DATA_DIR

# The bundled sweep the Tree search page opens on (made by the command in data/search_results.md).
BUNDLED_SEARCH_SWEEP = DATA_DIR / "search_results.sqlite"
# Single runs shown when no bundled sweep is there (made as data/trees/README.md says).
EXAMPLE_TREES = DATA_DIR / "trees"
# Hooper et al. 2025: REBASE's retained KV over ETS's at matched accuracy.
PAPER_KV_RATIO = 1.8
PAPER_REFERENCE = "Hooper et al. 2025: ETS keeps 1.8x less KV than REBASE at matched accuracy"

COLUMNS = ["policy", "width", "accuracy", "kv_mean", "questions"]


def tradeoff_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Per (policy, width): accuracy, mean retained KV and the number of questions."""
    rows = []
    for r in records:
        kv = r.get("kv") or {}
        rows.append({"policy": r.get("policy"), "width": r.get("width"), "correct": float(bool(r.get("correct"))),
                     "kv_mean": kv.get("mean", r.get("kv_mean"))})
    frame = pd.DataFrame(rows, columns=["policy", "width", "correct", "kv_mean"])
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    grouped = frame.groupby(["policy", "width"], as_index=False).agg(
        accuracy=("correct", "mean"), kv_mean=("kv_mean", "mean"), questions=("correct", "size"))
    return grouped.sort_values(["policy", "width"]).reset_index(drop=True)


def kv_ratio_at_matched_accuracy(table: pd.DataFrame, policy: str = "ets", baseline: str = "rebase") -> dict | None:
    """REBASE's smallest KV that reaches ETS's best accuracy, over ETS's KV there (the paper's measure).

    None when either policy is missing or the baseline never reaches that accuracy.
    """
    ours, base = table[table["policy"] == policy], table[table["policy"] == baseline]
    if ours.empty or base.empty:
        return None
    best = ours.sort_values(["accuracy", "kv_mean"], ascending=[False, True]).iloc[0]
    reached = base[base["accuracy"] >= best["accuracy"]]
    if reached.empty or not best["kv_mean"]:
        return None
    match = reached.sort_values("kv_mean").iloc[0]
    return {"accuracy": float(best["accuracy"]), f"{policy}_width": int(best["width"]),
            f"{baseline}_width": int(match["width"]), f"{policy}_kv": float(best["kv_mean"]),
            f"{baseline}_kv": float(match["kv_mean"]), "ratio": float(match["kv_mean"] / best["kv_mean"])}


def load_sweep_records(path: str | Path) -> list[dict]:
    """Every search record in a results store ([] when the file does not exist)."""
    from ragscale.store import ResultsStore

    if not Path(path).is_file():
        return []
    return ResultsStore(path, read_only=True).records("search")  # a viewer's store is never written


def example_runs(records: list[dict], policies: tuple[str, str] = ("ets", "rebase")) -> list[dict]:
    """Two runs of one question and width to show side by side: where the first policy answers
    right if it ever does, else where the two trees differ most in retained KV."""
    by_case: dict[tuple, dict[str, dict]] = {}
    for r in records:
        if r.get("policy") in policies and r.get("tree"):
            by_case.setdefault((r.get("qid"), r.get("width")), {})[r["policy"]] = r
    pairs = [runs for runs in by_case.values() if len(runs) == 2]
    if not pairs:
        return []

    def merit(runs: dict) -> tuple:
        first, second = runs[policies[0]], runs[policies[1]]
        return (bool(first.get("correct")), abs(first["kv"]["mean"] - second["kv"]["mean"]), -first["width"])

    best = max(pairs, key=merit)
    return [best[policies[0]], best[policies[1]]]
