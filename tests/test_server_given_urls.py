"""URLs and paths the client learns from a server pass the checks a typed one does (issue #24, item 1):
a router's worker list and a server's tokenizer_path. Nothing here leaves 127.0.0.1: every request
to another host is recorded and refused before a socket opens."""

from __future__ import annotations

import pytest
import requests
from requests.adapters import HTTPAdapter

from ragscale.engines.sglang_client import DEFAULT_CONTEXT_WINDOW
from tests.test_sglang_client_protocol import MODEL_INFO_0_5, MODELS_0_5, SERVER_INFO_0_5, canned, client, ok  # noqa: F401

ROUTER_INFO = {"router_manager": True, "routers_count": 1, "workers_count": 1}


@pytest.fixture
def contacted(monkeypatch):
    """Every URL the client asks for; hosts other than 127.0.0.1 are refused without a connection."""
    urls: list[str] = []
    real_send = HTTPAdapter.send

    def send(self, request, **kwargs):
        urls.append(request.url)
        if not request.url.startswith("http://127.0.0.1:"):
            raise requests.ConnectionError("test: only loopback")
        return real_send(self, request, **kwargs)

    monkeypatch.setattr(HTTPAdapter, "send", send)
    return urls


def _router(routes, worker_url: str):
    """sglang-router 0.3's answers (old endpoint names only), listing ``worker_url``."""
    routes.update({"/get_model_info": ok(MODEL_INFO_0_5), "/get_server_info": ok(ROUTER_INFO),
                   "/workers": ok({"workers": [{"url": worker_url, "is_healthy": True}], "total": 1})})


@pytest.mark.parametrize("worker", [
    "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
    "http://169.254.169.254",
    "http://[fe80::1]:30000",
    "http://[::ffff:169.254.169.254]:80",
])
def test_a_link_local_worker_is_never_contacted_in_local_mode(canned, contacted, worker):
    routes, url = canned
    _router(routes, worker)
    assert client(url).info.context_window == DEFAULT_CONTEXT_WINDOW  # the worker's 31337 never comes back
    assert all(u.startswith(url) for u in contacted), contacted


@pytest.mark.parametrize("path", ["/latest/meta-data", "/x?y=1", "/proxy/"])
def test_a_worker_url_with_the_servers_own_path_or_query_is_never_followed(canned, contacted, path):
    routes, url = canned
    _router(routes, url + path)
    assert client(url).info.context_window == DEFAULT_CONTEXT_WINDOW
    assert [u for u in contacted if u.startswith(url + path.split("?")[0].rstrip("/"))] == []


def test_in_shared_mode_only_loopback_or_allowed_workers_are_followed(canned, contacted, shared_mode, monkeypatch):
    routes, url = canned
    _router(routes, "http://10.20.30.40:30000")
    assert client(url).info.context_window == DEFAULT_CONTEXT_WINDOW
    assert not any("10.20.30.40" in u for u in contacted)
    # Listed by the operator: followed (and refused by this test's transport, so the window falls back).
    monkeypatch.setenv("RAGSCALE_ALLOWED_URLS", "http://10.20.30.40:30000")
    contacted.clear()
    client(url).info
    assert any(u.startswith("http://10.20.30.40:30000/") for u in contacted)


def test_a_loopback_worker_is_followed_once_and_never_in_a_loop(canned, contacted):
    routes, url = canned
    _router(routes, url)
    listings = []

    def workers(_handler):  # answers 5 times at most, so the old code's loop ends
        listings.append(1)
        return ok({"workers": [{"url": url, "is_healthy": True}], "total": 1}) if len(listings) <= 5 else (404, b"", "text/plain")

    routes["/workers"] = workers
    # The worker is the router itself: its server info says "router" again. One hop only.
    routes["/server_info"] = ok({**ROUTER_INFO, "context_length": 16384})
    assert client(url).info.context_window == 16384
    assert len(listings) == 1


def test_a_tokenizer_path_outside_the_data_roots_is_not_loaded_in_shared_mode(canned, shared_mode, tmp_path, monkeypatch):
    routes, url = canned
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    loaded = []
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", staticmethod(lambda path, **kw: loaded.append(str(path))))
    routes.update({"/model_info": ok({**MODEL_INFO_0_5, "tokenizer_path": str(outside), "model_path": str(outside)})})
    from ragscale.engines.sglang_client import SGLangEngine
    from ragscale.errors import EngineError

    with pytest.raises(EngineError, match="give the client its tokenizer"):
        SGLangEngine(url, retries=0).tokenizer
    assert loaded == []
    # The same folder under a data root is loaded.
    _, data = shared_mode
    inside = data / "tok"
    inside.mkdir()
    routes.update({"/model_info": ok({**MODEL_INFO_0_5, "tokenizer_path": str(inside)})})
    SGLangEngine(url, retries=0).tokenizer
    assert loaded == [str(inside.resolve())]
