# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The probe phase's Job: a short-lived pod that resolves the NATS service and opens its
client port from the collectors' namespace, judged by tapio_workload.probe_verdict."""
from __future__ import annotations

import copy
import hashlib
import itertools
from typing import Any, Optional

from ansible.module_utils.tapio_engine_run import EngineError, EnginePart, EngineRun
from ansible.module_utils.tapio_wait import Budget, wait_for_progress, wait_within
from ansible.module_utils.tapio_workload import job_finished, probe_verdict


# On the Job: a digest of the host:port it probes, so its verdict is never read for another target.
TARGET_ANNOTATION = "tapio.io/probe-target"


def target_digest(target: str) -> str:
    return hashlib.sha256(target.encode()).hexdigest()[:16]


def probed_target(job: dict[str, Any]) -> Optional[str]:
    """The target digest an existing probe Job carries (None for a Job without one)."""
    return ((job.get("metadata") or {}).get("annotations") or {}).get(TARGET_ANNOTATION)


def job_for_target(definition: dict[str, Any], target: str) -> dict[str, Any]:
    """The Job to create: *definition* marked with its target's digest, and its pod without an
    API token whatever the definition says (it only resolves and dials NATS)."""
    job = copy.deepcopy(definition)
    metadata = job.setdefault("metadata", {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), TARGET_ANNOTATION: target_digest(target)}
    job.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})["automountServiceAccountToken"] = False
    return job


class ProbeJob(EnginePart):
    """Creates (or judges again) the probe Job of one run's O(probe) options."""

    def __init__(self, run: EngineRun) -> None:
        super().__init__(run)
        self.spec = run.inputs.probe

    def replaced_because(self, job: Optional[dict[str, Any]]) -> str:
        """Why an earlier probe Job is not judged again ("" when it is): a fresh probe was
        asked for, or it probed another target (or one it did not record)."""
        if job is None:
            return ""
        if self.spec.fresh:
            return "a fresh probe was asked for"
        if probed_target(job) != target_digest(self.spec.target):
            return f"it did not probe {self.spec.target}"
        return ""

    def run_probe(self) -> dict[str, Any]:
        """An earlier probe Job of the same target is judged again (a re-run changes nothing)
        unless a fresh one is asked for. In check mode nothing is deleted, created or waited for."""
        run, spec = self.run, self.spec
        job_name = spec.definition["metadata"]["name"]  # type: ignore[index]
        job = run.kube.get("Job", run.namespace, job_name)
        replaced = self.replaced_because(job)
        if run.check:
            return self.plan(job_name, job is not None, replaced)
        if replaced:
            self.delete_earlier(job_name, replaced)
            job = None
        if job is None:
            run.changed = True
            run.kube.create("Job", run.namespace, job_for_target(spec.definition, spec.target))
            run.log(f"created probe Job {job_name} for {spec.target}")
        job = self.wait_finished(job_name, job, spec.timeout)
        verdict = probe_verdict(job, self.node_of(job_name), spec.simulated_node_annotation, spec.target,
                                run.namespace, int(spec.timeout))
        run.log(f"NATS probe {verdict['outcome']}: {verdict['detail']}")
        if verdict["outcome"] == "failed" and spec.required:
            raise EngineError(f"NATS probe failed: {verdict['detail']}")
        return {"probe": verdict}

    def plan(self, job_name: str, exists: bool, replaced: str) -> dict[str, Any]:
        """Check mode's probe: what a run would do, with nothing written (so nothing to judge)."""
        if exists and not replaced:
            plan = f"would judge the earlier probe Job {job_name} again"
        else:
            self.run.changed = True
            plan = (f"would delete the earlier probe Job {job_name} ({replaced}) and create a new one" if exists
                    else f"would create probe Job {job_name}")
        self.run.log(f"check mode: {plan}")
        return {"probe": {"outcome": "not run", "node": "",
                          "detail": f"check mode: {plan}; the probe runs in a real run only"}}

    def delete_earlier(self, job_name: str, reason: str) -> None:
        run = self.run
        run.changed = True
        run.log(f"deleting the earlier probe Job {job_name}: {reason}")
        run.kube.delete("Job", run.namespace, job_name)
        wait_for_progress(lambda: (run.kube.get("Job", run.namespace, job_name) is None, None, "deleting"),
                          f"deletion of the earlier probe Job {job_name}", 60, 1, run.clock, run.sleep)

    def wait_finished(self, job_name: str, job: Optional[dict[str, Any]], timeout: float) -> Optional[dict[str, Any]]:
        """The probe Job once finished, or as it is after *timeout* seconds (its verdict says so)."""
        first = [job]  # the Job as read (or None, just created) is the first look

        def look() -> Optional[dict[str, Any]]:
            return first.pop() if first else self.run.kube.get("Job", self.run.namespace, job_name)

        job, _ = wait_within(look, lambda found: bool(job_finished(found)), Budget(timeout, look_past=True),
                             itertools.repeat(self.inputs.poll_interval), self.run.clock, self.run.sleep)
        return job

    def node_of(self, job_name: str) -> Optional[dict[str, Any]]:
        """The Node the Job's pod ran on (None when it has no pod or was not scheduled)."""
        pods = self.run.kube.list("Pod", self.run.namespace, f"job-name={job_name}")
        node_name = ((pods[0] if pods else {}).get("spec") or {}).get("nodeName")
        return self.run.kube.get("Node", None, node_name) if node_name else None
