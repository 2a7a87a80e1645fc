"""Cost and latency of a configuration, checked against hand arithmetic."""

import pytest

from ragscale.allocation import CostModel, TokenSizes, cost_breakdown
from ragscale.errors import UserError

SIZES = TokenSizes(doc=100, question=10, answer=5, subquery=7, intermediate=9, instruction=20, demo_steps=2)


def test_drag_cost_by_hand():
    # drag k=4 m=2: 1260 input tokens, 850 of them the shared prefix (instruction + demonstrations).
    cost = CostModel(price_input_per_m=1.0, price_cached_per_m=0.25, price_output_per_m=4.0, queries_per_day=1000,
                     prefill_tokens_per_s=100.0, decode_tokens_per_s=5.0)
    out = cost_breakdown({"strategy": "drag", "k": 4, "m": 2, "n": 1}, SIZES, cost)
    assert out.input_tokens == 1260 and out.cached_input_tokens == 850 and out.uncached_input_tokens == 410
    assert out.cost_uncached_input_usd == pytest.approx(410e-6)
    assert out.cost_cached_input_usd == pytest.approx(850 * 0.25e-6)
    assert out.cost_output_usd == pytest.approx(5 * 4e-6)
    assert out.cost_per_query_usd == pytest.approx(410e-6 + 212.5e-6 + 20e-6)
    assert out.cost_per_month_usd == pytest.approx(out.cost_per_query_usd * 1000 * 30)
    assert out.latency_s == pytest.approx(410 / 100 + 5 / 5)


def test_explicit_cache_fraction_and_iterdrag_outputs():
    cost = CostModel(price_input_per_m=1.0, price_cached_per_m=0.0, price_output_per_m=0.0, cache_hit_fraction=0.0)
    out = cost_breakdown({"strategy": "iterdrag", "k": 4, "m": 2, "n": 2}, SIZES, cost)
    assert out.cost_per_query_usd == pytest.approx(9098e-6) and out.calls == 5
    assert out.output_tokens == 2 * (7 + 9) + 5


def test_bad_cost_inputs():
    with pytest.raises(UserError):
        CostModel(price_input_per_m=-1)
    with pytest.raises(UserError):
        CostModel(cache_hit_fraction=1.5)
    with pytest.raises(UserError):
        cost_breakdown({"k": 1}, SIZES)
