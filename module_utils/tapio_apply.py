# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Server-side apply of a set of Kubernetes objects, decided before anything changes.

What changes is the API server's own answer, not a guess: each object is first applied with
``dryRun=All`` and the answer is compared with the live object (both defaulted and
normalised by the server), leaving out what every write moves (resourceVersion,
managedFields, generation, status). Only objects whose dry run differs are applied for real,
so a re-run sends no write and changes no resourceVersion. Every object's dry run happens
before the first real write: a refusal (an invalid object, an immutable field) stops the
run with nothing applied.

Server-side apply keeps no ``last-applied-configuration`` annotation, so a Secret's values
are never copied into one; Secrets' values are redacted in diffs and results, and so are
the literal env values of every other object's containers.
"""
from __future__ import annotations

import base64
import copy
import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

from ansible.module_utils.tapio_kube import Kube, KubeError
from ansible.module_utils.tapio_private import redacted_object

APPLY_PATCH = "application/apply-patch+yaml"
REDACTED = "<redacted>"
# Fields every write may move; a difference only there is no change.
VOLATILE_METADATA = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", "selfLink")
# The kinds whose rollout the apply can wait for.
ROLLOUT_KINDS = ("StatefulSet", "Deployment", "DaemonSet")
# Reads and dry runs at once while planning (the API client's connection pool holds more).
PLAN_WORKERS = 8


class ApplyError(Exception):
    """A refusal or failure worth one message; nothing further is applied."""


def object_label(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind', '?')} {where}{meta.get('name', '?')}"


def comparable(obj: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The object without what every write moves (see VOLATILE_METADATA) and without status."""
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in VOLATILE_METADATA:
        meta.pop(key, None)
    return out


def redacted(obj: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """A Secret with every value replaced (keys kept, so a diff still shows which changed);
    any other object with its containers' literal env values shown as a hash (tapio_private)."""
    if obj is None:
        return obj
    if obj.get("kind") != "Secret":
        return redacted_object(obj)
    out = copy.deepcopy(obj)
    for field in ("data", "stringData"):
        if isinstance(out.get(field), dict):
            out[field] = {key: REDACTED for key in out[field]}
    annotations = (out.get("metadata") or {}).get("annotations") or {}
    if "kubectl.kubernetes.io/last-applied-configuration" in annotations:
        annotations["kubectl.kubernetes.io/last-applied-configuration"] = REDACTED
    return out


def secret_changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Keys of a Secret whose value differs (values are never shown)."""
    old, new = before.get("data") or {}, after.get("data") or {}
    return sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))


_QUANTITY = re.compile(r"^([0-9]+)([KMGTPE]i|[kMGTPE])?$")


def storage_bytes(quantity: str) -> Any:
    """A storage quantity as bytes (``10Gi`` and ``10240Mi`` are one size: the API server
    keeps a quantity in its canonical form, not as written); the text when it is not a plain
    quantity."""
    match = _QUANTITY.match(quantity.strip())
    if not match:
        return quantity
    suffix = match.group(2) or ""
    power = " kMGTPE".index(suffix[0].replace("K", "k")) if suffix else 0
    return int(match.group(1)) * (1024 if suffix.endswith("i") else 1000) ** power


def volume_claims(statefulset: dict[str, Any]) -> list[dict[str, Any]]:
    """A StatefulSet's volumeClaimTemplates as name, storage, class and access modes."""
    summary = []
    for vct in (statefulset.get("spec") or {}).get("volumeClaimTemplates") or []:
        spec = vct.get("spec") or {}
        summary.append({"name": (vct.get("metadata") or {}).get("name", ""),
                        "storage": str(((spec.get("resources") or {}).get("requests") or {}).get("storage", "")),
                        "class": spec.get("storageClassName") or "",
                        "access": spec.get("accessModes") or []})
    return summary


def claims_problem(live: Optional[dict[str, Any]], desired: dict[str, Any], hint: str) -> Optional[str]:
    """Why a StatefulSet cannot be applied: Kubernetes refuses any change to its
    volumeClaimTemplates (checked here, before anything else is applied)."""
    if not live or desired.get("kind") != "StatefulSet":
        return None
    have, want = volume_claims(live), volume_claims(desired)
    if [dict(c, storage=storage_bytes(c["storage"])) for c in have] == \
            [dict(c, storage=storage_bytes(c["storage"])) for c in want]:
        return None
    return (f"The {object_label(desired)} has volume claim templates {json.dumps(have)} but this run asks for "
            f"{json.dumps(want)}. Kubernetes does not allow changing a StatefulSet's volumeClaimTemplates, so "
            f"nothing was applied.{' ' + hint if hint else ''}")


def order_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Namespaces first (the rest lives in them), then the given order."""
    return sorted(objects, key=lambda item: 0 if item["definition"].get("kind") == "Namespace" else 1)


class Discovery:
    """Which resource path serves an apiVersion and kind (one request per apiVersion)."""

    def __init__(self, kube: Kube) -> None:
        self.kube, self.cache = kube, {}  # type: dict[str, Optional[dict[str, tuple[str, bool]]]]

    def resources(self, api_version: str) -> Optional[dict[str, tuple[str, bool]]]:
        if api_version not in self.cache:
            prefix = "api" if "/" not in api_version else "apis"
            found = self.kube.request("GET", f"/{prefix}/{api_version}", not_found_ok=True)
            self.cache[api_version] = None if found is None else {
                item["kind"]: (item["name"], bool(item.get("namespaced")))
                for item in found.get("resources") or [] if "/" not in item.get("name", "")}
        return self.cache[api_version]

    def path(self, obj: dict[str, Any]) -> Optional[str]:
        """The object's URL, or None when the API server does not serve its kind."""
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        served = self.resources(api_version)
        if served is None or kind not in served:
            return None
        plural, namespaced = served[kind]
        prefix = "api" if "/" not in api_version else "apis"
        meta = obj.get("metadata") or {}
        scope = f"/namespaces/{meta.get('namespace')}" if namespaced else ""
        return f"/{prefix}/{api_version}{scope}/{plural}/{meta.get('name')}"


class Applier:
    """Dry-run everything, then apply what differs (see the module docstring)."""

    def __init__(self, kube: Kube, field_manager: str, check_mode: bool, log: Callable[[str], None]) -> None:
        self.kube, self.field_manager, self.check_mode, self.log = kube, field_manager, check_mode, log
        self.discovery = Discovery(kube)

    def ssa(self, path: str, obj: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        query = [("fieldManager", self.field_manager), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        return self.kube.request("PATCH", path, body=obj, content_type=APPLY_PATCH, query=query) or {}

    def create(self, path: str, obj: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        """A plain create (POST to the collection), as kubectl create makes it: no apply
        ownership of its fields, so later writers own what they change."""
        query = [("dryRun", "All")] if dry_run else []
        return self.kube.request("POST", path.rsplit("/", 1)[0], body=obj, query=query) or {}

    def write(self, entry: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        if entry.get("create_only"):
            return self.create(entry["path"], entry["desired"], dry_run)
        return self.ssa(entry["path"], entry["desired"], dry_run)

    def plan(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per object: its path, live and dry-run answer, and the operation it needs.

        Namespaces first (an object in a namespace this run creates is not dry-run), then the
        other objects' reads and dry runs side by side: they are independent, and one after the
        other they were most of a re-run's nats phase. The plan keeps the objects' order, and
        the first refusal in that order is the one raised."""
        new_namespaces: set[str] = set()
        ordered = order_objects(items)
        namespaces = [item for item in ordered if item["definition"].get("kind") == "Namespace"]
        planned = [self.plan_one(item, new_namespaces) for item in namespaces]
        others = [item for item in ordered if item["definition"].get("kind") != "Namespace"]
        with ThreadPoolExecutor(max_workers=PLAN_WORKERS) as pool:
            planned.extend(pool.map(lambda item: self.plan_one(item, new_namespaces), others))
        return planned

    def plan_one(self, item: dict[str, Any], new_namespaces: set[str]) -> dict[str, Any]:
        desired = item["definition"]
        label = object_label(desired)
        entry: dict[str, Any] = {"label": label, "desired": desired, "hint": item.get("hint") or "",
                                 "wait": bool(item.get("wait")) and desired.get("kind") in ROLLOUT_KINDS}
        path = self.discovery.path(desired)
        if path is None:
            if item.get("optional"):
                entry.update(operation="skipped", reason=f"the API server does not serve {desired.get('apiVersion')} "
                                                        f"{desired.get('kind')}")
                return entry
            raise ApplyError(f"{label}: the API server does not serve {desired.get('apiVersion')} "
                             f"{desired.get('kind')}; nothing was applied")
        entry["path"] = path
        live = self.kube.request("GET", path, not_found_ok=True)
        entry["live"] = live
        if item.get("create_only"):
            entry["create_only"] = True
            if live is not None:
                # Created when missing, never changed: whatever happened to it since is kept.
                entry.update(operation="none", after=live, reason="exists; create_only leaves it as it is")
                return entry
        problem = claims_problem(live, desired, entry["hint"])
        if problem:
            raise ApplyError(problem)
        namespace = (desired.get("metadata") or {}).get("namespace")
        if namespace in new_namespaces:
            # A dry run cannot place an object in a namespace that does not exist yet;
            # everything in it is new, and the API server judges it when it is created.
            entry.update(operation="create", after=desired,
                         reason=f"namespace {namespace} does not exist yet (not dry-run)")
            return entry
        try:
            after = self.write(entry, dry_run=True)
        except KubeError as error:
            if error.status == 404 and live is None and self.check_mode:
                # Its namespace is created earlier in this run (another role, check mode).
                entry.update(operation="create", after=desired,
                             reason=f"namespace {namespace} does not exist yet (not dry-run)")
                return entry
            raise ApplyError(f"{label} was refused by the API server ({error}); nothing was applied."
                             f"{' ' + entry['hint'] if entry['hint'] else ''}") from None
        entry["after"] = after
        if live is None:
            entry["operation"] = "create"
            if desired.get("kind") == "Namespace":
                new_namespaces.add((desired.get("metadata") or {}).get("name"))
        elif comparable(live) != comparable(after):
            entry["operation"] = "update"
        else:
            entry["operation"] = "none"
        return entry

    def apply(self, planned: list[dict[str, Any]]) -> None:
        """The real writes, in plan order; the check mode plan stays a plan."""
        if self.check_mode:
            return
        for entry in planned:
            if entry["operation"] in ("create", "update"):
                entry["after"] = self.write(entry, dry_run=False)
                self.log(f"{entry['operation']}d {entry['label']}")


# Secret keys that hold a name, not a secret: masking their values (a user "tapio") would
# turn every object name containing it into "********" in the run's output.
NOT_SECRET_KEY = re.compile(r"(^|[_.-])(USER|USERNAME|USER_NAME)$", re.IGNORECASE)


def secret_values(objects: list[dict[str, Any]]) -> set[str]:
    """The values of the Secrets' data and stringData (and the decoded data), for the module's
    no_log values: Ansible then masks them in anything it prints, even at -vvv. Keys that name
    a user are left out."""
    found: set[str] = set()
    for item in objects:
        definition = item.get("definition")
        if not isinstance(definition, dict) or definition.get("kind") != "Secret":
            continue
        for field in ("data", "stringData"):
            for key, value in (definition.get(field) or {}).items():
                if not isinstance(value, str) or not value or NOT_SECRET_KEY.search(str(key)):
                    continue
                found.add(value)
                if field == "data":
                    try:
                        found.add(base64.b64decode(value).decode())
                    except (ValueError, UnicodeDecodeError):
                        pass
    return found


def entry_result(entry: dict[str, Any]) -> dict[str, Any]:
    """What the module returns for one object (Secrets' values redacted)."""
    desired = entry["desired"]
    meta = desired.get("metadata") or {}
    result = {"kind": desired.get("kind"), "name": meta.get("name"), "namespace": meta.get("namespace"),
              "operation": entry["operation"]}
    if entry.get("reason"):
        result["reason"] = entry["reason"]
    if desired.get("kind") == "Secret" and entry["operation"] == "update":
        result["changed_keys"] = secret_changed(entry.get("live") or {}, entry.get("after") or {})
    if entry.get("after") is not None and entry["operation"] != "skipped":
        result["resource"] = redacted(entry["after"])
    return result


def entry_diff(entry: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Ansible's diff for one created or updated object (Secrets' values redacted)."""
    if entry["operation"] not in ("create", "update"):
        return None
    before = redacted(comparable(entry.get("live"))) if entry.get("live") else {}
    after = redacted(comparable(entry.get("after")))
    return {"before_header": entry["label"], "after_header": entry["label"],
            "before": json.dumps(before, indent=2, sort_keys=True) + "\n" if before else "",
            "after": json.dumps(after, indent=2, sort_keys=True) + "\n"}
