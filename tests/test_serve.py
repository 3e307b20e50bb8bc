"""`council serve` on loopback, called with the openai client as its users do: a served council of the tiny test
models with two replicas, a strict one that fills up, and once the real default council."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from council.config import CouncilConfig
from council.prompts import ABSTAIN_ANSWER
from tests.test_security import _loopback

openai = pytest.importorskip("openai")
psutil = pytest.importorskip("psutil")
pytestmark = pytest.mark.ray

QUESTION = "When did the Normans conquer England?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store_folder(tmp_path_factory):
    """A saved two-passage store (replicas load it from disk)."""
    from council.retrieval import Document, DocumentStore

    folder = tmp_path_factory.mktemp("served") / "store"
    store = DocumentStore()
    store.add_documents([Document("The Normans conquered England in 1066.", "normans.txt", "Normans"),
                         Document("Force equals mass times acceleration.", "force.txt", "Force")])
    store.save(folder)
    return folder


@pytest.fixture(scope="module")
def served(tiny_model_dir, tiny_catalog, store_folder):
    """Two apps on one Serve proxy: /  (two replicas) and /strict (one replica holding at most one batch of 2)."""
    from ray import serve

    from council.hosts import connect
    from council.serve import ServeSettings, build, start

    config = CouncilConfig(base_model=str(tiny_model_dir), catalog=str(tiny_catalog), store=str(store_folder),
                           quantize="none", max_new_tokens=6, context_tokens=120, max_question_chars=200,
                           peer_review=False, router={"threshold": 0.0, "min_k": 2, "max_k": 3})
    embedded = connect()
    port = free_port()
    url = start(build(config, replicas=2, cpus_per_replica=0.5, settings=ServeSettings(max_batch_size=4)),
                port=port)
    start(build(config, cpus_per_replica=0.5, settings=ServeSettings(max_batch_size=2, max_waiting=2,
                                                                     batch_wait_s=2.0)),
          port=port, route_prefix="/strict", name="strict")
    yield url
    serve.shutdown()
    if embedded:
        import ray

        ray.shutdown()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=f"{served}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_council_the_base_and_every_specialist_with_its_description(client):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"council", "base", "history", "science", "law"}
    assert models["history"].model_extra["description"].strip()


@pytest.mark.parametrize("model", ["council", "history", "base"])
def test_a_chat_completion_is_the_verdict(client, model):
    reply = client.chat.completions.create(model=model, messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": QUESTION}])
    verdict = reply.model_extra["council"]
    assert reply.object == "chat.completion" and reply.model == model
    content = reply.choices[0].message.content
    assert content == (ABSTAIN_ANSWER if verdict["abstained"] else verdict["answer"])
    voters = [v["specialist"] for v in verdict["votes"]]
    if model == "council":
        assert voters == verdict["route"]["chosen"] and len(voters) >= 2
    else:
        assert voters == [model]  # that voter alone, on the shared context
    assert verdict["context"] and set(verdict) >= {"abstained", "reason", "confidence", "citations", "timings"}


def test_council_ask_returns_the_verdict_as_council_ask_json_prints_it(served):
    r = http(f"{served}/v1/council/ask", json.dumps({"question": QUESTION}))
    assert r.status_code == 200
    body = r.json()
    assert body["question"] == QUESTION and [v["specialist"] for v in body["votes"]] == body["route"]["chosen"]


def test_healthz_is_ready_with_every_host_loaded(served):
    r = http(f"{served}/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    assert all(h["adapters"] for h in r.json()["hosts"].values())


@dataclass
class Reply:
    status_code: int
    text: str

    def json(self):
        return json.loads(self.text)


def http(url: str, body: str | None = None) -> Reply:
    """A raw request (the openai client would refuse to send what these tests send)."""
    req = urllib.request.Request(url, data=None if body is None else body.encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return Reply(r.status, r.read().decode())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read().decode())


def _post(url, content: str, path="/v1/chat/completions"):
    return http(url + path, content)


def chat(model="council", question=QUESTION) -> str:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": question}]})


@pytest.mark.parametrize("body,status,message", [
    (chat(question=""), 400, "the question is empty"),
    (chat(question="   "), 400, "the question is empty"),
    (json.dumps({"model": "council"}), 400, "messages is missing"),
    (json.dumps({"model": "council", "messages": [{"role": "system", "content": "x"}]}), 400, 'role "user"'),
    (chat(question="why " * 60), 400, "more than max_question_chars=200"),
    (chat(model="geology"), 404, "'geology' does not exist: known models are council, base, history"),
    (json.dumps({"messages": [{"role": "user", "content": QUESTION}]}), 400, "model is missing"),
    ('{"model": "council", "messages": [', 400, "not valid JSON"),
    ("[1, 2]", 400, "must be a JSON object"),
    (json.dumps({"model": "council", "stream": True, "messages": [{"role": "user", "content": "hi"}]}), 400,
     "stream=true is not supported"),
])
def test_bad_requests_get_an_openai_error_with_the_right_status(served, body, status, message):
    r = _post(served, body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


def test_the_openai_client_raises_the_status_and_the_server_stays_up(client):
    with pytest.raises(openai.NotFoundError, match="known models are"):
        client.chat.completions.create(model="geology", messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.chat.completions.create(model="council", messages=[{"role": "user", "content": ""}])
    assert client.chat.completions.create(model="council", messages=[{"role": "user", "content": QUESTION}]).choices


def test_a_question_missing_from_council_ask_is_a_400(served):
    r = _post(served, json.dumps({"q": QUESTION}), path="/v1/council/ask")
    assert r.status_code == 400 and "question is missing" in r.json()["error"]["message"]


def test_concurrent_requests_share_batches_on_two_replicas(client):
    questions = [f"{QUESTION} ({i})" for i in range(16)]
    with cf.ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda q: client.chat.completions.create(
            model="council", messages=[{"role": "user", "content": q}]), questions))
    assert [r.model_extra["council"]["question"] for r in replies] == questions  # each caller its own answer
    assert len({r.system_fingerprint for r in replies}) == 2  # both replicas answered
    assert max(r.model_extra["batch"] for r in replies) > 1  # gathered into shared ask_many calls
    assert all(r.model_extra["batch"] <= 4 for r in replies)  # never beyond max_batch_size


def test_a_full_replica_answers_429_at_once_never_a_hang(served):
    with cf.ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: _post(served, chat(), path="/strict/v1/chat/completions"), range(6)))
    codes = sorted(r.status_code for r in replies)
    assert codes.count(200) >= 2 and 429 in codes and set(codes) <= {200, 429}, codes
    refused = next(r for r in replies if r.status_code == 429)
    assert "max_waiting=2" in refused.json()["error"]["message"]


@pytest.mark.slow
def test_the_default_council_served_on_the_real_model(real_gemma, served):
    """The demo council (Gemma specialists, MiniLM, the demo store) answers over HTTP as `council ask` does; a
    third app on the running proxy, removed after."""
    from ray import serve

    from council.serve import build, start

    port = int(served.rsplit(":", 1)[1])
    try:
        # the last half CPU of a 2-core machine: the apps above hold 1.5
        url = start(build(CouncilConfig(max_new_tokens=16), cpus_per_replica=0.5), port=port, route_prefix="/real",
                    name="real")
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
        reply = client.chat.completions.create(model="council", messages=[{"role": "user", "content": QUESTION}])
        verdict = reply.model_extra["council"]
        assert verdict["votes"] and verdict["context"]
        assert reply.choices[0].message.content == (ABSTAIN_ANSWER if verdict["abstained"] else verdict["answer"])
        assert verdict["abstained"] or "1066" in verdict["answer"]  # the passage says 1066: nothing else
    finally:
        serve.delete("real")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_council_serve_prints_its_url_serves_and_stops_on_a_signal(stop, tiny_model_dir, tiny_catalog, store_folder,
                                                                  tmp_path):
    """The CLI as a user runs it, with its own embedded Ray: the base URL alone on stdout, then Ctrl-C or a kill."""
    config = tmp_path / "council.json"
    config.write_text(json.dumps({"base_model": str(tiny_model_dir), "catalog": str(tiny_catalog),
                                  "store": str(store_folder), "quantize": "none",
                                  "max_new_tokens": 4, "router": {"threshold": 0.0}}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "council", "serve", "--config", str(config), "--port", str(port),
                             "--cpus-per-replica", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        url = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}/v1", proc.stderr.read() if proc.poll() is not None else url
        models = json.loads(http(f"{url}/models").text)["data"]
        assert [m["id"] for m in models][:2] == ["council", "base"]
        me = psutil.Process(proc.pid)  # the proxy, the replicas and Ray's own servers: loopback only
        listening = {(c.laddr.ip, c.laddr.port, p.name()) for p in [me, *me.children(recursive=True)]
                     for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        assert ("127.0.0.1", port) in {a[:2] for a in listening}
        assert [a for a in listening if not _loopback(a[0])] == []
        proc.send_signal(stop)
        assert proc.wait(timeout=120) == 0
        assert proc.stdout.read() == ""  # one line on stdout: the URL
    finally:
        proc.kill()


def test_an_app_that_fits_no_node_fails_with_a_reason_never_a_hang(served, tiny_model_dir, tiny_catalog):
    from ray import serve

    from council.serve import build, start

    config = CouncilConfig(base_model=str(tiny_model_dir), catalog=str(tiny_catalog), quantize="none")
    port = int(served.rsplit(":", 1)[1])
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="'huge' did not start"):
        start(build(config, cpus_per_replica=64), port=port, route_prefix="/huge", name="huge", timeout_s=3)
    assert time.monotonic() - t0 < 60
    assert "huge" not in serve.status().applications  # removed, so it does not hold the route or wait on


def test_council_serve_refuses_more_cpus_than_the_machine_has(tiny_model_dir, tiny_catalog, tmp_path):
    config = tmp_path / "council.json"
    config.write_text(json.dumps({"base_model": str(tiny_model_dir), "catalog": str(tiny_catalog),
                                  "quantize": "none"}))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "council", "serve", "--config", str(config), "--port",
                           str(free_port()), "--replicas", "2", "--cpus-per-replica", "64"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert "2 replica(s) of 64 CPUs need 128 CPUs" in done.stderr


def test_council_serve_refuses_bad_flags_at_once():
    from council.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "--replicas", "0"])
    assert e.value.code == 2


def test_serve_load_quick_measures_the_server_against_ask_many_and_survives_a_killed_replica(
        tiny_model_dir, tiny_catalog, store_folder, tmp_path):
    """benchmarks/serve_load.py --quick on the tiny council, in a child process with its own Ray."""
    config = tmp_path / "council.json"
    config.write_text(json.dumps({"base_model": str(tiny_model_dir), "catalog": str(tiny_catalog),
                                  "store": str(store_folder), "quantize": "none", "max_new_tokens": 4,
                                  "router": {"threshold": 0.0}}))
    out = tmp_path / "load.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run([sys.executable, "benchmarks/serve_load.py", "--quick", "--config", str(config),
                          "--replicas", "2", "--cpus-per-replica", "1", "--seconds", "4", "--kill",
                          "--json", str(out)], capture_output=True, text=True, timeout=600, env=env,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["ask_many"]["qps"] > 0
    assert [r["clients"] for r in figures["serve"]] == [1, 2]
    for r in figures["serve"]:
        assert r["ok"] > 0 and r["rps"] > 0 and r["p50_s"] <= r["p95_s"] <= r["p99_s"]
        assert r["requests"] == r["ok"] + r["failed"]
    kill = figures["kill"]
    assert kill["killed"] and kill["ok"] > 0 and kill["lost"] == 0  # every request ended with a status
    assert (tmp_path / "load.md").is_file() and (tmp_path / "load-latency.png").is_file()


def test_app_builder_reads_serve_run_arguments_and_refuses_unknown_ones(tiny_model_dir, tiny_catalog, tmp_path):
    """`serve run council.serve:app_builder key=value ...` hands the builder strings."""
    from ray.serve import Application

    from council.serve import ServeSettings, app_builder

    config = tmp_path / "council.json"
    config.write_text(json.dumps({"base_model": str(tiny_model_dir), "catalog": str(tiny_catalog)}))
    app = app_builder({"config": str(config), "replicas": "2", "cpus_per_replica": "0.5", "max_batch_size": "4",
                       "batch_wait_s": "0.1"})
    assert isinstance(app, Application)
    with pytest.raises(ValueError, match=r"unknown arguments \['replica'\]"):
        app_builder({"replica": "2"})
    with pytest.raises(ValueError, match="must hold at least one full batch"):
        ServeSettings(max_batch_size=8, max_waiting=4)
