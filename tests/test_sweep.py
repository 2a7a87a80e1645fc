"""Sweeps on the ScriptedEngine: resume after a crash, tables, frontier, fit/report CLI, jobs."""

from __future__ import annotations

import json
import re
import threading
import time

import pandas as pd
import pytest

from ragscale.cli import main
from ragscale.errors import UserError
from ragscale.rag.jobs import JobRegistry
from ragscale.rag.sweep import (KIND, SweepSpec, best_per_budget, config_table, frontier, load_rows, run_sweep)
from ragscale.store import ResultsStore
from tests.fakes import ScriptedEngine
from tests.test_rag_strategies import WordRetriever, answer_from_prompt, tiny_dataset


def reader(prompt, params, i, rng):
    """Follows the self-ask protocol and reads the city off the documents when they are there."""
    if prompt.endswith("Follow up:"):
        return re.findall(r"Where was \w+ born\?", prompt)[-1]
    if prompt.endswith("Intermediate answer:"):
        return answer_from_prompt(prompt) + "\nSo the final answer is: " + answer_from_prompt(prompt)
    return answer_from_prompt(prompt)

SPEC = SweepSpec(dataset="tiny", strategies=("rag", "drag", "iterdrag"), ks=(0, 1, 2), ms=(0, 1), ns=(1, 2),
                 limit=4, pool_size=2, batch_size=2, generate_chains=False)


class CrashingEngine(ScriptedEngine):
    """Dies on the n-th generate call, like a killed process."""

    def __init__(self, crash_at: int):
        super().__init__(reader)
        self.generate_calls = 0
        self.crash_at = crash_at

    def generate(self, prompts, params):
        self.generate_calls += 1
        if self.generate_calls == self.crash_at:
            raise KeyboardInterrupt("simulated crash")
        return super().generate(prompts, params)


def test_resume_after_crash_loses_nothing_and_repeats_nothing(tmp_path):
    data = tiny_dataset()
    path = tmp_path / "r.sqlite"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(SPEC, CrashingEngine(crash_at=7), ResultsStore(path), dataset=data, retriever=WordRetriever(data.corpus))
    before = ResultsStore(path).records(KIND)
    assert 0 < len(before)
    engine = ScriptedEngine(reader)
    result = run_sweep(SPEC, engine, ResultsStore(path), dataset=data, retriever=WordRetriever(data.corpus))
    after = ResultsStore(path).records(KIND)
    assert result.rows_already_done == len(before)
    assert result.rows_written == result.rows_total - len(before)
    assert len(after) == result.rows_total == result.configurations * 4
    assert len({r["key"] for r in after}) == len(after)
    # rows written before the crash are untouched and no finished question was asked again
    assert after[: len(before)] == before
    # a third run has nothing to do
    third = ScriptedEngine(reader)
    done = run_sweep(SPEC, third, ResultsStore(path), dataset=data, retriever=WordRetriever(data.corpus))
    assert done.rows_written == 0 and third.calls == []


def test_rerun_sends_no_prompt_for_finished_rows(tmp_path):
    data = tiny_dataset()
    path = tmp_path / "r.sqlite"
    small = SweepSpec(dataset="tiny", strategies=("rag",), ks=(0, 1), ms=(0,), ns=(1,), limit=4, pool_size=2,
                      batch_size=1, generate_chains=False)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(small, CrashingEngine(crash_at=3), ResultsStore(path), dataset=data, retriever=WordRetriever(data.corpus))
    finished = {r["qid"] for r in ResultsStore(path).records(KIND)}
    assert finished == {"q0", "q1"}  # zero-shot, batches of one: two finished, the third crashed
    engine = ScriptedEngine(reader)
    run_sweep(small, engine, ResultsStore(path), dataset=data, retriever=WordRetriever(data.corpus))
    zero_shot_asked = [p for p in engine.calls if "Documents:" not in p]
    assert len(zero_shot_asked) == 2  # only q2 and q3
    assert not any("Where was Ada born?" in p for p in zero_shot_asked)


def test_cancel_stops_between_batches(tmp_path):
    data = tiny_dataset()
    cancel = threading.Event()
    seen = []

    def progress(done, total, message):
        seen.append(done)
        if done >= 2:
            cancel.set()

    result = run_sweep(SPEC, ScriptedEngine(reader), ResultsStore(tmp_path / "r.sqlite"), dataset=data,
                       retriever=WordRetriever(data.corpus), progress=progress, cancel=cancel)
    assert result.cancelled and result.rows_written == 2 and max(seen) == 2


def _sweep_rows(tmp_path) -> pd.DataFrame:
    data = tiny_dataset()
    store = ResultsStore(tmp_path / "r.sqlite")
    run_sweep(SPEC, ScriptedEngine(reader), store, dataset=data, retriever=WordRetriever(data.corpus))
    return load_rows(store)


def test_config_table_frontier_and_budgets(tmp_path):
    table = config_table(_sweep_rows(tmp_path), "em")
    zero = table[(table.strategy == "zero-shot")].iloc[0]
    rag2 = table[(table.strategy == "rag") & (table.k == 2)].iloc[0]
    assert zero["score"] == 0.0 and rag2["score"] == 1.0  # the reader needs the document
    assert zero["length_max"] < rag2["length_max"]
    front = frontier(table, "rag")
    assert list(front["score"]) == sorted(front["score"]) and front["score"].iloc[-1] == 1.0
    assert front["length_max"].is_monotonic_increasing
    best = best_per_budget(table, [int(zero["length_max"]), 10**6], ["rag"])
    assert best.iloc[0]["k"] == 0 and best.iloc[1]["score"] == 1.0
    # budgets hold per question: a config fits only when its longest question fits
    tight = int(table[(table.strategy == "rag") & (table.k == 1)]["length_max"].iloc[0]) - 1
    fits = best_per_budget(table, [tight], ["rag"]).iloc[0]
    assert fits["length_max"] <= tight


def test_fit_and_report_cli(tmp_path, capsys):
    _sweep_rows(tmp_path)
    path = tmp_path / "r.sqlite"
    assert main(["fit", "--results", str(path), "--json", "--metric", "f1"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert set(fitted) >= {"a", "b", "c", "i_doc", "i_shot", "r2", "mse", "configurations"}
    assert len(fitted["a"]) == 3 and fitted["i_doc"] > 0  # one document turns 0 into 1
    assert main(["report", "--results", str(path), "--budgets", "100000"]) == 0
    text = capsys.readouterr().out
    assert "iterdrag" in text and "drag" in text
    assert main(["report", "--results", str(path), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["strategy"] for r in records} == {"iterdrag", "drag", "rag"}


def test_fit_with_too_few_configurations_is_a_clear_error(tmp_path, capsys):
    data = tiny_dataset()
    store = ResultsStore(tmp_path / "r.sqlite")
    small = SweepSpec(dataset="tiny", strategies=("rag",), ks=(0, 1), ms=(0,), ns=(1,), limit=2, pool_size=2)
    run_sweep(small, ScriptedEngine(reader), store, dataset=data, retriever=WordRetriever(data.corpus))
    assert main(["fit", "--results", str(tmp_path / "r.sqlite"), "--json"]) == 2
    assert "at least 7 complete configurations" in capsys.readouterr().err
    assert main(["fit", "--results", str(tmp_path / "missing.sqlite")]) == 2
    assert "no results file" in capsys.readouterr().err


def test_bad_grid_is_a_clear_error():
    with pytest.raises(UserError, match="n values"):
        SweepSpec(ns=(0,))
    with pytest.raises(UserError, match="pool"):
        SweepSpec(ms=(0, 16), pool_size=8)
    assert main(["sweep", "--k", "1,x"]) == 2


def test_background_job_runs_and_reports_progress(tmp_path):
    data = tiny_dataset()
    registry = JobRegistry()
    out = tmp_path / "r.sqlite"
    job = registry.start(SPEC, ScriptedEngine(reader), out, dataset=data, retriever=WordRetriever(data.corpus))
    with pytest.raises(UserError, match="already writing"):
        if job.running:
            registry.start(SPEC, ScriptedEngine(reader), out, dataset=data, retriever=WordRetriever(data.corpus))
        else:
            raise UserError("already writing (job finished too fast to test the guard)")
    job.thread.join(30)
    assert job.status == "finished" and job.done == job.total == job.result.rows_total
    assert registry.jobs() == [job] and ResultsStore(out).count(KIND) == job.total


def test_background_job_captures_errors(tmp_path, caplog):
    data = tiny_dataset()
    registry = JobRegistry()

    class Broken(ScriptedEngine):
        def generate(self, prompts, params):
            raise RuntimeError("the server went away")

    out = tmp_path / "r.sqlite"
    job = registry.start(SPEC, Broken(reader), out, dataset=data, retriever=WordRetriever(data.corpus))
    job.thread.join(30)
    assert job.status == "failed" and job.error == "RuntimeError: the server went away"
    # the page shows one line; the traceback is in the server log
    logged = [r for r in caplog.records if r.name == "ragscale.rag.jobs"]
    assert logged and logged[0].exc_info and "the server went away" in str(logged[0].exc_info[1])
    assert not out.exists()  # the failed first run left no empty store behind


class SlowScriptedEngine(ScriptedEngine):
    """Each call takes a moment, like a GPU step; records the largest batch it was given."""

    def __init__(self):
        super().__init__(reader)
        self.largest_call = 0

    def generate(self, prompts, params):
        self.largest_call = max(self.largest_call, len(prompts))
        time.sleep(0.02)
        return super().generate(prompts, params)


def test_sweep_through_the_sglang_client_is_batched_by_the_server_and_matches_direct_runs(tmp_path):
    from ragscale.engines.sglang_client import SGLangEngine
    from tests.fakes import ByteTokenizer
    from tests.test_sglang_client import serve

    data = tiny_dataset()
    spec = SweepSpec(dataset="tiny", strategies=("drag", "iterdrag"), ks=(1, 2), ms=(0, 1), ns=(2,),
                     limit=4, pool_size=2, batch_size=4, generate_chains=False)
    behind = SlowScriptedEngine()
    server, url = serve(behind)
    try:
        client = SGLangEngine(url, tokenizer=ByteTokenizer(), retries=1, backoff=0.01)
        over_http = run_sweep(spec, client, ResultsStore(tmp_path / "http.sqlite"), dataset=data,
                              retriever=WordRetriever(data.corpus))
    finally:
        server.shutdown()
        server.server_close()
    direct = run_sweep(spec, ScriptedEngine(reader), ResultsStore(tmp_path / "direct.sqlite"), dataset=data,
                       retriever=WordRetriever(data.corpus))
    assert over_http.rows_written == direct.rows_written == over_http.rows_total
    # One HTTP request per prompt, in flight together; the server merged those that queued up.
    assert behind.largest_call > 1

    def comparable(path):
        keep = ("qid", "strategy", "k", "m", "n", "prediction", "em", "effective_length", "calls", "steps")
        return sorted(tuple(r.get(c) for c in keep) for r in ResultsStore(path).records(KIND))

    assert comparable(tmp_path / "http.sqlite") == comparable(tmp_path / "direct.sqlite")
    assert any(r["em"] for r in ResultsStore(tmp_path / "http.sqlite").records(KIND))


# ---- k = 0 grids, and the command line's checks before anything heavy loads -----------------

@pytest.mark.parametrize("strategies, ks, ms", [
    (("zero-shot",), (0, 1), (0,)),
    (("many-shot",), (0,), (0, 1)),
    (("rag",), (0,), (0,)),
    (("drag",), (0,), (0, 1)),
])
def test_grids_whose_every_configuration_has_k_0_run_without_a_retriever(tmp_path, strategies, ks, ms):
    data = tiny_dataset()
    spec = SweepSpec(dataset="tiny", strategies=strategies, ks=ks, ms=ms, ns=(1,), limit=2, pool_size=2)
    result = run_sweep(spec, ScriptedEngine(reader), ResultsStore(tmp_path / "r.sqlite"), dataset=data)
    assert result.rows_written == result.rows_total > 0
    assert all(r["k"] == 0 for r in ResultsStore(tmp_path / "r.sqlite").records(KIND))


def test_a_resumed_sweep_whose_remaining_configurations_have_k_0(tmp_path):
    data = tiny_dataset()
    small = SweepSpec(dataset="tiny", strategies=("rag",), ks=(0, 1), ms=(0,), ns=(1,), limit=2, pool_size=2)
    store = ResultsStore(tmp_path / "r.sqlite")
    only_k1 = SweepSpec(dataset="tiny", strategies=("rag",), ks=(1,), ms=(0,), ns=(1,), limit=2, pool_size=2)
    run_sweep(only_k1, ScriptedEngine(reader), store, dataset=data, retriever=WordRetriever(data.corpus))
    result = run_sweep(small, ScriptedEngine(reader), store, dataset=data)  # k = 1 done; k = 0 left
    assert result.rows_already_done == 2 and result.rows_written == 2


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a command makes an engine; returns the list of engines it was asked for."""
    asked = []

    def make_engine(spec):
        asked.append(spec)
        raise AssertionError("an engine was made")

    monkeypatch.setattr("ragscale.engines.make_engine", make_engine)
    return asked


@pytest.mark.parametrize("flags, says", [
    (["--strategies", "evil"], "--strategies: unknown strategy 'evil'"),
    (["--strategies", ","], "--strategies: give at least one"),
    (["--k", "-1"], "--k values must be non-negative"),
    (["--n", "0"], "--n values must be >= 1"),
    (["--n", "1000000000"], "--n values must be <= 64"),
    (["--k", "99999999999"], "--k values must be <= 10,000"),
    (["--k", "1,x"], "--k: use comma-separated whole numbers"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--m", "0,9"], "--m up to 9 needs a demonstration pool"),
    (["--engine", "sglang"], "the sglang engine needs a URL"),
])
def test_sweep_flags_are_checked_before_any_dataset_model_or_store(tmp_path, capsys, monkeypatch, no_model, flags, says):
    monkeypatch.setattr("ragscale.datasets.load_dataset", lambda *a: pytest.fail("the dataset was loaded")
                        if "--engine" not in flags else tiny_dataset())
    out = tmp_path / "r.sqlite"
    assert main(["sweep", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err
    assert not no_model and not out.exists()


def test_a_failed_first_sweep_leaves_no_empty_results_file(tmp_path, capsys, monkeypatch):
    from ragscale.errors import EngineError

    def make_engine(spec):
        raise EngineError("cannot reach the SGLang server at http://127.0.0.1:9 (is it running?)")

    monkeypatch.setattr("ragscale.engines.make_engine", make_engine)
    out = tmp_path / "r.sqlite"
    assert main(["sweep", "--dataset", "demo", "--engine", "sglang", "--url", "http://127.0.0.1:9",
                 "--out", str(out)]) == 2
    assert "cannot reach" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_store_that_cannot_be_written_or_is_damaged_is_refused_before_the_model(tmp_path, capsys, no_model):
    from tests.test_store import _make_immutable, _store_with_rows, _undo_immutable

    damaged = tmp_path / "damaged.sqlite"
    _store_with_rows(damaged)
    with open(damaged, "r+b") as handle:
        handle.seek(damaged.stat().st_size - 4096)
        handle.write(bytes(range(256)) * 16)
    assert main(["sweep", "--dataset", "demo", "--strategies", "zero-shot", "--out", str(damaged)]) == 2
    assert "is damaged" in capsys.readouterr().err
    # report and fit: one clear line, no sqlite3 traceback
    for command in (["report"], ["fit"]):
        assert main([*command, "--results", str(damaged)]) == 2
        err = capsys.readouterr().err
        assert "is damaged" in err and err.count("\n") == 1
    frozen = tmp_path / "frozen.sqlite"
    _store_with_rows(frozen, 2)
    if not _make_immutable(frozen):
        pytest.skip("cannot make a file read-only here")
    try:
        assert main(["sweep", "--dataset", "demo", "--strategies", "zero-shot", "--out", str(frozen)]) == 2
        assert "cannot write the results store" in capsys.readouterr().err
    finally:
        _undo_immutable(frozen)
    assert not no_model


def test_report_and_fit_never_change_the_file(tmp_path):
    _sweep_rows(tmp_path)
    path = tmp_path / "r.sqlite"
    import sqlite3

    con = sqlite3.connect(path)  # make it a plain rollback-journal file, as a copied store might be
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    before = path.read_bytes()
    assert main(["report", "--results", str(path)]) == 0
    assert main(["fit", "--results", str(path)]) == 0
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.sqlite"]


def test_version_and_help_texts(capsys):
    import argparse

    from ragscale import __version__
    from ragscale.cli import build_parser

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"ragscale {__version__}"
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("sweep", "fit", "report"):
        described = [a for a in commands[name]._actions if a.help and a.help != argparse.SUPPRESS]
        assert len(described) == len(commands[name]._actions), f"{name}: an option has no description"
        text = " ".join(commands[name].format_help().split())
        assert "(default: None)" not in text and ") (default:" not in text, text


@pytest.mark.parametrize("flags", [
    ["--strategies", "zero-shot"],
    ["--strategies", "many-shot", "--m", "0,1"],
    ["--strategies", "rag,drag", "--k", "0", "--m", "0,1"],
])
def test_k_0_sweeps_from_the_command_line(tmp_path, capsys, monkeypatch, flags):
    monkeypatch.setattr("ragscale.engines.make_engine", lambda spec: ScriptedEngine(lambda *args: "Paris"))
    monkeypatch.setattr("ragscale.retrieval.build_retriever", lambda *a, **k: pytest.fail("no index for k = 0"))
    out = tmp_path / "k0.sqlite"
    assert main(["sweep", "--dataset", "demo", "--limit", "2", "--n", "1", *flags, "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows_written"] == summary["rows_total"] > 0
    assert {r["k"] for r in ResultsStore(out, read_only=True).records(KIND)} == {0}


def test_a_sweep_on_a_priced_model_prints_what_the_provider_bills(tmp_path, capsys, monkeypatch):
    from ragscale.allocation.prices import load_sheet
    from ragscale.engines.openai_client import OpenAIEngine
    from ragscale.formatting import fmt_usd
    from tests.fakes import ByteTokenizer
    from tests.http_fakes import serving_model

    served = ScriptedEngine(lambda *args: "Paris")
    clients = []
    monkeypatch.setattr("ragscale.engines.make_engine",
                        lambda spec: clients.append(OpenAIEngine(url, tokenizer=ByteTokenizer())) or clients[-1])
    with serving_model(served, "gemini-1.5-flash") as url:
        assert main(["sweep", "--dataset", "demo", "--limit", "2", "--n", "1", "--strategies", "zero-shot",
                     "--out", str(tmp_path / "a.sqlite")]) == 0
    sheet = load_sheet("gemini-1.5-flash")
    billed = clients[0].cost_usd(sheet)["total_usd"]
    assert billed > 0
    assert re.search(rf"^ *cost: {re.escape(fmt_usd(billed))} at gemini-1.5-flash prices, {sheet.date}$",
                     capsys.readouterr().out, re.MULTILINE)
