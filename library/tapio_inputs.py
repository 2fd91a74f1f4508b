#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: tapio_inputs
short_description: Check the Ansible version, the Python libraries and a cluster's inventory before any change
description:
  - The boilerplate play's one check, before anything is read from or changed in a cluster. It
    fails, naming every problem it finds in one message, when ansible-core is older than 2.19,
    a Python library the modules need (kubernetes, nats-py) cannot be imported where they run,
    or the inventory is wrong - its types (as C(ansible.builtin.validate_argument_spec) words
    them; nothing else is checked after a wrong type), how the control node reaches NATS,
    credentials written into NATS URLs, names, subject prefixes (reserved, outside the events
    stream, overlapping another collector's) and URLs, the NATS users the nats phase creates,
    control characters in passwords, a malformed C(tapio_nats_url), an unset
    C(tapio_kube_context), the collectors' rollout order and batch size, a lock duration under
    30 seconds, or a kubeconfig that
    does not exist on the control node.
  - Each option is the inventory variable of the same name with the C(tapio_) prefix (and
    O(nats_cluster_method) the nats_cluster role's); leave unset what the inventory does not set.
    The values are checked as the inventory gives them (type C(raw)), and each problem names the
    inventory variable.
  - The logic lives in module_utils/tapio_inputs.py; the module only reads, so it runs the
    same in check mode. Runs on the control node (the project's action plugin runs it in
    Ansible's worker process), where the kubeconfig is looked for.
version_added: "1.3.0"
author: Tapio NATS migration toolkit
options:
  host:
    description: The inventory host (one cluster) the variables belong to, named in the messages.
    type: str
    required: true
  namespace:
    description: C(tapio_namespace), a DNS-1123 label (required).
    type: raw
  kubeconfig:
    description: C(tapio_kubeconfig); when set, it must exist on the control node.
    type: raw
  kube_context:
    description: C(tapio_kube_context).
    type: raw
  pipeline:
    description: C(tapio_pipeline), C({name, container}) (required); C(name) a DNS-1123 label.
    type: raw
  collectors:
    description:
      - C(tapio_collectors), a non-empty list of C({name, container, subject_prefix}) (required);
        names unique DNS-1123 labels, subject prefixes NATS subject tokens without wildcards.
    type: raw
  nats_reach:
    description: C(tapio_nats_reach), C(direct) (the default) or C(kubernetes).
    type: raw
  nats_servers:
    description:
      - C(tapio_nats_servers), C(nats://) or C(tls://) URLs without credentials; required with
        direct reach.
    type: raw
  nats_url:
    description: C(tapio_nats_url), the URL the pods use; it must not carry credentials.
    type: raw
  nats_kube_port_forward:
    description: C(tapio_nats_kube_port_forward); refused with O(nats_reach=kubernetes).
    type: raw
  nats_kube_selector:
    description: C(tapio_nats_kube_selector); not together with O(nats_kube_service).
    type: raw
  nats_kube_service:
    description: C(tapio_nats_kube_service).
    type: raw
  nats_kube_client_port:
    description: C(tapio_nats_kube_client_port), a TCP port (default 4222).
    type: raw
  nats_kube_monitor_port:
    description: C(tapio_nats_kube_monitor_port), a TCP port (default 8222).
    type: raw
  nats_install:
    description: C(tapio_nats_install) (default true).
    type: raw
  nats_cluster_method:
    description:
      - C(nats_cluster_method) (default C(statefulset)); the C(operator) method installed by this run
        needs O(nats_kube_selector) or O(nats_kube_service) with O(nats_reach=kubernetes).
    type: raw
  nats_component_users:
    description: C(tapio_nats_component_users) (default true).
    type: raw
  nats_cluster_tls_enabled:
    description: C(nats_cluster_tls_enabled) (default true), client TLS of the NATS this run installs.
    type: raw
  nats_cluster_tls_allow_non_tls:
    description: C(nats_cluster_tls_allow_non_tls) (default false); true also accepts clients in clear.
    type: raw
  nats_cluster_route_tls_enabled:
    description: C(nats_cluster_route_tls_enabled) (default true), TLS between the NATS servers.
    type: raw
  nats_security_opt_outs:
    description:
      - C(tapio_nats_security_opt_outs), the protections this cluster runs without, by name
        (C(shared_user), C(plaintext_clients), C(plaintext_routes)). A weaker setting of
        O(nats_component_users), the TLS options, O(nats_cluster_method) or, for NATS from outside,
        O(nats_url) that is not listed here is refused; an unknown name too.
    type: raw
  nats_route_password:
    description:
      - C(tapio_nats_route_password); only letters, digits and C(. _ ~ -) (it is part of the
        route URLs). A secret, never shown.
    type: raw
  nats_passwords_with_control_characters:
    description:
      - The inventory names of the passwords (C(tapio_nats_password),
        C(tapio_nats_component_passwords[<workload>])) that hold a control character, which are
        refused; the boilerplate computes them with the C(tapio_passwords_with_control_characters)
        filter, so no password reaches the module.
    type: raw
  consume_subjects:
    description:
      - C(tapio_consume_subjects) (default C(tapio.events.>)), the events stream's subjects; every
        collector's C(<subject_prefix>.>) must be inside it, outside NATS's reserved C(_INBOX) and
        C(_R_), and apart from every other collector's.
    type: raw
  collectors_order:
    description: C(tapio_collectors_order); collectors of O(collectors), each at most once.
    type: raw
  collectors_batch_size:
    description: C(tapio_collectors_batch_size); a whole number of at least 1.
    type: raw
  lock_duration:
    description: C(tapio_lock_duration), seconds; at least 30.
    type: raw
  nats_extra_consumers:
    description:
      - C(tapio_nats_extra_consumers), the declared extra consumers of the events stream; each entry's
        fields, its filter subjects inside O(consume_subjects), unique names that are not
        O(pipeline_consumer) nor another NATS user's (module_utils/tapio_extra_consumers.py).
    type: raw
  pipeline_consumer:
    description: C(tapio_pipeline_consumer) (default C(tapio-pipeline)), a name no extra consumer may take.
    type: raw
  nats_user:
    description: C(tapio_nats_user) (default C(tapio)), the toolkit's NATS user, a name no extra consumer may take.
    type: raw
notes:
  - Supports check mode (it only reads, and runs the same).
  - On failure, C(msg) holds every problem found, each a complete message, one a line.
  - The user and password or token written into a NATS URL are hidden in everything the module
    returns.
  - The protections and their opt-outs are module_utils/tapio_nats_install_rules.py's
    C(OPT_OUTS); docs/nats-install.md explains each.
"""

EXAMPLES = r"""
- name: Check versions and the inventory
  ansible.legacy.tapio_inputs:
    host: "{{ inventory_hostname }}"
    namespace: "{{ tapio_namespace | default(omit) }}"
    pipeline: "{{ tapio_pipeline | default(omit) }}"
    collectors: "{{ tapio_collectors | default(omit) }}"
    nats_servers: "{{ tapio_nats_servers | default(omit) }}"
    kubeconfig: "{{ tapio_kubeconfig | default(omit) }}"
  check_mode: false
  delegate_to: localhost
"""

RETURN = r"""
ansible_version:
  description: The ansible-core version that runs the play.
  returned: always
  type: str
  sample: 2.19.4
security_opt_outs:
  description: The opt-outs in effect (listed in O(nats_security_opt_outs) and weaker than the default), each with why it matters.
  returned: success
  type: list
  elements: dict
  sample: [{name: plaintext_routes, why: "the routes between the NATS servers are not encrypted ..."}]
"""

from typing import Any

from ansible.module_utils.ansible_release import __version__ as ANSIBLE_VERSION
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tapio_inputs import missing_libraries, problems_of, url_credentials
from ansible.module_utils.tapio_nats_install_rules import security_opt_outs

# Each option is the inventory variable of the same name, prefixed.
VARIABLES: dict[str, str] = {
    option: option if option.startswith("nats_cluster_") else f"tapio_{option}" for option in (
        "namespace", "kubeconfig", "kube_context", "pipeline", "collectors", "nats_reach", "nats_servers", "nats_url",
        "nats_kube_port_forward", "nats_kube_selector", "nats_kube_service", "nats_kube_client_port",
        "nats_kube_monitor_port", "nats_install", "nats_cluster_method", "nats_component_users", "nats_route_password",
        "consume_subjects", "nats_passwords_with_control_characters", "collectors_order", "collectors_batch_size",
        "lock_duration", "nats_cluster_tls_enabled", "nats_cluster_tls_allow_non_tls", "nats_cluster_route_tls_enabled",
        "nats_security_opt_outs", "nats_extra_consumers", "pipeline_consumer", "nats_user")
}
ARGUMENT_SPEC: dict[str, Any] = {
    "host": {"type": "str", "required": True},
    **{option: {"type": "raw"} for option in VARIABLES},
}
ARGUMENT_SPEC["nats_route_password"]["no_log"] = True


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    inputs = {variable: params[option] for option, variable in VARIABLES.items() if params[option] is not None}
    module.no_log_values.update(secret for secret in url_credentials(inputs) if secret)
    missing = missing_libraries()
    problems = problems_of(inputs, params["host"], ANSIBLE_VERSION, missing)
    if problems:  # every problem, one message each, one a line
        failure: dict[str, Any] = {"ansible_version": ANSIBLE_VERSION}
        if missing:
            failure["exception"] = "\n".join(error for _requirement, error in missing)
        module.fail_json(msg="\n".join(problems), **failure)
    module.exit_json(changed=False, ansible_version=ANSIBLE_VERSION, security_opt_outs=security_opt_outs(inputs))


if __name__ == "__main__":
    main()
