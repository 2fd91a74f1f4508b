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
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
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
        result.update(changed=False, roles=checked)
        if errors:
            result.update(failed=True, argument_errors=errors,
                          msg="Invalid role inputs, nothing was changed:\n" + "\n".join(errors))
        else:
            result["msg"] = f"inputs of {len(checked)} role entry point(s) are valid"
        return result
