"""The `council` command line."""

from __future__ import annotations

import argparse
import json
import sys


def _ask(args: argparse.Namespace) -> int:
    from council import base_model
    from council.engine import Engine, Request
    from council.prompts import closed_book_messages

    question = args.question.strip()
    if not question:
        print("council ask: the question is empty", file=sys.stderr)
        return 2
    engine = Engine(base_model.load(args.model), threads=args.threads)
    g = engine.generate([Request(closed_book_messages(question))], max_new_tokens=args.max_new_tokens)[0]
    if args.json:
        print(json.dumps({"question": question, "model": args.model, **g.to_dict()}))
    else:
        print(f"Q: {question}\nA: {g.text}\n({args.model}, {g.new_tokens} tokens in {g.seconds:.2f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from council.base_model import BUILTIN_MODEL

    parser = argparse.ArgumentParser(prog="council", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="ask a question", description="Ask a question and print the answer.")
    ask.add_argument("question")
    ask.add_argument("--model", default=BUILTIN_MODEL, help="base model: a local folder, a cached hub id "
                     f"or the built-in {BUILTIN_MODEL!r} (default)")
    ask.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ask.add_argument("--max-new-tokens", type=int, default=48)
    ask.add_argument("--json", action="store_true", help="print the result as one JSON object")
    ask.set_defaults(func=_ask)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
