"""The bundled tree library: every policy x width x (k, m, n) shape x question of the grid.

``ragscale explorer-precompute`` walks the grid in the order a room needs it (the default view's
shape and question first, its widths before other shapes), writes one JSON record per tree to
``data/explorer/`` as soon as it is searched, and skips trees already there, so it can be stopped
at any time and resumed later (on a quiet machine) with the same command.

A tree the bundled search sweep (``data/search_results.sqlite``) already holds is taken from it
instead of searched again: same question, policy and width, and exactly the settings this
library would search with (``sweep_trees`` compares them), so the arithmetic trees and the
sweep's accuracy-per-width table are the same searches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ragscale.explorer.library import GRID_SHAPES, GRID_WIDTHS, SHIPPED_TREES, TreeKey, TreeLibrary, task_of, tree_key
from ragscale.explorer.live import VERIFIERS, run_tree, search_config
from ragscale.explorer.state import POLICIES
from ragscale.search.config import ETS_ONLY_SETTINGS

Progress = Callable[[int, int, str], None]
DEFAULT_WIDTH_ORDER = (4, 16, 2, 8, 1)  # the default view's width, then the ends of the slider


def pick_questions(dataset, count: int, first: str = "") -> list:
    """``first`` (default: the first multi-hop question, a tree with iterations to show), then the
    dataset's order (the demo interleaves 1-, 2- and 3-hop questions)."""
    first = first or next((q.qid for q in dataset.questions if (q.hops or 0) >= 2), dataset.questions[0].qid)
    return sorted(dataset.questions, key=lambda q: q.qid != first)[:count]


def grid(dataset: str, questions: Sequence[str], policies: Sequence[str] = POLICIES,
         widths: Sequence[int] = GRID_WIDTHS, shapes: Sequence[tuple[int, int, int]] = GRID_SHAPES) -> list[TreeKey]:
    """Every key of the grid, most useful first: question by question; within one, the two widths
    and two shapes a demo moves between first (default view: width 4 -> 16, k 2 -> 5), then the rest."""
    order = [w for w in DEFAULT_WIDTH_ORDER if w in widths] + [w for w in widths if w not in DEFAULT_WIDTH_ORDER]
    keys = [TreeKey(dataset, qid, policy, width, n, k, m)
            for qid in questions for k, m, n in shapes for width in order for policy in policies]

    def rank(key: TreeKey) -> tuple:
        w, s = order.index(key.width), shapes.index((key.k, key.m, key.n))
        return (questions.index(key.question), w >= 2, s >= 2, s, w, policies.index(key.policy))

    return sorted(keys, key=rank)


def sweep_trees(records, dataset: str) -> dict[TreeKey, dict]:
    """Library records for every search of ``records`` (a search sweep's) that is exactly a tree
    of this library: same dataset, the task's verifier, and the settings ``search_config`` gives
    its key that the policy reads (anything else, e.g. another temperature or seed, is a different
    tree and is skipped; ETS's weights only for ETS)."""
    task = task_of(dataset)
    found: dict[TreeKey, dict] = {}
    for r in records:
        if r.get("dataset") != dataset or r.get("task") != task or r.get("verifier") != VERIFIERS.get(task):
            continue
        key = tree_key(dataset, r["qid"], r["policy"], int(r["width"]), 0, 0, 0)
        wanted = search_config(key).to_dict()  # every setting a search reads (older stores list more)
        if key.policy != "ets":  # REBASE's tree does not depend on ETS's weights (frozen after it was searched)
            wanted = {name: v for name, v in wanted.items() if name not in ETS_ONLY_SETTINGS}
        if {name: (r.get("config") or {}).get(name) for name in wanted} != wanted or not r.get("tree"):
            continue
        record = {k: v for k, v in r.items() if k not in ("key", "engine", "model")}
        record.update(key=key.to_dict(), engine={"kind": r.get("engine"), "model": r.get("model"), "url": None},
                      documents={}, source="bundled search sweep (data/search_results.sqlite)")
        found[key] = record
    return found


@dataclass
class Summary:
    trees: int = 0  # searched now
    skipped: int = 0  # already in the library
    reused: int = 0  # taken from the bundled search sweep
    seconds: float = 0.0  # searching, this run
    bytes_written: int = 0
    right: int = 0

    def to_dict(self) -> dict:
        per_minute = self.trees / (self.seconds / 60) if self.seconds else None
        return {"trees_searched": self.trees, "trees_already_there": self.skipped, "trees_from_sweep": self.reused,
                "seconds": round(self.seconds, 1), "trees_per_minute": None if per_minute is None else round(per_minute, 2),
                "mb_written": round(self.bytes_written / 1e6, 3), "answered_right": self.right}


def library_size(folder: str | Path) -> dict:
    """What the library holds and what it cost: trees, MB on disk, answered right, and trees per
    minute of search (from each record's own wall time, so stops and restarts do not count)."""
    import json

    files = list(Path(folder).glob("*.json"))
    seconds, right, answered, by_width = 0.0, 0, 0, {}
    for f in files:
        record = json.loads(f.read_text(encoding="utf-8"))
        seconds += record.get("wall_seconds", 0.0)
        right += bool(record.get("correct"))
        answered += bool(str(record.get("answer") or "").strip())  # a final answer at all, right or wrong
        by_width.setdefault(record["key"]["width"], []).append(record.get("wall_seconds", 0.0))
    return {"trees": len(files), "mb_on_disk": round(sum(f.stat().st_size for f in files) / 1e6, 2),
            "answered_right": right, "gave_an_answer": answered, "search_minutes": round(seconds / 60, 1),
            "trees_per_minute": round(len(files) / (seconds / 60), 2) if seconds else None,
            "mean_seconds_by_width": {w: round(sum(v) / len(v), 1) for w, v in sorted(by_width.items())}}


def precompute(engine, dataset, keys: Sequence[TreeKey], out: str | Path = SHIPPED_TREES, skip_existing: bool = True,
               progress: Progress | None = None, retrieve=None, embed=None, deadline: float | None = None,
               on_tree: Callable[[TreeKey, dict], None] | None = None,
               from_sweep: dict[TreeKey, dict] | None = None) -> Summary:
    """Search every key not yet in ``out`` (or all with ``skip_existing=False``), taking the trees
    ``from_sweep`` holds instead of searching them; stop cleanly at ``deadline`` (a ``time.time()``),
    between two trees. ``engine`` may be None when every key is stored or in ``from_sweep``."""
    library = TreeLibrary(out)
    stored = library.index()
    questions = {q.qid: q for q in dataset.questions}
    summary = Summary()
    keys = list(keys)
    for i, key in enumerate(keys):
        if skip_existing and key in stored:
            summary.skipped += 1
            continue
        if from_sweep and key in from_sweep:
            path = library.save(from_sweep[key], out)
            summary.reused += 1
            summary.bytes_written += path.stat().st_size
            summary.right += bool(from_sweep[key]["correct"])
            continue
        if deadline is not None and time.time() >= deadline:
            break
        label = f"{key.question} {key.policy} w={key.width} k={key.k} m={key.m} n={key.n}"
        step = (lambda d, t, msg, i=i, label=label: progress(i, len(keys), f"{label}: {msg}")) if progress else None
        started = time.perf_counter()
        record = run_tree(engine, dataset, questions[key.question], key, progress=step, retrieve=retrieve, embed=embed)
        summary.seconds += time.perf_counter() - started
        path = library.save(record, out)
        summary.trees += 1
        summary.bytes_written += path.stat().st_size
        summary.right += bool(record["correct"])
        if on_tree:
            on_tree(key, record)
    if progress:
        progress(len(keys), len(keys), "done")
    return summary
