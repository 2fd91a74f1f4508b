# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The migration engine: every phase's reads, plan, changes and waits in one process.

The roles call it through library/tapio_migration.py, once per phase (the collectors once
per batch, so a person sees each batch pass). Decisions are the pure functions of
tapio_workload; the engine only sequences them against the Kubernetes API (tapio_kube)
and NATS (tapio_nats_session), and keeps a log of what it did, with times, for the output.

Each phase here is a short composition of the parts that do the work, all sharing one
EngineRun (tapio_engine_run): the records (tapio_records), the workloads and their rollouts
(tapio_rollout), the JetStream gates (tapio_gates), the collectors' switch
(tapio_collectors), the preflight checks (tapio_preflight) and the probe Job
(tapio_probe_job). Their options are read once, typed (tapio_engine_inputs).

Waits follow progress, as Kubernetes' progressDeadlineSeconds does: a rollout, drain or lag
gate fails when its progress marker has not moved for ``progress_deadline`` seconds, never
after a fixed total, so a 1,000-pod DaemonSet rolling one pod at a time is not failed. Every
wait and retry is one of tapio_wait's.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

from ansible.module_utils.tapio_collectors import CollectorSwitch
from ansible.module_utils.tapio_engine_inputs import EngineInputs, Target
from ansible.module_utils.tapio_engine_run import EngineError, EngineRun
from ansible.module_utils.tapio_gates import Gates
from ansible.module_utils.tapio_kube import Kube, KubeError
from ansible.module_utils.tapio_nats import NatsModuleError
from ansible.module_utils.tapio_preflight import PreflightChecks
from ansible.module_utils.tapio_probe_job import ProbeJob
from ansible.module_utils.tapio_records import Records
from ansible.module_utils.tapio_rollout import Workloads
from ansible.module_utils.tapio_wait import Stalled
from ansible.module_utils.tapio_workload import WorkloadError, report_entry, switch_patch, workload_env

# What a failed collector gate may raise: the batch is returned to its records, then fails.
GATE_FAILURES = (EngineError, Stalled, KubeError, NatsModuleError, WorkloadError)

__all__ = ["Engine", "EngineError", "EngineInputs"]


class Engine:
    """One phase's run of the tapio_migration module, on its typed ``inputs``."""

    def __init__(self, inputs: EngineInputs, kube: Kube, nats: Any, check_mode: bool,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 steps: Optional[list[str]] = None) -> None:
        self.run = EngineRun(inputs, kube, nats, check_mode, clock, sleep, steps)
        self.inputs = inputs
        self.check = check_mode
        self.pipeline = inputs.pipeline
        self.collectors = list(inputs.collectors)
        self.records = Records(self.run)
        self.workloads = Workloads(self.run, self.records)
        self.gates = Gates(self.run)
        self.switch = CollectorSwitch(self.run, self.workloads, self.gates)
        self.preflight_checks = PreflightChecks(self.run)
        self.probe_job = ProbeJob(self.run)

    # -- what the module returns ------------------------------------------------------------
    @property
    def steps(self) -> list[str]:
        return self.run.steps

    @property
    def diff(self) -> list[dict[str, Any]]:
        return self.run.diff

    @property
    def changed(self) -> bool:
        return self.run.changed

    def log(self, message: str) -> None:
        self.run.log(message)

    # == phases =============================================================================
    def permissions(self) -> dict[str, Any]:
        """The namespace and every permission the run needs (its Lease's included), asked of
        the API server before the run's Lease is taken, so a missing one changes nothing."""
        self.preflight_checks.require_namespace()
        self.preflight_checks.require_permissions()
        return {}

    def preflight(self) -> dict[str, Any]:
        """The pre-migration checklist (after the permissions phase); every problem is found
        before anything changes."""
        checks = self.preflight_checks
        checks.require_namespace()
        targets = [self.pipeline, *self.collectors]
        live = checks.require_workloads(targets)
        warnings = checks.strategy_warnings(live[self.pipeline.name])
        checks.require_pod_secrets(targets)
        deferred = checks.nats_deferred()
        modes = checks.output_modes(targets, live)
        fill = None
        if self.inputs.nats_checks and not deferred:
            # A stream from an earlier run that is close to its limits would discard events
            # (or refuse them) while the collectors switch: stop before anything changes.
            fill = self.gates.check_fill("preflight")
            if fill is None:
                self.log(f"stream {self.inputs.stream} does not exist yet (the streams phase creates it)")
        return {"nats_deferred": deferred, "warnings": warnings, "output_modes": modes, "stream_fill": fill}

    def probe(self) -> dict[str, Any]:
        """A short-lived Job resolves the NATS service and opens its client port from the
        collectors' namespace (tapio_probe_job)."""
        return self.probe_job.run_probe()

    def pipeline_phase(self) -> dict[str, Any]:
        """Record the pipeline, then point it at NATS (the stream and its durable consumer first)."""
        if self.inputs.nats_checks:
            self.require_durable_consumer()
        live = self.workloads.read_all([self.pipeline])
        self.records.record([self.pipeline], live)
        env = workload_env(list(self.inputs.env), self.pipeline.credentials or self.pipeline.name,
                           self.inputs.workload_secrets.as_dict())
        patch = switch_patch(live[self.pipeline.name], self.pipeline.container, env)
        if patch:
            self.records.write_switch(self.pipeline, live[self.pipeline.name], env)
            self.workloads.apply_patch(self.pipeline, live[self.pipeline.name], patch, env)
        else:
            self.log(f"{self.pipeline.label} already consumes from NATS")
        if not self.check:
            self.workloads.wait_rollout(self.pipeline)
        return {}

    def require_durable_consumer(self) -> None:
        """The stream and the pipeline's durable consumer exist before the pipeline switches."""
        durable = self.gates.consumer(self.inputs.consumer) if self.gates.stream_exists() else None
        if durable is not None:
            return
        message = (f"Stream {self.inputs.stream} with durable consumer {self.inputs.consumer} must exist before "
                   f"{self.pipeline.label} switches (phase streams).")
        if not self.check:
            raise EngineError(message)
        # The streams phase before this one created nothing in check mode.
        self.log(f"check mode: {message}")

    def collectors_plan(self) -> dict[str, Any]:
        """Record every collector before changing any; the batches and what each changes."""
        ordered = self.switch.ordered()
        live = self.workloads.read_all(ordered)
        self.records.record(ordered, live)
        if self.inputs.require_pipeline:
            self.require_pipeline_on_nats()
        batches = self.switch.batches(ordered, live)
        pending = [b for b in batches if b["changes"]]
        regates = [n for b in batches for n in b["regate"]]
        self.log(f"{len(pending)} of {len(batches)} batch(es) to switch or gate: "
                 + ("; ".join(", ".join(b["changes"]) for b in pending) or "every collector already on NATS and gated")
                 + (f" ({', '.join(regates)}: switched by an interrupted run, not gated yet)" if regates else ""))
        return {"batches": batches}

    def require_pipeline_on_nats(self) -> None:
        """Collectors switch only once the pipeline consumes from NATS (in a real run)."""
        pipeline = self.workloads.read(self.pipeline)
        mode = self.run.mode(pipeline, self.pipeline) if pipeline else None
        if mode != self.inputs.nats_value and not self.check:
            raise EngineError(
                f"Deployment {self.run.namespace}/{self.pipeline.name} does not run with {self.run.mode_env}="
                f"{self.inputs.nats_value}: switch the pipeline first (phase pipeline), or events published by the "
                "collectors would have no consumer.")

    def collectors_batch(self) -> dict[str, Any]:
        """Switch one batch, then gate it: rollout, new messages on its subjects, pipeline
        consumer keeping up. A failed gate returns the batch to its record and fails."""
        batch = [self.switch.named(n) for n in self.inputs.batch]
        live = self.workloads.read_all(batch)
        changes = [(t, p) for t in batch if (p := self.switch.patch(t, live[t.name])) is not None]
        # Switched by a run that stopped before their gates finished: gated now, not switched again.
        regate = [t for t in batch if all(t is not c for c, _ in changes) and self.gates.gate_pending(t)]
        if not changes and not regate:
            self.log(f"{', '.join(t.name for t in batch)}: already on NATS")
            return {"switched": [], "gated": []}
        if regate:
            self.log(f"{', '.join(t.name for t in regate)}: on NATS with its gate consumer still there (an "
                     "interrupted run); running its gates")
        targets = [t for t, _ in changes] + regate
        gates = self.inputs.nats_checks and not self.check
        for gate, step in self.batch_steps(changes, live, targets, gates):
            try:
                step()
            except GATE_FAILURES as error:
                self.switch.fail_batch(targets, gate, error, gates)
        return {"switched": [t.name for t, _ in changes], "gated": [t.name for t in targets] if gates else []}

    def batch_steps(self, changes: list[tuple[Target, dict[str, Any]]], live: dict[str, dict[str, Any]],
                    targets: list[Target], gates: bool) -> list[tuple[str, Callable[[], None]]]:
        """A batch's steps in order, each named by the gate a failure in it fails: the switch
        (gate consumers first, so they count the first new message), then in a real run the
        rollouts and, with NATS gates, new messages on each collector's subjects and the
        pipeline consumer keeping up (its gate consumers removed once it does)."""
        steps: list[tuple[str, Callable[[], None]]] = [("switch", lambda: self.switch.apply(changes, live, gates))]
        if not self.check:
            steps.append(("rollout", lambda: self.wait_rollouts(targets)))
        if gates:
            steps.append(("subjects", lambda: self.gates.wait_new_messages_of(targets)))
            steps.append(("consumer lag", lambda: self.gates.wait_keeps_up_then_remove(targets)))
        return steps

    def wait_rollouts(self, targets: list[Target]) -> None:
        for target in targets:
            self.workloads.wait_rollout(target)

    def verify(self) -> dict[str, Any]:
        """Every workload in the expected output mode and rolled out; the consumer keeping up."""
        if self.check:
            self.log("check mode: the verify phase runs after a real run (nothing was changed, so nothing is verified)")
            return {}
        expected, direct = self.inputs.expected_mode, self.inputs.direct_value
        targets = [self.pipeline, *self.collectors]
        live = self.workloads.read_all(targets)
        wrong = []
        for target in targets:
            mode = self.run.mode(live[target.name], target)
            if not (mode == expected or (mode is None and expected == direct)):
                wrong.append(f"{target.name} ({mode or 'unset'})")
        if wrong:
            raise EngineError(f"Not in {self.run.mode_env}={expected} mode: {', '.join(wrong)}")
        self.log(f"all {len(targets)} workloads run in {expected} mode")
        self.wait_rollouts(targets)
        if self.inputs.nats_checks and expected != direct:
            return self.gates.verify_consumer()
        return {}

    def rollback(self) -> dict[str, Any]:
        """Collectors back first, then wait for the pipeline's consumer to drain, then the pipeline.
        A restore first judges every record (its workload's incarnation, its digests), so a record
        it refuses stops the rollback before any workload changes; ``kept_changes`` lists what
        the restores kept as others changed it since the migration."""
        if self.inputs.rollback_mode == "restore":
            self.workloads.check_restorable([*self.collectors, self.pipeline])
        self.workloads.rollback_targets(self.collectors)
        if self.inputs.drain and not self.check:
            self.gates.wait_drained()
        elif not self.inputs.drain:
            self.log(f"drain not checked (drain false): {self.pipeline.label} goes back without checking that "
                     f"consumer {self.inputs.consumer} has nothing pending; events still in the stream stay there")
        self.workloads.rollback_targets([self.pipeline])
        return {"kept_changes": list(self.workloads.kept_changes)}

    def report(self) -> dict[str, Any]:
        """Each workload against its record, and the NATS counters at report time."""
        targets = [self.pipeline, *self.collectors]
        live = self.workloads.read_all(targets)
        plan = self.records.load_records(targets, live)
        workloads = [{**report_entry(e["target"].kind, e["target"].name, e["target"].container, e["source"],
                                     e["record"], live[name], self.run.mode_env,
                                     e["provenance"] if e["source"] != "live" else None),
                      "kept_on_restore": self.workloads.kept_on_restore(e, live[name])}
                     for name, e in plan.items() if e["source"] != "none"]
        nats_checks = self.inputs.nats_checks
        snapshot = self.gates.snapshot() if nats_checks else {}
        changed = [w["name"] for w in workloads if w["changed_from_record"]]
        self.log(f"{len(changed)} of {len(workloads)} workload(s) differ from their pre-migration record "
                 f"({', '.join(changed) or 'none'})")
        return {"report": {"namespace": self.run.namespace, "output_mode_env": self.run.mode_env,
                           "workloads": workloads, "changed": changed,
                           "nats_stream": self.inputs.stream if nats_checks else None,
                           "nats_consumer": self.inputs.consumer if nats_checks else None},
                "nats_snapshot": snapshot}
