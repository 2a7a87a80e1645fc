"""The bundled search sweep's report (``data/search_results.md``) and the page caption beside it.

``make search-results`` runs ``ragscale search-sweep --task arithmetic --verifier rules ...
--report data/search_results.md``: BoN, beam, DVTS, REBASE and ETS at widths 1-32 on generated
arithmetic problems. Everything in the report is computed here from the stored rows, so the
markdown can always be regenerated from ``data/search_results.sqlite`` and says what was measured.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd

from ragscale.errors import UserError
from ragscale.search.results import PAPER_KV_RATIO, as_tradeoff_table, matched_accuracy_kv_ratio, tradeoff_table

POLICY_ORDER = ("bon", "beam", "dvts", "rebase", "ets")


def _pivot(table: pd.DataFrame, value: str) -> pd.DataFrame:
    pivot = table.pivot(index="width", columns="policy", values=value)
    return pivot[[p for p in POLICY_ORDER if p in pivot.columns] + [p for p in pivot.columns if p not in POLICY_ORDER]]


def _markdown(frame: pd.DataFrame, fmt: str) -> str:
    head = "| width | " + " | ".join(frame.columns) + " |"
    rule = "|---:|" + "---:|" * len(frame.columns)
    lines = [head, rule]
    for width, row in frame.iterrows():
        cells = ["–" if pd.isna(v) else format(v, fmt) for v in row]
        lines.append(f"| {width} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_report(records: Iterable[Mapping[str, Any]], command: str, commit: str, load: Mapping[str, str],
                 seconds: float | None = None) -> str:
    """The markdown report of a search sweep: accuracy and mean retained KV per width per policy,
    the REBASE/ETS KV ratio at matched accuracy, and how the numbers were made."""
    records = list(records)
    if not records:
        raise UserError("the results store has no search records to report")
    table = tradeoff_table(records)
    questions = sorted({r["qid"] for r in records})
    first = records[0]
    config = first.get("config") or {}
    match = matched_accuracy_kv_ratio(table)
    per_width = _pivot(table, "kv_mean")
    searching = sum(float(r.get("wall_seconds") or 0) for r in records)
    lines = [
        "# Bundled tree-search sweep (arithmetic task, rule-based process verifier)",
        "",
        f"Made by `{command}` at commit `{commit}`"
        + (f" in {seconds / 60:.1f} min" if seconds is not None else " (resumed: some rows came from an earlier run)")
        + f"; the searches themselves took {searching / 60:.1f} min (sum of the rows' wall times, model load excluded).",
        f"Machine load (`uptime`): before {load.get('before', '?')}; after {load.get('after', '?')}. "
        "A 2-core machine shared with other jobs: times are indicative only; accuracy and KV do not depend on them.",
        "",
        f"- task `{first.get('task')}`, verifier `{first.get('verifier')}` (arithmetic right, numbers available; "
        f"it never sees the gold answer), model `{first.get('model')}`",
        f"- {len(questions)} generated problems (`arithmetic_dataset`, seed 0, the first {len(questions)}), "
        f"{len(records)} searches, seeds {sorted({r.get('seed') for r in records})}",
        f"- max depth {config.get('max_depth')}, step cap {config.get('step_max_tokens')} tokens, sampling "
        f"temperature {config.get('sampling_temperature')}; each policy's own recipe otherwise "
        f"(REBASE/ETS softmax temperature {config.get('temperature')})",
        "",
        "## Accuracy per width (share of problems answered right)",
        "",
        _markdown(_pivot(table, "accuracy"), ".3f"),
        "",
        "## Mean retained KV per width (tokens, averaged over steps and problems)",
        "",
        _markdown(per_width, ",.0f"),
        "",
        "## ETS against REBASE at matched accuracy",
        "",
    ]
    if match["ratio"] is None:
        lines.append(f"No ratio: {match['reason']}.")
    else:
        lines.append(
            f"Highest accuracy both reach: {match['accuracy']:.3f}. REBASE reaches it at width {match['rebase_width']} "
            f"with {match['rebase_kv']:,.0f} tokens of mean retained KV, ETS at width {match['ets_width']} with "
            f"{match['ets_kv']:,.0f}: REBASE/ETS KV ratio **{match['ratio']:.2f}** "
            f"(Hooper et al. 2025 report {PAPER_KV_RATIO}x on their math benchmarks).")
    if {"ets", "rebase"} <= set(per_width.columns):
        same = (per_width["rebase"] / per_width["ets"]).round(2)
        lines += ["", "At equal width, REBASE/ETS mean retained KV: "
                  + ", ".join(f"w={w}: {v:.2f}" for w, v in same.items() if pd.notna(v)) + "."]
        if same.dropna().eq(1.0).all():
            lines += ["", "ETS kept as much as REBASE at every width. Why, on pass/fail step scores: every candidate "
                      "REBASE funds has an outcome share of at least 1 / width, while pruning it saves only its KV "
                      "share (its tokens over all the tree's, prompt included), which is smaller for steps this "
                      "short; the program prunes only what REBASE gives nothing. Shown in "
                      "`tests/test_ets_milp.py::test_why_ets_built_rebases_tree_on_the_arithmetic_sweep`."]
    lines += ["", "Regenerate with `make search-results` (resumable: finished searches are kept in the store)."]
    return "\n".join(lines) + "\n"


def sweep_note(records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> str:
    """One paragraph for a page caption: accuracy from the narrowest to the widest width per
    policy and the REBASE/ETS KV ratio at matched accuracy, all computed from ``records`` (or
    their ``tradeoff_table``)."""
    table = as_tradeoff_table(records)
    if table.empty:
        return "No search records."
    questions = int(table["questions"].max())
    parts = []
    for policy in [p for p in POLICY_ORDER if p in set(table["policy"])]:
        part = table[table["policy"] == policy].sort_values("width")
        lo, hi = part.iloc[0], part.iloc[-1]
        parts.append(f"{policy} {lo['accuracy']:.3f} at width {int(lo['width'])} -> {hi['accuracy']:.3f} at "
                     f"{int(hi['width'])}")
    match = matched_accuracy_kv_ratio(table)
    ratio = (f"REBASE/ETS retained-KV ratio at matched accuracy {match['accuracy']:.3f}: {match['ratio']:.2f}"
             if match["ratio"] is not None else f"no REBASE/ETS KV ratio ({match['reason']})")
    return (f"Accuracy over {questions} problems: " + "; ".join(parts) + f". {ratio} "
            f"(Hooper et al. 2025: {PAPER_KV_RATIO}x less KV for ETS).")
