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
from ragscale.explorer.state import DEFAULT as OPENING_VIEW, encode, opening_view
from tests.fakes import ScriptedEngine

# These tests are about the demo QA world (budget, k, m, n); the app opens on the arithmetic task.
DEFAULT = opening_view("demo")

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
        for name, value in {"dataset": "demo", **(params or {})}.items():  # the QA world unless a test says
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
    assert shown[V.KV_LABEL].value != "—"
    assert "vs REBASE" in shown[V.KV_LABEL].delta
    assert shown["Cache hits"].value.endswith("%")
    assert float(shown["$ / month"].value.replace(",", "")) > 0
    assert not at.warning  # nothing wrong with an empty link
    # the whole state lands in the URL, the question resolved to the default one
    assert {k: at.query_params[k] for k in encode(DEFAULT)} == encode(DEFAULT.with_(question=trees[1].qid))


def test_shared_link_restores_every_control(explorer, trees):
    link = encode(DEFAULT.with_(question=trees[1].qid, budget=32_000, policy="rebase", qpd=5_000,
                                profile="paper", strategy="iterdrag"))
    at = explorer(link)
    assert at.text_input(key="ex_budget_text").value == "32k"
    assert at.select_slider(key="ex_budget_slider").value == 32_000
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
    at.select_slider(key="ex_budget_slider").set_value(1_000_000).run()
    assert not at.exception
    k1m = at.select_slider(key="ex_k").value
    assert k1m > k16 and at.query_params["k"] == str(k1m) and at.query_params["budget"] == "1M"
    # pinned: the budget no longer moves k
    at.toggle(key="ex_pinned").set_value(True).run()
    at.select_slider(key="ex_budget_slider").set_value(16_000).run()
    assert at.select_slider(key="ex_k").value == k1m
    assert any("over the budget of 16,000" in w.value for w in at.warning)


def test_typed_inputs_follow_sliders_and_bad_budget_text_is_refused(explorer):
    at = explorer()
    at.select_slider(key="ex_width").set_value(16).run()
    assert at.select_slider(key="ex_width").value == 16 and at.query_params["width"] == "16"
    # no tree at width 16: the nearest stored one is shown, labelled, with Run live
    assert any("Nearest stored tree" in i.value and "width 4 (asked 16)" in i.value for i in at.info)
    assert any(b.label.endswith("Run live") for b in at.button)
    at.text_input(key="ex_budget_text").set_value("lots").run()
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
    assert '"name":"runs"' in curve  # one legend entry for every stored run
    # observed SmolLM2 runs share the axis with the model fitted to them; the paper's curve is a
    # labelled reference on its own axis (a different model)
    assert "\"name\":\"fitted\"" in curve and "paper →" in curve and '"yaxis":"y2"' in curve


def test_run_live_searches_the_exact_configuration_for_this_session_only(explorer, monkeypatch, tmp_path, trees):
    """#23 finding 6: a live run's tree is this viewer's: shown in their session, written nowhere,
    so a later viewer (a new session, a shared link) still sees the stored tree."""
    import numpy as np

    import pages.common
    import ragscale.retrieval

    dataset = load_dataset("demo")
    monkeypatch.setattr(pages.common, "get_engine", lambda: ScriptedEngine(reply, logprob=lambda p, c: -0.5))
    monkeypatch.setattr(live, "shared_retriever", lambda ds: lambda q, k: ds.corpus[:k])
    monkeypatch.setattr(ragscale.retrieval, "embed_texts", lambda texts: np.ones((len(texts), 3)) / np.sqrt(3))
    before = sorted(p.name for p in Path(trees[0]).iterdir())
    at = explorer({"width": "2", "policy": "beam"})
    assert any("Nearest stored tree" in i.value for i in at.info)
    next(b for b in at.button if b.label.endswith("Run live")).click().run()
    assert not at.exception and not at.error
    assert not any("Nearest stored tree" in i.value for i in at.info)
    assert any("Beam search · width 2" in m.value for m in at.markdown)
    assert any("Your live run" in c.value and "stays in this session" in c.value for c in at.caption)
    details = next(m.value for m in at.markdown if m.value.startswith("**Answer:**"))
    # nothing written: not the bundled folder, not the user cache every later viewer reads
    assert sorted(p.name for p in Path(trees[0]).iterdir()) == before
    assert not list(tmp_path.rglob("*.json"))
    # the same link in a new session (another viewer, a shared link): the stored tree again
    other = explorer({"width": "2", "policy": "beam"})
    assert any("Nearest stored tree" in i.value for i in other.info)
    assert not any("Your live run" in c.value for c in other.caption)
    # and this viewer can go back to the stored tree
    next(b for b in at.button if b.label == "Stored tree").click().run()
    assert any("Nearest stored tree" in i.value for i in at.info) and details


def test_presentation_mode_injects_css(explorer):
    at = explorer({"present": "1"})
    assert any("stSidebar" in h.proto.body for h in at.get("html"))


@pytest.mark.browser
def test_browser_opens_shared_link_and_clicks_a_node(app_url, page, artifacts_dir):
    from tests.browser_helpers import wait_for_app

    shipped = L.TreeLibrary(L.SHIPPED_TREES).index()
    if not shipped:
        pytest.skip("no shipped trees in data/explorer (run `ragscale explorer-precompute`)")

    def has_sub_queries(path) -> bool:  # a node to click must show a sub-query (a one-step tree has none)
        tree = L.load_record(path)["tree"]
        return any("sub_query" in (n.get("meta") or {}) for n in (tree["nodes"] if isinstance(tree, dict) else tree))

    key = next((k for k, path in sorted(shipped.items(), key=lambda kv: kv[1].name)
                if k.policy == "ets" and has_sub_queries(path)), next(iter(shipped)))
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
    from playwright.sync_api import expect

    page.get_by_role("button", name="Settings").click()  # the less used controls sit in a popover
    expect(page.get_by_role("spinbutton", name="Queries per day")).to_have_value("5000", timeout=15_000)
    page.keyboard.press("Escape")
    body = page.inner_text("body")
    assert "Nearest precomputed" not in body and "Link value" not in body

    # click tree nodes until one below the root shows its sub-query in the details panel
    details = page.locator("[data-testid='stMarkdownContainer'] strong", has_text="Sub-query:")
    tree = page.locator("[data-testid='stPlotlyChart']", has_text="kept KV")  # the legend names the kept paths
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


def _tree_figures(page) -> tuple[int, str]:
    """(nodes, search KV) of the tree on screen, as the page prints them."""
    import re

    wait_for_page(page)
    text = page.inner_text("body")
    nodes = re.search(r"(\d+) nodes,", text)
    kv = page.locator("[data-testid='stMetric']", has_text="Search KV").locator("[data-testid='stMetricValue']")
    return (int(nodes.group(1)) if nodes else -1), kv.inner_text().strip()


def wait_for_page(page) -> None:
    from tests.browser_helpers import wait_for_app

    wait_for_app(page)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .scatterlayer').length >= 2", timeout=120_000)


def _press(page, key: str, times: int, presses: str = "ArrowRight") -> None:
    """Move the select slider with this widget key by ``times`` steps, one finished rerun per step."""
    from tests.browser_helpers import rerun_after

    thumb = page.locator(f".st-key-{key} input[type='range']")
    for _ in range(times):
        thumb.focus()
        rerun_after(page, lambda: thumb.press(presses))
        wait_for_page(page)


def _engine_status(page) -> str:
    """The sidebar's engine status: "Not started yet" or the started engine's request counters."""
    return page.locator("[data-testid='stSidebar']").inner_text()


def _width_and_k_move_the_tree(page, app_url: str, artifacts_dir, shot: str) -> None:
    """On the demo QA world's opening view, width 4 -> 16 and then k 2 -> 5 show the stored trees
    of exactly those settings; no live run starts and the engine gets no request."""
    library = L.TreeLibrary(L.SHIPPED_TREES)
    default = V.explorer(DEFAULT, library)
    needed = [L.TreeKey("demo", default.question.qid, "ets", w, 2, k, 1) for w, k in ((4, 2), (16, 2), (16, 5))]
    missing = [k for k in needed if library.path(k) is None]
    assert not missing, f"the bundled library lacks {missing}: run `ragscale explorer-precompute`"
    page.goto(f"{app_url}/explorer?dataset=demo")  # the QA world, where k exists (the app opens on arithmetic)
    start = _tree_figures(page)
    engine_before = _engine_status(page)
    _press(page, "ex_width", 2)  # 4 -> 8 -> 16
    assert page.locator(".st-key-ex_width input[type='range']").get_attribute("aria-valuetext") == "16"
    wider = _tree_figures(page)
    _press(page, "ex_k", 2)  # 2 -> 3 -> 5
    assert page.locator(".st-key-ex_k input[type='range']").get_attribute("aria-valuetext") == "5"
    more_docs = _tree_figures(page)
    assert start[0] != wider[0] and start[1] != wider[1], (start, wider)  # more nodes, other KV
    assert more_docs[1] != wider[1], (wider, more_docs)  # k documents per step change the KV kept
    body = page.inner_text("body")
    assert "ETS · width 16 · n=2 k=5 m=1" in body and "Nearest stored tree" not in body
    assert "Running live" not in body and _engine_status(page) == engine_before  # no request, no model loaded
    page.screenshot(path=str(artifacts_dir / shot), full_page=True)


@pytest.mark.browser
def test_browser_width_and_k_move_the_tree_without_a_live_run(fresh_app_url, page, artifacts_dir):
    """On an app whose engine has not started (a process of the test's own: the session's app may
    have run a search already), moving width and k loads no model."""
    page.goto(fresh_app_url)  # home first: a fresh server's deep link skips app.py's navigation and sidebar
    page.get_by_text("Engine:").first.wait_for()
    _width_and_k_move_the_tree(page, fresh_app_url, artifacts_dir, "explorer_width16_k5.png")
    assert "Not started yet" in _engine_status(page)


# Holds every message the page sends to the server for 1.5 s once ``window.slowServer`` is set: the
# server then starts a rerun as late as a loaded machine does (later than any fixed pause we used).
SLOW_SERVER = """(() => { const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (data) {
        if (window.slowServer) setTimeout(() => send.call(this, data), 1500); else send.call(this, data); }; })()"""


@pytest.mark.browser
def test_browser_a_late_rerun_is_waited_for(app_url, page):
    """The tree read after a slider move is the new setting's, however late the server starts the
    rerun (the width/k test read the previous tree when the session's app was busy)."""
    library = L.TreeLibrary(L.SHIPPED_TREES)
    qid = V.explorer(DEFAULT, library).question.qid
    nodes = {w: L.load_record(library.path(L.TreeKey("demo", qid, "ets", w, 2, 2, 1)))["nodes"] for w in (4, 8)}
    assert nodes[4] != nodes[8], nodes
    page.add_init_script(SLOW_SERVER)
    page.goto(f"{app_url}/explorer?dataset=demo")
    assert _tree_figures(page)[0] == nodes[4]
    page.evaluate("window.slowServer = true")
    _press(page, "ex_width", 1)  # 4 -> 8
    assert _tree_figures(page)[0] == nodes[8]


def _nothing_cut_off(page, touch: bool = False) -> list[str]:
    """Elements whose text is clipped: the page wider than the window, a metric value cut, a legend
    entry cut at its legend's edge ("REB…"); on a touch screen, a chart toolbar over a legend."""
    return page.evaluate("""touch => {
        const out = [];
        if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push('page scrolls sideways');
        for (const el of document.querySelectorAll("[data-testid='stMetricValue'] div, [data-testid='stMetricDelta'] div, [data-testid='stMetricLabel'] p")) {
            if (el.scrollWidth > el.clientWidth + 1) out.push('cut: ' + el.innerText);
        }
        for (const el of document.querySelectorAll('.js-plotly-plot .legend')) {
            const plot = el.closest('.js-plotly-plot').getBoundingClientRect(), box = el.getBoundingClientRect();
            if (box.right > plot.right + 1 || box.left < plot.left - 1) out.push('legend outside its chart');
            const edge = el.querySelector('.bg').getBoundingClientRect().right;  // the legend clips at its box
            for (const t of el.querySelectorAll('.legendtext'))
                if (t.getBoundingClientRect().right > Math.min(edge, plot.right) + 1) out.push('legend entry cut: ' + t.textContent);
            const bar = el.closest('.js-plotly-plot').querySelector('.modebar-container');
            const tools = bar && bar.querySelector('.modebar');
            if (touch && tools && getComputedStyle(bar).display !== 'none') {  // shown all the time on a touch screen
                const b = tools.getBoundingClientRect();
                if (b.left < box.right && b.right > box.left && b.top < box.bottom && b.bottom > box.top)
                    out.push('toolbar over the legend');
            }
        }
        return out; }""", touch)


def _first_screen(page) -> dict:
    """Where the charts, the tree and the answer line end, and the charts' tick label sizes."""
    return page.evaluate("""() => {
        const box = sel => { const e = document.querySelector(sel); return e ? e.getBoundingClientRect() : null; };
        const chart = box('.st-key-ex_tradeoff .js-plotly-plot, .st-key-ex_curve .js-plotly-plot');
        const tree = box('.st-key-ex_tree .js-plotly-plot .nsewdrag');  // the tree's plot area: every node
        const answer = [...document.querySelectorAll("[data-testid='stMarkdownContainer']")]
            .find(e => e.innerText.startsWith('Answer:'));
        const ticks = [...document.querySelectorAll('.js-plotly-plot .xtick text, .js-plotly-plot .ytick text')]
            .map(t => parseFloat(getComputedStyle(t).fontSize));
        const tree_chart = document.querySelector('.st-key-ex_tree') || document;
        const nodes = [...tree_chart.querySelectorAll('.scatterlayer .points path')].map(p => p.getBoundingClientRect());
        const overlaps = [...tree_chart.querySelectorAll('.scatterlayer .textpoint')].map(label => {
            const a = label.getBoundingClientRect();  // an answer label written over a node's marker
            return nodes.some(b => a.left < b.right - 1 && a.right > b.left + 1 && a.top < b.bottom - 1 && a.bottom > b.top + 1); });
        return {height: window.innerHeight, chart_bottom: chart?.bottom, tree_bottom: tree?.bottom,
                answer_bottom: answer?.getBoundingClientRect().bottom, tick_px: Math.min(...ticks),
                labels: overlaps.length, labels_over_diamonds: overlaps.filter(Boolean).length}; }""")


@pytest.mark.browser
@pytest.mark.parametrize("width,height,present,name,world", [
    (1280, 720, True, "explorer_present_1280x720.png", ""),  # the opening view: the arithmetic task
    (1920, 1080, True, "explorer_present_1920x1080.png", ""),
    (390, 844, False, "explorer_phone_390x844.png", ""),
    (1280, 720, True, "explorer_present_demo_1280x720.png", "demo"),  # the QA world: budget, k, m, n
])
def test_browser_layout_fits_projectors_and_phones(app_url, browser, width, height, present, name, world):
    """#23 findings 2 and 9: on a 1280x720 projector the figures, the accuracy chart and the tree
    share the first screen (at 1920x1080 the answer line too), tick labels grow, no legend is cut;
    on a phone no toolbar covers a legend and no answer label sits on its diamond."""
    phone = width < 500
    context = browser.new_context(viewport={"width": width, "height": height}, is_mobile=phone, has_touch=phone)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{app_url}/explorer?present={int(present)}" + (f"&dataset={world}" if world else ""))
        wait_for_page(page)
        page.mouse.move(2, 2)
        page.wait_for_timeout(800)
        assert _nothing_cut_off(page, touch=phone) == []
        seen = _first_screen(page)
        assert seen["labels"] and seen["labels_over_diamonds"] == 0, seen
        if present:  # headline numbers are larger than their labels, not shrunk to label size
            sizes = page.evaluate("""() => ['stMetricValue', 'stMetricLabel'].map(id =>
                parseFloat(getComputedStyle(document.querySelector(`[data-testid='${id}'] p, [data-testid='${id}'] div`)).fontSize))""")
            assert sizes[0] >= 1.8 * sizes[1], sizes
            assert page.locator("[data-testid='stSidebar']").is_hidden()
            # every headline figure, the accuracy chart and the tree's nodes in the first screen
            bottoms = page.evaluate("""() => [...document.querySelectorAll("[data-testid='stMetric']")].map(
                el => el.getBoundingClientRect().bottom)""")
            assert len(bottoms) == 6 and max(bottoms) <= height, bottoms
            assert seen["chart_bottom"] <= height and seen["tree_bottom"] <= height, seen
            assert seen["tick_px"] >= 18, seen  # a projector's tick labels (16 px before)
            if height >= 1080:
                assert seen["answer_bottom"] <= height, seen
        screenshots = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
        page.screenshot(path=str(screenshots / name), full_page=not present)
        if not present:  # Streamlit scrolls its main block, not the document
            total = page.evaluate("document.querySelector(\"[data-testid='stMain']\").scrollHeight")
            assert total < 4000, f"the phone view is {total} px tall (it was 4,700)"
    finally:
        context.close()


def _nodes_shown(page) -> str:
    return page.locator("[data-testid='stMetric']", has_text="Nodes").locator("[data-testid='stMetricValue']").inner_text()


@pytest.mark.browser
@pytest.mark.model
def test_browser_run_live_grows_the_tree_step_by_step(app_url, browser, artifacts_dir):
    """#23 finding 1: on the opening view, "Run live" redraws the tree and the Nodes figure at every
    depth: at least three successive node counts reach the screen before the run ends."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    page.set_default_timeout(180_000)
    try:
        page.goto(f"{app_url}/explorer?present=1")
        wait_for_page(page)
        stored = _nodes_shown(page)
        page.get_by_role("button", name="Run live").click()
        counts: list[str] = []
        shots = 0
        page.wait_for_function("() => document.body.innerText.includes('Running live')", timeout=180_000)
        while "Running live" in page.inner_text("body"):
            shown = _nodes_shown(page)
            if shown.isdigit() and (not counts or counts[-1] != shown):
                counts.append(shown)
                if shots < 2:
                    page.screenshot(path=str(artifacts_dir / f"explorer_live_step{shots}.png"))
                    shots += 1
            page.wait_for_timeout(50)
        wait_for_page(page)
        assert len(counts) >= 3 and [int(c) for c in counts] == sorted(int(c) for c in counts), (stored, counts)
        # The finished run's caption arrives with the rerun after the last step (it lagged the
        # "Running live" line's removal under load).
        page.wait_for_function("() => document.body.innerText.includes('Your live run')", timeout=60_000)
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.model
def test_browser_width_and_k_move_the_tree_after_the_engine_started(app_url, page, artifacts_dir):
    """After the engine has started (a Tree search or a live run loads it for the whole process),
    width and k still show the stored trees: no live run, no request to the engine."""
    from tests.browser_helpers import wait_for_app

    page.goto(f"{app_url}/engine")
    wait_for_app(page)
    start = page.get_by_role("button", name="Start it now")
    if start.count():  # not started by an earlier test
        start.click()
    page.locator("[data-testid='stMetric']", has_text="Generation speed").wait_for(timeout=300_000)  # it is running
    _width_and_k_move_the_tree(page, app_url, artifacts_dir, "explorer_width16_k5_engine_started.png")
    assert "Not started yet" not in _engine_status(page)


@pytest.mark.browser
def test_browser_clicked_arithmetic_node_shows_its_step_in_view(app_url, browser, artifacts_dir):
    """#23 finding 5: a click on an arithmetic node shows what the step said, and its details
    appear inside the window (not below the fold), at a desk and on a projector."""
    for width, height, present in ((1400, 1000, 0), (1280, 720, 1)):
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{app_url}/explorer?present={present}")
            wait_for_page(page)
            point = page.locator(".st-key-ex_tree .scatterlayer .trace .points path").nth(2)
            point.scroll_into_view_if_needed()  # as a viewer scrolls to the tree
            box = point.bounding_box()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            panel = page.locator(".st-key-ex_node_panel")
            panel.wait_for(timeout=30_000)
            wait_for_page(page)
            assert "the step said:" in panel.inner_text() and panel.locator("code").inner_text().strip()
            top, bottom, box_bottom = page.evaluate("""() => {
                const r = document.querySelector('.st-key-ex_node_panel code').getBoundingClientRect();
                return [r.top, r.bottom, document.querySelector('.st-key-ex_node_panel').getBoundingClientRect().bottom]; }""")
            # the step itself in the window, not scrolled away inside its box
            assert 0 <= top and bottom <= min(height, box_bottom), (top, bottom, box_bottom, height)
            page.screenshot(path=str(artifacts_dir / f"explorer_node_{width}x{height}.png"))
        finally:
            context.close()


@pytest.fixture
def shipped_explorer(monkeypatch, tmp_path):
    """The page on the shipped library and sweeps, as a first start shows it (no fixtures)."""
    import streamlit as st

    monkeypatch.setenv("RAGSCALE_WARMUP", "0")
    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path))  # no live trees of this machine's user
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_first_start_opens_on_a_question_the_shipped_model_answers_right(shipped_explorer):
    """#12: a room first sees a success and the rate: the arithmetic task, a tree answered right,
    the sweep's accuracy against KV across widths, and no budget controls that would not apply."""
    at = shipped_explorer
    assert at.selectbox(key="ex_dataset").value == "arithmetic"
    answer = next(m.value for m in at.markdown if m.value.startswith("**Answer:**"))
    assert ":green[right]" in answer and "library questions right" in answer
    shown = metrics(at)
    assert shown["Accuracy"].value.endswith("%") and "vs width 1" in shown["Accuracy"].delta
    kv = shown[V.KV_LABEL]
    assert kv.value != "—" and kv.delta.endswith("vs REBASE")  # search KV against REBASE's tree
    assert "without the prompt" in kv.help and "retained KV" in kv.help  # which is which, and the other one
    charts = at.get("plotly_chart")
    assert len(charts) >= 3  # the sweep's trade-off, the tree, the KV per step
    assert not [s for s in at.select_slider if s.key in ("ex_k", "ex_m", "ex_n", "ex_budget_slider")]
    assert at.select_slider(key="ex_width").value == OPENING_VIEW.width
    assert any("REBASE/ETS KV" in c.value and "retained KV (with the prompt)" in c.value
               and "search KV (without the prompt)" in c.value for c in at.caption)  # KV two ways
    assert not at.warning


def test_a_live_run_on_a_priced_model_records_what_it_cost(trees):
    """The record of a live run on an OpenAI-compatible engine whose model a price sheet names
    carries the run's own cost (its caption shows it); a scripted engine's records carry none."""
    from ragscale.allocation.prices import load_sheet
    from ragscale.engines.base import SamplingParams
    from ragscale.engines.openai_client import OpenAIEngine
    from tests.fakes import ByteTokenizer
    from tests.http_fakes import serving_model

    folder, question = trees
    stored = [L.load_record(path) for path in folder.rglob("*.json")]
    assert len(stored) == 2 and all("cost" not in record for record in stored)
    dataset = load_dataset("demo")
    served = ScriptedEngine(reply, logprob=lambda p, c: -0.3 if c == "Yes" else -1.2)
    with serving_model(served, "gemini-1.5-flash") as url:
        engine = OpenAIEngine(url, tokenizer=ByteTokenizer())
        engine.generate(["before the run"], SamplingParams(max_new_tokens=2))  # billed, but not the run's
        record = live.run_tree(engine, dataset, question, tree_key(DEFAULT, question.qid),
                               retrieve=lambda q, k: dataset.corpus[:k],
                               embed=lambda texts: __import__("numpy").ones((len(texts), 2)))
    sheet = load_sheet("gemini-1.5-flash")
    run, everything = engine.cost_usd(sheet, since=1)["total_usd"], engine.cost_usd(sheet)["total_usd"]
    assert 0 < run < everything and record["cost"]["total_usd"] == pytest.approx(run)
    assert record["cost"]["line"].endswith(f"at gemini-1.5-flash prices, {sheet.date}")
