# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The nats_cluster role's refusals (roles/nats_cluster/tasks/validate.yml): every rule a NATS
installation request breaks, from module_utils/tapio_nats_install_rules.py, whose shared rules
the boilerplate's input check (module_utils/tapio_inputs.py) calls too.

A filter, so the role refuses in one assert with no module round trip, also when used without
the boilerplate. The rules are loaded by their path: on the control node the project's
module_utils are not importable as ``ansible.module_utils.*``.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

RULES_PATH = Path(__file__).resolve().parents[2] / "module_utils" / "tapio_nats_install_rules.py"
RULES_MODULE = "tapio_filter_nats_install_rules"


def _load_rules() -> ModuleType:
    if RULES_MODULE in sys.modules:
        return sys.modules[RULES_MODULE]
    spec = importlib.util.spec_from_file_location(RULES_MODULE, RULES_PATH)
    assert spec is not None and spec.loader is not None, RULES_PATH
    rules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rules)
    sys.modules[RULES_MODULE] = rules
    return rules


def nats_install_refusals(settings: dict[str, Any]) -> list[str]:
    """*settings*: the nats_cluster_* variables the rules read, by name, and tapio_nats_reach."""
    return _load_rules().refusals(settings)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"tapio_nats_install_refusals": nats_install_refusals}
