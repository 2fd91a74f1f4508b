# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Validate every role's inputs against its meta/argument_specs.yml in one task, before the run
changes anything.

Ansible validates a role's arguments when the role starts: in migrate.yml that is after the
phases before it have changed the cluster, and it is one more task per role (nine in a run).
The entry playbooks call this plugin first and import their roles with
``rolespec_validate: false``; a role used on its own still validates itself.

The algorithm is ``ansible.builtin.validate_argument_spec``'s: each option the spec names is
taken from the task's variables (the play's, and the imported roles' defaults and vars, which
an import exposes to the play), templated and checked with ArgumentSpecValidator. Every error of
every role is reported together, prefixed with the role and entry point.

Then the rules no single role can check, between the NATS install and the streams on it
(``cross_role_problems``): a stream's replicas above the servers this run installs, and
streams' max_bytes above the JetStream file store those servers have.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
action: tapio_role_inputs
short_description: Validate the inputs of several roles at once, before any change
description:
  - For each entry of O(roles) (C(role) or C(role:entry_point)), reads the entry point's options
    from C(roles/<role>/meta/argument_specs.yml), takes their values from the play's variables
    and validates them the way a role's own argument validation does.
  - Fails listing every problem of every role; changes nothing.
options:
  roles:
    description: The roles (and entry points, default C(main)) whose inputs to validate.
    type: list
    elements: str
    required: true
"""

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
PROJECT = Path(__file__).resolve().parents[2]
# Read by cross_role_problems, when the play has them.
CROSS_ROLE_VARIABLES = ("tapio_nats_install", "nats_cluster_replicas", "nats_cluster_storage_size",
                        "nats_cluster_file_store_percent", "nats_streams_managed_streams")


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


# The project's own unit rules, so a size means here what it means to the role and the module:
# a stream's max_bytes as nats_stream reads it (1024-based), a claim as nats_cluster reads it.
_SIZES = _load("tapio_role_inputs_sizes", PROJECT / "module_utils" / "tapio_nats_config.py")
_QUANTITIES = _load("tapio_role_inputs_quantities", PROJECT / "plugins" / "filter" / "tapio_quantity.py")


def cross_role_problems(values: dict[str, Any]) -> list[str]:
    """Streams the NATS cluster this run installs cannot hold: replicas above its servers,
    max_bytes above a server's file store, or all of them (each replica counted) above the
    cluster's. Nothing is checked when the run does not install NATS (the server judges)."""
    if not boolean(values.get("tapio_nats_install", True), strict=False):
        return []
    streams = [s for s in values.get("nats_streams_managed_streams") or []
               if isinstance(s, dict) and s.get("state", "present") != "absent"]
    try:
        servers = int(values.get("nats_cluster_replicas", 0))
        store = _QUANTITIES.k8s_quantity_bytes(values.get("nats_cluster_storage_size", ""),
                                               values.get("nats_cluster_file_store_percent", 90))
    except (TypeError, ValueError, AnsibleError):
        return []  # the roles' own argument specs and validation name a wrong value
    problems, reserved = [], 0
    for stream in streams:
        name, replicas = stream.get("name", "?"), int(stream.get("replicas") or 1)
        if servers and replicas > servers:
            problems.append(f"stream {name}: replicas {replicas} is more than the {servers} NATS servers this run "
                            "installs (nats_cluster_replicas)")
        try:
            size = int(_SIZES.parse_size(stream.get("max_bytes", -1), "max_bytes"))
        except ValueError:
            continue  # the module names a bad size
        if size > 0 and stream.get("storage", "file") == "file":
            reserved += size * min(replicas, servers or replicas)
            if store and size > store:
                problems.append(f"stream {name}: max_bytes {stream.get('max_bytes')} is more than a NATS server's "
                                f"file store ({store} bytes: nats_cluster_storage_size "
                                f"{values.get('nats_cluster_storage_size')} x nats_cluster_file_store_percent)")
    if store and servers and reserved > store * servers:
        problems.append(f"the streams' max_bytes, each counted once per replica ({reserved} bytes), are more than "
                        f"the {servers} NATS servers' file stores together ({store * servers} bytes): raise "
                        "nats_cluster_storage_size or lower max_bytes")
    return problems


def entry_point_options(role_dir: Path, entry_point: str) -> dict[str, Any]:
    """The options of one entry point of a role's meta/argument_specs.yml ({} when it has none)."""
    spec_file = role_dir / "meta" / "argument_specs.yml"
    if not spec_file.is_file():
        return {}
    # libyaml's loader when PyYAML has it: the eight specs parse in 10 ms instead of 90 ms.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    specs = (yaml.load(spec_file.read_text(encoding="utf-8"), Loader=loader) or {}).get("argument_specs") or {}  # noqa: S506
    return (specs.get(entry_point) or {}).get("options") or {}


def role_errors(label: str, options: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """ArgumentSpecValidator's messages for one role entry point, each prefixed with *label*."""
    result = ArgumentSpecValidator(options).validate(values, validate_role_argument_spec=True)
    return [f"{label}: {message}" for message in result.error_messages]


def parse_role(entry: str) -> tuple[str, str]:
    role, _, entry_point = entry.partition(":")
    return role, entry_point or "main"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        roles = self._task.args.get("roles")
        if not isinstance(roles, list) or not roles:
            raise AnsibleError("tapio_role_inputs needs roles: a list of role names (role or role:entry_point)")
        errors: list[str] = []
        checked: list[str] = []
        for entry in roles:
            role, entry_point = parse_role(str(entry))
            if not (ROLES_DIR / role).is_dir():
                raise AnsibleError(f"tapio_role_inputs: no role {role} in {ROLES_DIR}")
            options = entry_point_options(ROLES_DIR / role, entry_point)
            values = self._templar.template({name: task_vars[name] for name in options if name in task_vars})
            errors.extend(role_errors(f"role {role} ({entry_point})", options, values))
            checked.append(f"{role}:{entry_point}")
        if not errors:  # with a wrong type the values below mean nothing
            errors.extend(cross_role_problems(self._templar.template(
                {name: task_vars[name] for name in CROSS_ROLE_VARIABLES if name in task_vars})))
        result.update(changed=False, roles=checked)
        if errors:
            result.update(failed=True, argument_errors=errors,
                          msg="Invalid role inputs, nothing was changed:\n" + "\n".join(errors))
        else:
            result["msg"] = f"inputs of {len(checked)} role entry point(s) are valid"
        return result
