#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: tapio_apply
short_description: Apply a set of Kubernetes objects with server-side apply, changing only what differs
description:
  - Applies every object of O(objects) with server-side apply (field manager O(field_manager),
    conflicts forced) in one call, then optionally waits for the rollout of the StatefulSets,
    Deployments and DaemonSets marked C(wait).
  - What changes is decided by the API server before anything is written - each object is
    applied with C(dryRun=All) first and the answer compared with the live object, leaving
    out what every write moves (resourceVersion, managedFields, generation, status). Only
    objects whose dry run differs are written, so a re-run sends no write.
  - Every dry run happens before the first write; a refusal (an invalid object, a change to a
    StatefulSet's volumeClaimTemplates) fails the call with nothing applied.
  - Namespaces are applied first. An object in a namespace that does not exist yet is new -
    it is created without a dry run (a dry run cannot place it there), and in check mode
    reported as created.
  - Server-side apply writes no C(last-applied-configuration) annotation, so a Secret's
    values are never copied into one; Secrets' values are redacted in diffs and results.
  - Literal env values of every container (and a C(last-applied-configuration) annotation)
    are shown in diffs and results as a short hash, C(<redacted sha256:1a2b3c4d>); the objects
    are applied with their values.
  - Waits follow progress - a rollout fails when nothing has moved for O(progress_deadline)
    seconds, never after a fixed total.
  - Runs on the control node (the project's action plugin runs it in Ansible's worker process).
version_added: "1.2.0"
author: Tapio NATS migration toolkit
extends_documentation_fragment:
  - tapio_kube
  - tapio_wait
options:
  objects:
    description:
      - The objects, each C({definition, wait, optional, hint}) - C(definition) the object
        (apiVersion, kind, metadata.name and, for namespaced kinds, metadata.namespace), or the
        object itself (an entry with C(apiVersion) and C(kind));
        C(wait) true to wait for its rollout; C(optional) true to skip it, reported as
        C(skipped), when the API server does not serve its kind (a CRD not installed);
        C(hint) a sentence added to the message when the object is refused;
        C(create_only) true to create it (a plain create, not an apply) only when it does not
        exist and leave an existing one exactly as it is.
    type: list
    elements: dict
    required: true
  field_manager:
    description: The server-side apply field manager that owns the applied fields.
    type: str
    default: tapio-nats-migration
  wait:
    description: Wait for the rollout of the objects marked C(wait) (not in check mode).
    type: bool
    default: true
requirements:
  - kubernetes >= 24.2.0
notes:
  - Supports check mode (dry runs only, the plan and its diff) and diff mode (one diff per
    created or updated object).
  - A field that an earlier client-side apply set and that the definition no longer has is
    not removed (server-side apply removes only fields its own manager applied before).
"""

EXAMPLES = r"""
- name: Apply the NATS objects and wait for the StatefulSet
  ansible.legacy.tapio_apply:
    objects:
      - definition: "{{ lookup('ansible.builtin.template', 'configmap.yaml.j2') | from_yaml }}"
      - definition: "{{ lookup('ansible.builtin.template', 'statefulset.yaml.j2') | from_yaml }}"
        wait: true
        hint: Expand the claims instead, see the role's README.
      - definition: "{{ lookup('ansible.builtin.template', 'podmonitor.yaml.j2') | from_yaml }}"
        optional: true
    progress_deadline: 120
"""

RETURN = r"""
objects:
  description: Per object, in apply order - kind, name, namespace, operation (create, update,
    none or skipped), reason (skipped, or check mode in a new namespace), changed_keys (a
    Secret's keys whose value changed) and resource (the object as applied or as the dry run
    returned it; a Secret's values and containers' literal env values redacted).
  returned: always
  type: list
  elements: dict
rollouts:
  description: Per waited object, "Kind namespace/name - summary" of its finished rollout.
  returned: when something was waited for
  type: list
  elements: str
steps:
  description: What the call did, in order (applies, retries of the Kubernetes API, waits).
  returned: always
  type: list
  elements: str
diff:
  description: Per created or updated object, before and after as JSON (Secrets' values and literal env values redacted).
  returned: diff mode, when something changes
  type: list
"""

import time
import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.tapio_apply import (
    Applier, ApplyError, entry_diff, entry_result, object_label, secret_values)
from ansible.module_utils.tapio_kube import (
    KUBE_CONNECTION_SPEC, KUBERNETES_IMPORT_ERROR, KUBERNETES_REQUIREMENT, Kube, KubeError)
from ansible.module_utils.tapio_wait import Clock, Sleep, Stalled, wait_for_progress
from ansible.module_utils.tapio_workload import rollout_state, unschedulable_pods

ARGUMENT_SPEC: dict[str, Any] = {
    "objects": {"type": "list", "elements": "dict", "required": True},
    **KUBE_CONNECTION_SPEC,
    "field_manager": {"type": "str", "default": "tapio-nats-migration"},
    "wait": {"type": "bool", "default": True},
    "progress_deadline": {"type": "float", "default": 120},
    "poll_interval": {"type": "float", "default": 2},
}


def as_entries(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bare objects (a multi-document template's items) become ``{definition: object}``."""
    return [{"definition": item} if "definition" not in item and "kind" in item else item for item in objects]


def bad_objects(objects: list[dict[str, Any]]) -> list[str]:
    """Entries that cannot be applied, named before anything is read."""
    problems = []
    for index, item in enumerate(objects):
        definition = item.get("definition")
        if not isinstance(definition, dict):
            problems.append(f"objects[{index}] has no definition mapping")
            continue
        meta = definition.get("metadata") or {}
        missing = [key for key in ("apiVersion", "kind") if not definition.get(key)]
        if not meta.get("name"):
            missing.append("metadata.name")
        if missing:
            problems.append(f"objects[{index}] ({definition.get('kind', '?')}) lacks {', '.join(missing)}")
    return problems


def workload_pods(kube: Kube, workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods of a Deployment, DaemonSet or StatefulSet (its label selector)."""
    labels = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    namespace = (workload.get("metadata") or {}).get("namespace")
    if not labels or not namespace:
        return []
    selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
    answer = kube.request("GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", selector)])
    return (answer or {}).get("items") or []


def wait_rollouts(kube: Kube, planned: list[dict[str, Any]], deadline: float, interval: float,
                  steps: list[str], clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> list[str]:
    """Each rollout marked to wait for, one after the other; a stalled one names the scheduler's
    reason when its pods are not scheduled."""
    done = []
    for entry in planned:
        if not entry.get("wait") or entry["operation"] == "skipped":
            continue

        def poll(path: str = entry["path"], entry: dict[str, Any] = entry) -> tuple[bool, Any, str]:
            entry["after"] = kube.request("GET", path, not_found_ok=True)
            return rollout_state(entry["after"])

        try:
            waited = wait_for_progress(poll, f"rollout of {entry['label']}", deadline, interval, clock, sleep)
        except Stalled as stalled:
            reasons = unschedulable_pods(workload_pods(kube, entry["after"] or entry["desired"]))
            if not reasons:
                raise
            raise Stalled(f"{stalled}; not scheduled: {'; '.join(reasons)}", stalled.progress) from None
        steps.append(f"{entry['label']} rolled out in {waited.seconds:.1f}s: {waited.summary}")
        done.append(f"{entry['label']} - {waited.summary}")
    return done


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if KUBERNETES_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib(KUBERNETES_REQUIREMENT), exception=KUBERNETES_IMPORT_ERROR)
    params = module.params
    params["objects"] = as_entries(params["objects"])
    # A Secret's values travel in O(objects): keep them out of every result, the invocation
    # echoed at -vvv included, as no_log would for an option of their own.
    module.no_log_values.update(secret_values(params["objects"]))
    problems = bad_objects(params["objects"])
    if problems:
        module.fail_json(msg="Nothing was applied: " + "; ".join(problems) + ".")
    steps: list[str] = []
    planned: list[dict[str, Any]] = []
    try:
        kube = Kube(params["kubeconfig"], params["context"], log=steps.append)
        applier = Applier(kube, params["field_manager"], module.check_mode, log=steps.append)
        planned = applier.plan(params["objects"])
        applier.apply(planned)
        rollouts = []
        if params["wait"] and not module.check_mode:
            rollouts = wait_rollouts(kube, planned, params["progress_deadline"], params["poll_interval"], steps)
    except (ApplyError, KubeError, Stalled) as error:
        written = [entry["label"] for entry in planned if "path" in entry and entry["operation"] in ("create", "update")]
        changed = bool(written) and not module.check_mode and not isinstance(error, ApplyError)
        module.fail_json(msg=str(error), changed=changed, steps=steps)
    except Exception as error:  # pragma: no cover - a bug, reported with its trace
        module.fail_json(msg=f"apply failed: {type(error).__name__}: {error}", exception=traceback.format_exc(),
                         steps=steps)
    changes = [entry for entry in planned if entry["operation"] in ("create", "update")]
    steps.extend(f"{entry['label']}: {entry['operation']}{' (' + entry['reason'] + ')' if entry.get('reason') else ''}"
                 for entry in planned if entry["operation"] in ("create", "update", "skipped"))
    if not changes:
        steps.append(f"unchanged: {', '.join(object_label(entry['desired']) for entry in planned) or 'no objects'}")
    result: dict[str, Any] = {"changed": bool(changes), "objects": [entry_result(entry) for entry in planned],
                              "steps": steps, "rollouts": rollouts}
    if module._diff and changes:
        result["diff"] = [entry_diff(entry) for entry in changes]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
