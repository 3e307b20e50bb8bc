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
    from specialists.catalog import CATALOG_DIR, RECIPES, build_all

    names = args.only or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        print(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads {args.threads}: must be at least 1")
    out = Path(args.out) if args.out else CATALOG_DIR
    for name, card in build_all(names, out, force=args.force, threads=args.threads, eval_limit=args.eval_limit,
                                address=args.address, use_ray=not args.no_ray):
        if card is None:
            print(f"{name}: already built (use --force to rebuild)", file=sys.stderr)
            continue
        e, o = card.eval, card.eval.get("official", {})
        print(f"{name}: official F1 {o.get('f1', '-')} (base {e['base'].get('official', {}).get('f1', '-')}), "
              f"HasAns F1 {o.get('HasAns_f1', '-')}, NoAns {o.get('NoAns_exact', '-')}, "
              f"built in {card.training['build_seconds'] / 60:.0f} min", flush=True)
    return 0


def _evaluate(args) -> int:
    from council import base_model
    from specialists.catalog import RECIPES, evaluate_test, held_out, recipe_data
    from specialists.registry import CATALOG_DIR, get, load_catalog
    from specialists.evaluate import base_cache_dir

    specialist = get(load_catalog(args.root or CATALOG_DIR), args.name)
    if args.squad:
        return _evaluate_file(args, specialist)
    if specialist.name not in RECIPES:
        raise ValueError(f"{specialist.name}: no recipe in specialists.catalog.RECIPES, so no held-out questions; "
                         f"evaluate scores the catalog's own specialists")
    recipe, split = RECIPES[specialist.name], "+".join(args.splits)
    # the test split alone is the card's own eval: the same questions `build-catalog` samples
    own = tuple(args.splits) == ("test",)
    examples = recipe_data(recipe, eval_limit=args.eval_limit)[1] if own else held_out(recipe, tuple(args.splits))
    base = base_model.load(specialist.card.base_model["name"])
    scores = evaluate_test(recipe, specialist.path, base, examples, split=split, threads=args.threads,
                           base_fingerprint=specialist.card.base_model.get("fingerprint"),
                           base_cache=base_cache_dir())
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


def _evaluate_file(args, specialist) -> int:
    """Score a specialist and its base model on any SQuAD-format file, every question counted as unseen."""
    import json
    import random

    from council import base_model
    from council.metrics import OFFICIAL_KEYS, always_abstain_score
    from specialists.catalog import evaluate_test, recipe_for
    from specialists.data import squad_examples

    out = Path(args.json) if args.json else None
    if out is not None and out.exists() and not _is_our_output(out):
        raise ValueError(f"--json {out}: the file exists and is not an earlier `evaluate --json` output; "
                         "choose another path (council never overwrites a file it did not write)")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: must be at least 1")
    examples = squad_examples(args.squad)
    if args.limit is not None and args.limit < len(examples):
        examples = random.Random(0).sample(examples, args.limit)  # a fixed sample: the same on every run
    card = specialist.card
    base = base_model.load(card.base_model["name"])
    scores = evaluate_test(recipe_for(specialist), specialist.path, base, examples, split=str(args.squad),
                           threads=args.threads, base_fingerprint=card.base_model.get("fingerprint"),
                           threshold=card.eval.get("no_answer", {}).get("threshold"),
                           base_threshold=card.eval.get("base_no_answer", {}).get("threshold"))
    result = {**scores["official"], "base": scores["base"]["official"],
              "always_abstain": always_abstain_score([e.answers for e in examples]),
              "specialist": specialist.name, "squad_file": str(args.squad),
              "no_answer": {"specialist": scores["no_answer"], "base": scores["base_no_answer"]}}
    rows = [("specialist " + specialist.name, result), ("base model", result["base"]),
            ("always abstain", result["always_abstain"])]
    print(f"{specialist.name} on {args.squad} ({len(examples)} questions, official SQuAD 2.0 score)")
    print("| | " + " | ".join(OFFICIAL_KEYS) + " |\n|---|" + "---|" * len(OFFICIAL_KEYS))
    for label, r in rows:
        print(f"| {label} | " + " | ".join(str(r.get(k, "-")) for k in OFFICIAL_KEYS) + " |")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _is_our_output(path: Path) -> bool:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and {"exact", "f1", "total", "base", "specialist"} <= set(data)


def _list(args) -> int:
    from specialists.registry import CATALOG_DIR, load_catalog

    print("| specialist | held-out questions | official F1 (base) | HasAns F1 | NoAns acc | always abstain "
          "| answerable F1 (base) | abstain F1 (base) | train time | build time | base model | description |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in load_catalog(args.root or CATALOG_DIR).values():
        e, b = s.card.eval, s.card.eval.get("base", {})
        o = e.get("official", {})
        # the official score counts an abstention on an unanswerable question as right: abstaining on all
        # scores the unanswerable share
        floor = round(100 * e["n_unanswerable"] / e["n"], 1) if e.get("n") else "-"
        minutes = s.card.training.get("result", {}).get("seconds", 0) / 60
        build = s.card.training.get("build_seconds")
        print(f"| {s.name} | {e.get('split_size', '-')} "
              f"| {o.get('f1', '-')} ({b.get('official', {}).get('f1', '-')}) | {o.get('HasAns_f1', '-')} "
              f"| {o.get('NoAns_exact', '-')} | {floor} "
              f"| {e.get('answerable_f1', '-')} ({b.get('answerable_f1', '-')}) "
              f"| {e.get('abstain_f1', '-')} ({b.get('abstain_f1', '-')}) | {minutes:.0f} min "
              f"| {'-' if build is None else f'{build / 60:.0f} min'} | {s.card.base_model.get('name')} "
              f"| {s.card.description} |")
    return 0


def _mistakes(args) -> int:
    """How often two specialists give the same wrong answer, on the unseen test questions their cards share."""
    import json

    from council.metrics import shared_mistakes
    from specialists import reading
    from specialists.registry import CATALOG_DIR, load_catalog

    gold = {e.id: e.answers for e in reading.read("squad2", "test").examples}
    said = {s.name: s.card.eval["predictions"] for s in load_catalog(args.root or CATALOG_DIR).values()
            if set(s.card.eval.get("predictions", {})) <= set(gold) and s.card.eval.get("predictions")}
    if len(said) < 2:
        raise ValueError("fewer than two specialists have answers to the unseen test articles in their cards: "
                         "build them with this version (`build-catalog`)")
    ids = sorted(set.intersection(*(set(p) for p in said.values())))
    pairs = shared_mistakes({n: [p[i] for i in ids] for n, p in said.items()}, [gold[i] for i in ids])
    print(f"same wrong answers on {len(ids)} unseen test questions (official normalisation; an abstention "
          "counts as an answer)\n| pair | both wrong | same wrong answer | share |\n|---|---|---|---|")
    for pair, r in pairs.items():
        print(f"| {pair.replace('|', ' / ')} | {r['both_wrong']} | {r['same_wrong']} | {r['same_wrong_share']} |")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"questions": len(ids), "pairs": pairs}, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    from council.base_model import BUILTIN_MODEL
    from council.cli import add_version, setup_logging
    from specialists.catalog import EVAL_LIMIT

    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m specialists", description=__doc__)
    add_version(parser)
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
    b.add_argument("--address", help="Ray cluster to build on (default: $RAY_ADDRESS, else an embedded local Ray)")
    b.add_argument("--no-ray", action="store_true", help="build in this process, one after another, with progress")
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
    e.add_argument("--squad", help="score on this SQuAD-format file instead (every question counted as unseen), "
                                   "with the official SQuAD 2.0 score")
    e.add_argument("--limit", type=int, default=None, help="with --squad: a fixed random sample of N questions")
    e.add_argument("--json", help="with --squad: write the official keys (specialist at the top, base model "
                                  "under 'base') to this file")
    e.set_defaults(func=_evaluate)
    ls = sub.add_parser("list", help="the catalog with its figures, as a markdown table")
    ls.add_argument("--root", help="catalog folder")
    ls.set_defaults(func=_list)
    m = sub.add_parser("mistakes", help="how often two specialists give the same wrong answer (from their cards)")
    m.add_argument("--root", help="catalog folder")
    m.add_argument("--json", help="write the pairs' figures to this file")
    m.set_defaults(func=_mistakes)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, KeyError, ValueError) as e:  # unknown specialists, a missing folder, bad data or config
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
