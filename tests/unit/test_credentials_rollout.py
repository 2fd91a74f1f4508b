"""Unit tests for library/tapio_credentials_rollout.py: which workloads a changed Secret
restarts, the patch, check mode, and a re-run that only waits. The API server's side is
tests/integration/test_lab_real_nats.py."""
from __future__ import annotations

import copy
from typing import Any, Optional

from conftest import REPO_ROOT
from module_utils_loader import load_file, load_module_utils

load_module_utils("tapio_wait")
load_module_utils("tapio_kube")
load_module_utils("tapio_workload")
rollout = load_file("tapio_credentials_rollout", REPO_ROOT / "library" / "tapio_credentials_rollout.py")

SECRET = "tapio-nats-auth-tapio-ebpf-collector"
ENTRY = {"kind": "DaemonSet", "name": "tapio-ebpf-collector", "namespace": "tapio", "secret": SECRET,
         "user": "tapio-ebpf-collector-rotated"}
ANNOTATION = "tapio.io/nats-user"


def daemonset(reads: Optional[str] = SECRET, annotation: Optional[str] = None, rolled: bool = True) -> dict[str, Any]:
    env = [{"name": "LOG_LEVEL", "value": "info"}]
    if reads:
        env.append({"name": "NATS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": reads, "key": "NATS_PASSWORD"}}})
    template: dict[str, Any] = {"spec": {"containers": [{"name": "ebpf-collector", "env": env}]}}
    if annotation:
        template["metadata"] = {"annotations": {ANNOTATION: annotation}}
    wanted = 3
    return {"kind": "DaemonSet", "metadata": {"name": "tapio-ebpf-collector", "generation": 4},
            "spec": {"template": template},
            "status": {"observedGeneration": 4, "desiredNumberScheduled": wanted, "numberReady": wanted,
                       "updatedNumberScheduled": wanted if rolled else 1, "numberUnavailable": 0}}


class FakeKube:
    """One DaemonSet; a patch sets its annotation and the controller's rollout completes."""

    def __init__(self, workload: Optional[dict[str, Any]]) -> None:
        self.workload = workload
        self.patches: list[dict[str, Any]] = []

    def get(self, kind: str, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return copy.deepcopy(self.workload)

    def patch(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.workload is not None
        self.patches.append(body)
        self.workload["spec"]["template"].setdefault("metadata", {}).setdefault("annotations", {}).update(
            body["spec"]["template"]["metadata"]["annotations"])
        return self.workload

    def request(self, method: str, path: str, not_found_ok: bool = False) -> Optional[dict[str, Any]]:
        assert method == "GET" and path.endswith("/daemonsets/tapio-ebpf-collector"), path
        return copy.deepcopy(self.workload)


PARAMS = {"workloads": [ENTRY], "annotation": ANNOTATION, "progress_deadline": 5.0, "poll_interval": 0.01}


def test_a_workload_reading_the_secret_is_restarted_for_its_new_user_and_waited_for() -> None:
    kube, steps, restarted = FakeKube(daemonset()), [], []
    skipped, diffs = rollout.roll(kube, PARAMS, False, steps, restarted)
    assert kube.patches == [{"spec": {"template": {"metadata": {"annotations": {ANNOTATION: ENTRY["user"]}}}}}]
    assert restarted == ["DaemonSet tapio/tapio-ebpf-collector"] and skipped == []
    assert diffs[0]["before"] == {"annotation": None} and diffs[0]["after"] == {"annotation": ENTRY["user"]}
    assert any("rolled out" in step and "3/3 updated" in step for step in steps), steps


def test_check_mode_reports_the_restart_and_writes_nothing() -> None:
    kube, restarted = FakeKube(daemonset()), []
    rollout.roll(kube, PARAMS, True, [], restarted)
    assert kube.patches == [] and restarted == ["DaemonSet tapio/tapio-ebpf-collector"]


def test_a_re_run_only_waits() -> None:
    kube, restarted = FakeKube(daemonset(annotation=ENTRY["user"])), []
    skipped, _ = rollout.roll(kube, PARAMS, False, [], restarted)
    assert kube.patches == [] and restarted == [] and skipped == []


def test_workloads_that_do_not_read_the_secret_or_are_absent_are_left_alone() -> None:
    for workload, why in ((daemonset(reads=None), f"does not read the Secret {SECRET}"), (None, "not found")):
        kube, restarted = FakeKube(workload), []
        skipped, _ = rollout.roll(kube, PARAMS, False, [], restarted)
        assert kube.patches == [] and restarted == []
        assert skipped == [f"DaemonSet tapio/tapio-ebpf-collector - {why}"]


def test_env_from_the_whole_secret_counts_as_reading_it() -> None:
    workload = daemonset(reads=None)
    workload["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": SECRET}}]
    assert rollout.reads_secret(workload, SECRET) and not rollout.reads_secret(workload, "other")
