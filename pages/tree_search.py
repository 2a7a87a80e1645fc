"""Tree search: ETS, REBASE, beam search, DVTS and best-of-N on one question, with the tree they built.

Hooper et al. 2025 (ETS) on the steps of IterDRAG (Yue et al. 2025): every node is one
follow-up sub-query, its retrieved documents and an intermediate answer. Thin: widgets and
plots; the search is ragscale.search, the figures ragscale.plots.tree.
"""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from pages.common import engine_spec, get_engine
from ragscale.config import DATA_DIR, SHARED_DATASETS_DIR
from ragscale.engines import describe_spec
from ragscale.errors import UserError
from ragscale.plots.tree import kv_curve_figure, tradeoff_figure, tradeoff_table, tree_figure
from ragscale.search.config import POLICY_NAMES, load_recipe
from ragscale.search.tree import Tree

RUNS_KEY = "ts_runs"
EXAMPLES_DIR = DATA_DIR / "trees"
POLICY_LABEL = {"ets": "ETS", "rebase": "REBASE", "beam": "Beam search", "dvts": "DVTS", "bon": "Best-of-N"}
POLICY_HELP = (
    "ETS: an integer program keeps diverse branches that share KV. REBASE: softmax(score / T) shares, "
    "no pruning. Beam search: the top √width, equal shares. DVTS: √width independent subtrees, "
    "greedy. Best-of-N: width independent chains."
)
SHARED_SAMPLES = ("hotpotqa_sample70.json", "musique_sample70.json")


# ---- cached heavy objects ---------------------------------------------------------------------
@st.cache_resource(show_spinner="Loading the dataset ...", max_entries=4)
def cached_dataset(task: str, source: str):
    from ragscale.search.cli import load_questions

    return load_questions(task, source)


@st.cache_resource(show_spinner="Building the retrieval index ...", max_entries=4)
def cached_retriever(source: str):
    from ragscale.search.tasks import retriever_for

    return retriever_for(cached_dataset("qa", source))


def embed_fn():
    from ragscale.retrieval import embed_texts

    return embed_texts


def load_examples() -> list[dict]:
    """Precomputed runs shipped in data/trees (see the README there for the command)."""
    runs = []
    for path in sorted(EXAMPLES_DIR.glob("*.json")):
        try:
            runs.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    return runs


def run_one(policy: str, settings: dict, question, task_kind: str, source: str, bar, live) -> dict:
    from ragscale.search.runner import run_search
    from ragscale.search.tasks import QATask, ReasoningTask, format_demos
    from ragscale.search.verifiers import make_verifier

    engine = get_engine()
    embed = embed_fn()
    if task_kind == "qa":  # one self-ask demonstration from the pool shows the model the step format
        task = QATask(cached_retriever(source), k=settings["k"], demos=format_demos(cached_dataset("qa", source)),
                      num_demos=1)
    else:
        task = ReasoningTask()
    verifier = make_verifier(settings["verifier"], engine=engine, embed=embed)
    config = load_recipe(policy, width=settings["width"], lambda_b=settings["lambda_b"], lambda_d=settings["lambda_d"],
                         sampling_temperature=settings["temperature"], max_depth=settings["depth"],
                         step_max_tokens=settings["step_tokens"], seed=settings["seed"])

    def progress(done, total, message):
        bar.progress(min(done / max(total, 1), 1.0), text=f"{policy}: {message}")

    def on_step(report):
        live.plotly_chart(tree_figure(report.tree, title=f"{policy} — after depth {report.depth + 1}, "
                                                         f"retained KV {report.kv_tokens:,} tokens"),
                          width="stretch")

    result = run_search(engine, task, question, config, verifier, embed, progress=progress, on_step=on_step)
    return {**result.to_dict(with_requests=False), "engine": describe_spec(engine_spec())}


# ---- page ------------------------------------------------------------------------------------
st.title("Tree search")
st.caption(
    "Step-wise tree search over retrieval-augmented reasoning: each node is one IterDRAG iteration "
    "(a follow-up sub-query, the documents retrieved for it, an intermediate answer) scored by a "
    "verifier; a leaf states the final answer, chosen by a score-weighted vote. ETS (Hooper et al. "
    "2025) prunes with an integer program so that kept branches are diverse yet share their KV cache; "
    "REBASE, beam search, DVTS and best-of-N use the same tree and width bookkeeping."
)

with st.sidebar:
    st.subheader("Question")
    task_label = st.radio("Task", ["Multi-hop QA (IterDRAG steps)", "Step-wise reasoning (GSM8K JSONL)"],
                          key="ts_task")
    task_kind = "qa" if task_label.startswith("Multi") else "reasoning"
    if task_kind == "qa":
        sources = ["demo"] + [name for name in SHARED_SAMPLES if (SHARED_DATASETS_DIR / name).exists()] + ["a file ..."]
        source = st.selectbox("Dataset", sources, key="ts_dataset",
                              help="demo: a generated world no model knows by heart; or the real HotpotQA / MuSiQue samples")
        if source == "a file ...":
            source = st.text_input("Dataset path", key="ts_dataset_path",
                                   placeholder="HotpotQA / MuSiQue / 2Wiki JSON or FlashRAG JSONL")
        elif source != "demo":
            source = str(SHARED_DATASETS_DIR / source)
    else:
        source = st.text_input("GSM8K-style JSONL", key="ts_gsm8k_path",
                               placeholder="question, answer ending '#### <number>'")

dataset = None
if source:
    try:
        dataset = cached_dataset(task_kind, source)
    except UserError as exc:
        st.error(str(exc))

left, right = st.columns([3, 2])
with left:
    question = None
    if dataset is not None:
        options = list(range(len(dataset.questions)))
        index = st.selectbox(
            f"Question ({len(dataset.questions)} in {dataset.name})", options, key="ts_question",
            format_func=lambda i: f"{dataset.questions[i].qid} · {dataset.questions[i].question[:110]}",
        )
        question = dataset.questions[index]
        st.caption(f"Gold answer: **{' | '.join(question.answers[:3])}**")
    p1, p2 = st.columns(2)
    policy = p1.selectbox("Policy", POLICY_NAMES, key="ts_policy", format_func=POLICY_LABEL.get, help=POLICY_HELP)
    compare = p2.selectbox("Side by side with", ["(none)"] + [p for p in POLICY_NAMES], index=2, key="ts_compare",
                           format_func=lambda p: POLICY_LABEL.get(p, p), help="a second policy run on the same "
                           "question with the same settings, shown next to the first")
with right:
    s1, s2 = st.columns(2)
    width = s1.slider("Width (trajectories)", 2, 16, 4, key="ts_width")
    depth = s2.slider("Max depth (steps)", 1, 5, 2, key="ts_depth")
    lambda_b = s1.slider("λ_b — KV cost weight", 0.0, 3.0, 1.0, 0.05, key="ts_lambda_b")
    lambda_d = s2.slider("λ_d — diversity weight", 0.0, 3.0, 1.5, 0.05, key="ts_lambda_d")
    temperature = s1.slider("Sampling temperature", 0.0, 1.5, 1.0, 0.05, key="ts_temperature")
    k = s2.slider("Documents per step (k)", 1, 4, 2, key="ts_k", disabled=task_kind != "qa")
    with st.expander("More settings"):
        verifier = st.radio("Verifier", ["judge", "grounding"], key="ts_verifier", horizontal=True,
                            help="judge: the model's own P(Yes) that the newest step is right (shares the "
                                 "trajectory's KV); grounding: similarity of the intermediate answer to its "
                                 "retrieved evidence. A PRM on SGLang is available from the CLI (--verifier prm).")
        step_tokens = st.number_input("Token cap per step", 8, 512, 48 if task_kind == "qa" else 256, key="ts_step_tokens")
        seed = st.number_input("Seed", 0, 10_000, 0, key="ts_seed")

settings = {"width": width, "depth": depth, "lambda_b": lambda_b, "lambda_d": lambda_d, "temperature": temperature,
            "k": k, "verifier": verifier, "step_tokens": int(step_tokens), "seed": int(seed)}
policies = [policy] + ([compare] if compare not in ("(none)", policy) else [])
run = st.button(f"Run {' and '.join(policies)} · width {width}, depth {depth}", type="primary", key="ts_run",
                disabled=question is None)

if run and question is not None:
    bar = st.progress(0.0, text="starting ...")
    live = st.empty()
    runs = []
    try:
        for p in policies:
            runs.append(run_one(p, settings, question, task_kind, source, bar, live))
    except UserError as exc:
        st.error(str(exc))
    else:
        st.session_state[RUNS_KEY] = runs
    bar.empty()
    live.empty()

runs = st.session_state.get(RUNS_KEY)
if not runs:
    runs = load_examples()
    if runs:
        st.info("No search run in this session yet: showing precomputed example runs from data/trees "
                f"({runs[0].get('config', {}).get('width')} wide). Press **Run** to search live.")
if runs:
    cols = st.columns(len(runs[:2]))
    for col, res in zip(cols, runs[:2]):
        with col:
            tree = Tree.from_dict(res["tree"])
            label = f"{res['policy']} · width {res['width']}"
            st.subheader(label)
            m1, m2, m3 = st.columns(3)
            m1.metric("Answer", res["answer"] or "—", "correct" if res["correct"] else "wrong",
                      delta_color="normal" if res["correct"] else "inverse")
            m2.metric("Mean retained KV", f"{res['kv']['mean']:,.0f}", f"peak {res['kv']['peak']:,}", delta_color="off")
            hit = res["cached_tokens"] / res["prompt_tokens"] if res["prompt_tokens"] else 0.0
            m3.metric("Prefix-cache hits", f"{hit:.0%}", f"{res['model_calls']} model calls", delta_color="off")
            focus_key = f"ts_focus_{res['policy']}"
            focus = st.session_state.get(focus_key)
            event = st.plotly_chart(tree_figure(tree, focus=focus), key=f"ts_tree_{res['policy']}", width="stretch",
                                    on_select="rerun", selection_mode="points")
            points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
                getattr(getattr(event, "selection", None), "points", [])
            if points and points[0].get("customdata") is not None:
                clicked = int(points[0]["customdata"])
                if clicked != focus:
                    st.session_state[focus_key] = clicked
                    st.rerun()
            if focus is not None and 0 <= focus < len(tree):
                node = tree[focus]
                st.caption(f"Node {focus}: reuses {tree.prefix_token_count(focus) - node.num_tokens:,} prefix tokens "
                           f"(orange path); the engine reported {node.cached_tokens or 0:,} cached prompt tokens.")
                st.code(node.text if node.parent is not None else node.text[-1500:], language=None)
            else:
                st.caption("Click a node to highlight the prefix KV it reuses.")
            st.caption(f"{res['tokens_generated']:,} tokens generated · {res['prompt_tokens']:,} prompt tokens "
                       f"({res['cached_tokens']:,} cached) · {res['wall_seconds']:.1f} s · {res.get('engine', '')}")
            with st.expander("Nodes"):
                frame = tree.to_frame().drop(columns=["text"])
                st.dataframe(frame, hide_index=True, width="stretch")
    st.plotly_chart(kv_curve_figure({f"{r['policy']} w={r['width']}": r["kv"]["per_step"] for r in runs},
                                    title="Retained KV after each step (unique tokens on the kept paths)"),
                    key="ts_kv_curve", width="stretch")

st.divider()
st.subheader("Accuracy against retained KV across widths")
st.caption("The trade-off of Hooper et al. 2025, from `ragscale search-sweep` records: one point per policy and width.")
results_path = st.text_input("Results store", "results.sqlite", key="ts_results_path")
records = []
if results_path and Path(results_path).is_file():
    from ragscale.store import ResultsStore

    try:
        records = ResultsStore(results_path).records("search")
    except UserError as exc:
        st.error(str(exc))
if records:
    st.plotly_chart(tradeoff_figure(records), key="ts_tradeoff", width="stretch")
    st.dataframe(tradeoff_table(records), hide_index=True, width="stretch")
else:
    st.info("No search-sweep records there yet. Create them with e.g. "
            "`ragscale search-sweep --dataset demo --policies ets,rebase,beam --widths 2,4,8 --limit 10 "
            f"--out {results_path or 'results.sqlite'}`.")
