#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: tapio_migration
short_description: Run one phase of the Tapio NATS migration (read, plan, change, wait) in one call
description:
  - The migration engine. Each call runs one O(phase) against the Kubernetes API and NATS in
    one process - it reads every workload the phase needs once, computes the plan in Python
    (module_utils/tapio_workload.py), applies it, and waits until it has taken effect.
  - Waits follow progress, as Kubernetes' progressDeadlineSeconds does - a rollout, drain or
    consumer-lag gate fails when nothing has progressed for O(progress_deadline) seconds (or
    O(gate.timeout) for the NATS gates), not after a fixed total.
  - Pre-migration records are kept in the state ConfigMap and as local files under
    O(state.dir); an existing record is never overwritten and a migrated spec is never recorded.
    Beside each record, its written record names the env entries, pod template annotations and
    container fields the switch wrote, with their values; each key's SHA-256 is kept in Secret
    C(<state.configmap>-digests).
  - A restore reverts only what the toolkit wrote and nobody changed since, keeps every other
    change and lists it (RV(kept_changes)); it refuses, before any change, a record of an earlier
    incarnation of its workload (another uid) and one whose digest is missing or differs.
  - Kubernetes calls retry 429, 5xx and connection errors, bounded and logged; a restore
    that meets a 409 conflict waits briefly, re-reads the object and decides again from it
    (at most 5 attempts). JetStream API timeouts and no-responders (a leader election) are
    retried the same way.
  - Check mode returns the plan (and diff in diff mode) and changes nothing; no wait runs.
  - Diffs and RV(report) show each literal env value as a short hash of it
    (C(<redacted sha256:1a2b3c4d>)), so a changed value shows without the value; records and what
    is applied keep the values. Local records are written 0600 in 0700 directories.
version_added: "1.1.0"
author: Tapio NATS migration toolkit
extends_documentation_fragment:
  - tapio_nats
  - tapio_kube
  - tapio_wait
options:
  phase:
    description:
      - C(permissions) checks that the namespace exists and asks the API server about every
        permission of O(permissions) (one SelfSubjectAccessReview each, resource names and
        subresources included), and about C(get) on the Secrets O(secret) and O(ca_secret) name;
        it fails naming each one denied. It runs before the run's Lease is taken (whose verbs
        are in the list), so a missing permission changes nothing.
      - C(preflight) checks the namespace, the workloads and containers, the pipeline's rollout strategy, the credentials Secret and
        whether NATS is installed yet (RV(nats_deferred)).
      - C(probe) runs (or judges again) a short-lived Job from O(probe.definition) that resolves
        the NATS service and opens its port from the collectors' namespace; a pod on a node
        simulated by kwok is reported as unproven, never as success.
      - C(pipeline) checks the stream and the durable consumer exist, records the pipeline and
        sets O(env) in its container, then waits for its rollout.
      - C(collectors_plan) records every collector and returns RV(batches) (canary first).
      - C(collectors_batch) switches the collectors of O(batch) and gates them; a failed gate
        returns them to their records (and every other collector with O(full_rollback)). A
        collector already on NATS whose gate consumer still exists (a run stopped during its
        gates or during the restore of a failed gate) is gated again, not switched again.
      - C(verify) checks output modes, rollouts and the pipeline consumer's lag.
      - C(rollback) returns the collectors, waits for the consumer to drain, then the pipeline
        (O(rollback_mode)), and retires their records; returns RV(kept_changes).
      - C(report) returns RV(report), each workload against its record, and RV(nats_snapshot).
      - C(ledger) reads the lab simulator's event ledger at O(ledger_url) and fails on any lost
        or duplicated event.
      - C(requirements) checks that the Python libraries every phase needs (kubernetes, nats-py)
        can be imported where the engine runs and returns their versions (RV(libraries)).
      - C(lock) takes the run's Lease (O(lock)) in O(namespace) and returns its holder (RV(holder)).
        A Lease another run holds is watched on this runner's monotonic clock (never compared with
        the other machine's timestamps) - refused, naming its holder, at the first renewal seen;
        taken over only once none was seen for its whole leaseDurationSeconds (check mode watches
        and refuses the same way, and writes nothing). Then it starts a renewer process that
        renews the Lease at most a third of its duration apart (every 10 s at most) for as long
        as ansible-playbook runs, and stops the run (SIGINT to ansible-playbook, the reason on
        its stderr) when the Lease is deleted, taken, or cannot be renewed. C(unlock) stops the
        renewer, then deletes the Lease when this run holds it.
        Neither counts as a change. Both run only inside ansible-playbook, through the project's
        action plugin.
    type: str
    required: true
    choices: [permissions, preflight, probe, pipeline, collectors_plan, collectors_batch, verify, rollback, report, ledger,
              requirements, lock, unlock]
  namespace:
    description: Namespace of the workloads and of the state ConfigMap.
    type: str
    default: tapio
  pipeline:
    description:
      - The pipeline Deployment; I(name) and I(container) are needed when given.
      - A second correlation engine is switched and restored as a pipeline (roles/tapio_pipeline,
        tasks/engines.yml), with I(credentials) naming its extra consumer.
    type: dict
    default: {name: tapio-pipeline, container: pipeline}
    suboptions:
      name:
        description: The Deployment's name.
        type: str
      container:
        description: The container the migration owns.
        type: str
      credentials:
        description:
          - Whose NATS user the pods connect as, with one user per workload (I(workload_secrets)) - the
            Secret C(<prefix><credentials>) and the inbox prefix C(_INBOX_<credentials>).
          - Empty is the Deployment's own name (the pipeline's user); an engine gives its extra consumer's.
        type: str
        default: ""
  collectors:
    description: The collector DaemonSets; every key is needed in each.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The DaemonSet's name.
        type: str
      container:
        description: The container the migration owns.
        type: str
      subject_prefix:
        description: The subject prefix the collector publishes under (its gate reads it).
        type: str
  mode_env:
    description: The output-mode env var.
    type: str
    default: TAPIO_OUTPUT_MODE
  nats_value:
    description: Its value in NATS mode.
    type: str
    default: nats
  direct_value:
    description: Its value in direct (gRPC) mode.
    type: str
    default: direct
  state:
    description: Where records live; each key has its default when left out.
    type: dict
    suboptions:
      configmap:
        description: The state ConfigMap in O(namespace).
        type: str
        default: tapio-migration-state
      dir:
        description: Local records of namespace N go to C(<dir>/N/<kind>-<name>.json).
        type: str
        default: .artifacts/state
      labels:
        description: Labels of the state ConfigMap (any keys).
        type: dict
        default: {}
  stream:
    description: The events stream.
    type: str
    default: TAPIO_EVENTS
  consumer:
    description: The pipeline's durable consumer.
    type: str
    default: tapio-pipeline
  nats_checks:
    description: Read NATS in the gates, verify, rollback drain and report; false skips those reads.
    type: bool
    default: true
  env:
    description:
      - C(pipeline), C(collectors_*) - env entries set in the owned container, each C({name, value})
        or C({name, valueFrom}); every other entry is kept.
      - These are module arguments, which Ansible prints at C(-vvv); a secret belongs in a
        C(valueFrom.secretKeyRef), never in a literal C(value).
    type: list
    elements: dict
    default: []
  subject_prefix_env:
    description: C(collectors_*) - env var that carries each collector's subject prefix.
    type: str
    default: NATS_SUBJECT_PREFIX
  workload_secrets:
    description:
      - C(pipeline), C(collectors_*), C(preflight) - when each workload has its own NATS user. Without
        O(workload_secrets.prefix), the shared Secret as given.
    type: dict
    suboptions:
      shared:
        description: The shared Secret; every O(env) entry whose C(secretKeyRef) names it reads the workload's own.
        type: str
      prefix:
        description: The workload's own Secret is C(<prefix><workload name>); preflight requires each.
        type: str
      inbox_env:
        description: Env var that carries the workload's own inbox prefix (C(_INBOX_<workload name>)).
        type: str
  pod_annotations:
    description: C(collectors_*) - pod-template annotations per collector name, set when it switches.
    type: dict
    default: {}
  container_overrides:
    description: C(collectors_*) - fields merged into the owned container per collector name.
    type: dict
    default: {}
  order:
    description: C(collectors_plan) - rollout order (names); default the order of O(collectors).
    type: list
    elements: str
    default: []
  batch_size:
    description: C(collectors_plan) - collectors per batch after the canary.
    type: int
    default: 1
  batch:
    description: C(collectors_batch) - the names of the batch to switch.
    type: list
    elements: str
    default: []
  require_pipeline:
    description: C(collectors_plan) - refuse while the pipeline does not consume from NATS.
    type: bool
    default: true
  gate:
    description:
      - C(collectors_batch), C(verify) - the NATS gates; each key has its default when left out.
      - The consumer keeps up when its backlog is at most O(gate.max_pending), or when over
        O(gate.window) its ack floor moved at least at the rate the stream grew and its backlog
        stayed bounded (10% tolerance). Progress is the backlog reaching a new low, so a backlog
        that only grows fails after O(gate.timeout).
    type: dict
    suboptions:
      consumer_prefix:
        description: Name prefix of the temporary gate consumers.
        type: str
        default: tapio-migration-gate-
      timeout:
        description: Seconds without progress for the NATS gates.
        type: float
        default: 60
      max_pending:
        description: The pipeline consumer's backlog (pending plus awaiting ack) that passes at once.
        type: int
        default: 1000
      window:
        description: Seconds over which a larger backlog is judged by its trend.
        type: float
        default: 10
  full_rollback:
    description: C(collectors_batch) - on a failed gate also return every other collector.
    type: bool
    default: false
  permissions:
    description: C(permissions) - each C({group, resource, verbs, namespace, names}) the run needs.
    type: list
    elements: dict
    default: []
  secret:
    description: C(preflight) - the credentials Secret to require.
    type: dict
    suboptions:
      name:
        description: Its name; empty skips the check.
        type: str
      keys:
        description: The keys it must hold.
        type: list
        elements: str
        default: []
  ca_secret:
    description:
      - C(preflight) - the Secret holding the CA the pods trust for TLS to NATS (the workloads'
        C(NATS_CA) env reads it by secretKeyRef).
    type: dict
    suboptions:
      name:
        description: Its name; empty skips the check.
        type: str
      key:
        description: The key holding the CA.
        type: str
        default: ca.crt
  nats_install:
    description: C(preflight) - the NATS StatefulSet this run installs (its checks wait for it when absent).
    type: dict
    suboptions:
      enabled:
        description: Whether this run installs NATS.
        type: bool
        default: false
      namespace:
        description: The StatefulSet's namespace.
        type: str
      name:
        description: The StatefulSet's name.
        type: str
  fail_on_unsafe_strategy:
    description: C(preflight) - fail (not warn) on a pipeline strategy that could leave no ready pod.
    type: bool
    default: true
  probe:
    description: C(probe) - the probe Job; O(probe.definition) and O(probe.target) are needed for that phase.
    type: dict
    suboptions:
      definition:
        description: The Job to create, a Kubernetes object (any keys the API takes).
        type: dict
      target:
        description: The C(host:port) it tests.
        type: str
      timeout:
        description: Seconds to wait for it.
        type: float
        default: 120
      fresh:
        description: Delete an earlier Job first.
        type: bool
        default: false
      required:
        description: Fail on a failed probe.
        type: bool
        default: true
      simulated_node_annotation:
        description: The annotation of a node simulated by kwok (its outcome is unproven, never a success).
        type: str
        default: ""
  expected_mode:
    description: C(verify) - output mode every workload must run in.
    type: str
    default: nats
  rollback_mode:
    description:
      - C(rollback) - C(switch) sets direct mode and retires the records; C(restore) re-applies what the
        toolkit wrote to its records, entry by entry, and retires them.
    type: str
    choices: [switch, restore]
    default: switch
  drain:
    description: C(rollback) - wait for the pipeline consumer to drain before the pipeline goes back.
    type: bool
    default: true
  stream_fill_limit:
    description:
      - C(preflight), C(collectors_batch), C(verify) - percent of the events stream's limits
        (C(max_msgs), C(max_bytes), C(max_age)) that stops the run before the stream discards
        (or refuses) events. Under C(discard=old) it is the pipeline consumer's unacknowledged
        backlog and the age of its oldest message that count; under C(discard=new) the whole stream.
    type: float
    default: 80
  ledger_url:
    description: C(ledger) - base URL of the lab simulator.
    type: str
    default: ""
  ledger_settle:
    description: C(ledger) - seconds the ledger may wait for in-flight events.
    type: int
    default: 60
  lock:
    description:
      - The run's Lease; each key has its default when left out.
      - With a O(lock.holder), every phase first checks that the run's renewer still holds the
        Lease (and the API that it is still this run's) and fails, changing nothing, when it was
        lost; its waits stop the same way.
    type: dict
    suboptions:
      name:
        description: The coordination.k8s.io Lease in O(namespace).
        type: str
        default: tapio-nats-migration
      holder:
        description: This run's identity (phase C(lock) makes one when empty).
        type: str
        default: ""
      duration:
        description: Its leaseDurationSeconds; at least 30.
        type: int
        default: 900
notes:
  - Check mode and diff mode are supported.
  - Runs where the host's connection runs it (the control node for the lab's local connection);
    records are written under O(state.dir) there.
"""

EXAMPLES = r"""
- name: Point the pipeline at NATS
  ansible.legacy.tapio_migration:
    phase: pipeline
    kubeconfig: ~/.kube/config
    namespace: tapio
    pipeline: {name: tapio-pipeline, container: pipeline}
    state: {configmap: tapio-migration-state, dir: .artifacts/prod/state, labels: {}}  # records in <dir>/<namespace>/
    env:
      - {name: TAPIO_OUTPUT_MODE, value: nats}
      - {name: NATS_URL, value: "nats://tapio-nats:4222"}
    servers: ["nats://127.0.0.1:4222"]

- name: Plan the collectors' batches
  ansible.legacy.tapio_migration:
    phase: collectors_plan
    collectors:
      - {name: tapio-k8s-collector, container: k8s-collector, subject_prefix: tapio.events.k8s}
  register: plan
"""

RETURN = r"""
steps:
  description: What the phase did, one line each with seconds since it started.
  returned: always
  type: list
  elements: str
nats_deferred:
  description: C(preflight) - NATS is not installed yet, so its checks wait for the nats phase.
  returned: phase preflight
  type: bool
stream_fill:
  description:
    - C(preflight), C(verify) - the events stream's fullness (C(percent), the C(limit) that gives it,
      C(measures), C(summary)); null when the stream does not exist yet or NATS is not checked.
  returned: phases preflight and verify
  type: dict
warnings_found:
  description: C(preflight) - problems that only warn (for example an unsafe strategy when allowed).
  returned: phase preflight
  type: list
  elements: str
batches:
  description: C(collectors_plan) - each C({names, changes}); C(changes) are the collectors that switch.
  returned: phase collectors_plan
  type: list
  elements: dict
probe:
  description: C(probe) - C(outcome) (passed, failed, unproven), C(node) and C(detail).
  returned: phase probe
  type: dict
switched:
  description: C(collectors_batch) - collectors switched by this call.
  returned: phase collectors_batch
  type: list
  elements: str
gated:
  description: C(collectors_batch) - collectors whose gates passed in this call (switched now, or by an interrupted run).
  returned: phase collectors_batch
  type: list
  elements: str
kept_changes:
  description:
    - "C(rollback) - each entry a restore kept as it is live, because someone other than the toolkit changed
      it since the migration (an env entry or pod template annotation the toolkit wrote and someone changed,
      one it never wrote that differs from the record, any other changed field), one line each
      (C(<Kind> <namespace>/<name>: <what> (<how>))). Names only, never values. Empty for mode C(switch)."
  returned: phase rollback
  type: list
  elements: str
  sample: ["DaemonSet tapio/tapio-k8s-collector: env LOG_LEVEL (changed since the migration, kept)"]
report:
  description:
    - C(report) - namespace, workloads (kind, name, env added/removed/changed, before, after,
      C(kept_on_restore) - what a restore would keep now, worded as RV(kept_changes)), changed.
    - Literal env values are shown as C(<redacted sha256:...>).
  returned: phase report
  type: dict
nats_snapshot:
  description:
    - C(report) - stream messages, the consumer's counters and the stream's fullness (C(fill_percent),
      C(fill_limit), C(fill)) at report time.
  returned: phase report
  type: dict
holder:
  description:
    - C(lock), C(unlock) - the holder identity of this run's Lease (user@host, pid, a unique run id).
    - Empty for C(lock) in check mode, which takes no Lease and starts no renewer.
  returned: phases lock and unlock
  type: str
libraries:
  description: C(requirements) - the version of each library the engine needs, by distribution name.
  returned: phase requirements
  type: dict
message:
  description: C(ledger) - the ledger's verdict.
  returned: phase ledger
  type: str
diff:
  description:
    - Per changed object, before and after (env of the owned container, or the whole record).
    - Literal env values are shown as C(<redacted sha256:...>), the first 8 hex digits of their sha256.
  returned: diff mode, when something changes
  type: list
"""

import contextlib
import importlib.metadata
import json
import os
import time
import traceback
from typing import Any, Callable

from ansible.module_utils.tapio_engine import Engine, EngineError, EngineInputs
from ansible.module_utils.tapio_kube import (
    KUBE_CONNECTION_SPEC, KUBERNETES_IMPORT_ERROR, KUBERNETES_REQUIREMENT, Kube, KubeError)
from ansible.module_utils.tapio_lab_ledger import ledger_verdict
from ansible.module_utils.tapio_lease import (
    MINIMUM_DURATION, LeaseHeld, Lock, new_holder, renew_interval)
from ansible.module_utils.tapio_lease_renewer import (
    RenewerError, controller_stderr, spawn, start_renewer, stop_renewer)
from ansible.module_utils.tapio_lease_state import LOST, LockGuard, state_path
from ansible.module_utils.tapio_nats import NatsModuleError, exit_with_result, nats_module
from ansible.module_utils.tapio_nats_session import NatsSession
from ansible.module_utils.tapio_wait import Stalled
from ansible.module_utils.tapio_workload import WorkloadError
from ansible.module_utils.tapio_http import http_get
from ansible.module_utils.basic import missing_required_lib


def nested(options: dict[str, Any]) -> dict[str, Any]:
    """A dict option whose keys are declared: Ansible refuses a misspelt one, and fills in the
    defaults even when the option is left out (apply_defaults, a fresh dict on every call)."""
    return {"type": "dict", "apply_defaults": True, "options": options}


LOCK_OPTIONS: dict[str, Any] = {
    "name": {"type": "str", "default": "tapio-nats-migration"},
    "holder": {"type": "str", "default": ""},
    "duration": {"type": "int", "default": 900},
}
STATE_OPTIONS: dict[str, Any] = {
    "configmap": {"type": "str", "default": "tapio-migration-state"},
    "dir": {"type": "str", "default": ".artifacts/state"},
    "labels": {"type": "dict", "default": {}},
}
GATE_OPTIONS: dict[str, Any] = {
    "consumer_prefix": {"type": "str", "default": "tapio-migration-gate-"},
    "timeout": {"type": "float", "default": 60},
    "max_pending": {"type": "int", "default": 1000},
    "window": {"type": "float", "default": 10},
}
PROBE_OPTIONS: dict[str, Any] = {
    "definition": {"type": "dict"},  # a Kubernetes Job, as the API takes it
    "target": {"type": "str"},
    "timeout": {"type": "float", "default": 120},
    "fresh": {"type": "bool", "default": False},
    "required": {"type": "bool", "default": True},
    "simulated_node_annotation": {"type": "str", "default": ""},
}
# Not required here: check_targets names every incomplete workload in one message.
WORKLOAD_OPTIONS: dict[str, Any] = {"name": {"type": "str"}, "container": {"type": "str"}}
COLLECTOR_OPTIONS: dict[str, Any] = {**WORKLOAD_OPTIONS, "subject_prefix": {"type": "str"}}

ARGUMENT_SPEC: dict[str, Any] = {
    "phase": {"type": "str", "required": True, "choices": [
        "permissions", "preflight", "probe", "pipeline", "collectors_plan", "collectors_batch", "verify", "rollback",
        "report", "ledger", "requirements", "lock", "unlock"]},
    "lock": nested(LOCK_OPTIONS),
    **KUBE_CONNECTION_SPEC,
    "namespace": {"type": "str", "default": "tapio"},
    "pipeline": {"type": "dict", "default": {"name": "tapio-pipeline", "container": "pipeline"},
                 "options": {**WORKLOAD_OPTIONS, "credentials": {"type": "str", "default": ""}}},
    "collectors": {"type": "list", "elements": "dict", "default": [], "options": COLLECTOR_OPTIONS},
    "mode_env": {"type": "str", "default": "TAPIO_OUTPUT_MODE"},
    "nats_value": {"type": "str", "default": "nats"},
    "direct_value": {"type": "str", "default": "direct"},
    "state": nested(STATE_OPTIONS),
    "stream": {"type": "str", "default": "TAPIO_EVENTS"},
    "consumer": {"type": "str", "default": "tapio-pipeline"},
    "nats_checks": {"type": "bool", "default": True},
    "progress_deadline": {"type": "float", "default": 120},
    "poll_interval": {"type": "float", "default": 2},
    "env": {"type": "list", "elements": "dict", "default": []},
    "subject_prefix_env": {"type": "str", "default": "NATS_SUBJECT_PREFIX"},
    "workload_secrets": nested({"shared": {"type": "str"}, "prefix": {"type": "str"}, "inbox_env": {"type": "str"}}),
    "pod_annotations": {"type": "dict", "default": {}},
    "container_overrides": {"type": "dict", "default": {}},
    "order": {"type": "list", "elements": "str", "default": []},
    "batch_size": {"type": "int", "default": 1},
    "batch": {"type": "list", "elements": "str", "default": []},
    "require_pipeline": {"type": "bool", "default": True},
    "gate": nested(GATE_OPTIONS),
    "full_rollback": {"type": "bool", "default": False},
    "permissions": {"type": "list", "elements": "dict", "default": []},
    "secret": nested({"name": {"type": "str"}, "keys": {"type": "list", "elements": "str", "default": []}}),
    "ca_secret": nested({"name": {"type": "str"}, "key": {"type": "str", "default": "ca.crt"}}),
    "nats_install": nested({"enabled": {"type": "bool", "default": False}, "namespace": {"type": "str"},
                            "name": {"type": "str"}}),
    "fail_on_unsafe_strategy": {"type": "bool", "default": True},
    "probe": nested(PROBE_OPTIONS),
    "expected_mode": {"type": "str", "default": "nats"},
    "rollback_mode": {"type": "str", "default": "switch", "choices": ["switch", "restore"]},
    "drain": {"type": "bool", "default": True},
    "stream_fill_limit": {"type": "float", "default": 80},
    "ledger_url": {"type": "str", "default": ""},
    "ledger_settle": {"type": "int", "default": 60},
}


def read_ledger(url: str, settle: int) -> dict[str, Any]:
    response = http_get(f"{url.rstrip('/')}/ledger?settle={settle}", settle + 30)
    return json.loads(response.read() or b"{}")


def library_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def check_targets(params: dict[str, Any]) -> None:
    """Bad input named before anything is read or changed."""
    pipeline = params["pipeline"] or {}
    incomplete = [c for c in params["collectors"] if not all(c.get(k) for k in ("name", "container", "subject_prefix"))]
    if not pipeline.get("name") or not pipeline.get("container") or incomplete:
        raise EngineError("tapio_pipeline needs name and container, and every entry of tapio_collectors needs name, "
                          f"container and subject_prefix; got tapio_pipeline={pipeline} and incomplete "
                          f"tapio_collectors entries {incomplete}.")


def run_phase(engine: Engine, phase: str) -> dict[str, Any]:
    if phase == "permissions":
        return engine.permissions()
    if phase == "preflight":
        found = engine.preflight()
        return {"nats_deferred": found["nats_deferred"], "warnings_found": found["warnings"],
                "output_modes": found["output_modes"], "stream_fill": found["stream_fill"]}
    if phase == "probe":
        return engine.probe()
    if phase == "pipeline":
        return engine.pipeline_phase()
    if phase == "collectors_plan":
        return engine.collectors_plan()
    if phase == "collectors_batch":
        return engine.collectors_batch()
    if phase == "verify":
        return engine.verify()
    if phase == "rollback":
        return engine.rollback()
    return engine.report()


def lease_of(kube: Kube, params: dict[str, Any], steps: list[str]) -> Lock:
    lock = params["lock"]
    return Lock(kube, params["namespace"], lock["name"], lock["holder"], int(lock["duration"]), log=steps.append,
                progress=live_line())


def lock_file(params: dict[str, Any]) -> str:
    return state_path(params["state"]["dir"], params["namespace"], params["lock"]["name"])


def live_line() -> Callable[[str], None]:
    """A line the person running the playbook sees at once, while the lock phase watches
    another run's Lease for minutes: Ansible's display, which a worker forwards to
    ansible-playbook. A no-op where Ansible's controller code is absent."""
    try:
        from ansible.utils.display import Display
    except ImportError:
        return lambda _line: None
    display = Display()
    return lambda line: display.display(f"tapio lock: {line}", stderr=True)


def take_lock(module: Any, params: dict[str, Any], lock: Lock, steps: list[str]) -> None:
    """Take the Lease, then start the renewer that keeps it for as long as ansible-playbook
    (this worker's parent) runs; a renewer that does not start releases the Lease again."""
    lock.take(module.check_mode)
    if module.check_mode:
        return
    controller = os.getppid()
    state = {"holder": lock.holder, "namespace": lock.namespace, "name": lock.name, "duration": lock.duration,
             "kubeconfig": params["kubeconfig"], "context": params["context"], "watch_pid": controller,
             "lease": lock.lease, "renewed_monotonic": lock.written_at}
    try:
        found = start_renewer(lock_file(params), state, lambda path: spawn(path, controller_stderr(controller)))
    except (RenewerError, OSError) as error:
        released = False
        with contextlib.suppress(KubeError):  # else it lapses: nothing renews it
            released = lock.release()
        raise RenewerError(f"{error}; {lock.label} {'released again' if released else 'left to lapse'}, nothing "
                           "was changed") from None
    steps.append(f"renewer pid {found['pid']} renews {lock.label} every {renew_interval(lock.duration):g}s while "
                 f"ansible-playbook (pid {controller}) runs; its state: {lock_file(params)}")


def release_lock(params: dict[str, Any], lock: Lock, steps: list[str]) -> None:
    """Stop the renewer, then delete the Lease when it is still this run's."""
    last = stop_renewer(lock_file(params), lock.holder)
    if last is not None:
        steps.append(f"renewer pid {last.get('pid')} {last.get('state')} after {last.get('renewals')} renewal(s)")
    if last is not None and last.get("state") == LOST:
        steps.append(f"{lock.label} not released: {last.get('reason')}")
    elif not lock.release():
        steps.append(f"{lock.label} is not this run's: nothing to release")


def run_lock_phase(module: Any, params: dict[str, Any], steps: list[str]) -> None:
    """lock or unlock; exits the module. The Lease is coordination, never a change to report."""
    duration = int(params["lock"]["duration"])
    if params["phase"] == "lock" and duration < MINIMUM_DURATION:
        module.fail_json(msg=f"tapio_lock_duration (lock.duration) {duration} is below {MINIMUM_DURATION} seconds: "
                             "the Lease is renewed every third of it and given up after two thirds without a "
                             "renewal, which a shorter Lease cannot ride out. Nothing was changed.")
    if params["phase"] == "lock" and not params["lock"]["holder"]:
        params["lock"]["holder"] = new_holder()
    if not params["lock"]["holder"]:
        module.exit_json(changed=False, steps=["no lock holder given: nothing to release"])
    try:
        lock = lease_of(Kube(params["kubeconfig"], params["context"], log=steps.append), params, steps)
        if params["phase"] == "lock":
            take_lock(module, params, lock, steps)
        elif not module.check_mode:
            release_lock(params, lock, steps)
    except (LeaseHeld, KubeError, RenewerError) as error:
        module.fail_json(msg=str(error), steps=steps)
    # A check run takes no Lease, so it has no holder: its engine calls (reads run for real
    # even in --check) must not take the missing Lease for a lost one.
    holder = "" if module.check_mode and params["phase"] == "lock" else params["lock"]["holder"]
    module.exit_json(changed=False, holder=holder, steps=steps)


def guarded_sleep(kube: Kube, params: dict[str, Any], steps: list[str]) -> Callable[[float], None]:
    """The sleep of a locked run's engine call: it starts only while the renewer holds the
    Lease and the API says it is still this run's, and every wait stops once it is lost."""
    guard = LockGuard(lock_file(params), params["lock"]["holder"], int(params["lock"]["duration"]))
    guard.check()
    lease_of(kube, params, steps).confirm()
    return guard.sleep


def main() -> None:
    module = nats_module(ARGUMENT_SPEC, supports_check_mode=True)
    params = dict(module.params)
    phase = params["phase"]
    if phase == "ledger":
        if module.check_mode:
            module.exit_json(changed=False, steps=["check mode: the ledger is read after a real run"])
        try:
            message = ledger_verdict(read_ledger(params["ledger_url"], params["ledger_settle"]),
                                     params["ledger_url"], params["ledger_settle"])
        except EngineError as error:
            module.fail_json(msg=str(error))
        except Exception as error:  # an unreachable ledger is a failed check, named
            module.fail_json(msg=f"cannot read the event ledger at {params['ledger_url']}: {error}")
        module.exit_json(changed=False, message=message, steps=[message])
    if KUBERNETES_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib(KUBERNETES_REQUIREMENT), exception=KUBERNETES_IMPORT_ERROR)
    if phase == "requirements":  # nats_module() has already refused a missing nats-py
        libraries = {name: library_version(name) for name in ("kubernetes", "nats-py")}
        module.exit_json(changed=False, libraries=libraries,
                         steps=[", ".join(f"{name} {version}" for name, version in libraries.items())])
    steps: list[str] = []
    if phase in ("lock", "unlock"):
        run_lock_phase(module, params, steps)
    engine = None
    nats = None
    try:
        check_targets(params)
        inputs = EngineInputs.from_params(params)
        kube = Kube(params["kubeconfig"], params["context"], log=steps.append)
        sleep = guarded_sleep(kube, params, steps) if params["lock"]["holder"] else time.sleep
        nats = NatsSession(params, log=steps.append)
        engine = Engine(inputs, kube, nats, module.check_mode, sleep=sleep, steps=steps)
        result = run_phase(engine, phase)
    except (EngineError, Stalled, KubeError, NatsModuleError, WorkloadError, ValueError, LeaseHeld) as error:
        partial = {"steps": steps, "changed": bool(engine and engine.changed)}
        module.fail_json(msg=str(error), **partial)
    except Exception as error:  # pragma: no cover - a bug, reported with its trace
        module.fail_json(msg=f"{phase} failed: {type(error).__name__}: {error}", exception=traceback.format_exc(),
                         steps=steps)
    finally:
        if nats is not None:
            nats.close()
    exit_with_result(module, {"changed": engine.changed, "steps": steps, "diff": engine.diff, **result})


if __name__ == "__main__":
    main()
