"""Streamlit glue shared by every page: the active engine, its warm-up and its sidebar status.

Not a page itself (app.py lists pages explicitly). Logic stays in `ragscale`; this file only
keeps per-session choices. The engine itself is shared by the whole process
(``ragscale.explorer.live``), so the one the warm-up loaded is the one every page uses.
"""

from __future__ import annotations

import streamlit as st

from ragscale.engines import EngineSpec, describe_spec, live_engine
from ragscale.explorer import live
from ragscale.formatting import md_literal


def _route_through_app() -> None:
    """Send a deep link on a freshly started server through app.py like every other request.

    No supported way exists to keep a folder named ``pages/`` beside ``st.navigation``: Streamlit
    decides "legacy pages-directory app" from that folder's existence alone (``PagesManager``) and
    documents that only a first ``st.navigation`` call, in any session, ends it ("As soon as any
    session of your app executes the st.navigation command, your app will ignore the pages/
    directory", st.navigation's reference). Until then a shared /explorer link would run the page
    file alone, without app.py's navigation and layout; so the first such request clears the
    flag st.navigation would have cleared, and reruns the same URL through app.py.
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


def get_engine():
    """The active engine, built once per process (waits for a warm-up that is loading it)."""
    return live.shared_engine(engine_spec())


def warm_up() -> None:
    """Load the active engine, the demo index and MiniLM in the background (never blocks)."""
    live.warm_up(engine_spec())


def engine_sidebar() -> None:
    """Status of the active engine on every page; refreshed every 2 s while it warms up."""
    with st.sidebar:
        if live.warm_status(engine_spec()).state == "warming":
            _live_status()
        else:
            _status()


@st.fragment(run_every=2)
def _live_status() -> None:
    _status()


def _status() -> None:
    spec = engine_spec()
    status = live.warm_status(spec)
    st.caption(f"Engine: {md_literal(describe_spec(spec))}")
    engine = live.started_engine(spec) or live_engine(spec)
    if status.state == "warming":
        st.caption(f":material/hourglass_top: Warming up: {md_literal(status.message)} ({status.seconds or 0:.0f} s)")
    elif status.state == "failed":
        st.caption(f":material/error: Warm-up failed: {md_literal(status.message[:200])}")
    if engine is None:
        if status.state == "cold":
            st.caption("Not started yet: it starts on first use (or on the Engine page).")
        return
    if status.state == "ready" and status.seconds is not None:
        st.caption(f":material/check_circle: Ready (warmed up in {status.seconds:.0f} s)")
    # An SGLang client fetches its info lazily; show it only once known.
    info = engine.known_info if hasattr(engine, "known_info") else engine.info
    stats = engine.stats()
    if info is not None:
        st.caption(f"Model: {md_literal(info.model)} · context window {info.context_window:,} tokens")
    st.caption(
        f"Prefix-cache hit rate {stats.hit_rate:.0%} ({stats.cached_tokens:,} of {stats.prompt_tokens:,} "
        f"prompt tokens) · {stats.tokens_per_second:.1f} tokens/s over {stats.requests:,} requests"
        + (f" · {engine.threads_note()}" if hasattr(engine, "threads_note") else "")
    )
