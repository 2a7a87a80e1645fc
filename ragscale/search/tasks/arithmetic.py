"""Running-total arithmetic as tree search: a task on which a 135M model gains from width.

A problem is a chain of operations on a running total, e.g. ``Start with 7. Add 5. Multiply by
3.`` and the model answers one operation per line, then the answer::

    7 + 5 = 12
    12 * 3 = 36
    Answer: 36

One step of the tree is one line (a few tokens), so a search over a few dozen problems runs on a
laptop CPU. Problems have two operations by default: SmolLM2-135M-Instruct follows the format
from two demonstrations but slips on single steps (``8 - 4 = 2``, skipped or invented operations).
In a probe of 8 problems x 16 samples at temperature 0.6 (not a test; timings aside), one sample
was right 22% of the time, a chain that passed every rule 56%, and some sample was right on 4 of
8 problems; with three operations a single sample was right 4% of the time. So width can buy
accuracy, and a rule-based step checker (``ragscale.search.rule_verifier``) can tell valid steps
from invalid ones without ever looking at the gold answer.

Problems come from ``arithmetic_dataset(count, seed)``: one ``random.Random(seed)``, identical on
every machine; the first N problems of a larger set are the N of a smaller one, so ``--limit``
takes a prefix. The two demonstrations are fixed, shown to every problem alike, and never a test
problem.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ragscale.datasets.types import Dataset, Question
from ragscale.errors import UserError
from ragscale.rag.metrics import clean_number
from ragscale.search.tasks.reasoning import ReasoningTask

# The words of the problem and the symbol the model writes for each.
OPERATIONS = {"Add": "+", "Subtract": "-", "Multiply by": "*"}
SYMBOLS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
ANSWER_MARK = "Answer:"
INSTRUCTION = "Solve step by step. Write one operation per line, then the answer."
# Two fixed demonstrations (multi-turn chat), in exactly the format the checker reads.
DEMONSTRATIONS = (
    ("Start with 4. Add 3. Multiply by 2. Subtract 5.", "4 + 3 = 7\n7 * 2 = 14\n14 - 5 = 9\nAnswer: 9"),
    ("Start with 9. Subtract 2. Add 6. Multiply by 3.", "9 - 2 = 7\n7 + 6 = 13\n13 * 3 = 39\nAnswer: 39"),
)
DEFAULT_PROBLEMS = 48
DEFAULT_OPERATIONS = 2
# The harder task of the held-out seeds (``arithmetic-s<SEED>``): one more operation, so trees
# are one level deeper and ETS makes one more selection that can prune a funded branch.
HARD_OPERATIONS = 3
_DATASET_RE = re.compile(r"^arithmetic(?:-s(\d+))?(?:-o(\d+))?$")

_START_RE = re.compile(r"Start with (-?\d+)\.")
_OP_RE = re.compile(r"(Add|Subtract|Multiply by) (-?\d+)\.")
_ANSWER_RE = re.compile(r"Answer\s*:?\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)  # 32.5 is not 32
_NUMBER_RE = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Problem:
    start: int
    operations: tuple[tuple[str, int], ...]  # (symbol, operand), in the order stated

    @property
    def text(self) -> str:
        words = {symbol: word for word, symbol in OPERATIONS.items()}
        return " ".join([f"Start with {self.start}."] + [f"{words[s]} {n}." for s, n in self.operations])

    def value(self) -> int:
        total = self.start
        for symbol, operand in self.operations:
            total = SYMBOLS[symbol](total, operand)
        return total


def parse_problem(text: str) -> Problem:
    """The problem stated in ``text`` (the checker reads it from the question, nothing else)."""
    start = _START_RE.search(text)
    if start is None:
        raise UserError(f"not an arithmetic problem (no 'Start with N.'): {text[:80]!r}")
    ops = tuple((OPERATIONS[word], int(n)) for word, n in _OP_RE.findall(text[start.end():]))
    return Problem(int(start.group(1)), ops)


def make_problem(rng: random.Random, operations: int = DEFAULT_OPERATIONS) -> Problem:
    """Small operands (2-9, multipliers 2-4) and a running total that stays in 1..99, so every
    number is one or two tokens and the difficulty is in following the chain, not in big sums."""
    while True:
        start, total, ops = rng.randint(2, 9), 0, []
        total = start
        for _ in range(operations):
            symbol = rng.choice(list(SYMBOLS))
            operand = rng.randint(2, 4) if symbol == "*" else rng.randint(2, 9)
            total = SYMBOLS[symbol](total, operand)
            ops.append((symbol, operand))
        if 1 <= total <= 99 and all(1 <= v <= 99 for v in _running(start, ops)):
            return Problem(start, tuple(ops))


def _running(start: int, ops) -> list[int]:
    out, total = [], start
    for symbol, operand in ops:
        total = SYMBOLS[symbol](total, operand)
        out.append(total)
    return out


def arithmetic_dataset(count: int = DEFAULT_PROBLEMS, seed: int = 0, operations: int = DEFAULT_OPERATIONS) -> Dataset:
    """``count`` distinct problems, deterministic in ``seed``; none equals a demonstration."""
    if count < 1 or operations < 1:
        raise UserError("the arithmetic dataset needs at least one problem of at least one operation")
    rng = random.Random(seed)
    shown = {text for text, _ in DEMONSTRATIONS}
    seen: set[str] = set()
    questions = []
    while len(questions) < count:
        problem = make_problem(rng, operations)
        if problem.text in seen or problem.text in shown:
            continue
        seen.add(problem.text)
        questions.append(Question(qid=f"arith-{len(questions):03d}", question=problem.text,
                                  answers=[str(problem.value())], dataset="arithmetic", hops=operations))
    return Dataset(name=dataset_name(seed, operations), questions=questions, corpus=[], source="generated")


def dataset_name(seed: int, operations: int) -> str:
    """The ``--dataset`` name that gives back exactly these problems."""
    if (seed, operations) == (0, DEFAULT_OPERATIONS):
        return "arithmetic"
    return f"arithmetic-s{seed}" + ("" if operations == HARD_OPERATIONS else f"-o{operations}")


def dataset_from_name(name: str, count: int = DEFAULT_PROBLEMS) -> Dataset:
    """``arithmetic`` (seed 0, two operations: the bundled Explorer task), ``arithmetic-s<SEED>``
    (seed SEED, three operations: the harder task, on seeds the bundled set never used) or
    ``arithmetic-s<SEED>-o<OPS>``."""
    match = _DATASET_RE.match(name)
    if match is None:
        raise UserError(f"unknown arithmetic dataset {name!r}: the arithmetic task generates its own problems; "
                        "use --dataset arithmetic, arithmetic-s<SEED> (three operations) or arithmetic-s<SEED>-o<OPS>")
    seed, ops = match.groups()
    if seed is None:
        operations = DEFAULT_OPERATIONS if ops is None else int(ops)
        return arithmetic_dataset(count, 0, operations)
    return arithmetic_dataset(count, int(seed), HARD_OPERATIONS if ops is None else int(ops))


def parse_answer(text: str) -> str | None:
    match = _ANSWER_RE.search(text)
    return clean_number(match.group(1)) if match else None


class ArithmeticTask(ReasoningTask):
    """One step = one line: an operation ``a op b = c`` or ``Answer: N`` (a leaf).

    A line that ends the reply without an answer line finishes the trajectory with the last
    number written; at ``max_depth`` the step starts with ``Answer:`` written for the model.
    Expansion is ``ReasoningTask``'s, with its answer hooks and a line as the step.
    """

    name = "arithmetic"
    separator = "\n"
    default_max_depth = DEFAULT_OPERATIONS + 2  # every operation, the answer, one spare line
    default_step_tokens = 16  # "36 - 4 = 32" is 8 tokens

    def root(self, engine, question):
        messages = [{"role": "system", "content": INSTRUCTION}]
        for problem, solution in DEMONSTRATIONS:
            messages += [{"role": "user", "content": problem}, {"role": "assistant", "content": solution}]
        messages.append({"role": "user", "content": question.question})
        try:
            text = engine.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - a model without a chat template gets plain text
            shots = "\n\n".join(f"Problem: {p}\n{s}" for p, s in DEMONSTRATIONS)
            text = f"{INSTRUCTION}\n\n{shots}\n\nProblem: {question.question}\n"
        return engine.encode(text), text, {"question": question.question}

    final_mark = ANSWER_MARK

    def final_answer(self, text: str) -> str | None:
        return parse_answer(text)

    def marked_answer(self, text: str) -> str | None:
        return parse_answer(text)

    def unmarked_answer(self, text: str) -> str | None:
        numbers = _NUMBER_RE.findall(text)
        return clean_number(numbers[-1]) if numbers else None

    def normalize(self, answer: str) -> str:
        return clean_number(answer) or answer.strip()

    def grade(self, question, answer):
        gold = clean_number(question.answers[0]) if question.answers else None
        pred = clean_number(answer) if answer else None
        correct = float(pred is not None and pred == gold)
        return {"em": correct, "correct": correct}
