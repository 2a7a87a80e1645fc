"""The Explorer page: AppTest renders and link handling, and a real browser opening a shared link."""

from __future__ import annotations

import random
from pathlib import Path
from urllib.parse import urlencode

import pytest
from streamlit.testing.v1 import AppTest

from ragscale.datasets.loaders import load_dataset
from ragscale.explorer import library as L
from ragscale.explorer import live
from ragscale.explorer import screen as V
from ragscale.explorer.state import DEFAULT, encode
from tests.fakes import ScriptedEngine

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "explorer.py")


def reply(prompt: str, params, i: int, rng: random.Random) -> str:
    if prompt.endswith("So the final answer is:"):
        return " Purmoor\n"
    if prompt.endswith("Intermediate answer:"):
        return " Corosk Kromos\n"
    return f" {rng.choice(['Who founded the Juniper Arrow Trading Company?', 'Where was Corosk Kromos born?'])}\n"


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """ETS and REBASE trees for the default view, made with the scripted engine (no model)."""
    folder = tmp_path_factory.mktemp("trees")
    dataset = load_dataset("demo")
    question = V.default_question(dataset.questions, {}, "demo", DEFAULT)
    docs = {d.doc_id: d for d in dataset.corpus}
    wanted = [docs[i] for i in docs if any(t in docs[i].title for t in question.supporting_titles)]

    def retrieve(query, k):
        return (wanted + dataset.corpus[:k])[:k]

    def embed(texts):
        import numpy as np

        return np.array([[1.0, float(len(t) % 7)] for t in texts]) / 7.0

    library = L.TreeLibrary(folder)
    for policy in ("ets", "rebase"):
        key = tree_key(DEFAULT.with_(policy=policy), question.qid)
        engine = ScriptedEngine(reply, logprob=lambda p, c: -0.3 if c == "Yes" else -1.2)
        library.save(live.run_tree(engine, dataset, question, key, retrieve=retrieve, embed=embed), folder)
    return folder, question


def tree_key(state, qid: str) -> L.TreeKey:
    return L.TreeKey(state.dataset, qid, state.policy, state.width, state.n, state.k, state.m)


@pytest.fixture
def explorer(monkeypatch, tmp_path, trees):
    import streamlit as st

    monkeypatch.setattr(V, "SHIPPED_TREES", trees[0])
    monkeypatch.setenv("RAGSCALE_WARMUP", "0")
    monkeypatch.setattr(V, "DEMO_RESULTS", tmp_path / "no-results.sqlite")
    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path))  # live trees: none
    st.cache_data.clear()
    st.cache_resource.clear()

    def make(params: dict | None = None) -> AppTest:
        at = AppTest.from_file(PAGE, default_timeout=120)
        for name, value in (params or {}).items():
            at.query_params[name] = value
        at.run()
        assert not at.exception, at.exception
        return at

    return make


def metrics(at) -> dict:
    return {m.label: m for m in at.metric}


def test_default_view_renders_tree_curve_and_figures(explorer, trees):
    at = explorer()
    assert len(at.get("plotly_chart")) >= 2  # curve and tree (the KV curve sits in an expander)
    shown = metrics(at)
    assert shown["Context tokens"].value.endswith("k")
    assert shown["KV kept · lower is better"].value != "—"
    assert "vs REBASE" in shown["KV kept · lower is better"].delta
    assert shown["Cache hits"].value.endswith("%")
    assert float(shown["$ / month"].value.replace(",", "")) > 0
    assert not at.warning  # nothing wrong with an empty link
    # the whole state lands in the URL, the question resolved to the default one
    assert {k: at.query_params[k] for k in encode(DEFAULT)} == encode(DEFAULT.with_(question=trees[1].qid))


def test_shared_link_restores_every_control(explorer, trees):
    link = encode(DEFAULT.with_(question=trees[1].qid, budget=32_000, policy="rebase", qpd=5_000,
                                profile="paper", strategy="iterdrag"))
    at = explorer(link)
    assert at.text_input(key="ex_budget_t").value == "32k"
    assert at.select_slider(key="ex_budget_s").value == 32_000
    assert at.select_slider(key="ex_k").value == 2 and at.select_slider(key="ex_n").value == 2
    assert at.select_slider(key="ex_width").value == 4
    assert at.session_state["ex_policy"] == "rebase" and at.session_state["ex_qpd"] == 5_000
    assert at.selectbox(key="ex_question").value == trees[1].qid
    assert not at.warning
    assert dict((k, at.query_params[k]) for k in link) == link  # written back unchanged


def test_invalid_link_values_fall_back_with_a_visible_notice(explorer):
    at = explorer({"k": "many", "width": "999", "policy": "mcts", "budget": "-5", "present": "1"})
    texts = " ".join(w.value for w in at.warning)
    for name in ("k=", "width=", "policy=", "budget="):
        assert f"Link value {name}" in texts
    assert at.select_slider(key="ex_k").value == DEFAULT.k and at.select_slider(key="ex_width").value == DEFAULT.width
    assert at.session_state["ex_policy"] == DEFAULT.policy
    assert at.toggle(key="ex_present").value is True  # the valid part of the link still applies
    # the notices go once the view moves on
    at.select_slider(key="ex_width").set_value(8).run()
    assert not any("Link value" in w.value for w in at.warning)


def test_unknown_question_in_link_falls_back_with_notice(explorer, trees):
    at = explorer({"question": "no-such-question"})
    assert any("no-such-question" in w.value for w in at.warning)
    assert at.selectbox(key="ex_question").value == trees[1].qid


def test_budget_reoptimises_unless_pinned(explorer):
    at = explorer({"pinned": "0", "strategy": "auto"})
    k16 = at.select_slider(key="ex_k").value
    at.select_slider(key="ex_budget_s").set_value(1_000_000).run()
    assert not at.exception
    k1m = at.select_slider(key="ex_k").value
    assert k1m > k16 and at.query_params["k"] == str(k1m) and at.query_params["budget"] == "1M"
    # pinned: the budget no longer moves k
    at.toggle(key="ex_pinned").set_value(True).run()
    at.select_slider(key="ex_budget_s").set_value(16_000).run()
    assert at.select_slider(key="ex_k").value == k1m
    assert any("over the 16,000 budget" in w.value for w in at.warning)


def test_typed_inputs_follow_sliders_and_bad_budget_text_is_refused(explorer):
    at = explorer()
    at.select_slider(key="ex_width").set_value(16).run()
    assert at.select_slider(key="ex_width").value == 16 and at.query_params["width"] == "16"
    # no tree at width 16: the nearest stored one is shown, labelled, with Run live
    assert any("Nearest stored tree" in i.value and "width 4 (asked 16)" in i.value for i in at.info)
    assert any(b.label.endswith("Run live") for b in at.button)
    at.text_input(key="ex_budget_t").set_value("lots").run()
    assert any("Budget 'lots' is not valid" in w.value for w in at.warning)
    assert at.query_params["budget"] == "16k"


def test_selected_node_shows_its_details(explorer, trees):
    at = explorer()
    at.session_state["ex.state"] = at.session_state["ex.state"].with_(node="1")  # what a click does
    at.run()
    body = " ".join(m.value for m in at.markdown)
    assert "**Node 1**" in body and "Sub-query:" in body and "Retrieved documents:" in body
    assert at.query_params["node"] == "1"


def stored_runs(path, model: str) -> None:
    """A small sweep's rows on the demo set: enough configurations to fit the allocation model."""
    from ragscale.store import ResultsStore

    store = ResultsStore(path)
    configs = [("rag", k, 0, 1) for k in (1, 2, 5, 10)] + [("drag", k, m, 1) for k in (1, 2, 5) for m in (1, 2)] \
        + [("iterdrag", 2, 1, n) for n in (1, 2, 3)]
    for strategy, k, m, n in configs:
        for q in range(4):
            score = float((k * (m + 1) * n + q) % 3 == 0)
            store.add("rag", f"{strategy}-{k}-{m}-{n}-{q}", {
                "dataset": "demo", "model": model, "strategy": strategy, "k": k, "m": m, "n": n, "qid": f"q{q}",
                "status": "ok", "acc": score, "em": score, "f1": score,
                "effective_length": 200 * k * (m + 1) * (2 * n - 1) + 50 * q, "cached_tokens": 100,
                "uncached_tokens": 100, "calls": 2 * n + 1, "iterations": n, "seconds": 0.5, "skip_reason": None})


def test_fitted_profile_and_observed_points_from_stored_runs(explorer, monkeypatch, tmp_path):
    from ragscale.engines.model_files import MODEL_NAME

    at = explorer({"profile": "fitted"})
    assert any("No fitted profile for demo" in i.value for i in at.info)  # no runs: paper, said so
    stored_runs(tmp_path / "runs.sqlite", MODEL_NAME)
    monkeypatch.setattr(V, "DEMO_RESULTS", tmp_path / "runs.sqlite")
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    at = explorer({"profile": "fitted"})
    assert not any("No fitted profile" in i.value for i in at.info)
    shown = metrics(at)
    assert shown["Observed"].value == "25%"  # iterdrag k=2 m=1 n=2: one of four questions right
    assert shown["Predicted"].value.endswith("%")
    curve = at.get("plotly_chart")[0].proto.spec
    assert '"name":"observed runs"' in curve  # one legend entry for every stored run
    # observed SmolLM2 runs share the axis with the model fitted to them; the paper's curve is a
    # labelled reference on its own axis (a different model)
    assert "(fitted)" in curve and "paper (Gemini), right axis" in curve and '"yaxis":"y2"' in curve


def test_run_live_searches_the_exact_configuration_and_keeps_it(explorer, monkeypatch, tmp_path, trees):
    import numpy as np

    import pages.common
    import ragscale.retrieval

    dataset = load_dataset("demo")
    monkeypatch.setattr(pages.common, "get_engine", lambda: ScriptedEngine(reply, logprob=lambda p, c: -0.5))
    monkeypatch.setattr(live, "shared_retriever", lambda ds: lambda q, k: ds.corpus[:k])
    monkeypatch.setattr(ragscale.retrieval, "embed_texts", lambda texts: np.ones((len(texts), 3)) / np.sqrt(3))
    at = explorer({"width": "2", "policy": "beam"})
    assert any("Nearest stored tree" in i.value for i in at.info)
    next(b for b in at.button if b.label.endswith("Run live")).click().run()
    assert not at.exception and not at.error
    assert not any("Nearest stored tree" in i.value for i in at.info)
    key = tree_key(DEFAULT.with_(width=2, policy="beam"), trees[1].qid)
    saved = tmp_path / "explorer" / key.filename()
    assert saved.exists() and L.load_record(saved)["config"]["width"] == 2
    assert any("Beam search · width 2" in m.value for m in at.markdown)
    assert dataset.corpus[0].doc_id in L.load_record(saved)["documents"]


def test_presentation_mode_injects_css(explorer):
    at = explorer({"present": "1"})
    assert any("stSidebar" in h.proto.body for h in at.get("html"))


@pytest.mark.browser
def test_browser_opens_shared_link_and_clicks_a_node(app_url, page, artifacts_dir):
    from tests.browser_helpers import wait_for_app

    shipped = L.TreeLibrary(L.SHIPPED_TREES).index()
    if not shipped:
        pytest.skip("no shipped trees in data/explorer (run `ragscale explorer-precompute`)")
    key = next((k for k in shipped if k.policy == "ets"), next(iter(shipped)))
    link = encode(DEFAULT.with_(question=key.question, budget=32_000, policy=key.policy, width=key.width,
                                n=key.n, k=key.k, m=key.m, qpd=5_000))
    page.set_viewport_size({"width": 1440, "height": 1900})  # the whole view in one screenshot
    page.goto(f"{app_url}/explorer?{urlencode(link)}")
    wait_for_app(page)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .scatterlayer').length >= 2",
                           timeout=120_000)

    # the link's values are back in the controls
    values = page.eval_on_selector_all("[data-testid='stSlider'] input[type='range']",
                                       "els => els.map(e => e.getAttribute('aria-valuetext'))")
    assert values == ["32k", str(key.k), str(key.m), str(key.n), str(key.width)]
    assert page.get_by_role("textbox", name="Budget", exact=True).input_value() == "32k"
    assert page.get_by_role("spinbutton", name="Queries per day").input_value() == "5000"
    body = page.inner_text("body")
    assert "Nearest precomputed" not in body and "Link value" not in body

    # click tree nodes until one below the root shows its sub-query in the details panel
    details = page.locator("[data-testid='stMarkdownContainer'] strong", has_text="Sub-query:")
    tree = page.locator("[data-testid='stPlotlyChart']", has_text="prompt (root)")  # the legend names the root
    points = tree.locator(".scatterlayer .trace .points path")
    for i in range(points.count()):
        box = points.nth(i).bounding_box()
        if not box:
            continue
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        try:
            details.first.wait_for(timeout=15_000)
            break
        except Exception:
            continue
    assert details.count() == 1, "clicking tree nodes never showed a node's details"
    wait_for_app(page)
    assert "node=" in page.url and "node=&" not in page.url
    assert page.locator("text=Intermediate answer:").count() or page.locator("text=Final answer:").count()
    page.mouse.move(5, 5)  # no tooltip over the figure
    page.wait_for_timeout(800)
    page.screenshot(path=str(artifacts_dir / "explorer.png"), full_page=True)


@pytest.mark.parametrize("node,notice", [("99999", "Node 99999 is not in the tree"),
                                         ("abc'\"<script>", "Link value node=")])
def test_a_node_not_in_the_tree_is_refused_with_a_notice(explorer, node, notice):
    at = explorer({"node": node})
    assert any(notice in w.value for w in at.warning)
    assert at.query_params["node"] == ""  # the link is corrected, nothing kept silently
    assert not any("**Node" in m.value for m in at.markdown)


def test_a_huge_query_value_is_shown_cut_short(explorer):
    at = explorer({"question": "q" * 20_000})
    texts = [w.value for w in at.warning]
    assert any("20,000 characters" in t for t in texts) and all(len(t) < 400 for t in texts)
