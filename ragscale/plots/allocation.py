"""Figures for the allocation calculator: the P*(L) frontier, the (k, m) heatmap, the cost breakdown,
and the model-against-Table-1 fidelity chart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ragscale.allocation import STRATEGIES, TokenSizes, context_window_of, effective_length, largest_call
from ragscale.allocation.context_length import canonical_theta
from ragscale.formatting import fmt_tokens, fmt_usd

COLORS = {
    "zero-shot": "#9e9e9e", "many-shot": "#8c6d31", "rag": "#1f77b4", "drag": "#2ca02c",
    "iterdrag": "#d62728", "auto": "#111111",
}
ZERO_AT = 0.5  # where k=0 / m=0 sit on a log axis (log(0) does not exist)
# What the calculator draws: the frontier at 80 log-spaced budgets, the heatmap on a log (k, m) mesh.
FRONTIER_BUDGETS = np.unique(np.geomspace(1_000, 10_000_000, 80).astype(int))
HEATMAP_K = np.unique(np.concatenate([[0], np.round(np.geomspace(1, 1000, 60))]))
HEATMAP_M = np.unique(np.concatenate([np.arange(9), np.round(np.geomspace(8, 256, 25))]))


def _log_range(values, pad: float = 0.08) -> list[float]:
    """A log-axis range (in log10 units) that holds every value with a margin, markers included."""
    values = np.asarray([v for v in values if v and v > 0], float)
    return [float(np.log10(values.min())) - pad, float(np.log10(values.max())) + pad]


def frontier_figure(frontier: pd.DataFrame, budget: float | None = None, table1: pd.DataFrame | None = None,
                    metric: str = "em", dataset: str | None = None, chosen: dict | None = None,
                    score_label: str = "predicted score", context_window: int | None = None,
                    compact: bool = False) -> go.Figure:
    """P*(L_max) per strategy on a log budget axis; Table 1's points (same colours) when given.

    ``context_window`` draws where one call is full (beyond it only IterDRAG can spend more).
    ``compact`` (the calculator's layout) names the lines by strategy alone ("drag", not
    "drag (model)") to keep the legend to two lines, and fits both axes to everything drawn so the
    chosen star is never cut by the frame. Off, the axes autorange: callers that add traces (the
    Explorer) keep them in view.
    """
    # Traces are plain dicts turned into one go.Figure at the end: several times faster than
    # add_trace one by one, which matters for a page that redraws on every slider move.
    data, xs, ys = [], list(frontier["budget"]), list(frontier["predicted_score"])
    for strategy, part in frontier.groupby("strategy", sort=False):
        auto = strategy == "auto"
        name = ("best of all" if auto else strategy) if compact else f"{strategy} (model)"
        data.append(dict(
            type="scatter", x=part["budget"].to_numpy(), y=part["predicted_score"].to_numpy(), mode="lines",
            name=name,
            line=dict(color=COLORS.get(strategy), width=4 if auto else 2, dash="dot" if auto else "solid",
                      shape="hv"),
            customdata=part[["k", "m", "n", "effective_tokens"]].to_numpy(),
            hovertemplate=(f"{strategy}<br>budget %{{x:,}}<br>{score_label} %{{y:.1f}}<br>"
                           "k=%{customdata[0]} m=%{customdata[1]} n=%{customdata[2]}<br>"
                           "uses %{customdata[3]:,} tokens<extra></extra>"),
        ))
    if table1 is not None and len(table1):
        rows = table1 if dataset is None else table1[table1["dataset"] == dataset]
        xs += list(rows["l_max"])
        ys += list(rows[metric])
        # One trace for all of Table 1, coloured like the model's lines (one legend entry).
        data.append(dict(
            type="scatter", x=rows["l_max"].to_numpy(), y=rows[metric].to_numpy(), mode="markers",
            name="Table 1" if compact else "Yue et al. 2025, Table 1", text=rows["method"].to_numpy(),
            marker=dict(color=[COLORS.get(m, "#333") for m in rows["method"]], size=10, symbol="diamond-open",
                        line=dict(width=2)),
            hovertemplate=f"Table 1: %{{text}}<br>l_max %{{x:,}}<br>{metric} %{{y:.1f}}<extra></extra>",
        ))
    shapes, annotations = [], []
    if budget is not None:
        xs.append(budget)
        shapes.append(dict(type="line", x0=budget, x1=budget, y0=0, y1=1, yref="paper",
                           line=dict(color="#555", dash="dash")))
        annotations.append(dict(x=np.log10(budget), y=1, yref="paper", text=f"budget {fmt_tokens(budget)}",
                                showarrow=False, xanchor="right", yanchor="top"))
    if context_window is not None:
        shapes.append(dict(type="line", x0=context_window, x1=context_window, y0=0, y1=1, yref="paper",
                           line=dict(color="#999", dash="dot", width=1)))
        annotations.append(dict(x=np.log10(context_window), y=0, yref="paper", yanchor="bottom", xanchor="left",
                                text=f" one call full ({fmt_tokens(context_window)})", showarrow=False,
                                font=dict(size=10, color="#777")))
    if chosen is not None:
        xs.append(chosen["effective_tokens"])
        ys.append(chosen["predicted_score"])
        data.append(dict(
            type="scatter", x=[chosen["effective_tokens"]], y=[chosen["predicted_score"]], mode="markers",
            name="chosen", cliponaxis=False,
            marker=dict(color="#ff7f0e", size=16, symbol="star", line=dict(color="#333", width=1)),
            hovertemplate="chosen: %{x:,} tokens, %{y:.1f}<extra></extra>",
        ))
    xaxis = dict(type="log", title=dict(text="budget L_max (tokens per question)"))
    yaxis = dict(title=dict(text=score_label))
    ys = [y for y in ys if y is not None and np.isfinite(y)]
    if compact and ys:
        # Explicit ranges with a margin: the chosen star sits inside the frame even at the first budget.
        span = max(ys) - min(ys)
        xaxis["range"] = _log_range(xs)
        yaxis["range"] = [min(ys) - 0.06 * span - 0.5, max(ys) + 0.06 * span + 0.5]
    layout = dict(
        xaxis=xaxis, yaxis=yaxis,
        legend=dict(orientation="h", y=-0.16, yanchor="top", x=0, font=dict(size=11),
                    # Four entries a row: two short rows under the axis, not a stack as tall as the chart.
                    **(dict(entrywidth=0.25, entrywidthmode="fraction", itemsizing="constant") if compact else {})),
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
    return dict(type="log", tickvals=list(_log_positions(ticks)), ticktext=[f"{t:g}" for t in ticks],
                range=_log_range(_log_positions(values), pad=0.16))


def heatmap_figure(model, strategy: str, n: int, sizes: TokenSizes, budget: float, k_values, m_values,
                   chosen: dict | None = None, score_label: str = "predicted score") -> go.Figure:
    """Predicted score over (k, m) at iteration count n; the line is the budget boundary l(theta) = budget.

    Light grey: over the budget. Dark grey: fits the budget but one call is over the model's
    context window (cannot run as configured).
    """
    k = np.asarray(k_values, float)
    m = np.asarray(m_values, float)
    kk, mm, nn = canonical_theta(strategy, k[None, :], m[:, None], np.full((1, 1), float(n)))
    shape = (len(m), len(k))
    score = np.broadcast_to(model.predict(kk, mm, nn), shape)
    length = np.broadcast_to(effective_length(strategy, kk, mm, nn, sizes), shape)
    call = np.broadcast_to(largest_call(strategy, kk, mm, nn, sizes), shape)
    window = context_window_of(model)
    in_window = np.ones(shape, bool) if window is None else call <= window
    fits = (length <= budget) & in_window
    hover = np.stack([length, call], axis=-1)
    data = [dict(
        type="heatmap", x=_log_positions(k), y=_log_positions(m), z=np.where(fits, score, np.nan),
        colorscale="Viridis", colorbar=dict(title=dict(text=score_label)), customdata=hover,
        hovertemplate=("k=%{x:.0f} m=%{y:.0f}<br>score %{z:.1f}<br>%{customdata[0]:,.0f} tokens, "
                       "largest call %{customdata[1]:,.0f}<extra></extra>"),
    )]
    data.append(dict(
        type="heatmap", x=_log_positions(k), y=_log_positions(m),
        z=np.where(length > budget, np.where(in_window, 0.0, 1.0), np.where(in_window, np.nan, 1.0)),
        zmin=0, zmax=1, colorscale=[[0, "#d9d9d9"], [1, "#7f7f7f"]], showscale=False, opacity=0.85,
        customdata=hover,
        hovertemplate=("k=%{x:.0f} m=%{y:.0f}<br>%{customdata[0]:,.0f} tokens; largest call "
                       "%{customdata[1]:,.0f}<extra>does not fit</extra>"),
    ))
    # Boundary: for each m the largest k that still fits (length and call size grow with k).
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
            name="chosen", cliponaxis=False,
            marker=dict(color="#ff7f0e", size=16, symbol="star", line=dict(color="#333", width=1)),
            hovertemplate="chosen k=%{x:.0f} m=%{y:.0f}<extra></extra>",
        ))
    dark = f", dark: a call > {fmt_tokens(window)} window" if window is not None and not in_window.all() else ""
    layout = dict(
        title=dict(text=f"{strategy}, n={n} · grey: over budget{dark}"),
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
                         customdata=[fmt_usd(v) for v in values],
                         hovertemplate=f"{name}: %{{customdata}}<extra></extra>"))
    layout = dict(
        barmode="stack", title=dict(text=f"Cost per {per} (USD)"),
        # No SI prefixes: "$20µ" reads as nonsense for a per-query cost of $0.00002.
        xaxis=dict(title=dict(text=f"USD per {per}"), exponentformat="none", tickprefix="$"),
        yaxis=dict(autorange="reversed"), margin=dict(l=10, r=10, t=40, b=10), height=120 + 45 * len(labels),
        legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"),
    )
    return go.Figure(dict(data=data, layout=layout))


def fidelity_figure(cells: pd.DataFrame, metric: str = "em") -> go.Figure:
    """Per dataset: the model's predicted best (circle, coloured by its strategy) and Table 1's best
    (diamond, coloured by the winning strategy) at each of the paper's budgets, joined by the gap."""
    datasets = list(dict.fromkeys(cells["dataset"]))
    fig = make_subplots(rows=1, cols=len(datasets), subplot_titles=datasets, horizontal_spacing=0.06)
    for col, dataset in enumerate(datasets, start=1):
        part = cells[cells["dataset"] == dataset]
        labels = [fmt_tokens(b) for b in part["budget"]]
        for label, model, table in zip(labels, part["model_score"], part["table_best"]):
            fig.add_trace(go.Scatter(x=[label, label], y=[model, table], mode="lines", showlegend=False,
                                     line=dict(color="#bbb", width=2), hoverinfo="skip"), row=1, col=col)
        winners = [s.split("/")[0] for s in part["table_strategy"]]
        fig.add_trace(go.Scatter(
            x=labels, y=part["table_best"], mode="markers", showlegend=False, cliponaxis=False,
            marker=dict(symbol="diamond", size=11, color=[COLORS.get(s, "#333") for s in winners],
                        line=dict(color="#333", width=1)),
            customdata=part[["table_strategy"]].to_numpy(), name="Table 1's best",
            hovertemplate=f"Table 1: %{{customdata[0]}} %{{y:.1f}} {metric.upper()}<extra></extra>"),
            row=1, col=col)
        fig.add_trace(go.Scatter(
            x=labels, y=part["model_score"], mode="markers", showlegend=False, cliponaxis=False,
            marker=dict(symbol="circle", size=10, color=[COLORS.get(s, "#333") for s in part["model_strategy"]],
                        line=dict(color="#333", width=1)),
            customdata=np.column_stack([part["model_strategy"], part["k"], part["m"], part["n"], part["gap_points"]]),
            name="model's predicted best",
            hovertemplate=("model: %{customdata[0]} k=%{customdata[1]} m=%{customdata[2]} n=%{customdata[3]}"
                           f"<br>predicted %{{y:.1f}} {metric.upper()} (gap %{{customdata[4]:+.1f}})<extra></extra>")),
            row=1, col=col)
    # Legend: the two shapes in neutral grey, then one colour swatch per strategy that is drawn.
    key = [("Table 1's best", "diamond", "#888"), ("model's predicted best", "circle", "#888")]
    drawn = set(cells["model_strategy"]) | {s.split("/")[0] for s in cells["table_strategy"]}
    key += [(s, "square", COLORS[s]) for s in STRATEGIES if s in drawn]
    for name, symbol, color in key:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, hoverinfo="skip",
                                 marker=dict(symbol=symbol, size=10, color=color)), row=1, col=1)
    fig.update_layout(
        height=340, margin=dict(l=10, r=10, t=60, b=10),
        legend=dict(orientation="h", y=1.18, yanchor="bottom", x=0, font=dict(size=11)),
        title=None,
    )
    fig.update_yaxes(title_text=f"{metric.upper()} (%)", row=1, col=1)
    fig.update_xaxes(type="category", tickfont=dict(size=10))
    return fig


__all__ = ["frontier_figure", "heatmap_figure", "cost_figure", "fidelity_figure", "COLORS", "FRONTIER_BUDGETS",
           "HEATMAP_K", "HEATMAP_M"]
