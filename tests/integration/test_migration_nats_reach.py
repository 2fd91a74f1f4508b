"""A control node that reaches NATS only through the Kubernetes API (issue 10,
``tapio_nats_reach: kubernetes``).

The inventory's NATS servers and monitoring URLs are unreachable (``nats://127.0.0.1:1``,
``http://127.0.0.1:1``), so every NATS call of the run (streams, gates, verify, rollback,
report) and every monitoring read (/healthz, /jsz, the meta leader's view) can only have
gone through port-forwards to the NATS pods, opened by the run itself once its nats phase
has installed them. The run starts from the pre-migration state in a namespace of its own:
its nats phase installs the StatefulSet tapio-nats there, whose kwok pods get a namespaced
PortForward each (pod tapio-nats-i ports 4222/8222 -> the lab's nats-server i, as the lab's
cluster-wide rules do for namespace tapio). A simulator of the test's own plays the
namespace's collectors and pipeline (straight to the lab's servers: it stands for the pods)
on an events stream of the test's own, and its ledger must show 0 lost and 0 duplicates.

One test, as in the issue: migrate.yml, the re-run with changed=0, rollback.yml in restore
mode, the ledger.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from kubernetes import client as kube_client

from conftest import PORT_OFFSET, KubeLab
from migration_lab import COLLECTORS, CONTAINERS, MigrationLab, make_lab
from module_utils_loader import load_module_utils
# The node-loss test's stream and simulator fixtures (a stream and a simulator of the test's own).
from test_migration_nats_node_loss import Events, events, get_json, simulator  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

KWOK_GROUP, KWOK_VERSION = "kwok.x-k8s.io", "v1alpha1"
NATS_PODS = 3


def forward_nats_pods(lab: MigrationLab) -> None:
    """A kwok PortForward per NATS pod the run will install: tapio-nats-i ports 4222 and 8222
    -> the lab's nats-server i (client and monitoring port)."""
    custom = kube_client.CustomObjectsApi(lab.api)
    for i in range(NATS_PODS):
        custom.create_namespaced_custom_object(KWOK_GROUP, KWOK_VERSION, lab.namespace, "portforwards", {
            "apiVersion": f"{KWOK_GROUP}/{KWOK_VERSION}", "kind": "PortForward",
            "metadata": {"name": f"tapio-nats-{i}", "namespace": lab.namespace},
            "spec": {"forwards": [{"ports": [port], "target": {"address": "127.0.0.1", "port": port + PORT_OFFSET + i}}
                                  for port in (4222, 8222)]}})


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    for lab in make_lab(kube_lab, "reach", tmp_path_factory.mktemp("artifacts")):
        lab.nats_volumes()  # the run installs NATS into the test namespace
        forward_nats_pods(lab)
        yield lab


def test_migrate_and_restore_reaching_nats_only_through_the_kubernetes_api(
        lab: MigrationLab, events: Events, simulator: str, tmp_path: Path) -> None:
    ledger = load_module_utils("tapio_workload")
    extra: dict[str, Any] = {
        "tapio_nats_install": True, "tapio_nats_reach": "kubernetes",
        "tapio_nats_servers": ["nats://127.0.0.1:1"], "tapio_nats_monitor_urls": ["http://127.0.0.1:1"],
        "tapio_migration_nats_checks": True, "tapio_collectors": events.collectors(),
        "tapio_events_stream": events.stream, "tapio_consume_subjects": events.subjects,
        "tapio_pipeline_consumer": events.consumer, "tapio_verify_ledger_url": simulator, "tapio_poll_interval": 1,
        # Sized to fit beside TAPIO_EVENTS in the lab's JetStream store (as the node-loss test).
        "nats_streams_events_stream": {
            "name": events.stream, "subjects": [events.subjects], "retention": "limits", "storage": "file",
            "replicas": 3, "discard": "old", "max_age": "1h", "max_bytes": "64MB", "duplicate_window": "2m"}}

    migrated = lab.playbook("migrate.yml", extra=extra)
    assert migrated.rc == 0, migrated.explain()
    assert "0 events lost and 0 delivered twice" in migrated.stdout, migrated.explain()
    installed = lab.apps.read_namespaced_stateful_set("tapio-nats", lab.namespace)
    assert installed.status.ready_replicas == NATS_PODS  # the run's own NATS, reached through its pods

    again = lab.playbook("migrate.yml", extra=extra)
    assert again.rc == 0 and again.changed == 0, again.explain()

    restored = lab.rollback("restore", extra=extra)
    assert restored.rc == 0, restored.explain()

    answer = get_json(f"{simulator}/ledger?settle=30", timeout=60)
    assert answer and answer[0] == 200, answer
    report = answer[1]
    assert ledger.ledger_problems(report) == [], report["sources"]
    for container in (CONTAINERS[name] for name in COLLECTORS):
        row = report["sources"][container]
        assert row["received_by_path"].get("nats", 0) > 0, (container, row)
        assert row["received_by_path"].get("direct", 0) > 0, (container, row)
