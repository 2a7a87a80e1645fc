"""ragscale — the app's entry point: navigation and the landing page.

Run it with `make run`. Every page is thin: widgets and plots; the logic is in `ragscale`.
"""

import logging
from pathlib import Path

import streamlit as st
from streamlit.errors import FragmentHandledException

from pages.common import engine_sidebar, engine_spec, warm_up
from ragscale.engines import describe_spec
from ragscale.errors import UserError
from ragscale.formatting import md_literal

# The icon is a file of ours: a ":material/..." icon makes every browser fetch it from a public font host.
st.set_page_config(page_title="ragscale", page_icon=str(Path(__file__).parent / "assets" / "icon.png"), layout="wide")


def home() -> None:
    st.title("ragscale")
    st.markdown(
        "A lab for the **compute / accuracy trade-off of inference-time scaling**: how much "
        "accuracy a question-answering system buys with more inference compute, and where "
        "that compute is best spent."
    )
    left, right = st.columns(2)
    with left:
        st.subheader("DRAG and IterDRAG — Yue et al. 2025")
        st.markdown(
            "Spend more tokens on retrieval-augmented generation in three ways: **k** retrieved "
            "documents, **m** worked examples in the prompt, and **n** rounds of asking a "
            "follow-up question and retrieving again. Allocated well, accuracy rises almost "
            "linearly in the log of the *effective context length* (all input tokens over all "
            "model calls for one question). A fitted *computation allocation model* predicts "
            "the best (k, m, n) for a token budget."
        )
    with right:
        st.subheader("ETS tree search — Hooper et al. 2025")
        st.markdown(
            "Searching a tree of partial answers scored by a reward model buys accuracy, but "
            "on GPUs the cost is the **KV cache** the search keeps. ETS solves a small integer "
            "program at every step to keep branches that are diverse yet share prefixes, and "
            "reports a 1.8x smaller KV cache than REBASE at matched accuracy."
        )
    st.info(
        f"Active engine: **{describe_spec(engine_spec())}**. Switch to an SGLang, vLLM or other "
        "OpenAI-compatible server on the Engine page.",
        icon=":material/memory:",
    )
    st.subheader("Pages")
    for page, blurb in PAGE_BLURBS:
        st.page_link(page, label=f"**{page.title}** — {blurb}", icon=page.icon)


# (file, title, icon, one-line description for the landing page)
PAGE_TABLE = [
    ("pages/explorer.py", "Explorer", ":material/explore:",
     "search width buys accuracy on arithmetic; budget, k, m, n and width meet the tree in the demo QA world."),
    ("pages/allocation_calculator.py", "Allocation calculator", ":material/calculate:",
     "what-if budgeting: the best (k, m, n) for a token budget, and what it costs."),
    ("pages/scaling_runs.py", "Scaling runs", ":material/monitoring:",
     "run DRAG/IterDRAG sweeps for real and compare observed with predicted accuracy."),
    ("pages/tree_search.py", "Tree search", ":material/account_tree:",
     "ETS, REBASE, beam, DVTS and best-of-N: which branches were pruned, how much KV was reused."),
    ("pages/engine.py", "Engine", ":material/settings:",
     "switch between the embedded CPU engine, an SGLang server and an OpenAI-compatible server (vLLM, "
     "llama.cpp, hosted APIs); cache statistics."),
]
HERE = Path(__file__).parent
PAGE_BLURBS = [
    (st.Page(path, title=title, icon=icon), blurb)
    for path, title, icon, blurb in PAGE_TABLE
    if (HERE / path).exists()
]

navigation = st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True)] + [p for p, _ in PAGE_BLURBS])
warm_up()  # a background thread: the first paint never waits for the model
engine_sidebar()
try:
    navigation.run()
except UserError as exc:  # meant for people: one line
    st.error(md_literal(exc))
except Exception as exc:  # a crash: a friendly box here, the traceback in the server log (showErrorDetails = "none")
    if isinstance(exc, FragmentHandledException):
        raise  # a fragment's crash: Streamlit already logged it and showed its generic message
    logging.getLogger("ragscale.app").exception("page %r failed", navigation.title)
    st.error("Sorry, this page hit an unexpected error. The details are in the app's log; reload to try again.")
