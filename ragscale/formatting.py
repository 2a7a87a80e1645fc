"""How numbers are shown to people: one token formatter and one money formatter for the whole app.

Kept here (no Streamlit, no plotting) so pages, figures and the CLI agree on "127k" and "$0.00004".
"""

from __future__ import annotations

import math

_TOKEN_UNITS = (("G", 1e9), ("M", 1e6), ("k", 1e3))


def fmt_tokens(value: float, digits: int = 4) -> str:
    """Token counts with a unit: 950 -> '950', 127_008 -> '127k', 979_923 -> '979.9k', 5e6 -> '5M'.

    ``digits`` significant digits, trailing zeros dropped, so the round budgets people type
    ('16k', '1M') come back exactly as typed.
    """
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    sign = "-" if value < 0 else ""
    value = abs(value)
    for unit, size in _TOKEN_UNITS:
        # Round first so 999_999.6 reads '1M', not '1000k'.
        if float(f"{value:.{digits}g}") >= size:
            return f"{sign}{float(f'{value / size:.{digits}g}'):g}{unit}"
    return f"{sign}{float(f'{value:.{digits}g}'):g}"


def fmt_usd(value: float) -> str:
    """Money with the precision that matters: '$787', '$26.20', '$0.026', '$0.000041', '$0'.

    Sums of a dollar or more get cents (thousands grouped, no cents from $1,000); smaller sums keep
    two significant digits, so a per-query cost of a few millionths never reads as '$0.0000'.
    """
    value = float(value)
    if not math.isfinite(value):
        return f"${value}"
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value == 0:
        return "$0"
    if value >= 1000:
        return f"{sign}${value:,.0f}"
    if value >= 1:
        return f"{sign}${value:,.2f}"
    decimals = max(2, 1 - math.floor(math.log10(value)))  # two significant digits
    return f"{sign}${value:.{decimals}f}"


__all__ = ["fmt_tokens", "fmt_usd"]
