"""Process verifiers: a score in [0, 1] for the newest step of each trajectory.

One interface, three implementations:
- ``LMJudge``: the generator itself as judge, P("Yes") / (P("Yes") + P("No")) after a short
  verification turn appended to the trajectory's own token ids, so the judge prompt shares the
  whole trajectory prefix and the prefix cache serves it;
- ``RetrievalGrounding``: for QA steps, how close the intermediate answer is to the evidence it
  was retrieved with (cosine similarity of sentence embeddings) — no model call at all;
- ``SGLangPRM``: a process reward model served by SGLang, either a reward model (``/classify``,
  raw logits; ``/v1/classify`` through sglang-router) or a causal-LM PRM read at its step-tag
  positions (``/generate`` with ``max_new_tokens: 0`` and ``token_ids_logprob``).

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
    confidence: float | None = None  # the generator's geometric-mean token probability of the newest step


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
    """HTTP client of a PRM served by SGLang (one server, or sglang-router in front of several).

    mode="classify": a reward model (reward architectures need no ``--is-embedding``). Direct,
    ``POST /classify`` returns each input's raw logits in ``embedding``; the score is
    sigmoid(logit) for a one-logit reward head and softmax(logits)[label] for a classifier head —
    both rank-preserving, so the verifier keeps the model's ordering (a value is never passed
    through as if it were already a probability). sglang-router has no ``/classify``; through it
    ``POST /v1/classify`` returns softmax ``probs``, usable for classifier heads only (one logit's
    softmax is always 1.0, which is refused with a clear error).

    mode="step_tag": a causal-LM PRM (Math-Shepherd style) that marks each step with a tag token
    and predicts a good/bad token there; ``POST /generate`` with ``max_new_tokens: 0``,
    ``return_logprob`` and ``token_ids_logprob`` = [good, bad]; the newest step's score is
    softmax(good, bad) at the last tag position.
    """

    name = "prm"

    def __init__(self, url: str, mode: str = "classify", step_tag: str = " ки", good: str = "+", bad: str = "-",
                 template: str = "{question}\n{steps}", step_join: str = "\n", timeout: float = 120.0,
                 tokenizer=None, label: int = -1):
        if mode not in ("classify", "step_tag"):
            raise UserError(f"unknown PRM mode {mode!r}; choose classify or step_tag")
        url = (url or "").strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise UserError(f"a PRM URL looks like http://host:30000, got {url[:80]!r}")
        self.url = url
        self.mode = mode
        self.step_tag, self.good, self.bad = step_tag, good, bad
        self.template, self.step_join = template, step_join
        self.timeout = timeout
        self.label = label  # which class of a classifier head means "good step" (default: the last)
        self._tokenizer = tokenizer  # only for step_tag: ids of the tag and the good/bad tokens
        self._tag_ids: tuple[list[int], int, int] | None = None
        self._classify_path: str | None = None  # "/classify" (a server) or "/v1/classify" (the router)
        self._model_name: str | None = None

    def _call(self, method: str, path: str, payload: dict | None = None, missing_ok: bool = False):
        """JSON from the PRM server; EngineError with one line (SGLang's message only) otherwise.
        With ``missing_ok`` a 404 returns None (the endpoint does not exist there)."""
        import requests

        from ragscale.engines.sglang_client import sglang_error_message

        try:
            response = requests.request(method, self.url + path, json=payload, timeout=self.timeout,
                                        allow_redirects=False)
            raw = response.content[:64 << 20]
        except requests.Timeout:
            raise EngineError(f"the PRM server at {self.url} did not answer {path} within {self.timeout:.0f} s") from None
        except requests.RequestException:
            raise EngineError(f"cannot reach the PRM server at {self.url} (is it running? is the URL right?)") from None
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code != 200:
            message = sglang_error_message(raw)
            raise EngineError(f"the PRM server rejected {path}: HTTP {response.status_code}"
                              + (f": {message}" if message else ""))
        try:
            import json

            return json.loads(raw)
        except (ValueError, RecursionError):
            raise EngineError(f"the PRM server answered {path} with something that is not JSON") from None

    def _post(self, path: str, payload: dict):
        return self._call("POST", path, payload)

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
        if self._classify_path != "/v1/classify":
            out = self._call("POST", "/classify", {"text": texts}, missing_ok=True)
            if out is not None:
                self._classify_path = "/classify"
                rows = out if isinstance(out, list) else [out]
                self._check_rows(rows, texts, "/classify")
                return [self._from_logits(row.get("embedding") if isinstance(row, dict) else None) for row in rows]
            self._classify_path = "/v1/classify"  # sglang-router: only the OpenAI-style route
        out = self._post("/v1/classify", {"model": self._model(), "input": texts})
        rows = out.get("data") if isinstance(out, dict) else None
        self._check_rows(rows, texts, "/v1/classify")
        return [self._from_probs(row.get("probs") if isinstance(row, dict) else None) for row in rows]

    @staticmethod
    def _check_rows(rows, texts: list[str], path: str) -> None:
        if not isinstance(rows, list) or len(rows) != len(texts):
            count = len(rows) if isinstance(rows, list) else "no"
            raise EngineError(f"{path} returned {count} results for {len(texts)} inputs")

    def _from_logits(self, values) -> float:
        """A raw reward-head output -> a score in (0, 1) that keeps the logits' order."""
        logits = _finite_numbers(values, "/classify embedding")
        if len(logits) == 1:
            return _sigmoid(logits[0])
        top = max(logits)
        exps = [math.exp(x - top) for x in logits]
        return exps[self._label_index(len(logits))] / sum(exps)

    def _from_probs(self, values) -> float:
        probs = _finite_numbers(values, "/v1/classify probs")
        if len(probs) == 1:
            raise EngineError("the reward model has one output: /v1/classify turns it into probs [1.0], which "
                              "ranks nothing; give --prm-url a worker's URL (its /classify returns the raw logit)")
        return probs[self._label_index(len(probs))]

    def _label_index(self, classes: int) -> int:
        if not -classes <= self.label < classes:
            raise EngineError(f"PRM label {self.label} does not exist: the model has {classes} classes")
        return self.label % classes

    def _model(self) -> str:
        if self._model_name is None:
            models = self._call("GET", "/v1/models")
            cards = models.get("data") if isinstance(models, dict) else None
            first = cards[0] if isinstance(cards, list) and cards and isinstance(cards[0], dict) else {}
            self._model_name = str(first.get("id") or "default")
        return self._model_name

    def _ids(self) -> tuple[list[int], int, int]:
        if self._tag_ids is None:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                info = self._call("GET", "/model_info", missing_ok=True) or self._call("GET", "/get_model_info")
                source = info.get("tokenizer_path") or info.get("model_path") if isinstance(info, dict) else None
                if not isinstance(source, str) or not source:
                    raise EngineError("the PRM server's model info names no tokenizer; pass tokenizer=")
                self._tokenizer = AutoTokenizer.from_pretrained(source)
            enc = lambda s: list(self._tokenizer.encode(s, add_special_tokens=False))  # noqa: E731
            good, bad = enc(self.good), enc(self.bad)
            if len(good) != 1 or len(bad) != 1:
                raise UserError(f"PRM labels {self.good!r}/{self.bad!r} must be single tokens")
            self._tag_ids = (enc(self.step_tag), good[0], bad[0])
        return self._tag_ids

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
            row = out[0] if isinstance(out, list) and out else out
            meta = row.get("meta_info") if isinstance(row, dict) else None
            entries = meta.get("input_token_ids_logprobs") if isinstance(meta, dict) else None
            # entries[i] holds the logprobs of the token at position logprob_start_len + i given the
            # tokens before it; the label token sits at position pos + 1.
            at_label = entries[1] if isinstance(entries, list) and len(entries) > 1 else None
            found = {}
            for entry in at_label if isinstance(at_label, list) else []:
                if isinstance(entry, list) and len(entry) >= 2 and isinstance(entry[1], int):
                    found[entry[1]] = _finite_numbers([entry[0]], "token_ids_logprob")[0]
            if good not in found or bad not in found:
                raise EngineError("/generate returned no logprobs for the PRM labels")
            scores.append(_sigmoid(found[good] - found[bad]))
        return scores


def _finite_numbers(values, what: str) -> list[float]:
    if not isinstance(values, list) or not values or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise EngineError(f"the PRM server's {what} is not a list of finite numbers")
    return [float(v) for v in values]


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
