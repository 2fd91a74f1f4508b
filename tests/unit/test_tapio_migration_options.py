"""tapio_migration's nested options (library/tapio_migration.py): their keys are declared, so
Ansible fills in the defaults the module once merged by hand and refuses a misspelt key, and
every key a role, playbook or molecule scenario passes is one of them."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from conftest import REPO_ROOT
from module_utils_loader import load_file

migration = load_file("options_test_tapio_migration", REPO_ROOT / "library" / "tapio_migration.py")
ACTIONS = ("ansible.legacy.tapio_migration", "tapio_migration")
CALLERS = ("roles/*/tasks/*.yml", "playbooks/*.yml", "molecule/*/*.yml", "*.yml")
VARIABLES = ("roles/*/vars/**/*.yml", "roles/*/defaults/**/*.yml", "inventories/*/group_vars/**/*.yml")
# module_defaults give every engine call these variables' keys as options (playbooks/*.yml).
DEFAULTS_VARIABLES = ("tapio_engine_defaults",)
# A variable, maybe with filters: {{ tapio_collectors | default([]) }}.
REFERENCE = re.compile(r"^\{\{\s*([\w.]+)\s*(\|[^{}]*)?\}\}$")
# The project's own filters (plugins/filter/tapio_*.py) make a new value out of the variable, so
# it is not followed; their unit tests check the keys they return against the spec.
PROJECT_FILTER = re.compile(r"\|\s*tapio_")
# A dict literal's keys inside a Jinja expression: {'shared': ..., 'prefix': ...}.
LITERAL_KEY = re.compile(r"'(\w+)'\s*:")


def validated(params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    result = ArgumentSpecValidator(migration.ARGUMENT_SPEC).validate({"phase": "verify", **params})
    return result.validated_parameters, result.error_messages


def test_left_out_nested_options_get_the_defaults_the_module_merged_by_hand() -> None:
    params, errors = validated({})
    assert errors == []
    assert params["lock"] == {"name": "tapio-nats-migration", "holder": "", "duration": 900}
    assert params["state"] == {"configmap": "tapio-migration-state", "dir": ".artifacts/state", "labels": {}}
    assert params["gate"] == {"consumer_prefix": "tapio-migration-gate-", "timeout": 60, "max_pending": 1000,
                              "window": 10}
    assert params["probe"] == {"definition": None, "target": None, "timeout": 120, "fresh": False, "required": True,
                               "simulated_node_annotation": ""}
    assert params["ca_secret"] == {"name": None, "key": "ca.crt"}
    assert params["pipeline"] == {"name": "tapio-pipeline", "container": "pipeline", "credentials": ""}


def test_given_keys_are_kept_converted_and_the_others_defaulted() -> None:
    params, errors = validated({"gate": {"max_pending": "5", "timeout": "30"}, "lock": {"duration": "10"}})
    assert errors == []
    assert params["gate"] == {"consumer_prefix": "tapio-migration-gate-", "timeout": 30.0, "max_pending": 5,
                              "window": 10}
    assert params["lock"]["duration"] == 10


@pytest.mark.parametrize("option, value, misspelt", [
    ("gate", {"max_pendng": 5}, "max_pendng"),
    ("lock", {"holdr": "me"}, "holdr"),
    ("state", {"config_map": "x"}, "config_map"),
    ("probe", {"definition": {}, "targt": "nats:4222"}, "targt"),
    ("secret", {"name": "auth", "key": ["NATS_USER"]}, "key"),
    ("collectors", [{"name": "c", "container": "c", "subject": "tapio.events.c"}], "subject"),
])
def test_a_misspelt_key_is_refused_by_name(option: str, value: Any, misspelt: str) -> None:
    _, errors = validated({option: value})
    assert any(f"{option}.{misspelt}. Supported parameters include" in error for error in errors), errors


def test_validation_leaves_the_spec_and_earlier_results_alone() -> None:
    """The action plugin runs the module in one process many times: a default filled into
    the spec itself would leak one call's values into the next."""
    spec = copy.deepcopy(migration.ARGUMENT_SPEC)
    first, _ = validated({})
    first["lock"]["holder"] = "run-1"
    second, _ = validated({})
    assert second["lock"]["holder"] == "" and first["gate"] is not second["gate"]
    assert migration.ARGUMENT_SPEC == spec


def yaml_files(patterns: tuple[str, ...]) -> Iterator[Path]:
    for pattern in patterns:
        yield from sorted(REPO_ROOT.glob(pattern))


def engine_calls(node: Any) -> Iterator[dict[str, Any]]:
    """The arguments of every tapio_migration task anywhere in a YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ACTIONS and isinstance(value, dict):
                yield value
            yield from engine_calls(value)
    elif isinstance(node, list):
        for item in node:
            yield from engine_calls(item)


def known_variables() -> dict[str, Any]:
    """Every role's vars and defaults and the inventories' group vars, by name."""
    found: dict[str, Any] = {}
    for path in yaml_files(VARIABLES):
        found.update(yaml.safe_load(path.read_text()) or {})
    return found


def resolved(value: Any, variables: dict[str, Any]) -> Any:
    """A ``{{ a.b }}`` reference replaced by the variable it names (role vars and defaults, the
    inventories' group vars); its filters are left out."""
    match = REFERENCE.match(value) if isinstance(value, str) else None
    if not match or PROJECT_FILTER.search(match.group(2) or ""):
        return value
    found: Any = variables
    for part in match.group(1).split("."):
        if not isinstance(found, dict) or part not in found:
            return value
        found = found[part]
    return resolved(found, variables)


def keys_passed(value: Any) -> set[str]:
    """The keys of a dict (of each dict of a list), or of the dict literals in a Jinja expression."""
    if isinstance(value, dict):
        return set(value)
    if isinstance(value, list):
        return set().union(*(keys_passed(item) for item in value))
    return set(LITERAL_KEY.findall(value)) if isinstance(value, str) else set()


def callers() -> list[dict[str, Any]]:
    variables = known_variables()
    calls = [call for path in yaml_files(CALLERS) for document in yaml.safe_load_all(path.read_text())
             for call in engine_calls(document)]
    calls += [variables[name] for name in DEFAULTS_VARIABLES]
    return [{option: resolved(value, variables) for option, value in call.items()} for call in calls]


def undeclared_keys(call: dict[str, Any]) -> list[str]:
    problems = []
    for option, value in call.items():
        declared = (migration.ARGUMENT_SPEC.get(option) or {}).get("options")
        if declared is not None:
            problems += [f"{option}.{key}" for key in sorted(keys_passed(value) - set(declared))]
    return problems


def test_every_key_a_caller_passes_is_declared() -> None:
    calls = callers()
    assert len(calls) >= 10, "the callers were not found"
    passed = {option for call in calls for option, value in call.items() if keys_passed(value)}
    # The search reaches the literal dicts, the role variables and the Jinja dict literals alike.
    assert {"gate", "lock", "state", "probe", "secret", "ca_secret", "nats_install", "workload_secrets",
            "pipeline", "collectors"} <= passed
    assert [problem for call in calls for problem in undeclared_keys(call)] == []


def test_an_undeclared_key_would_be_found() -> None:
    assert undeclared_keys({"gate": {"max_pending": 1, "windw": 2}, "workload_secrets": "{{ {'prefx': x} }}",
                            "env": [{"anything": 1}]}) == ["gate.windw", "workload_secrets.prefx"]
