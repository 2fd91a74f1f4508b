# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The collector DaemonSets' switch to NATS: their order and batches, the change each one
needs, and what a failed gate does (return the batch to its records, then fail)."""
from __future__ import annotations

from typing import Any, Optional

from ansible.module_utils.tapio_engine_inputs import Target
from ansible.module_utils.tapio_engine_run import EngineError, EnginePart, EngineRun
from ansible.module_utils.tapio_gates import Gates
from ansible.module_utils.tapio_nats import NatsModuleError
from ansible.module_utils.tapio_rollout import Workloads
from ansible.module_utils.tapio_workload import collector_batches, order_problem, switch_patch, workload_env


class CollectorSwitch(EnginePart):
    """The collectors of one run, as O(collectors), O(order) and O(batch_size) give them."""

    def __init__(self, run: EngineRun, workloads: Workloads, gates: Gates) -> None:
        super().__init__(run)
        self.workloads = workloads
        self.gates = gates
        self.collectors = list(run.inputs.collectors)

    def env(self, target: Target) -> list[dict[str, Any]]:
        """The env a collector gets: O(env) (with its own NATS user) and its subject prefix."""
        return [*workload_env(list(self.inputs.env), target.name, self.inputs.workload_secrets.as_dict()),
                {"name": self.inputs.subject_prefix_env, "value": target.subject_prefix}]

    def patch(self, target: Target, live: dict[str, Any]) -> Optional[dict[str, Any]]:
        """The patch that switches *target*; None when it runs switched already."""
        return switch_patch(live, target.container, self.env(target), self.inputs.pod_annotations.get(target.name),
                            self.inputs.container_overrides.get(target.name))

    def ordered(self) -> list[Target]:
        names = [t.name for t in self.collectors]
        order = list(self.inputs.order or names)
        problem = order_problem(order, names)
        if problem:
            raise EngineError(problem)
        by_name = {t.name: t for t in self.collectors}
        return [by_name[name] for name in order]

    def named(self, name: str) -> Target:
        for target in self.collectors:
            if target.name == name:
                return target
        raise EngineError(f"{name} is not in tapio_collectors")

    def batches(self, ordered: list[Target], live: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """The batches (canary first) and, in each, the collectors to switch and those to gate
        again (switched by an interrupted run whose gate consumer is still there)."""
        batches = []
        for names in collector_batches([t.name for t in ordered], self.inputs.batch_size):
            switch = [n for n in names if self.patch(self.named(n), live[n]) is not None]
            regate = [n for n in names if n not in switch and self.gates.gate_pending(self.named(n))]
            batches.append({"names": names, "changes": switch + regate, "regate": regate})
        return batches

    def apply(self, changes: list[tuple[Target, dict[str, Any]]], live: dict[str, dict[str, Any]],
              gates: bool) -> None:
        """Switch a batch: each collector's gate consumer first (with NATS gates), then its patch."""
        if gates:
            for target, _ in changes:
                self.gates.create_gate_consumer(self.gates.gate_consumer(target), target.subject_prefix)
        for target, patch in changes:
            self.workloads.records.write_switch(target, live[target.name], self.env(target),
                                                self.inputs.pod_annotations.get(target.name),
                                                self.inputs.container_overrides.get(target.name))
            self.workloads.apply_patch(target, live[target.name], patch, self.env(target))

    def fail_batch(self, failed: list[Target], gate: str, error: BaseException, gates: bool) -> None:
        """Return *failed* (with O(full_rollback) every collector) to its records and fail."""
        names = [t.name for t in failed]
        self.run.log(f"{', '.join(names)} failed the {gate} gate: {error}")
        full = self.inputs.full_rollback
        others = [t for t in self.collectors if t.name not in names] if full else []
        # Restore first: a run stopped during the restore leaves the gate consumers, so the
        # next run finds these collectors ungated and gates (or restores) them again.
        self.workloads.restore_targets(failed + others)
        if gates:
            for target in failed:
                try:
                    self.gates.delete_consumer(self.gates.gate_consumer(target))
                except (NatsModuleError, EngineError) as cleanup:
                    self.run.log(f"could not remove gate consumer of {target.name}: {cleanup}")
        raise EngineError(
            f"Collector(s) {', '.join(names)} failed the {gate} gate ({str(error)[:300]}); returned to the recorded "
            "state. " + ("Every other collector was returned to its recorded state too." if full
                         else "Collectors switched earlier stay on NATS; those not reached yet were not touched."))
