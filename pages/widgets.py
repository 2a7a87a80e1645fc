"""Widgets more than one page uses: the budget input, tree clicks, knob sliders, chart options.

Not a page (app.py lists pages explicitly). Each widget keeps its value in ``st.session_state``
under the key it is given and reports changes through a callback, so a page holds no parsing.
"""

from __future__ import annotations

from typing import Callable, Sequence

import streamlit as st

from ragscale.allocation import BUDGET_OPTIONS, nearest_budget_option, parse_budget
from ragscale.errors import UserError
from ragscale.formatting import fmt_tokens, md_literal
from ragscale.plots.style import chart_config
from ragscale.search.config import POLICY_LABELS

__all__ = ["BUDGET_OPTIONS", "POLICY_LABELS", "budget_input", "chart_config", "clicked_node", "fmt_tokens",
           "node_panel", "page_style", "run_panel", "stepped_slider"]

def budget_input(key: str, budget: int, on_change: Callable[[int], None], *, label: str = "Token budget",
                 box_label: str = "Budget", help: str | None = None, check: Callable[[int], str | None] | None = None,
                 columns: Sequence[int] = (3, 1)) -> str | None:
    """A log slider (``{key}_slider``) and a text box (``{key}_text``: 16k, 1M, 1e6, 5_000_000)
    showing ``budget``; a valid change calls ``on_change(tokens)``. Text is read by
    ``allocation.parse_budget``, the one budget parser. Returns the last refused entry's message
    (None when there was none); the budget stays what it was."""
    ss = st.session_state
    ss[f"{key}_slider"] = nearest_budget_option(budget)
    short = fmt_tokens(budget)  # '128k'; a budget it would round is shown whole, so the text parses back to it
    ss[f"{key}_text"] = short if parse_budget(short) == budget else f"{budget:,}"

    def from_text() -> None:
        text = ss[f"{key}_text"]
        try:
            value = parse_budget(text)
            problem = check(value) if check else None
        except UserError as exc:
            value, problem = None, str(exc)
        if problem:
            ss[f"{key}_error"] = f"Budget {str(text)[:40]!r} is not valid: {problem}"
        else:
            on_change(value)

    left, right = st.columns(columns, vertical_alignment="bottom")
    left.select_slider(f"{label} per question (log scale)", BUDGET_OPTIONS, key=f"{key}_slider", format_func=fmt_tokens,
                       on_change=lambda: on_change(int(ss[f"{key}_slider"])), help=help)
    right.text_input(box_label, key=f"{key}_text", on_change=from_text, help="type 16k, 128000, 1M, 1e6 or 5_000_000")
    return ss.pop(f"{key}_error", None)


def stepped_slider(label: str, key: str, value: int, steps: Sequence[int], on_change: Callable[[int], None],
                   help: str | None = None, disabled: bool = False) -> None:
    """A slider over ``steps`` (plus ``value`` when a link carries one between them)."""
    st.session_state[key] = value
    st.select_slider(label, sorted(set(steps) | {value}), key=key, help=help, disabled=disabled,
                     on_change=lambda: on_change(int(st.session_state[key])))


def clicked_node(event, fig) -> int | None:
    """The node id of a clicked point of a tree figure (it carries node ids as customdata)."""
    try:
        points = event.selection.points
    except AttributeError:
        return None
    for point in points:
        trace = fig.data[point["curve_number"]]
        if trace.customdata is not None:
            return int(trace.customdata[point["point_index"]])
    return None


def page_style(presenting: bool) -> None:
    """Metric text never cut; no chart toolbar on touch screens; in presentation mode large type,
    no sidebar or header, and everything packed so the figures, a chart and the tree share the
    first screen of a 1280x720 projector."""
    metric = "[data-testid='stMetric{}'] [data-testid='stMarkdownContainer'] p"  # beats the general p rule
    base = ("[data-testid='stMetricValue'] { font-size: 1.6rem; }"
            "[data-testid='stMetric'] * { white-space: normal !important; overflow: visible !important; "
            "text-overflow: clip !important; }"
            # the figures' wrapping row: equal shares, at least 8rem each (a phone shows two abreast)
            "[data-testid='stHorizontalBlock'] > div:has(> [data-testid='stMetric']), "
            "div:has(> [data-testid='stMetric']) { flex: 1 1 0 !important; min-width: 8rem; align-self: stretch; }"
            "[data-testid='stMetric'] { height: 100%; }"  # one height for the row's cards, whatever wraps
            # a touch screen shows plotly's toolbar all the time, over the legend: no hover there, no toolbar
            "@media (hover: none) { .js-plotly-plot .modebar-container { display: none !important; } }")
    large = ("[data-testid='stSidebar'], [data-testid='stSidebarCollapsedControl'], [data-testid='stHeader']"
             " { display: none !important; }"
             ".block-container { padding: 0.75rem 1.5rem 1rem !important; max-width: 100% !important; }"
             "html, body, [data-testid='stMarkdownContainer'] p, label p { font-size: 1.2rem !important; }"
             "h1 { font-size: 1.7rem !important; padding: 0 !important; } "
             "h3 { font-size: 1.4rem !important; padding: 0.2rem 0 0 !important; }"
             # (rem is 1.2x here: the html rule above) figures a room reads, on a card a fifth as tall as the screen
             "[data-testid='stMetric'] { padding: 0.4rem 0.7rem !important; }"
             f"{metric.format('Value')} {{ font-size: 2rem !important; line-height: 1.15; }}"
             f"{metric.format('Delta')}, [data-testid='stMetricDelta'] {{ font-size: 0.8rem !important; }}"
             f"{metric.format('Label')} {{ font-size: 0.85rem !important; }}")
    st.html(f"<style>{base}{large if presenting else ''}</style>")


def node_panel(d: dict) -> None:
    """What a clicked tree node holds (``ragscale.explorer.screen.node_details``)."""
    score = "—" if d["score"] is None else f"{d['score']:.3f}"
    step = d["text"].strip() if d["text"] and not d["sub_query"] else ""  # a search task's step (arithmetic)
    st.markdown(f"**Node {d['id']}** · depth {d['depth']} · {md_literal(d['status'])} · score **{score}** · "
                f"{d['tokens']} tokens, reusing a {d['prefix_tokens']:,}-token prefix" + (" · the step said:" if step else ""))
    if step:
        st.code(step, language=None, wrap_lines=True)
    for label, value in (("Question", d["question"]), ("Sub-query", d["sub_query"]),
                         ("Intermediate answer", d["intermediate"]), ("Final answer", d["answer"])):
        if value:
            st.markdown(f"**{label}:** {md_literal(value)}")
    if d["documents"]:
        st.markdown("**Retrieved documents:** " + "; ".join(f"*{md_literal(doc['title'] or doc['id'])}*" for doc in d["documents"]))
        with st.expander("Document texts"):
            for doc in d["documents"]:
                st.markdown(f"**{md_literal(doc['title'] or doc['id'])}** — {md_literal(doc['text'])}")


def run_panel(res: dict) -> None:
    """One search run: answer, retained KV, cache hits, its tree (click a node: the prefix it reuses)."""
    from ragscale.plots.tree import tree_figure
    from ragscale.search.tree import Tree

    tree = Tree.from_dict(res["tree"])
    st.subheader(f"{md_literal(res['policy'])} · width {res['width']}")
    verdict = ":green[right]" if res["correct"] else ":red[wrong]"
    st.markdown(f"**Answer:** {md_literal(res['answer'] or '—')} · {verdict} (gold: {md_literal(' | '.join(res['golds'][:3]))})")
    m1, m2 = st.columns(2)
    m1.metric("Mean retained KV · lower is better", f"{res['kv']['mean']:,.0f}", border=True,
              help=f"unique tokens on the kept paths after each step (peak {res['kv']['peak']:,})")
    hit = res["cached_tokens"] / res["prompt_tokens"] if res["prompt_tokens"] else 0.0
    m2.metric("Prefix-cache hits", f"{hit:.0%}", border=True, help=f"over {res['model_calls']} model calls")
    focus_key = f"ts_focus_{res['policy']}"
    focus = st.session_state.get(focus_key)
    fig = tree_figure(tree, focus=focus)
    event = st.plotly_chart(fig, key=f"ts_tree_{res['policy']}", on_select="rerun", selection_mode="points",
                            config=chart_config(f"tree-{res['policy']}"))
    clicked = clicked_node(event, fig)
    if clicked is not None and clicked != focus:
        st.session_state[focus_key] = clicked
        st.rerun()
    if focus is not None and 0 <= focus < len(tree):
        node = tree[focus]
        st.caption(f"Node {focus}: reuses {tree.prefix_token_count(focus) - node.num_tokens:,} prefix tokens "
                   f"(orange path); the engine reported {node.cached_tokens or 0:,} cached prompt tokens.")
        st.code(node.text if node.parent is not None else node.text[-1500:], language=None)
    else:
        st.caption("Click a node to highlight the prefix KV it reuses.")
    st.caption(f"{res['tokens_generated']:,} tokens generated · {res['prompt_tokens']:,} prompt tokens "
               f"({res['cached_tokens']:,} cached) · {res['wall_seconds']:.1f} s · {md_literal(res.get('engine', ''))}"
               + (f" · cost {md_literal(res['cost']['line'])}" if res.get("cost") else ""))
    with st.expander("Nodes"):
        st.dataframe(tree.to_frame().drop(columns=["text"]), hide_index=True, width="stretch")
