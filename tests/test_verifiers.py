"""Verifiers: LM-as-judge on the ScriptedEngine, retrieval grounding, and the SGLang PRM client
against a fake SGLang server on loopback."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragscale.errors import EngineError, UserError
from ragscale.search.verifiers import LMJudge, RetrievalGrounding, SGLangPRM, Trajectory, make_verifier
from tests.fakes import ByteTokenizer, ScriptedEngine
from tests.http_fakes import JSONHandler, serving
from tests.test_search_runner import fake_embed


def trajectory(engine, steps, **kw) -> Trajectory:
    prompt = engine.chat_prompt("Question: who?")
    return Trajectory(question="who?", prompt_ids=engine.encode(prompt + "".join(s + "\n" for s in steps)),
                      steps=list(steps), **kw)


def test_judge_is_p_yes_over_yes_plus_no_and_shares_the_prefix():
    scored = []

    def logprob(prompt, continuation):
        scored.append(prompt)
        good = "correct step" in prompt
        return {("Yes", True): -0.1, ("No", True): -2.5, ("Yes", False): -3.0, ("No", False): -0.2}[(continuation, good)]

    engine = ScriptedEngine(lambda *a: "", logprob=logprob)
    judge = LMJudge(engine)
    good, bad = trajectory(engine, ["a correct step"]), trajectory(engine, ["a wrong step"])
    s_good, s_bad = judge.score([good, bad])
    assert s_good == pytest.approx(1 / (1 + math.exp(-(-0.1 + 2.5))))
    assert s_bad == pytest.approx(1 / (1 + math.exp(-(-3.0 + 0.2))))
    assert s_good > 0.9 > 0.1 > s_bad
    # The judge prompt is the trajectory's own text followed by a verification turn: cache-friendly.
    assert scored[0].startswith(engine.decode(good.prompt_ids))
    assert scored[0].rstrip().endswith("<|assistant|>")
    assert "Yes or No" in scored[0][len(engine.decode(good.prompt_ids)):]


def test_judge_without_chat_template_falls_back_to_plain_text():
    class NoTemplate(ByteTokenizer):
        def apply_chat_template(self, *a, **k):
            raise ValueError("no template")

    engine = ScriptedEngine(lambda *a: "")
    engine._tok = NoTemplate()
    judge = LMJudge(engine)
    assert engine.decode(judge.suffix_ids).rstrip().endswith("Answer:")


def test_grounding_prefers_answers_supported_by_the_evidence():
    grounding = RetrievalGrounding(fake_embed)
    evidence = ["Gustave Eiffel was a French civil engineer born in Dijon."]
    supported = Trajectory("q", [], ["s"], evidence=evidence, intermediate="Gustave Eiffel was born in Dijon")
    unsupported = Trajectory("q", [], ["s"], evidence=evidence, intermediate="bananas grow on trees")
    empty = Trajectory("q", [], ["s"], evidence=evidence, intermediate="")
    nothing = Trajectory("q", [], ["s"], evidence=[], intermediate="Dijon")
    final = Trajectory("q", [], ["s"], evidence=evidence, answer="a French engineer")
    scores = grounding.score([supported, unsupported, empty, nothing, final])
    assert scores[0] > scores[1]
    assert scores[2] == 0.0 and scores[3] == 0.0
    assert 0.0 < scores[4] <= 1.0
    assert all(0.0 <= s <= 1.0 for s in scores)


# ---------------------------------------------------------------------------------------------
# A fake SGLang server: /classify for a reward model, /generate with token_ids_logprob for a PRM.
# ---------------------------------------------------------------------------------------------

TOK = ByteTokenizer()
GOOD, BAD = TOK.encode("+")[0], TOK.encode("-")[0]


class FakeSGLang(JSONHandler):
    requests: list[tuple[str, dict]] = []
    fail = False

    def do_POST(self):
        payload = self.json_body()
        FakeSGLang.requests.append((self.path, payload))
        if FakeSGLang.fail:
            return self.reply(500, {"error": "boom"})
        if self.path == "/classify":
            # A scalar reward-model logit: positive when the last step says "right".
            rows = [{"embedding": [3.0 if text.rstrip().endswith("right") else -3.0],
                     "meta_info": {"prompt_tokens": len(text)}} for text in payload["text"]]
            return self.reply(200, rows)
        if self.path == "/generate":
            ids, start = payload["input_ids"], payload["logprob_start_len"]
            assert payload["sampling_params"]["max_new_tokens"] == 0
            assert sorted(payload["token_ids_logprob"]) == sorted([GOOD, BAD])
            # the label is read at the last step tag: judge the step just before it
            good = TOK.decode(ids).rsplit(" ки", 1)[0].endswith("right")
            entries = [None] + [[[-0.1 if good else -2.0, GOOD, "+"], [-2.3 if good else -0.2, BAD, "-"]]
                                for _ in ids[start + 1:]]
            return self.reply(200, {"text": "", "meta_info": {"input_token_ids_logprobs": entries}})
        return self.reply(404, {"error": "no route"})


@pytest.fixture
def fake_server():
    FakeSGLang.requests, FakeSGLang.fail = [], False
    with serving(FakeSGLang) as url:
        yield url


def traj(steps):
    return Trajectory(question="2+2?", prompt_ids=[], steps=steps)


def test_prm_classify_scores_the_newest_step(fake_server):
    prm = SGLangPRM(fake_server, mode="classify")
    scores = prm.score([traj(["start", "this is right"]), traj(["start", "this is wrong"])])
    assert scores[0] == pytest.approx(1 / (1 + math.exp(-3.0)))
    assert scores[1] == pytest.approx(1 / (1 + math.exp(3.0)))
    path, payload = FakeSGLang.requests[-1]
    assert path == "/classify" and payload["text"][0] == "2+2?\nstart\nthis is right"


def test_prm_step_tag_reads_label_logprobs_at_the_last_tag(fake_server):
    prm = SGLangPRM(fake_server, mode="step_tag", tokenizer=TOK)
    good, bad = prm.score([traj(["one", "this is right"]), traj(["one", "this is wrong"])])
    assert good == pytest.approx(1 / (1 + math.exp(-(-0.1 + 2.3))))
    assert bad == pytest.approx(1 / (1 + math.exp(-(-2.0 + 0.2))))
    path, payload = FakeSGLang.requests[-1]
    text = TOK.decode(payload["input_ids"])
    assert path == "/generate" and text.count(" ки") == 2 and text.endswith(" ки+")
    assert payload["return_logprob"] is True


def test_prm_errors_are_engine_errors(fake_server):
    FakeSGLang.fail = True
    with pytest.raises(EngineError, match="500"):
        SGLangPRM(fake_server).score([traj(["x"])])
    with pytest.raises(EngineError, match="cannot reach the PRM server"):
        SGLangPRM("http://127.0.0.1:9", timeout=2).score([traj(["x"])])
    with pytest.raises(UserError, match="mode"):
        SGLangPRM(fake_server, mode="bogus")


def test_make_verifier_checks_its_inputs():
    engine = ScriptedEngine(lambda *a: "")
    assert make_verifier("judge", engine=engine).name == "judge"
    assert make_verifier("grounding", embed=fake_embed).name == "grounding"
    assert make_verifier("prm", prm_url="http://x").name == "prm"
    for kind, kwargs in [("judge", {}), ("grounding", {}), ("prm", {}), ("oracle", {})]:
        with pytest.raises(UserError):
            make_verifier(kind, **kwargs)
    assert isinstance(np.asarray(fake_embed(["a"])), np.ndarray)
