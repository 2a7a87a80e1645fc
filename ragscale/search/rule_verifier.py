"""A rule-based process verifier for the arithmetic task: checks each step, never the gold.

Each step of a trajectory is judged by rules read off the *problem statement* alone:

- an operation line ``a op b = c`` passes when the arithmetic is right (a op b really is c),
  ``a`` is the running total so far (the start number, then the previous line's result), and
  ``b`` is a number of the problem not used yet (each stated operand can be used once);
- an answer line ``Answer: N`` passes when N is the running total and every operand was used;
- anything else (prose, a malformed line) fails. A reply that ends without an answer line is
  judged as if its last number were written as ``Answer: N``.

What it deliberately does not check: which operator goes with which number, and the order the
problem states them in. So ``Subtract 2`` done as ``+ 2``, or operations done out of order, pass
every rule and still end on a wrong answer: the checker is a good process verifier, not an
oracle, and it never computes or reads the gold answer.

The score of the newest step is that of the whole path so far (min over its steps, the usual
way to aggregate process scores): 1.0 when every step passes, 0.0 as soon as one fails. A step
after a failed one cannot repair the path.

``ArithmeticRulesGraded`` (``--verifier rules-graded``) grades that pass/fail: a passing path
scores the generator's own confidence in its newest step (the geometric-mean probability of the
step's tokens, from the log-probabilities the sampler returns at no extra cost). Still no gold
answer, and no extra model call: with two shared CPU cores, k rollouts per candidate would cost
k times the search. Graded scores are what give REBASE a tail of weakly funded candidates for
ETS to prune (pass/fail gives every funded candidate a share of at least 1/width).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from ragscale.errors import UserError
from ragscale.search.tasks.arithmetic import SYMBOLS, parse_answer, parse_problem
from ragscale.search.verifiers import Trajectory

_EQUATION_RE = re.compile(r"^\s*(-?\d+)\s*([-+*x×·])\s*(-?\d+)\s*=\s*(-?\d+)\s*\.?\s*$")
_SYMBOL = {"x": "*", "×": "*", "·": "*"}


def check_steps(problem_text: str, steps: Sequence[str]) -> list[bool]:
    """Whether each step passes, given the steps before it (all steps after a failure fail)."""
    problem = parse_problem(problem_text)
    total = problem.start
    unused = Counter(operand for _, operand in problem.operations)
    out: list[bool] = []
    for step in steps:
        ok = not out or out[-1]
        if ok:
            ok, total = _check(step, total, unused)
        out.append(ok)
    return out


def _check(step: str, total: int, unused: Counter) -> tuple[bool, int]:
    """(passes, new running total); ``unused`` loses the operand a passing step used."""
    line = step.strip()
    if line.lower().startswith("answer"):
        answer = parse_answer(line)
        return answer is not None and float(answer) == total and not +unused, total
    match = _EQUATION_RE.match(line)
    if not match:
        return False, total
    left, symbol, right, result = int(match.group(1)), match.group(2), int(match.group(3)), int(match.group(4))
    symbol = _SYMBOL.get(symbol, symbol)
    if left != total or unused[right] <= 0 or SYMBOLS[symbol](left, right) != result:
        return False, total
    unused[right] -= 1
    return True, result


class ArithmeticRules:
    """Verifier interface over ``check_steps``: 1.0 if the path so far passes every rule, else 0.0."""

    name = "rules"

    def score(self, trajectories: Sequence[Trajectory]) -> list[float]:
        return [1.0 if self.passes(t) else 0.0 for t in trajectories]

    @staticmethod
    def passes(t: Trajectory) -> bool:
        """Whether the path so far passes every rule."""
        steps = list(t.steps)
        if t.answer is not None and not (steps and steps[-1].strip().lower().startswith("answer")):
            # The reply ended without an answer line: its answer must still meet the answer rule.
            steps = [s for s in steps if s.strip()] + [f"Answer: {t.answer}"]
        try:
            passes = check_steps(t.question, steps)
        except UserError:  # not an arithmetic problem: nothing can be checked
            raise UserError("the rules verifier only checks the arithmetic task (--task arithmetic)") from None
        return bool(passes) and all(passes)


class ArithmeticRulesGraded(ArithmeticRules):
    """Pass/fail of the rules times the generator's confidence in the newest step."""

    name = "rules-graded"

    def score(self, trajectories: Sequence[Trajectory]) -> list[float]:
        out = []
        for t in trajectories:
            if t.confidence is None:
                raise UserError("the rules-graded verifier needs the engine's token log-probabilities")
            out.append(float(t.confidence) if self.passes(t) else 0.0)
        return out
