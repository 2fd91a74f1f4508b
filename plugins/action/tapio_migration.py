# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Run this project's modules (library/) inside Ansible's worker process on the control node.

Every module of this toolkit talks to the Kubernetes API and to NATS from the control node,
so nothing has to be copied to a target. Run the usual way, each call is a new Python process
that imports the kubernetes client and nats-py again (1-3 s per task on two busy cores, most of
a no-op re-run). Here the linear strategy loads this plugin in the controller before it forks
the task's worker (``action_loader.get(..., class_only=True)``), so the imports below happen
once per ``ansible-playbook`` and every worker inherits them.

The module itself is unchanged: its ``main()`` runs in the worker with the arguments Ansible
would have sent (``_ansible_check_mode``, ``_ansible_diff``, ``_ansible_no_log``, ...), and
its JSON result is parsed the way ``_execute_module`` parses a module's output. Argument
validation, no_log masking, check mode, diff and warnings are the module's own.

This file is the action plugin of ``tapio_migration``; the other modules' action plugins are
symbolic links to it (the module to run is the task's action name). It also gives the modules
that reach NATS or Kubernetes their connection, from the tapio role's variables
(``CONNECTION_DEFAULTS``), so no playbook repeats it.
"""
from __future__ import annotations

import contextlib
import gc
import importlib.util
import io
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ansible.errors import AnsibleError
from ansible.module_utils import _internal as module_utils_internal
from ansible.module_utils import basic
from ansible.module_utils.common import warnings as module_warnings
from ansible.module_utils.common.json import Direction, get_module_decoder, get_module_encoder
from ansible.plugins.action import ActionBase
from ansible.plugins.loader import filter_loader, lookup_loader, test_loader
from ansible.vars.clean import remove_internal_keys

REPO_ROOT = Path(__file__).resolve().parents[2]
LIBRARY_DIR = REPO_ROOT / "library"
MODULE_UTILS_DIR = REPO_ROOT / "module_utils"
# The project's module_utils, in dependency order, imported as ansible.module_utils.<name>
# exactly as a module process would see them.
PROJECT_MODULE_UTILS = (
    "tapio_wait", "tapio_http", "tapio_nats_config", "tapio_nats", "tapio_nats_probe", "tapio_nats_health",
    "tapio_kube", "tapio_nats_install_rules", "tapio_extra_consumers", "tapio_inputs", "tapio_kube_forward",
    "tapio_nats_session",
    "tapio_private", "tapio_workload", "tapio_stream_health", "tapio_health_findings", "tapio_lease",
    "tapio_lease_state", "tapio_lease_renewer", "tapio_engine_inputs", "tapio_engine_run", "tapio_owned",
    "tapio_record_digests", "tapio_records", "tapio_rollout", "tapio_gates", "tapio_collectors", "tapio_preflight",
    "tapio_probe_job", "tapio_nats_reload",
    "tapio_lab_ledger", "tapio_engine", "tapio_timeline", "tapio_apply", "tapio_jetstream_fields",
    "tapio_jetstream", "tapio_jetstream_buckets", "tapio_jetstream_drift", "tapio_replay_window",
)
# The connections the tapio role resolves (roles/tapio/vars/main/), given to these modules as
# their defaults in every play that lists the role: the one place every playbook's NATS and
# Kubernetes connection comes from, instead of a module_defaults block per playbook. Later
# variables win over earlier ones; the task's own arguments (module_defaults too) win over all.
NATS_CONNECTION = ("tapio_nats_connection",)
KUBE_CONNECTION = ("tapio_kube_connection",)
CONNECTION_DEFAULTS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("nats_stream", "nats_consumer", "nats_jetstream", "nats_info", "nats_probe", "nats_server_reload",
                     "tapio_health"), NATS_CONNECTION),
    "tapio_migration": NATS_CONNECTION + KUBE_CONNECTION + ("tapio_engine_defaults",),
    **dict.fromkeys(("tapio_apply", "tapio_credentials_rollout"), KUBE_CONNECTION),
}
# Present in sys.modules once _freeze_before_forks has registered its fork hook.
FORK_HOOK_MARK = "tapio_in_process_library.freeze_before_forks"
# "<controller pid>:<fd>", a copy of ansible-playbook's stderr for the lock's renewer (the same
# name as CONTROLLER_STDERR_ENV in module_utils/tapio_lease_renewer.py).
CONTROLLER_STDERR_ENV = "TAPIO_CONTROLLER_STDERR"
# Loaded only for the module that needs them: tapio_tls imports cryptography's x509 (50 ms),
# which no migrate or rollback task uses.
MODULE_UTILS_OF_ONE_MODULE = {"tapio_tls_certificates": ("tapio_tls",)}


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AnsibleError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _preload() -> None:
    """Import the project's module_utils (and with them kubernetes and nats-py) once, in the
    controller, before any worker forks. A missing library is not an error here: the module
    reports it with its own message when it runs."""
    _load_module_utils(PROJECT_MODULE_UTILS)
    # Ansible loads Jinja test, filter and lookup plugins and the module JSON profiles on first
    # use, and what a worker loads dies with it. Loaded here, before the forks, a `when: x is
    # version(...)`, a template lookup or this plugin's own module call does not import them
    # again in each task's worker (a re-run of migrate.yml: 62 imports in workers, was 211).
    # Only under ansible-playbook or ansible: imported elsewhere (a unit test), the plugin
    # loader has no collection finder and each get() would print a warning.
    if "ansible_collections" not in sys.modules:
        return
    with contextlib.suppress(Exception):
        test_loader.get("ansible.builtin.version")
        filter_loader.get("ansible.builtin.combine")
        lookup_loader.get("ansible.builtin.template")
        lookup_loader.get("ansible.builtin.env")
        get_module_encoder("legacy", Direction.CONTROLLER_TO_MODULE)
        get_module_decoder("legacy", Direction.MODULE_TO_CONTROLLER)
    _share_controller_stderr()
    _freeze_before_forks()


def _share_controller_stderr() -> None:
    """A copy of ansible-playbook's stderr that its workers inherit (they are forks; each
    worker's own stdio is /dev/null). The lock phase hands it to the renewer process it starts
    (module_utils/tapio_lease_renewer.py), so that a run stopped because its Lease was lost
    says why where the user reads the run. Tagged with this process's pid: an ansible-playbook
    started from a task inherits the variable, not the descriptor."""
    if os.environ.get(CONTROLLER_STDERR_ENV, "").startswith(f"{os.getpid()}:"):
        return
    with contextlib.suppress(OSError):
        os.environ[CONTROLLER_STDERR_ENV] = f"{os.getpid()}:{os.dup(2)}"


def _freeze_before_forks() -> None:
    """Before each fork of a task's worker, move every object the controller holds into the
    garbage collector's permanent generation (``gc.freeze()``, as Python's gc documentation
    advises for a fork without exec): a collection in the worker then does not walk the
    controller's objects, and so does not copy their memory pages, now large with kubernetes
    and nats-py loaded. A re-run of migrate.yml on the lab: 19 % less CPU. Registered once per
    process (every symbolic link to this file is imported as a plugin of its own)."""
    if FORK_HOOK_MARK in sys.modules:
        return
    sys.modules[FORK_HOOK_MARK] = ModuleType(FORK_HOOK_MARK)
    gc.freeze()
    os.register_at_fork(before=gc.freeze)


def _load_module_utils(names: tuple[str, ...]) -> None:
    for util in names:
        path = MODULE_UTILS_DIR / f"{util}.py"
        if path.exists():
            with contextlib.suppress(Exception):
                _load(f"ansible.module_utils.{util}", path)


_preload()


def run_module_in_process(module: ModuleType, payload: bytes) -> str:
    """Run ``module.main()`` with ``payload`` as its ANSIBLE_MODULE_ARGS; return its stdout."""
    # A module process is never the controller: with is_controller set, AnsibleModule.warn()
    # would print instead of returning the warning with the result.
    was_controller = module_utils_internal.is_controller
    module_utils_internal.is_controller = False
    module_warnings._global_warnings.clear()  # pylint: disable=protected-access
    module_warnings._global_deprecations.clear()  # pylint: disable=protected-access
    basic._ANSIBLE_ARGS = payload  # pylint: disable=protected-access
    basic._ANSIBLE_PROFILE = "legacy"  # pylint: disable=protected-access
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            module.main()
    except SystemExit:
        pass
    finally:
        basic._ANSIBLE_ARGS = None  # pylint: disable=protected-access
        module_utils_internal.is_controller = was_controller
    return out.getvalue()


class ActionModule(ActionBase):
    """Runs library/<action>.py in this worker process (see the module docstring)."""

    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        del tmp  # unused, as in every action plugin since 2.x
        task_vars = task_vars or {}
        result = super().run(task_vars=task_vars)
        name = self._task.action.rsplit(".", 1)[-1]
        path = LIBRARY_DIR / f"{name}.py"
        if not path.exists():
            raise AnsibleError(f"no module {name} in {LIBRARY_DIR}")
        _load_module_utils(MODULE_UTILS_OF_ONE_MODULE.get(name, ()))
        module = _load(f"tapio_in_process_library.{name}", path)

        module_args = {**self._connection_defaults(name, task_vars), **self._task.args}
        self._update_module_args(name, module_args, task_vars)
        encoder = get_module_encoder("legacy", Direction.CONTROLLER_TO_MODULE)
        payload = json.dumps({"ANSIBLE_MODULE_ARGS": module_args}, cls=encoder).encode()
        output = run_module_in_process(module, payload)
        data = self._parse_returned_data({"stdout": output, "stderr": "", "rc": 0}, "legacy")
        remove_internal_keys(data)
        result.update(data)
        return result

    def _connection_defaults(self, name: str, task_vars: dict[str, Any]) -> dict[str, Any]:
        """The module's connection from the tapio role's variables (CONNECTION_DEFAULTS), where
        the play defines them; {} elsewhere (the lab's playbooks, the tests' own plays)."""
        defaults: dict[str, Any] = {}
        for variable in CONNECTION_DEFAULTS.get(name, ()):
            if variable in task_vars:
                defaults.update(self._templar.resolve_variable_expression(variable) or {})
        return defaults
