"""A collector whose new pods never become ready is returned to its recorded state, the run
stops naming it and the gate, the collectors before it stay migrated, those after it are
untouched.

The lab's kwok marks every scheduled pod ready at once (its "fast" stages ignore kwok's
pod-ready delay annotations), so the systemd collector's new pods are made unschedulable
instead: the switch also asks for 64 CPUs (tapio_collectors_container_overrides) on nodes
with 32, so they stay Pending and never become ready, while the old template's pods are
scheduled and ready again after the restore.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from conftest import KubeLab
from migration_lab import COLLECTORS, MigrationLab, make_lab

pytestmark = pytest.mark.integration

NEVER_READY = {"tapio-systemd-collector": {"resources": {"requests": {"cpu": "64", "memory": "64Mi"}}}}


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    yield from make_lab(kube_lab, "unready", tmp_path_factory.mktemp("artifacts"))


def test_unready_collector_is_restored_and_stops_the_run(lab: MigrationLab) -> None:
    originals = {name: lab.daemonset(name) for name in COLLECTORS}
    pipeline = lab.playbook("playbooks/pipeline.yml")
    assert pipeline.rc == 0, pipeline.explain()

    run = lab.playbook("playbooks/collectors.yml", extra={
        "tapio_collectors_order": list(COLLECTORS),
        "tapio_collectors_container_overrides": NEVER_READY,
        "tapio_collectors_progress_deadline": 30,
    })

    assert run.rc != 0, run.explain()
    assert "Collector(s) tapio-systemd-collector failed the rollout gate" in run.stdout, run.explain()
    # the failing collector is back to its recorded (pre-migration) spec
    systemd = lab.daemonset("tapio-systemd-collector")
    assert systemd["spec"]["template"] == originals["tapio-systemd-collector"]["spec"]["template"]
    assert systemd["spec"] == originals["tapio-systemd-collector"]["spec"]
    # the canary before it stays on NATS
    assert lab.env("tapio-k8s-collector")["TAPIO_OUTPUT_MODE"] == "nats"
    # the collector after it was never touched
    ebpf = lab.daemonset("tapio-ebpf-collector")
    assert ebpf["metadata"]["resourceVersion"] == originals["tapio-ebpf-collector"]["metadata"]["resourceVersion"]
    assert ebpf["metadata"]["generation"] == originals["tapio-ebpf-collector"]["metadata"]["generation"]


def test_full_rollback_on_failure_also_restores_the_collectors_already_migrated(lab: MigrationLab) -> None:
    k8s_original = lab.record("DaemonSet", "tapio-k8s-collector")
    run = lab.playbook("playbooks/collectors.yml", extra={
        "tapio_collectors_order": list(COLLECTORS),
        "tapio_collectors_container_overrides": NEVER_READY,
        "tapio_collectors_progress_deadline": 30,
        "tapio_full_rollback_on_failure": True,
    })
    assert run.rc != 0, run.explain()
    assert "Every other collector was returned to its recorded state too." in run.stdout, run.explain()
    assert lab.daemonset("tapio-k8s-collector")["spec"] == k8s_original["spec"]
    assert "TAPIO_OUTPUT_MODE" not in lab.env("tapio-systemd-collector")
