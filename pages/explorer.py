"""Explorer: budget, k, m, n and beam width meet the search tree and the accuracy curves.

The view is one ``ExplorerState`` read from the URL when a session starts; every widget change
updates it, ``ragscale.explorer.screen.explorer`` turns it into a ``Screen`` (everything shown),
and the state goes back into the URL, so the address bar is always a shareable link. This file
only lays out widgets and plots. No model loads unless "Run live" is pressed.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import streamlit as st
import yaml

from pages.common import engine_spec, get_engine
from pages.explorer_view import SCROLL_TO_NODE, accuracy_panel, kv_panel, metric_row, run_live, tree_of
from pages.widgets import (POLICY_LABELS, budget_input, chart_config, clicked_node, node_panel, page_style,
                           stepped_slider)
from ragscale.engines import describe_spec
from ragscale.explorer import screen as ex
from ragscale.explorer.live_layer import LiveLayer
from ragscale.explorer.state import OPENINGS, PROFILES, QPD_RANGE, STRATEGIES, decode, encode, field_problem
from ragscale.formatting import md_literal

# the view; the link this session opened and its notices; this session's live runs; "Run live" pressed
STATE, LINK, LIVE, RUN, CLICKED = "ex.state", "ex.link", "ex.live", "ex.run", "ex.clicked"
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
    if "dataset" in changes:  # another world opens on its own view (question, width)
        changes = {**OPENINGS.get(changes["dataset"], {"question": ""}), **changes}
    ss[STATE] = ss[STATE].with_(**changes)


def widget(name: str) -> dict:
    """Key, current value and change callback of the widget bound to state field ``name``."""
    key = f"ex_{name}"
    ss[key] = getattr(ss[STATE], name)
    return {"key": key, "on_change": lambda: update(**{name: ss[key]})}


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
        st.warning(md_literal(refused), icon=":material/warning:")
    for column, name in zip(st.columns(4, gap="medium"), KNOBS):
        with column:
            stepped_slider(*knob(name))


def controls(screen: ex.Screen) -> None:
    """World, question, the demo QA world's budget and knobs (a search task: width only), policy."""
    qa = screen.task == "qa"
    with st.container(border=True):
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


def tree_panel(screen: ex.Screen, large: bool) -> None:
    """Right: the tree on screen (a click selects a node, whose details sit right above the figure)."""
    tree, qa = screen.tree, screen.task == "qa"
    if not large:  # on a projector the tree's own title line heads the column: the room needs the height
        st.subheader("Search tree")
    head = st.columns([3, 1], vertical_alignment="center")
    if tree.record is not None:
        head[0].markdown(f"**{md_literal(ex.tree_title(tree.shown))}** on *{md_literal(screen.question.question)}*")
    head[1].button("Run live", icon=":material/play_arrow:", type="primary", on_click=lambda: ss.update({RUN: True}),
                   help="search this exact configuration with the active engine: the tree grows as it runs; "
                        "the result stays in your session (a shared link shows the stored tree)", width="stretch")
    if tree.note:
        st.info(md_literal(tree.note), icon=":material/travel_explore:")
    if tree.record is None:
        return st.empty()
    record = tree.record
    if tree.live:
        row = st.columns([4, 1], vertical_alignment="center")
        cost = f"; cost {md_literal(record['cost']['line'])}" if record.get("cost") else ""
        row[0].caption(f"Your live run on {md_literal(record['engine'].get('model', '?'))} ({record['created']}{cost}): it "
                       "stays in this session; a shared link shows the stored tree.")
        row[1].button("Stored tree", on_click=lambda: ss[LIVE].drop(engine_label, tree.want),
                      help="forget this live run and show the stored tree")
    if tree.focus is not None:  # above the tree, where the eye already is
        with st.container(border=True, key="ex_node_panel", height=170 if large else "content"):
            node_panel(ex.node_details(record, tree.focus))
        if ss.pop(CLICKED, False):  # a click just now: bring the details into the window if the page has scrolled
            st.html(SCROLL_TO_NODE, unsafe_allow_javascript=True)
    slot = st.empty()
    fig = tree_of(tree, large)
    clicked = clicked_node(slot.plotly_chart(fig, key="ex_tree", on_select="rerun", selection_mode="points",
                                             config=chart_config("ragscale-explorer-tree")), fig)
    if clicked is not None and clicked != tree.focus:
        update(node=str(clicked))
        ss[CLICKED] = True
        st.rerun()
    verdict = ":green[right]" if record.get("correct") else ":red[wrong]"
    right_count, total = tree.accuracy
    st.markdown(f"**Answer:** {md_literal(record.get('answer') or '(none)')} · {verdict} (gold: {md_literal(' / '.join(record['golds']))})"
                + (f" · this configuration answers **{right_count} of {total}** library questions right" if total else "")
                + f" · {record['nodes']} nodes, {record['wall_seconds']:.1f} s on "
                  f"{md_literal(record.get('engine', {}).get('model', '?'))}")
    if tree.focus is None:
        st.caption("Click a node to read its sub-query, retrieved documents, intermediate answer and score." if qa
                   else "Click a node to read its step and the verifier's score.")
    return slot


# ---- the page --------------------------------------------------------------------------------
if STATE not in ss:  # a new session: the URL decides (a shared link); invalid values fall back
    ss[STATE], notices = decode(st.query_params.to_dict())
    ss[LINK] = (None, notices)
ss.setdefault(LIVE, LiveLayer())
engine_model = None
if engine_spec().kind == "embedded":
    from ragscale.engines.model_files import MODEL_NAME as engine_model
engine_label = describe_spec(engine_spec())  # live runs are kept per engine
screen = ex.explorer(ss[STATE], engine_model=engine_model, live=ss[LIVE].trees(engine_label))
state = ss[STATE] = screen.state
if ss[LINK][0] is None:  # the link's view as first shown: its notices stay until the view moves on
    ss[LINK] = (state, ss[LINK][1])
large = state.present
page_style(large)

head, tools = st.columns([2, 3], vertical_alignment="bottom")
head.title("Explorer")
if not large:  # on a projector the title says enough; the room needs the space
    head.caption("How much accuracy a token budget buys (Yue et al. 2025) and what the search tree keeps in KV cache "
                 "(Hooper et al. 2025), for one configuration.")
toolbar = tools.container(horizontal=True, horizontal_alignment="right", vertical_alignment="center")
toolbar.toggle("Presentation mode", **widget("present"))
link = f"{str(st.context.url or '').split('?')[0]}?{urlencode(encode(state))}"
with toolbar.popover("Share", icon=":material/link:"):
    st.caption("This link opens exactly this view (with the stored tree: live runs stay in your session):")
    st.code(link, language=None, wrap_lines=True)
with toolbar.popover("Export", icon=":material/download:"):
    exported = screen.export(link)
    st.download_button("Configuration (JSON)", json.dumps(exported, indent=2), "explorer.json", "application/json")
    st.download_button("Configuration (YAML)", yaml.safe_dump(exported, sort_keys=False), "explorer.yaml",
                       "application/x-yaml")

for text in screen.warnings + (ss[LINK][1] if state == ss[LINK][0] else []):
    st.warning(md_literal(text), icon=":material/warning:")
for text in screen.infos:
    st.info(md_literal(text))

# On a projector the figures, the chart and the tree come first (the first screen at 1280x720);
# the controls follow. On a desk or a phone the controls lead.
if not large:
    controls(screen)
figures = st.empty()  # a live run redraws the figures here
metric_row(screen, figures)
st.query_params.from_dict(encode(state))
left, right = st.columns([5, 6], gap="medium")
with left:
    accuracy_panel(screen, large)
with right:
    drawing = tree_panel(screen, large)
if large:
    controls(screen)
with left:
    kv_panel(screen.tree, large)
if ss.pop(RUN, False):  # after the layout: the run redraws the figures and the tree in their places
    if screen.task == "qa" and screen.tree.want.k < 1:
        drawing.error("The tree search retrieves documents at every step: set k >= 1.")
    elif run_live(screen, large, get_engine, figures, drawing, lambda record: ss[LIVE].add(engine_label, record)):
        update(node="")
        st.rerun()
