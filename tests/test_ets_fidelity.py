"""What ``bench ets-fidelity`` and the sweep report compute: KV two ways, bootstrap intervals, the
REBASE/ETS ratio read off the KV-vs-accuracy frontiers, and the bench's JSON on the bundled sweep."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ragscale.cli import main as cli_main
from ragscale.errors import UserError
from ragscale.search.kv import kv_two_ways, record_kv
from ragscale.search.results import (BUNDLED_SEARCH_SWEEP, accuracy_interval, frontier, frontier_kv_ratio,
                                     kv_on_frontier, load_sweep_records, of_bundled_sweep)


def test_search_kv_is_retained_kv_without_the_prompt():
    kv = kv_two_ways([170, 200, 230], 170)
    assert kv["mean"] == 200 and kv["search_per_step"] == [0, 30, 60] and kv["search_mean"] == 30
    assert kv["search_peak"] == 60 and kv["peak"] == 230
    # an older record (retained KV only) reads its prompt off the tree's root
    old = {"kv": {"per_step": [170, 200], "mean": 185.0, "peak": 200},
           "tree": {"nodes": [{"id": 0, "parent": None, "token_ids": [1] * 170}]}}
    assert record_kv(old)["search_mean"] == 15
    with pytest.raises(ValueError, match="no tree"):
        record_kv({"qid": "q", "kv": {"per_step": [1]}})


def _table(rows):
    return pd.DataFrame(rows, columns=["policy", "width", "accuracy", "kv_mean"])


def test_frontier_drops_widths_that_cost_more_for_no_gain_and_interpolates():
    table = _table([("rebase", 2, 0.2, 100), ("rebase", 4, 0.4, 200), ("rebase", 8, 0.4, 300),
                    ("rebase", 16, 0.6, 400), ("ets", 2, 0.2, 90), ("ets", 4, 0.5, 150), ("ets", 8, 0.5, 220)])
    assert frontier(table, "rebase") == [(100, 0.2), (200, 0.4), (400, 0.6)]
    assert kv_on_frontier(frontier(table, "rebase"), 0.5) == pytest.approx(300)  # halfway from 200 to 400
    assert kv_on_frontier(frontier(table, "rebase"), 0.1) == 100  # reached at the cheapest width already
    assert kv_on_frontier(frontier(table, "rebase"), 0.7) is None
    m = frontier_kv_ratio(table)
    assert m["accuracy"] == 0.5 and m["rebase_kv"] == pytest.approx(300) and m["ets_kv"] == 150
    assert m["ratio"] == pytest.approx(2.0)
    assert frontier_kv_ratio(_table([("rebase", 2, 0.0, 1), ("ets", 2, 0.0, 1)]))["ratio"] is None


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_problems():
    few = accuracy_interval([1, 0] * 4)
    many = accuracy_interval([1, 0] * 40)
    assert few[0] < 0.5 < few[1] and many[0] < 0.5 < many[1]
    assert many[1] - many[0] < few[1] - few[0]
    assert accuracy_interval([1, 1, 1]) == (1.0, 1.0)


def test_bench_ets_fidelity_reads_the_bundled_sweep(capsys):
    assert cli_main(["bench", "ets-fidelity", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    records = [r for r in of_bundled_sweep(load_sweep_records(BUNDLED_SEARCH_SWEEP), BUNDLED_SEARCH_SWEEP)
               if r["policy"] in ("ets", "rebase")]
    assert out["problems"] == len({r["qid"] for r in records}) and out["searches"] == len(records)
    assert out["public_code_agreement"] == 1.0 and out["replayed_steps"] > 0
    for key in ("kv_ratio_matched", "kv_ratio_search_only"):
        assert out[key] is None or out[key] > 0
    for policy in ("ets", "rebase"):
        for cell in out["accuracy"][policy].values():
            assert cell["ci95"][0] <= cell["accuracy"] <= cell["ci95"][1]
    assert set(out["ets_selection"]) >= {"mean_clusters_per_candidate", "funded_pruned"}


def test_bench_ets_fidelity_without_a_sweep_is_one_line(tmp_path, capsys):
    assert cli_main(["bench", "ets-fidelity", "--sweep", str(tmp_path / "none.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "make search-results" in err and "Traceback" not in err


def test_only_problems_done_in_every_cell_are_compared():
    from ragscale.search.results import complete_problems

    def rec(qid, policy, width, cost="nodes"):
        return {"qid": qid, "policy": policy, "width": width, "config": {"kv_cost": cost}}

    rows = [rec("a", "rebase", 2), rec("a", "ets", 2), rec("b", "rebase", 2),  # b: ETS not run yet
            rec("c", "rebase", 2), rec("c", "ets", 2), rec("c", "ets", 2, "tokens")]
    assert {r["qid"] for r in complete_problems(rows)} == {"c"}  # the token-cost arm is a cell of its own
    assert {r["qid"] for r in complete_problems(rows[:5])} == {"a", "c"}


def _dev_record(policy, qid, correct, search_kv, lambda_d=1.5, cut=0.05):
    return {"policy": policy, "qid": qid, "correct": correct, "dataset": "arithmetic-s3-o2",
            "config": {"lambda_d": lambda_d, "cluster_threshold": cut},
            "kv": {"mean": 170 + search_kv, "search_mean": search_kv, "prompt": 170},
            "selections": [{"candidates": 4, "clusters": 2, "funded_pruned": int(search_kv < 90)}]}


def test_ets_tuning_keeps_the_papers_setting_unless_another_clearly_saves_more_without_losing_problems():
    from ragscale.search.bench import tuning_table

    def store(others):
        records = [_dev_record("rebase", f"q{i}", i < 4, 100.0) for i in range(8)]
        records += [_dev_record("ets", f"q{i}", i < 4, 80.0) for i in range(8)]  # the paper's setting
        for (lambda_d, cut), (right, kv) in others.items():
            records += [_dev_record("ets", f"q{i}", i < right, kv, lambda_d, cut) for i in range(8)]
        return records

    near = tuning_table(store({(0.5, 0.05): (4, 78.0)}))  # 2.5% less: within the spread
    assert near["chosen"] == {"lambda_d": 1.5, "cut": 0.05} and near["problems"] == 8
    assert near["settings"]["lambda_d=1.5 cut=0.05"]["search_kv_ratio"] == pytest.approx(1.25)
    clear = tuning_table(store({(0.5, 0.05): (4, 70.0), (0.0, 0.05): (2, 50.0)}))  # 0.0 loses two problems
    assert clear["chosen"] == {"lambda_d": 0.5, "cut": 0.05}
    with pytest.raises(UserError, match="one REBASE run"):
        tuning_table([r for r in store({}) if r["policy"] == "ets"])


def test_held_out_comparison_keeps_each_datasets_problems_apart():
    """Two held-out task variants in one store share problem ids (arith-000 ...): each is compared on
    its own problems, never pooled."""
    from ragscale.search.bench import held_out_comparison

    def rec(dataset, policy, qid, correct, search_kv):
        r = _dev_record(policy, qid, correct, search_kv)
        return {**r, "dataset": dataset, "width": 16, "config": {**r["config"], "kv_cost": "nodes"}}

    records = [rec(d, p, f"arith-00{i}", d.endswith("o2"), kv) for d in ("arithmetic-s2", "arithmetic-s2-o2")
               for p, kv in (("rebase", 90.0), ("ets", 60.0 if d.endswith("o2") else 90.0)) for i in range(3)]
    out = held_out_comparison(records)
    assert set(out) == {f"{d}: {name} w=16" for d in ("arithmetic-s2", "arithmetic-s2-o2")
                        for name in ("rebase", "ets (nodes cost)")}
    assert out["arithmetic-s2-o2: ets (nodes cost) w=16"] == {**out["arithmetic-s2-o2: ets (nodes cost) w=16"],
                                                             "problems": 3, "accuracy": 1.0, "kv_search_mean": 60.0}
    assert out["arithmetic-s2: ets (nodes cost) w=16"]["accuracy"] == 0.0


def test_counterfactual_does_not_name_a_diversity_weight_it_could_not_weigh():
    """The bundled sweep ran with lambda_d 0 (no clusters recorded): a lambda_d > 0 row says so
    instead of repeating lambda_d 0's count under another name."""
    from ragscale.search.bench import counterfactual_prunes

    records = [r for r in of_bundled_sweep(load_sweep_records(BUNDLED_SEARCH_SWEEP), BUNDLED_SEARCH_SWEEP)
               if r["policy"] == "ets" and r["width"] == 16][:3]
    out = counterfactual_prunes(records, lambdas=((1.0, 1.5), (1.0, 0.0)))
    assert out["lambda_b=1.0 lambda_d=1.5"]["dropped_by_program"] is None
    assert out["lambda_b=1.0 lambda_d=0.0"]["funded"] > 0
