"""Effective context length l(theta) of Yue et al. 2025, and the token usage behind it.

theta = (k, m, n): k retrieved documents, m in-context demonstrations, n iterations. The paper
counts the *input* tokens summed over every model call made for one question (output tokens and
retrieval are not counted). The prompt layouts follow the paper:

- zero-shot:  instruction + question                                     (one call)
- many-shot:  instruction + m x [question, answer] + question            (one call)
- rag:        instruction + k docs + question                            (one call)
- drag:       instruction + m x [k docs, question, answer] + k docs + question   (one call);
              each demonstration carries its own k documents.
- iterdrag:   self-ask. The prompt P_1 = instruction + m demonstrations + k docs + question.
              Iteration j makes two calls that both re-send the whole prompt so far:
                call A: P_j                  -> a follow-up sub-query (s tokens)
                call B: P_j + s + k docs     -> an intermediate answer (r tokens)
              and P_{j+1} = P_j + s + k docs + r (the sub-query's documents accumulate).
              After n iterations one more call on P_{n+1} is forced to give the final answer.
              So l = sum_j (2 P_j + s + k d) + P_{n+1} = (2n+1) P_1 + n (s + k d) + n^2 g,
              with g = s + k d + r.

The context window bounds each *call*, not the sum: ``largest_call`` is the biggest single call
(its prompt, counted as the paper counts effective length, plus the tokens it generates, which
share the window). For the one-call strategies that is the whole prompt; for IterDRAG it is the
final call on P_{n+1} = P_1 + n g, because every call re-sends the whole prompt so far. This is why
Yue et al. report DRAG only up to 1M tokens (Gemini 1.5 Flash's window) while IterDRAG spends 5M:
its budget is spread over 2n + 1 calls that each fit.

Approximations (the paper gives no token counts, so these are parameters with defaults):
- every document has the same length ``doc`` (the paper truncates documents to 1,024 whitespace
  tokens; KILT Wikipedia passages are ~100 words, so the default is 150 tokens);
- n is the *maximum* number of iterations and the count assumes every question uses all n:
  the budget holds per question, so the worst case is what must fit;
- an IterDRAG demonstration is counted as its k documents, its question, ``demo_steps`` pairs of
  (sub-query, intermediate answer) and its answer; the documents its follow-ups retrieved are
  not counted (the paper does not say how long its demonstration chains were).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from ragscale.errors import UserError

STRATEGIES = ("zero-shot", "many-shot", "rag", "drag", "iterdrag")
STRATEGY_DESCRIPTIONS = {
    "auto": "the best of all five strategies",
    "zero-shot": "question only",
    "many-shot": "m worked examples, no documents",
    "rag": "k retrieved documents",
    "drag": "k documents and m demonstrations, each with its own k documents (one call)",
    "iterdrag": "DRAG plus up to n rounds of follow-up question + retrieval (2 calls per round, 1 to answer)",
}


@dataclass(frozen=True)
class TokenSizes:
    """Average token counts of the prompt's parts (measure them from real runs when you can)."""

    doc: float = 150.0          # one retrieved document, with its title and separators
    question: float = 25.0      # the question line
    answer: float = 8.0         # a short answer (also the final answer's output length)
    subquery: float = 15.0      # one IterDRAG follow-up sub-query
    intermediate: float = 20.0  # one IterDRAG intermediate answer
    instruction: float = 50.0   # the task instruction at the top of the prompt
    demo_steps: float = 2.0     # follow-up steps in one IterDRAG demonstration chain

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not np.isfinite(value) or value < 0:
                raise UserError(f"token size {f.name} must be a non-negative number, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TokenSizes":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserError(f"unknown token size(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        return cls(**{key: float(value) for key, value in data.items()})


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return strategy


def canonical_theta(strategy: str, k, m, n):
    """Zero the knobs a strategy does not have (rag has no demonstrations, drag one iteration ...).

    Returns float arrays broadcast against each other, so predictions and lengths agree on what a
    configuration *is*: "rag with m=5" is rag with m=0.
    """
    check_strategy(strategy)
    k, m, n = (np.asarray(x, dtype=float) for x in (k, m, n))
    if strategy in ("zero-shot", "many-shot"):
        k = np.zeros_like(k)
    if strategy in ("zero-shot", "rag"):
        m = np.zeros_like(m)
    if strategy != "iterdrag":
        n = np.ones_like(n)
    if np.any(k < 0) or np.any(m < 0) or np.any(n < 1):
        raise UserError("k and m must be >= 0 and n >= 1")
    return k, m, n


def _demo_tokens(strategy: str, k, sizes: TokenSizes):
    """Tokens of one demonstration (each carries its own k documents)."""
    if strategy == "many-shot":
        return sizes.question + sizes.answer
    if strategy == "drag":
        return k * sizes.doc + sizes.question + sizes.answer
    if strategy == "iterdrag":
        return (k * sizes.doc + sizes.question + sizes.answer
                + sizes.demo_steps * (sizes.subquery + sizes.intermediate))
    return 0.0 * k


def _first_prompt(strategy: str, k, m, sizes: TokenSizes):
    """P_1: instruction, m demonstrations, the test question's k documents and the question."""
    return sizes.instruction + m * _demo_tokens(strategy, k, sizes) + k * sizes.doc + sizes.question


def effective_length(strategy: str, k, m, n, sizes: TokenSizes | None = None) -> np.ndarray:
    """Input tokens over every call for one question; broadcasts over k, m and n."""
    sizes = sizes or TokenSizes()
    k, m, n = canonical_theta(strategy, k, m, n)
    docs = k * sizes.doc
    first_prompt = _first_prompt(strategy, k, m, sizes)
    if strategy != "iterdrag":
        return first_prompt
    growth = sizes.subquery + docs + sizes.intermediate
    return (2 * n + 1) * first_prompt + n * (sizes.subquery + docs) + n * n * growth


def largest_call(strategy: str, k, m, n, sizes: TokenSizes | None = None) -> np.ndarray:
    """Tokens of the biggest single model call for one question (prompt + its output); broadcasts."""
    sizes = sizes or TokenSizes()
    k, m, n = canonical_theta(strategy, k, m, n)
    first_prompt = _first_prompt(strategy, k, m, sizes)
    if strategy != "iterdrag":
        return first_prompt + sizes.answer
    # The forced final call reads P_{n+1} = P_1 + n (s + k d + r) and writes the answer; no earlier
    # call is larger (call B of iteration n reads P_{n+1} - r and writes r).
    return first_prompt + n * (sizes.subquery + k * sizes.doc + sizes.intermediate) + sizes.answer


def calls(strategy: str, k, m, n, sizes: TokenSizes | None = None) -> list[dict]:
    """One question's model calls in order (scalar k, m, n): each call's prompt tokens, the part of it
    a prefix cache can serve (the shared instruction and demonstrations, or the previous call's whole
    prompt), and the tokens it writes. A provider bills each call on its own prompt length.

    The prompts sum to ``effective_length``; the last call's prompt plus its output is ``largest_call``.
    """
    sizes = sizes or TokenSizes()
    k, m, n = (float(x) for x in canonical_theta(strategy, k, m, n))
    prompt = float(_first_prompt(strategy, k, m, sizes))
    shared = float(sizes.instruction + m * _demo_tokens(strategy, k, sizes))
    if strategy != "iterdrag":
        return [{"prompt": prompt, "cacheable": min(shared, prompt), "output": sizes.answer}]
    out, cached = [], shared
    for _ in range(int(n)):
        # call A writes a sub-query; call B reads it and its k new documents, writes an intermediate answer
        out.append({"prompt": prompt, "cacheable": min(cached, prompt), "output": sizes.subquery})
        with_docs = prompt + sizes.subquery + k * sizes.doc
        out.append({"prompt": with_docs, "cacheable": prompt, "output": sizes.intermediate})
        cached, prompt = with_docs, with_docs + sizes.intermediate
    out.append({"prompt": prompt, "cacheable": cached, "output": sizes.answer})
    return out


def token_usage(strategy: str, k, m, n, sizes: TokenSizes | None = None) -> dict:
    """Per question: input tokens, the part a prefix cache can serve, output tokens, model calls,
    and the biggest single call (``largest_call``: what must fit the model's context window).

    ``cacheable`` is an upper bound on prefix-cache hits: the instruction and demonstrations are the
    same for every question, and each IterDRAG call re-sends the previous call's whole prompt.
    """
    sizes = sizes or TokenSizes()
    k, m, n = canonical_theta(strategy, k, m, n)
    total = effective_length(strategy, k, m, n, sizes)
    shared = sizes.instruction + m * _demo_tokens(strategy, k, sizes)
    biggest = largest_call(strategy, k, m, n, sizes)
    if strategy == "iterdrag":
        # Call t's prompt starts with call t-1's prompt, so every prompt but the last is reused;
        # the last prompt is the largest call less the answer it writes.
        cacheable = shared + total - (biggest - sizes.answer)
        output = n * (sizes.subquery + sizes.intermediate) + sizes.answer
        calls = 2 * n + 1
    else:
        cacheable = shared
        output = sizes.answer + 0.0 * total
        calls = 1.0 + 0.0 * total
    return {
        "input": total,
        "cacheable": np.minimum(cacheable, total),
        "output": output + 0.0 * total,
        "calls": calls + 0.0 * total,
        "largest_call": biggest + 0.0 * total,
    }
