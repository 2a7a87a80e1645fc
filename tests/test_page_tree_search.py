"""The Tree search page: renders in AppTest (with and without runs), and runs a real search in Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ragscale.search.runner import run_search, run_search_sweep
from ragscale.search.tasks import QATask
from ragscale.search.verifiers import LMJudge
from ragscale.store import ResultsStore
from tests.fakes import ScriptedEngine
from tests.test_search_runner import QUESTION, config, fake_embed, judge_logprob, qa_reply, retrieve

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "tree_search.py")


def scripted_run(policy: str, width: int = 4) -> dict:
    engine = ScriptedEngine(qa_reply, logprob=judge_logprob)
    result = run_search(engine, QATask(retrieve, k=1), QUESTION, config(policy, width=width), LMJudge(engine), fake_embed)
    return {**result.to_dict(with_requests=False), "engine": "scripted"}


@pytest.fixture
def app(monkeypatch, tmp_path):
    """The page with no bundled sweep and two scripted example runs (so every assertion runs)."""
    from ragscale.search import results

    examples = tmp_path / "trees"
    examples.mkdir()
    for policy in ("ets", "rebase"):
        (examples / f"{policy}.json").write_text(json.dumps(scripted_run(policy)))
    monkeypatch.setattr(results, "EXAMPLE_TREES", examples)
    monkeypatch.setattr(results, "BUNDLED_SEARCH_SWEEP", tmp_path / "no-sweep.sqlite")
    monkeypatch.setenv("RAGSCALE_WARMUP", "0")
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_renders_controls_without_loading_a_model(app):
    assert app.title[0].value == "Tree search"
    assert app.selectbox(key="ts_policy").value == "ets"
    assert app.selectbox(key="ts_compare").value == "rebase"
    assert app.slider(key="ts_width").value == 4
    assert app.selectbox(key="ts_question").value == 0  # the demo dataset's first question
    assert app.button(key="ts_run").label == "Run ets and rebase · width 4, depth 2"
    assert any("search-sweep" in i.value for i in app.info)


def test_before_any_run_the_trees_are_what_the_pickers_say(app):
    """#23 finding 7: no arithmetic tree at width 1 under a QA question and width 4: the stored trees
    of exactly the question, policies and width picked, or a note that there are none."""
    qid = "demo-test-1hop-000"
    assert app.selectbox(key="ts_question").value == 0
    labels = [h.value for h in app.subheader]
    assert "ets · width 4" in labels and "rebase · width 4" in labels, labels
    assert any(f"the stored trees of ETS and REBASE at width 4 on {qid}" in i.value for i in app.info)
    shown = " ".join(c.value for c in app.caption)
    assert "stored tree · depth" in shown and "arith" not in shown
    app.slider(key="ts_width").set_value(16).run()
    assert {"ets · width 16", "rebase · width 16"} <= {h.value for h in app.subheader}
    app.slider(key="ts_width").set_value(3).run()  # no stored tree at width 3: none shown, and a note
    assert not [h.value for h in app.subheader if "· width" in h.value]
    assert any("No stored tree of ETS and REBASE at width 3" in i.value for i in app.info)


def test_a_comparison_runs_each_policy_from_an_empty_cache(app, monkeypatch):
    """#23 finding 7: REBASE ran second on ETS's warm cache and reported 96% vs 77% cache hits."""
    import pages.common
    import ragscale.retrieval
    from ragscale.explorer import live

    calls: list[str] = []

    class Recording(ScriptedEngine):
        def flush_cache(self) -> None:
            calls.append("flush")
            super().flush_cache()

        def generate(self, prompts, params):
            calls.append("generate")
            return super().generate(prompts, params)

    engine = Recording(qa_reply, logprob=judge_logprob)
    monkeypatch.setattr(pages.common, "get_engine", lambda: engine)
    monkeypatch.setattr(live, "shared_retriever", lambda dataset: lambda q, k: dataset.corpus[:k])
    monkeypatch.setattr(ragscale.retrieval, "embed_texts", fake_embed)
    app.button(key="ts_run").click().run(timeout=300)
    assert not app.exception, app.exception
    runs = app.session_state["ts_runs"]
    assert [r["policy"] for r in runs] == ["ets", "rebase"]
    firsts = [i for i, c in enumerate(calls) if c == "flush"]
    # a flush before each policy's first request, none in between
    assert len(firsts) == 2 and "generate" not in calls[:firsts[0]] and calls[firsts[1] - 1] == "generate"


def test_opens_on_the_bundled_sweep_with_the_papers_reference(monkeypatch, tmp_path):
    from ragscale.search import results

    store = ResultsStore(tmp_path / "bundled.sqlite")
    engine = ScriptedEngine(qa_reply, logprob=judge_logprob)
    run_search_sweep(engine, QATask(retrieve, k=1), [QUESTION], config("ets"), ["ets", "rebase"], [2, 4], [0],
                     LMJudge(engine), store, embed=fake_embed, dataset="tiny")
    monkeypatch.setattr(results, "BUNDLED_SEARCH_SWEEP", tmp_path / "bundled.sqlite")
    monkeypatch.setattr(results, "EXAMPLE_TREES", tmp_path / "none")
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    spec = at.get("plotly_chart")[0].proto.spec
    assert "Hooper et al. 2025" in spec and "mean retained KV" in spec  # the trade-off, with the reference
    assert len(at.dataframe) >= 1 and any("REBASE/ETS" in c.value for c in at.caption)


def test_first_start_shows_the_shipped_sweep():
    """No setup: the bundled data/search_results.sqlite fills the chart, the table and two trees."""
    from ragscale.search import results

    records = results.of_bundled_sweep(results.load_sweep_records(results.BUNDLED_SEARCH_SWEEP),
                                       results.BUNDLED_SEARCH_SWEEP)
    assert {r["policy"] for r in records} == {"rebase", "ets"}
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, at.exception
    import json

    points = sum(len(trace.get("text") or []) for trace in json.loads(at.get("plotly_chart")[0].proto.spec)["data"])
    assert points >= 2 * 4  # every policy at every width is on the chart
    table = at.dataframe[0].value
    assert set(table["policy"]) == {"rebase", "ets"}
    assert sorted(set(table["width"])) == [2, 4, 8, 16]
    assert {"retained KV (with the prompt)", "search KV (without the prompt)"} <= set(table.columns)  # KV two ways
    assert any(f"over {len({r['qid'] for r in records})} problems" in c.value for c in at.caption)


def test_two_runs_side_by_side_with_kv_curve(app):
    app.session_state["ts_runs"] = [scripted_run("ets"), scripted_run("rebase")]
    app.run()
    assert not app.exception, app.exception
    charts = app.get("plotly_chart")
    assert len(charts) == 3  # two trees + the KV curve
    labels = [h.value for h in app.subheader]
    assert "ets · width 4" in labels and "rebase · width 4" in labels
    # The answer is a line, not a metric with an up-arrow badge: "right"/"wrong" is not an increase.
    answers = [m.value for m in app.markdown if m.value.startswith("**Answer:**")]
    assert len(answers) == 2 and all(a.split("**Answer:** ")[1].split(" ·")[0] in ("Dijon", "Paris") for a in answers)
    assert not any(m.delta for m in app.metric)


def test_focus_node_shows_its_prefix(app):
    run = scripted_run("ets")
    app.session_state["ts_runs"] = [run]
    app.session_state["ts_focus_ets"] = 1
    app.run()
    assert not app.exception, app.exception
    assert any("Node 1: reuses" in c.value for c in app.caption)


def test_tradeoff_plot_from_sweep_records(app, tmp_path):
    store = ResultsStore(tmp_path / "sweep.sqlite")
    engine = ScriptedEngine(qa_reply, logprob=judge_logprob)
    run_search_sweep(engine, QATask(retrieve, k=1), [QUESTION], config("ets"), ["ets", "rebase"], [2, 4], [0],
                     LMJudge(engine), store, embed=fake_embed, dataset="tiny")
    app.text_input(key="ts_results_path").set_value(str(tmp_path / "sweep.sqlite")).run()
    assert not app.exception, app.exception
    assert len(app.get("plotly_chart")) >= 1
    assert len(app.dataframe) >= 1


def test_bad_dataset_path_is_an_error_not_a_crash(app):
    app.selectbox(key="ts_dataset").set_value("a file ...").run()
    app.text_input(key="ts_dataset_path").set_value("/no/such/file.json").run()
    assert not app.exception
    assert any("no such dataset" in e.value for e in app.error)
    assert app.button(key="ts_run").disabled


def test_shared_mode_confines_every_path_box(app, shared_mode):
    for typed in ("/etc/passwd", "../../../../etc/passwd", "/dev/zero"):
        app.text_input(key="ts_results_path").set_value(typed).run()
        assert not app.exception, app.exception
        assert any("is not a results file this server offers" in e.value for e in app.error), app.error
    app.text_input(key="ts_results_path").set_value("").run()
    app.selectbox(key="ts_dataset").set_value("a file ...").run()
    for typed in ("/etc/passwd", "/dev/zero", "link.json", "../link.json"):
        app.text_input(key="ts_dataset_path").set_value(typed).run()
        assert not app.exception, app.exception
        assert any("is not a dataset file this server offers" in e.value for e in app.error), app.error
        assert app.button(key="ts_run").disabled
    app.radio(key="ts_task").set_value("reasoning").run()
    app.text_input(key="ts_gsm8k_path").set_value("/etc/passwd").run()
    assert any("is not a dataset file this server offers" in e.value for e in app.error)
    assert app.button(key="ts_run").disabled


def test_a_typed_results_store_is_opened_read_only(app, tmp_path, monkeypatch):
    path = tmp_path / "sweep.sqlite"
    engine = ScriptedEngine(qa_reply, logprob=judge_logprob)
    run_search_sweep(engine, QATask(retrieve, k=1), [QUESTION], config("ets"), ["ets"], [2], [0],
                     LMJudge(engine), ResultsStore(path), embed=fake_embed, dataset="tiny")
    opened = []
    original = ResultsStore.__init__

    def spy(self, where, *args, **kwargs):
        opened.append((str(where), kwargs.get("read_only", False)))
        original(self, where, *args, **kwargs)

    monkeypatch.setattr(ResultsStore, "__init__", spy)
    app.text_input(key="ts_results_path").set_value(str(path)).run()
    assert not app.exception, app.exception
    assert not app.error and len(app.dataframe) >= 1
    assert opened and all(read_only for where, read_only in opened if where == str(path))  # a viewer never writes


@pytest.mark.browser
@pytest.mark.model
@pytest.mark.timeout(1800)
def test_browser_runs_a_small_search_and_shows_the_tree(app_url, page, artifacts_dir):
    from tests.browser_helpers import wait_for_app

    page.goto(f"{app_url}/tree_search")
    wait_for_app(page)
    # A small search: width 4 -> 2 (depth stays 2), one policy (no side-by-side run).
    # One key press per rerun, on the width slider found by its key, until it reads 2: a rerun
    # re-renders the slider and can drop keyboard focus between presses.
    width = page.locator(".st-key-ts_width").get_by_role("slider")
    value = page.locator(".st-key-ts_width [data-testid='stSliderThumbValue']")
    for _ in range(10):
        if value.inner_text().strip() == "2":
            break
        width.focus()
        width.press("ArrowLeft")
        page.wait_for_timeout(1000)
        wait_for_app(page)
    assert value.inner_text().strip() == "2"
    page.locator(".st-key-ts_compare").get_by_role("combobox").click()
    page.get_by_role("option", name="(none)").click()
    wait_for_app(page)
    run = page.get_by_role("button", name="Run ets · width 2, depth 2")
    try:
        run.wait_for()
    except Exception:
        page.screenshot(path=str(artifacts_dir / "tree_search_setup_failed.png"), full_page=True)
        raise
    run.click()
    try:
        page.get_by_role("heading", name="ets · width 2").wait_for(timeout=1_500_000)
        wait_for_app(page)
        # The run's metrics, drawn after its heading: one panel (the example trees' two are gone).
        # Exact text: the trade-off chart's axis also says "mean retained KV".
        page.get_by_text("Mean retained KV · lower is better", exact=True).first.wait_for()
        page.wait_for_function("() => [...document.querySelectorAll('p')].filter("
                               "p => p.textContent === 'Mean retained KV · lower is better').length === 1",
                               timeout=60_000)
        tree = page.locator(".js-plotly-plot").first
        tree.wait_for()
        assert page.locator(".js-plotly-plot text", has_text="depth (step)").count() >= 1
        # The KV curve sits below the tree; Streamlit draws charts as they scroll into view.
        page.mouse.wheel(0, 3000)
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=60_000)
        tree.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
    finally:
        page.screenshot(path=str(artifacts_dir / "tree_search.png"))


# ---- the figure builders the page (and the Explorer) use -------------------------------------

def test_tree_figure_marks_pruned_finished_and_retained():
    from ragscale.plots.tree import tree_figure
    from ragscale.search.tree import Tree

    run = scripted_run("ets", width=6)
    tree = Tree.from_dict(run["tree"])
    fig = tree_figure(run["tree"])  # a dict works as well as a Tree or its JSON
    by_name = {t.name: t for t in fig.data}
    pruned = [n for n in tree if n.status == "pruned"]
    assert pruned and len(by_name["pruned"].x) == len(pruned)
    assert by_name["pruned"].marker.symbol == "x"
    assert len(by_name["answer"].x) == len(tree.finished_leaves())
    node_points = sum(len(t.x) for t in fig.data if "markers" in t.mode)
    assert node_points == len(tree)
    assert "pruned branch" in by_name and "kept KV" in by_name
    # Hover text carries the sub-query, the intermediate answer and the score.
    hover = " ".join(by_name["kept"].hovertext)
    assert "sub-query:" in hover and "intermediate answer:" in hover and "score:" in hover
    # Nodes are sized by tokens: a bigger step gets a bigger marker.
    kept = [n for n in tree if n.status in ("kept", "active") and n.parent is not None]
    sizes = dict(zip((n.num_tokens for n in kept), by_name["kept"].marker.size))
    assert sizes[max(sizes)] >= sizes[min(sizes)]
    # Focusing a node draws its prefix path.
    focused = tree_figure(tree.to_json(), focus=tree.finished_leaves()[0].id)
    path = next(t for t in focused.data if t.name.startswith("prefix reused by node"))
    assert len([x for x in path.x if x is not None]) == 2 * tree.finished_leaves()[0].depth


def test_kv_curve_figure_lists_peak_and_mean():
    from ragscale.plots.tree import kv_curve_figure

    fig = kv_curve_figure({"ets": [100, 300, 200], "rebase": [100, 500, 400]})
    assert [t.name for t in fig.data] == ["ets (peak 300, mean 200)", "rebase (peak 500, mean 333)"]
    assert list(fig.data[0].x) == [1, 2, 3]


def test_a_sweep_finds_rebase_runs_stored_under_other_ets_settings(tmp_path):
    """REBASE reads none of ETS's settings: a REBASE run an older sweep stored (its key carried
    them, lambda_d 1.5 here) is found by a sweep with other ETS weights and not searched again;
    ETS is."""
    from ragscale.search.runner import SEARCH_KIND, canonical_key, sweep_key

    engine = ScriptedEngine(qa_reply, logprob=judge_logprob)
    fresh = ResultsStore(tmp_path / "fresh.sqlite")
    run_search_sweep(engine, QATask(retrieve, k=1), [QUESTION], config("ets"), ["rebase"], [2], [0],
                     LMJudge(engine), fresh, embed=fake_embed, dataset="tiny")
    (key,) = fresh.done_keys(SEARCH_KIND)
    old = key.replace("|T=0.2|", "|T=0.2|lb=1.0|ld=1.5|th=0.05|kv=tokens|")  # how older sweeps keyed it
    assert old != key and canonical_key(old) == key == canonical_key(key)
    assert "ld=0.7" in sweep_key("tiny", "m", "qa", "judge", "q", config("ets", lambda_d=0.7))
    older = ResultsStore(tmp_path / "older.sqlite")
    older.add(SEARCH_KIND, old, fresh.records(SEARCH_KIND)[0])
    again = run_search_sweep(engine, QATask(retrieve, k=1), [QUESTION], config("ets", lambda_d=0.7),
                             ["rebase", "ets"], [2], [0], LMJudge(engine), older, embed=fake_embed, dataset="tiny")
    assert (again.runs_already_done, again.runs_written) == (1, 1)  # REBASE found, ETS searched


def test_a_run_on_a_priced_model_shows_what_the_provider_bills(app, monkeypatch):
    """An OpenAI-compatible engine whose model a price sheet names: each run's caption says what its
    requests cost at that sheet; a run on an engine that bills nothing says no cost at all."""
    import pages.common
    import ragscale.retrieval
    from ragscale.allocation.prices import load_sheet
    from ragscale.engines.openai_client import OpenAIEngine
    from ragscale.explorer import live
    from ragscale.formatting import fmt_usd
    from tests.fakes import ByteTokenizer
    from tests.http_fakes import serving_model

    def reply(prompt, params, i, rng):  # scoring over /v1 decodes one token after the judged text
        return qa_reply(prompt, params, i, rng) if prompt.endswith(":") else "."

    served = ScriptedEngine(reply, logprob=judge_logprob)
    monkeypatch.setattr(live, "shared_retriever", lambda dataset: lambda q, k: dataset.corpus[:k])
    monkeypatch.setattr(ragscale.retrieval, "embed_texts", fake_embed)
    with serving_model(served, "gemini-1.5-flash") as url:
        engine = OpenAIEngine(url, tokenizer=ByteTokenizer())
        monkeypatch.setattr(pages.common, "get_engine", lambda: engine)
        app.button(key="ts_run").click().run(timeout=300)
    assert not app.exception, app.exception
    sheet = load_sheet("gemini-1.5-flash")
    total = engine.cost_usd(sheet)["total_usd"]
    costs = [r["cost"]["total_usd"] for r in app.session_state["ts_runs"]]
    assert len(costs) == 2 and all(c > 0 for c in costs) and sum(costs) == pytest.approx(total)  # each run its own
    shown = " ".join(c.value for c in app.caption)
    for cost in costs:
        assert f"cost {fmt_usd(cost)} at gemini-1.5-flash prices, {sheet.date}".replace("$", "\\$") in shown, shown
    app.session_state["ts_runs"] = [scripted_run("ets")]
    app.run()
    assert "cost" not in " ".join(c.value for c in app.caption if "tokens generated" in c.value)
