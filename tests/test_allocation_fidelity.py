"""The fidelity report: the paper's model against the paper's Table 1, computed, not tuned."""

import numpy as np
import pytest

from ragscale.allocation import TABLE1_DATASETS, load_table1, optimise, paper_profile
from ragscale.allocation import fidelity as F
from ragscale.errors import UserError


@pytest.fixture(scope="module")
def report():
    return F.fidelity_report("em")


def test_table1_best_within_carries_a_method_forward():
    table = load_table1()
    at5m = F.table1_best_within(table, "hotpotqa", "em", 5_000_000).set_index("strategy")
    # DRAG is last reported at 1M: it keeps that score at 5M, marked as carried.
    assert at5m.at["drag", "table_score"] == 47.4 and at5m.at["drag", "table_carried"]
    assert at5m.at["iterdrag", "table_score"] == 51.7 and not at5m.at["iterdrag", "table_carried"]
    at16k = F.table1_best_within(table, "hotpotqa", "em", 16_000).set_index("strategy")
    assert set(at16k.index) == {"zero-shot", "many-shot", "rag", "drag", "iterdrag"}
    assert not at16k["table_carried"].any()


def test_one_cell_per_dataset_and_budget(report):
    cells = report["cells"]
    assert len(cells) == len(TABLE1_DATASETS) * len(F.PAPER_BUDGETS) == 20
    assert set(zip(cells["dataset"], cells["budget"])) == {(d, b) for d in TABLE1_DATASETS for b in F.PAPER_BUDGETS}


def test_cells_agree_with_the_optimiser_and_the_table(report):
    table = load_table1()
    for c in report["cells"].itertuples():
        best = optimise(paper_profile(c.dataset, "em"), c.budget, "auto")
        assert (best.strategy, best.k, best.m, best.n) == (c.model_strategy, c.k, c.m, c.n)
        assert c.model_score == pytest.approx(best.predicted_score)
        within = table[(table["dataset"] == c.dataset) & (table["l_max"] <= c.budget)]
        assert c.table_best == within["em"].max()
        winners = set(within.loc[within["em"] == within["em"].max(), "method"])
        assert set(c.table_strategy.split("/")) == winners
        assert c.same_winner == (c.model_strategy in winners)
        assert c.gap_points == pytest.approx(c.model_score - c.table_best)
        assert c.predicted_share == pytest.approx(c.model_score / c.table_best)
        assert c.largest_call_tokens <= 1_000_000


def test_summary_counts_match_the_cells(report):
    cells, summary = report["cells"], report["summary"]
    assert summary["same_winner"] == int(cells["same_winner"].sum())
    assert summary["mean_abs_gap_points"] == pytest.approx(cells["gap_points"].abs().mean(), abs=0.01)
    assert sum(part["cells"] for part in summary["by_budget"].values()) == 20
    assert sum(summary["model_picks"].values()) == 20


def test_the_window_is_what_makes_the_model_pick_iterdrag_at_5m():
    with_window = F.fidelity_table(F.fidelity_rows("em"))
    without = F.fidelity_table(F.fidelity_rows("em", context_window=None))
    at5m = with_window[with_window["budget"] == 5_000_000]
    assert (at5m["model_strategy"] == "iterdrag").all() and (at5m["n"] >= 2).all()
    assert (without[without["budget"] == 5_000_000]["model_strategy"] == "drag").all()


def test_findings_state_the_measured_numbers(report):
    text = " ".join(report["findings"])
    same = int(report["cells"]["same_winner"].sum())
    assert f"in {same} of 20 cells" in text
    ones = report["rows"][(report["rows"]["strategy"] == "iterdrag") & (report["rows"]["n"] == 1)]
    assert f"n = 1 in {len(ones)} of 20 cells" in text


def test_display_and_markdown(report):
    shown = F.fidelity_display(report["cells"])
    assert len(shown) == 20 and shown["budget"].iloc[0] == "16k"
    markdown = F.fidelity_markdown(report["cells"])
    assert markdown.count("\n") == 21 and "| hotpotqa | 1M |" in markdown


@pytest.mark.parametrize("metric", ["f1", "acc"])
def test_other_metrics(metric):
    cells = F.fidelity_table(F.fidelity_rows(metric))
    assert len(cells) == 20 and np.isfinite(cells["gap_points"]).all()


def test_unknown_metric():
    with pytest.raises(UserError):
        F.fidelity_rows("bleu")


def test_fidelity_figure_has_a_panel_per_dataset(report):
    from ragscale.plots.allocation import fidelity_figure

    fig = fidelity_figure(report["cells"], "em")
    assert [a.text for a in fig.layout.annotations] == list(TABLE1_DATASETS)
    model = [t for t in fig.data if t.name == "model's predicted best" and t.x[0] is not None]
    assert len(model) == 4 and sum(len(t.y) for t in model) == 20
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend[:2] == ["Table 1's best", "model's predicted best"] and "iterdrag" in legend
