"""The runner's least privilege against the lab's real kube-apiserver (RBAC enforced).

A ServiceAccount bound only to what playbooks/runner_rbac.yml ships (rendered from the list
preflight checks, roles/tapio/vars/main/runner_permissions.yml) runs the whole of migrate.yml (NATS
install included) and rollback.yml; with `get` taken from its `pods/portforward` rule (NATS
reached through the Kubernetes API), preflight's access reviews, asked before the run's Lease is
taken, stop the run naming that verb, and nothing changes (no Lease either).

The same ServiceAccount runs the whole migration with tapio_nats_reach: kubernetes against the
lab's real NATS pods in test_lab_real_nats.py: the pods of this namespace are kwok's, which take
no port-forward, so the run here reaches the lab's loopback servers directly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from conftest import KubeLab
from migration_lab import COLLECTORS, MigrationLab, make_lab, runner_kubeconfig

pytestmark = pytest.mark.integration

ROLE = "tapio-nats-migration-runner"
LEASE = "tapio-nats-migration"


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    for lab in make_lab(kube_lab, "rbac", tmp_path_factory.mktemp("artifacts")):
        lab.nats_volumes()  # the run installs NATS into the test namespace
        yield lab


def as_runner(kubeconfig: Path) -> dict:
    # NATS installed by the run into the test namespace; the probe is judged unproven on kwok.
    return {"tapio_kubeconfig": str(kubeconfig), "tapio_kube_context": "runner", "tapio_nats_install": True,
            "migration_preflight_probe_timeout": 20}


def lease_exists(lab: MigrationLab) -> bool:
    try:
        client.CoordinationV1Api(lab.api).read_namespaced_lease(LEASE, lab.namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def test_the_shipped_role_runs_the_migration_and_one_verb_less_stops_preflight(lab: MigrationLab,
                                                                              tmp_path: Path) -> None:
    # NATS through the Kubernetes API: the Role gets get and create on pods/portforward, named.
    reach = {"tapio_nats_reach": "kubernetes"}
    granted = lab.playbook("playbooks/runner_rbac.yml", extra=reach)
    assert granted.rc == 0, granted.explain()
    kubeconfig = runner_kubeconfig(lab.kube, lab.core, lab.namespace, tmp_path / "runner.kubeconfig")
    roles = client.RbacAuthorizationV1Api(lab.api)  # the admin's client, for the Role itself

    # One verb less: the kubernetes client's WebSocket forward is authorized as get. Preflight's
    # access reviews name it before the Lease is taken; nothing changes.
    role = roles.read_namespaced_role(ROLE, lab.namespace)
    rule = next(r for r in role.rules if r.resources == ["pods/portforward"])
    assert rule.verbs == ["get", "create"] and rule.resource_names == [f"tapio-nats-{i}" for i in range(3)]
    rule.verbs = ["create"]
    roles.replace_namespaced_role(ROLE, lab.namespace, role)
    versions = lab.settled_resource_versions()
    refused = lab.playbook("migrate.yml", extra={**as_runner(kubeconfig), **reach})
    assert refused.rc != 0, refused.explain()
    assert ("The run's identity lacks 3 permission(s) the run needs: "
            f"get pods/portforward tapio-nats-0 in namespace {lab.namespace}; ") in refused.stdout, refused.explain()
    assert "Take the run's lock" not in refused.stdout, refused.explain()
    assert not lease_exists(lab)
    assert lab.resource_versions() == versions
    assert lab.state_configmap() is None

    # The shipped Role again, for direct reach: the whole run passes.
    regranted = lab.playbook("playbooks/runner_rbac.yml")
    assert regranted.rc == 0, regranted.explain()
    assert all(r.resources != ["pods/portforward"] for r in roles.read_namespaced_role(ROLE, lab.namespace).rules)
    migrated = lab.playbook("migrate.yml", extra=as_runner(kubeconfig))
    assert migrated.rc == 0, migrated.explain()
    assert "permission(s) granted" in migrated.stdout, migrated.explain()
    assert all(lab.env(name)["TAPIO_OUTPUT_MODE"] == "nats" for name in (*COLLECTORS, "tapio-pipeline"))
    assert lab.apps.read_namespaced_stateful_set("tapio-nats", lab.namespace).status.ready_replicas == 3

    restored = lab.playbook("rollback.yml", extra={**as_runner(kubeconfig), "tapio_rollback_mode": "restore"})
    assert restored.rc == 0, restored.explain()
    assert all("TAPIO_OUTPUT_MODE" not in lab.env(name) for name in (*COLLECTORS, "tapio-pipeline"))
