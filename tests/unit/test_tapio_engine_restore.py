"""The engine's restore path (module_utils/tapio_rollout.py: Workloads.restore, restore_targets;
tapio_records.py: Records.retire) against an in-memory API server that keeps resourceVersions
the way the real one does: every write bumps it and a replace that carries an older one is
refused with 409.
The real server's answers are the integration tests'
(tests/integration/test_migration_restore_faults.py)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from module_utils_loader import load_module_utils
from fake_clock import Clock as FakeClock
from engine_inputs import engine_inputs

for _name in ("tapio_nats_config", "tapio_nats", "tapio_nats_session"):
    load_module_utils(_name)
kube = load_module_utils("tapio_kube")
tw = load_module_utils("tapio_workload")
engine = load_module_utils("tapio_engine")
private = load_module_utils("tapio_private")
wait = load_module_utils("tapio_wait")

NATS_ENV = [{"name": "TAPIO_OUTPUT_MODE", "value": "nats"}, {"name": "NATS_URL", "value": "nats://tapio-nats:4222"}]


def collector(env: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "tapio-k8s-collector", "namespace": "tapio", "generation": 2,
                         "labels": {"app.kubernetes.io/name": "tapio-k8s-collector"}},
            "spec": {"template": {"metadata": {"labels": {"app.kubernetes.io/name": "tapio-k8s-collector"}},
                                  "spec": {"containers": [{"name": "k8s-collector", "image": "tapio/k8s:1",
                                                           "env": env}]}}},
            "status": {"observedGeneration": 2, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3,
                       "numberReady": 3}}


def pipeline(env: list[dict[str, Any]], rolled_out: bool) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "tapio-pipeline", "namespace": "tapio", "generation": 5},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "pipeline", "image": "tapio/pipeline:1", "env": env}]}}},
            "status": {"observedGeneration": 5, "replicas": 2 - rolled_out, "updatedReplicas": 1,
                       "readyReplicas": 1, "availableReplicas": 1}}


class FakeApi:
    """The few calls the engine's restore makes, with the API server's optimistic concurrency."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.version = 100
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        for obj in objects:
            self.store(copy.deepcopy(obj))
        self.before_replace: Optional[Callable[[str, str], None]] = None
        self.replaces: list[tuple[str, str, int]] = []  # kind, name, 200 or 409
        self.on_get: Optional[Callable[[str, str], None]] = None
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.creates: list[tuple[str, str]] = []
        # (kind, name, due, version): a controller's write in answer to another client's write
        # (of that version), `lag` seconds later
        self.clock: Optional[FakeClock] = None
        self.reactions: list[tuple[str, str, float, int]] = []
        self.in_flight: list[tuple[str, str, float, int]] = []
        self.lag = 0.05

    def store(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        return copy.deepcopy(obj)

    def annotate(self, kind: str, name: str, key: str, value: str) -> None:
        """Another client's write (a strategic-merge patch of the object's metadata)."""
        obj = self.objects[(kind, name)]
        obj["metadata"].setdefault("annotations", {})[key] = value
        self.store(obj)
        if self.clock is not None:
            self.reactions.append((kind, name, self.clock.now + self.lag, self.version))

    def react(self, landing: Optional[list[tuple[str, str, float, int]]] = None) -> None:
        """Apply the controllers' writes that are due, or those in *landing*."""
        for reaction in list(self.reactions):
            kind, name, due, _ = reaction
            if (reaction in landing) if landing is not None else (self.clock is not None and self.clock.now >= due):
                self.reactions.remove(reaction)
                obj = self.objects[(kind, name)]
                obj["status"] = {**obj.get("status", {}), "observedGeneration": obj["metadata"]["generation"]}
                self.store(obj)

    def get(self, kind: str, namespace: Optional[str], name: str) -> Optional[dict[str, Any]]:
        if self.on_get:
            self.on_get(kind, name)
        self.react()
        # Not due yet: they land while the engine is between this read and its replace.
        self.in_flight = list(self.reactions)
        obj = self.objects.get((kind, name))
        return copy.deepcopy(obj) if obj else None

    def replace(self, kind: str, namespace: Optional[str], name: str, body: dict[str, Any]) -> dict[str, Any]:
        landing, self.in_flight = self.in_flight, []
        if self.before_replace:
            self.before_replace(kind, name)
        self.react(landing)
        current = self.objects[(kind, name)]
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            self.replaces.append((kind, name, 409))
            raise kube.KubeError(f"PUT /apis/apps/v1/namespaces/{namespace}/{kind.lower()}s/{name}: 409 Operation "
                                 "cannot be fulfilled: the object has been modified; please apply your changes to "
                                 "the latest version and try again", 409)
        self.replaces.append((kind, name, 200))
        new = copy.deepcopy(body)
        new["status"] = current.get("status")
        new["metadata"]["generation"] = current["metadata"].get("generation", 1) + (new["spec"] != current["spec"])
        return self.store(new)

    def patch(self, kind: str, namespace: Optional[str], name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((name, copy.deepcopy(body)))
        obj = self.objects[(kind, name)]
        for key, value in body.get("data", {}).items():
            if value is None:
                obj["data"].pop(key, None)
            else:
                obj["data"][key] = value
        return self.store(obj)

    def create(self, kind: str, namespace: Optional[str], body: dict[str, Any]) -> dict[str, Any]:
        """A new object (the state ConfigMap, the digests Secret); 409 when it exists."""
        if (kind, body["metadata"]["name"]) in self.objects:
            raise kube.KubeError(f"POST {kind} {body['metadata']['name']}: 409 AlreadyExists", 409)
        self.creates.append((kind, body["metadata"]["name"]))
        return self.store(copy.deepcopy(body))


def state_configmap(*records: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "tapio-migration-state", "namespace": "tapio"},
            "data": {key: tw.record_text(record) for key, record in records}}


def make_engine(api: FakeApi, tmp_path: Path, collectors: list[str], clock: FakeClock,
                check: bool = False, **options: Any) -> Any:
    params = {
        "namespace": "tapio", "pipeline": {"name": "tapio-pipeline", "container": "pipeline"},
        "collectors": [{"name": name, "container": "k8s-collector", "subject_prefix": "tapio.events.k8s"}
                       for name in collectors],
        "mode_env": "TAPIO_OUTPUT_MODE", "nats_value": "nats", "direct_value": "direct",
        "state": {"configmap": "tapio-migration-state", "dir": str(tmp_path), "labels": {}},
        "container_overrides": {}, "progress_deadline": 10, "poll_interval": 1, "rollback_mode": "restore",
        "drain": False, "consumer": "tapio-pipeline", "stream": "TAPIO_EVENTS",
    }
    return engine.Engine(engine_inputs(**{**params, **options}), api, None, check, clock=clock, sleep=clock.sleep)


def direct_env() -> list[dict[str, Any]]:
    return [{"name": "TAPIO_SERVER_ADDRESS", "value": "tapio-pipeline:9090"}]


def test_a_409_reads_again_and_the_step_and_diff_describe_the_replace_that_was_applied(tmp_path: Path) -> None:
    """Another writer annotates the collector between the engine's read and its replace: the
    server refuses the stale replace (409), the engine reads again and applies to the object as
    it then is. The diff shows that object (the writer's annotation in it), not the stale
    read's, and the final step says the restore needed a second read."""
    record = tw.record_of(collector(direct_env()))
    api = FakeApi(collector(direct_env() + NATS_ENV),
                  state_configmap(("daemonset.tapio-k8s-collector.json", record)))
    writes = iter([1])

    def writer(kind: str, name: str) -> None:
        if next(writes, None):
            api.annotate(kind, name, "faults.tapio.io/writer", "1")

    api.before_replace = writer
    run = make_engine(api, tmp_path, ["tapio-k8s-collector"], FakeClock())
    assert run.workloads.restore(run.collectors[0], record) is True
    assert api.replaces == [("DaemonSet", "tapio-k8s-collector", 409), ("DaemonSet", "tapio-k8s-collector", 200)]
    assert any("DaemonSet/tapio-k8s-collector changed while restoring (409 Conflict); reading it again in 0.2s "
               "(attempt 1 of 5)" in step for step in run.steps), run.steps
    assert run.steps[-1].endswith("kept as changed since the record: metadata.annotations.faults.tapio.io/writer "
                                  "(after 1 409 conflict(s): read again and applied to the object as it then was)")
    stored = api.objects[("DaemonSet", "tapio-k8s-collector")]
    assert stored["spec"] == record["spec"]
    assert stored["metadata"]["annotations"] == {"faults.tapio.io/writer": "1"}
    assert len(run.diff) == 1
    assert '"faults.tapio.io/writer": "1"' in run.diff[0]["before"]
    assert '"faults.tapio.io/writer": "1"' in run.diff[0]["after"]
    nats = f'"value": "{private.redacted_value("nats")}"'  # values shown as their hash only
    assert nats in run.diff[0]["before"] and nats not in run.diff[0]["after"]


def test_a_writer_that_wins_every_attempt_fails_the_restore_naming_the_409s_and_what_to_do(tmp_path: Path) -> None:
    """A writer in a loop that lands between every read and replace: after CONFLICT_RETRIES
    attempts the restore stops with a sentence that says so, and the object is left as it was
    (still migrated, its record not retired)."""
    record = tw.record_of(collector(direct_env()))
    api = FakeApi(collector(direct_env() + NATS_ENV),
                  state_configmap(("daemonset.tapio-k8s-collector.json", record)))
    count = iter(range(1, 100))
    api.before_replace = lambda kind, name: api.annotate(kind, name, "faults.tapio.io/writer", str(next(count)))
    run = make_engine(api, tmp_path, ["tapio-k8s-collector"], FakeClock())
    with pytest.raises(engine.EngineError) as failed:
        run.rollback()
    message = str(failed.value)
    assert message.startswith("DaemonSet/tapio-k8s-collector was not restored: each of 5 attempts met a 409 "
                              "Conflict (another writer changed it between the engine's read and its replace; "
                              "last: PUT /apis/apps/v1/namespaces/tapio/daemonsets/tapio-k8s-collector: 409")
    assert message.endswith("run the rollback again once the other writer has stopped.")
    assert [status for _, _, status in api.replaces] == [409] * 5
    assert run.steps[-1].endswith("DaemonSet/tapio-k8s-collector changed while restoring (409 Conflict; attempt 5 of 5)")
    assert tw.output_mode_of(api.objects[("DaemonSet", "tapio-k8s-collector")], "k8s-collector",
                             "TAPIO_OUTPUT_MODE") == "nats"
    assert api.patches == [], "no record may be retired"
    assert run.diff == []


def test_after_a_409_the_engine_lets_the_controllers_answer_before_it_reads_again(tmp_path: Path) -> None:
    """A writer in a loop changes the pipeline before each of the engine's first four replaces,
    and the Deployment controller answers each change with a status write 50 ms later (an
    annotation moves a Deployment's generation; the lab's controller writes observedGeneration
    30-80 ms later). Reading again at once after a 409 reads the
    object before that answer, which then lands between the read and the replace: the fifth
    attempt meets the answer to the fourth change, and the restore fails. Waiting a moment first
    (0.2 s, doubled each time) reads the answered object: four 409s, then the restore goes
    through (what test_a_409_on_the_restore_path_is_retried_and_the_restore_completes does
    against the real API server)."""
    record = tw.record_of(pipeline(direct_env(), rolled_out=True))
    api = FakeApi(pipeline(direct_env() + NATS_ENV, rolled_out=True),
                  state_configmap(("deployment.tapio-pipeline.json", record)))
    clock = FakeClock()
    api.clock = clock
    writes = iter(range(1, 5))

    def writer(kind: str, name: str) -> None:
        count = next(writes, None)
        if count:
            api.annotate(kind, name, "faults.tapio.io/writer", str(count))

    api.before_replace = writer
    run = make_engine(api, tmp_path, [], clock)
    assert run.workloads.restore(run.pipeline, record) is True, run.steps
    assert [status for _, _, status in api.replaces] == [409, 409, 409, 409, 200], run.steps
    assert clock.now == pytest.approx(0.2 + 0.4 + 0.8 + 1.6)
    assert "Deployment/tapio-pipeline: recorded by an earlier version of the toolkit" in run.steps[0]
    assert [step[10:] for step in run.steps[1:5]] == [
        f"Deployment/tapio-pipeline changed while restoring (409 Conflict); reading it again in {wait}s (attempt {n} "
        "of 5)" for n, wait in ((1, "0.2"), (2, "0.4"), (3, "0.8"), (4, "1.6"))]
    assert api.objects[("Deployment", "tapio-pipeline")]["metadata"]["annotations"] == {"faults.tapio.io/writer": "4"}


def test_a_resumed_restore_waits_for_the_rollout_an_interrupted_run_started_before_retiring(tmp_path: Path) -> None:
    """A run killed after it replaced the pipeline, while its rollout was under way: the next
    run finds the pipeline equal to its record (nothing to replace). It must still wait for
    that rollout before it retires the record, as the interrupted run would have; retiring at
    once would leave a half-rolled pipeline with no record, and the run reporting success."""
    record = tw.record_of(pipeline(direct_env(), rolled_out=True))
    api = FakeApi(pipeline(direct_env(), rolled_out=False),
                  state_configmap(("deployment.tapio-pipeline.json", record)))
    clock = FakeClock()
    rolled_out_when_retired: list[bool] = []

    def controller(kind: str, name: str) -> None:  # the old pod goes at t=3
        obj = api.objects.get(("Deployment", "tapio-pipeline"))
        if kind == "Deployment" and clock.now >= 3:
            obj["status"]["replicas"] = 1

    def patch(kind: str, namespace: Optional[str], name: str, body: dict[str, Any]) -> dict[str, Any]:
        rolled_out_when_retired.append(tw.rollout_state(api.objects[("Deployment", "tapio-pipeline")])[0])
        return FakeApi.patch(api, kind, namespace, name, body)

    api.on_get = controller
    api.patch = patch  # type: ignore[method-assign]
    run = make_engine(api, tmp_path, [], clock)
    run.rollback()
    assert api.replaces == [], "the pipeline already equals its record: nothing to replace"
    assert rolled_out_when_retired == [True], run.steps
    rolled = [i for i, step in enumerate(run.steps) if "Deployment/tapio-pipeline rolled out" in step]
    retired = [i for i, step in enumerate(run.steps) if "retired the records of Deployment/tapio-pipeline" in step]
    assert rolled and retired and rolled[0] < retired[0], run.steps
    data = api.objects[("ConfigMap", "tapio-migration-state")]["data"]
    assert list(data) == ["retired.deployment.tapio-pipeline.json"]
    assert json.loads(data["retired.deployment.tapio-pipeline.json"]) == record


def test_a_resumed_restore_whose_rollout_is_stuck_keeps_the_record(tmp_path: Path) -> None:
    """The same, but the rollout never finishes: the run fails on the rollout and the record
    stays where the next run finds it."""
    record = tw.record_of(pipeline(direct_env(), rolled_out=True))
    api = FakeApi(pipeline(direct_env(), rolled_out=False),
                  state_configmap(("deployment.tapio-pipeline.json", record)))
    run = make_engine(api, tmp_path, [], FakeClock())
    with pytest.raises(wait.Stalled, match="rollout of Deployment/tapio-pipeline: no progress for 10s"):
        run.rollback()
    assert api.patches == []
    assert "deployment.tapio-pipeline.json" in api.objects[("ConfigMap", "tapio-migration-state")]["data"]


# -- preflight: the Secret the pods read NATS's CA from ----------------------------------------
def test_the_ca_secret_must_exist_with_its_key(tmp_path: Path) -> None:
    def secret(data: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tapio-nats-ca", "namespace": "tapio"},
                "data": data}

    def require_ca_secret(api: FakeApi) -> None:
        run = make_engine(api, tmp_path, [], FakeClock(), ca_secret={"name": "tapio-nats-ca", "key": "ca.crt"})
        run.preflight_checks.require_ca_secret(run.inputs.ca_secret)

    require_ca_secret(FakeApi(secret({"ca.crt": "LS0t"})))
    with pytest.raises(engine.EngineError, match=r"Secret tapio/tapio-nats-ca not found: the pods read the CA"):
        require_ca_secret(FakeApi())
    with pytest.raises(engine.EngineError, match=r"Secret tapio/tapio-nats-ca has no key ca.crt"):
        require_ca_secret(FakeApi(secret({"tls.crt": "LS0t"})))


def test_each_workload_secret_must_exist_with_both_keys(tmp_path: Path) -> None:
    def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "tapio"}, "data": data}

    api = FakeApi(secret("auth-tapio-pipeline", {"NATS_USER": "eA==", "NATS_PASSWORD": "eA=="}),
                  secret("auth-tapio-k8s-collector", {"NATS_USER": "eA=="}))
    run = make_engine(api, tmp_path, ["tapio-k8s-collector", "tapio-ebpf-collector"], FakeClock(),
                      workload_secrets={"shared": "auth", "prefix": "auth-"},
                      secret={"name": "auth", "keys": ["NATS_USER", "NATS_PASSWORD"]})
    with pytest.raises(engine.EngineError) as refused:
        run.preflight_checks.require_secrets(run.inputs.secret, [run.pipeline, *run.collectors])
    assert str(refused.value).startswith("Secret tapio/auth-tapio-k8s-collector has no key NATS_PASSWORD; "
                                         "Secret tapio/auth-tapio-ebpf-collector not found: each must exist")
