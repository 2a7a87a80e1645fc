"""How many threads the embedded engine should run right now: the cores other processes leave free.

Why: torch's OpenMP threads wait for each other at the end of every parallel op (~180 a decoded
token, ~250 a prefill page). Spinning there is fast while every thread has a core of its own,
and ruinous when another busy process holds one: the spinner burns the slice its partner needs.
Sleeping instead is safe but slow, since each op then wakes a sleeping core. Measured on a 2-core
AMD EPYC VM (README): the Demo QA live view took 9.6 s spinning and 15 s sleeping on a quiet
machine, and 54 s spinning against one busy process. A lone thread never waits for a partner,
so the engine spins and, when another process is busy, drops to the threads that have a core.

The count is read from ``/proc/stat`` (every process's CPU time) minus this process's own
(``/proc/self/stat``), over the time since the previous call. Thread count does not change the
bits: tokens, logprobs and scores are identical at 1 and 2 threads (tested).
"""

from __future__ import annotations

import os
import time


def _all_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot. Busy counts niced time: under the
    kernel's autogroup scheduling a niced process in another session competes at full weight."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal, user + nice + system + idle + iowait + irq + softirq + steal


def _own_ticks() -> int:
    """This process's user + system ticks (all its threads)."""
    with open("/proc/self/stat") as stat:
        after_name = stat.read().rsplit(")", 1)[1].split()  # the name may hold spaces
    return int(after_name[11]) + int(after_name[12])  # fields 14, 15: utime, stime


class SpareCores:
    """``threads()``: how many of ``cores`` to use now (at least 1).

    Another process counts as holding a core once it used more than half of one over the interval. The
    interval is the time since the last reading, at least ``min_interval`` seconds (a shorter
    one keeps the last answer: /proc counts in 10 ms ticks); after a pause longer than
    ``stale_after`` the first call samples for ``first_sample`` seconds instead.
    """

    def __init__(self, cores: int, min_interval: float = 0.5, stale_after: float = 5.0, first_sample: float = 0.1):
        self.cores = max(1, cores)
        self.min_interval, self.stale_after, self.first_sample = min_interval, stale_after, first_sample
        self._last: tuple[float, int, int, int] | None = None  # (time, busy, total, own)
        self._answer = self.cores
        self.others_busy = 0.0  # cores the other processes used over the last interval

    def _read(self) -> tuple[float, int, int, int]:
        busy, total = _all_ticks()
        return time.monotonic(), busy, total, _own_ticks()

    def threads(self) -> int:
        if self.cores == 1:
            return 1
        try:
            now = time.monotonic()
            if self._last is None or now - self._last[0] > self.stale_after:
                self._last = self._read()
                time.sleep(self.first_sample)
            elif now - self._last[0] < self.min_interval:
                return self._answer
            reading = self._read()
        except (OSError, ValueError, IndexError):  # no /proc (not Linux): every core
            return self.cores
        _, busy0, total0, own0 = self._last
        _, busy1, total1, own1 = reading
        self._last = reading
        if total1 <= total0:
            return self._answer
        cpus = os.cpu_count() or self.cores
        elapsed_per_cpu = (total1 - total0) / cpus
        self.others_busy = max(0.0, (busy1 - busy0) - (own1 - own0)) / elapsed_per_cpu
        free = cpus - self.others_busy
        self._answer = max(1, min(self.cores, int(free + 0.5)))
        return self._answer

    def describe(self) -> str:
        """For a status line: why the engine runs fewer threads than it could."""
        if self._answer >= self.cores:
            return f"{self.cores} threads"
        return f"{self._answer} of {self.cores} threads: other processes kept {self.others_busy:.1f} cores busy"
