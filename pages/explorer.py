"""Explorer: budget, k, m, n and beam width meet the search tree and the accuracy curves.

The view is one ``ExplorerState`` read from the URL when a session starts; every widget change
updates it, ``ragscale.explorer.screen.explorer`` turns it into a ``Screen`` (everything shown),
and the state goes back into the URL, so the address bar is always a shareable link. This file
only lays out widgets and plots. No model loads unless "Run live" is pressed.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import streamlit as st
import yaml

from pages.common import engine_spec, get_engine
from pages.widgets import (POLICY_LABELS, budget_input, chart_config, clicked_node, node_panel, page_style,
                           stepped_slider)
from ragscale.explorer import live
from ragscale.explorer import screen as ex
from ragscale.explorer.state import PROFILES, QPD_RANGE, STRATEGIES, decode, encode, field_problem
from ragscale.plots.explorer import curves_figure
from ragscale.plots.tree import kv_curve_figure, tradeoff_figure, tree_figure
from ragscale.search.sweep_report import sweep_note

STATE, LINK = "ex.state", "ex.link"  # the view; the link this session opened and its notices
KNOBS = {  # name: (label, slider steps, help)
    "k": ("k — documents", (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000), "retrieved per IterDRAG step"),
    "m": ("m — demos", (0, 1, 2, 4, 8, 16, 32, 64, 128, 256), "in-context demonstrations in the shared prefix"),
    "n": ("n — iterations", (1, 2, 3, 4, 5), "IterDRAG iterations: the tree is n + 1 deep"),
    "width": ("beam width", (1, 2, 4, 8, 16, 32, 64), "samples per depth, shared among the kept branches"),
}
PROFILE_LABELS = {"paper": "Paper (Gemini)", "fitted": "Fitted to runs"}
WORLD_LABELS = {"arithmetic": "Arithmetic (search)", "demo": "Demo QA (retrieval)"}
ss = st.session_state


def update(**changes) -> None:
    """A widget changed: the new state (a new question or tree forgets the selected node)."""
    if set(changes) & {"dataset", "question", "policy", "width", "k", "m", "n"}:
        changes.setdefault("node", "")
    if "dataset" in changes:
        changes.setdefault("question", "")
    ss[STATE] = ss[STATE].with_(**changes)


def widget(name: str) -> dict:
    """Key, current value and change callback of the widget bound to state field ``name``."""
    key = f"ex_{name}"
    ss[key] = getattr(ss[STATE], name)
    return {"key": key, "on_change": lambda: update(**{name: ss[key]})}


@st.cache_resource(show_spinner=False, max_entries=64)  # figures are shared, never mutated
def tree_fig(path: str, mtime: float, focus: int | None, large: bool):
    return tree_figure(ex.load_record(path)["tree"], focus=focus, height=460, large=large)


def knob(name: str) -> tuple:
    """Arguments of ``stepped_slider`` for the state field ``name``."""
    label, steps, help_text = KNOBS[name]
    state = ss[STATE]
    return (label, f"ex_{name}", getattr(state, name), steps, lambda v: update(**{name: v}), help_text,
            name != "width" and not state.pinned)


def budget_and_knobs() -> None:
    """The demo QA world's controls: the budget, whether k, m, n are pinned, and the four sliders."""
    state = ss[STATE]
    budget_row = st.columns([6, 2], vertical_alignment="bottom")
    with budget_row[0]:
        refused = budget_input("ex_budget", state.budget, lambda v: update(budget=v),
                               check=lambda v: field_problem("budget", v))
    budget_row[1].toggle("Pin k, m, n", **widget("pinned"),
                         help="off: the allocation model re-optimises (k, m, n) whenever the budget changes")
    if refused:
        st.warning(refused, icon=":material/warning:")
    for column, name in zip(st.columns(4, gap="medium"), KNOBS):
        with column:
            stepped_slider(*knob(name))


def allocation_panel() -> None:
    """Accuracy against the token budget: the runs, the model fitted to them, the paper's reference."""
    st.subheader("Accuracy vs token budget")
    c = screen.curves
    st.plotly_chart(curves_figure(c, state.budget, screen.allocation.to_dict(), large=large, height=400),
                    key="ex_curve", config=chart_config("ragscale-explorer-curve"))
    st.caption(c.caption)


def metric_row(screen: ex.Screen) -> None:
    # A wrapping row, not columns: on a phone the six figures sit two or three abreast instead of stacking.
    row = st.container(horizontal=True, gap="small")
    for m in screen.headline():
        color = "off" if m.unchanged else "normal" if m.higher_is_better else "inverse"
        row.metric(m.label, m.value, m.delta, delta_color=color, delta_arrow="off" if m.unchanged else "auto",
                   border=True, help=m.help, width="stretch")


def run_live(screen: ex.Screen, large: bool) -> None:
    """Search the exact configuration, drawing the tree as it grows; then show it from the library."""
    key, started = screen.tree.want, time.perf_counter()
    depth = live.search_config(key).max_depth
    status = st.status("Running live: waiting for the engine …", expanded=True)
    drawing = status.empty()

    def on_step(report) -> None:
        status.update(label=f"Running live · depth {report.depth + 1} of {depth} · {len(report.tree)} nodes · "
                            f"KV {report.kv_tokens:,} tokens · {time.perf_counter() - started:.0f} s")
        drawing.plotly_chart(tree_figure(report.tree, height=460, large=large), config=chart_config("live-tree"))

    try:
        record = live.run_tree(get_engine(), ex.load_dataset(key.dataset), screen.question, key,
                               progress=lambda d, t, msg: status.update(label=f"Running live · {msg}"), on_step=on_step)
    except Exception as exc:  # a failed run (engine down, bad input) must leave the page usable
        status.update(label=f"Live run failed: {exc}", state="error")
        return
    ex.default_library().save(record)
    status.update(label=f"Done in {record['wall_seconds']:.1f} s", state="complete")
    update(node="")
    st.rerun()


# ---- the page --------------------------------------------------------------------------------
if STATE not in ss:  # a new session: the URL decides (a shared link); invalid values fall back
    ss[STATE], notices = decode(st.query_params.to_dict())
    ss[LINK] = (None, notices)
engine_model = None
if engine_spec().kind == "embedded":
    from ragscale.engines.model_files import MODEL_NAME as engine_model
screen = ex.explorer(ss[STATE], engine_model=engine_model)
state = ss[STATE] = screen.state
if ss[LINK][0] is None:  # the link's view as first shown: its notices stay until the view moves on
    ss[LINK] = (state, ss[LINK][1])
large = state.present
page_style(large)

head, tools = st.columns([3, 2], vertical_alignment="bottom")
head.title("Explorer")
if not large:  # on a projector the title says enough; the room needs the space
    head.caption("How much accuracy a token budget buys (Yue et al. 2025) and what the search tree keeps in KV cache "
                 "(Hooper et al. 2025), for one configuration.")
toolbar = tools.container(horizontal=True, horizontal_alignment="right", vertical_alignment="center")
toolbar.toggle("Presentation mode", **widget("present"))
link = f"{str(st.context.url or '').split('?')[0]}?{urlencode(encode(state))}"
with toolbar.popover("Share", icon=":material/link:"):
    st.caption("This link opens exactly this view:")
    st.code(link, language=None, wrap_lines=True)
with toolbar.popover("Export", icon=":material/download:"):
    exported = screen.export(link)
    st.download_button("Configuration (JSON)", json.dumps(exported, indent=2), "explorer.json", "application/json")
    st.download_button("Configuration (YAML)", yaml.safe_dump(exported, sort_keys=False), "explorer.yaml",
                       "application/x-yaml")

for text in screen.warnings + (ss[LINK][1] if state == ss[LINK][0] else []):
    st.warning(text, icon=":material/warning:")
for text in screen.infos:
    st.info(text)

if large:  # on a projector the figures come first, where a room looks: above the controls, in the first screen
    metric_row(screen)
qa = screen.task == "qa"  # the demo QA world: budget, k, m, n; a search task: policy and width only
controls = st.container(border=True)
with controls:
    top = st.columns([3, 6, 2] if qa else [3, 8], vertical_alignment="bottom")
    top[0].selectbox("World", screen.datasets, format_func=lambda d: WORLD_LABELS.get(d, d), **widget("dataset"),
                     help="arithmetic: rule-checked steps, where width buys accuracy; demo QA: IterDRAG with "
                          "retrieval, where budget, k, m and n move the tree")
    top[1].selectbox("Question", list(screen.questions), format_func=lambda q: f"{screen.questions[q]} · {q}",
                     **widget("question"))
    if qa:
        with top[2].popover("Settings", icon=":material/tune:", width="stretch"):
            st.selectbox("Accuracy model", PROFILES, format_func=PROFILE_LABELS.get, **widget("profile"),
                         help="the allocation model fitted to this dataset's stored runs, or the paper's Gemini fit")
            st.selectbox("Strategy", STRATEGIES, **widget("strategy"),
                         help="auto: the optimiser may pick any strategy; the tree always runs IterDRAG steps")
            st.number_input("Queries per day", *QPD_RANGE, step=1000, **widget("qpd"), help="for the monthly cost")
        budget_and_knobs()
    else:
        stepped_slider(*knob("width"))
    st.segmented_control("Search policy", list(POLICY_LABELS), format_func=POLICY_LABELS.get, required=True,
                         **widget("policy"), help="ETS (Hooper et al. 2025) and its baselines, on the same tree code")
    if screen.suggestion:
        st.caption(screen.suggestion)
st.query_params.from_dict(encode(state))
if not large:
    metric_row(screen)  # the headline numbers, above the charts

left, right = st.columns([5, 6], gap="medium")
with left:
    if qa:
        allocation_panel()
    else:
        st.subheader("Accuracy vs retained KV across widths")
        st.plotly_chart(tradeoff_figure(screen.search_sweep, large=large, current=(state.policy, state.width),
                                        height=400, compact=True, reference=False),
                        key="ex_tradeoff", config=chart_config("ragscale-explorer-tradeoff"))
        st.caption("The bundled search sweep (`make search-results`; data/search_results.md), one point per width; "
                   f"the ring is the policy and width on screen. {sweep_note(screen.search_sweep)}")
    tree = screen.tree
    if tree.record is not None:
        st.subheader("Retained KV per step")
        series = {POLICY_LABELS[tree.shown.policy]: tree.record["kv"]["per_step"]}
        if tree.rebase is not None:
            series["REBASE"] = tree.rebase["kv"]["per_step"]
        st.plotly_chart(kv_curve_figure(series, large=large, height=260, compact=True), key="ex_kv",
                        config=chart_config("ragscale-explorer-kv"))

with right:
    st.subheader("Search tree")
    if tree.note:
        st.info(tree.note, icon=":material/travel_explore:")
    if tree.record is not None:
        record = tree.record
        st.markdown(f"**{ex.tree_title(tree.shown)}** on *{screen.question.question}*")
        fig = tree_fig(str(tree.path), tree.path.stat().st_mtime, tree.focus, large)
        event = st.plotly_chart(fig, key="ex_tree", on_select="rerun", selection_mode="points",
                                config=chart_config("ragscale-explorer-tree"))
        clicked = clicked_node(event, fig)
        if clicked is not None and clicked != tree.focus:
            update(node=str(clicked))
            st.rerun()
        verdict = ":green[right]" if record.get("correct") else ":red[wrong]"
        right_count, total = tree.accuracy
        st.markdown(f"**Answer:** {record.get('answer') or '(none)'} · {verdict} (gold: {' / '.join(record['golds'])})"
                    + (f" · this configuration answers **{right_count} of {total}** library questions right" if total else "")
                    + f" · {record['nodes']} nodes, {record['wall_seconds']:.0f} s on "
                      f"{record.get('engine', {}).get('model', '?')}")
        if tree.focus is not None:
            with st.container(border=True, key="ex_node_panel"):
                node_panel(ex.node_details(record, tree.focus))
        else:
            st.caption("Click a node to read its sub-query, retrieved documents, intermediate answer and score." if qa
                       else "Click a node to read its step and the verifier's score.")
    if st.button("Run live", icon=":material/play_arrow:", type="primary",
                 help="search this exact configuration with the active engine (the tree grows as it runs)"):
        if qa and tree.want.k < 1:
            st.error("The tree search retrieves documents at every step: set k >= 1.")
        else:
            run_live(screen, large)
