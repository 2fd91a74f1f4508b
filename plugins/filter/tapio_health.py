# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The health check's workload facts (roles/nats_health): kubernetes.core.k8s_info's answers
reduced to what ansible.legacy.tapio_health judges.

The objects k8s_info returns carry every container's env, literal values included, which may
be secrets (docs/migration.md: values are never shown). The role reads them with ``no_log``
and passes on only these facts: names, the output-mode value, the rollout counters, and the
NATS container's memory limit. ``tapio_health_line`` is a finding as a line of the printed
summary. Pure functions, tested in tests/unit/test_health_filter.py.
"""
from __future__ import annotations

import re
from typing import Any, Optional

# Kubernetes quantity suffixes (resource.Quantity): binary, decimal and milli.
SUFFIXES: dict[str, float] = {"": 1, "m": 0.001, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
                              "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(?:[eE]([0-9]+))?(m|k|K|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
# Where each kind keeps its counters: fact -> status field (desired of a Deployment or a
# StatefulSet is spec.replicas).
STATUS_FIELDS = {
    "DaemonSet": {"desired": "desiredNumberScheduled", "current": "currentNumberScheduled",
                  "updated": "updatedNumberScheduled", "ready": "numberReady", "available": "numberAvailable",
                  "unavailable": "numberUnavailable"},
    "Deployment": {"current": "replicas", "updated": "updatedReplicas", "ready": "readyReplicas",
                   "available": "availableReplicas", "unavailable": "unavailableReplicas"},
    "StatefulSet": {"current": "replicas", "updated": "updatedReplicas", "ready": "readyReplicas",
                    "available": "availableReplicas"},
}
VALUE_FROM = "<valueFrom>"


def quantity_bytes(value: Any) -> int:
    """A Kubernetes quantity (``1Gi``, ``512M``, ``1.5Gi``, ``1e9``) as whole bytes; 0 when unset
    or unreadable (the limit is then unknown, not zero)."""
    match = QUANTITY.match(str(value or "").strip())
    if not match:
        return 0
    number, exponent, suffix = match.groups()
    return int(float(number) * (10 ** int(exponent) if exponent else 1) * SUFFIXES[suffix or ""])


def container_of(workload: dict[str, Any], name: Optional[str]) -> dict[str, Any]:
    containers = ((((workload.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [])
    return next((c for c in containers if c.get("name") == name), {})


def output_mode(container: dict[str, Any], mode_env: str) -> Optional[str]:
    """The output-mode env value; ``<valueFrom>`` for a reference; None when the variable is absent."""
    for entry in container.get("env") or []:
        if entry.get("name") == mode_env:
            return str(entry["value"]) if entry.get("value") is not None else (
                VALUE_FROM if entry.get("valueFrom") else "")
    return None


def workload_fact(result: dict[str, Any], mode_env: str) -> dict[str, Any]:
    """One k8s_info loop result (``item``: kind, name, namespace, container, owned) as the facts
    the module's ``workloads`` option takes."""
    item = result.get("item") or {}
    fact: dict[str, Any] = {"kind": item.get("kind"), "name": item.get("name"), "namespace": item.get("namespace"),
                            "container": item.get("container"), "owned": bool(item.get("owned"))}
    if "resources" not in result:
        error = re.sub(r"^(Task failed: )?(Module failed: )?", "", str(result.get("msg") or ""))
        fact.update(found=False, error=error or "no answer from the Kubernetes API")
        return fact
    if not result["resources"]:
        fact["found"] = False
        return fact
    workload = result["resources"][0]
    metadata, spec, status = workload.get("metadata") or {}, workload.get("spec") or {}, workload.get("status") or {}
    fact.update(found=True, generation=int(metadata.get("generation") or 0),
                observed_generation=int(status.get("observedGeneration") or 0))
    if item.get("kind") != "DaemonSet":
        fact["desired"] = 1 if spec.get("replicas") is None else int(spec["replicas"])  # the API's default
    for key, field in STATUS_FIELDS.get(str(item.get("kind")), {}).items():
        fact[key] = int(status.get(field) or 0)
    if item.get("kind") == "StatefulSet":
        fact.update(current_revision=str(status.get("currentRevision") or ""),
                    update_revision=str(status.get("updateRevision") or ""))
    if item.get("owned"):
        fact["output_mode"] = output_mode(container_of(workload, item.get("container")), mode_env)
    return fact


def tapio_health_workloads(results: list[dict[str, Any]], mode_env: str) -> list[dict[str, Any]]:
    """``nats_health_read.results | tapio_health_workloads('TAPIO_OUTPUT_MODE')``."""
    return [workload_fact(result, mode_env) for result in results or []]


def tapio_health_memory_limit(results: list[dict[str, Any]], name: str, container: str = "nats") -> int:
    """The memory limit in bytes of *container* in the StatefulSet *name* among the k8s_info
    results (0 when it is not there or has none)."""
    for result in results or []:
        item = result.get("item") or {}
        if item.get("kind") == "StatefulSet" and item.get("name") == name and result.get("resources"):
            limits = (container_of(result["resources"][0], container).get("resources") or {}).get("limits") or {}
            return quantity_bytes(limits.get("memory"))
    return 0


def tapio_health_line(finding: dict[str, Any]) -> str:
    """One finding as a line of the printed summary: ``[CRITICAL] consumer TAPIO_EVENTS/x: seen``."""
    severity = str(finding.get("severity")).upper()
    return f"[{severity}] {finding.get('check')} {finding.get('subject')}: {finding.get('seen')}"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"tapio_health_workloads": tapio_health_workloads,
                "tapio_health_memory_limit": tapio_health_memory_limit,
                "tapio_health_line": tapio_health_line}
