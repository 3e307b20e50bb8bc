"""The router: scores against profiles, top-k with thresholds, fitted thresholds, nothing-fits as a value."""

from __future__ import annotations

import numpy as np
import pytest

from council.embedder import get_embedder
from tests.conftest import HashEmbedder
from council.router import Profile, RouteChoice, Router, RouterConfig, _accuracy, _select

PROFILES = [
    Profile("history", "Wars, kings and conquests of the past.",
            ["When did the Normans conquer England?", "Who won the French and Indian War?",
             "Which king led the Norman conquest?"]),
    Profile("medicine", "The immune system, diseases and the body.",
            ["What do antibodies bind to?", "Which cells fight infection in the immune system?",
             "How do vaccines train the immune system?"]),
    Profile("economics", "Oil, markets, prices and crises.",
            ["What caused the 1973 oil crisis?", "How did oil prices change during the embargo?",
             "Which countries joined the oil embargo?"]),
]


@pytest.fixture
def router() -> Router:
    return Router(PROFILES, config=RouterConfig(threshold=0.3), embedder=HashEmbedder())


@pytest.fixture(scope="session")
def real_embedder():
    return get_embedder()


def test_route_picks_the_matching_specialist_and_shows_every_score(router):
    choice = router.route("Which cells of the immune system fight an infection?")
    assert choice.chosen[0] == "medicine" and not choice.fallback and choice.reason is None
    assert list(choice.scores) == sorted(choice.scores, key=choice.scores.get, reverse=True)
    assert set(choice.scores) == {"history", "medicine", "economics"}
    assert choice.thresholds == {"history": 0.3, "medicine": 0.3, "economics": 0.3}
    assert choice.to_dict()["fallback"] is False


def test_nothing_fits_is_a_value_with_a_reason(router):
    choice = router.route("Where can I buy cheap sunglasses?")
    assert isinstance(choice, RouteChoice)
    assert choice.chosen == [] and choice.fallback
    assert choice.reason.startswith("no specialist reaches its threshold (best: ")
    assert len(choice.scores) == 3  # scores are there even when nothing is chosen


def test_max_k_caps_and_min_k_tops_up_only_when_something_passes():
    everything = Router(PROFILES, config=RouterConfig(threshold=-1.0, max_k=2), embedder=HashEmbedder())
    assert len(everything.route("oil crisis").chosen) == 2
    second_opinion = Router(PROFILES, config=RouterConfig(threshold=0.3, min_k=2, top_up="next_best"),
                            embedder=HashEmbedder())
    choice = second_opinion.route("What caused the 1973 oil crisis?")
    assert choice.chosen[0] == "economics" and len(choice.chosen) == 2 and choice.reserve == []
    assert second_opinion.route("Where can I buy cheap sunglasses?").chosen == []


def test_seats_left_to_min_k_go_to_the_reserve_never_to_a_score_below_its_threshold():
    question = "What caused the 1973 oil crisis?"
    alone = Router(PROFILES, config=RouterConfig(threshold=0.3, min_k=3), embedder=HashEmbedder())
    passing = alone.route(question).chosen
    assert passing and len(passing) < 3  # the others score below the threshold: they do not sit
    seated = Router(PROFILES, config=RouterConfig(threshold=0.3, min_k=3), embedder=HashEmbedder(),
                    reserve=["reader", "second_reader", "third_reader"]).route(question)
    assert seated.chosen == passing + seated.reserve and len(seated.chosen) == 3
    assert seated.reserve == ["reader", "second_reader", "third_reader"][:3 - len(passing)]
    assert "reader" not in seated.scores  # a reserve seat has no route score
    nothing = Router(PROFILES, config=RouterConfig(threshold=0.3, min_k=3), embedder=HashEmbedder(),
                     reserve=["reader"]).route("Where can I buy cheap sunglasses?")
    assert nothing.chosen == [] and nothing.fallback  # the reserve seconds a fit, it never stands alone
    with pytest.raises(ValueError, match="names a routed profile"):
        Router(PROFILES, embedder=HashEmbedder(), reserve=["history"])


def test_a_specialist_threshold_overrides_the_global_one(router):
    question = "What caused the 1973 oil crisis?"
    score = router.scores(question)["economics"]
    strict = Router(PROFILES, config=RouterConfig(threshold=0.3, thresholds={"economics": score + 0.01}),
                    embedder=HashEmbedder())
    choice = strict.route(question)
    assert "economics" not in choice.chosen and choice.thresholds["economics"] == pytest.approx(score + 0.01)


def test_fit_learns_thresholds_that_route_out_of_scope_questions_nowhere():
    router = Router(PROFILES, config=RouterConfig(threshold=-1.0), embedder=HashEmbedder())
    questions = ["When did the Normans invade England?", "What do antibodies do in the immune system?",
                 "Why did oil prices rise in 1973?", "What is the best pizza topping?",
                 "How tall is the Eiffel tower?"]
    labels = ["history", "medicine", "economics", None, None]
    report = router.fit(questions, labels)
    assert report.accuracy_before == pytest.approx(0.6) and report.accuracy_after == 1.0
    assert set(report.thresholds) == {"history", "medicine", "economics"}
    assert router.config.thresholds == report.thresholds
    assert router.route("What is the best pizza topping?").chosen == []
    assert router.route("What do antibodies do in the immune system?").chosen[0] == "medicine"


@pytest.mark.parametrize("seed", range(20))
def test_vectorised_accuracy_equals_the_reference_selection(seed):
    rng = np.random.default_rng(seed)
    q, p = 40, 5
    scores = rng.normal(size=(q, p)).round(1)  # rounding makes ties
    limits = rng.normal(size=p)
    target = rng.integers(-1, p, size=q)
    min_k, max_k = sorted(rng.integers(0, p + 1, size=2))
    max_k = max(max_k, 1)
    next_best = bool(rng.integers(0, 2))
    chosen = _select(scores, limits, min_k, max_k, next_best=next_best)
    reference = np.mean([(t in c) if t >= 0 else not c for c, t in zip(chosen, target)])
    assert _accuracy(scores, target, limits, min_k, max_k, next_best=next_best) == pytest.approx(reference)


def test_bad_inputs_raise_clearly(router):
    with pytest.raises(ValueError, match=r"empty question ' ': give a non-blank question to route"):
        router.route(" ")
    with pytest.raises(TypeError, match="question must be a str, got NoneType"):
        router.route(None)
    with pytest.raises(ValueError, match=r"thresholds for unknown specialists \['law'\]; known: \['history'"):
        Router(PROFILES, config=RouterConfig(thresholds={"law": 0.5}), embedder=HashEmbedder())
    with pytest.raises(ValueError, match=r"thresholds for unknown specialists \['Economics'\]"):
        router.config = RouterConfig(thresholds={"Economics": 0.5})
    with pytest.raises(ValueError, match=r"labels name unknown specialists \['law'\]"):
        router.fit(["Who makes laws?"], ["law"])
    with pytest.raises(ValueError, match="duplicate profile names"):
        Router([PROFILES[0], PROFILES[0]], embedder=HashEmbedder())
    with pytest.raises(ValueError, match="profile 'x' has neither a description nor examples"):
        Profile("x", " ", [])
    with pytest.raises(ValueError, match="min_k=3, max_k=2"):
        RouterConfig(min_k=3, max_k=2)


def test_config_round_trips():
    cfg = RouterConfig(threshold=0.4, thresholds={"history": 0.5}, top_m=1)
    assert RouterConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown router config key\(s\) \['k'\]"):
        RouterConfig.from_dict({"k": 2})


@pytest.mark.slow
def test_real_embedder_routes_by_meaning_not_shared_words(real_embedder):
    router = Router(PROFILES, config=RouterConfig(threshold=0.2), embedder=real_embedder)
    assert router.route("Which white blood cells attack bacteria?").chosen[0] == "medicine"
    assert router.route("Why did petrol get so expensive in the seventies?").chosen[0] == "economics"
    assert router.route("Who was the Duke who became King of England in the eleventh century?").chosen[0] == "history"
