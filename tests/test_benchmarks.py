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
    assert figures["batched_ratio"] == engine["batched_ratio"] == pytest.approx(engine["batched_s"] / engine["single_s"], rel=0.01)
    assert figures["sequential_ratio"] > 1.5  # three calls cost clearly more than one
    assert all(n > 0 for n in engine["new_tokens"])
