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


@pytest.mark.parametrize("budget", ["1e12", "1000000000000"])
def test_huge_budgets_get_the_same_error_however_typed(capsys, budget):
    code, out, err = run(capsys, "allocate", "--budget", budget, "--json")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "use 1 to 1,000,000,000 tokens" in err


def test_allocate_human_table_shows_the_window_and_a_readable_cost(capsys):
    code, out, _ = run(capsys, "allocate", "--budget", "1k")
    assert code == 0 and "of a 1M window" in out
    cost_line = next(line for line in out.splitlines() if line.startswith("cost per query"))
    assert any(ch in "123456789" for ch in cost_line.split("$")[1])


def test_allocation_cli_imports_no_plotting():
    code = ("import sys, ragscale.allocation.cli, ragscale.allocation; "
            "bad = [m for m in sys.modules if m.startswith(('ragscale.plots', 'plotly', 'streamlit'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_bench_fidelity_json(capsys):
    code, out, _ = run(capsys, "bench", "fidelity", "--json")
    data = json.loads(out)
    assert code == 0 and out.count("\n") == 1
    assert data["cells"] == 20 == len(data["table"]) and data["context_window"] == 1_000_000
    assert 0 <= data["same_winner"] <= 20
    assert data["same_winner"] == sum(row["same_winner"] for row in data["table"])
    assert {row["budget"] for row in data["table"]} == {16_000, 32_000, 128_000, 1_000_000, 5_000_000}
    assert all(row["largest_call"] <= 1_000_000 for row in data["table"])
    assert data["without_window"]["model_picks"]  # the comparison the window makes


def test_allocate_1m_prices_its_call_at_twice_the_short_prompt_tier():
    """Issue #23 (3), done when: the 979,923-token call is billed at the > 128k tier, twice the <= 128k rates."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ragscale", "allocate", "--budget", "1M", "--json"],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["effective_tokens"] == 979_923
    (bill,) = result["call_bills"]
    assert bill["prompt_tokens"] == 979_923 and bill["tier"] == "prompts > 128k"
    assert (bill["input_per_m"], bill["cached_per_m"], bill["output_per_m"]) == (0.15, 0.0375, 0.60)
    short_tier = (bill["prompt_tokens"] - bill["cached_tokens"]) * 0.075 + bill["cached_tokens"] * 0.01875 + 8 * 0.30
    assert result["cost_per_query_usd"] == pytest.approx(2 * short_tier / 1e6)
    assert result["price_sheet"]["date"] and result["price_sheet"]["source"].startswith("https://")


def test_a_mistyped_flag_is_named_with_the_nearest_real_one(capsys):
    """Issue #23 (8): `allocate --budjet 128k` said only "required: --budget"."""
    with pytest.raises(SystemExit) as exit_:
        main(["allocate", "--budjet", "128k"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "unknown flag --budjet; did you mean --budget?" in err and "required" not in err


def test_abbreviations_argparse_accepts_still_work(capsys):
    code, out, _ = run(capsys, "allocate", "--budg", "16k", "--json")
    assert code == 0 and json.loads(out)["budget"] == 16_000


def test_the_readme_says_how_to_reach_the_cli_and_that_path_works():
    """Issue #23 (8): after `make run` a bare `ragscale` is "command not found"; the README must say how."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    assert ".venv/bin/ragscale" in readme and "source .venv/bin/activate" in readme
    script = root / ".venv" / "bin" / "ragscale"  # the console script `make install` puts there
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ragscale ")
