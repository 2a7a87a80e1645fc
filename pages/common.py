"""Streamlit glue shared by every page: the active engine and small widgets.

Not a page itself (app.py lists pages explicitly). Logic stays in `ragscale`; this file only
keeps per-session choices and caches heavy objects across reruns.
"""

from __future__ import annotations

import streamlit as st

from ragscale.engines import EngineSpec, describe_spec, make_engine

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
    """A one-line status of the active engine on every page (never loads a model by itself)."""
    with st.sidebar:
        st.caption(f"Engine: {describe_spec(engine_spec())}")
