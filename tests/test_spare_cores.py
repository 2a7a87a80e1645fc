"""The embedded engine's thread count follows the cores other processes leave free (``spare_cores``)."""

from __future__ import annotations

import pytest

from ragscale.engines import spare_cores
from ragscale.engines.spare_cores import SpareCores


class FakeProc:
    """/proc as two counters that tests advance: all CPUs' (busy, total) ticks and our own."""

    def __init__(self, monkeypatch, cpus: int = 2):
        self.busy = self.total = self.own = 0
        self.clock = 100.0
        monkeypatch.setattr(spare_cores, "_all_ticks", lambda: (self.busy, self.total))
        monkeypatch.setattr(spare_cores, "_own_ticks", lambda: self.own)
        monkeypatch.setattr(spare_cores.os, "cpu_count", lambda: cpus)
        monkeypatch.setattr(spare_cores.time, "monotonic", lambda: self.clock)
        monkeypatch.setattr(spare_cores.time, "sleep", lambda seconds: self.run(seconds))
        self.others, self.ours, self.cpus = 0.0, 0.0, cpus

    def run(self, seconds: float) -> None:
        """``seconds`` pass with other processes busy on ``others`` cores and us on ``ours``."""
        ticks = seconds * 100
        self.clock += seconds
        self.total += int(ticks * self.cpus)
        self.busy += int(ticks * (self.others + self.ours))
        self.own += int(ticks * self.ours)


def test_a_quiet_machine_gives_every_core_and_our_own_work_does_not_count(monkeypatch):
    proc = FakeProc(monkeypatch)
    cores = SpareCores(2)
    assert cores.threads() == 2  # first call: a short sample of an idle machine
    proc.ours = 2.0  # our two threads busy: not another process
    proc.run(1.0)
    assert cores.threads() == 2
    assert cores.others_busy == 0.0


def test_another_busy_process_takes_a_thread_away_and_gives_it_back(monkeypatch):
    proc = FakeProc(monkeypatch)
    cores = SpareCores(2)
    proc.others = 1.0
    assert cores.threads() == 1
    proc.ours = 1.0
    proc.run(1.0)
    assert cores.threads() == 1 and cores.others_busy == pytest.approx(1.0)
    proc.others = 0.3  # a light job leaves most of a core: keep both threads
    proc.run(1.0)
    assert cores.threads() == 2
    proc.others = 2.0  # the machine is full: still one thread, never none
    proc.run(1.0)
    assert cores.threads() == 1


def test_readings_closer_than_the_interval_keep_the_last_answer(monkeypatch):
    proc = FakeProc(monkeypatch)
    cores = SpareCores(2, min_interval=0.5)
    assert cores.threads() == 2
    proc.others = 2.0
    proc.run(0.2)
    assert cores.threads() == 2  # too soon to tell
    proc.run(0.4)
    assert cores.threads() == 1


def test_without_proc_every_core_is_used(monkeypatch):
    def missing():
        raise OSError("no /proc here")

    monkeypatch.setattr(spare_cores, "_all_ticks", missing)
    assert SpareCores(4).threads() == 4
    assert SpareCores(1).threads() == 1


def test_the_real_proc_files_parse():
    busy, total = spare_cores._all_ticks()
    assert 0 <= busy <= total and spare_cores._own_ticks() >= 0


@pytest.mark.model
def test_the_engine_adapts_its_threads_unless_they_are_given(monkeypatch):
    import torch

    from ragscale.engines.base import SamplingParams
    from ragscale.engines.embedded import EmbeddedEngine

    monkeypatch.delenv("RAGSCALE_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        adaptive = EmbeddedEngine(prefix_cache=False)
        monkeypatch.setattr(adaptive._spare_cores, "threads", lambda: 1)
        adaptive.generate(["Hi"], SamplingParams(max_new_tokens=1))
        assert torch.get_num_threads() == 1
        fixed = EmbeddedEngine(prefix_cache=False, threads=2)
        assert fixed._spare_cores is None and torch.get_num_threads() == 2
        fixed.generate(["Hi"], SamplingParams(max_new_tokens=1))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.model
def test_tokens_logprobs_and_scores_are_the_same_bits_at_one_and_two_threads():
    """What makes changing the thread count between calls safe: no kernel splits a sum by thread."""
    import torch

    from ragscale.engines.base import SamplingParams
    from ragscale.engines.embedded import EmbeddedEngine

    before = torch.get_num_threads()
    engine = EmbeddedEngine(prefix_cache=False, threads=2)
    prompts = ["The lighthouse keeper wrote in the log that", "List three facts about granite."]
    params = SamplingParams(max_new_tokens=12, ignore_eos=True, return_logprobs=True, n=2, temperature=0.8, seed=3)
    runs = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            gens = engine.generate(prompts, params)
            runs.append(([(g.output_ids, g.logprobs) for g in gens],
                         engine.score(prompts[0], [" the storm", " a ship"])))
    finally:
        torch.set_num_threads(before)
    assert runs[0] == runs[1]


def test_the_status_line_says_why_fewer_threads_run(monkeypatch):
    proc = FakeProc(monkeypatch)
    cores = SpareCores(2)
    assert cores.threads() == 2 and cores.describe() == "2 threads"
    proc.others = 1.0
    proc.run(1.0)
    assert cores.threads() == 1
    assert cores.describe() == "1 of 2 threads: other processes kept 1.0 cores busy"
