"""Unit tests for the process that keeps the run's Lease (module_utils/tapio_lease_renewer.py),
the state file it shares with the run and the guard of every engine call
(module_utils/tapio_lease_state.py), and the lock phase's refusal of a short Lease
(library/tapio_migration.py). Clocks, the watched ansible-playbook and its signals are fake:
nothing waits, and no assertion is about how long anything took."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from conftest import REPO_ROOT
from fake_clock import Clock
from fake_lease_kube import LeaseKube, kube_utils
from module_utils_loader import load_file, load_module_utils

lease = load_module_utils("tapio_lease")
state_utils = load_module_utils("tapio_lease_state")
renewer = load_module_utils("tapio_lease_renewer")

DURATION = 30  # the floor: renewed every 10 s, given up after 20 s without a renewal
RUN_PID = 4242  # ansible-playbook, as the renewer knows it


class Playbook:
    """The watched ansible-playbook: it ends at *ends_at* on the fake clock, or once it got
    SIGINT when *obeys_sigint*; the signals it got."""

    def __init__(self, clock: Clock, ends_at: Optional[float] = None, obeys_sigint: bool = True) -> None:
        self.clock, self.ends_at, self.obeys_sigint = clock, ends_at, obeys_sigint
        self.pid = RUN_PID
        self.signals: list[int] = []

    def wait(self, seconds: float) -> bool:
        if self.ends_at is not None and self.clock.now + seconds >= self.ends_at:
            self.clock.sleep(max(0.0, self.ends_at - self.clock.now))
            return True
        self.clock.sleep(seconds)
        return False

    def signal(self, signum: int) -> None:
        self.signals.append(signum)
        if signum == signal.SIGINT and self.obeys_sigint:
            self.ends_at = self.clock.now + 1


def taken(tmp_path: Path, clock: Clock, started: bool = True) -> tuple[LeaseKube, Any, str, dict[str, Any]]:
    """A Lease the lock phase has just taken, and the state file it wrote (holding once the
    renewer's first renewal was seen, *started*)."""
    kube = LeaseKube(clock=clock)
    lock = lease.Lock(kube, "tapio", "tapio-nats-migration", "me", DURATION, log=lambda _: None, clock=clock,
                      sleep=clock.sleep)
    lock.take()
    path = state_utils.state_path(str(tmp_path / "state"), "tapio", "tapio-nats-migration")
    state = {"holder": "me", "namespace": "tapio", "name": "tapio-nats-migration", "duration": DURATION,
             "kubeconfig": None, "context": None, "watch_pid": RUN_PID, "lease": lock.lease,
             "renewed_monotonic": lock.written_at, "state": state_utils.HOLDING if started else state_utils.STARTING,
             "pid": 99, "renewals": 0}
    state_utils.write_state(path, state)
    return kube, lock, path, state


def run_renewer(kube: LeaseKube, lock: Any, path: str, state: dict[str, Any], run: Playbook,
                clock: Clock) -> tuple[str, list[str]]:
    said: list[str] = []
    ended = renewer.Renewer(lock, path, state, run, said.append, run.signal, clock=clock, sleep=clock.sleep).run()
    return ended, said


# -- renewed throughout, whatever runs ---------------------------------------------------------------
def test_the_lease_is_renewed_at_once_then_at_most_a_third_of_its_duration_apart(tmp_path: Path) -> None:
    clock = Clock()
    kube, lock, path, state = taken(tmp_path, clock)
    run = Playbook(clock, ends_at=95)
    ended, said = run_renewer(kube, lock, path, state, run, clock)
    times = [when for verb, when in kube.writes if verb == "replace"]
    assert times[0] == 0, "the first renewal comes at once (the lock phase waits for it)"
    assert all(later - earlier <= DURATION / 3 for earlier, later in zip(times, times[1:]))
    assert times[-1] >= 90, "renewed until ansible-playbook ended"
    recorded = state_utils.read_state(path)
    assert ended == recorded["state"] == state_utils.ENDED and recorded["renewals"] == len(times)
    # Ended unreleased (interrupted, killed): the Lease is given back once engine calls of orphaned
    # workers have had ENDED_GRACE to see the end, so the next run need not wait out its duration.
    assert kube.lease is None and recorded["reason"] == "ansible-playbook ended; the Lease released"
    assert kube.writes[-1] == ("DELETE", 95 + renewer.ENDED_GRACE), kube.writes[-3:]
    assert run.signals == [] and said == []


def test_a_renewal_that_fails_is_tried_again_and_the_lease_is_kept(tmp_path: Path) -> None:
    clock = Clock()
    kube, lock, path, state = taken(tmp_path, clock)
    failing = {10.0, 12.0}

    def api_down(_kube: LeaseKube) -> None:
        if clock.now in failing:
            raise kube_utils.KubeError("PUT lease: API not reachable", transient=True)

    kube.before_each_write = api_down
    ended, _ = run_renewer(kube, lock, path, state, Playbook(clock, ends_at=40), clock)
    times = [when for verb, when in kube.writes if verb == "replace"]
    assert 14.0 in times and ended == state_utils.ENDED, "renewed at the third try, 2 s apart"


# -- stopped at once when lost ----------------------------------------------------------------------
@pytest.mark.parametrize("what, change", [
    ("was deleted", lambda k: k.store(None)),
    ("was taken by thief@elsewhere", lambda k: k.lease and k.lease["spec"]["holderIdentity"] == "me"
     and k.renewed_by_other("thief@elsewhere", "t")),
])
def test_a_lost_lease_is_recorded_announced_and_stops_the_run(tmp_path: Path, what: str, change: Any) -> None:
    clock = Clock()
    kube, lock, path, state = taken(tmp_path, clock)
    kube.before_each_write = lambda k: clock.now >= 25 and change(k)
    run = Playbook(clock)
    ended, said = run_renewer(kube, lock, path, state, run, clock)
    recorded = state_utils.read_state(path)
    assert ended == recorded["state"] == state_utils.LOST
    assert f"This run's lock Lease tapio/tapio-nats-migration {what} while the run went on" in recorded["reason"]
    assert run.signals == [signal.SIGINT], "SIGINT, and no more once ansible-playbook ended"
    assert recorded["reason"] in said[0] and f"SIGINT to ansible-playbook (pid {RUN_PID})" in said[0]
    assert clock.now <= 30 + 1, "stopped at the first renewal after the loss"


def test_a_run_that_does_not_end_on_sigint_gets_sigterm(tmp_path: Path) -> None:
    clock = Clock()
    kube, lock, path, state = taken(tmp_path, clock)
    kube.before_each_write = lambda k: clock.now >= 10 and k.store(None)
    run = Playbook(clock, obeys_sigint=False)
    run_renewer(kube, lock, path, state, run, clock)
    assert run.signals == [signal.SIGINT, signal.SIGTERM]


def test_an_api_that_stays_unreachable_past_the_renewal_deadline_loses_the_lease(tmp_path: Path) -> None:
    clock = Clock()
    kube, lock, path, state = taken(tmp_path, clock)

    def api_down(_kube: LeaseKube) -> None:
        if clock.now >= 10:
            raise kube_utils.KubeError("PUT lease: 503 Service Unavailable", 503, transient=True)

    kube.before_each_write = api_down
    run = Playbook(clock)
    ended, _ = run_renewer(kube, lock, path, state, run, clock)
    reason = state_utils.read_state(path)["reason"]
    assert ended == state_utils.LOST and run.signals == [signal.SIGINT]
    assert "could not be renewed for 20s (last error: PUT lease: 503 Service Unavailable)" in reason
    assert clock.now < DURATION, "given up before anyone watching may take the Lease over"


def test_a_lease_lost_before_the_first_renewal_fails_the_lock_phase_instead_of_signalling(tmp_path: Path) -> None:
    clock = Clock()
    kube, lock, path, state = taken(tmp_path, clock, started=False)
    kube.store(None)
    run = Playbook(clock)
    ended, said = run_renewer(kube, lock, path, state, run, clock)
    assert ended == state_utils.FAILED and run.signals == [] and said == []
    assert "was deleted" in state_utils.read_state(path)["reason"]


# -- every engine call that starts afterwards fails naming the reason ------------------------------
def guard_for(path: str, clock: Clock, alive: bool = True) -> Any:
    return state_utils.LockGuard(path, "me", DURATION, clock=clock, sleep=clock.sleep, alive=lambda _pid: alive)


def test_an_engine_call_starts_while_the_renewer_holds_the_lease(tmp_path: Path) -> None:
    clock = Clock(5)
    _, _, path, _ = taken(tmp_path, clock)
    guard_for(path, clock).check()


def test_an_engine_call_after_the_loss_fails_with_the_recorded_reason(tmp_path: Path) -> None:
    clock = Clock()
    kube, lock, path, state = taken(tmp_path, clock)
    kube.before_each_write = lambda k: clock.now >= 10 and k.store(None)
    run_renewer(kube, lock, path, state, Playbook(clock), clock)
    with pytest.raises(lease.LeaseLost) as lost:
        guard_for(path, clock).check()
    assert str(lost.value) == state_utils.read_state(path)["reason"]
    assert "was deleted while the run went on: stopped here" in str(lost.value)


@pytest.mark.parametrize("change, alive, message", [
    ({}, False, "This run's lock renewer (pid 99) is not running"),
    ({"holder": "another run"}, True, "This run's lock is not recorded in"),
    ({"state": state_utils.STOPPED, "reason": "stopped by the run's release"}, True, "stopped by the run's release"),
    ({"renewed_monotonic": -20.0}, True, "This run's lock was last renewed 20s ago"),
])
def test_an_engine_call_fails_when_nothing_keeps_the_lease(tmp_path: Path, change: dict[str, Any], alive: bool,
                                                           message: str) -> None:
    clock = Clock()
    _, _, path, state = taken(tmp_path, clock)
    state_utils.write_state(path, {**state, **change})
    with pytest.raises(lease.LeaseLost, match=re.escape(message)):
        guard_for(path, clock, alive=alive).check()


def test_a_waiting_engine_call_stops_once_the_lease_is_lost(tmp_path: Path) -> None:
    clock = Clock()
    _, _, path, state = taken(tmp_path, clock)
    guard = guard_for(path, clock)
    real_sleep = clock.sleep

    def sleep(seconds: float) -> None:
        real_sleep(seconds)
        if clock.now >= 5:
            state_utils.update_state(path, state, state=state_utils.LOST, reason="lost: deleted")

    guard._sleep = sleep
    with pytest.raises(lease.LeaseLost, match="lost: deleted"):
        guard.sleep(60)
    assert max(clock.sleeps) <= state_utils.GUARD_EVERY and clock.now < 60


# -- started by the lock phase, stopped by unlock ----------------------------------------------------
class Process:
    def __init__(self, pid: int = 77, code: Optional[int] = None) -> None:
        self.pid, self.code, self.killed = pid, code, False

    def poll(self) -> Optional[int]:
        return self.code

    def kill(self) -> None:
        self.killed = True


def launching(outcome: dict[str, Any], process: Process) -> Any:
    def launch(path: str) -> Process:
        if outcome:
            state_utils.update_state(path, state_utils.read_state(path), **outcome)
        return process
    return launch


def test_the_lock_phase_returns_once_the_renewer_renewed(tmp_path: Path) -> None:
    clock = Clock()
    _, _, path, state = taken(tmp_path, clock, started=False)
    found = renewer.start_renewer(path, state, launching({"state": state_utils.HOLDING, "pid": 77}, Process()),
                                  clock=clock, sleep=clock.sleep)
    assert found["pid"] == 77 and found["state"] == state_utils.HOLDING


@pytest.mark.parametrize("outcome, process, message", [
    ({"state": state_utils.FAILED, "reason": "cannot load kubeconfig"}, Process(), "cannot load kubeconfig"),
    ({}, Process(code=1), "exit code 1"),
    ({}, Process(), "no renewal within the renewal deadline"),
])
def test_a_renewer_that_does_not_start_fails_the_lock_phase(tmp_path: Path, outcome: dict[str, Any],
                                                            process: Process, message: str) -> None:
    clock = Clock()
    _, _, path, state = taken(tmp_path, clock, started=False)
    with pytest.raises(renewer.RenewerError, match=f"did not start renewing the Lease: {message}"):
        renewer.start_renewer(path, state, launching(outcome, process), clock=clock, sleep=clock.sleep)
    assert process.killed == (process.code is None)


def test_unlock_stops_the_renewer_before_the_lease_is_deleted(tmp_path: Path) -> None:
    clock = Clock()
    _, _, path, state = taken(tmp_path, clock)
    sent: list[tuple[int, int]] = []

    def kill(pid: int, signum: int) -> None:
        sent.append((pid, signum))
        state_utils.update_state(path, state, state=state_utils.STOPPED)

    last = renewer.stop_renewer(path, "me", kill=kill, alive=lambda _pid: True, clock=clock, sleep=clock.sleep)
    assert sent == [(99, signal.SIGTERM)] and last["state"] == state_utils.STOPPED


def test_a_renewer_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    clock = Clock()
    _, _, path, _ = taken(tmp_path, clock)
    sent: list[int] = []
    renewer.stop_renewer(path, "me", kill=lambda _pid, signum: sent.append(signum), alive=lambda _pid: True,
                         clock=clock, sleep=clock.sleep)
    assert sent == [signal.SIGTERM, signal.SIGKILL]


def test_unlock_leaves_a_lost_lease_and_another_runs_renewer_alone(tmp_path: Path) -> None:
    clock = Clock()
    _, _, path, state = taken(tmp_path, clock)
    sent: list[int] = []
    assert renewer.stop_renewer(path, "someone else", kill=lambda _p, s: sent.append(s), clock=clock,
                                sleep=clock.sleep) is None
    state_utils.update_state(path, state, state=state_utils.LOST, reason="taken")
    assert renewer.stop_renewer(path, "me", kill=lambda _p, s: sent.append(s), clock=clock,
                                sleep=clock.sleep)["state"] == state_utils.LOST
    assert sent == []


def test_the_controllers_stderr_is_used_only_by_its_own_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(renewer.CONTROLLER_STDERR_ENV, "123:2")
    assert renewer.controller_stderr(123) == 2
    assert renewer.controller_stderr(124) is None, "an ansible-playbook started by a task inherits the variable only"
    monkeypatch.setenv(renewer.CONTROLLER_STDERR_ENV, "123:987654")
    assert renewer.controller_stderr(123) is None
    plugin = (REPO_ROOT / "plugins" / "action" / "tapio_migration.py").read_text()
    assert f'CONTROLLER_STDERR_ENV = "{renewer.CONTROLLER_STDERR_ENV}"' in plugin


def test_the_state_file_is_private(tmp_path: Path) -> None:
    _, _, path, _ = taken(tmp_path, Clock())
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"


# -- the real process, without a cluster -----------------------------------------------------------
def test_the_renewer_runs_in_a_fresh_interpreter_and_reports_a_start_failure(tmp_path: Path) -> None:
    """The bootstrap finds the project's module_utils; a kubeconfig that cannot be loaded is
    recorded as a failed start (the lock phase reports it), and nothing is signalled."""
    path = state_utils.state_path(str(tmp_path), "tapio", "tapio-nats-migration")
    state_utils.write_state(path, {"holder": "me", "namespace": "tapio", "name": "tapio-nats-migration",
                                   "duration": DURATION, "kubeconfig": str(tmp_path / "missing-kubeconfig"),
                                   "context": "none", "watch_pid": os.getpid(), "lease": {},
                                   "renewed_monotonic": 0, "state": state_utils.STARTING, "pid": 0})
    done = subprocess.run(renewer.renewer_command(path), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    recorded = json.loads(Path(path).read_text())
    assert recorded["state"] == state_utils.FAILED and "cannot load kubeconfig" in recorded["reason"]
    missing = subprocess.run(renewer.renewer_command(str(tmp_path / "none.json")), capture_output=True, text=True,
                             timeout=120, check=False)
    assert missing.returncode == 2 and "no lock state in" in missing.stderr


def test_the_watch_sees_a_process_end() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    watch = renewer.ProcessWatch(child.pid)
    assert watch.wait(0) is False
    child.stdin.close()
    child.wait()
    assert watch.wait(60) is True


# -- the lock phase refuses a short Lease before anything ----------------------------------------------
class Refused(Exception):
    pass


class Module:
    check_mode = False

    def fail_json(self, **result: Any) -> None:
        raise Refused(result["msg"])


def test_the_lock_phase_refuses_a_lease_under_the_floor_before_reading_anything() -> None:
    migration = load_file("lock_test_tapio_migration", REPO_ROOT / "library" / "tapio_migration.py")
    params = {"phase": "lock", "namespace": "tapio", "kubeconfig": None, "context": None,
              "lock": {"name": "tapio-nats-migration", "holder": "", "duration": 29}}
    with pytest.raises(Refused, match=r"tapio_lock_duration \(lock.duration\) 29 is below 30 seconds"):
        migration.run_lock_phase(Module(), params, [])
    assert params["lock"]["holder"] == "", "refused before a holder was even made"


def test_an_engine_call_of_a_locked_run_checks_the_renewer_and_the_api_before_it_starts(tmp_path: Path) -> None:
    migration = load_file("guard_test_tapio_migration", REPO_ROOT / "library" / "tapio_migration.py")
    clock = Clock()
    kube, _, path, state = taken(tmp_path, clock)
    params = {"namespace": "tapio", "state": {"dir": str(tmp_path / "state")},
              "lock": {"name": "tapio-nats-migration", "holder": "me", "duration": DURATION}}
    state_utils.update_state(path, state, pid=os.getpid(), renewed_monotonic=time.monotonic())
    assert callable(migration.guarded_sleep(kube, params, []))
    kube.renewed_by_other("thief@elsewhere", "t")  # the renewer has not noticed yet: the API says so
    with pytest.raises(lease.LeaseLost, match="was taken by thief@elsewhere"):
        migration.guarded_sleep(kube, params, [])
    state_utils.update_state(path, state, state=state_utils.LOST, reason="the recorded reason")
    with pytest.raises(lease.LeaseLost, match="the recorded reason"):
        migration.guarded_sleep(kube, params, [])
    assert [verb for verb, _ in kube.writes] == ["create"], "an engine call never writes the Lease"
