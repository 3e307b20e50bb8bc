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
    from benchmarks.hallucination import main, read_kept

    out = tmp_path / "h.json"
    argv = ["--quick", "--suites", "unseen", "truthfulqa", "--out", str(tmp_path), "--json", str(out)]
    assert main(argv) == 0
    figures = json.loads(out.read_text())
    assert set(figures["suites"]) == {"unseen", "truthfulqa"}
    systems = figures["suites"]["unseen"]["systems"]
    for name in ("council", "council_k1", "best_single", "self_consistency"):
        m = systems[name]
        assert {"exact", "f1", "total"} <= set(m["official"]) and 0 <= m["aurc"] <= 1
        assert 0 <= m["unanswerable_answered"]["ci95"][0] <= m["unanswerable_answered"]["ci95"][1] <= 1
    assert systems["council"]["latency_s"] > 0
    for kind in ("risk_coverage", "reliability"):
        assert (tmp_path / f"{kind}.png").stat().st_size > 1000
    # the council system is what the Council said: re-aggregating its kept votes gives the stored verdict
    ballots = [b for b in read_kept(tmp_path / "ballots-quick.jsonl").values() if b["suite"] == "unseen"]
    assert ballots and all(b["council"]["votes"] and len(b["panel"]["votes"]) >= 7 for b in ballots)
    # every verdict was kept: a second run asks nothing again and scores the same
    lines = (tmp_path / "ballots-quick.jsonl").read_text().splitlines()
    assert main(argv) == 0
    assert (tmp_path / "ballots-quick.jsonl").read_text().splitlines() == lines
    assert json.loads(out.read_text())["suites"] == figures["suites"]


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


def _verdict(votes, answer=None):
    return {"votes": [v.to_dict() for v in votes], "answer": answer, "timings": {"total": 1.5}}


def _ballot(golds, answers, passages=("The Normans conquered England in 1066.",)):
    from council.aggregator import Vote

    votes = [Vote(name, text, route_score=1.0 - 0.1 * i, mean_logprob=-0.1) for i, (name, text) in
             enumerate(answers.items())]
    return {"id": str(len(answers)), "suite": "unseen", "question": "When?", "golds": list(golds),
            "passages": list(passages), "council": _verdict(votes), "panel": _verdict(votes),
            "samples": [[text, -0.1] for text in answers.values()], "samples_of": "a"}


def test_hallucination_systems_and_metrics_on_hand_made_ballots():
    from benchmarks.hallucination import metrics, score_suite, text_systems
    from council.aggregator import AggregatorConfig

    ballots = [_ballot(["1066"], {"a": "1066", "b": "in 1066", "c": "1066"}),  # all agree, grounded
               _ballot([], {"a": "1066", "b": "I don't know.", "c": "I don't know."})]  # unanswerable
    out = text_systems(ballots, AggregatorConfig(), None, None)
    assert {"council", "council_k1", "single:a", "single:b", "single:c", "self_consistency"} <= set(out)
    assert "council_calibrated" not in out  # no calibrator given
    council = metrics(out["council"], ballots)
    assert council["official"]["f1"] == 100.0 and council["unanswerable_answered"]["rate"] == 0.0
    assert council["latency_s"] == 1.5
    single = metrics(out["single:a"], ballots)  # "a" answers the unanswerable one: a hallucination
    assert single["unanswerable_answered"]["rate"] == 1.0 and single["official"]["f1"] == 50.0
    lo, hi = single["unanswerable_answered"]["ci95"]
    assert 0 < lo < 1 == hi  # one of one: the interval is wide
    suite = score_suite(ballots, out)
    assert suite["best_single"] in ("b", "c") and suite["always_abstain"]["f1"] == 50.0
