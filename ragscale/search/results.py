"""Search-sweep results as a trade-off: accuracy against retained KV per policy and width.

``ragscale search-sweep`` writes one record per (question, policy, width, seed); this module
reads them back as the table the Tree search page, ``bench kv`` and the README report, beside
the paper's reference point (Hooper et al. 2025: ETS keeps 1.8x less KV than REBASE at matched
accuracy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from ragscale.config import DATA_DIR

# The bundled sweep the Tree search page opens on (made by the command in data/search_results.md).
BUNDLED_SEARCH_SWEEP = DATA_DIR / "search_results.sqlite"
# The problems of the bundled sweep (``make search-results``: two operations, seed 1). The same store
# also keeps the three-operation ``arithmetic-s1`` sweep (``make search-results-3op``) and the
# ``arithmetic`` searches the Explorer's shipped trees were copied from.
BUNDLED_SWEEP_DATASET = "arithmetic-s1-o2"
# ETS and REBASE at width 16 on problems of a seed the bundled sweep never used (bench ets-fidelity).
BUNDLED_HELD_OUT = DATA_DIR / "search_heldout.sqlite"
# ETS's lambda_d and cluster cut were chosen on these dev-split searches (``bench ets-tuning``).
ETS_DEV_STORE = DATA_DIR / "ets_dev.sqlite"
# Single runs shown when no bundled sweep is there (made as data/trees/README.md says).
EXAMPLE_TREES = DATA_DIR / "trees"
# Hooper et al. 2025: REBASE's retained KV over ETS's at matched accuracy.
PAPER_KV_RATIO = 1.8
PAPER_REFERENCE = "Hooper et al. 2025: ETS keeps 1.8x less KV than REBASE at matched accuracy"

# kv_mean: retained KV with the prompt (what the cache holds); kv_search_mean: without it (what a
# policy can prune; the public ETS code's logged KV, hence the paper's ratio). Both token means.
COLUMNS = ["policy", "width", "accuracy", "kv_mean", "questions", "kv_search_mean"]
KV_MEASURES = {"kv_mean": "retained KV (with the prompt)", "kv_search_mean": "search KV (without the prompt)"}


def tradeoff_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Per (policy, width): accuracy, mean retained KV, the number of questions, mean search KV."""
    from ragscale.search.kv import record_kv

    rows = []
    for r in records:
        kv = record_kv(r)
        rows.append({"policy": r.get("policy"), "width": r.get("width"), "correct": float(bool(r.get("correct"))),
                     "kv_mean": kv["mean"], "kv_search_mean": kv["search_mean"]})
    frame = pd.DataFrame(rows, columns=["policy", "width", "correct", "kv_mean", "kv_search_mean"])
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    grouped = frame.groupby(["policy", "width"], as_index=False).agg(
        accuracy=("correct", "mean"), kv_mean=("kv_mean", "mean"), questions=("correct", "size"),
        kv_search_mean=("kv_search_mean", "mean"))
    return grouped.sort_values(["policy", "width"]).reset_index(drop=True)[COLUMNS]


def accuracy_interval(correct: Iterable[float], level: float = 0.95, resamples: int = 4000,
                      seed: int = 0) -> tuple[float, float]:
    """Bootstrap percentile interval of the mean of 0/1 outcomes (problems resampled)."""
    from scipy.stats import bootstrap

    x = np.asarray(list(correct), dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    if np.all(x == x[0]):  # no spread to resample: the interval is the point
        return (float(x[0]), float(x[0]))
    res = bootstrap((x,), np.mean, confidence_level=level, n_resamples=resamples, method="percentile",
                    random_state=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def accuracy_intervals(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Per (policy, width): accuracy and its bootstrap 95% interval over the problems."""
    frame = pd.DataFrame([{"policy": r.get("policy"), "width": r.get("width"),
                           "correct": float(bool(r.get("correct")))} for r in records],
                         columns=["policy", "width", "correct"])
    rows = []
    for (policy, width), part in frame.groupby(["policy", "width"]):
        lo, hi = accuracy_interval(part["correct"])
        rows.append({"policy": policy, "width": width, "accuracy": part["correct"].mean(), "low": lo, "high": hi,
                     "questions": len(part)})
    return pd.DataFrame(rows, columns=["policy", "width", "accuracy", "low", "high", "questions"])


def frontier(table: pd.DataFrame, policy: str, kv: str = "kv_mean") -> list[tuple[float, float]]:
    """The policy's KV-vs-accuracy frontier across widths: (KV, accuracy) points by rising KV,
    each more accurate than every cheaper one (a width that costs more for no gain is left out)."""
    part = table[table["policy"] == policy].sort_values([kv, "accuracy"], ascending=[True, False])
    points, best = [], -np.inf
    for k, a in zip(part[kv], part["accuracy"]):
        if a > best + 1e-12:
            points.append((float(k), float(a)))
            best = a
    return points


def kv_on_frontier(points: list[tuple[float, float]], accuracy: float) -> float | None:
    """KV at which the frontier reaches ``accuracy``, linear between its points; None if never."""
    previous = None
    for k, a in points:
        if a >= accuracy - 1e-12:
            if previous is None or accuracy <= previous[1]:
                return k
            k0, a0 = previous
            return k0 + (accuracy - a0) / (a - a0) * (k - k0)
        previous = (k, a)
    return None


def frontier_kv_ratio(table: pd.DataFrame, kv: str = "kv_mean", high: str = "rebase", low: str = "ets") -> dict:
    """REBASE's KV over ETS's at matched accuracy, read off both frontiers across widths.

    The target is the highest accuracy both frontiers reach; each policy's KV there is read off
    its own frontier (linear between the two widths around the target), not taken at one width.
    """
    points = {p: frontier(table, p, kv) for p in (high, low)}
    if not all(points.values()):
        return {"accuracy": None, "ratio": None, "reason": f"no {high} or {low} rows"}
    target = min(pts[-1][1] for pts in points.values())
    if target <= 0:
        return {"accuracy": target, "ratio": None, "reason": "neither policy is ever right"}
    kv_high, kv_low = kv_on_frontier(points[high], target), kv_on_frontier(points[low], target)
    return {"accuracy": target, "ratio": kv_high / kv_low, f"{high}_kv": kv_high, f"{low}_kv": kv_low,
            "kv": kv, "reason": ""}


def as_tradeoff_table(records_or_table) -> pd.DataFrame:
    """``tradeoff_table`` of search records, or the table itself when it is one already."""
    if isinstance(records_or_table, pd.DataFrame):
        return records_or_table
    return tradeoff_table(records_or_table)


def kv_at_accuracy(table: pd.DataFrame, policy: str, accuracy: float) -> tuple[float, int] | None:
    """(mean retained KV, width) of the cheapest width at which ``policy`` reaches ``accuracy``."""
    part = table[(table["policy"] == policy) & (table["accuracy"] >= accuracy - 1e-9)]
    if part.empty:
        return None
    best = part.sort_values("kv_mean").iloc[0]
    return float(best["kv_mean"]), int(best["width"])


def matched_accuracy_kv_ratio(table: pd.DataFrame, high: str = "rebase", low: str = "ets") -> dict[str, Any]:
    """REBASE's KV over ETS's KV at the highest accuracy both reach (Hooper et al.'s comparison).

    Each policy's KV is that of its cheapest width reaching the target accuracy; the target is
    the smaller of the two policies' best accuracies, so both really reach it. No ratio (None,
    with the reason) when one policy has no rows or the target is 0: never right matches nothing.
    """
    best = {p: table.loc[table["policy"] == p, "accuracy"].max() for p in (high, low)}
    if any(pd.isna(v) for v in best.values()):
        return {"accuracy": None, "ratio": None, "reason": f"no {high} or {low} rows"}
    target = float(min(best.values()))
    if target <= 0:
        return {"accuracy": target, "ratio": None, "reason": "neither policy is ever right"}
    kv_high, width_high = kv_at_accuracy(table, high, target)
    kv_low, width_low = kv_at_accuracy(table, low, target)
    return {"accuracy": target, "ratio": kv_high / kv_low, f"{high}_kv": kv_high, f"{high}_width": width_high,
            f"{low}_kv": kv_low, f"{low}_width": width_low, "reason": ""}


def load_sweep_records(path: str | Path) -> list[dict]:
    """Every search record in a results store ([] when the file does not exist)."""
    from ragscale.store import ResultsStore

    if not Path(path).is_file():
        return []
    return ResultsStore(path, read_only=True).records("search")  # a viewer's store is never written


def sweep_cell(record: Mapping[str, Any]) -> tuple:
    """What tells one arm of a comparison from another: policy, width and ETS's KV cost."""
    config = record.get("config") or {}
    return (record.get("policy"), record.get("width"), config.get("kv_cost") if record.get("policy") == "ets" else None)


def complete_problems(records: list[dict]) -> list[dict]:
    """The records of the problems searched in every cell (``sweep_cell``) the records have: a
    sweep stopped part-way (or run by several workers) then still compares like with like."""
    cells = {sweep_cell(r) for r in records}
    have: dict[str, set] = {}
    for r in records:
        have.setdefault(r["qid"], set()).add(sweep_cell(r))
    done = {qid for qid, seen in have.items() if seen == cells}
    return [r for r in records if r["qid"] in done]


def of_bundled_sweep(records: list[dict], path: str | Path) -> list[dict]:
    """The bundled store's records of the bundled sweep's problems (all of them when it holds none
    of those); any other store's, all of them."""
    if Path(path).resolve() != BUNDLED_SEARCH_SWEEP.resolve():
        return records
    return [r for r in records if r.get("dataset") == BUNDLED_SWEEP_DATASET] or records


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
