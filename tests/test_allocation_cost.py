"""Cost and latency of a configuration, checked against hand arithmetic."""

import pytest

from ragscale.allocation import CostModel, TokenSizes, cost_breakdown
from ragscale.allocation.context_length import calls, token_usage
from ragscale.allocation.prices import PriceSheet, Tier, available_sheets, load_sheet
from ragscale.errors import UserError

SIZES = TokenSizes(doc=100, question=10, answer=5, subquery=7, intermediate=9, instruction=20, demo_steps=2)


def test_drag_cost_by_hand():
    # drag k=4 m=2: 1260 input tokens, 850 of them the shared prefix (instruction + demonstrations).
    cost = CostModel(PriceSheet.flat(1.0, 0.25, 4.0), queries_per_day=1000,
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
    cost = CostModel(PriceSheet.flat(1.0, 0.0, 0.0), cache_hit_fraction=0.0)
    out = cost_breakdown({"strategy": "iterdrag", "k": 4, "m": 2, "n": 2}, SIZES, cost)
    assert out.cost_per_query_usd == pytest.approx(9098e-6) and out.calls == 5
    assert out.output_tokens == 2 * (7 + 9) + 5


def test_bad_cost_inputs():
    with pytest.raises(UserError):
        PriceSheet.flat(-1, 0, 0)
    with pytest.raises(UserError):
        CostModel(cache_hit_fraction=1.5)
    with pytest.raises(UserError):
        cost_breakdown({"k": 1}, SIZES)


def test_the_shipped_gemini_sheet_records_who_when_and_where():
    sheet = load_sheet("gemini-1.5-flash")
    assert "gemini-1.5-flash" in available_sheets()
    assert sheet.model == "Gemini 1.5 Flash" and sheet.provider.startswith("Google") and sheet.date and sheet.source
    short, long = sheet.tiers
    assert (short.max_prompt_tokens, short.input, short.output, short.cached_input) == (128_000, 0.075, 0.30, 0.01875)
    assert (long.max_prompt_tokens, long.input, long.output, long.cached_input) == (None, 0.15, 0.60, 0.0375)
    assert sheet.tier_for(128_000) is short and sheet.tier_for(128_001) is long


def test_every_call_is_billed_at_its_own_prompts_tier():
    """Issue #23 (3): a 979,923-token prompt was billed at the <= 128k rates."""
    sheet = PriceSheet("test", "m", "2024", "here", (Tier(1_500, 1.0, 0.5, 2.0), Tier(None, 10.0, 5.0, 20.0)))
    # iterdrag k=4 m=2 n=2 with SIZES: prompts 1324, 1731, 1740, 2147, 2156 tokens: only the first is short
    config = {"strategy": "iterdrag", "k": 4, "m": 2, "n": 2}
    prompts = [c["prompt"] for c in calls("iterdrag", 4, 2, 2, SIZES)]
    assert prompts == [1324, 1731, 1740, 2147, 2156]
    out = cost_breakdown(config, SIZES, CostModel(sheet, cache_hit_fraction=0.0))
    assert [b["tier"] for b in out.call_bills] == ["prompts <= 1.5k"] + ["any prompt"] * 4
    by_hand = prompts[0] * 1.0 + sum(prompts[1:]) * 10.0 + 7 * 2.0 + (9 + 7 + 9 + 5) * 20.0
    assert out.cost_per_query_usd == pytest.approx(by_hand / 1e6)


def test_calls_add_up_to_the_effective_length_and_the_largest_call():
    for strategy, k, m, n in (("drag", 933, 6, 1), ("iterdrag", 13, 1, 2), ("iterdrag", 3, 2, 5), ("rag", 5, 0, 1)):
        parts, usage = calls(strategy, k, m, n, SIZES), token_usage(strategy, k, m, n, SIZES)
        assert sum(c["prompt"] for c in parts) == pytest.approx(float(usage["input"]))
        assert sum(c["cacheable"] for c in parts) == pytest.approx(float(usage["cacheable"]))
        assert sum(c["output"] for c in parts) == pytest.approx(float(usage["output"]))
        assert parts[-1]["prompt"] + parts[-1]["output"] == pytest.approx(float(usage["largest_call"]))


@pytest.mark.parametrize("tiers", [(), (Tier(None, 1, 1, 1), Tier(None, 1, 1, 1)), (Tier(1000, 1, 1, 1),),
                                   (Tier(2000, 1, 1, 1), Tier(1000, 1, 1, 1), Tier(None, 1, 1, 1))])
def test_a_sheet_without_one_open_last_tier_in_order_is_refused(tiers):
    with pytest.raises(UserError):
        PriceSheet("p", "m", "d", "s", tiers)
