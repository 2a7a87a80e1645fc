"""Step-wise reasoning (GSM8K-style): steps separated by a blank line, the final answer marked
(``The final answer is: 42``), for a math model on SGLang."""

from __future__ import annotations

import re

from ragscale.rag.metrics import clean_number
from ragscale.search.tasks.base import (Step, Task, ended_turn, sample_frontier, step_confidence, step_ids, step_params,
                                        usage_record)
from ragscale.search.verifiers import Trajectory

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
        return clean_number(match.group(1))
    if strict:
        return None
    numbers = _NUMBER_RE.findall(text)
    return clean_number(numbers[-1]) if numbers else None


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

    final_mark = FINAL_MARK  # written for the model at max_depth, so the last step states the answer

    def final_answer(self, text: str) -> str | None:
        """The answer of a step that starts with ``final_mark``."""
        return extract_number(text)

    def marked_answer(self, text: str) -> str | None:
        """The answer a step states, if it states one (then it is a leaf)."""
        return extract_number(text, strict=True)

    def unmarked_answer(self, text: str) -> str | None:
        """The answer of a trajectory that ended without stating one: its last number."""
        return extract_number(text)

    def expand(self, engine, question, branches, counts, config):
        last = [b.depth + 1 >= config.max_depth for b in branches]
        final_ids = engine.encode(self.final_mark)
        seed = config.seed * 1000 + min((b.depth for b in branches), default=0)
        params = step_params(config, stop=(self.separator,), seed=seed, logprobs=True)  # graded verifier
        prompts = [b.prompt_ids + (final_ids if is_last else []) for b, is_last in zip(branches, last)]
        steps: list[list[Step]] = [[] for _ in branches]
        for i, (branch, gens) in enumerate(zip(branches, sample_frontier(engine, prompts, counts, params))):
            for gen in gens:
                body = gen.text.strip()
                if last[i]:
                    text, ids = f"{self.final_mark} {body}", final_ids + step_ids(engine, gen)
                    answer, finished = self.final_answer(text), True
                else:
                    answer = self.marked_answer(body)
                    finished = answer is not None or not body or ended_turn(engine, gen)
                    if finished and answer is None:  # the reply ended without a marked answer
                        answer = self.unmarked_answer("\n".join([*branch.steps, body]))
                    text, ids = body, step_ids(engine, gen, "" if finished else self.separator)
                steps[i].append(Step(text, ids, finished, answer=answer, confidence=step_confidence(gen),
                                     requests=[usage_record(gen, "step", branch.depth)]))
        return steps

    def trajectory(self, question, branch, step):
        return Trajectory(question=question.question, prompt_ids=branch.prompt_ids + step.token_ids,
                          steps=list(branch.steps) + [step.text], answer=step.answer, confidence=step.confidence)

    def grade(self, question, answer):
        gold = question.answers[0] if question.answers else None
        pred = clean_number(answer) if answer else None
        correct = float(pred is not None and gold is not None and float(pred) == float(gold))
        return {"em": correct, "correct": correct}
