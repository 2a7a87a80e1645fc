"""Widgets more than one page uses: the budget input, tree clicks, knob sliders, chart options.

Not a page (app.py lists pages explicitly). Each widget keeps its value in ``st.session_state``
under the key it is given and reports changes through a callback, so a page holds no parsing.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import streamlit as st

from ragscale.allocation import parse_budget
from ragscale.errors import UserError
from ragscale.formatting import fmt_tokens
from ragscale.plots.style import chart_config
from ragscale.search.config import POLICY_LABELS

__all__ = ["BUDGET_OPTIONS", "POLICY_LABELS", "budget_input", "chart_config", "clicked_node", "fmt_tokens",
           "stepped_slider"]

# Log-spaced budgets for the slider (two significant digits) plus the paper's five.
BUDGET_OPTIONS = sorted({int(float(f"{b:.2g}")) for b in np.geomspace(1_000, 10_000_000, 41)}
                        | {16_000, 32_000, 128_000, 1_000_000, 5_000_000})


def _exact(tokens: int) -> str:
    """128000 -> '128k': exact, so the text box parses back to the same integer."""
    for suffix, unit in (("M", 1_000_000), ("k", 1_000)):
        if tokens % unit == 0:
            return f"{tokens // unit}{suffix}"
    return str(tokens)


def budget_input(key: str, budget: int, on_change: Callable[[int], None], *, label: str = "Token budget",
                 check: Callable[[int], str | None] | None = None, columns: Sequence[int] = (3, 1)) -> str | None:
    """A log slider and a text box (16k, 1M, 5_000_000) showing ``budget``; a valid change calls
    ``on_change(tokens)``. Returns the last refused entry's message (None when there was none)."""
    ss = st.session_state
    ss[f"{key}_s"] = min(BUDGET_OPTIONS, key=lambda b: abs(np.log(b) - np.log(budget)))
    ss[f"{key}_t"] = _exact(budget)

    def from_text() -> None:
        text = ss[f"{key}_t"]
        try:
            value = int(parse_budget(text))
            problem = check(value) if check else None
        except UserError as exc:
            value, problem = None, str(exc)
        if problem:
            ss[f"{key}_error"] = f"Budget {text[:40]!r} is not valid: {problem}"
        else:
            on_change(value)

    left, right = st.columns(columns, vertical_alignment="bottom")
    left.select_slider(f"{label} (per question, log scale)", BUDGET_OPTIONS, key=f"{key}_s", format_func=fmt_tokens,
                       on_change=lambda: on_change(int(ss[f"{key}_s"])))
    right.text_input("Budget", key=f"{key}_t", on_change=from_text, help="type 16k, 128000, 1M or 5_000_000")
    return ss.pop(f"{key}_error", None)


def stepped_slider(label: str, key: str, value: int, steps: Sequence[int], on_change: Callable[[int], None],
                   help: str | None = None, disabled: bool = False) -> None:
    """A slider over ``steps`` (plus ``value`` when a link carries one between them)."""
    st.session_state[key] = value
    st.select_slider(label, sorted(set(steps) | {value}), key=key, help=help, disabled=disabled,
                     on_change=lambda: on_change(int(st.session_state[key])))


def clicked_node(event, fig) -> int | None:
    """The node id of a clicked point of a tree figure (it carries node ids as customdata)."""
    try:
        points = event.selection.points
    except AttributeError:
        return None
    for point in points:
        trace = fig.data[point["curve_number"]]
        if trace.customdata is not None:
            return int(trace.customdata[point["point_index"]])
    return None
