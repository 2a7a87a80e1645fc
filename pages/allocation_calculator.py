"""Allocation calculator: the best (k, m, n) for a token budget, what it is predicted to score, and what it costs.

Built on the computation allocation model of Yue et al. 2025 (ragscale.allocation). Thin: widgets
and plots; every number comes from ragscale, the heavy parts are cached per input.
"""

from __future__ import annotations

import json

import streamlit as st
import yaml

import pages.common  # noqa: F401  (routes a deep link through app.py)
from pages.widgets import budget_input
from ragscale.allocation import (
    PAPER_PROFILE, STRATEGIES, STRATEGY_DESCRIPTIONS, TABLE1_DATASETS, AllocationModel, CostModel,
    TokenSizes, available_profiles, frontier, load_table1, paper_profile,
)
from ragscale.allocation.calculator import (TIER_COLUMNS, bill_table, calculate, headline, score_label,
                                           sheet_from_frame, summary_line, tier_frame, value_line)
from ragscale.allocation.cost import tier_summary
from ragscale.allocation.prices import available_sheets, load_sheet
from ragscale.errors import UserError
from ragscale.allocation.explain import (
    FIDELITY_METHOD, HOW_COMPUTED, PAPER_PROFILE_NOTE, PRICES_NOTE, TOKEN_SIZE_LABELS, WHY_DISAGREE,
)
from ragscale.allocation.fidelity import fidelity_display, fidelity_report
from ragscale.allocation.profiles import METRICS, Profile, default_informativeness
from ragscale.formatting import fmt_tokens, md_literal
from ragscale.plots.allocation import (
    FRONTIER_BUDGETS, HEATMAP_K, HEATMAP_M, cost_figure, fidelity_figure, frontier_figure, heatmap_figure,
)


# ---- cached computations (inputs are plain dicts so Streamlit can hash them) -------------------
@st.cache_data(max_entries=64, show_spinner=False)
def cached_frontier(profile: dict, sizes: dict):
    model = AllocationModel.from_profile(Profile.from_dict(profile))
    return frontier(model, FRONTIER_BUDGETS, list(STRATEGIES) + ["auto"], TokenSizes.from_dict(sizes))


@st.cache_data(max_entries=256, show_spinner=False)
def cached_calculation(profile: dict, sizes: dict, cost: dict, budget: int, strategy: str, manual):
    return calculate(Profile.from_dict(profile), budget, strategy, TokenSizes.from_dict(sizes),
                     CostModel.from_dict(cost), manual)


@st.cache_data(max_entries=64, show_spinner=False)
def cached_heatmap(profile: dict, sizes: dict, budget: int, strategy: str, n: int, chosen: dict, label: str):
    model = AllocationModel.from_profile(Profile.from_dict(profile))
    return heatmap_figure(model, strategy, n, TokenSizes.from_dict(sizes), budget, HEATMAP_K, HEATMAP_M, chosen, label)


@st.cache_data(max_entries=16, show_spinner=False)
def cached_fidelity(metric: str, sizes: dict):
    report = fidelity_report(metric, TokenSizes.from_dict(sizes))
    return report["cells"], report["findings"]


# ---- sidebar: profile and token sizes (prices: in the page) -----------------------------------------------------
def profile_input() -> Profile:
    with st.sidebar.expander("Model profile", expanded=True):
        profiles = available_profiles()
        name = st.selectbox("Profile", list(profiles), key="alloc_profile",
                            help="The paper's fit, or profiles fitted to your own runs (Scaling runs page).")
        if name != PAPER_PROFILE.name:
            profile = profiles[name]
            st.caption(f"Fitted on {profile.n_rows or '?'} rows; R² {profile.r2 if profile.r2 is None else round(profile.r2, 3)}; "
                       f"context window {fmt_tokens(profile.context_window) if profile.context_window else 'unknown'}")
            return profile
        dataset = st.selectbox("Read scores as dataset", TABLE1_DATASETS, index=TABLE1_DATASETS.index("hotpotqa"),
                               key="alloc_dataset")
        metric = st.selectbox("Metric", METRICS, format_func=str.upper, key="alloc_metric")
        i_doc, i_shot = default_informativeness(dataset, metric)
        i_doc = st.number_input("i_doc (gain of 1 document, z-units)", value=round(float(i_doc), 3), step=0.1,
                                key=f"alloc_idoc_{dataset}_{metric}")
        i_shot = st.number_input("i_shot (gain of 1 demonstration, z-units)", value=round(float(i_shot), 3),
                                 step=0.05, key=f"alloc_ishot_{dataset}_{metric}")
        st.caption(PAPER_PROFILE_NOTE)
        return paper_profile(dataset, metric, i_doc, i_shot)


def sizes_input() -> TokenSizes:
    with st.sidebar.expander("Token sizes"):
        values = {key: st.number_input(label, min_value=0.0, value=float(getattr(TokenSizes(), key)), step=1.0,
                                       key=f"alloc_size_{key}") for key, label in TOKEN_SIZE_LABELS.items()}
    return TokenSizes(**values)


def cost_input() -> CostModel:
    """Prices and traffic, in the page where a budget owner sees them: the sheet's tiers (editable),
    queries a day, cache hits and speeds."""
    box = st.container(border=True)
    box.markdown("**Prices and traffic**")
    c1, c2, c3, c4, c5 = box.columns([3, 2, 2, 2, 2], vertical_alignment="bottom")
    sheets = available_sheets()
    name = c1.selectbox("Price sheet", list(sheets), key="alloc_sheet",
                        format_func=lambda n: f"{load_sheet(n).model} · {load_sheet(n).date}", help=PRICES_NOTE)
    sheet = load_sheet(name)
    d = CostModel(prices=sheet)
    qpd = c2.number_input("Queries per day", min_value=0.0, value=d.queries_per_day, step=100.0, key="alloc_qpd",
                          format="%.0f")
    prefill = c3.number_input("Prefill tokens/s", min_value=1.0, value=d.prefill_tokens_per_s, step=500.0, format="%.0f")
    decode = c4.number_input("Decode tokens/s", min_value=1.0, value=d.decode_tokens_per_s, step=10.0, format="%.0f")
    auto_cache = c5.toggle("Cache", value=True, key="alloc_auto_cache",
                           help="On: every shared prefix is billed as cached (instruction and demonstrations are "
                                "shared by all questions; each IterDRAG call re-sends the previous prompt). Off: "
                                "set the hit fraction yourself.")
    hit = None if auto_cache else box.slider("Prefix-cache hit fraction", 0.0, 1.0, 0.5, key="alloc_hit")
    edited = box.data_editor(tier_frame(sheet), key=f"alloc_tiers_{name}", hide_index=True, width="stretch",
                             num_rows="dynamic", column_config={label: st.column_config.NumberColumn(format="%g")
                                                                for label in list(TIER_COLUMNS.values())[2:]})
    box.caption(f"Source: {sheet.source} Each model call is billed at the tier its own prompt falls in.")
    try:
        return CostModel(sheet_from_frame(sheet, edited), qpd, hit, prefill, decode)
    except UserError as exc:
        box.error(f"Prices not used: {exc}")
        return CostModel(sheet, qpd, hit, prefill, decode)


# ---- the page ---------------------------------------------------------------------------------
st.title("Allocation calculator")
st.caption("What-if budgeting with the computation allocation model of Yue et al. 2025: the (k documents, "
           "m demonstrations, n iterations) that the model predicts is best for a token budget, and what it costs.")
profile, sizes = profile_input(), sizes_input()
st.session_state.setdefault("alloc_budget", 128_000)
refused = budget_input("alloc_budget", st.session_state["alloc_budget"],
                       lambda tokens: st.session_state.update(alloc_budget=tokens),
                       box_label="Budget (e.g. 16k, 1M, 5_000_000)",
                       help="Effective context length: input tokens summed over every model call for one question.")
if refused:
    st.error(md_literal(refused))
budget = int(st.session_state["alloc_budget"])
c1, c2 = st.columns([1, 2])
strategy = c1.selectbox("Strategy", ("auto",) + STRATEGIES, key="alloc_strategy",
                        help="\n".join(f"- **{k}**: {v}" for k, v in STRATEGY_DESCRIPTIONS.items()))
mode = c2.radio("Configuration", ("Auto-optimise", "Manual k, m, n"), horizontal=True, key="alloc_mode")
profile_key, sizes_key = profile.to_dict(), sizes.to_dict()
manual = None
if mode != "Auto-optimise":
    knob = "drag" if strategy == "auto" else strategy
    s1, s2, s3 = st.columns(3)
    manual = (s1.slider("k documents", 0, 1000, 20, key="alloc_k", disabled=knob in ("zero-shot", "many-shot")),
              s2.slider("m demonstrations", 0, 256, 2, key="alloc_m", disabled=knob in ("zero-shot", "rag")),
              s3.slider("n iterations", 1, 5, 2, key="alloc_n", disabled=knob != "iterdrag"))
answer = st.container()  # the headline sits above the prices it is computed from
cost = cost_input()
calc = cached_calculation(profile_key, sizes_key, cost.to_dict(), budget, strategy, manual)
if calc.error:
    answer.error(md_literal(calc.error))
    st.stop()
for notice in calc.notices + ([calc.value.warning] if calc.value and calc.value.warning else []):
    answer.warning(md_literal(notice))
chosen, costs, window = calc.chosen.to_dict(), calc.costs, profile.context_window
label = score_label(profile)
for column, number in zip(answer.columns(3) + answer.columns(3), headline(calc, profile, cost, manual is not None)):
    column.metric(**number)
answer.caption(summary_line(calc))
answer.markdown(value_line(calc, profile))
with answer.expander(f"The bill, call by call ({len(costs.call_bills)} call{'s' if len(costs.call_bills) > 1 else ''}: "
                     f"{', '.join(tier_summary(costs))})"):
    st.dataframe(bill_table(costs), hide_index=True, width="stretch")

left, right = st.columns(2)
left.plotly_chart(frontier_figure(cached_frontier(profile_key, sizes_key), budget,
                                  load_table1() if profile.name == PAPER_PROFILE.name else None,
                                  profile.metric or "em", profile.dataset or None, chosen, label,
                                  context_window=window, compact=True), width="stretch")
heat = chosen["strategy"] if chosen["strategy"] in ("drag", "iterdrag") else "drag"
right.plotly_chart(cached_heatmap(profile_key, sizes_key, budget, heat, int(chosen["n"]),
                                  {key: chosen[key] for key in ("k", "m")} if heat == chosen["strategy"] else None,
                                  label), width="stretch")

per = st.radio("Cost per", ("month", "query"), horizontal=True, key="alloc_cost_per")
bars = [(f"chosen: {chosen['strategy']}", costs)] + [(f"best {name}", option_cost)
                                                     for name, (_, option_cost) in calc.per_strategy.items()]
st.plotly_chart(cost_figure(bars, per), width="stretch")

export = {"allocation": chosen, "cost": costs.to_dict(), "token_sizes": sizes_key, "prices": cost.to_dict(),
          "profile": profile_key}
d1, d2, _ = st.columns([1, 1, 4])
d1.download_button("Download JSON", json.dumps(export, indent=2), "allocation.json", "application/json")
d2.download_button("Download YAML", yaml.safe_dump(export, sort_keys=False), "allocation.yaml", "application/yaml")

st.subheader("How well does the model reproduce the paper?")
metric = profile.metric if profile.name == PAPER_PROFILE.name else "em"
cells, findings = cached_fidelity(metric, sizes_key)
st.caption(FIDELITY_METHOD.format(metric=metric.upper()))
st.plotly_chart(fidelity_figure(cells, metric), width="stretch")
st.dataframe(fidelity_display(cells), hide_index=True, width="stretch", height=36 + 35 * len(cells),
             column_config={name: st.column_config.NumberColumn(format=fmt) for name, fmt in
                            (("gap", "%+.1f"), ("predicted", "%.1f"), ("Table 1 best", "%.1f"))})
st.markdown("\n".join(f"- {line}" for line in findings + [WHY_DISAGREE]))
with st.expander("How the numbers are computed"):
    st.markdown(HOW_COMPUTED)
