"""Hosts: each holds ONE engine (a base model and many adapters) and answers a mixed-adapter batch.

`Host` is a plain class, callable and testable in-process; Ray wraps the same class as an actor at the
edge (`ray.remote(Host)`), so the in-process mode of tests and notebooks runs exactly the code of a cluster.
A `HostGroup` is the council's set of hosts and its one fan-out call:

    requests ─► group the rows by the host holding each adapter (the base model's rows: the first host)
             ─► one call per host, all submitted at once (several hosts: the rows go to the object store ONCE)
             ─► ray.wait until every host answered or the deadline passed
             ─► a Generation per row, or a HostFailure ("host host1 timed out after 5.0 s", "... died")
                that the council turns into a missing vote

Placements (`HostsConfig.placement`): "single" = one host with every adapter (the default: k specialists cost
one batched call); "spread" = `n_hosts` hosts with the adapters dealt round-robin; "per_specialist" = one
host per adapter (the literal council). Each Ray host reserves `num_cpus` and runs that many torch threads,
so hosts never oversubscribe the cores (two 2-thread hosts on 2 cores run 5x slower, docs/environment.md).
A host that dies restarts (`restarts` times) and reloads its adapters in `Host.__init__`; the calls it was
running when it died come back as failures, the next ones reach the restarted host.

In-process mode calls the same Host objects one after another in this thread: no Ray, and no deadline (a
call in this thread cannot be abandoned).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from council import strict
from council.engine import AdapterError, Generation, Quantize, Request

HostMode = Literal["inprocess", "ray"]
Placement = Literal["single", "spread", "per_specialist"]
CONNECT_TIMEOUT_S = 5.0  # an unreachable cluster address fails within this
LOOPBACK = "127.0.0.1"  # where an embedded Ray instance listens: nowhere else
START_TIMEOUT_S = 600.0  # every host must load its model and adapters within this


@dataclass(frozen=True)
class AdapterSpec:
    """One adapter a host loads: its name, its PEFT folder and the base fingerprint its card records."""

    name: str
    path: str
    base_fingerprint: str | None = None


@dataclass(frozen=True)
class HostSpec:
    """What one host holds and how it runs: the base model, its adapters, its threads and precision."""

    base_model: str
    adapters: tuple[AdapterSpec, ...] = ()
    threads: int | None = None  # torch threads; on Ray, the host's num_cpus so hosts never oversubscribe cores
    quantize: Quantize = "fp16"
    cache_dir: str | None = None
    name: str = "host0"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HostsConfig:
    """Where the council's hosts run, how many, with what resources, and how long the council waits for them."""

    mode: HostMode = "inprocess"  # inprocess: Host objects in this process (tests, notebooks); ray: actors
    address: str | None = None  # ray: None = $RAY_ADDRESS if set, else an embedded local instance; or "auto", "ip:port"
    placement: Placement = "single"  # single host with every adapter, spread over n_hosts, or one per specialist
    n_hosts: int = 1  # hosts of the "spread" placement
    num_cpus: float | None = None  # CPUs (and torch threads) per Ray host; None = the cluster's CPUs / hosts
    num_gpus: float = 0.0  # GPUs per Ray host
    resources: list[dict[str, float]] | None = None  # custom Ray resources per host (pins hosts to nodes)
    deadline_s: float | None = 120.0  # wait this long for the hosts of one fan-out; None = forever (ray only)
    restarts: int = 2  # times a dead host actor is restarted (-1: always)
    dashboard: bool = False  # start the Ray dashboard with an embedded instance

    def __post_init__(self) -> None:
        strict.check_types(self, prefix="hosts.")
        if self.n_hosts < 1:
            raise ValueError(f"hosts.n_hosts={self.n_hosts!r}: must be a whole number of at least 1")
        if self.n_hosts > 1 and self.placement != "spread":
            raise ValueError(f"hosts.n_hosts={self.n_hosts} with placement={self.placement!r}: n_hosts is read by "
                             "the 'spread' placement only; set placement='spread'")
        if self.num_cpus is not None and not self.num_cpus > 0:
            raise ValueError(f"hosts.num_cpus={self.num_cpus!r}: must be a number above 0, or None")
        if self.num_gpus < 0:
            raise ValueError(f"hosts.num_gpus={self.num_gpus!r}: must be a number of at least 0")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ValueError(f"hosts.deadline_s={self.deadline_s!r}: must be a number of seconds above 0, or None")
        if self.restarts < -1:
            raise ValueError(f"hosts.restarts={self.restarts!r}: must be a whole number >= 0 (or -1: always)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HostsConfig:
        return strict.from_dict(cls, data, what="hosts config")


@dataclass(frozen=True)
class HostHealth:
    name: str
    pid: int
    adapters: list[str] = field(default_factory=list)
    base_fingerprint: str = ""
    node: str = ""  # the Ray node id, or the machine's name in-process
    threads: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class HostFailure:
    """A row a host did not answer: it timed out or died. The council makes it a missing vote."""

    host: str
    error: str

    def to_dict(self) -> dict:
        return asdict(self)


class Host:
    """An engine with its adapters loaded; `generate` answers one mixed-adapter batch."""

    def __init__(self, spec: HostSpec):
        from council import base_model
        from council.engine import Engine

        self.spec = spec
        self.engine = Engine(base_model.load(spec.base_model, cache_dir=spec.cache_dir), threads=spec.threads,
                             quantize=spec.quantize)
        for a in spec.adapters:
            self.engine.load_adapter(a.name, Path(a.path), base_fingerprint=a.base_fingerprint)

    def generate(self, requests: Sequence[Request], **kw) -> list[Generation]:
        """The engine's `generate`: one batched call, a Generation per request."""
        return self.engine.generate(requests, **kw)

    def generate_rows(self, requests: Sequence[Request], rows: Sequence[int], **kw) -> list[Generation]:
        """`generate` on `requests[rows]`: every host reads the same shared list from the object store."""
        return self.engine.generate([requests[i] for i in rows], **kw)

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def health(self) -> HostHealth:
        import torch

        return HostHealth(name=self.spec.name, pid=os.getpid(), adapters=self.engine.adapters,
                          base_fingerprint=self.engine.base.fingerprint, node=_node_id(),
                          threads=torch.get_num_threads())


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - health must answer even when Ray cannot say
        pass
    return socket.gethostname()


# ------------------------------------------------------------------------------------------------ placement


def place(adapters: Sequence[AdapterSpec], placement: Placement, n_hosts: int = 1) -> list[tuple[AdapterSpec, ...]]:
    """The adapters of each host: all on one, dealt round-robin over n_hosts, or one host each."""
    adapters = tuple(adapters)
    if placement == "single" or len(adapters) <= 1:
        return [adapters]
    if placement == "per_specialist":
        return [(a,) for a in adapters]
    n = min(n_hosts, len(adapters))
    return [adapters[i::n] for i in range(n)]


def plan(template: HostSpec, config: HostsConfig, *, threads: int | None = None) -> list[HostSpec]:
    """One HostSpec per host: the template's model and precision, its share of the adapters, its threads."""
    groups = place(template.adapters, config.placement, config.n_hosts)
    return [HostSpec(template.base_model, group, threads if threads is not None else template.threads,
                     template.quantize, template.cache_dir, name=f"host{i}") for i, group in enumerate(groups)]


# ------------------------------------------------------------------------------------------------ Ray


def check_reachable(address: str, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ConnectionError at once when `address` ("ip:port" or "ray://ip:port") does not answer.

    `ray.init` retries an unreachable address for a long time; a plain TCP connect says it in seconds.
    "auto" and other forms are left to Ray."""
    if address.startswith(("http://", "https://")):
        raise ConnectionError(
            f"address {address!r} is a dashboard (job submission) address: to join a cluster give its GCS address "
            f"(ip:6379) or 'auto'; to run there, use "
            f"`ray job submit --address {address} -- python -m council.jobs ...`")
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host or LOOPBACK, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address!r} ({e}): start one with `ray start --head`, check the "
            "address (the GCS port, 6379 by default), or leave the address out to run an embedded Ray instance"
        ) from None


def connect(address: str | None = None, *, dashboard: bool = False) -> bool:
    """Make sure this process is connected to Ray; True when it started an embedded instance (to shut down).

    Already connected: nothing to do. An address (or $RAY_ADDRESS, which `ray job submit` sets): join it.
    Neither: start a quiet local instance on loopback only, without dashboard and without an auth token in the
    home folder."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
        ray.init(address=address, logging_level=logging.WARNING)
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local use: no token written under the home folder
    with _loopback_node():
        ray.init(include_dashboard=dashboard, dashboard_host=LOOPBACK, log_to_driver=False,
                 logging_level=logging.WARNING)
    return True


@contextlib.contextmanager
def _loopback_node():
    """Start Ray with 127.0.0.1 as its node IP, so that every server it opens (GCS, raylet, object manager,
    agents, workers) listens on loopback only (tests/test_security.py checks each port).

    Ray binds its servers to the node IP, and on Linux it replaces a given 127.0.0.1 by the machine's outward IP
    (`services.resolve_ip_for_localhost`) unless its local-only switch is off: the switch is read from the
    environment when ray_constants is imported, and the processes Ray starts inherit the variable."""
    from ray._private import ray_constants

    var, before = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, ray_constants.ENABLE_RAY_CLUSTER
    env = os.environ.get(var)
    os.environ[var], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:  # once started, the node keeps its IP; a later connection to a real cluster must not be local-only
        ray_constants.ENABLE_RAY_CLUSTER = before
        if env is None:
            os.environ.pop(var)
        else:
            os.environ[var] = env


_REMOTE_HOST = None


def _remote_host():
    """`ray.remote(Host)`, made once: the same class, at the edge."""
    global _REMOTE_HOST
    if _REMOTE_HOST is None:
        import ray

        _REMOTE_HOST = ray.remote(Host)
    return _REMOTE_HOST


class _TokenCounter:
    """The base model's tokenizer in the driver, so that packing a context costs no actor call."""

    def __init__(self, base_model_name: str, cache_dir: str | None):
        from transformers import AutoTokenizer

        from council import base_model

        self.tokenizer = AutoTokenizer.from_pretrained(base_model.resolve(base_model_name, cache_dir=cache_dir),
                                                       local_files_only=True)

    def __call__(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


# ------------------------------------------------------------------------------------------------ the group


class HostGroup:
    """The council's hosts, in-process or Ray actors of the same class, and the one fan-out call."""

    def __init__(self, hosts: dict, specs: Sequence[HostSpec], *, mode: HostMode = "inprocess",
                 deadline_s: float | None = None, owns_ray: bool = False, count_tokens=None):
        self.hosts = hosts  # name -> Host (inprocess) or actor handle (ray)
        self.specs = {s.name: s for s in specs}
        self.mode = mode
        self.deadline_s = deadline_s
        self._owns_ray = owns_ray
        self._host_of = {a.name: s.name for s in specs for a in s.adapters}
        self._count_tokens = count_tokens or next(iter(hosts.values())).count_tokens
        self._closed = False

    @classmethod
    def of(cls, host: Host) -> HostGroup:
        """One in-process host as a group."""
        return cls({host.spec.name: host}, [host.spec])

    @classmethod
    def start(cls, template: HostSpec, config: HostsConfig | None = None) -> HostGroup:
        """Build the hosts the config asks for: Host objects here, or Ray actors (connecting to Ray first)."""
        config = config or HostsConfig()
        if config.mode == "inprocess":
            specs = plan(template, config)
            return cls({s.name: Host(s) for s in specs}, specs)
        owns = connect(config.address, dashboard=config.dashboard)
        try:
            return cls._start_actors(template, config, owns)
        except BaseException:
            if owns:
                import ray

                ray.shutdown()
            raise

    @classmethod
    def _start_actors(cls, template: HostSpec, config: HostsConfig, owns: bool) -> HostGroup:
        import ray

        n = len(place(template.adapters, config.placement, config.n_hosts))
        cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
        free_cpus = ray.available_resources().get("CPU", cluster_cpus)  # other actors may hold some
        cpus = config.num_cpus if config.num_cpus is not None else max(free_cpus / n, 0.01)
        if cpus * n > cluster_cpus + 1e-9:
            raise ValueError(f"hosts.num_cpus={cpus:g} x {n} hosts = {cpus * n:g} CPUs, but the Ray cluster has "
                             f"{cluster_cpus:g}: lower hosts.num_cpus or the number of hosts, or add nodes")
        resources = config.resources or [{}] * n
        if len(resources) != n:
            raise ValueError(f"hosts.resources has {len(resources)} entries for {n} hosts: give one dict per host")
        specs = plan(template, config, threads=max(1, int(cpus)))
        actors = {}
        for spec, extra in zip(specs, resources):
            options = dict(num_cpus=cpus, num_gpus=config.num_gpus, max_restarts=config.restarts,
                           max_task_retries=0, resources=extra or None)
            if n > 1 and not extra:
                options["scheduling_strategy"] = "SPREAD"  # hosts on different nodes when there are several
            actors[spec.name] = _remote_host().options(**options).remote(spec)
        group = cls(actors, specs, mode="ray", deadline_s=config.deadline_s, owns_ray=owns,
                    count_tokens=_TokenCounter(template.base_model, template.cache_dir))
        try:
            refs = {name: a.health.remote() for name, a in actors.items()}
            ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=START_TIMEOUT_S)
            late = [name for name, ref in refs.items() if ref not in ready]
            if late:
                raise TimeoutError(f"host(s) {', '.join(late)} did not start within {START_TIMEOUT_S:g} s: the "
                                   "cluster may lack the resources they ask for (hosts.num_cpus, hosts.resources)")
            ray.get(list(refs.values()))  # a host that failed to load raises its error here
        except BaseException:
            group.close()
            raise
        return group

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    def host_of(self, adapter: str | None) -> str:
        """The host that holds `adapter`; the base model's rows (None) go to the first host."""
        if adapter is None:
            return self.names[0]
        if adapter not in self._host_of:
            raise AdapterError(f"unknown adapter {adapter!r}; loaded adapters: {', '.join(self._host_of) or 'none'}")
        return self._host_of[adapter]

    def count_tokens(self, text: str) -> int:
        return self._count_tokens(text)

    def generate(self, requests: Sequence[Request], **kw) -> list[Generation | HostFailure]:
        """Answer every request: one batched call per host holding its adapters, the hosts in parallel.

        A row whose host timed out (past `deadline_s`) or died is a HostFailure, not an exception; any
        other error (a bad request) is raised, as in-process."""
        by_host: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_host.setdefault(self.host_of(r.adapter), []).append(i)
        results: list[Generation | HostFailure | None] = [None] * len(requests)
        outcomes = self._run_local(requests, by_host, kw) if self.mode == "inprocess" else \
            self._run_ray(requests, by_host, kw)
        for name, outcome in outcomes.items():
            for j, i in enumerate(by_host[name]):
                results[i] = outcome if isinstance(outcome, HostFailure) else outcome[j]
        return results

    def _run_local(self, requests, by_host, kw) -> dict:
        return {name: self.hosts[name].generate([requests[i] for i in rows], **kw) for name, rows in by_host.items()}

    def _run_ray(self, requests, by_host, kw) -> dict:
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        if len(by_host) == 1:
            (name, rows), = by_host.items()
            calls = {self.hosts[name].generate.remote([requests[i] for i in rows], **kw): name}
        else:  # the shared prompt goes to the object store once; each host reads its rows from it
            shared = ray.put(list(requests))
            calls = {self.hosts[name].generate_rows.remote(shared, rows, **kw): name for name, rows in by_host.items()}
        deadline = None if self.deadline_s is None else time.monotonic() + self.deadline_s
        outcomes, pending = {}, list(calls)
        while pending:
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            done, pending = ray.wait(pending, num_returns=1, timeout=timeout)
            if not done:
                break
            for ref in done:
                name = calls[ref]
                try:
                    outcomes[name] = ray.get(ref)
                except ActorUnavailableError as e:
                    outcomes[name] = HostFailure(name, f"host {name} is unavailable (restarting?): {_first_line(e)}")
                except RayActorError as e:
                    outcomes[name] = HostFailure(name, f"host {name} died: {_first_line(e)}")
        for ref in pending:
            name = calls[ref]
            outcomes[name] = HostFailure(name, f"host {name} timed out after {self.deadline_s} s")
            try:
                ray.cancel(ref)  # drops it if still queued; a running call on a sync actor runs to its end
            except Exception:  # noqa: BLE001 - cancelling is best effort
                pass
        return outcomes

    def health(self) -> dict[str, HostHealth | HostFailure]:
        """Each host's health (pid, node, adapters, threads), or why it did not answer."""
        if self.mode == "inprocess":
            return {name: h.health() for name, h in self.hosts.items()}
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        refs = {name: a.health.remote() for name, a in self.hosts.items()}
        out = {}
        for name, ref in refs.items():
            try:
                out[name] = ray.get(ref, timeout=self.deadline_s)
            except GetTimeoutError:
                out[name] = HostFailure(name, f"host {name} timed out after {self.deadline_s} s")
            except RayActorError as e:
                out[name] = HostFailure(name, f"host {name} died: {_first_line(e)}")
        return out

    def close(self) -> None:
        """Stop the host actors, and the Ray instance this group started; in-process, drop the hosts."""
        if self._closed:
            return
        self._closed = True
        if self.mode == "ray":
            import ray

            if ray.is_initialized():
                for actor in self.hosts.values():
                    try:
                        ray.kill(actor)
                    except Exception:  # noqa: BLE001 - already dead
                        pass
                if self._owns_ray:
                    ray.shutdown()
        self.hosts = {}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
