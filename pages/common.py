"""Streamlit glue shared by every page: the active engine and small widgets.

Not a page itself (app.py lists pages explicitly). Logic stays in `ragscale`; this file only
keeps per-session choices and caches heavy objects across reruns.
"""

from __future__ import annotations

import streamlit as st

from ragscale.engines import EngineSpec, describe_spec, make_engine


def _route_through_app() -> None:
    """Make a deep link on a fresh server run through app.py like every other request.

    While a ``pages/`` folder exists, Streamlit serves the very first request the legacy way
    (the page file alone, with an auto-generated menu) until app.py's ``st.navigation`` has run
    once. A shared link to /explorer on a freshly started server would then lose the app's
    navigation and layout. Switching the legacy flag off and rerunning sends this same URL
    through app.py (both routes hash the same URL path, so the page is kept).
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_route_through_app()  # every page imports this module first

# Plain session keys (not widget keys), so the choice survives page switches.
ENGINE_SPEC_KEY = "ragscale.engine_spec"


def engine_spec() -> EngineSpec:
    if ENGINE_SPEC_KEY not in st.session_state:
        st.session_state[ENGINE_SPEC_KEY] = EngineSpec()
    return st.session_state[ENGINE_SPEC_KEY]


def set_engine_spec(spec: EngineSpec) -> None:
    st.session_state[ENGINE_SPEC_KEY] = spec


@st.cache_resource(show_spinner="Starting the inference engine ...")
def _engine_for(spec: EngineSpec):
    # One engine per spec per server process: the embedded model loads once and its prefix
    # cache is shared by every tab, as a server's would be.
    return make_engine(spec)


def get_engine():
    return _engine_for(engine_spec())


def engine_sidebar() -> None:
    """Status of the active engine on every page (never loads a model or calls a server by itself)."""
    from ragscale.engines import live_engine

    spec = engine_spec()
    with st.sidebar:
        st.caption(f"Engine: {describe_spec(spec)}")
        engine = live_engine(spec)
        if engine is None:
            st.caption("Not started yet: it starts on first use (or on the Engine page).")
            return
        # An SGLang client fetches its info lazily; show it only once known.
        info = engine.known_info if hasattr(engine, "known_info") else engine.info
        stats = engine.stats()
        if info is not None:
            st.caption(f"Model: {info.model} · context window {info.context_window:,} tokens")
        st.caption(
            f"Prefix-cache hit rate {stats.hit_rate:.0%} ({stats.cached_tokens:,} of {stats.prompt_tokens:,} "
            f"prompt tokens) · {stats.tokens_per_second:.1f} tokens/s over {stats.requests:,} requests"
        )
