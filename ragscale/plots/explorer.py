"""The Explorer's accuracy panel: predicted P*(L_max), the stored runs, the current configuration.

Observed runs and the model fitted to them share the left axis (same model, same scale); the
paper's Gemini 1.5 Flash curve, a different model on another scale, is a dashed reference on the
right axis ("paper →"). Three short legend entries (the current configuration is the orange star on the budget line),
so the legend stays on one line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ragscale.plots.style import sized

CURRENT = "#f97316"
PREDICTED = "#334155"
OBSERVED = "#2563eb"
REFERENCE = "#94a3b8"


def _percent(values, already: bool) -> np.ndarray:
    return np.asarray(values, float) * (1.0 if already else 100.0)


def observed_best(table: pd.DataFrame) -> pd.DataFrame:
    """Best observed score within each budget: the running maximum over configurations by length."""
    done = table[table["complete"] & table["score"].notna()].sort_values("length_max")
    if done.empty:
        return done
    return done[done["score"] >= done["score"].cummax()].drop_duplicates("score", keep="first")


def explorer_curve_figure(predicted: pd.DataFrame, budget: int, current: dict, *, predicted_label: str,
                          predicted_percent: bool, observed: pd.DataFrame | None = None,
                          reference: pd.DataFrame | None = None, reference_label: str = "paper →",
                          current_on_reference: bool = False, large: bool = False, height: int = 420) -> go.Figure:
    """P*(L_max) over budget with the budget line, the current configuration and observed runs."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=predicted["budget"], y=_percent(predicted["predicted_score"], predicted_percent), mode="lines",
        name=predicted_label, line=dict(color=PREDICTED, width=3, shape="hv"),
        hovertemplate="budget %{x:,} tokens<br>predicted %{y:.1f}%<extra></extra>"))
    xs = list(predicted["budget"]) + [budget, current["effective_tokens"]]
    if observed is not None and len(observed):
        done = observed[observed["complete"] & observed["score"].notna()]
        custom = np.column_stack([done["strategy"], done["k"], done["m"], done["n"], done["questions"]])
        fig.add_trace(go.Scatter(
            x=done["length_max"], y=_percent(done["score"], False), mode="markers", name="runs",
            marker=dict(color=OBSERVED, size=9, opacity=0.7, line=dict(width=1, color="white")), customdata=custom,
            hovertemplate="%{customdata[0]} k=%{customdata[1]} m=%{customdata[2]} n=%{customdata[3]}<br>"
                          "accuracy %{y:.0f}% over %{customdata[4]} questions<br>longest question %{x:,} tokens"
                          "<extra></extra>"))
        best = observed_best(observed)
        if len(best):
            fig.add_trace(go.Scatter(x=best["length_max"], y=_percent(best["score"], False), mode="lines",
                                     name="best run", line=dict(color=OBSERVED, width=2, shape="hv"),
                                     hoverinfo="skip", showlegend=False))
        xs += list(done["length_max"])
    if reference is not None and len(reference):
        fig.add_trace(go.Scatter(
            x=reference["budget"], y=reference["predicted_score"], mode="lines", name=reference_label, yaxis="y2",
            line=dict(color=REFERENCE, width=2, dash="dash", shape="hv"),
            hovertemplate="budget %{x:,} tokens<br>paper's model: %{y:.1f}% EM (Gemini)<extra></extra>"))
    on_reference = current_on_reference and reference is not None
    y = current["predicted_score"] * (1.0 if predicted_percent or on_reference else 100.0)
    fig.add_trace(go.Scatter(
        x=[current["effective_tokens"]], y=[y], mode="markers", name="current", showlegend=False,
        yaxis="y2" if on_reference else "y",
        marker=dict(color=CURRENT, size=15, symbol="star", line=dict(width=1, color="#7c2d12")),
        hovertemplate=(f"current: {current['strategy']} k={current['k']} m={current['m']} n={current['n']}"
                       "<br>%{x:,} tokens · predicted %{y:.1f}%<extra></extra>")))
    fig.add_vline(x=budget, line=dict(color=CURRENT, width=1, dash="dot"))
    # Pad the log axis so the star and the budget line are never half outside the plot.
    low, high = np.log10(max(min(xs), 1)), np.log10(max(xs))
    fig.update_layout(
        height=height, plot_bgcolor="white", margin=dict(l=55, r=55 if reference is not None else 15, t=40, b=45),
        xaxis=dict(title="tokens per question (log)", type="log", range=[low - 0.15, high + 0.15], gridcolor="#eee"),
        yaxis=dict(title="accuracy (%)", rangemode="tozero", gridcolor="#eee"),
        hovermode="closest",
    )
    if reference is not None:
        fig.update_layout(yaxis2=dict(title="paper EM (%)", overlaying="y", side="right", rangemode="tozero",
                                      showgrid=False, color=REFERENCE))
    return sized(fig, large)
