"""Every module's documentation renders with ansible-doc and matches its argument spec."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, VENV_BIN

sys.path.insert(0, str(REPO_ROOT))
from module_utils.tapio_nats import nats_connection_argument_spec  # noqa: E402

NATS_MODULES = ["nats_stream", "nats_consumer", "nats_info", "nats_probe"]
ALL_MODULES = sorted(p.stem for p in (REPO_ROOT / "library").glob("*.py"))


def ansible_doc(module: str) -> dict:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg")}
    out = subprocess.run([str(VENV_BIN / "ansible-doc"), "-M", "library", "-j", module], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return json.loads(out)[module]


@pytest.mark.parametrize("module", ALL_MODULES)
def test_documentation_examples_and_return_render(module: str) -> None:
    doc = ansible_doc(module)
    assert doc["doc"]["short_description"]
    assert doc["doc"]["options"], f"{module} documents no options"
    assert doc["examples"].strip(), f"{module} has no EXAMPLES"
    assert doc["return"], f"{module} has no RETURN"
    assert "changed" not in doc["return"] or doc["return"]["changed"]["type"] == "bool"


@pytest.mark.parametrize("module", NATS_MODULES)
def test_shared_connection_options_are_documented(module: str) -> None:
    options = ansible_doc(module)["doc"]["options"]
    missing = set(nats_connection_argument_spec()) - set(options)
    assert not missing, f"{module} does not document {sorted(missing)}"
    for name, spec in nats_connection_argument_spec().items():
        assert options[name]["type"] == spec["type"], name
        description = options[name]["description"]
        text = description if isinstance(description, str) else " ".join(description)
        if spec.get("no_log"):
            assert "never shown" in text, f"{name} is a secret; its documentation must say so"
