"""Check mode guarded in the engine's Python (module_utils/tapio_engine.py), not only by the
roles' ``when: not ansible_check_mode``: the real code runs with check mode on against a
Kubernetes API and a NATS session that record every write, and none may be recorded. Each
guard is run once without check mode too, so the fakes are shown to see the writes. Last, a
stalled wait (tapio_wait.Stalled) still fails a batch's gate by name."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

import pytest

from module_utils_loader import load_module_utils
from fake_clock import Clock
from engine_inputs import engine_inputs

for _name in ("tapio_nats_config", "tapio_nats", "tapio_nats_session"):
    load_module_utils(_name)
engine = load_module_utils("tapio_engine")

NAMESPACE = "tapio"
JOB = "tapio-nats-probe"




class RecordingKube:
    """Objects by (kind, name); every write recorded and applied. A created Job completes at
    its ``complete_at_look``-th read (never when None)."""

    def __init__(self, *objects: dict[str, Any], complete_at_look: Optional[int] = None) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): copy.deepcopy(o) for o in objects}
        self.writes: list[tuple[str, str, str]] = []
        self.complete_at_look = complete_at_look
        self.job_looks = 0

    def get(self, kind: str, namespace: Optional[str], name: str) -> Optional[dict[str, Any]]:
        found = self.objects.get((kind, name))
        if kind == "Job" and found is not None:
            self.job_looks += 1
            if self.complete_at_look is not None and self.job_looks >= self.complete_at_look:
                found["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
        return copy.deepcopy(found)

    def list(self, kind: str, namespace: Optional[str], selector: str = "") -> list[dict[str, Any]]:
        return []

    def create(self, kind: str, namespace: Optional[str], body: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("create", kind, body["metadata"]["name"]))
        self.objects[(kind, body["metadata"]["name"])] = copy.deepcopy(body)
        return body

    def delete(self, kind: str, namespace: Optional[str], name: str) -> None:
        self.writes.append(("delete", kind, name))
        self.objects.pop((kind, name), None)

    def patch(self, kind: str, namespace: Optional[str], name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("patch", kind, name))
        return {}

    def replace(self, kind: str, namespace: Optional[str], name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("replace", kind, name))
        return {}


class RecordingNats:
    """The engine's NATS session: every call's description recorded, no consumer exists."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def call(self, fn: Callable[[Any], Awaitable[Any]], what: str) -> Any:
        self.calls.append(what)
        return None


TARGET = "tapio-nats.tapio:4222"
probe_job = load_module_utils("tapio_probe_job")


def job(finished: bool = False, target: Optional[str] = TARGET) -> dict[str, Any]:
    """A probe Job; with *target*, as the engine creates it for that target."""
    status = {"conditions": [{"type": "Complete", "status": "True"}]} if finished else {}
    annotations = {probe_job.TARGET_ANNOTATION: probe_job.target_digest(target)} if target else {}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": JOB, "namespace": NAMESPACE, "annotations": annotations}, "status": status}


def collector(mode: Optional[str] = None) -> dict[str, Any]:
    env = [{"name": "TAPIO_OUTPUT_MODE", "value": mode}] if mode else []
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "tapio-k8s-collector",
                                                                        "namespace": NAMESPACE, "generation": 1},
            "spec": {"template": {"spec": {"containers": [{"name": "k8s-collector", "env": env}]}}}}


def make_engine(kube: RecordingKube, check: bool, clock: Clock, nats: Optional[RecordingNats] = None,
                options: Optional[dict[str, Any]] = None, **probe: Any) -> Any:
    params = {
        "namespace": NAMESPACE, "pipeline": {"name": "tapio-pipeline", "container": "pipeline"},
        "collectors": [{"name": "tapio-k8s-collector", "container": "k8s-collector",
                        "subject_prefix": "tapio.events.k8s"}],
        "mode_env": "TAPIO_OUTPUT_MODE", "nats_value": "nats", "direct_value": "direct", "poll_interval": 2,
        "stream": "TAPIO_EVENTS", "consumer": "tapio-pipeline", "nats_checks": True,
        "gate": {"consumer_prefix": "tapio-gate-"}, "env": [{"name": "TAPIO_OUTPUT_MODE", "value": "nats"}],
        "workload_secrets": None, "subject_prefix_env": "NATS_SUBJECT_PREFIX", "pod_annotations": {},
        "container_overrides": {}, "batch": ["tapio-k8s-collector"],
        "probe": {"definition": job(target=None), "target": TARGET, "timeout": 5, "fresh": False,
                  "required": True, "simulated_node_annotation": "kwok.x-k8s.io/node", **probe},
    }
    return engine.Engine(engine_inputs(**{**params, **(options or {})}), kube, nats, check, clock=clock,
                         sleep=clock.sleep)


# -- the probe Job ------------------------------------------------------------------------------
def test_a_check_mode_probe_creates_no_job_and_says_it_would() -> None:
    kube, clock = RecordingKube(), Clock()
    run = make_engine(kube, True, clock)
    result = run.probe()
    assert kube.writes == [] and clock.sleeps == [], "check mode created or waited for the probe Job"
    assert run.changed is True
    assert result["probe"]["outcome"] == "not run"
    assert run.steps[-1].endswith(f"check mode: would create probe Job {JOB}")


def test_a_check_mode_fresh_probe_deletes_nothing() -> None:
    kube, clock = RecordingKube(job(finished=True)), Clock()
    run = make_engine(kube, True, clock, fresh=True)
    run.probe()
    assert kube.writes == [] and clock.sleeps == []
    assert ("Job", JOB) in kube.objects
    assert run.steps[-1].endswith(f"check mode: would delete the earlier probe Job {JOB} (a fresh probe was asked "
                                  "for) and create a new one")


def test_a_check_mode_probe_of_an_earlier_job_changes_nothing() -> None:
    kube = RecordingKube(job(finished=True))
    run = make_engine(kube, True, Clock())
    assert run.probe()["probe"]["outcome"] == "not run"
    assert kube.writes == [] and run.changed is False
    assert run.steps[-1].endswith(f"check mode: would judge the earlier probe Job {JOB} again")


def test_a_real_probe_creates_its_job_and_waits_for_it() -> None:
    """The same call without check mode writes: the recording fakes above would see it."""
    kube, clock = RecordingKube(complete_at_look=3), Clock()
    run = make_engine(kube, False, clock)
    result = run.probe()
    assert kube.writes == [("create", "Job", JOB)] and run.changed is True
    assert result["probe"]["outcome"] == "passed" and clock.sleeps == [2, 2, 2]


def test_a_real_fresh_probe_deletes_the_earlier_job_first() -> None:
    kube, clock = RecordingKube(job(finished=True), complete_at_look=1), Clock()
    run = make_engine(kube, False, clock, fresh=True)
    assert run.probe()["probe"]["outcome"] == "passed"
    assert kube.writes == [("delete", "Job", JOB), ("create", "Job", JOB)]


def test_a_created_probe_job_carries_its_target_and_no_api_token() -> None:
    kube, clock = RecordingKube(complete_at_look=1), Clock()
    make_engine(kube, False, clock).probe()
    created = kube.objects[("Job", JOB)]
    assert created["metadata"]["annotations"] == {probe_job.TARGET_ANNOTATION: probe_job.target_digest(TARGET)}
    assert created["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("earlier", [job(finished=True, target="old-nats.tapio:4222"), job(finished=True, target=None)],
                         ids=["another target", "no target recorded"])
def test_an_earlier_probe_job_of_another_target_is_replaced_not_judged(earlier: dict[str, Any]) -> None:
    kube, clock = RecordingKube(earlier, complete_at_look=1), Clock()
    run = make_engine(kube, False, clock)
    assert run.probe()["probe"]["outcome"] == "passed"
    assert kube.writes == [("delete", "Job", JOB), ("create", "Job", JOB)]
    assert any(step.endswith(f"deleting the earlier probe Job {JOB}: it did not probe {TARGET}") for step in run.steps)


def test_a_check_mode_probe_of_an_earlier_job_of_another_target_says_it_would_replace_it() -> None:
    kube = RecordingKube(job(finished=True, target="old-nats.tapio:4222"))
    run = make_engine(kube, True, Clock())
    run.probe()
    assert kube.writes == []
    assert run.steps[-1].endswith(f"check mode: would delete the earlier probe Job {JOB} (it did not probe {TARGET}) "
                                  "and create a new one")


def test_a_probe_job_that_never_finishes_is_judged_after_its_timeout() -> None:
    """Looks at 2, 4 and 6 s for a 5 s timeout: the last look comes at or after it, as before."""
    kube, clock = RecordingKube(), Clock()
    run = make_engine(kube, False, clock)
    with pytest.raises(engine.EngineError, match=rf"NATS probe failed: job {JOB} did not complete within 5s"):
        run.probe()
    assert clock.sleeps == [2, 2, 2] and kube.job_looks == 3


# -- the gate consumers -----------------------------------------------------------------------
def test_check_mode_creates_and_deletes_no_gate_consumer() -> None:
    nats = RecordingNats()
    run = make_engine(RecordingKube(), True, Clock(), nats)
    run.gates.create_gate_consumer("tapio-gate-tapio-k8s-collector", "tapio.events.k8s")
    run.gates.delete_consumer("tapio-gate-tapio-k8s-collector")
    assert nats.calls == []
    assert [step[10:] for step in run.steps] == [
        "check mode: gate consumer TAPIO_EVENTS/tapio-gate-tapio-k8s-collector not created",
        "check mode: consumer TAPIO_EVENTS/tapio-gate-tapio-k8s-collector not deleted"]


def test_a_real_run_creates_and_deletes_its_gate_consumer() -> None:
    nats = RecordingNats()
    run = make_engine(RecordingKube(), False, Clock(), nats)
    run.gates.create_gate_consumer("tapio-gate-tapio-k8s-collector", "tapio.events.k8s")
    run.gates.delete_consumer("tapio-gate-tapio-k8s-collector")
    assert nats.calls == ["gate consumer tapio-gate-tapio-k8s-collector",
                          "delete consumer tapio-gate-tapio-k8s-collector"]


def test_a_check_mode_batch_switches_and_gates_nothing() -> None:
    kube, nats = RecordingKube(collector()), RecordingNats()
    run = make_engine(kube, True, Clock(), nats)
    assert run.collectors_batch() == {"switched": ["tapio-k8s-collector"], "gated": []}
    assert kube.writes == [] and all(not what.startswith(("gate consumer", "delete consumer")) for what in nats.calls)
    assert any(step.endswith("would patch DaemonSet/tapio-k8s-collector") for step in run.steps), run.steps


# -- a stalled wait is a failed gate ------------------------------------------------------------
def test_a_rollout_that_stalls_fails_the_batch_gate_by_name(tmp_path: Path) -> None:
    """tapio_wait's Stalled is not an EngineError: the batch must still treat it as a failed
    rollout gate (restore what it recorded, then fail naming the gate), not as a crash."""
    kube, clock = RecordingKube(collector()), Clock()
    run = make_engine(kube, False, clock, options={
        "nats_checks": False, "progress_deadline": 6, "full_rollback": False,
        "state": {"configmap": "tapio-migration-state", "dir": str(tmp_path), "labels": {}}})
    with pytest.raises(engine.EngineError, match=r"^Collector\(s\) tapio-k8s-collector failed the rollout gate "
                                                 r"\(rollout of DaemonSet/tapio-k8s-collector: no progress for 6s"):
        run.collectors_batch()
    assert kube.writes == [("patch", "DaemonSet", "tapio-k8s-collector")] and clock.now == 6


def test_an_engine_switched_as_a_pipeline_reads_its_consumers_secret_and_inbox(tmp_path: Path) -> None:
    """A second correlation engine is the pipeline phase on its own Deployment, with
    ``credentials`` naming its extra consumer: the env the switch would write reads that
    consumer's Secret and inbox, not ones named after the Deployment."""
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "tapio-correlation-b", "namespace": NAMESPACE, "generation": 1},
                  "spec": {"template": {"spec": {"containers": [{"name": "pipeline", "env": []}]}}}}
    kube = RecordingKube(deployment)
    shared = {"name": "NATS_USER", "valueFrom": {"secretKeyRef": {"name": "tapio-nats-auth", "key": "NATS_USER"}}}
    run = make_engine(kube, True, Clock(), RecordingNats(), options={
        "pipeline": {"name": "tapio-correlation-b", "container": "pipeline", "credentials": "engine-b"},
        "consumer": "engine-b", "state": {"dir": str(tmp_path)},
        "env": [{"name": "TAPIO_OUTPUT_MODE", "value": "nats"}, shared],
        "workload_secrets": {"shared": "tapio-nats-auth", "prefix": "tapio-nats-auth-", "inbox_env": "NATS_INBOX_PREFIX"}})
    run.pipeline_phase()
    assert kube.writes == []  # check mode
    written = json.dumps(run.diff)
    redacted = load_module_utils("tapio_private")  # env values show as their hashes in a diff
    assert "tapio-nats-auth-engine-b" in written and redacted.redacted_value("_INBOX_engine-b") in written, written
    assert "tapio-nats-auth-tapio-correlation-b" not in written
    assert redacted.redacted_value("_INBOX_tapio-correlation-b") not in written
    assert any("durable consumer engine-b must exist before Deployment/tapio-correlation-b switches" in step
               for step in run.steps), run.steps
