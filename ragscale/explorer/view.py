"""From an ``ExplorerState`` to what the Explorer shows, by composing the other concerns.

Nothing here is a second implementation: the allocation model, optimiser and cost model come
from ``ragscale.allocation``; observed runs and their best-per-budget frontier from
``ragscale.rag.sweep``; trees, KV accounting and the search itself from ``ragscale.search``.
This module only decides *which* of their results belong on screen for a state:

- the configuration (k, m, n): the optimiser's choice for the budget, or the user's when pinned;
- the predicted P*(L_max) curve and the observed runs for the left panel;
- the search tree for the right panel: a precomputed one keyed by
  (dataset, question, policy, width, n, k, m), or the nearest precomputed one, clearly labelled;
- the row of figures below (effective tokens, retained KV and its ratio to REBASE, prefix-cache
  hit rate, predicted and observed accuracy, cost).

How a state maps to a tree search (Yue et al. 2025 meet Hooper et al. 2025): one tree step is one
IterDRAG iteration (sub-query, k retrieved documents, intermediate answer); n iterations are
followed by the forced final answer, so the tree is at most n + 1 deep; the beam width is the
search width.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ragscale.allocation import (
    PAPER_PROFILE,
    Allocation,
    AllocationModel,
    CostModel,
    TokenSizes,
    cost_breakdown,
    effective_length,
    frontier,
    optimise,
    token_usage,
)
from ragscale.config import DATA_DIR, SHARED_DATASETS_DIR, cache_dir
from ragscale.errors import UserError
from ragscale.explorer.state import ExplorerState

# Bundled demo sweep (ragscale.rag) and shipped trees (``ragscale explorer-precompute``).
DEMO_RESULTS = DATA_DIR / "demo_results.sqlite"
SHIPPED_TREES = DATA_DIR / "explorer"
# Budgets of the predicted curve: 10^3 .. 10^7 tokens, log-spaced.
CURVE_BUDGETS = np.unique(np.geomspace(1_000, 10_000_000, 81).astype(int))
# The verifier precomputed and live trees use: the generator as judge (runs on a laptop).
VERIFIER = "judge"

Progress = Callable[[int, int, str], None]


def live_trees_dir() -> Path:
    """Where "Run live" keeps its trees, so a configuration run once opens instantly afterwards."""
    return cache_dir() / "explorer"


# ---- datasets and questions -------------------------------------------------------------

def dataset_choices() -> list[str]:
    """The demo set, then every JSON/JSONL sample beside the project (../shared/datasets)."""
    names = ["demo"]
    if SHARED_DATASETS_DIR.is_dir():
        names += sorted(p.stem for p in SHARED_DATASETS_DIR.iterdir() if p.suffix in (".json", ".jsonl"))
    return names


def default_question(questions: Sequence) -> Any:
    """The first multi-hop question (a tree with iterations to show), else the first question."""
    if not questions:
        raise UserError("the dataset has no questions")
    return next((q for q in questions if (q.hops or 0) >= 2), questions[0])


def pick_question(questions: Sequence, qid: str) -> tuple[Any, str | None]:
    """(question, notice): ``qid`` if the dataset has it, else the default question with a notice."""
    if qid:
        for q in questions:
            if q.qid == qid:
                return q, None
    chosen = default_question(questions)
    notice = None if not qid else f"Question {qid!r} is not in this dataset; showing {chosen.qid} instead."
    return chosen, notice


# ---- the allocation side ------------------------------------------------------------------

def resolved_strategy(state: ExplorerState) -> str:
    """The strategy a pinned configuration is: IterDRAG when it iterates, else by what it holds."""
    if state.strategy != "auto":
        return state.strategy
    if state.n > 1:
        return "iterdrag"
    from ragscale.rag.strategies import one_call_label

    return one_call_label(state.k, state.m)


def current_allocation(state: ExplorerState, model, sizes: TokenSizes | None = None) -> tuple[Allocation, list[str]]:
    """The configuration on screen and notices about it.

    Not pinned: the optimiser's best (k, m, n) within the budget. Pinned: the user's (k, m, n),
    with the model's prediction for it and a notice when it does not fit the budget.
    """
    sizes = sizes or TokenSizes()
    notices: list[str] = []
    if not state.pinned:
        try:
            return optimise(model, state.budget, state.strategy, sizes), notices
        except UserError as exc:
            notices.append(f"{exc}; showing the pinned configuration instead.")
    strategy = resolved_strategy(state)
    length = float(effective_length(strategy, state.k, state.m, state.n, sizes))
    score = float(np.asarray(model.predict(pd.DataFrame(
        {"strategy": [strategy], "k": [state.k], "m": [state.m], "n": [state.n]}))).ravel()[0])
    if length > state.budget:
        notices.append(f"The pinned configuration needs {length:,.0f} tokens per question, over the "
                       f"{state.budget:,} budget.")
    return Allocation(strategy, state.k, state.m, state.n, int(math.ceil(length)), state.budget, score,
                      getattr(model, "name_", ""), getattr(model, "metric_", "")), notices


def apply_allocation(state: ExplorerState, allocation: Allocation) -> ExplorerState:
    """The state with the optimiser's (k, m, n) written in, so widgets and the URL show them."""
    if state.pinned:
        return state
    return state.with_(k=allocation.k, m=allocation.m, n=allocation.n)


def predicted_curve(model, strategy: str = "auto", sizes: TokenSizes | None = None,
                    budgets: Iterable[int] = CURVE_BUDGETS) -> pd.DataFrame:
    """P*(L_max) over budgets for one strategy (or "auto": the best of all)."""
    return frontier(model, list(budgets), [strategy], sizes or TokenSizes())


def paper_model() -> AllocationModel:
    return AllocationModel.from_profile(PAPER_PROFILE)


def observed_rows(results: str | Path | None = None) -> pd.DataFrame:
    """Every stored per-question RAG result (default: the bundled demo sweep; empty if absent)."""
    from ragscale.rag.sweep import load_rows

    results = DEMO_RESULTS if results is None else results
    if not Path(results).exists():
        return pd.DataFrame()
    return load_rows(results)


def observed_table(rows: pd.DataFrame, dataset: str, model: str | None = None) -> pd.DataFrame:
    """One row per configuration run on ``dataset`` (and engine ``model`` when given)."""
    from ragscale.rag.sweep import config_table

    if rows.empty or "dataset" not in rows:
        return config_table(pd.DataFrame())
    part = rows[rows["dataset"] == dataset]
    if model is not None and "model" in part:
        part = part[part["model"] == model]
    return config_table(part)


def fitted_model(table: pd.DataFrame) -> AllocationModel:
    """The allocation model fitted to stored runs (raises UserError when there are too few)."""
    from ragscale.rag.sweep import fit_allocation

    return fit_allocation(table)


def observed_score(table: pd.DataFrame, allocation: Allocation) -> float | None:
    """Mean observed score of exactly this configuration, when it was run to completion."""
    if table.empty:
        return None
    hit = table[(table["strategy"] == allocation.strategy) & (table["k"] == allocation.k)
                & (table["m"] == allocation.m) & (table["n"] == allocation.n) & table["complete"]]
    return float(hit["score"].iloc[0]) if len(hit) and pd.notna(hit["score"].iloc[0]) else None


# ---- precomputed trees --------------------------------------------------------------------

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
        names = {f.name for f in fields(cls)}
        return cls(**{name: data[name] for name in names})

    def label(self) -> str:
        return f"{self.policy} · width {self.width} · n={self.n} k={self.k} m={self.m}"


def tree_key(state: ExplorerState, question_id: str) -> TreeKey:
    return TreeKey(state.dataset, question_id, state.policy, state.width, state.n, state.k, state.m)


def _log_gap(a: int, b: int) -> float:
    return abs(math.log2(1 + a) - math.log2(1 + b))


def key_distance(want: TreeKey, have: TreeKey) -> tuple:
    """Lexicographic: same dataset, then same question, then same policy, then closest knobs."""
    knobs = sum(_log_gap(getattr(want, f), getattr(have, f)) for f in ("width", "n", "k", "m"))
    return (want.dataset != have.dataset, want.question != have.question, want.policy != have.policy, knobs)


class TreeLibrary:
    """Tree records on disk (one JSON file each), found by key or by nearest key.

    The first directory is the shipped one; later ones (live runs) win on equal keys.
    """

    def __init__(self, *directories: str | Path):
        self.directories = [Path(d) for d in directories]

    def index(self) -> dict[TreeKey, Path]:
        found: dict[TreeKey, Path] = {}
        for directory in self.directories:
            if not directory.is_dir():
                continue
            for path in sorted(directory.glob("*.json")):
                key = _key_of(path)
                if key is not None:
                    found[key] = path
        return found

    def nearest(self, want: TreeKey) -> tuple[TreeKey | None, bool]:
        """(key, exact): the exact key when stored, else the nearest stored key (None if empty)."""
        index = self.index()
        if want in index:
            return want, True
        if not index:
            return None, False
        best = min(index, key=lambda have: (key_distance(want, have), have.filename()))
        return best, False

    def load(self, key: TreeKey) -> dict:
        path = self.index().get(key)
        if path is None:
            raise UserError(f"no stored tree for {key.label()}")
        return load_record(path)

    def save(self, record: dict, directory: str | Path | None = None) -> Path:
        directory = Path(directory) if directory is not None else self.directories[-1]
        directory.mkdir(parents=True, exist_ok=True)
        key = TreeKey.from_dict(record["key"])
        path = directory / key.filename()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)  # never leave a half-written tree for a page to read
        return path


_KEY_CACHE: dict[tuple[str, float], TreeKey | None] = {}


def _key_of(path: Path) -> TreeKey | None:
    """The key stored in a tree file (read once per file version; unreadable files are skipped)."""
    stamp = (str(path), path.stat().st_mtime)
    if stamp not in _KEY_CACHE:
        try:
            with open(path, encoding="utf-8") as handle:
                _KEY_CACHE[stamp] = TreeKey.from_dict(json.load(handle)["key"])
        except (OSError, ValueError, KeyError, TypeError):
            _KEY_CACHE[stamp] = None
    return _KEY_CACHE[stamp]


def load_record(path: str | Path) -> dict:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read tree file {path}: {exc}") from exc
    from ragscale.search.tree import Tree

    Tree.from_dict(record["tree"])  # fail here, with the file named, not later in a figure
    return record


def default_library() -> TreeLibrary:
    return TreeLibrary(SHIPPED_TREES, live_trees_dir())


def tree_label(want: TreeKey, shown: TreeKey | None, exact: bool) -> str:
    """The caption that says which tree is on screen when it is not the requested one."""
    if shown is None:
        return "No precomputed tree yet: press “Run live” to search this configuration."
    if exact:
        return ""
    diffs = [f"{name} {getattr(shown, name)} (asked {getattr(want, name)})"
             for name in ("question", "policy", "width", "n", "k", "m") if getattr(shown, name) != getattr(want, name)]
    return "Nearest precomputed tree — differs in " + ", ".join(diffs) + ". Press “Run live” for the exact one."


# ---- node details -------------------------------------------------------------------------

def node_details(record: dict, node_id: int) -> dict:
    """What a click on a node shows: sub-query, retrieved documents, intermediate answer, score."""
    from ragscale.search.tree import Tree

    tree = Tree.from_dict(record["tree"])
    node = tree[int(node_id)]
    documents = record.get("documents") or {}
    doc_ids = list(node.meta.get("doc_ids", []))
    prefix = tree.prefix_token_count(node.id) - node.num_tokens
    return {
        "id": node.id, "depth": node.depth, "status": node.status, "score": node.score,
        "tokens": node.num_tokens, "prefix_tokens": prefix, "cached_tokens": node.cached_tokens,
        "sub_query": node.meta.get("sub_query"), "intermediate": node.meta.get("intermediate"),
        "answer": node.answer, "finished": node.finished, "cluster": node.cluster,
        "question": node.meta.get("question") if node.parent is None else None,
        "documents": [{"id": d, "title": (documents.get(d) or {}).get("title", ""),
                       "text": (documents.get(d) or {}).get("text", "")} for d in doc_ids],
        "text": node.text if node.parent is not None else "",
    }


# ---- the row of figures -------------------------------------------------------------------

@dataclass
class Figures:
    effective_tokens: int  # predicted l(theta) of the configuration (token sizes of the model)
    observed_tokens: float | None  # longest question's measured length in the stored runs
    retained_kv_mean: float | None  # of the tree on screen
    retained_kv_peak: int | None
    kv_ratio_rebase: float | None  # REBASE mean retained KV / this tree's, same question and width
    cache_hit_rate: float | None  # measured on the tree's requests
    cache_hit_upper_bound: float  # the model's cacheable share of the input (token_usage)
    predicted_score: float
    observed_score: float | None
    cost_per_query_usd: float
    cost_per_month_usd: float
    latency_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def record_hit_rate(record: dict | None) -> float | None:
    if not record or not record.get("prompt_tokens"):
        return None
    return record["cached_tokens"] / record["prompt_tokens"]


def figures(state: ExplorerState, allocation: Allocation, tree_record: dict | None, rebase_record: dict | None,
            table: pd.DataFrame, sizes: TokenSizes | None = None) -> Figures:
    sizes = sizes or TokenSizes()
    usage = token_usage(allocation.strategy, allocation.k, allocation.m, allocation.n, sizes)
    cost = cost_breakdown(allocation, sizes, CostModel(queries_per_day=state.qpd))
    kv_mean = tree_record["kv"]["mean"] if tree_record else None
    ratio = None
    if kv_mean and rebase_record is not None:
        ratio = rebase_record["kv"]["mean"] / kv_mean
    observed_tokens = None
    if not table.empty:
        hit = table[(table["strategy"] == allocation.strategy) & (table["k"] == allocation.k)
                    & (table["m"] == allocation.m) & (table["n"] == allocation.n)]
        if len(hit) and pd.notna(hit["length_max"].iloc[0]):
            observed_tokens = float(hit["length_max"].iloc[0])
    return Figures(
        effective_tokens=allocation.effective_tokens, observed_tokens=observed_tokens,
        retained_kv_mean=kv_mean, retained_kv_peak=tree_record["kv"]["peak"] if tree_record else None,
        kv_ratio_rebase=ratio, cache_hit_rate=record_hit_rate(tree_record),
        cache_hit_upper_bound=float(usage["cacheable"] / usage["input"]) if float(usage["input"]) else 0.0,
        predicted_score=allocation.predicted_score, observed_score=observed_score(table, allocation),
        cost_per_query_usd=cost.cost_per_query_usd, cost_per_month_usd=cost.cost_per_month_usd,
        latency_s=cost.latency_s,
    )


def export_config(state: ExplorerState, allocation: Allocation, shown: TreeKey | None = None,
                  share_url: str | None = None) -> dict:
    """What the JSON/YAML download holds: the state, the configuration it resolves to, the tree."""
    out = {"explorer_state": state.to_dict(), "configuration": allocation.to_dict()}
    if shown is not None:
        out["tree"] = shown.to_dict()
    if share_url:
        out["link"] = share_url
    return out


# ---- running a search ---------------------------------------------------------------------

def search_config(key: TreeKey, **overrides):
    """The policy's recipe at the key's width; n iterations + the forced final answer as depth."""
    from ragscale.search.config import load_recipe
    from ragscale.search.tasks import QATask

    return load_recipe(key.policy, width=key.width, max_depth=key.n + 1,
                       step_max_tokens=QATask.default_step_tokens, **overrides)


def run_tree(engine, dataset, question, key: TreeKey, progress: Progress | None = None, on_step=None,
             verifier: str = VERIFIER, retrieve=None, embed=None) -> dict:
    """Run the tree search for ``key`` on ``question`` and return a record the library stores.

    ``retrieve`` / ``embed`` default to the dataset's chromadb retriever and MiniLM; tests pass
    cheap ones.
    """
    from ragscale.search.runner import run_search
    from ragscale.search.tasks import make_task
    from ragscale.search.verifiers import make_verifier

    if key.k < 1:
        raise UserError("the tree search retrieves k >= 1 documents per step; raise k")
    if embed is None:
        from ragscale.retrieval import embed_texts as embed
    task = make_task("qa", dataset=dataset, retrieve=retrieve, k=key.k, demos=key.m)
    judge = make_verifier(verifier, engine=engine, embed=embed)
    config = search_config(key)
    result = run_search(engine, task, question, config, judge, embed, progress=progress, on_step=on_step)
    record = result.to_dict(with_requests=False)
    record["key"] = key.to_dict()
    record["dataset"] = dataset.name
    record["engine"] = {"kind": engine.info.kind, "model": engine.info.model, "url": engine.info.url}
    record["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record["documents"] = {doc_id: {"title": d.title, "text": d.text} for doc_id, d in task.documents.items()}
    return record
