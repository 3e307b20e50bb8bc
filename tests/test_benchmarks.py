"""The benchmarks' --quick modes run and write what they measured (slow: the real model)."""

import json

import pytest


@pytest.mark.slow
def test_performance_quick_writes_its_ratios(tmp_path):
    from benchmarks.performance import main

    out = tmp_path / "perf.json"
    assert main(["--quick", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    engine = figures["engines"][figures["default_quantize"]]
    assert figures["batched_ratio"] == engine["batched_ratio"]
    assert engine["batched_ratio"] == pytest.approx(engine["batched_s"] / engine["single_s"], rel=0.01)
    assert figures["sequential_ratio"] > 1.5  # three calls cost clearly more than one
    assert all(n > 0 for n in engine["new_tokens"])
    council = figures["council"]["k"]
    assert set(council) == {"1", "2", "3"} and council["3"]["batched_s"] > 0
    assert council["3"]["batched_s"] < council["3"]["sequential_s"]  # one call, not three
    assert council["3"]["batched_no_trunk_s"] > 0  # the trunk's own effect is tested in test_engine
    assert figures["memory"]["peak_mb"]["4"] > 0 and figures["throughput"]["questions_per_s"] > 0
    assert figures["first_answer"]["warm_start_s"] > figures["first_answer"]["loaded_ask_s"] > 0


@pytest.mark.slow
def test_hallucination_quick_scores_every_system(tmp_path):
    from benchmarks.hallucination import main

    out = tmp_path / "h.json"
    assert main(["--quick", "--suites", "squad", "truthfulqa", "--out", str(tmp_path), "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["suites"]["squad"]["n_unanswerable"] >= 1  # the quick SQuAD questions include one
    for system in ("best_single_rag", "self_consistency", "council_k3"):
        m = figures["systems"][system]
        assert 0 <= m["f1"] <= 100 and 0 <= m["aurc"] <= 1 and 0 <= m["hallucination_rate_unanswerable"] <= 1
    assert (tmp_path / "risk_coverage.png").stat().st_size > 1000
    assert set(figures["suites"]) == {"squad", "truthfulqa"}
    # every ballot was kept: a second run answers nothing again and scores the same
    lines = (tmp_path / "ballots-quick.jsonl").read_text().splitlines()
    assert main(["--quick", "--suites", "squad", "truthfulqa", "--out", str(tmp_path), "--json", str(out)]) == 0
    assert (tmp_path / "ballots-quick.jsonl").read_text().splitlines() == lines
    assert json.loads(out.read_text())["systems"] == figures["systems"]


def test_halueval_becomes_squad_with_unanswerable_questions_whose_passage_is_gone(tmp_path):
    from benchmarks.halueval_squad import DATASETS, convert

    squad = convert(DATASETS / "halueval_qa" / "qa_one-turn_data.json", unanswerable_every=2)
    paragraphs = [p for a in squad["data"] for p in a["paragraphs"]]
    qas = [q for p in paragraphs for q in p["qas"]]
    answerable = [q for q in qas if not q["is_impossible"]]
    assert len(answerable) == len(squad["data"]) and len(qas) - len(answerable) >= len(answerable) - 1
    for p in paragraphs:
        for q in p["qas"]:
            if not q["is_impossible"]:
                a = q["answers"][0]
                assert p["context"][a["answer_start"]:].startswith(a["text"])
    from specialists.data import squad_examples

    path = tmp_path / "h.json"
    path.write_text(json.dumps(squad))
    assert len(squad_examples(path)) == len(qas)  # the project's own SQuAD reader accepts it


def _ballot(golds, answers, passages=("The Normans conquered England in 1066.",)):
    rows = {"base_closed_book": ["In 1070.", -0.2], "base_rag": ["1066", -0.1]}
    rows.update({name: [text, -0.1] for name, text in answers.items()})
    return {"id": str(len(answers)), "suite": "squad", "kind": "squad", "golds": list(golds), "options": [],
            "route": {name: 1.0 - 0.1 * i for i, name in enumerate(answers)}, "passages": list(passages),
            "rows": rows, "samples": [[text, -0.1] for text in answers.values()], "samples_of": "a"}


def test_hallucination_systems_and_metrics_on_hand_made_ballots():
    from benchmarks.hallucination import metrics, systems

    voters = {"a": 1.0, "b": 1.0, "c": 1.0}
    ballots = [_ballot(["1066"], {"a": "1066", "b": "in 1066", "c": "1066"}),  # all agree, grounded
               _ballot([], {"a": "1067", "b": "William", "c": "I don't know."})]  # unanswerable, split
    out = systems(ballots, voters, "a", fitted={})
    council = out["council_k3"]
    assert council[0].answer in ("1066", "in 1066") and council[1].answer is None
    scored = metrics(council, ballots)
    assert scored["f1"] == 100.0 and scored["hallucination_rate_unanswerable"] == 0.0
    assert scored["abstention_rate"] == 0.5 and scored["selective_accuracy"] == 1.0
    single = metrics(out["best_single_rag"], ballots)  # "a" answers the unanswerable one: a hallucination
    assert single["hallucination_rate_unanswerable"] == 1.0 and single["selective_accuracy"] == 0.5
    # the official SQuAD 2.0 score counts the council's abstention on the unanswerable one as right
    assert scored["official_f1"] == 100.0 and single["official_f1"] == 50.0
    assert metrics(out["base_closed_book"], ballots)["hallucination_rate_answerable"] == 1.0


@pytest.mark.slow
def test_readers_quick_builds_a_variant_and_reports_the_official_score(tmp_path):
    from benchmarks.readers import main

    out = tmp_path / "readers.json"
    assert main(["--quick", "--out", str(tmp_path / "runs"), "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    variant = figures["variants"]["smollm2-third"]
    assert variant["steps"] == 2 and variant["n"] == 6
    assert {"f1", "HasAns_total", "NoAns_total"} <= set(variant["greedy_official"])
    floor = figures["always_abstain"]
    assert floor["f1"] == pytest.approx(floor["NoAns_total"] / 6 * 100, abs=0.01)
    assert (tmp_path / "readers.md").read_text().startswith("| variant |")


def test_equal_time_steps_come_from_a_probe_and_are_kept_for_a_resumed_run(tiny_model_dir, tmp_path):
    from dataclasses import replace

    from benchmarks.readers import steps_for
    from specialists.catalog import RECIPES

    reader = RECIPES["reader"]
    recipe = replace(reader, name="tiny", train=replace(reader.train, base_model=str(tiny_model_dir), max_length=512))
    steps = steps_for(recipe, tmp_path, minutes=0.05, threads=1)
    kept = json.loads((tmp_path / "tiny.steps.json").read_text())
    assert kept["steps"] == steps >= 1
    assert steps == pytest.approx(3 / kept["probe_seconds_per_step"], rel=0.1, abs=1)  # 3 s over s/step
    assert steps_for(recipe, tmp_path, minutes=100, threads=1) == steps  # measured once, not again
