"""The ETS integer program: brute force agreement, ancestors paid once, the cost normaliser,
lambda = 0 against REBASE, clustering, and the PuLP/CBC reference of the benchmark."""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pytest

from ragscale.cli import main as cli_main
from ragscale.search.bench import random_step, solve_with_pulp
from ragscale.search.clustering import cluster_embeddings, cluster_texts
from ragscale.search.config import SearchConfig
from ragscale.search.policies import ets
from ragscale.search.policies.base import rebase_shares
from ragscale.search.tree import Tree


def random_candidates(rng: random.Random, n_candidates: int) -> tuple[Tree, list[int]]:
    """A random tree whose deepest level holds ``n_candidates`` nodes."""
    tree = Tree()
    tree.add_root([0] * rng.randint(1, 60), "q")
    depth = rng.randint(1, 4)
    level = [0]
    for d in range(1, depth + 1):
        size = n_candidates if d == depth else rng.randint(1, n_candidates)
        level = [tree.add_child(rng.choice(level), f"s{d}", [0] * rng.randint(1, 80), score=rng.random()).id
                 for _ in range(size)]
    return tree, level


def brute_force(tree: Tree, candidates, remaining, cfg: SearchConfig, clusters):
    """Best objective over every non-empty subset, computed from the paper's definitions."""
    # O_i: the REBASE shares, normalised
    shares = rebase_shares([tree[i].score for i in candidates], remaining, cfg.temperature)
    outcome = {i: s / sum(shares) for i, s in zip(candidates, shares)}
    ancestors = sorted({a for i in candidates for a in tree.ancestors(i)})
    # nodes: 1 each, the root too (the public code); tokens: the search's own, the prompt left out
    cost = {j: (1.0 if cfg.kv_cost == "nodes" else float(tree[j].num_tokens) * (j != 0))
            for j in ancestors + list(candidates)}
    total = sum(cost.values())
    k = len(set(clusters)) if clusters is not None else 0
    best = -math.inf
    for r in range(1, len(candidates) + 1):
        for keep in itertools.combinations(candidates, r):
            retained = {a for i in keep for a in tree.ancestors(i)}  # each ancestor once
            value = sum(outcome[i] for i in keep)
            value -= cfg.lambda_b * (sum(cost[j] for j in retained) + sum(cost[i] for i in keep)) / total
            if k:
                covered = {clusters[candidates.index(i)] for i in keep}
                value += cfg.lambda_d / k * len(covered)
            best = max(best, value)
    return best


@pytest.mark.parametrize("kv_cost", ["tokens", "nodes"])
def test_milp_matches_brute_force(kv_cost):
    rng = random.Random(1 if kv_cost == "tokens" else 2)
    for trial in range(60):
        n = rng.randint(1, 8)
        tree, candidates = random_candidates(rng, n)
        cfg = SearchConfig(lambda_b=rng.choice([0.0, 0.5, 1.0, 3.0]), lambda_d=rng.choice([0.0, 0.7, 1.5]),
                           temperature=rng.choice([0.2, 1.0]), kv_cost=kv_cost)
        remaining = rng.randint(1, 2 * n)
        clusters = np.array([rng.randint(0, 2) for _ in candidates]) if rng.random() < 0.7 else None
        if clusters is not None:
            clusters = np.unique(clusters, return_inverse=True)[1]
        program = ets.build_program(tree, candidates, remaining, cfg, clusters)
        solution = ets.solve_program(program)
        expected = brute_force(tree, candidates, remaining, cfg, None if clusters is None else list(clusters))
        assert solution.keep, "at least one candidate is always kept"
        assert solution.objective == pytest.approx(expected, abs=1e-9), trial
        # the reported choice really attains that objective
        assert program.value(np.isin(candidates, solution.keep)) == pytest.approx(expected, abs=1e-9)
        # retained ancestors are exactly those above a kept candidate
        assert set(solution.retained) == {a for i in solution.keep for a in tree.ancestors(i)}


def shared_ancestor_tree():
    #            0 prompt (10)
    #          /              \
    #      A (100)            B (100)
    #      /     \               \
    #  a1 (10)  a2 (10)        b1 (10)
    tree = Tree()
    tree.add_root([0] * 10, "q")
    a = tree.add_child(0, "A", [0] * 100, score=0.5).id
    b = tree.add_child(0, "B", [0] * 100, score=0.5).id
    a1 = tree.add_child(a, "same idea", [0] * 10, score=0.5).id
    a2 = tree.add_child(a, "same idea", [0] * 10, score=0.5).id
    b1 = tree.add_child(b, "other idea", [0] * 10, score=0.5).id
    return tree, [a1, a2, b1]


def test_ancestors_are_paid_once():
    tree, cands = shared_ancestor_tree()
    cfg = SearchConfig(lambda_b=1.0, lambda_d=0.0)
    program = ets.build_program(tree, cands, 3, cfg)
    assert program.normaliser == 100 + 100 + 30  # the search's tokens: the 10-token prompt is left out
    assert list(program.outcome) == pytest.approx([1 / 3] * 3)  # equal scores, width 3
    keep = lambda *ids: np.isin(cands, ids)  # noqa: E731
    a1, a2, b1 = cands
    # adding a sibling costs only its own tokens: A is already paid for
    assert program.value(keep(a1, a2)) - program.value(keep(a1)) == pytest.approx(1 / 3 - 10 / 230)
    # adding a cousin also pays for B
    assert program.value(keep(a1, b1)) - program.value(keep(a1)) == pytest.approx(1 / 3 - 110 / 230)
    assert program.value(keep(a1, a2)) == pytest.approx(2 / 3 - 120 / 230)
    # so the program keeps the two siblings that share A
    assert sorted(ets.solve_program(program).keep) == [a1, a2]


def test_diversity_term_keeps_another_cluster():
    tree, cands = shared_ancestor_tree()
    cfg = SearchConfig(lambda_b=1.0, lambda_d=1.5)
    solution = ets.solve_selection(tree, cands, 3, cfg, embed=text_embed)
    assert [tree[i].cluster for i in cands] == [0, 0, 1]
    assert sorted(solution.keep) == sorted(cands)  # covering the second cluster is worth B's cost


def test_node_cost_normaliser_is_m_plus_n():
    rng = random.Random(5)
    for _ in range(10):
        tree, cands = random_candidates(rng, rng.randint(2, 6))
        program = ets.build_program(tree, cands, 8, SearchConfig(kv_cost="nodes"))
        m = len({a for i in cands for a in tree.ancestors(i)})  # root included
        assert program.normaliser == m + len(cands)
        assert len(program.ancestors) == m


def test_zero_lambdas_keep_everything_rebase_keeps():
    rng = random.Random(11)
    cfg = SearchConfig(lambda_b=0.0, lambda_d=0.0)
    for _ in range(40):
        n = rng.randint(2, 12)
        tree, cands = random_candidates(rng, n)
        remaining = rng.randint(1, 2 * n)
        rebase_kept = {i for i, s in zip(cands, rebase_shares([tree[i].score for i in cands], remaining, 0.2)) if s}
        keep = set(ets.solve_selection(tree, cands, remaining, cfg).keep)
        assert rebase_kept <= keep
        allocation = ets.select(tree, cands, remaining, cfg)
        assert sum(allocation.values()) == remaining


def test_high_cost_weight_prunes():
    rng = random.Random(3)
    tree, cands = random_candidates(rng, 10)
    loose = ets.solve_selection(tree, cands, 10, SearchConfig(lambda_b=0.0, lambda_d=0.0)).keep
    tight = ets.solve_selection(tree, cands, 10, SearchConfig(lambda_b=50.0, lambda_d=0.0)).keep
    assert len(tight) == 1 < len(loose)


def test_ets_needs_an_embedder_only_for_diversity():
    tree, cands = shared_ancestor_tree()
    with pytest.raises(ValueError, match="embed"):
        ets.select(tree, cands, 3, SearchConfig(lambda_d=1.5))
    assert sum(ets.select(tree, cands, 3, SearchConfig(lambda_d=0.0)).values()) == 3


def test_candidate_above_another_is_rejected():
    tree, cands = shared_ancestor_tree()
    with pytest.raises(ValueError, match="ancestor"):
        ets.build_program(tree, [1, cands[0]], 3, SearchConfig())


# ---------------------------------------------------------------------- clustering
def text_embed(texts):
    table = {"same idea": [1.0, 0.0, 0.0], "other idea": [0.0, 1.0, 0.0]}
    return np.array([table.get(t, [0.0, 0.0, 1.0]) for t in texts])


def test_clustering_cuts_at_the_threshold():
    e = np.array([[1.0, 0.0], [0.999, 0.04], [0.0, 1.0], [0.7, 0.7]])
    # rows 0 and 1 are ~0.0008 apart in cosine distance; the others far
    assert list(cluster_embeddings(e, 0.05)) == [0, 0, 1, 2]
    assert list(cluster_embeddings(e, 0.0)) == [0, 1, 2, 3]
    assert len(set(cluster_embeddings(e, 2.0))) == 1
    assert list(cluster_embeddings(np.zeros((1, 3)), 0.05)) == [0]
    assert list(cluster_embeddings(np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]), 0.05)) == [0, 1, 2]


def test_clustering_is_average_linkage():
    # chain a-b-c: a~b and b~c close, a-c farther; single linkage would merge all three at 0.05
    angles = np.radians([0.0, 13.0, 28.0])
    e = np.column_stack([np.cos(angles), np.sin(angles)])
    d = lambda i, j: 1 - np.cos(angles[i] - angles[j])  # noqa: E731
    assert d(0, 1) < 0.05 and (d(0, 2) + d(1, 2)) / 2 > 0.05
    labels = cluster_embeddings(e, 0.05)
    assert labels[0] == labels[1] != labels[2]


def test_cluster_texts_embeds_each_distinct_text_once():
    seen = []

    def embed(texts):
        seen.append(list(texts))
        return text_embed(texts)

    labels = cluster_texts(["same idea", "other idea", "same idea", "third"], embed, 0.05)
    assert list(labels) == [0, 1, 0, 2]
    assert seen == [["same idea", "other idea", "third"]]


# ---------------------------------------------------------------------- the benchmark's reference
@pytest.mark.parametrize("form", ["pairs", "edges"])
def test_pulp_reference_reaches_the_same_objective(form):
    for n, seed in ((8, 0), (24, 1)):
        tree, cands, clusters = random_step(n, seed)
        program = ets.build_program(tree, cands, n, SearchConfig(), clusters)
        ours = ets.solve_program(program)
        keep, objective = solve_with_pulp(program, form)
        assert objective == pytest.approx(ours.objective, abs=1e-9)
        assert program.value(np.isin(cands, keep)) == pytest.approx(ours.objective, abs=1e-9)


def test_bench_cli_prints_the_json_contract(capsys):
    assert cli_main(["bench", "ets-select", "--candidates", "8,12", "--repeats", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["candidates"] == [8, 12]
    for key in ("ours_ms", "pulp_cbc_ms", "speedup", "objective_equal"):
        assert len(out[key]) == 2
    assert out["objective_equal"] == [True, True]


def _four_by_four(scores, prompt_tokens: int):
    """A prompt, 4 steps under it and 4 candidates under each (10 tokens a step)."""
    tree = Tree()
    tree.add_root([0] * prompt_tokens, "q")
    parents = [tree.add_child(0, f"p{j}", [0] * 10, score=1.0).id for j in range(4)]
    cands = [tree.add_child(parents[i // 4], f"c{i}", [0] * 10, score=s).id for i, s in enumerate(scores)]
    return tree, cands


def test_the_prompt_no_longer_dilutes_the_token_cost():
    """Pass/fail step scores give every funded candidate an outcome share of at least 1 / width;
    pruning one saves its KV share, tokens / Z. With the prompt inside Z (the old formulation)
    a 300-token prompt over 10-token steps made that share too small to prune anything REBASE
    funds; with the prompt out of Z the lone passing branch under a failing parent is pruned
    whatever the prompt's length, as with a short prompt before."""
    cfg = SearchConfig(lambda_b=1.0, lambda_d=0.0, kv_cost="tokens")
    scores = [1.0] * 12 + [1.0, 0.0, 0.0, 0.0]  # the last step has one passing child of four
    for prompt_tokens in (300, 10):
        tree, cands = _four_by_four(scores, prompt_tokens)
        program = ets.build_program(tree, cands, 16, cfg)
        shares = rebase_shares(scores, 16, cfg.temperature)
        funded = {i for i, share in zip(cands, shares) if share}
        assert min(program.outcome[[cands.index(i) for i in funded]]) >= 1 / 16
        assert program.normaliser == 4 * 10 + 16 * 10  # the search's tokens only
        kept = set(ets.solve_program(program).keep)
        assert {tree[i].text for i in funded - kept} == {"c12"}, prompt_tokens
