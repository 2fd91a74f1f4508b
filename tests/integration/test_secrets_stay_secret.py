"""Secrets stay secret: migrate.yml and rollback.yml at -vvv --diff, then every place a secret
could land is scanned for every NATS password (the toolkit's, each workload's own user's and
the routes'; plain and base64): the runs' output, every file
they wrote (records, report, timeline), the state ConfigMap, and every annotation and label of
every object in the namespace (a client-side apply's last-applied-configuration would hold a
Secret's stringData). The Secret's own data is the one place it belongs.
"""
from __future__ import annotations

import base64
import json
from typing import Iterator

import pytest
import yaml

from conftest import REPO_ROOT, KubeLab, NatsLab
from migration_lab import MigrationLab, make_lab

pytestmark = pytest.mark.integration
LAB_NATS_VARS = REPO_ROOT / "inventories/lab/group_vars/all/nats.yml"


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    for lab in make_lab(kube_lab, "secret", tmp_path_factory.mktemp("artifacts")):
        lab.nats_volumes()  # the run installs NATS into the test namespace
        yield lab


def forms(secret: str) -> list[str]:
    """The password as it could leak: plain, base64 (a Secret's data, also quoted for
    nats.conf), and URL-embedded."""
    return [secret, base64.b64encode(secret.encode()).decode(), base64.b64encode(json.dumps(secret).encode()).decode(),
            f":{secret}@"]


def places(lab: MigrationLab, outputs: dict[str, str]) -> dict[str, str]:
    """Every text a secret could land in, by where it is."""
    found = dict(outputs)
    for path in sorted(p for p in lab.artifacts.rglob("*") if p.is_file() and p.suffix != ".png"):
        found[f"file {path.relative_to(lab.artifacts)}"] = path.read_text(errors="replace")
    for key, value in (lab.state_configmap() or {}).items():
        found[f"state ConfigMap key {key}"] = value
    listers = {
        "DaemonSet": lab.apps.list_namespaced_daemon_set, "Deployment": lab.apps.list_namespaced_deployment,
        "StatefulSet": lab.apps.list_namespaced_stateful_set, "ReplicaSet": lab.apps.list_namespaced_replica_set,
        "ConfigMap": lab.core.list_namespaced_config_map, "Secret": lab.core.list_namespaced_secret,
        "Service": lab.core.list_namespaced_service, "Pod": lab.core.list_namespaced_pod,
        "Job": lab.batch.list_namespaced_job,
    }
    for kind, lister in listers.items():
        for item in lister(lab.namespace).items:
            metadata = item.metadata
            found[f"{kind} {metadata.name} annotations"] = repr(metadata.annotations or {})
            found[f"{kind} {metadata.name} labels"] = repr(metadata.labels or {})
            if kind in ("DaemonSet", "Deployment", "StatefulSet", "Pod"):
                # Pod specs: env values in plain text (the password must come by secretKeyRef).
                found[f"{kind} {metadata.name} spec"] = repr(lab.api.sanitize_for_serialization(item.spec))
            if kind == "ConfigMap":
                found[f"ConfigMap {metadata.name} data"] = repr(item.data or {})
    return found


def test_no_password_in_output_artifacts_records_or_annotations(lab: MigrationLab, nats_lab: NatsLab) -> None:
    verbose = ("-vvv", "--diff")
    # With a user per workload and route authentication: every password the install writes.
    install = {"tapio_nats_install": True, "tapio_nats_component_users": True}
    migrated = lab.playbook("migrate.yml", extra=install, args=verbose)
    assert migrated.rc == 0, migrated.explain()
    # The install wrote the Secrets (their data is where the passwords belong).
    def secret_value(name: str, key: str) -> str:
        return base64.b64decode(lab.core.read_namespaced_secret(name, lab.namespace).data[key]).decode()

    assert secret_value("tapio-nats-auth", "NATS_PASSWORD") == nats_lab.password
    passwords = {"the NATS password": nats_lab.password, "the routes' password": secret_value("tapio-nats-routes", "password")}
    for name, password in yaml.safe_load(LAB_NATS_VARS.read_text())["tapio_nats_component_passwords"].items():
        assert secret_value(f"tapio-nats-auth-{name}", "NATS_PASSWORD") == password
        passwords[f"{name}'s password"] = password
    restored = lab.playbook("rollback.yml", extra={**install, "tapio_rollback_mode": "restore"}, args=verbose)
    assert restored.rc == 0, restored.explain()
    # -vvv really is verbose: module arguments are shown (masked), so the scan means something.
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in migrated.stdout or "********" in migrated.stdout, \
        migrated.stdout[-3000:]

    texts = places(lab, {"migrate.yml -vvv --diff output": migrated.stdout + migrated.stderr,
                         "rollback.yml -vvv --diff output": restored.stdout + restored.stderr})
    assert any(where.startswith("file ") for where in texts) and any("state ConfigMap" in w for w in texts)
    leaks = [f"{what} in {where}: {form!r}" for what, password in passwords.items() for form in forms(password)
             for where, text in texts.items() if form in text]
    assert not leaks, "NATS passwords leaked:\n" + "\n".join(leaks)


def test_credentials_in_a_nats_url_are_refused_before_anything_runs(lab: MigrationLab, nats_lab: NatsLab) -> None:
    versions = lab.settled_resource_versions()
    url = f"nats://tapio:{nats_lab.password}@127.0.0.1:4222"
    run = lab.playbook("migrate.yml", extra={"tapio_nats_servers": [url]}, args=("-vvv",))
    assert run.rc != 0, run.explain()
    assert "NATS URL(s) in lab's tapio_nats_servers / tapio_nats_url carry credentials" in run.stdout, run.explain()
    assert nats_lab.password not in run.stdout + run.stderr, "the refused URL's password was echoed"
    assert lab.resource_versions() == versions
