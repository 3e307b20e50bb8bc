"""Performance of the engine on the real default model: one request against a council of 3 adapters,
asked one after another (3 generate calls) and in one mixed-adapter batch (1 call), in one run.

    python benchmarks/performance.py                 # full: 3 repeats, 32 new tokens, fp16, int8 and fp32
    python benchmarks/performance.py --quick --json benchmarks/results/performance-quick.json

Ratios are what matter (absolute times on a shared 2-core machine drift about 15 %):
`batched_ratio` = batched council of 3 / one request, `sequential_ratio` = 3 in a row / one request.
Adapters: the catalog's specialists when built, else random LoRA adapters (r=8, q/v) made for the run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from council import base_model  # noqa: E402
from council.engine import Engine, Request  # noqa: E402
from council.prompts import closed_book_messages  # noqa: E402
from benchmarks.common import random_adapters, write_json  # noqa: E402

# Asks for a long answer so that every row decodes the full token budget: the timings then compare equal work.
QUESTION = "Write a long story about a dragon who lives in a library."


def timed(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(engine: Engine, adapters: list[str], *, tokens: int, repeats: int) -> dict:
    messages = closed_book_messages(QUESTION)
    one = [Request(messages, adapters[0])]
    council = [Request(messages, a) for a in adapters]
    single = timed(lambda: engine.generate(one, max_new_tokens=tokens), repeats)
    sequential = timed(lambda: [engine.generate([r], max_new_tokens=tokens) for r in council], repeats)
    batched = timed(lambda: engine.generate(council, max_new_tokens=tokens), repeats)
    rows = engine.generate(council, max_new_tokens=tokens)
    return {
        "single_s": round(single, 3), "sequential_s": round(sequential, 3), "batched_s": round(batched, 3),
        "batched_ratio": round(batched / single, 3), "sequential_ratio": round(sequential / single, 3),
        "new_tokens": [r.new_tokens for r in rows], "prompt_tokens": rows[0].prompt_tokens,
        "answers": [r.text for r in rows],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 1 repeat, 16 tokens, default engine only")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--model", default=base_model.BUILTIN_MODEL)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=3, help="council size")
    args = parser.parse_args(argv)
    tokens, repeats = (16, 1) if args.quick else (32, 3)
    # the council's default precision first: its ratios are the headline figures
    quantizations = ["fp16"] if args.quick else ["fp16", "int8", "none"]

    results: dict = {"model": args.model, "threads": args.threads, "k": args.k, "new_tokens": tokens,
                     "repeats": repeats, "quick": args.quick, "engines": {}}
    with tempfile.TemporaryDirectory() as tmp:
        base = base_model.load(args.model)
        paths = random_adapters(base, Path(tmp), args.k)
        for q in quantizations:
            engine = Engine(base_model.load(args.model), threads=args.threads, quantize=q)
            for name, path in paths.items():
                engine.load_adapter(name, path)
            results["engines"][q] = measure(engine, list(paths), tokens=tokens, repeats=repeats)
            del engine
    default = results["engines"][quantizations[0]]
    results.update(batched_ratio=default["batched_ratio"], sequential_ratio=default["sequential_ratio"],
                   default_quantize=quantizations[0])

    print(f"\n| engine | one request (s) | {args.k} in a row (s) | {args.k} batched (s) | sequential ratio "
          "| batched ratio |")
    print("|---|---|---|---|---|---|")
    for q, r in results["engines"].items():
        print(f"| {q} | {r['single_s']} | {r['sequential_s']} | {r['batched_s']} | {r['sequential_ratio']}x "
              f"| {r['batched_ratio']}x |")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
