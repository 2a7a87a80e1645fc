"""The allocation model: planted coefficients are recovered; noise degrades the fit gracefully."""

import numpy as np
import pandas as pd
import pytest

from ragscale.allocation import PAPER_PROFILE, AllocationModel, Profile, inverse_sigmoid, paper_profile, sigmoid
from ragscale.errors import UserError

A, B, C = np.array([0.30, 0.12, 0.20]), np.array([-0.06, -0.02, 0.0]), -0.7
I = {"d1": (0.5, 0.1), "d2": (1.5, 0.4), "d3": (2.5, 0.8)}
K = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
M = (0, 1, 2, 4, 8, 16, 32)


def planted_rows(noise: float = 0.0, seed: int = 0, kind: str = "paper") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for ds, (i_doc, i_shot) in I.items():
        for k in K:
            for m in M:
                for strategy, ns in (("drag", (1,)), ("iterdrag", (2, 3, 5))):
                    for n in ns:
                        slope = A + B * np.array([i_doc, i_shot, 0.0])
                        f = slope @ np.log(np.array([k, m, n]) + 0.01) + C
                        rows.append({"dataset": ds, "strategy": strategy, "k": k, "m": m, "n": n,
                                     "score": float(sigmoid(f, kind)) + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_sigmoid_inverse_round_trip():
    x = np.linspace(-4, 4, 41)
    for kind in ("paper", "logistic"):
        assert np.allclose(inverse_sigmoid(sigmoid(x, kind), kind), x, atol=1e-6)
    assert sigmoid(-50) == pytest.approx(-2.18) and sigmoid(50) == pytest.approx(1.12)


def test_fit_recovers_planted_coefficients_without_noise():
    model = AllocationModel(standardize=False).fit(planted_rows(), i_doc={d: v[0] for d, v in I.items()},
                                                   i_shot={d: v[1] for d, v in I.items()})
    assert model.r2_ > 0.99 and model.mse_ < 1e-8
    assert np.allclose(model.a_, A, atol=1e-4)
    assert np.allclose(model.b_, B, atol=1e-4)
    assert model.c_ == pytest.approx(C, abs=1e-4)


def test_logistic_option_recovers_coefficients_on_fractions():
    rows = planted_rows(kind="logistic")
    model = AllocationModel(sigmoid="logistic").fit(rows, i_doc={d: v[0] for d, v in I.items()},
                                                    i_shot={d: v[1] for d, v in I.items()})
    assert model.r2_ > 0.99
    assert np.allclose(model.a_, A, atol=1e-4) and np.allclose(model.b_, B, atol=1e-4)
    # Fractions in, fractions out.
    assert np.allclose(model.predict(rows), rows["score"], atol=1e-6)


def test_fit_degrades_gracefully_with_noise():
    given = dict(i_doc={d: v[0] for d, v in I.items()}, i_shot={d: v[1] for d, v in I.items()})
    r2 = []
    for noise in (0.0, 0.02, 0.1, 0.3):
        model = AllocationModel(standardize=False).fit(planted_rows(noise, seed=1), **given)
        r2.append(model.r2_)
        assert np.all(np.isfinite(model.a_)) and np.isfinite(model.c_)
        if noise <= 0.02:
            assert np.allclose(model.a_, A, atol=0.02)
    assert r2[0] > r2[1] > r2[2] > r2[3] > 0.3  # worse with noise, never a collapse
    assert r2[1] > 0.99


def test_informativeness_is_measured_from_one_document_and_one_shot_rows():
    model = AllocationModel(standardize=False).fit(planted_rows())
    for ds, (i_doc, i_shot) in I.items():
        f = lambda k, m: (A + B * np.array([i_doc, i_shot, 0])) @ np.log(np.array([k, m, 1]) + 0.01) + C
        assert model.i_by_dataset_[ds][0] == pytest.approx(sigmoid(f(1, 0)) - sigmoid(f(0, 0)))
        assert model.i_by_dataset_[ds][1] == pytest.approx(sigmoid(f(0, 1)) - sigmoid(f(0, 0)))
        assert model.i_source_[ds] == ("measured", "measured")
    assert model.r2_ > 0.95


def test_z_scoring_makes_the_fit_invariant_to_score_units():
    rows = planted_rows(noise=0.05, seed=3)
    percent = rows.assign(score=40 + 12 * rows["score"])
    z = AllocationModel().fit(rows, i_doc=1.0, i_shot=0.2)
    p = AllocationModel().fit(percent, i_doc=1.0, i_shot=0.2)
    assert np.allclose(z.a_, p.a_, atol=1e-6) and z.r2_ == pytest.approx(p.r2_)
    # Predictions come back in each fit's own units, per dataset.
    assert np.allclose(p.predict(percent), 40 + 12 * z.predict(rows), atol=1e-5)
    assert abs(np.corrcoef(p.predict(percent), percent["score"])[0, 1]) > 0.9


def test_single_dataset_fixes_b_at_zero():
    rows = planted_rows()
    one = rows[rows["dataset"] == "d2"]
    model = AllocationModel(standardize=False).fit(one, i_doc=1.5, i_shot=0.4)
    assert model.b_[0] == 0 and model.b_[1] == 0
    assert np.allclose(model.coefficients(), A + B * np.array([1.5, 0.4, 0]), atol=1e-4)
    assert np.allclose(model.predict(one), one["score"], atol=1e-6)


def test_fit_rejects_bad_rows():
    with pytest.raises(UserError):
        AllocationModel().fit(pd.DataFrame({"k": [1], "m": [1], "n": [1], "score": [1]}))
    with pytest.raises(UserError):
        AllocationModel().fit(pd.DataFrame({"strategy": ["x"] * 3, "k": [1] * 3, "m": [1] * 3, "n": [1] * 3,
                                            "score": [1, 2, 3]}))
    with pytest.raises(UserError):
        AllocationModel().predict(1, 1, 1)


def test_profile_round_trip_and_paper_profile():
    model = AllocationModel(standardize=False).fit(planted_rows(), i_doc=1.0, i_shot=0.3)
    profile = model.to_profile("fitted test")
    again = AllocationModel.from_profile(Profile.from_dict(profile.to_dict()))
    assert np.allclose(again.predict(10, 4, 2), model.predict(10, 4, 2))
    paper = AllocationModel.from_profile(PAPER_PROFILE)
    assert tuple(paper.a_) == (0.325, 0.101, 0.177) and paper.c_ == -0.730
    # More documents, demonstrations or iterations never lower the paper model's prediction.
    assert paper.predict(0, 0, 1) < paper.predict(10, 0, 1) < paper.predict(10, 4, 1) < paper.predict(10, 4, 3)
    # Raw scores land inside the range of the paper's Table 1 for HotpotQA EM (22.7 .. 51.7), roughly.
    assert 15 < float(paper.predict(0, 0, 1)) < 30 and 45 < float(paper.predict(1000, 256, 5)) < 55
    custom = paper_profile("musique", "f1", i_doc=0.0, i_shot=0.0)
    assert custom.i_doc == 0.0 and custom.dataset == "musique"


def test_a_knob_never_varied_is_fixed_at_zero():
    rows = planted_rows()
    drag_only = rows[rows["strategy"] == "drag"]  # n is always 1: nothing to learn about iterations
    model = AllocationModel(standardize=False).fit(drag_only, i_doc={d: v[0] for d, v in I.items()},
                                                   i_shot={d: v[1] for d, v in I.items()})
    assert "a_n" in model.fixed_ and model.a_[2] == 0
    assert model.r2_ > 0.99 and np.allclose(model.a_[:2], A[:2], atol=1e-4)
    assert model.predict(10, 4, 5) == pytest.approx(model.predict(10, 4, 1))  # no invented gain from n
