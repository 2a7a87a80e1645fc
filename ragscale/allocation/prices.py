"""Price sheets as data: what a provider bills for a model, tier by tier of prompt length.

A sheet is a YAML file (``data/prices/*.yaml``, or one in the user cache's ``prices`` folder) with
provider, model, date, source and tiers; every tier gives USD per 1M uncached input, cached input
and output tokens for prompts up to ``max_prompt_tokens`` (the last tier: no bound). Providers bill
each call on its own prompt, so a question's calls can fall in different tiers (``CostModel`` in
``cost`` bills call by call).

``run_cost(engine)`` is the bill of a real run: the provider's own usage counts of an engine that
bills by usage (``OpenAIEngine.cost_usd``), priced at the sheet that names the served model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from ragscale.config import PROJECT_ROOT, cache_dir
from ragscale.errors import UserError
from ragscale.formatting import fmt_tokens, fmt_usd

SHIPPED_SHEETS = PROJECT_ROOT / "data" / "prices"
DEFAULT_SHEET = "gemini-1.5-flash"


@dataclass(frozen=True)
class Tier:
    """Rates (USD per 1M tokens) for prompts of at most ``max_prompt_tokens`` (None: any length)."""

    max_prompt_tokens: int | None
    input: float
    cached_input: float
    output: float
    name: str = ""

    def __post_init__(self):
        for key in ("input", "cached_input", "output"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UserError(f"price tier {self.label}: {key} must be a non-negative number, got {value!r}")
        if self.max_prompt_tokens is not None and (not isinstance(self.max_prompt_tokens, int)
                                                   or self.max_prompt_tokens < 1):
            raise UserError(f"price tier: max_prompt_tokens must be a positive whole number or null, "
                            f"got {self.max_prompt_tokens!r}")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return "any prompt" if self.max_prompt_tokens is None else f"prompts <= {fmt_tokens(self.max_prompt_tokens)}"


@dataclass(frozen=True)
class PriceSheet:
    provider: str
    model: str
    date: str
    source: str
    tiers: tuple[Tier, ...]
    currency: str = "USD"

    def __post_init__(self):
        if not self.tiers:
            raise UserError("a price sheet needs at least one tier")
        bounds = [t.max_prompt_tokens for t in self.tiers]
        if bounds[-1] is not None or None in bounds[:-1]:
            raise UserError("a price sheet's last tier (and only the last) has no max_prompt_tokens")
        if bounds[:-1] != sorted(set(bounds[:-1])):
            raise UserError("price tiers must be in increasing order of max_prompt_tokens")

    @property
    def title(self) -> str:
        return f"{self.model} ({self.provider}, {self.date})"

    def tier_for(self, prompt_tokens: float) -> Tier:
        """The tier a call with this many prompt tokens is billed at."""
        return next(t for t in self.tiers if t.max_prompt_tokens is None or prompt_tokens <= t.max_prompt_tokens)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tiers"] = [asdict(t) for t in self.tiers]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PriceSheet":
        if not isinstance(data, dict):
            raise UserError("a price sheet is a mapping with provider, model, date, source and tiers")
        missing = {"provider", "model", "date", "source", "tiers"} - set(data)
        if missing:
            raise UserError(f"price sheet is missing {', '.join(sorted(missing))}")
        try:
            tiers = tuple(Tier(**{key: tier[key] for key in ("max_prompt_tokens", "input", "cached_input", "output")},
                               name=str(tier.get("name") or "")) for tier in data["tiers"])
        except (KeyError, TypeError) as exc:
            raise UserError(f"each price tier needs max_prompt_tokens, input, cached_input and output ({exc})") from None
        return cls(str(data["provider"]), str(data["model"]), str(data["date"]), str(data["source"]).strip(), tiers,
                   str(data.get("currency", "USD")))

    @classmethod
    def flat(cls, input: float, cached_input: float, output: float) -> "PriceSheet":
        """One rate for every prompt length (the CLI's --price-* flags)."""
        return cls("custom", "flat rates", "-", "typed by the user", (Tier(None, input, cached_input, output, "flat"),))


def sheet_dirs() -> list[Path]:
    return [SHIPPED_SHEETS, cache_dir() / "prices"]


def available_sheets() -> dict[str, Path]:
    """Sheet name (the file's stem) -> path; the shipped ones first, then the user cache's."""
    found = {}
    for directory in sheet_dirs():
        if directory.is_dir():
            found.update({path.stem: path for path in sorted(directory.glob("*.yaml"))})
    return found


@lru_cache(maxsize=32)
def _read(path: str, mtime: float) -> PriceSheet:
    try:
        return PriceSheet.from_dict(yaml.safe_load(Path(path).read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read price sheet {path}: {exc}") from None


def load_sheet(name_or_path: str = DEFAULT_SHEET) -> PriceSheet:
    """A sheet by name (``available_sheets``) or by the path of a YAML file."""
    sheets = available_sheets()
    path = sheets.get(name_or_path) or Path(name_or_path)
    if not path.is_file():
        raise UserError(f"unknown price sheet {name_or_path!r}; available: {', '.join(sheets) or 'none'}")
    return _read(str(path), path.stat().st_mtime)


def _model_key(name: str) -> str:
    """A model name without case, spacing or a provider prefix ("models/", "google/")."""
    return "-".join(name.strip().lower().rsplit("/", 1)[-1].split())


def sheet_for_model(model: str) -> tuple[str, PriceSheet] | None:
    """(name, sheet) of the price sheet for a served model, or None when no sheet names it.

    A sheet names a model by its file name or its ``model`` field, case, spacing and a provider
    prefix aside. Only exact names match: a variant (``-8b``, a dated snapshot) can be priced
    differently, and a wrong price is worse than none."""
    wanted = _model_key(model)
    sheets = available_sheets()
    by_file_name = {_model_key(name): name for name in sheets}
    if wanted in by_file_name:
        return by_file_name[wanted], load_sheet(by_file_name[wanted])
    for name in sheets:
        try:
            sheet = load_sheet(name)
        except UserError:  # a broken sheet in the user cache names no model
            continue
        if _model_key(sheet.model) == wanted:
            return name, sheet
    return None


def billing_mark(engine) -> int:
    """Where a run starts in ``engine``'s bill: pass it to ``run_cost(engine, since=)`` after the run."""
    return getattr(engine, "billed_requests", 0)


def run_cost(engine, since: int = 0) -> dict | None:
    """What the provider bills for ``engine``'s requests (from the ``since``-th billed one on; see
    ``billing_mark``), at the price sheet of its model: ``cost_usd``'s parts plus ``sheet``,
    ``date`` and ``line`` (one line for a run summary). None, not $0, when the engine does not
    bill by usage (the embedded and SGLang engines) or no sheet names its model."""
    info = getattr(engine, "known_info", None)
    if not hasattr(engine, "cost_usd") or info is None:
        return None
    found = sheet_for_model(info.model)
    if found is None:
        return None
    name, sheet = found
    cost = engine.cost_usd(sheet, since=since)
    return {**cost, "sheet": name, "date": sheet.date,
            "line": f"{fmt_usd(cost['total_usd'])} at {name} prices, {sheet.date}"}


__all__ = ["DEFAULT_SHEET", "PriceSheet", "Tier", "available_sheets", "billing_mark", "load_sheet", "run_cost",
           "sheet_dirs", "sheet_for_model"]
