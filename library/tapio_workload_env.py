#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: tapio_workload_env
short_description: Compute the env change the migration makes to one container of a workload
description:
  - Pure computation on a workload object you read with C(kubernetes.core.k8s_info); it talks
    to no API and changes nothing, so it runs the same in check mode.
  - Merges O(env) into the env of the container O(container) by name, in place (existing
    entries keep their position, new ones are appended). Every other env entry, C(envFrom),
    container, volume, label and annotation is left as it is.
  - Returns RV(patch), a strategic-merge patch that sets exactly those entries (and clears
    C(value)/C(valueFrom) where an entry switches between the two), and RV(needs_change),
    so an apply of the patch is skipped when nothing would change.
  - Returns RV(record), the object as the toolkit records it before changing it (no status,
    managed fields, uid, resourceVersion, generation, creation timestamp).
version_added: "1.0.0"
author: Tapio NATS migration toolkit
options:
  workload:
    description: The live object (a Deployment or DaemonSet as the API returns it).
    type: dict
    required: true
  container:
    description: Name of the container the migration owns.
    type: str
    required: true
  env:
    description:
      - Env entries to set, each C({name, value}) or C({name, valueFrom}).
      - An entry with O(env[].value) set to null is removed from the container.
    type: list
    elements: dict
    default: []
  mode_env:
    description: Name of the output-mode env var; its current value is returned as RV(output_mode).
    type: str
    default: TAPIO_OUTPUT_MODE
  record:
    description:
      - A record made earlier (RV(record) of a previous call). When given, RV(restore_needed)
        and RV(restore) tell whether and how to put the workload back to it.
    type: dict
notes:
  - Check mode is supported (the module never changes anything).
"""

EXAMPLES = r"""
- name: Compute the collector's NATS env
  ansible.legacy.tapio_workload_env:
    workload: "{{ live.resources[0] }}"
    container: k8s-collector
    env:
      - {name: TAPIO_OUTPUT_MODE, value: nats}
      - {name: NATS_URL, value: "nats://tapio-nats:4222"}
      - name: NATS_PASSWORD
        valueFrom: {secretKeyRef: {name: tapio-nats-auth, key: NATS_PASSWORD}}
  register: collector_env

- name: Apply it
  kubernetes.core.k8s:
    definition: "{{ collector_env.patch }}"
  when: collector_env.needs_change
"""

RETURN = r"""
env:
  description: The container's env after the merge.
  returned: always
  type: list
  elements: dict
current_env:
  description: The container's env before the merge.
  returned: always
  type: list
  elements: dict
needs_change:
  description: Whether the merged env differs from the live one.
  returned: always
  type: bool
patch:
  description: Strategic-merge patch (apiVersion, kind, metadata name/namespace, the container's env entries).
  returned: always
  type: dict
output_mode:
  description: Current value of the O(mode_env) env var in the container (null when unset).
  returned: always
  type: str
record:
  description: The object without status and server-managed metadata, as the toolkit records it.
  returned: always
  type: dict
restore_needed:
  description: Whether the live spec, labels or own annotations differ from O(record).
  returned: when O(record) is given
  type: bool
restore:
  description:
    - O(record) ready for a replace; it keeps the live resourceVersion and the annotations the
      server maintains, so the pod template becomes exactly the recorded one.
  returned: when O(record) is given
  type: dict
"""

import copy
import json
from typing import Any, Optional

from ansible.module_utils.basic import AnsibleModule

# Server-managed metadata that a record must not carry (it would make a restore conflict).
SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp", "selfLink")
# Annotations the API server or controllers maintain; never recorded or restored.
SERVER_ANNOTATIONS = (
    "deprecated.daemonset.template.generation",
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
)

ARGUMENT_SPEC: dict[str, Any] = {
    "workload": {"type": "dict", "required": True},
    "container": {"type": "str", "required": True},
    "env": {"type": "list", "elements": "dict", "default": []},
    "mode_env": {"type": "str", "default": "TAPIO_OUTPUT_MODE"},
    "record": {"type": "dict"},
}


class WorkloadError(ValueError):
    """The workload cannot be changed as asked (no such container, bad env entry)."""


def containers_of(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []


def find_container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    for container in containers_of(workload):
        if container.get("name") == name:
            return container
    names = ", ".join(c.get("name", "?") for c in containers_of(workload)) or "none"
    meta = workload.get("metadata", {})
    raise WorkloadError(f"{workload.get('kind', 'workload')} {meta.get('namespace')}/{meta.get('name')} "
                        f"has no container named {name!r} (containers: {names})")


def env_value(env: list[dict[str, Any]], name: str) -> Optional[str]:
    for entry in env:
        if entry.get("name") == name:
            return entry.get("value")
    return None


def validate_entry(entry: dict[str, Any]) -> None:
    if not entry.get("name"):
        raise WorkloadError(f"env entry without a name: {entry!r}")
    if "value" in entry and entry.get("valueFrom") is not None:
        raise WorkloadError(f"env entry {entry['name']} sets both value and valueFrom")


def merge_env(current: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set the wanted entries by name, in place; append new ones; drop those with value None."""
    for entry in wanted:
        validate_entry(entry)
    by_name = {entry["name"]: entry for entry in wanted}
    merged: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in current:
        name = entry.get("name", "")
        if name in by_name:
            seen.add(name)
            if is_removal(by_name[name]):
                continue
            merged.append(clean_entry(by_name[name]))
        else:
            merged.append(copy.deepcopy(entry))
    for entry in wanted:
        if entry["name"] not in seen and not is_removal(entry):
            merged.append(clean_entry(entry))
    return merged


def is_removal(entry: dict[str, Any]) -> bool:
    return "value" in entry and entry["value"] is None and entry.get("valueFrom") is None


def clean_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry as the API stores it: a value is a string; no null fields."""
    cleaned: dict[str, Any] = {"name": entry["name"]}
    if entry.get("valueFrom") is not None:
        cleaned["valueFrom"] = copy.deepcopy(entry["valueFrom"])
    else:
        cleaned["value"] = str(entry.get("value", ""))
    return cleaned


def patch_entries(current: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Strategic-merge env items: set each wanted entry, null the field it replaces, delete removals."""
    live = {entry.get("name"): entry for entry in current}
    items: list[dict[str, Any]] = []
    for entry in wanted:
        name = entry["name"]
        if is_removal(entry):
            if name in live:
                items.append({"name": name, "$patch": "delete"})
            continue
        item = clean_entry(entry)
        old = live.get(name, {})
        if "valueFrom" in item and "value" in old:
            item["value"] = None
        if "value" in item and "valueFrom" in old:
            item["valueFrom"] = None
        items.append(item)
    return items


def same_env(left: list[dict[str, Any]], right: list[dict[str, Any]]) -> bool:
    """Equal as sets of entries: a strategic merge may order new entries differently."""
    def key(entry: dict[str, Any]) -> str:
        return json.dumps(entry, sort_keys=True)
    return sorted(map(key, left)) == sorted(map(key, right))


def build_patch(workload: dict[str, Any], container: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    meta = workload.get("metadata", {})
    return {
        "apiVersion": workload.get("apiVersion"),
        "kind": workload.get("kind"),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": {"template": {"spec": {"containers": [{"name": container, "env": items}]}}},
    }


def record_of(workload: dict[str, Any]) -> dict[str, Any]:
    """The object as recorded: spec, labels and own annotations; nothing the server manages."""
    record = copy.deepcopy(workload)
    record.pop("status", None)
    meta = record.setdefault("metadata", {})
    for key in SERVER_METADATA:
        meta.pop(key, None)
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in SERVER_ANNOTATIONS}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return record


def restore_of(workload: dict[str, Any], record: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Whether the workload differs from its record, and the record as a replace definition."""
    live = record_of(workload)
    needed = any(live.get("metadata", {}).get(key) != record.get("metadata", {}).get(key)
                 for key in ("labels", "annotations")) or live.get("spec") != record.get("spec")
    restore = copy.deepcopy(record)
    meta = restore.setdefault("metadata", {})
    live_meta = workload.get("metadata", {})
    kept = {k: v for k, v in (live_meta.get("annotations") or {}).items() if k in SERVER_ANNOTATIONS}
    if kept:
        meta["annotations"] = {**(meta.get("annotations") or {}), **kept}
    if live_meta.get("resourceVersion"):
        meta["resourceVersion"] = live_meta["resourceVersion"]
    return needed, restore


def compute(workload: dict[str, Any], container: str, env: list[dict[str, Any]], mode_env: str,
            record: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    target = find_container(workload, container)
    current = target.get("env") or []
    merged = merge_env(current, env)
    result: dict[str, Any] = {}
    if record is not None:
        result["restore_needed"], result["restore"] = restore_of(workload, record)
    return result | {
        "env": merged,
        "current_env": copy.deepcopy(current),
        "needs_change": not same_env(merged, current),
        "patch": build_patch(workload, container, patch_entries(current, env)),
        "output_mode": env_value(current, mode_env),
        "record": record_of(workload),
    }


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    try:
        result = compute(params["workload"], params["container"], params["env"], params["mode_env"], params["record"])
    except WorkloadError as error:
        module.fail_json(msg=str(error))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
