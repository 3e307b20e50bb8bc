"""The reading data: whole-article splits, deduplication, made unanswerable questions, the training mix."""

import json

import pytest

from council.prompts import ABSTAIN_ANSWER
from specialists import reading
from specialists.data import Example
from specialists.domains import article_split

SHARED = reading.DATASETS.is_dir()


def _squad(path, articles):
    """A SQuAD file of {title: [(paragraph, [(qid, question, answer or None)])]}."""
    data = [{"title": t, "paragraphs": [
        {"context": c, "qas": [{"id": qid, "question": q, "is_impossible": a is None,
                                "answers": [] if a is None else [{"text": a, "answer_start": c.find(a)}]}
                               for qid, q, a in qas]} for c, qas in paragraphs]} for t, paragraphs in articles.items()]
    path.write_text(json.dumps({"version": "v2.0", "data": data}))
    return path


def test_article_split_is_by_normalised_title():
    assert article_split("Sky_(United_Kingdom)") == article_split("sky (united kingdom)")
    assert article_split("Oxygen") == article_split("Jacksonville,_Florida") == "test"
    assert article_split("Black_Death") == article_split("Economic_inequality") == "validation"
    assert article_split("Rhine") == "train"


def test_swap_takes_the_closest_paragraph_that_lacks_every_answer():
    q = Example("q1", "When was the Rhine bridge at Basel built?", "1225", context=("The bridge was built in 1225.",),
                kind="squad", answers=("1225", "in 1225"))
    paragraphs = [q.context[0],
                  "A second bridge at Basel on the Rhine dates from 1225 too.",  # holds the answer: never chosen
                  "The Rhine at Basel has several bridges, built over centuries.",  # closest without it
                  "Unrelated text about cheese."]
    made = reading.swap(q, paragraphs)
    assert made.id == "q1~swap" and made.answer == ABSTAIN_ANSWER and not made.answers
    assert made.context == (paragraphs[2],) and made.kind == "squad_unanswerable"
    assert reading.swap(q, paragraphs[:2]) is None  # every other paragraph answers it
    assert reading.answer_in(["The 1225"], "built in 1225.") and not reading.answer_in(["1225"], "in 12250")


def test_read_keeps_whole_articles_dedupes_and_makes_swaps(tmp_path):
    train_title = "Rhine"  # train by its hash; "Oxygen" is a test article
    _squad(tmp_path / "f.json", {
        train_title: [("The Rhine rises in Switzerland.", [("a1", "Where does the Rhine rise?", "Switzerland"),
                                                           ("a2", "Where  does the Rhine rise?", "Switzerland")]),
                      ("The Rhine flows to the North Sea.", [("a3", "Where does the Rhine end?", "North Sea"),
                                                             ("a4", "Who owns the Rhine?", None)])],
        "Oxygen": [("Oxygen is element 8.", [("o1", "What number is oxygen?", "8")])]})
    sets = {s: reading.read("squad2", s, root=tmp_path, files={"squad2": "f.json"}) for s in ("train", "test")}
    assert [e.id for e in sets["train"].examples] == ["a1", "a3", "a4"]  # a2 repeats a1 (normalised question)
    assert [e.id for e in sets["test"].examples] == ["o1"] and not sets["test"].swaps  # one paragraph: no swap
    assert {e.id for e in sets["train"].swaps} == {"a1~swap", "a3~swap"}
    with pytest.raises(ValueError, match="unknown reading source 'nope'; known: squad2"):
        reading.read("nope", "train", root=tmp_path, files={"squad2": "f.json"})


def test_mix_has_the_unanswerable_share_own_ones_first():
    def ex(i, answerable, source):
        return Example(f"{source}{i}", f"question {source} {i}?", "x" if answerable else ABSTAIN_ANSWER,
                       context=(f"paragraph {i} x",), kind="squad" if answerable else "squad_unanswerable",
                       answers=("x",) if answerable else ())
    big = reading.ReadingSet("a", "train", [ex(i, i % 2 == 0, "a") for i in range(40)],
                             [ex(100 + i, False, "as") for i in range(20)])
    small = reading.ReadingSet("b", "train", [ex(i, True, "b") for i in range(4)], [])
    mixed = reading.mix([big, small], size=30, unanswerable_share=1 / 3)
    assert len(mixed) == 30 and sum(not e.answerable for e in mixed) == 10
    assert sum(e.id.startswith("b") for e in mixed) == 4  # a small source gives all it has
    own = [e for e in mixed if not e.answerable and not e.id.startswith("as")]
    assert len(own) == 10  # the file's own unanswerable questions come before swaps


@pytest.mark.skipif(not SHARED, reason="../shared/datasets is missing")
def test_the_real_reading_data_never_trains_on_a_held_out_article():
    train = reading.read("squad2", "train")
    test = reading.read("squad2", "test")
    titles = lambda s: {e.source.split("] (", 1)[1][:-1] for e in s.examples}  # noqa: E731
    assert titles(test) == {"Jacksonville,_Florida", "Oxygen"} and not titles(train) & titles(test)
    assert len(test.examples) >= 300 and sum(not e.answerable for e in test.examples) >= 150
    answers = {e.id: e.answers for e in train.examples}
    assert train.swaps and all(not reading.answer_in(answers[s.id.removesuffix("~swap")], s.context[0])
                               for s in train.swaps)


def test_distractors_sit_beside_the_passage_and_never_hold_the_answer():
    from specialists.reading import answer_in, with_distractors

    examples = [Example(f"q{i}", f"Question {i}?", f"answer{i}", context=(f"Passage {i} says answer{i}. More.",),
                        kind="squad", answers=(f"answer{i}",)) for i in range(30)]
    out = with_distractors(examples, most=2, seed=1)
    assert [e.id for e in out] == [e.id for e in examples]
    assert {len(e.context) for e in out} == {1, 2, 3}  # none, one or two others
    for before, after in zip(examples, out):
        assert before.context[0] in after.context  # its own passage, somewhere among them
        others = [p for p in after.context if p != before.context[0]]
        assert not any(answer_in(before.answers, p) for p in others)
    assert with_distractors(examples, most=2, seed=1) == out  # the same on every run
