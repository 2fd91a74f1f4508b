#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: tapio_credentials_rollout
short_description: Restart the workloads that read changed NATS credentials, and wait for their rollouts
description:
  - A pod reads its NATS user and password from a Secret (C(secretKeyRef)) when it starts, so a
    changed Secret reaches a workload only through new pods. For each entry of O(workloads)
    whose pod template reads the entry's Secret, this module sets the pod-template annotation
    O(annotation) to the user the pods must now connect as; the changed template makes the
    controller replace the pods, and the module waits for each rollout, following progress.
  - A workload that does not read the Secret (not switched to NATS yet) or is not there is left
    alone and reported; one whose annotation already names the user is only waited for. A
    re-run therefore changes nothing.
  - The nats_cluster role calls it between the two reloads of a password change
    (plugins/filter/tapio_nats_credentials.py), while the servers accept the old and the new
    user, so no pod is ever refused.
version_added: "1.3.0"
author: Tapio NATS migration toolkit
extends_documentation_fragment:
  - tapio_kube
  - tapio_wait
options:
  workloads:
    description: The workloads to restart when they read their Secret.
    type: list
    elements: dict
    required: true
    suboptions:
      kind:
        description: C(DaemonSet), C(Deployment) or C(StatefulSet).
        type: str
        required: true
        choices: [DaemonSet, Deployment, StatefulSet]
      name:
        description: The workload's name.
        type: str
        required: true
      namespace:
        description: Its namespace.
        type: str
        required: true
      secret:
        description: The Secret holding its NATS credentials.
        type: str
        required: true
      user:
        description: The NATS user its pods must connect as once restarted (the annotation's value).
        type: str
        required: true
  annotation:
    description: The pod-template annotation that records the user the pods were started for.
    type: str
    default: tapio.io/nats-user
requirements:
  - kubernetes >= 24.2.0
notes:
  - Supports check mode (reports the restarts it would make) and diff mode (the annotation,
    before and after, per restarted workload).
"""

EXAMPLES = r"""
- name: Restart the collector that reads its rotated password
  ansible.legacy.tapio_credentials_rollout:
    workloads:
      - {kind: DaemonSet, name: tapio-ebpf-collector, namespace: tapio,
         secret: tapio-nats-auth-tapio-ebpf-collector, user: tapio-ebpf-collector-rotated}
"""

RETURN = r"""
restarted:
  description: The workloads restarted ("Kind namespace/name"), in order.
  returned: always
  type: list
  elements: str
skipped:
  description: Per workload left alone, "Kind namespace/name - why".
  returned: always
  type: list
  elements: str
steps:
  description: What the call did, in order (patches, retries of the Kubernetes API, waits).
  returned: always
  type: list
  elements: str
"""

import traceback
from typing import Any, Optional

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.tapio_kube import (
    KUBE_CONNECTION_SPEC, KUBERNETES_IMPORT_ERROR, KUBERNETES_REQUIREMENT, Kube, KubeError)
from ansible.module_utils.tapio_wait import Stalled, wait_for_progress
from ansible.module_utils.tapio_workload import rollout_state

WORKLOAD_SPEC: dict[str, Any] = {
    "kind": {"type": "str", "required": True, "choices": ["DaemonSet", "Deployment", "StatefulSet"]},
    "name": {"type": "str", "required": True},
    "namespace": {"type": "str", "required": True},
    "secret": {"type": "str", "required": True},
    "user": {"type": "str", "required": True},
}
ARGUMENT_SPEC: dict[str, Any] = {
    "workloads": {"type": "list", "elements": "dict", "required": True, "options": WORKLOAD_SPEC},
    **KUBE_CONNECTION_SPEC,
    "annotation": {"type": "str", "default": "tapio.io/nats-user"},
    "progress_deadline": {"type": "float", "default": 120},
    "poll_interval": {"type": "float", "default": 2},
}


def reads_secret(workload: dict[str, Any], secret: str) -> bool:
    """Whether any container of the pod template takes a value, or all keys, from *secret*."""
    pod = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in (pod.get("containers") or []) + (pod.get("initContainers") or []):
        for var in container.get("env") or []:
            if ((var.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") == secret:
                return True
        if any((source.get("secretRef") or {}).get("name") == secret for source in container.get("envFrom") or []):
            return True
    return False


def template_annotation(workload: dict[str, Any], key: str) -> Optional[str]:
    meta = ((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return (meta.get("annotations") or {}).get(key)


def decision(workload: Optional[dict[str, Any]], entry: dict[str, Any], annotation: str) -> tuple[str, str]:
    """(``restart`` | ``wait`` | ``skip``, why) for one entry."""
    if workload is None:
        return "skip", "not found"
    if not reads_secret(workload, entry["secret"]):
        return "skip", f"does not read the Secret {entry['secret']}"
    if template_annotation(workload, annotation) == entry["user"]:
        return "wait", f"already restarted for {entry['user']}"
    return "restart", f"reads {entry['secret']}: restarted to connect as {entry['user']}"


def restart_patch(annotation: str, user: str) -> dict[str, Any]:
    return {"spec": {"template": {"metadata": {"annotations": {annotation: user}}}}}


def label(entry: dict[str, Any]) -> str:
    return f"{entry['kind']} {entry['namespace']}/{entry['name']}"


def roll(kube: Kube, params: dict[str, Any], check_mode: bool, steps: list[str],
         restarted: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Restart and wait for each workload in turn; *restarted* grows as it goes, so a failed
    wait still reports what was already changed."""
    skipped: list[str] = []
    diffs: list[dict[str, Any]] = []
    for entry in params["workloads"]:
        path = Kube.path(entry["kind"], entry["namespace"], entry["name"])
        workload = kube.get(entry["kind"], entry["namespace"], entry["name"])
        action, why = decision(workload, entry, params["annotation"])
        steps.append(f"{label(entry)}: {why}")
        if action == "skip":
            skipped.append(f"{label(entry)} - {why}")
            continue
        if action == "restart":
            restarted.append(label(entry))
            diffs.append({"before": {"annotation": template_annotation(workload or {}, params["annotation"])},
                          "after": {"annotation": entry["user"]}, "before_header": label(entry),
                          "after_header": label(entry)})
            if check_mode:
                continue
            kube.patch(entry["kind"], entry["namespace"], entry["name"], restart_patch(params["annotation"], entry["user"]))
        if check_mode:
            continue
        waited = wait_for_progress(lambda path=path: rollout_state(kube.request("GET", path, not_found_ok=True)),
                                   f"rollout of {label(entry)}", params["progress_deadline"], params["poll_interval"])
        steps.append(f"{label(entry)} rolled out in {waited.seconds:.1f}s: {waited.summary}")
    return skipped, diffs


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if KUBERNETES_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib(KUBERNETES_REQUIREMENT), exception=KUBERNETES_IMPORT_ERROR)
    steps: list[str] = []
    restarted: list[str] = []
    try:
        kube = Kube(module.params["kubeconfig"], module.params["context"], log=steps.append)
        skipped, diffs = roll(kube, module.params, module.check_mode, steps, restarted)
    except (KubeError, Stalled) as error:
        module.fail_json(msg=str(error), changed=bool(restarted) and not module.check_mode, steps=steps)
    except Exception as error:  # pragma: no cover - a bug, reported with its trace
        module.fail_json(msg=f"credentials rollout failed: {type(error).__name__}: {error}",
                         exception=traceback.format_exc(), steps=steps)
    result: dict[str, Any] = {"changed": bool(restarted), "restarted": restarted, "skipped": skipped, "steps": steps}
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
