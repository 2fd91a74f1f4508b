# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The pre-migration records: the state ConfigMap's keys and the local files beside them.

A record is each workload's spec as the migration found it, kept in the ConfigMap and as a
0600 file under <state.dir>/<namespace>; its provenance says who recorded it and when. An
existing record is never overwritten and a migrated spec never recorded. After a restore
has rolled out, its records are retired (set aside), so a later migration records anew.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Any, Optional

from ansible.module_utils.tapio_engine_inputs import Target
from ansible.module_utils.tapio_engine_run import EngineError, EnginePart
from ansible.module_utils.tapio_private import make_private_dir, write_private_file
from ansible.module_utils.tapio_workload import (
    PROVENANCE_PREFIX, output_mode_of, pod_template_hash, provenance_file, provenance_of, record_file, record_key,
    record_text, select_record)

# ConfigMap keys of records a restore has set aside (see Records.retire).
RETIRED_PREFIX = "retired."
# What Records.load_records tells of one target: its record, where it came from, where it is kept.
RecordEntry = dict[str, Any]


class Records(EnginePart):
    """Reads and writes one namespace's records for a phase's run."""

    def state_dir(self) -> str:
        """Local records of this namespace: <state.dir>/<namespace>."""
        return os.path.join(self.inputs.state.dir, self.run.namespace)

    def read_file(self, target: Target, name: str = "") -> str:
        path = os.path.join(self.state_dir(), name or record_file(target.kind, target.name))
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().rstrip()
        except FileNotFoundError:
            return ""

    def load_records(self, targets: list[Target], live: dict[str, dict[str, Any]]) -> dict[str, RecordEntry]:
        """Per target: source (configmap, artifact, live, none), text and record."""
        configmap = self.run.kube.get("ConfigMap", self.run.namespace, self.inputs.state.configmap) or {}
        return {target.name: self.load_record(target, live[target.name], configmap) for target in targets}

    def load_record(self, target: Target, live: dict[str, Any], configmap: dict[str, Any]) -> RecordEntry:
        data = configmap.get("data") or {}
        key = record_key(target.kind, target.name)
        on_disk = self.read_file(target)
        nats_value, mode_env = self.inputs.nats_value, self.run.mode_env
        migrated = self.run.mode(live, target) == nats_value
        source, text = select_record(key, data, on_disk, live, migrated)
        record = json.loads(text) if text else None
        if record is not None and output_mode_of(record, target.container, mode_env) == nats_value:
            raise EngineError(
                f"The recorded spec of {target.label} (from {source}) already runs in {mode_env}="
                f"{nats_value} mode; it is not a pre-migration record. Fix or delete key {key} in "
                f"ConfigMap {self.run.namespace}/{self.inputs.state.configmap} and the files under {self.state_dir()}.")
        provenance_text = data.get(PROVENANCE_PREFIX + key) or self.read_file(
            target, provenance_file(target.kind, target.name))
        if source == "live":
            provenance_text = record_text(provenance_of(live, self.run.run_id, utc_now()))
        return {"target": target, "key": key, "source": source, "text": text, "record": record,
                "in_configmap": key in data, "on_disk": bool(on_disk), "configmap": configmap,
                "provenance_text": provenance_text if record is not None else "",
                "provenance": json_or_none(provenance_text) if record is not None else None,
                "provenance_in_configmap": PROVENANCE_PREFIX + key in data}

    def record(self, targets: list[Target], live: dict[str, dict[str, Any]]) -> dict[str, RecordEntry]:
        """Record each target's spec before the migration changes it (ConfigMap and local file);
        an existing record is never overwritten, a migrated spec never recorded."""
        plan = self.load_records(targets, live)
        # Records an earlier version wrote sit in a 0755 directory: closed before anything is added.
        if not self.run.check and os.path.isdir(self.state_dir()) and make_private_dir(self.state_dir()):
            self.run.log(f"made {self.state_dir()} private (mode 0700): its records hold the workloads' env values")
        unrecordable = [name for name, entry in plan.items() if entry["source"] == "none"]
        if unrecordable:
            raise EngineError(
                f"{', '.join(unrecordable)} already run(s) with {self.run.mode_env}={self.inputs.nats_value} but no "
                f"pre-migration record exists (ConfigMap {self.run.namespace}/{self.inputs.state.configmap}, "
                f"{self.state_dir()}). Refusing to record a migrated spec as the original; restore the workload's "
                "original spec first.")
        missing = {e["key"]: e["text"] for e in plan.values() if not e["in_configmap"]}
        missing.update({PROVENANCE_PREFIX + e["key"]: e["provenance_text"] for e in plan.values()
                        if e["provenance_text"] and not e["provenance_in_configmap"]})
        if missing:
            self.write_configmap(missing, next(iter(plan.values()))["configmap"])
        for entry in plan.values():
            target = entry["target"]
            if not entry["on_disk"]:
                self.write_file(target, entry["text"])
                if entry["provenance_text"]:
                    self.write_file(target, entry["provenance_text"], provenance_file(target.kind, target.name))
        for entry in plan.values():
            if entry["source"] == "live":
                target = entry["target"]
                self.run.log(f"recorded {target.label} (generation {live[target.name]['metadata'].get('generation')}, "
                             f"pod template {pod_template_hash(live[target.name])}, by {self.run.run_id})")
        return plan

    def write_configmap(self, missing: dict[str, str], configmap: dict[str, Any]) -> None:
        name, namespace = self.inputs.state.configmap, self.run.namespace
        self.run.changed = True
        self.run.diff.append({"before": "", "after": "".join(f"{k}\n" for k in sorted(missing)),
                              "before_header": f"ConfigMap {namespace}/{name} keys",
                              "after_header": f"ConfigMap {namespace}/{name} keys"})
        if self.run.check:
            return
        if configmap:
            self.run.kube.patch("ConfigMap", namespace, name, {"data": missing})
        else:
            self.run.kube.create("ConfigMap", namespace, {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace, "labels": self.inputs.state.labels},
                "data": missing})

    def write_file(self, target: Target, text: str, name: str = "") -> None:
        """A local record (or its provenance): 0600 in a 0700 directory, since a record holds
        the workload's literal env values as they are."""
        path = os.path.join(self.state_dir(), name or record_file(target.kind, target.name))
        self.run.changed = True
        if self.run.check:
            return
        make_private_dir(self.state_dir())
        if name and os.path.exists(path):  # provenance beside a record file written by an interrupted run
            return
        write_private_file(path, text + "\n")

    def retire(self, entries: list[RecordEntry]) -> None:
        """Set the records of restored workloads aside (ConfigMap key retired.<key>, local file
        under retired/): a record describes the spec one migration found, and the next
        migration records the spec as it is then, so an upgrade made after this rollback is
        never undone by a later restore. Only after every restore has rolled out."""
        if not entries:
            return
        name = self.inputs.state.configmap
        self.run.changed = True
        keys = sorted(e["key"] for e in entries)
        header = f"ConfigMap {self.run.namespace}/{name} keys (records retired after the restore)"
        self.run.diff.append({"before": "".join(f"{k}\n" for k in keys),
                              "after": "".join(f"{RETIRED_PREFIX}{k}\n" for k in keys),
                              "before_header": header, "after_header": header})
        labels = ", ".join(e["target"].label for e in entries)
        if self.run.check:
            self.run.log(f"would retire the records of {labels}")
            return
        self.retire_in_configmap([e for e in entries if e["in_configmap"]])
        self.retire_files(entries)
        self.run.log(f"retired the records of {labels} (the next migration records the specs as they are then)")

    def retire_in_configmap(self, entries: list[RecordEntry]) -> None:
        """Each key (and its provenance) moved to retired.<key>, in one patch."""
        if not entries:
            return
        data: dict[str, Optional[str]] = {e["key"]: None for e in entries}
        data.update({RETIRED_PREFIX + e["key"]: e["text"] for e in entries})
        for entry in entries:
            if entry["provenance_in_configmap"]:
                data[PROVENANCE_PREFIX + entry["key"]] = None
                data[RETIRED_PREFIX + PROVENANCE_PREFIX + entry["key"]] = entry["provenance_text"]
        self.run.kube.patch("ConfigMap", self.run.namespace, self.inputs.state.configmap, {"data": data})

    def retire_files(self, entries: list[RecordEntry]) -> None:
        """Each record file (and its provenance) moved under <state dir>/retired/."""
        retired_dir = os.path.join(self.state_dir(), "retired")
        for entry in entries:
            kind, workload = entry["target"].kind, entry["target"].name
            for file_name in (record_file(kind, workload), provenance_file(kind, workload)):
                if os.path.exists(os.path.join(self.state_dir(), file_name)):
                    make_private_dir(retired_dir)
                    os.replace(os.path.join(self.state_dir(), file_name), os.path.join(retired_dir, file_name))


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_or_none(text: str) -> Optional[dict[str, Any]]:
    """A provenance text as data; None when absent or unreadable (provenance informs, it
    never decides, so a damaged one must not stop a restore)."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
