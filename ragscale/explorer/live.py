"""Live searches: the engine, index and embeddings shared by the whole process, warmed early.

The app asks for ``warm_up(spec)`` when it starts: a background thread loads the engine, runs
one tiny generation (first calls are slow), builds the demo index and loads MiniLM, so that the
first "Run live" only searches. Nothing here blocks the caller; ``warm_status`` says how far it
got, for the sidebar. ``run_tree`` searches one Explorer configuration (through
``ragscale.search.builder``) and returns a tree record in the library's format (precompute stores
it; a live run keeps it in the viewer's session).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ragscale.engines import Engine, EngineSpec, SamplingParams, make_engine
from ragscale.explorer.library import TreeKey, task_of

# The verifier each task's trees use: for QA the generator as judge (runs on a laptop); for
# arithmetic the rule-based step checker (arithmetic right, numbers available; never the gold).
VERIFIERS = {"qa": "judge", "arithmetic": "rules"}
# Arithmetic trees are searched as the bundled search sweep was (Makefile SEARCH_SWEEP_ARGS), so a
# tree of the sweep is the library's tree of the same key (``precompute`` checks the settings).
ARITHMETIC_SETTINGS = {"sampling_temperature": 0.6}

_lock = threading.Lock()
_engines: dict[EngineSpec, Engine] = {}
_engine_locks: dict[EngineSpec, threading.Lock] = {}
_retrievers: dict[tuple, Callable] = {}  # (dataset name, retrieval setting) -> retrieve
_status: dict[EngineSpec, "WarmStatus"] = {}


@dataclass(frozen=True)
class WarmStatus:
    state: str  # "cold" | "warming" | "ready" | "failed"
    message: str = ""
    seconds: float | None = None  # how long warming took (ready) or has taken (warming)


def _lock_for(spec: EngineSpec) -> threading.Lock:
    with _lock:
        return _engine_locks.setdefault(spec, threading.Lock())


def shared_engine(spec: EngineSpec) -> Engine:
    """One engine per spec per process (its prefix cache is shared by every tab, as a server's is)."""
    with _lock_for(spec):  # a page asking while the warm-up loads it waits for that one
        if spec not in _engines:
            _engines[spec] = make_engine(spec)
        return _engines[spec]


def started_engine(spec: EngineSpec) -> Engine | None:
    """The shared engine if it exists already (never builds one)."""
    return _engines.get(spec)


def shared_retriever(dataset) -> Callable:
    """``retrieve(query, k)`` over the dataset's corpus, built once per dataset and retrieval
    setting per process (the Engine page can switch between the embedded store and a server)."""
    from ragscale.retrieval.options import current_settings
    from ragscale.search.tasks import retriever_for

    key = (dataset.name, current_settings())
    with _lock:
        if key not in _retrievers:
            _retrievers[key] = retriever_for(dataset)
        return _retrievers[key]


def warm_status(spec: EngineSpec) -> WarmStatus:
    if spec in _status:
        return _status[spec]
    return WarmStatus("ready" if spec in _engines else "cold")


def warm_up(spec: EngineSpec, datasets: tuple[str, ...] = ("demo",)) -> bool:
    """Start warming ``spec``'s engine and the datasets' indexes in the background (once per spec).

    Returns whether a warm-up was started. ``RAGSCALE_WARMUP=0`` turns it off (tests do).
    """
    if os.environ.get("RAGSCALE_WARMUP", "1") == "0":
        return False
    with _lock:
        if spec in _status or spec in _engines:
            return False
        _status[spec] = WarmStatus("warming", "loading the engine", 0.0)
    threading.Thread(target=_warm, args=(spec, datasets), name="ragscale-warm-up", daemon=True).start()
    return True


def _warm(spec: EngineSpec, datasets: tuple[str, ...]) -> None:
    started = time.perf_counter()

    def say(message: str) -> None:
        _status[spec] = WarmStatus("warming", message, time.perf_counter() - started)

    try:
        engine = shared_engine(spec)
        say("first generation")
        engine.generate(["Hello"], SamplingParams(max_new_tokens=2))
        from ragscale.datasets.loaders import load_dataset
        from ragscale.retrieval import embed_texts

        for name in datasets:
            say(f"building the {name} index")
            shared_retriever(load_dataset(name))
        say("loading MiniLM")
        embed_texts(["warm up"])
        engine.reset_stats()  # the sidebar's tokens/s should describe real requests, not the warm-up
    except Exception as exc:  # shown in the sidebar; a live run will report it again
        _status[spec] = WarmStatus("failed", f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
        return
    _status[spec] = WarmStatus("ready", "", time.perf_counter() - started)


def search_config(key: TreeKey):
    """The policy's recipe at the key's width. QA: n iterations + the forced final answer as depth;
    arithmetic: the task's depth and the bundled sweep's sampling temperature."""
    from ragscale.search.builder import search_config as build

    if task_of(key.dataset) == "arithmetic":
        return build(key.policy, "arithmetic", width=key.width, **ARITHMETIC_SETTINGS)
    return build(key.policy, "qa", width=key.width, max_depth=key.n + 1)


def run_tree(engine: Engine, dataset, question, key: TreeKey, progress=None, on_step=None,
             retrieve=None, embed=None) -> dict:
    """Search ``key``'s configuration on ``question``; a tree record in the library's format.

    ``retrieve`` / ``embed`` default to the shared index and MiniLM; tests pass cheap ones.
    """
    from ragscale.allocation.prices import billing_mark, run_cost
    from ragscale.errors import UserError
    from ragscale.search.builder import build_search

    task = task_of(key.dataset)
    if task == "qa" and key.k < 1:
        raise UserError("the tree search retrieves k >= 1 documents per step; raise k")
    config = search_config(key)
    if task == "qa":
        retrieve = retrieve or shared_retriever(dataset)
    search = build_search(engine, dataset, task, k=key.k, demos=key.m, verifier=VERIFIERS[task],
                          retrieve=retrieve, embed=embed)
    mark = billing_mark(engine)
    result = search.run(question, config, progress=progress, on_step=on_step)
    record = result.to_dict(with_requests=False)
    cost = run_cost(engine, since=mark)
    if cost is not None:  # what a provider bills for this run (an OpenAI-compatible engine, a priced model)
        record["cost"] = cost
    record["key"] = key.to_dict()
    record["dataset"] = dataset.name
    record["engine"] = {"kind": engine.info.kind, "model": engine.info.model, "url": engine.info.url}
    record["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    documents = getattr(search.task, "documents", {})  # QA only: what the clicked nodes retrieved
    record["documents"] = {doc_id: {"title": d.title, "text": d.text} for doc_id, d in documents.items()}
    return record
