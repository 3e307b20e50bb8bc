"""council: ask a council of LoRA specialists, index documents for it, list its specialists.

  council ask "When did the Normans conquer England?"      # the demo council, readable verdict
  council ask --json "..."                                  # the verdict as one JSON object
  council ask --config council.json "..."                   # your own council
  echo "..." | council ask -                                # the question from stdin
  council index docs/ notes.md --store my-store             # build or extend a document store
  council specialists                                       # the catalog with its figures
  council serve --replicas 2                                # an OpenAI-compatible server on 127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib.metadata import version
from pathlib import Path


def _config(args):
    from council.config import CouncilConfig

    config = CouncilConfig.from_file(args.config) if args.config else CouncilConfig()
    # a flag given is checked like the same value in a file (`--threads 0` is refused, not dropped)
    overrides = {k: v for k, v in (("base_model", args.model), ("store", args.store), ("threads", args.threads),
                                   ("specialists", args.specialists)) if v is not None}
    return CouncilConfig.from_dict({**config.to_dict(), **overrides}) if overrides else config


def printable(text: str) -> str:
    """`text` with control characters escaped (\\x1b, \\n): a question or answer cannot move the terminal."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give names separated by commas, none empty (history,economics)")
    return names


def at_least_one(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: must be at least 1")
    return n


def above_zero(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number") from None
    if not x > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text}: must be above 0")
    return x


def _print_verdict(v) -> None:
    print(f"Q: {printable(v.question)}" + ("  (truncated)" if v.truncated else ""))
    if v.abstained:
        print(f"A: I don't know  (abstained: {v.reason})")
    else:
        print(f"A: {printable(v.answer)}")
    g = "-" if v.grounding is None else f"{v.grounding:.2f}"
    print(f"   confidence {v.confidence:.2f} · agreement {v.agreement:.2f} · grounding {g}")
    print("\nvotes:")
    for vote in v.votes:
        score = v.route.scores.get(vote.specialist)
        print(f"  {vote.specialist:22} {'' if score is None else f'route {score:.2f}':11} "
              f"{printable(repr(vote.answer))}")
    for name in v.missing:
        print(f"  {name:22} (no vote: {next((x.error for x in v.votes if x.specialist == name), 'missing')})")
    if v.route.fallback:
        print(f"  (no specialist fits: {v.route.reason})")
    if v.citations:
        print("\ncited:")
        for c in v.citations:
            print(f"  [{c.id}] {c.title or ''} {c.source} (support {c.support:.2f})")
    print("\ntime: " + ", ".join(f"{k} {s:.2f} s" for k, s in v.timings.items()))


def _ask(args) -> int:
    from council.council import Council, QuestionError, check_question

    config = _config(args)
    question = sys.stdin.read().strip() if args.question == "-" else args.question
    try:  # before loading anything: a bad question fails in a second, not after the models load
        check_question(question, max_chars=config.max_question_chars, overlong=config.overlong)
    except QuestionError as e:
        print(f"council ask: {e}", file=sys.stderr)
        return 2
    with Council(config) as council:
        verdict = council.ask(question)
    print(verdict.to_json() if args.json else "", end="\n" if args.json else "")
    if not args.json:
        _print_verdict(verdict)
    return 0


def _index(args) -> int:
    from council.retrieval import DocumentStore

    store_dir = Path(args.store)
    store = DocumentStore.load(store_dir) if (store_dir / "manifest.json").is_file() else DocumentStore()
    report = store.add(args.paths, on_error="raise" if args.strict else "warn")
    store.save(store_dir)
    print(f"{store_dir}: {report.passages_added} passages added from {report.documents} documents "
          f"({report.duplicates} already there, {len(report.skipped)} skipped); {len(store)} in all")
    return 0


def _specialists(args) -> int:
    from specialists.registry import CATALOG_DIR, load_catalog

    catalog = load_catalog(args.catalog or CATALOG_DIR)
    if args.json:
        print(json.dumps({n: s.card.to_dict() for n, s in catalog.items()}))
        return 0
    print(f"{'specialist':26} {'F1':>6} {'base':>6} {'abstain F1':>10} {'base':>6}  description")
    for name, s in catalog.items():
        e = s.card.eval
        b = e.get("base", {})
        print(f"{name:26} {e.get('answerable_f1', '-'):>6} {b.get('answerable_f1', '-'):>6} "
              f"{e.get('abstain_f1', '-'):>10} {b.get('abstain_f1', '-'):>6}  {s.card.description}")
    return 0


def _serve(args) -> int:
    import signal
    import threading

    from council.hosts import connect
    from council.serve import ServeSettings, build, default_cpus, start

    config = _config(args)
    settings = ServeSettings(max_batch_size=args.max_batch_size, batch_wait_s=args.batch_wait_ms / 1000,
                             max_waiting=args.max_waiting)
    embedded = connect(args.address)  # $RAY_ADDRESS or --address: a cluster; neither: Ray on loopback only
    import ray
    from ray import serve

    try:
        cpus = args.cpus_per_replica or default_cpus(args.replicas)
        have = ray.cluster_resources().get("CPU", 0)
        if embedded and args.replicas * cpus > have:  # a cluster may grow; this machine will not
            raise ValueError(f"{args.replicas} replica(s) of {cpus:g} CPUs need {args.replicas * cpus:g} CPUs; "
                             f"this machine's Ray has {have:g}: lower --replicas or --cpus-per-replica")
        print(f"council serve: loading {args.replicas} replica(s) of {cpus:g} CPUs ...", file=sys.stderr)
        try:
            url = start(build(config, replicas=args.replicas, cpus_per_replica=cpus, settings=settings),
                        host=args.host, port=args.port)
        except RuntimeError as e:  # Serve's reason the app did not start (a replica that fits nowhere, a load)
            print(f"council serve: {e}", file=sys.stderr)
            return 2
        print(f"{url}/v1", flush=True)  # the base URL for an OpenAI client; the only line on stdout:
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # Ray's own later notices (raylet, shutdown) go to stderr
        print(f"council serve: POST {url}/v1/chat/completions, GET {url}/v1/models, POST {url}/v1/council/ask, "
              f"GET {url}/healthz; Ctrl-C stops", file=sys.stderr)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):  # set after Ray's own handlers: Ctrl-C or a kill stops it
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
    finally:
        serve.shutdown()
        if embedded:
            ray.shutdown()
    return 0


def setup_logging() -> None:
    """A CLI's notices and progress go to stderr, so that stdout holds only its result (valid `--json`)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('council')}")


def main(argv: list[str] | None = None) -> int:
    from council.config import ConfigError

    setup_logging()
    parser = argparse.ArgumentParser(prog="council", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="ask the council a question",
                         description="Ask the council (the demo one unless --config) and print its verdict.")
    ask.add_argument("question", help='the question; "-" reads it from stdin')
    ask.add_argument("--config", help="a council config file (JSON or TOML); default: the built-in demo")
    ask.add_argument("--model", help="base model: a local folder, a cached hub id or the built-in name")
    ask.add_argument("--store", help="a document store folder made by `council index`")
    ask.add_argument("--specialists", type=_names,
                     help="seat only these specialists, comma-separated (e.g. history,economics)")
    ask.add_argument("--threads", type=at_least_one, help="torch threads (default: torch's choice)")
    ask.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    ask.set_defaults(func=_ask)
    index = sub.add_parser("index", help="build or extend a document store",
                           description="Ingest .txt, .md, .jsonl and SQuAD .json files or folders into a store.")
    index.add_argument("paths", nargs="+")
    index.add_argument("--store", required=True, help="the store folder (created if missing)")
    index.add_argument("--strict", action="store_true", help="fail on an unreadable document instead of skipping")
    index.set_defaults(func=_index)
    spec = sub.add_parser("specialists", help="list the catalog's specialists with their figures",
                          description="The catalog's specialists: held-out F1 and abstain F1 against the base model.")
    spec.add_argument("--catalog", help="a catalog folder (default: the one in the package)")
    spec.add_argument("--json", action="store_true", help="print the cards as JSON")
    spec.set_defaults(func=_specialists)
    srv = sub.add_parser("serve", help="serve the council over HTTP, OpenAI-compatible (Ray Serve)",
                         description="Serve the council on Ray Serve: POST /v1/chat/completions (model: council, "
                                     "base or a specialist), GET /v1/models, POST /v1/council/ask, GET /healthz. "
                                     "Prints the base URL on stdout and stays up until interrupted.")
    srv.add_argument("--config", help="a council config file (JSON or TOML); default: the built-in demo")
    srv.add_argument("--model", help="base model: a local folder, a cached hub id or the built-in name")
    srv.add_argument("--store", help="a document store folder made by `council index`")
    srv.add_argument("--specialists", type=_names, help="seat only these specialists, comma-separated")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    srv.add_argument("--port", type=at_least_one, default=8000, help="port to listen on (default 8000)")
    srv.add_argument("--replicas", type=at_least_one, default=1, help="copies of the whole council (default 1)")
    srv.add_argument("--cpus-per-replica", type=above_zero,
                     help="CPUs reserved per replica, and its torch threads (default: the cluster's CPUs / replicas)")
    srv.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else an embedded Ray)")
    srv.add_argument("--max-batch-size", type=at_least_one, default=8, help="questions gathered into one batch (default 8)")
    srv.add_argument("--batch-wait-ms", type=float, default=20.0,
                     help="how long a batch waits for more questions (default 20 ms)")
    srv.add_argument("--max-waiting", type=at_least_one, default=32,
                     help="requests a replica holds before answering 429 (default 32)")
    srv.set_defaults(func=_serve, threads=None)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, KeyError, ValueError, ConnectionError) as e:
        print(f"council {args.command}: {e}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------------- jobs


def _jobs_config(args):
    from council.config import CouncilConfig

    config = CouncilConfig.from_file(args.config) if args.config else CouncilConfig()
    hosts = config.hosts.to_dict()
    hosts["mode"] = "inprocess" if args.local else "ray"
    if args.address:
        hosts["address"] = args.address
    if args.hosts:
        hosts["n_hosts"] = args.hosts
        hosts["placement"] = "spread" if args.hosts > 1 else "single"
    if args.placement:
        hosts["placement"] = args.placement
    if args.cpus_per_host is not None:
        hosts["num_cpus"] = args.cpus_per_host
    return CouncilConfig.from_dict({**config.to_dict(), "hosts": hosts})


def _jobs_answer(args) -> int:
    """Exit 0 when every line is answered, 1 when some were skipped (so `ray job submit` reports it)."""
    import os

    from council import jobs
    from council.council import Council, check_question
    from council.hosts import check_reachable

    config = _jobs_config(args)
    jobs.check_paths(args.input, args.output)
    address = config.hosts.address or os.environ.get("RAY_ADDRESS")
    if config.hosts.mode == "ray" and address:
        check_reachable(address)  # fail in seconds, before loading anything
    # before loading anything: refuse a foreign output, and stop when nothing is left to answer
    _, todo, done, skipped = jobs.plan(args.input, args.output, lambda q: check_question(
        q, max_chars=config.max_question_chars, overlong=config.overlong))
    if not todo:
        for s in skipped:
            jobs.logger.warning("council.jobs: %s: skipped %s", args.input, s)
        jobs.logger.warning("council.jobs: nothing left to answer (%d done before, %d skipped)",
                            len(done), len(skipped))
        return 1 if skipped else 0
    in_flight = args.in_flight or (2 if config.hosts.mode == "ray" else 1)
    with Council(config) as council:
        summary = jobs.answer_file(council, args.input, args.output, batch_size=args.batch,
                                   in_flight=in_flight, progress=not args.no_progress)
    print(json.dumps(summary.to_dict()))  # the job's result, on stdout
    jobs.logger.warning("council.jobs: %d answered, %d done before, %d skipped, %.2f questions/s",
                        summary.answered, summary.done_before, len(summary.skipped), summary.per_second)
    return 1 if summary.skipped else 0


def jobs_main(argv: list[str] | None = None) -> int:
    """`python -m council.jobs`: batch answering, the `ray job submit` entrypoint."""
    from council import jobs
    from council.config import ConfigError

    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m council.jobs", description=jobs.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    answer = sub.add_parser("answer", help="answer a JSONL file of questions into a JSONL file of verdicts")
    answer.add_argument("--input", required=True, help="JSONL, one {\"id\": ..., \"question\": ...} a line")
    answer.add_argument("--output", required=True, help="JSONL of verdicts; an existing one is resumed")
    answer.add_argument("--config", help="a council config file (JSON or TOML); default: the demo council")
    answer.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else an embedded instance)")
    answer.add_argument("--hosts", type=at_least_one, help="number of hosts (>1: the adapters spread over them)")
    answer.add_argument("--placement", choices=["single", "spread", "per_specialist"])
    answer.add_argument("--cpus-per-host", type=above_zero, help="CPUs and torch threads of each host")
    answer.add_argument("--batch", type=at_least_one, default=8, help="questions per ask_many call (default 8)")
    answer.add_argument("--in-flight", type=at_least_one, help="batches at once (default 2 on Ray, 1 in-process)")
    answer.add_argument("--local", action="store_true", help="no Ray: one in-process council (tests, debugging)")
    answer.add_argument("--no-progress", action="store_true", help="no progress bar")
    answer.set_defaults(func=_jobs_answer)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, jobs.JobError, ConnectionError, FileNotFoundError, ValueError) as e:
        print(f"council.jobs {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
