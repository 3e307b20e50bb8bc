"""Abstention decided apart from the answer: the no-answer margin, its threshold, the official score."""

import pytest

from council.engine import Engine, Generation, Request
from council.prompts import ABSTAIN_ANSWER
from specialists.data import Example
from specialists.evaluate import decide, fit_threshold, score


def _gen(text, first, abstain):
    return Generation(text=text, adapter=None, token_ids=[1], token_logprobs=[first], prompt_tokens=3,
                      finished=True, seconds=0.0, abstain_logprob=abstain)


def _ex(i, answer):
    return Example(f"q{i}", f"Question {i}?", answer or ABSTAIN_ANSWER, context=("ctx",),
                   kind="squad" if answer else "squad_unanswerable", answers=(answer,) if answer else ())


def test_margin_is_the_log_odds_of_abstaining_and_greedy_is_reported_apart():
    import math

    rows = [_gen("Paris", -0.1, -3.0), _gen("Rollo", -2.0, -0.5)]
    p = math.exp(-0.5)
    assert rows[1].no_answer_margin == pytest.approx(math.log(p / (1 - p)))
    assert decide(rows) == ["Paris", ABSTAIN_ANSWER]  # threshold 0: more than half the probability abstains
    assert decide(rows, threshold=2.0) == ["Paris", "Rollo"]
    # an answer spread over first tokens: P(abstain) 0.32 beats the top answer token (0.2), not the rest (0.68)
    spread = _gen("1066", math.log(0.2), math.log(0.32))
    assert spread.greedy_abstains and spread.no_answer_margin < 0 and decide([spread]) == ["1066"]
    assert _gen("", -1.0, -0.1).no_answer_margin > 0 and not rows[0].greedy_abstains


def test_fitted_threshold_beats_greedy_when_the_reader_over_abstains():
    # right answers whose margins are mildly positive (greedy abstains), and unanswerable ones far above
    examples = [_ex(0, "Paris"), _ex(1, "1066"), _ex(2, None), _ex(3, None)]
    rows = [_gen("Paris", -1.0, -0.5), _gen("1066", -1.0, -0.2), _gen("Rollo", -2.0, 0.0), _gen("x", -3.0, 0.0)]
    assert score(decide(rows), examples)["official"]["f1"] == 50.0
    t = fit_threshold(rows, examples)
    assert 0.8 < t < 2.0
    assert score(decide(rows, t), examples)["official"] == {
        "exact": 100.0, "f1": 100.0, "total": 4, "HasAns_exact": 100.0, "HasAns_f1": 100.0, "HasAns_total": 2,
        "NoAns_exact": 100.0, "NoAns_f1": 100.0, "NoAns_total": 2}
    # when greedy is already best, the fit keeps 0
    assert fit_threshold([_gen("Paris", -0.1, -3.0), _gen("y", -3.0, 0.0)], [_ex(0, "Paris"), _ex(2, None)]) == 0.0


def test_answer_only_bans_the_abstention_and_scores_it(tiny_model_dir):
    from council import base_model

    engine = Engine(base_model.load(tiny_model_dir))
    request = Request([{"role": "user", "content": "Question: who?"}])
    free = engine.generate([request], max_new_tokens=4)[0]
    banned = engine.generate([request], max_new_tokens=4, answer_only=True)[0]
    assert free.abstain_logprob == pytest.approx(banned.abstain_logprob)  # scored before the ban
    assert banned.token_ids[:1] != [engine.abstain_token]
    logits_first = free.token_logprobs[0]
    assert logits_first >= free.abstain_logprob  # greedy took the most likely first token


def test_the_base_models_answers_are_kept_and_read_back_for_the_same_questions(tiny_model_dir, tmp_path):
    from council import base_model
    from specialists.evaluate import predict

    engine = Engine(base_model.load(tiny_model_dir))
    questions = [_ex(0, "Paris"), _ex(1, None)]
    first = predict(engine, [None], questions, max_new_tokens=3, progress=False, base_cache=tmp_path)
    assert len(list(tmp_path.glob("base-*.json"))) == 1
    engine.generate = None  # a second call must not generate: the answers come from the cache
    again = predict(engine, [None], questions, max_new_tokens=3, progress=False, base_cache=tmp_path)
    assert [g.to_dict() for g in again[None]] == [g.to_dict() for g in first[None]]
    assert again[None][0].no_answer_margin == first[None][0].no_answer_margin
    # other questions (or another token budget) are another key
    engine.generate = Engine.generate.__get__(engine)
    predict(engine, [None], questions[:1], max_new_tokens=3, progress=False, base_cache=tmp_path)
    assert len(list(tmp_path.glob("base-*.json"))) == 2
