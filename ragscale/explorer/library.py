"""The Explorer's tree library: one JSON record per search tree, found by key or by nearest key.

A tree depends on (dataset, question, policy, width, n, k, m). ``ragscale explorer-precompute``
fills the grid below (every policy x ``GRID_WIDTHS`` x ``GRID_SHAPES`` x a few questions) into
``data/explorer/``; "Run live" keeps its trees in the viewer's session (``live_layer``), never
here, so a live run never replaces a bundled tree nor changes what a link shows. Between grid points, or
where the grid is not filled yet, the nearest stored tree is shown with a note that says how near.

Two worlds have trees: the demo QA world (IterDRAG steps with retrieval, so k, m and n shape the
tree) and the arithmetic task (``ragscale.search.tasks.arithmetic``, one line per step, checked by
rules), on which the shipped model gains from width. Arithmetic has no documents, demonstrations
or iterations, so its keys carry k = m = n = 0 and only the policy and the width move its tree.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ragscale.config import DATA_DIR
from ragscale.errors import UserError

SHIPPED_TREES = DATA_DIR / "explorer"
# The grid the bundled library covers: widths x (k, m, n) shapes, for every policy.
GRID_WIDTHS = (1, 2, 4, 8, 16)
GRID_SHAPES = ((2, 1, 2), (5, 1, 2), (1, 0, 1), (2, 1, 3))  # (k, m, n); the first is the default view
KNOBS = ("width", "k", "m", "n")
# Datasets that are not retrieval QA, and the search task that reads them.
SEARCH_TASKS = {"arithmetic": "arithmetic"}
ARITHMETIC_WIDTHS = (1, 2, 4, 8, 16, 32)  # the bundled search sweep's widths (data/search_results.md)

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class TreeKey:
    """What a tree depends on: the question, the search policy and width, and (n, k, m)."""

    dataset: str
    question: str
    policy: str
    width: int
    n: int
    k: int
    m: int

    def filename(self) -> str:
        safe = lambda text: _SAFE.sub("_", text)  # noqa: E731
        return (f"{safe(self.dataset)}__{safe(self.question)}__{self.policy}"
                f"-w{self.width}-n{self.n}-k{self.k}-m{self.m}.json")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TreeKey":
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    def with_(self, **changes) -> "TreeKey":
        return TreeKey(**{**self.to_dict(), **changes})


def task_of(dataset: str) -> str:
    """The search task of a dataset's trees: ``qa`` (IterDRAG with retrieval) unless listed;
    ``arithmetic-s<SEED>`` (held-out arithmetic problems) is the arithmetic task too."""
    if dataset.startswith("arithmetic-s"):
        return "arithmetic"
    return SEARCH_TASKS.get(dataset, "qa")


def tree_key(dataset: str, question: str, policy: str, width: int, n: int, k: int, m: int) -> TreeKey:
    """The key of the tree a view asks for: (k, m, n) only where the task has them."""
    if task_of(dataset) != "qa":
        return TreeKey(dataset, question, policy, width, 0, 0, 0)
    return TreeKey(dataset, question, policy, width, n, k, m)


def _log_gap(a: int, b: int) -> float:
    return abs(math.log2(1 + a) - math.log2(1 + b))


def key_distance(want: TreeKey, have: TreeKey) -> tuple:
    """Lexicographic: same question, then same policy, then closest knobs (log scale)."""
    knobs = sum(_log_gap(getattr(want, f), getattr(have, f)) for f in KNOBS)
    return (want.question != have.question, want.policy != have.policy, knobs)


def on_grid(key: TreeKey) -> bool:
    if task_of(key.dataset) != "qa":
        return key.width in ARITHMETIC_WIDTHS
    return key.width in GRID_WIDTHS and (key.k, key.m, key.n) in GRID_SHAPES


class TreeLibrary:
    """Tree records on disk, in one or more folders; later folders win on equal keys.

    The index (key -> file) is rebuilt only when a folder changes (its modification time), so a
    slider move costs a dictionary lookup, and it holds one entry per file that exists.
    """

    def __init__(self, *directories: str | Path):
        self.directories = [Path(d) for d in directories]
        self._stamp: tuple | None = None
        self._index: dict[TreeKey, Path] = {}
        self._outcomes: dict[TreeKey, bool | None] = {}

    def _folder_stamp(self) -> tuple:
        return tuple(d.stat().st_mtime_ns if d.is_dir() else None for d in self.directories)

    def _refresh(self) -> None:
        stamp = self._folder_stamp()
        if stamp != self._stamp:
            found: dict[TreeKey, Path] = {}
            outcomes: dict[TreeKey, bool | None] = {}
            for directory in self.directories:
                if directory.is_dir():
                    for path in sorted(directory.glob("*.json")):
                        head = read_head(path)
                        if head is not None:
                            found[head[0]], outcomes[head[0]] = path, head[1]
            self._index, self._outcomes, self._stamp = found, outcomes, stamp

    def index(self) -> dict[TreeKey, Path]:
        self._refresh()
        return self._index

    def outcomes(self) -> dict[TreeKey, bool | None]:
        """Whether each stored tree's answer is right (None when the record does not say)."""
        self._refresh()
        return self._outcomes

    def nearest(self, want: TreeKey) -> tuple[TreeKey | None, bool]:
        """(key, exact): the exact key when stored, else the nearest stored key (None if empty)."""
        index = self.index()
        if want in index:
            return want, True
        same = [have for have in index if have.dataset == want.dataset]  # never another dataset's tree
        if not same:
            return None, False
        return min(same, key=lambda have: (key_distance(want, have), have.filename())), False

    def path(self, key: TreeKey) -> Path | None:
        return self.index().get(key)

    def save(self, record: dict, directory: str | Path | None = None) -> Path:
        directory = Path(directory) if directory is not None else self.directories[-1]
        directory.mkdir(parents=True, exist_ok=True)
        key = TreeKey.from_dict(record["key"])
        path = directory / key.filename()
        tmp = path.with_suffix(".tmp")
        # Key and outcome first, so ``read_head`` finds them without parsing the whole tree.
        head = {"key": record["key"], "correct": bool(record.get("correct"))}
        tmp.write_text(json.dumps({**head, **record}, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)  # never leave a half-written tree for a page to read
        return path


_HEAD = '{"key": '
_CORRECT = re.compile(r'\s*,\s*"correct":\s*(true|false)')


def read_head(path: Path) -> tuple[TreeKey, bool | None] | None:
    """(key, correct) of a tree file, from its first bytes when ``TreeLibrary.save`` wrote it
    (None for a file that is not a tree record)."""
    try:
        with open(path, encoding="utf-8") as handle:
            head = handle.read(1000)
        if head.startswith(_HEAD):
            key, end = json.JSONDecoder().raw_decode(head, len(_HEAD))
            match = _CORRECT.match(head, end)
            correct = None if match is None else match.group(1) == "true"
        else:  # an older file: parse it whole
            record = json.loads(Path(path).read_text(encoding="utf-8"))
            key, correct = record["key"], record.get("correct")
        return TreeKey.from_dict(key), correct
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_record(path: str | Path) -> dict:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read tree file {path}: {exc}") from exc
    from ragscale.search.tree import Tree

    Tree.from_dict(record["tree"])  # fail here, with the file named, not later in a figure
    return record


def nearness(want: TreeKey, shown: TreeKey | None, exact: bool) -> str:
    """The note under a tree that is not the requested one: what differs, and why."""
    if shown is None:
        return "No tree for this configuration yet: press “Run live” to search it."
    if exact:
        return ""
    diffs = [f"{name} {getattr(shown, name)} (asked {getattr(want, name)})"
             for name in ("question", "policy") + KNOBS if getattr(shown, name) != getattr(want, name)]
    why = ("between the library's grid points" if not on_grid(want)
           else "this grid point is not in the library yet")
    return f"Nearest stored tree ({why}): differs in " + ", ".join(diffs) + ". “Run live” searches the exact one."


def same_view(library: TreeLibrary, want: TreeKey) -> TreeKey | None:
    """The stored tree of ``want``'s question, policy and width, the closest in (n, k, m); None when
    the library has no tree of that question, policy and width (never another question's tree)."""
    same = [have for have in library.index() if (have.dataset, have.question, have.policy, have.width)
            == (want.dataset, want.question, want.policy, want.width)]
    return min(same, key=lambda have: (key_distance(want, have), have.filename()), default=None)
