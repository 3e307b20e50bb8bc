"""Routing benchmark: are held-out questions sent to the specialist of their domain, and unknown ones nowhere?

Profiles: one per domain of specialists/domains.py, its examples the TRAIN questions of the domain's SQuAD
articles (the real router takes them from the specialist cards) and a one-line description. Thresholds are
fitted on the VALIDATION questions, out-of-domain ones included; everything below is measured on TEST questions.

    top1_accuracy / top3_accuracy   the question's domain scores highest / among the 3 highest. Goal top-3 >= 0.95.
    routed_accuracy                 the domain's specialist is among those chosen (thresholds, max_k applied).
    ood_routed_nowhere              out-of-domain questions (Harvard_University, and TruthfulQA categories no
                                    specialist covers) for which the router chose no specialist.

    .venv/bin/python benchmarks/routing.py [--quick] [--json PATH] [--squad PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from council.router import Profile, Router, RouterConfig  # noqa: E402
from benchmarks.common import write_json  # noqa: E402
from specialists.domains import OUT_OF_DOMAIN_ARTICLES, SQUAD_DOMAINS, domain_of, split_of  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
GOALS = {"top3_accuracy": (">=", 0.95)}

DESCRIPTIONS = {
    "history": "History: the Normans, the Huguenots, imperialism, the French and Indian War and Islamism.",
    "law_government": "Law and government: European Union law, treaties, courts and the Scottish Parliament.",
    "science_computing": "Science and computing: computational complexity theory, algorithms, and force in physics.",
    "medicine_biology": "Medicine and biology: the immune system, immune cells, pathogens and disease.",
    "economics": "Economics: the 1973 oil crisis, oil prices, embargoes, markets and inflation.",
}
# TruthfulQA categories that one of the domains above could claim (a law question, a health question, a
# misconception about science...): left out of the out-of-domain set, which must be clearly nobody's.
TRUTHFULQA_MAYBE_COVERED = {
    "Law", "Politics", "Health", "Nutrition", "Psychology", "Economics", "Finance", "History", "Science",
    "Statistics", "Misconceptions", "Misconceptions: Topical", "Misinformation",
}


def load_questions(squad: Path) -> list[tuple[str, str | None, str]]:
    """(question, domain or None for out of domain, split) for every shared SQuAD and out-of-domain question."""
    rows = []
    for article in json.loads(squad.read_text(encoding="utf-8"))["data"]:
        domain = domain_of(article["title"])
        if domain is None and article["title"] not in OUT_OF_DOMAIN_ARTICLES:
            continue
        rows += [(q["question"], domain, split_of(q["id"])) for p in article["paragraphs"] for q in p["qas"]]
    with open(DATASETS / "truthfulqa" / "TruthfulQA.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["Category"] not in TRUTHFULQA_MAYBE_COVERED:
                rows.append((row["Question"], None, split_of(f"truthfulqa:{row['Question']}")))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="at most 100 example questions per profile")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--squad", type=Path, default=DATASETS / "squad2" / "dev-v2.0.json")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = load_questions(args.squad)
    by_split = {s: [(q, d) for q, d, sp in rows if sp == s] for s in ("train", "validation", "test")}
    profiles = []
    for domain in SQUAD_DOMAINS:
        examples = [q for q, d in by_split["train"] if d == domain]
        profiles.append(Profile(domain, DESCRIPTIONS[domain], examples[:: max(1, len(examples) // 100)] if args.quick
                                else examples))
    t = time.perf_counter()
    router = Router(profiles, config=RouterConfig())
    build_s = time.perf_counter() - t
    fit = router.fit(*zip(*by_split["validation"]))

    test = by_split["test"]
    questions = [q for q, _ in test]
    scores = router.score_matrix(questions)  # (Q, P), profile order = router.names
    t = time.perf_counter()
    choices = router.route_many(questions)
    route_ms = (time.perf_counter() - t) * 1000 / len(questions)
    in_domain = [i for i, (_, d) in enumerate(test) if d is not None]
    ood = [i for i, (_, d) in enumerate(test) if d is None]
    target = np.array([router.names.index(test[i][1]) for i in in_domain])
    ranked = np.argsort(-scores[in_domain], axis=1, kind="stable")
    results = {
        "mode": "quick" if args.quick else "full",
        "profiles": {p.name: len(p.examples) for p in profiles},
        "validation_questions": fit.questions,
        "test_in_domain": len(in_domain),
        "test_out_of_domain": len(ood),
        "top1_accuracy": round(float(np.mean(ranked[:, 0] == target)), 4),
        "top3_accuracy": round(float(np.mean((ranked[:, :3] == target[:, None]).any(axis=1))), 4),
        "routed_accuracy": round(float(np.mean([test[i][1] in choices[i].chosen for i in in_domain])), 4),
        "mean_chosen_in_domain": round(float(np.mean([len(choices[i].chosen) for i in in_domain])), 2),
        "ood_routed_nowhere": round(float(np.mean([choices[i].fallback for i in ood])), 4),
        "fit_accuracy_before": round(fit.accuracy_before, 4),
        "fit_accuracy_after": round(fit.accuracy_after, 4),
        "thresholds": fit.thresholds,
        "router_build_seconds": round(build_s, 1),
        "route_ms_per_question_batched": round(route_ms, 2),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    lines = ["| metric | value | goal |", "|---|---|---|"]
    for key, value in results.items():
        goal = GOALS.get(key)
        mark = f"{goal[0]} {goal[1]} {'met' if value >= goal[1] else 'MISSED'}" if goal else ""
        lines.append(f"| {key} | {value} | {mark} |")
    print("\n".join(lines))
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
