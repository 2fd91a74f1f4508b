"""The migration's life cycle in a namespace of its own, step by step (the steps share the
namespace and run in file order): migrate, migrate again, rollback restore, rollback again,
migrate again, rollback switch."""
from __future__ import annotations

import hashlib
import json
from typing import Iterator

import pytest

from conftest import KubeLab
from migration_lab import COLLECTORS, CONTAINERS, MigrationLab, make_lab

pytestmark = pytest.mark.integration

SECRET_REF = {"secret_key_ref": {"key": "NATS_PASSWORD", "name": "tapio-nats-auth"}}


def template_hash(workload: dict) -> str:
    """The pod template's hash as the toolkit's provenance states it (an independent copy)."""
    return hashlib.sha256(json.dumps(workload["spec"]["template"], sort_keys=True).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    yield from make_lab(kube_lab, "life", tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def originals(lab: MigrationLab) -> dict[str, dict]:
    """The workloads as the lab created them, before any phase ran."""
    return {name: lab.workload(name) for name in (*COLLECTORS, "tapio-pipeline")}


def test_migrate_puts_pipeline_and_collectors_on_nats(lab: MigrationLab, originals: dict[str, dict]) -> None:
    run = lab.migrate()
    assert run.rc == 0, run.explain()
    # This lab run has one shared user and installs NATS in clear, opted out by name: preflight says so.
    assert "OPT-OUT shared_user: every workload connects as the toolkit's own user" in run.stdout, run.explain()
    assert "OPT-OUT plaintext_clients: client connections to NATS are not encrypted" in run.stdout, run.explain()
    assert "OPT-OUT plaintext_routes: the routes between the NATS servers are not encrypted" in run.stdout, run.explain()
    pipeline = lab.env("tapio-pipeline")
    assert pipeline["TAPIO_OUTPUT_MODE"] == "nats"
    assert pipeline["NATS_URL"] == "nats://tapio-nats:4222"
    assert pipeline["CONSUME_SUBJECTS"] == "tapio.events.>"
    for name, prefix in zip(COLLECTORS, ("tapio.events.k8s", "tapio.events.systemd", "tapio.events.ebpf")):
        env = lab.env(name)
        assert env["TAPIO_OUTPUT_MODE"] == "nats", name
        assert env["NATS_URL"] == "nats://tapio-nats:4222", name
        assert env["NATS_SUBJECT_PREFIX"] == prefix, name
        assert env["LOG_LEVEL"] == "info", name
        # credentials by reference only; the direct-mode address is kept for the way back
        assert env["NATS_PASSWORD"] == {"secretKeyRef": {"key": "NATS_PASSWORD", "name": "tapio-nats-auth"}}, name
        assert env["NATS_USER"] == {"secretKeyRef": {"key": "NATS_USER", "name": "tapio-nats-auth"}}, name
        assert "TAPIO_SERVER_ADDRESS" in env, name


def test_migrate_keeps_sidecar_value_from_env_from_volumes_and_annotations(lab: MigrationLab,
                                                                           originals: dict[str, dict]) -> None:
    before, after = originals["tapio-ebpf-collector"], lab.daemonset("tapio-ebpf-collector")
    assert after["metadata"]["annotations"]["tapio.io/owner"] == "platform-team"
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert after["spec"]["template"]["metadata"] == before["spec"]["template"]["metadata"]
    assert after["spec"]["template"]["spec"]["volumes"] == before["spec"]["template"]["spec"]["volumes"]
    old, new = (dict((c["name"], c) for c in obj["spec"]["template"]["spec"]["containers"]) for obj in (before, after))
    assert new["log-shipper"] == old["log-shipper"]
    assert new["ebpf-collector"]["envFrom"] == old["ebpf-collector"]["envFrom"]
    assert new["ebpf-collector"]["volumeMounts"] == old["ebpf-collector"]["volumeMounts"]
    node_name = {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}}
    assert node_name in new["ebpf-collector"]["env"]
    # only the owned env entries differ
    untouched = [e for e in old["ebpf-collector"]["env"] if e["name"] != "LOG_LEVEL"]
    assert all(e in new["ebpf-collector"]["env"] for e in untouched)


def test_state_is_recorded_in_the_cluster_and_as_artifacts(lab: MigrationLab, originals: dict[str, dict]) -> None:
    for name in (*COLLECTORS, "tapio-pipeline"):
        kind = "Deployment" if name == "tapio-pipeline" else "DaemonSet"
        record = lab.record(kind, name)
        assert record["spec"] == originals[name]["spec"], name
        local = json.loads((lab.artifacts / "state" / lab.namespace / f"{kind.lower()}-{name}.json").read_text())
        assert local == record, name
        # Beside the record: which run took it, from which object (uid, generation, template hash).
        provenance = lab.provenance(kind, name)
        metadata = originals[name]["metadata"]
        assert (provenance["uid"], provenance["generation"]) == (metadata["uid"], metadata["generation"]), name
        assert provenance["resource_version"] == metadata["resourceVersion"], name
        assert provenance["pod_template_hash"] == template_hash(record), name
        assert "@" in provenance["recorded_by"] and provenance["recorded_at"].endswith("Z"), name
        provenance_file = lab.artifacts / "state" / lab.namespace / f"{kind.lower()}-{name}.provenance.json"
        assert json.loads(provenance_file.read_text()) == provenance, name
    configmap = lab.core.read_namespaced_config_map("tapio-migration-state", lab.namespace)
    assert configmap.metadata.labels["app.kubernetes.io/managed-by"] == "tapio-nats-migration"


def test_report_lists_every_changed_object_with_before_and_after(lab: MigrationLab) -> None:
    report = json.loads((lab.artifacts / "report" / lab.namespace / "report.json").read_text())
    assert sorted(report["changed"]) == sorted([*COLLECTORS, "tapio-pipeline"])
    ebpf = next(w for w in report["workloads"] if w["name"] == "tapio-ebpf-collector")
    assert {e["name"] for e in ebpf["env_added"]} >= {"TAPIO_OUTPUT_MODE", "NATS_URL", "NATS_SUBJECT_PREFIX"}
    assert ebpf["other_containers_unchanged"] and ebpf["volumes_unchanged"]
    assert ebpf["record_provenance"] == lab.provenance("DaemonSet", "tapio-ebpf-collector")
    assert ebpf["before"]["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"] == "TAPIO_SERVER_ADDRESS"
    assert (lab.artifacts / "report" / lab.namespace / "report.md").read_text().count("| DaemonSet/") == 3


def test_migrate_again_changes_nothing(lab: MigrationLab) -> None:
    versions = lab.settled_resource_versions()
    run = lab.migrate()
    assert run.rc == 0, run.explain()
    assert run.changed == 0, run.explain()
    assert lab.resource_versions() == versions


def test_rerun_never_overwrites_the_original_record(lab: MigrationLab, originals: dict[str, dict]) -> None:
    assert lab.record("DaemonSet", "tapio-k8s-collector")["spec"] == originals["tapio-k8s-collector"]["spec"]
    assert "TAPIO_OUTPUT_MODE" not in json.dumps(lab.record("Deployment", "tapio-pipeline"))


def test_rollback_restore_returns_the_recorded_pod_templates(lab: MigrationLab, originals: dict[str, dict]) -> None:
    run = lab.rollback("restore")
    assert run.rc == 0, run.explain()
    for name, original in originals.items():
        live = lab.workload(name)
        assert live["spec"]["template"] == original["spec"]["template"], name
        assert live["spec"] == original["spec"], name
        assert live["metadata"].get("annotations", {}).get("tapio.io/owner") == \
            original["metadata"].get("annotations", {}).get("tapio.io/owner")
    verify = lab.playbook("playbooks/verify.yml", extra={"tapio_verify_mode": "direct"})
    assert verify.rc == 0, verify.explain()
    # Each record is set aside, locally too: the next migration records afresh.
    for name, original in originals.items():
        kind = original["kind"]
        assert not lab.has_record(kind, name), name
        assert lab.record(kind, name, retired=True)["spec"] == original["spec"], name
        retired_file = lab.artifacts / "state" / lab.namespace / "retired" / f"{kind.lower()}-{name}.json"
        assert json.loads(retired_file.read_text())["spec"] == original["spec"], name
        assert lab.provenance(kind, name, retired=True)["uid"] == original["metadata"]["uid"], name
        assert not (lab.artifacts / "state" / lab.namespace / f"{kind.lower()}-{name}.provenance.json").exists()
    assert "recorded by " in run.stdout and " from generation " in run.stdout, run.explain()


def test_rollback_again_changes_nothing(lab: MigrationLab) -> None:
    versions = lab.settled_resource_versions()
    run = lab.rollback("restore")
    assert run.rc == 0, run.explain()
    assert run.changed == 0, run.explain()
    assert lab.resource_versions() == versions


def test_an_upgrade_between_rollback_and_the_next_migration_survives_a_restore(lab: MigrationLab) -> None:
    """Images upgraded after a restore (as a Helm upgrade would), then migrate and restore
    again: the upgrade stays, and the restored templates equal the pre-second-migration ones."""
    upgraded = {}
    for name in ("tapio-k8s-collector", "tapio-pipeline"):
        container = CONTAINERS[name]
        image = next(c["image"] for c in lab.workload(name)["spec"]["template"]["spec"]["containers"]
                     if c["name"] == container)
        patch = {"spec": {"template": {"spec": {"containers": [{"name": container, "image": image + "-upgraded"}]}}}}
        if name == "tapio-pipeline":
            lab.apps.patch_namespaced_deployment(name, lab.namespace, patch)
        else:
            lab.apps.patch_namespaced_daemon_set(name, lab.namespace, patch)
    lab.settled_resource_versions()
    for name in ("tapio-k8s-collector", "tapio-pipeline"):
        upgraded[name] = lab.workload(name)["spec"]["template"]
    migrated = lab.migrate()
    assert migrated.rc == 0, migrated.explain()
    restored = lab.rollback("restore")
    assert restored.rc == 0, restored.explain()
    for name, template in upgraded.items():
        assert lab.workload(name)["spec"]["template"] == template, name
        assert "-upgraded" in json.dumps(lab.workload(name)["spec"]["template"]["spec"]["containers"]), name


def test_migrate_again_after_rollback_works(lab: MigrationLab) -> None:
    run = lab.migrate()
    assert run.rc == 0, run.explain()
    assert all(lab.env(name)["TAPIO_OUTPUT_MODE"] == "nats" for name in (*COLLECTORS, "tapio-pipeline"))


def test_an_upgrade_made_while_migrated_survives_a_restore(lab: MigrationLab) -> None:
    """The image changes while the collector runs on NATS: the restore returns only what the
    toolkit wrote (the env) to the record, keeps the new image and names it; migrate again."""
    name, container = "tapio-k8s-collector", CONTAINERS["tapio-k8s-collector"]
    image = next(c["image"] for c in lab.daemonset(name)["spec"]["template"]["spec"]["containers"]
                 if c["name"] == container) + "-while-migrated"
    lab.apps.patch_namespaced_daemon_set(name, lab.namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": container, "image": image}]}}}})
    lab.settled_resource_versions()
    record = lab.record("DaemonSet", name)
    restored = lab.rollback("restore")
    assert restored.rc == 0, restored.explain()
    assert f"kept as changed since the record: spec.template.spec.containers[{container}].image" in restored.stdout, \
        restored.explain()
    owned = next(c for c in lab.daemonset(name)["spec"]["template"]["spec"]["containers"] if c["name"] == container)
    recorded = next(c for c in record["spec"]["template"]["spec"]["containers"] if c["name"] == container)
    assert owned["image"] == image
    assert owned.get("env") == recorded.get("env")
    again = lab.migrate()
    assert again.rc == 0, again.explain()


def test_a_restore_keeps_the_env_and_annotations_others_changed_and_lists_them(
        lab: MigrationLab, originals: dict[str, dict]) -> None:
    """While migrated, someone adds an env entry (an API key), changes one the toolkit wrote
    (LOG_LEVEL) and annotates the pod template: the restore puts back what the toolkit wrote
    and still holds its value, keeps the three changes and lists each; migrate again."""
    name = "tapio-systemd-collector"
    container = CONTAINERS[name]
    lab.apps.patch_namespaced_daemon_set(name, lab.namespace, {"spec": {"template": {
        "metadata": {"annotations": {"team.example.com/owner": "observability"}},
        "spec": {"containers": [{"name": container, "env": [{"name": "API_KEY", "value": "rotated-while-migrated"},
                                                             {"name": "LOG_LEVEL", "value": "trace"}]}]}}}})
    lab.settled_resource_versions()
    restored = lab.rollback("restore")
    assert restored.rc == 0, restored.explain()
    for kept in ("env API_KEY (added since the migration, kept)", "env LOG_LEVEL (changed since the migration, kept)",
                 "annotation team.example.com/owner (added since the migration, kept)"):
        assert any(f"{lab.namespace}/{name}" in line and kept in line for line in restored.stdout.splitlines()), \
            f"{kept!r} not listed\n{restored.explain()}"
    env = lab.env(name)
    original = originals[name]
    original_env = {e["name"]: e.get("value", e.get("valueFrom")) for c in original["spec"]["template"]["spec"]["containers"]
                    if c["name"] == container for e in c.get("env") or []}
    assert env == {**original_env, "API_KEY": "rotated-while-migrated", "LOG_LEVEL": "trace"}, env
    annotations = (lab.daemonset(name)["spec"]["template"].get("metadata") or {}).get("annotations") or {}
    original_annotations = (original["spec"]["template"].get("metadata") or {}).get("annotations") or {}
    assert annotations == {**original_annotations, "team.example.com/owner": "observability"}, annotations
    # A workload nobody touched is its pre-migration template byte for byte (the pipeline and
    # the k8s collector were upgraded by the earlier steps).
    assert lab.workload("tapio-ebpf-collector")["spec"]["template"] == originals["tapio-ebpf-collector"]["spec"]["template"]
    again = lab.migrate()
    assert again.rc == 0, again.explain()


def test_rollback_switch_flips_only_the_mode(lab: MigrationLab) -> None:
    before = {name: lab.env(name) for name in (*COLLECTORS, "tapio-pipeline")}
    run = lab.rollback("switch")
    assert run.rc == 0, run.explain()
    for name, env in before.items():
        after = lab.env(name)
        assert after["TAPIO_OUTPUT_MODE"] == "direct", name
        assert {k: v for k, v in after.items() if k != "TAPIO_OUTPUT_MODE"} == \
            {k: v for k, v in env.items() if k != "TAPIO_OUTPUT_MODE"}, name
    again = lab.rollback("switch")
    assert again.rc == 0 and again.changed == 0, again.explain()
