"""Jobs: a JSONL file of questions answered into a JSONL file of verdicts, resumable after a crash, with bad
lines skipped by number and a foreign output refused. In-process councils here, except one Ray test that
runs the job on an embedded Ray instance the council starts and stops itself."""

import json
import time

import pytest

from council.council import Council
from council.cli import jobs_main as main
from council.jobs import JobError, answer_file, read_done, read_questions
from tests.conftest import HashEmbedder, make_store
from tests.test_hosts import council_config

QUESTIONS = ["When did the Normans conquer England?", "What is force?", "What is EU law?",
             "Who conquered England?", "How does mass relate to acceleration?"]


@pytest.fixture(scope="module")
def catalog(tiny_catalog):
    return tiny_catalog


@pytest.fixture(scope="module")
def council(tiny_model_dir, catalog):
    with Council(council_config(tiny_model_dir, catalog), store=make_store(), embedder=HashEmbedder()) as c:
        yield c


def write_lines(path, lines):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


@pytest.fixture
def questions(tmp_path):
    return write_lines(tmp_path / "q.jsonl", [{"id": f"q{i}", "question": q} for i, q in enumerate(QUESTIONS)])


def output_ids(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_every_line_answered_with_its_id(council, questions, tmp_path):
    out = tmp_path / "v.jsonl"
    summary = answer_file(council, questions, out, batch_size=2, progress=False)
    assert output_ids(out) == [f"q{i}" for i in range(5)]
    assert (summary.answered, summary.done_before, summary.skipped, summary.stopped) == (5, 0, [], False)
    first = json.loads(out.read_text().splitlines()[0])
    assert first["question"] == QUESTIONS[0] and len(first["votes"]) == 3 and "abstained" in first
    again = answer_file(council, questions, out, progress=False)  # all done: nothing redone
    assert (again.answered, again.done_before) == (0, 5) and len(output_ids(out)) == 5
    with pytest.raises(ValueError, match=r"in_flight=2: an in-process host answers one call at a time"):
        answer_file(council, questions, out, in_flight=2, progress=False)


def test_a_crashed_job_resumes_without_duplicate_or_missing_line(council, questions, tmp_path):
    out = tmp_path / "v.jsonl"
    seen = []

    def crash_after_three(q):
        seen.append(q.id)
        if len(seen) == 3:
            raise RuntimeError("killed mid-file")

    with pytest.raises(RuntimeError, match="killed mid-file"):
        answer_file(council, questions, out, batch_size=2, progress=False, on_verdict=crash_after_three)
    assert output_ids(out) == ["q0", "q1", "q2"]
    with out.open("a") as f:  # the crash also cut the next line in the middle of its write
        f.write('{"id": "q3", "question": "Who conq')
    summary = answer_file(council, questions, out, batch_size=2, progress=False)
    assert (summary.done_before, summary.answered) == (3, 2)
    assert output_ids(out) == ["q0", "q1", "q2", "q3", "q4"]
    reference = tmp_path / "ref.jsonl"
    answer_file(council, questions, reference, progress=False)
    answers = lambda p: {d["id"]: d["answer"] for d in map(json.loads, p.read_text().splitlines())}  # noqa: E731
    assert answers(out) == answers(reference)


def test_a_planned_stop_then_resume(council, questions, tmp_path):
    out = tmp_path / "v.jsonl"
    first = answer_file(council, questions, out, batch_size=1, limit=2, progress=False)
    assert first.stopped and output_ids(out) == ["q0", "q1"]
    rest = answer_file(council, questions, out, batch_size=1, progress=False)
    assert (rest.done_before, rest.answered, rest.stopped) == (2, 3, False)
    assert sorted(output_ids(out)) == [f"q{i}" for i in range(5)]


def test_malformed_lines_are_skipped_with_their_line_numbers(council, tmp_path, caplog):
    path = write_lines(tmp_path / "q.jsonl", [
        {"id": "a", "question": "What is force?"},
        '{"id": "b", "question": ',  # 2
        '["not", "an", "object"]',  # 3
        {"id": "c"},  # 4
        {"id": "a", "question": "What is EU law?"},  # 5: duplicate id
        {"id": 1.5, "question": "Why?"},  # 6
        {"id": "d", "question": "  "},  # 7
        "",  # 8: blank, ignored
        {"id": 9, "question": "What is EU law?"},
        {"id": "long", "question": "why " * 400},  # 10: refused by the council (max_question_chars)
    ])
    summary = answer_file(council, path, tmp_path / "v.jsonl", progress=False)
    assert output_ids(tmp_path / "v.jsonl") == ["a", 9]
    assert [s.line for s in summary.skipped] == [2, 3, 4, 5, 6, 7, 10]
    reasons = [str(s) for s in summary.skipped]
    assert reasons[0].startswith("line 2: not valid JSON")
    assert reasons[2] == "line 4: missing 'question'"
    assert reasons[3] == "line 5: duplicate id 'a' (first on line 1)"
    assert "more than max_question_chars" in reasons[6]
    err = caplog.text
    assert "skipped line 3: expected an object" in err and "skipped line 7: question='  '" in err
    assert summary.to_dict()["skipped"] == reasons


@pytest.mark.parametrize("existing, message", [
    ['{"answer": "Paris"}\n', r"line 1 has no 'id': this output is not this job's; refusing to write to it"],
    ['{"id": "q0", "question": "%s"}\n{"id": "zz"}\n', r"line 2 has id 'zz', which is not in the input"],
    ['hello\n{"id": "q0"}\n', r"line 1 is not a JSON verdict"],
    ['my notes, no line end', r"last line has no line end and is not the start of a verdict"],
    ['{"id": "q0", "question": "What else?"}\n', r"id 'q0' was answered for the question 'What else\?'.*a conflict"],
    [b'{"id": "q0", "question": "caf\xe9"}\n', r"line 1 is not a JSON verdict"],
])
def test_an_output_that_is_not_this_jobs_is_refused(council, questions, tmp_path, existing, message):
    out = tmp_path / "v.jsonl"
    if isinstance(existing, str):
        existing = (existing % QUESTIONS[0] if "%s" in existing else existing).encode()
    out.write_bytes(existing)
    with pytest.raises(JobError, match=message):
        answer_file(council, questions, out, progress=False)
    assert out.read_bytes() == existing  # untouched
    assert main(["answer", "--input", str(questions), "--output", str(out), "--local"]) == 2


def test_read_done_keeps_a_last_line_missing_only_its_newline(tmp_path):
    out = tmp_path / "v.jsonl"
    out.write_text('{"id": 1, "question": "a"}\n{"id": 2, "question": "b"}')
    assert read_done(out, {1: "a", 2: "b", 3: "c"}) == {1, 2}
    assert out.read_text() == '{"id": 1, "question": "a"}\n{"id": 2, "question": "b"}\n'
    assert read_questions(write_lines(tmp_path / "q.jsonl", [{"id": 1, "question": "x"}]))[0][0].line == 1
    with pytest.raises(JobError, match="does not exist"):
        read_questions(tmp_path / "none.jsonl")


def test_cli_unreachable_address_fails_within_seconds(questions, tmp_path, capsys):
    ray = pytest.importorskip("ray")
    t0 = time.monotonic()
    code = main(["answer", "--input", str(questions), "--output", str(tmp_path / "v.jsonl"),
                 "--address", "127.0.0.1:1", "--no-progress"])
    assert code == 2 and time.monotonic() - t0 < 8
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in capsys.readouterr().err
    assert not ray.is_initialized() and not (tmp_path / "v.jsonl").exists()


@pytest.mark.ray
def test_job_on_an_embedded_ray_instance(tiny_model_dir, catalog, questions, tmp_path, monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = council_config(tiny_model_dir, catalog, mode="ray", placement="spread", n_hosts=2, num_cpus=1)
    out = tmp_path / "v.jsonl"
    with Council(config, store=make_store(), embedder=HashEmbedder()) as council:
        assert ray.is_initialized()  # started by the council, with the two hosts on it
        first = answer_file(council, questions, out, batch_size=2, in_flight=2, limit=2, progress=False)
        rest = answer_file(council, questions, out, batch_size=2, in_flight=2, progress=False)
    assert not ray.is_initialized()  # and stopped by close()
    assert (first.answered, rest.done_before, rest.answered) == (2, 2, 3)
    assert sorted(output_ids(out)) == [f"q{i}" for i in range(5)]
    assert all(not json.loads(line)["missing"] for line in out.read_text().splitlines())


def test_the_input_as_output_is_refused(council, questions):
    before = questions.read_bytes()
    with pytest.raises(JobError, match="is the input file"):
        answer_file(council, questions, questions, progress=False)
    assert main(["answer", "--input", str(questions), "--output", str(questions), "--local"]) == 2
    assert questions.read_bytes() == before


def test_a_line_that_is_not_utf8_is_skipped_not_answered(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'{"id": 1, "question": "caf\xe9?"}\n{"id": 2, "question": "fine?"}\n')
    questions, skipped = read_questions(path)
    assert [q.id for q in questions] == [2]
    assert [str(s) for s in skipped] == ["line 1: not UTF-8 (byte 0xe9 at column 27)"]


def test_cli_exits_non_zero_when_lines_were_skipped_and_a_done_job_loads_no_model(
        questions, tmp_path, monkeypatch, caplog):
    import council.council as council_module

    out = tmp_path / "v.jsonl"
    answered = [{"id": f"q{i}", "question": q, "answer": None} for i, q in enumerate(QUESTIONS)]
    write_lines(out, answered)
    monkeypatch.setattr(council_module, "Council", lambda *a, **k: pytest.fail("loaded a council"))
    assert main(["answer", "--input", str(questions), "--output", str(out), "--local"]) == 0
    assert "nothing left to answer (5 done before, 0 skipped)" in caplog.text
    with questions.open("a") as f:
        f.write("not json\n")
    assert main(["answer", "--input", str(questions), "--output", str(out), "--local"]) == 1
    assert "skipped line 6: not valid JSON" in caplog.text


def test_cli_prints_its_summary_as_json_on_stdout(tiny_model_dir, catalog, questions, tmp_path, capsys,
                                                 monkeypatch):
    import council.council as council_module

    config = tmp_path / "c.json"
    config.write_text(json.dumps(council_config(tiny_model_dir, catalog).to_dict()))
    real = council_module.Council
    monkeypatch.setattr(council_module, "Council", lambda c: real(c, store=make_store(), embedder=HashEmbedder()))
    assert main(["answer", "--input", str(questions), "--output", str(tmp_path / "v.jsonl"), "--local",
                 "--config", str(config), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["answered"], summary["skipped"]) == (5, [])
