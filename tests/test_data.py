"""Data builders: SQuAD 2.0, closed-book JSONL and documents into examples; splits, windows, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from council.prompts import ABSTAIN_ANSWER, CLOSED_BOOK_SYSTEM, RAG_SYSTEM
from specialists.data import (
    DatasetError,
    Example,
    chunk_text,
    document_examples,
    qa_examples,
    sentence_spans,
    squad_examples,
)
from specialists.domains import split_of

SQUAD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "squad2" / "dev-v2.0.json"
needs_squad = pytest.mark.skipif(not SQUAD.exists(), reason="../shared/datasets/squad2 is missing")


@pytest.fixture(scope="module")
def normans() -> list[Example]:
    return squad_examples(SQUAD, titles=["Normans"])


def _squad_file(tmp_path: Path, qas: list[dict], name: str = "bad.json") -> Path:
    context = "Rollo led the Norse. They settled in Normandy. It is in France."
    data = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@needs_squad
def test_squad_targets_first_gold_answer_or_abstain(normans):
    raw = json.loads(SQUAD.read_text())["data"]
    qas = {q["id"]: q for p in next(a for a in raw if a["title"] == "Normans")["paragraphs"] for q in p["qas"]}
    assert len(normans) == len(qas)
    kinds = {e.kind for e in normans}
    assert kinds == {"squad", "squad_unanswerable"}
    for e in normans:
        qa = qas[e.id]
        if qa["is_impossible"]:
            assert e.kind == "squad_unanswerable" and e.answer == ABSTAIN_ANSWER and e.answers == ()
        else:
            assert e.answer == qa["answers"][0]["text"] and e.answer in e.context[0]
            assert set(e.answers) == {a["text"] for a in qa["answers"]}
        assert "data[0].paragraphs[" in e.source and "(Normans)" in e.source


@needs_squad
def test_squad_splits_are_disjoint_and_follow_split_of():
    ids = {s: {e.id for e in squad_examples(SQUAD, titles=["Force"], split=s)} for s in ("train", "validation", "test")}
    assert not ids["train"] & ids["test"]  # never train on test
    assert not ids["train"] & ids["validation"] and not ids["test"] & ids["validation"]
    everything = {e.id for e in squad_examples(SQUAD, titles=["Force"])}
    assert ids["train"] | ids["validation"] | ids["test"] == everything
    assert all(split_of(i) == "test" for i in ids["test"])
    assert 0.6 < len(ids["train"]) / len(everything) < 0.95


@needs_squad
def test_squad_default_context_is_the_full_paragraph(normans):
    raw = json.loads(SQUAD.read_text())["data"]
    paragraphs = {p["context"] for p in next(a for a in raw if a["title"] == "Normans")["paragraphs"]}
    assert all(e.context[0] in paragraphs for e in normans)


@needs_squad
def test_squad_window_is_short_holds_the_answer_and_is_seeded(normans):
    windowed = squad_examples(SQUAD, titles=["Normans"], context_window=2)
    assert [e.id for e in windowed] == [e.id for e in normans]
    words = lambda exs: sum(len(e.context[0].split()) for e in exs) / len(exs)  # noqa: E731
    assert words(windowed) < 0.6 * words(normans)
    raw = json.loads(SQUAD.read_text())["data"]
    qas = {q["id"]: q for p in next(a for a in raw if a["title"] == "Normans")["paragraphs"] for q in p["qas"]}
    for w, full in zip(windowed, normans):
        assert w.context[0] in full.context[0]
        if w.answerable:
            assert w.answer in w.context[0]
        elif qas[w.id].get("plausible_answers"):  # the distractor stays in the window: abstaining stays hard
            assert qas[w.id]["plausible_answers"][0]["text"] in w.context[0]
    assert squad_examples(SQUAD, titles=["Normans"], context_window=2) == windowed
    assert squad_examples(SQUAD, titles=["Normans"], context_window=2, seed=1) != windowed


def test_sentence_spans_keep_abbreviations_and_initials():
    text = "He moved to St. Louis in 1900. John F. Kennedy spoke. Was it (really) true? Yes."
    sentences = [text[s:e].strip() for s, e in sentence_spans(text)]
    assert sentences == ["He moved to St. Louis in 1900.", "John F. Kennedy spoke.", "Was it (really) true?", "Yes."]


def test_squad_malformed_record_names_file_and_record(tmp_path):
    path = _squad_file(tmp_path, [{"id": "a", "question": "Who?", "answers": [{"text": "Rollo", "answer_start": 0}]},
                                  {"id": "b", "answers": [], "is_impossible": True}])  # fmt: skip
    with pytest.raises(DatasetError, match=r"bad\.json: data\[0\]\.paragraphs\[0\]\.qas\[1\]: missing 'question'"):
        squad_examples(path)


@pytest.mark.parametrize(
    ("qa", "message"),
    [
        ({"id": "a", "question": "Who?", "answers": []}, r"qas\[0\]: an answerable question with no 'answers'"),
        ({"id": "a", "question": "Who?", "answers": [{"text": "Odin", "answer_start": 0}]},
         r"qas\[0\]\.answers\[0\]: answer 'Odin' does not occur in the paragraph"),
        ({"id": "a", "question": "Who?", "is_impossible": "no", "answers": []},
         r"qas\[0\]: 'is_impossible' must be true or false"),
    ],
)  # fmt: skip
def test_squad_bad_answers_are_named(tmp_path, qa, message):
    with pytest.raises(DatasetError, match=message):
        squad_examples(_squad_file(tmp_path, [qa]))


def test_squad_wrong_offset_is_recovered(tmp_path):
    qa = {"id": "a", "question": "Where?", "answers": [{"text": "France", "answer_start": 3}]}
    (e,) = squad_examples(_squad_file(tmp_path, [qa]), context_window=1)
    assert e.answer == "France" and e.context == ("It is in France.",)


@needs_squad
def test_squad_bad_files_and_empty_results(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DatasetError, match=r"broken\.json: not valid JSON"):
        squad_examples(broken)
    with pytest.raises(DatasetError, match=r"no article titled \['Atlantis'\]; the file has \[.*'Normans'"):
        squad_examples(SQUAD, titles=["Atlantis"])
    qa = {"id": "a", "question": "Who?", "answers": [{"text": "Rollo", "answer_start": 0}]}
    other = next(s for s in ("train", "validation", "test") if s != split_of("a"))
    with pytest.raises(DatasetError, match=rf"bad\.json: no examples \(titles=all, split={other}\)"):
        squad_examples(_squad_file(tmp_path, [qa]), split=other)
    with pytest.raises(DatasetError, match=r"qas\[1\]: duplicate id 'a'"):
        squad_examples(_squad_file(tmp_path, [qa, qa]))


def test_qa_examples_closed_book_context_and_abstention(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [
        {"question": "Who led the Norse?", "answer": "Rollo", "answers": ["Rollo the Walker"]},
        {"id": "x", "question": "Who led the Huns?", "answer": ABSTAIN_ANSWER, "context": "Rollo led the Norse."},
    ]
    path.write_text("\n".join(map(json.dumps, rows)) + "\n\n")
    first, second = qa_examples(path)
    assert first.id == "qa-1" and first.answers == ("Rollo", "Rollo the Walker") and first.context == ()
    assert first.messages()[0]["content"] == CLOSED_BOOK_SYSTEM
    assert second.id == "x" and not second.answerable and second.answers == ()
    system, user = second.messages()
    assert system["content"] == RAG_SYSTEM and "[1] Rollo led the Norse." in user["content"]
    assert second.training_messages()[-1] == {"role": "assistant", "content": ABSTAIN_ANSWER}


def test_qa_examples_malformed_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "Q?", "answer": "A"}\n{"question": "Q2?"}\n')
    with pytest.raises(DatasetError, match=r"qa\.jsonl: line 2: missing 'answer'"):
        qa_examples(path)
    path.write_text('{"question": "Q?", "answer": "A", "context": 3}\n')
    with pytest.raises(DatasetError, match=r"line 1: 'context' must be a passage or a list of passages"):
        qa_examples(path)
    path.write_text("\n")
    with pytest.raises(DatasetError, match=r"qa\.jsonl: no examples"):
        qa_examples(path)


def test_chunk_text_respects_the_budget_and_keeps_every_word():
    paragraphs = [" ".join(f"w{p}x{i}." for i in range(n)) for p, n in enumerate((5, 30, 90, 7))]
    text = "\n\n".join(paragraphs)
    chunks = chunk_text(text, max_words=40)
    assert all(len(c.split()) <= 40 for c in chunks)
    assert " ".join(chunks).split() == text.split()
    assert chunks[0] == "\n\n".join(paragraphs[:2])  # whole paragraphs stay together while they fit


def test_document_examples_and_bad_documents(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\nSome text here.\n")
    (tmp_path / "b.txt").write_text("More text.")
    (tmp_path / "c.csv").write_text("x,y")
    docs = document_examples([tmp_path])
    assert [d.id for d in docs] == ["a.md#0", "b.txt#0"]
    assert docs[0].kind == "document" and docs[0].text() == "# Title\n\nSome text here."
    with pytest.raises(ValueError, match="is a text example"):
        docs[0].messages()
    with pytest.raises(DatasetError, match=r"c\.csv: not a document"):
        document_examples([tmp_path / "c.csv"])
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match=r"no document text in .*empty\.txt"):
        document_examples([tmp_path / "empty.txt"])


def test_example_round_trip_and_validation():
    e = Example("q1", "Who?", "Rollo", ("Rollo led.",), "squad", "f.json: data[0]", ("Rollo", "Rollo I"))
    assert Example.from_dict(json.loads(json.dumps(e.to_dict()))) == e
    with pytest.raises(ValueError, match="unknown kind 'quiz'; choose one of squad, "):
        Example("q", "Who?", "A", kind="quiz", answers=("A",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"target 'A' is not among answers \('B',\)"):
        Example("q", "Who?", "A", answers=("B",))
    with pytest.raises(ValueError, match="an abstaining example has no gold answers"):
        Example("q", "Who?", ABSTAIN_ANSWER, answers=("B",))
    with pytest.raises(ValueError, match=r"unknown keys \['extra'\]"):
        Example.from_dict({**e.to_dict(), "extra": 1})
