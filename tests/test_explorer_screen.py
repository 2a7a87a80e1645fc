"""The Explorer's composition logic on small inputs: allocation, trees by key, figures, precompute."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pandas as pd
import pytest

from ragscale.allocation import PAPER_PROFILE, AllocationModel, CostModel, TokenSizes, cost_breakdown, optimise
from ragscale.datasets.types import Dataset, Document, Question
from ragscale.explorer import library as L
from ragscale.explorer import screen as V
from ragscale.explorer.live import run_tree
from ragscale.explorer.precompute import grid, library_size, precompute
from ragscale.explorer.state import DEFAULT as OPENING_VIEW, POLICIES, opening_view
from ragscale.plots.explorer import explorer_curve_figure
from ragscale.search.tree import Tree
from tests.fakes import ScriptedEngine

# These tests are about the demo QA world (budget, k, m, n); the app opens on the arithmetic task.
DEFAULT = opening_view("demo")

MODEL = AllocationModel.from_profile(PAPER_PROFILE)

DOCS = [
    Document("d1", "Lake Orla", "Lake Orla lies north of the town of Vesk."),
    Document("d2", "Mira Holt", "Mira Holt founded the Orla Rowing Club and was born in Vesk."),
    Document("d3", "Orla Rowing Club", "The Orla Rowing Club was founded by Mira Holt."),
    Document("d4", "Vesk", "Vesk is a town in the country of Tarn."),
]
QUESTIONS = [
    Question("q-1hop", "Where is Lake Orla?", ["north of Vesk"], dataset="toy", hops=1),
    Question("q-2hop", "Where was the founder of the Orla Rowing Club born?", ["Vesk"], dataset="toy", hops=2),
]
POOL = [Question("p-1", "Who founded the Vesk Choir?", ["Ada Lunn"], dataset="toy", hops=2,
                 decomposition=[("Which choir is in Vesk?", "the Vesk Choir"), ("Who founded it?", "Ada Lunn")])]
DATASET = Dataset("toy", QUESTIONS, DOCS, source="test", pool=POOL)


def retrieve(query: str, k: int):
    words = set(query.lower().replace("?", "").split())
    return sorted(DOCS, key=lambda d: -len(words & set(d.text.lower().split())))[:k]


def embed(texts):
    out = np.zeros((len(texts), 32))
    for row, text in enumerate(texts):
        for word in str(text).lower().split():
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 32] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


SUBQUERIES = ["Who founded the Orla Rowing Club?", "Where was Mira Holt born?", "Where is Lake Orla?"]


def reply(prompt: str, params, i: int, rng: random.Random) -> str:
    if prompt.endswith("So the final answer is:"):
        return " Vesk\n"
    if prompt.endswith("Intermediate answer:"):
        return " Mira Holt\n" if "founded" in prompt.rsplit("Follow up:", 1)[-1] else " Vesk\n"
    return f" {SUBQUERIES[rng.randrange(len(SUBQUERIES))]}\n"


def judge(prompt: str, continuation: str) -> float:
    good = "Mira" in prompt.rsplit("Follow up:", 1)[-1]
    return (-0.2 if good else -2.0) if continuation == "Yes" else (-2.0 if good else -0.3)


def engine():
    return ScriptedEngine(reply, logprob=judge)


@pytest.fixture(scope="module")
def records():
    """One small tree per policy, width 3, n = 2 (depth <= 3)."""
    out = {}
    for policy in POLICIES:
        key = L.TreeKey("toy", "q-2hop", policy, 3, 2, 1, 0)
        out[policy] = run_tree(engine(), DATASET, QUESTIONS[1], key, retrieve=retrieve, embed=embed)
    return out


# ---- allocation side ------------------------------------------------------------------------

def test_unpinned_state_takes_the_optimisers_configuration():
    state = DEFAULT.with_(pinned=False, strategy="auto", budget=128_000, profile="paper")
    allocation, notices = V.current_allocation(state, MODEL)
    expected = optimise(MODEL, 128_000, "auto")
    assert (allocation.strategy, allocation.k, allocation.m, allocation.n) == (expected.strategy, expected.k, expected.m, expected.n)
    assert allocation.effective_tokens <= 128_000 and notices == []
    shown = V.explorer(state, L.TreeLibrary()).state  # the screen writes the optimiser's (k, m, n) in
    assert (shown.k, shown.m, shown.n) == (expected.k, expected.m, expected.n)
    # a bigger budget never predicts less
    bigger, _ = V.current_allocation(state.with_(budget=1_000_000), MODEL)
    assert bigger.predicted_score >= allocation.predicted_score


def test_pinned_state_keeps_the_users_configuration_and_flags_an_overrun():
    state = DEFAULT.with_(pinned=True, strategy="iterdrag", k=2, m=1, n=2, budget=16_000)
    allocation, notices = V.current_allocation(state, MODEL)
    assert (allocation.strategy, allocation.k, allocation.m, allocation.n) == ("iterdrag", 2, 1, 2)
    assert notices == [] and allocation.effective_tokens <= 16_000
    assert V.explorer(state, L.TreeLibrary()).state.with_(question="") == state
    over, notices = V.current_allocation(state.with_(k=500, budget=16_000), MODEL)
    assert over.effective_tokens > 16_000 and "over the budget of 16,000" in notices[0]


def test_auto_strategy_when_pinned_is_named_by_what_the_configuration_holds():
    assert V.resolved_strategy(DEFAULT.with_(strategy="auto", n=3)) == "iterdrag"
    assert V.resolved_strategy(DEFAULT.with_(strategy="auto", n=1, k=5, m=0)) == "rag"
    assert V.resolved_strategy(DEFAULT.with_(strategy="auto", n=1, k=5, m=2)) == "drag"
    assert V.resolved_strategy(DEFAULT.with_(strategy="drag", n=3)) == "drag"


def test_a_budget_nothing_fits_falls_back_to_the_pinned_configuration_with_a_notice():
    state = DEFAULT.with_(pinned=False, strategy="iterdrag", budget=1_000)
    allocation, notices = V.current_allocation(state, MODEL, TokenSizes(doc=400, instruction=900))
    assert notices and "nothing fits" in notices[0]
    assert (allocation.k, allocation.m, allocation.n) == (state.k, state.m, state.n)


def test_question_picker_falls_back_to_the_first_multi_hop_question():
    assert V.default_question(QUESTIONS, {}, "toy", DEFAULT).qid == "q-2hop"
    # a question the model answers right in the library comes first, at the view's shape first
    right = {L.TreeKey("toy", "q-1hop", "ets", 8, 1, 1, 0): True, L.TreeKey("toy", "q-2hop", "ets", 8, 1, 1, 0): False}
    assert V.default_question(QUESTIONS, right, "toy", DEFAULT).qid == "q-1hop"
    assert V.default_question(QUESTIONS, right, "other", DEFAULT).qid == "q-2hop"
    screen = V.explorer(DEFAULT.with_(question="nope"), L.TreeLibrary())
    assert screen.state.question == "demo-test-2hop-000" and any("'nope'" in w for w in screen.warnings)


def observed_fixture() -> pd.DataFrame:
    rows = []
    for (strategy, k, m, n, length, scores) in [
        ("rag", 1, 0, 1, 300, [0, 1, 0, 0]), ("rag", 5, 0, 1, 900, [1, 1, 0, 0]),
        ("iterdrag", 2, 1, 2, 4000, [1, 1, 1, 0]), ("drag", 2, 1, 1, 1200, [1, 0, 0, 0]),
    ]:
        for i, score in enumerate(scores):
            rows.append({"dataset": "toy", "model": "m", "strategy": strategy, "k": k, "m": m, "n": n,
                         "qid": f"q{i}", "status": "ok", "acc": score, "em": score, "f1": score,
                         "effective_length": length - 10 * i, "cached_tokens": length // 2,
                         "uncached_tokens": length - length // 2, "calls": 1, "iterations": n,
                         "seconds": 0.1, "skip_reason": None})
    rows.append({**rows[0], "dataset": "other"})
    return pd.DataFrame(rows)


def observed_results(tmp_path) -> tuple[str, float]:
    """The fixture's rows in a results store, as the screen reads them (path, modification time)."""
    from ragscale.store import ResultsStore

    store = ResultsStore(tmp_path / "runs.sqlite")
    for i, row in observed_fixture().iterrows():
        store.add("rag", f"row-{i}", row.to_dict())
    return V._stamp(tmp_path / "runs.sqlite")


def test_observed_table_filters_by_dataset_and_finds_the_exact_configuration(tmp_path):
    table = V.observed_table(observed_results(tmp_path), "toy", None)
    assert len(table) == 4 and set(table["dataset"]) == {"toy"}
    allocation, _ = V.current_allocation(DEFAULT.with_(pinned=True, strategy="iterdrag", k=2, m=1, n=2), MODEL)
    assert V.observed_score(table, allocation) == pytest.approx(0.75)
    other, _ = V.current_allocation(DEFAULT.with_(pinned=True, strategy="iterdrag", k=3, m=1, n=2), MODEL)
    assert V.observed_score(table, other) is None
    assert V.observed_table(V._stamp(tmp_path / "none.sqlite"), "toy", None).empty


def test_curve_figure_marks_the_current_configuration_and_overlays_observed_runs(tmp_path):
    curve = V.predicted_curve(MODEL, "auto")
    allocation, _ = V.current_allocation(DEFAULT, MODEL)
    table = V.observed_table(observed_results(tmp_path), "toy", None)
    fig = explorer_curve_figure(curve, DEFAULT.budget, allocation.to_dict(), observed=table,
                                predicted_label="paper profile")
    names = [t.name for t in fig.data]
    current = next(t for t in fig.data if t.name == "current")
    assert list(current.x) == [allocation.effective_tokens]
    assert list(current.y) == pytest.approx([allocation.predicted_score])
    assert "runs" in names
    observed = next(t for t in fig.data if t.name == "runs")
    assert max(observed.y) == pytest.approx(75.0)  # fractions shown in percent
    assert fig.layout.xaxis.type == "log"
    # the star is inside the padded x range
    low, high = fig.layout.xaxis.range
    assert low < np.log10(allocation.effective_tokens) < high


# ---- trees --------------------------------------------------------------------------------------

def test_run_tree_respects_depth_width_and_records_its_key(records):
    for policy, record in records.items():
        tree = Tree.from_dict(record["tree"])
        assert tree.max_depth <= 3  # n = 2 iterations + the forced final answer
        assert record["key"] == L.TreeKey("toy", "q-2hop", policy, 3, 2, 1, 0).to_dict()
        assert record["config"]["width"] == 3 and record["config"]["max_depth"] == 3
        assert len(tree.finished_leaves()) <= 3
        assert record["kv"]["peak"] >= record["kv"]["mean"] > 0
        assert 0 < V.record_hit_rate(record) < 1


def test_node_details_show_sub_query_documents_and_answer(records):
    record = records["ets"]
    tree = Tree.from_dict(record["tree"])
    step = next(n for n in tree if n.depth == 1 and n.meta.get("sub_query"))
    details = V.node_details(record, step.id)
    assert details["sub_query"] in SUBQUERIES
    assert details["intermediate"] in ("Mira Holt", "Vesk")
    assert details["documents"] and all(d["title"] and d["text"] for d in details["documents"])
    assert details["prefix_tokens"] == tree.root.num_tokens
    leaf = tree.finished_leaves()[0]
    assert V.node_details(record, leaf.id)["answer"] == "Vesk"
    root = V.node_details(record, 0)
    assert root["question"] == QUESTIONS[1].question and root["score"] is None


def test_library_finds_exact_then_nearest_with_a_label(tmp_path, records):
    shipped, live = tmp_path / "shipped", tmp_path / "live"
    library = L.TreeLibrary(shipped, live)
    assert library.nearest(L.TreeKey("toy", "q-2hop", "ets", 3, 2, 1, 0)) == (None, False)
    for record in records.values():
        library.save(record, shipped)
    want = L.TreeKey("toy", "q-2hop", "beam", 3, 2, 1, 0)
    assert library.nearest(want) == (want, True)
    assert L.nearness(want, want, True) == ""
    assert L.load_record(library.path(want))["key"] == want.to_dict()
    # a different width: the same policy's tree is nearest, and the label says what differs
    wider = L.TreeKey("toy", "q-2hop", "beam", 16, 2, 1, 0)
    shown, exact = library.nearest(wider)
    assert shown == want and not exact
    label = L.nearness(wider, shown, exact)
    assert "width 3 (asked 16)" in label and "Run live" in label
    # another question: nearest is a tree of the stored question, labelled as such
    shown, exact = library.nearest(L.TreeKey("toy", "q-1hop", "ets", 3, 2, 1, 0))
    assert shown.question == "q-2hop" and shown.policy == "ets" and not exact
    # a live run of the exact key is found afterwards (the later directory wins on equal keys)
    live_record = dict(records["ets"], key=wider.to_dict(), created="later")
    library.save(live_record)
    assert (live / wider.filename()).exists() and library.nearest(wider) == (wider, True)
    # a broken file is skipped, not fatal
    (shipped / "broken.json").write_text("{not json")
    assert library.nearest(want) == (want, True)


def test_key_filenames_are_safe():
    key = L.TreeKey("my data/set", "q:1/../x", "ets", 4, 2, 2, 1)
    name = key.filename()
    assert "/" not in name and ":" not in name and name.endswith("ets-w4-n2-k2-m1.json")


def test_figures_row(records, tmp_path):
    state = DEFAULT.with_(pinned=True, strategy="iterdrag", k=2, m=1, n=2, qpd=5_000)
    allocation, _ = V.current_allocation(state, MODEL)
    table = V.observed_table(observed_results(tmp_path), "toy", None)
    figs = V.figures(state, allocation, records["ets"], records["rebase"], table)
    assert figs.kv_vs_rebase == pytest.approx(records["ets"]["kv"]["mean"] / records["rebase"]["kv"]["mean"])
    assert figs.retained_kv_mean == records["ets"]["kv"]["mean"]
    assert figs.cache_hit_rate == pytest.approx(records["ets"]["cached_tokens"] / records["ets"]["prompt_tokens"])
    assert 0 < figs.cache_hit_upper_bound < 1
    expected = cost_breakdown(allocation, TokenSizes(), CostModel(queries_per_day=5_000))
    assert figs.cost_per_query_usd == pytest.approx(expected.cost_per_query_usd)
    assert figs.cost_per_month_usd == pytest.approx(expected.cost_per_query_usd * 5_000 * 30)
    assert figs.observed_score == pytest.approx(0.75) and figs.observed_tokens == 4000
    assert figs.predicted_score == pytest.approx(allocation.predicted_score / 100)  # every allocation is in percent
    bare = V.figures(state, allocation, None, None, V.observed_table(V._stamp(tmp_path / "none"), "toy", None))
    assert bare.retained_kv_mean is None and bare.kv_vs_rebase is None and bare.cache_hit_rate is None


def test_export_holds_state_configuration_and_tree(tmp_path, records):
    library = L.TreeLibrary(tmp_path)
    key = L.TreeKey("demo", "q-2hop", "ets", DEFAULT.width, DEFAULT.n, DEFAULT.k, DEFAULT.m)
    library.save({**records["ets"], "key": key.to_dict()})
    state = DEFAULT.with_(dataset="demo", pinned=True)
    screen = V.explorer(state, library)
    out = screen.export("http://x/explorer?k=2")
    assert out["explorer_state"] == screen.state.to_dict() and out["link"] == "http://x/explorer?k=2"
    assert out["configuration"]["k"] == DEFAULT.k and out["tree"]["question"] == "q-2hop"
    json.dumps(out)


def test_m_puts_demonstrations_in_the_shared_prefix():
    roots = {}
    for m in (0, 1):
        key = L.TreeKey("toy", "q-2hop", "bon", 2, 1, 1, m)
        record = run_tree(engine(), DATASET, QUESTIONS[1], key, retrieve=retrieve, embed=embed)
        roots[m] = Tree.from_dict(record["tree"]).root.text
    assert POOL[0].question not in roots[0] and POOL[0].question in roots[1]
    assert "Who founded it?" in roots[1]


def test_run_tree_refuses_k_zero():
    with pytest.raises(Exception, match="k >= 1"):
        run_tree(engine(), DATASET, QUESTIONS[1], L.TreeKey("toy", "q-2hop", "ets", 2, 1, 0, 0),
                   retrieve=retrieve, embed=embed)


def test_precompute_writes_one_tree_per_policy_and_resumes(tmp_path):
    keys = list(grid("toy", ["q-2hop"], ("ets", "bon"), widths=(2,), shapes=((1, 0, 1),)))
    done = precompute(engine(), DATASET, keys, out=tmp_path, retrieve=retrieve, embed=embed)
    assert done.trees == 2 and done.skipped == 0 and done.bytes_written > 0
    stored = L.TreeLibrary(tmp_path).index()
    assert {k.policy for k in stored} == {"ets", "bon"} and {k.question for k in stored} == {"q-2hop"}
    again = precompute(engine(), DATASET, keys, out=tmp_path, retrieve=retrieve, embed=embed)
    assert again.trees == 0 and again.skipped == 2
    # what the command reports about the library, read back from the records themselves
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    size = library_size(tmp_path)
    seconds = sum(r["wall_seconds"] for r in records)
    assert size["trees"] == 2 and size["mb_on_disk"] == round(done.bytes_written / 1e6, 2)
    assert size["answered_right"] == done.right == sum(r["correct"] for r in records)
    assert size["gave_an_answer"] == sum(bool(r["answer"].strip()) for r in records)
    assert size["trees_per_minute"] == round(2 / (seconds / 60), 2)
    assert size["mean_seconds_by_width"] == {2: round(seconds / 2, 1)}
    assert library_size(tmp_path / "empty")["trees"] == 0


@pytest.mark.parametrize("argv,message", [
    (["--policies", "mcts"], "--policies"),
    (["--widths", "0"], "widths"),
    (["--shapes", "2:1:9"], "n <= 5"),
    (["--dataset", "/no/such/file.json"], "no such dataset"),
])
def test_precompute_cli_rejects_bad_input_before_loading_a_model(argv, message, capsys):
    from ragscale.cli import main

    assert main(["explorer-precompute", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ragscale: error:") and message in err and len(err.strip().splitlines()) == 1


def test_live_run_reports_every_step_so_the_tree_can_grow_on_screen():
    reports = []
    key = L.TreeKey("toy", "q-2hop", "rebase", 3, 2, 1, 0)
    record = run_tree(engine(), DATASET, QUESTIONS[1], key, retrieve=retrieve, embed=embed,
                      on_step=lambda report: reports.append((report.depth, len(report.tree), report.kv_tokens)))
    assert [r[0] for r in reports] == list(range(len(reports))) and len(reports) == record["depth"]
    sizes = [r[1] for r in reports]
    assert sizes == sorted(sizes) and sizes[-1] == record["nodes"]  # nodes appear as they are generated


def test_warm_up_loads_engine_index_and_embeddings_in_the_background(monkeypatch):
    import threading

    from ragscale.engines import EngineSpec
    from ragscale.explorer import live

    built, release = [], threading.Event()

    def slow_engine(spec):
        release.wait(10)  # the caller must not wait for this
        built.append(spec)
        return engine()

    monkeypatch.setenv("RAGSCALE_WARMUP", "1")
    monkeypatch.setattr(live, "make_engine", slow_engine)
    monkeypatch.setattr(live, "shared_retriever", lambda dataset: retrieve)
    monkeypatch.setattr("ragscale.retrieval.embed_texts", embed)
    spec = EngineSpec(threads=1, dtype="float32")  # a spec no other test uses
    assert live.warm_up(spec) is True and live.warm_status(spec).state == "warming"
    assert live.warm_up(spec) is False  # once per spec
    release.set()
    for _ in range(200):
        if live.warm_status(spec).state != "warming":
            break
        threading.Event().wait(0.05)
    assert live.warm_status(spec).state == "ready", live.warm_status(spec)
    assert built == [spec] and live.shared_engine(spec) is live.started_engine(spec)


def test_bench_explorer_live_reports_seconds_first_token_and_tokens_per_second(monkeypatch, capsys, tmp_path):
    from ragscale.cli import main
    from ragscale.explorer import live

    monkeypatch.setattr(live, "shared_engine", lambda spec: engine())
    monkeypatch.setattr(live, "shared_retriever", lambda dataset: lambda q, k: dataset.corpus[:k])
    monkeypatch.setattr("ragscale.retrieval.embed_texts", embed)
    monkeypatch.setattr(V, "SHIPPED_TREES", tmp_path)
    assert main(["bench", "explorer-live", "--json", "--dataset", "demo"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seconds"] > 0 and 0 < out["first_token_s"] <= out["seconds"]
    assert out["tokens_per_second"] == pytest.approx(out["tokens_generated"] / out["seconds"], rel=0.05)
    assert out["key"]["width"] == DEFAULT.width and out["key"]["k"] == DEFAULT.k and out["target_s"] == 10
    assert main(["bench", "explorer-live", "--json"]) == 0  # the opening view: the arithmetic task
    out = json.loads(capsys.readouterr().out)
    assert out["key"]["dataset"] == OPENING_VIEW.dataset == "arithmetic" and out["key"]["k"] == 0
    assert out["key"]["width"] == OPENING_VIEW.width and out["target_s"] == 3


def test_live_retriever_follows_the_retrieval_setting(monkeypatch):
    from ragscale.explorer import live
    from ragscale.retrieval import options
    from ragscale.search import tasks

    built = []
    monkeypatch.setattr(tasks, "retriever_for", lambda dataset: built.append(dataset.name) or (lambda q, k: []))
    monkeypatch.setattr(live, "_retrievers", {})
    monkeypatch.setattr(options, "_override", None)
    first = live.shared_retriever(DATASET)
    assert live.shared_retriever(DATASET) is first and built == ["toy"]  # built once
    options.use_settings(options.RetrieverSettings(url="http://127.0.0.1:8000"))  # the Engine page's switch
    assert live.shared_retriever(DATASET) is not first and built == ["toy", "toy"]


# ---- the arithmetic task in the Explorer (#12: a question the shipped model answers right) ----

def test_opening_view_is_a_question_the_shipped_model_answers_right():
    """On the shipped data: the first view's question is answered right by the tree on screen,
    and its configuration's accuracy over every library question is shown beside it."""
    library = L.TreeLibrary(L.SHIPPED_TREES)
    screen = V.explorer(OPENING_VIEW, library)
    assert screen.task == "arithmetic" and screen.tree.exact
    assert screen.tree.record["correct"] is True
    right, total = screen.tree.accuracy
    assert total == 8 and 0 < right < total  # a success and the rate, not a perfect score
    point = screen.sweep_point()
    assert point is not None and point["accuracy"] == pytest.approx(right / total)
    labels = [m.label for m in screen.headline()]
    assert labels[:2] == ["Accuracy", V.KV_LABEL] and "Context tokens" not in labels
    assert screen.suggestion == "" and not screen.warnings and not screen.infos  # no budget talk here


def test_the_shipped_arithmetic_trees_are_the_bundled_sweeps_searches():
    """The library's arithmetic trees were copied from data/search_results.sqlite, not searched
    again: per policy and width, the same problems are right as in the sweep's table."""
    from ragscale.search.results import BUNDLED_SEARCH_SWEEP

    outcomes = L.TreeLibrary(L.SHIPPED_TREES).outcomes()
    table = V.search_sweep_table(V._stamp(BUNDLED_SEARCH_SWEEP), "arithmetic")
    assert len(table) == 5 * len(L.ARITHMETIC_WIDTHS)
    for row in table.itertuples():
        mine = [ok for k, ok in outcomes.items() if k.dataset == "arithmetic" and (k.policy, k.width) == (row.policy, row.width)]
        assert len(mine) == row.questions and sum(mine) / len(mine) == pytest.approx(row.accuracy)


def test_the_library_copies_a_sweep_tree_only_when_every_setting_matches(tmp_path):
    from ragscale.explorer.precompute import sweep_trees
    from ragscale.search.results import BUNDLED_SEARCH_SWEEP, load_sweep_records
    from ragscale.search.tasks import arithmetic_dataset

    arithmetic = [r for r in load_sweep_records(BUNDLED_SEARCH_SWEEP) if r["dataset"] == "arithmetic"]
    same, hotter = (dict(r) for r in [r for r in arithmetic if r["policy"] == "rebase"][:2])
    hotter["config"] = {**hotter["config"], "sampling_temperature": 1.0}  # another tree than the library's
    # REBASE reads none of ETS's weights: a REBASE tree searched under other ETS defaults is the same tree
    same["config"] = {**same["config"], "lambda_d": 7.0, "cluster_threshold": 0.3}
    ets = next(dict(r) for r in arithmetic if r["policy"] == "ets" and r["qid"] == same["qid"])
    ets["config"] = {**ets["config"], "lambda_d": 7.0}  # ... but an ETS tree under other weights is another tree
    found = sweep_trees([same, hotter, ets], "arithmetic")
    key = L.tree_key("arithmetic", same["qid"], same["policy"], same["width"], 2, 2, 1)
    assert list(found) == [key] and (key.k, key.m, key.n) == (0, 0, 0)
    summary = precompute(None, arithmetic_dataset(8), [key], out=tmp_path, from_sweep=found)  # no engine needed
    assert (summary.reused, summary.trees) == (1, 0)
    record = L.load_record(L.TreeLibrary(tmp_path).path(key))
    assert record["tree"] == same["tree"] and record["engine"]["model"] == same["model"]


def test_a_live_arithmetic_tree_uses_the_rule_checker_and_no_retrieval(monkeypatch):
    from ragscale.explorer import live
    from ragscale.search.tasks import arithmetic_dataset

    monkeypatch.setattr(live, "shared_retriever", lambda dataset: pytest.fail("arithmetic retrieves nothing"))
    dataset = arithmetic_dataset(1)
    question = dataset.questions[0]
    engine = ScriptedEngine(lambda prompt, params, i, rng: f"Answer: {question.answers[0]}\n")
    key = L.tree_key("arithmetic", question.qid, "rebase", 2, 2, 2, 1)
    record = run_tree(engine, dataset, question, key, embed=lambda texts: np.ones((len(texts), 2)))
    assert record["key"] == key.to_dict() and record["verifier"] == "rules" and record["documents"] == {}
    assert record["config"]["sampling_temperature"] == live.ARITHMETIC_SETTINGS["sampling_temperature"]
    assert record["nodes"] > 1


def test_a_tree_whose_documents_changed_since_is_flagged(records):
    """A stored tree is only as good as the corpus it read: a retrieved document that differs
    today (the demo world was redesigned) makes the Explorer say so, naming how many."""
    record = records["ets"]
    assert record["documents"] and V.stale_reason(record, QUESTIONS[1], DATASET) == ""
    doc_id = next(iter(record["documents"]))
    edited = {**record, "documents": {**record["documents"], doc_id: {"title": "Lake Orla", "text": "an older text"}}}
    assert V.stale_reason(edited, QUESTIONS[1], DATASET) == "1 of the documents it retrieved differ or are gone"
    assert V.stale_reason({**record, "question": "an older question"}, QUESTIONS[1], DATASET) == "its question text differs"


# ---- #22: the opening view's KV figure comes from trees of today's ETS -----------------------

def _replay_our_ets(record) -> tuple[int, int]:
    """(steps, steps where today's ETS program hands out the same children as the stored tree did),
    every selection step of an ETS tree re-solved with the record's own settings and clusters."""
    from ragscale.search import public_ets
    from ragscale.search.config import SearchConfig
    from ragscale.search.policies.ets import allocate_kept, build_program, solve_program

    config = SearchConfig(**{k: v for k, v in record["config"].items() if k != "options"})
    tree = Tree.from_dict(record["tree"])
    steps = same = 0
    for step in public_ets.recorded_steps(record):
        clusters = None if step.clusters is None else np.array(step.clusters)
        keep = solve_program(build_program(tree, step.candidates, step.width, config, clusters)).keep
        given = allocate_kept(tree, keep, step.width, config)
        steps += 1
        same += {c: given.get(c, 0) for c in step.candidates} == step.children
    return steps, same


def test_the_shipped_ets_arithmetic_trees_are_todays_ets():
    """The opening view's ETS trees were searched with today's program (token cost with the prompt
    out of Z, the tie rule): re-solving every selection step with the tree's own settings gives
    the children the tree has. Trees of the older formulation (the prompt inside Z) fail here:
    that program funded every candidate REBASE funds, today's prunes some of them."""
    library = L.TreeLibrary(L.SHIPPED_TREES)
    ets = [L.load_record(p) for k, p in library.index().items() if k.dataset == "arithmetic" and k.policy == "ets"]
    assert len(ets) == 8 * len(L.ARITHMETIC_WIDTHS)
    steps = same = 0
    for record in ets:
        s, ok = _replay_our_ets(record)
        steps, same = steps + s, same + ok
    assert steps > 50 and same == steps, (same, steps)


def test_the_opening_views_kv_badge_is_what_its_stored_trees_measure():
    """The headline KV is the tree's search KV (without the prompt) and the badge its ratio to
    REBASE's tree of the same question and width, both read from the stored records."""
    from ragscale.search.kv import record_kv

    library = L.TreeLibrary(L.SHIPPED_TREES)
    screen = V.explorer(OPENING_VIEW, library)
    ets, rebase = record_kv(screen.tree.record), record_kv(screen.tree.rebase)
    kv = next(m for m in screen.headline() if m.label == V.KV_LABEL)
    assert kv.value == f"{ets['search_mean']:,.0f}"
    assert kv.delta == f"{ets['search_mean'] / rebase['search_mean'] - 1:+.0%} vs REBASE"
    assert f"{ets['mean']:,.0f}" in kv.help and "retained KV" in kv.help


def test_the_opening_question_is_the_librarys_typical_one_not_its_best():
    """The arithmetic world opens on the rule state.OPENINGS states, checked on the shipped trees:
    of the problems answered right at the opening width, the one whose ETS search KV vs REBASE's
    is nearest the median change over all the library's problems at that width."""
    import statistics

    from ragscale.explorer.library import tree_key
    from ragscale.explorer.state import OPENINGS
    from ragscale.search.kv import record_kv

    library = L.TreeLibrary(L.SHIPPED_TREES)
    width = OPENINGS["arithmetic"]["width"]
    change, right = {}, set()
    for q in V.load_dataset("arithmetic").questions:
        paths = {p: library.path(tree_key("arithmetic", q.qid, p, width, 0, 0, 0)) for p in ("ets", "rebase")}
        if None in paths.values():
            continue
        trees = {p: json.loads(path.read_text()) for p, path in paths.items()}
        change[q.qid] = record_kv(trees["ets"])["search_mean"] / record_kv(trees["rebase"])["search_mean"] - 1
        if trees["ets"]["correct"]:
            right.add(q.qid)
    assert len(change) == 8 and right
    median = statistics.median(change.values())
    typical = min(sorted(right), key=lambda qid: abs(change[qid] - median))
    assert OPENINGS["arithmetic"]["question"] == typical
    assert min(change.values()) < change[typical] < 0  # a saving, and not the library's largest
    screen = V.explorer(OPENING_VIEW, library)
    assert screen.question.qid == typical and screen.state.width == width
