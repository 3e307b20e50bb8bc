"""The calibrator and peer support on hand-made votes: pure functions, no model."""

import json
import math

import pytest

from council.aggregator import AggregatorConfig, Vote, aggregate, peer_support
from council.calibrator import (FEATURE_NAMES, Calibrator, CalibratorError, features, fit, threshold_for_risk)
from council.prompts import ABSTAIN_ANSWER

PASSAGES = ["Paris is the capital of France.", "Lyon is a city in France."]
LOOSE = AggregatorConfig(min_agreement=0.0, min_grounding=0.0)


def only(weight_of: dict[str, float], bias: float = 0.0, threshold: float = 0.5) -> Calibrator:
    """A calibrator that reads only the named raw features (mean 0, scale 1)."""
    return Calibrator(weights={n: weight_of.get(n, 0.0) for n in FEATURE_NAMES}, bias=bias,
                      mean=dict.fromkeys(FEATURE_NAMES, 0.0), scale=dict.fromkeys(FEATURE_NAMES, 1.0),
                      threshold=threshold)


def votes(paris_review=-0.5, lyon_review=-3.0, abstain_review=-2.0):
    review = {"Paris": paris_review, "Lyon": lyon_review, ABSTAIN_ANSWER: abstain_review}
    return [Vote("a", "Paris", mean_logprob=-0.2, route_score=0.6, no_answer_margin=-2.0, review=review),
            Vote("b", "Paris", mean_logprob=-0.4, route_score=0.4, no_answer_margin=-1.0, review=review),
            Vote("c", "Lyon", mean_logprob=-1.0, route_score=0.2, no_answer_margin=-30.0, review=review),
            Vote("d", ABSTAIN_ANSWER, mean_logprob=-0.1, route_score=0.1, no_answer_margin=3.0, review=review)]


def test_peer_support_is_the_reviewers_mean_softmax_preference():
    vs = [Vote("a", "x", review={"x": 0.0, "y": math.log(3)}), Vote("b", "y", review={"x": 0.0, "y": 0.0}),
          Vote("c", "x")]  # c did not review
    assert peer_support(vs, [{"x"}, {"y"}]) == pytest.approx([(0.25 + 0.5) / 2, (0.75 + 0.5) / 2])
    assert peer_support([Vote("a", "x")], [{"x"}]) == [None]


def test_features_describe_the_best_answer_cluster():
    agg = aggregate(votes(), passages=PASSAGES, config=LOOSE)
    f = features(agg.clusters, agg.votes)
    assert set(f) == set(FEATURE_NAMES)
    paris = next(c for c in agg.clusters if c.answer == "Paris")
    assert f["share"] == paris.share and f["grounding"] == paris.grounding == 1.0
    assert f["peer_support"] == pytest.approx(paris.peer_support) and 0.5 < paris.peer_support < 1.0
    assert f["mean_logprob"] == pytest.approx(-0.3) and f["route_score"] == pytest.approx(0.5)
    assert f["no_answer_margin"] == pytest.approx((-2 - 1 - 10 + 3) / 4)  # clipped to [-10, 10]
    assert f["answer_clusters"] == 2 and f["arrived"] == 4 and f["answer_words"] == pytest.approx(math.log(2))
    assert f["abstain_share"] > 0 and 0 < f["abstain_peer_support"] < paris.peer_support
    everyone_abstains = aggregate([Vote("a", ABSTAIN_ANSWER), Vote("b", ABSTAIN_ANSWER)], config=LOOSE)
    assert features(everyone_abstains.clusters, everyone_abstains.votes) is None


def test_the_calibrated_probability_decides_and_is_the_confidence():
    agg = aggregate(votes(), passages=PASSAGES, config=LOOSE, calibrator=only({"share": 2.0}, bias=-0.5))
    share = next(c.share for c in agg.clusters if c.answer == "Paris")
    p = 1 / (1 + math.exp(-(2.0 * share - 0.5)))
    assert (agg.answer, agg.reason, agg.confidence) == ("Paris", "answered", pytest.approx(p))
    strict = only({"share": 2.0}, bias=-0.5, threshold=0.95)
    agg = aggregate(votes(), passages=PASSAGES, config=LOOSE, calibrator=strict)
    assert (agg.answer, agg.reason, agg.confidence) == (None, "low_confidence", pytest.approx(1 - p))
    # peer review can carry the decision: the voters prefer Lyon, the calibrator reads peer support
    by_peers = only({"peer_support": 8.0}, bias=-4.0)
    agg = aggregate(votes(paris_review=-3.0, lyon_review=-0.1), passages=PASSAGES, config=LOOSE, calibrator=by_peers)
    assert agg.reason == "low_confidence"
    long = [Vote("a", "Paris is the capital of France and " * 3)]
    agg = aggregate(long, passages=PASSAGES, config=LOOSE, calibrator=only({}, bias=5.0))
    assert agg.reason == "not_an_answer"


def test_abstaining_the_confidence_is_the_abstention_heads_probability():
    head = {**only({"share": 2.0}, bias=-0.5, threshold=0.95).__dict__,
            "abstain_weights": {n: (3.0 if n == "abstain_share" else 0.0) for n in FEATURE_NAMES},
            "abstain_bias": -1.0, "all_abstained": 0.7}
    strict = Calibrator(**head)
    agg = aggregate(votes(), passages=PASSAGES, config=LOOSE, calibrator=strict)
    abstain_share = next(c.share for c in agg.clusters if c.abstention)
    q = 1 / (1 + math.exp(-(3.0 * abstain_share - 1.0)))
    assert agg.reason == "low_confidence" and agg.confidence == pytest.approx(q)
    assert strict.abstain_probability(None) == 0.7  # every vote abstained: the validation rate
    silent = [Vote("a", ABSTAIN_ANSWER), Vote("b", ABSTAIN_ANSWER)]
    agg = aggregate(silent, passages=PASSAGES, config=LOOSE, calibrator=strict)
    assert (agg.reason, agg.confidence) == ("abstention_won", 0.7)
    with pytest.raises(CalibratorError, match="give both"):
        Calibrator(**{**head, "abstain_bias": None})


def test_threshold_for_risk_keeps_the_most_answers_within_the_risk():
    probs = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    right = [True, True, False, True, False, False]
    assert threshold_for_risk(probs, right, 0.0) == 0.8  # the top two only
    assert threshold_for_risk(probs, right, 0.25) == 0.6  # 1 wrong of 4
    assert threshold_for_risk(probs, right, 0.5) == 0.4  # all six: 3 of 6
    assert threshold_for_risk([0.9, 0.9], [True, False], 0.0) == 1.0  # a tie cannot be cut: answer nothing


def test_fit_learns_the_signal_and_sets_its_threshold(tmp_path):
    import random

    rng = random.Random(0)
    rows, right = [], []
    for _ in range(400):
        share = rng.random()
        rows.append({**dict.fromkeys(FEATURE_NAMES, 0.0), "share": share, "arrived": 3.0,
                     "mean_logprob": rng.gauss(0, 1)})  # noise
        right.append(rng.random() < share)
    no_answer = [r["share"] < 0.3 for r in rows]
    c = fit(rows, right, max_risk=0.2, abstain_right=no_answer, all_abstained=0.6, fitted_on={"questions": 400})
    assert c.weights["share"] > 1.0 and abs(c.weights["mean_logprob"]) < abs(c.weights["share"]) / 4
    assert c.weights["arrived"] == 0.0  # a constant feature learns nothing
    low, high = ({**rows[0], "share": s} for s in (0.1, 0.9))
    assert c.probability(low) < 0.3 < 0.7 < c.probability(high)
    assert c.abstain_probability(low) > 0.7 > 0.1 > c.abstain_probability(high) and c.all_abstained == 0.6
    kept = [ok for r, ok in zip(rows, right) if c.probability(r) >= c.threshold]
    assert kept and 1 - sum(kept) / len(kept) <= 0.2 and c.max_risk == 0.2
    c.save(tmp_path / "calibrator.json")
    again = Calibrator.load(tmp_path / "calibrator.json")
    assert again == c and again.fitted_on == {"questions": 400}
    with pytest.raises(ValueError, match="right and wrong both present"):
        fit(rows[:3], [True] * 3)


@pytest.mark.parametrize("content, message", [
    (None, "calibrator.json does not exist"),
    ("{", "not a JSON calibrator"),
    (json.dumps({"format": "other", "version": 1}), "not a council-calibrator file of version 2"),
    (json.dumps({**only({}).to_dict(), "weights": {"share": 1.0}}), r"calibrator weights: features \['share'\], expected \['abstain_peer_support'"),
    (json.dumps({**only({}).to_dict(), "threshold": 2}), "threshold=2: must be a probability"),
    (json.dumps({**only({}).to_dict(), "colour": 1}), "malformed calibrator"),
])
def test_a_bad_calibrator_file_is_refused_by_name(tmp_path, content, message):
    path = tmp_path / "calibrator.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CalibratorError, match=message):
        Calibrator.load(path)
