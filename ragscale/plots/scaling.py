"""Figures for "Scaling runs": observed score vs effective context length, and the fitted model's view.

Scores are drawn in percent, as every page shows them (the table holds fractions).
Input is ``ragscale.rag.sweep.config_table``: one row per configuration with its mean score and
``length_max``, the longest effective context length any of its questions needed (a budget
holds per question, Yue et al. 2025). The x axis is that length on a log scale.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ragscale.rag.sweep import curve_strategies, frontier, strategy_view

COLORS = {
    "zero-shot": "#7f7f7f", "many-shot": "#8c6d31", "rag": "#1f77b4", "drag": "#2ca02c", "iterdrag": "#d62728",
}
SYMBOLS = {"zero-shot": "diamond", "many-shot": "square", "rag": "circle", "drag": "circle", "iterdrag": "triangle-up"}
_HOVER = ("%{customdata[0]}<br>k=%{customdata[1]} m=%{customdata[2]} n=%{customdata[3]}<br>"
          "score %{y:.1f}%<br>longest question %{x:,} tokens<br>mean %{customdata[4]:,.0f} tokens · "
          "cache hit %{customdata[5]:.0%}<br>%{customdata[6]} questions<extra></extra>")


def _customdata(part: pd.DataFrame) -> np.ndarray:
    return np.column_stack([
        part["strategy"], part["k"], part["m"], part["n"], part["length_mean"].fillna(0),
        part["cache_hit"].fillna(0), part["questions"],
    ])


def _layout(fig: go.Figure, title: str, score_label: str) -> go.Figure:
    fig.update_layout(
        title=title, template="plotly_white", height=460, margin=dict(l=60, r=20, t=60, b=50),
        # at the foot of the figure: plotly then makes room for it under the axis title, whatever its height
        legend=dict(orientation="h", yref="container", yanchor="bottom", y=0, x=0),
        xaxis=dict(title="effective context length (tokens, longest question; log)", type="log"),
        yaxis=dict(title=f"{score_label} (%)", rangemode="tozero"),  # percent, as every page shows scores
    )
    return fig


def observed_figure(table: pd.DataFrame, score_label: str = "Acc") -> go.Figure:
    """Every complete configuration as a point; each strategy's best-per-budget frontier as a step line."""
    fig = go.Figure()
    done = table[table["complete"] & table["score"].notna()] if len(table) else table
    for label, part in done.groupby("strategy", sort=False):
        fig.add_trace(go.Scatter(
            x=part["length_max"], y=100 * part["score"], mode="markers", name=f"{label} runs",
            marker=dict(color=COLORS.get(label, "#333"), symbol=SYMBOLS.get(label, "circle"), size=9,
                        opacity=0.75, line=dict(width=1, color="white")),
            customdata=_customdata(part), hovertemplate=_HOVER, legendgroup=label,
        ))
    for strategy in curve_strategies(done):
        front = frontier(done, strategy)
        if len(front):
            fig.add_trace(go.Scatter(
                x=front["length_max"], y=100 * front["score"], mode="lines", name=f"{strategy} best within budget",
                line=dict(color=COLORS.get(strategy, "#333"), width=2.5, shape="hv"),
                customdata=_customdata(front), hovertemplate=_HOVER,
            ))
    if done.empty:
        fig.add_annotation(text="no finished configurations yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return _layout(fig, "Observed", score_label)


def predicted_frame(table: pd.DataFrame, model, paper_model=None) -> pd.DataFrame:
    """The complete configurations with the fitted model's (and optionally the paper's) prediction."""
    done = table[table["complete"] & table["score"].notna()].copy()
    if done.empty:
        return done.assign(predicted=[], paper=[])
    done["predicted"] = model.predict(done[["dataset", "strategy", "k", "m", "n"]])
    if paper_model is not None:
        # The paper's coefficients give a z-score; read it back on this run's own score scale.
        z = paper_model.predict_z(done[["strategy", "k", "m", "n"]])
        mean, std = done["score"].mean(), done["score"].std(ddof=0) or 1.0
        done["paper"] = mean + std * np.asarray(z, float)
    return done


def _predicted_frontier(view: pd.DataFrame, column: str) -> pd.DataFrame:
    view = view.sort_values(["length_max", column], ascending=[True, False])
    best, keep = -np.inf, []
    for index, row in view.iterrows():
        if row[column] > best:
            best = row[column]
            keep.append(index)
    return view.loc[keep]


def predicted_figure(table: pd.DataFrame, model=None, paper_model=None, score_label: str = "Acc",
                     note: str = "") -> go.Figure:
    """The model fitted to these runs: its prediction per configuration and its best-per-budget
    curve, the observed frontier dotted for comparison, and optionally the paper's fit."""
    fig = go.Figure()
    if model is None:
        text = "<br>".join(textwrap.wrap(note or "not enough configurations to fit the model yet", 48))
        fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
        fig = _layout(fig, "Predicted by the allocation model", score_label)
        fig.update_xaxes(visible=False)
        return fig.update_yaxes(visible=False)
    frame = predicted_frame(table, model, paper_model)
    for strategy in curve_strategies(frame):
        view = strategy_view(frame, strategy)
        color = COLORS.get(strategy, "#333")
        fig.add_trace(go.Scatter(
            x=view["length_max"], y=100 * view["predicted"], mode="markers", name=f"{strategy} predicted",
            marker=dict(color=color, symbol="x", size=8, opacity=0.6), legendgroup=strategy,
            customdata=_customdata(view), hovertemplate=_HOVER.replace("score", "predicted"),
        ))
        front = _predicted_frontier(view, "predicted")
        fig.add_trace(go.Scatter(
            x=front["length_max"], y=100 * front["predicted"], mode="lines", name=f"{strategy} model's best",
            line=dict(color=color, width=2.5, shape="hv"), legendgroup=strategy,
            customdata=_customdata(front), hovertemplate=_HOVER.replace("score", "predicted"),
        ))
        observed = frontier(frame, strategy)
        fig.add_trace(go.Scatter(
            x=observed["length_max"], y=100 * observed["score"], mode="lines", name=f"{strategy} observed best",
            line=dict(color=color, width=1.5, dash="dot", shape="hv"), legendgroup=strategy, hoverinfo="skip",
        ))
        if paper_model is not None:
            paper_front = _predicted_frontier(view, "paper")
            fig.add_trace(go.Scatter(
                x=paper_front["length_max"], y=100 * paper_front["paper"], mode="lines",
                name=f"{strategy} paper's fit (Yue et al. 2025)",
                line=dict(color=color, width=1.5, dash="dash", shape="hv"), legendgroup=strategy,
                hovertemplate="paper's coefficients, this run's scale<br>%{y:.1f}%<extra></extra>",
            ))
    r2 = getattr(model, "r2_", None)
    title = "Predicted (model fitted to these runs)"
    if r2 is not None and r2 == r2:
        title += f" · R² {r2:.2f}"
    return _layout(fig, title, score_label)


# How the page's tables show numbers: scores and shares in percent with one decimal, token counts whole,
# seconds and calls to one decimal (the raw table, in fractions and full floats, is the CSV download).
PERCENT_COLUMNS = ("score", "em", "f1", "acc", "cache_hit")
WHOLE_COLUMNS = ("length_max", "length_mean", "cached_mean", "uncached_mean", "budget", "configurations")
TENTHS_COLUMNS = ("calls_mean", "iterations_mean", "seconds_mean")


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (config_table or best_per_budget) for people: '31.2' (%), '1,062' tokens, '2.3' s."""
    out = table.copy()
    for column in out.columns:
        if column in PERCENT_COLUMNS:
            out[column] = (100 * pd.to_numeric(out[column], errors="coerce")).round(1)
        elif column in WHOLE_COLUMNS:
            out[column] = pd.to_numeric(out[column], errors="coerce").round().astype("Int64")
        elif column in TENTHS_COLUMNS:
            out[column] = pd.to_numeric(out[column], errors="coerce").round(1)
    return out.rename(columns={c: f"{c} (%)" for c in PERCENT_COLUMNS if c in out.columns})
