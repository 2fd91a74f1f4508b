"""Unit tests for the run's Lease (module_utils/tapio_lease.py): who may take it, how another
run's Lease is watched on this runner's clock (refused at the first renewal seen, taken over
only after a whole duration without one), that every write carries the resourceVersion it
read, and that a renewal never goes on without the Lease. Clocks are fake: nothing waits.
The real API server is the integration tests' (tests/integration/test_migration_lock.py)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

import pytest

from fake_clock import Clock
from fake_lease_kube import LeaseKube, kube_utils, lease_of
from module_utils_loader import load_module_utils

lease = load_module_utils("tapio_lease")
inputs = load_module_utils("tapio_inputs")

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=timezone.utc)


def lock_for(kube: LeaseKube, clock: Clock, holder: str = "me", duration: int = 900,
             progress: Optional[list[str]] = None) -> Any:
    kube.clock = clock
    return lease.Lock(kube, "tapio", "tapio-nats-migration", holder, duration, log=lambda _: None, clock=clock,
                      sleep=clock.sleep, progress=None if progress is None else progress.append, wall=lambda: NOW)


# -- the renewal cadence and the floor ---------------------------------------------------------------
@pytest.mark.parametrize("duration, interval, deadline", [(30, 10, 20), (45, 10, 30), (900, 10, 600)])
def test_renewals_come_at_most_a_third_of_the_duration_apart(duration: int, interval: float, deadline: float) -> None:
    assert lease.renew_interval(duration) == interval <= duration / 3
    assert lease.renew_deadline(duration) == deadline


def test_the_floor_leaves_two_tries_and_a_third_to_stop_the_run() -> None:
    floor = lease.MINIMUM_DURATION
    assert lease.renew_deadline(floor) - lease.renew_interval(floor) >= 2 * lease.RETRY_PERIOD
    assert floor - lease.renew_deadline(floor) >= lease.renew_interval(floor)
    assert inputs.MINIMUM_LOCK_DURATION == floor, "the boilerplate and the lock phase refuse the same floor"


# -- taking a free Lease ---------------------------------------------------------------------------
def test_no_lease_is_created_at_once() -> None:
    kube, clock = LeaseKube(), Clock()
    lock = lock_for(kube, clock)
    assert lock.take() == "acquire"
    assert kube.writes == [("create", 0.0)] and clock.sleeps == []
    spec = kube.lease["spec"]
    assert spec["holderIdentity"] == "me" and spec["acquireTime"] == spec["renewTime"] == lease.format_time(NOW)
    assert lock.lease == kube.lease, "the renewer continues from the object the write returned"


def test_a_released_lease_is_taken_at_once_with_its_resource_version() -> None:
    kube, clock = LeaseKube(lease_of("")), Clock()
    assert lock_for(kube, clock).take() == "acquire"
    assert kube.writes == [("replace", 0.0)] and kube.lease["spec"]["leaseTransitions"] == 1


def test_two_runs_racing_for_a_free_lease_the_one_that_loses_the_create_refuses_naming_the_winner() -> None:
    kube, clock = LeaseKube(), Clock()
    kube.before_each_write = lambda k: k.lease is None and k.store(lease_of("racer@elsewhere"))
    with pytest.raises(lease.LeaseHeld, match="Another run took Lease tapio/tapio-nats-migration at the same moment: "
                                              "racer@elsewhere"):
        lock_for(kube, clock).take()


# -- another run's Lease, watched on this runner's clock -------------------------------------------------
def test_a_held_lease_renewed_while_watched_is_refused_at_once_naming_the_holder() -> None:
    kube, clock, lines = LeaseKube(lease_of("alice@runner pid 7 run ab12")), Clock(), []  # type: ignore[var-annotated]
    kube.before_each_get = lambda k: clock.now >= 8 and k.lease["spec"]["renewTime"] == lease_of("")["spec"][
        "renewTime"] and k.renewed_by_other("alice@runner pid 7 run ab12", "2026-12-02T13:00:00.000000Z")
    with pytest.raises(lease.LeaseHeld) as refused:
        lock_for(kube, clock, progress=lines).take()
    message = str(refused.value)
    assert "Another run is migrating or rolling back namespace tapio: alice@runner pid 7 run ab12 holds it since " \
           "2026-12-02T11:00:00.000000Z and renewed it 8s after this run began watching, at " \
           "2026-12-02T12:00:00.000000Z on this runner's clock" in message
    assert "Nothing was changed" in message
    assert kube.writes == [], "a refusal writes nothing"
    assert clock.now == 8, "refused at the first look after the renewal, not at the end of the duration"
    assert lines and "held by alice@runner pid 7 run ab12: watching it for a renewal, for up to 900s" in lines[0]


def test_a_lease_that_goes_its_whole_duration_unrenewed_is_taken_over_then_and_not_before() -> None:
    # Its renewTime says it was renewed a moment ago by its own clock: never compared.
    kube, clock, lines = LeaseKube(lease_of("killed@runner", duration=45)), Clock(), []  # type: ignore[var-annotated]
    lock = lock_for(kube, clock, progress=lines)
    assert lock.take() == "takeover"
    assert kube.writes == [("replace", 45.0)], "taken over once 45 s (the Lease's own duration) passed unrenewed"
    assert max(clock.sleeps) <= lease.RETRY_PERIOD
    spec = kube.lease["spec"]
    assert spec["holderIdentity"] == "me" and spec["leaseTransitions"] == 1 and spec["leaseDurationSeconds"] == 900
    assert len(lines) == 2 and "no renewal by killed@runner seen for 30s of 45s" in lines[1]


def test_a_takeover_that_meets_a_409_refuses_naming_whoever_won() -> None:
    kube, clock = LeaseKube(lease_of("killed@runner", duration=30)), Clock()

    def other_takes_it_first(k: LeaseKube) -> None:
        if k.lease["spec"]["holderIdentity"] == "killed@runner":
            k.renewed_by_other("bob@other", "2026-12-02T12:30:00.000000Z")

    kube.before_each_write = other_takes_it_first
    with pytest.raises(lease.LeaseHeld, match="took Lease tapio/tapio-nats-migration at the same moment: bob@other"):
        lock_for(kube, clock).take()
    assert kube.lease["spec"]["holderIdentity"] == "bob@other"


def test_a_lease_released_while_watched_is_taken_then() -> None:
    kube, clock = LeaseKube(lease_of("finishing@runner")), Clock()
    kube.before_each_get = lambda k: clock.now >= 4 and k.store(None)
    assert lock_for(kube, clock).take() == "acquire"
    assert kube.writes == [("create", 4.0)]


def test_check_mode_watches_and_refuses_the_same_way_and_never_writes() -> None:
    kube, clock = LeaseKube(lease_of("alice")), Clock()
    kube.before_each_get = lambda k: clock.now == 2 and k.renewed_by_other("alice", "later")
    with pytest.raises(lease.LeaseHeld, match="alice holds it"):
        lock_for(kube, clock).take(check_mode=True)
    stale, clock = LeaseKube(lease_of("killed", duration=30)), Clock()
    assert lock_for(stale, clock).take(check_mode=True) == "takeover" and clock.now == 30
    free = LeaseKube()
    assert lock_for(free, Clock()).take(check_mode=True) == "acquire"
    assert kube.writes == stale.writes == free.writes == []


# -- renewing and releasing this run's Lease -------------------------------------------------------------
def test_a_renewal_writes_with_the_resource_version_of_the_last_write() -> None:
    kube, clock = LeaseKube(), Clock()
    lock = lock_for(kube, clock)
    lock.take()
    first = lock.lease
    second = lock.renew(first)
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert kube.writes == [("create", 0.0), ("replace", 0.0)]


@pytest.mark.parametrize("change, what", [
    (lambda k: k.store(None), "was deleted"),
    (lambda k: k.renewed_by_other("thief@elsewhere", "t"), "was taken by thief@elsewhere"),
    (lambda k: k.renewed_by_other("", "t"), "was released"),
])
def test_a_renewal_that_finds_the_lease_gone_or_taken_raises_lost_and_writes_nothing(change: Any, what: str) -> None:
    kube, clock = LeaseKube(), Clock()
    lock = lock_for(kube, clock)
    lock.take()
    change(kube)
    owner_before = kube.lease
    with pytest.raises(lease.LeaseLost, match=f"This run's lock Lease tapio/tapio-nats-migration {what} while the "
                                              "run went on: stopped here"):
        lock.renew(lock.lease)
    assert kube.lease == owner_before, "a lost Lease is never written"
    assert [verb for verb, _ in kube.writes] == ["create", "replace"], "one refused PUT, then nothing"


def test_a_409_from_someone_editing_this_runs_lease_is_renewed_from_the_lease_read_again() -> None:
    kube, clock = LeaseKube(), Clock()
    lock = lock_for(kube, clock)
    lock.take()
    edited = {**kube.lease, "metadata": {**kube.lease["metadata"], "labels": {"note": "kubectl label"}}}
    kube.store(edited)
    renewed = lock.renew(lock.lease)
    assert renewed["spec"]["holderIdentity"] == "me" and renewed["metadata"]["labels"] == {"note": "kubectl label"}


def test_an_api_error_on_a_renewal_is_the_renewers_to_retry() -> None:
    kube, clock = LeaseKube(), Clock()
    lock = lock_for(kube, clock)
    lock.take()
    kube.fail_writes.append(kube_utils.KubeError("PUT: 503", 503, transient=True))
    with pytest.raises(kube_utils.KubeError):
        lock.renew(lock.lease)


def test_confirm_reads_only_and_says_when_the_lease_is_not_this_runs() -> None:
    kube, clock = LeaseKube(lease_of("me")), Clock()
    lock_for(kube, clock).confirm()
    kube.renewed_by_other("other", "t")
    with pytest.raises(lease.LeaseLost, match="was taken by other"):
        lock_for(kube, clock).confirm()
    assert kube.writes == []


def test_release_deletes_only_this_runs_lease_with_its_resource_version() -> None:
    mine, theirs = LeaseKube(lease_of("me")), LeaseKube(lease_of("other"))
    assert lock_for(mine, Clock()).release() and mine.lease is None
    assert not lock_for(theirs, Clock()).release() and theirs.writes == []


def test_a_holder_says_who_and_where() -> None:
    holder = lease.new_holder()
    assert "@" in holder and " pid " in holder and " run " in holder
    assert holder != lease.new_holder()
