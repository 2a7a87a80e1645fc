"""Explorer: budget, k, m, n and beam width meet the search tree and the accuracy curves.

The whole view is one ``ExplorerState`` (ragscale.explorer.state), read from the URL when a
session starts and written back after every change, so the address bar is always a shareable
link. Everything shown comes from ragscale.explorer.view; this file only lays out widgets and
plots. No model loads unless "Run live" is pressed; the rest is cached so a slider moves in
well under 300 ms.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import numpy as np
import streamlit as st
import yaml

from pages.common import engine_spec, get_engine
from ragscale.allocation import parse_budget
from ragscale.errors import UserError
from ragscale.explorer import state as S
from ragscale.explorer import view as V
from ragscale.plots.explorer import explorer_curve_figure, export_config, observed_traces
from ragscale.plots.tree import kv_curve_figure, tree_figure

STATE = "ex.state"  # the canonical state (survives page switches; widgets are rebuilt from it)
NOTICES = "ex.notices"  # problems with the link this session opened
LINK_STATE = "ex.link_state"  # the state that link decoded to: its notices show until the view moves on
BUDGET_ERROR = "ex.budget_error"
BUDGET_OPTIONS = sorted({int(float(f"{b:.2g}")) for b in np.geomspace(1_000, 10_000_000, 41)}
                        | {16_000, 32_000, 128_000, 1_000_000, 5_000_000})
KNOBS = {  # name: (label, help)
    "k": ("k — documents", "retrieved documents per IterDRAG step (and per demonstration)"),
    "m": ("m — demos", "in-context demonstrations in the shared prompt prefix"),
    "n": ("n — iterations", "IterDRAG iterations: the tree is at most n + 1 deep (n steps, then the answer)"),
    "width": ("beam width", "the search width: samples per depth, shared among kept branches"),
}
RANGES = {"k": S.K_RANGE, "m": S.M_RANGE, "n": S.N_RANGE, "width": S.WIDTH_RANGE}
PROFILE_LABELS = {"paper": "Paper (Gemini)", "fitted": "Fitted to runs"}


def fmt_tokens(value: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


# ---- cached data (each returns quickly on a hit; nothing here loads a model) ------------------
@st.cache_resource(show_spinner=False)
def load_dataset(name: str):
    from ragscale.datasets.loaders import load_dataset as load

    return load(name)


@st.cache_resource(show_spinner=False)
def stored_rows():
    return V.observed_rows()


@st.cache_resource(show_spinner=False)
def allocation_model(profile: str, dataset: str, engine_model: str | None):
    """(model, label, notice, percent): the paper's profile (scores in percent), or one fitted to
    this dataset's stored runs (scores as fractions, like the runs)."""
    if profile == "fitted":
        table = V.observed_table(stored_rows(), dataset, engine_model)
        try:
            return V.fitted_model(table), f"fitted to {dataset} runs", None, False
        except UserError as exc:
            notice = f"No fitted profile for {dataset}: {exc}. Using the paper's."
            return V.paper_model(), "paper profile (Gemini 1.5 Flash)", notice, True
    return V.paper_model(), "paper profile (Gemini 1.5 Flash)", None, True


@st.cache_data(show_spinner=False, max_entries=64)
def curve(profile: str, dataset: str, engine_model: str | None, strategy: str):
    model = allocation_model(profile, dataset, engine_model)[0]
    return V.predicted_curve(model, strategy)


@st.cache_data(show_spinner=False, max_entries=256)
def configuration(profile: str, dataset: str, engine_model: str | None, draft: dict):
    """(allocation, notices) for a draft state: the optimiser runs once per budget and strategy."""
    model = allocation_model(profile, dataset, engine_model)[0]
    return V.current_allocation(S.from_dict(draft), model)


@st.cache_data(show_spinner=False, max_entries=32)
def observed(dataset: str, engine_model: str | None):
    return V.observed_table(stored_rows(), dataset, engine_model)


@st.cache_data(show_spinner=False, max_entries=64)
def tree_record(path: str, mtime: float) -> dict:
    return V.load_record(path)


# Figures are cached as resources (shared, never copied): unpickling a plotly figure from
# st.cache_data costs ~35 ms, a tenth of the budget for a slider move. Nothing mutates them.
@st.cache_resource(show_spinner=False, max_entries=64)
def tree_fig(path: str, mtime: float, focus: int | None, title: str):
    return tree_figure(tree_record(path, mtime)["tree"], title=title, focus=focus, height=470)


@st.cache_resource(show_spinner=False, max_entries=32)
def observed_points(dataset: str, engine_model: str | None, label: str):
    return observed_traces(observed(dataset, engine_model), label)


@st.cache_resource(show_spinner=False, max_entries=64)
def curve_fig(profile: str, dataset: str, engine_model: str | None, strategy: str, budget: int,
              current: dict, predicted_label: str, observed_label: str, percent: bool):
    return explorer_curve_figure(curve(profile, dataset, engine_model, strategy), budget, current,
                                 observed_points(dataset, engine_model, observed_label),
                                 predicted_label=predicted_label, predicted_percent=percent)


@st.cache_resource(show_spinner=False, max_entries=64)
def kv_fig(series: tuple[tuple[str, tuple[int, ...]], ...]):
    fig = kv_curve_figure(dict(series))
    fig.update_layout(height=260, margin=dict(l=50, r=10, t=40, b=30))
    return fig


def record_for(key: V.TreeKey | None, library: V.TreeLibrary) -> tuple[dict | None, str | None]:
    if key is None:
        return None, None
    path = library.index().get(key)
    if path is None:
        return None, None
    return tree_record(str(path), path.stat().st_mtime), str(path)


def engine_model_name() -> str | None:
    spec = engine_spec()
    if spec.kind == "embedded":
        from ragscale.engines.model_files import MODEL_NAME

        return MODEL_NAME
    return None  # a server's model is only known once it is asked; show every stored model


# ---- state <-> widgets <-> URL ---------------------------------------------------------------
def widgets_from(state: S.ExplorerState) -> None:
    ss = st.session_state
    ss["ex_dataset"], ss["ex_question"], ss["ex_profile"] = state.dataset, state.question, state.profile
    ss["ex_strategy"], ss["ex_pinned"], ss["ex_policy"] = state.strategy, state.pinned, state.policy
    ss["ex_present"], ss["ex_qpd"], ss["ex_node"] = state.present, state.qpd, state.node
    set_budget(state.budget)
    for name in KNOBS:
        set_knob(name, getattr(state, name))


def set_budget(value: int) -> None:
    st.session_state["ex_budget"] = value
    st.session_state["ex_budget_s"] = min(BUDGET_OPTIONS, key=lambda b: abs(np.log(b) - np.log(value)))
    st.session_state["ex_budget_t"] = S.format_budget(value)


def set_knob(name: str, value: int) -> None:
    st.session_state[f"ex_{name}_s"] = value
    st.session_state[f"ex_{name}_n"] = value


def on_budget_slider() -> None:
    set_budget(st.session_state["ex_budget_s"])


def on_budget_text() -> None:
    text = st.session_state["ex_budget_t"]
    try:
        value = parse_budget(text)
        problem = S.field_problem("budget", value)
    except UserError as exc:
        problem = str(exc)
    if problem:
        st.session_state[BUDGET_ERROR] = f"Budget {text!r} is not valid: {problem}"
        set_budget(st.session_state["ex_budget"])
    else:
        set_budget(value)


def on_knob(name: str, source: str) -> None:
    value = st.session_state[f"ex_{name}_{source}"]
    set_knob(name, int(value))


def state_from_widgets() -> S.ExplorerState:
    ss = st.session_state
    return S.ExplorerState(
        dataset=ss["ex_dataset"], question=ss["ex_question"] or "", budget=int(ss["ex_budget"]),
        strategy=ss["ex_strategy"], pinned=bool(ss["ex_pinned"]), k=int(ss["ex_k_n"]), m=int(ss["ex_m_n"]),
        n=int(ss["ex_n_n"]), policy=ss["ex_policy"] or "ets", width=int(ss["ex_width_n"]), profile=ss["ex_profile"],
        qpd=int(ss["ex_qpd"]), node=ss.get("ex_node", ""), present=bool(ss["ex_present"]),
    )


def share_link(state: S.ExplorerState) -> str:
    base = str(st.context.url or "").split("?")[0]
    return f"{base}?{urlencode(S.encode(state))}"


# ---- layout pieces ---------------------------------------------------------------------------
def page_css(presenting: bool) -> None:
    # Seven figures share one row: keep their values on one line.
    st.markdown("<style>[data-testid='stMetricValue'] { font-size: 1.7rem; }"
                "[data-testid='stMetricDelta'] { font-size: 0.75rem; }</style>", unsafe_allow_html=True)
    if not presenting:
        return
    st.markdown(
        """<style>
        [data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"],
        [data-testid="stHeader"] { display: none !important; }
        .block-container { padding-top: 1.2rem !important; max-width: 100% !important; }
        html, body, [data-testid="stMarkdownContainer"] p, label p { font-size: 1.15rem !important; }
        h1 { font-size: 2.6rem !important; }
        [data-testid="stMetricValue"], [data-testid="stMetricValue"] * { font-size: 2.2rem !important; }
        [data-testid="stMetricLabel"] p { font-size: 1.1rem !important; }
        </style>""",
        unsafe_allow_html=True,
    )


def knob(column, name: str, disabled: bool) -> None:
    label, help_text = KNOBS[name]
    low, high = RANGES[name]
    with column:
        left, right = st.columns([3, 2], vertical_alignment="bottom")
        left.slider(label, low, high, key=f"ex_{name}_s", help=help_text, disabled=disabled,
                    on_change=on_knob, args=(name, "s"))
        right.number_input(label, low, high, step=1, key=f"ex_{name}_n", disabled=disabled,
                           label_visibility="collapsed", on_change=on_knob, args=(name, "n"))


def metric_row(figs: V.Figures, shown_policy: str | None, allocation, percent: bool) -> None:
    cols = st.columns(7, gap="small")
    observed_tokens = "" if figs.observed_tokens is None else f"; longest question in stored runs: {figs.observed_tokens:,.0f}"
    cols[0].metric("Context", fmt_tokens(figs.effective_tokens), border=True,
                   help="effective context length l(θ) of Yue et al. 2025: input tokens over every call for one "
                        f"question, from the allocation model's token sizes{observed_tokens}")
    if figs.retained_kv_mean is not None:
        ratio = None if figs.kv_ratio_rebase is None else f"{figs.kv_ratio_rebase:.2f}× REBASE"
        cols[1].metric("KV kept", f"{figs.retained_kv_mean:,.0f}", delta=ratio, delta_color="off",
                       delta_arrow="off", border=True,
                       help=f"mean unique tokens on the kept paths after each step of the {shown_policy} tree "
                            f"(peak {figs.retained_kv_peak:,}). r× REBASE: REBASE's mean retained KV is r times "
                            "this tree's, same question and width (Hooper et al. 2025 report 1.8× for ETS)")
    else:
        cols[1].metric("KV kept", "—", border=True, help="no tree for this configuration yet")
    if figs.cache_hit_rate is not None:
        cols[2].metric("Cache hit", f"{figs.cache_hit_rate:.0%}", border=True,
                       help="prefix-cache hits: cached / prompt tokens the engine reported over the tree's requests; "
                            f"the allocation model's bound for the configuration is {figs.cache_hit_upper_bound:.0%}")
    else:
        cols[2].metric("Cache bound", f"{figs.cache_hit_upper_bound:.0%}", border=True,
                       help="share of the input a prefix cache can serve, from the allocation model")
    scale = 1.0 if percent else 100.0
    cols[3].metric("Predicted", f"{figs.predicted_score * scale:.1f}%", border=True,
                   help=f"the allocation model's predicted score for {allocation.strategy} k={allocation.k} "
                        f"m={allocation.m} n={allocation.n}")
    cols[4].metric("Observed", "—" if figs.observed_score is None else f"{figs.observed_score:.0%}", border=True,
                   help="mean accuracy of exactly this configuration in the stored runs (— when it was not run)")
    cols[5].metric("$ / query", f"{figs.cost_per_query_usd:.5f}", border=True,
                   help="USD at illustrative Gemini 1.5 Flash list prices, cached input at the discounted rate")
    cols[6].metric("$ / month", f"{figs.cost_per_month_usd:,.0f}" if figs.cost_per_month_usd >= 100
                   else f"{figs.cost_per_month_usd:,.2f}", border=True,
                   help=f"USD at {st.session_state['ex_qpd']:,} queries per day, 30 days")


def node_panel(record: dict, node_id: int) -> None:
    d = V.node_details(record, node_id)
    score = "—" if d["score"] is None else f"{d['score']:.3f}"
    st.markdown(f"**Node {d['id']}** · depth {d['depth']} · {d['status']} · score **{score}** · "
                f"{d['tokens']} tokens, reusing a {d['prefix_tokens']:,}-token prefix")
    if d["question"]:
        st.markdown(f"**Question:** {d['question']}")
    if d["sub_query"]:
        st.markdown(f"**Sub-query:** {d['sub_query']}")
    if d["intermediate"]:
        st.markdown(f"**Intermediate answer:** {d['intermediate']}")
    if d["answer"] is not None:
        st.markdown(f"**Final answer:** {d['answer']}")
    if d["documents"]:
        st.markdown("**Retrieved documents:** " + "; ".join(f"*{doc['title'] or doc['id']}*" for doc in d["documents"]))
        with st.expander("Document texts"):
            for doc in d["documents"]:
                st.markdown(f"**{doc['title'] or doc['id']}** — {doc['text']}")


def selected_node(event, fig) -> int | None:
    """The node id of a clicked point (the tree figure carries node ids as customdata)."""
    try:
        points = event.selection.points
    except AttributeError:
        return None
    for point in points:
        trace = fig.data[point["curve_number"]]
        if trace.customdata is not None:
            return int(trace.customdata[point["point_index"]])
    return None


def run_live(dataset, question, key: V.TreeKey, library: V.TreeLibrary) -> None:
    bar = st.progress(0.0, text="Loading the engine ...")
    try:
        engine = get_engine()

        def progress(done: int, total: int, message: str) -> None:
            bar.progress(min(done / max(total, 1), 1.0), text=message)

        # max_depth is n + 1; the runner reports depth by depth.
        record = V.run_tree(engine, dataset, question, key,
                            progress=lambda d, t, msg: progress(d, key.n + 1, msg))
    except Exception as exc:  # a failed run (engine down, bad input) must leave the page usable
        bar.empty()
        st.error(f"Live run failed: {exc}")
        return
    library.save(record)
    bar.progress(1.0, text=f"done in {record['wall_seconds']:.1f} s")
    st.session_state["ex_node"] = ""
    st.rerun()


# ---- the page --------------------------------------------------------------------------------
ss = st.session_state
if STATE not in ss:  # a new session: the URL decides (a shared link), invalid values fall back
    decoded, notices = S.decode(st.query_params.to_dict())
    ss[STATE], ss[LINK_STATE], ss[NOTICES] = decoded, None, notices
if "ex_budget" not in ss or "ex_k_n" not in ss:  # widgets are rebuilt after a page switch
    widgets_from(ss[STATE])

page_css(bool(ss.get("ex_present")))

head_left, head_right = st.columns([1, 1], vertical_alignment="bottom")
with head_left:
    st.title("Explorer")
    st.caption("How much accuracy a token budget buys (Yue et al. 2025) and what the search tree keeps in "
               "KV cache (Hooper et al. 2025), for one configuration.")
with head_right:
    tools = st.container(horizontal=True, horizontal_alignment="right", vertical_alignment="center")
    tools.toggle("Presentation mode", key="ex_present")
    share_slot = tools.empty()
    export_slot = tools.empty()

notice_slot = st.container()
link_notices = notice_slot.container()  # filled once this run's state is known
if ss.get(BUDGET_ERROR):
    notice_slot.warning(ss.pop(BUDGET_ERROR), icon=":material/warning:")

# Dataset, question, profile, strategy.
controls = st.container(border=True)
row1 = controls.columns([2, 5, 2, 2])
datasets = V.dataset_choices()
if ss["ex_dataset"] not in datasets:
    notice_slot.warning(f"Dataset {ss['ex_dataset']!r} is not available here; showing demo.", icon=":material/warning:")
    ss["ex_dataset"] = "demo"
row1[0].selectbox("Dataset", datasets, key="ex_dataset")
try:
    dataset = load_dataset(ss["ex_dataset"])
except Exception as exc:  # a broken file must not take the page down
    notice_slot.error(f"Cannot load {ss['ex_dataset']}: {exc}. Showing demo.")
    ss["ex_dataset"] = "demo"
    dataset = load_dataset("demo")
question, q_notice = V.pick_question(dataset.questions, ss["ex_question"])
if q_notice and ss[STATE].dataset == ss["ex_dataset"]:  # not when the user just switched datasets
    notice_slot.warning(q_notice, icon=":material/warning:")
ss["ex_question"] = question.qid
texts = {q.qid: q.question for q in dataset.questions}
row1[1].selectbox("Question", list(texts), key="ex_question",
                  format_func=lambda qid: f"{texts[qid]}  ·  {qid}")
row1[2].selectbox("Accuracy model", S.PROFILES, key="ex_profile", format_func=PROFILE_LABELS.get,
                  help="the paper's Gemini 1.5 Flash fit (Table 8), or the model fitted to the stored runs of this "
                       "dataset and engine")
row1[3].selectbox("Strategy", S.STRATEGIES, key="ex_strategy",
                  help="auto: the optimiser may pick any strategy; the tree always runs IterDRAG steps")

# Budget: a log slider and a text box; pin.
row2 = controls.columns([6, 2, 2, 2], vertical_alignment="bottom")
row2[0].select_slider("Token budget L_max (per question)", BUDGET_OPTIONS, key="ex_budget_s",
                      format_func=fmt_tokens, on_change=on_budget_slider)
row2[1].text_input("Budget", key="ex_budget_t", on_change=on_budget_text,
                   help="type 16k, 128000, 1M or 5_000_000")
row2[2].number_input("Queries per day", S.QPD_RANGE[0], S.QPD_RANGE[1], step=1000, key="ex_qpd",
                     help="for the monthly cost")
row2[3].toggle("Pin k, m, n", key="ex_pinned", help="off: the allocation model re-optimises (k, m, n) "
                                                     "whenever the budget changes")

# The configuration: optimised unless pinned (written into the widgets before they render).
engine_model = engine_model_name()
_, model_label, model_notice, percent = allocation_model(ss["ex_profile"], ss["ex_dataset"], engine_model)
if model_notice:
    notice_slot.info(model_notice)
draft = S.ExplorerState(**{**ss[STATE].to_dict(), "budget": int(ss["ex_budget"]), "strategy": ss["ex_strategy"],
                           "pinned": bool(ss["ex_pinned"]), "k": int(ss["ex_k_n"]), "m": int(ss["ex_m_n"]),
                           "n": int(ss["ex_n_n"])})
allocation, alloc_notices = configuration(ss["ex_profile"], ss["ex_dataset"], engine_model, draft.to_dict())
for notice in alloc_notices:
    notice_slot.warning(notice, icon=":material/warning:")
if not draft.pinned:
    for name in ("k", "m", "n"):
        set_knob(name, getattr(allocation, name))

row3 = controls.columns(4, gap="medium")
for column, name in zip(row3, ("k", "m", "n", "width")):
    knob(column, name, disabled=name != "width" and not ss["ex_pinned"])
row4 = controls.columns([4, 4], vertical_alignment="bottom")
row4[0].segmented_control("Search policy", S.POLICIES, key="ex_policy", required=True,
                          format_func=S.POLICY_LABELS.get,
                          help="ETS (Hooper et al. 2025) and its baselines, on the same tree code")
caption_slot = row4[1]
if not draft.pinned:
    caption_slot.caption(f"Optimised for {fmt_tokens(draft.budget)}: **{allocation.strategy}** k={allocation.k} "
                         f"m={allocation.m} n={allocation.n} ({allocation.effective_tokens:,} tokens). "
                         "Pin to set k, m, n yourself.")
else:
    best, problems = configuration(ss["ex_profile"], ss["ex_dataset"], engine_model,
                                   draft.with_(pinned=False).to_dict())
    if not problems:
        caption_slot.caption(f"The allocation model would pick **{best.strategy}** k={best.k} m={best.m} "
                             f"n={best.n} for {fmt_tokens(draft.budget)} ({best.effective_tokens:,} tokens). "
                             "Unpin to use it.")

state = state_from_widgets()
ss[STATE] = state
if ss.get(LINK_STATE) is None:  # the link's view as first shown (question and k, m, n resolved)
    ss[LINK_STATE] = state
if state == ss[LINK_STATE]:  # a link's problems stay in view until the user moves on
    for notice in ss.get(NOTICES, []):
        link_notices.warning(notice, icon=":material/warning:")
st.query_params.from_dict(S.encode(state))

# ---- left: curves; right: tree ----------------------------------------------------------------
library = V.default_library()
want = V.tree_key(state, question.qid)
shown, exact = library.nearest(want)
record, record_path = record_for(shown, library)
rebase_record = None
if shown is not None:
    rebase_record, _ = record_for(V.TreeKey(**{**shown.to_dict(), "policy": "rebase"}), library)
table = observed(state.dataset, engine_model)

left, right = st.columns([5, 6], gap="medium")
with left:
    st.subheader("Accuracy vs token budget")
    model_name = engine_model or "stored runs"
    fig = curve_fig(state.profile, state.dataset, engine_model, state.strategy, state.budget, allocation.to_dict(),
                    "predicted P*", "observed", percent)
    st.plotly_chart(fig, key="ex_curve", config=export_config("ragscale-explorer-curve"))
    if table.empty:
        st.caption(f"Predicted by the {model_label}. No stored runs for {state.dataset}: `ragscale sweep "
                   f"--dataset {state.dataset} --out data/demo_results.sqlite` adds observed points.")
    elif percent:
        st.caption("Predicted: the paper's Gemini 1.5 Flash coefficients (EM %, HotpotQA scale). Observed: "
                   f"accuracy of {model_name} on {state.dataset}, each configuration's longest question on "
                   "the x axis — different models, one axis.")
    else:
        st.caption(f"Predicted by the allocation model {model_label}; observed: accuracy of {model_name} on "
                   f"{state.dataset}, each configuration's longest question on the x axis.")
    if record is not None:
        st.subheader("Retained KV per step")
        series = {S.POLICY_LABELS[shown.policy]: record["kv"]["per_step"]}
        if rebase_record is not None and shown.policy != "rebase":
            series["REBASE"] = rebase_record["kv"]["per_step"]
        st.plotly_chart(kv_fig(tuple((name, tuple(values)) for name, values in series.items())), key="ex_kv",
                        config=export_config("ragscale-explorer-kv"))

with right:
    st.subheader("Search tree")
    if record is None:
        st.info(V.tree_label(want, None, False))
    else:
        label = V.tree_label(want, shown, exact)
        if label:
            st.info(label, icon=":material/travel_explore:")
        verdict = ":green[correct]" if record.get("correct") else ":red[wrong]"
        title = (f"{S.POLICY_LABELS[shown.policy]} · width {shown.width} · n={shown.n} k={shown.k} m={shown.m}")
        node_ids = {int(n["id"]) for n in record["tree"]["nodes"]}
        focus = int(ss["ex_node"]) if str(ss.get("ex_node", "")).isdigit() and int(ss["ex_node"]) in node_ids else None
        st.markdown(f"**{title}** on *{question.question}*")
        fig = tree_fig(record_path, library.index()[shown].stat().st_mtime, focus, None)
        event = st.plotly_chart(fig, key="ex_tree", on_select="rerun", selection_mode="points",
                                config=export_config("ragscale-explorer-tree"))
        clicked = selected_node(event, fig)
        if clicked is not None and clicked != focus:
            ss["ex_node"] = str(clicked)
            st.rerun()
        st.markdown(f"**Answer:** {record.get('answer') or '(none)'} · {verdict} (gold: {' / '.join(record['golds'])}) · "
                    f"{record['nodes']} nodes · {record['wall_seconds']:.0f} s on "
                    f"{record.get('engine', {}).get('model', '?')}")
        if focus is not None:
            with st.container(border=True, key="ex_node_panel"):
                node_panel(record, focus)
        else:
            st.caption("Click a node to read its sub-query, retrieved documents, intermediate answer and score.")
    if st.button("Run live", icon=":material/play_arrow:", type="primary", help="search this exact configuration with the active engine "
                 "(loads the model)"):
        if want.k < 1:
            st.error("The tree search retrieves documents at every step: set k >= 1.")
        else:
            run_live(dataset, question, want, library)

# ---- the row of figures ----------------------------------------------------------------------
figs = V.figures(state, allocation, record, rebase_record if shown and shown.policy != "rebase" else None, table)
metric_row(figs, S.POLICY_LABELS[shown.policy] if shown else None, allocation, percent)

# ---- share and export --------------------------------------------------------------------------
link = share_link(state)
with share_slot.popover("Share", icon=":material/link:"):
    st.caption("This link opens exactly this view:")
    st.code(link, language=None, wrap_lines=True)
exported = V.export_config(state, allocation, shown, link)
with export_slot.popover("Export", icon=":material/download:"):
    st.download_button("Configuration (JSON)", json.dumps(exported, indent=2), "explorer.json", "application/json")
    st.download_button("Configuration (YAML)", yaml.safe_dump(exported, sort_keys=False), "explorer.yaml",
                       "application/x-yaml")
    st.caption("Figures: use the camera icon on each chart for a PNG.")
