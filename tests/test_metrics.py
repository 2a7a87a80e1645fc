"""EM / F1 / Acc with SQuAD normalisation, checked on hand-worked cases."""

import pytest

from ragscale.rag.metrics import accuracy, exact_match, f1_score, normalize_answer, score_answer


@pytest.mark.parametrize("raw, normalised", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  a   Tale of  Two Cities. ", "tale of two cities"),
    ("Denver Broncos", "denver broncos"),
    ("an apple, the pear", "apple pear"),
    ("U.S.A.", "usa"),
    ("", ""),
])
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_exact_match_ignores_case_punctuation_and_articles():
    assert exact_match("the Denver Broncos.", ["Denver Broncos"]) == 1.0
    assert exact_match("Denver", ["Denver Broncos"]) == 0.0


def test_f1_partial_overlap_squad_example():
    # prediction tokens {denver, broncos, won}, gold {denver, broncos}: P = 2/3, R = 1 -> F1 = 0.8
    assert f1_score("Denver Broncos won", ["Denver Broncos"]) == pytest.approx(0.8)
    # one shared token of two each: P = R = 0.5
    assert f1_score("Carolina Panthers", ["Denver Panthers"]) == pytest.approx(0.5)
    assert f1_score("Seattle", ["Denver Broncos"]) == 0.0


def test_f1_counts_repeated_tokens_once_per_occurrence():
    # "the" is dropped; "new new york" vs "new york": common = {new:1, york:1} -> P = 2/3, R = 1
    assert f1_score("new new york", ["New York"]) == pytest.approx(0.8)


def test_max_over_aliases():
    golds = ["Hank Snow", "Clarence Eugene Snow"]
    assert exact_match("clarence eugene snow", golds) == 1.0
    assert f1_score("Eugene Snow", golds) == pytest.approx(2 * (2 / 2) * (2 / 3) / (1 + 2 / 3))
    assert score_answer("Snow", golds)["f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_accuracy_is_gold_inside_prediction_on_word_boundaries():
    assert accuracy("The answer is Vellmoor, a city.", ["Vellmoor"]) == 1.0
    assert accuracy("north", ["no"]) == 0.0
    assert accuracy("No, they are not.", ["no"]) == 1.0
    assert accuracy("anything", [""]) == 0.0


def test_empty_prediction_and_empty_gold():
    assert score_answer("", ["Paris"]) == {"em": 0.0, "f1": 0.0, "acc": 0.0}
    assert f1_score("", [""]) == 1.0


def test_score_answer_keys_and_single_string_gold():
    scores = score_answer("the Orrin River", "Orrin River")
    assert scores == {"em": 1.0, "f1": 1.0, "acc": 1.0}
    assert score_answer("It flows past Orrin River town", ["Orrin River"]) == {
        "em": 0.0, "f1": pytest.approx(2 * (2 / 6) * 1 / (2 / 6 + 1)), "acc": 1.0,
    }
