# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""One run at a time per cluster: a coordination.k8s.io Lease held by the run.

Every playbook that migrates, rolls back or runs one phase takes the Lease first (the engine's
``lock`` phase) and releases it at the end (``unlock``). While the run holds it, a renewer
process (tapio_lease_renewer) renews it; nothing else writes it.

Expiry follows client-go's leader election: a runner never compares the Lease's timestamps,
written by another machine's clock, with its own. It watches the Lease's record (holder,
renewTime, resourceVersion) on its own monotonic clock: it refuses at the first change it sees
(the holder is alive) and takes the Lease over only once it has seen no change for the Lease's
whole leaseDurationSeconds. Every write carries the resourceVersion it was based on, so of two
writers one gets a 409 and stops; a renewal that finds the Lease deleted or taken raises
LeaseLost and never writes.
"""
from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from ansible.module_utils.tapio_kube import Kube, KubeError

MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
Lease = dict[str, Any]

# The shortest tapio_lock_duration. The renewer renews every 10 s at most (a third of 30 s) and
# gives the Lease up once it has not renewed for two thirds of it (20 s): two or more tries,
# each with a 5 s request timeout, ride out a slow or briefly unreachable API server, and the
# last third (10 s) is left for the run to stop before another runner may take over.
MINIMUM_DURATION = 30
# Renewals at most this far apart, shorter than a third of a long Lease, so that a second run
# sees a renewal, and refuses, within seconds rather than after a third of 900 s.
RENEW_EVERY = 10.0
# Between two looks of a runner watching another run's Lease, and two tries of a failed renewal
# (client-go's retryPeriod).
RETRY_PERIOD = 2.0
# A line for the person waiting while another run's Lease is watched.
PROGRESS_EVERY = 30.0


class LeaseHeld(Exception):
    """Another run holds the Lease; the message names it."""


class LeaseLost(LeaseHeld):
    """This run's Lease was deleted or taken, or could not be renewed, while the run went on."""


def renew_interval(duration: int) -> float:
    """Seconds between two renewals: a third of the duration, at most RENEW_EVERY."""
    return min(duration / 3, RENEW_EVERY)


def renew_deadline(duration: int) -> float:
    """client-go's renewDeadline: a holder that could not renew for two thirds of the duration
    gives the Lease up, before anyone watching it may take it over."""
    return duration * 2 / 3


def new_holder() -> str:
    """Who this run is, for a person reading the Lease: user@host, pid and a unique suffix."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in a container
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getppid()} run {uuid.uuid4().hex[:8]}"


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(MICRO_TIME)


def holder_of(lease: Optional[Lease]) -> str:
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def record_of(lease: Optional[Lease]) -> tuple[str, str, str]:
    """What a watcher compares between two looks: a change is a sign of life."""
    spec = (lease or {}).get("spec") or {}
    version = ((lease or {}).get("metadata") or {}).get("resourceVersion") or ""
    return holder_of(lease), str(spec.get("renewTime") or ""), str(version)


def lost_message(label: str, what: str) -> str:
    return (f"This run's lock {label} {what} while the run went on: stopped here, before its next change, since "
            "another run may be changing the same workloads. Check what that run did, then run again (a rollback "
            "restores the recorded state).")


class Lock:
    """The run's Lease in *namespace*. *clock* is monotonic and, with *sleep* and *wall*,
    injectable for tests; *progress* gets the lines a person waiting should see at once."""

    def __init__(self, kube: Kube, namespace: str, name: str, holder: str, duration: int,
                 log: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, progress: Optional[Callable[[str], None]] = None,
                 wall: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.kube, self.namespace, self.name, self.holder = kube, namespace, name, holder
        self.duration, self.log, self.clock, self.sleep, self.wall = duration, log, clock, sleep, wall
        self.progress = progress or (lambda _line: None)
        self.lease: Optional[Lease] = None  # the object the last write returned
        self.written_at = 0.0  # on *clock*, just before that write: the renewer's deadline counts from it

    @property
    def label(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def read(self) -> Optional[Lease]:
        return self.kube.get("Lease", self.namespace, self.name)

    def take(self, check_mode: bool = False) -> str:
        """Acquire (none, or released), or take over another run's Lease once it has gone a
        whole duration unrenewed; raise LeaseHeld when its holder renews it. In check mode
        the watch is the same and nothing is written."""
        lease = self.read()
        if holder_of(lease) and holder_of(lease) != self.holder:
            lease = self.watch(lease)
        action = "acquire" if not holder_of(lease) else "renew" if holder_of(lease) == self.holder else "takeover"
        if check_mode:
            self.log(f"check mode: {self.label} not taken (it would be: {action})")
            return action
        self.lease = self.write(lease, action)
        self.log(f"took {self.label} for {self.duration}s ({action})")
        return action

    def watch(self, lease: Lease) -> Optional[Lease]:
        """Another run's Lease watched on this runner's clock: the Lease to take over once no
        change was seen for its whole duration (None or released: it went meanwhile)."""
        seen, since = record_of(lease), self.clock()
        duration = int((lease.get("spec") or {}).get("leaseDurationSeconds") or self.duration)
        self.progress(f"{self.label} is held by {holder_of(lease)}: watching it for a renewal, for up to "
                      f"{duration}s (its leaseDurationSeconds) on this runner's clock")
        told = since
        while self.clock() - since < duration:
            self.sleep(min(RETRY_PERIOD, max(0.0, since + duration - self.clock())))
            current = self.read()
            if not holder_of(current):
                self.log(f"{self.label} was released while this run watched it")
                return current
            if record_of(current) != seen:
                raise LeaseHeld(self.refusal(current, self.clock() - since))
            if self.clock() - told >= PROGRESS_EVERY and self.clock() - since < duration:
                told = self.clock()
                self.progress(f"{self.label}: no renewal by {holder_of(current)} seen for {told - since:.0f}s of "
                              f"{duration}s")
        self.log(f"{self.label}: {holder_of(lease)} did not renew it for {duration}s (its leaseDurationSeconds, "
                 "on this runner's clock): its run stopped; taking it over")
        return lease

    def refusal(self, lease: Lease, watched: float) -> str:
        spec = lease.get("spec") or {}
        return (f"Another run is migrating or rolling back namespace {self.namespace}: {holder_of(lease)} holds it "
                f"since {spec.get('acquireTime') or 'an unknown time'} and renewed it {watched:.0f}s after this run "
                f"began watching, at {format_time(self.wall())} on this runner's clock (renewTime "
                f"{spec.get('renewTime')} on its own; {self.label}). Nothing was changed. Wait for it to finish; if "
                f"it was killed, run again once its Lease has gone {spec.get('leaseDurationSeconds')}s without "
                f"renewal, or delete the Lease (kubectl -n {self.namespace} delete lease {self.name}) when sure no "
                "run is left.")

    def write(self, lease: Optional[Lease], action: str) -> Lease:
        """Create the Lease, or update *lease* with its resourceVersion as the precondition: a
        409 means another run wrote it since it was read, and won."""
        self.written_at = self.clock()
        stamp = format_time(self.wall())
        spec: dict[str, Any] = {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration,
                                "renewTime": stamp}
        if action != "renew":
            spec["acquireTime"] = stamp
        try:
            if lease is None:
                return self.kube.create("Lease", self.namespace, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace,
                                 "labels": {"app.kubernetes.io/managed-by": "tapio-nats-migration"}},
                    "spec": spec})
            old = lease.get("spec") or {}
            if action != "renew":  # a new holder, as client-go counts leaderTransitions
                spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0) + 1
            return self.kube.replace("Lease", self.namespace, self.name, {**lease, "spec": {**old, **spec}})
        except KubeError as error:
            if error.status != 409:
                raise
        winner = self.read() or {}
        raise LeaseHeld(f"Another run took {self.label} at the same moment: {holder_of(winner) or 'unknown'} (since "
                        f"{(winner.get('spec') or {}).get('acquireTime')}). Nothing was changed.")

    def ours(self, lease: Optional[Lease]) -> Lease:
        """*lease* when this run holds it; LeaseLost naming what happened to it otherwise."""
        holder = holder_of(lease)
        if lease is not None and holder == self.holder:
            return lease
        what = f"was taken by {holder}" if holder else "was deleted" if lease is None else "was released"
        raise LeaseLost(lost_message(self.label, what))

    def confirm(self) -> None:
        """Read-only: LeaseLost unless this run still holds the Lease (an engine call's start)."""
        self.ours(self.read())

    def renew(self, lease: Lease) -> Lease:
        """Renew *lease* (the object the last write returned) with its resourceVersion as the
        precondition; the renewed object. A 404 or 409 is answered by reading the Lease again:
        LeaseLost unless it is still this run's (then renewed once more from what was read)."""
        try:
            return self._put_renewal(lease)
        except KubeError as error:
            if error.status not in (404, 409):
                raise
        return self._put_renewal(self.ours(self.read()))

    def _put_renewal(self, lease: Lease) -> Lease:
        spec = {**(lease.get("spec") or {}), "holderIdentity": self.holder, "leaseDurationSeconds": self.duration,
                "renewTime": format_time(self.wall())}
        return self.kube.replace("Lease", self.namespace, self.name, {**lease, "spec": spec})

    def release(self) -> bool:
        """Delete the Lease when this run holds it, with its resourceVersion as the
        precondition; True when it did."""
        lease = self.read()
        if lease is None or holder_of(lease) != self.holder:
            return False
        self.kube.request("DELETE", self.kube.path("Lease", self.namespace, self.name),
                          body={"preconditions": {"resourceVersion": lease["metadata"]["resourceVersion"]}},
                          not_found_ok=True)
        self.log(f"released {self.label}")
        return True
