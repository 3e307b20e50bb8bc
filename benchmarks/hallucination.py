"""Does the council beat its best member? Every council system here is what `council ask` runs.

Each question of a suite goes through the shipped Council twice, and both verdicts are kept (ballots.jsonl):

    council     the default configuration exactly as `council ask` runs it: the router with its thresholds
                and fallback, one retrieval, one batch with peer review, the aggregator
    panel       every specialist seated on the same context: each one's vote is what a council of that
                specialist alone produces, so the single systems are its votes aggregated alone

then n = 3 temperature samples of the suite's best single, for self-consistency at the council's compute.
Systems are pure functions of the kept ballots (a re-score runs the aggregator alone, in seconds):

    council               the stored verdict, as the user got it
    council_k1            the aggregator on the council's top-routed vote alone
    council_fitted        the council's votes, the aggregator's thresholds fitted on validation (`--penalty`)
    council_calibrated    the council's votes, the calibrator fitted on validation deciding (`--risk`)
    single:<name>         one specialist; best_single is the one of best official F1, chosen after the fact
    self_consistency      best_single sampled 3 times (temperature 0.7), majority vote with grounding

Suites, whole articles no specialist trained on: `unseen` (the reading data's SQuAD 2.0 test articles),
`halueval` (HaluEval QA as SQuAD 2.0, benchmarks/halueval_squad.py) and `squad` (any `--squad PATH`). The
thresholds and the calibrator are fitted on `validation` (the reading data's validation articles), never on
what they are scored on. `pubmedqa` and `truthfulqa` are option suites, where the Council has no path (it
writes answers, it does not pick options): each specialist picks the option of highest mean token log-prob
and the 3 top-routed vote on the picks.

Metrics per system and suite: `official` (the SQuAD 2.0 evaluation script's keys: exact, f1, HasAns_f1,
NoAns_f1, totals), `unanswerable_answered` and `answerable_wrong` (rates with their 95 % Wilson interval),
`abstention_rate`, `aurc` (risk-coverage of the system's best candidate answer ranked by its confidence),
`risk_at_50` and `risk_at_80` (wrong among the answers kept at 50 and 80 % coverage), `calibration_error`
(ECE of the confidence in what it did) and `latency_s` (mean seconds a question, where a system ran alone).

    .venv/bin/python benchmarks/hallucination.py --json benchmarks/results/hallucination.json
    .venv/bin/python benchmarks/hallucination.py --quick                 # CI smoke, a few questions a suite
    .venv/bin/python benchmarks/hallucination.py --suites --write-calibrator specialists/catalog/calibrator.json

A run that stops resumes where it stopped: every verdict is kept as soon as it is made.
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_json  # noqa: E402
from council.aggregator import AggregatorConfig, LabeledExample, Vote, aggregate, fit_thresholds  # noqa: E402
from council.calibrator import Calibrator, best_answer, features  # noqa: E402
from council.calibrator import fit as fit_calibrator  # noqa: E402
from council.metrics import (always_abstain_score, aurc, calibration_error, is_abstention,  # noqa: E402
                             reliability_bins, risk_at_coverage, risk_coverage, squad_v2_score, token_f1,
                             wilson_interval)
from council.prompts import ABSTAIN_ANSWER, closed_book_messages, rag_messages  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
TEXT_SUITES = ("unseen", "halueval", "squad")
OPTION_SUITES = ("pubmedqa", "truthfulqa")
SUITES = ("unseen", "halueval", "pubmedqa", "truthfulqa")  # squad joins with --squad PATH
SAMPLES, TEMPERATURE, K = 3, 0.7, 3
CORRECT_F1 = 0.5
FULL = {"validation": 300, "unseen": 300, "halueval": 300, "squad": 300, "pubmedqa": 40, "truthfulqa": 40}
QUICK = {"validation": 6, "unseen": 4, "halueval": 4, "squad": 4, "pubmedqa": 2, "truthfulqa": 2}
SHOWN = ("council", "council_k1", "council_calibrated", "best_single", "self_consistency")
GOALS = ("on unseen articles: council_calibrated's AURC under council_k1's, best_single's and self_consistency's; "
         "at most half best_single's unanswerable_answered with HasAns F1 at most 3 lower; official F1 at least "
         "best_single's + 5; calibration error at most 0.05")


@dataclass(frozen=True)
class Item:
    """One question: gold answers (none when unanswerable), or options with the right one first in golds."""

    id: str
    suite: str
    question: str
    golds: tuple[str, ...]
    context: tuple[str, ...] | None = None  # given by the dataset (option suites); None: the council retrieves
    options: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------------ suites


def _first(items: list, n: int, seed: int = 0) -> list:
    """n items in a seeded shuffled order whose prefixes are stable: a larger n extends a smaller one's."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items[:n]


def reading_suite(split: str, suite: str, n: int) -> tuple[list[Item], list]:
    """Questions of the reading data's SQuAD 2.0 articles of `split` (whole articles), and their paragraphs."""
    from council.retrieval import Document
    from specialists import reading

    examples = reading.read("squad2", split).examples
    items = [Item(e.id, suite, e.question, tuple(e.answers)) for e in examples]
    paragraphs = list(dict.fromkeys(e.context[0] for e in examples))
    return _first(items, n), [Document(p, f"{split}:{i}") for i, p in enumerate(paragraphs)]


def squad_file_suite(path: Path, suite: str, n: int) -> tuple[list[Item], Path]:
    """Every question of a SQuAD-format file (its articles unseen by the specialists), and the file to index."""
    items = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for p in article["paragraphs"]:
            for q in p["qas"]:
                golds = () if q.get("is_impossible") else tuple(dict.fromkeys(a["text"] for a in q["answers"]))
                items.append(Item(q["id"], suite, q["question"].strip(), golds))
    return _first(items, n), path


def halueval_file(out: Path) -> Path:
    """The HaluEval-derived SQuAD 2.0 file, written once into the run folder."""
    from benchmarks.halueval_squad import convert

    path = out / "halueval-squad.json"
    if not path.is_file():
        path.write_text(json.dumps(convert(DATASETS / "halueval_qa" / "qa_one-turn_data.json")), encoding="utf-8")
    return path
def pubmedqa_items(n: int) -> list[Item]:
    """PubMedQA's official test questions: yes/no/maybe, the abstract (first 250 words) as the context."""
    data = json.loads((DATASETS / "pubmedqa" / "ori_pqal.json").read_text(encoding="utf-8"))
    test = json.loads((DATASETS / "pubmedqa" / "test_ground_truth.json").read_text(encoding="utf-8"))
    items = []
    for pmid, label in test.items():
        row = data[pmid]
        contexts = row["CONTEXTS"] if isinstance(row["CONTEXTS"], list) else ast.literal_eval(row["CONTEXTS"])
        words = " ".join(contexts).split()[:250]
        items.append(Item(pmid, "pubmedqa", row["QUESTION"], (label,),
                          context=(" ".join(words),), options=("yes", "no", "maybe")))
    return _first(items, n)


def truthfulqa_items(n: int) -> list[Item]:
    """TruthfulQA: the best answer against the incorrect ones (at most 4), closed book."""
    with open(DATASETS / "truthfulqa" / "TruthfulQA.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = random.Random(0)
    items = []
    for i, row in enumerate(rows):
        wrong = [w.strip() for w in row["Incorrect Answers"].split(";") if w.strip()][:4]
        options = [row["Best Answer"].strip(), *wrong]
        rng.shuffle(options)
        items.append(Item(f"truthfulqa-{i}", "truthfulqa", row["Question"], (row["Best Answer"].strip(),),
                          context=(), options=tuple(options)))
    return _first(items, n)



# ----------------------------------------------------------------------------------------------- ballots
# A ballot is what the Council produced for one question (its verdict, the panel's, the passages they read)
# and the self-consistency samples: everything a system is scored from, computed once.


def _key(item: Item) -> str:
    return f"{item.suite}/{item.id}"


def read_kept(path: Path) -> dict[str, dict]:
    """The ballots kept so far; a later line for a question replaces an earlier one (samples added)."""
    kept = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                b = json.loads(line)
                kept[f"{b['suite']}/{b['id']}"] = b
    return kept


def council_key(council) -> str:
    """What a kept council verdict was asked under: a change of the default config re-asks the council."""
    return hashlib.sha1(json.dumps(council.config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def text_ballots(items: list[Item], council, panel, kept: dict, path: Path, *, label: str, batch: int = 4):
    """Ask every item not yet kept of the council and of the panel (ask_many, `batch` questions a call); an
    item kept under another council config is asked of the council again, its panel verdict kept."""
    from tqdm.auto import tqdm

    texts = {p.id: p.text for p in council.store.passages}
    key = council_key(council)
    todo = [i for i in items if kept.get(_key(i), {}).get("council_key") != key]
    with open(path, "a", encoding="utf-8") as f, tqdm(total=len(todo), desc=f"{label}: asking", unit="q",
                                                     file=sys.stderr, disable=not todo) as bar:
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            verdicts = council.ask_many([i.question for i in chunk])
            fresh = [i for i in chunk if "panel" not in kept.get(_key(i), {})]
            seats = dict(zip(map(_key, fresh), panel.ask_many([i.question for i in fresh]) if fresh else []))
            for item, v in zip(chunk, verdicts):
                old = kept.get(_key(item), {})
                b = {"id": item.id, "suite": item.suite, "question": item.question, "golds": list(item.golds),
                     "passages": [texts[i] for i in v.context], "council": v.to_dict(), "council_key": key,
                     "panel": seats[_key(item)].to_dict() if _key(item) in seats else old["panel"],
                     **{k: old[k] for k in ("samples", "samples_of") if k in old}}
                kept[_key(item)] = b
                f.write(json.dumps(b, ensure_ascii=False) + "\n")
            f.flush()
            bar.update(len(chunk))
    return [kept[_key(i)] for i in items]


def add_samples(ballots: list[dict], engine, best: str, kept_path: Path, *, max_new_tokens: int, seed: int,
                label: str) -> None:
    """SAMPLES temperature samples of `best` on each ballot's context (for self-consistency), kept."""
    from tqdm.auto import tqdm

    from council.engine import Request

    todo = [b for b in ballots if b.get("samples_of") != best]
    with open(kept_path, "a", encoding="utf-8") as f:
        for b in tqdm(todo, desc=f"{label}: sampling {best}", file=sys.stderr, disable=not todo):
            messages = rag_messages(b["question"], b["passages"]) if b.get("passages") is not None else None
            if b.get("options"):
                scores = b["rows"][best][2]
                rng = random.Random(f"{seed}:{b['id']}")
                weights = [math.exp((s - max(scores)) / TEMPERATURE) for s in scores]
                picks = rng.choices(range(len(scores)), weights=weights, k=SAMPLES)
                b["samples"] = [[b["options"][j], math.log(weights[j] / sum(weights))] for j in picks]
            else:
                out = engine.generate([Request(messages, best)] * SAMPLES, max_new_tokens=max_new_tokens,
                                      temperature=TEMPERATURE, seed=seed)
                b["samples"] = [[g.text, g.mean_logprob] for g in out]
            b["samples_of"] = best
            f.write(json.dumps(b, ensure_ascii=False) + "\n")
            f.flush()


def option_ballots(items: list[Item], council, voters: Sequence[str], kept: dict, path: Path, *, label: str):
    """Each voter's pick among the options (highest mean token log-prob) on the dataset's context."""
    from tqdm.auto import tqdm

    from council.engine import Request

    engine = council.host.hosts[council.host.names[0]].engine
    todo = [i for i in items if _key(i) not in kept]
    with open(path, "a", encoding="utf-8") as f:
        for item in tqdm(todo, desc=f"{label}: choosing", file=sys.stderr, disable=not todo):
            messages = rag_messages(item.question, item.context) if item.context else closed_book_messages(item.question)
            requests = [Request(messages, v) for v in voters]
            flat = [(r, o) for r in requests for o in item.options]
            lps = engine.loglikelihood([r for r, _ in flat], [o for _, o in flat])
            scores = [sum(lp) / len(lp) for lp in lps]
            rows = {}
            for j, v in enumerate(voters):
                s = scores[j * len(item.options):(j + 1) * len(item.options)]
                top = max(range(len(s)), key=lambda x: s[x])
                rows[v] = [item.options[top], -math.log(sum(math.exp(x - s[top]) for x in s)), s]
            b = {"id": item.id, "suite": item.suite, "question": item.question, "golds": list(item.golds),
                 "options": list(item.options), "route": council.router.route(item.question).scores, "rows": rows}
            kept[_key(item)] = b
            f.write(json.dumps(b, ensure_ascii=False) + "\n")
            f.flush()
    return [kept[_key(i)] for i in items]


# ----------------------------------------------------------------------------------------------- systems
# Pure functions from ballots to outcomes.


@dataclass(frozen=True)
class Outcome:
    answer: str | None  # None: abstained
    confidence: float  # in what it did (answering or abstaining)
    candidate: str | None  # its best answer even when it abstained (risk-coverage ranks these)
    score: float  # the confidence of that candidate
    latency_s: float | None = None


def votes_of(verdict: dict) -> list[Vote]:
    return [Vote.from_dict(v) for v in verdict["votes"]]


def from_aggregate(agg, latency_s: float | None = None, calibrator: Calibrator | None = None) -> Outcome:
    """The outcome of an aggregate; its candidate is the answer cluster of most share x grounding, scored by
    the calibrated probability when there is a calibrator, else by share x grounding."""
    top = best_answer(agg.clusters)
    if top is None:
        score = 0.0
    elif calibrator is not None:
        score = calibrator.probability(features(agg.clusters, [v for v in agg.votes if not v.missing]))
    else:
        score = agg.confidence if not agg.abstained else top.support
    if not agg.abstained:
        return Outcome(agg.answer, agg.confidence, agg.answer, score if calibrator else agg.confidence, latency_s)
    return Outcome(None, agg.confidence, top.answer if top else None, score, latency_s)


def sc_outcome(ballot: dict, passages) -> Outcome:
    votes = [Vote(f"sample{i}", text, mean_logprob=lp) for i, (text, lp) in enumerate(ballot["samples"])]
    return from_aggregate(aggregate(votes, passages=passages, config=AggregatorConfig(min_agreement=0.0)))


def text_systems(ballots: list[dict], config: AggregatorConfig, fitted: AggregatorConfig | None,
                 calibrator: Calibrator | None) -> dict[str, list[Outcome]]:
    """Every system's outcomes on a text suite's ballots (singles under each specialist's name)."""
    out: dict[str, list[Outcome]] = {"council": [], "council_k1": [], "council_fitted": [], "council_calibrated": []}
    for b in ballots:
        votes, passages = votes_of(b["council"]), b["passages"]
        latency = b["council"]["timings"].get("total")
        out["council"].append(from_aggregate(aggregate(votes, passages=passages, config=config), latency))
        out["council_k1"].append(from_aggregate(aggregate(votes[:1], passages=passages, config=config)))
        if fitted is not None:
            out["council_fitted"].append(from_aggregate(aggregate(votes, passages=passages, config=fitted)))
        if calibrator is not None:
            agg = aggregate(votes, passages=passages, config=config, calibrator=calibrator)
            out["council_calibrated"].append(from_aggregate(agg, latency, calibrator))
        for vote in votes_of(b["panel"]):
            single = from_aggregate(aggregate([vote], passages=passages, config=config))
            out.setdefault(f"single:{vote.specialist}", []).append(single)
        if b.get("samples"):
            out.setdefault("self_consistency", []).append(sc_outcome(b, passages))
    return {k: v for k, v in out.items() if len(v) == len(ballots)}


def option_systems(ballots: list[dict]) -> dict[str, list[Outcome]]:
    out: dict[str, list[Outcome]] = {}
    for b in ballots:
        for name, (text, logp, _) in b["rows"].items():
            p = math.exp(min(logp, 0.0))
            out.setdefault(f"single:{name}", []).append(Outcome(text, p, text, p))
        ranked = sorted(b["rows"], key=lambda v: -b["route"].get(v, -1.0))[:K]
        votes = [Vote(v, b["rows"][v][0], route_score=max(b["route"].get(v, 0.0), 0.0), mean_logprob=b["rows"][v][1])
                 for v in ranked]
        out.setdefault("council", []).append(from_aggregate(aggregate(votes, config=AggregatorConfig(
            strategy="majority", min_agreement=0.0, min_grounding=0.0))))
        if b.get("samples"):
            out.setdefault("self_consistency", []).append(sc_outcome(b, None))
    return {k: v for k, v in out.items() if len(v) == len(ballots)}


# ----------------------------------------------------------------------------------------------- metrics


def judge(answer: str | None, ballot: dict) -> tuple[float, bool]:
    """(F1, right) of one answer (None = abstained): an abstention is right on an unanswerable question, an
    answer when its token F1 reaches CORRECT_F1 (or it is the right option)."""
    golds = ballot["golds"]
    if answer is None or is_abstention(answer):
        return 0.0, not golds
    if not golds:
        return 0.0, False
    if ballot.get("options"):
        return float(answer == golds[0]), answer == golds[0]
    f1 = token_f1(answer, golds)
    return f1, f1 >= CORRECT_F1


def _rate(flags: Sequence[bool]) -> dict:
    n, k = len(flags), sum(flags)
    low, high = wilson_interval(k, n)
    return {"rate": round(k / n, 4) if n else None, "ci95": [round(low, 4), round(high, 4)], "n": n}


def metrics(outcomes: Sequence[Outcome], ballots: Sequence[dict]) -> dict:
    judged = [judge(o.answer, b) for o, b in zip(outcomes, ballots)]
    unanswerable = [i for i, b in enumerate(ballots) if not b["golds"]]
    answerable = [i for i, b in enumerate(ballots) if b["golds"]]
    errors = [not judge(o.candidate, b)[1] for o, b in zip(outcomes, ballots)]
    scores = [o.score for o in outcomes]
    official = squad_v2_score([ABSTAIN_ANSWER if o.answer is None else o.answer for o in outcomes],
                              [b["golds"] for b in ballots])
    latencies = [o.latency_s for o in outcomes if o.latency_s is not None]
    return {
        "official": official,
        "unanswerable_answered": _rate([outcomes[i].answer is not None for i in unanswerable]),
        "answerable_wrong": _rate([outcomes[i].answer is not None and not judged[i][1] for i in answerable]),
        "abstention_rate": round(sum(o.answer is None for o in outcomes) / len(outcomes), 4),
        "aurc": round(aurc(scores, errors), 4),
        "risk_at_50": _round(risk_at_coverage(scores, errors, 0.5)),
        "risk_at_80": _round(risk_at_coverage(scores, errors, 0.8)),
        "calibration_error": round(calibration_error([o.confidence for o in outcomes], [j[1] for j in judged]), 4),
        "reliability": reliability_bins([o.confidence for o in outcomes], [j[1] for j in judged]),
        "latency_s": round(sum(latencies) / len(latencies), 3) if len(latencies) == len(outcomes) else None,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def best_single(scored: dict[str, dict]) -> str:
    singles = [n for n in scored if n.startswith("single:")]
    return max(singles, key=lambda n: (scored[n]["official"]["f1"], n)).removeprefix("single:")


def goals(systems: dict[str, dict]) -> dict:
    """#14's goals on one text suite: each with the figures it compares and by how much it is met or missed."""
    cal, best = systems.get("council_calibrated"), systems["best_single"]
    if cal is None:
        return {}
    others = [n for n in ("council_k1", "best_single", "self_consistency") if n in systems]
    hasans = lambda m: m["official"].get("HasAns_f1", 0.0)  # noqa: E731
    return {
        "aurc_below_" + "_".join(others): {"met": all(cal["aurc"] < systems[n]["aurc"] for n in others),
                                           "by": round(min(systems[n]["aurc"] for n in others) - cal["aurc"], 4)},
        "half_the_unanswerable_answered": {
            "met": cal["unanswerable_answered"]["rate"] <= best["unanswerable_answered"]["rate"] / 2,
            "by": round(best["unanswerable_answered"]["rate"] / 2 - cal["unanswerable_answered"]["rate"], 4)},
        "hasans_f1_at_most_3_lower": {"met": hasans(cal) >= hasans(best) - 3,
                                      "by": round(hasans(cal) - hasans(best) + 3, 2)},
        "official_f1_plus_5": {"met": cal["official"]["f1"] >= best["official"]["f1"] + 5,
                               "by": round(cal["official"]["f1"] - best["official"]["f1"] - 5, 2)},
        "calibration_error_0.05": {"met": cal["calibration_error"] <= 0.05,
                                   "by": round(0.05 - cal["calibration_error"], 4)},
    }


# ------------------------------------------------------------------------------------------ fitting, output


def fit_on_validation(ballots: list[dict], config: AggregatorConfig, *, penalty: float, max_risk: float,
                      about: dict) -> tuple[AggregatorConfig, Calibrator | None]:
    """The aggregator's thresholds and the calibrator, fitted on validation ballots of the council."""
    examples = [LabeledExample(votes_of(b["council"]), b["passages"], b["golds"], bool(b["golds"])) for b in ballots]
    fitted = fit_thresholds(examples, config=config, penalty=penalty)
    rows, right, no_answer, all_abstained = [], [], [], []
    for b in ballots:
        agg = aggregate(votes_of(b["council"]), passages=b["passages"], config=config)
        f = features(agg.clusters, [v for v in agg.votes if not v.missing])
        if f is None:
            all_abstained.append(not b["golds"])
        else:
            rows.append(f)
            right.append(judge(best_answer(agg.clusters).answer, b)[1])
            no_answer.append(not b["golds"])
    if len(set(right)) < 2:
        return fitted, None
    fitted_on = {**about, "questions": len(ballots), "with_an_answer": len(rows), "right": sum(right)}
    share = sum(all_abstained) / len(all_abstained) if all_abstained else None
    return fitted, fit_calibrator(rows, right, max_risk=max_risk, abstain_right=no_answer, all_abstained=share,
                                  fitted_on=fitted_on)


COLUMNS = ("official f1", "HasAns f1", "NoAns f1", "unanswerable answered", "aurc", "risk@50", "risk@80", "ECE",
           "latency s")


def _row(name: str, m: dict) -> str:
    o, u = m["official"], m["unanswerable_answered"]
    cells = [o["f1"], o.get("HasAns_f1", "-"), o.get("NoAns_f1", "-"),
             "-" if u["rate"] is None else f"{u['rate']:.2f} [{u['ci95'][0]:.2f}, {u['ci95'][1]:.2f}]",
             m["aurc"], m["risk_at_50"], m["risk_at_80"], m["calibration_error"], m["latency_s"]]
    return f"| {name} | " + " | ".join("-" if c is None else f"{c:g}" if isinstance(c, float) else str(c)
                                       for c in cells) + " |"


def table(results: dict) -> str:
    lines = []
    for suite, r in results["suites"].items():
        lines += [f"\n**{suite}** ({r['n']} questions, {r['n_unanswerable']} unanswerable; best single: "
                  f"{r['best_single']}; always abstaining: official F1 {r['always_abstain']['f1']})\n",
                  "| system | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
        lines += [_row(n, m) for n, m in r["systems"].items() if not n.startswith("single:")]
    return "\n".join(lines) + "\n"


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = [s for s in results["suites"] if s in results["curves"]]
    if not suites:
        return
    for kind in ("risk_coverage", "reliability"):
        fig, axes = plt.subplots(1, len(suites), figsize=(5 * len(suites), 4), squeeze=False)
        for ax, suite in zip(axes[0], suites):
            systems = results["suites"][suite]["systems"]
            for name in (n for n in SHOWN if n in results["curves"][suite]):
                if kind == "risk_coverage":
                    coverage, risk = results["curves"][suite][name]
                    ax.plot(coverage, risk, label=f"{name} (AURC {systems[name]['aurc']:.3f})")
                else:
                    bins = systems[name]["reliability"]
                    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-",
                            label=f"{name} (ECE {systems[name]['calibration_error']:.3f})")
            if kind == "risk_coverage":
                ax.set(title=suite, xlabel="coverage", ylabel="risk (wrong among answered)", ylim=(0, 1))
            else:
                ax.plot([0, 1], [0, 1], ":", color="grey")
                ax.set(title=suite, xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{kind}.png", dpi=120)
        plt.close(fig)
        print(f"wrote {out / f'{kind}.png'}", file=sys.stderr)


def score_suite(ballots: list[dict], outcomes: dict[str, list[Outcome]]) -> dict:
    scored = {name: metrics(o, ballots) for name, o in outcomes.items()}
    best = best_single(scored)
    scored["best_single"] = scored[f"single:{best}"]
    outcomes["best_single"] = outcomes[f"single:{best}"]
    ordered = {n: scored[n] for n in (*SHOWN, "council_fitted") if n in scored}
    ordered.update({n: m for n, m in scored.items() if n not in ordered})
    return {"n": len(ballots), "n_unanswerable": sum(not b["golds"] for b in ballots), "best_single": best,
            "always_abstain": always_abstain_score([b["golds"] for b in ballots]), "systems": ordered,
            "goals": goals(ordered) if not ballots[0].get("options") else {}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke: a few questions a suite")
    parser.add_argument("--suites", nargs="*", choices=SUITES, default=list(SUITES),
                        help="suites to score (none: only fit on validation, e.g. with --write-calibrator)")
    parser.add_argument("--squad", type=Path, help="also score a SQuAD 2.0 file of articles no specialist saw")
    parser.add_argument("--limit", type=int, help="questions per suite (default 300, options 40; validation 300)")
    parser.add_argument("--validation-limit", type=int, help="validation questions (default 300)")
    parser.add_argument("--json", type=Path, help="write every system's metrics here")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "hallucination",
                        help="folder for the kept verdicts (ballots.jsonl), the table and the plots")
    parser.add_argument("--penalty", type=float, default=1.0,
                        help="cost of a hallucination in F1 points (0-1 scale) when fitting the thresholds")
    parser.add_argument("--risk", type=float, default=0.1,
                        help="the calibrated council answers so that at most this share of answers is wrong "
                             "on validation (default 0.1)")
    parser.add_argument("--write-calibrator", type=Path, help="save the calibrator fitted on validation here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quantize", choices=["none", "fp16", "int8"],
                        help="base weights of the host (default: the council's own, fp16); give another --out, "
                             "so that the kept ballots of each stay apart")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    if args.limit:
        sizes = {k: v if k == "validation" else args.limit for k, v in sizes.items()}
    if args.validation_limit:
        sizes["validation"] = args.validation_limit
    if args.squad is not None and not args.squad.is_file():
        parser.error(f"--squad {args.squad}: no such file")
    args.out.mkdir(parents=True, exist_ok=True)
    kept_path = args.out / ("ballots-quick.jsonl" if args.quick else "ballots.jsonl")
    kept = read_kept(kept_path)

    from council.config import CouncilConfig
    from council.council import Council
    from council.retrieval import DocumentStore
    from council.router import RouterConfig

    t0 = time.perf_counter()
    config = CouncilConfig(threads=args.threads, **({"quantize": args.quantize} if args.quantize else {}))
    # the panel seats every specialist of the council's base, the non-routable reader included
    from specialists.registry import load_catalog
    from council.base_model import same_base

    names = [n for n, s in load_catalog().items() if same_base(s.card.base_model.get("name", ""), config.base_model)
             and (s.card.routing.get("routable", True) or n == "reader")]
    panel_config = replace(config, specialists=names, router=RouterConfig(threshold=-1.0, min_k=len(names),
                                                                          max_k=len(names)))
    panel = Council(panel_config)  # its host holds every adapter; the council's seats are among them
    council = Council(config, store=panel.store, host=panel.host, embedder=panel.router.embedder)
    engine = panel.host.hosts[panel.host.names[0]].engine
    mnt = config.max_new_tokens

    def on(store):
        return (Council(config, store=store, host=panel.host, embedder=panel.router.embedder),
                Council(panel_config, store=store, host=panel.host, embedder=panel.router.embedder))

    def store_of(source) -> DocumentStore:
        store = DocumentStore(embedder=panel.store.embedder)
        if isinstance(source, Path):
            store.add(source, on_error="raise")
        else:
            store.add_documents(source)
        return store

    items, docs = reading_suite("validation", "validation", sizes["validation"])
    validation = text_ballots(items, *on(store_of(docs)), kept, kept_path, label="validation")
    about = {"ballots": str(kept_path.relative_to(ROOT) if kept_path.is_relative_to(ROOT) else kept_path),
             "suite": "validation: the reading data's SQuAD 2.0 validation articles", "base_model": config.base_model,
             "seated": "the default council (`council ask`), peer review on", "risk": args.risk}
    fitted, calibrator = fit_on_validation(validation, config.aggregator, penalty=args.penalty,
                                           max_risk=args.risk, about=about)
    if args.write_calibrator:
        if calibrator is None:
            parser.error("the validation ballots hold no right and wrong answers to fit a calibrator on")
        calibrator.save(args.write_calibrator)
        print(f"wrote {args.write_calibrator}", file=sys.stderr)
    results = {"suites": {}, "curves": {}, "fitted": fitted.to_dict(),
               "calibrator": calibrator.to_dict() if calibrator else None, "panel": names,
               "penalty": args.penalty, "risk": args.risk, "quick": args.quick, "goals": GOALS}
    suites = [*args.suites, *(["squad"] if args.squad else [])]
    for suite in suites:
        if suite in OPTION_SUITES:
            items = pubmedqa_items(sizes[suite]) if suite == "pubmedqa" else truthfulqa_items(sizes[suite])
            ballots = option_ballots(items, council, names, kept, kept_path, label=suite)
            outcomes = option_systems(ballots)
        else:
            if suite == "unseen":
                items, source = reading_suite("test", "unseen", sizes["unseen"])
            else:
                path = halueval_file(args.out) if suite == "halueval" else args.squad
                items, source = squad_file_suite(path, suite, sizes[suite])
            ballots = text_ballots(items, *on(store_of(source)), kept, kept_path, label=suite)
            outcomes = text_systems(ballots, config.aggregator, fitted, calibrator)
        best = best_single({n: metrics(o, ballots) for n, o in outcomes.items() if n.startswith("single:")})
        add_samples(ballots, engine, best, kept_path, max_new_tokens=mnt, seed=args.seed, label=suite)
        outcomes = text_systems(ballots, config.aggregator, fitted, calibrator) if suite not in OPTION_SUITES \
            else option_systems(ballots)
        results["suites"][suite] = score_suite(ballots, outcomes)
        results["curves"][suite] = {
            n: risk_coverage([o.score for o in outcomes[n]], [not judge(o.candidate, b)[1]
                                                             for o, b in zip(outcomes[n], ballots)])
            for n in SHOWN if n in outcomes}
    results["seconds"] = round(time.perf_counter() - t0, 1)
    markdown = table(results)
    print(markdown)
    (args.out / "hallucination.md").write_text(markdown, encoding="utf-8")
    plot(results, args.out)
    if args.json:
        write_json(args.json, results)
    panel.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
