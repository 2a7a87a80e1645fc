"""The Explorer's left panel: the predicted P*(L_max) curve with the observed runs on top of it.

Pure composition of two existing builders, so the three pages draw the same thing the same way:
``plots.allocation.frontier_figure`` (the model's curve, the budget line, the current
configuration) and ``plots.scaling.observed_figure`` (stored runs and their best-per-budget
frontier). Scores are shown in percent on one axis.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ragscale.plots.allocation import frontier_figure
from ragscale.plots.scaling import observed_figure

CURRENT = "#f97316"


def observed_traces(observed: pd.DataFrame, label: str = "observed", percent: bool = False) -> list:
    """Stored runs and their best-per-budget frontier as traces (build once per dataset: slow-ish)."""
    if observed is None or not len(observed):
        return []
    table = observed.copy()
    if not percent:
        table["score"] = table["score"] * 100
    traces = list(observed_figure(table).data)
    for trace in traces:
        trace.name = f"{label}: {trace.name}"
    return traces


def explorer_curve_figure(curve: pd.DataFrame, budget: int, current: dict, observed: pd.DataFrame | list | None = None,
                          predicted_label: str = "predicted", observed_label: str = "observed",
                          predicted_percent: bool = True, observed_percent: bool = False,
                          height: int = 500) -> go.Figure:
    """P*(L_max) over budget, the budget line, the current configuration and the observed runs.

    ``observed`` is a ``config_table`` or traces from ``observed_traces``. ``*_percent`` says
    whether a score is already in percent (the paper's profile predicts percent; stored runs
    hold fractions), so both land on one percent axis.
    """
    curve = curve.copy()
    current = dict(current)
    if not predicted_percent:
        curve["predicted_score"] = curve["predicted_score"] * 100
        current["predicted_score"] = current["predicted_score"] * 100
    curve["strategy"] = predicted_label  # one curve: the legend names the profile, not "auto"
    fig = frontier_figure(curve, budget=budget, chosen=current, score_label="score (%)")
    for trace in fig.data:
        if trace.name == "chosen":
            trace.name = "current configuration"
            trace.marker.color = CURRENT
            trace.hovertemplate = (f"current: {current['strategy']} k={current['k']} m={current['m']} "
                                   f"n={current['n']}<br>%{{x:,}} tokens · predicted %{{y:.1f}}%<extra></extra>")
        elif trace.name and trace.name.endswith("(model)"):
            trace.line.color = "#334155"
            trace.line.width = 3
            trace.line.dash = "solid"
    if isinstance(observed, pd.DataFrame):
        observed = observed_traces(observed, observed_label, observed_percent)
    if observed:
        fig.add_traces(list(observed))
    # No template here: copying one costs ~100 ms, and Streamlit applies its own theme.
    fig.update_layout(
        title=None, height=height, plot_bgcolor="white",
        legend=dict(orientation="h", yanchor="top", y=-0.2, x=0, font=dict(size=11)),
        margin=dict(l=50, r=10, t=20, b=10),
        xaxis=dict(title="tokens per question (L_max; log)", gridcolor="#eee"),
        yaxis=dict(title="score (%)", rangemode="tozero", gridcolor="#eee"),
    )
    return fig


def export_config(filename: str) -> dict:
    """plotly modebar config: a PNG download at twice the screen resolution."""
    return {"displaylogo": False,
            "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2}}
