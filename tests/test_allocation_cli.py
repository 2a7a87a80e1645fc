"""`ragscale allocate` and `ragscale bench allocation`: output shape and error paths."""

import json
import subprocess
import sys

import pytest

from ragscale.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_allocate_json(capsys):
    code, out, err = run(capsys, "allocate", "--budget", "128k", "--profile", "paper", "--strategy", "auto", "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    for key in ("strategy", "k", "m", "n", "effective_tokens", "budget", "predicted_score", "cost_per_query_usd"):
        assert key in data
    assert data["budget"] == 128_000 and data["effective_tokens"] <= 128_000 and data["cost_per_query_usd"] > 0


def test_allocate_strategy_and_sizes(capsys):
    code, out, _ = run(capsys, "allocate", "--budget", "1M", "--strategy", "iterdrag", "--size", "doc=300", "--json")
    data = json.loads(out)
    assert code == 0 and data["strategy"] == "iterdrag" and data["effective_tokens"] <= 1_000_000


def test_allocate_human_table(capsys):
    code, out, _ = run(capsys, "allocate", "--budget", "16k")
    assert code == 0 and "predicted score" in out and "cost per query" in out


@pytest.mark.parametrize("budget", ["0", "-5", "abc", "12q"])
def test_invalid_budget_one_line_exit_2(capsys, budget):
    code, out, err = run(capsys, "allocate", f"--budget={budget}", "--json")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("ragscale: error: invalid budget")


@pytest.mark.parametrize("extra", [["--budget", "10"], ["--budget", "16k", "--profile", "nope"],
                                   ["--budget", "16k", "--size", "doc"], ["--budget", "16k", "--size", "docs=1"],
                                   ["--budget", "16k", "--cache-hit", "2"]])
def test_other_user_errors_exit_2(capsys, extra):
    code, _, err = run(capsys, "allocate", *extra)
    assert code == 2 and err.count("\n") == 1


def test_entry_point_subprocess():
    bad = subprocess.run([sys.executable, "-m", "ragscale", "allocate", "--budget", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    bench = subprocess.run([sys.executable, "-m", "ragscale", "bench", "allocation", "--json", "--repeats", "3"],
                           capture_output=True, text=True)
    assert bench.returncode == 0, bench.stderr
    data = json.loads(bench.stdout)
    assert data["configs"] >= 100_000 and data["seconds"] > 0
    assert data["configs_per_second"] == pytest.approx(data["configs"] / data["seconds"], rel=1e-3)
