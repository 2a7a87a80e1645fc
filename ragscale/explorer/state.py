"""Everything the Explorer shows, as one value: a frozen dataclass that travels in the URL.

A shared link must reproduce exactly what its sender saw, so the state is the single source
of truth: the page builds its widgets from it and writes it back to the query string on every
change. Decoding never fails: a value that does not parse or is out of range falls back to
its default and produces a notice the page shows, so a mangled link still opens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from ragscale.search.config import POLICY_NAMES as POLICIES
# "auto" lets the optimiser pick the strategy; the others are Yue et al.'s (ragscale.allocation).
STRATEGIES = ("auto", "zero-shot", "many-shot", "rag", "drag", "iterdrag")
PROFILES = ("paper", "fitted")

# The paper's search space (Yue et al. 2025): k <= 1000 documents, m <= 256 demonstrations,
# n <= 5 iterations; budgets from 10^3 to 10^7 tokens cover their 16k .. 5M with margin.
BUDGET_RANGE = (1_000, 10_000_000)
K_RANGE = (0, 1000)
M_RANGE = (0, 256)
N_RANGE = (1, 5)
WIDTH_RANGE = (1, 64)
QPD_RANGE = (1, 100_000_000)


@dataclass(frozen=True)
class ExplorerState:
    # The view opens on the task where the shipped model gains from search width (its library has
    # right answers to show); the demo QA world, where budget, k, m and n move the tree, is one click away.
    dataset: str = "arithmetic"
    question: str = ""  # question id; "" = one the library answers right, else the first multi-hop one
    budget: int = 16_000  # L_max, input tokens per question
    # The default opens on a small IterDRAG configuration that the shipped trees cover; unpin to
    # let the allocation model choose (k, m, n) for the budget.
    strategy: str = "iterdrag"  # "auto": the optimiser may pick any strategy
    pinned: bool = True  # True: k, m, n are the user's; False: re-optimised for the budget
    k: int = 2
    m: int = 1
    n: int = 2
    policy: str = "ets"
    width: int = 4  # beam width: the tree's total samples per depth (REBASE bookkeeping)
    profile: str = "fitted"  # allocation model: fitted to the stored runs (same model as the tree) or the paper's
    qpd: int = 1_000  # queries per day, for the monthly cost
    node: str = ""  # selected tree node, so a link can point at one
    present: bool = False  # presentation mode: large type, sidebar hidden

    def __post_init__(self) -> None:
        for name in FIELD_NAMES:
            problem = field_problem(name, getattr(self, name))
            if problem:
                raise ValueError(f"{name}: {problem}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_(self, **changes: Any) -> "ExplorerState":
        return replace(self, **changes)


def _check_int(value: int, bounds: tuple[int, int]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a whole number, got {shown(value)}"
    if not bounds[0] <= value <= bounds[1]:
        return f"must be between {bounds[0]:,} and {bounds[1]:,}, got {value:,}"
    return None


def _check_choice(value: str, choices: tuple[str, ...]) -> str | None:
    return None if value in choices else f"must be one of {', '.join(choices)}, got {shown(value)}"


def shown(value: Any, limit: int = 40) -> str:
    """A value as a notice echoes it: quoted, and cut short (a link can carry 20,000 characters)."""
    text = repr(value)
    if len(text) > limit:
        length = f"{len(value):,} characters" if isinstance(value, str) else "cut"
        text = f"{text[:limit]}… ({length})"
    return text


def _check_text(value: str) -> str | None:
    # Ids and dataset names go into file names and the URL: keep them short and printable.
    if not isinstance(value, str) or len(value) > 200 or not value.isprintable():
        return f"must be a short printable text, got {shown(value)}"
    return None


def _check_node(value: str) -> str | None:
    # A node is a number in the tree on screen ("" = none); the page checks that it exists there.
    if not isinstance(value, str) or (value and not (value.isdigit() and len(value) <= 6)):
        return f"must be a node number, got {shown(value)}"
    return None


_CHECKS = {
    "dataset": lambda v: _check_text(v) or (None if v else "must not be empty"),
    "question": _check_text,
    "budget": lambda v: _check_int(v, BUDGET_RANGE),
    "strategy": lambda v: _check_choice(v, STRATEGIES),
    "pinned": lambda v: None if isinstance(v, bool) else "must be true or false",
    "k": lambda v: _check_int(v, K_RANGE),
    "m": lambda v: _check_int(v, M_RANGE),
    "n": lambda v: _check_int(v, N_RANGE),
    "policy": lambda v: _check_choice(v, POLICIES),
    "width": lambda v: _check_int(v, WIDTH_RANGE),
    "profile": lambda v: _check_choice(v, PROFILES),
    "qpd": lambda v: _check_int(v, QPD_RANGE),
    "node": _check_node,
    "present": lambda v: None if isinstance(v, bool) else "must be true or false",
}


def field_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for field ``name`` (None when it is)."""
    return _CHECKS[name](value)


FIELD_NAMES = tuple(f.name for f in fields(ExplorerState))

# Where each world opens. Arithmetic at width 16, where ETS's pruning shows: at width 4 it keeps
# what REBASE keeps on 6 of the library's 8 problems, at 16 it keeps 1.44x less search KV at the
# same accuracy (data/explorer/README.md). Its question is chosen by a rule, not for the best
# figure: of the problems the model answers right at width 16, the one whose ETS search KV vs
# REBASE's is nearest the library's median change (the test of the opening view checks the rule on
# the shipped trees). Demo QA at width 4: a live QA tree at 16 takes several times the 10 s a live
# run may take on a CPU.
OPENINGS: dict[str, dict[str, Any]] = {"arithmetic": {"width": 16, "question": "arith-004"},
                                       "demo": {"width": 4, "question": ""}}
DEFAULT = ExplorerState(**OPENINGS["arithmetic"])


def opening_view(dataset: str) -> ExplorerState:
    """The view a world opens on (another dataset: the default's settings, any question)."""
    return DEFAULT.with_(dataset=dataset, **OPENINGS.get(dataset, {"question": ""}))


# ---- URL query string -------------------------------------------------------------------
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def format_budget(tokens: int) -> str:
    """128000 -> '128k', 1000000 -> '1M'; exact, so it parses back to the same integer."""
    for suffix, unit in (("M", 1_000_000), ("k", 1_000)):
        if tokens % unit == 0:
            return f"{tokens // unit}{suffix}"
    return str(tokens)


def _parse_value(name: str, raw: str) -> Any:
    """One URL value to its Python type; raises ValueError with a readable reason."""
    kind = type(getattr(DEFAULT, name))
    if kind is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"expected 1/0 or true/false, got {shown(raw)}")
    if name == "budget":
        from ragscale.allocation import parse_budget  # '16k', '1M', '5_000_000'

        try:
            return int(parse_budget(raw))
        except Exception:  # parse_budget raises UserError; any failure means "invalid"
            raise ValueError(f"expected a token count like 16k, 128000 or 1M, got {shown(raw)}") from None
    if kind is int:
        text = raw.strip().replace("_", "")
        if not text.lstrip("-").isdigit():
            raise ValueError(f"expected a whole number, got {shown(raw)}")
        return int(text)
    if name in ("policy", "strategy", "profile"):
        return raw.strip().lower()  # 'ETS' in a hand-typed link means ets
    return raw


def encode(state: ExplorerState) -> dict[str, str]:
    """The whole state as query parameters (every field, so a link is exact and self-contained)."""
    out: dict[str, str] = {}
    for name in FIELD_NAMES:
        value = getattr(state, name)
        if isinstance(value, bool):
            out[name] = "1" if value else "0"
        elif name == "budget":
            out[name] = format_budget(value)
        else:
            out[name] = str(value)
    return out


def decode(params: Mapping[str, Any], base: ExplorerState = DEFAULT) -> tuple[ExplorerState, list[str]]:
    """Query parameters -> (state, notices). Unknown keys are ignored; bad values fall back.

    Each field is checked on its own, so one bad value does not discard the good ones.
    ``params`` may map to strings or to lists of strings (the last one wins, as in Streamlit).
    """
    values: dict[str, Any] = {}
    notices: list[str] = []
    world = params.get("dataset")
    world = str(world[-1] if isinstance(world, (list, tuple)) and world else world or "")
    if base is DEFAULT and world and world != DEFAULT.dataset and field_problem("dataset", world) is None:
        base = opening_view(world)  # "?dataset=demo" opens (and falls back to) the demo world's view
    for name in FIELD_NAMES:
        if name not in params:
            continue
        raw = params[name]
        if isinstance(raw, (list, tuple)):
            raw = raw[-1] if raw else ""
        raw = str(raw)
        try:
            value = _parse_value(name, raw)
            problem = field_problem(name, value)
        except ValueError as exc:
            problem = str(exc)
        if problem:
            notices.append(f"Link value {name}={shown(raw)} is not valid ({problem}); "
                           f"using {encode(base)[name]!r} instead.")
        else:
            values[name] = value
    return replace(base, **values), notices


def from_dict(data: Mapping[str, Any]) -> ExplorerState:
    """A state from an exported JSON/YAML mapping (strict: raises ValueError on any problem)."""
    unknown = set(data) - set(FIELD_NAMES)
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return replace(DEFAULT, **dict(data))
