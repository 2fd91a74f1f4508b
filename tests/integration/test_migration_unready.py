"""With tapio_full_rollback_on_failure, a collector whose new pods never become ready stops the
run naming it and the gate, and every collector already migrated is returned to its recorded
state too. (Without it - the failing collector restored, the ones before it left on NATS, the
ones after it untouched, no event lost - is the molecule scenario never_ready, a full
migrate.yml run.)

The lab's kwok marks every scheduled pod ready at once (its "fast" stages ignore kwok's
pod-ready delay annotations), so the systemd collector's new pods are made unschedulable
instead: the switch also asks for 64 CPUs (tapio_collectors_container_overrides) on nodes
with 32, so they stay Pending and never become ready, while the old template's pods are
scheduled and ready again after the restore.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from conftest import KubeLab
from migration_lab import COLLECTORS, MigrationLab, make_lab

pytestmark = pytest.mark.integration

NEVER_READY = {"tapio-systemd-collector": {"resources": {"requests": {"cpu": "64", "memory": "64Mi"}}}}


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    yield from make_lab(kube_lab, "unready", tmp_path_factory.mktemp("artifacts"))


def test_full_rollback_on_failure_also_restores_the_collectors_already_migrated(lab: MigrationLab) -> None:
    originals = {name: lab.daemonset(name) for name in COLLECTORS}
    pipeline = lab.playbook("playbooks/pipeline.yml")
    assert pipeline.rc == 0, pipeline.explain()
    run = lab.playbook("playbooks/collectors.yml", extra={
        "tapio_collectors_order": list(COLLECTORS),
        "tapio_collectors_container_overrides": NEVER_READY,
        "tapio_collectors_progress_deadline": 30,
        "tapio_full_rollback_on_failure": True,
    })
    assert run.rc != 0, run.explain()
    assert "Collector(s) tapio-systemd-collector failed the rollout gate" in run.stdout, run.explain()
    assert "Every other collector was returned to its recorded state too." in run.stdout, run.explain()
    # the canary was migrated before the failure: it is back to its pre-migration spec too
    for name in ("tapio-k8s-collector", "tapio-systemd-collector"):
        assert lab.daemonset(name)["spec"] == originals[name]["spec"], name
    assert "TAPIO_OUTPUT_MODE" not in lab.env("tapio-systemd-collector")
    # the collector after the failing one was never touched
    ebpf = lab.daemonset("tapio-ebpf-collector")
    assert ebpf["metadata"]["generation"] == originals["tapio-ebpf-collector"]["metadata"]["generation"]
