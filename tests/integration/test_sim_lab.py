"""The Tapio simulator against the lab's real API server and real JetStream cluster.

Each test gets its own namespace (a pipeline Deployment and a collector DaemonSet of the
lab's shape, rolled by the real controllers), its own stream and durable consumer on
subjects of its own (`simtest.<id>.>`, so it never overlaps TAPIO_EVENTS), and its own
simulator process on a free loopback port. Everything is deleted afterwards.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from kubernetes import client, config
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from conftest import LAB_STATE, REPO_ROOT, KubeLab, NatsLab

pytestmark = pytest.mark.integration

LAUNCHER = REPO_ROOT / "lab" / "bin" / "tapio-sim"
LABELS = {"app.kubernetes.io/part-of": "tapio-sim-test"}


@dataclass
class Env:
    namespace: str
    tag: str
    stream: str
    consumer: str
    apps: client.AppsV1Api
    core: client.CoreV1Api
    nats_lab: NatsLab

    @property
    def subject_prefix(self) -> str:
        return f"simtest.{self.tag}.events.k8s"


def wait_for(predicate, timeout: float, what: str, interval: float = 0.3) -> Any:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def container(name: str, env: list[dict[str, str]]) -> dict[str, Any]:
    return {"name": name, "image": f"tapio/{name}:latest", "env": env,
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}


def daemonset(name: str, cont: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name, **LABELS}
    env = [{"name": "TAPIO_SERVER_ADDRESS", "value": "tapio-pipeline.tapio.svc.cluster.local:9090"},
           {"name": "LOG_LEVEL", "value": "info"}]
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "labels": labels},
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [container(cont, env)]}}}}


def deployment(name: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name, **LABELS}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [container("pipeline", [{"name": "LOG_LEVEL", "value": "info"}])]}}}}


async def _nats(nats_lab: NatsLab, action, *args):  # noqa: ANN001, ANN202
    nc = await nats.connect(servers=nats_lab.servers, user=nats_lab.user, password=nats_lab.password)
    try:
        return await action(nc.jetstream(), *args)
    finally:
        await nc.close()


async def _create_stream(js, stream: str, subjects: str, consumer: str) -> None:  # noqa: ANN001
    await js.add_stream(StreamConfig(name=stream, subjects=[subjects], storage=StorageType.FILE, num_replicas=3,
                                     max_age=900, duplicate_window=120))
    await js.add_consumer(stream, ConsumerConfig(durable_name=consumer, ack_policy=AckPolicy.EXPLICIT,
                                                 deliver_policy=DeliverPolicy.ALL, ack_wait=30,
                                                 max_ack_pending=10000))


async def _stream_subjects(js, stream: str) -> dict[str, int]:  # noqa: ANN001
    info = await js.stream_info(stream, subjects_filter=">")
    return dict(info.state.subjects or {})


async def _consumer_state(js, stream: str, consumer: str) -> tuple[int, int, int]:  # noqa: ANN001
    info = await js.consumer_info(stream, consumer)
    return info.num_pending, info.num_ack_pending, info.num_redelivered


async def _delete_stream(js, stream: str) -> None:  # noqa: ANN001
    try:
        await js.delete_stream(stream)
    except nats.js.errors.NotFoundError:
        pass


@pytest.fixture()
def env(kube_lab: KubeLab, nats_lab: NatsLab, request: pytest.FixtureRequest) -> Iterator[Env]:
    tag = uuid.uuid4().hex[:8]
    api = config.new_client_from_config(str(kube_lab.kubeconfig), context=kube_lab.context)
    e = Env(namespace=f"sim-test-{tag}", tag=tag, stream=f"SIMTEST_{tag.upper()}", consumer=f"sim-pipeline-{tag}",
            apps=client.AppsV1Api(api), core=client.CoreV1Api(api), nats_lab=nats_lab)
    e.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=e.namespace, labels=LABELS)))
    if "without_stream" not in request.node.name:  # that test creates the stream itself, late
        asyncio.run(_nats(nats_lab, _create_stream, e.stream, f"simtest.{tag}.>", e.consumer))
    try:
        e.apps.create_namespaced_deployment(e.namespace, deployment("tapio-pipeline"))
        e.apps.create_namespaced_daemon_set(e.namespace, daemonset("tapio-k8s-collector", "k8s-collector"))
        wait_for(lambda: ready_pods(e, "tapio-k8s-collector") >= 3 and ready_pods(e, "tapio-pipeline") == 1,
                 30, "the test workloads' pods to be Ready")
        yield e
    finally:
        e.core.delete_namespace(e.namespace)
        asyncio.run(_nats(nats_lab, _delete_stream, e.stream))


def ready_pods(e: Env, name: str) -> int:
    pods = e.core.list_namespaced_pod(e.namespace, label_selector=f"app.kubernetes.io/name={name}").items
    return sum(1 for p in pods if p.metadata.deletion_timestamp is None and p.status.phase == "Running"
               and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []))


class Sim:
    def __init__(self, e: Env, state_dir: Path, rate: float, connections: str = "per-pod") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = state_dir
        self.log = open(state_dir / "sim.log", "wb")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, str(LAUNCHER), "run", "--namespace", e.namespace,
               "--collector", "tapio-k8s-collector:k8s-collector:k8s",
               "--stream", e.stream, "--consumer", e.consumer, "--port", str(self.port),
               "--state-dir", str(state_dir), "--rate", str(rate), "--poll-interval", "0.3",
               "--stop-flush-timeout", "10", "--exit-settle", "5", "--nats-connections", connections,
               # The lab the fixtures use (TAPIO_LAB_STATE, TAPIO_LAB_PORT_OFFSET), not the defaults.
               "--kubeconfig", str(LAB_STATE / "kubeconfig"), *[f"--nats-server={s}" for s in e.nats_lab.servers]]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,  # noqa: S603
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for(lambda: self._healthy(), 30, "the simulator's /healthz")

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"simulator exited: {(self.state_dir / 'sim.log').read_text()[-3000:]}")
        try:
            return self.get("/healthz")["ok"]
        except (urllib.error.URLError, OSError):
            return False

    def get(self, path: str, method: str = "GET", timeout: float = 60) -> dict[str, Any]:
        req = urllib.request.Request(self.url + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
            return json.load(resp)

    def stop(self) -> dict[str, Any] | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        final = self.state_dir / "ledger-final.json"
        return json.loads(final.read_text()) if final.exists() else None


def patch_env(e: Env, kind: str, name: str, cont: str, env: list[dict[str, str]]) -> None:
    body = {"spec": {"template": {"spec": {"containers": [{"name": cont, "env": env}]}}}}
    if kind == "DaemonSet":
        e.apps.patch_namespaced_daemon_set(name, e.namespace, body)
    else:
        e.apps.patch_namespaced_deployment(name, e.namespace, body)


def source_row(ledger: dict[str, Any]) -> dict[str, Any]:
    return ledger["sources"].get("k8s-collector", {})


@pytest.mark.parametrize("connections", ["per-pod", "shared"])
def test_direct_to_nats_switch_loses_nothing(env: Env, tmp_path: Path, connections: str) -> None:
    """A real rollout from direct to NATS mode: events flow through JetStream afterwards,
    and once drained nothing is lost or delivered twice; with a NATS connection per emulated
    pod and with one shared by all (what benchmarks/scale.sh uses for 500 nodes)."""
    sim = Sim(env, tmp_path, rate=150, connections=connections)
    try:
        wait_for(lambda: source_row(sim.get("/ledger")).get("pods_by_mode", {}).get("direct") == 3, 15,
                 "3 direct-mode collector instances")
        # The pipeline consumes from NATS first (zero-loss order), through a real Deployment rollout.
        patch_env(env, "Deployment", "tapio-pipeline", "pipeline",
                  [{"name": "LOG_LEVEL", "value": "info"}, {"name": "NATS_URL", "value": "nats://tapio-nats:4222"},
                   {"name": "CONSUME_SUBJECTS", "value": "tapio.events.>"},
                   {"name": "TAPIO_OUTPUT_MODE", "value": "nats"}])
        wait_for(lambda: any(c["state"] == "consuming" for c in sim.get("/status")["pipeline"]["consumers"]), 30,
                 "the emulated pipeline to consume the durable consumer")
        # Then the collectors: the DaemonSet controller replaces one pod at a time.
        patch_env(env, "DaemonSet", "tapio-k8s-collector", "k8s-collector",
                  [{"name": "TAPIO_SERVER_ADDRESS", "value": "tapio-pipeline.tapio.svc.cluster.local:9090"},
                   {"name": "LOG_LEVEL", "value": "info"}, {"name": "NATS_URL", "value": "nats://tapio-nats:4222"},
                   {"name": "NATS_SUBJECT_PREFIX", "value": env.subject_prefix},
                   {"name": "TAPIO_OUTPUT_MODE", "value": "nats"}])
        wait_for(lambda: source_row(sim.get("/ledger")).get("pods_by_mode") == {"direct": 0, "nats": 3}, 40,
                 "all 3 collector pods rolled to NATS mode")
        # What used to lose events: the pipeline restarts (a real Deployment roll) while the
        # collectors publish. Now the events wait in the stream for the new pipeline pod.
        first = {c["pod"] for c in sim.get("/status")["pipeline"]["consumers"]}
        env.apps.patch_namespaced_deployment("tapio-pipeline", env.namespace, {"spec": {"template": {"metadata": {
            "annotations": {"tapio.io/restartedAt": str(time.time())}}}}})
        wait_for(lambda: any(c["pod"] not in first and c["state"] == "consuming"
                             for c in sim.get("/status")["pipeline"]["consumers"]), 30,
                 "a new pipeline pod consuming after the roll")
        time.sleep(2)
        ledger = sim.get("/drain?timeout=20", method="POST")
        row = source_row(ledger)
        assert ledger["settle"]["complete"], ledger["settle"]
        assert row["emitted_by_mode"]["direct"] > 0 and row["emitted_by_mode"]["nats"] > 0, row
        assert row["received_by_path"]["nats"] > 0, row
        assert row["acked_by_stream"] == row["emitted_by_mode"]["nats"], row
        assert row["lost"] == 0, row
        assert row["duplicates"] == 0, row
        assert row["received"] == row["emitted"], row
        # The events really are in the stream, on the plan's subject scheme with the pod's prefix.
        subjects = asyncio.run(_nats(env.nats_lab, _stream_subjects, env.stream))
        assert subjects and all(s.startswith(env.subject_prefix + ".") and s.count(".") == 5 for s in subjects), subjects
        assert sum(subjects.values()) == row["emitted_by_mode"]["nats"], (subjects, row)
        pending, ack_pending, redelivered = asyncio.run(_nats(env.nats_lab, _consumer_state, env.stream, env.consumer))
        assert (pending, ack_pending, redelivered) == (0, 0, 0)
    finally:
        final = sim.stop()
    assert final is not None, (tmp_path / "sim.log").read_text()[-3000:]
    assert final["totals"]["lost"] == 0 and final["totals"]["duplicates"] == 0, final["totals"]
    assert final["timeline"], "the final ledger carries the per-second timeline"


def test_direct_mode_without_pipeline_loses_events(env: Env, tmp_path: Path) -> None:
    """The ledger can fail: direct-mode sends while no pipeline pod is Ready are lost."""
    sim = Sim(env, tmp_path, rate=100)
    try:
        wait_for(lambda: source_row(sim.get("/ledger")).get("received", 0) > 100, 15, "direct events received")
        env.apps.patch_namespaced_deployment_scale("tapio-pipeline", env.namespace, {"spec": {"replicas": 0}})
        wait_for(lambda: sim.get("/status")["pipeline"]["ready_pods"] == 0, 30, "the pipeline to have no Ready pod")
        wait_for(lambda: source_row(sim.get("/ledger")).get("dropped_direct", 0) > 200, 15, "direct sends to fail")
        env.apps.patch_namespaced_deployment_scale("tapio-pipeline", env.namespace, {"spec": {"replicas": 1}})
        wait_for(lambda: sim.get("/status")["pipeline"]["ready_pods"] == 1, 30, "the pipeline to come back")
        ledger = sim.get("/drain?timeout=10", method="POST")
        row = source_row(ledger)
        assert ledger["settle"]["complete"], ledger["settle"]
        assert row["lost"] > 200, row
        assert row["lost"] == row["dropped_direct"], row
        assert len(row["lost_ids_sample"]) > 0 and all(len(i) == 32 for i in row["lost_ids_sample"]), row
        assert row["received"] + row["lost"] == row["emitted"], row
        # The verify-phase client fails on it, naming the source.
        cli = subprocess.run([sys.executable, str(LAUNCHER), "ledger", "--url", sim.url, "--settle", "5",
                              "--assert-zero-lost"], capture_output=True, text=True, timeout=60, check=False)
        assert cli.returncode == 1, cli.stderr
        assert "k8s-collector" in cli.stderr and "lost" in cli.stderr
    finally:
        sim.stop()


def test_nats_mode_without_stream_retries_and_loses_nothing(env: Env, tmp_path: Path) -> None:
    """Collectors switched to NATS before the stream exists (the wrong order): JetStream
    answers "no responders", nothing is acked, so nothing may be counted as delivered or
    dropped; once the stream and the consumer exist, the retried events (same Nats-Msg-Id)
    arrive exactly once."""
    nats_env = [{"name": "NATS_URL", "value": "nats://tapio-nats:4222"}, {"name": "TAPIO_OUTPUT_MODE", "value": "nats"}]
    patch_env(env, "Deployment", "tapio-pipeline", "pipeline", [{"name": "LOG_LEVEL", "value": "info"}, *nats_env])
    patch_env(env, "DaemonSet", "tapio-k8s-collector", "k8s-collector",
              [{"name": "LOG_LEVEL", "value": "info"}, {"name": "NATS_SUBJECT_PREFIX", "value": env.subject_prefix},
               *nats_env])
    wait_for(lambda: ready_pods(env, "tapio-k8s-collector") == 3 and ready_pods(env, "tapio-pipeline") == 1, 40,
             "the NATS-mode pods to be Ready")
    sim = Sim(env, tmp_path, rate=50)
    try:
        wait_for(lambda: source_row(sim.get("/ledger")).get("pods_by_mode", {}).get("nats") == 3, 20,
                 "3 NATS-mode collector instances")
        time.sleep(3)
        row = source_row(sim.get("/ledger"))
        assert row["emitted"] > 200 and row["acked_by_stream"] == 0 and row["received"] == 0, row
        assert row["dropped_backpressure"] == 0 and row["abandoned"] == 0, row
        status = sim.get("/status")
        assert all(c["pending"] > 0 and "no responders" in c["last_error"] for c in status["collectors"]), status
        assert {c["state"] for c in status["pipeline"]["consumers"]} <= {"waiting-for-consumer", "starting", "error"}
        asyncio.run(_nats(env.nats_lab, _create_stream, env.stream, f"simtest.{env.tag}.>", env.consumer))
        ledger = sim.get("/drain?timeout=40", method="POST")
        row = source_row(ledger)
        assert ledger["settle"]["complete"], (ledger["settle"], row)
        assert row["lost"] == 0 and row["duplicates"] == 0 and row["received"] == row["emitted"], row
        assert row["publish_retries"] > 0, row
    finally:
        sim.stop()
