"""The per-call context window: no configuration the calculator proposes has a call its model cannot take."""

import contextlib
import io
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragscale.allocation import (
    GEMINI_15_FLASH_WINDOW,
    PAPER_PROFILE,
    STRATEGIES,
    AllocationModel,
    Profile,
    TokenSizes,
    effective_length,
    frontier,
    largest_call,
    manual_allocation,
    optimise,
    token_usage,
)
from ragscale.cli import main
from ragscale.errors import UserError

budgets = st.integers(min_value=1_000, max_value=50_000_000)
choices = st.sampled_from(("auto",) + STRATEGIES)
windows = st.sampled_from([2_048, 8_192, 32_768, 128_000, 1_000_000])
sizes_strategy = st.builds(
    TokenSizes,
    doc=st.floats(1, 2000), question=st.floats(1, 200), answer=st.floats(1, 50), subquery=st.floats(1, 100),
    intermediate=st.floats(1, 100), instruction=st.floats(0, 500), demo_steps=st.floats(0, 5),
)


def test_paper_profile_carries_gemini_window():
    assert PAPER_PROFILE.context_window == GEMINI_15_FLASH_WINDOW == 1_000_000


def test_largest_call_one_call_strategies_is_the_whole_prompt_plus_answer():
    sizes = TokenSizes()
    for strategy in ("zero-shot", "many-shot", "rag", "drag"):
        assert float(largest_call(strategy, 20, 4, 1, sizes)) == pytest.approx(
            float(effective_length(strategy, 20, 4, 1, sizes)) + sizes.answer)


def test_largest_call_iterdrag_is_the_final_prompt_and_sums_to_less_than_the_total():
    sizes = TokenSizes(doc=100, question=10, answer=5, subquery=7, intermediate=9, instruction=20, demo_steps=1)
    k, m, n = 3, 2, 4
    first = 20 + m * (k * 100 + 10 + 5 + 1 * (7 + 9)) + k * 100 + 10
    assert float(largest_call("iterdrag", k, m, n, sizes)) == pytest.approx(first + n * (7 + k * 100 + 9) + 5)
    # 2n + 1 calls: the largest is far below the sum that the budget bounds.
    assert float(largest_call("iterdrag", k, m, n, sizes)) < float(effective_length("iterdrag", k, m, n, sizes)) / 3
    assert token_usage("iterdrag", k, m, n, sizes)["largest_call"] == pytest.approx(largest_call("iterdrag", k, m, n, sizes))


@settings(max_examples=80, deadline=None)
@given(budget=budgets, strategy=choices, sizes=sizes_strategy, window=windows)
def test_optimise_never_returns_a_call_over_the_window(budget, strategy, sizes, window):
    profile = replace(PAPER_PROFILE, context_window=window)
    try:
        best = optimise(profile, budget, strategy, sizes)
    except UserError:
        smallest = min(float(largest_call(s, 0, 0, 1, sizes)) for s in (STRATEGIES if strategy == "auto" else (strategy,)))
        cheapest = min(float(effective_length(s, 0, 0, 1, sizes)) for s in (STRATEGIES if strategy == "auto" else (strategy,)))
        assert smallest > window or cheapest > budget
        return
    assert float(largest_call(best.strategy, best.k, best.m, best.n, sizes)) <= window
    assert best.largest_call_tokens <= window and best.fits_window and best.context_window == window
    assert best.effective_tokens <= budget


@settings(max_examples=25, deadline=None)
@given(sizes=sizes_strategy, window=windows)
def test_frontier_rows_all_fit_the_window(sizes, window):
    profile = replace(PAPER_PROFILE, context_window=window)
    table = frontier(profile, np.geomspace(1e3, 2e7, 25).astype(int), list(STRATEGIES) + ["auto"], sizes)
    assert (table["largest_call_tokens"] <= window).all()
    for row in table.itertuples():
        assert float(largest_call(row.chosen_strategy, row.k, row.m, row.n, sizes)) <= window


@settings(max_examples=40, deadline=None)
@given(budget=budgets, sizes=sizes_strategy)
def test_auto_never_picks_iterdrag_with_one_iteration(budget, sizes):
    # The model scores IterDRAG (k, m, 1) exactly like DRAG (k, m), which is shorter and has smaller calls.
    try:
        best = optimise(PAPER_PROFILE, budget, "auto", sizes)
    except UserError:
        return
    assert not best.same_as_drag


@settings(max_examples=15, deadline=None)
@given(budget=st.integers(min_value=16_000, max_value=50_000_000), strategy=choices)
def test_cli_allocate_never_returns_a_call_over_the_window(budget, strategy):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["allocate", "--budget", str(budget), "--strategy", strategy, "--json"])
    data = json.loads(out.getvalue())
    assert code == 0
    assert data["largest_call_tokens"] <= data["context_window"] == 1_000_000
    assert float(largest_call(data["strategy"], data["k"], data["m"], data["n"])) <= 1_000_000


def test_cli_5m_spends_the_budget_over_several_calls(capsys):
    # Before the window: DRAG k=1000, m=32 in one 4.95M-token prompt. Now only IterDRAG can spend 5M.
    assert main(["allocate", "--budget", "5M", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["strategy"] == "iterdrag" and data["n"] >= 2
    assert data["effective_tokens"] > 1_000_000 >= data["largest_call_tokens"]
    assert main(["allocate", "--budget", "5M", "--strategy", "drag", "--json"]) == 0
    drag = json.loads(capsys.readouterr().out)
    assert drag["effective_tokens"] <= 1_000_000 and drag["largest_call_tokens"] <= 1_000_000


def test_without_a_window_the_old_answer_comes_back():
    unbounded = replace(PAPER_PROFILE, context_window=None)
    best = optimise(unbounded, "5M")
    assert best.strategy == "drag" and best.largest_call_tokens > 1_000_000 and best.fits_window


def test_nothing_fits_the_window_is_said_plainly():
    tiny = replace(PAPER_PROFILE, context_window=10)
    with pytest.raises(UserError, match="context window of 10 tokens"):
        optimise(tiny, "1M")


def test_manual_allocation_flags_budget_window_and_n1():
    allocation, notices = manual_allocation(PAPER_PROFILE, "drag", 1000, 256, 1, "5M")
    assert allocation.largest_call_tokens > 1_000_000 and not allocation.fits_window
    assert any("over the budget" in n for n in notices) and any("context window" in n for n in notices)
    allocation, notices = manual_allocation(PAPER_PROFILE, "iterdrag", 10, 2, 1, "128k")
    assert allocation.same_as_drag and any("self-ask clothes" in n for n in notices)
    drag, _ = manual_allocation(PAPER_PROFILE, "drag", 10, 2, 1, "128k")
    assert allocation.predicted_score == pytest.approx(drag.predicted_score)  # why n = 1 is DRAG for the model
    assert allocation.effective_tokens > 2.5 * drag.effective_tokens


def _rows(window_column=None) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for k in (0, 1, 2, 4):
        for m in (0, 1, 2):
            for n in (1, 2):
                strategy = "iterdrag" if n > 1 else ("drag" if m else "rag")
                rows.append({"strategy": strategy, "k": k, "m": m, "n": n,
                             "score": 0.2 + 0.05 * np.log1p(k) + 0.03 * m + 0.02 * n + rng.normal(0, 0.01)})
    frame = pd.DataFrame(rows)
    if window_column is not None:
        frame["context_window"] = window_column
    return frame


def test_fit_records_the_window_and_the_profile_keeps_it(tmp_path):
    assert AllocationModel(sigmoid="logistic").fit(_rows()).context_window_ is None
    assert AllocationModel(sigmoid="logistic").fit(_rows(), context_window=8192).context_window_ == 8192
    column = [8192] * 23 + [4096]  # two engines: only the smaller window is safe for both
    model = AllocationModel(sigmoid="logistic").fit(_rows(column))
    assert model.context_window_ == 4096
    profile = model.to_profile("fitted")
    assert profile.context_window == 4096
    again = Profile.load(profile.save(tmp_path / "p.json"))
    assert again.context_window == 4096
    assert AllocationModel.from_profile(again).context_window_ == 4096
    best = optimise(again, "1M", "auto")
    assert best.largest_call_tokens <= 4096 and best.context_window == 4096


def test_old_profile_files_without_a_window_still_load(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"name": "old", "a": [0.2, 0.1, 0.1], "b": [0, 0, 0], "c": -0.2}))
    assert Profile.load(path).context_window is None


@pytest.mark.parametrize("bad", [0, -5, "abc"])
def test_profile_rejects_a_bad_window(bad):
    with pytest.raises(UserError):
        Profile(name="x", a=(0.1, 0.1, 0.1), b=(0, 0, 0), c=0.0, context_window=bad)
