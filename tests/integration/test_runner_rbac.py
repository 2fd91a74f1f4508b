"""The runner's least privilege against the lab's real kube-apiserver (RBAC enforced).

A ServiceAccount bound only to what playbooks/runner_rbac.yml ships (rendered from the list
preflight checks, roles/tapio/vars/main/runner_permissions.yml) runs the whole of migrate.yml (NATS
install included) and rollback.yml; with one verb taken from its Role, preflight stops the run
naming that verb, and nothing changes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import yaml
from kubernetes import client

from conftest import KubeLab
from migration_lab import COLLECTORS, MigrationLab, make_lab

pytestmark = pytest.mark.integration

RUNNER = "tapio-migration-runner"
ROLE = "tapio-nats-migration-runner"


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    for lab in make_lab(kube_lab, "rbac", tmp_path_factory.mktemp("artifacts")):
        lab.nats_volumes()  # the run installs NATS into the test namespace
        yield lab


def runner_kubeconfig(lab: MigrationLab, path: Path) -> Path:
    """A kubeconfig for the runner's ServiceAccount: the lab's cluster, a TokenRequest token."""
    token = lab.core.create_namespaced_service_account_token(
        RUNNER, lab.namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    admin = yaml.safe_load(lab.kube.kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == lab.kube.context)["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster], "current-context": "runner",
        "users": [{"name": "runner", "user": {"token": token}}],
        "contexts": [{"name": "runner", "context": {"cluster": cluster["name"], "user": "runner"}}]}))
    return path


def as_runner(kubeconfig: Path) -> dict:
    # NATS installed by the run into the test namespace; the probe is judged unproven on kwok.
    return {"tapio_kubeconfig": str(kubeconfig), "tapio_kube_context": "runner", "tapio_nats_install": True,
            "migration_preflight_probe_timeout": 20}


def test_the_shipped_role_runs_the_migration_and_one_verb_less_stops_preflight(lab: MigrationLab,
                                                                              tmp_path: Path) -> None:
    granted = lab.playbook("playbooks/runner_rbac.yml")
    assert granted.rc == 0, granted.explain()
    kubeconfig = runner_kubeconfig(lab, tmp_path / "runner.kubeconfig")
    roles = client.RbacAuthorizationV1Api(lab.api)  # the admin's client, for the Role itself

    # One verb less: the collectors could not be switched. Preflight names it; nothing changes.
    role = roles.read_namespaced_role(ROLE, lab.namespace)
    rule = next(r for r in role.rules if r.resources == ["daemonsets"])
    rule.verbs = [v for v in rule.verbs if v != "patch"]
    roles.replace_namespaced_role(ROLE, lab.namespace, role)
    versions = lab.settled_resource_versions()
    refused = lab.playbook("migrate.yml", extra=as_runner(kubeconfig))
    assert refused.rc != 0, refused.explain()
    assert ("The run's identity lacks 1 permission(s) the run needs: "
            f"patch daemonsets.apps in namespace {lab.namespace}.") in refused.stdout, refused.explain()
    assert lab.resource_versions() == versions
    assert lab.state_configmap() is None

    # The shipped Role again (a re-run of the playbook puts the verb back): the whole run passes.
    regranted = lab.playbook("playbooks/runner_rbac.yml")
    assert regranted.rc == 0, regranted.explain()
    assert "patch" in next(r for r in roles.read_namespaced_role(ROLE, lab.namespace).rules
                           if r.resources == ["daemonsets"]).verbs
    migrated = lab.playbook("migrate.yml", extra=as_runner(kubeconfig))
    assert migrated.rc == 0, migrated.explain()
    assert "permission(s) granted" in migrated.stdout, migrated.explain()
    assert all(lab.env(name)["TAPIO_OUTPUT_MODE"] == "nats" for name in (*COLLECTORS, "tapio-pipeline"))
    assert lab.apps.read_namespaced_stateful_set("tapio-nats", lab.namespace).status.ready_replicas == 3

    restored = lab.playbook("rollback.yml", extra={**as_runner(kubeconfig), "tapio_rollback_mode": "restore"})
    assert restored.rc == 0, restored.explain()
    assert all("TAPIO_OUTPUT_MODE" not in lab.env(name) for name in (*COLLECTORS, "tapio-pipeline"))
