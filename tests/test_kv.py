"""Retained-KV accounting on hand-built trees."""

from __future__ import annotations

from ragscale.search.kv import KVTracker, retained_kv_tokens, retained_nodes
from ragscale.search.tree import Tree


def hand_tree() -> Tree:
    #          0 prompt (50)
    #        /          \
    #     1 (10)        2 (20)
    #    /  |  \           \
    # 3(4) 4(5) 5(6)      6(7)
    #  |
    # 7(3)
    tree = Tree()
    tree.add_root(list(range(50)), "prompt")
    tree.add_child(0, "a", [0] * 10, score=0.5)
    tree.add_child(0, "b", [0] * 20, score=0.5)
    for n in (4, 5, 6):
        tree.add_child(1, f"a{n}", [0] * n, score=0.5)
    tree.add_child(2, "b1", [0] * 7, score=0.5)
    tree.add_child(3, "a41", [0] * 3, score=0.5)
    return tree


def test_shared_prefix_is_counted_once():
    tree = hand_tree()
    assert retained_kv_tokens(tree, [3]) == 50 + 10 + 4
    # siblings share the prompt and node 1
    assert retained_kv_tokens(tree, [3, 4, 5]) == 50 + 10 + 4 + 5 + 6
    # cousins share only the prompt
    assert retained_kv_tokens(tree, [3, 6]) == 50 + 10 + 4 + 20 + 7
    # a node and its own descendant: the path is stored once
    assert retained_kv_tokens(tree, [7, 3]) == 50 + 10 + 4 + 3
    assert retained_nodes(tree, [7, 6]) == {0, 1, 3, 7, 2, 6}


def test_prompt_only_and_nothing():
    tree = hand_tree()
    assert retained_kv_tokens(tree, [0]) == 50
    assert retained_kv_tokens(tree, []) == 0


def test_pruned_nodes_hold_nothing():
    tree = hand_tree()
    # keep 3 and 4, prune 5 and 6: neither 5's nor 2/6's tokens count
    for node_id, status in ((3, "kept"), (4, "kept"), (5, "pruned"), (6, "pruned")):
        tree.set_status(node_id, status)
    kept = [n.id for n in tree if n.status == "kept" and n.depth == 2]
    assert kept == [3, 4]
    assert retained_kv_tokens(tree, kept) == 50 + 10 + 4 + 5


def test_tracker_peak_and_mean():
    tree = hand_tree()
    kv = KVTracker()
    assert kv.peak == 0 and kv.mean == 0.0
    assert kv.record(tree, [1, 2]) == 80
    assert kv.record(tree, [3, 4, 5, 6, 4]) == 50 + 10 + 15 + 20 + 7  # duplicates once
    assert kv.record(tree, [7]) == 67
    assert kv.steps == [80, 102, 67]
    assert kv.peak == 102
    assert kv.mean == (80 + 102 + 67) / 3
    d = kv.to_dict()
    assert d["per_step"] == [80, 102, 67] and d["peak"] == 102 and d["kept"][1] == [3, 4, 5, 6]
