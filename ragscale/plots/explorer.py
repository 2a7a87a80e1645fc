"""The Explorer's accuracy panel: predicted P*(L_max), the stored runs, the current configuration.

Observed runs and the model fitted to them share the left axis (same model, same scale, percent of
the metric the runs were scored with); the fitted curve is drawn only over the token range of the
runs it was fitted on (``domain``): outside it the model has no data. The paper's Gemini 1.5 Flash
curve, a different model on another scale, is a dashed reference on the right axis ("paper →").
Every element drawn is in the legend (runs and the step line of the best of them are one element), the
budget line and the current configuration included, under short names (the hover and the caption say
more).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ragscale.plots.style import sized

CURRENT = "#f97316"
PREDICTED = "#334155"
OBSERVED = "#2563eb"
REFERENCE = "#94a3b8"


def observed_best(table: pd.DataFrame) -> pd.DataFrame:
    """Best observed score within each budget: the running maximum over configurations by length."""
    done = table[table["complete"] & table["score"].notna()].sort_values("length_max")
    if done.empty:
        return done
    return done[done["score"] >= done["score"].cummax()].drop_duplicates("score", keep="first")


def nice_axis(top: float) -> dict:
    """A percent axis from 0 with round ticks (10, 20, ... or 2, 4, ...): never 7.9, 15.7, 23.6."""
    top = max(float(top), 1.0)
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50) if top / s <= 6)
    return dict(range=[0, math.ceil(top * 1.05 / step) * step], dtick=step, tick0=0, tickmode="linear")


def in_domain(curve: pd.DataFrame, domain: tuple[float, float] | None) -> pd.DataFrame:
    """The part of a P*(L) curve inside the token range its model was fitted on (all of it when None)."""
    if domain is None:
        return curve
    return curve[(curve["budget"] >= domain[0]) & (curve["budget"] <= domain[1])]


def explorer_curve_figure(predicted: pd.DataFrame, budget: int, current: dict, *, predicted_label: str,
                          observed: pd.DataFrame | None = None, reference: pd.DataFrame | None = None,
                          reference_label: str = "paper →", current_on_reference: bool = False,
                          domain: tuple[float, float] | None = None, metric: str = "acc",
                          large: bool = False, height: int = 420) -> go.Figure:
    """P*(L_max) over budget with the budget line, the current configuration and observed runs.

    Scores are percent throughout (``Allocation.predicted_score``); observed runs are fractions.
    """
    unit = metric.upper() if metric else "score"
    fig = go.Figure()
    curve = in_domain(predicted, domain)
    fig.add_trace(go.Scatter(
        x=curve["budget"], y=curve["predicted_score"], mode="lines", name=predicted_label,
        line=dict(color=PREDICTED, width=3, shape="hv"),
        hovertemplate=f"{predicted_label}<br>budget %{{x:,}} tokens<br>predicted %{{y:.1f}}% {unit}<extra></extra>"))
    xs, ys = list(curve["budget"]) + [budget, current["effective_tokens"]], list(curve["predicted_score"])
    if observed is not None and len(observed):
        done = observed[observed["complete"] & observed["score"].notna()]
        # One trace, one legend entry: the best runs joined by the step line of the best within each length,
        # then every other run on its own (a None between points breaks the line).
        best = observed_best(observed)
        rest = done.drop(index=best.index)
        parts = [best] + [rest.loc[[i]] for i in rest.index]
        frame = pd.concat([pd.concat([p, pd.DataFrame({"length_max": [None]})]) for p in parts], ignore_index=True)
        custom = frame[["strategy", "k", "m", "n", "questions"]].to_numpy()
        fig.add_trace(go.Scatter(
            x=frame["length_max"], y=100 * frame["score"], mode="lines+markers", name="runs",
            line=dict(color=OBSERVED, width=2, shape="hv"), connectgaps=False,
            marker=dict(color=OBSERVED, size=9, opacity=0.7, line=dict(width=1, color="white")), customdata=custom,
            hovertemplate="%{customdata[0]} k=%{customdata[1]} m=%{customdata[2]} n=%{customdata[3]}<br>"
                          f"{unit} %{{y:.0f}}% over %{{customdata[4]}} questions<br>longest question %{{x:,}} tokens"
                          "<br>(the line: the best run within each length)<extra></extra>"))
        xs += list(done["length_max"])
        ys += list(100 * done["score"])
    if reference is not None and len(reference):
        fig.add_trace(go.Scatter(
            x=reference["budget"], y=reference["predicted_score"], mode="lines", name=reference_label, yaxis="y2",
            line=dict(color=REFERENCE, width=2, dash="dash", shape="hv"),
            hovertemplate="budget %{x:,} tokens<br>paper's model: %{y:.1f}% EM (Gemini)<extra></extra>"))
    on_reference = current_on_reference and reference is not None
    if not on_reference:
        ys.append(current["predicted_score"])
    fig.add_trace(go.Scatter(
        x=[current["effective_tokens"]], y=[current["predicted_score"]], mode="markers", name="current",
        yaxis="y2" if on_reference else "y", cliponaxis=False,
        marker=dict(color=CURRENT, size=15, symbol="star", line=dict(width=1, color="#7c2d12")),
        hovertemplate=(f"current: {current['strategy']} k={current['k']} m={current['m']} n={current['n']}"
                       f"<br>%{{x:,}} tokens · predicted %{{y:.1f}}% {unit}<extra></extra>")))
    fig.add_vline(x=budget, line=dict(color=CURRENT, width=1, dash="dot"))
    # The vertical line is a shape, which has no legend entry of its own: a legend-only twin names it.
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="budget",
                             line=dict(color=CURRENT, width=1, dash="dot"), hoverinfo="skip"))
    # Pad the log axis so the star and the budget line are never half outside the plot.
    low, high = np.log10(max(min(xs), 1)), np.log10(max(xs))
    fig.update_layout(
        height=height, plot_bgcolor="white", margin=dict(l=55, r=55 if reference is not None else 15, t=40, b=45),
        xaxis=dict(title="tokens per question (log)", type="log", range=[low - 0.15, high + 0.15], gridcolor="#eee",
                   dtick=1),  # labels at powers of ten only (no stray 2s and 5s)
        yaxis=dict(title=f"{unit} (%)", gridcolor="#eee", **nice_axis(max(ys, default=1.0))),
        hovermode="closest",
    )
    if reference is not None:
        top = max(list(reference["predicted_score"]) + ([current["predicted_score"]] if on_reference else []))
        fig.update_layout(yaxis2=dict(title="paper EM (%)", overlaying="y", side="right", showgrid=False,
                                      color=REFERENCE, **nice_axis(top)))
    # legend symbols at one size: the current configuration's big star would stretch its legend line
    return sized(fig, large).update_layout(legend=dict(itemsizing="constant"))


def curves_figure(curves, budget: int, current: dict, large: bool = False, height: int = 420) -> go.Figure:
    """``explorer_curve_figure`` for a ``ragscale.explorer.screen.Curves`` (what the page and the bench draw)."""
    return explorer_curve_figure(curves.predicted, budget, current, predicted_label=curves.predicted_label,
                                 observed=curves.observed, reference=curves.reference,
                                 current_on_reference=curves.current_on_reference, domain=curves.domain,
                                 metric=curves.metric, large=large, height=height)
