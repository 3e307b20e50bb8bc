import json

from specialists.__main__ import main
from specialists.card import SpecialistCard
from tests.conftest import build_tiny_model, make_lora


def test_evaluate_names_what_is_wrong(capsys):
    assert main(["evaluate", "nope"]) == 2
    assert "unknown specialist 'nope'; known:" in capsys.readouterr().err
    assert main(["evaluate", "fiction_orrune", "--splits", "validation"]) == 2  # synthetic: no SQuAD validation
    assert "held-out splits exist for SQuAD ones" in capsys.readouterr().err


def test_evaluate_refuses_a_specialist_without_a_recipe(tiny_catalog, capsys):
    assert main(["evaluate", "law", "--root", str(tiny_catalog)]) == 2
    assert "law: no recipe in specialists.catalog.RECIPES" in capsys.readouterr().err


def test_list_prints_every_catalog_specialist(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("history", "economics", "fiction_orrune"))


def test_evaluate_writes_the_cards_eval_on_test_and_other_splits_as_held_out(tmp_path, capsys):
    from council import base_model

    model = build_tiny_model(tmp_path / "model", context=1024)  # SQuAD paragraphs need more than 256 tokens
    root = tmp_path / "catalog"
    make_lora(model, root / "economics", seed=1)
    SpecialistCard(name="economics", domain="economics", description="oil", training={}, routing={"examples": []},
                   base_model={"name": str(model), "fingerprint": base_model.load(model).fingerprint},
                   code_version="test", eval={"note": "stale"}).save(root / "economics")

    assert main(["evaluate", "economics", "--root", str(root), "--eval-limit", "3", "--write"]) == 0
    assert "economics on test (3 questions" in capsys.readouterr().out
    written = json.loads((root / "economics" / "specialist.json").read_text())["eval"]
    assert written["split"] == "test" and written["split_size"] == written["n"] == 3
    assert "note" not in written and set(written["base"]) >= {"answerable_f1", "n"}
    # every question's decided answer, and the answer it would give with its no-answer margin
    assert set(written["predictions"]) == set(written["answers"]) and len(written["answers"]) == 3
    assert all(isinstance(text, str) for text, _ in written["answers"].values())

    assert main(["evaluate", "economics", "--root", str(root), "--splits", "validation", "--write"]) == 0
    after = json.loads((root / "economics" / "specialist.json").read_text())["eval"]
    assert after["held_out"]["split"] == "validation" and after["held_out"]["split_size"] == after["held_out"]["n"] > 3
    assert {k: v for k, v in after.items() if k != "held_out"} == written  # the test eval is kept


def test_evaluate_any_squad_file_writes_the_official_keys(tmp_path, capsys):
    from council import base_model
    from council.metrics import OFFICIAL_KEYS

    model = build_tiny_model(tmp_path / "model", context=1024)
    root = tmp_path / "catalog"
    make_lora(model, root / "reader", seed=1)
    SpecialistCard(name="reader", domain="reading", description="reads", training={}, routing={"examples": []},
                   base_model={"name": str(model), "fingerprint": base_model.load(model).fingerprint},
                   code_version="test", eval={"no_answer": {"threshold": 1.5}}).save(root / "reader")
    squad = tmp_path / "unseen.json"
    squad.write_text(json.dumps({"version": "v2.0", "data": [{"title": "T", "paragraphs": [
        {"context": "The Normans conquered England in 1066.", "qas": [
            {"id": "a", "question": "When?", "answers": [{"text": "1066", "answer_start": 33}]},
            {"id": "b", "question": "Who?", "answers": [{"text": "The Normans", "answer_start": 0}]},
            {"id": "c", "question": "Why?", "answers": [], "is_impossible": True}]}]}]}))
    out = tmp_path / "scores.json"
    assert main(["evaluate", "reader", "--root", str(root), "--squad", str(squad), "--limit", "2",
                 "--json", str(out)]) == 0
    assert "reader on" in capsys.readouterr().out
    scores = json.loads(out.read_text())
    assert set(OFFICIAL_KEYS) - {"NoAns_exact", "NoAns_f1", "NoAns_total", "HasAns_exact", "HasAns_f1",
                                 "HasAns_total"} <= set(scores) and scores["total"] == 2
    assert set(scores["base"]) >= {"exact", "f1", "total"} and scores["base"]["total"] == 2
    assert scores["no_answer"]["specialist"]["threshold"] == 1.5  # the card's fitted threshold is used

    assert main(["evaluate", "reader", "--root", str(root), "--squad", str(squad), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["total"] == 3  # its own earlier output may be replaced

    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}')
    assert main(["evaluate", "reader", "--root", str(root), "--squad", str(squad), "--json", str(mine)]) == 2
    assert "is not an earlier `evaluate --json` output" in capsys.readouterr().err
    assert mine.read_text() == '{"my": "notes"}'
    assert main(["evaluate", "reader", "--root", str(root), "--squad", str(tmp_path / "none.json")]) == 2
    assert "none.json: no such file" in capsys.readouterr().err
    assert main(["evaluate", "reader", "--root", str(root), "--squad", str(squad), "--limit", "0"]) == 2
    assert "--limit 0: must be at least 1" in capsys.readouterr().err


def test_mistakes_counts_the_same_wrong_answers_of_each_pair(tmp_path, capsys):
    from specialists.catalog import unseen_test

    questions = unseen_test(4)
    gold = [e.answers[0] if e.answers else "" for e in questions]
    said = {"sa": ["wrong one", gold[1], "x", "y"],  # sa and sb share one wrong answer ("wrong one")
            "sb": ["wrong one", "other", gold[2], "z"],
            "sc": gold}
    for name, answers in said.items():
        (tmp_path / name).mkdir()
        SpecialistCard(name=name, domain="d", description="d", training={}, routing={"examples": []},
                       base_model={"name": "m", "fingerprint": "f"}, code_version="test",
                       eval={"predictions": {e.id: a or "I don't know." for e, a in zip(questions, answers)}}
                       ).save(tmp_path / name)
    assert main(["mistakes", "--root", str(tmp_path), "--json", str(tmp_path / "m.json")]) == 0
    pairs = json.loads((tmp_path / "m.json").read_text())["pairs"]
    wrong_a = {i for i, (p, g) in enumerate(zip(said["sa"], gold)) if p != g}
    wrong_b = {i for i, (p, g) in enumerate(zip(said["sb"], gold)) if p != g}
    assert pairs["sa|sb"]["both_wrong"] == len(wrong_a & wrong_b) and pairs["sa|sb"]["same_wrong"] == 1
    assert pairs["sa|sc"]["both_wrong"] == 0  # sc is always right
    assert "| sa / sb |" in capsys.readouterr().out
