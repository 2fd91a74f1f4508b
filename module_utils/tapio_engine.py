# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The migration engine: every phase's reads, plan, changes and waits in one process.

The roles call it through library/tapio_migration.py, once per phase (the collectors once
per batch, so a person sees each batch pass). Decisions are the pure functions of
tapio_workload; this module only sequences them against the Kubernetes API (tapio_kube)
and NATS (tapio_nats_session), and keeps a log of what it did, with times, for the output.

Waits follow progress, as Kubernetes' progressDeadlineSeconds does: a rollout, drain or lag
gate fails when its progress marker has not moved for ``progress_deadline`` seconds, never
after a fixed total, so a 1,000-pod DaemonSet rolling one pod at a time is not failed. Every
wait and retry is one of tapio_wait's.
"""
from __future__ import annotations

import datetime
import itertools
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ansible.module_utils.tapio_kube import Kube, KubeError
from ansible.module_utils.tapio_lease import new_holder
from ansible.module_utils.tapio_nats import JetStreamApi, JetStreamApiError, NatsModuleError
from ansible.module_utils.tapio_private import make_private_dir, write_private_file
from ansible.module_utils.tapio_stream_health import (
    Sample, backlog_of, fullness, fullness_problem, keeps_up, parse_time, sample_of)
from ansible.module_utils.tapio_workload import (
    WorkloadError, access_review, collector_batches, env_diff, find_container, job_finished, ledger_problems,
    PROVENANCE_PREFIX, needed_permissions, object_diff, order_problem, output_mode_of, pod_template_hash,
    provenance_file, provenance_line, provenance_of, record_file,
    probe_verdict, record_key, record_of, record_text, report_entry, restore_of, rollout_state, select_record,
    strategy_problem, switch_patch, workload_env)
from ansible.module_utils.tapio_wait import Budget, Retries, Stalled, retry, wait_for_progress, wait_within

CONFLICT_RETRIES = 5
# Seconds before the first re-read after a 409, doubled each time (0.2, 0.4, 0.8, 1.6). A write
# to a workload makes its controller write too (even an annotation moves a Deployment's
# generation, and the controller writes status.observedGeneration 30-80 ms later in the lab):
# reading again at once would race that answer and spend a second attempt on the same change.
CONFLICT_BACKOFF = 0.2
# ConfigMap keys of records a restore has set aside (see Engine.retire).
RETIRED_PREFIX = "retired."


class EngineError(Exception):
    """A phase that cannot go on; the message names the object and the cause."""


class Conflict(Exception):
    """A replace the API server refused with 409: another writer changed the object since it was read."""


@dataclass(frozen=True)
class Target:
    kind: str
    name: str
    container: str
    subject_prefix: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


def targets_from(pipeline: dict[str, Any], collectors: list[dict[str, Any]]) -> tuple[Target, list[Target]]:
    return (Target("Deployment", pipeline["name"], pipeline["container"]),
            [Target("DaemonSet", c["name"], c["container"], c.get("subject_prefix") or "") for c in collectors])


class Engine:
    """One phase's run. ``params`` are the tapio_migration module's options."""

    def __init__(self, params: dict[str, Any], kube: Kube, nats: Any, check_mode: bool,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.p, self.kube, self.nats, self.check = params, kube, nats, check_mode
        self.clock, self.sleep = clock, sleep
        self.started = clock()
        self.steps: list[str] = []
        self.diff: list[dict[str, Any]] = []
        self.changed = False
        self.namespace: str = params["namespace"]
        self.pipeline, self.collectors = targets_from(params["pipeline"], params["collectors"])
        self.mode_env: str = params["mode_env"]
        # Who records: the run's Lease holder (migrate.yml, rollback.yml), else made up here.
        self.run_id: str = (params.get("lock") or {}).get("holder") or f"{new_holder()} (no lock)"

    # -- output ---------------------------------------------------------------------------
    def log(self, message: str) -> None:
        self.steps.append(f"[{self.clock() - self.started:6.1f}s] {message}")

    # -- reads ----------------------------------------------------------------------------
    def read(self, target: Target) -> Optional[dict[str, Any]]:
        return self.kube.get(target.kind, self.namespace, target.name)

    def read_all(self, targets: list[Target]) -> dict[str, dict[str, Any]]:
        """Every target's live object; fails naming each one that does not exist."""
        live = {t.name: self.read(t) for t in targets}
        absent = [t.name for t in targets if live[t.name] is None]
        if absent:
            raise EngineError(f"Not found in namespace {self.namespace}: {', '.join(absent)}. "
                              "Check tapio_namespace, tapio_pipeline and tapio_collectors.")
        return live  # type: ignore[return-value]

    def mode(self, live: dict[str, Any], target: Target) -> Optional[str]:
        return output_mode_of(live, target.container, self.mode_env)

    # -- records --------------------------------------------------------------------------
    def state_dir(self) -> str:
        """Local records of this namespace: <state.dir>/<namespace>."""
        return os.path.join(self.p["state"]["dir"], self.namespace)

    def read_file(self, target: Target, name: str = "") -> str:
        path = os.path.join(self.state_dir(), name or record_file(target.kind, target.name))
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().rstrip()
        except FileNotFoundError:
            return ""

    def load_records(self, targets: list[Target], live: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Per target: source (configmap, artifact, live, none), text and record."""
        configmap = self.kube.get("ConfigMap", self.namespace, self.p["state"]["configmap"]) or {}
        data = configmap.get("data") or {}
        plan = {}
        for target in targets:
            key = record_key(target.kind, target.name)
            on_disk = self.read_file(target)
            migrated = self.mode(live[target.name], target) == self.p["nats_value"]
            source, text = select_record(key, data, on_disk, live[target.name], migrated)
            record = json.loads(text) if text else None
            if record is not None and output_mode_of(record, target.container, self.mode_env) == self.p["nats_value"]:
                raise EngineError(
                    f"The recorded spec of {target.label} (from {source}) already runs in {self.mode_env}="
                    f"{self.p['nats_value']} mode; it is not a pre-migration record. Fix or delete key {key} in "
                    f"ConfigMap {self.namespace}/{self.p['state']['configmap']} and the files under {self.state_dir()}.")
            provenance_text = data.get(PROVENANCE_PREFIX + key) or self.read_file(
                target, provenance_file(target.kind, target.name))
            if source == "live":
                provenance_text = record_text(provenance_of(live[target.name], self.run_id, utc_now()))
            plan[target.name] = {"target": target, "key": key, "source": source, "text": text, "record": record,
                                 "in_configmap": key in data, "on_disk": bool(on_disk), "configmap": configmap,
                                 "provenance_text": provenance_text if record is not None else "",
                                 "provenance": json_or_none(provenance_text) if record is not None else None,
                                 "provenance_in_configmap": PROVENANCE_PREFIX + key in data}
        return plan

    def record(self, targets: list[Target], live: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Record each target's spec before the migration changes it (ConfigMap and local file);
        an existing record is never overwritten, a migrated spec never recorded."""
        plan = self.load_records(targets, live)
        # Records an earlier version wrote sit in a 0755 directory: closed before anything is added.
        if not self.check and os.path.isdir(self.state_dir()) and make_private_dir(self.state_dir()):
            self.log(f"made {self.state_dir()} private (mode 0700): its records hold the workloads' env values")
        unrecordable = [name for name, entry in plan.items() if entry["source"] == "none"]
        if unrecordable:
            raise EngineError(
                f"{', '.join(unrecordable)} already run(s) with {self.mode_env}={self.p['nats_value']} but no "
                f"pre-migration record exists (ConfigMap {self.namespace}/{self.p['state']['configmap']}, "
                f"{self.state_dir()}). Refusing to record a migrated spec as the original; restore the workload's "
                "original spec first.")
        missing = {e["key"]: e["text"] for e in plan.values() if not e["in_configmap"]}
        missing.update({PROVENANCE_PREFIX + e["key"]: e["provenance_text"] for e in plan.values()
                        if e["provenance_text"] and not e["provenance_in_configmap"]})
        if missing:
            self.write_configmap(missing, next(iter(plan.values()))["configmap"])
        for entry in plan.values():
            target = entry["target"]
            if not entry["on_disk"]:
                self.write_file(target, entry["text"])
                if entry["provenance_text"]:
                    self.write_file(target, entry["provenance_text"], provenance_file(target.kind, target.name))
        for entry in plan.values():
            if entry["source"] == "live":
                target = entry["target"]
                self.log(f"recorded {target.label} (generation {live[target.name]['metadata'].get('generation')}, "
                         f"pod template {pod_template_hash(live[target.name])}, by {self.run_id})")
        return plan

    def write_configmap(self, missing: dict[str, str], configmap: dict[str, Any]) -> None:
        name = self.p["state"]["configmap"]
        self.changed = True
        self.diff.append({"before": "", "after": "".join(f"{k}\n" for k in sorted(missing)),
                          "before_header": f"ConfigMap {self.namespace}/{name} keys",
                          "after_header": f"ConfigMap {self.namespace}/{name} keys"})
        if self.check:
            return
        if configmap:
            self.kube.patch("ConfigMap", self.namespace, name, {"data": missing})
        else:
            self.kube.create("ConfigMap", self.namespace, {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": self.namespace, "labels": self.p["state"]["labels"]},
                "data": missing})

    def write_file(self, target: Target, text: str, name: str = "") -> None:
        """A local record (or its provenance): 0600 in a 0700 directory, since a record holds
        the workload's literal env values as they are."""
        path = os.path.join(self.state_dir(), name or record_file(target.kind, target.name))
        self.changed = True
        if self.check:
            return
        make_private_dir(self.state_dir())
        if name and os.path.exists(path):  # provenance beside a record file written by an interrupted run
            return
        write_private_file(path, text + "\n")

    # -- changes --------------------------------------------------------------------------
    def apply_patch(self, target: Target, live: dict[str, Any], patch: dict[str, Any], env: list[dict[str, Any]]) -> None:
        self.changed = True
        self.diff.append(env_diff(live, target.container, env))
        if self.check:
            self.log(f"would patch {target.label}")
            return
        self.kube.patch(target.kind, self.namespace, target.name, patch)
        self.log(f"patched {target.label}")

    def restore(self, target: Target, record: dict[str, Any], provenance: Optional[dict[str, Any]] = None) -> bool:
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
            return retry(lambda: self.restore_once(target, record, provenance, conflicts),
                         lambda error: again if isinstance(error, Conflict) else None, line, self.log, self.sleep)
        except Conflict:
            self.log(f"{target.label} changed while restoring (409 Conflict; attempt {CONFLICT_RETRIES} of "
                     f"{CONFLICT_RETRIES})")
        raise EngineError(
            f"{target.label} was not restored: each of {CONFLICT_RETRIES} attempts met a 409 Conflict (another writer "
            f"changed it between the engine's read and its replace; last: {conflicts[-1]}). It was left as it is and "
            "its record kept; run the rollback again once the other writer has stopped.")

    def restore_once(self, target: Target, record: dict[str, Any], provenance: Optional[dict[str, Any]],
                     conflicts: list[str]) -> bool:
        """One read, decision and replace of Engine.restore; a 409 is added to *conflicts* and
        raised as Conflict."""
        overrides = tuple((self.p["container_overrides"] or {}).get(target.name) or {})
        live = self.read(target)
        if live is None:
            raise EngineError(f"{target.label} no longer exists in namespace {self.namespace}")
        needed, definition, kept = restore_of(live, record, target.container, overrides)
        if not needed:
            if conflicts:
                self.log(f"{target.label} needs no restore any more after {len(conflicts)} 409 conflict(s) "
                         "(another writer changed it)")
            return False
        how = "to its record" if not kept else (
            f"(only what the toolkit writes: the env{', ' + ', '.join(overrides) if overrides else ''} of container "
            f"{target.container} and the pod template annotations) to its record; kept as changed since the "
            f"record: {', '.join(kept)}")
        if not conflicts:
            self.log(f"{target.label}: {provenance_line(provenance, live)}")
        after = record if not kept else {**definition, "metadata": {
            k: v for k, v in definition["metadata"].items() if k != "resourceVersion"}}
        diff = object_diff(record_of(live), after, f"{target.label} (restore)")
        if self.check:
            self.changed = True
            self.diff.append(diff)
            self.log(f"would restore {target.label} {how}")
            return True
        try:
            self.kube.replace(target.kind, self.namespace, target.name, definition)
        except KubeError as error:
            if error.status != 409:
                raise
            conflicts.append(str(error))
            raise Conflict(str(error)) from None
        # The diff and the step describe the replace that was applied, not a stale read's plan.
        self.changed = True
        self.diff.append(diff)
        self.log(f"restored {target.label} {how}" + (
            f" (after {len(conflicts)} 409 conflict(s): read again and applied to the object as it then was)"
            if conflicts else ""))
        return True

    # -- waits ----------------------------------------------------------------------------
    def wait_rollout(self, target: Target, deadline: Optional[float] = None) -> None:
        deadline = float(deadline or self.p["progress_deadline"])

        def poll() -> tuple[bool, Any, str]:
            return rollout_state(self.read(target))

        summary = wait_for_progress(poll, f"rollout of {target.label}", deadline, self.p["poll_interval"],
                                    self.clock, self.sleep).summary
        self.log(f"{target.label} rolled out: {summary}")

    # -- NATS -----------------------------------------------------------------------------
    def consumer(self, name: str) -> Optional[dict[str, Any]]:
        stream = self.p["stream"]

        async def info(api: JetStreamApi) -> Optional[dict[str, Any]]:
            return await api.consumer_info(stream, name)

        return self.nats.call(info, f"consumer {stream}/{name}")

    def stream_info(self) -> Optional[dict[str, Any]]:
        stream = self.p["stream"]

        async def info(api: JetStreamApi) -> Optional[dict[str, Any]]:
            return await api.stream_info(stream)

        return self.nats.call(info, f"stream {stream}")

    def stream_exists(self) -> bool:
        return self.stream_info() is not None

    def stream_and_consumer(self) -> tuple[Optional[dict[str, Any]], Optional[dict[str, Any]], Optional[float]]:
        """The stream, the pipeline's consumer and the age in seconds of the oldest message it
        has not acknowledged (None when it has none, or it cannot be read), in one session call."""
        stream, name = self.p["stream"], self.p["consumer"]

        async def read(api: JetStreamApi) -> tuple[Optional[dict[str, Any]], Optional[dict[str, Any]], Optional[float]]:
            info = await api.stream_info(stream)
            consumer = await api.consumer_info(stream, name) if info is not None else None
            if consumer is None or backlog_of(consumer) == 0:
                return info, consumer, None
            first = int((consumer.get("ack_floor") or {}).get("stream_seq") or 0) + 1
            subject = (consumer.get("config") or {}).get("filter_subject") or ">"
            try:
                answer = await api.request(f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": first, "next_by_subj": subject})
            except JetStreamApiError:  # no such message any more: the age is unknown, not an error
                return info, consumer, None
            stored = parse_time(str((answer.get("message") or {}).get("time") or ""))
            age = (datetime.datetime.now(datetime.timezone.utc) - stored).total_seconds() if stored else None
            return info, consumer, age

        return self.nats.call(read, f"stream {stream} and consumer {name}")

    def check_fill(self, where: str) -> Optional[dict[str, Any]]:
        """The stream's fullness for the pipeline's backlog; fails at or above the limit, naming
        the stream and its fill level, before the stream discards (or refuses) events."""
        info, consumer, age = self.stream_and_consumer()
        if info is None:
            return None
        fill = fullness(info, consumer, age)
        problem = fullness_problem(fill, float(self.p["stream_fill_limit"]))
        if problem:
            raise EngineError(f"{where}: {problem}")
        self.log(fill["summary"])
        return fill

    def create_gate_consumer(self, name: str, subject_prefix: str) -> None:
        stream = self.p["stream"]
        if self.check:  # its callers gate only real runs; a consumer is a change all the same
            self.log(f"check mode: gate consumer {stream}/{name} not created")
            return
        config = {"durable_name": name, "description": "Temporary gate of the NATS migration; counts the "
                  "collector's new messages", "filter_subject": f"{subject_prefix}.>", "deliver_policy": "new",
                  "ack_policy": "none", "replay_policy": "instant"}

        async def create(api: JetStreamApi) -> None:
            if await api.consumer_info(stream, name) is not None:
                await api.request(f"$JS.API.CONSUMER.DELETE.{stream}.{name}")
            await api.request(f"$JS.API.CONSUMER.CREATE.{stream}.{name}",
                              {"stream_name": stream, "config": config, "action": "create"})

        self.nats.call(create, f"gate consumer {name}")

    def delete_consumer(self, name: str) -> None:
        stream = self.p["stream"]
        if self.check:
            self.log(f"check mode: consumer {stream}/{name} not deleted")
            return

        async def delete(api: JetStreamApi) -> None:
            if await api.consumer_info(stream, name) is not None:
                await api.request(f"$JS.API.CONSUMER.DELETE.{stream}.{name}")

        self.nats.call(delete, f"delete consumer {name}")

    def secret_problems(self, name: str, keys: list[str]) -> list[str]:
        """What keeps a pod's secretKeyRef to Secret *name* from resolving: absent, or keys missing."""
        found = self.kube.get("Secret", self.namespace, name)
        if found is None:
            return [f"Secret {self.namespace}/{name} not found"]
        absent = [k for k in keys if k not in (found.get("data") or {})]
        return [f"Secret {self.namespace}/{name} has no key {', '.join(absent)}"] if absent else []

    def require_secrets(self, secret: dict[str, Any], targets: list[Target]) -> None:
        """The credentials Secret the pods will read, or with per-workload users
        (O(workload_secrets)) each workload's own, must exist with every key."""
        prefix = (self.p["workload_secrets"] or {}).get("prefix")
        names = [f"{prefix}{t.name}" for t in targets] if prefix else [secret["name"]]
        keys = secret.get("keys") or []
        problems = [problem for name in names for problem in self.secret_problems(name, keys)]
        if problems:
            raise EngineError(f"{'; '.join(problems)}: each must exist with keys {', '.join(keys)} "
                              "(the pods read the NATS credentials from it by secretKeyRef).")

    def require_ca_secret(self, ca_secret: dict[str, Any]) -> None:
        """The Secret the pods read the NATS CA from must exist with its key."""
        problems = self.secret_problems(ca_secret["name"], [ca_secret.get("key") or "ca.crt"])
        if problems:
            raise EngineError(f"{problems[0]}: the pods read the CA of NATS's TLS certificate from it "
                              "(tapio_nats_ca_secret, tapio_nats_ca_key).")

    # == phases =============================================================================
    def preflight(self) -> dict[str, Any]:
        """The pre-migration checklist; every problem is found before anything changes."""
        namespace = self.kube.get("Namespace", None, self.namespace)
        if namespace is None:
            raise EngineError(f"Namespace {self.namespace} not found (tapio_namespace).")
        secret = self.p["secret"] or {}
        permissions = list(self.p["permissions"])
        ca_secret = self.p.get("ca_secret") or {}
        if secret.get("name") or ca_secret.get("name"):
            permissions.append({"group": "", "resource": "secrets", "verbs": ["get"], "namespace": self.namespace})
        needed = needed_permissions(permissions, self.namespace)
        answers = self.kube.allowed([access_review(n) for n in needed])
        denied = [n["label"] for n, ok in zip(needed, answers) if not ok]
        if denied:
            raise EngineError(f"The run's identity lacks {len(denied)} permission(s) the run needs: {'; '.join(denied)}. "
                              "Bind it to the runner's Role and ClusterRole (playbooks/runner_rbac.yml, docs/rbac.md).")
        self.log(f"{len(needed)} permission(s) granted in {len({n['namespace'] for n in needed})} scope(s)")
        targets = [self.pipeline, *self.collectors]
        live = {t.name: self.read(t) for t in targets}
        missing = []
        for target in targets:
            obj = live[target.name]
            if obj is None:
                missing.append(f"{target.kind} {target.name} not found")
                continue
            try:
                find_container(obj, target.container)
            except WorkloadError:
                missing.append(f"{target.kind} {target.name} has no container {target.container}")
        if missing:
            raise EngineError(f"In namespace {self.namespace}: {'; '.join(missing)}.")
        warnings = []
        problem = strategy_problem(live[self.pipeline.name])  # type: ignore[arg-type]
        if problem and self.p["fail_on_unsafe_strategy"]:
            raise EngineError(f"{problem} Set maxUnavailable 0 (and maxSurge 1) or more replicas.")
        if problem:
            warnings.append(problem)
        if secret.get("name"):
            self.require_secrets(secret, targets)
        if ca_secret.get("name"):
            self.require_ca_secret(ca_secret)
        install = self.p["nats_install"] or {}
        deferred = False
        if install.get("enabled"):
            deferred = self.kube.get("StatefulSet", install["namespace"], install["name"]) is None
            if deferred:
                self.log(f"NATS is not installed yet (no StatefulSet {install['namespace']}/{install['name']}): its "
                         "health is checked by the nats phase after the install, and the DNS/connectivity probe runs "
                         "right after it.")
        modes = {t.name: self.mode(live[t.name], t) for t in targets}  # type: ignore[arg-type]
        self.log("workloads: " + ", ".join(f"{t.label} ({modes[t.name] or 'unset'})" for t in targets))
        fill = None
        if self.p["nats_checks"] and not deferred:
            # A stream from an earlier run that is close to its limits would discard events
            # (or refuse them) while the collectors switch: stop before anything changes.
            fill = self.check_fill("preflight")
            if fill is None:
                self.log(f"stream {self.p['stream']} does not exist yet (the streams phase creates it)")
        return {"nats_deferred": deferred, "warnings": warnings, "output_modes": modes, "stream_fill": fill}

    def probe(self) -> dict[str, Any]:
        """A short-lived Job resolves the NATS service and opens its client port from the
        collectors' namespace. An earlier probe Job is judged again (a re-run changes nothing)
        unless a fresh one is asked for. In check mode nothing is deleted, created or waited for."""
        spec = self.p["probe"]
        job_name = spec["definition"]["metadata"]["name"]
        job = self.kube.get("Job", self.namespace, job_name)
        if self.check:
            return self.probe_plan(job_name, job is not None, bool(spec.get("fresh")))
        if job is not None and spec.get("fresh"):
            self.changed = True
            self.kube.delete("Job", self.namespace, job_name)
            wait_for_progress(lambda: (self.kube.get("Job", self.namespace, job_name) is None, None, "deleting"),
                              f"deletion of the earlier probe Job {job_name}", 60, 1, self.clock, self.sleep)
            job = None
        if job is None:
            self.changed = True
            self.kube.create("Job", self.namespace, spec["definition"])
            self.log(f"created probe Job {job_name}")
        timeout = float(spec.get("timeout") or 120)
        job = self.wait_probe_job(job_name, job, timeout)
        pods = self.kube.list("Pod", self.namespace, f"job-name={job_name}")
        node_name = ((pods[0] if pods else {}).get("spec") or {}).get("nodeName")
        node = self.kube.get("Node", None, node_name) if node_name else None
        verdict = probe_verdict(job, node, spec.get("simulated_node_annotation") or "", spec["target"],
                                self.namespace, int(timeout))
        self.log(f"NATS probe {verdict['outcome']}: {verdict['detail']}")
        if verdict["outcome"] == "failed" and spec.get("required", True):
            raise EngineError(f"NATS probe failed: {verdict['detail']}")
        return {"probe": verdict}

    def probe_plan(self, job_name: str, exists: bool, fresh: bool) -> dict[str, Any]:
        """Check mode's probe: what a run would do, with nothing written (so nothing to judge)."""
        if exists and not fresh:
            plan = f"would judge the earlier probe Job {job_name} again"
        else:
            self.changed = True
            plan = (f"would delete the earlier probe Job {job_name} and create a new one" if exists
                    else f"would create probe Job {job_name}")
        self.log(f"check mode: {plan}")
        return {"probe": {"outcome": "not run", "node": "",
                          "detail": f"check mode: {plan}; the probe runs in a real run only"}}

    def wait_probe_job(self, job_name: str, job: Optional[dict[str, Any]], timeout: float) -> Optional[dict[str, Any]]:
        """The probe Job once finished, or as it is after *timeout* seconds (its verdict says so)."""
        first = [job]  # the Job as read (or None, just created) is the first look

        def look() -> Optional[dict[str, Any]]:
            return first.pop() if first else self.kube.get("Job", self.namespace, job_name)

        job, _ = wait_within(look, lambda found: bool(job_finished(found)), Budget(timeout, look_past=True),
                             itertools.repeat(self.p["poll_interval"]), self.clock, self.sleep)
        return job

    def pipeline_phase(self) -> dict[str, Any]:
        """Record the pipeline, then point it at NATS (the stream and its durable consumer first)."""
        if self.p["nats_checks"]:
            durable = self.consumer(self.p["consumer"]) if self.stream_exists() else None
            if durable is None:
                message = (f"Stream {self.p['stream']} with durable consumer {self.p['consumer']} must exist before "
                           "the pipeline switches (phase streams).")
                if not self.check:
                    raise EngineError(message)
                # The streams phase before this one created nothing in check mode.
                self.log(f"check mode: {message}")
        live = self.read_all([self.pipeline])
        self.record([self.pipeline], live)
        env = workload_env(self.p["env"], self.pipeline.name, self.p["workload_secrets"])
        patch = switch_patch(live[self.pipeline.name], self.pipeline.container, env)
        if patch:
            self.apply_patch(self.pipeline, live[self.pipeline.name], patch, env)
        else:
            self.log(f"{self.pipeline.label} already consumes from NATS")
        if not self.check:
            self.wait_rollout(self.pipeline)
        return {}

    def collector_env(self, target: Target) -> list[dict[str, Any]]:
        return [*workload_env(self.p["env"], target.name, self.p["workload_secrets"]),
                {"name": self.p["subject_prefix_env"], "value": target.subject_prefix}]

    def collector_patch(self, target: Target, live: dict[str, Any]) -> Optional[dict[str, Any]]:
        return switch_patch(live, target.container, self.collector_env(target),
                            (self.p["pod_annotations"] or {}).get(target.name),
                            (self.p["container_overrides"] or {}).get(target.name))

    def ordered_collectors(self) -> list[Target]:
        names = [t.name for t in self.collectors]
        order = list(self.p["order"] or names)
        problem = order_problem(order, names)
        if problem:
            raise EngineError(problem)
        by_name = {t.name: t for t in self.collectors}
        return [by_name[name] for name in order]

    def collectors_plan(self) -> dict[str, Any]:
        """Record every collector before changing any; the batches and what each changes."""
        ordered = self.ordered_collectors()
        live = self.read_all(ordered)
        self.record(ordered, live)
        if self.p["require_pipeline"]:
            pipeline = self.read(self.pipeline)
            mode = self.mode(pipeline, self.pipeline) if pipeline else None
            if mode != self.p["nats_value"] and not self.check:
                raise EngineError(
                    f"Deployment {self.namespace}/{self.pipeline.name} does not run with {self.mode_env}="
                    f"{self.p['nats_value']}: switch the pipeline first (phase pipeline), or events published by the "
                    "collectors would have no consumer.")
        batches = []
        for names in collector_batches([t.name for t in ordered], int(self.p["batch_size"])):
            switch = [n for n in names if self.collector_patch(self._collector(n), live[n]) is not None]
            regate = [n for n in names if n not in switch and self.gate_pending(self._collector(n))]
            batches.append({"names": names, "changes": switch + regate, "regate": regate})
        pending = [b for b in batches if b["changes"]]
        regates = [n for b in batches for n in b["regate"]]
        self.log(f"{len(pending)} of {len(batches)} batch(es) to switch or gate: "
                 + ("; ".join(", ".join(b["changes"]) for b in pending) or "every collector already on NATS and gated")
                 + (f" ({', '.join(regates)}: switched by an interrupted run, not gated yet)" if regates else ""))
        return {"batches": batches}

    def gate_pending(self, target: Target) -> bool:
        """A collector already switched whose gate consumer still exists: a run stopped
        (killed, interrupted) between its switch and the end of its gates, or during the
        restore of a failed gate. Its gates must run before it counts as migrated."""
        if not self.p["nats_checks"]:
            return False
        return self.consumer(self.p["gate"]["consumer_prefix"] + target.name) is not None

    def _collector(self, name: str) -> Target:
        for target in self.collectors:
            if target.name == name:
                return target
        raise EngineError(f"{name} is not in tapio_collectors")

    def collectors_batch(self) -> dict[str, Any]:
        """Switch one batch, then gate it: rollout, new messages on its subjects, pipeline
        consumer keeping up. A failed gate returns the batch to its record and fails."""
        batch = [self._collector(n) for n in self.p["batch"]]
        live = self.read_all(batch)
        changes = [(t, p) for t in batch if (p := self.collector_patch(t, live[t.name])) is not None]
        # Switched by a run that stopped before their gates finished: gated now, not switched again.
        regate = [t for t in batch if all(t is not c for c, _ in changes) and self.gate_pending(t)]
        if not changes and not regate:
            self.log(f"{', '.join(t.name for t in batch)}: already on NATS")
            return {"switched": [], "gated": []}
        if regate:
            self.log(f"{', '.join(t.name for t in regate)}: on NATS with its gate consumer still there (an "
                     "interrupted run); running its gates")
        targets = [t for t, _ in changes] + regate
        gates = self.p["nats_checks"] and not self.check
        prefix = self.p["gate"]["consumer_prefix"]
        gate = "switch"
        try:
            if gates:
                for target, _ in changes:
                    self.create_gate_consumer(prefix + target.name, target.subject_prefix)
            for target, patch in changes:
                self.apply_patch(target, live[target.name], patch, self.collector_env(target))
            if self.check:
                return {"switched": [t.name for t, _ in changes], "gated": []}
            gate = "rollout"
            for target in targets:
                self.wait_rollout(target)
            if gates:
                gate = "subjects"
                for target in targets:
                    self.wait_new_messages(prefix + target.name, target)
                gate = "consumer lag"
                self.wait_consumer_keeps_up()
                for target in targets:
                    self.delete_consumer(prefix + target.name)
        except (EngineError, Stalled, KubeError, NatsModuleError, WorkloadError) as error:
            self.fail_batch(targets, gate, error, gates)
        return {"switched": [t.name for t, _ in changes], "gated": [t.name for t in targets] if gates else []}

    def wait_new_messages(self, gate_consumer: str, target: Target) -> None:
        def poll() -> tuple[bool, Any, str]:
            info = self.consumer(gate_consumer) or {}
            pending = int(info.get("num_pending") or 0)
            return pending > 0, pending, f"{pending} new message(s) on {target.subject_prefix}.>"

        summary = wait_for_progress(poll, f"new messages from {target.name}", float(self.p["gate"]["timeout"]),
                                    self.p["poll_interval"], self.clock, self.sleep).summary
        self.log(f"{target.name}: {summary}")

    def wait_consumer_keeps_up(self) -> None:
        """The pipeline's consumer keeps up (see tapio_stream_health.keeps_up): a small backlog,
        or over gate.window its ack floor moving at the stream's rate with the backlog bounded.
        Progress is the backlog reaching a new low, so one that only grows fails after
        gate.timeout; the stream filling up to stream_fill_limit fails at once."""
        max_pending, window = int(self.p["gate"]["max_pending"]), float(self.p["gate"]["window"])
        name = self.p["consumer"]
        samples: list[Sample] = []
        lowest: list[int] = []

        def poll() -> tuple[bool, Any, str]:
            info, consumer, age = self.stream_and_consumer()
            if info is None:
                raise EngineError(f"stream {self.p['stream']} does not exist")
            if consumer is None:
                return False, "missing", f"consumer {name} does not exist"
            problem = fullness_problem(fullness(info, consumer, age), float(self.p["stream_fill_limit"]))
            if problem:
                raise EngineError(problem)
            samples.append(sample_of(info, consumer, self.clock()))
            del samples[:-max(2, int(2 * window / max(self.p["poll_interval"], 0.1)) + 2)]
            lowest[:] = [min([*lowest, samples[-1].backlog])]
            verdict, why = keeps_up(samples, max_pending, window)
            return bool(verdict), lowest[0], why

        summary = wait_for_progress(poll, f"consumer {name} keeping up", float(self.p["gate"]["timeout"]),
                                    self.p["poll_interval"], self.clock, self.sleep).summary
        self.log(f"consumer {name}: {summary}")

    def fail_batch(self, failed: list[Target], gate: str, error: BaseException, gates: bool) -> None:
        names = [t.name for t in failed]
        self.log(f"{', '.join(names)} failed the {gate} gate: {error}")
        others = [t for t in self.collectors if t.name not in names] if self.p["full_rollback"] else []
        # Restore first: a run stopped during the restore leaves the gate consumers, so the
        # next run finds these collectors ungated and gates (or restores) them again.
        self.restore_targets(failed + others)
        if gates:
            for target in failed:
                try:
                    self.delete_consumer(self.p["gate"]["consumer_prefix"] + target.name)
                except (NatsModuleError, EngineError) as cleanup:
                    self.log(f"could not remove gate consumer of {target.name}: {cleanup}")
        raise EngineError(
            f"Collector(s) {', '.join(names)} failed the {gate} gate ({str(error)[:300]}); returned to the recorded "
            "state. " + ("Every other collector was returned to its recorded state too." if self.p["full_rollback"]
                         else "Collectors switched earlier stay on NATS; those not reached yet were not touched."))

    def restore_targets(self, targets: list[Target], retire: bool = False) -> None:
        live = self.read_all(targets)
        plan = self.load_records(targets, live)
        lost = [n for n, e in plan.items() if e["source"] == "none"]
        if lost:
            raise EngineError(
                f"No pre-migration record of {', '.join(lost)} (ConfigMap {self.namespace}/"
                f"{self.p['state']['configmap']} or {self.state_dir()}), and it runs in {self.mode_env}="
                f"{self.p['nats_value']} mode; use rollback mode switch instead.")
        recorded = [e["target"] for e in plan.values() if e["source"] in ("configmap", "artifact")]
        restored = [target for target in recorded
                    if self.restore(target, plan[target.name]["record"], plan[target.name]["provenance"])]
        if not self.check:
            # A record is retired only once its workload has rolled out, and that includes a
            # workload an interrupted run already replaced: it matches its record now, so it is
            # not replaced again, but its rollout may still be under way (or stuck).
            for target in recorded if retire else restored:
                self.wait_rollout(target)
        if retire:
            self.retire([e for e in plan.values() if e["source"] in ("configmap", "artifact")])

    def retire(self, entries: list[dict[str, Any]]) -> None:
        """Set the records of restored workloads aside (ConfigMap key retired.<key>, local file
        under retired/): a record describes the spec one migration found, and the next
        migration records the spec as it is then, so an upgrade made after this rollback is
        never undone by a later restore. Only after every restore has rolled out."""
        if not entries:
            return
        name = self.p["state"]["configmap"]
        self.changed = True
        keys = sorted(e["key"] for e in entries)
        self.diff.append({"before": "".join(f"{k}\n" for k in keys),
                          "after": "".join(f"{RETIRED_PREFIX}{k}\n" for k in keys),
                          "before_header": f"ConfigMap {self.namespace}/{name} keys (records retired after the restore)",
                          "after_header": f"ConfigMap {self.namespace}/{name} keys (records retired after the restore)"})
        if self.check:
            self.log(f"would retire the records of {', '.join(e['target'].label for e in entries)}")
            return
        in_configmap = [e for e in entries if e["in_configmap"]]
        if in_configmap:
            data: dict[str, Optional[str]] = {e["key"]: None for e in in_configmap}
            data.update({RETIRED_PREFIX + e["key"]: e["text"] for e in in_configmap})
            for entry in in_configmap:
                if entry["provenance_in_configmap"]:
                    data[PROVENANCE_PREFIX + entry["key"]] = None
                    data[RETIRED_PREFIX + PROVENANCE_PREFIX + entry["key"]] = entry["provenance_text"]
            self.kube.patch("ConfigMap", self.namespace, name, {"data": data})
        retired_dir = os.path.join(self.state_dir(), "retired")
        for entry in entries:
            kind, workload = entry["target"].kind, entry["target"].name
            for file_name in (record_file(kind, workload), provenance_file(kind, workload)):
                if os.path.exists(os.path.join(self.state_dir(), file_name)):
                    make_private_dir(retired_dir)
                    os.replace(os.path.join(self.state_dir(), file_name), os.path.join(retired_dir, file_name))
        self.log(f"retired the records of {', '.join(e['target'].label for e in entries)} (the next migration "
                 "records the specs as they are then)")

    def verify(self) -> dict[str, Any]:
        """Every workload in the expected output mode and rolled out; the consumer keeping up."""
        if self.check:
            self.log("check mode: the verify phase runs after a real run (nothing was changed, so nothing is verified)")
            return {}
        expected, direct = self.p["expected_mode"], self.p["direct_value"]
        targets = [self.pipeline, *self.collectors]
        live = self.read_all(targets)
        wrong = []
        for target in targets:
            mode = self.mode(live[target.name], target)
            if not (mode == expected or (mode is None and expected == direct)):
                wrong.append(f"{target.name} ({mode or 'unset'})")
        if wrong:
            raise EngineError(f"Not in {self.mode_env}={expected} mode: {', '.join(wrong)}")
        self.log(f"all {len(targets)} workloads run in {expected} mode")
        for target in targets:
            self.wait_rollout(target)
        result: dict[str, Any] = {}
        if self.p["nats_checks"] and expected != direct:
            stream, info, _ = self.stream_and_consumer()
            if stream is None or info is None:
                raise EngineError(f"consumer {self.p['consumer']} of stream {self.p['stream']} does not exist")
            if backlog_of(info) > int(self.p["gate"]["max_pending"]):
                self.wait_consumer_keeps_up()
            result["stream_fill"] = self.check_fill("verify")
            info = self.consumer(self.p["consumer"]) or {}
            result["consumer"] = {k: info.get(k) for k in ("num_pending", "num_ack_pending", "num_redelivered")}
            self.log(f"consumer {self.p['consumer']}: {info.get('num_pending')} pending, "
                     f"{info.get('num_ack_pending')} awaiting ack")
        return result

    def rollback(self) -> dict[str, Any]:
        """Collectors back first, then wait for the pipeline's consumer to drain, then the pipeline."""
        self.rollback_targets(self.collectors)
        if self.p["drain"] and not self.check:
            self.wait_drained()
        elif not self.p["drain"]:
            self.log(f"drain not checked (tapio_rollback_drain false): the pipeline goes back without checking that "
                     f"consumer {self.p['consumer']} has nothing pending; events still in the stream stay there")
        self.rollback_targets([self.pipeline])
        return {}

    def rollback_targets(self, targets: list[Target]) -> None:
        if self.p["rollback_mode"] == "restore":
            self.restore_targets(targets, retire=True)
            return
        live = self.read_all(targets)
        env = [{"name": self.mode_env, "value": self.p["direct_value"]}]
        switched = []
        for target in targets:
            # A workload that never had the switch (never migrated) is left alone.
            if self.mode(live[target.name], target) is None:
                continue
            patch = switch_patch(live[target.name], target.container, env)
            if patch:
                self.apply_patch(target, live[target.name], patch, env)
                switched.append(target)
        if not self.check:
            for target in switched:
                self.wait_rollout(target)

    def wait_drained(self) -> None:
        stream, name = self.p["stream"], self.p["consumer"]
        stream_info = self.stream_info()
        if stream_info is None:
            self.log(f"stream {stream} does not exist: nothing to drain")
            return
        problem = missing_consumer_problem(stream, name, stream_info)
        if self.consumer(name) is None:
            if problem:
                raise EngineError(problem)
            self.log(f"consumer {name} does not exist and stream {stream} holds no message: nothing to drain")
            return

        def poll() -> tuple[bool, Any, str]:
            info = self.consumer(name)
            if info is None:
                # Deleted while draining: what it had not delivered has no reader now.
                raise EngineError(missing_consumer_problem(stream, name, self.stream_info() or stream_info)
                                  or f"consumer {stream}/{name} was deleted during the drain")
            pending, unacked = int(info.get("num_pending") or 0), int(info.get("num_ack_pending") or 0)
            floor = int((info.get("ack_floor") or {}).get("stream_seq") or 0)
            return (pending == 0 and unacked == 0, (pending, unacked, floor),
                    f"{pending} pending, {unacked} awaiting ack, ack floor {floor}")

        summary = wait_for_progress(poll, f"drain of consumer {stream}/{name}", float(self.p["progress_deadline"]),
                                    self.p["poll_interval"], self.clock, self.sleep).summary
        self.log(f"consumer {name} drained: {summary}")

    def report(self) -> dict[str, Any]:
        """Each workload against its record, and the NATS counters at report time."""
        targets = [self.pipeline, *self.collectors]
        live = self.read_all(targets)
        plan = self.load_records(targets, live)
        workloads = [report_entry(e["target"].kind, e["target"].name, e["target"].container, e["source"], e["record"],
                                  live[name], self.mode_env, e["provenance"] if e["source"] != "live" else None)
                     for name, e in plan.items() if e["source"] != "none"]
        snapshot: dict[str, Any] = {}
        info, found, age = self.stream_and_consumer() if self.p["nats_checks"] else (None, None, None)
        if info is not None:
            stream = self.p["stream"]
            consumer = found or {}
            fill = fullness(info, found, age)
            snapshot = {"stream": stream, "messages": (info.get("state") or {}).get("messages", 0),
                        "consumer": self.p["consumer"], "num_pending": consumer.get("num_pending"),
                        "num_ack_pending": consumer.get("num_ack_pending"), "fill_percent": fill["percent"],
                        "fill_limit": fill["limit"], "fill": fill["summary"]}
            self.log(fill["summary"])
        changed = [w["name"] for w in workloads if w["changed_from_record"]]
        self.log(f"{len(changed)} of {len(workloads)} workload(s) differ from their pre-migration record "
                 f"({', '.join(changed) or 'none'})")
        return {"report": {"namespace": self.namespace, "output_mode_env": self.mode_env, "workloads": workloads,
                           "changed": changed,
                           "nats_stream": self.p["stream"] if self.p["nats_checks"] else None,
                           "nats_consumer": self.p["consumer"] if self.p["nats_checks"] else None},
                "nats_snapshot": snapshot}


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_or_none(text: str) -> Optional[dict[str, Any]]:
    """A provenance text as data; None when absent or unreadable (provenance informs, it
    never decides, so a damaged one must not stop a restore)."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def missing_consumer_problem(stream: str, consumer: str, stream_info: dict[str, Any]) -> str:
    """Why the rollback cannot drain through a missing durable consumer ('' when the stream
    holds nothing): nothing would deliver the stream's events to the pipeline any more."""
    state = stream_info.get("state") or {}
    messages = int(state.get("messages") or 0)
    if messages == 0:
        return ""
    return (f"The pipeline's durable consumer {stream}/{consumer} does not exist, so nothing can deliver the "
            f"{messages} message(s) in stream {stream} (sequences {state.get('first_seq', '?')}-"
            f"{state.get('last_seq', '?')}) to the pipeline; the pipeline was not switched back. Recreate the "
            f"consumer (ansible-playbook migrate.yml --tags streams) and run the rollback again, or set "
            f"tapio_rollback_drain=false to switch back without delivering what the stream holds.")


def ledger_verdict(ledger: dict[str, Any], url: str, settle: int) -> str:
    """The success line for the lab's ledger, or EngineError naming what it shows."""
    problems = ledger_problems(ledger)
    if problems:
        raise EngineError(f"The event ledger at {url} " + (
            "did not settle within " + str(settle) + "s" if problems == ["did not settle"] else "shows: "
            + "; ".join(problems)))
    sources = ledger.get("sources") or {}
    emitted = sum(int(row.get("emitted") or 0) for row in sources.values())
    return (f"0 events lost and 0 delivered twice across {len(sources)} sources ({emitted} emitted), "
            f"per the ledger at {url}")

