"""A viewer's own live runs, and the steps of a run as it grows.

``LiveLayer``: the trees one session searched with "Run live", per engine. It sits above the
bundled library for that session only: it never writes a file, so it never replaces a bundled
tree and never changes what a shared link shows (a link opens a new session, whose layer is
empty). Per engine, because a tree the SGLang server grew says nothing about the embedded one.

``paced_steps``: runs a search in a worker thread and yields a ``LiveStep`` snapshot after each
depth, then the finished record. A step is held on screen for at least ``dwell`` seconds (the
search never waits for the screen): the opening view's run is ~2 s, and steps 0.2 s apart would
otherwise reach the browser as one.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

from ragscale.explorer.library import TreeKey

LIVE_TREES_PER_ENGINE = 32  # a session's runs are small (KB each); the oldest go first


class LiveLayer:
    """Trees this session searched live: ``{engine: {key: record}}``, newest last, bounded."""

    def __init__(self, limit: int = LIVE_TREES_PER_ENGINE):
        self.limit = limit
        self._trees: dict[str, OrderedDict[TreeKey, dict]] = {}

    def add(self, engine: str, record: dict) -> TreeKey:
        key = TreeKey.from_dict(record["key"])
        trees = self._trees.setdefault(engine, OrderedDict())
        trees.pop(key, None)
        trees[key] = record
        while len(trees) > self.limit:
            trees.popitem(last=False)
        return key

    def trees(self, engine: str) -> Mapping[TreeKey, dict]:
        return self._trees.get(engine, {})

    def drop(self, engine: str, key: TreeKey) -> None:
        self._trees.get(engine, {}).pop(key, None)


@dataclass(frozen=True)
class LiveStep:
    """What the screen shows after one depth of a live run: the tree so far and its figures."""

    depth: int  # 0-based depth just expanded
    max_depth: int
    tree: dict  # a snapshot (``Tree.to_dict``): the search goes on changing its own tree
    kv_per_step: list[int]
    seconds: float
    engine: dict = field(default_factory=dict)  # the engine's counters since the run began

    def record(self) -> dict:
        """The figures a finished record carries, as far as the run has got."""
        kv = self.kv_per_step
        e = self.engine
        return {"tree": self.tree, "nodes": len(self.tree["nodes"]), "live": True,
                "kv": {"per_step": kv, "peak": max(kv, default=0), "mean": sum(kv) / len(kv) if kv else 0.0},
                "tokens_generated": int(e.get("generated_tokens", 0)),
                "generation_requests": int(e.get("requests", 0)),
                "prompt_tokens": int(e.get("prompt_tokens", 0)), "cached_tokens": int(e.get("cached_tokens", 0))}


def _counters(engine) -> dict[str, float]:
    s = engine.stats()
    return {"requests": s.requests, "prompt_tokens": s.prompt_tokens, "cached_tokens": s.cached_tokens,
            "generated_tokens": s.generated_tokens}


def paced_steps(engine, search: Callable[..., dict], max_depth: int, dwell: float = 0.4) -> Iterator[LiveStep | dict]:
    """Yield a ``LiveStep`` after each depth of ``search(on_step=...)`` and then its record.

    ``search`` runs in a worker thread; the caller (a Streamlit script) draws what it is given.
    The engine's counters are read at each step, so requests and tokens grow with the tree.
    An exception in the search is raised here, after the steps it reached.
    """
    steps: queue.Queue = queue.Queue()
    before, started, kv = _counters(engine), time.perf_counter(), []

    def on_step(report) -> None:  # the worker thread: snapshot what the screen needs, nothing else
        kv.append(report.kv_tokens)
        now = _counters(engine)
        steps.put(LiveStep(report.depth, max_depth, report.tree.to_dict(), list(kv),
                           time.perf_counter() - started, {k: now[k] - before[k] for k in now}))

    def work() -> None:
        try:
            steps.put(("done", search(on_step=on_step)))
        except BaseException as exc:  # handed to the caller's thread
            steps.put(("failed", exc))

    threading.Thread(target=work, name="ragscale-live-run", daemon=True).start()
    shown_at = 0.0
    while True:
        item = steps.get()
        time.sleep(max(0.0, shown_at + dwell - time.perf_counter()))  # the previous step stays up ``dwell`` s
        shown_at = time.perf_counter()
        if isinstance(item, tuple):
            if item[0] == "failed":
                raise item[1]
            yield item[1]
            return
        yield item
