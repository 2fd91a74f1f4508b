# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""One run at a time per cluster: a coordination.k8s.io Lease held by the run.

``migrate.yml`` and ``rollback.yml`` take the Lease before anything else, every engine call
renews it, and so does every wait inside a call (``KeepAlive``: at most a third of the Lease's
duration apart), and the run releases it at the end (failed or not). A second run finds it held
and refuses, naming the holder and since when, before it changes anything. A Lease whose holder
stopped renewing (a killed run) can be taken over once it has expired. A run whose Lease was
deleted or taken stops at its next renewal (``LeaseLost``).
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


# Shorter leases would lapse during one Kubernetes API call (its timeouts are seconds long).
MINIMUM_DURATION = 10


class LeaseHeld(Exception):
    """Another run holds the Lease; the message names it."""


class LeaseLost(LeaseHeld):
    """This run's Lease was deleted or taken while the run went on."""


def new_holder() -> str:
    """Who this run is, for a person reading the Lease: user@host, pid and a unique suffix."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in a container
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getppid()} run {uuid.uuid4().hex[:8]}"


def parse_time(value: Optional[str]) -> Optional[datetime]:
    if not value:
        return None
    for layout in (MICRO_TIME, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(value, layout).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    return None


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(MICRO_TIME)


def decide(lease: Optional[dict[str, Any]], holder: str, now: datetime) -> tuple[str, str]:
    """What to do with the Lease: acquire (none), renew (ours), take over (expired) or refuse
    (held by another run, not expired); and the sentence that says why."""
    if lease is None:
        return "acquire", "no run holds the lock"
    spec = lease.get("spec") or {}
    current = spec.get("holderIdentity") or ""
    if not current:
        return "acquire", "the lock was released"
    if current == holder:
        return "renew", "this run holds the lock"
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or 0)
    since = spec.get("acquireTime") or "an unknown time"
    if renewed is None:
        return "takeover", f"the lock held by {current} (since {since}) has no renew time"
    age = (now - renewed).total_seconds()
    if age >= duration:
        return "takeover", (f"the lock held by {current} since {since} expired {age - duration:.0f}s ago "
                            f"(last renewed {spec.get('renewTime')}, {duration}s lease): its run stopped")
    return "refuse", (f"{current} holds it since {since} (renewed {spec.get('renewTime')}, expires in "
                      f"{duration - age:.0f}s unless renewed)")


class Lock:
    """The run's Lease in *namespace*; *now* is injectable for tests."""

    def __init__(self, kube: Kube, namespace: str, name: str, holder: str, duration: int,
                 log: Callable[[str], None], now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.kube, self.namespace, self.name, self.holder = kube, namespace, name, holder
        self.duration, self.log, self.now = duration, log, now

    @property
    def label(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def take(self, check_mode: bool = False) -> str:
        """Acquire, renew or take over; raise LeaseHeld when another run holds it. In check
        mode only the refusal is real: nothing is written."""
        lease = self.kube.get("Lease", self.namespace, self.name)
        now = self.now()
        action, why = decide(lease, self.holder, now)
        if action == "refuse":
            raise LeaseHeld(
                f"Another run is migrating or rolling back namespace {self.namespace}: {why} ({self.label}). "
                "Nothing was changed. Wait for it to finish; if it was killed, run again once the lease has expired, "
                f"or delete the Lease (kubectl -n {self.namespace} delete lease {self.name}) when sure no run is left.")
        if check_mode:
            self.log(f"check mode: {self.label} not taken ({why})")
            return action
        stamp = format_time(now)
        spec = {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration, "renewTime": stamp}
        try:
            if lease is None:
                spec["acquireTime"] = stamp
                self.kube.create("Lease", self.namespace, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace,
                                 "labels": {"app.kubernetes.io/managed-by": "tapio-nats-migration"}},
                    "spec": spec})
            else:
                if action != "renew":
                    spec["acquireTime"] = stamp
                    spec["leaseTransitions"] = int((lease.get("spec") or {}).get("leaseTransitions") or 0) + 1
                body = {**lease, "spec": {**(lease.get("spec") or {}), **spec}}
                self.kube.replace("Lease", self.namespace, self.name, body)
        except KubeError as error:
            if error.status != 409:
                raise
            # Another run wrote the Lease between our read and our write: it won.
            current = (self.kube.get("Lease", self.namespace, self.name) or {}).get("spec") or {}
            raise LeaseHeld(f"Another run took {self.label} at the same moment: {current.get('holderIdentity')} "
                            f"(since {current.get('acquireTime')}). Nothing was changed.") from None
        if action != "renew":
            self.log(f"took {self.label} for {self.duration}s ({why})")
        return action

    def renew(self, check_mode: bool = False) -> None:
        """Renew the Lease this run took. Writes only a Lease this run holds: a call without one
        (a check-mode run, whose lock phase took nothing) never creates one. Raises LeaseLost
        when the Lease was deleted, released or taken since: the run must stop, since another
        run may now be changing the same workloads."""
        lease = self.kube.get("Lease", self.namespace, self.name)
        if check_mode:
            action, why = decide(lease, self.holder, self.now())
            if action == "refuse":
                raise LeaseHeld(f"This run's lock was taken by another run: {why} ({self.label}). Stopped here.")
            return
        holder = ((lease or {}).get("spec") or {}).get("holderIdentity") or ""
        if holder != self.holder:
            what = f"was taken by {holder}" if holder else "was deleted or released"
            raise LeaseLost(f"This run's lock {self.label} {what} while the run went on: stopped here, before its "
                            "next change, since another run may be changing the same workloads. Check what that "
                            "run did, then run again (a rollback restores the recorded state).")
        self.take()

    def release(self) -> bool:
        """Delete the Lease when this run holds it; True when it did."""
        lease = self.kube.get("Lease", self.namespace, self.name)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.holder:
            return False
        self.kube.request("DELETE", self.kube.path("Lease", self.namespace, self.name),
                          body={"preconditions": {"resourceVersion": lease["metadata"]["resourceVersion"]}},
                          not_found_ok=True)
        self.log(f"released {self.label}")
        return True


class KeepAlive:
    """The run's Lease renewed while an engine call waits: its ``sleep`` renews the Lease
    whenever a third of its duration has passed since the last renewal, in the middle of a long
    sleep too, so one long wait (a large rollout, a drain) cannot outlast it; LeaseLost stops
    the wait."""

    def __init__(self, lock: Lock, check_mode: bool, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.lock, self.check_mode, self.clock, self._sleep = lock, check_mode, clock, sleep
        self.interval = max(1.0, lock.duration / 3)
        self.last = clock()
        self.renewals = 0

    def sleep(self, seconds: float) -> None:
        ends = self.clock() + seconds
        while True:
            now = self.clock()
            if now - self.last >= self.interval:
                self.lock.renew(self.check_mode)
                self.last, self.renewals = self.clock(), self.renewals + 1
                now = self.last
            if now >= ends:
                return
            self._sleep(min(ends - now, self.last + self.interval - now))
