"""Performance on the real default model, in one run:

    engines     one request against 3 adapters asked one after another (3 generate calls) and in one
                mixed-adapter batch, closed book, for fp16, int8 and fp32 base weights (random r=8 q/v adapters).
                `batched_ratio` = batched / one request, `sequential_ratio` = 3 in a row / one request.
    council     the real council prompt (a question and its shared context, ~300 tokens by default) answered by
                the catalog's SQuAD specialists, k = 1..5: in a row, batched, batched without the shared-trunk
                prefill, and batched through a Ray host actor; each as a ratio to one specialist alone.
    throughput  questions per second of `Council.ask_many` on a batch of questions (k = 3).
    memory      peak resident memory of a fresh host process with 1, 4 and 16 adapters shaped like the catalog's
                (r=8, attention and MLP of the top 10 layers), after one answer. Goal: 16 under 1.15x of 1.
    first answer  `council ask` in a new process with an empty cache (first run), with the cache filled (warm
                start), and `ask` on a council already loaded.

    python benchmarks/performance.py --json benchmarks/results/performance.json
    python benchmarks/performance.py --quick --json perf-quick.json      # CI smoke

Ratios are what matter: absolute times on a shared 2-core machine drift about 15 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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


COUNCIL_QUESTIONS = ["When did the Normans conquer England?", "What is the main function of the immune system?",
                     "What caused the 1973 oil crisis?", "Who is the Presiding Officer of the Scottish Parliament?",
                     "What does Newton's second law say about force?", "What is a Turing machine?",
                     "Who were the Huguenots?", "What is the European Court of Justice?"]
SQUAD_SPECIALISTS = ["history", "law_government", "science_computing", "medicine_biology", "economics"]


def council_latency(council, *, max_k: int, tokens: int, repeats: int, ray_group=None) -> dict:
    """Time one specialist against k = 1..max_k on the council's own prompt for one question."""
    from council.engine import Request

    engine = council.host.hosts[council.host.names[0]].engine
    question = COUNCIL_QUESTIONS[0]
    messages = council.requests(question, council.router.route(question), council.retrieve(question))[0].messages
    names = SQUAD_SPECIALISTS[:max_k]
    rows = lambda k: [Request(messages, n) for n in names[:k]]  # noqa: E731
    plain = lambda: engine.generate(rows(1), max_new_tokens=tokens)  # noqa: E731
    one = timed(plain, repeats)
    out = {"prompt_tokens": plain()[0].prompt_tokens, "one_s": round(one, 3), "k": {}}
    shared = engine._shared_prefill
    for k in range(1, max_k + 1):
        r = {"sequential": timed(lambda: [engine.generate([x], max_new_tokens=tokens) for x in rows(k)], repeats),
             "batched": timed(lambda: engine.generate(rows(k), max_new_tokens=tokens), repeats)}
        engine._shared_prefill = lambda *a: None  # the same batch, every row prefilled on its own
        try:
            r["batched_no_trunk"] = timed(lambda: engine.generate(rows(k), max_new_tokens=tokens), repeats)
        finally:
            engine._shared_prefill = shared
        if ray_group is not None:
            r["ray_batched"] = timed(lambda: ray_group.generate(rows(k), max_new_tokens=tokens), repeats)
        out["k"][k] = {**{f"{m}_s": round(t, 3) for m, t in r.items()},
                       **{f"{m}_ratio": round(t / one, 3) for m, t in r.items()}}
    return out


def throughput(council, n: int) -> dict:
    questions = (COUNCIL_QUESTIONS * (n // len(COUNCIL_QUESTIONS) + 1))[:n]
    council.ask_many(questions[:1])  # warm-up
    t0 = time.perf_counter()
    verdicts = council.ask_many(questions)
    seconds = time.perf_counter() - t0
    return {"questions": n, "seconds": round(seconds, 2), "questions_per_s": round(n / seconds, 3),
            "rows": sum(len(v.votes) for v in verdicts)}


_MEMORY_PROBE = """
import json, resource, sys, pathlib
from council import base_model
from council.engine import Engine, Request
engine = Engine(base_model.load(sys.argv[1]), threads=1, quantize="fp16")
for p in sorted(d for d in pathlib.Path(sys.argv[2]).iterdir() if d.is_dir())[:int(sys.argv[3])]:
    engine.load_adapter(p.name, p)
engine.generate([Request.from_prompt("What is the capital of France?", engine.adapters[0])], max_new_tokens=8)
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))  # Linux: kB
"""


def memory(model: str, counts: list[int]) -> dict:
    """Peak resident memory (MB) of a fresh host process per adapter count, after one answer."""
    from peft import LoraConfig, get_peft_model

    from council.engine import peft_wrapping
    from specialists.catalog import ATTENTION, MLP, RECIPES

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_obj = base_model.load(model).model
        # the catalog's shape: the top third of the layers
        layers = RECIPES["reader"].train.layer_indices(model_obj.config.num_hidden_layers)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=list(ATTENTION + MLP), layers_to_transform=layers)
        with peft_wrapping():
            peft_model = get_peft_model(model_obj, config, adapter_name="a00")
        for i in range(1, max(counts)):
            peft_model.add_adapter(f"a{i:02d}", config)
        peft_model.save_pretrained(tmp, selected_adapters=[f"a{i:02d}" for i in range(max(counts))])
        for n in counts:
            proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, model, tmp, str(n)], capture_output=True,
                                  text=True, check=True, cwd=Path(__file__).resolve().parents[1])
            out[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"peak_mb": {n: m["peak_mb"] for n, m in out.items()},
            "ratio_last_to_first": round(out[counts[-1]]["peak_mb"] / out[counts[0]]["peak_mb"], 3)}


def first_answer(loaded_council, question: str, *, first_run: bool) -> dict:
    """Wall time to an answer: `council ask` in a new process with an empty cache (first run: model conversion
    and store indexing), in a new process with the cache filled (warm start), and `ask` on a loaded council."""
    def cli(env) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "council.cli", "ask", question, "--json"], check=True,
                       capture_output=True, cwd=Path(__file__).resolve().parents[1], env={**os.environ, **env})
        return round(time.perf_counter() - t0, 2)

    out = {}
    if first_run:
        with tempfile.TemporaryDirectory() as empty:
            out["first_run_s"] = cli({"COUNCIL_CACHE": empty})
    out["warm_start_s"] = cli({})
    t0 = time.perf_counter()
    loaded_council.ask(question)
    out["loaded_ask_s"] = round(time.perf_counter() - t0, 2)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 1 repeat, 16 tokens, default engine only")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--model", default=base_model.GEMMA_MODEL,
                        help="base model (the catalog's specialists it loads are trained on this one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=3, help="council size of the engines section")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray host in the council section")
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
    results.update(council_sections(args))

    print(f"\n| engine | one request (s) | {args.k} in a row (s) | {args.k} batched (s) | sequential ratio "
          "| batched ratio |")
    print("|---|---|---|---|---|---|")
    for q, r in results["engines"].items():
        print(f"| {q} | {r['single_s']} | {r['sequential_s']} | {r['batched_s']} | {r['sequential_ratio']}x "
              f"| {r['batched_ratio']}x |")
    print("\n| council k | in a row | batched | batched, no shared trunk | through Ray |")
    print("|---|---|---|---|---|")
    for k, r in results["council"]["k"].items():
        print(f"| {k} | {r['sequential_ratio']}x | {r['batched_ratio']}x | {r['batched_no_trunk_ratio']}x | "
              f"{str(r.get('ray_batched_ratio', '-')) + 'x'} |")
    print(f"\nthroughput {results['throughput']['questions_per_s']} questions/s; memory (MB) "
          f"{results['memory']['peak_mb']} -> {results['memory']['ratio_last_to_first']}x; first answer "
          f"{results['first_answer']}")
    if args.json:
        write_json(args.json, results)
    return 0


def council_sections(args) -> dict:
    """The council, throughput, memory and first-answer sections (module docstring)."""
    from council.config import CouncilConfig
    from council.council import Council
    from council.hosts import HostGroup, HostsConfig

    tokens, repeats = (16, 1) if args.quick else (32, 3)
    max_k = 3 if args.quick else 5
    config = CouncilConfig(base_model=args.model, threads=args.threads, specialists=SQUAD_SPECIALISTS,
                           max_new_tokens=tokens)
    out = {}
    with Council(config) as council:
        group = None
        if not args.no_ray and not args.quick:
            spec = council.host.specs[council.host.names[0]]
            group = HostGroup.start(spec, HostsConfig(mode="ray", num_cpus=args.threads))
        try:
            out["council"] = council_latency(council, max_k=max_k, tokens=tokens, repeats=repeats, ray_group=group)
        finally:
            if group is not None:
                group.close()
        out["throughput"] = throughput(council, 2 if args.quick else 8)
        out["memory"] = memory(args.model, [1, 4] if args.quick else [1, 4, 16])
        out["first_answer"] = first_answer(council, COUNCIL_QUESTIONS[0], first_run=not args.quick)
    return out


if __name__ == "__main__":
    sys.exit(main())
