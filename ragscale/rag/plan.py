"""How big a sweep is and how long it will take, before it starts; how long it has left while it runs.

The time estimate comes from rates measured on stored runs of the same engine: seconds per model
call and per 1,000 prompt tokens, fitted (non-negative least squares) to every finished question
row. A planned question's prompt tokens are the allocation model's effective length for its
configuration, scaled by how the stored runs' measured lengths compare with the model's (the demo
prompts are shorter than the paper's 150-token documents). A rough guide: the stored rows' own
seconds vary with batching and with what else the machine runs. A resumed sweep skips the rows its
file already holds, so it takes less than the plan says.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ragscale.allocation.context_length import effective_length
from ragscale.errors import UserError
from ragscale.formatting import fmt_tokens
from ragscale.rag.strategies import expand_grid


@dataclass(frozen=True)
class Rates:
    per_call_s: float          # seconds per model call
    per_1k_tokens_s: float     # seconds per 1,000 prompt tokens
    length_scale: float        # measured effective length / the allocation model's
    rows: int                  # finished question rows they were measured on

    def seconds(self, calls: float, model_tokens: float) -> float:
        return self.per_call_s * calls + self.per_1k_tokens_s * self.length_scale * model_tokens / 1000

    def describe(self) -> str:
        return (f"{self.per_call_s:.2f} s per model call + {self.per_1k_tokens_s:.2f} s per 1k prompt tokens, "
                f"measured on {self.rows:,} stored question rows")


def measured_rates(rows: pd.DataFrame) -> Rates:
    """Per-call and per-token seconds fitted to finished sweep rows (``sweep.load_rows``)."""
    from scipy.optimize import nnls

    needed = {"status", "seconds", "calls", "effective_length", "strategy", "k", "m", "n"}
    if not needed <= set(rows.columns):  # not sweep rows (a foreign or hand-made store)
        raise UserError("no stored sweep rows to measure speeds on")
    ok = rows[(rows["status"] == "ok") & (rows["seconds"] > 0)]
    if len(ok) < 3:
        raise UserError("no stored runs to measure speeds on yet")
    design = np.column_stack([ok["calls"].to_numpy(float), ok["effective_length"].to_numpy(float) / 1000])
    (per_call, per_1k), _ = nnls(design, ok["seconds"].to_numpy(float))
    model = np.array([float(effective_length(s, k, m, n)) for s, k, m, n in
                      zip(ok["strategy"], ok["k"], ok["m"], ok["n"])])
    scale = float(np.median(ok["effective_length"].to_numpy(float) / np.maximum(model, 1.0)))
    return Rates(float(per_call), float(per_1k), scale, len(ok))


@lru_cache(maxsize=8)
def _rates_of(path: str, mtime: float) -> Rates | None:
    from ragscale.rag.sweep import load_rows

    try:
        return measured_rates(load_rows(path))
    except UserError:
        return None


def rates_from(*paths) -> Rates | None:
    """Speeds measured on the first results file that has finished rows (None: none has)."""
    for path in paths:
        if path and Path(path).is_file():
            rates = _rates_of(str(path), Path(path).stat().st_mtime)
            if rates is not None:
                return rates
    return None


@dataclass(frozen=True)
class Plan:
    configurations: int
    questions: int
    rows: int            # configurations x questions still to run
    calls: int           # model calls they make (IterDRAG: 2n + 1 per question)
    tokens: float        # prompt tokens, estimated
    seconds: float | None

    def describe(self, rates: Rates | None) -> str:
        size = (f"{self.configurations} configurations x {self.questions} questions = **{self.rows:,} question runs**, "
                f"{self.calls:,} model calls, about {fmt_tokens(self.tokens)} prompt tokens")
        if self.seconds is None or rates is None:
            return size + "; no stored runs of this engine to estimate the time from."
        return f"{size}; **about {fmt_duration(self.seconds)}** ({rates.describe()}; a rough guide)."


def plan_sweep(strategies, ks, ms, ns, questions: int, rates: Rates | None) -> Plan:
    """The size of a sweep of every configuration of the grid over ``questions`` questions."""
    configs = expand_grid(strategies, ks, ms, ns)
    rows = calls = tokens = seconds = 0.0
    for c in configs:
        todo = questions
        per_calls = 2 * c.n + 1 if c.iterative else 1
        per_tokens = float(effective_length(c.strategy, c.k, c.m, c.n))
        rows += todo
        calls += todo * per_calls
        tokens += todo * per_tokens * (rates.length_scale if rates else 1.0)
        seconds += todo * rates.seconds(per_calls, per_tokens) if rates else 0.0
    return Plan(len(configs), questions, int(rows), int(calls), tokens, seconds if rates else None)


def fmt_duration(seconds: float) -> str:
    """'45 s', '12 min', '2 h 05 min'."""
    seconds = max(float(seconds), 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


class Eta:
    """Time left from the rate since the current phase began: a new total, ``done`` going back or a
    "resuming" message (rows skipped in a blink) starts a new measurement, as the CLI's bar does."""

    def __init__(self):
        self.start: tuple[float, int] | None = None
        self.total = 0
        self.done = 0

    def update(self, now: float, done: int, total: int, message: str = "") -> None:
        if self.start is None or total != self.total or done < self.done or message.startswith("resuming"):
            self.start = (now, done)
        self.done, self.total = done, total

    def seconds_left(self, now: float) -> float | None:
        if self.start is None or self.done <= self.start[1] or now <= self.start[0]:
            return None
        rate = (self.done - self.start[1]) / (now - self.start[0])
        return (self.total - self.done) / rate


__all__ = ["Eta", "Plan", "Rates", "fmt_duration", "measured_rates", "plan_sweep", "rates_from"]
