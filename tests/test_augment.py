"""Augmentation: local rephrasings and reversals, global two-hop chains, the optional model hook."""

from __future__ import annotations

import pytest

from council.prompts import ABSTAIN_ANSWER
from specialists.augment import augment, reworded
from specialists.data import Example
from specialists.synthetic import SyntheticDomain, make_domain


@pytest.fixture(scope="module")
def domain() -> SyntheticDomain:
    return make_domain("veltharan", seed=0)


QUESTIONS = [
    Example("q1", "In what country is Normandy located?", "France", ("Normandy is in France.",), "squad",
            answers=("France",)),
    Example("q2", "Who ruled Mars?", ABSTAIN_ANSWER, ("Normandy is in France.",), "squad_unanswerable"),
    Example("d1", "", "Some document text.", kind="document"),
]  # fmt: skip


def test_local_rephrases_questions_and_keeps_answer_context_and_split():
    out = augment(QUESTIONS, strategy="local", seed=0, n_rephrasings=3)
    assert len(out) == 6  # 3 per question, none for the text example
    for e in out:
        origin = next(q for q in QUESTIONS if e.id.startswith(q.id + "~local"))
        assert e.kind == "augmented_local" and e.question != origin.question
        assert origin.question in e.question or e.question in reworded(origin.question)
        assert (e.answer, e.answers, e.context) == (origin.answer, origin.answers, origin.context)
        assert e.split == origin.split
    assert out[0].question == "In which country is Normandy located?"  # the rewording comes first
    assert augment(QUESTIONS, strategy="local", seed=0, n_rephrasings=3) == out
    assert augment(QUESTIONS, strategy="local", seed=1, n_rephrasings=3) != out


def test_rewordings_only_touch_safe_openings():
    assert reworded("What year did it end?") == ["Which year did it end?"]
    assert reworded("What happened in 1066?") == []  # "Which happened" would not be English
    assert reworded("During what war was it built?") == ["During which war was it built?"]


def test_global_needs_facts():
    assert augment(QUESTIONS, strategy="global", seed=0) == []


def test_local_facts_state_and_ask_the_reversal(domain):
    f = domain.facts[0]
    out = augment([f], strategy="local", seed=0)
    texts = [e.text() for e in out if e.is_text]
    questions = [e for e in out if not e.is_text]
    assert all(f.subject in t and f.object in t for t in texts)
    assert any(t.startswith(f.object) for t in texts)  # a reversed statement puts the object first
    assert {(e.answer, e.context) for e in questions} == {(f.object, ()), (f.subject, ())}
    subject_answer = next(e for e in questions if e.answer == f.subject)
    assert f.object in subject_answer.question and f.subject not in subject_answer.question
    assert {e.kind for e in out} == {"augmented_local"}
    assert {e.is_text for e in augment([f], strategy="local", seed=0, form="qa")} == {False}
    assert {e.is_text for e in augment([f], strategy="local", seed=0, form="text")} == {True}


def test_global_chains_facts_into_correct_two_hop_examples(domain):
    out = augment(list(domain.facts), strategy="global", seed=0, form="qa")
    two_hop = {q.facts: q for q in domain.questions("two_hop")}
    assert len(out) == len(two_hop)
    for e in out:
        outer, inner = e.id.split("~")[0].split("+")
        assert e.kind == "augmented_global" and e.answers == two_hop[(outer, inner)].answers


def test_augmented_data_never_repeats_an_evaluation_question(domain):
    evaluation = {q.question for k in ("recall", "paraphrase", "reversal", "two_hop") for q in domain.questions(k)}
    out = augment(list(domain.facts), strategy="both", seed=0)
    assert {e.kind for e in out} == {"augmented_local", "augmented_global"}
    assert not {e.question for e in out if not e.is_text} & evaluation


def test_generate_hook_writes_rephrasings_and_bad_replies_are_dropped(domain):
    f = domain.facts[0]
    seen: list[list[str]] = []

    def generate(prompts: list[str]) -> list[str]:
        seen.append(prompts)
        source = prompts[0].rsplit("\n", 1)[-1]
        return [f'"Indeed, {source}"', source, f"Something about {f.object} only."][: len(prompts)]

    out = augment([f], strategy="local", seed=0, form="text", n_rephrasings=3, generate=generate)
    assert len(seen[0]) == 3 and f.statement() in seen[0][0]
    # the unchanged reply and the one that lost the subject are dropped; the reversals stay template-based
    assert [e.text() for e in out][0] == f"Indeed, {f.statement()}"
    assert len(out) == 1 + 2

    leak = augment(QUESTIONS[:1], strategy="local", seed=0, n_rephrasings=2,
                   generate=lambda ps: ["Where is Normandy?", "Is Normandy in France?"])  # fmt: skip
    assert [e.question for e in leak] == ["Where is Normandy?"]  # the answer must not be in the question
    with pytest.raises(ValueError, match="generate returned 1 replies for 2 prompts"):
        augment(QUESTIONS[:1], strategy="local", seed=0, generate=lambda ps: ["x"])


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match=r"strategy must be one of \('local', 'global', 'both'\), got 'all'"):
        augment(QUESTIONS, strategy="all", seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="form must be one of"):
        augment(QUESTIONS, strategy="local", seed=0, form="json")  # type: ignore[arg-type]
