"""Hosts: placement, config, the fan-out in-process; on Ray (marked `ray`), a two-node cluster simulated on
this machine with one host pinned to each node, deadlines, a killed host and a restarted one.

The Ray tests share ONE cluster and ONE council for the module (a Ray start and an actor's first load cost
seconds each), and run in file order: the last one kills a host for good."""

import json
import os
import subprocess
import sys
import time

import pytest

from council.config import ConfigError, CouncilConfig
from council.council import Council
from council.engine import AdapterError, Request
from council.hosts import (AdapterSpec, HostFailure, HostGroup, HostHealth, HostsConfig, HostSpec,
                           check_reachable, place, plan)
from tests.conftest import HashEmbedder, make_store

QUESTION = "When did the Normans conquer England?"


def council_config(tiny_model_dir, catalog, **hosts) -> CouncilConfig:
    """Every specialist votes on every question (k = 3), so each host has rows to answer."""
    return CouncilConfig(base_model=str(tiny_model_dir), catalog=str(catalog), quantize="none", max_new_tokens=6,
                         context_tokens=120, router={"threshold": 0.0, "min_k": 3, "max_k": 3}, hosts=hosts)


@pytest.fixture(scope="module")
def catalog(tiny_catalog):
    return tiny_catalog


@pytest.fixture(scope="module")
def store():
    return make_store()


@pytest.fixture(scope="module")
def template(tiny_model_dir, tiny_adapters):
    return HostSpec(str(tiny_model_dir), tuple(AdapterSpec(n, str(p)) for n, p in tiny_adapters.items()),
                    quantize="none")


# ---------------------------------------------------------------------------------------------- no Ray


def test_placements():
    a, b, c = (AdapterSpec(n, f"/x/{n}") for n in "xyz")
    assert place([a, b, c], "single") == [(a, b, c)]
    assert place([a, b, c], "spread", 2) == [(a, c), (b,)]
    assert place([a, b, c], "spread", 9) == [(a,), (b,), (c,)]  # never an empty host
    assert place([a, b, c], "per_specialist") == [(a,), (b,), (c,)]
    specs = plan(HostSpec("m", (a, b, c)), HostsConfig(placement="spread", n_hosts=2), threads=1)
    assert [(s.name, s.threads, [x.name for x in s.adapters]) for s in specs] == [
        ("host0", 1, ["x", "z"]), ("host1", 1, ["y"])]


@pytest.mark.parametrize("hosts, message", [
    ({"mode": "cloud"}, r"hosts.mode='cloud': must be one of 'inprocess', 'ray', not str"),
    ({"placement": "random"}, r"hosts.placement='random': must be one of 'single', 'spread', 'per_specialist', not str"),
    ({"n_hosts": 2}, r"hosts.n_hosts=2 with placement='single'.*set placement='spread'"),
    ({"n_hosts": 0, "placement": "spread"}, r"hosts.n_hosts=0: must be a whole number of at least 1"),
    ({"num_cpus": 0}, r"hosts.num_cpus=0: must be a number above 0"),
    ({"deadline_s": -1}, r"hosts.deadline_s=-1: must be a number of seconds above 0"),
    ({"restarts": -2}, r"hosts.restarts=-2"),
    ({"resources": {"a": 1}}, r"hosts.resources=\{'a': 1\}: must be a list, each a table, each value a number or none, not dict"),
    ({"hosts": 2}, r"unknown hosts config key\(s\) \['hosts'\]"),
])
def test_hosts_config_errors_name_the_field(hosts, message):
    with pytest.raises(ConfigError, match=message):
        CouncilConfig(hosts=hosts)


def test_hosts_config_round_trip(tmp_path):
    c = CouncilConfig(hosts={"mode": "ray", "placement": "spread", "n_hosts": 2, "num_cpus": 1, "deadline_s": 5.0,
                             "resources": [{"node_a": 1}, {"node_b": 1}]})
    assert isinstance(c.hosts, HostsConfig) and c.hosts.n_hosts == 2
    assert CouncilConfig.from_dict(c.to_dict()) == c
    (tmp_path / "c.toml").write_text('[hosts]\nmode = "ray"\naddress = "10.0.0.1:6379"\nnum_cpus = 2\n')
    assert CouncilConfig.from_file(tmp_path / "c.toml").hosts == HostsConfig(mode="ray", address="10.0.0.1:6379",
                                                                             num_cpus=2)
    assert CouncilConfig().hosts.mode == "inprocess"  # the default: no Ray


def test_spread_hosts_answer_like_one_host(template):
    one = HostGroup.start(template)
    two = HostGroup.start(template, HostsConfig(placement="spread", n_hosts=2))
    assert (one.names, two.names) == (["host0"], ["host0", "host1"])
    assert [two.host_of(n) for n in ("history", "science", "law", None)] == ["host0", "host1", "host0", "host0"]
    requests = [Request.from_prompt("What is force?", a) for a in ("law", "science", None, "history")]
    a, b = one.generate(requests, max_new_tokens=5), two.generate(requests, max_new_tokens=5)
    assert [g.text for g in a] == [g.text for g in b]
    assert {n: h.adapters for n, h in two.health().items()} == {"host0": ["history", "law"], "host1": ["science"]}
    with pytest.raises(AdapterError, match=r"unknown adapter 'poetry'; loaded adapters: history, law, science"):
        two.host_of("poetry")


def test_a_failed_host_is_a_missing_vote_named_in_the_verdict(tiny_model_dir, catalog, store, monkeypatch):
    council = Council(council_config(tiny_model_dir, catalog, placement="spread", n_hosts=2), store=store,
                      embedder=HashEmbedder())
    run = council.host._run_local

    def host1_times_out(requests, by_host, kw):
        out = run(requests, {n: r for n, r in by_host.items() if n != "host1"}, kw)
        return {**out, "host1": HostFailure("host1", "host host1 timed out after 5.0 s")}

    monkeypatch.setattr(council.host, "_run_local", host1_times_out)
    v = council.ask(QUESTION)
    assert v.missing == ["law"]  # the only adapter on host1 (the catalog is sorted: history, law, science)
    failed = [x for x in v.votes if x.error]
    assert [(x.specialist, x.error) for x in failed] == [("law", "host host1 timed out after 5.0 s")]
    assert len(v.votes) == 3 and v.reason != "no_votes"  # the other two answered
    council.close()


def test_unreachable_address_fails_within_seconds():
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=r"cannot reach the Ray cluster at '127.0.0.1:1'.*ray start --head"):
        check_reachable("127.0.0.1:1")
    assert time.monotonic() - t0 < 6


# ---------------------------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine, 1 CPU each, told apart by the custom resources node_a and node_b."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster()
    # wait=False, then one generous wait: a node's own 30 s wait fails on a machine busy with training jobs
    c.add_node(wait=False, num_cpus=1, resources={"node_a": 1}, include_dashboard=False)
    c.add_node(wait=False, num_cpus=1, resources={"node_b": 1})
    c.wait_for_nodes(timeout=300)
    ray.init(address=c.address, logging_level="WARNING", log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def ray_council(cluster, tiny_model_dir, catalog, store):
    """host0 (history, science) pinned to node_a, host1 (law) to node_b."""
    config = council_config(tiny_model_dir, catalog, mode="ray", placement="spread", n_hosts=2, num_cpus=1,
                            resources=[{"node_a": 1}, {"node_b": 1}], deadline_s=60.0, restarts=1)
    council = Council(config, store=store, embedder=HashEmbedder())
    yield council
    council.close()


def _node_with(resource: str) -> str:
    import ray

    return next(n["NodeID"] for n in ray.nodes() if n["Alive"] and resource in n["Resources"])


_DRIVER = """
import json, sys, time
from council.hosts import AdapterSpec, HostGroup, HostSpec, HostsConfig
spec = json.loads(sys.argv[1])
template = HostSpec(spec["base_model"], tuple(AdapterSpec(**a) for a in spec["adapters"]), quantize="none")
group = HostGroup.start(template, HostsConfig(mode="ray", address=sys.argv[2] or None, num_cpus=0.01))
print(json.dumps([h.pid for h in group.health().values()]), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.ray
@pytest.mark.parametrize("joins", [True, False], ids=["cluster", "embedded"])
def test_hosts_stop_within_seconds_after_their_driver_is_killed(cluster, template, joins):
    """A job driver killed with SIGKILL (no close, no atexit) leaves no host holding a model and CPUs, whether it
    joined a cluster or started its own Ray (whose agents take up to a minute more: Ray's, holding no model)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, json.dumps(template.to_dict()),
                               cluster.address if joins else ""], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = json.loads(driver.stdout.readline())
        assert pids and all(_alive(p) for p in pids)
    finally:
        driver.kill()
        driver.wait()
    t0 = time.monotonic()
    while any(_alive(p) for p in pids) and time.monotonic() - t0 < 60:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids), f"host processes {pids} still alive 60 s after their driver died"
    assert time.monotonic() - t0 < 10


@pytest.mark.ray
def test_hosts_on_both_nodes_answer_like_in_process(ray_council, tiny_model_dir, catalog, store):
    health = ray_council.host.health()
    assert all(isinstance(h, HostHealth) for h in health.values())
    assert health["host0"].node == _node_with("node_a") and health["host1"].node == _node_with("node_b")
    assert (health["host0"].adapters, health["host1"].adapters) == (["history", "science"], ["law"])
    assert health["host0"].threads == health["host1"].threads == 1  # torch threads = the host's num_cpus
    v = ray_council.ask(QUESTION)
    assert v.missing == [] and len(v.votes) == 3
    local = Council(council_config(tiny_model_dir, catalog), store=store, embedder=HashEmbedder())
    alone = local.ask(QUESTION)
    assert [(x.specialist, x.answer) for x in v.votes] == [(x.specialist, x.answer) for x in alone.votes]
    assert (v.answer, v.reason) == (alone.answer, alone.reason)


@pytest.mark.ray
def test_a_deadline_that_expires_gives_missing_votes(ray_council):
    group = ray_council.host
    group.deadline_s = 0.001
    try:
        v = ray_council.ask(QUESTION)
    finally:
        group.deadline_s = 60.0
    assert sorted(v.missing) == ["history", "law", "science"]
    assert {x.error for x in v.votes} == {"host host0 timed out after 0.001 s", "host host1 timed out after 0.001 s"}
    assert v.abstained and v.answer is None


@pytest.mark.ray
def test_a_killed_host_restarts_and_reloads_its_adapters(ray_council):
    import ray

    group = ray_council.host
    before = group.health()["host1"]
    for _ in range(20):  # on a loaded machine a health call can miss its deadline: that is not a restart
        if isinstance(before, HostHealth):
            break
        time.sleep(0.5)
        before = group.health()["host1"]
    assert isinstance(before, HostHealth)
    ray.kill(group.hosts["host1"], no_restart=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        after = group.health()["host1"]
        if isinstance(after, HostHealth) and after.pid != before.pid:
            break
        time.sleep(0.5)
    assert isinstance(after, HostHealth) and after.pid != before.pid
    assert after.adapters == ["law"] and after.node == before.node  # still pinned by its resource
    assert ray_council.ask(QUESTION).missing == []


@pytest.mark.ray
def test_a_host_killed_during_a_question_is_named_and_the_quorum_answers(ray_council, monkeypatch):
    import threading

    import ray

    group = ray_council.host
    host1 = group.hosts["host1"]
    # keep host1 busy, so the question's call waits in its queue when the host dies
    long = Request.from_prompt("Tell me everything about the Normans.", "law")
    busy = [host1.generate.remote([long] * 32, max_new_tokens=200) for _ in range(4)]
    waiting, real_wait = threading.Event(), ray.wait

    def wait(*a, **kw):  # the council has sent the question to both hosts and waits for their answers
        waiting.set()
        return real_wait(*a, **kw)

    monkeypatch.setattr(ray, "wait", wait)
    verdicts = []
    asking = threading.Thread(target=lambda: verdicts.append(ray_council.ask(QUESTION)))
    asking.start()
    assert waiting.wait(timeout=60)
    ray.kill(host1, no_restart=True)
    asking.join(timeout=60)
    v = verdicts[0]
    assert v.missing == ["law"]
    (dead,) = [x for x in v.votes if x.error]
    assert dead.specialist == "law" and dead.error.startswith("host host1 died")
    assert sorted(x.specialist for x in v.votes if not x.error) == ["history", "science"]
    assert v.reason != "no_votes"  # aggregated from the two that answered
    assert isinstance(group.health()["host1"], HostFailure)
    with pytest.raises(ray.exceptions.RayActorError):  # the calls queued before it died died with it
        ray.get(busy[-1])
