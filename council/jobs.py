"""Jobs: answer a JSONL file of questions over a Ray cluster, one verdict line per question, resumable.

    python -m council.jobs answer --input questions.jsonl --output verdicts.jsonl \\
        [--config council.json] [--address ip:6379] [--hosts N] [--cpus-per-host C] [--batch B]

    input.jsonl   {"id": "q1", "question": "When did the Normans conquer England?"}   one per line
    output.jsonl  {"id": "q1", "question": ..., "answer": ..., "votes": [...], ...}    one verdict per line

The flow: read and check the input (a malformed line is reported with its line number and skipped) ─► read
the ids already in the output (a crash left a truncated last line: cut it; a line that is not this job's:
refuse) ─► build ONE council in the driver, its hosts Ray actors ─► feed the remaining questions to
`Council.ask_many` in batches, `in_flight` batches at a time ─► write each verdict with its id as soon as its
batch is done, flushed, so a crash loses at most the batches in flight, which the next run redoes.

Why a driver-side Council whose hosts are the actor pool, and not Ray Data or a pool of whole councils:
the only heavy stage is generation, and the council's hosts already are an actor pool with placement,
per-host CPUs, restarts and deadlines; the router, the embedder and the document store load once, in the
driver, instead of once per worker; the job runs the same code path as `council ask`, and a failed host is
a missing vote in a verdict, not a lost line. Two batches in flight keep every host busy while the driver
routes and retrieves the next one. Ray Data would add a dataset layer whose streaming order, retries and
output files fight the line-exact resume this job needs, for a workload of thousands of lines, not billions.

Under `ray job submit`, $RAY_ADDRESS is set and the council joins that cluster (README: "Batch jobs on Ray").
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path


logger = logging.getLogger(__name__)
VERDICT_START = b'{"id": '  # how every verdict line begins (json.dumps of {"id": ..., ...})


class JobError(ValueError):
    """A job that cannot run: a missing input, or an output file that is not this job's."""


@dataclass(frozen=True)
class Question:
    """One input line: its id, its question and where it was (1-based line number)."""

    id: str | int
    question: str
    line: int


@dataclass(frozen=True)
class Skipped:
    """An input line that was not answered, and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class JobSummary:
    """What a run did: lines read, answered now, done before, skipped (with line numbers), speed."""

    input: str
    output: str
    questions: int  # well-formed input lines
    done_before: int  # already in the output when the run started
    answered: int  # written by this run
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0  # answering only (the council is built before)
    stopped: bool = False  # stopped early at `limit`, before the end of the input

    @property
    def per_second(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skipped"] = [str(s) for s in self.skipped]
        d["per_second"] = round(self.per_second, 3)
        return d


# --------------------------------------------------------------------------------------------- reading


def read_questions(path: str | Path) -> tuple[list[Question], list[Skipped]]:
    """The well-formed questions of a JSONL file, and the lines skipped with their reason. Blank lines are
    ignored; an id must be a string or an integer, unique; a question non-empty text."""
    path = Path(path)
    if not path.is_file():
        raise JobError(f"input file {path} does not exist")
    questions, skipped, first_line = [], [], {}
    with path.open("rb") as f:
        for n, data in enumerate(f, start=1):
            try:  # a line that is not UTF-8 is skipped like any malformed line, not answered with U+FFFD
                raw = data.decode("utf-8")
            except UnicodeDecodeError as e:
                skipped.append(Skipped(n, f"not UTF-8 (byte {data[e.start]:#04x} at column {e.start + 1})"))
                continue
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
            except json.JSONDecodeError as e:
                skipped.append(Skipped(n, f"not valid JSON ({e.msg} at column {e.colno})"))
                continue
            reason = _malformed(item, first_line)
            if reason:
                skipped.append(Skipped(n, reason))
                continue
            first_line[item["id"]] = n
            questions.append(Question(item["id"], item["question"], n))
    return questions, skipped


def _malformed(item, first_line: dict) -> str | None:
    if not isinstance(item, dict):
        return f"expected an object with 'id' and 'question', got {type(item).__name__}"
    if "id" not in item or "question" not in item:
        return f"missing {' and '.join(repr(k) for k in ('id', 'question') if k not in item)}"
    qid = item["id"]
    if isinstance(qid, bool) or not isinstance(qid, str | int):
        return f"id={qid!r}: must be a string or an integer"
    if qid in first_line:
        return f"duplicate id {qid!r} (first on line {first_line[qid]})"
    if not isinstance(item["question"], str) or not item["question"].strip():
        return f"question={item['question']!r}: must be non-empty text"
    return None


def read_done(path: str | Path, questions: dict) -> set:
    """Ids already answered in an existing output (`questions`: the input's question by id), after cutting
    a truncated last verdict line (a crash mid-write).

    Refuses (JobError) an output that is not this job's, and leaves it untouched: a complete line that is not
    a verdict of an input question (not JSON, no id, an id not in the input, the same id with another
    question), or an unterminated last line that is not the start of a verdict."""
    path = Path(path)
    if not path.exists():
        return set()
    data = path.read_bytes()
    complete_end = data.rfind(b"\n") + 1  # bytes up to the last newline are complete lines
    tail = data[complete_end:]
    refuse = "refusing to write to it: choose another --output"
    done = set()
    for n, raw in enumerate(data[:complete_end].splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise JobError(f"{path} line {n} is not a JSON verdict: this output is not this job's (or is "
                           f"corrupt); {refuse}") from None
        _check_verdict(item, questions, f"{path} line {n}", refuse)
        done.add(item["id"])
    if tail.strip():
        if not tail.startswith(VERDICT_START):
            raise JobError(f"{path}: its last line has no line end and is not the start of a verdict: this output "
                           f"is not this job's; {refuse}")
        try:  # a last line complete but for its newline is kept
            item = json.loads(tail.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            logger.warning("council.jobs: %s: cutting a truncated last line (%d bytes) left by a crash; its "
                           "question is answered again", path, len(tail))
        else:
            _check_verdict(item, questions, f"{path} last line", refuse)
            done.add(item["id"])
            with path.open("ab") as f:
                f.write(b"\n")
            return done
    if tail:
        with path.open("r+b") as f:
            f.truncate(complete_end)
    return done


def _check_verdict(item, questions: dict, where: str, refuse: str) -> None:
    if not isinstance(item, dict) or "id" not in item:
        raise JobError(f"{where} has no 'id': this output is not this job's; {refuse}")
    if item["id"] not in questions:
        raise JobError(f"{where} has id {item['id']!r}, which is not in the input: this output is not this "
                       f"job's; {refuse}")
    asked, recorded = questions[item["id"]].strip(), item.get("question")
    if recorded != asked and not (item.get("truncated") and isinstance(recorded, str) and asked.startswith(recorded)):
        raise JobError(f"{where}: id {item['id']!r} was answered for the question {item.get('question')!r}, but "
                       f"the input asks {questions[item['id']]!r}: a conflict; give the question another id, or "
                       f"choose another --output")


def check_paths(input: str | Path, output: str | Path) -> None:
    """JobError when the output is the input: verdicts appended to the questions would lose both."""
    i, o = Path(input), Path(output)
    if i.resolve() == o.resolve() or (o.exists() and i.exists() and i.samefile(o)):
        raise JobError(f"--output {output} is the input file: choose another file for the verdicts")


# --------------------------------------------------------------------------------------------- answering


def plan(input: str | Path, output: str | Path, check: Callable[[str], object]):
    """(questions, those still to answer, ids done before, skipped lines): what a run of this job has to do.
    `check` raises ValueError for a question the council refuses (empty, too long)."""
    questions, skipped = read_questions(input)
    done = read_done(output, {q.id: q.question for q in questions})
    todo = []
    for q in questions:
        if q.id in done:
            continue
        try:
            check(q.question)
        except ValueError as e:
            skipped.append(Skipped(q.line, str(e)))
            continue
        todo.append(q)
    return questions, todo, done, sorted(skipped, key=lambda s: s.line)


def answer_file(council, input: str | Path, output: str | Path, *, batch_size: int = 8, in_flight: int = 1,
                limit: int | None = None, progress: bool = True,
                on_verdict: Callable[[Question], None] | None = None) -> JobSummary:
    """Answer every question of `input` not yet in `output`, appending one verdict line per question.

    `in_flight` batches run at once (more than 1 only with Ray hosts: an in-process host answers one call at a
    time). `limit` stops after that many new lines (a planned interruption, e.g. for tests)."""
    from tqdm import tqdm

    if batch_size < 1 or in_flight < 1:
        raise ValueError(f"batch_size={batch_size}, in_flight={in_flight}: both must be at least 1")
    if in_flight > 1 and getattr(council.host, "mode", "inprocess") != "ray":
        raise ValueError(f"in_flight={in_flight}: an in-process host answers one call at a time; use in_flight=1, "
                         "or Ray hosts (hosts.mode='ray')")
    check_paths(input, output)
    questions, todo, done, skipped = plan(input, output, council.check)
    for s in skipped:
        logger.warning("council.jobs: %s: skipped %s", input, s)
    summary = JobSummary(str(input), str(output), len(questions), len(done), 0, skipped)
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    bar = tqdm(total=len(todo), disable=not progress, desc="answering", unit="q", file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 30)  # in a job's log: a line every 30 s
    t0 = time.perf_counter()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a", encoding="utf-8") as out:

        def write(q: Question, verdict) -> bool:
            """Append one verdict line (flushed); False once `limit` lines are written."""
            if isinstance(verdict, Exception):
                summary.skipped.append(Skipped(q.line, f"failed: {verdict}"))
                logger.warning("council.jobs: %s: skipped line %d: failed: %s", input, q.line, verdict)
                return True
            out.write(json.dumps({"id": q.id, **verdict.to_dict()}, ensure_ascii=False) + "\n")
            out.flush()
            summary.answered += 1
            bar.update(1)
            if on_verdict:
                on_verdict(q)
            return limit is None or summary.answered < limit

        running: dict[Future, list[Question]] = {}
        queue, going = iter(batches), True
        while going:
            while len(running) < in_flight and (batch := next(queue, None)) is not None:
                running[_in_thread(_answer_batch, council, batch)] = batch
            if not running:
                break
            finished, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)  # wakes for Ctrl-C
            for future in finished:
                running.pop(future)
                going = going and all(write(q, v) for q, v in future.result())
        # stopped at `limit`: the batches still running are dropped, like in a crash
        summary.stopped = not going and summary.answered < len(todo)
    bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _in_thread(fn, *args) -> Future:
    """Run fn(*args) in a daemon thread: an interrupted job exits at once instead of joining its batches."""
    future: Future = Future()

    def run():
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            future.set_exception(e)

    threading.Thread(target=run, daemon=True, name="council-batch").start()
    return future


def _answer_batch(council, batch: Sequence[Question]) -> list[tuple[Question, object]]:
    """A batch's verdicts; when the batch fails, each question alone, so one bad question costs one line."""
    try:
        return list(zip(batch, council.ask_many([q.question for q in batch])))
    except Exception as e:  # noqa: BLE001 - find the question at fault below
        if len(batch) == 1:
            return [(batch[0], e)]
    results = []
    for q in batch:
        try:
            results.append((q, council.ask(q.question)))
        except Exception as e:  # noqa: BLE001 - reported as a skipped line with its error
            results.append((q, e))
    return results


if __name__ == "__main__":  # `python -m council.jobs answer ...`, the `ray job submit` entrypoint
    from council.cli import jobs_main

    sys.exit(jobs_main())
