"""Scaling runs: run DRAG / IterDRAG sweeps for real and compare observed with predicted accuracy.

Yue et al. 2025. A sweep runs in a background thread (ragscale.rag.jobs) and writes every
question's result to a SQLite store as it finishes; this page reads the store, so any tab can
watch a running sweep. Thin: widgets and plots; the logic is in ragscale.rag and ragscale.plots.
Every path typed here goes through ragscale.deploy (confined to its roots in shared mode).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.common import engine_spec, get_engine
from ragscale.config import DATA_DIR, SHARED_DATASETS_DIR
from ragscale.datasets import load_dataset
from ragscale.deploy import results_dir, save_upload, sweep_output_path, viewer_path
from ragscale.engines import describe_spec
from ragscale.errors import UserError
from ragscale.formatting import md_literal
from ragscale.plots.scaling import display_table, observed_figure, predicted_figure
from ragscale.rag.plan import fmt_duration, plan_sweep, rates_from
from ragscale.rag import sweep as sw
from ragscale.rag.jobs import REGISTRY  # process-wide: every tab sees the same jobs
from ragscale.rag.strategies import STRATEGIES, unpack_calls

DEMO_RESULTS = DATA_DIR / "demo_results.sqlite"
MY_RESULTS = "scaling_runs.sqlite"  # under ragscale.deploy.results_dir()
RESULTS_KEY = "scaling_runs.results_path"
METRIC_LABELS = {"acc": "Acc", "em": "EM", "f1": "F1"}


def choose_dataset() -> str | None:
    """The dataset to sweep: "demo" or a checked file path (None until there is one)."""
    kind = st.radio("Dataset", ["demo (generated)", "shared sample", "path", "upload"], horizontal=True,
                    key="sr_dataset_kind")
    try:
        if kind.startswith("demo"):
            return "demo"
        if kind == "shared sample":
            shared = sorted(p.name for p in SHARED_DATASETS_DIR.glob("*.json*")) if SHARED_DATASETS_DIR.is_dir() else []
            if not shared:
                st.warning(f"no samples in {SHARED_DATASETS_DIR}")
                return None
            return str(viewer_path(str(SHARED_DATASETS_DIR / st.selectbox("Sample", shared, key="sr_shared")), "dataset"))
        if kind == "path":
            text = st.text_input("Dataset file (HotpotQA / MuSiQue / 2Wiki JSON or FlashRAG JSONL)", key="sr_path")
            return str(viewer_path(text, "dataset")) if text.strip() else None
        upload = st.file_uploader("Dataset file", type=["json", "jsonl"], key="sr_upload")
        return None if upload is None else str(save_upload(upload.name, upload.getvalue()))
    except UserError as exc:
        st.error(md_literal(exc))
        return None


def sweep_form() -> None:
    with st.expander("Run a sweep", expanded=False):
        dataset = choose_dataset()
        left, mid, right = st.columns(3)
        strategies = left.multiselect("Strategies", list(STRATEGIES), default=["rag", "drag", "iterdrag"],
                                      key="sr_strategies")
        # A small default grid (12 configurations x 8 questions, minutes on a CPU): widen it once it works.
        k_text = mid.text_input("k (documents)", "1,3", key="sr_k")
        m_text = mid.text_input("m (demonstrations)", "0,1", key="sr_m")
        n_text = right.text_input("n (IterDRAG iterations)", "1,2", key="sr_n")
        limit = right.number_input("Questions", min_value=1, max_value=5000, value=8, key="sr_limit")
        out = st.text_input("Results file (resumed if it exists)", MY_RESULTS, key="sr_out")
        try:
            grid = [sw.parse_int_list(text, name) for text, name in ((k_text, "k"), (m_text, "m"), (n_text, "n"))]
            rates = rates_from(st.session_state.get(RESULTS_KEY), DEMO_RESULTS)
            st.info(plan_sweep(strategies, *grid, int(limit), rates).describe(rates), icon=":material/schedule:")
        except UserError as exc:
            st.error(md_literal(exc))
        st.caption(f"Engine: {md_literal(describe_spec(engine_spec()))} (change it on the Engine page). A bare file name "
                   f"goes to {results_dir()}. Finished rows are never repeated: rerunning the same grid resumes it.")
        if st.button("Start sweep", type="primary", disabled=dataset is None, key="sr_start"):
            try:
                spec = sw.SweepSpec(dataset=dataset, strategies=tuple(strategies), ks=sw.parse_int_list(k_text, "k"),
                                    ms=sw.parse_int_list(m_text, "m"), ns=sw.parse_int_list(n_text, "n"), limit=int(limit))
                path, data = sweep_output_path(out), load_dataset(dataset)
                # the store is opened and found writable before the engine (and its model) is made
                job = REGISTRY.start(spec, get_engine, path, engine_label=describe_spec(engine_spec()), dataset=data)
                st.session_state[RESULTS_KEY] = str(job.out)
                st.rerun()
            except UserError as exc:
                st.error(md_literal(exc))


def job_panel(path) -> bool:
    """Progress of the sweep writing to the file on view (if any); True while one runs."""
    job = REGISTRY.job_for(path) if path is not None else None
    if job is None:
        other = next((j for j in REGISTRY.jobs() if j.running), None)
        if other is not None:  # started in another tab: offer to watch it here
            st.info(f"A sweep is running into {md_literal(other.out.name)} ({other.done}/{other.total} rows).")
            st.button("Watch it", key="sr_watch", on_click=lambda: st.session_state.update({RESULTS_KEY: str(other.out)}))
        return False
    doing = "" if job.message == job.status else f": {job.message}"
    left = job.seconds_left
    eta = "" if left is None else f", about {fmt_duration(left)} left"
    st.progress(min(job.fraction, 1.0),
                text=f"{job.status}{doing} — {job.done}/{job.total} rows, {fmt_duration(job.elapsed)} elapsed{eta}")
    if job.error:
        st.error(f"The sweep stopped: {md_literal(job.error)}. Rows finished before the error are kept; start it again to resume.")
    if job.running and st.button("Cancel sweep", key=f"sr_cancel_{job.id}"):
        job.cancel.set()
    return job.running


def plots(table: pd.DataFrame, metric: str, show_paper: bool) -> None:
    model, note = sw.fit_or_note(table)
    paper = sw.paper_model_like(model) if show_paper and model is not None else None
    left, right = st.columns(2)
    left.plotly_chart(observed_figure(table, METRIC_LABELS[metric]), width="stretch", key="sr_observed")
    right.plotly_chart(predicted_figure(table, model, paper, METRIC_LABELS[metric], note), width="stretch",
                       key="sr_predicted")
    if model is not None:
        st.caption(sw.describe_fit(model))


def drill_down(rows: pd.DataFrame, table: pd.DataFrame) -> None:
    st.subheader("Per question")
    choice = st.selectbox("Configuration", range(len(table)), key="sr_cfg",
                          format_func=lambda i: sw.config_label(table.iloc[i]))
    part = sw.config_rows(rows, table.iloc[choice])
    if part.empty:
        return
    pick = st.selectbox("Question", range(len(part)), format_func=lambda i: sw.question_label(part.iloc[i]), key="sr_q")
    row = part.iloc[pick]
    for column, (label, value, note) in zip(st.columns(4), sw.question_figures(row)):
        column.metric(label, value, note, delta_color="off", delta_arrow="off")
    if row["status"] != "ok":
        st.warning(f"Skipped: {md_literal(row['skip_reason'])}")
    if row["steps"]:
        st.markdown("**Sub-queries and intermediate answers**")
        st.table(pd.DataFrame(row["steps"], columns=["follow-up", "intermediate answer"]).map(md_literal))  # cells are markdown
    if row["documents"]:
        with st.expander(f"Retrieved documents ({len(row['documents'])}, in retrieval order)"):
            st.dataframe(pd.DataFrame(row["documents"]), hide_index=True, width="stretch")
    for i, call in enumerate(unpack_calls(row.get("calls_z")), start=1):
        with st.expander(f"Call {i} · {sw.call_label(call)}"):
            st.code(call["prompt"] + call["output"], language=None, wrap_lines=True)
    if row.get("demo_sources"):
        st.caption(f"Demonstrations: {md_literal(', '.join(row['demo_sources']))}")


def results_view(store, show_paper: bool, metric: str) -> None:
    rows = store.frame(sw.KIND)
    if rows.empty:
        st.info("No finished rows yet.")
        return
    table = sw.config_table(rows, metric)
    datasets = sorted(table["dataset"].unique())
    if len(datasets) > 1:
        chosen = st.selectbox("Dataset in this file", datasets, key="sr_ds_filter")
        table, rows = table[table["dataset"] == chosen], rows[rows["dataset"] == chosen]
    st.caption(sw.describe_rows(rows, table))
    plots(table, metric, show_paper)
    with st.expander("Best configuration per budget"):
        st.dataframe(display_table(sw.best_per_budget(table, strategies=sw.curve_strategies(table))), hide_index=True,
                     width="stretch")
    st.subheader("Configurations")
    st.caption("Scores and cache hits in percent; token counts per question (longest, mean); seconds per question. "
               "The CSV download keeps the raw values.")
    st.dataframe(display_table(table), hide_index=True, width="stretch", key="sr_table")
    one, two = st.columns(2)
    one.download_button("Configurations (CSV)", table.to_csv(index=False), "configurations.csv", "text/csv")
    two.download_button("Per-question rows (CSV)", sw.rows_for_csv(rows).to_csv(index=False), "questions.csv", "text/csv")
    drill_down(rows, table)


st.title("Scaling runs")
st.markdown(
    "Run the strategies of Yue et al. 2025 for real — RAG, DRAG (k documents and m demonstrations, "
    "each with its own documents) and IterDRAG (up to n rounds of follow-up question and retrieval) — "
    "and see how the score grows with the **effective context length**: the input tokens of every "
    "model call for a question, as the engine counts them."
)
sweep_form()
st.session_state.setdefault(RESULTS_KEY, str(DEMO_RESULTS))
top = st.columns([3, 1, 1])
top[0].text_input("Results on view", key=RESULTS_KEY,
                  help=f"Shipped demo sweep: {DEMO_RESULTS}. Your sweeps go to {results_dir()}.")
metric = top[1].selectbox("Score", list(METRIC_LABELS), format_func=METRIC_LABELS.get, key="sr_metric")
show_paper = top[2].toggle("Paper's fit", value=False, key="sr_paper",
                           help="Yue et al. 2025 Table 8 coefficients, on this run's score scale")


@st.fragment(run_every=2.0 if any(j.running for j in REGISTRY.jobs()) else None)
def live() -> None:
    running = False
    try:
        store = sw.open_for_viewing(st.session_state[RESULTS_KEY])
        note = sw.last_run_note(store)
    except UserError as exc:
        job_panel(None)
        st.info(f"{md_literal(exc)}. Start a sweep above, or make the shipped ones with `make demo-results`.")
    else:
        if note:
            st.caption(md_literal(note))
        running = job_panel(store.path)
        try:
            results_view(store, show_paper, metric)
        except UserError as exc:  # a damaged store, say
            st.error(md_literal(exc))
    if not running and st.session_state.get("sr_was_running"):
        st.session_state["sr_was_running"] = False
        st.rerun()  # the sweep ended: one full rerun stops the timer
    st.session_state["sr_was_running"] = running


live()
