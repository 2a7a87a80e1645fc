"""How values are shown to people: one token formatter, one money formatter and one escaper of
untrusted text for the whole app.

Kept here (no Streamlit, no plotting) so pages, figures and the CLI agree on "127k" and "$0.00004".
"""

from __future__ import annotations

import math
import re

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


# Every ASCII punctuation mark CommonMark lets a backslash escape. Escaping all of them (not only
# "[]()!") also defeats what Streamlit adds to markdown: GFM's bare-URL links ("http://", "www."),
# ":material/icon:" and ":red[...]" directives, "$...$" maths and "<...>" autolinks.
_MARKDOWN_PUNCTUATION = re.compile(r"""([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])""")


def md_literal(value) -> str:
    """Untrusted text (a model name an engine reports, a server's answer, a link's value, a stored
    record, a typed path echoed in an error) made safe to put into anything Streamlit renders as
    markdown: shown as typed, never as a link, an image, an icon, maths or formatting.

    Line breaks become spaces, so a value never starts a heading, list or table of its own."""
    text = " ".join(str(value).splitlines())
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


__all__ = ["fmt_tokens", "fmt_usd", "md_literal"]
