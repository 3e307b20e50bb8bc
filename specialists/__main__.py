"""python -m specialists: train one specialist, build the catalog, or list it."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path


def _train(args) -> int:
    from specialists.data import document_examples, qa_examples, squad_examples
    from specialists.train import TrainConfig, train

    examples = []
    if args.squad:
        examples += squad_examples(args.squad, titles=args.titles or None, split="train",
                                   context_window=args.context_window)
    if args.qa:
        examples += qa_examples(args.qa, split="train")
    if args.documents:
        examples += document_examples(args.documents)
    config = TrainConfig(base_model=args.base_model, rank=args.rank, alpha=args.alpha, max_steps=args.steps,
                         batch_size=args.batch_size, learning_rate=args.lr, layers=args.layers,
                         target_modules=tuple(args.target_modules), threads=args.threads, seed=args.seed)
    result = train(examples, args.out, config)
    print(f"saved {result.adapter_dir} ({result.steps} steps, {result.seconds:.0f} s, loss {result.final_loss:.3f})")
    return 0


def _build(args) -> int:
    from specialists.catalog import CATALOG_DIR, RECIPES, build

    names = args.only or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        print(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else CATALOG_DIR
    for name in names:
        if (out / name / "specialist.json").is_file() and not args.force:
            print(f"{name}: already built (use --force to rebuild)")
            continue
        card = build(RECIPES[name], out, threads=args.threads, eval_limit=args.eval_limit)
        e = card.eval
        print(f"{name}: answerable F1 {e['answerable_f1']} (base {e['base']['answerable_f1']}), abstain F1 "
              f"{e.get('abstain_f1')} (base {e['base'].get('abstain_f1')}), "
              f"built in {card.training['build_seconds']:.0f} s", flush=True)
    return 0


def _evaluate(args) -> int:
    from council import base_model
    from specialists.catalog import CATALOG_DIR, RECIPES, evaluate_test, get, held_out, load_catalog, recipe_data

    specialist = get(load_catalog(args.root or CATALOG_DIR), args.name)
    if specialist.name not in RECIPES:
        raise ValueError(f"{specialist.name}: no recipe in specialists.catalog.RECIPES, so no held-out questions; "
                         f"evaluate scores the catalog's own specialists")
    recipe, split = RECIPES[specialist.name], "+".join(args.splits)
    # the test split alone is the card's own eval: the same questions `build-catalog` samples
    own = tuple(args.splits) == ("test",)
    examples = recipe_data(recipe, eval_limit=args.eval_limit)[1] if own else held_out(recipe, tuple(args.splits))
    base = base_model.load(specialist.card.base_model["name"])
    scores = evaluate_test(recipe, specialist.path, base, examples, split=split, threads=args.threads,
                           base_fingerprint=specialist.card.base_model.get("fingerprint"))
    b = scores["base"]
    print(f"{specialist.name} on {split} ({scores['n']} questions, {scores['n_answerable']} "
          f"answerable): answerable F1 {scores['answerable_f1']} (base {b['answerable_f1']}), abstain F1 "
          f"{scores.get('abstain_f1')} (base {b.get('abstain_f1')})")
    if args.write:
        held = specialist.card.eval.get("held_out")
        new_eval = ({**scores, **({"held_out": held} if held else {})} if own
                    else {**specialist.card.eval, "held_out": scores})
        replace(specialist.card, eval=new_eval).save(specialist.path)
        print(f"wrote {'eval' if own else 'eval.held_out'} into {specialist.path / 'specialist.json'}")
    return 0


def _list(args) -> int:
    from specialists.catalog import CATALOG_DIR, load_catalog

    print("| specialist | held-out questions | answerable F1 (base) | abstain F1 (base) | train time | description |")
    print("|---|---|---|---|---|---|")
    for s in load_catalog(args.root or CATALOG_DIR).values():
        e, b = s.card.eval, s.card.eval.get("base", {})
        minutes = s.card.training.get("result", {}).get("seconds", 0) / 60
        print(f"| {s.name} | {e.get('split_size', '-')} "
              f"| {e.get('answerable_f1', '-')} ({b.get('answerable_f1', '-')}) "
              f"| {e.get('abstain_f1', '-')} ({b.get('abstain_f1', '-')}) | {minutes:.0f} min | {s.card.description} |")
    return 0


def main(argv=None) -> int:
    from council.base_model import BUILTIN_MODEL
    from specialists.catalog import EVAL_LIMIT

    parser = argparse.ArgumentParser(prog="python -m specialists", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one specialist (a LoRA adapter) from data files")
    t.add_argument("--out", required=True, help="folder for the PEFT adapter")
    t.add_argument("--squad", help="SQuAD 2.0 JSON file (reading comprehension, with unanswerable questions)")
    t.add_argument("--titles", nargs="*", help="only these articles of the SQuAD file")
    t.add_argument("--context-window", type=int, default=2, help="sentences of context kept around the answer")
    t.add_argument("--qa", help="closed-book JSONL: question, answer")
    t.add_argument("--documents", nargs="*", help=".txt/.md files or folders for continued pre-training")
    t.add_argument("--base-model", default=BUILTIN_MODEL)
    t.add_argument("--rank", type=int, default=8)
    t.add_argument("--alpha", type=int, default=16)
    t.add_argument("--steps", type=int, default=100)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--layers", type=int, nargs="*", default=None, help="layer indices to adapt (default: all)")
    t.add_argument("--target-modules", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"])
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_train)
    b = sub.add_parser("build-catalog", help="build (or resume building) the catalog's specialists")
    b.add_argument("--only", nargs="*", help="recipe names (default: all)")
    b.add_argument("--out", help="catalog folder (default: specialists/catalog)")
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--eval-limit", type=int, default=EVAL_LIMIT, help="held-out test questions per SQuAD domain")
    b.add_argument("--force", action="store_true", help="rebuild specialists already built")
    b.set_defaults(func=_build)
    e = sub.add_parser("evaluate", help="score a catalog specialist against the base model on held-out questions")
    e.add_argument("name", help="the specialist")
    e.add_argument("--splits", nargs="+", choices=["validation", "test"], default=["test"],
                   help="test alone (default) is the card's own eval, as build-catalog scores it (a synthetic "
                        "specialist's by question kind); validation exists for SQuAD ones, stored as eval.held_out")
    e.add_argument("--root", help="catalog folder")
    e.add_argument("--threads", type=int, default=None)
    e.add_argument("--eval-limit", type=int, default=EVAL_LIMIT,
                   help="SQuAD test questions sampled, as build-catalog (other splits are scored whole)")
    e.add_argument("--write", action="store_true", help="store the scores in the card")
    e.set_defaults(func=_evaluate)
    ls = sub.add_parser("list", help="the catalog with its figures, as a markdown table")
    ls.add_argument("--root", help="catalog folder")
    ls.set_defaults(func=_list)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError) as e:  # unknown specialists, bad data or config: the message says which
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
