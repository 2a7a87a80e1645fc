"""ETS (Hooper et al. 2025): prune with an integer program, then REBASE among the kept nodes.

At every depth, with N candidates, the M distinct nodes above them (root included) and K
semantic clusters of their newest steps:

    maximise   sum_i O_i x_i  -  lambda_b * (sum_j cost_j y_j + sum_i cost_i x_i) / Z
               + (lambda_d / K) * sum_k c_k
    subject to y_j >= x_i           for every candidate i below ancestor j
               y_j <= sum_{i below j} x_i
               c_k <= sum_{i in k} x_i
               sum_i x_i >= 1,      x, y, c binary

O_i is node i's REBASE share of the remaining width, normalised to sum to 1. A retained
ancestor is paid once, however many kept candidates share it: that is what rewards trees whose
survivors share KV.

KV cost, two ways (``kv_cost``):

- ``"nodes"``: every node costs 1 and Z = M + N, the root counted: the public code's
  formulation (SqueezeAILab/ETS ``rebase.py``), which ``ragscale.search.public_ets`` re-states
  as the reference this program is checked against.
- ``"tokens"``: a node costs its tokens and Z is the search's own tokens, the root (the prompt)
  left out of both. The prompt is always retained, so its cost is a constant that changes no
  decision; inside Z it would only shrink lambda_b in effect (a 170-token prompt over 8-token
  steps cuts it to about 0.3-0.6, and the program then prunes nothing REBASE funds).

Either way the cost term is the share of the search's candidate-tree KV that stays retained,
in [0, lambda_b].

Solved with scipy's MILP (HiGHS) on a sparse matrix. The linking constraints are stated
along tree edges rather than for every (ancestor, descendant) pair: "a node is at most its
parent" and "a retained ancestor has a retained or kept child". By induction over the tree
these admit exactly the same binary points as the paper's pairwise form (y_j = 1 iff a kept
candidate lies below j), with N + M rows instead of one per pair and a tighter LP relaxation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix, csr_matrix

from ragscale.search.clustering import cluster_texts
from ragscale.search.config import SearchConfig
from ragscale.search.policies.base import Embed, rebase_shares, score_of, zero_allocation
from ragscale.search.tree import Tree


@dataclass
class EtsProgram:
    """The integer program of one selection step, in both readable and matrix form.

    Variable order: x (candidates), y (ancestors), c (clusters).
    """

    candidates: list[int]
    ancestors: list[int]  # node id of each y variable
    below: list[list[int]]  # for each ancestor, indices (into candidates) of the candidates below it
    clusters: np.ndarray  # cluster label of each candidate, 0..K-1 (all -1: no diversity term)
    outcome: np.ndarray  # O_i, sums to 1
    cost_x: np.ndarray  # KV cost of each candidate (tokens or 1)
    cost_y: np.ndarray  # KV cost of each ancestor
    lambda_b: float
    lambda_d: float
    c: np.ndarray  # objective coefficients, *maximised*
    A: csr_matrix
    lb: np.ndarray
    ub: np.ndarray
    preference: np.ndarray  # tie rule among optimal selections: N for the best-scored candidate .. 1

    @property
    def n_clusters(self) -> int:
        return int(self.clusters.max()) + 1

    @property
    def normaliser(self) -> float:
        return max(float(self.cost_x.sum() + self.cost_y.sum()), 1e-12)

    def value(self, keep: np.ndarray) -> float:
        """Objective of keeping the candidates where ``keep`` is true, with y and c at their best
        (an ancestor is retained iff a kept candidate is below it; a cluster is covered iff one
        of its candidates is kept)."""
        keep = np.asarray(keep, dtype=bool)
        retained = np.array([keep[b].any() for b in self.below], dtype=bool)
        cost = self.cost_x[keep].sum() + self.cost_y[retained].sum()
        k = self.n_clusters
        coverage = self.lambda_d / k * np.unique(self.clusters[keep]).size if k else 0.0
        return float(self.outcome[keep].sum() - self.lambda_b * cost / self.normaliser + coverage)


@dataclass
class EtsSolution:
    keep: list[int]  # candidate ids kept
    retained: list[int]  # ancestor ids retained
    objective: float  # as reported by the solver
    program: EtsProgram


def node_cost(tree: Tree, node_id: int, kv_cost: str) -> float:
    """1 per node (the public code, root included); tokens per node with the root's prompt free."""
    if kv_cost == "nodes":
        return 1.0
    return 0.0 if tree[node_id].parent is None else float(tree[node_id].num_tokens)


def build_program(
    tree: Tree, candidates: list[int], remaining_width: int, config: SearchConfig, clusters: np.ndarray | None = None
) -> EtsProgram:
    """The program for ``candidates``; ``clusters`` None means no diversity term (K = 0)."""
    n = len(candidates)
    if n == 0:
        raise ValueError("ETS needs at least one candidate")
    cand_index = {node_id: i for i, node_id in enumerate(candidates)}
    anc_index: dict[int, int] = {}
    below: list[list[int]] = []
    for i, node_id in enumerate(candidates):
        for a in tree.ancestors(node_id):
            if a in cand_index:
                raise ValueError(f"candidate {a} is an ancestor of candidate {node_id}")
            if a not in anc_index:
                anc_index[a] = len(below)
                below.append([])
            below[anc_index[a]].append(i)
    ancestors = list(anc_index)
    m = len(ancestors)

    scores = [score_of(tree, i) for i in candidates]
    shares = np.array(rebase_shares(scores, remaining_width, config.temperature), dtype=float)
    outcome = shares / shares.sum() if shares.sum() > 0 else np.full(n, 1.0 / n)
    cost_x = np.array([node_cost(tree, i, config.kv_cost) for i in candidates])
    cost_y = np.array([node_cost(tree, j, config.kv_cost) for j in ancestors])
    if clusters is None:
        labels = np.full(n, -1)
        k = 0
    else:
        labels = np.asarray(clusters, dtype=int)
        if labels.shape != (n,):
            raise ValueError(f"expected {n} cluster labels, got shape {labels.shape}")
        labels = np.unique(labels, return_inverse=True)[1].astype(int)  # 0..K-1, no empty cluster
        k = int(labels.max()) + 1
    z = max(float(cost_x.sum() + cost_y.sum()), 1e-12)
    c = np.concatenate([
        outcome - config.lambda_b * cost_x / z,
        -config.lambda_b * cost_y / z,
        np.full(k, config.lambda_d / k if k else 0.0),
    ])

    # Columns: x (candidates) 0..n-1, y (ancestors) n..n+m-1, c (clusters) n+m..n+m+k-1.
    # Each constraint row is  lower <= sum(value * variable) <= upper,  kept as sparse triplets.
    column = {node_id: i for i, node_id in enumerate(candidates)}
    column.update({a: n + j for j, a in enumerate(ancestors)})
    rows, cols, vals, lower, upper = [], [], [], [], []

    def add_row(entries, lo, hi):
        for col, value in entries:
            rows.append(len(lower))
            cols.append(col)
            vals.append(value)
        lower.append(lo)
        upper.append(hi)

    children: dict[int, list[int]] = {a: [] for a in ancestors}
    for node_id, col in column.items():
        parent = tree[node_id].parent
        if parent is not None:  # the parent of any node here is an ancestor, hence a column too
            children[parent].append(col)
            add_row([(col, 1.0), (column[parent], -1.0)], -np.inf, 0.0)  # a node is at most its parent
    for a in ancestors:  # a retained ancestor has a retained or kept child
        add_row([(column[a], 1.0)] + [(col, -1.0) for col in children[a]], -np.inf, 0.0)
    for q in range(k):  # a cluster is covered only by a kept candidate in it
        add_row([(n + m + q, 1.0)] + [(i, -1.0) for i in np.flatnonzero(labels == q)], -np.inf, 0.0)
    add_row([(i, 1.0) for i in range(n)], 1.0, np.inf)  # keep at least one candidate
    A = coo_matrix((vals, (rows, cols)), shape=(len(lower), n + m + k)).tocsr()
    return EtsProgram(
        candidates=list(candidates),
        ancestors=ancestors,
        below=below,
        clusters=labels,
        outcome=outcome,
        cost_x=cost_x,
        cost_y=cost_y,
        lambda_b=config.lambda_b,
        lambda_d=config.lambda_d,
        c=c,
        A=A,
        lb=np.array(lower),
        ub=np.array(upper),
        preference=_preference(scores),
    )


def _preference(scores: list[float]) -> np.ndarray:
    """N for the best-scored candidate down to 1 for the worst (equal scores: earlier first)."""
    n = len(scores)
    order = sorted(range(n), key=lambda i: (-scores[i], i))
    out = np.zeros(n)
    out[order] = np.arange(n, 0, -1)
    return out


def solve_program(program: EtsProgram) -> EtsSolution:
    n = len(program.candidates)
    res = milp(
        -program.c,  # milp minimises
        integrality=np.ones(len(program.c)),
        bounds=Bounds(0, 1),
        constraints=LinearConstraint(program.A, program.lb, program.ub),
        # exact optimum; presolve off because on these small, already tight programs it costs
        # more than it saves (measured with ``ragscale bench ets-select``)
        options={"mip_rel_gap": 0.0, "presolve": False},
    )
    if res.x is None:  # cannot happen for this program (keeping everything is feasible)
        raise RuntimeError(f"ETS program not solved: {res.message}")
    x = _break_ties(program, float(-res.fun), res.x)
    keep_mask = x[:n] > 0.5
    keep = [node_id for node_id, k in zip(program.candidates, keep_mask) if k]
    retained = [a for a, b in zip(program.ancestors, program.below) if keep_mask[b].any()]
    return EtsSolution(keep=keep, retained=retained, objective=float(-res.fun), program=program)


def _break_ties(program: EtsProgram, best: float, x: np.ndarray) -> np.ndarray:
    """Among the selections as good as ``best``, the one that keeps the best-scored candidates.

    Optima tie often: the REBASE ceil gives the tail of the candidates an outcome share of 0, and
    any zero-share sibling then covers its cluster at the same cost. The public code takes
    whichever CBC returns; a stated rule makes the choice reproducible and lets the replay
    against the reference (``public_ets``, same rule) compare node for node. Solved as a second
    program: the first objective held at its optimum, the preference maximised.
    """
    n = len(program.candidates)
    if n < 2:
        return x
    objective_row = csr_matrix(program.c.reshape(1, -1))
    tie = np.concatenate([program.preference, np.zeros(len(program.c) - n)])
    res = milp(
        -tie,
        integrality=np.ones(len(program.c)),
        bounds=Bounds(0, 1),
        constraints=[LinearConstraint(program.A, program.lb, program.ub),
                     LinearConstraint(objective_row, best - 1e-9, np.inf)],
        options={"mip_rel_gap": 0.0, "presolve": False},
    )
    return x if res.x is None else res.x


def candidate_clusters(
    tree: Tree, candidates: list[int], config: SearchConfig, embed: Embed | None
) -> np.ndarray | None:
    """Clusters of the candidates' newest steps, or None when the diversity term is off."""
    if config.lambda_d == 0 or len(candidates) < 2:
        return None
    if embed is None:
        raise ValueError("ETS with lambda_d > 0 needs an embed function for the semantic clusters")
    return cluster_texts([tree[i].text for i in candidates], embed, config.cluster_threshold)


def solve_selection(
    tree: Tree, candidates: list[int], remaining_width: int, config: SearchConfig, embed: Embed | None = None
) -> EtsSolution:
    """Cluster the candidates (recording ``Node.cluster``), build and solve the program."""
    clusters = candidate_clusters(tree, candidates, config, embed)
    if clusters is not None:
        for node_id, label in zip(candidates, clusters):
            tree[node_id].cluster = int(label)
    return solve_program(build_program(tree, candidates, remaining_width, config, clusters))


def select(
    tree: Tree, candidates: list[int], remaining_width: int, config: SearchConfig, embed: Embed | None = None
) -> dict[int, int]:
    out = zero_allocation(tree, candidates, remaining_width)
    if remaining_width == 0 or not candidates:
        return out
    if len(candidates) == 1:
        keep = candidates
    else:
        keep = solve_selection(tree, candidates, remaining_width, config, embed).keep
    out.update(allocate_kept(tree, keep, remaining_width, config))
    return out


def allocate_kept(tree: Tree, keep: list[int], remaining_width: int, config: SearchConfig) -> dict[int, int]:
    """REBASE among the kept nodes (in candidate order). Equal scores (duplicate steps score
    alike) go to the later candidate first, as in the public code's re-allocation (it sorts
    ascending, then reverses), so that the replay against it (``public_ets``) matches node for node."""
    later_first = keep[::-1]
    shares = rebase_shares([score_of(tree, i) for i in later_first], remaining_width, config.temperature)
    return dict(zip(later_first, shares))
