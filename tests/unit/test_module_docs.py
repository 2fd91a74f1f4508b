"""Every module's documentation renders with ansible-doc and matches its argument spec."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, VENV_BIN
from module_utils_loader import load_module_utils

sys.path.insert(0, str(REPO_ROOT))
from module_utils.tapio_nats import nats_connection_argument_spec  # noqa: E402

NATS_MODULES = ["nats_stream", "nats_consumer", "nats_jetstream", "nats_kv", "nats_object_store", "nats_info",
                "nats_probe"]
# The JetStream modules' own options (besides the shared connection): where each spec lives.
OWN_SPECS = {"nats_stream": ("module_utils/tapio_jetstream.py", "STREAM_ARGUMENT_SPEC"),
             "nats_consumer": ("module_utils/tapio_jetstream.py", "CONSUMER_ARGUMENT_SPEC"),
             "nats_jetstream": ("library/nats_jetstream.py", "ARGUMENT_SPEC"),
             "nats_kv": ("library/nats_kv.py", "ARGUMENT_SPEC"),
             "nats_object_store": ("library/nats_object_store.py", "ARGUMENT_SPEC")}
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


def own_spec(module: str) -> dict:
    from module_utils_loader import load_file

    for name in ("tapio_nats_config", "tapio_jetstream_fields", "tapio_nats", "tapio_jetstream",
                 "tapio_jetstream_buckets", "tapio_jetstream_drift"):
        load_module_utils(name)
    path, attribute = OWN_SPECS[module]
    return getattr(load_file(f"docs_test_{module}", REPO_ROOT / path), attribute)


def documented_like(spec: dict, options: dict, where: str) -> list[str]:
    """Where the documentation and the spec disagree: names, types, elements, choices,
    defaults, required, and the same for every sub-option."""
    problems = []
    if set(spec) != set(options):
        problems.append(f"{where}: in the spec only {sorted(set(spec) - set(options))}, "
                        f"documented only {sorted(set(options) - set(spec))}")
    for name in set(spec) & set(options):
        want, doc = spec[name], options[name]
        for key, default in (("type", "str"), ("elements", None), ("choices", None), ("default", None),
                             ("required", False)):
            if want.get(key, default) != doc.get(key, default):
                problems.append(f"{where}{name}.{key}: spec {want.get(key, default)!r}, "
                                f"documented {doc.get(key, default)!r}")
        if want.get("options") or doc.get("suboptions"):
            problems += documented_like(want.get("options") or {}, doc.get("suboptions") or {}, f"{where}{name}.")
    return problems


@pytest.mark.parametrize("module", sorted(OWN_SPECS))
def test_every_option_is_documented_as_the_spec_declares_it(module: str) -> None:
    options = ansible_doc(module)["doc"]["options"]
    connection = set(nats_connection_argument_spec())
    documented = {k: v for k, v in options.items() if k not in connection}
    assert documented_like(own_spec(module), documented, "") == []
