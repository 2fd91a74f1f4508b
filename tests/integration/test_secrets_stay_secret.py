"""Secrets stay secret: migrate.yml and rollback.yml at -vvv --diff, then every place a secret
could land is scanned for the NATS password (plain and base64): the runs' output, every file
they wrote (records, report, timeline), the state ConfigMap, and every annotation and label of
every object in the namespace (a client-side apply's last-applied-configuration would hold a
Secret's stringData). The Secret's own data is the one place it belongs.
"""
from __future__ import annotations

import base64
from typing import Iterator

import pytest

from conftest import KubeLab, NatsLab
from migration_lab import MigrationLab, make_lab

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    for lab in make_lab(kube_lab, "secret", tmp_path_factory.mktemp("artifacts")):
        lab.nats_volumes()  # the run installs NATS into the test namespace
        yield lab


def forms(secret: str) -> list[str]:
    """The password as it could leak: plain, base64 (a Secret's data), and URL-embedded."""
    return [secret, base64.b64encode(secret.encode()).decode(), f":{secret}@"]


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
    migrated = lab.playbook("migrate.yml", extra={"tapio_nats_install": True}, args=verbose)
    assert migrated.rc == 0, migrated.explain()
    # The install wrote the Secret (its data is where the password belongs).
    secret = lab.core.read_namespaced_secret("tapio-nats-auth", lab.namespace)
    assert base64.b64decode(secret.data["NATS_PASSWORD"]).decode() == nats_lab.password
    restored = lab.playbook("rollback.yml", extra={"tapio_nats_install": True, "tapio_rollback_mode": "restore"},
                            args=verbose)
    assert restored.rc == 0, restored.explain()
    # -vvv really is verbose: module arguments are shown (masked), so the scan means something.
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in migrated.stdout or "********" in migrated.stdout, \
        migrated.stdout[-3000:]

    texts = places(lab, {"migrate.yml -vvv --diff output": migrated.stdout + migrated.stderr,
                         "rollback.yml -vvv --diff output": restored.stdout + restored.stderr})
    assert any(where.startswith("file ") for where in texts) and any("state ConfigMap" in w for w in texts)
    leaks = [f"{where}: {form!r}" for where, text in texts.items() for form in forms(nats_lab.password)
             if form in text]
    assert not leaks, "the NATS password leaked into:\n" + "\n".join(leaks)


def test_credentials_in_a_nats_url_are_refused_before_anything_runs(lab: MigrationLab, nats_lab: NatsLab) -> None:
    versions = lab.settled_resource_versions()
    url = f"nats://tapio:{nats_lab.password}@127.0.0.1:4222"
    run = lab.playbook("migrate.yml", extra={"tapio_nats_servers": [url]}, args=("-vvv",))
    assert run.rc != 0, run.explain()
    assert "NATS URL(s) in lab's tapio_nats_servers / tapio_nats_url carry credentials" in run.stdout, run.explain()
    assert nats_lab.password not in run.stdout + run.stderr, "the refused URL's password was echoed"
    assert lab.resource_versions() == versions
