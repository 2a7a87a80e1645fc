"""What one step of the tree is, for the two tasks tree search runs on.

- ``QATask``: multi-hop QA where one step is one IterDRAG iteration (Yue et al. 2025): the model
  writes a follow-up sub-query, k documents are retrieved for it and appended to the
  trajectory, and the model writes an intermediate answer. A leaf states
  ``So the final answer is:``. This is tree search over retrieval-augmented reasoning.
- ``ReasoningTask``: step-wise reasoning, steps separated by a blank line and the final answer
  marked (``The final answer is: 42``), for a math model on SGLang; GSM8K-style JSONL.

Both expand a whole frontier at once and continue every branch from token ids (the root prompt
plus every step's ids, exactly as the engine returned them), so siblings share their prefix
in the engine's radix cache and nothing is re-tokenised at the joins.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from ragscale.datasets.types import Dataset, Document, Question
from ragscale.engines.base import Engine, Generation, SamplingParams
from ragscale.errors import DatasetError, UserError
from ragscale.rag import prompts as selfask
from ragscale.search.config import SearchConfig
from ragscale.search.verifiers import Trajectory

TASKS = ("qa", "reasoning")


@dataclass
class Branch:
    """A node to continue: its id, the tokens the engine is sent, how deep it is."""

    node_id: int
    prompt_ids: list[int]
    depth: int  # steps taken so far (0 at the root)
    doc_ids: tuple[str, ...] = ()  # QA: documents already in the trajectory, oldest first
    steps: tuple[str, ...] = ()  # text of each step on the path


@dataclass
class Step:
    """One generated step: what the tree stores and what the verifier judges."""

    text: str
    token_ids: list[int]
    finished: bool
    answer: str | None = None
    sub_query: str | None = None
    intermediate: str | None = None
    doc_ids: list[str] = field(default_factory=list)  # retrieved in this step
    requests: list[dict] = field(default_factory=list)  # usage of each engine request behind it

    @property
    def cached_tokens(self) -> int:
        return sum(r["cached_tokens"] for r in self.requests)

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"requests": self.requests}
        if self.sub_query is not None:
            meta["sub_query"] = self.sub_query
        if self.intermediate is not None:
            meta["intermediate"] = self.intermediate
        if self.doc_ids:
            meta["doc_ids"] = list(self.doc_ids)
        return meta


def _usage(gen: Generation, phase: str, depth: int) -> dict:
    return {"phase": phase, "depth": depth, "prompt_tokens": gen.usage.prompt_tokens,
            "cached_tokens": gen.usage.cached_tokens, "completion_tokens": gen.usage.completion_tokens}


def sample_frontier(engine: Engine, prompts: Sequence[list[int]], counts: Sequence[int],
                    params: SamplingParams) -> list[list[Generation]]:
    """``counts[i]`` samples for ``prompts[i]``, prompt by prompt.

    Identical prompts (duplicate branches) are merged into one prompt with the summed count, so
    their samples are drawn as ``n`` distinct streams of one request instead of repeating one
    seeded stream: duplicates can diverge again. Prompts with the same number of samples then go
    into one ``engine.generate`` with that ``n``: with equal shares (beam, DVTS, best-of-N) the
    whole frontier is one request, unequal REBASE/ETS shares take one per distinct share.
    """
    merged: dict[tuple[int, ...], list[int]] = {}
    for i, count in enumerate(counts):
        if count > 0:
            merged.setdefault(tuple(prompts[i]), []).append(i)
    groups: dict[int, list[tuple[int, ...]]] = defaultdict(list)
    for key, members in merged.items():
        groups[sum(counts[i] for i in members)].append(key)
    out: list[list[Generation]] = [[] for _ in prompts]
    for n, keys in sorted(groups.items(), reverse=True):
        gens = engine.generate([list(key) for key in keys], replace(params, n=n))
        for j, key in enumerate(keys):
            samples = gens[j * n:(j + 1) * n]
            for i in merged[key]:  # hand the merged samples back, in order
                out[i], samples = samples[:counts[i]], samples[counts[i]:]
    return out


def step_ids(engine: Engine, gen: Generation, tail: str = "") -> list[int]:
    """Output ids trimmed to exactly ``gen.text`` (+ ``tail``), reusing the engine's own ids.

    Engines differ at the end of an output: the embedded engine keeps the stop string's tokens
    and the end-of-turn token in ``output_ids``, SGLang and the scripted engine do not. Trailing
    tokens beyond the returned text are dropped and the missing text (+ tail) is encoded, so the
    branch continues with the engine's ids everywhere but the last token or two.
    """
    ids = list(gen.output_ids)
    while ids and (engine.decode(ids[-1:]) == "" or not gen.text.startswith(engine.decode(ids))):
        ids.pop()
    missing = gen.text[len(engine.decode(ids)):] + tail
    return ids + (engine.encode(missing) if missing else [])


def ended_turn(engine: Engine, gen: Generation) -> bool:
    """Whether the model closed its reply (end-of-turn token) rather than hitting a stop string."""
    return bool(gen.output_ids) and gen.finish_reason == "stop" and engine.decode(gen.output_ids[-1:]) == ""


class Task(ABC):
    name: str
    default_max_depth: int
    default_step_tokens: int

    @abstractmethod
    def root(self, engine: Engine, question: Question) -> tuple[list[int], str, dict]:
        """(prompt ids, prompt text, meta) of the root node."""

    @abstractmethod
    def expand(self, engine: Engine, question: Question, branches: Sequence[Branch], counts: Sequence[int],
               config: SearchConfig) -> list[list[Step]]:
        """``counts[i]`` new steps below ``branches[i]`` (``[]`` where the count is 0)."""

    @abstractmethod
    def grade(self, question: Question, answer: str | None) -> dict[str, float]:
        """Metrics of a final answer; always includes ``correct`` (0 or 1)."""

    @abstractmethod
    def trajectory(self, question: Question, branch: Branch, step: Step) -> Trajectory:
        """What the verifier sees of ``step`` appended to ``branch``."""


# --------------------------------------------------------------------------------------------
# Multi-hop QA: one step = one IterDRAG iteration
# --------------------------------------------------------------------------------------------

Retrieve = Callable[[str, int], list[Document]]
_FINAL_IN_LINE = re.compile(r"so\s+the\s+final\s+answer\s+is\s*:?", re.IGNORECASE)


def format_demos(dataset: Dataset | None, exclude: str | None = None, m: int = 1) -> list[selfask.Example]:
    """Up to ``m`` self-ask demonstrations from gold decompositions (the pool first), without their
    documents: they show a small model the step format at the cost of a short shared prefix."""
    if dataset is None:
        return []
    out = []
    for q in list(dataset.pool) + list(dataset.questions):
        if len(out) > m:  # one spare: ``QATask.root`` drops a demonstration that is the test question
            break
        if q.decomposition and q.qid != exclude and q.answers:
            out.append(selfask.Example(q.question, [], q.answers[0], steps=list(q.decomposition)))
    return out


def retriever_for(dataset: Dataset, progress=None) -> Retrieve:
    """``retrieve(query, k) -> documents`` over the dataset's pooled corpus (the RAG retriever)."""
    from ragscale.retrieval import build_retriever

    return build_retriever(dataset, progress=progress).search


class QATask(Task):
    """Tree search over IterDRAG.

    A step is ``Follow up: <q>`` + the k documents retrieved for q (ones already on the path are
    skipped) + ``Intermediate answer: <a>``; the model may close the step with
    ``So the final answer is: <x>``, which makes it a leaf. At ``max_depth`` the step is forced:
    ``So the final answer is:`` is written for the model, as IterDRAG forces an answer after its
    last iteration. Sub-queries are sampled (the tree's diversity); intermediate answers are
    greedy, since they should only read the evidence.
    """

    name = "qa"
    # IterDRAG stops after at most 5 iterations; sub-queries and short answers fit in 48 tokens.
    default_max_depth = 3
    default_step_tokens = 48

    def __init__(self, retrieve: Retrieve, k: int = 2, doc_words: int = 80,
                 demos: Sequence[selfask.Example] = (), num_demos: int | None = None):
        if k < 1:
            raise UserError("k (documents per step) must be >= 1")
        self.retrieve = retrieve
        self.k = k
        self.doc_words = doc_words
        self.demos = list(demos)  # may hold a spare, in case one of them is the test question
        self.num_demos = len(self.demos) if num_demos is None else num_demos
        self.documents: dict[str, Document] = {}  # every document retrieved so far, by id

    def _fetch(self, query: str, exclude: Sequence[str] = ()) -> list[Document]:
        # Ask for more than k so that documents already on the path can be skipped.
        docs = [d for d in self.retrieve(query, self.k + len(exclude)) if d.doc_id not in set(exclude)][: self.k]
        for d in docs:
            self.documents[d.doc_id] = d
        return docs

    def _short(self, doc: Document) -> Document:
        words = doc.text.split()
        text = doc.text if len(words) <= self.doc_words else " ".join(words[: self.doc_words]) + " ..."
        return Document(doc.doc_id, doc.title, text)

    def root(self, engine: Engine, question: Question) -> tuple[list[int], str, dict]:
        docs = self._fetch(question.question)
        test = selfask.Example(question.question, [self._short(d) for d in docs])
        demos = [d for d in self.demos if d.question != question.question][: self.num_demos]
        text = selfask.render_prompt(engine.tokenizer, demos, test, iterative=True)
        return engine.encode(text), text, {"doc_ids": [d.doc_id for d in docs], "question": question.question}

    def expand(self, engine, question, branches, counts, config):
        steps: list[list[Step]] = [[] for _ in branches]
        last = [b.depth + 1 >= config.max_depth for b in branches]
        enc = engine.encode
        follow_ids, final_ids = enc(selfask.FOLLOW_UP), enc(selfask.FINAL)
        seed = config.seed * 1000 + min((b.depth for b in branches), default=0)
        sampled = _step_params(config, stop=("\n",), seed=seed)
        prompts = [b.prompt_ids + (final_ids if is_last else follow_ids) for b, is_last in zip(branches, last)]
        first = sample_frontier(engine, prompts, counts, sampled)

        # Forced final answers are complete steps; follow-ups still need documents and an answer.
        pending: list[tuple[int, Generation, list[Document], list[int]]] = []
        for i, (branch, gens) in enumerate(zip(branches, first)):
            for gen in gens:
                if last[i]:
                    answer = selfask.clean_answer(gen.text)
                    ids = final_ids + step_ids(engine, gen, "\n")
                    steps[i].append(Step(f"{selfask.FINAL} {gen.text.strip()}", ids, True, answer=answer,
                                         requests=[_usage(gen, "final", branch.depth)]))
                    continue
                if _FINAL_IN_LINE.search(gen.text):  # the model chose to answer instead of asking
                    answer = selfask.clean_answer(gen.text[_FINAL_IN_LINE.search(gen.text).end():])
                    steps[i].append(Step(f"{selfask.FOLLOW_UP} {gen.text.strip()}",
                                         follow_ids + step_ids(engine, gen, "\n"), True, answer=answer,
                                         requests=[_usage(gen, "final", branch.depth)]))
                    continue
                query = selfask.parse_follow_up(gen.text, fallback=question.question)
                docs = self._fetch(query, exclude=branch.doc_ids)
                shown = "\n".join(f"Document [{d.doc_id}] {self._short(d).render()}" for d in docs)
                between = enc("\n" + (f"Documents:\n{shown}\n" if docs else "") + selfask.INTERMEDIATE)
                pending.append((i, gen, docs, follow_ids + step_ids(engine, gen) + between))

        if pending:
            # One intermediate answer, optionally followed by the final-answer line; a repeated
            # marker or a blank line ends it (small models otherwise repeat lines up to the cap).
            stops = ("\n" + selfask.FOLLOW_UP, "\n" + selfask.INTERMEDIATE, "\n\n")
            greedy = _step_params(config, stop=stops, temperature=0.0, seed=seed)
            answers = engine.generate([branches[i].prompt_ids + ids for i, _, _, ids in pending], greedy)
            for (i, query_gen, docs, ids), gen in zip(pending, answers):
                intermediate, final = selfask.parse_intermediate(gen.text)
                text = (f"{selfask.FOLLOW_UP} {query_gen.text.strip()}\n"
                        + "".join(f"[{d.title}] " for d in docs) + "\n"
                        + f"{selfask.INTERMEDIATE} {gen.text.strip()}")
                steps[i].append(Step(
                    text, ids + step_ids(engine, gen, "\n"), finished=final is not None, answer=final,
                    sub_query=selfask.parse_follow_up(query_gen.text, fallback=question.question),
                    intermediate=intermediate, doc_ids=[d.doc_id for d in docs],
                    requests=[_usage(query_gen, "follow_up", branches[i].depth),
                              _usage(gen, "intermediate", branches[i].depth)],
                ))
        return steps

    def trajectory(self, question, branch, step):
        if step.finished:
            evidence_ids = list(branch.doc_ids) + step.doc_ids  # a final answer answers to everything read
        else:
            evidence_ids = step.doc_ids
        return Trajectory(
            question=question.question,
            prompt_ids=branch.prompt_ids + step.token_ids,
            steps=list(branch.steps) + [step.text],
            evidence=[self.documents[d].render() for d in evidence_ids if d in self.documents],
            intermediate=step.intermediate,
            answer=step.answer,
        )

    def grade(self, question, answer):
        from ragscale.rag.metrics import score_answer

        scores = score_answer(answer or "", question.answers)
        return {**scores, "correct": scores["acc"]}


def _step_params(config: SearchConfig, stop: tuple[str, ...], seed: int, temperature: float | None = None):
    return SamplingParams(max_new_tokens=config.step_max_tokens,
                          temperature=config.sampling_temperature if temperature is None else temperature,
                          stop=stop, seed=seed)


# --------------------------------------------------------------------------------------------
# Step-wise reasoning (GSM8K-style)
# --------------------------------------------------------------------------------------------

REASONING_INSTRUCTION = (
    "Solve the problem step by step. Write each step as a short paragraph and separate steps with "
    "a blank line. When you know the result, write a last step: 'The final answer is: <number>'."
)
FINAL_MARK = "The final answer is:"
_FINAL_RE = re.compile(r"(?:final answer is|####|\\boxed\{)\s*:?\s*\$?(-?[\d,]*\.?\d+)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?[\d,]*\.?\d+")


def extract_number(text: str, strict: bool = False) -> str | None:
    """The marked final number, or (unless ``strict``) the last number in the text."""
    match = _FINAL_RE.search(text)
    if match:
        return _clean_number(match.group(1))
    if strict:
        return None
    numbers = _NUMBER_RE.findall(text)
    return _clean_number(numbers[-1]) if numbers else None


def _clean_number(raw: str) -> str | None:
    raw = raw.replace(",", "").rstrip(".")
    try:
        value = float(raw)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else str(value)


def load_gsm8k(path: str | Path) -> Dataset:
    """GSM8K-style JSONL (or a JSON list): ``question`` and ``answer`` ending in ``#### <number>``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"no such file: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        records = json.loads(text) if text.lstrip().startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path.name}: not JSON Lines ({exc})") from exc
    questions = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "question" not in rec or "answer" not in rec:
            raise DatasetError(f"{path.name}: record {i} needs 'question' and 'answer'")
        answer = str(rec["answer"])
        if "####" not in answer:
            raise DatasetError(f"{path.name}: record {i}: the answer has no '#### <number>'")
        gold = _clean_number(answer.split("####")[-1].strip())
        if gold is None:
            raise DatasetError(f"{path.name}: record {i}: no number after '####'")
        questions.append(Question(qid=str(rec.get("id", i)), question=str(rec["question"]), answers=[gold],
                                  dataset=path.stem))
    if not questions:
        raise DatasetError(f"{path.name}: contains no records")
    return Dataset(name=path.stem, questions=questions, corpus=[], source=str(path))


class ReasoningTask(Task):
    """Steps end at a blank line; a step stating ``The final answer is`` (or ``####``) is a leaf.

    A step that comes back empty means the model ended its reply (EOS): the trajectory is then
    finished and its answer is the last number it wrote. At ``max_depth`` the answer is forced.
    """

    name = "reasoning"
    separator = "\n\n"
    default_max_depth = 10
    default_step_tokens = 256

    def root(self, engine, question):
        text = engine.chat_prompt(f"{REASONING_INSTRUCTION}\n\nProblem: {question.question}")
        return engine.encode(text), text, {"question": question.question}

    def expand(self, engine, question, branches, counts, config):
        enc = engine.encode
        last = [b.depth + 1 >= config.max_depth for b in branches]
        final_ids = enc(FINAL_MARK)
        seed = config.seed * 1000 + min((b.depth for b in branches), default=0)
        params = _step_params(config, stop=(self.separator,), seed=seed)
        prompts = [b.prompt_ids + (final_ids if is_last else []) for b, is_last in zip(branches, last)]
        steps: list[list[Step]] = [[] for _ in branches]
        for i, (branch, gens) in enumerate(zip(branches, sample_frontier(engine, prompts, counts, params))):
            for gen in gens:
                body = gen.text.strip()
                if last[i]:
                    text, ids = f"{FINAL_MARK} {body}", final_ids + step_ids(engine, gen)
                    answer, finished = extract_number(text), True
                else:
                    answer = extract_number(body, strict=True)
                    finished = answer is not None or not body or ended_turn(engine, gen)
                    if finished and answer is None:  # the reply ended without a marked answer
                        answer = extract_number("\n".join([*branch.steps, body]))
                    text, ids = body, step_ids(engine, gen, "" if finished else self.separator)
                steps[i].append(Step(text, ids, finished, answer=answer,
                                     requests=[_usage(gen, "step", branch.depth)]))
        return steps

    def trajectory(self, question, branch, step):
        return Trajectory(question=question.question, prompt_ids=branch.prompt_ids + step.token_ids,
                          steps=list(branch.steps) + [step.text], answer=step.answer)

    def grade(self, question, answer):
        gold = question.answers[0] if question.answers else None
        pred = _clean_number(answer) if answer else None
        correct = float(pred is not None and gold is not None and float(pred) == float(gold))
        return {"em": correct, "correct": correct}


def make_task(kind: str, dataset: Dataset | None = None, retrieve: Retrieve | None = None, k: int = 2,
              demos: int = 1) -> Task:
    if kind == "qa":
        if retrieve is None:
            if dataset is None:
                raise UserError("the qa task needs a dataset to retrieve from")
            retrieve = retriever_for(dataset)
        # The demonstration comes from the pool (kept apart from test questions) when there is one.
        return QATask(retrieve, k=k, demos=format_demos(dataset, m=demos), num_demos=demos)
    if kind == "reasoning":
        return ReasoningTask()
    raise UserError(f"unknown task {kind!r}; choose one of {', '.join(TASKS)}")
