"""ETS against the public code's selection (``ragscale.search.public_ets``, the reference): the same
nodes kept and the same children handed out, on random steps and on every selection step of the
bundled sweep."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ragscale.search import public_ets
from ragscale.search.config import SearchConfig
from ragscale.search.policies import ets
from ragscale.search.results import BUNDLED_SEARCH_SWEEP, load_sweep_records, of_bundled_sweep
from ragscale.search.tree import Tree


def random_step(rng: random.Random, n: int, ties: bool) -> tuple[Tree, list[int], list[int]]:
    """A tree of 2-4 levels whose deepest holds ``n`` candidates, their cluster labels too.
    ``ties``: scores from a few values (as duplicate steps and pass/fail give), else continuous."""
    tree = Tree()
    tree.add_root([0] * rng.randint(50, 200), "q")
    level = [0]
    depth = rng.randint(2, 4)
    for d in range(1, depth + 1):
        size = n if d == depth else rng.randint(1, n)
        level = [tree.add_child(rng.choice(level), f"s{d}-{j}", [0] * rng.randint(5, 20),
                                score=rng.choice([0.0, 0.5, 1.0]) if ties else rng.random()).id
                 for j in range(size)]
    labels = [rng.randrange(max(1, n // 2)) for _ in level]
    return tree, level, labels


def as_recorded(tree: Tree, cands: list[int], labels: list[int], width: int) -> public_ets.RecordedStep:
    return public_ets.RecordedStep(
        depth=tree[cands[0]].depth, candidates=cands, parents={n.id: n.parent for n in tree},
        scores=[tree[i].score for i in cands], texts=[tree[i].text for i in cands], clusters=labels,
        width=width, children={})


def ours(tree, cands, labels, width, cfg):
    keep = ets.solve_program(ets.build_program(tree, cands, width, cfg, np.array(labels))).keep
    out = dict.fromkeys(cands, 0)
    out.update(ets.allocate_kept(tree, keep, width, cfg))
    return out


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("lambdas", [(1.0, 1.5), (1.0, 0.0), (3.0, 0.5)])
def test_node_cost_setting_matches_the_public_code_step_by_step(ties, lambdas):
    lambda_b, lambda_d = lambdas
    cfg = SearchConfig(lambda_b=lambda_b, lambda_d=lambda_d, kv_cost="nodes")
    rng = random.Random(hash((ties, lambdas)) % 1000)
    pruned_somewhere = False
    for _ in range(60):
        n = rng.randint(2, 10)
        width = rng.randint(n // 2 + 1, 16)
        tree, cands, labels = random_step(rng, n, ties)
        reference = public_ets.select(as_recorded(tree, cands, labels, width), lambda_b, lambda_d, cfg.temperature)
        mine = ours(tree, cands, labels, width, cfg)
        assert mine == reference
        funded = ets.rebase_shares([tree[i].score for i in cands], width, cfg.temperature)
        pruned_somewhere |= any(f > 0 and mine[i] == 0 for i, f in zip(cands, funded))
    assert pruned_somewhere or lambda_d > 1  # the check covers steps where ETS really prunes


def test_token_cost_is_not_the_public_codes():
    """Where our token cost (prompt out of Z) keeps other nodes than the public node cost, the
    replay would see it: the reference is not a copy of whatever ``policies.ets`` does."""
    rng = random.Random(5)
    differ = 0
    for _ in range(80):
        tree, cands, labels = random_step(rng, rng.randint(3, 10), ties=False)
        for j in cands[::2]:  # uneven step lengths are what tell tokens from nodes
            tree[j].token_ids = [0] * 60
        width = 16
        reference = public_ets.select(as_recorded(tree, cands, labels, width), 1.0, 0.0, 0.2)
        differ += ours(tree, cands, labels, width, SearchConfig(lambda_d=0.0, kv_cost="tokens")) != reference
    assert differ > 0


def test_replay_of_the_bundled_sweep_keeps_the_same_nodes_at_every_step():
    records = of_bundled_sweep(load_sweep_records(BUNDLED_SEARCH_SWEEP), BUNDLED_SEARCH_SWEEP)
    result = public_ets.replay(records)
    assert result["steps"] >= 100, result  # a real sample of selection steps, not a handful
    assert result["disagreements"] == []
    assert result["agreement"] == 1.0
    assert result["same_children"] == result["steps"]


def test_recorded_steps_rebuild_what_the_search_recorded():
    """The candidate sets rebuilt from a stored tree are the ones the search logged (N per step)."""
    records = [r for r in of_bundled_sweep(load_sweep_records(BUNDLED_SEARCH_SWEEP), BUNDLED_SEARCH_SWEEP)
               if r["policy"] == "ets"][:20]
    assert records
    for r in records:
        logged = [s["candidates"] for s in r["selections"] if s["candidates"] >= 2]
        assert [len(s.candidates) for s in public_ets.recorded_steps(r)] == logged
