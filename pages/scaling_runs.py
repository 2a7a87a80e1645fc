"""Scaling runs: run DRAG / IterDRAG sweeps for real and compare observed with predicted accuracy.

Yue et al. 2025. A sweep runs in a background thread (ragscale.rag.jobs) and writes every
question's result to a SQLite store as it finishes; this page reads the store, so any tab can
watch a running sweep. Thin: widgets and plots; the logic is in ragscale.rag and ragscale.plots.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from pages.common import engine_spec, get_engine
from ragscale.config import DATA_DIR, SHARED_DATASETS_DIR, cache_dir
from ragscale.engines import describe_spec
from ragscale.errors import UserError
from ragscale.plots.scaling import observed_figure, predicted_figure
from ragscale.rag.jobs import REGISTRY, JobRegistry
from ragscale.rag.strategies import unpack_calls
from ragscale.rag.sweep import (KIND, RUN_KIND, SweepSpec, best_per_budget, config_table, curve_strategies,
                                fit_allocation)
from ragscale.store import ResultsStore

DEMO_RESULTS = DATA_DIR / "demo_results.sqlite"
MY_RESULTS = cache_dir() / "scaling_runs.sqlite"
RESULTS_KEY = "scaling_runs.results_path"
METRIC_LABELS = {"acc": "Acc", "em": "EM", "f1": "F1"}


@st.cache_resource
def registry() -> JobRegistry:
    # The process-wide registry: every session (tab) sees the same jobs.
    return REGISTRY


def parse_ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise UserError(f"{name}: use comma-separated whole numbers, like 0,1,2,5") from None
    if not values:
        raise UserError(f"{name}: give at least one value")
    return values


def results_path() -> Path:
    if RESULTS_KEY not in st.session_state:
        st.session_state[RESULTS_KEY] = str(DEMO_RESULTS)
    return Path(st.session_state[RESULTS_KEY])


def choose_dataset() -> str | None:
    shared = sorted(p.name for p in SHARED_DATASETS_DIR.glob("*.json*")) if SHARED_DATASETS_DIR.exists() else []
    kind = st.radio("Dataset", ["demo (generated)", "shared sample", "path", "upload"], horizontal=True,
                    key="sr_dataset_kind")
    if kind.startswith("demo"):
        return "demo"
    if kind == "shared sample":
        if not shared:
            st.warning(f"no samples in {SHARED_DATASETS_DIR}")
            return None
        return str(SHARED_DATASETS_DIR / st.selectbox("Sample", shared, key="sr_shared"))
    if kind == "path":
        path = st.text_input("Dataset file (HotpotQA / MuSiQue / 2Wiki JSON or FlashRAG JSONL)", key="sr_path")
        return path or None
    upload = st.file_uploader("Dataset file", type=["json", "jsonl"], key="sr_upload")
    if upload is None:
        return None
    target = cache_dir() / "uploads" / Path(upload.name).name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(upload.getvalue())
    return str(target)


def sweep_form() -> None:
    jobs = registry()
    with st.expander("Run a sweep", expanded=False):
        dataset = choose_dataset()
        left, mid, right = st.columns(3)
        strategies = left.multiselect("Strategies", ["zero-shot", "many-shot", "rag", "drag", "iterdrag"],
                                      default=["rag", "drag", "iterdrag"], key="sr_strategies")
        k_text = mid.text_input("k (documents)", "0,1,2,5", key="sr_k")
        m_text = mid.text_input("m (demonstrations)", "0,1,2", key="sr_m")
        n_text = right.text_input("n (IterDRAG iterations)", "1,2", key="sr_n")
        limit = right.number_input("Questions", min_value=1, max_value=5000, value=20, key="sr_limit")
        out = st.text_input("Results file (resumed if it exists)", str(MY_RESULTS), key="sr_out")
        st.caption(f"Engine: {describe_spec(engine_spec())} (change it on the Engine page). "
                   "Finished rows are never repeated: rerunning the same grid resumes it.")
        if st.button("Start sweep", type="primary", disabled=dataset is None, key="sr_start"):
            try:
                if Path(out).resolve() == DEMO_RESULTS.resolve():
                    raise UserError("the shipped demo results are read-only here; choose another results file")
                spec = SweepSpec(dataset=dataset, strategies=tuple(strategies), ks=parse_ints(k_text, "k"),
                                 ms=parse_ints(m_text, "m"), ns=parse_ints(n_text, "n"), limit=int(limit))
                from ragscale.datasets import load_dataset

                data = load_dataset(dataset)
                job = jobs.start(spec, get_engine(), out, engine_label=describe_spec(engine_spec()), dataset=data)
                st.session_state[RESULTS_KEY] = str(job.out)
                st.rerun()
            except UserError as exc:
                st.error(str(exc))


def job_panel() -> bool:
    """Progress of the sweep writing to the file on view (if any); True while one runs."""
    jobs = registry()
    job = jobs.running_for(results_path()) or next((j for j in jobs.jobs() if j.out == results_path()), None)
    if job is None:
        other = next((j for j in jobs.jobs() if j.running), None)
        if other is not None:  # started in another tab: offer to watch it here
            st.info(f"A sweep is running into {other.out} ({other.done}/{other.total} rows).")
            st.button("Watch it", key="sr_watch", on_click=lambda: st.session_state.update({RESULTS_KEY: str(other.out)}))
        return False
    doing = "" if job.message == job.status else f": {job.message}"
    label = f"{job.status}{doing} — {job.done}/{job.total} rows, {job.elapsed:.0f} s"
    st.progress(min(job.fraction, 1.0), text=label)
    if job.error:
        st.error(f"The sweep stopped: {job.error}. Rows finished before the error are kept; start it again to resume.")
    if job.running and st.button("Cancel sweep", key=f"sr_cancel_{job.id}"):
        job.cancel.set()
    return job.running


def load_table(path: Path, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    store = ResultsStore(path)
    rows = store.frame(KIND)
    return rows, config_table(rows, metric)


def plots(table: pd.DataFrame, metric: str, show_paper: bool) -> None:
    label = METRIC_LABELS[metric]
    model, note, paper = None, "", None
    try:
        model = fit_allocation(table)
    except UserError as exc:
        note = str(exc)
    except Exception as exc:  # a degenerate fit must not take the page down
        note = f"fit failed: {exc}"
    if show_paper and model is not None:
        from ragscale.allocation import AllocationModel, paper_profile

        paper = AllocationModel.from_profile(paper_profile("hotpotqa", "em", model.i_doc_, model.i_shot_))
    left, right = st.columns(2)
    left.plotly_chart(observed_figure(table, label), width="stretch", key="sr_observed")
    right.plotly_chart(predicted_figure(table, model, paper, label, note), width="stretch", key="sr_predicted")
    if model is not None:
        st.caption(
            f"Allocation model (Yue et al. 2025, σ⁻¹(P) = (a + b·i)ᵀ log(θ + 0.01) + c) fitted to "
            f"{model.n_rows_} configurations: a = {[round(float(x), 3) for x in model.a_]}, "
            f"b = {[round(float(x), 3) for x in model.b_]}, c = {model.c_:.3f}, i_doc = {model.i_doc_:.3f}, "
            f"i_shot = {model.i_shot_:.3f}, R² = {model.r2_:.3f}, MSE = {model.mse_:.3f}."
        )


def drill_down(rows: pd.DataFrame, table: pd.DataFrame) -> None:
    st.subheader("Per question")
    configs = table.apply(lambda r: f"{r.strategy} k={r.k} m={r.m} n={r.n} · {r.dataset}", axis=1).tolist()
    choice = st.selectbox("Configuration", range(len(configs)), format_func=lambda i: configs[i], key="sr_cfg")
    cfg = table.iloc[choice]
    part = rows[(rows["strategy"] == cfg.strategy) & (rows["k"] == cfg.k) & (rows["m"] == cfg.m)
                & (rows["n"] == cfg.n) & (rows["dataset"] == cfg.dataset)]
    if part.empty:
        return
    mark = {1.0: "right ·", 0.0: "wrong ·"}
    labels = [f"{mark.get(r.acc, 'skipped ·')} {r.question}" for r in part.itertuples()]
    pick = st.selectbox("Question", range(len(labels)), format_func=lambda i: labels[i], key="sr_q")
    row = part.iloc[pick]
    a, b, c, d = st.columns(4)
    a.metric("Prediction", row["prediction"] or "—")
    b.metric("Gold", " / ".join(row["golds"][:3]))
    c.metric("EM · F1 · Acc", "skipped" if row["status"] != "ok" else f"{row['em']:.0f} · {row['f1']:.2f} · {row['acc']:.0f}")
    d.metric("Effective length", f"{row['effective_length']:,} tokens",
             f"{row['cached_tokens']:,} cached · {row['calls']} call{'s' if row['calls'] != 1 else ''}",
             delta_color="off", delta_arrow="off")
    if row["status"] != "ok":
        st.warning(f"Skipped: {row['skip_reason']}")
    if row["steps"]:
        st.markdown("**Sub-queries and intermediate answers**")
        st.table(pd.DataFrame(row["steps"], columns=["follow-up", "intermediate answer"]))
    if row["documents"]:
        with st.expander(f"Retrieved documents ({len(row['documents'])}, in retrieval order)"):
            st.dataframe(pd.DataFrame(row["documents"]), hide_index=True, width="stretch")
    for i, call in enumerate(unpack_calls(row.get("calls_z")), start=1):
        with st.expander(f"Call {i} · {call['role']} · {call['prompt_tokens']:,} prompt tokens "
                         f"({call['cached_tokens']:,} cached) → {call['completion_tokens']} new"):
            st.code(call["prompt"] + call["output"], language=None, wrap_lines=True)
    if row.get("demo_sources"):
        st.caption(f"Demonstrations: {', '.join(row['demo_sources'])}")


def results_view(show_paper: bool, metric: str) -> None:
    path = results_path()
    if not path.exists():
        st.info(f"No results at {path} yet. Start a sweep above, or make the shipped ones with `make demo-results`.")
        return
    rows, table = load_table(path, metric)
    if rows.empty:
        st.info("No finished rows yet.")
        return
    datasets = sorted(table["dataset"].unique())
    if len(datasets) > 1:
        chosen = st.selectbox("Dataset in this file", datasets, key="sr_ds_filter")
        table, rows = table[table["dataset"] == chosen], rows[rows["dataset"] == chosen]
    st.caption(f"{len(table)} configurations · {len(rows)} question rows · "
               f"{int((rows['status'] != 'ok').sum())} skipped over the context window · "
               f"models: {', '.join(sorted(rows['model'].unique()))}")
    plots(table, metric, show_paper)
    with st.expander("Best configuration per budget"):
        st.dataframe(best_per_budget(table, strategies=curve_strategies(table)), hide_index=True, width="stretch")
    st.subheader("Configurations")
    st.dataframe(table, hide_index=True, width="stretch", key="sr_table")
    flat = rows.drop(columns=["calls_z"], errors="ignore")
    flat = flat.assign(**{c: flat[c].map(json.dumps) for c in ("golds", "steps", "documents", "demo_sources") if c in flat})
    one, two = st.columns(2)
    one.download_button("Configurations (CSV)", table.to_csv(index=False), "configurations.csv", "text/csv")
    two.download_button("Per-question rows (CSV)", flat.to_csv(index=False), "questions.csv", "text/csv")
    drill_down(rows, table)


st.title("Scaling runs")
st.markdown(
    "Run the strategies of Yue et al. 2025 for real — RAG, DRAG (k documents and m demonstrations, "
    "each with its own documents) and IterDRAG (up to n rounds of follow-up question and retrieval) — "
    "and see how the score grows with the **effective context length**: the input tokens of every "
    "model call for a question, as the engine counts them."
)
sweep_form()
top = st.columns([3, 1, 1])
top[0].text_input("Results on view", key=RESULTS_KEY, value=None if RESULTS_KEY in st.session_state else str(DEMO_RESULTS),
                  help=f"Shipped demo sweep: {DEMO_RESULTS}. Your sweeps go to {MY_RESULTS} by default.")
metric = top[1].selectbox("Score", list(METRIC_LABELS), format_func=METRIC_LABELS.get, key="sr_metric")
show_paper = top[2].toggle("Paper's fit", value=False, key="sr_paper",
                           help="Yue et al. 2025 Table 8 coefficients, on this run's score scale")
if RESULTS_KEY in st.session_state and Path(st.session_state[RESULTS_KEY]).exists():
    runs = ResultsStore(st.session_state[RESULTS_KEY]).records(RUN_KIND)
    if runs:
        st.caption(f"Last sweep in this file: {runs[-1]['result']['rows_written']} rows written in "
                   f"{runs[-1]['result']['seconds']:.0f} s; demonstrations: {runs[-1]['result']['chain_note'] or '—'}")


@st.fragment(run_every=2.0 if any(j.running for j in registry().jobs()) else None)
def live() -> None:
    running = job_panel()
    results_view(show_paper, metric)
    if not running and st.session_state.get("sr_was_running"):
        st.session_state["sr_was_running"] = False
        st.rerun()  # the sweep ended: one full rerun stops the timer
    st.session_state["sr_was_running"] = running


live()
