"""The Explorer's state survives the URL: every field round-trips, bad values fall back visibly."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ragscale.explorer import state as S
from ragscale.explorer.state import DEFAULT, ExplorerState, decode, encode

text_ids = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)
states = st.builds(
    ExplorerState,
    dataset=text_ids,
    question=st.one_of(st.just(""), text_ids),
    budget=st.integers(*S.BUDGET_RANGE),
    strategy=st.sampled_from(S.STRATEGIES),
    pinned=st.booleans(),
    k=st.integers(*S.K_RANGE),
    m=st.integers(*S.M_RANGE),
    n=st.integers(*S.N_RANGE),
    policy=st.sampled_from(S.POLICIES),
    width=st.integers(*S.WIDTH_RANGE),
    profile=st.sampled_from(S.PROFILES),
    qpd=st.integers(*S.QPD_RANGE),
    node=st.one_of(st.just(""), st.integers(0, 999_999).map(str)),
    present=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(states)
def test_every_state_round_trips_through_the_url(state):
    params = encode(state)
    assert set(params) == set(S.FIELD_NAMES)
    assert all(isinstance(v, str) for v in params.values())
    restored, notices = decode(params)
    assert notices == []
    assert restored == state


def test_empty_query_string_is_the_default_without_notice():
    assert decode({}) == (DEFAULT, [])


def test_a_link_carries_readable_values():
    params = encode(DEFAULT.with_(budget=128_000, pinned=True, k=5, policy="rebase", present=True))
    assert params["budget"] == "128k" and params["pinned"] == "1" and params["k"] == "5"
    assert params["policy"] == "rebase" and params["present"] == "1"
    assert decode({"budget": "1M"})[0].budget == 1_000_000
    assert decode({"budget": "5_000_000"})[0].budget == 5_000_000


def test_streamlit_style_values_and_loose_spelling_are_accepted():
    state, notices = decode({"n": ["1", "3"], "policy": "ETS", "pinned": "true", "present": "off"})
    assert notices == []
    assert (state.n, state.policy, state.pinned, state.present) == (3, "ets", True, False)


# One invalid value per parameter: each falls back to its default, names itself in a notice,
# and leaves the other (valid) values of the same link alone.
INVALID = {
    "dataset": [""],
    "question": ["x" * 300, "bad\nid"],
    "budget": ["abc", "0", "-5k", "999", "20M", ""],
    "strategy": ["rag-fusion", ""],
    "pinned": ["maybe", "2"],
    "k": ["abc", "-1", "1001", "2.5", ""],
    "m": ["257", "-3", "many"],
    "n": ["0", "6", "three"],
    "policy": ["mcts", ""],
    "width": ["0", "65", "wide"],
    "profile": ["gpt-5"],
    "qpd": ["0", "lots"],
    "node": ["\x00", "abc'\"<script>", "-1", "1234567"],
    "present": ["sometimes"],
}


def test_invalid_table_covers_every_parameter():
    assert set(INVALID) == set(S.FIELD_NAMES)


@pytest.mark.parametrize("name,raw", [(n, r) for n, values in INVALID.items() for r in values])
def test_invalid_url_value_falls_back_with_notice(name, raw):
    base_link = encode(DEFAULT.with_(k=7, width=16, policy="beam", dataset="hotpotqa"))
    good = {key: value for key, value in base_link.items() if key != name}
    state, notices = decode({**good, name: raw})
    assert getattr(state, name) == getattr(S.opening_view(state.dataset), name)  # the link's world's view
    assert len(notices) == 1 and notices[0].startswith(f"Link value {name}=")
    for key, value in good.items():  # the rest of the link still applies
        assert encode(state)[key] == value


def test_a_link_to_another_world_falls_back_to_that_worlds_opening_view():
    state, notices = decode({"dataset": "demo"})
    assert state == S.opening_view("demo") and state.width == 4 and state.question == "" and not notices
    state, notices = decode({"dataset": "demo", "question": "bad\nid"})
    assert state.question == "" and "using ''" in notices[0]
    state, notices = decode({"dataset": "bad\x00world"})  # an invalid world: the default view, one notice
    assert state == DEFAULT and len(notices) == 1


def test_several_invalid_values_give_one_notice_each_and_unknown_keys_are_ignored():
    state, notices = decode({"k": "x", "n": "9", "utm_source": "mail", "width": "8"})
    assert len(notices) == 2 and state.width == 8 and state.k == DEFAULT.k and state.n == DEFAULT.n


def test_constructor_rejects_bad_values():
    with pytest.raises(ValueError, match="width"):
        ExplorerState(width=0)
    with pytest.raises(ValueError, match="policy"):
        ExplorerState(policy="mcts")
    with pytest.raises(ValueError, match="k"):
        ExplorerState(k=True)


def test_json_and_yaml_exports_load_back():
    state = DEFAULT.with_(budget=1_000_000, pinned=True, k=50, m=8, n=4, policy="dvts", width=16)
    assert S.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    assert S.from_dict(yaml.safe_load(yaml.safe_dump(state.to_dict()))) == state
    with pytest.raises(ValueError, match="unknown"):
        S.from_dict({"colour": "red"})


def test_a_huge_link_value_is_echoed_cut_short():
    state, notices = decode({"question": "x" * 20_000, "budget": "9" * 20_000})
    assert state.question == DEFAULT.question and state.budget == DEFAULT.budget
    assert len(notices) == 2 and all(len(n) < 300 for n in notices)
    assert "20,000 characters" in notices[0]
