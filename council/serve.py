"""council serve: the council over HTTP, OpenAI-compatible, on Ray Serve.

    client ─► Serve proxy (loopback:8000 unless told) ─► a replica: one Council with its own in-process host
           ─► the request checked at once (bad JSON, empty or overlong question, unknown model: an error reply)
           ─► @serve.batch gathers the concurrent questions of this replica ─► one Council.ask_many
           ─► each request gets its own verdict, as a chat completion with the verdict under "council"

Endpoints: POST /v1/chat/completions (`model` is "council", "base" or a specialist's name), GET /v1/models,
POST /v1/council/ask ({"question": ...}, the verdict as `council ask --json` prints it), GET /healthz.

One Council serves concurrent requests safely because they never reach it concurrently: the batcher runs one
`ask_many` at a time per replica (max_concurrent_batches=1), in a worker thread, while the event loop keeps
accepting, checking and queueing requests. A replica admits at most `max_waiting` requests; the next one gets
429 at once rather than a wait with no end.

From Python, `serve run`-style: `serve.run(council.serve.build(CouncilConfig(...), replicas=2))`, or
`serve run council.serve:app_builder config=council.toml replicas=2`.
"""

import asyncio
import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from council.config import CouncilConfig
from council.council import BASE_VOTER, Council, QuestionError
from council.hosts import LOOPBACK
from council.prompts import ABSTAIN_ANSWER

logger = logging.getLogger(__name__)

COUNCIL_MODEL = "council"  # the `model` that asks the whole council
APP_NAME = "council"
api = FastAPI(title="council", description="A council of LoRA specialists that must agree, or abstain.")


@dataclass(frozen=True)
class ServeSettings:
    """How a replica gathers and admits requests."""

    max_batch_size: int = 8  # questions of one ask_many
    batch_wait_s: float = 0.02  # how long the first question of a batch waits for others
    max_waiting: int = 32  # requests a replica holds (waiting or answered); the next gets 429

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_waiting < 1:
            raise ValueError(f"max_batch_size={self.max_batch_size}, max_waiting={self.max_waiting}: both must be "
                             "at least 1")
        if self.max_waiting < self.max_batch_size:
            raise ValueError(f"max_waiting={self.max_waiting} < max_batch_size={self.max_batch_size}: a replica "
                             "must hold at least one full batch")
        if not self.batch_wait_s >= 0:
            raise ValueError(f"batch_wait_s={self.batch_wait_s!r}: must be 0 seconds or more")


class ApiError(Exception):
    """An error reply the OpenAI way: an HTTP status and a JSON `error` object."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def response(self) -> JSONResponse:
        code = {400: "invalid_request", 404: "model_not_found", 429: "too_many_requests"}.get(self.status)
        return JSONResponse({"error": {"message": self.message, "type": self.kind, "param": self.param,
                                       "code": code}}, status_code=self.status)


def question_of(body: dict) -> str:
    """The question of a chat completion request: the text of its last user message."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages is missing or empty: send at least one {\"role\": \"user\", \"content\": ...}",
                       param="messages")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ApiError(400, "no message has role \"user\": the last user message is the question", param="messages")
    content = users[-1].get("content")
    if isinstance(content, list):  # content parts: the text ones, in order
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(content, str):
        raise ApiError(400, "the last user message has no text content", param="messages")
    return content


async def json_body(request: Request) -> dict:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _replica_grpc_on_loopback() -> None:
    """Ray Serve 2.60 binds each replica's inter-deployment gRPC server to [::]:0, every interface, whatever the
    node's IP. On a loopback-only node (the embedded instance, council.hosts.connect) it must listen on loopback
    like every other Ray server; on a cluster node it is left as Ray made it."""
    import ray
    from ray.serve._private import replica

    if ray.util.get_node_ip_address() != LOOPBACK or getattr(replica.add_port_to_grpc_server, "loopback", False):
        return
    bind = replica.add_port_to_grpc_server

    def on_loopback(server, address: str):
        return bind(server, address.replace("[::]", LOOPBACK))

    on_loopback.loopback = True
    replica.add_port_to_grpc_server = on_loopback


@serve.deployment(name="Council")
@serve.ingress(api)
class CouncilServer:
    """One replica: a whole council (every specialist on one in-process host) behind the HTTP API."""

    def __init__(self, config: dict, settings: dict) -> None:
        _replica_grpc_on_loopback()  # before Serve starts that server, once this constructor returns
        self.settings = ServeSettings(**settings)
        self.council = Council(CouncilConfig.from_dict(config))
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.held = 0  # requests admitted and not yet answered (the event loop is one thread: a plain int)
        self.answer.set_max_batch_size(self.settings.max_batch_size)
        self.answer.set_batch_wait_timeout_s(self.settings.batch_wait_s)
        self.models = self._models()
        logger.info("replica %s ready: %s", self.replica, ", ".join(m["id"] for m in self.models))

    def _models(self) -> list[dict]:
        created = int(time.time())
        base = {"object": "model", "created": created, "owned_by": "council"}
        return [{"id": COUNCIL_MODEL, **base, "description": "the whole council: routed, voted, grounded or "
                                                            "abstaining"},
                {"id": BASE_VOTER, **base, "description": f"the base model alone ({self.council.config.base_model})"},
                *({"id": n, **base, "description": s.card.description} for n, s in self.council.specialists.items())]

    def check_health(self) -> None:
        """Serve's health check: a replica whose host stopped answering is restarted."""
        bad = {n: h for n, h in self.council.host.health().items() if not hasattr(h, "pid")}
        if bad:
            raise RuntimeError(f"hosts not answering: {bad}")

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def answer(self, items: list[tuple[str, str | None]]) -> list:
        """One ask_many for the questions gathered; each caller gets its verdict, or the error of the batch."""
        try:
            verdicts = await asyncio.to_thread(self.council.ask_many, [q for q, _ in items],
                                               seats=[who for _, who in items])
        except Exception as e:  # noqa: BLE001 - handed to each caller, who answers 500 with it
            logger.exception("a batch of %d questions failed", len(items))
            return [e] * len(items)
        return [(v, len(items)) for v in verdicts]

    async def _ask(self, question: str, model: str) -> tuple:
        known = [m["id"] for m in self.models]
        if model not in known:
            raise ApiError(404, f"the model {model!r} does not exist: known models are {', '.join(known)}",
                           param="model")
        try:  # checked here, so that one bad question never fails the batch it would have joined
            question, _ = self.council.check(question)
        except QuestionError as e:
            raise ApiError(400, str(e), param="messages") from None
        if self.held >= self.settings.max_waiting:
            raise ApiError(429, f"this replica already holds {self.held} requests (max_waiting="
                                f"{self.settings.max_waiting}): retry later, or serve with more replicas",
                           kind="rate_limit_error")
        self.held += 1
        try:
            out = await self.answer((question, None if model == COUNCIL_MODEL else model))
        finally:
            self.held -= 1
        if isinstance(out, Exception):
            raise ApiError(500, f"the council failed on this batch: {out}", kind="server_error")
        return out

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> JSONResponse:
        try:
            body = await json_body(request)
            if body.get("stream"):
                raise ApiError(400, "stream=true is not supported: the council answers once all votes are in",
                               param="stream")
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise ApiError(400, f"model is missing: give {COUNCIL_MODEL!r}, {BASE_VOTER!r} or a specialist "
                                    "(GET /v1/models)", param="model")
            verdict, batch = await self._ask(question_of(body), model)
        except ApiError as e:
            return e.response()
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": self.replica,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": ABSTAIN_ANSWER if verdict.abstained
                                     else verdict.answer}}],
            "council": verdict.to_dict(), "batch": batch})

    @api.post("/v1/council/ask")
    async def council_ask(self, request: Request) -> JSONResponse:
        try:
            body = await json_body(request)
            question = body.get("question")
            if not isinstance(question, str):
                raise ApiError(400, "question is missing: send {\"question\": \"...\"}", param="question")
            verdict, _ = await self._ask(question, COUNCIL_MODEL)
        except ApiError as e:
            return e.response()
        return JSONResponse(verdict.to_dict())

    @api.get("/v1/models")
    async def list_models(self) -> JSONResponse:
        return JSONResponse({"object": "list", "data": self.models})

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        """Ready when every host of this replica answers (a replica is routed to only once it has loaded)."""
        health = await asyncio.to_thread(self.council.host.health)
        ready = all(hasattr(h, "pid") for h in health.values())
        return JSONResponse({"status": "ready" if ready else "unavailable", "replica": self.replica,
                             "hosts": {n: h.to_dict() if ready else str(h) for n, h in health.items()}},
                            status_code=200 if ready else 503)


def default_cpus(replicas: int) -> float:
    """CPUs per replica when none are given: the connected Ray cluster's CPUs shared out, at least 1."""
    import ray

    return max(ray.cluster_resources().get("CPU", 1) // replicas, 1)


def build(config: CouncilConfig | None = None, *, replicas: int = 1, cpus_per_replica: float = 1.0,
          settings: ServeSettings | None = None) -> serve.Application:
    """The council as a Serve application: `replicas` copies of the whole council, each with `cpus_per_replica`
    CPUs reserved and as many torch threads, its host in the replica's own process."""
    config = config or CouncilConfig()
    settings = settings or ServeSettings()
    if replicas < 1 or not cpus_per_replica > 0:
        raise ValueError(f"replicas={replicas}, cpus_per_replica={cpus_per_replica}: need at least 1 replica and "
                         "more than 0 CPUs each")
    hosts = {**config.hosts.to_dict(), "mode": "inprocess"}  # the replica is the host: no actor inside an actor
    threads = config.threads or max(int(cpus_per_replica), 1)
    replica_config = CouncilConfig.from_dict({**config.to_dict(), "hosts": hosts, "threads": threads})
    deployment = CouncilServer.options(
        num_replicas=replicas, ray_actor_options={"num_cpus": cpus_per_replica},
        # admitted beyond what a replica holds, so its own 429 (a JSON error) answers first; the proxy's queue
        # is the backstop (503) when every replica is full
        max_ongoing_requests=settings.max_waiting + 1, max_queued_requests=4 * settings.max_waiting * replicas)
    return deployment.bind(replica_config.to_dict(), asdict(settings))


def app_builder(args: dict) -> serve.Application:
    """For `serve run council.serve:app_builder config=council.toml replicas=2 cpus_per_replica=1`."""
    unknown = set(args) - {"config", "replicas", "cpus_per_replica", *ServeSettings.__dataclass_fields__}
    if unknown:
        raise ValueError(f"unknown arguments {sorted(unknown)}: give config, replicas, cpus_per_replica, "
                         f"{', '.join(ServeSettings.__dataclass_fields__)}")
    config = CouncilConfig.from_file(Path(args["config"])) if args.get("config") else CouncilConfig()
    settings = ServeSettings(**{k: type(getattr(ServeSettings, k))(v) for k, v in args.items()
                                if k in ServeSettings.__dataclass_fields__})
    return build(config, replicas=int(args.get("replicas", 1)), cpus_per_replica=float(args.get("cpus_per_replica", 1)),
                 settings=settings)


def start(app: serve.Application, *, host: str = "127.0.0.1", port: int = 8000, route_prefix: str = "/",
          name: str = APP_NAME, timeout_s: float = 900.0) -> str:
    """Start Serve's HTTP proxy on host:port (Ray must be connected), run the app, return its base URL once
    every replica has loaded. An app that is not running within `timeout_s` (a replica that fits no node, a
    failed load) is deleted and raises RuntimeError with Serve's own account of why."""
    serve.start(http_options={"host": host, "port": port})
    # serve.run waits with no deadline: a replica that needs more CPUs than the cluster has would hang it
    serve._run(app, name=name, route_prefix=route_prefix, _blocking=False)
    deadline = time.monotonic() + timeout_s
    while (status := serve.status().applications[name]).status != "RUNNING":
        if status.status == "DEPLOY_FAILED" or time.monotonic() > deadline:
            why = "; ".join(m for m in [status.message, *(d.message for d in status.deployments.values())] if m)
            serve.delete(name)
            raise RuntimeError(f"the Serve app {name!r} did not start ({status.status} after "
                               f"{timeout_s - max(deadline - time.monotonic(), 0):.0f} s): {why or 'no reason given'}")
        time.sleep(0.5)
    return f"http://{host}:{port}{route_prefix.rstrip('/')}"
