"""How numbers read on every page and chart (one place, so "1.2M" means the same everywhere)."""

from __future__ import annotations


def fmt_tokens(n: float) -> str:
    """A token count for people: 950, 16k, 1.5M (three significant digits)."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"
