"""Faults on the restore path, against the lab's real API server and JetStream cluster
(issue 9, "Nothing lost under faults").

One namespace of the lab's pre-migration workloads, a stream and durable consumer of its own
(subjects rfault.<id>.>, so TAPIO_EVENTS is never touched) and a simulator of its own, started
for this namespace only: it plays the collectors and the pipeline from the pods' env and keeps
the ledger of every event, which the last test reads. The tests share the namespace and run in
file order; each starts by migrating (pipeline and collectors phases, every NATS gate on).

- A 409 on the restore: the rollback runs in this process (run_direct) with the engine's
  Kube.replace wrapped, so that right before a replace goes out a separate client annotates the
  same object; the real API server refuses the replace's stale resourceVersion with 409.
- SIGKILL during the restore: rollback.yml is killed (kill_run) twice at points the test makes
  deterministic by cordoning the nodes (the restored pipeline's new pod cannot be scheduled, so
  the pipeline cannot finish going back while the DaemonSets, which tolerate a cordon, roll);
  the next run finishes the restore.
"""
from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any, Callable, Iterator, Optional

import nats
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from nats.js.api import AckPolicy

from conftest import REPO_ROOT, KubeLab, NatsLab
from migration_lab import COLLECTORS, CONTAINERS, MigrationLab, make_lab
from module_utils_loader import load_module_utils
from nats_support import run_direct
from test_migration_nats_gates import kill_run

pytestmark = pytest.mark.integration

tapio_kube = load_module_utils("tapio_kube")
tapio_workload = load_module_utils("tapio_workload")
WORKLOADS = (*COLLECTORS, "tapio-pipeline")
KINDS = {name: "Deployment" if name == "tapio-pipeline" else "DaemonSet" for name in WORKLOADS}
WRITER = "faults.tapio.io/writer"
CONFLICT_RETRIES = 5  # module_utils/tapio_engine.py, and its back-off before each re-read:
BACKOFF = ((1, "0.2"), (2, "0.4"), (3, "0.8"), (4, "1.6"))


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    yield from make_lab(kube_lab, "rfault", tmp_path_factory.mktemp("artifacts"))


async def _stream(nats_lab: NatsLab, name: str, subjects: str = "") -> None:
    nc = await nats.connect(servers=nats_lab.servers, user=nats_lab.user, password=nats_lab.password)
    try:
        js = nc.jetstream()
        if subjects:
            await js.add_stream(name=name, subjects=[subjects], num_replicas=1)
            await js.add_consumer(name, durable_name="pipeline", ack_policy=AckPolicy.EXPLICIT)
        else:
            await js.delete_stream(name)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def events(lab: MigrationLab, nats_lab: NatsLab, kube_lab: KubeLab,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The namespace's stream, durable consumer and simulator (10 events/s per collector pod)."""
    tag = uuid.uuid4().hex[:8]
    setup = {"stream": f"RFAULT_{tag.upper()}", "prefix": f"rfault.{tag}"}
    asyncio.run(_stream(nats_lab, setup["stream"], f"{setup['prefix']}.>"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state = tmp_path_factory.mktemp("sim")
    command = [sys.executable, str(REPO_ROOT / "lab" / "bin" / "tapio-sim"), "run", "--namespace", lab.namespace,
               "--kubeconfig", str(kube_lab.kubeconfig), "--context", kube_lab.context, "--port", str(port),
               "--state-dir", str(state), "--rate", "10", "--poll-interval", "0.3", "--stream", setup["stream"],
               "--consumer", "pipeline", "--stop-flush-timeout", "10", "--exit-settle", "5",
               *[f"--nats-server={url}" for url in nats_lab.servers],
               *[f"--collector={name}:{CONTAINERS[name]}:{name.split('-')[1]}" for name in COLLECTORS]]
    with open(state / "sim.log", "wb") as log:
        sim = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    setup["url"] = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: sim_get(setup["url"], "/healthz").get("ok"), "the simulator's first poll", sim)
        yield setup
    finally:
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(timeout=40)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait()
        asyncio.run(_stream(nats_lab, setup["stream"]))


def sim_get(url: str, path: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(url + path, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=90) as answer:  # noqa: S310 - loopback
            return json.load(answer)
    except OSError:
        return {}


def wait_for(condition: Callable[[], Any], what: str, process: Optional[subprocess.Popen] = None,
             interval: float = 0.05) -> Any:
    """Poll until *condition* holds. Fails when *process* ended first (the condition can no
    longer come); the generous guard only keeps a broken lab from hanging the suite."""
    guard = time.monotonic() + 300
    while True:
        found = condition()
        if found:
            return found
        assert process is None or process.poll() is None, f"the process ended (rc {process.poll()}) before {what}"
        assert time.monotonic() < guard, f"no {what} after 300 s"
        time.sleep(interval)


def run_vars(events: dict[str, Any], **extra: Any) -> dict[str, Any]:
    collectors = [{"name": name, "container": CONTAINERS[name],
                   "subject_prefix": f"{events['prefix']}.{name.split('-')[1]}"} for name in COLLECTORS]
    # The shortest Lease (30 s): should a killed run's renewer not give its Lease back, the next run
    # takes it over once it has watched it go 30 s without renewal.
    return {"tapio_migration_nats_checks": True, "tapio_collectors": collectors, "tapio_events_stream": events["stream"],
            "tapio_consume_subjects": f"{events['prefix']}.>", "tapio_pipeline_consumer": "pipeline", "tapio_collectors_gate_consumer_prefix": "gate-",
            "tapio_poll_interval": 0.5, "tapio_progress_deadline": 60, "tapio_lock_duration": 30, **extra}


def migrate(lab: MigrationLab, events: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pipeline and collectors on NATS (gated by the simulator's traffic); their records. A
    namespace an earlier test left migrated (every workload on NATS, every record there) is
    taken as it is: a re-run would change nothing."""
    if not all(lab.has_record(KINDS[name], name) and lab.env(name).get("TAPIO_OUTPUT_MODE") == "nats"
               for name in WORKLOADS):
        run = lab.playbook("playbooks/pipeline.yml", "playbooks/collectors.yml", extra=run_vars(events))
        assert run.rc == 0, run.explain()
    assert all(lab.env(name)["TAPIO_OUTPUT_MODE"] == "nats" for name in WORKLOADS)
    return {name: lab.record(KINDS[name], name) for name in WORKLOADS}


def own(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as a record holds it (no status, no server-managed metadata)."""
    return tapio_workload.record_of(obj)


def state_keys(lab: MigrationLab) -> list[str]:
    return sorted(lab.state_configmap() or {})


def assert_restored_and_retired(lab: MigrationLab, records: dict[str, dict[str, Any]],
                                writer: dict[str, str]) -> None:
    """Each workload is its record, where the toolkit wrote (spec, labels) byte for byte; its
    own annotations are the record's plus what the concurrent writer last wrote; it has rolled
    out; its record is retired in the ConfigMap and on disk."""
    for name in WORKLOADS:
        live = own(lab.workload(name))
        record = records[name]
        assert tapio_workload.record_text(live["spec"]) == tapio_workload.record_text(record["spec"]), name
        assert live["metadata"].get("labels") == record["metadata"].get("labels"), name
        expected = {**record["metadata"].get("annotations", {}), **({WRITER: writer[name]} if name in writer else {})}
        assert live["metadata"].get("annotations", {}) == expected, name
        done, _, summary = tapio_workload.rollout_state(lab.workload(name))
        assert done, f"{name}: {summary}"
        kind = KINDS[name].lower()
        assert json.loads(lab.state_configmap()[f"retired.{kind}.{name}.json"]) == record, name
        state = lab.artifacts / "state" / lab.namespace
        assert not (state / f"{kind}-{name}.json").exists(), name
        assert json.loads((state / "retired" / f"{kind}-{name}.json").read_text()) == record, name
    assert all(key.startswith("retired.") for key in state_keys(lab)), state_keys(lab)


# -- a 409 on the restore path ------------------------------------------------------------------
class Conflicts:
    """Wraps the engine's Kube.replace: before chosen replaces go out, a separate real client
    annotates the same object (WRITER = a counter), so the API server refuses the replace's
    resourceVersion with 409. Records the server's answer to every replace."""

    def __init__(self, lab: MigrationLab, monkeypatch: pytest.MonkeyPatch, writes: dict[str, int]) -> None:
        self.lab, self.writes = lab, dict(writes)  # workload name -> how many replaces to race
        self.answers: list[tuple[str, int]] = []
        self.written: dict[str, str] = {}
        self.count = 0
        original = tapio_kube.Kube.replace

        def replace(kube: Any, kind: str, namespace: Optional[str], name: str, body: dict[str, Any]) -> dict[str, Any]:
            if self.writes.get(name, 0) > 0:
                self.writes[name] -= 1
                self.annotate(kind, name)
            try:
                answer = original(kube, kind, namespace, name, body)
            except tapio_kube.KubeError as error:
                self.answers.append((name, error.status))
                raise
            self.answers.append((name, 200))
            return answer

        monkeypatch.setattr(tapio_kube.Kube, "replace", replace)

    def annotate(self, kind: str, name: str) -> None:
        self.count += 1
        body = {"metadata": {"annotations": {WRITER: str(self.count)}}}
        if kind == "DaemonSet":
            self.lab.apps.patch_namespaced_daemon_set(name, self.lab.namespace, body)
        else:
            self.lab.apps.patch_namespaced_deployment(name, self.lab.namespace, body)
        self.written[name] = str(self.count)


def rollback_in_process(lab: MigrationLab, kube_lab: KubeLab, events: dict[str, Any]) -> dict[str, Any]:
    """The rollback role's engine call (restore mode), in this process."""
    variables = run_vars(events)
    return run_direct("tapio_migration", {
        "phase": "rollback", "rollback_mode": "restore", "namespace": lab.namespace,
        "kubeconfig": str(kube_lab.kubeconfig), "context": kube_lab.context,
        "pipeline": {"name": "tapio-pipeline", "container": "pipeline"}, "collectors": variables["tapio_collectors"],
        "state": {"configmap": "tapio-migration-state", "dir": str(lab.artifacts / "state"),
                  "labels": {"app.kubernetes.io/managed-by": "tapio-nats-migration"}},
        "stream": events["stream"], "consumer": "pipeline", "drain": True, "nats_checks": True,
        "poll_interval": 0.5, "progress_deadline": 60})


def test_a_writer_that_wins_every_race_stops_the_restore_naming_the_409s(
        lab: MigrationLab, kube_lab: KubeLab, events: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The canary collector is annotated before each of the engine's replaces: after
    CONFLICT_RETRIES real 409s the rollback fails saying so; nothing was replaced, no record
    retired, and the collector still runs on NATS."""
    records = migrate(lab, events)
    keys = state_keys(lab)
    conflicts = Conflicts(lab, monkeypatch, {"tapio-k8s-collector": 99})
    result = rollback_in_process(lab, kube_lab, events)
    assert result["failed"], result["_output"]
    assert result["msg"].startswith(
        f"DaemonSet/tapio-k8s-collector was not restored: each of {CONFLICT_RETRIES} attempts met a 409 Conflict "
        "(another writer changed it between the engine's read and its replace; last: PUT /apis/apps/v1/namespaces/"
        f"{lab.namespace}/daemonsets/tapio-k8s-collector: 409 Operation cannot be fulfilled on daemonsets.apps "
        '"tapio-k8s-collector": the object has been modified'), result["msg"]
    assert conflicts.answers == [("tapio-k8s-collector", 409)] * CONFLICT_RETRIES
    # The first step says where the record came from (its provenance); then the conflicts.
    assert "DaemonSet/tapio-k8s-collector: recorded by " in result["steps"][0], result["steps"]
    assert [s[10:] for s in result["steps"][1:]] == [
        *[f"DaemonSet/tapio-k8s-collector changed while restoring (409 Conflict); reading it again in {wait}s "
          f"(attempt {n} of 5)" for n, wait in BACKOFF],
        "DaemonSet/tapio-k8s-collector changed while restoring (409 Conflict; attempt 5 of 5)"]
    assert state_keys(lab) == keys, "no record may be retired"
    assert all(lab.env(name)["TAPIO_OUTPUT_MODE"] == "nats" for name in WORKLOADS)
    assert lab.record("DaemonSet", "tapio-k8s-collector") == records["tapio-k8s-collector"]
    assert lab.daemonset("tapio-k8s-collector")["metadata"]["annotations"][WRITER] == str(CONFLICT_RETRIES)


def test_a_409_on_the_restore_path_is_retried_and_the_restore_completes(
        lab: MigrationLab, kube_lab: KubeLab, events: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The canary collector meets one 409, the pipeline CONFLICT_RETRIES - 1 in a row (a
    writer in a loop that stops just in time; the Deployment controller answers each of its
    writes with one of its own, which the engine's back-off lets land before it reads again):
    each is read again and replaced, the fifth attempt goes through. The workloads equal their
    records wherever the toolkit wrote; the writer's annotation on the object is kept and named
    (restore_of: the object's own labels and annotations are never the toolkit's), the diff
    shows the object the replace was made from, and the records are retired."""
    records = migrate(lab, events)
    conflicts = Conflicts(lab, monkeypatch, {"tapio-k8s-collector": 1, "tapio-pipeline": CONFLICT_RETRIES - 1})
    result = rollback_in_process(lab, kube_lab, events)
    assert not result["failed"], result["_output"]
    steps = result["steps"]
    assert conflicts.answers == [("tapio-k8s-collector", 409), ("tapio-k8s-collector", 200),
                                 ("tapio-systemd-collector", 200), ("tapio-ebpf-collector", 200),
                                 *[("tapio-pipeline", 409)] * (CONFLICT_RETRIES - 1), ("tapio-pipeline", 200)]
    conflicted = [s[10:] for s in steps if "(409 Conflict)" in s]
    assert conflicted == [
        "DaemonSet/tapio-k8s-collector changed while restoring (409 Conflict); reading it again in 0.2s (attempt 1 of 5)",
        *[f"Deployment/tapio-pipeline changed while restoring (409 Conflict); reading it again in {wait}s (attempt {n} "
          "of 5)" for n, wait in BACKOFF]], steps
    kept = f"to its record; kept as changed since the record: metadata.annotations.{WRITER}"
    for label, count in (("DaemonSet/tapio-k8s-collector", 1), ("Deployment/tapio-pipeline", CONFLICT_RETRIES - 1)):
        assert (f"restored {label} (only the entries the toolkit wrote that still hold what it wrote) {kept} (after "
                f"{count} 409 conflict(s): read again and applied to the object as it then was)") in \
            [s[10:] for s in steps], steps
    assert result["kept_changes"] == [
        f"{kind} {lab.namespace}/{name}: metadata.annotations.{WRITER} (changed since the migration, kept)"
        for kind, name in (("DaemonSet", "tapio-k8s-collector"), ("Deployment", "tapio-pipeline"))], steps
    assert "restored DaemonSet/tapio-systemd-collector to its record" in [s[10:] for s in steps]
    # The diff is the replace that went out: the writer's annotation on both sides.
    diff = next(d for d in result["diff"] if d["before_header"] == "Deployment/tapio-pipeline (restore)")
    assert f'"{WRITER}": "{conflicts.written["tapio-pipeline"]}"' in diff["before"]
    assert f'"{WRITER}": "{conflicts.written["tapio-pipeline"]}"' in diff["after"]
    assert any("consumer pipeline drained: 0 pending, 0 awaiting ack" in s for s in steps), steps
    assert_restored_and_retired(lab, records, conflicts.written)


# -- SIGKILL during the restore ---------------------------------------------------------------------
def cordon(lab: MigrationLab, unschedulable: bool) -> None:
    for node in lab.core.list_node().items:
        lab.core.patch_node(node.metadata.name, {"spec": {"unschedulable": unschedulable}})


def lease(lab: MigrationLab) -> Optional[client.V1Lease]:
    try:
        return client.CoordinationV1Api(lab.api).read_namespaced_lease("tapio-nats-migration", lab.namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def in_rollback_call(lab: MigrationLab, holder_before: str) -> bool:
    """The Lease taken over from *holder_before* by the next run's lock phase and renewed since
    by its renewer (renewTime != acquireTime): that run holds the lock."""
    found = lease(lab)
    return found is not None and found.spec.holder_identity not in ("", None, holder_before) \
        and found.spec.renew_time != found.spec.acquire_time


def ready_pipeline_modes(lab: MigrationLab) -> list[Optional[str]]:
    """TAPIO_OUTPUT_MODE of each Ready pipeline pod: the pods that serve now."""
    modes = []
    for pod in lab.core.list_namespaced_pod(lab.namespace, label_selector="app.kubernetes.io/name=tapio-pipeline").items:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready and pod.metadata.deletion_timestamp is None:
            container = next(c for c in pod.spec.containers if c.name == "pipeline")
            modes.append(next((e.value for e in container.env or [] if e.name == "TAPIO_OUTPUT_MODE"), None))
    return modes


def killed(lab: MigrationLab, events: dict[str, Any], when: Callable[[], bool], what: str) -> None:
    """rollback.yml (restore) started, killed with its workers once *when* holds."""
    run = lab.start_playbook("rollback.yml", extra=run_vars(events, tapio_rollback_mode="restore"))
    try:
        wait_for(when, what, run)
    finally:
        kill_run(run.pid)
        run.wait(timeout=30)


def test_a_restore_killed_twice_is_finished_by_the_next_run_with_nothing_lost(
        lab: MigrationLab, events: dict[str, Any]) -> None:
    """With the nodes cordoned (the pipeline's restored pod stays Pending, so the pipeline can
    only go back later), rollback.yml is killed right after the canary collector went back to
    its record, then the next run is killed while the pipeline's restore rolls out. The third
    run, with the nodes back, takes the Lease the killed run's renewer gave back and finishes: it waits for the
    rollout the killed run started before it retires the pipeline's record, every workload is
    its pre-migration record byte for byte, every record retired, and the simulator's ledger
    shows 0 events lost and 0 duplicates across everything these tests did."""
    records = migrate(lab, events)
    canary = "tapio-k8s-collector"
    cordon(lab, True)
    try:
        killed(lab, events, lambda: own(lab.daemonset(canary))["spec"] == records[canary]["spec"],
               "the canary collector's restore")
        assert ready_pipeline_modes(lab) == ["nats"], "the pipeline went back before the kill"
        print("first kill:", {name: own(lab.workload(name))["spec"] == records[name]["spec"] for name in WORKLOADS},
              state_keys(lab))
        assert "deployment.tapio-pipeline.json" in state_keys(lab)
        # The killed run's renewer gives its Lease back once the run has ended; the next run takes it.
        first = lease(lab).spec.holder_identity

        killed(lab, events, lambda: in_rollback_call(lab, first) and lab.env("tapio-pipeline").get(
            "TAPIO_OUTPUT_MODE") is None, "the pipeline's restore")
        assert ready_pipeline_modes(lab) == ["nats"], "the pipeline's rollout must be held by the cordon"
        assert own(lab.deployment())["spec"] == records["tapio-pipeline"]["spec"]
        assert "deployment.tapio-pipeline.json" in state_keys(lab), "retired before its restore rolled out"
        assert not any(key.startswith("daemonset.") for key in state_keys(lab))
        print("second kill:", state_keys(lab))
    finally:
        cordon(lab, False)

    final = lab.rollback("restore", extra=run_vars(events))
    assert final.rc == 0, final.explain()  # it took the Lease the killed run gave back
    rolled = final.stdout.find("Deployment/tapio-pipeline rolled out")
    retired = final.stdout.find("retired the records of Deployment/tapio-pipeline")
    assert 0 <= rolled < retired, final.explain()
    assert_restored_and_retired(lab, records, {})
    assert ready_pipeline_modes(lab) == [None]
    assert lease(lab) is None

    ledger = sim_get(events["url"], "/drain?timeout=60", method="POST")
    assert ledger.get("settle", {}).get("complete"), ledger.get("settle")
    for source, row in ledger["sources"].items():
        assert row["lost"] == 0 and row["duplicates"] == 0, (source, row)
        assert row["received_by_path"].get("nats", 0) > 0 and row["received_by_path"].get("direct", 0) > 0, \
            (source, row)
        assert row["pods_by_mode"] == {"direct": 3, "nats": 0}, (source, row)
    assert sorted(ledger["sources"]) == ["ebpf-collector", "k8s-collector", "systemd-collector"]
