"""The embedded server speaks OpenAI: /v1/completions, /v1/chat/completions and /v1/models,
checked with the official ``openai`` package's own client and types (strict validation of the raw
JSON too, so a field of the wrong type fails here and not in a user's code)."""

from __future__ import annotations

import threading

import openai
import pytest
import requests
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion

from ragscale.engines.server import make_server
from tests.fakes import ScriptedEngine


def reply(prompt, params, i, rng):
    return f"answer {i}. More text after the stop"


@pytest.fixture(scope="module")
def server():
    engine = ScriptedEngine(reply, context_window=512)
    srv = make_server(engine, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield engine, f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server[1], api_key="not-needed", max_retries=0)


def test_models_list_is_openai_shaped(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == ["scripted-bytes"]
    raw = requests.get(server[1] + "/models", timeout=10).json()
    Model.model_validate(raw["data"][0], strict=True)
    assert raw["data"][0]["max_model_len"] == 512  # what ragscale's client reads as the window


def test_completion_with_n_stop_logprobs_and_cached_tokens(client, server):
    prompt = "The shared prefix of two calls. Question one?"
    first = client.completions.create(model="scripted-bytes", prompt=prompt, max_tokens=30, n=2, stop=["."],
                                      logprobs=0, temperature=0.7)
    assert isinstance(first, Completion) and [c.index for c in first.choices] == [0, 1]
    assert first.choices[0].text == "answer 0" and first.choices[0].finish_reason == "stop"
    assert len(first.choices[0].logprobs.token_logprobs) == len(first.choices[0].logprobs.tokens) > 0
    assert first.usage.prompt_tokens == len(prompt.encode())  # counted once for n = 2
    # The same prompt again: the prefix cache answers all but the last token.
    again = client.completions.create(model="scripted-bytes", prompt=prompt, max_tokens=5)
    assert again.usage.prompt_tokens_details.cached_tokens == len(prompt.encode()) - 1
    assert again.choices[0].finish_reason == "length"
    assert again.usage.total_tokens == again.usage.prompt_tokens + again.usage.completion_tokens


def test_token_id_prompts_and_vllm_token_ids(server):
    url = server[1]
    raw = requests.post(url + "/completions", json={"prompt": [[72, 105], [79, 107]], "max_tokens": 3,
                                                    "return_token_ids": True, "temperature": 0}, timeout=10).json()
    answer = Completion.model_validate(raw, strict=True)
    assert [c.text for c in answer.choices] == ["ans", "ans"]
    assert raw["choices"][1]["prompt_token_ids"] == [79, 107] and raw["choices"][1]["token_ids"] == [97, 110, 115]
    assert answer.usage.prompt_tokens == 4  # both prompts


def test_echo_scores_the_prompt(client):
    scored = client.completions.create(model="scripted-bytes", prompt=[10, 20, 30], max_tokens=0, echo=True,
                                       logprobs=0)
    values = scored.choices[0].logprobs.token_logprobs
    assert values[0] is None and len(values) == 3 and all(isinstance(v, float) for v in values[1:])


def test_chat_completion(client, server):
    answer = client.chat.completions.create(model="scripted-bytes", max_tokens=6, logprobs=True,
                                            messages=[{"role": "system", "content": "Be brief."},
                                                      {"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    assert isinstance(answer, ChatCompletion)
    assert answer.choices[0].message.role == "assistant" and answer.choices[0].message.content == "answer"
    assert [t.token for t in answer.choices[0].logprobs.content] == list("answer")
    assert answer.usage.completion_tokens == 6
    raw = requests.post(server[1] + "/chat/completions", timeout=10,
                        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}).json()
    ChatCompletion.model_validate(raw, strict=True)


@pytest.mark.parametrize("extra, error, words", [
    ({"stream": True}, openai.BadRequestError, "stream"),
    ({"suffix": "!"}, openai.BadRequestError, "suffix"),
    ({"model": "gpt-4o"}, openai.NotFoundError, "does not exist"),
    ({"logprobs": 3}, openai.BadRequestError, "alternative tokens"),
    ({"frequency_penalty": 0.5}, openai.BadRequestError, "frequency_penalty"),
    ({"max_tokens": 600}, openai.BadRequestError, "context length"),
])
def test_what_it_cannot_do_is_refused_not_ignored(client, extra, error, words):
    kwargs = {"model": "scripted-bytes", "prompt": "x", "max_tokens": 2, **extra}
    with pytest.raises(error) as caught:
        client.completions.create(**kwargs)
    assert words in str(caught.value)


def test_chat_refuses_tools(client):
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(model="scripted-bytes", messages=[{"role": "user", "content": "Hi"}],
                                       tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
