"""The public ETS code's selection step, re-stated as the reference ``policies.ets`` is checked against.

SqueezeAILab/ETS (``rebase.py``, ``select_softmax_costmodel``) selects at every depth as follows;
this module says the same in its own words (nothing is copied) and shares no code with
``policies.ets``, so that a replay of recorded candidate sets through both is a real check:

1. Outcome shares: REBASE's ceil allocation of the remaining width over the candidates by
   exp(score / T), in descending score order (ties: the earlier candidate first), each share
   divided by the width.
2. The program, with pairwise links: one ``y_j >= x_i`` per (ancestor j, candidate i below it)
   and ``y_j <= sum of the candidates below j``; every one of the M ancestors (the root among
   them) and N candidates costs 1 / (M + N); diversity weight lambda_d / K over the K clusters,
   only when lambda_d > 0 and the candidates' newest steps are not all the same text; at least
   one candidate kept. The public code turns lambda_b = 0 into a reward of 1e-4 per node (its
   guard against a zero weight); that is kept here too.
3. REBASE again over the kept candidates only (weights exp(score / T)), in descending order
   with ties to the later candidate (the public code sorts ascending, then reverses); a kept
   candidate whose ceil share comes to 0 (the width ran out) is not continued.

Ties. The program's optimum is often not unique (the ceil gives the tail an outcome share of 0,
and any zero-share sibling then covers its cluster at the same cost); the public code keeps
whatever CBC returns. Both sides therefore apply one stated rule: among the optimal selections,
the one whose kept candidates rank best (a second program: first objective held at its
optimum, sum over kept candidates of N..1 by descending score, earlier first, maximised).

Differences that are not the selection's and are left out: the public code works in float32
torch tensors (this reference in float64, as ``policies.ets``), and solves with CBC (here
scipy's HiGHS; ``bench ets-select`` compares the two solvers on the same program).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


@dataclass(frozen=True)
class RecordedStep:
    """One selection step as a stored tree shows it."""

    depth: int
    candidates: list[int]  # node ids, in the order the search listed them
    parents: dict[int, int | None]  # node id -> parent id, for every node of the tree
    scores: list[float]  # of the candidates (None counts 0)
    texts: list[str]  # each candidate's newest step
    clusters: list[int] | None  # each candidate's recorded cluster label (None: no diversity term)
    width: int  # width still to hand out
    children: dict[int, int]  # what the search gave each candidate


def _ceil_shares(weights: Sequence[float], width: int, order: Sequence[int]) -> list[int]:
    """REBASE's ceil rule: walking ``order``, each gets ceil(left * w / remaining weight).

    In exact rational arithmetic: the public code subtracts float32 weights as it goes, and the
    rounding can leave the last weight a hair above what remains, so that it hands out one child
    more than the width (ceil(1.0000001) = 2). That is an accident of the arithmetic, not the rule.
    """
    exact = [Fraction(w) for w in weights]
    out = [0] * len(weights)
    left, rest = width, sum((exact[i] for i in order), Fraction(0))
    for i in order:
        if rest <= 0:
            break
        out[i] = math.ceil(left * exact[i] / rest)
        left -= out[i]
        rest -= exact[i]
    return out


def outcome_shares(scores: Sequence[float], width: int, temperature: float) -> np.ndarray:
    weights = [math.exp(s / temperature) for s in scores]
    first_on_ties = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)  # stable
    counts = _ceil_shares(weights, width, first_on_ties)
    total = sum(counts)
    return np.array(counts, dtype=float) / total if total else np.zeros(len(scores))


def keep_set(step: RecordedStep, lambda_b: float, lambda_d: float, temperature: float) -> list[int]:
    """The candidates the public code's program keeps."""
    n = len(step.candidates)
    index = {c: i for i, c in enumerate(step.candidates)}
    below: dict[int, list[int]] = {}
    for c in step.candidates:
        parent = step.parents[c]
        while parent is not None:
            below.setdefault(parent, []).append(index[c])
            parent = step.parents[parent]
    branches = list(below)
    m = len(branches)
    labels = step.clusters
    use_diversity = lambda_d > 0 and n > 1 and len(set(step.texts)) > 1 and labels is not None
    groups = sorted(set(labels)) if use_diversity else []
    k = len(groups)
    node_weight = 1e-4 if lambda_b == 0 else -lambda_b  # the public code's guard
    cost = node_weight / (m + n)
    objective = np.concatenate([
        outcome_shares(step.scores, step.width, temperature) + cost,
        np.full(m, cost),
        np.full(k, lambda_d / k if k else 0.0),
    ])
    rows: list[np.ndarray] = []
    lower: list[float] = []
    upper: list[float] = []

    def row(entries: Mapping[int, float], lo: float, hi: float) -> None:
        r = np.zeros(n + m + k)
        for col, v in entries.items():
            r[col] += v
        rows.append(r)
        lower.append(lo)
        upper.append(hi)

    for j, branch in enumerate(branches):
        for i in below[branch]:
            row({n + j: 1.0, i: -1.0}, 0.0, np.inf)  # y_j >= x_i
        row({n + j: 1.0, **{i: -1.0 for i in below[branch]}}, -np.inf, 0.0)  # y_j <= sum x_i
    for q, g in enumerate(groups):
        row({n + m + q: 1.0, **{i: -1.0 for i in range(n) if labels[i] == g}}, -np.inf, 0.0)
    row({i: 1.0 for i in range(n)}, 1.0, np.inf)
    links = LinearConstraint(np.array(rows), lower, upper)
    binary = {"integrality": np.ones(n + m + k), "bounds": Bounds(0, 1), "options": {"mip_rel_gap": 0.0}}
    res = milp(-objective, constraints=links, **binary)
    if res.x is None:
        raise RuntimeError(f"reference program not solved: {res.message}")
    rank = sorted(range(n), key=lambda i: (-step.scores[i], i))
    preference = np.zeros(n + m + k)
    for position, i in enumerate(rank):
        preference[i] = n - position
    at_optimum = LinearConstraint(objective.reshape(1, -1), -res.fun - 1e-9, np.inf)
    tied = milp(-preference, constraints=[links, at_optimum], **binary)
    x = res.x if tied.x is None else tied.x
    return [c for c, v in zip(step.candidates, x[:n]) if v > 0.5]


def select(step: RecordedStep, lambda_b: float, lambda_d: float, temperature: float) -> dict[int, int]:
    """Children per candidate, as the public code would hand them out."""
    kept = set(keep_set(step, lambda_b, lambda_d, temperature))
    scores = [s / temperature if c in kept else -math.inf for c, s in zip(step.candidates, step.scores)]
    ascending = sorted(range(len(scores)), key=lambda i: scores[i])
    weights = [math.exp(s) if s > -math.inf else 0.0 for s in scores]
    counts = _ceil_shares(weights, step.width, ascending[::-1])
    return dict(zip(step.candidates, counts))


def recorded_steps(record: Mapping[str, Any]) -> list[RecordedStep]:
    """Every selection step of a stored search with at least two candidates (one candidate has
    nothing to choose), rebuilt from its tree: the candidates of step t are the unfinished nodes
    of depth t, the width left is the width minus the leaves finished by then, and what the
    search did is each candidate's number of children."""
    nodes = record["tree"]["nodes"]
    width = int(record["config"]["width"])
    parents = {n["id"]: n["parent"] for n in nodes}
    children: dict[int, int] = {n["id"]: 0 for n in nodes}
    for n in nodes:
        if n["parent"] is not None:
            children[n["parent"]] += 1
    steps = []
    for depth in range(len(record["kv"]["per_step"])):  # one kv figure per selection made
        cands = [n for n in nodes if n["depth"] == depth and not n["finished"]]
        if len(cands) < 2:
            continue
        finished = sum(1 for n in nodes if n["finished"] and n["depth"] <= depth)
        labels = [n["cluster"] for n in cands]
        steps.append(RecordedStep(
            depth=depth, candidates=[n["id"] for n in cands], parents=parents,
            scores=[float(n["score"] or 0.0) for n in cands], texts=[n["text"] for n in cands],
            clusters=None if any(lab is None for lab in labels) else labels,
            width=width - finished, children={n["id"]: children[n["id"]] for n in cands}))
    return steps


def replay(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every selection step of the ETS records through the reference: on how many it keeps the
    same nodes as the search did (and hands out the same children)."""
    steps = same_keep = same_children = 0
    disagreements = []
    for record in records:
        c = record["config"]
        if c.get("policy") != "ets" or c.get("kv_cost") != "nodes":
            continue  # the matching setting only: the public code's node cost
        for step in recorded_steps(record):
            ref = select(step, c["lambda_b"], c["lambda_d"], c["temperature"])
            steps += 1
            ours_kept = {i for i, k in step.children.items() if k > 0}
            ref_kept = {i for i, k in ref.items() if k > 0}
            same_keep += ours_kept == ref_kept
            same_children += ref == step.children
            if ours_kept != ref_kept and len(disagreements) < 5:
                disagreements.append({"qid": record.get("qid"), "width": c["width"], "depth": step.depth,
                                      "ours": sorted(ours_kept), "reference": sorted(ref_kept)})
    return {"steps": steps, "same_keep": same_keep, "same_children": same_children,
            "agreement": same_keep / steps if steps else None, "disagreements": disagreements}
