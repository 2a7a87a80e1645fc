"""The bundled search sweep's report (``data/search_results.md``) and the page caption beside it.

``make search-results`` runs ``ragscale search-sweep --task arithmetic --verifier rules-graded ...
--report data/search_results.md``: REBASE and ETS at several widths on the harder generated
arithmetic problems. Everything in the report is computed here from the stored rows, so the
markdown can always be regenerated from ``data/search_results.sqlite`` and says what was measured.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd

from ragscale.errors import UserError
from ragscale.search.results import (KV_MEASURES, PAPER_KV_RATIO, accuracy_intervals, as_tradeoff_table,
                                    complete_problems, frontier_kv_ratio, tradeoff_table)

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


def _interval_markdown(intervals: pd.DataFrame) -> str:
    cells = intervals.assign(cell=[f"{a:.3f} [{lo:.2f}, {hi:.2f}]" for a, lo, hi in
                                   zip(intervals["accuracy"], intervals["low"], intervals["high"])])
    pivot = cells.pivot(index="width", columns="policy", values="cell")
    pivot = pivot[[p for p in POLICY_ORDER if p in pivot.columns] + [p for p in pivot.columns if p not in POLICY_ORDER]]
    head = "| width | " + " | ".join(pivot.columns) + " |"
    lines = [head, "|---:|" + "---:|" * len(pivot.columns)]
    lines += [f"| {w} | " + " | ".join("–" if pd.isna(v) else v for v in row) + " |" for w, row in pivot.iterrows()]
    return "\n".join(lines)


def _matched_lines(table: pd.DataFrame) -> list[str]:
    """REBASE/ETS at matched accuracy read off both frontiers, for each KV measure."""
    lines = []
    for kv, label in KV_MEASURES.items():
        m = frontier_kv_ratio(table, kv)
        if m["ratio"] is None:
            lines.append(f"- {label}: no ratio ({m['reason']}).")
        else:
            lines.append(f"- {label}: at accuracy {m['accuracy']:.3f} (the highest both frontiers reach) REBASE needs "
                         f"{m['rebase_kv']:,.1f} tokens, ETS {m['ets_kv']:,.1f}: REBASE/ETS **{m['ratio']:.2f}**")
    return lines


def sweep_report(records: Iterable[Mapping[str, Any]], command: str, commit: str, load: Mapping[str, str],
                 seconds: float | None = None) -> str:
    """The markdown report of a search sweep: accuracy (bootstrap 95% intervals) and mean KV two
    ways per width per policy, the REBASE/ETS KV ratio at matched accuracy read off the frontiers,
    ETS's agreement with the public code's selection, and how the numbers were made."""
    from ragscale.search.bench import fidelity

    everything = list(records)
    if not everything:
        raise UserError("the results store has no search records to report")
    records = complete_problems(everything)  # a sweep stopped part-way: only problems done in every cell
    table = tradeoff_table(records)
    questions = sorted({r["qid"] for r in records})
    first = records[0]
    config = first.get("config") or {}
    # ETS's weights from an ETS record: another policy's record carries whatever they were when it ran
    ets = next((r.get("config") or {} for r in records if r.get("policy") == "ets"), config)
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
        f"- task `{first.get('task')}`, verifier `{first.get('verifier')}` (it never sees the gold answer), "
        f"model `{first.get('model')}`",
        f"- {len(questions)} generated problems of dataset `{first.get('dataset')}`, {len(records)} searches, "
        f"seeds {sorted({r.get('seed') for r in records})}"
        + (f" ({len(everything) - len(records)} searches of problems not yet done in every cell left out)"
           if len(everything) > len(records) else ""),
        f"- max depth {config.get('max_depth')}, step cap {config.get('step_max_tokens')} tokens, sampling "
        f"temperature {config.get('sampling_temperature')}, REBASE/ETS softmax temperature {config.get('temperature')}; "
        f"ETS lambda_b {ets.get('lambda_b')}, lambda_d {ets.get('lambda_d')}, cluster cut "
        f"{ets.get('cluster_threshold')}, KV cost `{ets.get('kv_cost')}`",
        "",
        "## Accuracy per width (share of problems answered right, bootstrap 95% interval)",
        "",
        _interval_markdown(accuracy_intervals(records)),
        "",
        "## Mean KV per width (tokens, averaged over steps and problems)",
        "",
        "Retained KV, with the prompt (what the cache holds):",
        "",
        _markdown(_pivot(table, "kv_mean"), ",.0f"),
        "",
        "Search KV, without the prompt (what a policy can prune; the public ETS code logs this one):",
        "",
        _markdown(_pivot(table, "kv_search_mean"), ",.1f"),
        "",
        "## ETS against REBASE at matched accuracy (read off the KV-vs-accuracy frontiers across widths)",
        "",
        *_matched_lines(table),
        f"- Hooper et al. 2025 report {PAPER_KV_RATIO}x (search KV) on their math benchmarks.",
    ]
    if {"ets", "rebase"} <= set(table["policy"]):
        f = fidelity(records)
        sel = f["ets_selection"]
        lines += ["", "At equal width, REBASE/ETS: "
                  + "; ".join(f"{KV_MEASURES[kv].split(' (')[0]} " + ", ".join(f"w={w}: {v:.2f}" for w, v in r.items())
                              for kv, r in f["kv_ratio_equal_width"].items()) + ".",
                  "", f"ETS's selection steps: {sel['selection_steps']}; "
                  + (f"mean clusters per candidate (K/N) {sel['mean_clusters_per_candidate']}"
                     if sel["mean_clusters_per_candidate"] is not None else "no clusters (lambda_d 0: no diversity term)")
                  + f"; candidates REBASE would fund that ETS pruned: "
                  f"{sel['funded_pruned']} (of {sel['candidates']} candidates at those steps; the margins behind it: "
                  "`bench ets-fidelity`).",
                  "", f"Replayed through the public code's selection (`ragscale.search.public_ets`): the same nodes "
                  f"kept on {f['replayed_same_nodes']} of {f['replayed_steps']} steps (ETS records with the public code's "
                  "node cost; a step with one candidate has nothing to choose and is not counted)."]
    lines += ["", "`python -m ragscale bench ets-fidelity --json` reads the same numbers from the store. "
              "Regenerate with `make search-results` (resumable: finished searches are kept in the store)."]
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
    ratios = []
    for kv, label in KV_MEASURES.items():
        m = frontier_kv_ratio(table, kv)
        ratios.append(f"{label} {m['ratio']:.2f}" if m["ratio"] is not None else f"{label}: none ({m['reason']})")
    match = frontier_kv_ratio(table)
    at = f" at matched accuracy {match['accuracy']:.3f}" if match["ratio"] is not None else ""
    return (f"Accuracy over {questions} problems: " + "; ".join(parts) + f". REBASE/ETS KV{at}, read off the "
            f"frontiers: " + ", ".join(ratios) + f" (Hooper et al. 2025: {PAPER_KV_RATIO}x less search KV for ETS).")
