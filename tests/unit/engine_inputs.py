"""The engine's inputs for unit tests, built as library/tapio_migration.py builds them: the
given options validated against its ARGUMENT_SPEC (defaults filled in, values converted),
then EngineInputs.from_params."""
from __future__ import annotations

from typing import Any

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from conftest import REPO_ROOT
from module_utils_loader import load_file, load_module_utils

migration = load_file("engine_inputs_tapio_migration", REPO_ROOT / "library" / "tapio_migration.py")
inputs = load_module_utils("tapio_engine_inputs")


def validated_params(**options: Any) -> dict[str, Any]:
    """*options* as Ansible hands them to the module (phase verify unless given)."""
    result = ArgumentSpecValidator(migration.ARGUMENT_SPEC).validate({"phase": "verify", **options})
    assert result.error_messages == [], result.error_messages
    return result.validated_parameters


def engine_inputs(**options: Any) -> Any:
    return inputs.EngineInputs.from_params(validated_params(**options))
