"""Unit tests for the run's Lease (module_utils/tapio_lease.py): who may take it, when a
stale one may be taken over, and that a refusal names the holder and writes nothing. The
real API server is the integration tests' (tests/integration/test_migration_lock.py)."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import pytest

from module_utils_loader import load_module_utils

load_module_utils("tapio_kube")
lease = load_module_utils("tapio_lease")

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=timezone.utc)


def held(holder: str, renewed_ago: float, duration: int = 900) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "tapio-nats-migration", "namespace": "tapio", "resourceVersion": "5"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": lease.format_time(NOW - timedelta(seconds=3600)),
                     "renewTime": lease.format_time(NOW - timedelta(seconds=renewed_ago))}}


@pytest.mark.parametrize("current, action", [
    (None, "acquire"),
    (held("", 10), "acquire"),
    (held("me", 10), "renew"),
    (held("me", 5000), "renew"),
    (held("other", 899), "refuse"),
    (held("other", 900), "takeover"),
    (held("other", 5000), "takeover"),
])
def test_decide(current: Optional[dict[str, Any]], action: str) -> None:
    assert lease.decide(current, "me", NOW)[0] == action


def test_a_refusal_names_the_holder_since_when_and_the_expiry() -> None:
    _, why = lease.decide(held("alice@runner pid 7 run ab12", 100), "me", NOW)
    assert "alice@runner pid 7 run ab12 holds it since 2026-12-02T11:00:00.000000Z" in why
    assert "expires in 800s" in why


def test_times_round_trip_in_the_api_servers_micro_time_format() -> None:
    assert lease.parse_time(lease.format_time(NOW)) == NOW
    assert lease.parse_time("2026-12-02T12:00:00Z") == NOW
    assert lease.parse_time("garbage") is None


class FakeKube:
    def __init__(self, existing: Optional[dict[str, Any]]) -> None:
        self.lease, self.writes = copy.deepcopy(existing), []  # type: Optional[dict[str, Any]], list[str]

    def get(self, kind: str, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return copy.deepcopy(self.lease)

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.writes.append("create")
        self.lease = body
        return body

    def replace(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.writes.append("replace")
        self.lease = body
        return body

    def path(self, kind: str, namespace: str, name: str) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"

    def request(self, method: str, path: str, **kwargs: Any) -> None:
        self.writes.append(method)
        self.lease = None


def lock_for(kube: FakeKube, holder: str = "me") -> Any:
    return lease.Lock(kube, "tapio", "tapio-nats-migration", holder, 900, log=lambda _: None, now=lambda: NOW)


def test_another_runs_live_lease_is_refused_without_a_write() -> None:
    kube = FakeKube(held("other", 30))
    with pytest.raises(lease.LeaseHeld, match="Another run is migrating or rolling back namespace tapio: other holds"):
        lock_for(kube).take()
    assert kube.writes == []


def test_a_stale_lease_is_taken_over_with_a_new_acquire_time_and_transition() -> None:
    kube = FakeKube(held("killed-run", 5000))
    assert lock_for(kube).take() == "takeover"
    spec = kube.lease["spec"]
    assert spec["holderIdentity"] == "me" and spec["leaseTransitions"] == 1
    assert spec["acquireTime"] == spec["renewTime"] == lease.format_time(NOW)
    assert kube.lease["metadata"]["resourceVersion"] == "5", "the update must carry the read resourceVersion"


def test_check_mode_refuses_like_a_real_run_but_never_writes() -> None:
    with pytest.raises(lease.LeaseHeld):
        lock_for(FakeKube(held("other", 30))).take(check_mode=True)
    kube = FakeKube(None)
    assert lock_for(kube).take(check_mode=True) == "acquire" and kube.writes == []


def test_release_deletes_only_this_runs_lease() -> None:
    mine, theirs = FakeKube(held("me", 1)), FakeKube(held("other", 1))
    assert lock_for(mine).release() and mine.lease is None
    assert not lock_for(theirs).release() and theirs.writes == []


def test_a_holder_says_who_and_where() -> None:
    holder = lease.new_holder()
    assert "@" in holder and " pid " in holder and " run " in holder
    assert holder != lease.new_holder()


@pytest.mark.parametrize("current, writes", [
    (held("me", 30), ["replace"]),   # ours: renewed
])
def test_a_renewal_writes_only_a_lease_this_run_holds(current: Optional[dict[str, Any]], writes: list[str]) -> None:
    kube = FakeKube(current)
    lock_for(kube).renew()
    assert kube.writes == writes


@pytest.mark.parametrize("current, what", [
    (None, "was deleted or released"),                     # someone deleted it mid-run
    (held("", 5), "was deleted or released"),
    (held("other", 5), "was taken by other"),               # another run holds it
    (held("other", 5000), "was taken by other"),            # even expired: not ours to renew
])
def test_a_renewal_stops_the_run_when_its_lease_is_gone_or_taken(current: Optional[dict[str, Any]],
                                                                 what: str) -> None:
    kube = FakeKube(current)
    with pytest.raises(lease.LeaseLost, match=f"This run's lock Lease tapio/tapio-nats-migration {what} while the "
                                              "run went on: stopped here"):
        lock_for(kube).renew()
    assert kube.writes == []


def test_a_check_mode_renewal_writes_nothing_and_needs_no_lease() -> None:
    for current in (None, held("me", 30)):
        kube = FakeKube(current)
        lock_for(kube).renew(check_mode=True)
        assert kube.writes == []
    with pytest.raises(lease.LeaseHeld, match="taken by another run: other holds"):
        lock_for(FakeKube(held("other", 5))).renew(check_mode=True)


class Clock:
    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, []  # type: float, list[float]

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


def test_a_long_wait_renews_the_lease_every_third_of_its_duration() -> None:
    kube, clock = FakeKube(held("me", 0, duration=30)), Clock()
    keep = lease.KeepAlive(lock_for(kube), False, clock=clock.time, sleep=clock.sleep)
    assert keep.interval == 300  # a third of lock_for's 900 s
    keep = lease.KeepAlive(lease.Lock(kube, "tapio", "tapio-nats-migration", "me", 30, log=lambda _: None,
                                      now=lambda: NOW), False, clock=clock.time, sleep=clock.sleep)
    keep.sleep(35)  # one sleep longer than the whole lease: renewed inside it
    assert kube.writes == ["replace", "replace", "replace"] and keep.renewals == 3
    assert sum(clock.sleeps) == 35 and max(clock.sleeps) <= 10
    for _ in range(10):
        keep.sleep(1)  # short polls: renewed only when a third has passed
    assert keep.renewals == 4


def test_a_wait_stops_when_the_lease_is_lost() -> None:
    kube, clock = FakeKube(held("me", 0, duration=30)), Clock()
    keep = lease.KeepAlive(lease.Lock(kube, "tapio", "tapio-nats-migration", "me", 30, log=lambda _: None,
                                      now=lambda: NOW), False, clock=clock.time, sleep=clock.sleep)
    kube.lease = None  # deleted by someone
    with pytest.raises(lease.LeaseLost):
        keep.sleep(60)
    assert clock.now == 10  # stopped at the first renewal, not at the end of the wait
