"""One dataclass for every search setting, and YAML recipes with the papers' defaults.

Recipes live in ``ragscale/recipes/<name>.yaml`` (ets, rebase, beam, dvts, bon). Each field's
``metadata["help"]`` is the one description of that setting: the command line builds its flags
from it (``ragscale.search.cli``), so a new setting is declared here once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ragscale.errors import UserError

POLICY_NAMES = ("ets", "rebase", "beam", "dvts", "bon")
# How pages and charts name the policies (one place, so every legend agrees).
POLICY_LABELS = {"ets": "ETS", "rebase": "REBASE", "beam": "Beam search", "dvts": "DVTS", "bon": "Best-of-N"}
KV_COSTS = ("tokens", "nodes")
# The arithmetic task's step checkers: pass/fail, and pass/fail times the generator's step confidence.
RULE_VERIFIERS = ("rules", "rules-graded")
# Settings only ETS reads: another policy's tree is the same whatever they say.
ETS_ONLY_SETTINGS = ("lambda_b", "lambda_d", "cluster_threshold", "kv_cost")


# Bounds that keep a typo from asking the engine for terabytes of KV (--width 100000000 did):
# the papers' searches go to width 256 and a few dozen steps of at most a few hundred tokens.
MAX_WIDTH = 1024
MAX_DEPTH = 1000
MAX_STEP_TOKENS = 32_768


def _setting(default: Any, help: str, flag: str | None = None, choices: tuple | None = None):
    """A field with its command-line description (``flag`` when the flag is not the field's name)."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


@dataclass(frozen=True)
class SearchConfig:
    policy: str = _setting("ets", "search policy", choices=POLICY_NAMES)
    # total trajectories: children sampled per depth = width - finished so far
    width: int = _setting(16, "search width: trajectories sampled per depth, shared among kept branches")
    # ETS (Hooper et al. 2025): cost weight, diversity weight; the paper's MATH500 defaults.
    lambda_b: float = _setting(1.0, "ETS weight of the retained-KV cost")
    # lambda_d 0 was chosen on a dev split (make ets-tuning; bench ets-tuning): the paper's 1.5 kept 5.9%
    # more search KV at the same accuracy there. Every policy's config carries it (a sweep of
    # "rebase,ets" builds both from one base), so it is frozen here and in the ETS recipe alike.
    lambda_d: float = _setting(0.0, "ETS weight of semantic diversity (paper: 1.5; 0 was chosen on a dev split)")
    temperature: float = _setting(0.2, "softmax temperature of the REBASE shares")
    cluster_threshold: float = _setting(
        0.05, "ETS: cosine distance at which steps' embeddings are cut into clusters (paper: 0.05)")
    kv_cost: str = _setting("tokens", "ETS KV cost of a node: its tokens over the search's own (the prompt out), or "
                            "1 per node, root counted (the public code's)", choices=KV_COSTS)
    max_depth: int = _setting(25, "maximum steps (tree depth)")
    step_max_tokens: int = _setting(256, "token cap per step", flag="step-tokens")
    sampling_temperature: float = _setting(1.0, "sampling temperature of each step")
    seed: int = _setting(0, "sampling seed")

    def __post_init__(self) -> None:
        if self.policy not in POLICY_NAMES:
            raise UserError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICY_NAMES)}")
        if self.kv_cost not in KV_COSTS:
            raise UserError(f"kv_cost must be one of {KV_COSTS}, got {self.kv_cost!r}")
        checks = [
            (isinstance(self.width, int) and 1 <= self.width <= MAX_WIDTH, f"width must be an integer from 1 to {MAX_WIDTH}"),
            (self.lambda_b >= 0, "lambda_b must be >= 0"),
            (self.lambda_d >= 0, "lambda_d must be >= 0"),
            (self.temperature > 0, "temperature (softmax) must be > 0"),
            (0 <= self.cluster_threshold <= 2, "cluster_threshold is a cosine distance, in [0, 2]"),
            (isinstance(self.max_depth, int) and 1 <= self.max_depth <= MAX_DEPTH,
             f"max_depth must be an integer from 1 to {MAX_DEPTH}"),
            (isinstance(self.step_max_tokens, int) and 1 <= self.step_max_tokens <= MAX_STEP_TOKENS,
             f"step_max_tokens must be from 1 to {MAX_STEP_TOKENS:,}"),
            (self.sampling_temperature >= 0, "sampling_temperature must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def replace(self, **changes: Any) -> "SearchConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise UserError(f"unknown search setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def flag_name(f: dataclasses.Field) -> str:
    """The command-line flag of a ``SearchConfig`` field (``--lambda-b``, ``--step-tokens``)."""
    return "--" + (f.metadata.get("flag") or f.name.replace("_", "-"))


def recipe_names() -> list[str]:
    folder = resources.files("ragscale") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str | Path, **overrides: Any) -> SearchConfig:
    """A recipe by name (``"ets"``) or path to a YAML file; ``overrides`` win over its values."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"recipe file not found: {path}")
        text = path.read_text(encoding="utf-8")
        where = str(path)
    else:
        resource = resources.files("ragscale") / "recipes" / f"{name_or_path}.yaml"
        if not resource.is_file():
            raise UserError(f"unknown recipe {name_or_path!r}; available: {', '.join(recipe_names())}")
        text = resource.read_text(encoding="utf-8")
        where = f"recipe {name_or_path!r}"
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{where} is not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise UserError(f"{where} must be a mapping of settings")
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(SearchConfig)}
    unknown = set(values) - known
    if unknown:
        raise UserError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    try:
        return SearchConfig(**values)
    except TypeError as exc:
        raise UserError(f"{where}: {exc}") from exc
