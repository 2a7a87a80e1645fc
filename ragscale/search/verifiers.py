"""Process verifiers: a score in [0, 1] for the newest step of each trajectory.

One interface, three implementations:
- ``LMJudge``: the generator itself as judge, P("Yes") / (P("Yes") + P("No")) after a short
  verification turn appended to the trajectory's own token ids, so the judge prompt shares the
  whole trajectory prefix and the prefix cache serves it;
- ``RetrievalGrounding``: for QA steps, how close the intermediate answer is to the evidence it
  was retrieved with (cosine similarity of sentence embeddings) — no model call at all;
- ``SGLangPRM``: a process reward model served by SGLang, either a reward model launched with
  ``--is-embedding`` (``/classify``) or a causal-LM PRM read at its step-tag positions
  (``/generate`` with ``max_new_tokens: 0`` and ``token_ids_logprob``).

No process reward model ships in a PyPI package, which is why the first two exist: they run on
the laptop with nothing but the generator and MiniLM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from ragscale.engines.base import Engine
from ragscale.errors import EngineError, UserError

VERIFIERS = ("judge", "grounding", "prm")


@dataclass
class Trajectory:
    """What a verifier sees of one candidate: the path from the root, newest step last."""

    question: str
    prompt_ids: list[int]  # root prompt + every step on the path, as the engine saw them
    steps: list[str]  # text of each step on the path
    evidence: list[str] = field(default_factory=list)  # documents retrieved in the newest step
    intermediate: str | None = None  # QA: the newest step's intermediate answer
    answer: str | None = None  # set when the newest step states the final answer


class Verifier(Protocol):
    name: str

    def score(self, trajectories: Sequence[Trajectory]) -> list[float]:
        """One score in [0, 1] per trajectory, for its newest step."""


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# --------------------------------------------------------------------------------------------
# LM-as-judge
# --------------------------------------------------------------------------------------------

JUDGE_QUESTION = (
    "Check the reasoning above. Is its last step correct and does it help answer the question? "
    "Reply with Yes or No."
)


class LMJudge:
    """log P("Yes") against log P("No") after a verification turn that extends the trajectory."""

    name = "judge"

    def __init__(self, engine: Engine, question: str = JUDGE_QUESTION, yes: str = "Yes", no: str = "No"):
        self.engine = engine
        self.yes, self.no = yes, no
        self.suffix_ids = engine.encode(self._turn_suffix(engine, question))

    @staticmethod
    def _turn_suffix(engine: Engine, question: str) -> str:
        """The text that closes the assistant's turn, asks ``question`` and opens the reply.

        Taken from the model's own chat template so that it is exactly what the model was
        trained on; a model without a template gets a plain-text question.
        """
        mark_user, mark_reply = "\x1eUSER\x1e", "\x1eREPLY\x1e"
        try:
            text = engine.tokenizer.apply_chat_template(
                [{"role": "user", "content": mark_user}, {"role": "assistant", "content": mark_reply},
                 {"role": "user", "content": question}],
                tokenize=False, add_generation_prompt=True,
            )
        except Exception:  # noqa: BLE001 - base models have no template; any failure means "none"
            return f"\n\n{question}\nAnswer:"
        if not isinstance(text, str) or mark_reply not in text:
            return f"\n\n{question}\nAnswer:"
        return text[text.index(mark_reply) + len(mark_reply):]

    def score(self, trajectories: Sequence[Trajectory]) -> list[float]:
        scores = []
        for t in trajectories:
            # Token ids, not text: the judge prompt is the trajectory's cached prefix + a suffix.
            yes_lp, no_lp = (sum(lps) for lps in self.engine.score(list(t.prompt_ids) + self.suffix_ids,
                                                                   [self.yes, self.no]))
            scores.append(_sigmoid(yes_lp - no_lp))  # = P(Yes) / (P(Yes) + P(No))
        return scores


# --------------------------------------------------------------------------------------------
# Retrieval grounding
# --------------------------------------------------------------------------------------------

Embed = Callable[[list[str]], np.ndarray]  # texts -> L2-normalised rows


class RetrievalGrounding:
    """Cosine similarity of the newest intermediate (or final) answer to the evidence behind it.

    A QA step retrieves documents for its sub-query and answers from them; an answer that no
    retrieved document supports scores low. A final-answer step is compared with every document
    the trajectory retrieved (``evidence`` of a finishing step). Similarity is clipped to [0, 1].
    """

    name = "grounding"

    def __init__(self, embed: Embed):
        self.embed = embed

    def score(self, trajectories: Sequence[Trajectory]) -> list[float]:
        claims = [(t.intermediate if t.answer is None else t.answer) or "" for t in trajectories]
        # One embedding call for every claim and every document of the batch.
        docs = sorted({d for t in trajectories for d in t.evidence})
        texts = [c for c in claims] + docs
        if not texts:
            return []
        vectors = np.asarray(self.embed(texts), dtype=float)
        claim_vecs, doc_vecs = vectors[: len(claims)], vectors[len(claims):]
        row = {d: i for i, d in enumerate(docs)}
        scores = []
        for t, claim, vec in zip(trajectories, claims, claim_vecs):
            if not claim.strip() or not t.evidence:
                scores.append(0.0)  # nothing claimed, or nothing to be grounded in
                continue
            sims = doc_vecs[[row[d] for d in t.evidence]] @ vec
            scores.append(float(np.clip(sims.max(), 0.0, 1.0)))
        return scores


# --------------------------------------------------------------------------------------------
# A process reward model on SGLang
# --------------------------------------------------------------------------------------------


class SGLangPRM:
    """HTTP client of a PRM served by SGLang.

    mode="classify": a reward model launched with ``--is-embedding``; ``POST /classify`` with the
    formatted trajectories; the reward is the last value of each returned ``embedding``, squashed
    by a sigmoid when it is a logit (outside [0, 1]).

    mode="step_tag": a causal-LM PRM (Math-Shepherd style) that marks each step with a tag token
    and predicts a good/bad token there; ``POST /generate`` with ``max_new_tokens: 0``,
    ``return_logprob`` and ``token_ids_logprob`` = [good, bad]; the newest step's score is
    softmax(good, bad) at the last tag position.
    """

    name = "prm"

    def __init__(self, url: str, mode: str = "classify", step_tag: str = " ки", good: str = "+", bad: str = "-",
                 template: str = "{question}\n{steps}", step_join: str = "\n", timeout: float = 120.0,
                 tokenizer=None):
        if mode not in ("classify", "step_tag"):
            raise UserError(f"unknown PRM mode {mode!r}; choose classify or step_tag")
        self.url = url.rstrip("/")
        self.mode = mode
        self.step_tag, self.good, self.bad = step_tag, good, bad
        self.template, self.step_join = template, step_join
        self.timeout = timeout
        self._tokenizer = tokenizer  # only for step_tag: ids of the tag and the good/bad tokens
        self._tag_ids: tuple[list[int], int, int] | None = None

    def _post(self, path: str, payload: dict):
        import requests

        try:
            response = requests.post(self.url + path, json=payload, timeout=self.timeout)
        except requests.RequestException as exc:
            raise EngineError(f"PRM server at {self.url} unreachable: {exc}") from exc
        if response.status_code != 200:
            raise EngineError(f"PRM server {path} answered {response.status_code}: {response.text[:200]}")
        return response.json()

    def format(self, t: Trajectory) -> str:
        tag = self.step_tag if self.mode == "step_tag" else ""
        steps = self.step_join.join(s.strip() + tag for s in t.steps)
        return self.template.format(question=t.question, steps=steps)

    def score(self, trajectories: Sequence[Trajectory]) -> list[float]:
        if not trajectories:
            return []
        texts = [self.format(t) for t in trajectories]
        return self._classify(texts) if self.mode == "classify" else self._step_tag(texts)

    def _classify(self, texts: list[str]) -> list[float]:
        out = self._post("/classify", {"text": texts})
        rows = out if isinstance(out, list) else [out]
        if len(rows) != len(texts):
            raise EngineError(f"/classify returned {len(rows)} results for {len(texts)} inputs")
        scores = []
        for row in rows:
            values = row.get("embedding") if isinstance(row, dict) else None
            if not values:
                raise EngineError(f"/classify result without an embedding: {str(row)[:200]}")
            value = float(values[-1])
            scores.append(value if 0.0 <= value <= 1.0 else _sigmoid(value))
        return scores

    def _ids(self) -> tuple[list[int], int, int]:
        if self._tag_ids is None:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                info = self._get("/get_model_info")
                self._tokenizer = AutoTokenizer.from_pretrained(info.get("tokenizer_path") or info["model_path"])
            enc = lambda s: list(self._tokenizer.encode(s, add_special_tokens=False))  # noqa: E731
            good, bad = enc(self.good), enc(self.bad)
            if len(good) != 1 or len(bad) != 1:
                raise UserError(f"PRM labels {self.good!r}/{self.bad!r} must be single tokens")
            self._tag_ids = (enc(self.step_tag), good[0], bad[0])
        return self._tag_ids

    def _get(self, path: str):
        import requests

        try:
            return requests.get(self.url + path, timeout=self.timeout).json()
        except requests.RequestException as exc:
            raise EngineError(f"PRM server at {self.url} unreachable: {exc}") from exc

    def _step_tag(self, texts: list[str]) -> list[float]:
        tag, good, bad = self._ids()
        scores = []
        for text in texts:
            ids = list(self._tokenizer.encode(text, add_special_tokens=False))
            # The label is predicted *at* the last tag token: the logprob entry of the next position.
            last_tag = _last_occurrence(ids, tag)
            if last_tag is None:
                raise UserError(f"step tag {self.step_tag!r} not found in the formatted trajectory")
            pos = last_tag + len(tag) - 1  # the last token of the tag
            # Ask for logprobs from the tag on only: the rest of the prompt stays cacheable.
            out = self._post("/generate", {
                "input_ids": ids + [good],  # one extra token so position pos+1 exists
                "sampling_params": {"max_new_tokens": 0, "temperature": 0.0},
                "return_logprob": True, "logprob_start_len": pos, "token_ids_logprob": [good, bad],
            })
            row = out[0] if isinstance(out, list) else out
            entries = row.get("meta_info", {}).get("input_token_ids_logprobs") or []
            # entries[i] holds the logprobs of the token at position logprob_start_len + i given the
            # tokens before it; the label token sits at position pos + 1.
            found = {int(token_id): float(lp) for lp, token_id, *_ in (entries[1] if len(entries) > 1 else None) or []}
            if good not in found or bad not in found:
                raise EngineError(f"/generate returned no logprobs for the PRM labels: {str(row)[:200]}")
            scores.append(_sigmoid(found[good] - found[bad]))
        return scores


def _last_occurrence(ids: list[int], pattern: list[int]) -> int | None:
    n = len(pattern)
    for start in range(len(ids) - n, -1, -1):
        if ids[start:start + n] == pattern:
            return start
    return None


def make_verifier(kind: str, engine: Engine | None = None, embed: Embed | None = None,
                  prm_url: str | None = None, prm_mode: str = "classify") -> Verifier:
    """``judge`` (needs the engine), ``grounding`` (needs embed), ``prm`` (needs an SGLang URL)."""
    if kind == "judge":
        if engine is None:
            raise UserError("the judge verifier needs an engine")
        return LMJudge(engine)
    if kind == "grounding":
        if embed is None:
            raise UserError("the grounding verifier needs an embedding function")
        return RetrievalGrounding(embed)
    if kind == "prm":
        if not prm_url:
            raise UserError("the prm verifier needs --prm-url (an SGLang server with a reward model)")
        return SGLangPRM(prm_url, mode=prm_mode)
    raise UserError(f"unknown verifier {kind!r}; choose one of {', '.join(VERIFIERS)}")
