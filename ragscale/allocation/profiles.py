"""Profiles: the fitted coefficients of a computation allocation model, as plain data.

The built-in profile is the paper's fit for Gemini 1.5 Flash (Yue et al. 2025, Table 8):
a = (0.325, 0.101, 0.177), b = (-0.067, -0.008, 0), c = -0.730, R^2 = 0.903, MSE = 0.085.

Two things the paper does not publish, decided here (and editable in the calculator):

- **i_doc and i_shot per dataset.** The paper measures them as the z-scored gain of one document
  (k=1 vs k=0) and of one demonstration (m=1 vs m=0), but does not report them. The default is a
  heuristic from Table 1: half the gain of the best 16k RAG (resp. many-shot) run over zero-shot,
  in z-units of that dataset and metric. Pass your own values to override.
- **The map from z-scores back to raw scores.** The paper fits z-scored scores (per dataset and
  metric) but does not publish the mean and standard deviation it used (they are over all its
  runs). The default uses the mean and standard deviation of the dataset's Table 1 scores for the
  metric. Table 1 holds only optimal runs, so predicted raw scores are an approximation; the
  *choice* of (k, m, n) does not depend on this map (it is increasing).

Every profile also carries the **context window** of the model it describes: no single call of a
configuration may exceed it (the budget bounds the sum over calls, the window each call). The paper
evaluates Gemini 1.5 Flash "with context length window up to 1M tokens" and its Table 1 reports DRAG
(one call) only up to 1M, IterDRAG (2n + 1 calls) up to 5M: ``GEMINI_15_FLASH_WINDOW`` = 1,000,000.
A fitted profile records the window of the engine its sweep ran on. ``None`` means unknown: the
optimiser then bounds only the sum, and the calculator says so.

Fitted profiles (from ``AllocationModel.fit(...).to_profile(name)``) are JSON files in
``profile_dirs()``; ``available_profiles()`` lists the built-in one plus every file found there
plus any registered in this process with ``register_profile``. That is the hook through which
pages pick up profiles fitted to real runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import pandas as pd

from ragscale.config import DATA_DIR, cache_dir
from ragscale.errors import UserError

TABLE1_FILE = "yue2025_table1.csv"
TABLE1_DATASETS = ("bamboogle", "hotpotqa", "musique", "2wikimultihopqa")
METRICS = ("em", "f1", "acc")
PAPER_NAME = "Gemini 1.5 Flash (Yue et al. 2025, Table 8)"
PAPER_A = (0.325, 0.101, 0.177)
PAPER_B = (-0.067, -0.008, 0.0)
PAPER_C = -0.730
# Yue et al. 2025 run Gemini 1.5 Flash "with context length window up to 1M tokens"; the largest
# one-call budget in their Table 1 is 1M (DRAG), so that is the window the paper's fit describes.
GEMINI_15_FLASH_WINDOW = 1_000_000


@dataclass(frozen=True)
class Profile:
    """Coefficients of sigma^-1(P) = (a + b*i)^T log(theta + eps) + c and how to read P back."""

    name: str
    a: tuple[float, float, float]
    b: tuple[float, float, float]
    c: float
    sigmoid: str = "paper"          # "paper" (fitted sigmoid, z-scored P) or "logistic" (P in [0, 1])
    eps: float = 0.01
    i_doc: float = 0.0
    i_shot: float = 0.0
    mean: float = 0.0               # raw score = mean + std * P   (paper sigmoid)
    std: float = 1.0                #           = std * P          (logistic; std is the score unit)
    dataset: str = ""
    metric: str = ""
    r2: float | None = None
    mse: float | None = None
    n_rows: int | None = None
    source: str = ""
    notes: str = ""
    i_by_dataset: dict = field(default_factory=dict)  # {dataset: [i_doc, i_shot]} from a fit
    context_window: int | None = None  # tokens one call may hold (prompt + output); None: unknown
    # Raw scores times this are percent: 1 when the runs were scored in percent (the paper's Table 1),
    # 100 when in fractions (a sweep's accuracy). Every predicted score leaves the optimiser in percent.
    score_scale: float = 1.0

    def __post_init__(self):
        if self.context_window is not None:
            try:
                window = int(self.context_window)
            except (TypeError, ValueError):
                raise UserError(f"context_window must be a whole number of tokens, got {self.context_window!r}") from None
            if window < 1:
                raise UserError(f"context_window must be positive, got {self.context_window!r}")
            object.__setattr__(self, "context_window", window)

    def __hash__(self):  # i_by_dataset is a dict; hash what identifies the coefficients
        return hash((self.name, self.a, self.b, self.c, self.sigmoid, self.i_doc, self.i_shot, self.mean, self.std,
                     self.context_window, self.score_scale))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["a"], data["b"] = list(self.a), list(self.b)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Profile":
        known = {f.name for f in fields(cls)}
        missing = {"name", "a", "b", "c"} - set(data)
        if missing:
            raise UserError(f"profile is missing {', '.join(sorted(missing))}")
        kwargs = {key: value for key, value in data.items() if key in known}
        kwargs["a"] = tuple(float(x) for x in data["a"])
        kwargs["b"] = tuple(float(x) for x in data["b"])
        if len(kwargs["a"]) != 3 or len(kwargs["b"]) != 3:
            raise UserError("profile a and b need three values each (k, m, n)")
        return cls(**kwargs)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Profile":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read profile {path}: {exc}") from exc


@lru_cache(maxsize=1)
def _table1_cached(path: str) -> pd.DataFrame:
    return pd.read_csv(path, comment="#")


def load_table1() -> pd.DataFrame:
    """Table 1 of Yue et al. 2025: columns l_max, method, dataset, em, f1, acc (scores in %)."""
    path = DATA_DIR / TABLE1_FILE
    if not path.exists():
        raise UserError(f"the paper's Table 1 is missing: {path}")
    return _table1_cached(str(path)).copy()


@lru_cache(maxsize=64)
def table1_scale(dataset: str, metric: str) -> tuple[float, float]:
    """Mean and standard deviation of one dataset's Table 1 scores for one metric."""
    table = load_table1()
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if dataset not in TABLE1_DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; Table 1 has {', '.join(TABLE1_DATASETS)}")
    scores = table.loc[table["dataset"] == dataset, metric].to_numpy(float)
    return float(scores.mean()), float(scores.std(ddof=0))


@lru_cache(maxsize=64)
def default_informativeness(dataset: str, metric: str) -> tuple[float, float]:
    """(i_doc, i_shot): half the z-scored 16k gain of RAG (many-shot) over zero-shot (heuristic)."""
    table = load_table1()
    mean, std = table1_scale(dataset, metric)
    at16k = table[(table["dataset"] == dataset) & (table["l_max"] == 16000)].set_index("method")[metric]
    zero = at16k["zero-shot"]
    return float(0.5 * (at16k["rag"] - zero) / std), float(0.5 * (at16k["many-shot"] - zero) / std)


def paper_profile(dataset: str = "hotpotqa", metric: str = "em",
                  i_doc: float | None = None, i_shot: float | None = None) -> Profile:
    """The paper's Gemini 1.5 Flash fit, read back as ``metric`` on ``dataset`` (see module doc)."""
    mean, std = table1_scale(dataset, metric)
    default_doc, default_shot = default_informativeness(dataset, metric)
    return Profile(
        name=PAPER_NAME, a=PAPER_A, b=PAPER_B, c=PAPER_C, sigmoid="paper", eps=0.01,
        i_doc=float(default_doc if i_doc is None else i_doc),
        i_shot=float(default_shot if i_shot is None else i_shot),
        mean=mean, std=std, dataset=dataset, metric=metric, r2=0.903, mse=0.085,
        context_window=GEMINI_15_FLASH_WINDOW,
        source="Yue et al. 2025 (ICLR), Table 8",
        notes=("a, b, c from the paper; i_doc/i_shot default to half the Table 1 16k gain of RAG/many-shot "
               "over zero-shot in z-units; raw scores use the mean/std of the dataset's Table 1 scores "
               "(approximation). Context window 1M tokens per call (Gemini 1.5 Flash as run in the paper)."),
    )


PAPER_PROFILE = paper_profile()

_REGISTERED: dict[str, Profile] = {}


def profile_dirs() -> list[Path]:
    """Where fitted profiles are looked for: shipped ones in data/profiles, then the user cache."""
    return [DATA_DIR / "profiles", cache_dir() / "profiles"]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "profile"


def save_profile(profile: Profile, directory: str | Path | None = None) -> Path:
    """Write a fitted profile where ``available_profiles`` finds it (default: the user cache)."""
    directory = Path(directory) if directory is not None else profile_dirs()[-1]
    return profile.save(directory / f"{slug(profile.name)}.json")


def register_profile(profile: Profile) -> None:
    """Make a profile available in this process (e.g. fitted moments ago on a page)."""
    _REGISTERED[profile.name] = profile


def available_profiles() -> dict[str, Profile]:
    """Built-in paper profile first, then fitted profiles on disk, then registered ones."""
    profiles = {PAPER_PROFILE.name: PAPER_PROFILE}
    for directory in profile_dirs():
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.json")):
            try:
                profile = Profile.load(path)
            except (UserError, TypeError, ValueError):
                continue  # a half-written or foreign file must not hide the others
            profiles[profile.name] = profile
    profiles.update(_REGISTERED)
    return profiles


def get_profile(name_or_path: str) -> Profile:
    """``paper``, a profile name from ``available_profiles()``, or a path to a profile JSON file."""
    if name_or_path in ("paper", "", None):
        return PAPER_PROFILE
    profiles = available_profiles()
    if name_or_path in profiles:
        return profiles[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        return Profile.load(path)
    raise UserError(f"unknown profile {name_or_path!r}; available: paper, {', '.join(profiles)}")
