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


def viewer_message(exc: Exception, generic: str) -> str:
    """One line for the viewer; the engine's own words only in local mode, the rest in the log."""
    log.warning("%s: %s", generic, exc, exc_info=not isinstance(exc, UserError))
    if isinstance(exc, UserError) and not shared():
        return str(exc).splitlines()[0][:300]
    return f"{generic} (details are in the app's log)"


def check_sglang_server(url: str) -> tuple[bool, str]:
    """(healthy, what to show): the URL must be allowed (ragscale.deploy) and answer as SGLang."""
    try:
        clean = check_engine_url(url)
    except UserError as exc:
        return False, str(exc)
    try:
        from ragscale.engines.sglang_client import SGLangEngine

        client = SGLangEngine(clean, retries=0, connect_timeout=3, timeout=10)
        try:
            client.health()
            info = client.info
        finally:
            client.close()
        return True, f"{printable(info.model)} · context window {info.context_window:,} tokens"
    except Exception as exc:  # noqa: BLE001 - whatever the server did, the viewer gets one line
        return False, viewer_message(exc, f"{clean} did not answer as an SGLang server")
