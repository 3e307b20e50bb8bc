"""Write HaluEval's QA samples as a SQuAD 2.0 file of articles no specialist has seen, for
`hallucination.py --squad`.

Each HaluEval item has a short `knowledge` text, a `question` and its `right_answer`. Items whose answer occurs
in their knowledge become answerable questions on that paragraph. Every other `--unanswerable-every`-th of those
is made unanswerable instead: its own knowledge is left out of the file, and the question is attached to
another item's paragraph (SQuAD 2.0's `is_impossible`), so no passage of the file answers it.

    .venv/bin/python benchmarks/halueval_squad.py --out runs/halueval-squad.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def convert(path: Path, *, unanswerable_every: int = 2) -> dict:
    """A SQuAD 2.0 object (one article per item kept as a paragraph) from HaluEval QA JSON lines."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    usable = [r for r in rows if r["right_answer"] and r["right_answer"] in r["knowledge"]]
    answerable = [r for i, r in enumerate(usable) if i % unanswerable_every]
    dropped = [r for i, r in enumerate(usable) if not i % unanswerable_every]
    articles = []
    for i, r in enumerate(answerable):
        qas = [{"id": f"halueval-{i}", "question": r["question"], "is_impossible": False,
                "answers": [{"text": r["right_answer"], "answer_start": r["knowledge"].index(r["right_answer"])}]}]
        articles.append({"title": f"HaluEval_{i}", "paragraphs": [{"context": r["knowledge"], "qas": qas}]})
    for j, r in enumerate(dropped):
        host = articles[j % len(articles)]["paragraphs"][0]
        host["qas"].append({"id": f"halueval-u{j}", "question": r["question"], "is_impossible": True,
                            "answers": [], "plausible_answers": []})
    return {"version": "v2.0", "source": f"HaluEval QA samples ({path.name}), MIT licence", "data": articles}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=DATASETS / "halueval_qa" / "qa_one-turn_data.json")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--unanswerable-every", type=int, default=2, help="every n-th usable item is unanswerable")
    args = parser.parse_args(argv)
    squad = convert(args.input, unanswerable_every=args.unanswerable_every)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    n = sum(len(p["qas"]) for a in squad["data"] for p in a["paragraphs"])
    print(f"wrote {args.out}: {len(squad['data'])} articles, {n} questions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
