"""Token budgets as people type them ('16k', '1M', '1e6', 5_000_000) and the slider's stops.

One parser for the CLI, the calculator and the Explorer, so '1e12' and '1000000000000' get the same
answer everywhere: both are out of range, with the range in the message.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, DecimalException, Overflow

import numpy as np

from ragscale.errors import UserError
from ragscale.formatting import fmt_tokens

MIN_BUDGET = 1
# The paper's largest budget is 5M tokens; its grid (k <= 1000, m <= 256, n <= 5) cannot spend more
# than a few hundred million even without a context window. A billion leaves room and keeps every
# budget an exact integer in float64.
MAX_BUDGET = 1_000_000_000
_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}
_NUMBER = re.compile(
    r"\s*([+-]?(?:[0-9][0-9_,]*(?:\.[0-9_]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*([kKmMgG]?)\s*(?:tokens?)?\s*"
)


def _out_of_range(text) -> UserError:
    return UserError(f"invalid budget {text!r}: use {MIN_BUDGET} to {MAX_BUDGET:,} tokens "
                     f"({fmt_tokens(MAX_BUDGET)}) per question")


def parse_budget(text) -> int:
    """'16k', '1M', '1.5m', '1e6', '5_000_000', 128000 -> tokens; anything else -> one-line UserError.

    Text is read exactly (Decimal), so a huge integer is neither rounded nor turned into an
    overflowing float; every budget outside MIN_BUDGET..MAX_BUDGET is refused the same way.
    """
    if isinstance(text, bool):
        raise UserError(f"invalid budget {text!r}: use a token count like 16k, 128000, 1M or 5_000_000")
    if isinstance(text, (int, np.integer)):
        value = Decimal(int(text))
    elif isinstance(text, (float, np.floating)):
        if not math.isfinite(text):
            raise _out_of_range(text)
        value = Decimal(float(text))
    else:
        match = _NUMBER.fullmatch(str(text)) if len(str(text)) <= 64 else None
        if not match:
            raise UserError(f"invalid budget {str(text)[:64]!r}: use a token count like 16k, 128000, 1M or 5_000_000")
        try:
            value = Decimal(match.group(1).replace("_", "").replace(",", "")) * _SUFFIX[match.group(2).lower()]
        except Overflow:  # '1e999999999': a number, just far too large
            raise _out_of_range(text) from None
        except DecimalException:
            raise UserError(f"invalid budget {text!r}: use a token count like 16k, 128000, 1M or 5_000_000") from None
    if not value.is_finite() or value < MIN_BUDGET - Decimal("0.5") or value > MAX_BUDGET:
        raise _out_of_range(text)
    return max(MIN_BUDGET, int(value.to_integral_value()))


# The calculator's log slider: two significant digits from 1k to 10M, plus the paper's budgets.
BUDGET_OPTIONS = tuple(sorted({int(float(f"{b:.2g}")) for b in np.geomspace(1_000, 10_000_000, 49)}
                              | {16_000, 32_000, 128_000, 1_000_000, 5_000_000}))


def nearest_budget_option(budget, options=BUDGET_OPTIONS) -> int:
    """The slider stop closest to ``budget`` on a log scale (any size: math.log takes big ints)."""
    target = math.log(max(int(budget), 1))
    return min(options, key=lambda option: abs(math.log(option) - target))


__all__ = ["MIN_BUDGET", "MAX_BUDGET", "BUDGET_OPTIONS", "parse_budget", "nearest_budget_option"]
