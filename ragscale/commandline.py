"""What every command shares: help that shows real defaults, comma lists, a progress bar, a run's cost.

Each concern's ``cli.py`` builds its commands from these, so a list flag is parsed and a bar is
drawn the same way everywhere.
"""

from __future__ import annotations

import argparse
import difflib
import sys

from ragscale.errors import UserError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every command's help shows its defaults, but never "(default: None)", "(default: False)" for
    a switch, or a second default when the help text already says what happens without the flag."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text.lower() or "without it" in text:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse, but a mistyped flag is named (with the nearest real one) before anything else.

    Plain argparse reports a missing required flag first: ``allocate --budjet 128k`` said only
    "required: --budget". A command's own parser (one without subcommands) checks every ``--flag``
    it is given against its own flags first; abbreviations argparse accepts stay accepted.
    """

    def parse_known_args(self, args=None, namespace=None):
        if args is not None and not any(isinstance(a, argparse._SubParsersAction) for a in self._actions):
            self._check_flags(list(args))
        return super().parse_known_args(args, namespace)

    def _check_flags(self, args: list[str]) -> None:
        known = [flag for flag in self._option_string_actions if flag.startswith("--")]
        for arg in args:
            if arg == "--":
                break
            flag = arg.split("=", 1)[0]
            if not flag.startswith("--") or any(name.startswith(flag) for name in known):
                continue
            near = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
            self.error(f"unknown flag {flag}" + (f"; did you mean {near[0]}?" if near else
                                                 f" (see `{self.prog} --help`)"))


def use_help_formatter(parser: argparse.ArgumentParser) -> None:
    """``HelpFormatter`` for ``parser`` and every subcommand under it (so no command sets its own)."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:  # argparse keeps subcommands here; there is no public walk
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                use_help_formatter(sub)


def csv_list(text: str, label: str, cast=str, minimum: int | None = None) -> list:
    """``"a,b,c"`` as a list, for a flag or a page field (``label`` is how its user knows it:
    "--widths", "k"); one clear line for a bad value, an empty list or a value under ``minimum``."""
    try:
        values = [cast(part.strip()) for part in str(text).split(",") if part.strip()]
    except ValueError:
        kind = "whole numbers, like 0,1,2,5" if cast is int else "values"
        raise UserError(f"{label}: use comma-separated {kind} (got {str(text)[:40]!r})") from None
    if not values:
        raise UserError(f"{label}: give at least one value")
    if minimum is not None and any(v < minimum for v in values):
        raise UserError(f"{label} values must be >= {minimum}; got {str(text)[:40]!r}")
    return values


def progress_bar(desc: str, unit: str = "it", leave: bool = True):
    """A tqdm bar on stderr and the ``progress(done, total, message)`` callback that moves it.

    A new phase (``done`` going back, a new ``total``) or a message starting "resuming" restarts
    the bar's rate and ETA from that point, so a resumed job does not report a false speed.
    """
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int, message: str = "") -> None:
        if done < bar.n or bar.total != total or message.startswith("resuming"):
            bar.reset(total=total)
            bar.initial = bar.n = done
        else:
            bar.update(done - bar.n)
        bar.set_postfix_str(message[:70], refresh=True)

    return bar, progress


def with_run_cost(summary: dict, engine, as_json: bool) -> dict:
    """``summary`` plus ``cost``: what the provider bills for the engine's requests at its model's
    price sheet (``allocation.prices.run_cost``): the record for --json, its one line for people.
    Nothing is added where that is unknown (a local engine, a model no sheet names)."""
    from ragscale.allocation.prices import run_cost

    cost = run_cost(engine)
    return summary if cost is None else {**summary, "cost": cost if as_json else cost["line"]}
