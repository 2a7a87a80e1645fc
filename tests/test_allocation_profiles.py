"""Profiles: the paper's Table 1 and Table 8 as shipped, and the hook for profiles fitted to runs."""

import json

import numpy as np
import pytest

from ragscale.allocation import (
    PAPER_PROFILE,
    AllocationModel,
    Profile,
    available_profiles,
    get_profile,
    load_table1,
    optimise,
    paper_profile,
    register_profile,
    save_profile,
    table1_scale,
)
from ragscale.allocation.profiles import _REGISTERED, default_informativeness
from ragscale.cli import main
from ragscale.errors import UserError
from tests.test_allocation_model import planted_rows


def test_table1_is_the_papers_table():
    table = load_table1()
    assert len(table) == 56 and set(table["method"]) == {"zero-shot", "many-shot", "rag", "drag", "iterdrag"}
    row = table[(table["l_max"] == 5_000_000) & (table["dataset"] == "2wikimultihopqa")].iloc[0]
    assert (row["em"], row["f1"], row["acc"]) == (67.0, 75.2, 76.9)
    hotpot = table.loc[table["dataset"] == "hotpotqa", "em"]
    assert table1_scale("hotpotqa", "em") == pytest.approx((hotpot.mean(), hotpot.std(ddof=0)))


def test_paper_profile_defaults_are_documented_heuristics():
    mean, std = table1_scale("musique", "f1")
    i_doc, i_shot = default_informativeness("musique", "f1")
    assert i_doc == pytest.approx(0.5 * (21.5 - 13.2) / std) and i_shot == pytest.approx(0.5 * (16.4 - 13.2) / std)
    assert PAPER_PROFILE.a == (0.325, 0.101, 0.177) and PAPER_PROFILE.b == (-0.067, -0.008, 0.0)
    with pytest.raises(UserError):
        paper_profile("nq", "em")
    with pytest.raises(UserError):
        paper_profile("hotpotqa", "bleu")


@pytest.fixture
def profile_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGSCALE_CACHE_DIR", str(tmp_path))
    yield tmp_path
    _REGISTERED.clear()


def test_fitted_profiles_are_found_on_disk_and_by_name(profile_cache, capsys):
    model = AllocationModel().fit(planted_rows().assign(score=lambda d: 30 + 10 * d["score"]), i_doc=1, i_shot=0.2)
    path = save_profile(model.to_profile("SmolLM2 on HotpotQA (test)", source="test"))
    assert path.parent == profile_cache / "profiles"
    (profile_cache / "profiles" / "broken.json").write_text("{not json")  # must not hide the others
    profiles = available_profiles()
    assert list(profiles)[0] == PAPER_PROFILE.name and "SmolLM2 on HotpotQA (test)" in profiles
    again = get_profile("SmolLM2 on HotpotQA (test)")
    assert np.allclose(AllocationModel.from_profile(again).predict(10, 2, 1), model.predict(10, 2, 1))
    assert optimise(again, "32k").effective_tokens <= 32_000
    assert main(["allocate", "--budget", "32k", "--profile", "SmolLM2 on HotpotQA (test)", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["profile"] == "SmolLM2 on HotpotQA (test)"
    assert main(["allocate", "--budget", "32k", "--profile", str(path), "--json"]) == 0


def test_registered_profiles_and_unknown_names(profile_cache):
    register_profile(Profile(name="in memory", a=(0.3, 0.1, 0.2), b=(0, 0, 0), c=-0.5))
    assert "in memory" in available_profiles()
    with pytest.raises(UserError, match="unknown profile"):
        get_profile("nope")
    with pytest.raises(UserError):
        Profile.from_dict({"name": "x", "a": [1, 2], "b": [0, 0, 0], "c": 0})
