"""The search tree: structure queries, prefixes, JSON round trip, the plotting frame."""

from __future__ import annotations

import json
import math
import random

import pytest

from ragscale.search.tree import Node, Tree


def small_tree() -> Tree:
    #        0 (prompt, 5 tokens)
    #       / \
    #  1 (3)   2 (6)
    #  /  \       \
    # 3(2) 4(4)    5(1, finished)
    tree = Tree()
    tree.add_root([10, 11, 12, 13, 14], "Question?")
    tree.add_child(0, "step A", [1, 2, 3], score=0.9)
    tree.add_child(0, "step B", [4, 5, 6, 7, 8, 9], score=0.2)
    tree.add_child(1, "step A1", [20, 21], score=0.7, meta={"sub_query": "who?", "doc_ids": ["d1", "d2"]})
    tree.add_child(1, "step A2", [22, 23, 24, 25], score=0.4, cached_tokens=7)
    tree.add_child(2, "So the final answer is: Paris", [30], score=0.6, finished=True, answer="Paris")
    return tree


def test_structure_queries():
    tree = small_tree()
    assert len(tree) == 6
    assert tree.root.parent is None and tree.root.status == "kept" and tree.root.score is None
    assert [n.id for n in tree.children(0)] == [1, 2]
    assert [n.id for n in tree.children(1)] == [3, 4]
    assert tree.children(3) == []
    assert [n.id for n in tree.path(4)] == [0, 1, 4]
    assert tree.ancestors(4) == [0, 1]
    assert tree.ancestors(0) == []
    assert [n.depth for n in tree] == [0, 1, 1, 2, 2, 2]
    assert {n.id for n in tree.leaves()} == {3, 4, 5}
    assert [n.id for n in tree.finished_leaves()] == [5]
    assert tree[5].status == "finished" and tree[5].answer == "Paris"
    # every non-finished node that has not been selected yet is on the frontier
    assert [n.id for n in tree.frontier()] == [1, 2, 3, 4]
    assert tree.max_depth == 2


def test_prefix_tokens_concatenate_the_path():
    tree = small_tree()
    assert tree.prefix_token_ids(4) == [10, 11, 12, 13, 14, 1, 2, 3, 22, 23, 24, 25]
    assert tree.prefix_token_count(4) == 12
    assert tree.prefix_token_count(0) == 5
    assert tree.prefix_token_count(5) == 5 + 6 + 1


def test_bad_operations_raise():
    tree = small_tree()
    with pytest.raises(ValueError):
        tree.add_root([1])
    with pytest.raises(ValueError):
        tree.add_child(5, "after the answer", [1])  # finished nodes get no children
    with pytest.raises(KeyError):
        tree.add_child(42, "x", [1])
    with pytest.raises(KeyError):
        tree[-1]
    with pytest.raises(ValueError):
        tree.set_status(1, "sleeping")
    tree.set_status(1, "pruned")
    assert tree[1].status == "pruned"


def test_json_round_trip_is_exact():
    tree = small_tree()
    tree[3].cluster = 2
    tree[1].status = "kept"
    tree[2].status = "pruned"
    tree[4].score = 0.1 + 0.2  # a float that needs all its digits
    tree[3].text = "unicode: é → ∑, quotes \" and\nnewlines"
    again = Tree.from_json(tree.to_json())
    assert again == tree
    assert again.to_json() == tree.to_json()
    assert again[4].score == 0.1 + 0.2
    assert again[3].meta == {"sub_query": "who?", "doc_ids": ["d1", "d2"]}
    # the children index is rebuilt, not just the node list
    assert [n.id for n in again.children(1)] == [3, 4]
    assert again.prefix_token_ids(4) == tree.prefix_token_ids(4)


def test_json_round_trip_random_trees():
    rng = random.Random(7)
    for _ in range(20):
        tree = Tree()
        tree.add_root([rng.randrange(50000) for _ in range(rng.randint(0, 30))], "q")
        for i in range(rng.randint(0, 40)):
            parents = [n.id for n in tree if not n.finished]
            fin = rng.random() < 0.2
            tree.add_child(rng.choice(parents), f"step {i}", [rng.randrange(50000) for _ in range(rng.randint(0, 20))],
                           score=rng.random(), finished=fin, answer=str(rng.randint(0, 3)) if fin else None,
                           cached_tokens=rng.randint(0, 100) if rng.random() < 0.5 else None)
        assert Tree.from_dict(json.loads(tree.to_json(indent=1))) == tree


def test_from_dict_rejects_inconsistent_input():
    data = small_tree().to_dict()
    bad = json.loads(json.dumps(data))
    bad["nodes"][3]["parent"] = 4  # a parent that comes later
    with pytest.raises(ValueError):
        Tree.from_dict(bad)
    bad = json.loads(json.dumps(data))
    bad["nodes"][2]["id"] = 7
    with pytest.raises(ValueError):
        Tree.from_dict(bad)
    bad = json.loads(json.dumps(data))
    bad["nodes"][1]["status"] = "unknown"
    with pytest.raises(ValueError):
        Tree.from_dict(bad)


def test_to_frame():
    frame = small_tree().to_frame()
    assert list(frame["id"]) == [0, 1, 2, 3, 4, 5]
    assert list(frame["tokens"]) == [5, 3, 6, 2, 4, 1]
    assert list(frame["prefix_tokens"]) == [5, 8, 11, 10, 12, 12]
    assert list(frame["n_children"]) == [2, 2, 1, 0, 0, 0]
    assert frame["parent"].isna().tolist() == [True] + [False] * 5
    assert frame.loc[4, "cached_tokens"] == 7
    assert math.isnan(frame.loc[0, "score"])
    assert list(frame["status"]) == ["kept", "active", "active", "active", "active", "finished"]


def test_node_num_tokens():
    assert Node(0, None, 0, "", [1, 2, 3]).num_tokens == 3
