"""#23 findings 1 and 6: a live run's steps reach the screen one by one, and its tree stays in the
viewer's session layer (per engine), never in the library a shared link reads."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from ragscale.engines.base import CacheStats
from ragscale.explorer.library import TreeKey
from ragscale.explorer.live_layer import LiveLayer, LiveStep, paced_steps
from ragscale.search.tree import Tree


def record(question: str, width: int = 4) -> dict:
    return {"key": TreeKey("arithmetic", question, "ets", width, 0, 0, 0).to_dict(), "nodes": 1}


def test_the_layer_is_per_engine_newest_wins_and_bounded():
    layer = LiveLayer(limit=2)
    key = layer.add("embedded", record("a"))
    assert layer.trees("embedded") == {key: record("a")} and layer.trees("sglang http://x") == {}
    layer.add("embedded", {**record("a"), "nodes": 9})  # the same configuration run again: the newer run
    assert layer.trees("embedded")[key]["nodes"] == 9
    layer.add("embedded", record("b"))
    layer.add("embedded", record("c"))  # over the limit: the oldest goes
    assert [k.question for k in layer.trees("embedded")] == ["b", "c"]
    layer.drop("embedded", TreeKey.from_dict(record("b")["key"]))
    assert [k.question for k in layer.trees("embedded")] == ["c"]


class CountingEngine:
    """Only what ``paced_steps`` reads: the engine's counters, which the fake search moves."""

    def __init__(self):
        self.counters = CacheStats()

    def stats(self) -> CacheStats:
        return self.counters


def fake_search(engine: CountingEngine, depths: int, fail: bool = False):
    def search(on_step) -> dict:
        tree = Tree()
        tree.add_root([1, 2], "prompt")
        for depth in range(depths):  # every depth at once: faster than a screen could show
            for _ in range(2):
                tree.add_child(depth and len(tree) - 1, "step", [3], score=0.5)
            engine.counters.requests += 2
            engine.counters.generated_tokens += 2
            on_step(SimpleNamespace(depth=depth, tree=tree, kv_tokens=10 * (depth + 1)))
        if fail:
            raise RuntimeError("engine went away")
        return {"nodes": len(tree)}
    return search


def test_each_step_is_held_on_screen_and_snapshots_do_not_move():
    engine = CountingEngine()
    seen, times = [], []
    for item in paced_steps(engine, fake_search(engine, 3), max_depth=3, dwell=0.2):
        seen.append(item)
        times.append(time.perf_counter())
    steps, final = seen[:-1], seen[-1]
    assert [type(s) for s in steps] == [LiveStep] * 3 and final == {"nodes": 7}
    assert [s.record()["nodes"] for s in steps] == [3, 5, 7]  # snapshots: the search went on, they did not
    assert [s.record()["generation_requests"] for s in steps] == [2, 4, 6]
    assert steps[-1].record()["kv"] == {"per_step": [10, 20, 30], "peak": 30, "mean": 20.0}
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.19, gaps  # the search finished at once; the screen still got every step


def test_a_failed_search_raises_after_the_steps_it_reached():
    engine = CountingEngine()
    steps = paced_steps(engine, fake_search(engine, 2, fail=True), max_depth=3, dwell=0.0)
    assert isinstance(next(steps), LiveStep) and isinstance(next(steps), LiveStep)
    with pytest.raises(RuntimeError, match="engine went away"):
        next(steps)
