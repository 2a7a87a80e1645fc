"""Selection policies: width budgets, each policy's rule, the final vote, config and recipes."""

from __future__ import annotations

import math
import random
import zlib

import numpy as np
import pytest

from ragscale.errors import UserError
from ragscale.search.config import POLICY_NAMES, SearchConfig, load_recipe, recipe_names
from ragscale.search.policies import POLICIES, get_policy
from ragscale.search.policies.base import apply_allocation, rebase_shares, remaining_width, weighted_vote
from ragscale.search.policies.dvts import subtree_of
from ragscale.search.tree import Tree

STEP_TEXTS = ["add the two numbers", "add the numbers", "multiply by three", "look up the capital",
              "the capital is Paris", "search the birth year"]


def fake_embed(texts):
    """Deterministic unit vectors: equal texts are identical, different texts nearly orthogonal."""
    rows = []
    for t in texts:
        v = np.random.default_rng(zlib.crc32(t.encode())).normal(size=64)
        rows.append(v / np.linalg.norm(v))
    return np.array(rows)


def simulate(policy: str, width: int, seed: int, depth: int = 6, **overrides):
    """A search with random steps; checks the budget at every depth. Returns the tree and the
    (candidates, remaining, allocation) of every step."""
    rng = random.Random(seed)
    config = load_recipe(policy, width=width, **overrides)
    tree = Tree()
    tree.add_root([1] * 40, "question")
    select = get_policy(policy)
    candidates, steps = [0], []
    for d in range(depth):
        left = remaining_width(tree, width)
        if left <= 0 or not candidates:
            break
        allocation = select(tree, candidates, left, config, fake_embed)
        steps.append((list(candidates), left, dict(allocation)))
        assert set(allocation) == set(candidates)
        assert all(isinstance(k, int) and k >= 0 for k in allocation.values())
        assert sum(allocation.values()) == left, (policy, width, seed, d, allocation)
        apply_allocation(tree, allocation)
        candidates = []
        for node_id, k in allocation.items():
            for _ in range(k):
                finished = d == depth - 1 or rng.random() < 0.25
                child = tree.add_child(node_id, rng.choice(STEP_TEXTS), [2] * rng.randint(1, 30),
                                       score=rng.random(), finished=finished,
                                       answer=rng.choice("AB") if finished else None)
                if not finished:
                    candidates.append(child.id)
    return tree, steps


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("width", [1, 2, 5, 16, 30])
def test_every_policy_spends_exactly_its_width(policy, width):
    for seed in range(4):
        tree, steps = simulate(policy, width, seed)
        # each unit of width ends as exactly one finished trajectory
        assert len(tree.finished_leaves()) == width
        assert steps[0][2] == {0: width}  # the root gets the whole width first


def test_registry_matches_config():
    assert tuple(POLICIES) == POLICY_NAMES
    with pytest.raises(UserError):
        get_policy("mcts")


def scored_step(scores, width=16, parents=None):
    """Root + one child per score (or under the given parent indices); returns tree, candidate ids."""
    tree = Tree()
    tree.add_root([0] * 10, "q")
    ids = [tree.add_child(0, f"s{i}", [0] * 5, score=s).id for i, s in enumerate(scores)]
    return tree, ids


def test_rebase_shares_follow_the_ceil_rule():
    # weights exp(s / 0.2): 1, e^-1, e^-2 (after the shift); handed out best first
    w = np.exp(np.array([1.0, 0.8, 0.6]) / 0.2)
    first = math.ceil(10 * w[0] / w.sum())
    second = math.ceil((10 - first) * w[1] / (w[1] + w[2]))
    expected = [first, second, 10 - first - second]
    assert rebase_shares([1.0, 0.8, 0.6], 10, 0.2) == expected == [7, 3, 0]
    # input order does not matter, only scores
    assert rebase_shares([0.6, 1.0, 0.8], 10, 0.2) == [0, 7, 3]
    assert rebase_shares([0.5] * 4, 8, 0.2) == [2, 2, 2, 2]
    assert rebase_shares([0.3], 5, 0.2) == [5]
    assert rebase_shares([], 5, 0.2) == []
    assert rebase_shares([0.9, 0.1], 0, 0.2) == [0, 0]
    # extreme scores do not overflow
    assert sum(rebase_shares([1000.0, -1000.0, 0.0], 9, 0.01)) == 9


def test_rebase_policy_uses_shares():
    tree, ids = scored_step([0.6, 1.0, 0.8])
    out = get_policy("rebase")(tree, ids, 10, SearchConfig(policy="rebase"))
    assert out == dict(zip(ids, [0, 7, 3]))


def test_beam_keeps_top_sqrt_width_with_equal_shares():
    scores = [0.1, 0.9, 0.5, 0.7, 0.3, 0.8]
    tree, ids = scored_step(scores)
    out = get_policy("beam")(tree, ids, 16, SearchConfig(policy="beam", width=16))
    kept = {i for i, k in out.items() if k}
    assert kept == {ids[1], ids[5], ids[3], ids[2]}  # top 4 = ceil(sqrt(16))
    assert sorted(out.values(), reverse=True)[:4] == [4, 4, 4, 4]
    # width 10 -> 4 beams, 10 units: the better beams take the remainder
    out = get_policy("beam")(tree, ids, 10, SearchConfig(policy="beam", width=10))
    assert [out[ids[1]], out[ids[5]], out[ids[3]], out[ids[2]]] == [3, 3, 2, 2]
    # less width than beams: one child each for the best
    out = get_policy("beam")(tree, ids, 2, SearchConfig(policy="beam", width=16))
    assert {i for i, k in out.items() if k} == {ids[1], ids[5]}


def test_dvts_keeps_one_best_node_per_subtree():
    for seed in range(5):
        tree, steps = simulate("dvts", 16, seed)
        subtree = subtree_of(tree, load_recipe("dvts", width=16))
        assert len(set(subtree.values())) == 4
        for candidates, left, allocation in steps[1:]:
            kept = [i for i, k in allocation.items() if k]
            firsts = [tree.ancestors(i)[1] if tree[i].depth > 1 else i for i in kept]
            blocks = [subtree[f] for f in firsts]
            assert len(blocks) == len(set(blocks))  # at most one per subtree
            for i, b in zip(kept, blocks):  # and it is that subtree's best candidate
                rivals = [c for c in candidates if subtree[tree.ancestors(c)[1] if tree[c].depth > 1 else c] == b]
                assert tree[i].score == max(tree[c].score for c in rivals)


def test_bon_never_branches_after_the_root():
    tree, steps = simulate("bon", 8, 3)
    for _, _, allocation in steps[1:]:
        assert set(allocation.values()) <= {0, 1}
    assert len(tree.children(0)) == 8
    assert all(len(tree.children(n.id)) <= 1 for n in tree if n.id != 0)


def test_ets_prunes_with_cost_and_rebase_does_not():
    ets_kept, rebase_kept = [], []
    for seed in range(5):
        for policy, sink in (("ets", ets_kept), ("rebase", rebase_kept)):
            _, steps = simulate(policy, 16, seed)
            sink.append(np.mean([sum(1 for k in a.values() if k) for _, _, a in steps[1:]]))
    assert np.mean(ets_kept) < np.mean(rebase_kept)


def test_apply_allocation_marks_status():
    tree, ids = scored_step([0.2, 0.4])
    apply_allocation(tree, {ids[0]: 0, ids[1]: 3})
    assert tree[ids[0]].status == "pruned" and tree[ids[1]].status == "kept"


def test_candidates_are_checked():
    tree, ids = scored_step([0.2, 0.4])
    cfg = SearchConfig(policy="rebase")
    with pytest.raises(ValueError):
        get_policy("rebase")(tree, [ids[0], ids[0]], 4, cfg)
    tree.add_child(ids[0], "done", [1], score=0.5, finished=True, answer="x")
    with pytest.raises(ValueError):
        get_policy("rebase")(tree, [3], 4, cfg)


# ---------------------------------------------------------------------- the final answer
def leaves_tree(leaves):
    tree = Tree()
    tree.add_root([0], "q")
    for answer, score in leaves:
        tree.add_child(0, answer, [1], score=score, finished=True, answer=answer)
    return tree


def test_weighted_vote_picks_highest_total():
    vote = weighted_vote(leaves_tree([("4", 0.9), ("5", 0.5), ("5", 0.45), (" 4 ", 0.2)]))
    assert vote.answer == "4" and vote.weight == pytest.approx(1.1)
    assert vote.counts == {"4": 2, "5": 2}
    vote = weighted_vote(leaves_tree([("4", 0.9), ("5", 0.5), ("5", 0.45)]))
    assert vote.answer == "5" and vote.weight == pytest.approx(0.95)


def test_weighted_vote_normalises_and_falls_back_to_counts():
    vote = weighted_vote(leaves_tree([("Paris", 0.0), ("paris.", 0.0), ("Rome", 0.0)]),
                         normalize=lambda a: a.lower().strip("."))
    assert vote.answer == "paris" and vote.counts == {"paris": 2, "rome": 1}
    assert weighted_vote(leaves_tree([])).answer is None
    tree = leaves_tree([("x", None)])
    assert weighted_vote(tree).answer == "x"


# ---------------------------------------------------------------------- config and recipes
def test_recipes_load_with_paper_defaults():
    assert set(recipe_names()) >= set(POLICY_NAMES)
    for name in POLICY_NAMES:
        assert load_recipe(name).policy == name
    ets = load_recipe("ets")
    assert (ets.lambda_b, ets.lambda_d, ets.temperature) == (1.0, 0.0, 0.2)  # lambda_d chosen on a dev split
    assert SearchConfig().lambda_d == ets.lambda_d  # a sweep of "rebase,ets" builds ETS from the defaults
    assert (ets.cluster_threshold, ets.kv_cost) == (0.05, "tokens")
    assert (ets.width, ets.max_depth, ets.step_max_tokens, ets.sampling_temperature) == (16, 25, 256, 1.0)
    assert load_recipe("ets", width=64, lambda_d=1.4, lambda_b=None).width == 64  # None = keep the recipe's


def test_recipe_errors_are_clear(tmp_path):
    with pytest.raises(UserError, match="unknown recipe"):
        load_recipe("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: ets\nwidht: 8\n")
    with pytest.raises(UserError, match="widht"):
        load_recipe(bad)
    bad.write_text("policy: ets\nwidth: [1\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="mapping"):
        load_recipe(bad)
    with pytest.raises(UserError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
    good = tmp_path / "mine.yaml"
    good.write_text("policy: beam\nwidth: 9\n")
    cfg = load_recipe(good)
    assert cfg.policy == "beam" and cfg.width == 9


@pytest.mark.parametrize("change", [{"width": 0}, {"policy": "mcts"}, {"temperature": 0.0}, {"lambda_b": -1.0},
                                    {"kv_cost": "bytes"}, {"cluster_threshold": 3.0}, {"max_depth": 0}])
def test_config_rejects_bad_values(change):
    with pytest.raises(UserError):
        SearchConfig(**change)


def test_config_replace_and_dict():
    cfg = SearchConfig().replace(width=4, policy="beam")
    assert cfg.width == 4 and cfg.to_dict()["policy"] == "beam"
    with pytest.raises(UserError):
        cfg.replace(depth=3)
    assert hash(SearchConfig()) == hash(SearchConfig())
