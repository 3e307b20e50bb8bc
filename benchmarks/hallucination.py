"""Does the council hallucinate less than one model, and at what cost in answers?

Every system answers the same questions with the same shared context (retrieved once per question by the
council's own retrieval, or given by the dataset):

    base_closed_book        the base model, no context
    base_rag                the base model with the context
    single:<name>           each specialist with the context; best_single_rag is the one with the best F1
                            (or accuracy) on the suite, chosen after the fact, the strongest single baseline
    self_consistency        best_single_rag sampled n = 3 times (temperature 0.7), majority vote; _n5 with 5
    council_k<k>_<strategy> the council's top-k specialists by route score, aggregated by the strategy, k = 1, 3, 5

Suites: `squad` (the shared SQuAD 2.0 articles' TEST split, or every question of `--squad PATH`, articles the
specialists never saw, indexed into a store of their own), `fiction` (the catalog's synthetic domains: recall,
reversal, two-hop and unanswerable questions over a store of their documents), `pubmedqa` (yes/no/maybe, the
abstract as context) and `truthfulqa` (multiple choice, closed book); in the last two an answer is the option
of highest mean token log-prob, end of turn included. The council's thresholds are fitted per strategy and k
on the shared SQuAD VALIDATION split (`fit_thresholds`, `--penalty`, 1 by default), never on what it is scored
on.

Metrics, per system and suite: `em`, `f1` (0-100, answerable questions, an abstention scores 0; accuracy for
the option suites); `hallucination_rate_unanswerable` (share of unanswerable questions given an answer) and
`hallucination_rate_answerable` (answerable ones given an answer with token F1 < 0.5, or a wrong option);
`abstention_rate`; `selective_accuracy` (right among answered; an answer to an unanswerable question is wrong);
`aurc` (area under the risk-coverage curve of the system's best candidate answer, ranked by its confidence; a
question with no candidate is right only when unanswerable); `calibration_error` (ECE of the confidence in
what the system did, answering or abstaining).

    .venv/bin/python benchmarks/hallucination.py --json benchmarks/results/hallucination.json
    .venv/bin/python benchmarks/hallucination.py --quick            # CI smoke, a few questions a suite
    .venv/bin/python benchmarks/hallucination.py --squad other.json --suites squad --json out.json

Every question's generations are kept in `--out` (ballots.jsonl): a run that stops resumes where it stopped,
and systems are scored from the kept generations.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_json  # noqa: E402
from council.aggregator import AggregatorConfig, LabeledExample, Vote, aggregate, fit_thresholds  # noqa: E402
from council.metrics import (always_abstain_score, aurc, calibration_error, exact_match,  # noqa: E402
                             is_abstention, risk_coverage, squad_v2_score, token_f1)
from council.prompts import ABSTAIN_ANSWER, closed_book_messages, rag_messages  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
SHARED_SQUAD = DATASETS / "squad2" / "dev-v2.0.json"
SUITES = ("squad", "fiction", "pubmedqa", "truthfulqa")
OPTION_SUITES = ("pubmedqa", "truthfulqa")
STRATEGIES = ("grounded", "majority", "weighted")
KS = (1, 3, 5)
SAMPLES, TEMPERATURE = 5, 0.7
CORRECT_F1 = 0.5
FULL = {"squad": 100, "validation": 60, "fiction": 40, "pubmedqa": 40, "truthfulqa": 40}
QUICK = {"squad": 6, "validation": 4, "fiction": 4, "pubmedqa": 2, "truthfulqa": 2}
GOALS = "council_k3 halves best_single_rag's unanswerable hallucination, F1 at most 5 lower, AURC under SC"


@dataclass(frozen=True)
class Item:
    """One question of a suite: gold answers (none when unanswerable) or options with the right one."""

    id: str
    suite: str
    question: str
    golds: tuple[str, ...]
    kind: str = "squad"
    context: tuple[str, ...] | None = None  # given by the dataset; None: retrieved by the council
    options: tuple[str, ...] = ()

    @property
    def answerable(self) -> bool:
        return bool(self.golds)


# ------------------------------------------------------------------------------------------------ suites


def squad_items(path: Path, split: str | None, n: int, seed: int = 0) -> list[Item]:
    """Questions of a SQuAD 2.0 file. The shared file: the specialists' domains, `split` only; any other file:
    every question (its articles are unseen)."""
    from specialists.domains import domain_of, split_of

    shared = path.resolve() == SHARED_SQUAD.resolve()
    items = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        if shared and domain_of(article["title"]) is None:
            continue
        for p in article["paragraphs"]:
            for q in p["qas"]:
                if shared and split_of(q["id"]) != split:
                    continue
                golds = () if q.get("is_impossible") else tuple(dict.fromkeys(a["text"] for a in q["answers"]))
                items.append(Item(q["id"], "squad", q["question"].strip(), golds))
    return _first(items, n, seed)


def _first(items: list, n: int, seed: int = 0) -> list:
    """n items in a seeded shuffled order whose prefixes are stable: a larger n extends a smaller one's."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items[:n]


def fiction_items(n: int) -> tuple[list[Item], list]:
    """Questions of the catalog's fictional domains, n spread over the kinds, and their documents."""
    from specialists.catalog import RECIPES
    from specialists.synthetic import make_domain

    domains = [make_domain(r.domain.removeprefix("fiction_"), seed=r.seed)
               for r in RECIPES.values() if r.source == "synthetic" and r.augmented]
    kinds = ("recall", "reversal", "two_hop", "unanswerable")
    items = [Item(q.id, "fiction", q.question, q.answers, kind=kind)
             for d in domains for kind in kinds for q in d.questions(kind)]
    per_kind = max(1, n // len(kinds))
    chosen = [i for kind in kinds for i in _first([i for i in items if i.kind == kind], per_kind)]
    return chosen, [doc for d in domains for doc in d.documents]


def pubmedqa_items(n: int) -> list[Item]:
    """PubMedQA's official test questions: yes/no/maybe, the abstract (first 250 words) as the context."""
    data = json.loads((DATASETS / "pubmedqa" / "ori_pqal.json").read_text(encoding="utf-8"))
    test = json.loads((DATASETS / "pubmedqa" / "test_ground_truth.json").read_text(encoding="utf-8"))
    items = []
    for pmid, label in test.items():
        row = data[pmid]
        contexts = row["CONTEXTS"] if isinstance(row["CONTEXTS"], list) else ast.literal_eval(row["CONTEXTS"])
        words = " ".join(contexts).split()[:250]
        items.append(Item(pmid, "pubmedqa", row["QUESTION"], (label,), kind="yes_no_maybe",
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
                          kind=row["Category"], context=(), options=tuple(options)))
    return _first(items, n)


# ---------------------------------------------------------------------------------------------- ballots
# A ballot is everything the systems need about one question, computed once: the route scores, the shared
# passages, each voter's greedy answer with its mean log-prob, and samples of the best specialist.


def greedy_ballot(item: Item, council, voters: Sequence[str], max_new_tokens: int) -> dict:
    from council.engine import Request

    route = council.router.route(item.question)
    passages = list(item.context) if item.context is not None else council.retrieve(item.question).texts
    engine = council.host.hosts[council.host.names[0]].engine
    ballot = {"id": item.id, "suite": item.suite, "kind": item.kind, "golds": list(item.golds),
              "options": list(item.options), "route": route.scores, "passages": passages}
    rag = _messages(item.question, passages)
    if item.options:
        requests = [Request(rag, v) for v in [None, *voters]]
        ballot["rows"] = dict(zip(["base_rag", *voters], _choose(engine, requests, item.options)))
        return ballot
    requests = [Request(closed_book_messages(item.question), None), Request(rag, None)]
    requests += [Request(rag, v) for v in voters]
    out = engine.generate(requests, max_new_tokens=max_new_tokens)
    ballot["rows"] = {name: [g.text, g.mean_logprob]
                      for name, g in zip(["base_closed_book", "base_rag", *voters], out)}
    return ballot


def _messages(question: str, passages: Sequence[str]):
    """The RAG prompt, or the closed-book one when there is no context (TruthfulQA)."""
    return rag_messages(question, passages) if passages else closed_book_messages(question)


def _choose(engine, requests, options: Sequence[str]) -> list[list]:
    """Per request: [the option of highest mean log-prob, the log of its softmax share, every option's score]."""
    flat = [(r, o) for r in requests for o in options]
    scores = [sum(lp) / len(lp) for lp in engine.loglikelihood([r for r, _ in flat], [o for _, o in flat])]
    rows = []
    for i in range(len(requests)):
        s = scores[i * len(options):(i + 1) * len(options)]
        best = max(range(len(options)), key=lambda j: s[j])
        rows.append([options[best], -math.log(sum(math.exp(x - s[best]) for x in s)), s])
    return rows


def sample_ballot(ballot: dict, item: Item, council, best: str, max_new_tokens: int, seed: int) -> dict:
    """Add `SAMPLES` temperature samples of the `best` specialist to a ballot."""
    from council.engine import Request

    engine = council.host.hosts[council.host.names[0]].engine
    rag = _messages(item.question, ballot["passages"])
    if item.options:  # sample options from the specialist's own option distribution
        scores = ballot["rows"][best][2]
        rng = random.Random(f"{seed}:{item.id}")
        weights = [math.exp((s - max(scores)) / TEMPERATURE) for s in scores]
        picks = rng.choices(range(len(scores)), weights=weights, k=SAMPLES)
        share = [w / sum(weights) for w in weights]
        ballot["samples"] = [[item.options[j], math.log(share[j])] for j in picks]
    else:
        out = engine.generate([Request(rag, best)] * SAMPLES, max_new_tokens=max_new_tokens,
                              temperature=TEMPERATURE, seed=seed)
        ballot["samples"] = [[g.text, g.mean_logprob] for g in out]
    ballot["samples_of"] = best
    return ballot


# ----------------------------------------------------------------------------------------------- systems
# Pure functions from ballots to outcomes: (answer or None, confidence in what it did, candidate, its score).


@dataclass(frozen=True)
class Outcome:
    answer: str | None  # None: abstained
    confidence: float  # in what it did (answering or abstaining)
    candidate: str | None  # its best answer even when it abstained (risk-coverage ranks these)
    score: float  # the confidence of that candidate


def single(text: str, mean_logprob: float) -> Outcome:
    p = math.exp(min(mean_logprob, 0.0))
    if is_abstention(text):
        return Outcome(None, p, None, 0.0)
    return Outcome(text, p, text, p)


def from_aggregate(agg) -> Outcome:
    """A council or self-consistency outcome: the candidate is the answer cluster of most share * grounding."""
    clusters = [c for c in agg.clusters if not c.abstention]
    support = lambda c: c.share * (1.0 if c.grounding is None else c.grounding)  # noqa: E731
    top = max(clusters, key=support, default=None)
    if not agg.abstained:
        return Outcome(agg.answer, agg.confidence, agg.answer, agg.confidence)
    return Outcome(None, agg.confidence, top.answer if top else None, support(top) if top else 0.0)


def council_votes(ballot: dict, k: int, voters: dict[str, float]) -> list[Vote]:
    """The votes of the k specialists the router scores highest; `voters` maps each to its card's reliability."""
    ranked = sorted(voters, key=lambda v: -ballot["route"].get(v, -1.0))[:k]
    return [Vote(v, ballot["rows"][v][0], route_score=max(ballot["route"].get(v, 0.0), 0.0),
                 reliability=voters[v], mean_logprob=ballot["rows"][v][1]) for v in ranked]


def council_outcome(ballot: dict, k: int, voters: dict[str, float], config: AggregatorConfig) -> Outcome:
    passages = None if ballot["options"] else ballot["passages"]
    return from_aggregate(aggregate(council_votes(ballot, k, voters), passages=passages, config=config))


def sc_outcome(ballot: dict, n: int) -> Outcome:
    votes = [Vote(f"sample{i}", text, mean_logprob=lp) for i, (text, lp) in enumerate(ballot["samples"][:n])]
    config = AggregatorConfig(strategy="majority", min_agreement=0.0, min_grounding=0.0)
    return from_aggregate(aggregate(votes, passages=None, config=config))


# ----------------------------------------------------------------------------------------------- metrics


def judge(answer: str | None, ballot: dict) -> tuple[float, float, bool]:
    """(exact match, F1, right) of one answer (None = abstained) to one ballot's question."""
    golds = ballot["golds"]
    if answer is None:
        return 0.0, 0.0, not golds
    if not golds:
        return 0.0, 0.0, False
    if ballot["options"]:
        right = answer == golds[0]
        return float(right), float(right), right
    f1 = token_f1(answer, golds)
    return exact_match(answer, golds), f1, f1 >= CORRECT_F1


def metrics(outcomes: Sequence[Outcome], ballots: Sequence[dict]) -> dict:
    judged = [judge(o.answer, b) for o, b in zip(outcomes, ballots)]
    answerable = [i for i, b in enumerate(ballots) if b["golds"]]
    unanswerable = [i for i, b in enumerate(ballots) if not b["golds"]]
    answered = [i for i, o in enumerate(outcomes) if o.answer is not None]
    candidate_errors = [not judge(o.candidate, b)[2] for o, b in zip(outcomes, ballots)]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    # the field's standard score beside ours (SQuAD 2.0's script: all questions, an abstention is the
    # no-answer); for a multiple-choice suite it is the share right, abstentions on answerable ones wrong
    official = squad_v2_score([ABSTAIN_ANSWER if o.answer is None else o.answer for o in outcomes],
                              [b["golds"] for b in ballots])
    return {
        "n": len(ballots), "n_unanswerable": len(unanswerable),
        "official_f1": official["f1"], "official_exact": official["exact"],
        "em": round(100 * mean([judged[i][0] for i in answerable]), 2) if answerable else None,
        "f1": round(100 * mean([judged[i][1] for i in answerable]), 2) if answerable else None,
        "hallucination_rate_unanswerable": _round(mean([outcomes[i].answer is not None for i in unanswerable])),
        "hallucination_rate_answerable": _round(mean([outcomes[i].answer is not None and not judged[i][2]
                                                      for i in answerable])),
        "abstention_rate": _round(1 - len(answered) / len(ballots)),
        "selective_accuracy": _round(mean([judged[i][2] for i in answered])),
        "aurc": _round(aurc([o.score for o in outcomes], candidate_errors)),
        "calibration_error": _round(calibration_error([o.confidence for o in outcomes], [j[2] for j in judged])),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def systems(ballots: list[dict], voters: dict[str, float], best: str, fitted: dict[str, AggregatorConfig]) -> dict:
    """Every system's outcomes on a suite's ballots."""
    first = ballots[0]["rows"]
    out = {name: [single(*b["rows"][name][:2]) for b in ballots]
           for name in ("base_closed_book", "base_rag") if name in first}
    for v in voters:
        out[f"single:{v}"] = [single(*b["rows"][v][:2]) for b in ballots]
    out["best_single_rag"] = out[f"single:{best}"]
    out["self_consistency"] = [sc_outcome(b, 3) for b in ballots]
    out["self_consistency_n5"] = [sc_outcome(b, 5) for b in ballots]
    for k in KS:
        for strategy in STRATEGIES:
            name = f"council_k{k}_{strategy}"
            config = fitted.get(name, AggregatorConfig(strategy=strategy))
            out[name] = [council_outcome(b, k, voters, config) for b in ballots]
            if strategy == "grounded":
                out[f"council_k{k}"] = out[name]
    return out


def fit(ballots: list[dict], voters: dict[str, float], penalty: float = 1.0) -> dict[str, AggregatorConfig]:
    """Thresholds of every council (k, strategy), fitted on validation ballots (objective: mean F1 minus
    `penalty` times the hallucination rate)."""
    fitted = {}
    for k in KS:
        for strategy in STRATEGIES:
            examples = [LabeledExample(council_votes(b, k, voters), b["passages"], b["golds"], bool(b["golds"]))
                        for b in ballots]
            fitted[f"council_k{k}_{strategy}"] = fit_thresholds(examples, config=AggregatorConfig(strategy=strategy),
                                                                penalty=penalty)
    return fitted


# ------------------------------------------------------------------------------------------------- runs


def collect(items: list[Item], council, voters: Sequence[str], store: Path, *, max_new_tokens: int, seed: int,
            label: str) -> list[dict]:
    """Ballots of every item, from `store` when already there; samples of the suite's best specialist."""
    from tqdm.auto import tqdm

    kept = {}
    if store.is_file():
        for line in store.read_text(encoding="utf-8").splitlines():
            b = json.loads(line)
            kept[(b["suite"], b["id"])] = b
    with open(store, "a", encoding="utf-8") as f:
        todo = [i for i in items if (i.suite, i.id) not in kept]
        for item in tqdm(todo, desc=f"{label}: answering", disable=not todo):
            kept[(item.suite, item.id)] = b = greedy_ballot(item, council, voters, max_new_tokens)
            f.write(json.dumps(b) + "\n")
            f.flush()
    ballots = [kept[(i.suite, i.id)] for i in items]
    best = best_single(ballots, voters)
    by_id = {i.id: i for i in items}
    with open(store, "a", encoding="utf-8") as f:
        todo = [b for b in ballots if b.get("samples_of") != best]
        for b in tqdm(todo, desc=f"{label}: sampling {best}", disable=not todo):
            sample_ballot(b, by_id[b["id"]], council, best, max_new_tokens, seed)
            f.write(json.dumps(b) + "\n")  # a later line for the same question replaces the earlier one
            f.flush()
    return ballots


def best_single(ballots: list[dict], voters: Sequence[str]) -> str:
    return max(voters, key=lambda v: (metrics([single(*b["rows"][v][:2]) for b in ballots], ballots)["f1"] or 0,
                                      v))


def table(results: dict) -> str:
    cols = ("official_f1", "f1", "em", "hallucination_rate_unanswerable", "hallucination_rate_answerable", "abstention_rate",
            "selective_accuracy", "aurc", "calibration_error")
    lines = []
    for suite, r in results["suites"].items():
        floor = r.get("always_abstain", {}).get("f1", "-")
        lines += [f"\n**{suite}** ({r['n']} questions, {r['n_unanswerable']} unanswerable; best single: "
                  f"{r['best_single']}; always abstaining: official F1 {floor})\n", "| system | " + " | ".join(cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for name, m in r["systems"].items():
            if name.startswith("single:") or name in [f"council_k{k}" for k in KS]:
                continue
            lines.append(f"| {name} | " + " | ".join("-" if m[c] is None else f"{m[c]:g}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = [s for s in results["suites"] if s in results["curves"]]
    fig, axes = plt.subplots(1, len(suites), figsize=(5 * len(suites), 4), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        for name, (coverage, risk) in results["curves"][suite].items():
            ax.plot(coverage, risk, label=f"{name} (AURC {results['suites'][suite]['systems'][name]['aurc']:.3f})")
        ax.set(title=suite, xlabel="coverage", ylabel="risk (wrong among answered)", ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke: a few questions a suite")
    parser.add_argument("--suites", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--squad", type=Path, default=SHARED_SQUAD,
                        help="a SQuAD 2.0 file; articles other than the shared ones are routed and indexed as unseen")
    parser.add_argument("--limit", type=int, help="questions per suite (default: 100 SQuAD, 40 each of the "
                                                  "others; the 60 validation questions stay)")
    parser.add_argument("--json", type=Path, help="write every system's metrics here")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "hallucination",
                        help="folder for the kept generations (ballots.jsonl), the table and the plot")
    parser.add_argument("--penalty", type=float, default=1.0,
                        help="cost of a hallucination in F1 points (0-1 scale) when fitting the thresholds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    if args.limit:  # the validation questions that fit the thresholds stay as they are
        sizes = {k: v if k == "validation" else args.limit for k, v in sizes.items()}
    if not args.squad.is_file():
        parser.error(f"--squad {args.squad}: no such file")
    args.out.mkdir(parents=True, exist_ok=True)
    store_file = args.out / ("ballots-quick.jsonl" if args.quick else "ballots.jsonl")

    from council.config import CouncilConfig
    from council.council import Council
    from council.retrieval import Document, DocumentStore

    t0 = time.perf_counter()
    config = CouncilConfig(threads=args.threads)
    council = Council(config)
    voters = {n: s.card.reliability for n, s in council.specialists.items()}
    mnt = config.max_new_tokens

    def with_store(store):
        return Council(config, store=store, host=council.host.hosts[council.host.names[0]],
                       embedder=council.router.embedder)

    validation = collect(squad_items(SHARED_SQUAD, "validation", sizes["validation"]), council, voters,
                         store_file, max_new_tokens=mnt, seed=args.seed, label="validation")
    fitted = fit(validation, voters, args.penalty)
    results = {"suites": {}, "curves": {}, "fitted": {k: c.to_dict() for k, c in fitted.items()},
               "voters": list(voters), "penalty": args.penalty, "quick": args.quick, "squad_file": str(args.squad),
               "goals": GOALS}
    for suite in args.suites:
        target = council
        if suite == "squad":
            unseen = args.squad.resolve() != SHARED_SQUAD.resolve()
            items = squad_items(args.squad, None if unseen else "test", sizes["squad"])
            if unseen:
                store = DocumentStore(embedder=council.store.embedder)
                store.add(args.squad, on_error="raise")
                target = with_store(store)
        elif suite == "fiction":
            items, docs = fiction_items(sizes["fiction"])
            store = DocumentStore(embedder=council.store.embedder)
            store.add_documents([Document(d.text, f"synthetic:{d.id}", d.title) for d in docs])
            target = with_store(store)
        else:
            items = pubmedqa_items(sizes[suite]) if suite == "pubmedqa" else truthfulqa_items(sizes[suite])
        ballots = collect(items, target, voters, store_file, max_new_tokens=mnt, seed=args.seed, label=suite)
        best = ballots[0]["samples_of"]
        outcomes = systems(ballots, voters, best, fitted)
        scored = {name: metrics(o, ballots) for name, o in outcomes.items()}
        results["suites"][suite] = {"n": len(ballots), "n_unanswerable": sum(not b["golds"] for b in ballots),
                                    "best_single": best, "systems": scored,
                                    "always_abstain": always_abstain_score([b["golds"] for b in ballots])}
        shown = ("best_single_rag", "self_consistency", "council_k1", "council_k3", "council_k5")
        results["curves"][suite] = {
            name: risk_coverage([o.score for o in outcomes[name]],
                                [not judge(o.candidate, b)[2] for o, b in zip(outcomes[name], ballots)])
            for name in shown}
    results["seconds"] = round(time.perf_counter() - t0, 1)
    first = next(iter(results["suites"].values()), None)
    results["systems"] = first["systems"] if first else {}  # the first suite's (SQuAD's) systems, at the top
    markdown = table(results)
    print(markdown)
    (args.out / "hallucination.md").write_text(markdown, encoding="utf-8")
    plot(results, args.out / "risk_coverage.png")
    if args.json:
        write_json(args.json, results)
    council.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
