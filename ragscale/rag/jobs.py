"""Sweeps running in background threads, in one process-wide registry.

A page starts a job and returns at once; any browser tab (each its own Streamlit session) can
find the job in ``REGISTRY`` and watch its progress or cancel it. Rows land in the results
store as they finish, so a watcher reads progress from the job and data from the store.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ragscale.datasets.types import Dataset
from ragscale.engines.base import Engine
from ragscale.rag.plan import Eta
from ragscale.rag.sweep import SweepResult, SweepSpec, run_sweep, split_for
from ragscale.store import ResultsStore

log = logging.getLogger(__name__)


@dataclass
class SweepJob:
    spec: SweepSpec
    out: Path
    engine_label: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    cancel: threading.Event = field(default_factory=threading.Event)
    done: int = 0
    total: int = 0
    message: str = "starting"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None  # one line for the page; the traceback goes to the server log
    result: SweepResult | None = None
    thread: threading.Thread | None = None
    eta: Eta = field(default_factory=Eta)

    def progress(self, done: int, total: int, message: str = "") -> None:
        self.done, self.total, self.message = done, total, message
        self.eta.update(time.time(), done, total, message)

    @property
    def seconds_left(self) -> float | None:
        """Time to the end of the current phase at its rate so far (None before a row is done)."""
        return self.eta.seconds_left(time.time()) if self.running else None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def status(self) -> str:
        if self.running:
            return "cancelling" if self.cancel.is_set() else "running"
        if self.error:
            return "failed"
        if self.result is not None and self.result.cancelled:
            return "cancelled"
        return "finished" if self.result is not None else "starting"

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def elapsed(self) -> float:
        return (self.finished or time.time()) - self.started


class JobRegistry:
    def __init__(self):
        self._jobs: dict[str, SweepJob] = {}
        self._lock = threading.Lock()

    def start(self, spec: SweepSpec, engine: Engine | Callable[[], Engine], out: ResultsStore | str | Path, *,
              engine_label: str = "", dataset: Dataset | None = None, retriever=None) -> SweepJob:
        """Run ``run_sweep`` in a daemon thread; one running job per results file at a time.

        ``out`` is a results store or its path; ``engine`` an engine or a function that makes
        one. The store is opened (and found writable) before the engine is made, so a bad
        results file never costs a model load; if making the engine fails, a store this call
        created is removed again.
        """
        from ragscale.errors import UserError

        path = out.path if isinstance(out, ResultsStore) else Path(out)
        with self._lock:  # held while the engine is made: two tabs cannot both start on one file
            busy = self.running_for(path)
            if busy is not None:
                raise UserError(f"a sweep is already writing to {path.name} (job {busy.id}); cancel it or wait")
            if dataset is not None:
                split_for(spec, dataset)
            store = out if isinstance(out, ResultsStore) else ResultsStore(path)
            if not isinstance(engine, Engine):
                try:
                    engine = engine()
                except BaseException:
                    store.discard_if_empty()
                    raise
            job = SweepJob(spec, path, engine_label or engine.info.model)
            self._jobs[job.id] = job

        def work() -> None:
            try:
                job.result = run_sweep(spec, engine, store, dataset=dataset, retriever=retriever,
                                       progress=job.progress, cancel=job.cancel)
                job.message = "cancelled" if job.result.cancelled else "finished"
            except Exception as exc:  # shown on the page; the rows written so far stay in the store
                job.error = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
                log.exception("sweep %s into %s failed", job.id, path)
                store.discard_if_empty()
            finally:
                if store is not out:  # opened here: let go of the file (and its -wal) now
                    store.close()
                job.finished = time.time()

        job.thread = threading.Thread(target=work, name=f"sweep-{job.id}", daemon=True)
        job.thread.start()
        return job

    def get(self, job_id: str) -> SweepJob | None:
        return self._jobs.get(job_id)

    def jobs(self) -> list[SweepJob]:
        return sorted(self._jobs.values(), key=lambda j: j.started, reverse=True)

    def job_for(self, out: str | Path) -> SweepJob | None:
        """The job running into ``out``, else the latest one that wrote it (None if none did)."""
        out = Path(out).resolve()
        return self.running_for(out) or next((j for j in self.jobs() if j.out.resolve() == out), None)

    def running_for(self, out: str | Path) -> SweepJob | None:
        out = Path(out).resolve()
        return next((j for j in self._jobs.values() if j.running and j.out.resolve() == out), None)


REGISTRY = JobRegistry()
