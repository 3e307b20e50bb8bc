import pytest

from council.metrics import (abstain_f1, aurc, calibration_error, exact_match, is_abstention, normalize_answer,
                             risk_coverage, token_f1)


def test_squad_normalisation_and_scores():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffel tower"
    assert exact_match("the Normans", ["Normans"]) == 1.0
    assert token_f1("in 1066 by William", ["1066"]) == pytest.approx(0.4)
    assert is_abstention("I don't know.") and not is_abstention("1066")
    assert abstain_f1([True, False, True], [True, True, False]) == pytest.approx(0.5)


def test_risk_coverage_orders_by_score_and_groups_ties():
    coverage, risk = risk_coverage([0.9, 0.1, 0.5, 0.5], [False, True, False, True])
    assert coverage == [0.25, 0.75, 1.0]  # the two 0.5 scores enter together
    assert risk == pytest.approx([0.0, 1 / 3, 0.5])


def test_aurc_rewards_ranking_errors_last():
    errors = [False, False, True, True]
    good, bad = aurc([4, 3, 2, 1], errors), aurc([1, 2, 3, 4], errors)
    assert good == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)
    assert bad == pytest.approx((1 + 1 + 2 / 3 + 1 / 2) / 4)
    assert aurc([1, 1, 1, 1], errors) == pytest.approx(0.5)  # no ranking at all: the error rate
    with pytest.raises(ValueError, match="scores but"):
        aurc([1.0], [])


def test_calibration_error():
    assert calibration_error([1.0, 1.0, 0.0, 0.0], [True, True, False, False]) == 0.0
    assert calibration_error([0.9] * 10, [True] * 5 + [False] * 5) == pytest.approx(0.4)
    assert calibration_error([], []) == 0.0


def test_official_normalisation_differs_from_ours_where_the_script_does():
    from council.metrics import squad_normalize

    assert squad_normalize("The  Eiffel-Tower!") == "eiffeltower"  # punctuation removed, not spaced
    assert squad_normalize("An apple, a day") == "apple day"
    assert squad_normalize("two") == "two" and normalize_answer("two") == "2"  # no number words officially


def test_official_squad_v2_score_on_hand_made_cases():
    from council.metrics import OFFICIAL_KEYS, always_abstain_score, squad_f1, squad_v2_score

    assert squad_f1("in 1066", "1066") == pytest.approx(2 / 3)
    assert squad_f1("", "") == 1.0 and squad_f1("1066", "") == 0.0 and squad_f1("", "1066") == 0.0
    golds = [["1066", "in 1066"], ["Normandy"], [], []]
    predictions = ["in 1066", "the duchy of Normandy", "I don't know.", "Rollo"]
    score = squad_v2_score(predictions, golds)
    assert set(score) == set(OFFICIAL_KEYS)
    assert score["HasAns_exact"] == 50.0 and score["HasAns_total"] == 2
    assert score["HasAns_f1"] == pytest.approx(100 * (1 + 2 * (1 / 3) * 1 / (1 / 3 + 1)) / 2, abs=0.01)
    assert score["NoAns_exact"] == score["NoAns_f1"] == 50.0 and score["NoAns_total"] == 2
    assert score["exact"] == 50.0 and score["total"] == 4
    assert score["f1"] == pytest.approx((score["HasAns_f1"] * 2 + 50.0 * 2) / 4, abs=0.01)
    floor = always_abstain_score(golds)
    assert floor["f1"] == floor["exact"] == 50.0 and floor["HasAns_f1"] == 0.0 and floor["NoAns_f1"] == 100.0
    assert "NoAns_f1" not in squad_v2_score(["1066"], [["1066"]])  # a part with no question is left out
    with pytest.raises(ValueError, match="1 predictions but 2"):
        squad_v2_score(["x"], [[], []])


def test_shared_mistakes_counts_the_same_wrong_answer_only():
    from council.metrics import shared_mistakes

    golds = [["1066"], ["Rollo"], [], ["Paris"]]
    report = shared_mistakes({"a": ["1066", "William", "Normandy", "I don't know."],
                              "b": ["1066", "the william", "France", "I don't know"],
                              "c": ["1066", "Rollo", "I don't know.", "Lyon"]}, golds)
    assert report["a|b"] == {"both_wrong": 3, "same_wrong": 2, "same_wrong_share": 0.667}  # William, abstaining
    assert report["a|c"] == {"both_wrong": 1, "same_wrong": 0, "same_wrong_share": 0.0}
    assert report["b|c"]["both_wrong"] == 1
    with pytest.raises(ValueError, match="a: 1 predictions but 4"):
        shared_mistakes({"a": ["x"]}, golds)
