"""One run at a time per cluster: migrate.yml and rollback.yml hold a Lease (coordination.k8s.io)
in the namespace for the run, against the lab's real kube-apiserver.

A second migrate.yml started while the first runs refuses before changing anything and names
the first run's holder; a live Lease of another run stops a rollback the same way; a stale Lease
(a killed run that stopped renewing) is taken over and released at the end."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Optional

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from conftest import KubeLab
from migration_lab import MigrationLab, Run, make_lab

LEASE = "tapio-nats-migration"


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    yield from make_lab(kube_lab, "lock", tmp_path_factory.mktemp("artifacts"))


def read_lease(lab: MigrationLab) -> Optional[Any]:
    try:
        return client.CoordinationV1Api(lab.api).read_namespaced_lease(LEASE, lab.namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def put_lease(lab: MigrationLab, holder: str, renewed_ago: int, duration: int = 900) -> None:
    renewed = datetime.now(timezone.utc) - timedelta(seconds=renewed_ago)
    body = client.V1Lease(metadata=client.V1ObjectMeta(name=LEASE), spec=client.V1LeaseSpec(
        holder_identity=holder, lease_duration_seconds=duration, acquire_time=renewed, renew_time=renewed))
    api = client.CoordinationV1Api(lab.api)
    if read_lease(lab) is not None:
        api.delete_namespaced_lease(LEASE, lab.namespace)
    api.create_namespaced_lease(lab.namespace, body)


def migrate(lab: MigrationLab) -> Run:
    """migrate.yml itself (the phase playbooks take no lock), NATS provided by the lab."""
    return lab.playbook("migrate.yml", extra={"tapio_nats_install": False})


def test_a_second_migration_refuses_while_the_first_holds_the_lease(lab: MigrationLab) -> None:
    first: dict[str, Run] = {}
    runner = threading.Thread(target=lambda: first.update(run=migrate(lab)))
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while (lease := read_lease(lab)) is None and runner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lease is not None, "the first run never took the lease"
        holder = lease.spec.holder_identity
        second = migrate(lab)
    finally:
        runner.join(timeout=600)
    assert second.rc != 0, second.explain()
    assert f"Another run is migrating or rolling back namespace {lab.namespace}: {holder} holds it since" \
        in second.stdout, second.explain()
    assert "Nothing was changed" in second.stdout
    assert second.changed == 0, second.explain()
    assert first["run"].rc == 0, first["run"].explain()
    assert read_lease(lab) is None, "the first run must release its lease at the end"


def test_a_live_lease_of_another_run_stops_a_rollback_before_anything_changes(lab: MigrationLab) -> None:
    put_lease(lab, "alice@elsewhere pid 42 run cafe0001", renewed_ago=5)
    versions = lab.settled_resource_versions()
    run = lab.rollback("restore")
    assert run.rc != 0, run.explain()
    assert "alice@elsewhere pid 42 run cafe0001 holds it since" in run.stdout, run.explain()
    assert lab.resource_versions() == versions
    assert read_lease(lab).spec.holder_identity == "alice@elsewhere pid 42 run cafe0001", "not ours to release"


def test_a_stale_lease_of_a_killed_run_is_taken_over_and_released(lab: MigrationLab) -> None:
    put_lease(lab, "bob@killed pid 7 run dead0001", renewed_ago=1000, duration=900)
    run = lab.rollback("restore")
    assert run.rc == 0, run.explain()
    assert all("TAPIO_OUTPUT_MODE" not in lab.env(name) for name in ("tapio-pipeline",))
    assert read_lease(lab) is None
