"""Which declared extra consumers are second correlation engines (roles/tapio/vars/main/
engines.yml), rendered by Ansible's own templating: every playbook that switches engines reads
these two lists, and an entry without a `replay` or `engine` key must not break them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ENGINES_VARS = Path(__file__).resolve().parents[2] / "roles" / "tapio" / "vars" / "main" / "engines.yml"
DECLARED = [
    {"name": "engine-live", "workload": {"kind": "Deployment", "name": "b", "container": "c", "engine": True}},
    {"name": "engine-replay", "replay": True,
     "workload": {"kind": "Deployment", "name": "r", "container": "c", "engine": True}},
    {"name": "engine-explicit", "replay": False,
     "workload": {"kind": "Deployment", "name": "e", "container": "c", "engine": True}},
    {"name": "siem-export", "workload": {"kind": "Deployment", "name": "siem-forwarder"}},
    {"name": "debug-tap"},
]


def rendered(name: str, declared: Any) -> list[str]:
    raw = yaml.safe_load(ENGINES_VARS.read_text())
    variables = {key: trust_as_template(value) for key, value in raw.items()}
    if declared is not None:
        variables["tapio_nats_extra_consumers"] = declared
    templar = Templar(loader=DataLoader(), variables=variables)
    return [entry["name"] for entry in templar.template(variables[name])]


def test_engines_are_the_entries_whose_workload_is_an_engine() -> None:
    assert rendered("tapio_second_engines", DECLARED) == ["engine-live", "engine-replay", "engine-explicit"]
    assert rendered("tapio_second_engines", None) == [] and rendered("tapio_second_engines", []) == []


def test_the_pipeline_phase_switches_only_the_engines_of_live_consumers() -> None:
    # A replay consumer is made by replay.yml: its engine is switched by engines.yml afterwards.
    assert rendered("tapio_second_engines_live", DECLARED) == ["engine-live", "engine-explicit"]
    assert rendered("tapio_second_engines_live", None) == []
