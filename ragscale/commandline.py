"""What every command shares: help that shows real defaults, comma lists, a progress bar.

Each concern's ``cli.py`` builds its commands from these, so a list flag is parsed and a bar is
drawn the same way everywhere.
"""

from __future__ import annotations

import argparse
import sys

from ragscale.errors import UserError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only when there is one to show: never "(default: None)", never twice."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default:" in text or "without it" in text:
            return text
        return super()._get_help_string(action)


def csv_list(text: str, name: str, cast=str, minimum: int | None = None) -> list:
    """``--name a,b,c`` as a list; a clear error for a bad or empty list."""
    try:
        values = [cast(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--{name} takes a comma-separated list; got {text!r}") from None
    if not values:
        raise UserError(f"--{name} is empty")
    if minimum is not None and any(v < minimum for v in values):
        raise UserError(f"--{name} values must be >= {minimum}; got {text!r}")
    return values


def progress_bar(desc: str):
    """A tqdm bar on stderr and the ``progress(done, total, message)`` callback that moves it."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int, message: str = "") -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(message[:70], refresh=False)
        bar.refresh()

    return bar, progress
