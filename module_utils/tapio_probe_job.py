# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The probe phase's Job: a short-lived pod that resolves the NATS service and opens its
client port from the collectors' namespace, judged by tapio_workload.probe_verdict."""
from __future__ import annotations

import itertools
from typing import Any, Optional

from ansible.module_utils.tapio_engine_run import EngineError, EnginePart, EngineRun
from ansible.module_utils.tapio_wait import Budget, wait_for_progress, wait_within
from ansible.module_utils.tapio_workload import job_finished, probe_verdict


class ProbeJob(EnginePart):
    """Creates (or judges again) the probe Job of one run's O(probe) options."""

    def __init__(self, run: EngineRun) -> None:
        super().__init__(run)
        self.spec = run.inputs.probe

    def run_probe(self) -> dict[str, Any]:
        """An earlier probe Job is judged again (a re-run changes nothing) unless a fresh one is
        asked for. In check mode nothing is deleted, created or waited for."""
        run, spec = self.run, self.spec
        job_name = spec.definition["metadata"]["name"]  # type: ignore[index]
        job = run.kube.get("Job", run.namespace, job_name)
        if run.check:
            return self.plan(job_name, job is not None, spec.fresh)
        if job is not None and spec.fresh:
            self.delete_earlier(job_name)
            job = None
        if job is None:
            run.changed = True
            run.kube.create("Job", run.namespace, spec.definition)
            run.log(f"created probe Job {job_name}")
        job = self.wait_finished(job_name, job, spec.timeout)
        verdict = probe_verdict(job, self.node_of(job_name), spec.simulated_node_annotation, spec.target,
                                run.namespace, int(spec.timeout))
        run.log(f"NATS probe {verdict['outcome']}: {verdict['detail']}")
        if verdict["outcome"] == "failed" and spec.required:
            raise EngineError(f"NATS probe failed: {verdict['detail']}")
        return {"probe": verdict}

    def plan(self, job_name: str, exists: bool, fresh: bool) -> dict[str, Any]:
        """Check mode's probe: what a run would do, with nothing written (so nothing to judge)."""
        if exists and not fresh:
            plan = f"would judge the earlier probe Job {job_name} again"
        else:
            self.run.changed = True
            plan = (f"would delete the earlier probe Job {job_name} and create a new one" if exists
                    else f"would create probe Job {job_name}")
        self.run.log(f"check mode: {plan}")
        return {"probe": {"outcome": "not run", "node": "",
                          "detail": f"check mode: {plan}; the probe runs in a real run only"}}

    def delete_earlier(self, job_name: str) -> None:
        run = self.run
        run.changed = True
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
