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
  - Its options (O(workload), O(record)) and results (RV(env), RV(record), RV(patch),
    RV(restore)) carry the workload's env values as they are, since the results are meant to
    be applied or kept; Ansible prints the results at C(-v) and the options at C(-vvv). Set the
    task's C(no_log) to true when the workload may hold a secret in a literal env value.
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

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tapio_workload import WorkloadError, compute

ARGUMENT_SPEC: dict[str, Any] = {
    "workload": {"type": "dict", "required": True},
    "container": {"type": "str", "required": True},
    "env": {"type": "list", "elements": "dict", "default": []},
    "mode_env": {"type": "str", "default": "TAPIO_OUTPUT_MODE"},
    "record": {"type": "dict"},
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
