"""`ragscale search` and `ragscale search-sweep` on the ScriptedEngine (no model loads)."""

from __future__ import annotations

import json

import pytest

from ragscale.cli import main
from ragscale.datasets.types import Dataset
from ragscale.search import builder as search_builder
from ragscale.search import cli as search_cli
from ragscale.search import tasks as search_tasks
from ragscale.store import ResultsStore
from tests.fakes import ScriptedEngine
from tests.test_search_runner import DOCS, QUESTION, fake_embed, judge_logprob, qa_reply, retrieve


@pytest.fixture
def scripted(monkeypatch, tmp_path):
    """Every engine, retriever and embedder the CLI would build, replaced by model-free fakes."""
    engines = []

    def make(args, **overrides):
        engines.append(ScriptedEngine(qa_reply, logprob=judge_logprob))
        return engines[-1]

    dataset = Dataset("tiny", [QUESTION], list(DOCS), source="tiny")
    monkeypatch.setattr(search_cli, "engine_from_args", make)
    monkeypatch.setattr(search_builder, "embedder", lambda: fake_embed)
    monkeypatch.setattr(search_tasks, "retriever_for", lambda ds: retrieve)
    monkeypatch.setattr(search_builder, "load_questions", lambda task, path: dataset)
    return engines


def test_search_json_prints_answer_kv_and_tree(scripted, capsys):
    code = main(["search", "--policy", "ets", "--width", "4", "--lambda-b", "1.0", "--lambda-d", "1.5",
                 "--dataset", "demo", "--question", "q1", "--max-depth", "3", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] in ("Dijon", "Paris") and isinstance(out["correct"], bool)
    assert out["policy"] == "ets" and out["width"] == 4
    assert out["config"]["lambda_b"] == 1.0 and out["config"]["lambda_d"] == 1.5
    kv = out["kv"]
    assert kv["peak"] == max(kv["per_step"]) and kv["mean"] == pytest.approx(sum(kv["per_step"]) / len(kv["per_step"]))
    nodes = out["tree"]["nodes"]
    assert nodes[0]["parent"] is None and nodes[0]["tokens"] > 0
    for node in nodes[1:]:
        assert set(node) >= {"id", "parent", "depth", "tokens", "text", "score", "status", "cluster", "cached_tokens"}
        assert node["status"] in ("kept", "pruned", "finished")
        assert 0 <= node["score"] <= 1
    assert any(n["status"] == "finished" for n in nodes)
    assert out["prompt_tokens"] >= out["cached_tokens"] > 0 and out["tokens_generated"] > 0
    assert out["model_calls"] == out["generation_requests"] + out["verifier_calls"]


def test_search_text_output_and_saved_tree(scripted, capsys, tmp_path):
    from ragscale.search.tree import Tree

    path = tmp_path / "result.json"
    assert main(["search", "--policy", "beam", "--width", "4", "--save", str(path)]) == 0
    text = capsys.readouterr().out
    assert "answer   :" in text and "KV       :" in text and "#0 kept" in text
    saved = json.loads(path.read_text())
    tree = Tree.from_dict(saved["tree"])
    assert len(tree) > 1 and tree.root.token_ids and saved["kv"]["per_step"] and saved["policy"] == "beam"


def test_search_rejects_bad_input(scripted, capsys):
    assert main(["search", "--question", "nope"]) == 2
    assert "no question 'nope'" in capsys.readouterr().err
    assert main(["search", "--width", "0"]) == 2
    assert "width" in capsys.readouterr().err
    assert main(["search", "--verifier", "prm"]) == 2
    assert "--prm-url" in capsys.readouterr().err


def test_search_sweep_writes_records_and_resumes(scripted, capsys, tmp_path):
    out = tmp_path / "results.sqlite"
    args = ["search-sweep", "--policies", "ets,rebase", "--widths", "2,4", "--seeds", "0", "--limit", "1",
            "--max-depth", "2", "--out", str(out), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["runs_total"] == 4 and first["runs_written"] == 4 and first["runs_already_done"] == 0
    records = ResultsStore(out).records("search")
    assert sorted((r["policy"], r["width"]) for r in records) == [("ets", 2), ("ets", 4), ("rebase", 2), ("rebase", 4)]
    assert all("tree" in r and r["kv"]["per_step"] for r in records)
    # Rerun: nothing is repeated.
    calls_before = len(scripted)
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["runs_written"] == 0 and second["runs_already_done"] == 4
    assert len(scripted) == calls_before + 1 and not scripted[-1].calls  # the engine generated nothing
    # The trade-off table and figure read these records.
    from ragscale.plots.tree import tradeoff_figure
    from ragscale.search.results import tradeoff_table

    table = tradeoff_table(records)
    assert len(table) == 4 and set(table["questions"]) == {1}
    assert len(tradeoff_figure(records).data) == 2


def test_search_sweep_rejects_unknown_policy(scripted, capsys, tmp_path):
    assert main(["search-sweep", "--policies", "ets,magic", "--out", str(tmp_path / "r.sqlite")]) == 2
    assert "magic" in capsys.readouterr().err


def test_reasoning_needs_a_gsm8k_file(capsys):
    assert main(["search", "--task", "reasoning", "--dataset", "demo"]) == 2
    assert "GSM8K" in capsys.readouterr().err


def test_bench_kv_reports_both_policies_and_their_ratio(scripted, capsys, tmp_path):
    out = tmp_path / "bench.sqlite"
    assert main(["bench", "kv", "--questions", "1", "--width", "4", "--max-depth", "3", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["questions"] == 1 and report["width"] == 4 and report["max_depth"] == 3
    records = {r["policy"]: r for r in ResultsStore(out).records("search")}
    for policy in ("ets", "rebase"):
        assert report[policy]["mean_retained_kv_tokens"] == pytest.approx(records[policy]["kv"]["mean"], abs=0.05)
        assert report[policy]["accuracy"] == float(records[policy]["correct"])
    assert report["kv_ratio_rebase_over_ets"] == pytest.approx(
        report["rebase"]["mean_retained_kv_tokens"] / report["ets"]["mean_retained_kv_tokens"], abs=1e-3)


def test_bench_kv_takes_ets_settings_and_reports_them(scripted, capsys, tmp_path):
    out = tmp_path / "bench.sqlite"
    assert main(["bench", "kv", "--questions", "1", "--width", "4", "--max-depth", "2", "--lambda-d", "0",
                 "--cluster-threshold", "0.3", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ets_settings"] == {"lambda_b": 1.0, "lambda_d": 0.0, "cluster_threshold": 0.3, "kv_cost": "tokens"}
    ets = next(r for r in ResultsStore(out).records("search") if r["policy"] == "ets")
    assert ets["config"]["lambda_d"] == 0.0 and ets["config"]["cluster_threshold"] == 0.3


@pytest.mark.parametrize("argv,message", [
    (["search", "--width", "0"], "width"),
    (["search", "--k", "0"], "--k"),
    (["search", "--lambda-b", "-1"], "lambda_b"),
    (["search-sweep", "--widths", "0,4"], "--widths"),
    (["search-sweep", "--policies", "evil"], "evil"),
    (["search-sweep", "--limit", "0"], "--limit"),
    (["bench", "kv", "--width", "0"], "width"),
])
def test_bad_values_are_refused_before_a_model_or_store_exists(argv, message, monkeypatch, capsys, tmp_path):
    def no_engine(*args, **kwargs):
        raise AssertionError("an engine was built for a command that should have been refused")

    monkeypatch.setattr(search_cli, "engine_from_args", no_engine)
    monkeypatch.setattr(search_builder, "load_questions", no_engine)  # nor a dataset loaded
    out = tmp_path / "r.sqlite"
    extra = ["--out", str(out)] if argv[0] == "search-sweep" else []
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ragscale: error:") and message in err
    assert not out.exists()  # no empty results store left behind


@pytest.mark.parametrize("command", [["search"], ["search-sweep"], ["bench", "kv"], ["explorer-precompute"],
                                     ["bench", "explorer-live"]])
def test_help_names_real_defaults_only(command, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = capsys.readouterr().out
    import re

    assert "(default: None)" not in text
    assert not re.search(r"\(default:[^)]*\)\s*\(default:", " ".join(text.split()))  # never two defaults
    if command[0] != "bench" or command[1] == "kv":
        assert "--threads" in text


def test_a_failed_search_sweep_leaves_no_empty_store_but_keeps_a_used_one(scripted, monkeypatch, tmp_path):
    import ragscale.search.runner as runner
    from ragscale.errors import EngineError

    argv = ["search-sweep", "--policies", "ets", "--widths", "2", "--limit", "1", "--max-depth", "2"]
    kept = tmp_path / "kept.sqlite"
    assert main([*argv, "--out", str(kept)]) == 0

    def broken(*args, **kwargs):
        raise EngineError("the engine went away")

    monkeypatch.setattr(runner, "run_search_sweep", broken)
    fresh = tmp_path / "fresh.sqlite"
    assert main([*argv, "--out", str(fresh)]) == 2
    assert not list(tmp_path.glob("fresh.sqlite*"))  # nor its -wal / -shm
    assert main([*argv, "--out", str(kept)]) == 2
    assert len(ResultsStore(kept).records("search")) == 1  # a store with runs in it is never removed


def test_search_against_a_billing_server_prints_what_the_provider_bills(scripted, monkeypatch, capsys, tmp_path):
    """An OpenAI-compatible engine whose model a price sheet names: the summary says what the
    run's requests cost at that sheet (the provider's own usage counts); another model: no cost."""
    from ragscale.allocation.prices import load_sheet
    from ragscale.engines.openai_client import OpenAIEngine
    from ragscale.formatting import fmt_usd
    from tests.fakes import ByteTokenizer
    from tests.http_fakes import serving_model

    def reply(prompt, params, i, rng):  # scoring over /v1 decodes one token after the judged text
        return qa_reply(prompt, params, i, rng) if prompt.endswith(":") else "."

    def served(model: str):
        return serving_model(ScriptedEngine(reply, logprob=judge_logprob), model)

    clients = []
    monkeypatch.setattr(search_cli, "engine_from_args",
                        lambda args, **kw: clients.append(OpenAIEngine(url, tokenizer=ByteTokenizer())) or clients[-1])
    with served("gemini-1.5-flash") as url:
        assert main(["search", "--policy", "beam", "--width", "2", "--max-depth", "2"]) == 0
        text = capsys.readouterr().out
        assert main(["search", "--policy", "beam", "--width", "2", "--max-depth", "2", "--json"]) == 0
        record = json.loads(capsys.readouterr().out)["cost"]
        assert main(["search-sweep", "--policies", "beam", "--widths", "2", "--seeds", "0", "--limit", "1",
                     "--max-depth", "2", "--out", str(tmp_path / "s.sqlite")]) == 0
        swept = capsys.readouterr().out
    sheet = load_sheet("gemini-1.5-flash")
    billed = clients[0].cost_usd(sheet)["total_usd"]
    assert billed > 0 and f"cost     : {fmt_usd(billed)} at gemini-1.5-flash prices, {sheet.date}\n" in text
    assert record["total_usd"] == pytest.approx(clients[1].cost_usd(sheet)["total_usd"])
    assert record["sheet"] == "gemini-1.5-flash" and record["date"] == sheet.date
    swept_cost = fmt_usd(clients[2].cost_usd(sheet)["total_usd"])
    assert f"cost: {swept_cost} at gemini-1.5-flash prices, {sheet.date}\n" in swept, swept
    with served("some-local-model") as url:
        assert main(["search", "--policy", "beam", "--width", "2", "--max-depth", "2"]) == 0
        assert "engine   :" in (text := capsys.readouterr().out) and "cost" not in text
