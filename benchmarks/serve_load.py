"""Load on `council serve`: C closed-loop clients for T seconds against `Council.ask_many`, in one run.

    ask_many    the same council in this process answers the questions in batches of --batch: its questions
                per second are the ceiling a server on the same CPUs can approach
    serve       the council served on Ray Serve (--replicas, loopback); for each C in --clients, C clients each
                send a chat completion, wait for the reply, send the next, for --seconds: requests per second,
                p50/p95/p99 latency, errors
    kill        (--kill, needs --replicas 2 or more) the load at the largest C again, one replica killed halfway:
                every request must end with a reply or an error status; the failed ones are counted

Goals (#15): at 8 clients the server answers at least 80 % of ask_many's questions per second with no error; with
a replica killed, no request is lost without an error status.

    python benchmarks/serve_load.py --json benchmarks/results/serve_load.json      # full: 1, 2, 4, 8 clients
    python benchmarks/serve_load.py --quick                                        # CI smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_json  # noqa: E402
from benchmarks.performance import COUNCIL_QUESTIONS  # noqa: E402
from council.config import CouncilConfig  # noqa: E402
from council.serve import APP_NAME  # noqa: E402

CLIENT_TIMEOUT_S = 300.0  # a request with no reply by then is lost


def post(url: str, question: str, timeout: float = CLIENT_TIMEOUT_S) -> int:
    """One chat completion; its HTTP status, or 0 when no status came back (refused, reset, timed out)."""
    body = json.dumps({"model": "council", "messages": [{"role": "user", "content": question}]}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(int(q / 100 * len(xs)), len(xs) - 1)]


def load(url: str, questions: list[str], *, clients: int, seconds: float, on_half=None) -> dict:
    """`clients` closed loops for `seconds`; a request started before the end is waited for and counted."""
    records: list[tuple[float, float, int]] = []  # (start, latency, status)
    lock = threading.Lock()
    t0 = time.perf_counter()
    end = t0 + seconds

    def client(i: int) -> None:
        n = i
        while time.perf_counter() < end:
            start = time.perf_counter()
            status = post(url, questions[n % len(questions)])
            with lock:
                records.append((start - t0, time.perf_counter() - start, status))
            n += clients

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    if on_half is not None:
        time.sleep(seconds / 2)
        on_half()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [lat for _, lat, s in records if s == 200]
    statuses: dict[str, int] = {}
    for _, _, s in records:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    return {"clients": clients, "seconds": round(wall, 2), "requests": len(records), "ok": len(ok),
            "failed": len(records) - len(ok), "lost": statuses.get("0", 0), "statuses": statuses,
            "rps": round(len(ok) / wall, 4),
            **{f"p{q}_s": None if not ok else round(percentile(ok, q), 3) for q in (50, 95, 99)},
            "mean_s": round(statistics.mean(ok), 3) if ok else None}


def ask_many_rate(config: CouncilConfig, questions: list[str], batch: int, rounds: int) -> dict:
    """Questions per second of Council.ask_many on this machine, after one warm-up batch."""
    from council.council import Council

    with Council(config) as council:
        council.ask_many(questions[:batch])
        t0 = time.perf_counter()
        for r in range(rounds):
            council.ask_many([questions[(r * batch + j) % len(questions)] for j in range(batch)])
        elapsed = time.perf_counter() - t0
    return {"batch": batch, "rounds": rounds, "seconds": round(elapsed, 2), "qps": round(batch * rounds / elapsed, 4)}


def kill_one_replica() -> str:
    """Kill one replica actor of the council app, as a crash would; Serve starts another."""
    import ray

    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith(f"SERVE_REPLICA::{APP_NAME}#")]
    if not replicas:
        raise RuntimeError("no replica of the council app to kill")
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=False)
    return replicas[0]["name"]


def table(results: dict) -> str:
    ceiling = results["ask_many"]["qps"]
    lines = [f"ask_many: {ceiling:.3f} questions/s (batches of {results['ask_many']['batch']})", "",
             "| run | clients | requests/s | of ask_many | p50 s | p95 s | p99 s | failed | lost |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, runs in (("serve", results["serve"]), ("kill", [results["kill"]] if results.get("kill") else [])):
        for r in runs:
            lines.append(f"| {name} | {r['clients']} | {r['rps']:.3f} | {r['rps'] / ceiling:.0%} | {r['p50_s']} | "
                         f"{r['p95_s']} | {r['p99_s']} | {r['failed']} | {r['lost']} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["serve"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for q in (50, 95, 99):
        ax.plot([r["clients"] for r in runs], [r[f"p{q}_s"] for r in runs], marker="o", label=f"p{q}")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("latency (s)")
    ax.set_title(f"council serve, {results['replicas']} replica(s): latency against concurrency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    from council.cli import above_zero, at_least_one

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 1 and 2 clients for a few seconds")
    parser.add_argument("--config", type=Path, help="a council config file (default: the demo council)")
    parser.add_argument("--clients", type=at_least_one, nargs="+", help="concurrency levels (default 1 2 4 8)")
    parser.add_argument("--seconds", type=above_zero,
                        help="seconds of load per level (default 120, quick 5): several batches at the largest")
    parser.add_argument("--replicas", type=at_least_one, default=1)
    parser.add_argument("--cpus-per-replica", type=above_zero, help="default: the machine's CPUs / replicas")
    parser.add_argument("--batch", type=at_least_one, default=8, help="ask_many batch, and the server's batch size")
    parser.add_argument("--kill", action="store_true", help="then kill a replica halfway through a load run")
    parser.add_argument("--json", type=Path, help="write the figures here (and the table and plot beside it)")
    args = parser.parse_args(argv)
    if args.kill and args.replicas < 2:
        parser.error("--kill needs --replicas 2 or more: with one replica there is nothing left to answer")
    clients = args.clients or ([1, 2] if args.quick else [1, 2, 4, 8])
    seconds = args.seconds or (5.0 if args.quick else 120.0)
    config = CouncilConfig.from_file(args.config) if args.config else CouncilConfig()
    questions = list(COUNCIL_QUESTIONS)

    import ray
    from ray import serve

    from council.hosts import connect
    from council.serve import ServeSettings, build, default_cpus, start

    embedded = connect()
    cpus = args.cpus_per_replica or default_cpus(args.replicas)
    # the ceiling with the CPUs one replica gets, before the server takes them
    threads = max(int(cpus), 1)
    ceiling = ask_many_rate(CouncilConfig.from_dict({**config.to_dict(), "threads": threads}), questions,
                            args.batch, rounds=1 if args.quick else 3)
    print(f"ask_many: {ceiling['qps']:.3f} questions/s", file=sys.stderr)
    results = {"replicas": args.replicas, "cpus_per_replica": cpus, "quick": args.quick, "ask_many": ceiling,
               "serve": [], "kill": None, "goals": {}}
    try:
        url = start(build(config, replicas=args.replicas, cpus_per_replica=cpus,
                          settings=ServeSettings(max_batch_size=args.batch, max_waiting=max(4 * args.batch, 32))))
        post(url, questions[0])  # warm-up
        for c in clients:
            run = load(url, questions, clients=c, seconds=seconds)
            print(f"{c} clients: {run['rps']:.3f} requests/s, p50 {run['p50_s']} s, {run['failed']} failed",
                  file=sys.stderr)
            results["serve"].append(run)
        if args.kill:
            killed = []
            run = load(url, questions, clients=max(clients), seconds=seconds,
                       on_half=lambda: killed.append(kill_one_replica()))
            results["kill"] = {**run, "killed": killed}
            print(f"killed {killed}: {run['failed']} failed, {run['lost']} lost", file=sys.stderr)
    finally:
        serve.shutdown()
        if embedded:
            ray.shutdown()
    at8 = next((r for r in results["serve"] if r["clients"] == 8), None)
    if at8:
        results["goals"]["8_clients_80_percent_of_ask_many"] = {
            "met": at8["rps"] >= 0.8 * ceiling["qps"] and at8["failed"] == 0,
            "ratio": round(at8["rps"] / ceiling["qps"], 3), "failed": at8["failed"]}
    if results["kill"]:
        results["goals"]["no_request_lost_with_a_replica_killed"] = {
            "met": results["kill"]["lost"] == 0, "failed": results["kill"]["failed"],
            "lost": results["kill"]["lost"]}
    markdown = table(results)
    print(markdown)
    if args.json:
        write_json(args.json, results)
        args.json.with_suffix(".md").write_text(markdown, encoding="utf-8")
        plot(results, args.json.with_name(args.json.stem + "-latency.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
