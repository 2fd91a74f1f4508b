"""Every module's documentation renders with ansible-doc and matches its argument spec."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from ansible.module_utils import basic

from conftest import REPO_ROOT, VENV_BIN
from module_utils_loader import load_file

sys.path.insert(0, str(REPO_ROOT))
from module_utils.tapio_nats import nats_connection_argument_spec  # noqa: E402

NATS_MODULES = ["nats_stream", "nats_consumer", "nats_jetstream", "nats_kv", "nats_object_store", "nats_info",
                "nats_probe", "tapio_health"]
ALL_MODULES = sorted(p.stem for p in (REPO_ROOT / "library").glob("*.py"))
# What each option is compared on, with the value Ansible assumes when it is not given.
COMPARED = (("type", "str"), ("elements", None), ("choices", None), ("default", None), ("required", False),
            ("aliases", None))
# Options declared as a bare dict (or list of dicts) on purpose, (module, option path) -> why
# their keys cannot be sub-options. Any other bare dict fails: declare its keys instead, so
# Ansible refuses a misspelt one.
FREE_FORM = {
    ("nats_stream", "metadata"): "NATS metadata: any string keys, any string values",
    ("nats_consumer", "metadata"): "NATS metadata: any string keys, any string values",
    ("nats_kv", "metadata"): "NATS metadata: any string keys, any string values",
    ("nats_object_store", "metadata"): "NATS metadata: any string keys, any string values",
    ("nats_jetstream", "streams"): "each entry is checked against nats_stream's spec by the module (validated())",
    ("nats_jetstream", "consumers"): "each entry is checked against nats_consumer's spec by the module (validated())",
    ("tapio_apply", "objects"): "an entry may be the Kubernetes object itself (as_entries), keyed as the API defines",
    ("tapio_timeline", "rows"): "data in the timeline endpoint's format, validated like the rows read from url",
    ("tapio_workload_env", "workload"): "a Kubernetes object as the API returns it",
    ("tapio_workload_env", "record"): "a Kubernetes object, a previous call's record",
    ("tapio_workload_env", "env"): "Kubernetes EnvVar entries; a value given as null (remove) differs from none given",
    ("tapio_migration", "env"): "Kubernetes EnvVar entries (valueFrom is the API's); an absent key must stay absent",
    ("tapio_migration", "permissions"): "an absent namespace means the run's, '' cluster-wide; extra keys (why) ride along",
    ("tapio_migration", "pod_annotations"): "keyed by collector name",
    ("tapio_migration", "container_overrides"): "keyed by collector name; values are Kubernetes container fields",
    ("tapio_migration", "probe.definition"): "a Kubernetes Job",
    ("tapio_migration", "state.labels"): "Kubernetes labels: any keys",
}


@functools.lru_cache(maxsize=None)
def ansible_doc(module: str) -> dict:
    """ansible-doc's JSON for *module*, doc fragments merged (once per module: it is slow to start)."""
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


class SpecCaptured(Exception):
    """Raised instead of building the AnsibleModule: the spec the module asked for."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__("argument spec captured")
        self.spec = spec


def argument_spec(module: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The spec library/<module>.py hands AnsibleModule, read by running its main() up to that
    call: whatever it merges in (the NATS connection, the Kubernetes connection, the file options)."""

    def capture(self: Any, argument_spec: dict[str, Any], **kwargs: Any) -> None:
        extra = basic.FILE_COMMON_ARGUMENTS if kwargs.get("add_file_common_args") else {}
        raise SpecCaptured({**extra, **argument_spec})

    monkeypatch.setattr(basic.AnsibleModule, "__init__", capture)
    code = load_file(f"docs_test_{module}", REPO_ROOT / "library" / f"{module}.py")
    with pytest.raises(SpecCaptured) as captured:
        code.main()
    return captured.value.spec


def is_nested(spec: dict[str, Any]) -> bool:
    return spec.get("type") == "dict" or (spec.get("type") == "list" and spec.get("elements") == "dict")


def documented_like(spec: dict, options: dict, where: str) -> list[str]:
    """Where the documentation and the spec disagree: names, types, elements, choices,
    defaults, required, aliases, and the same for every sub-option."""
    problems = []
    if set(spec) != set(options):
        problems.append(f"{where}: in the spec only {sorted(set(spec) - set(options))}, "
                        f"documented only {sorted(set(options) - set(spec))}")
    for name in sorted(set(spec) & set(options)):
        want, doc = spec[name], options[name]
        for key, default in COMPARED:
            if want.get(key, default) != doc.get(key, default):
                problems.append(f"{where}{name}.{key}: spec {want.get(key, default)!r}, "
                                f"documented {doc.get(key, default)!r}")
        if want.get("options") or doc.get("suboptions"):
            problems += documented_like(want.get("options") or {}, doc.get("suboptions") or {}, f"{where}{name}.")
    return problems


def bare_dicts(spec: dict[str, Any], where: str = "") -> list[str]:
    """Paths of the options (and sub-options) that take a dict whose keys are not declared."""
    found = []
    for name, option in spec.items():
        if is_nested(option) and not option.get("options"):
            found.append(f"{where}{name}")
        found += bare_dicts(option.get("options") or {}, f"{where}{name}.")
    return found


@pytest.mark.parametrize("module", ALL_MODULES)
def test_every_option_is_documented_as_the_spec_declares_it(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert documented_like(argument_spec(module, monkeypatch), ansible_doc(module)["doc"]["options"], "") == []


def documented_at(options: dict[str, Any], path: str) -> dict[str, Any]:
    """The documentation of the option at a dotted *path* ({} when there is none)."""
    name, _, rest = path.partition(".")
    found = options.get(name) or {}
    return documented_at(found.get("suboptions") or {}, rest) if rest else found


@pytest.mark.parametrize("module", ALL_MODULES)
def test_only_free_form_options_leave_their_keys_undeclared(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    allowed = sorted(path for owner, path in FREE_FORM if owner == module)
    assert sorted(bare_dicts(argument_spec(module, monkeypatch))) == allowed
    # Free-form is said in words: the keys it takes cannot be listed as sub-options.
    options = ansible_doc(module)["doc"]["options"]
    assert [path for path in allowed if not documented_at(options, path).get("description")] == []


def test_the_comparison_finds_each_kind_of_difference() -> None:
    """The checks above pass only if they can fail: one difference of each kind, sub-options too."""
    spec = {"a": {"type": "int", "default": 1, "aliases": ["aa"]},
            "b": {"type": "dict", "options": {"c": {"choices": ["x"]}}}, "gone": {}}
    options = {"a": {"type": "str", "default": 2, "required": True}, "b": {"type": "dict", "suboptions": {"c": {}}},
               "new": {}}
    assert documented_like(spec, options, "") == [
        ": in the spec only ['gone'], documented only ['new']",
        "a.type: spec 'int', documented 'str'", "a.default: spec 1, documented 2",
        "a.required: spec False, documented True", "a.aliases: spec ['aa'], documented None",
        "b.c.choices: spec ['x'], documented None"]
    assert bare_dicts({"x": {"type": "list", "elements": "dict"}, "y": {"type": "dict", "options": {
        "z": {"type": "dict"}}}}) == ["x", "y.z"]
    assert documented_at({"y": {"suboptions": {"z": {"description": "d"}}}}, "y.z") == {"description": "d"}
