"""Sweeps running in background threads, in one process-wide registry.

A page starts a job and returns at once; any browser tab (each its own Streamlit session) can
find the job in ``REGISTRY`` and watch its progress or cancel it. Rows land in the results
store as they finish, so a watcher reads progress from the job and data from the store.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ragscale.datasets.types import Dataset
from ragscale.engines.base import Engine
from ragscale.rag.sweep import SweepResult, SweepSpec, run_sweep
from ragscale.store import ResultsStore


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
    error: str | None = None
    error_detail: str | None = None
    result: SweepResult | None = None
    thread: threading.Thread | None = None

    def progress(self, done: int, total: int, message: str = "") -> None:
        self.done, self.total, self.message = done, total, message

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

    def start(self, spec: SweepSpec, engine: Engine, out: str | Path, *, engine_label: str = "",
              dataset: Dataset | None = None, retriever=None) -> SweepJob:
        """Run ``run_sweep`` in a daemon thread; one running job per results file at a time."""
        out = Path(out)
        with self._lock:
            busy = self.running_for(out)
            if busy is not None:
                from ragscale.errors import UserError

                raise UserError(f"a sweep is already writing to {out.name} (job {busy.id}); cancel it or wait")
            job = SweepJob(spec, out, engine_label or engine.info.model)
            self._jobs[job.id] = job

        def work() -> None:
            try:
                job.result = run_sweep(spec, engine, ResultsStore(out), dataset=dataset, retriever=retriever,
                                       progress=job.progress, cancel=job.cancel)
                job.message = "cancelled" if job.result.cancelled else "finished"
            except Exception as exc:  # shown on the page; the rows written so far stay in the store
                job.error = f"{type(exc).__name__}: {exc}"
                job.error_detail = traceback.format_exc()
            finally:
                job.finished = time.time()

        job.thread = threading.Thread(target=work, name=f"sweep-{job.id}", daemon=True)
        job.thread.start()
        return job

    def get(self, job_id: str) -> SweepJob | None:
        return self._jobs.get(job_id)

    def jobs(self) -> list[SweepJob]:
        return sorted(self._jobs.values(), key=lambda j: j.started, reverse=True)

    def running_for(self, out: str | Path) -> SweepJob | None:
        out = Path(out).resolve()
        return next((j for j in self._jobs.values() if j.running and j.out.resolve() == out), None)

    def latest(self) -> SweepJob | None:
        jobs = self.jobs()
        return jobs[0] if jobs else None


REGISTRY = JobRegistry()
