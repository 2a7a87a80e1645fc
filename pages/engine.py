"""Engine: choose the embedded CPU engine, an SGLang server or an OpenAI-compatible server (vLLM,
llama.cpp's server, a hosted API), check it, watch its prefix cache.

Thin: widgets only; the engines are ragscale.engines. The choice is stored with
pages.common.set_engine_spec, so every page then runs on it.
"""

from __future__ import annotations

import streamlit as st

from pages.common import engine_spec, get_engine, set_engine_spec
from ragscale.deploy import check_server_url, printable, shared, viewer_folder, viewer_model
from ragscale.engines import EngineSpec, describe_spec, live_engine
from ragscale.engines.health import check_server, checked_engine_url, viewer_message
from ragscale.errors import EngineError, UserError
from ragscale.formatting import md_literal
from ragscale.retrieval.options import RetrieverSettings
from ragscale.retrieval.options import current_settings as current_retrieval
from ragscale.retrieval.options import use_settings as use_retrieval
from ragscale.retrieval.status import retrieval_status

EMBEDDED, SGLANG, OPENAI = "Embedded CPU engine", "SGLang server or sglang-router", "OpenAI-compatible server"
KINDS = {EMBEDDED: "embedded", SGLANG: "sglang", OPENAI: "openai"}
HEALTH_KEY = "engine_page.health"  # (url, ok, message) of the last health check
RETRIEVAL_KEY = "engine_page.retrieval"  # (url or None, retrieval_status) of the last store check


st.title("Engine")
st.caption(
    "Every experiment runs on one engine interface. The embedded engine runs SmolLM2-135M on this "
    "machine's CPU with a radix prefix cache (SGLang semantics); an SGLang server runs a real model "
    "on GPUs; an OpenAI-compatible server is vLLM (`ragscale serve vllm`), llama.cpp's server or a hosted API "
    "(its key from RAGSCALE_OPENAI_API_KEY or OPENAI_API_KEY, never shown). Token counts, cached tokens and hit "
    "rates mean the same on all of them."
)

active = engine_spec()
st.info(f"Active engine: **{md_literal(describe_spec(active))}**")

# ---- choose ---------------------------------------------------------------------------------
kind = st.radio("Engine", list(KINDS), index=list(KINDS.values()).index(active.kind), horizontal=True,
                key="engine_kind")
if kind == EMBEDDED:
    prefix_cache = st.checkbox(
        "Radix prefix cache", value=active.prefix_cache if active.kind == "embedded" else True, key="engine_prefix_cache",
        help="Off is SGLang's --disable-radix-cache: every prompt is prefilled from scratch (for A/B runs).",
    )
    model_text = st.text_input(
        "Model (optional)", value=active.model or "" if active.kind == "embedded" else "", key="engine_model",
        placeholder="SmolLM2-135M-Instruct", help="A local Hugging Face folder (config.json + safetensors) or a "
        ".gguf file, Llama architecture; empty for SmolLM2-135M-Instruct. The same as --model on the command line.")
    try:
        chosen = EngineSpec("embedded", prefix_cache=prefix_cache, model=viewer_model(model_text))
    except UserError as exc:
        chosen = None
        st.error(f"Model: {md_literal(exc)}")
    if st.button("Use the embedded engine", type="primary", disabled=chosen in (None, active), key="engine_use_embedded"):
        set_engine_spec(chosen)
        st.rerun()
else:
    server_kind = KINDS[kind]
    same = active.kind == server_kind
    url = st.text_input("Server URL", value=active.url if same else
                        ("http://127.0.0.1:8000/v1" if server_kind == "openai" else "http://127.0.0.1:30000"),
                        key="engine_url" if server_kind == "sglang" else "engine_openai_url",
                        help="One `python -m sglang.launch_server` (or `ragscale serve embedded`), or sglang-router."
                        if server_kind == "sglang" else "The OpenAI base URL: `ragscale serve vllm` answers at "
                        "http://127.0.0.1:8000/v1; `ragscale serve embedded` at http://127.0.0.1:30000/v1. On a "
                        "shared server only loopback and the operator's RAGSCALE_ALLOWED_URLS.")
    served, window = None, None
    if server_kind == "openai":
        served = st.text_input("Model (optional)", value=active.served_model or "" if same else "",
                               key="engine_served_model",
                               help="Empty: the first model /v1/models lists.").strip() or None
        window = int(st.number_input("Context window (tokens; 0 = as the server reports)", min_value=0,
                                     value=active.context_window or 0 if same else 0, key="engine_window",
                                     help="Only for servers that do not report max_model_len (hosted APIs).")) or None
    tokenizer = st.text_input(
        "Tokenizer folder (optional)", value=active.tokenizer or "" if same else "", key="engine_tokenizer",
        help="A local folder with the server model's tokenizer, so prompts go out as exact token ids. "
             "Not needed for SmolLM2 or when the server's model folder exists on this machine.",
    )
    timeout = st.number_input(
        "Answer timeout (seconds)", min_value=1.0, max_value=86_400.0, step=30.0,
        value=float(active.timeout or 600.0), key="engine_timeout",
        help="How long to wait for one answer from the server (a long generation); the health check waits at "
             "least 20 s, as SGLang's /health may take that long.",
    )
    check, use = st.columns(2)
    if check.button("Check health", key="engine_check"):
        st.session_state[HEALTH_KEY] = (url, *check_server(url, server_kind, served, window))
    if use.button("Use this server", type="primary", key="engine_use"):
        healthy, message = check_server(url, server_kind, served, window)  # active only once it answered
        st.session_state[HEALTH_KEY] = (url, healthy, message)
        if healthy:
            try:
                folder = str(viewer_folder(tokenizer)) if tokenizer.strip() else None
                set_engine_spec(EngineSpec(server_kind, url=checked_engine_url(url, server_kind), tokenizer=folder,
                                           timeout=None if timeout == 600.0 else float(timeout),
                                           served_model=served, context_window=window))
                st.rerun()
            except UserError as exc:
                st.session_state[HEALTH_KEY] = (url, False, f"tokenizer folder: {exc}")
    health = st.session_state.get(HEALTH_KEY)
    if health and health[0] == url:
        (st.success if health[1] else st.error)(("Healthy: " if health[1] else "Health check failed: ") + md_literal(health[2]))

# ---- status of the active engine ------------------------------------------------------------
st.subheader("Active engine status")
engine = live_engine(active)
if engine is None:
    st.write("The active engine has not started yet; it starts on first use.")
    if st.button("Start it now", key="engine_start"):
        try:
            engine = get_engine()
        except EngineError as exc:
            st.error(md_literal(viewer_message(exc, "the engine could not start")))
if engine is not None:
    try:
        info = engine.info
        stats = engine.stats()
    except EngineError as exc:
        st.error(f"The engine is not answering: {md_literal(viewer_message(exc, 'no answer'))}")
    else:
        cols = st.columns(4)
        cols[0].metric("Model", printable(info.model))
        cols[1].metric("Context window", f"{info.context_window:,} tokens")
        cols[2].metric("Prefix-cache hit rate", f"{stats.hit_rate:.1%}",
                       help="Cached / prompt tokens over all requests since the last reset (SGLang's cached_tokens).")
        cols[3].metric("Generation speed", f"{stats.tokens_per_second:.1f} tokens/s")
        st.caption(
            f"{stats.requests:,} requests · {stats.prompt_tokens:,} prompt tokens, {stats.cached_tokens:,} cached · "
            f"{stats.generated_tokens:,} generated"
            + (f" · cache holds {stats.cache_tokens_held:,} of {stats.cache_capacity_tokens:,} tokens"
               if stats.cache_capacity_tokens else "")
        )
        if info.kind in ("sglang", "openai"):
            server_rate = engine.metrics_hit_rate()
            missing = ("start SGLang with --enable-metrics" if info.kind == "sglang"
                       else "only vLLM counts prefix-cache hits")
            st.caption("Server-wide hit rate from /metrics counters since the last reset: "
                       + (f"{server_rate:.1%}" if server_rate is not None else f"n/a ({missing})"))
        flush, reset = st.columns(2)
        if flush.button("Flush the prefix cache", key="engine_flush"):
            try:
                engine.flush_cache()
                st.toast("Prefix cache flushed.")
            except EngineError as exc:
                st.error(md_literal(viewer_message(exc, "the server did not flush its cache")))
        if reset.button("Reset the counters", key="engine_reset"):
            engine.reset_stats()
            st.rerun()

# ---- retrieval --------------------------------------------------------------------------------
st.subheader("Retrieval")
retrieval = current_retrieval()
st.write(f"Documents are retrieved from the **{md_literal(retrieval.describe())}**.")
STORE, SERVER = "Embedded Chroma store", "Chroma server"
store_kind = st.radio("Document store", [STORE, SERVER], index=1 if retrieval.url else 0, horizontal=True,
                      key="retrieval_kind")
chroma_url = None
if store_kind == SERVER:
    chroma_url = st.text_input("Chroma server URL", value=retrieval.url or "http://127.0.0.1:8000",
                               key="retrieval_url", help="A `chroma run` server; documents are embedded here "
                               "with MiniLM and only vectors and text travel.")
check_col, use_col = st.columns(2)
if check_col.button("Check the store", key="retrieval_check"):
    try:
        target = check_server_url(chroma_url, "Chroma server", "http://127.0.0.1:8000") if chroma_url else None
        with st.spinner("Asking the store ..."):
            st.session_state[RETRIEVAL_KEY] = (chroma_url, retrieval_status(target))
    except UserError as exc:
        st.session_state[RETRIEVAL_KEY] = (chroma_url, {"ok": False, "error": str(exc), "collections": []})
# On a shared server the store is the operator's choice (RAGSCALE_CHROMA_URL): one viewer must not
# move every viewer's retrieval, so the page only checks it there.
if use_col.button("Retrieve from this store", key="retrieval_use", disabled=shared(),
                  help="Set by the operator (RAGSCALE_CHROMA_URL) on a shared server." if shared() else None):
    try:
        target = check_server_url(chroma_url, "Chroma server", "http://127.0.0.1:8000") if chroma_url else None
        status = retrieval_status(target)
        st.session_state[RETRIEVAL_KEY] = (chroma_url, status)
        if status["ok"]:
            use_retrieval(RetrieverSettings(url=status["url"] if target else None))
            st.rerun()
    except UserError as exc:
        st.session_state[RETRIEVAL_KEY] = (chroma_url, {"ok": False, "error": str(exc), "collections": []})
checked = st.session_state.get(RETRIEVAL_KEY)
if checked and checked[0] == chroma_url:
    status = checked[1]
    if status["ok"]:
        latency = f" in {status['latency_ms']:.0f} ms" if status.get("latency_ms") is not None else ""
        st.success(f"The store answered{latency}: {len(status['collections'])} collection(s).")
        if status["collections"]:
            st.dataframe([{"collection": printable(c["name"]), "passages": c["passages"]}
                          for c in status["collections"]], hide_index=True, width="stretch")
    else:
        st.error(f"The store did not answer: {md_literal(status['error'])}")
