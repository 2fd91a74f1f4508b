# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What the toolkit wrote into a workload, and a restore that reverts only that, entry by entry.

Beside each record the engine keeps its *written record* (ConfigMap key written.<record key>,
local file <kind>-<name>.written.json): the uid of the workload the record was taken from and,
from the switch on, the env entries of the owned container (by name, with the values set), the
pod-template annotations and the container fields the switch wrote. A restore returns an owned
entry to its recorded value only while it still holds what the toolkit wrote; an entry someone
changed since, and everything the toolkit never writes, keeps its live value and is listed.

A record without a written record (made by an earlier version of the toolkit) restores as
before: the owned container's env and the pod template's annotations go back whole
(tapio_workload.restore_of). Pure functions, like tapio_workload's: no I/O here.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

from ansible.module_utils.tapio_workload import (
    clean_entry, deep_merge, differing_paths, find_container, is_removal, record_of, restore_of,
    with_live_server_metadata, without_toolkit_fields)

# ConfigMap key prefix and file suffix of a written record (beside record key <kind>.<name>.json).
WRITTEN_PREFIX = "written."
# The pod-template annotation nats_cluster's password change sets (library/tapio_credentials_rollout.py,
# option annotation): the toolkit's own key, whatever value a rotation left in it.
CREDENTIALS_ANNOTATION = "tapio.io/nats-user"

# One entry a restore keeps: (what, how), e.g. ("env LOG_LEVEL", "changed since the migration, kept").
Kept = tuple[str, str]


def written_file(kind: str, name: str) -> str:
    return f"{kind.lower()}-{name}.written.json"


def written_of(live: dict[str, Any], container: str) -> dict[str, Any]:
    """The written record of a workload as it is recorded: nothing written yet, and the uid of
    the incarnation the record is taken from."""
    return {"uid": (live.get("metadata") or {}).get("uid"), "container": container, "env": {},
            "pod_annotations": {}, "container_overrides": {}, "credentials_annotation": CREDENTIALS_ANNOTATION}


def is_written_record(value: Any) -> bool:
    """Whether *value* is a written record as the toolkit writes it (a damaged one must not pass
    for a record of an earlier version, which restores the whole env)."""
    return isinstance(value, dict) and isinstance(value.get("container"), str) and all(
        isinstance(value.get(part) or {}, dict) for part in ("env", "pod_annotations", "container_overrides"))


def switch_writes(live: dict[str, Any], container: str, env: list[dict[str, Any]],
                  annotations: Optional[dict[str, str]] = None,
                  override: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """What tapio_workload.switch_patch writes, as the written record keeps it: each env entry
    as the API stores it (None for one it removes), each annotation, and each overridden field
    of the owned container as the merge leaves it."""
    merged = deep_merge(find_container(live, container), override or {})
    return {"env": {entry["name"]: None if is_removal(entry) else clean_entry(entry) for entry in env},
            "pod_annotations": {key: str(value) for key, value in (annotations or {}).items()},
            "container_overrides": {key: merged[key] for key in override or {}}}


def with_writes(written: dict[str, Any], writes: dict[str, Any]) -> dict[str, Any]:
    """*written* with a later switch's *writes*: a name written again holds its latest value,
    and one written earlier stays the toolkit's (a switch never gives an entry back)."""
    return {**written, **{part: {**(written.get(part) or {}), **writes[part]}
                          for part in ("env", "pod_annotations", "container_overrides")}}


def written_names(writes: dict[str, Any]) -> str:
    """The owned entries of *writes*, for a step."""
    parts = [f"{label} {', '.join(sorted(writes.get(part) or {}))}"
             for part, label in (("env", "env"), ("pod_annotations", "pod template annotations"),
                                 ("container_overrides", "container fields")) if writes.get(part)]
    return "; ".join(parts) or "nothing"


# ------------------------------------------------------------------------------------------
# The restore, entry by entry
# ------------------------------------------------------------------------------------------
def entry_fate(live: Any, written: Any, recorded: Any) -> str:
    """What a restore does with one entry the toolkit wrote (None: absent): nothing when it
    holds its recorded value, back to that value while it holds what the toolkit wrote, and
    kept when someone changed it since."""
    if live == recorded:
        return "as recorded"
    return "revert" if live == written else "kept"


def how_kept(live: Any, recorded: Any, owned: bool = False) -> str:
    """Why an entry is kept: against the record, or for one the toolkit wrote (*owned*) against
    what it wrote, which someone changed since."""
    if live is None:
        return "removed since the migration, kept removed"
    if recorded is None and not owned:
        return "added since the migration, kept"
    return "changed since the migration, kept"


def env_value(entry: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """An env entry as compared: its value or valueFrom as the API stores it (None: absent)."""
    return None if entry is None else clean_entry({**entry, "name": entry.get("name", "")})


def restore_env(live_env: list[dict[str, Any]], recorded_env: list[dict[str, Any]],
                written_env: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Kept]]:
    """The owned container's env after a restore, in the live order, and what it keeps."""
    recorded = {entry["name"]: entry for entry in recorded_env}
    result: list[dict[str, Any]] = []
    kept: list[Kept] = []
    for entry in live_env:
        name = entry.get("name", "")
        live, before = env_value(entry), env_value(recorded.get(name))
        if name in written_env:
            fate = entry_fate(live, env_value(written_env[name]), before)
        else:
            fate = "as recorded" if live == before else "kept"
        if fate == "kept":
            kept.append((f"env {name}", how_kept(live, before, owned=name in written_env)))
        if fate != "revert":
            result.append(copy.deepcopy(entry))
        elif name in recorded:
            result.append(copy.deepcopy(recorded[name]))
    live_names = {entry.get("name") for entry in live_env}
    for index, entry in enumerate(recorded_env):
        name = entry["name"]
        if name in live_names:
            continue
        # Removed live: by the toolkit's switch (back it comes) or by someone else (kept removed).
        if name in written_env and written_env[name] is None:
            result.insert(min(index, len(result)), copy.deepcopy(entry))
        else:
            kept.append((f"env {name}", how_kept(None, entry)))
    return result, kept


def restore_annotations(live: dict[str, str], recorded: dict[str, str], written: dict[str, Any],
                        credentials_key: str) -> tuple[dict[str, str], list[Kept]]:
    """The pod template's annotations after a restore, and what it keeps. The credentials
    annotation is the toolkit's whatever its value (a password change sets it after the switch)."""
    result: dict[str, str] = {}
    kept: list[Kept] = []
    for key in sorted(set(live) | set(recorded)):
        now, before = live.get(key), recorded.get(key)
        if key in written:
            fate = entry_fate(now, written[key], before)
        elif key == credentials_key:
            fate = "as recorded" if now == before else "revert"
        else:
            fate = "as recorded" if now == before else "kept"
        if fate == "kept":
            kept.append((f"pod template annotation {key}", how_kept(now, before, owned=key in written)))
        value = before if fate == "revert" else now
        if value is not None:
            result[key] = value
    return result, kept


def restore_overrides(owned: dict[str, Any], recorded: dict[str, Any], written: dict[str, Any]) -> list[Kept]:
    """Each container field the switch overrode, back to its record in *owned* (in place) while
    it holds what the switch wrote; what it keeps."""
    kept: list[Kept] = []
    for key, value in written.items():
        fate = entry_fate(owned.get(key), value, recorded.get(key))
        if fate == "kept":
            kept.append((f"container {owned.get('name')} field {key}",
                         how_kept(owned.get(key), recorded.get(key), owned=True)))
        elif fate == "revert" and key in recorded:
            owned[key] = copy.deepcopy(recorded[key])
        elif fate == "revert":
            owned.pop(key, None)
    return kept


def set_or_drop(holder: dict[str, Any], key: str, value: Any) -> None:
    """An empty list or dict is left out, as the API server leaves it out."""
    if value:
        holder[key] = value
    else:
        holder.pop(key, None)


def restore_by_entry(workload: dict[str, Any], record: dict[str, Any],
                     written: dict[str, Any]) -> tuple[bool, dict[str, Any], list[Kept]]:
    """Whether a replace is needed, its definition, and what it keeps, for a record with its
    written record: the live object with each entry the toolkit wrote, and still holds, back to
    its record; every other field, entry and annotation as it is live."""
    live = record_of(workload)
    container = written["container"]
    overrides = tuple(written.get("container_overrides") or {})
    kept: list[Kept] = [(path, "changed since the migration, kept") for path in
                        other_changes(record, live, container, overrides)]
    restore = copy.deepcopy(live)
    owned, recorded = find_container(restore, container), find_container(record, container)
    env, kept_env = restore_env(owned.get("env") or [], recorded.get("env") or [], written.get("env") or {})
    set_or_drop(owned, "env", env)
    kept += kept_env + restore_overrides(owned, recorded, written.get("container_overrides") or {})
    template_meta = restore["spec"]["template"].setdefault("metadata", {})
    annotations, kept_annotations = restore_annotations(
        template_meta.get("annotations") or {}, template_annotations(record), written.get("pod_annotations") or {},
        written.get("credentials_annotation") or CREDENTIALS_ANNOTATION)
    set_or_drop(template_meta, "annotations", annotations)
    if not template_meta and "metadata" not in ((record.get("spec") or {}).get("template") or {}):
        restore["spec"]["template"].pop("metadata")
    needed = restore.get("spec") != live.get("spec")
    return needed, with_live_server_metadata(restore, workload), kept + kept_annotations


def template_annotations(obj: dict[str, Any]) -> dict[str, str]:
    return ((((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations")) or {}


def other_changes(record: dict[str, Any], live: dict[str, Any], container: str,
                  override_keys: tuple[str, ...]) -> list[str]:
    """Paths changed since the record outside what the toolkit writes (the object's own labels
    and annotations, its spec but the owned container's env and overridden fields and the pod
    template's annotations), which those are compared entry by entry."""
    def own_metadata(obj: dict[str, Any]) -> dict[str, Any]:
        return {key: (obj.get("metadata") or {}).get(key) or {} for key in ("labels", "annotations")}

    return differing_paths(own_metadata(record), own_metadata(live), "metadata") + differing_paths(
        without_toolkit_fields(record, container, override_keys).get("spec"),
        without_toolkit_fields(live, container, override_keys).get("spec"), "spec")


def restore_plan(workload: dict[str, Any], record: dict[str, Any], written: Optional[dict[str, Any]],
                 container: str, override_keys: tuple[str, ...] = ()) -> tuple[bool, dict[str, Any], list[Kept]]:
    """The restore of *workload* to *record*: entry by entry with its written record; without
    one (a record of an earlier version) as before, the owned env and pod template annotations
    back whole and every other change kept."""
    if written is not None:
        return restore_by_entry(workload, record, written)
    needed, definition, paths = restore_of(workload, record, container, override_keys)
    return needed, definition, [(path, "changed since the migration, kept") for path in paths]


def recorded_uid(written: Optional[dict[str, Any]], provenance: Optional[dict[str, Any]]) -> Optional[str]:
    """The uid of the workload a record was taken from (None: a record too old to say)."""
    return (written or {}).get("uid") or (provenance or {}).get("uid") or None


def incarnation_problem(label: str, uid: Optional[str], live: dict[str, Any], where: str) -> str:
    """Why a record must not be applied to *live* (another incarnation of the workload), or ''."""
    live_uid = (live.get("metadata") or {}).get("uid")
    if not uid or not live_uid or uid == live_uid:
        return ""
    return (f"{label} was not restored: its record ({where}) belongs to an earlier incarnation of the workload "
            f"(recorded from uid {uid}; the live object is uid {live_uid}: it was deleted and created again since). "
            "A record is applied only to the object it was taken from, since it could undo what the new one was "
            "created with. Compare the record with the workload by hand; to go back to direct mode, run the rollback "
            "with tapio_rollback_mode=switch, which sets the output mode only and retires the record.")
