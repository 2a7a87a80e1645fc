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


# What can turn plain text into something else in Streamlit's markdown: link and image brackets,
# HTML and autolink angle brackets, emphasis, code, tables, maths, entities, and ":" before a word
# or "/" (":red[...]", ":material/icon:"). Punctuation that only means something at the start of
# a line ("-", "+", "1.") is escaped there. The rest (",", "(", "-" mid-line...) stays as typed, so
# messages read normally in the page's source too.
_MARKDOWN_ACTIVE = re.compile(r"""[\\`*_{}\[\]<>#|~$&]|:(?=[\w/])""")
# GFM's bare-URL links are found in the text *after* backslash escapes are resolved (checked in
# Chromium), so no escape stops them: an invisible WORD JOINER (U+2060) inside "://", after "www"
# and before "@" does, and the text still reads the same.
_BARE_LINK = re.compile(r"(?=://)|(?<=www)(?=\.)|(?=@)", re.IGNORECASE)
WORD_JOINER = "\u2060"
# At the start of the text: a list item ("- x", "+ x", "1. x", "1) x") or a heading underline.
_LINE_START = re.compile(r"^(\s*)([-+=]|\d+(?=[.)]))")


def md_literal(value) -> str:
    """Untrusted text (a model name an engine reports, a server's answer, a link's value, a stored
    record, a typed path echoed in an error) made safe to put into anything Streamlit renders as
    markdown: shown as typed, never as a link, an image, an icon, maths or formatting.

    Line breaks become spaces, so a value never starts a heading, list or table of its own."""
    text = " ".join(str(value).splitlines())
    text = _BARE_LINK.sub(WORD_JOINER, text)
    text = _MARKDOWN_ACTIVE.sub(lambda m: "\\" + m.group(0), text)
    start = _LINE_START.match(text)
    if start:  # "1." keeps its digits and escapes the "." or ")"; "-", "+", "=" get the backslash
        cut = start.end()
        text = (text[:cut] + "\\" + text[cut:]) if start.group(2)[0].isdigit() else \
            (start.group(1) + "\\" + text[len(start.group(1)):])
    return text


__all__ = ["fmt_tokens", "fmt_usd", "md_literal"]
