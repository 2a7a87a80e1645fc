"""The one way a tree search is assembled: questions, task, verifier, recipe -> ``run_search``.

The command line (``ragscale search``, ``search-sweep``, ``bench kv``), the Tree search page and
the Explorer all build their searches here, so a question is found, a task gets its documents
and demonstrations, and a recipe meets its overrides the same way everywhere::

    dataset = load_questions("qa", "demo")
    config = search_config("ets", "qa", width=4)          # validated before any model loads
    search = build_search(engine, dataset, "qa", k=2)     # task + verifier + embeddings
    result = search.run(question, config, progress=..., on_step=...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ragscale.datasets.types import Dataset, Question
from ragscale.errors import UserError
from ragscale.search.config import RULE_VERIFIERS, SearchConfig, load_recipe
from ragscale.search.runner import Progress, SearchResult, StepReport, run_search
from ragscale.search.tasks import TASKS, ArithmeticTask, QATask, ReasoningTask, Task, make_task
from ragscale.search.verifiers import Verifier, make_verifier

_TASK_CLASSES = {"qa": QATask, "reasoning": ReasoningTask, "arithmetic": ArithmeticTask}


def load_questions(task: str, source: str) -> Dataset:
    """The question set a task reads: multi-hop QA files or ``demo``; GSM8K-style JSONL for reasoning;
    generated, seeded problems for arithmetic (``ragscale.search.tasks.arithmetic``)."""
    if task == "arithmetic":
        from ragscale.search.tasks.arithmetic import dataset_from_name

        return dataset_from_name("arithmetic" if source == "demo" else source)
    if task == "reasoning":
        if source == "demo":
            raise UserError("the reasoning task reads GSM8K-style JSONL (question, answer ending '#### N'); "
                            "give --dataset PATH")
        from ragscale.datasets.loaders import load_gsm8k

        return load_gsm8k(source)
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    from ragscale.datasets.loaders import load_dataset

    return load_dataset(source)


def find_question(questions: Sequence[Question], qid: str | None) -> Question | None:
    """The question with id ``qid`` (or at index ``qid``); the first when ``qid`` is empty; else None."""
    if not questions:
        return None
    if not qid:
        return questions[0]
    for q in questions:
        if q.qid == qid:
            return q
    if qid.isdigit() and int(qid) < len(questions):
        return questions[int(qid)]
    return None


def require_question(dataset: Dataset, qid: str | None) -> Question:
    """``find_question`` for the command line: a clear error instead of None."""
    question = find_question(dataset.questions, qid)
    if question is None:
        some = ", ".join(q.qid for q in dataset.questions[:5])
        raise UserError(f"no question {qid!r} in {dataset.name} ({len(dataset.questions)} questions, e.g. {some})")
    return question


def search_config(recipe: str, task: str = "qa", **overrides: Any) -> SearchConfig:
    """The recipe's settings with ``overrides`` (None = keep); depth and step cap default to the
    task's. Raises UserError on a bad value, so callers check it before loading a model."""
    task_class = _TASK_CLASSES.get(task)
    if task_class is not None:
        overrides.setdefault("max_depth", None)
        overrides.setdefault("step_max_tokens", None)
        overrides["max_depth"] = overrides["max_depth"] or task_class.default_max_depth
        overrides["step_max_tokens"] = overrides["step_max_tokens"] or task_class.default_step_tokens
    return load_recipe(recipe, **overrides)


def needs_embedding(task: str, verifier: str, policies: Sequence[str]) -> bool:
    """MiniLM loads only when something uses it: QA retrieval, the grounding verifier, ETS clusters."""
    return task == "qa" or verifier == "grounding" or "ets" in policies


def embedder():
    """MiniLM sentence embeddings (L2-normalised), shared with retrieval."""
    from ragscale.retrieval import embed_texts

    return embed_texts


@dataclass
class Search:
    """A task and verifier bound to an engine: ``run`` searches one question with one config."""

    engine: Any
    task: Task
    verifier: Verifier
    embed: Callable | None

    def run(self, question: Question, config: SearchConfig, progress: Progress | None = None,
            on_step: Callable[[StepReport], None] | None = None) -> SearchResult:
        return run_search(self.engine, self.task, question, config, self.verifier, self.embed,
                          progress=progress, on_step=on_step)


def build_search(engine, dataset: Dataset | None, task: str = "qa", *, k: int = 2, demos: int = 1,
                 verifier: str = "judge", retrieve=None, embed=None, use_embedding: bool = True,
                 prm_url: str | None = None, prm_mode: str = "classify") -> Search:
    """Task (with ``k`` documents per step and ``demos`` demonstrations for QA), verifier and
    embeddings. ``retrieve`` / ``embed`` default to the dataset's chromadb index and MiniLM."""
    if verifier in RULE_VERIFIERS and task != "arithmetic":
        raise UserError(f"--verifier {verifier} checks arithmetic steps only; use it with --task arithmetic")
    if embed is None and use_embedding:
        embed = embedder()
    built = make_task(task, dataset=dataset, retrieve=retrieve, k=k, demos=demos)
    if verifier in RULE_VERIFIERS:  # the arithmetic task's step checkers: never see the gold answer
        from ragscale.search.rule_verifier import ArithmeticRules, ArithmeticRulesGraded

        checker = ArithmeticRules() if verifier == "rules" else ArithmeticRulesGraded()
        return Search(engine, built, checker, embed)
    judge = make_verifier(verifier, engine=engine, embed=embed, prm_url=prm_url, prm_mode=prm_mode)
    return Search(engine, built, judge, embed)
