"""What the Explorer page draws from a ``Screen``: the figures, the accuracy chart, the tree, a live run.

Not a page (app.py lists pages explicitly): the Explorer page binds widgets to its state and
calls these. Nothing here decides what is shown (``ragscale.explorer.screen`` does); it only
draws, so presentation mode's sizes live in one place.
"""

from __future__ import annotations

from typing import Callable

import streamlit as st

from pages.widgets import POLICY_LABELS, chart_config
from ragscale.explorer import live
from ragscale.explorer import screen as ex
from ragscale.explorer.live_layer import LiveStep, paced_steps
from ragscale.formatting import md_literal
from ragscale.plots.explorer import curves_figure
from ragscale.plots.tree import kv_curve_figure, tradeoff_figure, tree_figure
from ragscale.search.sweep_report import sweep_note

# A click scrolls the node's details into the window when the page has scrolled past them (static script).
SCROLL_TO_NODE = ("<script>setTimeout(() => document.querySelector('.st-key-ex_node_panel')"
                  "?.scrollIntoView({block: 'nearest', behavior: 'smooth'}), 150)</script>")


def heights(large: bool) -> tuple[int, int]:
    """(chart, tree) heights: on a projector both fit under the figures in a 1280x720 first screen."""
    return (370, 380) if large else (400, 420)


@st.cache_resource(show_spinner=False, max_entries=64)  # figures are shared, never mutated
def _stored_tree(path: str, mtime: float, focus: int | None, large: bool, height: int):
    return tree_figure(ex.load_record(path)["tree"], focus=focus, height=height, large=large)


def tree_of(tree: ex.TreeView, large: bool):
    """The tree on screen as a figure: a library tree from the shared cache, a live one drawn afresh."""
    if tree.live:
        return tree_figure(tree.record["tree"], focus=tree.focus, height=heights(large)[1], large=large)
    return _stored_tree(str(tree.path), tree.path.stat().st_mtime, tree.focus, large, heights(large)[1])


def metric_row(screen: ex.Screen, slot=None) -> None:
    # A wrapping row, not columns: on a phone the six figures sit two or three abreast instead of stacking.
    row = (slot or st).container(horizontal=True, gap="small")
    for m in screen.headline():
        color = "off" if m.unchanged else "normal" if m.higher_is_better else "inverse"
        row.metric(m.label, m.value, m.delta, delta_color=color, delta_arrow="off" if m.unchanged else "auto",
                   border=True, help=m.help, width="stretch")


def accuracy_panel(screen: ex.Screen, large: bool) -> None:
    """Accuracy against the token budget (demo QA) or against retained KV across widths (a search task)."""
    state, c = screen.state, screen.curves
    if screen.task == "qa":
        st.subheader("Accuracy vs token budget")
        st.plotly_chart(curves_figure(c, state.budget, screen.allocation.to_dict(), large=large,
                                      height=heights(large)[0]),
                        key="ex_curve", config=chart_config("ragscale-explorer-curve"))
        st.caption(c.caption)
        return
    st.subheader("Accuracy vs retained KV across widths")
    st.plotly_chart(tradeoff_figure(screen.search_sweep, large=large, current=(state.policy, state.width),
                                    height=heights(large)[0], compact=True, reference=False),
                    key="ex_tradeoff", config=chart_config("ragscale-explorer-tradeoff"))
    st.caption("The bundled search sweep (`make search-results`; data/search_results.md), one point per width; "
               f"the ring is the policy and width on screen. {sweep_note(screen.search_sweep)}")


def kv_panel(tree: ex.TreeView, large: bool) -> None:
    """Retained KV after each step of the tree on screen, beside REBASE's tree of the same key."""
    if tree.record is None:
        return
    st.subheader("Retained KV per step")
    series = {POLICY_LABELS[tree.shown.policy]: tree.record["kv"]["per_step"]}
    if tree.rebase is not None:
        series["REBASE"] = tree.rebase["kv"]["per_step"]
    st.plotly_chart(kv_curve_figure(series, large=large, height=260, compact=True), key="ex_kv",
                    config=chart_config("ragscale-explorer-kv"))


def run_live(screen: ex.Screen, large: bool, get_engine: Callable, figures, drawing,
             keep: Callable[[dict], None]) -> bool:
    """Search the view's exact configuration on ``get_engine()``: every depth redraws the figures (slot
    ``figures``) and the tree (slot ``drawing``) in place of the stored ones; the finished record
    goes to ``keep`` (the session's live layer). False when the run failed (the message is shown)."""
    key = screen.tree.want
    metric_row(screen.with_live(None), figures)
    drawing.info("Running live: waiting for the engine …", icon=":material/hourglass_top:")
    engine = get_engine()  # may wait for the warm-up loading it
    search = lambda on_step: live.run_tree(engine, ex.load_dataset(key.dataset), screen.question, key,  # noqa: E731
                                           on_step=on_step)
    try:
        for step in paced_steps(engine, search, live.search_config(key).max_depth):
            if not isinstance(step, LiveStep):
                keep(step)
                return True
            partial = step.record()
            metric_row(screen.with_live(partial), figures)
            with drawing.container():
                st.caption(f"Running live · depth {step.depth + 1} of {step.max_depth} · {partial['nodes']} nodes · "
                           f"{step.seconds:.1f} s")
                fig = tree_figure(partial["tree"], height=heights(large)[1], large=large, max_depth=step.max_depth)
                # no key: the same chart is updated in place (a new key would rebuild it); ``meta`` keeps its id unique
                st.plotly_chart(fig.update_layout(meta=step.depth), config=chart_config("live-tree"))
    except Exception as exc:  # a failed run (engine down, bad input) must leave the page usable
        drawing.error(f"Live run failed: {md_literal(exc)}")
    return False
