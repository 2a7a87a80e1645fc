"""Tree-search tasks, one file each: what one step of the tree is.

- ``qa.QATask``: multi-hop QA, one step = one IterDRAG iteration;
- ``reasoning.ReasoningTask``: step-wise reasoning (GSM8K-style), steps split at a blank line;
- ``arithmetic.ArithmeticTask``: running-total arithmetic, one line per step (generated problems,
  checked step by step by ``ragscale.search.rule_verifier``): the task the shipped model scales on.
"""

from __future__ import annotations

from ragscale.datasets.types import Dataset
from ragscale.errors import UserError
from ragscale.search.tasks.arithmetic import ArithmeticTask, arithmetic_dataset
from ragscale.search.tasks.base import Branch, Step, Task, ended_turn, sample_frontier, step_ids
from ragscale.search.tasks.qa import QATask, Retrieve, format_demos, retriever_for
from ragscale.search.tasks.reasoning import ReasoningTask, extract_number

TASKS = ("qa", "reasoning", "arithmetic")


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
    if kind == "arithmetic":
        return ArithmeticTask()
    raise UserError(f"unknown task {kind!r}; choose one of {', '.join(TASKS)}")


__all__ = [
    "TASKS", "ArithmeticTask", "Branch", "QATask", "ReasoningTask", "Retrieve", "Step", "Task", "arithmetic_dataset", "ended_turn",
    "extract_number",
    "format_demos", "make_task", "retriever_for", "sample_frontier", "step_ids",
]
