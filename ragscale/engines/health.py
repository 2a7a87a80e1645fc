"""What the Engine page shows about a server or an engine failure: one line, nothing foreign.

Kept out of the page so the rule lives in one place: a viewer sees the model name and context
window of a healthy server, the client's one-line error in local mode, and a fixed line in
shared mode (the details go to the app's log), so nothing a foreign server sends reaches them.
"""

from __future__ import annotations

import logging

from ragscale.deploy import check_engine_url, printable, shared
from ragscale.errors import UserError

log = logging.getLogger(__name__)
SERVER_NAMES = {"sglang": "an SGLang server", "openai": "an OpenAI-compatible server"}


def viewer_message(exc: Exception, generic: str) -> str:
    """One line for the viewer; the engine's own words only in local mode, the rest in the log."""
    log.warning("%s: %s", generic, exc, exc_info=not isinstance(exc, UserError))
    if isinstance(exc, UserError) and not shared():
        return str(exc).splitlines()[0][:300]
    return f"{generic} (details are in the app's log)"


def check_openai_url(url: str) -> str:
    """``check_engine_url`` for an OpenAI base URL: ``http://127.0.0.1:8000/v1`` is the loopback
    server ``http://127.0.0.1:8000`` (shared mode allows loopback without a path), and an
    operator may list a provider with or without its ``/v1``."""
    try:
        return check_engine_url(url)
    except UserError:
        text = (url or "").strip().rstrip("/")
        if not text.endswith("/v1"):
            raise
        check_engine_url(text[: -len("/v1")])
        return text


def checked_engine_url(url: str, kind: str) -> str:
    """The engine URL cleaned, or UserError when a viewer may not use it (per engine kind)."""
    return check_openai_url(url) if kind == "openai" else check_engine_url(url)


def check_server(url: str, kind: str = "sglang", served_model: str | None = None,
                 context_window: int | None = None) -> tuple[bool, str]:
    """(healthy, what to show): the URL must be allowed (ragscale.deploy) and answer as ``kind``."""
    try:
        clean = checked_engine_url(url, kind)
    except UserError as exc:
        return False, str(exc)
    try:
        if kind == "openai":
            from ragscale.engines.openai_client import OpenAIEngine

            client = OpenAIEngine(clean, model=served_model, context_window=context_window, retries=0,
                                  connect_timeout=3, timeout=20)
        else:
            from ragscale.engines.sglang_client import SGLangEngine

            client = SGLangEngine(clean, retries=0, connect_timeout=3, timeout=10)
        try:
            client.health()
            info = client.info
        finally:
            client.close()
        return True, f"{printable(info.model)} · context window {info.context_window:,} tokens"
    except Exception as exc:  # noqa: BLE001 - whatever the server did, the viewer gets one line
        return False, viewer_message(exc, f"{clean} did not answer as {SERVER_NAMES.get(kind, kind)}")


def check_sglang_server(url: str) -> tuple[bool, str]:
    return check_server(url, "sglang")
