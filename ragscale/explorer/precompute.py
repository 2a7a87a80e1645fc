"""Ship trees for the default view, so the Explorer opens instantly without loading a model.

``ragscale explorer-precompute`` runs the tree search of the default question at the default
settings once per policy (ETS, REBASE, beam, DVTS, best-of-N) and writes one JSON record per
tree to ``data/explorer/``; the exact command goes into that folder's README beside them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from ragscale.explorer.state import DEFAULT, POLICIES, ExplorerState
from ragscale.explorer.view import SHIPPED_TREES, TreeLibrary, pick_question, run_tree, tree_key

Progress = Callable[[int, int, str], None]


def precompute(engine, dataset, state: ExplorerState = DEFAULT, policies: Sequence[str] = POLICIES,
               out: str | Path = SHIPPED_TREES, question: str = "", skip_existing: bool = True,
               progress: Progress | None = None, retrieve=None, embed=None) -> list[dict]:
    """One tree per policy for ``state``'s (width, n, k, m) on one question; returns summaries."""
    q, _ = pick_question(dataset.questions, question or state.question)
    library = TreeLibrary(out)
    stored = library.index()
    summaries = []
    for i, policy in enumerate(policies):
        key = tree_key(state.with_(policy=policy, dataset=dataset.name), q.qid)
        if skip_existing and key in stored:
            summaries.append({"policy": policy, "path": str(stored[key]), "skipped": True})
            continue
        if progress:
            progress(i, len(policies), f"{policy}: searching")
        started = time.perf_counter()
        step = (lambda d, t, msg, i=i, policy=policy: progress(i, len(policies), f"{policy}: {msg}")) if progress else None
        record = run_tree(engine, dataset, q, key, progress=step, retrieve=retrieve, embed=embed)
        path = library.save(record, out)
        summaries.append({
            "policy": policy, "path": str(path), "skipped": False, "answer": record["answer"],
            "correct": record["correct"], "nodes": record["nodes"], "kv_mean": round(record["kv"]["mean"], 1),
            "kv_peak": record["kv"]["peak"], "prompt_tokens": record["prompt_tokens"],
            "cached_tokens": record["cached_tokens"], "seconds": round(time.perf_counter() - started, 1),
        })
    if progress:
        progress(len(policies), len(policies), "done")
    return summaries
