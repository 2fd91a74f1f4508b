# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What every part of one engine call shares: its inputs, its clients and its account.

The records (tapio_records), the workloads (tapio_rollout), the JetStream gates
(tapio_gates), the preflight checks and the probe Job each hold the same EngineRun, so one
phase keeps one list of steps, one diff and one ``changed``, whichever part did the work.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from ansible.module_utils.tapio_engine_inputs import EngineInputs, Target
from ansible.module_utils.tapio_lease import new_holder
from ansible.module_utils.tapio_wait import wait_for_progress
from ansible.module_utils.tapio_workload import output_mode_of

Poll = Callable[[], tuple[bool, Any, str]]


class EngineError(Exception):
    """A phase that cannot go on; the message names the object and the cause."""


class EngineRun:
    """One phase's inputs, Kubernetes and NATS clients, check mode, clock, and what it did."""

    def __init__(self, inputs: EngineInputs, kube: Any, nats: Any, check: bool, clock: Callable[[], float],
                 sleep: Callable[[float], None], steps: Optional[list[str]] = None) -> None:
        self.inputs, self.kube, self.nats, self.check = inputs, kube, nats, check
        self.clock, self.sleep = clock, sleep
        self.started = clock()
        self.steps: list[str] = [] if steps is None else steps
        self.diff: list[dict[str, Any]] = []
        self.changed = False
        self.namespace = inputs.namespace
        self.mode_env = inputs.mode_env
        # Who records: the run's Lease holder (migrate.yml, rollback.yml), else made up here.
        self.run_id = inputs.lock.holder or f"{new_holder()} (no lock)"

    def log(self, message: str) -> None:
        self.steps.append(f"[{self.clock() - self.started:6.1f}s] {message}")

    def mode(self, live: dict[str, Any], target: Target) -> Optional[str]:
        """The output mode *target*'s container runs in (None when the variable is unset)."""
        return output_mode_of(live, target.container, self.mode_env)

    def wait(self, poll: Poll, what: str, deadline: float) -> str:
        """tapio_wait.wait_for_progress at the run's poll interval; the last summary."""
        return wait_for_progress(poll, what, deadline, self.inputs.poll_interval, self.clock, self.sleep).summary


class EnginePart:
    """A part of the engine (the records, the workloads, the gates...): it works on one run."""

    def __init__(self, run: EngineRun) -> None:
        self.run = run
        self.inputs = run.inputs
