"""The retrieval setting every command shares: the embedded Chroma store, or a Chroma server.

Commands call ``add_retrieval_args(parser)`` and, before they build a retriever,
``retriever_settings_from_args(args)``; that also makes the setting the process default, so
code deep in a sweep or a tree search (``build_retriever(dataset)``) uses the same store
without a new parameter on every function between. Mirrors ``ragscale/engines/options.py``.

Precedence: ``--chroma-url`` > ``RAGSCALE_CHROMA_URL`` > the embedded store in the cache dir.
``--chroma-url embedded`` forces the embedded store when the variable is set.
"""

from __future__ import annotations

import argparse
import os
import threading
from dataclasses import dataclass
from urllib.parse import urlparse

from ragscale.errors import UserError

ENV_URL = "RAGSCALE_CHROMA_URL"
EMBEDDED = "embedded"


@dataclass(frozen=True)
class RetrieverSettings:
    url: str | None = None  # None: the embedded store

    @property
    def mode(self) -> str:
        return "server" if self.url else EMBEDDED

    def describe(self) -> str:
        return f"Chroma server {self.url}" if self.url else "embedded Chroma store"


def normalise_url(url: str | None) -> str | None:
    """``None`` for the embedded store, else ``http(s)://host:port`` (a clear error otherwise)."""
    if url is None or url.strip() in ("", EMBEDDED):
        return None
    text = url.strip()
    parsed = urlparse(text if "://" in text else f"http://{text}")
    try:
        port = parsed.port
    except ValueError:
        raise UserError("the Chroma URL has an invalid port") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.username or parsed.password:
        raise UserError("not a Chroma server URL (expected e.g. http://127.0.0.1:8000)")
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise UserError("a Chroma server URL is scheme://host:port, without a path, query or fragment")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{parsed.scheme}://{host}:{port or (443 if parsed.scheme == 'https' else 8000)}"


_override: RetrieverSettings | None = None
_lock = threading.Lock()


def settings_from_env() -> RetrieverSettings:
    return RetrieverSettings(url=normalise_url(os.environ.get(ENV_URL)))


def current_settings() -> RetrieverSettings:
    """The process's retrieval setting: the last one a command chose, else the environment's."""
    with _lock:
        if _override is not None:
            return _override
    return settings_from_env()


def use_settings(settings: RetrieverSettings | None) -> None:
    """Make ``settings`` the process default (``None``: back to the environment's)."""
    global _override
    with _lock:
        _override = settings


def add_retrieval_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chroma-url", default=None, metavar="URL",
                        help=f"retrieve from this Chroma server (default: ${ENV_URL}, else the embedded store; "
                             f"'{EMBEDDED}' forces the embedded store)")


def retriever_settings_from_args(args: argparse.Namespace, check: bool = True) -> RetrieverSettings:
    """The settings the flags describe, made the process default for this command.

    With ``check``, a server must answer now: a command fails in a second, not after loading a model."""
    flag = getattr(args, "chroma_url", None)
    settings = RetrieverSettings(url=normalise_url(flag)) if flag is not None else settings_from_env()
    if check and settings.url:
        from ragscale.retrieval.index import chroma_client

        chroma_client(settings.url)
    use_settings(settings)
    return settings
