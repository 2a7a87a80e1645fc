"""The one token formatter and the money formatter (ragscale.formatting)."""

import pytest

from ragscale.formatting import fmt_tokens, fmt_usd


@pytest.mark.parametrize("value, text", [
    (0, "0"), (950, "950"), (1_000, "1k"), (16_000, "16k"), (127_008, "127k"), (979_923, "979.9k"),
    (999_999.6, "1M"), (1_000_000, "1M"), (5_000_000, "5M"), (4_952_327, "4.952M"), (1_000_000_000, "1G"),
    (15_708, "15.71k"), (-2_000, "-2k"),
])
def test_fmt_tokens(value, text):
    assert fmt_tokens(value) == text


@pytest.mark.parametrize("value, text", [
    (0, "$0"), (0.000041, "$0.000041"), (0.0000412, "$0.000041"), (0.00402, "$0.0040"), (0.0262, "$0.026"),
    (0.5, "$0.50"), (26.2, "$26.20"), (787.4, "$787.40"), (1234.5, "$1,234"), (-0.5, "-$0.50"),
])
def test_fmt_usd(value, text):
    assert fmt_usd(value) == text


def test_a_tiny_cost_never_reads_as_zero():
    for value in (1e-3, 3.3e-5, 4.1e-6, 7e-9):
        shown = fmt_usd(value)
        assert any(ch in "123456789" for ch in shown), shown
