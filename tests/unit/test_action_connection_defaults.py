"""plugins/action/tapio_migration.py gives the modules that reach NATS or Kubernetes their
connection from the tapio role's variables, where the play defines them; the task's own
arguments win, and a module outside CONNECTION_DEFAULTS gets nothing."""
from __future__ import annotations

from typing import Any

from conftest import REPO_ROOT
from module_utils_loader import load_file

plugin = load_file("tapio_test_action_plugin_connections", REPO_ROOT / "plugins" / "action" / "tapio_migration.py")


class VariablesOnly:
    """A templar that resolves a variable name from the task's variables, as Ansible's does."""

    def __init__(self, variables: dict[str, Any]) -> None:
        self.variables = variables

    def resolve_variable_expression(self, expression: str) -> Any:
        return self.variables[expression]


def defaults_for(module: str, task_vars: dict[str, Any]) -> dict[str, Any]:
    action = object.__new__(plugin.ActionModule)
    action._templar = VariablesOnly(task_vars)  # pylint: disable=protected-access
    return action._connection_defaults(module, task_vars)  # pylint: disable=protected-access


NATS = {"servers": ["nats://a:4222"], "user": "tapio", "password": "secret", "connect_timeout": 5}
KUBE = {"kubeconfig": "/k", "context": "lab"}
ENGINE = {"progress_deadline": 120, "connect_timeout": 9}
ROLE_VARS = {"tapio_nats_connection": NATS, "tapio_kube_connection": KUBE, "tapio_engine_defaults": ENGINE}


def test_each_module_gets_its_connections_and_later_variables_win() -> None:
    assert defaults_for("nats_stream", ROLE_VARS) == NATS
    assert defaults_for("nats_server_reload", ROLE_VARS) == NATS
    assert defaults_for("tapio_health", ROLE_VARS) == NATS
    assert defaults_for("tapio_apply", ROLE_VARS) == KUBE
    assert defaults_for("tapio_credentials_rollout", ROLE_VARS) == KUBE
    assert defaults_for("tapio_migration", ROLE_VARS) == {**NATS, **KUBE, **ENGINE}
    assert defaults_for("tapio_migration", ROLE_VARS)["connect_timeout"] == 9


def test_nothing_for_other_modules_or_plays_without_the_role() -> None:
    assert defaults_for("tapio_inputs", ROLE_VARS) == {}
    assert defaults_for("nats_kv", ROLE_VARS) == {}
    assert defaults_for("nats_stream", {}) == {}
    assert defaults_for("tapio_migration", {"tapio_kube_connection": KUBE}) == KUBE


def test_every_module_given_a_connection_runs_in_process() -> None:
    linked = {path.stem for path in (REPO_ROOT / "plugins" / "action").glob("*.py") if path.is_symlink()}
    assert set(plugin.CONNECTION_DEFAULTS) - {"tapio_migration"} <= linked
