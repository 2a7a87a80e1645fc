"""From an ``ExplorerState`` to everything the Explorer shows: ``explorer(state) -> Screen``.

Nothing here is a second implementation: the allocation model, optimiser and cost model come
from ``ragscale.allocation``; observed runs from ``ragscale.rag.sweep``; trees from the tree
library (``library``). This module only decides *which* of their results belong on screen:

- the configuration (k, m, n): the optimiser's choice for the budget, or the user's when pinned;
- the accuracy curves: observed runs with the allocation model fitted to them on one axis, the
  paper's Gemini curve beside them as a labelled reference on its own axis (different models);
- the tree: the library's tree for (dataset, question, policy, width, n, k, m), or the nearest
  one with a note that says how near, and the REBASE tree of the same key for the KV comparison;
- for the arithmetic task (no retrieval: only policy and width shape its tree) the accuracy panel
  is the bundled search sweep's accuracy against retained KV per width, not a budget curve;
- the question: the link's, else one the shipped model answers right in the library;
- the row of figures (effective tokens, retained KV, cache hits, predicted/observed, cost).

How a state maps to a tree search (Yue et al. 2025 meet Hooper et al. 2025): one tree step is
one IterDRAG iteration (sub-query, k retrieved documents, intermediate answer); n iterations are
followed by the forced final answer, so the tree is at most n + 1 deep; the beam width is the
search width. Heavy pieces (datasets, fits, curves, records) are cached here, bounded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ragscale.allocation import (
    PAPER_PROFILE,
    Allocation,
    AllocationModel,
    CostModel,
    TokenSizes,
    DEFAULT_GRID,
    Grid,
    cost_breakdown,
    frontier,
    token_usage,
)
from ragscale.allocation.calculator import pick
from ragscale.config import DATA_DIR, SHARED_DATASETS_DIR
from ragscale.search.results import BUNDLED_SEARCH_SWEEP
from ragscale.errors import UserError
from ragscale.explorer.library import (SEARCH_TASKS, SHIPPED_TREES, TreeKey, TreeLibrary, load_record, nearness,
                                       task_of, tree_key)
from ragscale.explorer.state import ExplorerState, shown
from ragscale.formatting import fmt_tokens
from ragscale.search.config import POLICY_LABELS
from ragscale.search.kv import record_kv

# The bundled demo sweep (ragscale.rag): observed points and the fitted profile.
DEMO_RESULTS = DATA_DIR / "demo_results.sqlite"
# Budgets of the predicted curves: 10^3 .. 10^7 tokens, log-spaced.
CURVE_BUDGETS = tuple(int(b) for b in np.unique(np.geomspace(1_000, 10_000_000, 81).astype(int)))
FELL_BACK = "showing the pinned configuration instead"  # the notice when nothing within the budget fits
# The tree retrieves k documents at every step, so the optimiser picks among configurations it can run.
TREE_GRID = Grid(tuple(k for k in DEFAULT_GRID.k if k >= 1), DEFAULT_GRID.m, DEFAULT_GRID.n)
PAPER_LABEL = "paper's model (Gemini 1.5 Flash, Yue et al. 2025)"
KV_LABEL = "Search KV (↓ better)"  # the headline KV figure: without the prompt, as the paper reports it


# ---- cached inputs ---------------------------------------------------------------------------

def dataset_choices() -> list[str]:
    """The search task's problems and the demo QA set, then every JSON/JSONL sample beside the
    project (../shared/datasets)."""
    names = [*SEARCH_TASKS, "demo"]
    if SHARED_DATASETS_DIR.is_dir():
        names += sorted(p.stem for p in SHARED_DATASETS_DIR.iterdir() if p.suffix in (".json", ".jsonl"))
    return names


@lru_cache(maxsize=8)
def load_dataset(name: str):
    from ragscale.search.builder import load_questions

    return load_questions(task_of(name), name)


@lru_cache(maxsize=4)
def search_sweep_table(results: tuple[str, float], dataset: str) -> pd.DataFrame:
    """Accuracy and mean retained KV per (policy, width) of a search sweep's runs on ``dataset``."""
    from ragscale.search.results import load_sweep_records, tradeoff_table

    records = load_sweep_records(results[0]) if results[1] else []
    return tradeoff_table(r for r in records if r.get("dataset") == dataset)


@lru_cache(maxsize=4)
def _observed_rows(path: str, mtime: float) -> pd.DataFrame:
    from ragscale.rag.sweep import load_rows

    return load_rows(path) if mtime else pd.DataFrame()


def _stamp(path: Path) -> tuple[str, float]:
    return str(path), (path.stat().st_mtime if path.is_file() else 0.0)


@lru_cache(maxsize=16)
def observed_table(results: tuple[str, float], dataset: str, model: str | None) -> pd.DataFrame:
    """One row per configuration run on ``dataset`` (and engine ``model`` when given)."""
    from ragscale.rag.sweep import config_table

    rows = _observed_rows(*results)
    if rows.empty or "dataset" not in rows:
        return config_table(pd.DataFrame())
    part = rows[rows["dataset"] == dataset]
    if model is not None and "model" in part:
        part = part[part["model"] == model]
    return config_table(part)


@lru_cache(maxsize=1)
def paper_model() -> AllocationModel:
    return AllocationModel.from_profile(PAPER_PROFILE)


@lru_cache(maxsize=16)
def fitted_model(results: tuple[str, float], dataset: str, model: str | None) -> AllocationModel | str:
    """The allocation model fitted to the stored runs, or why there is none."""
    from ragscale.rag.sweep import fit_allocation

    try:
        return fit_allocation(observed_table(results, dataset, model))
    except UserError as exc:
        return str(exc)


@lru_cache(maxsize=32)
def predicted_curve(model: AllocationModel, strategy: str) -> pd.DataFrame:
    """P*(L_max) over ``CURVE_BUDGETS`` for one strategy (or "auto": the best of all)."""
    return frontier(model, list(CURVE_BUDGETS), [strategy], TokenSizes(), TREE_GRID)


@lru_cache(maxsize=64)
def _record(path: str, mtime: float) -> dict:
    return load_record(path)


def record_at(library: TreeLibrary, key: TreeKey | None) -> tuple[dict | None, Path | None]:
    path = library.path(key) if key is not None else None
    if path is None:
        return None, None
    return _record(str(path), path.stat().st_mtime), path


_LIBRARIES: dict[tuple[Path, ...], TreeLibrary] = {}


def default_library() -> TreeLibrary:
    """The bundled trees (one instance per process: its index is cached). Live runs are not in it:
    they stay in the viewer's session (``live_layer.LiveLayer``), so no run changes what a link shows."""
    folders = (SHIPPED_TREES,)
    if folders not in _LIBRARIES:
        _LIBRARIES.clear()  # one entry: the folders only change when settings do
        _LIBRARIES[folders] = TreeLibrary(*folders)
    return _LIBRARIES[folders]


# ---- the allocation side ---------------------------------------------------------------------

def resolved_strategy(state: ExplorerState) -> str:
    """The strategy a pinned configuration is: IterDRAG when it iterates, else by what it holds."""
    if state.strategy != "auto":
        return state.strategy
    if state.n > 1:
        return "iterdrag"
    from ragscale.rag.strategies import one_call_label

    return one_call_label(state.k, state.m)


def current_allocation(state: ExplorerState, model, sizes: TokenSizes | None = None) -> tuple[Allocation, list[str]]:
    """The configuration on screen and notices about it, from the calculator's own ``pick``.

    Not pinned: the optimiser's best (k >= 1, m, n) within the budget. Pinned: the user's (k, m, n),
    with the model's prediction for it. Notices as on the calculator: over the budget or the context
    window, IterDRAG with n = 1, a context window that caps the pick.
    """
    sizes = sizes or TokenSizes()
    notices: list[str] = []
    if not state.pinned:
        try:
            return pick(model, state.budget, state.strategy, sizes, grid=TREE_GRID)
        except UserError as exc:
            notices.append(f"{exc}; {FELL_BACK}.")
    allocation, more = pick(model, state.budget, resolved_strategy(state), sizes, manual=(state.k, state.m, state.n))
    return allocation, notices + more


def _allocation(model, state: ExplorerState) -> tuple[Allocation, tuple[str, ...]]:
    # Only these fields decide the configuration: a cache entry serves every other change.
    return _allocation_of(model, state.budget, state.strategy, state.pinned, state.k, state.m, state.n)


@lru_cache(maxsize=256)
def _allocation_of(model, budget, strategy, pinned, k, m, n) -> tuple[Allocation, tuple[str, ...]]:
    state = ExplorerState(budget=budget, strategy=strategy, pinned=pinned, k=k, m=m, n=n)
    allocation, notices = current_allocation(state, model)
    return allocation, tuple(notices)


def observed_score(table: pd.DataFrame, allocation: Allocation) -> float | None:
    """Mean observed score of exactly this configuration, when it was run to completion."""
    if table.empty:
        return None
    hit = table[(table["strategy"] == allocation.strategy) & (table["k"] == allocation.k)
                & (table["m"] == allocation.m) & (table["n"] == allocation.n) & table["complete"]]
    return float(hit["score"].iloc[0]) if len(hit) and pd.notna(hit["score"].iloc[0]) else None


# ---- questions -----------------------------------------------------------------------------

def default_question(questions, outcomes: dict[TreeKey, bool | None], dataset: str, state: ExplorerState):
    """A question the model answers right in the library (at the view's shape first), else the
    first multi-hop question (a tree with iterations to show), else the first question."""
    if not questions:
        raise UserError("the dataset has no questions")
    right = [k for k, ok in outcomes.items() if ok and k.dataset == dataset]
    view = tree_key(dataset, "", state.policy, state.width, state.n, state.k, state.m)
    shape = (view.width, view.n, view.k, view.m)
    for keys in ([k for k in right if (k.width, k.n, k.k, k.m) == shape], right):
        ids = {k.question for k in keys}
        for q in questions:
            if q.qid in ids:
                return q
    return next((q for q in questions if (q.hops or 0) >= 2), questions[0])


def stale_reason(record: dict | None, question, dataset) -> str:
    """Why a stored tree does not belong to today's dataset ("" when nothing says so): its
    question text, or a document it retrieved, differs from the dataset's."""
    if record is None:
        return ""
    if record.get("question") not in (None, question.question):
        return "its question text differs"
    current = {d.doc_id: (d.title, d.text) for d in dataset.corpus}  # ~1 ms for the demo's 1,110
    changed = [doc_id for doc_id, doc in (record.get("documents") or {}).items()
               if current.get(doc_id) != (doc.get("title"), doc.get("text"))]
    return f"{len(changed)} of the documents it retrieved differ or are gone" if changed else ""


def library_accuracy(outcomes: dict[TreeKey, bool | None], key: TreeKey) -> tuple[int, int]:
    """(right, questions) over the library's trees of ``key``'s configuration, every question."""
    same = [ok for k, ok in outcomes.items() if k.with_(question=key.question) == key and ok is not None]
    return sum(bool(ok) for ok in same), len(same)


# ---- the row of figures ----------------------------------------------------------------------

@dataclass(frozen=True)
class Figures:
    effective_tokens: int  # predicted l(theta) of the configuration (token sizes of the model)
    observed_tokens: float | None  # longest question's measured length in the stored runs
    retained_kv_mean: float | None  # of the tree on screen
    retained_kv_peak: int | None
    kv_vs_rebase: float | None  # this tree's mean retained KV / REBASE's, same question and width
    search_kv_mean: float | None  # the same tree's KV without the prompt (what a policy can prune)
    search_kv_vs_rebase: float | None  # ... / REBASE's, same question and width
    cache_hit_rate: float | None  # measured on the tree's requests
    cache_hit_upper_bound: float  # the model's cacheable share of the input (token_usage)
    predicted_score: float  # a fraction (the allocation's percent / 100)
    observed_score: float | None
    cost_per_query_usd: float
    cost_per_month_usd: float

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
    kv = record_kv(tree_record) if tree_record else None
    kv_rebase = record_kv(rebase_record) if rebase_record else None
    kv_mean = kv["mean"] if kv else None
    ratio = kv_mean / kv_rebase["mean"] if kv_mean and kv_rebase and kv_rebase["mean"] else None
    search_ratio = (kv["search_mean"] / kv_rebase["search_mean"]
                    if kv and kv_rebase and kv_rebase["search_mean"] else None)
    observed_tokens = None
    if not table.empty:
        hit = table[(table["strategy"] == allocation.strategy) & (table["k"] == allocation.k)
                    & (table["m"] == allocation.m) & (table["n"] == allocation.n)]
        if len(hit) and pd.notna(hit["length_max"].iloc[0]):
            observed_tokens = float(hit["length_max"].iloc[0])
    return Figures(
        effective_tokens=allocation.effective_tokens, observed_tokens=observed_tokens,
        retained_kv_mean=kv_mean, retained_kv_peak=tree_record["kv"]["peak"] if tree_record else None,
        kv_vs_rebase=ratio, search_kv_mean=kv["search_mean"] if kv else None, search_kv_vs_rebase=search_ratio,
        cache_hit_rate=record_hit_rate(tree_record),
        cache_hit_upper_bound=float(usage["cacheable"] / usage["input"]) if float(usage["input"]) else 0.0,
        predicted_score=allocation.predicted_score / 100.0,
        observed_score=observed_score(table, allocation),
        cost_per_query_usd=cost.cost_per_query_usd, cost_per_month_usd=cost.cost_per_month_usd,
    )


# ---- node details ----------------------------------------------------------------------------

def node_details(record: dict, node_id: int) -> dict:
    """What a click on a node shows: sub-query, retrieved documents, intermediate answer, score."""
    from ragscale.search.tree import Tree

    tree = Tree.from_dict(record["tree"])
    node = tree[int(node_id)]
    documents = record.get("documents") or {}
    doc_ids = list(node.meta.get("doc_ids", []))
    return {
        "id": node.id, "depth": node.depth, "status": node.status, "score": node.score,
        "tokens": node.num_tokens, "prefix_tokens": tree.prefix_token_count(node.id) - node.num_tokens,
        "cached_tokens": node.cached_tokens, "sub_query": node.meta.get("sub_query"),
        "intermediate": node.meta.get("intermediate"), "answer": node.answer, "finished": node.finished,
        "cluster": node.cluster, "question": node.meta.get("question") if node.parent is None else None,
        "documents": [{"id": d, "title": (documents.get(d) or {}).get("title", ""),
                       "text": (documents.get(d) or {}).get("text", "")} for d in doc_ids],
        "text": node.text if node.parent is not None else "",
    }


# ---- the screen ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Curves:
    """The accuracy panel: ``predicted`` shares its axis with ``observed`` (same model) unless it
    is the paper's; ``reference`` is the paper's curve beside a fitted one."""

    predicted: pd.DataFrame
    predicted_label: str
    observed: pd.DataFrame
    reference: pd.DataFrame | None
    current_on_reference: bool  # the chosen profile is the paper's, drawn as the reference
    caption: str
    domain: tuple[int, int] | None = None  # tokens the fitted curve is drawn over: the runs it was fitted on
    metric: str = "em"  # what the scores on the left axis are (percent of it)


@dataclass(frozen=True)
class TreeView:
    want: TreeKey
    shown: TreeKey | None
    exact: bool
    note: str
    record: dict | None
    path: Path | None
    rebase: dict | None  # REBASE's tree of the shown key (None when REBASE is the one shown)
    focus: int | None
    accuracy: tuple[int, int]  # (right, questions) of this configuration over the library
    live: bool = False  # the record is this session's live run (not in the library, not in any link)


@dataclass(frozen=True)
class Metric:
    """One headline figure; ``delta`` is a badge only where a direction means something."""

    label: str
    value: str
    delta: str | None
    help: str
    higher_is_better: bool = False  # colours the badge: green when it moves the good way

    @property
    def unchanged(self) -> bool:
        """A badge that says "no change" (drawn grey, without an arrow)."""
        return bool(self.delta) and self.delta.lstrip("+-").startswith("0")


@dataclass(frozen=True)
class Screen:
    state: ExplorerState  # resolved: dataset, question, and the optimiser's (k, m, n) when unpinned
    warnings: list[str]
    infos: list[str]
    datasets: list[str]
    questions: dict[str, str]  # id -> text, in dataset order
    question: Any
    allocation: Allocation
    suggestion: str  # a caption: what the optimiser picked, or would pick
    curves: Curves
    tree: TreeView
    figures: Figures = field(repr=False)
    task: str = "qa"  # "qa": IterDRAG trees and the budget panel; else a search task (only policy and width)
    search_sweep: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)  # tradeoff_table of its sweep

    def sweep_point(self) -> pd.Series | None:
        """The search sweep's row for the policy and width on screen (None when it was not run)."""
        t, s = self.search_sweep, self.state
        if t.empty:
            return None
        hit = t[(t["policy"] == s.policy) & (t["width"] == s.width)]
        return hit.iloc[0] if len(hit) else None

    def headline(self) -> list[Metric]:
        """The row of figures under the chart and the tree."""
        if self.task != "qa":
            return self._search_headline()
        f, a, (right, total) = self.figures, self.allocation, self.tree.accuracy
        hit = f.cache_hit_rate if f.cache_hit_rate is not None else f.cache_hit_upper_bound
        month = f.cost_per_month_usd
        return [
            Metric("Context tokens", fmt_tokens(f.effective_tokens), None,
                   "effective context length l(θ) of Yue et al. 2025: input tokens over every call for one question"),
            self._kv_metric(),
            Metric("Cache hits" if f.cache_hit_rate is not None else "Cacheable", f"{hit:.0%}", None,
                   "prompt tokens the prefix cache served on this tree; the allocation model's bound is "
                   f"{f.cache_hit_upper_bound:.0%}"),
            Metric("Predicted", f"{f.predicted_score:.0%}", None,
                   f"the allocation model's accuracy for {a.strategy} k={a.k} m={a.m} n={a.n}"),
            Metric("Observed", "—" if f.observed_score is None else f"{f.observed_score:.0%}", None,
                   "mean accuracy of exactly this configuration in the stored runs"
                   + (f"; the tree's configuration answers {right} of {total} library questions" if total else "")),
            Metric("$ / month", f"{month:,.0f}" if month >= 100 else f"{month:,.2f}", None,
                   f"USD at {self.state.qpd:,} queries a day, 30 days (${f.cost_per_query_usd * 1000:,.3g} per 1,000 "
                   "queries; illustrative Gemini 1.5 Flash prices, cached input discounted)"),
        ]

    def _kv_metric(self) -> Metric:
        """Search KV: the tree's KV without the prompt, the measure Hooper et al. 2025 report and the
        only part a policy can prune (every branch shares the prompt). Retained KV, with the prompt,
        is in the help. Short: on a 1280x720 projector a longer value or badge wraps and pushes the
        charts down."""
        f = self.figures
        value = "—" if f.search_kv_mean is None else f"{f.search_kv_mean:,.0f}"
        badge = None if f.search_kv_vs_rebase is None else f"{f.search_kv_vs_rebase - 1:+.0%} vs REBASE"
        retained = "" if f.retained_kv_mean is None else (
            f" With the prompt (retained KV, what the cache holds): {f.retained_kv_mean:,.0f}"
            + ("" if f.kv_vs_rebase is None else f", {f.kv_vs_rebase - 1:+.0%} vs REBASE") + ".")
        return Metric(KV_LABEL, value, badge,
                      "search KV: mean unique tokens on the kept paths after each step of the tree on screen, without "
                      "the prompt (shared by every branch, never pruned); the badge compares REBASE's tree of the same "
                      "question and width (Hooper et al. 2025: ETS keeps 1.8x less search KV than REBASE)." + retained)

    def _search_headline(self) -> list[Metric]:
        """A search task's figures: what width buys (the sweep) and what this tree cost."""
        f, record, point, (right, total) = self.figures, self.tree.record or {}, self.sweep_point(), self.tree.accuracy
        policy = POLICY_LABELS.get(self.state.policy, self.state.policy)
        one = self.search_sweep[self.search_sweep["width"] == 1] if not self.search_sweep.empty else None
        base = None if one is None or one.empty else float(one["accuracy"].mean())
        hit = f.cache_hit_rate
        return [
            Metric("Accuracy", "—" if point is None else f"{point['accuracy']:.0%}",
                   None if point is None or base is None else f"{100 * (point['accuracy'] - base):+.0f} pts vs width 1",
                   f"share of the bundled sweep's {0 if point is None else int(point['questions'])} problems "
                   f"{policy} answers right at width {self.state.width}"
                   + (f"; the library's trees of this configuration: {right} of {total}. The badge compares the "
                      "mean over policies at width 1" if total else ""), higher_is_better=True),
            self._kv_metric(),
            Metric("Cache hits", "—" if hit is None else f"{hit:.0%}", None,
                   "prompt tokens the engine's prefix cache served on this tree's requests: branches share the problem's "
                   "prompt (and a sweep's earlier searches of the same problem leave it cached)"),
            Metric("Nodes", f"{record.get('nodes', 0):,}" if record else "—", None,
                   "steps the tree holds: every sample the policy kept or pruned"),
            Metric("Tokens generated", f"{record.get('tokens_generated', 0):,}" if record else "—", None,
                   "decoded tokens over every branch of this tree"),
            Metric("Engine requests", f"{record.get('generation_requests', 0):,}" if record else "—", None,
                   "generation requests of this tree (the rule-based verifier checks steps without the model)"),
        ]

    def with_live(self, partial: dict | None) -> "Screen":
        """The screen while a live run grows: its tree so far (``LiveStep.record``; None before the
        first step) and the figures measured so far, in place of the stored tree's."""
        record = partial or {}
        kv = record_kv(record) if record else None
        base = record_kv(self.tree.rebase) if self.tree.rebase else None
        ratio = lambda name: kv[name] / base[name] if kv and base and kv[name] and base[name] else None  # noqa: E731
        figs = replace(self.figures, retained_kv_mean=kv["mean"] if kv else None,
                       retained_kv_peak=record["kv"]["peak"] if record else None, kv_vs_rebase=ratio("mean"),
                       search_kv_mean=kv["search_mean"] if kv else None, search_kv_vs_rebase=ratio("search_mean"),
                       cache_hit_rate=record_hit_rate(record))
        return replace(self, figures=figs, tree=replace(self.tree, record=record, path=None, focus=None, live=True))

    def export(self, link: str | None = None) -> dict:
        """What the JSON/YAML download holds: the state, the configuration it resolves to, the tree."""
        out = {"explorer_state": self.state.to_dict(), "configuration": self.allocation.to_dict()}
        if self.tree.shown is not None:
            out["tree"] = self.tree.shown.to_dict()
        if link:
            out["link"] = link
        return out


def _profile(state: ExplorerState, results, engine_model) -> tuple[AllocationModel, str | None, Any]:
    """(model for the optimiser, notice, fitted model or why none)."""
    fitted = fitted_model(results, state.dataset, engine_model)
    if state.profile == "fitted":
        if isinstance(fitted, AllocationModel):
            return fitted, None, fitted
        return paper_model(), f"No fitted profile for {state.dataset}: {fitted}. Using the paper's.", fitted
    return paper_model(), None, fitted


def fitted_domain(table: pd.DataFrame, strategy: str) -> tuple[int, int] | None:
    """The token range (longest question) of the complete runs of ``strategy`` (of all, for "auto")."""
    done = table[table["complete"] & table["score"].notna()] if len(table) else table
    own = done[done["strategy"] == strategy] if strategy != "auto" else done
    lengths = (own if len(own) else done)["length_max"].dropna()
    return (int(lengths.min()), int(lengths.max())) if len(lengths) else None


def curve_label(state: ExplorerState) -> str:
    """What the fitted line is: the model's best configuration per budget among ``state.strategy``'s."""
    return "the best of all strategies" if state.strategy == "auto" else f"the best {state.strategy} (k ≥ 1)"


def _curves(state, allocation_model, fitted, table, model_name) -> Curves:
    who = model_name or "the stored runs' model"
    if isinstance(fitted, AllocationModel):
        chosen = "paper" if allocation_model is not fitted else "fitted"
        domain = fitted_domain(table, state.strategy)
        caption = (f"Runs: accuracy of {who} on {state.dataset} (each configuration at its longest question); "
                   f"the line through them: the best within each length; fitted: {curve_label(state)} per budget under "
                   "the allocation model fitted to those runs (same model, same axis); current: the configuration on "
                   "screen; budget: the token budget. The paper's Gemini 1.5 Flash curve (Yue et al. 2025) is another model on another scale: the dashed "
                   "reference on the right axis (paper →). The fitted curve is drawn over the lengths of the runs it "
                   f"was fitted on ({domain[0]:,}-{domain[1]:,} tokens): beyond them the model has no data."
                   + (" The chosen accuracy model is the paper's, so the current configuration sits on it."
                      if chosen == "paper" else ""))
        return Curves(predicted_curve(fitted, state.strategy), "fitted", table,
                      predicted_curve(paper_model(), state.strategy), chosen == "paper", caption, domain,
                      fitted.metric_ or "score")
    caption = (f"Predicted by the {PAPER_LABEL} (EM %). No observed runs of {state.dataset} to fit yet: "
               f"`ragscale sweep --dataset {state.dataset} --out data/demo_results.sqlite` adds them."
               if table.empty else
               f"Predicted by the {PAPER_LABEL}. The stored runs of {state.dataset} are too few to fit "
               f"({fitted}), so they are not drawn on the paper's axis.")
    return Curves(predicted_curve(allocation_model, state.strategy), "paper's model", table.iloc[0:0], None,
                  False, caption, None, allocation_model.metric_)


def explorer(state: ExplorerState, library: TreeLibrary | None = None, results: Path | None = None,
             engine_model: str | None = None, search_results: Path | None = None,
             live: Mapping[TreeKey, dict] | None = None) -> Screen:
    """Everything the Explorer shows for ``state`` (never loads a model). ``live``: the viewer's own
    live runs on the active engine (``LiveLayer.trees``); the exact key's live tree is shown
    in place of the library's, for this viewer only."""
    library = library if library is not None else default_library()
    results = _stamp(Path(results) if results is not None else DEMO_RESULTS)
    search_results = _stamp(Path(search_results) if search_results is not None else BUNDLED_SEARCH_SWEEP)
    warnings: list[str] = []
    infos: list[str] = []

    datasets = dataset_choices()
    if state.dataset not in datasets:
        warnings.append(f"Dataset {shown(state.dataset)} is not available here; showing demo.")
        state = state.with_(dataset="demo", question="")
    try:
        dataset = load_dataset(state.dataset)
    except Exception as exc:  # a broken file must not take the page down
        warnings.append(f"Cannot load {state.dataset}: {exc}. Showing demo.")
        state = state.with_(dataset="demo", question="")
        dataset = load_dataset("demo")

    outcomes = library.outcomes()
    question = next((q for q in dataset.questions if q.qid == state.question), None)
    if question is None:
        if state.question:
            fallback = default_question(dataset.questions, outcomes, dataset.name, state)
            warnings.append(f"Question {shown(state.question)} is not in this dataset; showing {fallback.qid} instead.")
        question = default_question(dataset.questions, outcomes, dataset.name, state)
    state = state.with_(question=question.qid)

    task = task_of(state.dataset)
    model, notice, fitted = _profile(state, results, engine_model)
    allocation, notices = _allocation(model, state)
    if task != "qa":  # a search task has no budget to allocate: its panel is the search sweep
        suggestion = ""
    else:
        infos += [notice] if notice else []
        warnings += notices
        within = "" if state.strategy == "auto" else f" (best {state.strategy} with k ≥ 1: the tree retrieves every step)"
        if not state.pinned and not any(FELL_BACK in n for n in notices):
            state = state.with_(k=allocation.k, m=allocation.m, n=allocation.n)
            suggestion = (f"Optimised for {fmt_tokens(state.budget)}{within}: **{allocation.strategy}** k={allocation.k} "
                          f"m={allocation.m} n={allocation.n} ({allocation.effective_tokens:,} tokens). "
                          "Pin to set k, m, n yourself.")
        elif not state.pinned:
            suggestion = ""
        else:
            best, problems = _allocation(model, state.with_(pinned=False))
            suggestion = "" if any(FELL_BACK in n for n in problems) else (
                f"The allocation model would pick **{best.strategy}** k={best.k} m={best.m} n={best.n} for "
                f"{fmt_tokens(state.budget)} ({best.effective_tokens:,} tokens). Unpin to use it.")

    # The tree: exact, or nearest with a note; the node a link points at must be in it.
    want = tree_key(state.dataset, question.qid, state.policy, state.width, state.n, state.k, state.m)
    live = live or {}
    if want in live:
        shown_key, exact, record, path = want, True, live[want], None
    else:
        shown_key, exact = library.nearest(want)
        record, path = record_at(library, shown_key)
    rebase = None
    if shown_key is not None and shown_key.policy != "rebase":
        rebase = live.get(shown_key.with_(policy="rebase")) or record_at(library, shown_key.with_(policy="rebase"))[0]
    focus = None
    if state.node:
        ids = {int(n["id"]) for n in record["tree"]["nodes"]} if record else set()
        if int(state.node) in ids:
            focus = int(state.node)
        else:
            warnings.append(f"Node {state.node} is not in the tree on screen; no node is selected.")
            state = state.with_(node="")
    stale = stale_reason(record, question, dataset)
    if stale:
        warnings.append(f"This tree was made on an earlier version of the dataset ({stale}); "
                        "re-run `ragscale explorer-precompute` or “Run live”.")
    accuracy = library_accuracy(outcomes, shown_key) if shown_key else (0, 0)
    tree = TreeView(want, shown_key, exact, nearness(want, shown_key, exact), record, path, rebase, focus, accuracy,
                    live=want in live)

    table = observed_table(results, state.dataset, engine_model)
    curves = _curves(state, model, fitted, table, engine_model)
    if task == "qa" and curves.domain and model is fitted and allocation.effective_tokens > curves.domain[1]:
        # under the chart, where the star sits past the drawn curve (a notice above would push the charts down)
        curves = replace(curves, caption=f"{curves.caption} The current configuration needs "
                         f"{allocation.effective_tokens:,} tokens, beyond the longest run the fitted model has seen "
                         f"({curves.domain[1]:,} tokens): its prediction is an extrapolation.")
    figs = figures(state, allocation, record, rebase, table)
    questions = {q.qid: q.question for q in dataset.questions}
    sweep = search_sweep_table(search_results, state.dataset) if task != "qa" else pd.DataFrame()
    return Screen(state, warnings, infos, datasets, questions, question, allocation, suggestion,
                  curves, tree, figs, task, sweep)


def tree_title(key: TreeKey) -> str:
    if task_of(key.dataset) != "qa":
        return f"{POLICY_LABELS[key.policy]} · width {key.width}"
    return f"{POLICY_LABELS[key.policy]} · width {key.width} · n={key.n} k={key.k} m={key.m}"
