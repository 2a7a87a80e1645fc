"""Figures for the allocation calculator: the P*(L) frontier, the (k, m) heatmap, the cost breakdown."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ragscale.allocation import TokenSizes, effective_length
from ragscale.allocation.context_length import canonical_theta

COLORS = {
    "zero-shot": "#9e9e9e", "many-shot": "#8c6d31", "rag": "#1f77b4", "drag": "#2ca02c",
    "iterdrag": "#d62728", "auto": "#111111",
}
ZERO_AT = 0.5  # where k=0 / m=0 sit on a log axis (log(0) does not exist)


def _fmt_tokens(value: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def frontier_figure(frontier: pd.DataFrame, budget: float | None = None, table1: pd.DataFrame | None = None,
                    metric: str = "em", dataset: str | None = None, chosen: dict | None = None,
                    score_label: str = "predicted score") -> go.Figure:
    """P*(L_max) per strategy on a log budget axis; Table 1's points (same colours) when given."""
    # Traces are plain dicts turned into one go.Figure at the end: several times faster than
    # add_trace one by one, which matters for a page that redraws on every slider move.
    data = []
    for strategy, part in frontier.groupby("strategy", sort=False):
        auto = strategy == "auto"
        data.append(dict(
            type="scatter", x=part["budget"].to_numpy(), y=part["predicted_score"].to_numpy(), mode="lines",
            name=f"{strategy} (model)",
            line=dict(color=COLORS.get(strategy), width=4 if auto else 2, dash="dot" if auto else "solid",
                      shape="hv"),
            customdata=part[["k", "m", "n", "effective_tokens"]].to_numpy(),
            hovertemplate=(f"{strategy}<br>budget %{{x:,}}<br>{score_label} %{{y:.1f}}<br>"
                           "k=%{customdata[0]} m=%{customdata[1]} n=%{customdata[2]}<br>"
                           "uses %{customdata[3]:,} tokens<extra></extra>"),
        ))
    if table1 is not None and len(table1):
        rows = table1 if dataset is None else table1[table1["dataset"] == dataset]
        # One trace for all of Table 1, coloured like the model's lines (one legend entry).
        data.append(dict(
            type="scatter", x=rows["l_max"].to_numpy(), y=rows[metric].to_numpy(), mode="markers",
            name="Yue et al. 2025, Table 1", text=rows["method"].to_numpy(),
            marker=dict(color=[COLORS.get(m, "#333") for m in rows["method"]], size=10, symbol="diamond-open",
                        line=dict(width=2)),
            hovertemplate=f"Table 1: %{{text}}<br>l_max %{{x:,}}<br>{metric} %{{y:.1f}}<extra></extra>",
        ))
    shapes, annotations = [], []
    if budget is not None:
        shapes.append(dict(type="line", x0=budget, x1=budget, y0=0, y1=1, yref="paper",
                           line=dict(color="#555", dash="dash")))
        annotations.append(dict(x=np.log10(budget), y=1, yref="paper", text=f"budget {_fmt_tokens(budget)}",
                                showarrow=False, xanchor="right", yanchor="top"))
    if chosen is not None:
        data.append(dict(
            type="scatter", x=[chosen["effective_tokens"]], y=[chosen["predicted_score"]], mode="markers",
            name="chosen", marker=dict(color="#ff7f0e", size=16, symbol="star", line=dict(color="#333", width=1)),
            hovertemplate="chosen: %{x:,} tokens, %{y:.1f}<extra></extra>",
        ))
    layout = dict(
        xaxis=dict(type="log", title=dict(text="budget L_max (tokens per question)")),
        yaxis=dict(title=dict(text=score_label)),
        legend=dict(orientation="h", y=-0.2, yanchor="top", font=dict(size=11)),
        margin=dict(l=10, r=10, t=40, b=10), height=560, shapes=shapes, annotations=annotations,
        title=dict(text="Best predicted score within a budget, P*(L_max)"),
    )
    return go.Figure(dict(data=data, layout=layout))


def _log_positions(values) -> np.ndarray:
    values = np.asarray(values, float)
    return np.where(values == 0, ZERO_AT, values)


def _log_ticks(values) -> dict:
    top = float(np.max(values)) if len(values) else 1.0
    ticks = [0.0] + [10.0 ** p for p in range(0, int(np.floor(np.log10(max(top, 1)))) + 1)]
    return dict(type="log", tickvals=list(_log_positions(ticks)), ticktext=[f"{t:g}" for t in ticks])


def heatmap_figure(model, strategy: str, n: int, sizes: TokenSizes, budget: float, k_values, m_values,
                   chosen: dict | None = None, score_label: str = "predicted score") -> go.Figure:
    """Predicted score over (k, m) at iteration count n; the line is the budget boundary l(theta) = budget."""
    k = np.asarray(k_values, float)
    m = np.asarray(m_values, float)
    kk, mm, nn = canonical_theta(strategy, k[None, :], m[:, None], np.full((1, 1), float(n)))
    score = model.predict(kk, mm, nn)
    length = effective_length(strategy, kk, mm, nn, sizes)
    score = np.broadcast_to(score, (len(m), len(k)))
    length = np.broadcast_to(length, (len(m), len(k)))
    # Grey out what the budget does not allow, so the feasible region reads at a glance.
    shown = np.where(length <= budget, score, np.nan)
    data = [dict(
        type="heatmap", x=_log_positions(k), y=_log_positions(m), z=shown, colorscale="Viridis",
        colorbar=dict(title=dict(text=score_label)), customdata=length,
        hovertemplate="k=%{x:.0f} m=%{y:.0f}<br>score %{z:.1f}<br>%{customdata:,.0f} tokens<extra></extra>",
    )]
    data.append(dict(
        type="heatmap",
        x=_log_positions(k), y=_log_positions(m), z=np.where(length <= budget, np.nan, score),
        colorscale=[[0, "#d9d9d9"], [1, "#bdbdbd"]], showscale=False, opacity=0.8, customdata=length,
        hovertemplate="k=%{x:.0f} m=%{y:.0f}<br>over budget: %{customdata:,.0f} tokens<extra></extra>",
    ))
    # Boundary: for each m the largest k that still fits (length grows with k).
    fits = length <= budget
    last = np.where(fits.any(axis=1), fits.shape[1] - 1 - np.argmax(fits[:, ::-1], axis=1), -1)
    rows = last >= 0
    data.append(dict(
        type="scatter", x=_log_positions(k[last[rows]]), y=_log_positions(m[rows]), mode="lines",
        name="budget boundary",
        line=dict(color="white", width=3, shape="vh"), hoverinfo="skip",
    ))
    if chosen is not None:
        data.append(dict(
            type="scatter", x=_log_positions([chosen["k"]]), y=_log_positions([chosen["m"]]), mode="markers",
            name="chosen",
            marker=dict(color="#ff7f0e", size=16, symbol="star", line=dict(color="#333", width=1)),
            hovertemplate="chosen k=%{x:.0f} m=%{y:.0f}<extra></extra>",
        ))
    layout = dict(
        title=dict(text=f"{strategy}, n={n}: score over (k, m); grey = over budget"),
        xaxis=dict(title=dict(text="k retrieved documents"), **_log_ticks(k)),
        yaxis=dict(title=dict(text="m demonstrations"), **_log_ticks(m)),
        margin=dict(l=10, r=10, t=40, b=10), height=560, showlegend=False,
    )
    return go.Figure(dict(data=data, layout=layout))


def cost_figure(breakdowns: list[tuple[str, object]], per: str = "month") -> go.Figure:
    """Stacked bars: uncached input, cached input and output cost of each labelled configuration."""
    labels = [label for label, _ in breakdowns]
    parts = (("uncached input", "cost_uncached_input_usd", "#1f77b4"),
             ("cached input", "cost_cached_input_usd", "#aec7e8"),
             ("output", "cost_output_usd", "#ff7f0e"))
    data = []
    for name, key, color in parts:
        values = []
        for _, b in breakdowns:
            factor = 1.0 if per == "query" else (b.cost_per_month_usd / b.cost_per_query_usd if b.cost_per_query_usd else 0.0)
            values.append(getattr(b, key) * factor)
        data.append(dict(type="bar", y=labels, x=values, name=name, orientation="h", marker=dict(color=color),
                         hovertemplate=f"{name}: $%{{x:,.4f}}<extra></extra>"))
    layout = dict(
        barmode="stack", title=dict(text=f"Cost per {per} (USD)"), xaxis=dict(title=dict(text=f"USD per {per}")),
        yaxis=dict(autorange="reversed"), margin=dict(l=10, r=10, t=40, b=10), height=120 + 45 * len(labels),
        legend=dict(orientation="h"),
    )
    return go.Figure(dict(data=data, layout=layout))


__all__ = ["frontier_figure", "heatmap_figure", "cost_figure", "COLORS"]
