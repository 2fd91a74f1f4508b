# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The process that keeps the run's Lease renewed for as long as ansible-playbook runs.

The ``lock`` phase runs inside one task's worker, which ends with the task, and the calls that
wait longest (a collector rollout, a rollback, a NATS StatefulSet rollout in tapio_apply, a
kubernetes.core wait) are not all the engine's. So the lock phase starts this renewer as a
process of its own (its own session: a Ctrl-C or a worker's end does not reach it):

- it renews the Lease every ``renew_interval`` (at most a third of its duration), each time
  with the resourceVersion of its last write as the precondition; a failed try is tried again
  every RETRY_PERIOD until ``renew_deadline`` (two thirds of the duration) has passed since the
  last renewal;
- it watches the ansible-playbook process (the worker's parent); when that ends without its
  release (interrupted, killed) it records the end, waits ENDED_GRACE so an engine call still
  running in an orphaned worker sees it and stops (LockGuard checks every GUARD_EVERY), then
  deletes the Lease if this run still holds it, so the next run need not wait out its duration;
- when a renewal finds the Lease deleted, released or taken, or the deadline passes, it
  records why in the lock's state file, writes it on ansible-playbook's stderr and sends
  ansible-playbook SIGINT, which stops the task in flight and ends the run ("User interrupted
  execution", exit code 99); SIGTERM follows if the run is still there STOP_GRACE later;
- ``unlock`` stops it (SIGTERM) before deleting the Lease.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Optional

from ansible.module_utils.tapio_kube import Kube, KubeError
from ansible.module_utils.tapio_lease import (
    RETRY_PERIOD, Lease, LeaseLost, Lock, renew_deadline, renew_interval)
from ansible.module_utils.tapio_lease_state import (
    ENDED, FAILED, GUARD_EVERY, HOLDING, LOST, STARTING, STOPPED, State, process_alive, read_state, update_state,
    write_state)

# The renewer's own API calls: short, so that a hung request costs one try, not the Lease.
REQUEST_TIMEOUT = 5.0
# From SIGINT to SIGTERM when ansible-playbook does not end.
STOP_GRACE = 30.0
# After ansible-playbook ended unreleased: long enough for an engine call of an orphaned worker to
# see the ended state (LockGuard looks every GUARD_EVERY) before the Lease is given back.
ENDED_GRACE = 3 * GUARD_EVERY
# How long unlock waits for the renewer to stop before SIGKILL.
STOP_WAIT = 10.0
# "<controller pid>:<fd>": a copy of ansible-playbook's stderr, made by the project's action
# plugin in the controller (plugins/action/tapio_migration.py) and inherited by its workers.
CONTROLLER_STDERR_ENV = "TAPIO_CONTROLLER_STDERR"
# Run in a fresh interpreter: the project's module_utils become ansible.module_utils.* as in a
# module; argv: the module_utils directory, the state file.
BOOTSTRAP = ("import sys, ansible.module_utils as m; m.__path__.append(sys.argv[1]); "
             "from ansible.module_utils.tapio_lease_renewer import main; sys.exit(main(sys.argv[2:]))")


class RenewerError(Exception):
    """The renewer did not start; the message says why."""


class Stopped(BaseException):
    """SIGTERM from unlock: leave the loop wherever it is."""


class ProcessWatch:
    """Whether the process *pid* (ansible-playbook) still runs. ``wait`` returns early, True,
    when it ends: on a pidfd where the kernel has them, else by looking every second."""

    def __init__(self, pid: int, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pid, self.sleep, self.clock = pid, sleep, clock
        self.fd: Optional[int] = None
        try:
            self.fd = os.pidfd_open(pid)  # type: ignore[attr-defined]  # Linux 5.3+
        except (AttributeError, OSError):
            self.fd = None

    def wait(self, seconds: float) -> bool:
        if self.fd is not None:
            readable, _, _ = select.select([self.fd], [], [], max(0.0, seconds))
            return bool(readable)
        ends = self.clock() + seconds
        while process_alive(self.pid):
            left = ends - self.clock()
            if left <= 0:
                return False
            self.sleep(min(left, 1.0))
        return True


class Renewer:
    """The renewal loop over *lock* (which holds the Lease the lock phase wrote), recording
    into the state file at *path*. *watch* is ansible-playbook; *announce* writes a line where
    the user sees it; *signal_run* sends ansible-playbook a signal."""

    def __init__(self, lock: Lock, path: str, state: State, watch: Any, announce: Callable[[str], None],
                 signal_run: Callable[[int], None], clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.lock, self.path, self.state, self.watch, self.clock, self.sleep = lock, path, state, watch, clock, sleep
        self.announce, self.signal_run = announce, signal_run
        self.lease: Lease = state["lease"]
        self.renewed_at = float(state["renewed_monotonic"])  # the lock phase's write, on the same clock
        self.interval, self.deadline = renew_interval(lock.duration), renew_deadline(lock.duration)

    def run(self) -> str:
        """Renew until ansible-playbook ends or the Lease is lost; the state it ended in."""
        due = self.clock()  # at once: the lock phase waits for this first renewal
        try:
            while True:
                if self.watch.wait(max(0.0, due - self.clock())):
                    update_state(self.path, self.state, state=ENDED, reason="ansible-playbook ended")
                    self.sleep(ENDED_GRACE)
                    self.release_after_end()
                    return ENDED
                due = self.renew_once()
        except LeaseLost as lost:
            return self.lose(str(lost))

    def renew_once(self) -> float:
        """One renewal (or a failed try, while the deadline allows); when the next is due."""
        try:
            self.lease = self.lock.renew(self.lease)
        except KubeError as error:
            if self.clock() - self.renewed_at >= self.deadline:
                raise LeaseLost(f"This run's lock {self.lock.label} could not be renewed for "
                                f"{self.clock() - self.renewed_at:.0f}s (last error: {error}), so another run may "
                                "take it over: stopped here, before its next change. Run again once the "
                                "Kubernetes API answers.") from None
            update_state(self.path, self.state, last_error=str(error))
            return self.clock() + RETRY_PERIOD
        self.renewed_at = self.clock()
        update_state(self.path, self.state, state=HOLDING, pid=os.getpid(), lease=self.lease,
                     renewed_monotonic=self.renewed_at, renewed_at=str(self.lease["spec"]["renewTime"]),
                     renewals=int(self.state.get("renewals") or 0) + 1, last_error="")
        return self.renewed_at + self.interval

    def release_after_end(self) -> None:
        """The run ended unreleased: give the Lease back (best effort; else it lapses)."""
        try:
            released = self.lock.release()
        except KubeError as error:
            update_state(self.path, self.state, reason=f"ansible-playbook ended; the Lease could not be released "
                                                         f"({error}), so it lapses after its duration")
            return
        update_state(self.path, self.state, reason="ansible-playbook ended; " + (
            "the Lease released" if released else "the Lease was no longer this run's"))

    def lose(self, reason: str) -> str:
        return lose(self.path, self.state, reason, self.watch, self.announce, self.signal_run)


def lose(path: str, state: State, reason: str, watch: Any, announce: Callable[[str], None],
         signal_run: Callable[[int], None]) -> str:
    """Record why the Lease is lost; once the lock phase has returned (the run relies on the
    Lease: the state was holding), stop the run. Before that, the lock phase reports it."""
    started = state.get("state") == HOLDING
    update_state(path, state, state=LOST if started else FAILED, reason=reason)
    if not started:
        return FAILED
    announce(f"\n[tapio lock] {reason}\n[tapio lock] Stopping the run: SIGINT to ansible-playbook (pid "
             f"{watch.pid}); it ends with \"User interrupted execution\".\n")
    signal_run(signal.SIGINT)
    if not watch.wait(STOP_GRACE):
        signal_run(signal.SIGTERM)
    return LOST


# -- started and stopped by the lock and unlock phases ----------------------------------------
def renewer_command(path: str) -> list[str]:
    return [sys.executable, "-c", BOOTSTRAP, os.path.dirname(os.path.abspath(__file__)), path]


def controller_stderr(parent: int) -> Optional[int]:
    """ansible-playbook's stderr as a descriptor this worker inherited, if its controller
    (*parent*) shared one."""
    owner, _, fd = os.environ.get(CONTROLLER_STDERR_ENV, "").partition(":")
    if owner != str(parent) or not fd.isdigit():
        return None
    try:
        os.fstat(int(fd))
    except OSError:
        return None
    return int(fd)


def spawn(path: str, stderr: Optional[int]) -> Any:
    """The renewer, detached: its own session, no stdin or stdout."""
    return subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
        renewer_command(path), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=stderr if stderr is not None else subprocess.DEVNULL, start_new_session=True, close_fds=True)


def start_renewer(path: str, state: State, launch: Callable[[str], Any], clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> State:
    """Record *state* (the Lease just written, who holds it, what to watch), start the
    renewer with *launch* and wait for its first renewal; RenewerError (the process stopped)
    when it fails or does not renew within the renewal deadline."""
    write_state(path, {**state, "state": STARTING, "pid": 0, "renewals": 0, "reason": "", "last_error": ""})
    process = launch(path)
    ends = float(state["renewed_monotonic"]) + renew_deadline(int(state["duration"]))
    while True:
        found = read_state(path) or {}
        if found.get("state") == HOLDING and found.get("pid") == process.pid:
            return found
        exited = process.poll()
        if found.get("state") in (FAILED, LOST) or exited is not None or clock() >= ends:
            if exited is None:
                process.kill()
            why = found.get("reason") or found.get("last_error") or (
                f"exit code {exited}" if exited is not None else "no renewal within the renewal deadline")
            raise RenewerError(f"the lock's renewer (pid {process.pid}) did not start renewing the Lease: {why}")
        sleep(0.1)


def stop_renewer(path: str, holder: str, kill: Callable[[int, int], None] = os.kill,
                 alive: Callable[[int], bool] = process_alive, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> Optional[State]:
    """Stop this run's renewer (SIGTERM, SIGKILL after STOP_WAIT); its last state, or None
    when none of this run's is recorded. Returns once it no longer renews."""
    state = read_state(path)
    if state is None or state.get("holder") != holder:
        return None
    pid = int(state.get("pid") or 0)
    if state.get("state") == HOLDING and pid and alive(pid):
        kill(pid, signal.SIGTERM)
        ends = clock() + STOP_WAIT
        while alive(pid) and (read_state(path) or {}).get("state") == HOLDING and clock() < ends:
            sleep(0.1)
        if alive(pid) and (read_state(path) or {}).get("state") == HOLDING:
            kill(pid, signal.SIGKILL)
    return read_state(path)


# -- the process ------------------------------------------------------------------------------
def _stopped(_signum: int, _frame: Any) -> None:
    raise Stopped()


def _announce(line: str) -> None:
    sys.stderr.write(line)
    sys.stderr.flush()


def main(argv: list[str]) -> int:
    """The renewer process: argv is the state file the lock phase wrote."""
    path = argv[0]
    state = read_state(path)
    if state is None:
        _announce(f"[tapio lock] no lock state in {path}\n")
        return 2
    signal.signal(signal.SIGTERM, _stopped)
    watch = ProcessWatch(int(state["watch_pid"]))

    def signal_run(signum: int) -> None:
        os.kill(watch.pid, signum)

    try:
        kube = Kube(state.get("kubeconfig"), state.get("context"), log=lambda _line: None, retries=0,
                    request_timeout=REQUEST_TIMEOUT)
        lock = Lock(kube, state["namespace"], state["name"], state["holder"], int(state["duration"]),
                    log=lambda _line: None)
        Renewer(lock, path, state, watch, _announce, signal_run).run()
    except Stopped:
        if state.get("state") in (STARTING, HOLDING):  # a loss already recorded keeps its reason
            update_state(path, state, state=STOPPED, reason="stopped by the run's release")
    except Exception as error:  # noqa: BLE001 - nothing renews the Lease now, so the run must stop: as lost
        lose(path, state, f"This run's lock renewer failed ({type(error).__name__}: {error}), so nothing renews "
             "the Lease: stopped here, before its next change.", watch, _announce, signal_run)
    return 0
