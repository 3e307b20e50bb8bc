"""Which reader recipe reads best: base models and adapted layers compared at a small equal budget.

Each variant is the catalog's `reader` recipe (specialists.catalog.RECIPES) on another base model or another
share of adapted layers, built exactly as `build-catalog` builds a specialist (train, score on the test
articles; with `--validation-limit N`, first fit a no-answer threshold on N questions of the SQuAD 2.0
validation articles) into `--out`. A built variant is kept and not rebuilt, so a stopped run resumes.
Reported per variant: the official SQuAD 2.0 score (with the card's threshold, and plain greedy), HasAns F1,
NoAns accuracy, the base model's beside it, always-abstain, train time.

    .venv/bin/python benchmarks/readers.py --variants smollm2-third gemma-third --steps 150 \\
        --validation-limit 80 --eval-limit 120 --json benchmarks/results/readers.json
    .venv/bin/python benchmarks/readers.py --variants gemma-third gemma-half gemma-all --minutes 8 \\
        --json benchmarks/results/layers.json   # adapted layers at equal training time
    .venv/bin/python benchmarks/readers.py --quick    # 2 steps, 6 questions: the pipeline runs

With `--minutes`, each variant trains for that budget: its steps are the budget over its seconds per step,
measured on a few probe steps first (all layers cost more a step than the top third: the backward pass
runs through every layer), and kept in `<out>/<variant>.steps.json` so that a resumed run trains as many.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_json  # noqa: E402
from council.metrics import always_abstain_score  # noqa: E402
from specialists.catalog import EVAL_LIMIT, VALIDATION_LIMIT  # noqa: E402

# variant -> (base model, layer fraction)
VARIANTS: dict[str, tuple[str, float]] = {
    "smollm2-third": ("SmolLM2-135M-Instruct", 1 / 3),
    "smollm2-half": ("SmolLM2-135M-Instruct", 1 / 2),
    "smollm2-all": ("SmolLM2-135M-Instruct", 1.0),
    "gemma-third": ("gemma-3-270m", 1 / 3),
    "gemma-half": ("gemma-3-270m", 1 / 2),
    "gemma-all": ("gemma-3-270m", 1.0),
}


PROBE_STEPS = 4


def build_variant(name: str, out: Path, *, steps: int, eval_limit: int, validation_limit: int,
                  threads: int | None, minutes: float | None = None) -> dict:
    from specialists.card import SpecialistCard
    from specialists.catalog import RECIPES, build

    base, fraction = VARIANTS[name]
    reader = RECIPES["reader"]
    recipe = replace(reader, name=name, train=replace(reader.train, base_model=base, layer_fraction=fraction))
    if minutes is not None:
        steps = steps_for(recipe, out, minutes, threads)
    recipe = replace(recipe, reading_size=min(reader.reading_size, steps * reader.train.batch_size),
                     train=replace(recipe.train, max_steps=steps))
    if (out / name / "specialist.json").is_file():
        card = SpecialistCard.load(out / name)
    else:
        card = build(recipe, out, threads=threads, eval_limit=eval_limit, validation_limit=validation_limit)
    e = card.eval
    return {"base_model": base, "layer_fraction": round(fraction, 3), "steps": steps,
            "train_seconds": card.training["result"]["seconds"], "build_seconds": card.training["build_seconds"],
            "seconds_per_step": round(card.training["result"]["seconds"] / steps, 2),
            "official": e["official"], "greedy_official": e["no_answer"]["greedy_official"],
            "threshold": e["no_answer"]["threshold"], "base": e["base"]["official"],
            "base_greedy": e["base_no_answer"]["greedy_official"], "n": e["n"]}


def steps_for(recipe, out: Path, minutes: float, threads: int | None) -> int:
    """The steps `recipe` trains in `minutes`, from the seconds per step of a few probe steps (measured once)."""
    import json
    import tempfile

    from specialists.catalog import recipe_data
    from specialists.train import train

    kept = out / f"{recipe.name}.steps.json"
    if kept.is_file():
        return json.loads(kept.read_text())["steps"]
    sample = recipe_data(replace(recipe, reading_size=PROBE_STEPS * recipe.train.batch_size), eval_limit=1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        probe = train(sample, tmp, replace(recipe.train, max_steps=PROBE_STEPS, threads=threads), progress=False)
    per_step = probe.seconds / PROBE_STEPS
    steps = max(1, round(minutes * 60 / per_step))
    out.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps({"steps": steps, "minutes": minutes, "probe_seconds_per_step": round(per_step, 2)}))
    return steps


def table(results: dict) -> str:
    rows = ["| variant | steps | s/step | official F1, card's threshold | official F1, greedy | HasAns F1 (greedy) "
            "| NoAns acc (greedy) | base official F1 (greedy) | base HasAns F1 (greedy) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["variants"].items():
        g, b = r["greedy_official"], r["base_greedy"]
        rows.append(f"| {name} | {r['steps']} | {r['seconds_per_step']} | {r['official']['f1']} | {g['f1']} "
                    f"| {g.get('HasAns_f1', '-')} | {g.get('NoAns_exact', '-')} | {b['f1']} "
                    f"| {b.get('HasAns_f1', '-')} |")
    floor = results["always_abstain"]
    rows.append(f"| always abstain | - | - | {floor['f1']} | {floor['f1']} | 0 | 100 | - | - |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["smollm2-third", "gemma-third"], choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=150, help="optimiser steps of batch 8 per variant")
    parser.add_argument("--minutes", type=float, help="equal training time per variant instead of --steps")
    # the catalog's: the same questions as its cards, and the base model's answers to them are cached
    parser.add_argument("--eval-limit", type=int, default=EVAL_LIMIT, help="test-article questions scored")
    parser.add_argument("--validation-limit", type=int, default=VALIDATION_LIMIT,
                        help="validation questions to fit a no-answer threshold on (0: greedy, the catalog's)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "runs" / "readers"), help="where variants are built")
    parser.add_argument("--json", help="write the results here (and a .md table beside it)")
    parser.add_argument("--quick", action="store_true", help="2 steps, 6 questions each: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.eval_limit, args.validation_limit, args.minutes = 2, 6, 6, None
        args.variants = args.variants[:1]
    from specialists.catalog import unseen_test

    out = Path(args.out) / ("quick" if args.quick else "")
    results = {"variants": {}, "always_abstain": always_abstain_score([e.answers for e in unseen_test(
        args.eval_limit)])}
    for name in args.variants:
        results["variants"][name] = build_variant(name, out, steps=args.steps, eval_limit=args.eval_limit,
                                                  validation_limit=args.validation_limit, threads=args.threads,
                                                  minutes=args.minutes)
        print(table(results), file=sys.stderr, flush=True)
    print(table(results))
    if args.json:
        write_json(Path(args.json), results)
        Path(args.json).with_suffix(".md").write_text(table(results) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
