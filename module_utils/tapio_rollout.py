# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The engine's Kubernetes workloads: reads, patches, restores from records, and rollouts.

A rollout wait follows progress (tapio_wait.wait_for_progress): it fails when the
workload's rollout state has not moved for ``progress_deadline`` seconds, never after a
fixed total. A restore reverts only what the toolkit wrote and nobody changed since
(tapio_owned.restore_plan), after every record of the call was found applicable (its
workload's incarnation, its digests); what it keeps is listed in ``kept_changes``. A restore
that meets a 409 reads the object again and decides again.
"""
from __future__ import annotations

from typing import Any, Optional

from ansible.module_utils.tapio_engine_inputs import Target
from ansible.module_utils.tapio_engine_run import EngineError, EnginePart, EngineRun
from ansible.module_utils.tapio_kube import KubeError
from ansible.module_utils.tapio_owned import Kept, restore_plan
from ansible.module_utils.tapio_records import RecordEntry, Records
from ansible.module_utils.tapio_wait import Retries, retry
from ansible.module_utils.tapio_workload import (
    WorkloadError, env_diff, object_diff, provenance_line, record_of, rollout_state, switch_patch)

# Where a record applied by a restore comes from (a "live" one is only the spec as it is).
RECORDED = ("configmap", "artifact")

CONFLICT_RETRIES = 5
# Seconds before the first re-read after a 409, doubled each time (0.2, 0.4, 0.8, 1.6). A write
# to a workload makes its controller write too (even an annotation moves a Deployment's
# generation, and the controller writes status.observedGeneration 30-80 ms later in the lab):
# reading again at once would race that answer and spend a second attempt on the same change.
CONFLICT_BACKOFF = 0.2


class Conflict(Exception):
    """A replace the API server refused with 409: another writer changed the object since it was read."""


class Workloads(EnginePart):
    """The pipeline Deployment and collector DaemonSets of one phase's run."""

    def __init__(self, run: EngineRun, records: Records) -> None:
        super().__init__(run)
        self.records = records
        # "<Kind> <namespace>/<name>: <what> (<how>)" for each entry a restore kept as it was live.
        self.kept_changes: list[str] = []

    # -- reads ----------------------------------------------------------------------------
    def read(self, target: Target) -> Optional[dict[str, Any]]:
        return self.run.kube.get(target.kind, self.run.namespace, target.name)

    def read_all(self, targets: list[Target]) -> dict[str, dict[str, Any]]:
        """Every target's live object; fails naming each one that does not exist."""
        live = {t.name: self.read(t) for t in targets}
        absent = [t.name for t in targets if live[t.name] is None]
        if absent:
            raise EngineError(f"Not found in namespace {self.run.namespace}: {', '.join(absent)}. "
                              "Check tapio_namespace, tapio_pipeline and tapio_collectors.")
        return live  # type: ignore[return-value]

    # -- changes --------------------------------------------------------------------------
    def apply_patch(self, target: Target, live: dict[str, Any], patch: dict[str, Any], env: list[dict[str, Any]]) -> None:
        self.run.changed = True
        self.run.diff.append(env_diff(live, target.container, env))
        if self.run.check:
            self.run.log(f"would patch {target.label}")
            return
        self.run.kube.patch(target.kind, self.run.namespace, target.name, patch)
        self.run.log(f"patched {target.label}")

    def restore(self, target: Target, record: dict[str, Any], provenance: Optional[dict[str, Any]] = None,
                written: Optional[dict[str, Any]] = None) -> bool:
        """Replace the live object with its record where they differ. A 409 (another writer
        changed the object between this read and this replace) reads it again and decides
        again from the object as it is then: what is kept, the definition and the diff, so a
        concurrent writer's change is judged like any other change made since the record.
        Bounded by CONFLICT_RETRIES; True when it replaced (in check mode: would replace)."""
        conflicts: list[str] = []
        # Attempts after the first; each after a pause that lets the controllers answer first.
        again = Retries(CONFLICT_RETRIES - 1, CONFLICT_BACKOFF)

        def line(_error: Exception, retries: Retries, pause: float) -> str:
            return (f"{target.label} changed while restoring (409 Conflict); reading it again in {pause:g}s "
                    f"(attempt {retries.used} of {CONFLICT_RETRIES})")

        try:
            return retry(lambda: self.restore_once(target, record, provenance, written, conflicts),
                         lambda error: again if isinstance(error, Conflict) else None, line, self.run.log,
                         self.run.sleep)
        except Conflict:
            self.run.log(f"{target.label} changed while restoring (409 Conflict; attempt {CONFLICT_RETRIES} of "
                         f"{CONFLICT_RETRIES})")
        raise EngineError(
            f"{target.label} was not restored: each of {CONFLICT_RETRIES} attempts met a 409 Conflict (another writer "
            f"changed it between the engine's read and its replace; last: {conflicts[-1]}). It was left as it is and "
            "its record kept; run the rollback again once the other writer has stopped.")

    def restore_once(self, target: Target, record: dict[str, Any], provenance: Optional[dict[str, Any]],
                     written: Optional[dict[str, Any]], conflicts: list[str]) -> bool:
        """One read, decision and replace of Workloads.restore; a 409 is added to *conflicts*
        and raised as Conflict. What the restore keeps is noted only from the attempt that ends."""
        overrides = tuple(self.inputs.container_overrides.get(target.name) or {})
        live = self.read(target)
        if live is None:
            raise EngineError(f"{target.label} no longer exists in namespace {self.run.namespace}")
        needed, definition, kept = restore_plan(live, record, written, target.container, overrides)
        if not needed:
            if conflicts:
                self.run.log(f"{target.label} needs no restore any more after {len(conflicts)} 409 conflict(s) "
                             "(another writer changed it)")
            self.note_kept(target, kept)
            return False
        how = self.restore_how(target, written is not None, kept, overrides)
        if not conflicts:
            self.run.log(f"{target.label}: {provenance_line(provenance, live)}")
        diff = object_diff(record_of(live), record_of(definition), f"{target.label} (restore)")
        if self.run.check:
            self.run.changed = True
            self.run.diff.append(diff)
            self.run.log(f"would restore {target.label} {how}")
            self.note_kept(target, kept)
            return True
        self.replace(target, definition, conflicts)
        # The diff and the step describe the replace that was applied, not a stale read's plan.
        self.run.changed = True
        self.run.diff.append(diff)
        self.run.log(f"restored {target.label} {how}" + (
            f" (after {len(conflicts)} 409 conflict(s): read again and applied to the object as it then was)"
            if conflicts else ""))
        self.note_kept(target, kept)
        return True

    @staticmethod
    def restore_how(target: Target, by_entry: bool, kept: list[Kept], overrides: tuple[str, ...]) -> str:
        """How a restore went back to its record, for its step."""
        if not kept:
            return "to its record"
        if by_entry:
            what = "only the entries the toolkit wrote that still hold what it wrote"
        else:
            what = (f"only what the toolkit writes: the env{', ' + ', '.join(overrides) if overrides else ''} of "
                    f"container {target.container} and the pod template annotations")
        return f"({what}) to its record; kept as changed since the record: {', '.join(w for w, _ in kept)}"

    def note_kept(self, target: Target, kept: list[Kept]) -> None:
        self.kept_changes += [f"{target.kind} {self.run.namespace}/{target.name}: {what} ({how})" for what, how in kept]

    def kept_on_restore(self, entry: RecordEntry, live: dict[str, Any]) -> list[str]:
        """What a restore would keep now (the report's), as Workloads.kept_changes words it."""
        target = entry["target"]
        overrides = tuple(self.inputs.container_overrides.get(target.name) or {})
        try:
            _, _, kept = restore_plan(live, entry["record"], entry["written"], target.container, overrides)
        except WorkloadError:
            return []
        return [f"{target.kind} {self.run.namespace}/{target.name}: {what} ({how})" for what, how in kept]

    def replace(self, target: Target, definition: dict[str, Any], conflicts: list[str]) -> None:
        """PUT *definition*; a 409 is added to *conflicts* and raised as Conflict."""
        try:
            self.run.kube.replace(target.kind, self.run.namespace, target.name, definition)
        except KubeError as error:
            if error.status != 409:
                raise
            conflicts.append(str(error))
            raise Conflict(str(error)) from None

    # -- waits ----------------------------------------------------------------------------
    def wait_rollout(self, target: Target, deadline: Optional[float] = None) -> None:
        def poll() -> tuple[bool, Any, str]:
            return rollout_state(self.read(target))

        summary = self.run.wait(poll, f"rollout of {target.label}", float(deadline or self.inputs.progress_deadline))
        self.run.log(f"{target.label} rolled out: {summary}")

    # -- back to the records, or to direct mode ----------------------------------------------
    def check_restorable(self, targets: list[Target]) -> None:
        """Fail, naming each, when a target cannot be restored: in NATS mode without a record,
        or with a record of another incarnation or changed outside the toolkit. Nothing changes
        before every target of a rollback has passed; one that does not exist is named where it
        is rolled back, as before."""
        found = {t.name: obj for t in targets if (obj := self.read(t)) is not None}
        present = [t for t in targets if t.name in found]
        self.require_restorable(self.records.load_records(present, found), found)

    def require_restorable(self, plan: dict[str, RecordEntry], live: dict[str, dict[str, Any]]) -> list[Target]:
        """The targets with a record to apply; fails as check_restorable does."""
        lost = [n for n, e in plan.items() if e["source"] == "none"]
        if lost:
            raise EngineError(
                f"No pre-migration record of {', '.join(lost)} (ConfigMap {self.run.namespace}/"
                f"{self.inputs.state.configmap} or {self.records.state_dir()}), and it runs in {self.run.mode_env}="
                f"{self.inputs.nats_value} mode; use rollback mode switch instead.")
        recorded = [e for e in plan.values() if e["source"] in RECORDED]
        refusals = self.records.refusals(recorded, live)
        if refusals:
            raise EngineError(" ".join(refusals))
        return [e["target"] for e in recorded]

    def restore_targets(self, targets: list[Target], retire: bool = False) -> None:
        live = self.read_all(targets)
        plan = self.records.load_records(targets, live)
        recorded = self.require_restorable(plan, live)
        for entry in plan.values():
            if entry["source"] == "live":
                self.run.log(f"{entry['target'].label} has no record and does not run in {self.run.mode_env}="
                             f"{self.inputs.nats_value} mode (never migrated, or its record was retired by an earlier "
                             "rollback): left as it is")
        restored = [target for target in recorded if self.restore(
            target, plan[target.name]["record"], plan[target.name]["provenance"], plan[target.name]["written"])]
        if not self.run.check:
            # A record is retired only once its workload has rolled out, and that includes a
            # workload an interrupted run already replaced: it matches its record now, so it is
            # not replaced again, but its rollout may still be under way (or stuck).
            for target in recorded if retire else restored:
                self.wait_rollout(target)
        if retire:
            self.records.retire([e for e in plan.values() if e["source"] in RECORDED])

    def rollback_targets(self, targets: list[Target]) -> None:
        if self.inputs.rollback_mode == "restore":
            self.restore_targets(targets, retire=True)
            return
        live = self.read_all(targets)
        env = [{"name": self.run.mode_env, "value": self.inputs.direct_value}]
        switched = []
        for target in targets:
            # A workload that never had the switch (never migrated) is left alone.
            if self.run.mode(live[target.name], target) is None:
                continue
            patch = switch_patch(live[target.name], target.container, env)
            if patch:
                self.apply_patch(target, live[target.name], patch, env)
                switched.append(target)
        if not self.run.check:
            for target in switched:
                self.wait_rollout(target)
        self.retire_after_switch(targets, live)

    def retire_after_switch(self, targets: list[Target], live: dict[str, dict[str, Any]]) -> None:
        """A switch back ends the migration as a restore does: its records describe the specs it
        found, and a later restore must not apply them over what changed since (in direct mode,
        or written again by the next migration, which records the specs as they are then). A
        record that cannot be read is left, named: the switch itself needs none."""
        try:
            plan = self.records.load_records(targets, live)
        except EngineError as error:
            self.run.log(f"records not retired: {error}")
            return
        self.records.retire([e for e in plan.values() if e["source"] in RECORDED])
