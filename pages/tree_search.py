"""Tree search: the accuracy / retained-KV trade-off across widths, and trees side by side.

Opens on the bundled search sweep (ragscale.search.results); below it the stored trees of exactly
the question, policies and width the pickers say (none: a note says so); "Run" searches one question
live, each policy from an empty prefix cache, the tree growing on screen step by step. Thin: widgets and plots; searches are
assembled by ragscale.search.builder, the figures are ragscale.plots.tree.
"""

from __future__ import annotations

import os
import time

import streamlit as st

from pages.common import engine_spec, get_engine
from pages.widgets import POLICY_LABELS, chart_config, page_style, run_panel
from ragscale.allocation.prices import billing_mark, run_cost
from ragscale.config import SHARED_DATASETS_DIR
from ragscale.deploy import printable, viewer_path
from ragscale.engines import describe_spec
from ragscale.errors import UserError
from ragscale.search.config import SearchConfig
from ragscale.explorer import live
from ragscale.explorer.library import TreeKey, load_record, same_view
from ragscale.explorer.screen import default_library
from ragscale.formatting import md_literal
from ragscale.plots.tree import kv_curve_figure, tradeoff_figure, tree_figure
from ragscale.search import builder
from ragscale.search import results as sweep
from ragscale.search.config import POLICY_NAMES
from ragscale.search.sweep_report import sweep_note

RUNS_KEY = "ts_runs"
POLICY_HELP = ("ETS: an integer program keeps diverse branches that share KV. REBASE: softmax(score / T) shares, "
               "no pruning. Beam search: the top √width, equal shares. DVTS: √width independent subtrees, "
               "greedy. Best-of-N: width independent chains.")
SHARED_SAMPLES = ("hotpotqa_sample70.json", "musique_sample70.json")


@st.cache_resource(show_spinner="Loading the dataset ...", max_entries=4)
def cached_dataset(task: str, source: str):
    return builder.load_questions(task, source)


@st.cache_data(show_spinner=False, max_entries=4)
def sweep_records(path: str, mtime: float) -> list[dict]:
    return sweep.of_bundled_sweep(sweep.load_sweep_records(path), path)


def stored_runs(dataset, question, policies: list[str], settings: dict) -> list[dict]:
    """Before any run: the bundled library's trees of exactly this question, these policies and this
    width (the nearest depth and k), so the trees on screen are what the pickers say."""
    library = default_library()
    runs = []
    for p in policies:
        key = same_view(library, TreeKey(dataset.name, question.qid, p, settings["width"], settings["depth"] - 1,
                                         settings["k"], 0))
        if key is not None:
            record = load_record(library.path(key))
            runs.append({**record, "engine": f"stored tree · depth {key.n + 1}, k={key.k}, m={key.m} · "
                                              f"{record['engine'].get('model', '?')}"})
    return runs


def run_one(policy: str, settings: dict, question, task: str, dataset, status) -> dict:
    config = builder.search_config(policy, task, width=settings["width"], lambda_b=settings["lambda_b"],
                                   lambda_d=settings["lambda_d"], sampling_temperature=settings["temperature"],
                                   max_depth=settings["depth"], step_max_tokens=settings["step_tokens"],
                                   seed=settings["seed"])
    status.update(label=f"{POLICY_LABELS[policy]}: waiting for the engine …")
    engine = get_engine()
    # Every policy starts from an empty prefix cache: a second run on the first one's warm cache
    # would report more cache hits and less time for no reason of its own.
    engine.flush_cache()
    search = builder.build_search(engine, dataset, task, k=settings["k"], verifier=settings["verifier"],
                                  retrieve=live.shared_retriever(dataset) if task == "qa" else None)
    drawing, started, mark = status.empty(), time.perf_counter(), billing_mark(engine)

    def on_step(report):
        status.update(label=f"{POLICY_LABELS[policy]} · depth {report.depth + 1} of {config.max_depth} · "
                            f"{len(report.tree)} nodes · KV retained {report.kv_tokens:,}, search "
                            f"{report.kv_tokens - report.tree.root.num_tokens:,} · {time.perf_counter() - started:.0f} s")
        # ``meta``: two policies' first steps can draw the same tree, and equal charts would share an id
        drawing.plotly_chart(tree_figure(report.tree).update_layout(meta=[policy, report.depth]),
                             config=chart_config("live-tree"))

    result = search.run(question, config, progress=lambda d, t, msg: status.update(label=f"{policy}: {msg}"),
                        on_step=on_step)
    drawing.empty()  # the finished tree is drawn below, with its figures
    return {**result.to_dict(with_requests=False), "engine": describe_spec(engine_spec()),
            "cost": run_cost(engine, since=mark)}


page_style(False)
st.title("Tree search")
st.caption("Step-wise tree search over retrieval-augmented reasoning: each node is one IterDRAG iteration (a "
           "follow-up sub-query, its retrieved documents, an intermediate answer) scored by a verifier; a leaf states "
           "the final answer, chosen by a score-weighted vote. ETS (Hooper et al. 2025) prunes with an integer program "
           "so that kept branches are diverse yet share their KV cache; REBASE, beam search, DVTS and best-of-N use "
           "the same tree and width bookkeeping.")

# ---- the trade-off across widths ---------------------------------------------------------------
st.subheader("Accuracy against retained KV across widths")
with st.expander("Another results store"):
    other = st.text_input("Results store (`ragscale search-sweep --out FILE`)", "", key="ts_results_path")
store = str(sweep.BUNDLED_SEARCH_SWEEP)
records: list[dict] = []
try:
    if other.strip():  # a typed path: confined and checked by the deployment mode, opened read-only
        store = str(viewer_path(other, "results"))
    if os.path.isfile(store):
        records = sweep_records(store, os.stat(store).st_mtime)
except UserError as exc:
    st.error(md_literal(exc))
if records:
    table = sweep.tradeoff_table(records)
    st.plotly_chart(tradeoff_figure(records), key="ts_tradeoff", config=chart_config("tradeoff"))
    bundled = store == str(sweep.BUNDLED_SEARCH_SWEEP)
    st.caption((f"Bundled sweep (`make search-results`): generated arithmetic, one line per step, a rule-based "
                f"step checker as the verifier. " if bundled else "")
               + f"{sweep_note(records)} Source: {md_literal(printable(store))}.")
    st.dataframe(table.round({"accuracy": 3, "kv_mean": 0, "kv_search_mean": 1}).rename(columns=sweep.KV_MEASURES),
                 hide_index=True, width="stretch")
else:
    st.info(f"No search-sweep records in {md_literal(printable(store))} yet. Create them with e.g. `ragscale search-sweep --dataset demo "
            "--policies ets,rebase,beam --widths 2,4,8 --limit 10 --out results.sqlite`.")

# ---- one question, searched live ---------------------------------------------------------------
with st.sidebar:
    st.subheader("Question")
    task = st.radio("Task", ["qa", "reasoning"], key="ts_task", format_func={
        "qa": "Multi-hop QA (IterDRAG steps)", "reasoning": "Step-wise reasoning (GSM8K JSONL)"}.get)
    if task == "qa":
        sources = ["demo"] + [n for n in SHARED_SAMPLES if (SHARED_DATASETS_DIR / n).exists()] + ["a file ..."]
        source = st.selectbox("Dataset", sources, key="ts_dataset",
                              help="demo: a generated world no model knows by heart; or the real HotpotQA / MuSiQue samples")
        if source == "a file ...":
            source = st.text_input("Dataset path", key="ts_dataset_path",
                                   placeholder="HotpotQA / MuSiQue / 2Wiki JSON or FlashRAG JSONL")
        elif source != "demo":
            source = str(SHARED_DATASETS_DIR / source)
    else:
        source = st.text_input("GSM8K-style JSONL", key="ts_gsm8k_path", placeholder="question, answer ending '#### <number>'")

dataset = None
if source and source.strip():
    try:  # every path goes through the deployment mode's check (confined in shared mode)
        dataset = cached_dataset(task, source if source == "demo" else str(viewer_path(source, "dataset")))
    except UserError as exc:
        st.error(md_literal(exc))

st.subheader("Trees side by side")
left, right = st.columns([3, 2])
with left:
    question = None
    if dataset is not None:
        index = st.selectbox(f"Question ({len(dataset.questions)} in {dataset.name})", range(len(dataset.questions)),
                             key="ts_question",
                             format_func=lambda i: f"{dataset.questions[i].qid} · {dataset.questions[i].question[:110]}")
        question = dataset.questions[index]
        st.caption(f"Gold answer: **{md_literal(' | '.join(question.answers[:3]))}**")
    p1, p2 = st.columns(2)
    policy = p1.selectbox("Policy", POLICY_NAMES, key="ts_policy", format_func=POLICY_LABELS.get, help=POLICY_HELP)
    compare = p2.selectbox("Side by side with", ["(none)", *POLICY_NAMES], index=2, key="ts_compare",
                           format_func=lambda p: POLICY_LABELS.get(p, p),
                           help="a second policy run on the same question with the same settings")
with right:
    s1, s2 = st.columns(2)
    settings = {"width": s1.slider("Width (trajectories)", 2, 16, 4, key="ts_width"),
                "depth": s2.slider("Max depth (steps)", 1, 5, 2, key="ts_depth"),
                "lambda_b": s1.slider("λ_b — KV cost weight", 0.0, 3.0, 1.0, 0.05, key="ts_lambda_b"),
                "lambda_d": s2.slider("λ_d — diversity weight", 0.0, 3.0, SearchConfig().lambda_d, 0.05, key="ts_lambda_d",
                                      help="0 by default: chosen on a dev split (`make ets-tuning`); the paper's 1.5"),
                "temperature": s1.slider("Sampling temperature", 0.0, 1.5, 1.0, 0.05, key="ts_temperature"),
                "k": s2.slider("Documents per step (k)", 1, 4, 2, key="ts_k", disabled=task != "qa")}
    with st.expander("More settings"):
        settings["verifier"] = st.radio(
            "Verifier", ["judge", "grounding"], key="ts_verifier", horizontal=True,
            help="judge: the model's own P(Yes) that the newest step is right (shares the trajectory's KV); "
                 "grounding: similarity of the intermediate answer to its evidence. A PRM on SGLang: CLI --verifier prm.")
        settings["step_tokens"] = int(st.number_input("Token cap per step", 8, 512, 48 if task == "qa" else 256,
                                                      key="ts_step_tokens"))
        settings["seed"] = int(st.number_input("Seed", 0, 10_000, 0, key="ts_seed"))

policies = [policy] + ([compare] if compare not in ("(none)", policy) else [])
if st.button(f"Run {' and '.join(policies)} · width {settings['width']}, depth {settings['depth']}", type="primary",
             key="ts_run", disabled=question is None):
    runs = []
    with st.status("Running live …", expanded=True) as status:
        try:
            for p in policies:
                runs.append(run_one(p, settings, question, task, dataset, status))
        except UserError as exc:
            status.update(label=md_literal(exc), state="error")
        else:
            st.session_state[RUNS_KEY] = runs
            status.update(label=f"Done: {', '.join(policies)}", state="complete", expanded=False)

runs = st.session_state.get(RUNS_KEY)
if not runs and question is not None:
    runs = stored_runs(dataset, question, policies, settings) if task == "qa" else []
    where = f"{' and '.join(POLICY_LABELS[p] for p in policies)} at width {settings['width']} on {question.qid}"
    st.info(f"No search run in this session yet: the stored trees of {where} (depth and k as stored, "
            "named under each tree). Press **Run** to search the settings above." if runs else
            f"No stored tree of {where}. Press **Run** to search it.")
if runs:
    for col, res in zip(st.columns(len(runs[:2])), runs[:2]):
        with col:
            run_panel(res)
    st.plotly_chart(kv_curve_figure({f"{r['policy']} w={r['width']}": r["kv"]["per_step"] for r in runs[:2]},
                                    title="Retained KV after each step (unique tokens on the kept paths)"),
                    key="ts_kv_curve", config=chart_config("kv-per-step"))
