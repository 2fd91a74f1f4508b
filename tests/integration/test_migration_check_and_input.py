"""--check --diff changes nothing; bad input fails with a clear message before any change."""
from __future__ import annotations

from typing import Iterator

import pytest

from ansible.module_utils.tapio_private import redacted_value  # conftest maps module_utils/ there
from conftest import KubeLab
from migration_lab import PHASES, MigrationLab, make_lab

pytestmark = pytest.mark.integration

COLLECTORS = [
    {"name": "tapio-k8s-collector", "container": "k8s-collector", "subject_prefix": "tapio.events.k8s"},
    {"name": "tapio-systemd-collector", "container": "systemd-collector", "subject_prefix": "tapio.events.systemd"},
    {"name": "tapio-ebpf-collector", "container": "ebpf-collector", "subject_prefix": "tapio.events.ebpf"},
]


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    yield from make_lab(kube_lab, "check", tmp_path_factory.mktemp("artifacts"))


def test_check_diff_prints_the_plan_and_changes_nothing(lab: MigrationLab) -> None:
    versions = lab.settled_resource_versions()
    run = lab.playbook(*PHASES[:3], "playbooks/report.yml", args=("--check", "--diff"))
    assert run.rc == 0, run.explain()
    # The diff shows the env entry the switch sets, its literal value as a hash only.
    assert f'"value": "{redacted_value("tapio.events.ebpf")}"' in run.stdout, run.explain()
    assert '"value": "tapio.events.ebpf"' not in run.stdout, run.explain()
    assert lab.resource_versions() == versions
    assert lab.state_configmap() is None
    assert not (lab.artifacts / "state").exists()


def test_check_diff_after_a_migration_changes_nothing_either(lab: MigrationLab) -> None:
    run = lab.playbook(*PHASES[1:3])
    assert run.rc == 0, run.explain()
    versions = lab.settled_resource_versions()
    for extra in ({"tapio_rollback_mode": "restore"}, {"tapio_rollback_mode": "switch"}):
        check = lab.playbook("rollback.yml", extra=extra, args=("--check", "--diff"))
        assert check.rc == 0, check.explain()
        assert f'"value": "{redacted_value("nats")}"' in check.stdout, check.explain()
        assert '"value": "nats"' not in check.stdout, check.explain()
        assert lab.resource_versions() == versions
    again = lab.playbook(*PHASES, args=("--check", "--diff"))
    assert again.rc == 0, again.explain()
    assert lab.resource_versions() == versions


@pytest.mark.parametrize(("collectors", "playbooks", "message"), [
    # Every phase playbook imports the boilerplate checks first, which name the missing key.
    ([{"container": "k8s-collector", "subject_prefix": "tapio.events.k8s"}, *COLLECTORS[1:]],
     PHASES, "missing required arguments: name found in tapio_collectors"),
    ([{"container": "k8s-collector", "subject_prefix": "tapio.events.k8s"}, *COLLECTORS[1:]],
     ["playbooks/collectors.yml"], "missing required arguments: name"),
    ([*COLLECTORS, {"name": "tapio-nope-collector", "container": "nope", "subject_prefix": "tapio.events.nope"}],
     PHASES, "DaemonSet tapio-nope-collector not found"),
    ([*COLLECTORS, {"name": "tapio-nope-collector", "container": "nope", "subject_prefix": "tapio.events.nope"}],
     ["playbooks/collectors.yml"], ": tapio-nope-collector. Check tapio_namespace"),
    ([{**COLLECTORS[0], "container": "wrong"}, *COLLECTORS[1:]],
     PHASES, "DaemonSet tapio-k8s-collector has no container wrong"),
], ids=["no-name-migrate", "no-name-collectors", "missing-ds-migrate", "missing-ds-collectors", "wrong-container"])
def test_bad_input_fails_clearly_before_any_change(lab: MigrationLab, collectors: list, playbooks: list,
                                                   message: str) -> None:
    versions = lab.settled_resource_versions()
    run = lab.playbook(*playbooks, extra={"tapio_collectors": collectors, "tapio_collectors_require_pipeline": False})
    assert run.rc != 0, run.explain()
    assert message in run.stdout, run.explain()
    assert lab.resource_versions() == versions


@pytest.mark.parametrize(("strategy", "message"), [
    ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
     "allows maxUnavailable 1 with 1 replica(s): its rollout may leave no ready pipeline pod"),
    ({"type": "Recreate", "rollingUpdate": None}, "uses strategy Recreate: no pipeline pod is ready during its rollout"),
], ids=["max-unavailable", "recreate"])
def test_preflight_flags_a_pipeline_strategy_without_a_ready_pod(lab: MigrationLab, strategy: dict, message: str) -> None:
    original = lab.deployment()["spec"]["strategy"]
    lab.apps.patch_namespaced_deployment("tapio-pipeline", lab.namespace, {"spec": {"strategy": strategy}})
    try:
        versions = lab.settled_resource_versions()
        run = lab.playbook("playbooks/preflight.yml", extra={"migration_preflight_probe": False})
        assert run.rc != 0, run.explain()
        assert message in run.stdout, run.explain()
        assert lab.resource_versions() == versions
    finally:
        lab.apps.patch_namespaced_deployment("tapio-pipeline", lab.namespace,
                                             {"spec": {"strategy": {**original, "type": original["type"]}}})


def test_preflight_defers_nats_checks_until_this_run_installs_nats(lab: MigrationLab) -> None:
    unreachable = {"tapio_migration_nats_checks": True, "tapio_nats_servers": ["nats://127.0.0.1:1"],
                   "tapio_nats_monitor_urls": []}
    deferred = lab.playbook("playbooks/preflight.yml", extra={**unreachable, "tapio_nats_install": True})
    assert deferred.rc == 0, deferred.explain()
    assert f"NATS is not installed yet (no StatefulSet {lab.namespace}/tapio-nats)" in deferred.stdout, deferred.explain()
    # NATS provided from outside must be reachable before anything changes
    external = lab.playbook("playbooks/preflight.yml", extra={**unreachable, "tapio_nats_install": False,
                                                             "migration_preflight_probe": False})
    assert external.rc != 0, external.explain()
    assert "nats://127.0.0.1:1" in external.stdout, external.explain()
    assert "NATS is not installed yet" not in external.stdout, external.explain()
