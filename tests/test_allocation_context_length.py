"""Effective context length: hand-computed cases for every strategy (Yue et al. 2025 counting)."""

import numpy as np
import pytest

from ragscale.allocation import STRATEGIES, TokenSizes, effective_length, token_usage
from ragscale.errors import UserError

# Small round numbers so every case below can be checked by hand.
SIZES = TokenSizes(doc=100, question=10, answer=5, subquery=7, intermediate=9, instruction=20, demo_steps=2)


@pytest.mark.parametrize("strategy, k, m, n, expected", [
    ("zero-shot", 7, 3, 4, 30),            # 20 + 10; k, m, n do not exist for zero-shot
    ("many-shot", 7, 3, 4, 75),            # 20 + 3 * (10 + 5) + 10
    ("rag", 4, 3, 4, 430),                 # 20 + 4 * 100 + 10
    ("drag", 4, 2, 4, 1260),               # 20 + 2 * (400 + 10 + 5) + 400 + 10
    ("drag", 0, 0, 1, 30),                 # degenerates to zero-shot
    # IterDRAG k=4 m=2 n=2: demo = 400 + 10 + 5 + 2 * (7 + 9) = 447; P1 = 20 + 894 + 400 + 10 = 1324.
    # calls: 1324, 1324 + 7 + 400 = 1731, P2 = 1740, 1740 + 407 = 2147, final P3 = 2156 -> 9098.
    ("iterdrag", 4, 2, 2, 9098),
    # k=1 m=0 n=1: P1 = 20 + 100 + 10 = 130; calls 130, 237, final 246 -> 613.
    ("iterdrag", 1, 0, 1, 613),
])
def test_hand_computed_lengths(strategy, k, m, n, expected):
    assert float(effective_length(strategy, k, m, n, SIZES)) == pytest.approx(expected)


def simulate_iterdrag(k, m, n, s: TokenSizes) -> float:
    """Walk the calls one by one: two per iteration on the growing prompt, then the final answer."""
    demo = k * s.doc + s.question + s.answer + s.demo_steps * (s.subquery + s.intermediate)
    prompt = s.instruction + m * demo + k * s.doc + s.question
    total = 0.0
    for _ in range(n):
        total += prompt                                  # call A: writes the follow-up sub-query
        total += prompt + s.subquery + k * s.doc         # call B: sees the sub-query and its k documents
        prompt += s.subquery + k * s.doc + s.intermediate
    return total + prompt                                # forced final answer


@pytest.mark.parametrize("k, m, n", [(0, 0, 1), (3, 0, 5), (10, 4, 3), (1000, 256, 5), (50, 1, 4)])
def test_iterdrag_matches_call_by_call_walk(k, m, n):
    assert float(effective_length("iterdrag", k, m, n, SIZES)) == pytest.approx(simulate_iterdrag(k, m, n, SIZES))


def test_broadcasts_over_k_m_n():
    k = np.array([0, 1, 10])[:, None, None]
    m = np.array([0, 2])[None, :, None]
    n = np.array([1, 3, 5])[None, None, :]
    out = effective_length("iterdrag", k, m, n, SIZES)
    assert out.shape == (3, 2, 3)
    assert out[2, 1, 1] == pytest.approx(simulate_iterdrag(10, 2, 3, SIZES))


def test_more_of_any_knob_never_costs_less():
    for strategy in STRATEGIES:
        base = effective_length(strategy, 5, 5, 2, SIZES)
        for k, m, n in ((6, 5, 2), (5, 6, 2), (5, 5, 3)):
            assert effective_length(strategy, k, m, n, SIZES) >= base


def test_token_usage_counts_outputs_calls_and_cacheable_prefixes():
    drag = token_usage("drag", 4, 2, 1, SIZES)
    assert drag["calls"] == 1 and drag["output"] == 5
    assert drag["cacheable"] == 20 + 2 * 415           # instruction + demonstrations
    it = token_usage("iterdrag", 4, 2, 2, SIZES)
    assert it["calls"] == 5
    assert it["output"] == 2 * (7 + 9) + 5
    # shared prefix 914 of the first call + every earlier prompt re-sent: 1324 + 1731 + 1740 + 2147.
    assert it["cacheable"] == 914 + 1324 + 1731 + 1740 + 2147


def test_bad_inputs_are_user_errors():
    with pytest.raises(UserError):
        effective_length("self-ask", 1, 1, 1)
    with pytest.raises(UserError):
        effective_length("drag", -1, 0, 1)
    with pytest.raises(UserError):
        TokenSizes(doc=-3)
    with pytest.raises(UserError):
        TokenSizes.from_dict({"docs": 3})
    assert TokenSizes.from_dict(SIZES.to_dict()) == SIZES
