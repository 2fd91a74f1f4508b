"""One run at a time per cluster: migrate.yml, rollback.yml and the phase playbooks hold a Lease
(coordination.k8s.io) in the namespace for the run, renewed by a process of their own, against
the lab's real kube-apiserver.

A second migrate.yml started while the first runs refuses before changing anything and names
the first run's holder, as soon as it sees a renewal; a Lease another run keeps renewing stops a
rollback the same way; a Lease nobody renews (a killed run) is taken over once it has gone its
whole duration unrenewed, whatever its renewTime says, and released at the end; a rollout
longer than the Lease keeps it, and deleting the Lease stops the run."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from conftest import KubeLab
from migration_lab import COLLECTORS, MigrationLab, Run, make_lab

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


@contextlib.contextmanager
def renewed_by_another_run(lab: MigrationLab, holder: str, every: float = 2.0) -> Iterator[None]:
    """A live holder elsewhere: its Lease's renewTime moves every *every* seconds meanwhile."""
    stop = threading.Event()

    def renew() -> None:
        api = client.CoordinationV1Api(lab.api)
        while not stop.wait(every):
            api.patch_namespaced_lease(LEASE, lab.namespace, {"spec": {
                "holderIdentity": holder, "renewTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}})

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=30)


def migrate(lab: MigrationLab) -> Run:
    """migrate.yml itself, NATS provided by the lab."""
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
    # Its renewTime is an hour old by this machine's clock: never compared; its renewals decide.
    put_lease(lab, "alice@elsewhere pid 42 run cafe0001", renewed_ago=3600)
    versions = lab.settled_resource_versions()
    with renewed_by_another_run(lab, "alice@elsewhere pid 42 run cafe0001"):
        run = lab.rollback("restore")
    assert run.rc != 0, run.explain()
    assert "alice@elsewhere pid 42 run cafe0001 holds it since" in run.stdout, run.explain()
    assert "after this run began watching" in run.stdout, run.explain()
    assert lab.resource_versions() == versions
    assert read_lease(lab).spec.holder_identity == "alice@elsewhere pid 42 run cafe0001", "not ours to release"


def test_a_stale_lease_of_a_killed_run_is_taken_over_and_released(lab: MigrationLab) -> None:
    # renewTime "now" by this machine's clock: still taken over once nobody renewed it for its 30 s.
    put_lease(lab, "bob@killed pid 7 run dead0001", renewed_ago=0, duration=30)
    run = lab.rollback("restore")
    assert run.rc == 0, run.explain()
    assert "is held by bob@killed pid 7 run dead0001: watching it for a renewal, for up to 30s" in run.stderr, \
        run.explain()
    assert all("TAPIO_OUTPUT_MODE" not in lab.env(name) for name in ("tapio-pipeline",))
    assert read_lease(lab) is None


def test_a_wait_longer_than_the_lease_keeps_it_and_a_deleted_lease_stops_the_run(lab: MigrationLab,
                                                                                  tmp_path: Path) -> None:
    """The canary collector's new pods never become ready (they ask for 64 CPUs on 32-CPU kwok
    nodes), so its rollout wait lasts until the progress deadline, far longer than the 30 s
    Lease: the Lease stays held and renewed, a second migrate.yml and a phase playbook are
    refused naming the holder, and deleting the Lease stops the first run with its reason, long
    before the deadline."""
    output = tmp_path / "first.log"
    never_ready = {COLLECTORS[0]: {"resources": {"requests": {"cpu": "64"}}}}
    first = lab.start_playbook("migrate.yml", output=output, extra={
        "tapio_nats_install": False, "tapio_lock_duration": 30, "tapio_collectors_progress_deadline": 600,
        "tapio_collectors_order": list(COLLECTORS), "tapio_collectors_container_overrides": never_ready})
    try:
        deadline = time.monotonic() + 240
        while lab.env(COLLECTORS[0]).get("TAPIO_OUTPUT_MODE") != "nats":
            assert first.poll() is None, Run.from_output(first.returncode, output).explain()
            assert time.monotonic() < deadline, "the canary was never switched"
            time.sleep(0.5)
        holder = read_lease(lab).spec.holder_identity
        switched_at = time.monotonic()
        renewals: set[datetime] = set()
        # Past the Lease's whole duration (30 s) inside the one rollout wait, it is still this
        # run's and has been renewed more than once.
        while time.monotonic() - switched_at < 35 or len(renewals) < 3:
            lease = read_lease(lab)
            assert lease is not None and lease.spec.holder_identity == holder, "the Lease lapsed during the wait"
            renewals.add(lease.spec.renew_time)
            assert time.monotonic() - switched_at < 120, f"the Lease was not renewed during the wait: {renewals}"
            time.sleep(0.5)
        second = migrate(lab)
        assert second.rc != 0 and f"{holder} holds it since" in second.stdout, second.explain()
        phase = lab.playbook("playbooks/report.yml")
        assert phase.rc != 0 and f"{holder} holds it since" in phase.stdout, phase.explain()
        assert first.poll() is None, "the first run ended before its Lease was deleted"

        client.CoordinationV1Api(lab.api).delete_namespaced_lease(LEASE, lab.namespace)
        rc = first.wait(timeout=300)
        run = Run.from_output(rc, output)
        assert rc == 99, run.explain()  # ansible-playbook's exit code after SIGINT
        assert f"[tapio lock] This run's lock Lease {lab.namespace}/{LEASE} was deleted while the run went on: " \
               "stopped here" in run.stdout, run.explain()
        assert "User interrupted execution" in run.stdout, run.explain()
        assert "no progress for" not in run.stdout, "the run stopped on its deadline, not on the lost Lease"
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=60)
    # The stopped run left the canary switched with its unschedulable override: the rollback
    # returns it (the override named, so it goes back to the record as the toolkit's own).
    restored = lab.rollback("restore", extra={"tapio_rollback_container_overrides": never_ready})
    assert restored.rc == 0, restored.explain()
