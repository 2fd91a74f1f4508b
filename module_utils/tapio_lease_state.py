# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The run's lock as this runner knows it: one JSON file per Lease, written by the lock phase
and by the renewer process (tapio_lease_renewer), read by every engine call of the run.

It says who holds the Lease (``holder``), the renewer's ``pid``, its ``state`` (starting,
holding, lost, failed, stopped, ended), the last renewal on this machine's monotonic clock
(``renewed_monotonic``: every process of the run reads the same clock) and, once lost, the
``reason``. ``LockGuard`` is how an engine call of a locked run stops, naming that reason,
once the Lease is lost: at its start and between the polls of every wait.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Optional

from ansible.module_utils.tapio_lease import LeaseLost, renew_deadline
from ansible.module_utils.tapio_private import make_private_dirs, write_private_file

State = dict[str, Any]
STARTING, HOLDING, LOST, FAILED, STOPPED, ENDED = "starting", "holding", "lost", "failed", "stopped", "ended"
# How often a waiting engine call looks at the file: a local read, cheap.
GUARD_EVERY = 1.0


def state_path(state_dir: str, namespace: str, name: str) -> str:
    """Beside the run's records: <state.dir>/<namespace>/lock/<Lease name>.json."""
    return os.path.join(state_dir, namespace, "lock", f"{name}.json")


def read_state(path: str) -> Optional[State]:
    try:
        with open(path, encoding="utf-8") as handle:
            found = json.load(handle)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def write_state(path: str, state: State) -> None:
    """Written whole, 0600, then renamed over the old file: a reader sees one or the other."""
    make_private_dirs(os.path.dirname(path))
    partial = f"{path}.{os.getpid()}.tmp"
    if os.path.exists(partial):
        os.unlink(partial)
    write_private_file(partial, json.dumps(state, indent=1, sort_keys=True))
    os.replace(partial, path)


def update_state(path: str, record: State, /, **changes: Any) -> State:
    """*record* with *changes*, written (positional-only: ``state`` is one of its keys)."""
    record.update(changes)
    write_state(path, record)
    return record


def process_alive(pid: int) -> bool:
    """Whether *pid* runs (a zombie counts as ended where /proc says so)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class LockGuard:
    """An engine call of a locked run: ``check`` raises LeaseLost, naming why, once the
    renewer found the Lease lost, stopped running or stopped renewing; ``sleep`` checks
    between slices of every wait, so a call waiting on a rollout stops too."""

    def __init__(self, path: str, holder: str, duration: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, alive: Callable[[int], bool] = process_alive) -> None:
        self.path, self.holder, self.duration = path, holder, duration
        self.clock, self._sleep, self.alive = clock, sleep, alive

    def check(self) -> None:
        state = read_state(self.path)
        stop = ("stopped here, before its next change, since another run may be changing the same workloads. "
                "Check what that run did, then run again (a rollback restores the recorded state).")
        if state is None or state.get("holder") != self.holder:
            raise LeaseLost(f"This run's lock is not recorded in {self.path} (another run's lock phase replaced "
                            f"it, or the file was removed): {stop}")
        if state.get("state") == LOST:
            raise LeaseLost(str(state.get("reason")))
        pid = int(state.get("pid") or 0)
        if state.get("state") != HOLDING or not pid or not self.alive(pid):
            raise LeaseLost(f"This run's lock renewer (pid {pid or 'none'}) is not running (state "
                            f"{state.get('state')}: {state.get('reason') or 'no reason recorded'}), so nothing "
                            f"keeps the Lease: {stop}")
        age = self.clock() - float(state.get("renewed_monotonic") or 0)
        if age >= renew_deadline(self.duration):
            raise LeaseLost(f"This run's lock was last renewed {age:.0f}s ago (its renewer is stuck; last error: "
                            f"{state.get('last_error') or 'none'}): {stop}")

    def sleep(self, seconds: float) -> None:
        ends = self.clock() + seconds
        while True:
            self.check()
            left = ends - self.clock()
            if left <= 0:
                return
            self._sleep(min(left, GUARD_EVERY))
