# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The pre-migration records: the state ConfigMap's keys and the local files beside them.

A record is each workload's spec as the migration found it, kept in the ConfigMap and as a
0600 file under <state.dir>/<namespace>; its provenance says who recorded it and when, and its
written record (tapio_owned) what the toolkit's switch wrote into it. An existing record is
never overwritten and a migrated spec never recorded. Every key written to the ConfigMap has
its SHA-256 in a Secret beside it (tapio_record_digests). A record is applied only to the
incarnation of the workload it was taken from and only while its digests match
(Records.refusals). After a rollback has rolled out, its records are retired (set aside), so a
later migration records anew.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Any, Optional

from ansible.module_utils.tapio_engine_inputs import Target
from ansible.module_utils.tapio_engine_run import EngineError, EnginePart, EngineRun
from ansible.module_utils.tapio_owned import (
    WRITTEN_PREFIX, incarnation_problem, is_written_record, recorded_uid, switch_writes, with_writes, written_file,
    written_names, written_of)
from ansible.module_utils.tapio_private import make_private_dir, write_private_file
from ansible.module_utils.tapio_record_digests import RecordDigests, digest_problems
from ansible.module_utils.tapio_workload import (
    PROVENANCE_PREFIX, output_mode_of, pod_template_hash, provenance_file, provenance_of, record_file, record_key,
    record_text, select_record)

# ConfigMap keys of records a restore has set aside (see Records.retire).
RETIRED_PREFIX = "retired."
# What Records.load_records tells of one target: its record, where it came from, where it is kept.
RecordEntry = dict[str, Any]


class Records(EnginePart):
    """Reads and writes one namespace's records for a phase's run."""

    def __init__(self, run: EngineRun) -> None:
        super().__init__(run)
        self.digests = RecordDigests(run)
        # The warning that records are applied unchecked is given once per call.
        self.warned_unchecked = False

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
        written_on_disk = self.read_file(target, written_file(target.kind, target.name))
        written_text = data.get(WRITTEN_PREFIX + key) or written_on_disk
        if source == "live":
            provenance_text = record_text(provenance_of(live, self.run.run_id, utc_now()))
            written_text = record_text(written_of(live, target.container))
        if record is None:
            provenance_text = written_text = ""
        return {"target": target, "key": key, "source": source, "text": text, "record": record,
                "in_configmap": key in data, "on_disk": bool(on_disk), "configmap": configmap,
                "provenance_text": provenance_text, "provenance": json_or_none(provenance_text),
                "provenance_in_configmap": PROVENANCE_PREFIX + key in data,
                "written_text": written_text, "written": json_or_none(written_text),
                "written_in_configmap": WRITTEN_PREFIX + key in data, "written_on_disk": bool(written_on_disk)}

    def record(self, targets: list[Target], live: dict[str, dict[str, Any]]) -> dict[str, RecordEntry]:
        """Record each target's spec before the migration changes it (ConfigMap and local file);
        an existing record is never overwritten, a migrated spec never recorded."""
        plan = self.load_records(targets, live)
        # A record of an earlier incarnation (the workload deleted and created again since) is
        # never applied to this one: while it is not migrated, that record is retired and the
        # workload recorded as it is now.
        stale = [entry for name, entry in plan.items() if self.of_earlier_incarnation(entry, live[name])]
        if stale:
            self.retire(stale, why="they belong to earlier incarnations of the workloads")
            if not self.run.check:
                plan.update(self.load_records([entry["target"] for entry in stale], live))
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
        # A new record's written record replaces any left from an earlier one.
        missing.update({WRITTEN_PREFIX + e["key"]: e["written_text"] for e in plan.values()
                        if e["written_text"] and (e["source"] == "live" or not e["written_in_configmap"])})
        if missing:
            self.write_configmap(missing, next(iter(plan.values()))["configmap"])
        for entry in plan.values():
            self.write_local_copies(entry)
        for entry in plan.values():
            if entry["source"] == "live":
                target = entry["target"]
                self.run.log(f"recorded {target.label} (generation {live[target.name]['metadata'].get('generation')}, "
                             f"pod template {pod_template_hash(live[target.name])}, by {self.run.run_id})")
        return plan

    def of_earlier_incarnation(self, entry: RecordEntry, live: dict[str, Any]) -> bool:
        """A stored record taken from another uid than the live, not migrated, workload's."""
        if entry["source"] not in ("configmap", "artifact") or self.run.mode(live, entry["target"]) == \
                self.inputs.nats_value:
            return False
        uid, live_uid = recorded_uid(entry["written"], entry["provenance"]), (live.get("metadata") or {}).get("uid")
        return bool(uid and live_uid and uid != live_uid)

    def write_local_copies(self, entry: RecordEntry) -> None:
        """The local files of a record, its provenance and its written record, where missing
        (a new record's written record replaces one left from an earlier record)."""
        target = entry["target"]
        if not entry["on_disk"]:
            self.write_file(target, entry["text"])
            if entry["provenance_text"]:
                self.write_file(target, entry["provenance_text"], provenance_file(target.kind, target.name))
        if entry["written_text"] and (entry["source"] == "live" or not entry["written_on_disk"]):
            self.write_file(target, entry["written_text"], written_file(target.kind, target.name), replace=True)

    def write_switch(self, target: Target, live: dict[str, Any], env: list[dict[str, Any]],
                     annotations: Optional[dict[str, str]] = None, override: Optional[dict[str, Any]] = None) -> None:
        """Add what the switch of *target* is about to write to its written record, before the
        patch: a restore then knows each entry the toolkit owns and the value it set. A record of
        an earlier version (no written record) is left so, and restores as it did."""
        configmap = self.run.kube.get("ConfigMap", self.run.namespace, self.inputs.state.configmap) or {}
        entry = self.load_record(target, live, configmap)
        if entry["source"] not in ("configmap", "artifact") or not is_written_record(entry["written"]):
            return
        writes = switch_writes(live, target.container, env, annotations, override)
        updated = with_writes(entry["written"], writes)
        if updated == entry["written"]:
            return
        text = record_text(updated)
        self.write_configmap({WRITTEN_PREFIX + entry["key"]: text}, configmap)
        self.write_file(target, text, written_file(target.kind, target.name), replace=True)
        self.run.log(f"{'would record' if self.run.check else 'recorded'} what the switch of {target.label} writes: "
                     f"{written_names(writes)}")

    def write_configmap(self, missing: dict[str, str], configmap: dict[str, Any]) -> None:
        """The keys into the state ConfigMap, then their digests into the Secret beside it."""
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
        earlier = {k: v for k, v in (configmap.get("data") or {}).items() if not k.startswith(RETIRED_PREFIX)}
        self.digests.write(missing, earlier)

    def write_file(self, target: Target, text: str, name: str = "", replace: bool = False) -> None:
        """A local record (or its provenance or written record): 0600 in a 0700 directory, since
        a record holds the workload's literal env values as they are."""
        path = os.path.join(self.state_dir(), name or record_file(target.kind, target.name))
        self.run.changed = True
        if self.run.check:
            return
        make_private_dir(self.state_dir())
        # Provenance beside a record file written by an interrupted run is kept.
        if name and not replace and os.path.exists(path):
            return
        if not replace:
            write_private_file(path, text + "\n")
            return
        # A written record is replaced whole, never seen half written: a new file moved over it.
        fresh = path + ".new"
        if os.path.exists(fresh):
            os.remove(fresh)
        write_private_file(fresh, text + "\n")
        os.replace(fresh, path)

    def retire(self, entries: list[RecordEntry], why: str = "") -> None:
        """Set the records of restored workloads aside (ConfigMap key retired.<key>, local file
        under retired/): a record describes the spec one migration found, and the next
        migration records the spec as it is then, so an upgrade made after this rollback is
        never undone by a later restore. Only after every restore has rolled out."""
        if not entries:
            return
        name = self.inputs.state.configmap
        self.run.changed = True
        keys = sorted(e["key"] for e in entries)
        header = f"ConfigMap {self.run.namespace}/{name} keys (records retired: {why or 'restored'})"
        self.run.diff.append({"before": "".join(f"{k}\n" for k in keys),
                              "after": "".join(f"{RETIRED_PREFIX}{k}\n" for k in keys),
                              "before_header": header, "after_header": header})
        labels = ", ".join(e["target"].label for e in entries)
        if self.run.check:
            self.run.log(f"would retire the records of {labels}")
            return
        self.retire_in_configmap([e for e in entries if e["in_configmap"]])
        self.digests.move({k: RETIRED_PREFIX + k for e in entries for k in stored_keys(e["key"])})
        self.retire_files(entries)
        self.run.log(f"retired the records of {labels} " + (
            f"({why}: recorded as they are now)" if why else "(the next migration records the specs as they are then)"))

    def retire_in_configmap(self, entries: list[RecordEntry]) -> None:
        """Each key (and its provenance and written record) moved to retired.<key>, in one patch."""
        if not entries:
            return
        data: dict[str, Optional[str]] = {e["key"]: None for e in entries}
        data.update({RETIRED_PREFIX + e["key"]: e["text"] for e in entries})
        for entry in entries:
            for prefix, part in ((PROVENANCE_PREFIX, "provenance"), (WRITTEN_PREFIX, "written")):
                if entry[f"{part}_in_configmap"]:
                    data[prefix + entry["key"]] = None
                    data[RETIRED_PREFIX + prefix + entry["key"]] = entry[f"{part}_text"]
        self.run.kube.patch("ConfigMap", self.run.namespace, self.inputs.state.configmap, {"data": data})

    def retire_files(self, entries: list[RecordEntry]) -> None:
        """Each record file (and its provenance and written record) moved under <state dir>/retired/."""
        retired_dir = os.path.join(self.state_dir(), "retired")
        for entry in entries:
            kind, workload = entry["target"].kind, entry["target"].name
            for file_name in (record_file(kind, workload), provenance_file(kind, workload),
                              written_file(kind, workload)):
                if os.path.exists(os.path.join(self.state_dir(), file_name)):
                    make_private_dir(retired_dir)
                    os.replace(os.path.join(self.state_dir(), file_name), os.path.join(retired_dir, file_name))

    # -- whether a record may be applied -------------------------------------------------------
    def refusals(self, entries: list[RecordEntry], live: dict[str, dict[str, Any]]) -> list[str]:
        """Why each of *entries* must not be applied to its workload: a record of an earlier
        incarnation (another uid), or one changed outside the toolkit (its digests). Without a
        digests Secret (records of an earlier version) they are applied, with a warning."""
        if not entries:
            return []
        digests = self.digests.read()
        if digests is None and not self.warned_unchecked:
            self.warned_unchecked = True
            self.run.log(f"warning: {self.digests.where()} does not exist, so the records of "
                         f"{', '.join(e['target'].label for e in entries)} were written by an earlier version of the "
                         "toolkit, before it kept their SHA-256: they are applied without an integrity check")
        return [problem for entry in entries for problem in self.refusal(entry, live[entry["target"].name], digests)]

    def refusal(self, entry: RecordEntry, live: dict[str, Any], digests: Optional[dict[str, str]]) -> list[str]:
        target, key = entry["target"], entry["key"]
        workload = f"{target.kind} {self.run.namespace}/{target.name}"
        where = (f"ConfigMap {self.run.namespace}/{self.inputs.state.configmap} key {key}" if entry["in_configmap"]
                 else os.path.join(self.state_dir(), record_file(target.kind, target.name)))
        texts = dict(zip(stored_keys(key), (entry["text"], entry["provenance_text"], entry["written_text"])))
        in_configmap = dict(zip(stored_keys(key), (entry["in_configmap"], entry["provenance_in_configmap"],
                                                   entry["written_in_configmap"])))
        # A ConfigMap key needs its digest; a text from the runner's own local copy is checked
        # when a digest exists (it was written with it), and trusted when none does.
        problems = digest_problems({k: t for k, t in texts.items() if in_configmap[k] or k in digests},
                                   digests) if digests is not None else []
        if entry["written_text"] and not is_written_record(entry["written"]):
            problems.append(f"key {WRITTEN_PREFIX}{key} is not a written record")
        if problems:
            return [f"{workload} was not restored: its record was changed outside the toolkit ({'; '.join(problems)}; "
                    f"ConfigMap {self.run.namespace}/{self.inputs.state.configmap}, {self.digests.where()}). The "
                    f"workload was left as it is. Compare the ConfigMap's keys with the toolkit's local copies under "
                    f"{self.state_dir()} and put those back, or go back to direct mode with "
                    "tapio_rollback_mode=switch, which applies no record."]
        problem = incarnation_problem(workload, recorded_uid(entry["written"], entry["provenance"]), live, where)
        return [problem] if problem else []


def stored_keys(key: str) -> tuple[str, str, str]:
    """The ConfigMap keys of one record: itself, its provenance, its written record."""
    return key, PROVENANCE_PREFIX + key, WRITTEN_PREFIX + key


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
