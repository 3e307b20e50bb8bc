"""What Ray costs the council, and what the job gains from hosts, measured in one run on this machine.

    python benchmarks/ray_overhead.py                    # full: 30 rounds of overhead, 16 job questions x 2
    python benchmarks/ray_overhead.py --quick --json benchmarks/results/ray_overhead-quick.json

1. overhead per question: the same council (a tiny random Llama, 3 LoRA adapters, k = 3) in-process and with
   its one host as a Ray actor (an embedded instance; 1 CPU and 1 torch thread on both paths, which other
   jobs on the machine disturb least), asked the same questions alternately. Reported: the median of the
   paired differences (goal: under 10 ms), the medians of each path and their ratio, and the 10th
   percentiles (the least disturbed calls) with their difference. The tiny model keeps generation short, so the
   overhead shows.
2. job throughput: `council.jobs.answer_file` on the real SmolLM2-135M-Instruct with 2 specialists (the
   catalog's when two are built, else random LoRA adapters r=8 on q/v made for the run), k = 2, batches of 4
   questions, 2 in flight, on 1 host of 2 CPUs, on 2 hosts of 1 CPU (the adapters spread, one each) and, as
   a reference, on 1 host of 1 CPU; the full run measures each layout twice, the second round in reverse order.

Absolute times drift about 15 % on a shared 2-core machine (more while other jobs run: the load average is
recorded with the figures); compare the two paths of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from council import base_model  # noqa: E402
from council.config import CouncilConfig  # noqa: E402
from council.council import Council  # noqa: E402
from council.hosts import connect  # noqa: E402
from conftest import HashEmbedder  # noqa: E402  (a model-free embedder: this benchmark times hosts)
from council.jobs import answer_file  # noqa: E402
from council.retrieval import Document, DocumentStore  # noqa: E402
from specialists.card import SpecialistCard  # noqa: E402
from benchmarks.common import random_adapters  # noqa: E402

DOCUMENTS = [
    ("The Normans conquered England in 1066, when William won the battle of Hastings.", "Normans"),
    ("Force equals mass times acceleration: a larger mass needs a larger force to accelerate.", "Force"),
    ("EU law is made by the European Parliament and the Council of the European Union.", "EU law"),
    ("The Scottish Parliament passes laws on devolved matters such as health and education.", "Scotland"),
    ("The immune system protects the body against disease with white blood cells.", "Immunity"),
    ("The oil crisis of 1973 began when producers proclaimed an embargo on oil exports.", "Oil crisis"),
]
QUESTIONS = ["When did the Normans conquer England?", "What is force?", "Who makes EU law?",
             "What does the Scottish Parliament do?", "What protects the body against disease?",
             "When did the oil crisis begin?", "Who won the battle of Hastings?", "What needs a larger force?"]


def make_store() -> DocumentStore:
    store = DocumentStore(embedder=HashEmbedder())
    store.add_documents([Document(text, f"{title}.txt", title) for text, title in DOCUMENTS])
    return store


def make_catalog(root: Path, base: base_model.BaseModel, adapters: dict[str, Path]) -> Path:
    """A catalog folder of specialist cards around the given adapter folders."""
    for name, folder in adapters.items():
        shutil.copytree(folder, root / name)
        SpecialistCard(name=name, domain=name, description=f"The {name} specialist.",
                       base_model={"name": str(base.path), "fingerprint": base.fingerprint}, training={},
                       routing={"examples": QUESTIONS[:2]}, code_version="bench",
                       eval={"answerable_f1": 50.0, "abstain_f1": 50.0}).save(root / name)
    return root


def config(model: str, catalog: Path, k: int, max_new_tokens: int, threads: int | None = None,
           context_tokens: int = 160, **hosts) -> CouncilConfig:
    """k specialists answer every question; `threads` is the in-process host's (a Ray host's = its num_cpus)."""
    return CouncilConfig(base_model=model, catalog=str(catalog), max_new_tokens=max_new_tokens,
                         context_tokens=context_tokens, threads=threads,
                         router={"threshold": -1.0, "min_k": k, "max_k": k}, hosts=hosts)


# ------------------------------------------------------------------------------------------------ overhead


def overhead(tmp: Path, rounds: int) -> dict:
    import ray
    from conftest import build_tiny_model, make_lora

    model = build_tiny_model(tmp / "tiny")
    base = base_model.load(model)
    adapters = {name: make_lora(model, tmp / "lora" / name, seed=i + 1)
                for i, name in enumerate(("history", "science", "law"))}
    catalog = make_catalog(tmp / "tiny-catalog", base, adapters)
    store = make_store()
    local = Council(config(str(model), catalog, 3, 8, threads=1, context_tokens=100), store=store,
                    embedder=HashEmbedder())
    t0 = time.perf_counter()
    remote = Council(config(str(model), catalog, 3, 8, context_tokens=100, mode="ray", num_cpus=1), store=store,
                     embedder=HashEmbedder())
    start_s = time.perf_counter() - t0
    try:
        actor = remote.host.hosts["host0"]
        t0 = time.perf_counter()
        for _ in range(50):
            ray.get(actor.health.remote())
        round_trip_ms = (time.perf_counter() - t0) / 50 * 1000
        local_s, remote_s = [], []
        for q in QUESTIONS[:3]:  # warm both paths
            local.ask(q), remote.ask(q)
        for r in range(rounds):
            for q in QUESTIONS:
                pair = [(local, local_s), (remote, remote_s)]
                for council, times in (pair if r % 2 == 0 else pair[::-1]):  # alternate which goes first
                    t0 = time.perf_counter()
                    council.ask(q)
                    times.append(time.perf_counter() - t0)
        same = all(a == b for a, b in ((local.ask(q).answer, remote.ask(q).answer) for q in QUESTIONS))
    finally:
        remote.close()  # stops the embedded Ray instance it started
        local.close()
    diffs = [(b - a) * 1000 for a, b in zip(local_s, remote_s)]
    med_local, med_remote = statistics.median(local_s) * 1000, statistics.median(remote_s) * 1000
    p10 = lambda xs: statistics.quantiles(xs, n=10)[0] * 1000  # noqa: E731 - the least disturbed calls
    return {"model": "tiny random Llama (hidden 64, 2 layers), 3 adapters, k=3, 8 new tokens",
            "questions": len(local_s), "inprocess_ms": round(med_local, 2), "ray_ms": round(med_remote, 2),
            "overhead_ms": round(statistics.median(diffs), 2), "ratio": round(med_remote / med_local, 3),
            "inprocess_p10_ms": round(p10(local_s), 2), "ray_p10_ms": round(p10(remote_s), 2),
            "overhead_p10_ms": round(p10(remote_s) - p10(local_s), 2),
            "same_answers": same, "empty_actor_call_ms": round(round_trip_ms, 2),
            "ray_start_and_host_load_s": round(start_s, 1)}


# ------------------------------------------------------------------------------------------------ throughput


def throughput(tmp: Path, n_questions: int, max_new_tokens: int, rounds: int) -> dict:
    import ray

    from specialists.registry import CATALOG_DIR, load_catalog

    base = base_model.load(base_model.BUILTIN_MODEL)
    built = [s for s in load_catalog(CATALOG_DIR).values()
             if s.card.base_model.get("fingerprint") == base.fingerprint][:2]
    if len(built) == 2:
        catalog, source = tmp / "real-catalog", "catalog specialists " + ", ".join(s.name for s in built)
        catalog.mkdir()
        for s in built:
            shutil.copytree(s.path, catalog / s.name)
    else:
        source = "random LoRA adapters (r=8, q/v)"
        catalog = make_catalog(tmp / "real-catalog", base, random_adapters(base, tmp / "real-lora", 2))
    del base
    questions = tmp / "questions.jsonl"
    questions.write_text("".join(json.dumps({"id": i, "question": QUESTIONS[i % len(QUESTIONS)]}) + "\n"
                                 for i in range(n_questions)))
    connect()  # the embedded instance, on loopback; this machine has 2 CPUs
    layouts = {"1 host x 2 CPUs": dict(placement="single", num_cpus=2),
               "2 hosts x 1 CPU": dict(placement="spread", n_hosts=2, num_cpus=1),
               "1 host x 1 CPU": dict(placement="single", num_cpus=1)}  # a reference: what the 2nd thread buys
    out = {"model": base_model.BUILTIN_MODEL, "adapters": source, "k": 2, "questions": n_questions,
           "max_new_tokens": max_new_tokens, "batch": 4, "in_flight": 2, "rounds": rounds}
    runs: dict[str, list[float]] = {name: [] for name in layouts}
    try:
        for r in range(rounds):  # later rounds in reverse order, so that a drifting load hurts no layout alone
            for name in (list(layouts) if r % 2 == 0 else list(layouts)[::-1]):
                cfg = config(base_model.BUILTIN_MODEL, catalog, 2, max_new_tokens, mode="ray", deadline_s=600.0,
                             **layouts[name])
                with Council(cfg, store=make_store(), embedder=HashEmbedder()) as council:
                    council.ask_many(QUESTIONS[:2])  # warm every host
                    summary = answer_file(council, questions, tmp / f"{name}-{r}.jsonl", batch_size=4,
                                          in_flight=2, progress=False)
                runs[name].append(summary.per_second)
                print(f"{name}: {summary.per_second:.3f} questions/s ({summary.seconds:.1f} s), load "
                      f"{os.getloadavg()[0]:.1f}", file=sys.stderr)
    finally:
        ray.shutdown()
    for name, values in runs.items():
        out[name] = {"questions_per_s": round(statistics.mean(values), 3), "runs": [round(v, 3) for v in values]}
    a, b = out["1 host x 2 CPUs"]["questions_per_s"], out["2 hosts x 1 CPU"]["questions_per_s"]
    out["two_hosts_over_one"] = round(b / a, 3) if a else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 rounds of overhead, 8 job questions, 1 round")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--skip-throughput", action="store_true", help="only the overhead (no real model)")
    args = parser.parse_args()
    results = {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        tmp = Path(tmp)
        results["overhead"] = overhead(tmp, 10 if args.quick else 30)
        print(json.dumps(results["overhead"]), file=sys.stderr)
        if not args.skip_throughput:
            results["throughput"] = throughput(tmp, 8 if args.quick else 16, 16, 1 if args.quick else 2)
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
