"""Contract tests against SGLang's own code (the pinned ``sglang`` wheel's api_types.py).

- every /generate body the client and the PRM verifier send passes SGLang's GenerateRequest;
- every /generate answer of the loopback server decodes as SGLang's GenerateResponse;
- a hypothesis fuzz of request parsing: the loopback server accepts or refuses a body's schema
  exactly when SGLang's contract does, with the same message, and never answers 500.
A protocol change in a future SGLang then fails here, not in a user's run.
"""

from __future__ import annotations

import json
import threading

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragscale.engines.base import SamplingParams
from ragscale.engines.server import make_server
from ragscale.engines.sglang_client import SGLangEngine
from ragscale.engines.sglang_protocol import ProtocolError, check_contract
from ragscale.search.verifiers import SGLangPRM, Trajectory
from tests.fakes import ByteTokenizer, ScriptedEngine
from tests.sglang_contract import PINNED, api_types, check_request, check_response, sglang_version


def reply(prompt, params, i, rng):
    return f"answer {rng.randrange(9)} to {prompt[-12:]}\n\nmore"


class Recording(ScriptedEngine):
    def classify(self, texts):
        return [[0.5, 1.5] for _ in texts]

    def generate_seeded(self, prompt_ids, params, seeds):
        return self.generate(prompt_ids, params)


@pytest.fixture
def recorded():
    """A loopback server that keeps every /generate body it was sent and every answer it gave."""
    engine = Recording(reply, logprob=lambda p, c: -1.0)
    server = make_server(engine, "127.0.0.1", 0)
    service = server.service
    bodies, answers = [], []
    original = service.generate

    def keep(body):
        bodies.append(body)
        answer = original(body)
        answers.append(answer)
        return answer

    service.generate = keep
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies, answers
    server.shutdown()
    server.server_close()


def test_the_pinned_sglang_is_the_one_this_code_speaks():
    assert sglang_version() == PINNED
    assert hasattr(api_types(), "GenerateRequest") and hasattr(api_types(), "GenerateResponse")


def test_every_body_the_client_and_prm_send_passes_sglangs_contract_and_every_answer_decodes(recorded):
    url, bodies, answers = recorded
    client = SGLangEngine(url, tokenizer=ByteTokenizer(), retries=0)
    client.generate(["one prompt"], SamplingParams(max_new_tokens=4))
    client.generate(["a", "b"], SamplingParams(max_new_tokens=3, n=2, temperature=0.7, seed=5, stop=("\n",),
                                               return_logprobs=True))
    client.generate([[104, 105], [106]], SamplingParams(max_new_tokens=2, temperature=0.0, n=3))
    client.score("Question: 2+2? Answer:", [" 4", " five"])
    prm = SGLangPRM(url, mode="step_tag", tokenizer=ByteTokenizer(), step_tag="#", good="+", bad="-")
    prm.score([Trajectory(question="q", prompt_ids=[], steps=["one", "two"])])
    assert len(bodies) >= 5
    for body in bodies:
        check_request(body)
        sampling = body["sampling_params"]
        assert isinstance(sampling, dict), "sglang-router accepts one sampling_params object, never a list"
    for answer in answers:
        check_response(answer)


def test_the_router_fields_and_a_list_of_sampling_params_are_valid_sglang():
    check_request({"input_ids": [[1, 2]], "sampling_params": [{"max_new_tokens": 1}], "model": "m",
                   "background": False, "log_metrics": True, "return_bytes": False})
    module = api_types()
    with pytest.raises(module.JsonContractError, match='invalid type: string "8", expected i64'):
        check_request({"input_ids": [1], "sampling_params": {"max_new_tokens": "8"}})


# ---- fuzz: our parser against SGLang's -------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 70000), st.floats(allow_nan=False, width=32),
                    st.text(max_size=4))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=3), inner, max_size=2)),
                      max_leaves=6)
sampling_keys = st.sampled_from(["max_new_tokens", "temperature", "top_p", "top_k", "stop", "stop_token_ids", "n",
                                 "sampling_seed", "no_stop_trim", "skip_special_tokens", "ignore_eos", "min_p",
                                 "logit_bias", "choice", "bogus_key"])
sampling = st.dictionaries(sampling_keys, values, max_size=3)
token_lists = st.lists(st.integers(0, 255), min_size=1, max_size=5)
request_values = {
    "input_ids": st.one_of(token_lists, st.lists(token_lists, min_size=1, max_size=3), values),
    "text": st.one_of(st.text(min_size=1, max_size=8), st.lists(st.text(min_size=1, max_size=5), max_size=3), values),
    "sampling_params": st.one_of(sampling, st.lists(sampling, max_size=3), values),
    "return_logprob": st.one_of(st.booleans(), values), "logprob_start_len": st.one_of(st.integers(-1, 5), values),
    "rid": st.one_of(st.text(max_size=4), values), "stream": st.one_of(st.just(False), values),
    "priority": values, "custom_labels": values, "routing_key": values, "top_logprobs_num": values,
    "model": values, "log_metrics": values, "unknown_field": values,
}
bodies = st.one_of(
    st.fixed_dictionaries({}, optional=request_values),
    values,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_fuzz_schema_check_agrees_with_sglang(body):
    module = api_types()
    try:
        module.GenerateRequest.from_json_value(body)
        theirs = None
    except module.JsonContractError as exc:
        theirs = str(exc)
    try:
        check_contract(body)
        ours = None
    except ProtocolError as exc:
        assert exc.status == 400 and exc.shape == "schema"
        ours = exc.message
    assert ours == theirs


@pytest.fixture(scope="module")
def fuzz_server():
    server = make_server(ScriptedEngine(reply), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(bodies)
def test_fuzz_the_server_answers_200_or_a_clean_400_never_500(fuzz_server, body):
    # Keep generations tiny: the point is parsing, not decoding.
    if isinstance(body, dict) and isinstance(body.get("sampling_params"), dict):
        body["sampling_params"].setdefault("max_new_tokens", 2)
    response = requests.post(fuzz_server + "/generate", data=json.dumps(body), timeout=30)
    assert response.status_code in (200, 400), response.text
    answer = response.json()
    if response.status_code == 400:
        shapes = (isinstance(answer.get("error"), str), isinstance(answer.get("error"), dict),
                  answer.get("object") == "error")
        assert sum(shapes) == 1 and "Traceback" not in response.text
    else:
        check_response(answer)
