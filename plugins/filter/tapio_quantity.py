# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Kubernetes quantities as bytes, for the sizes the nats_cluster role derives.

A filter rather than a module: the arithmetic runs where the templates are rendered (role
vars, nats.conf, check mode, the ``conf`` entry point that tests render without a cluster),
costs no task and no module round trip, and stays one function with unit tests
(tests/unit/test_quantity_filter.py).
"""
from __future__ import annotations

import re
from typing import Any

from ansible.errors import AnsibleFilterError

# The suffixes the nats_cluster role accepts (validate.yml): decimal k/K, M, G, T and binary
# Ki, Mi, Gi, Ti. Kubernetes itself knows more (m, P, E, e-notation); storage sizes never use them.
UNITS: dict[str, int] = {"": 1, "k": 1000, "K": 1000, "Ki": 1024, "M": 1000**2, "Mi": 1024**2,
                         "G": 1000**3, "Gi": 1024**3, "T": 1000**4, "Ti": 1024**4}
QUANTITY = re.compile(r"^([0-9]+)(|k|K|Ki|M|Mi|G|Gi|T|Ti)$")


def k8s_quantity_bytes(value: Any, percent: Any = 100) -> int:
    """``'10Gi' | k8s_quantity_bytes`` -> 10737418240; ``'10Gi' | k8s_quantity_bytes(90)``
    -> 90 % of it, rounded down to a whole byte."""
    match = QUANTITY.match(str(value))
    if not match:
        raise AnsibleFilterError(f"k8s_quantity_bytes: {value!r} is not a quantity such as 10Gi, 512Mi or 1G")
    try:
        share = int(percent)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"k8s_quantity_bytes: percent {percent!r} is not a whole number") from None
    return int(match.group(1)) * UNITS[match.group(2)] * share // 100


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"k8s_quantity_bytes": k8s_quantity_bytes}
