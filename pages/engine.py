"""Engine: choose the embedded CPU engine or an SGLang server, check it, watch its prefix cache.

Thin: widgets only; the engines are ragscale.engines. The choice is stored with
pages.common.set_engine_spec, so every page then runs on it.
"""

from __future__ import annotations

import streamlit as st

from pages.common import engine_spec, get_engine, set_engine_spec
from ragscale.engines import EngineSpec, describe_spec, live_engine
from ragscale.errors import EngineError

EMBEDDED, SGLANG = "Embedded CPU engine (SmolLM2-135M-Instruct)", "SGLang server or sglang-router"
HEALTH_KEY = "engine_page.health"  # (url, ok, message) of the last health check

st.title("Engine")
st.caption(
    "Every experiment runs on one engine interface. The embedded engine runs SmolLM2-135M on this "
    "machine's CPU with a radix prefix cache (SGLang semantics); an SGLang server runs a real model "
    "on GPUs. Token counts, cached tokens and hit rates mean the same on both."
)

active = engine_spec()
st.info(f"Active engine: **{describe_spec(active)}**")

# ---- choose ---------------------------------------------------------------------------------
kind = st.radio("Engine", [EMBEDDED, SGLANG], index=0 if active.kind == "embedded" else 1, horizontal=True)
if kind == EMBEDDED:
    prefix_cache = st.checkbox(
        "Radix prefix cache", value=active.prefix_cache if active.kind == "embedded" else True,
        help="Off is SGLang's --disable-radix-cache: every prompt is prefilled from scratch (for A/B runs).",
    )
    chosen = EngineSpec("embedded", prefix_cache=prefix_cache)
    if st.button("Use the embedded engine", type="primary", disabled=chosen == active):
        set_engine_spec(chosen)
        st.rerun()
else:
    url = st.text_input("Server URL", value=active.url or "http://127.0.0.1:30000",
                        help="One `python -m sglang.launch_server` (or `ragscale serve embedded`), or sglang-router.")
    tokenizer = st.text_input(
        "Tokenizer folder (optional)", value=active.tokenizer or "",
        help="A local folder with the server model's tokenizer, so prompts go out as exact token ids. "
             "Not needed for SmolLM2 or when the server's tokenizer path exists on this machine.",
    )
    timeout = st.number_input(
        "Answer timeout (seconds)", min_value=1.0, max_value=86_400.0, step=30.0,
        value=float(active.timeout or 600.0),
        help="How long to wait for one answer from the server (a long generation); the health check waits at "
             "least 20 s, as SGLang's /health may take that long.",
    )
    check, use = st.columns(2)
    if check.button("Check health"):
        try:
            from ragscale.engines.sglang_client import SGLangEngine

            client = SGLangEngine(url, retries=0, connect_timeout=3, timeout=10)
            client.health()
            info = client.info
            st.session_state[HEALTH_KEY] = (url, True, f"{info.model} · context window {info.context_window:,} tokens")
        except EngineError as exc:
            st.session_state[HEALTH_KEY] = (url, False, str(exc))
    if use.button("Use this server", type="primary"):
        try:
            set_engine_spec(EngineSpec("sglang", url=url.strip(), tokenizer=tokenizer.strip() or None,
                                       timeout=None if timeout == 600.0 else float(timeout)))
            st.rerun()
        except ValueError as exc:
            st.error(str(exc))
    health = st.session_state.get(HEALTH_KEY)
    if health and health[0] == url:
        (st.success if health[1] else st.error)(("Healthy: " if health[1] else "Health check failed: ") + health[2])

# ---- status of the active engine ------------------------------------------------------------
st.subheader("Active engine status")
engine = live_engine(active)
if engine is None:
    st.write("The active engine has not started yet; it starts on first use.")
    if st.button("Start it now"):
        try:
            engine = get_engine()
        except EngineError as exc:
            st.error(str(exc))
if engine is not None:
    try:
        info = engine.info
        stats = engine.stats()
    except EngineError as exc:
        st.error(f"The engine is not answering: {exc}")
    else:
        cols = st.columns(4)
        cols[0].metric("Model", info.model)
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
        if info.kind == "sglang":
            server_rate = engine.metrics_hit_rate()
            st.caption("Server-wide hit rate from /metrics counters since the last reset: "
                       + (f"{server_rate:.1%}" if server_rate is not None else "n/a (start SGLang with --enable-metrics)"))
        flush, reset = st.columns(2)
        if flush.button("Flush the prefix cache"):
            try:
                engine.flush_cache()
                st.toast("Prefix cache flushed.")
            except EngineError as exc:
                st.error(str(exc))
        if reset.button("Reset the counters"):
            engine.reset_stats()
            st.rerun()
