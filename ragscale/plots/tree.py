"""Figures of a tree search (Hooper et al. 2025): the tree, its retained KV, and the trade-off.

- ``tree_figure``: depth left to right; node size grows with the step's tokens, colour is the
  verifier score, pruned nodes are grey crosses, finished leaves are diamonds. Edges on the
  paths that were kept (the KV the search retained) are drawn in colour, thicker where more
  kept branches reuse that prefix; edges into pruned nodes are dotted grey.
- ``kv_curve_figure``: retained KV tokens after each step, one line per run.
- ``tradeoff_figure``: accuracy against mean retained KV per policy across widths, from
  ``ragscale search-sweep`` records (``ragscale.search.results.tradeoff_table``).

Every builder takes plain data (a ``Tree``, its dict or JSON; lists; records) so the Tree
search page, the Explorer and tests share them.
"""

from __future__ import annotations

import html
import textwrap
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from ragscale.plots.style import sized
from ragscale.search.config import POLICY_LABELS
from ragscale.search.results import PAPER_REFERENCE, as_tradeoff_table
from ragscale.search.tree import Tree

KEPT_EDGE = "#2563eb"
FOCUS_EDGE = "#f97316"
PRUNED = "#b0b0b0"
SCORE_SCALE = "RdYlGn"


def as_tree(tree: Tree | Mapping | str) -> Tree:
    if isinstance(tree, Tree):
        return tree
    if isinstance(tree, str):
        return Tree.from_json(tree)
    return Tree.from_dict(dict(tree))


def layout_positions(tree: Tree) -> dict[int, tuple[float, float]]:
    """x = depth; y spreads the leaves evenly and centres each parent over its children."""
    pos: dict[int, tuple[float, float]] = {}
    next_leaf = [0.0]

    def place(node_id: int) -> float:  # iterative would be longer; trees here are shallow
        kids = tree.children(node_id)
        if not kids:
            y = next_leaf[0]
            next_leaf[0] += 1.0
        else:
            ys = [place(k.id) for k in kids]
            y = (min(ys) + max(ys)) / 2
        pos[node_id] = (float(tree[node_id].depth), y)
        return y

    if len(tree):
        place(tree.root.id)
    # leaves top to bottom in id order
    top = max((y for _, y in pos.values()), default=0.0)
    return {i: (x, top - y) for i, (x, y) in pos.items()}


def _wrap(text: str | None, width: int = 70, limit: int = 420) -> str:
    text = (text or "").strip()
    if len(text) > limit:
        text = text[:limit] + " ..."
    return "<br>".join(html.escape(line) for line in textwrap.wrap(text, width)) or "—"


def _retained(tree: Tree) -> set[int]:
    """Nodes on a path from the root to a node that was kept or finished (not pruned)."""
    out: set[int] = set()
    for node in tree:
        if node.status in ("kept", "finished", "active"):
            out.update(n.id for n in tree.path(node.id))
    return out


def _sharing(tree: Tree, retained: set[int]) -> dict[int, int]:
    """For each retained node, how many retained leaves (ends of kept paths) reuse its KV."""
    ends = [n.id for n in tree if n.id in retained and not any(c.id in retained for c in tree.children(n.id))]
    count: dict[int, int] = {}
    for leaf in ends:
        for n in tree.path(leaf):
            count[n.id] = count.get(n.id, 0) + 1
    return count


def score_range(scores: Sequence[float]) -> tuple[float, float]:
    """The colour scale's ends: the scores present, at least 0.2 apart, so that a tree whose
    scores sit between 0.3 and 0.5 is not one pale colour."""
    if not scores:
        return 0.0, 1.0
    low, high = min(scores), max(scores)
    if high - low < 0.2:
        middle = (low + high) / 2
        low, high = max(0.0, middle - 0.1), min(1.0, middle + 0.1)
    return low, high


def tree_figure(tree: Tree | Mapping | str, title: str | None = None, focus: int | None = None,
                height: int | None = None, large: bool = False, max_depth: int | None = None) -> go.Figure:
    """The search tree. ``focus`` highlights one node's prefix path (the KV it reuses) in orange;
    finished leaves carry their answer as a label. ``max_depth``: the depth axis spans this many
    steps however far the tree has got (a live run grows to the right on a fixed axis)."""
    tree = as_tree(tree)
    fig = go.Figure()
    if not len(tree):
        fig.update_layout(title=title or "empty tree")
        return fig
    pos = layout_positions(tree)
    retained = _retained(tree)
    sharing = _sharing(tree, retained)
    frame = tree.to_frame().set_index("id")
    focus_path = {n.id for n in tree.path(focus)} if focus is not None and 0 <= focus < len(tree) else set()

    # Edges: pruned (dotted grey), then retained grouped by how many kept branches share them.
    pruned_x, pruned_y = [], []
    by_width: dict[int, tuple[list, list]] = {}
    for node in tree:
        if node.parent is None:
            continue
        (x0, y0), (x1, y1) = pos[node.parent], pos[node.id]
        if node.id in retained:
            w = min(2 + 2 * (sharing.get(node.id, 1) - 1) ** 0.5, 10)
            xs, ys = by_width.setdefault(round(w), ([], []))
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        else:
            pruned_x += [x0, x1, None]
            pruned_y += [y0, y1, None]
    if pruned_x:
        fig.add_trace(go.Scatter(x=pruned_x, y=pruned_y, mode="lines", hoverinfo="skip", name="pruned branch",
                                 legendgroup="pruned", showlegend=False, line=dict(color=PRUNED, width=1, dash="dot")))
    for i, (w, (xs, ys)) in enumerate(sorted(by_width.items())):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", name="kept KV",
                                 legendgroup="retained", showlegend=i == 0,
                                 line=dict(color=KEPT_EDGE, width=w), opacity=0.55))
    if focus_path:
        xs, ys = [], []
        for nid in focus_path:
            parent = tree[nid].parent
            if parent is not None:
                xs += [pos[parent][0], pos[nid][0], None]
                ys += [pos[parent][1], pos[nid][1], None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", name=f"prefix reused by node {focus}",
                                 showlegend=False, line=dict(color=FOCUS_EDGE, width=5)))

    # Nodes: three traces so the legend explains symbols; colour = score.
    max_tokens = max(int(frame["tokens"].max()), 1)
    groups = {
        "kept": [n for n in tree if n.status in ("kept", "active") and n.parent is not None],
        "answer": [n for n in tree if n.status == "finished"],
        "pruned": [n for n in tree if n.status == "pruned"],
        "prompt": [tree.root],
    }
    symbols = {"kept": "circle", "answer": "diamond", "pruned": "x", "prompt": "square"}
    cmin, cmax = score_range([n.score for n in tree if n.score is not None and n.status != "pruned"])
    first_colour = True
    for name, nodes in groups.items():
        if not nodes:
            continue
        # Area grows with the step's tokens (its KV); pruned nodes are drawn smaller so they stay apart.
        scale = 0.55 if name == "pruned" else 1.0
        sizes = [scale * (10 + 24 * (n.num_tokens / max_tokens) ** 0.5) for n in nodes]
        hover = []
        for n in nodes:
            row = frame.loc[n.id]
            prefix = int(row["prefix_tokens"]) - n.num_tokens
            lines = [f"<b>node {n.id}</b> · depth {n.depth} · {n.status}",
                     f"tokens: {n.num_tokens} · prefix reused: {prefix} · cached by engine: "
                     f"{'—' if n.cached_tokens is None else n.cached_tokens}",
                     f"score: {'—' if n.score is None else f'{n.score:.3f}'}"
                     + ("" if n.cluster is None else f" · cluster {n.cluster}")
                     + (f" · KV shared by {sharing[n.id]} kept branches" if n.id in sharing else "")]
            if n.meta.get("sub_query"):
                lines.append(f"sub-query: {_wrap(n.meta['sub_query'])}")
            if n.meta.get("intermediate"):
                lines.append(f"intermediate answer: {_wrap(n.meta['intermediate'])}")
            if n.answer is not None:
                lines.append(f"<b>answer: {_wrap(n.answer)}</b>")
            if n.parent is None:
                lines.append(f"prompt: {_wrap(n.meta.get('question') or n.text[-300:])}")
            elif not n.meta.get("sub_query"):
                lines.append(_wrap(n.text))
            hover.append("<br>".join(lines))
        pruned = name == "pruned"
        root = name == "prompt"
        colours = [n.score if n.score is not None else (cmin + cmax) / 2 for n in nodes]
        marker = dict(size=sizes, symbol=symbols[name], line=dict(width=1.5, color="#333"))
        if pruned:
            marker.update(color=PRUNED, line=dict(width=1.5, color="#777"))
        elif root:
            marker.update(color="#475569")
        else:
            marker.update(color=colours, colorscale=SCORE_SCALE, cmin=cmin, cmax=cmax,
                          showscale=first_colour,
                          # below the tree, so the answers written beside the leaves are never covered
                          colorbar=dict(title=dict(text="verifier score", side="top"), orientation="h", thickness=10,
                                        len=0.35, x=1, xanchor="right", y=-0.16, yanchor="top"))
            first_colour = False
        answers = name == "answer"  # written beside their leaves: plotly offsets the text by the marker's size
        fig.add_trace(go.Scatter(
            x=[pos[n.id][0] for n in nodes], y=[pos[n.id][1] for n in nodes], name=name,
            mode="markers+text" if answers else "markers", text=[_short(n.answer) for n in nodes] if answers else None,
            textposition="middle right", legendgroup="pruned" if pruned else name,
            showlegend=not root,  # the root square needs no key
            marker=marker, hovertext=hover, hoverinfo="text",
            customdata=[n.id for n in nodes],
        ))
    leaves = max(len(tree.leaves()), 1)
    depth = max(tree.max_depth, max_depth or 1, 1)
    fig.update_layout(
        title=title, height=height or int(min(1100, max(340, 34 * leaves + 130))),
        # Room on the right for the answers written beside the last column of leaves.
        xaxis=dict(title="depth (step)", dtick=1, zeroline=False, showgrid=False, range=[-0.3, depth + 1.1]),
        yaxis=dict(visible=False), plot_bgcolor="white", hovermode="closest",
        margin=dict(l=10, r=10, t=40 if title is None else 70, b=90),
    )
    return sized(fig, large)


def _short(answer: str | None, limit: int = 16) -> str:
    text = (answer or "").strip() or "(none)"
    return html.escape(text if len(text) <= limit else text[: limit - 1] + "…")


def kv_curve_figure(series: Mapping[str, Sequence[float]] | Sequence[float], title: str | None = None,
                    large: bool = False, height: int = 340, compact: bool = False) -> go.Figure:
    """Retained KV tokens after each step; ``series`` is {label: per-step values} or one list."""
    if not isinstance(series, Mapping):
        series = {"retained KV": list(series)}
    fig = go.Figure()
    for label, values in series.items():
        values = list(values)
        if not values:
            continue
        mean = sum(values) / len(values)
        # compact: a short legend name (narrow charts keep one legend line); peak and mean on hover
        fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=values, mode="lines+markers",
                                 name=label if compact else f"{label} (peak {max(values):,.0f}, mean {mean:,.0f})",
                                 hovertemplate=f"{label}: %{{y:,}} tokens (peak {max(values):,.0f}, "
                                               f"mean {mean:,.0f})<extra></extra>"))
    # Whole tokens from zero: a single step must not get ticks at 270.5 and 271.5.
    fig.update_layout(title=title, xaxis=dict(title="step (depth)", dtick=1),
                      yaxis=dict(title="retained KV tokens", rangemode="tozero", tickformat=",d"),
                      hovermode="x unified", margin=dict(l=10, r=10, t=40 if title is None else 70, b=40),
                      height=height)
    return sized(fig, large)


# Legend names that fit five to a line in a narrow column.
SHORT_POLICY_LABELS = {**POLICY_LABELS, "beam": "Beam", "bon": "BoN"}


def tradeoff_figure(records: Iterable[Mapping[str, Any]] | pd.DataFrame, title: str | None = None,
                    large: bool = False, reference: bool = True, current: tuple[str, int] | None = None,
                    height: int = 400, compact: bool = False) -> go.Figure:
    """Accuracy against mean retained KV per policy, one point per width (the paper's trade-off),
    with the paper's reference point written under the legend; ``current`` = (policy, width)
    is ringed (the configuration on screen). ``compact`` (a narrow column): short legend names,
    widths on hover only (labels on every point collide there)."""
    table = as_tradeoff_table(records)
    fig = go.Figure()
    for policy, part in table.groupby("policy", sort=True):
        part = part.sort_values("width")
        fig.add_trace(go.Scatter(
            x=part["kv_mean"], y=part["accuracy"], mode="lines+markers" if compact else "lines+markers+text",
            name=(SHORT_POLICY_LABELS if compact else POLICY_LABELS).get(str(policy), str(policy)),
            text=[f"w={w}" for w in part["width"]], textposition="top center",
            customdata=part[["width", "questions"]].to_numpy(),
            hovertemplate=f"<b>{policy}</b><br>width %{{customdata[0]}} · %{{customdata[1]}} questions"
                          "<br>mean retained KV %{x:,.0f} tokens<br>accuracy %{y:.2f}<extra></extra>",
        ))
    here = table[(table["policy"] == current[0]) & (table["width"] == current[1])] if current else table.iloc[0:0]
    if len(here):
        fig.add_trace(go.Scatter(x=here["kv_mean"], y=here["accuracy"], mode="markers", name="on screen",
                                 marker=dict(size=18, symbol="circle-open", line=dict(width=3), color="#111827"),
                                 hoverinfo="skip", showlegend=False))
    fig.update_layout(title=title, xaxis=dict(title="mean retained KV (tokens, log; lower is cheaper)", type="log"),
                      yaxis=dict(title="accuracy", rangemode="tozero"),
                      margin=dict(l=10, r=10, t=40 if title is None else 70, b=40), height=height)
    if reference:
        fig.add_annotation(text=f"Reference — {PAPER_REFERENCE}", showarrow=False, xref="paper", yref="paper",
                           x=0, y=-0.22, xanchor="left", font=dict(color="#64748b"))
        fig.update_layout(margin=dict(b=80))
    return sized(fig, large)
