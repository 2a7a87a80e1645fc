"""What the Engine page's Retrieval section shows: which store, whether it answers, how big it is.

Never echoes what a server sent: a URL typed into a page is hostile, so errors name the kind
of failure only. Checking that the URL is allowed at all is the deployment allow-list's job,
before this is called.
"""

from __future__ import annotations

import time

from ragscale.errors import UserError
from ragscale.retrieval import manifest
from ragscale.retrieval.options import normalise_url


def retrieval_status(url: str | None = None, collection: str | None = None, path: str | None = None) -> dict:
    """``{"mode", "url", "ok", "error", "latency_ms", "collections": [{"name", "passages"}], "collection"}``.

    ``url`` None or "embedded": the embedded store (``path``, default the cache dir). ``collection``:
    also report that collection's size (``None`` in ``"collection"``
    when it is absent; in the embedded store, the size its manifest records, ``None`` if unfinished).
    Never raises for an unreachable or misbehaving server: ``ok`` is False and ``error`` one line.
    """
    from ragscale.retrieval.index import chroma_client, store_path

    try:
        url = normalise_url(url)
    except UserError as exc:
        return {"mode": "server", "url": None, "ok": False, "error": str(exc), "latency_ms": None,
                "collections": [], "collection": None}
    status = {"mode": "server" if url else "embedded", "url": url or str(store_path(path)), "ok": False,
              "error": None, "latency_ms": None, "collections": [], "collection": None}
    started = time.perf_counter()
    try:
        if url:
            client = chroma_client(url)
            names = sorted(c if isinstance(c, str) else c.name for c in client.list_collections())
            count = lambda name: int(client.get_collection(name, embedding_function=None).count())  # noqa: E731
        else:
            # Read the embedded store without chromadb: an unverified HNSW file can crash it.
            store = store_path(path)
            names = manifest.collection_names(store)
            count = lambda name: (manifest.read_manifest(store, name) or {}).get("passages")  # noqa: E731
        status["collections"] = [{"name": name, "passages": count(name)} for name in names[:50]]
        if collection:
            status["collection"] = {"name": collection, "passages": count(collection)} if collection in names else None
    except UserError as exc:
        status["error"] = str(exc)
        return status
    except Exception as exc:  # a server that answers but is not Chroma, or a broken store
        status["error"] = f"the Chroma {'server' if url else 'store'} did not answer as expected ({type(exc).__name__})"
        return status
    status["ok"] = True
    status["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return status
