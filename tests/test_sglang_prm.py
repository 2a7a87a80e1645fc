"""The PRM verifier's SGLang client: raw reward logits keep their order (issue 10, point 8)."""

from __future__ import annotations

import threading

import pytest

from ragscale.engines.server import make_server
from ragscale.errors import EngineError
from ragscale.search.verifiers import SGLangPRM, Trajectory
from tests.fakes import ScriptedEngine


class RewardModel(ScriptedEngine):
    """A reward model whose raw logit is the number at the end of the last step."""

    def __init__(self, heads: int = 1):
        super().__init__(lambda *a: "")
        self.heads = heads

    def classify(self, texts):
        rows = []
        for text in texts:
            value = float(text.rsplit(" ", 1)[-1])
            rows.append([value] if self.heads == 1 else [0.0, value])
        return rows


@pytest.fixture
def reward_server(request):
    server = make_server(RewardModel(getattr(request, "param", 1)), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def steps(*values):
    return [Trajectory(question="q", prompt_ids=[], steps=[f"step {v}"]) for v in values]


def test_raw_logits_keep_their_order_across_the_0_1_boundary(reward_server):
    # The old client passed 0.9 through as a probability and squashed 1.1 to 0.75: inverted.
    scores = SGLangPRM(reward_server).score(steps(-2.0, 0.2, 0.9, 1.1, 4.0))
    assert scores == sorted(scores) and len(set(scores)) == 5
    assert all(0.0 < s < 1.0 for s in scores)


@pytest.mark.parametrize("reward_server", [2], indirect=True)
def test_a_classifier_head_scores_with_the_good_class_probability(reward_server):
    low, high = SGLangPRM(reward_server).score(steps(-1.0, 3.0))
    assert low < 0.5 < high


def test_through_the_router_v1_classify_is_used_and_single_outputs_refused(reward_server, monkeypatch):
    prm = SGLangPRM(reward_server)
    calls = []
    original = prm._call

    def router_like(method, path, payload=None, missing_ok=False):
        calls.append(path)
        if path == "/classify":  # sglang-router has no /classify
            return None if missing_ok else original(method, "/nowhere", payload, missing_ok)
        return original(method, path, payload, missing_ok)

    monkeypatch.setattr(prm, "_call", router_like)
    with pytest.raises(EngineError, match="one output: /v1/classify turns it into probs"):
        prm.score(steps(0.5))
    assert calls == ["/classify", "/v1/models", "/v1/classify"]


@pytest.mark.parametrize("reward_server", [2], indirect=True)
def test_through_the_router_a_classifier_head_works(reward_server, monkeypatch):
    prm = SGLangPRM(reward_server)
    original = prm._call
    monkeypatch.setattr(prm, "_call", lambda m, p, payload=None, missing_ok=False:
                        None if p == "/classify" else original(m, p, payload, missing_ok))
    low, high = prm.score(steps(-1.0, 3.0))
    assert low < 0.5 < high


def test_a_generation_model_behind_the_url_is_a_clean_error():
    server = make_server(ScriptedEngine(lambda *a: ""), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(EngineError, match="HTTP 400: This model does not appear to be an embedding model"):
            SGLangPRM(f"http://127.0.0.1:{server.server_address[1]}").score(steps(1.0))
    finally:
        server.shutdown()
        server.server_close()
