# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The migration's decisions about one workload, as pure functions on API objects.

No I/O here: the engine (tapio_engine) reads and writes through the Kubernetes API and
hands the objects to these functions, which the unit tests call directly. Covered:
the env merge and its strategic-merge patch, records (what is kept of an object, which
record is authoritative, whether a record is itself a migrated spec), restore definitions,
rollout progress, percentage and quantity maths, collector batches and the report diff.
What is shown (diffs, the report) has literal env values redacted (tapio_private); records
and patches keep them.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from typing import Any, Optional

from ansible.module_utils.tapio_private import redacted_env, redacted_object

# Server-managed metadata that a record must not carry (it would make a restore conflict).
SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp", "selfLink")
# Annotations the API server or controllers maintain; never recorded or restored.
SERVER_ANNOTATIONS = (
    "deprecated.daemonset.template.generation",
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
)

class WorkloadError(ValueError):
    """The workload cannot be changed as asked (no such container, bad env entry)."""


def containers_of(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []


def find_container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    for container in containers_of(workload):
        if container.get("name") == name:
            return container
    names = ", ".join(c.get("name", "?") for c in containers_of(workload)) or "none"
    meta = workload.get("metadata", {})
    raise WorkloadError(f"{workload.get('kind', 'workload')} {meta.get('namespace')}/{meta.get('name')} "
                        f"has no container named {name!r} (containers: {names})")


def env_value(env: list[dict[str, Any]], name: str) -> Optional[str]:
    for entry in env:
        if entry.get("name") == name:
            return entry.get("value")
    return None


def validate_entry(entry: dict[str, Any]) -> None:
    if not entry.get("name"):
        raise WorkloadError(f"env entry without a name: {redacted_env([entry])[0]!r}")
    if "value" in entry and entry.get("valueFrom") is not None:
        raise WorkloadError(f"env entry {entry['name']} sets both value and valueFrom")


def merge_env(current: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set the wanted entries by name, in place; append new ones; drop those with value None."""
    for entry in wanted:
        validate_entry(entry)
    by_name = {entry["name"]: entry for entry in wanted}
    merged: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in current:
        name = entry.get("name", "")
        if name in by_name:
            seen.add(name)
            if is_removal(by_name[name]):
                continue
            merged.append(clean_entry(by_name[name]))
        else:
            merged.append(copy.deepcopy(entry))
    for entry in wanted:
        if entry["name"] not in seen and not is_removal(entry):
            merged.append(clean_entry(entry))
    return merged


def is_removal(entry: dict[str, Any]) -> bool:
    return "value" in entry and entry["value"] is None and entry.get("valueFrom") is None


def clean_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry as the API stores it: a value is a string; no null fields."""
    cleaned: dict[str, Any] = {"name": entry["name"]}
    if entry.get("valueFrom") is not None:
        cleaned["valueFrom"] = copy.deepcopy(entry["valueFrom"])
    else:
        cleaned["value"] = str(entry.get("value", ""))
    return cleaned


def patch_entries(current: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Strategic-merge env items: set each wanted entry, null the field it replaces, delete removals."""
    live = {entry.get("name"): entry for entry in current}
    items: list[dict[str, Any]] = []
    for entry in wanted:
        name = entry["name"]
        if is_removal(entry):
            if name in live:
                items.append({"name": name, "$patch": "delete"})
            continue
        item = clean_entry(entry)
        old = live.get(name, {})
        if "valueFrom" in item and "value" in old:
            item["value"] = None
        if "value" in item and "valueFrom" in old:
            item["valueFrom"] = None
        items.append(item)
    return items


def same_env(left: list[dict[str, Any]], right: list[dict[str, Any]]) -> bool:
    """Equal as sets of entries: a strategic merge may order new entries differently."""
    def key(entry: dict[str, Any]) -> str:
        return json.dumps(entry, sort_keys=True)
    return sorted(map(key, left)) == sorted(map(key, right))


def build_patch(workload: dict[str, Any], container: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    meta = workload.get("metadata", {})
    return {
        "apiVersion": workload.get("apiVersion"),
        "kind": workload.get("kind"),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": {"template": {"spec": {"containers": [{"name": container, "env": items}]}}},
    }


def record_of(workload: dict[str, Any]) -> dict[str, Any]:
    """The object as recorded: spec, labels and own annotations; nothing the server manages."""
    record = copy.deepcopy(workload)
    record.pop("status", None)
    meta = record.setdefault("metadata", {})
    for key in SERVER_METADATA:
        meta.pop(key, None)
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in SERVER_ANNOTATIONS}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return record


def without_toolkit_fields(obj: dict[str, Any], container: str, override_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The object without what the toolkit writes when it switches a workload: the owned
    container's env and overridden fields, and the pod template's annotations (the rest it
    never touches)."""
    out = copy.deepcopy(obj)
    template = (out.get("spec") or {}).get("template") or {}
    (template.get("metadata") or {}).pop("annotations", None)
    if template.get("metadata") == {}:  # held only annotations: the same as a template without metadata
        template.pop("metadata")
    for candidate in (template.get("spec") or {}).get("containers") or []:
        if candidate.get("name") == container:
            for key in ("env", *override_keys):
                candidate.pop(key, None)
    return out


def differing_paths(left: Any, right: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, as dotted paths (list items by name when they have one)."""
    if isinstance(left, dict) and isinstance(right, dict):
        found: list[str] = []
        for key in sorted(set(left) | set(right)):
            found += differing_paths(left.get(key), right.get(key), f"{path}.{key}" if path else str(key))
        return found
    if isinstance(left, list) and isinstance(right, list) and all(
            isinstance(i, dict) and "name" in i for i in left + right):
        by_name = {i["name"]: i for i in left}, {i["name"]: i for i in right}
        if list(by_name[0]) == list(by_name[1]):
            return [p for name in by_name[0] for p in differing_paths(by_name[0][name], by_name[1][name],
                                                                      f"{path}[{name}]")]
    return [] if left == right else [path]


def restore_of(workload: dict[str, Any], record: dict[str, Any], container: Optional[str] = None,
               override_keys: tuple[str, ...] = ()) -> tuple[bool, dict[str, Any], list[str]]:
    """Whether the workload differs from its record, the replace definition, and the paths
    that changed since the record for reasons other than the toolkit's switch.

    When nothing but the toolkit's own fields (see without_toolkit_fields) changed, the
    definition is the record itself: the pod template comes back byte for byte. When anything
    else changed (an image upgraded while migrated, replicas an HPA set, a label or annotation
    of the object itself, which the toolkit never writes), only the toolkit's fields go back to
    the record and everything else keeps its live value.

    Without *container* (the report) only whether it differs is meaningful: any difference,
    the object's own labels and annotations included, counts."""
    live = record_of(workload)
    needed = any(live.get("metadata", {}).get(key) != record.get("metadata", {}).get(key)
                 for key in ("labels", "annotations")) or live.get("spec") != record.get("spec")
    drifted: list[str] = []
    if container is not None:
        def own_metadata(obj: dict[str, Any]) -> dict[str, Any]:
            return {key: (obj.get("metadata") or {}).get(key) or {} for key in ("labels", "annotations")}

        drifted = differing_paths(own_metadata(record), own_metadata(live), "metadata") + differing_paths(
            without_toolkit_fields(record, container, override_keys).get("spec"),
            without_toolkit_fields(live, container, override_keys).get("spec"), "spec")
    if drifted:
        restore = copy.deepcopy(live)
        recorded_template = (record.get("spec") or {}).get("template") or {}
        template = restore["spec"]["template"]
        annotations = (recorded_template.get("metadata") or {}).get("annotations")
        if annotations is None:
            (template.get("metadata") or {}).pop("annotations", None)
        else:
            template.setdefault("metadata", {})["annotations"] = copy.deepcopy(annotations)
        recorded, owned = find_container(record, container), find_container(restore, container)
        for key in ("env", *override_keys):
            if key in recorded:
                owned[key] = copy.deepcopy(recorded[key])
            else:
                owned.pop(key, None)
        needed = restore.get("spec") != live.get("spec")
    else:
        restore = copy.deepcopy(record)
    return needed, with_live_server_metadata(restore, workload), drifted


def with_live_server_metadata(definition: dict[str, Any], workload: dict[str, Any]) -> dict[str, Any]:
    """*definition* (changed in place) with the live object's server-managed annotations and
    resourceVersion: the API server refuses a replace without the one it holds (409), and the
    controllers' annotations are theirs."""
    meta = definition.setdefault("metadata", {})
    live_meta = workload.get("metadata", {})
    kept = {k: v for k, v in (live_meta.get("annotations") or {}).items() if k in SERVER_ANNOTATIONS}
    if kept:
        meta["annotations"] = {**(meta.get("annotations") or {}), **kept}
    if live_meta.get("resourceVersion"):
        meta["resourceVersion"] = live_meta["resourceVersion"]
    return definition


def compute(workload: dict[str, Any], container: str, env: list[dict[str, Any]], mode_env: str,
            record: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    target = find_container(workload, container)
    current = target.get("env") or []
    merged = merge_env(current, env)
    result: dict[str, Any] = {}
    if record is not None:
        result["restore_needed"], result["restore"], result["kept_since_record"] = restore_of(workload, record, container)
    return result | {
        "env": merged,
        "current_env": copy.deepcopy(current),
        "needs_change": not same_env(merged, current),
        "patch": build_patch(workload, container, patch_entries(current, env)),
        "output_mode": env_value(current, mode_env),
        "record": record_of(workload),
    }


# ------------------------------------------------------------------------------------------
# Records: one per workload, in the state ConfigMap (key) and as a local file (file name)
# ------------------------------------------------------------------------------------------
def record_key(kind: str, name: str) -> str:
    return f"{kind.lower()}.{name}.json"


def record_file(kind: str, name: str) -> str:
    return f"{kind.lower()}-{name}.json"


# Beside each record: which run made it, when, and from which live object (ConfigMap key
# provenance.<key>, local file <kind>-<name>.provenance.json). The record itself stays the
# bare spec, so a restore writes back exactly what was found.
PROVENANCE_PREFIX = "provenance."


def provenance_file(kind: str, name: str) -> str:
    return f"{kind.lower()}-{name}.provenance.json"


def provenance_of(live: dict[str, Any], run: str, recorded_at: str) -> dict[str, Any]:
    meta = live.get("metadata") or {}
    return {"recorded_by": run, "recorded_at": recorded_at, "uid": meta.get("uid"),
            "generation": meta.get("generation"), "resource_version": meta.get("resourceVersion"),
            "pod_template_hash": pod_template_hash(live)}


def provenance_line(provenance: Optional[dict[str, Any]], live: dict[str, Any]) -> str:
    """Where a record came from, and whether the live object is still the one it was taken
    from (a workload deleted and created again since, by an uninstall and install, is not)."""
    if not provenance:
        return "recorded by an earlier version of the toolkit (no provenance kept)"
    line = (f"recorded by {provenance.get('recorded_by')} at {provenance.get('recorded_at')} from generation "
            f"{provenance.get('generation')}, pod template {provenance.get('pod_template_hash')}")
    uid = (live.get("metadata") or {}).get("uid")
    if provenance.get("uid") and uid and uid != provenance["uid"]:
        line += f"; the workload was deleted and created again since (uid {provenance['uid']} -> {uid})"
    return line


def record_text(record: dict[str, Any]) -> str:
    """A record as stored: the same bytes Ansible's to_nice_json(indent=2) gives."""
    return json.dumps(record, indent=2, sort_keys=True, separators=(",", ": "), ensure_ascii=False)


def select_record(key: str, configmap_data: dict[str, str], on_disk: str, live: dict[str, Any],
                  migrated: bool) -> tuple[str, str]:
    """Which record is authoritative: the ConfigMap's, then the local file, then the live
    spec when it is not a migrated one; ('none', '') when there is none."""
    if key in configmap_data:
        return "configmap", configmap_data[key]
    if on_disk:
        return "artifact", on_disk
    if not migrated:
        return "live", record_text(record_of(live))
    return "none", ""


def output_mode_of(workload: dict[str, Any], container: str, mode_env: str) -> Optional[str]:
    """The output-mode env value of the container (None when unset or no such container)."""
    for candidate in containers_of(workload):
        if candidate.get("name") == container:
            return env_value(candidate.get("env") or [], mode_env)
    return None


def pod_template_hash(workload: dict[str, Any]) -> str:
    """A short, stable hash of the pod template (provenance of a record)."""
    template = (workload.get("spec") or {}).get("template") or {}
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------
# Switch patches (env, pod-template annotations, container overrides)
# ------------------------------------------------------------------------------------------
def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Dicts merged recursively, anything else replaced (Ansible's combine(recursive=true))."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


INBOX_PREFIX = "_INBOX_"


def inbox_prefix(workload: str) -> str:
    """A workload's own inbox prefix, the one its NATS user may subscribe to (the
    tapio_nats_users filter renders the same into nats.conf)."""
    return INBOX_PREFIX + re.sub(r"[^A-Za-z0-9_-]", "_", workload)


def workload_env(env: list[dict[str, Any]], workload: str, secrets: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    """*env* for one workload when each has its own NATS user: an entry whose secretKeyRef
    names ``secrets['shared']`` reads ``<secrets['prefix']><workload>`` instead (so a
    collector's pods get its publish-only user), and with ``secrets['inbox_env']`` that
    variable carries the workload's own inbox prefix. Other Secret references, such as a
    user's extra env, are kept; no *secrets* (or no prefix) returns *env* unchanged."""
    if not secrets or not secrets.get("prefix"):
        return env
    shared, own = secrets.get("shared"), f"{secrets['prefix']}{workload}"
    result = []
    for entry in env:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef") or {}
        if ref.get("name") == shared:
            entry = deep_merge(entry, {"valueFrom": {"secretKeyRef": {"name": own}}})
        result.append(entry)
    if secrets.get("inbox_env"):
        result = [e for e in result if e.get("name") != secrets["inbox_env"]]
        result.append({"name": secrets["inbox_env"], "value": inbox_prefix(workload)})
    return result


def switch_patch(live: dict[str, Any], container: str, env: list[dict[str, Any]],
                 annotations: Optional[dict[str, str]] = None,
                 override: Optional[dict[str, Any]] = None) -> Optional[dict[str, Any]]:
    """The strategic-merge patch that gives the container *env* (every other entry kept),
    the pod template *annotations* and the container *override*; None when it has them."""
    annotations, override = annotations or {}, override or {}
    target = find_container(live, container)
    current = target.get("env") or []
    live_annotations = ((live.get("spec") or {}).get("template", {}).get("metadata") or {}).get("annotations") or {}
    annotated = {**live_annotations, **annotations} == live_annotations
    overridden = deep_merge(target, override) == target
    if same_env(merge_env(current, env), current) and annotated and overridden:
        return None
    patch = build_patch(live, container, patch_entries(current, env))
    if annotations:
        patch["spec"]["template"]["metadata"] = {"annotations": dict(annotations)}
    if override:
        patch["spec"]["template"]["spec"]["containers"][0] = deep_merge(
            patch["spec"]["template"]["spec"]["containers"][0], override)
    return patch


def env_diff(live: dict[str, Any], container: str, env: list[dict[str, Any]]) -> dict[str, Any]:
    """--diff entry for an env change: the container's env before and after, literal values
    redacted (a changed value shows as a changed hash)."""
    current = find_container(live, container).get("env") or []
    meta = live.get("metadata") or {}
    header = f"{live.get('kind')} {meta.get('namespace')}/{meta.get('name')} container {container} env"
    return {"before": record_text(redacted_env(current)) + "\n",
            "after": record_text(redacted_env(merge_env(current, env))) + "\n",
            "before_header": header, "after_header": header}


def object_diff(before: dict[str, Any], after: dict[str, Any], header: str) -> dict[str, Any]:
    """--diff entry for a whole object (a restore), literal env values redacted."""
    return {"before": record_text(redacted_object(before)) + "\n",
            "after": record_text(redacted_object(after)) + "\n",
            "before_header": header, "after_header": header}


def collector_batches(order: list[str], batch_size: int) -> list[list[str]]:
    """The canary alone, then *batch_size* at a time."""
    if batch_size < 1:
        raise WorkloadError(f"batch size must be at least 1 (got {batch_size})")
    rest = order[1:]
    return [order[:1]] + [rest[i:i + batch_size] for i in range(0, len(rest), batch_size)] if order else []


def order_problem(order: list[str], names: list[str]) -> Optional[str]:
    unknown = [name for name in order if name not in names]
    repeated = sorted({name for name in order if order.count(name) > 1})
    if order and not unknown and not repeated:
        return None
    return (f"tapio_collectors_order {order} must name each collector of tapio_collectors ({', '.join(names)}) "
            f"at most once; unknown: {', '.join(unknown) or 'none'}; repeated: {', '.join(repeated) or 'none'}.")


# ------------------------------------------------------------------------------------------
# Rollouts: done, and the marker whose change counts as progress
# ------------------------------------------------------------------------------------------
def rollout_state(workload: Optional[dict[str, Any]]) -> tuple[bool, tuple[Any, ...], str]:
    """(complete, progress marker, summary) of a DaemonSet, Deployment or StatefulSet."""
    if not workload:
        return False, ("absent",), "not found"
    kind = workload.get("kind")
    meta, spec, status = workload.get("metadata") or {}, workload.get("spec") or {}, workload.get("status") or {}
    observed = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    if kind == "DaemonSet":
        wanted = int(status.get("desiredNumberScheduled", -1))
        updated, ready = int(status.get("updatedNumberScheduled") or 0), int(status.get("numberReady") or 0)
        unavailable = int(status.get("numberUnavailable") or 0)
        done = observed and wanted > 0 and updated == wanted and ready == wanted and unavailable == 0
        summary = f"{updated}/{wanted} updated, {ready} ready, {unavailable} unavailable"
        marker: tuple[Any, ...] = (observed, wanted, updated, ready, unavailable)
    else:
        wanted = int(spec.get("replicas", 1))
        replicas = int(status.get("replicas") or 0)
        updated, ready = int(status.get("updatedReplicas") or 0), int(status.get("readyReplicas") or 0)
        available = int(status.get("availableReplicas") or 0) if kind == "Deployment" else ready
        done = observed and replicas == wanted and updated == wanted and ready == wanted and available == wanted
        if kind == "StatefulSet":
            done = done and status.get("currentRevision") == status.get("updateRevision")
        summary = f"{updated}/{wanted} updated, {ready} ready, {available} available"
        marker = (observed, replicas, updated, ready, available, status.get("currentRevision"))
    if not observed:
        summary += " (controller has not seen the latest spec)"
    return done, marker, summary


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """An int-or-percent against *total*, as the Kubernetes controllers compute it."""
    text = str(value)
    if text.endswith("%"):
        scaled = int(text[:-1]) * total / 100
        return int(math.ceil(scaled) if round_up else math.floor(scaled))
    return int(text)


def strategy_problem(deployment: dict[str, Any]) -> str:
    """Why the pipeline Deployment's rollout could leave no ready pod, or ''."""
    name = (deployment.get("metadata") or {}).get("name")
    spec = deployment.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {}
    if replicas < 1:
        return f"Deployment {name} has 0 replicas: nothing would consume while it rolls."
    if strategy.get("type", "RollingUpdate") == "Recreate":
        return f"Deployment {name} uses strategy Recreate: no pipeline pod is ready during its rollout."
    max_unavailable = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    # maxUnavailable rounds down, as the Deployment controller does.
    if replicas - scaled_value(max_unavailable, replicas, round_up=False) < 1:
        return (f"Deployment {name} allows maxUnavailable {max_unavailable} with {replicas} replica(s): "
                "its rollout may leave no ready pipeline pod.")
    return ""


# ------------------------------------------------------------------------------------------
# Permissions (SelfSubjectAccessReview per verb and resource)
# ------------------------------------------------------------------------------------------
def needed_permissions(entries: list[dict[str, Any]], default_namespace: str = "") -> list[dict[str, str]]:
    """One {group, resource, subresource, verb, namespace, name, label} per verb (and resource
    name) of each entry, duplicates once. An entry's namespace '' is cluster-scoped; without a
    namespace key it is *default_namespace*. A resource 'pods/portforward' is a subresource."""
    needed: list[dict[str, str]] = []
    seen: set[tuple[str, ...]] = set()
    for entry in entries:
        group = entry.get("group") or ""
        resource, _, subresource = str(entry["resource"]).partition("/")
        namespace = entry["namespace"] if "namespace" in entry else default_namespace
        for verb in entry.get("verbs") or []:
            for name in entry.get("names") or [""]:
                key = (group, resource, subresource, verb, namespace or "", name)
                if key in seen:
                    continue
                seen.add(key)
                what = f"{resource}{'/' + subresource if subresource else ''}{'.' + group if group else ''}"
                where = f" {name}" if name else ""
                scope = f" in namespace {namespace}" if namespace else " (cluster-wide)"
                needed.append({"group": group, "resource": resource, "subresource": subresource, "verb": verb,
                               "namespace": namespace or "", "name": name,
                               "label": f"{verb} {what}{where}{scope}"})
    return needed


def access_review(need: dict[str, str]) -> dict[str, Any]:
    attributes = {"group": need["group"], "resource": need["resource"], "verb": need["verb"]}
    for key in ("subresource", "namespace", "name"):
        if need.get(key):
            attributes[key] = need[key]
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes}}


# ------------------------------------------------------------------------------------------
# The report: each workload against its record
# ------------------------------------------------------------------------------------------
def report_entry(kind: str, name: str, container: str, source: str, record: dict[str, Any],
                 live: dict[str, Any], mode_env: str, provenance: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """What the migration changed in one workload, from its record (before) and the live object.
    Compared on the real values, shown with literal env values redacted (the report is written
    to files and printed)."""
    after = record_of(live)
    restore_needed, _, _ = restore_of(live, record)

    def owned_env(obj: dict[str, Any]) -> list[dict[str, Any]]:
        for candidate in containers_of(obj):
            if candidate.get("name") == container:
                return candidate.get("env") or []
        return []

    def others(obj: dict[str, Any]) -> list[dict[str, Any]]:
        return [c for c in containers_of(obj) if c.get("name") != container]

    def template(obj: dict[str, Any]) -> dict[str, Any]:
        return (obj.get("spec") or {}).get("template") or {}

    before_env, after_env = owned_env(record), owned_env(after)
    before_names = {e.get("name") for e in before_env}
    after_names = {e.get("name") for e in after_env}
    return {
        "kind": kind, "name": name, "container": container,
        "output_mode": output_mode_of(live, container, mode_env), "record_source": source,
        "record_provenance": provenance or None,
        "changed_from_record": restore_needed,
        "env_added": redacted_env([e for e in after_env if e.get("name") not in before_names]),
        "env_removed": redacted_env([e for e in before_env if e.get("name") not in after_names]),
        "env_changed": redacted_env([e for e in after_env if e.get("name") in before_names and e not in before_env]),
        "template_annotations_before": (template(record).get("metadata") or {}).get("annotations") or {},
        "template_annotations_after": (template(after).get("metadata") or {}).get("annotations") or {},
        "other_containers_unchanged": others(record) == others(after),
        "volumes_unchanged": ((template(record).get("spec") or {}).get("volumes") or [])
        == ((template(after).get("spec") or {}).get("volumes") or []),
        "before": redacted_object(record), "after": redacted_object(after),
    }


# ------------------------------------------------------------------------------------------
# The lab's event ledger
# ------------------------------------------------------------------------------------------
def unschedulable_pods(pods: list[dict[str, Any]]) -> list[str]:
    """"<pod>: <the scheduler's reason>" for each Pending pod the scheduler could not place
    (PodScheduled False): a rollout stalled on them says why (a topology spread rule, a taint,
    too little CPU) instead of only that it stalled."""
    reasons = []
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Pending":
            continue
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                message = " ".join(str(condition.get("message") or condition.get("reason") or "unschedulable").split())
                reasons.append(f"{pod['metadata']['name']}: {message}")
    return sorted(reasons)


def ledger_problems(ledger: dict[str, Any]) -> list[str]:
    """Lost or twice-delivered events per source; a ledger that saw nothing is a problem too."""
    sources = ledger.get("sources") or {}
    problems = []
    if not sources:
        problems.append("saw no source emit anything")
    if not (ledger.get("settle") or {}).get("complete", False):
        problems.append("did not settle")
    for name, row in sorted(sources.items()):
        if int(row.get("lost") or 0) > 0:
            sample = ", ".join(str(i) for i in (row.get("lost_ids_sample") or [])[:3])
            problems.append(f"{name}: {row['lost']} lost (e.g. {sample})")
        if int(row.get("duplicates") or 0) > 0:
            problems.append(f"{name}: {row['duplicates']} delivered twice")
    return problems


# ------------------------------------------------------------------------------------------
# The NATS DNS/connectivity probe Job
# ------------------------------------------------------------------------------------------
def job_finished(job: Optional[dict[str, Any]]) -> list[str]:
    """The Job's true conditions among Complete and Failed (empty while it runs)."""
    conditions = ((job or {}).get("status") or {}).get("conditions") or []
    return [c["type"] for c in conditions if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"]


def probe_verdict(job: Optional[dict[str, Any]], node: Optional[dict[str, Any]], simulated_annotation: str,
                  target: str, namespace: str, timeout: int) -> dict[str, str]:
    """passed, failed, or unproven (the pod ran on a simulated node, where no container runs)."""
    conditions = [c["type"] for c in ((job or {}).get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    meta = (node or {}).get("metadata") or {}
    name = meta.get("name", "")
    job_name = ((job or {}).get("metadata") or {}).get("name", "")
    if simulated_annotation in (meta.get("annotations") or {}):
        return {"outcome": "unproven", "node": name,
                "detail": f"the probe pod ran on {name}, a node simulated by kwok: no container ran, so DNS and "
                          f"connectivity to {target} are not proven (job conditions: {', '.join(conditions) or 'none'})"}
    if "Complete" in conditions:
        host, _, port = target.rpartition(":")
        return {"outcome": "passed", "node": name,
                "detail": f"{host} resolved and port {port} answered from namespace {namespace}"}
    return {"outcome": "failed", "node": name,
            "detail": f"job {job_name} did not complete within {timeout}s (conditions: {', '.join(conditions) or 'none'}); "
                      f"see kubectl -n {namespace} logs job/{job_name}"}
