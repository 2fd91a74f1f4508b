# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Drift between a declared set of streams and consumers and what the server holds.

The toolkit sends only the fields a task declares when it creates an object, and the live
configuration with the declared fields on top when it updates one. So on a live object:
- a declared field whose value differs was changed outside the toolkit (a run would put it
  back: it is also what check mode reports as a change);
- a field no task declares that holds anything but the server's default for a new object
  was set outside the toolkit, or by an earlier declaration (a run leaves it as it is);
- a stream, or a consumer of a declared stream, that no task declares is unmanaged.
Pure logic over the server's JSON; nats_jetstream reads the server and calls it.
"""
from __future__ import annotations

from typing import Any, Mapping

from ansible.module_utils.tapio_jetstream_fields import (
    CONSUMER_BY_WIRE,
    IDENTITY,
    INTERNAL,
    STREAM_BY_WIRE,
    Field,
    changed_fields,
    describe,
    option_names,
    same,
)

# What the server (and, for the ack policy, the toolkit) gives a new object for a field that
# depends on the object's kind, where the table's single default cannot say it.
_NEW_CONSUMER = {"ack_policy": "explicit"}
_PULL_DEFAULTS = {"max_waiting": 512}


def _new_object_default(one: Field, live: Mapping[str, Any], kind: str) -> Any:
    if kind == "consumer":
        if one.wire in _NEW_CONSUMER:
            return _NEW_CONSUMER[one.wire]
        if one.wire in _PULL_DEFAULTS and not live.get("deliver_subject"):
            return _PULL_DEFAULTS[one.wire]
        if one.wire == "max_waiting":
            return 0
        if one.wire == "ack_wait" and live.get("backoff"):
            return live["backoff"][0]  # the server takes the first backoff step as ack_wait
    return one.default


def undeclared_fields(declared: Mapping[str, Any], live: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """Fields no task declares that hold something other than a new object's default."""
    fields = STREAM_BY_WIRE if kind == "stream" else CONSUMER_BY_WIRE
    found = {}
    for wire, value in live.items():
        one = fields.get(wire)
        if one is None or one.update in (IDENTITY, INTERNAL) or wire in declared:
            continue
        if not same(one, _new_object_default(one, live, kind), value) or (
                one.kind == "map" and not same(one, {}, value)):
            found[one.option] = describe(one, value)
    return found


def declared_changes(declared: Mapping[str, Any], live: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """Declared fields whose live value differs: {option: {declared, live}}."""
    fields = STREAM_BY_WIRE if kind == "stream" else CONSUMER_BY_WIRE
    return {option_names([wire], fields)[0]: {"declared": describe(fields[wire], declared[wire]),
                                              "live": describe(fields[wire], live.get(wire, fields[wire].default))}
            for wire in changed_fields(declared, live, fields)}


REPLAY_MARK = "tapio.io/replay"  # the same as tapio_replay_window.MARK


def drift_report(declared_streams: Mapping[str, Mapping[str, Any]],
                 declared_consumers: Mapping[str, Mapping[str, Mapping[str, Any]]],
                 live_streams: Mapping[str, Mapping[str, Any]],
                 live_consumers: Mapping[str, Mapping[str, Mapping[str, Any]]],
                 ignore_streams: tuple[str, ...] = ()) -> dict[str, Any]:
    """The drift of the declared objects (wire configs by name; consumers by stream, then
    name) against the live ones (configs as the server returns them)."""
    report: dict[str, Any] = {"unmanaged_streams": [], "unmanaged_consumers": {}, "missing": [],
                              "changed": {}, "undeclared": {}}
    report["unmanaged_streams"] = sorted(name for name in live_streams
                                         if name not in declared_streams and name not in ignore_streams)

    def compare(label: str, declared: Mapping[str, Any], live: Mapping[str, Any] | None, kind: str) -> None:
        if live is None:
            report["missing"].append(label)
            return
        changed, undeclared = declared_changes(declared, live, kind), undeclared_fields(declared, live, kind)
        if changed:
            report["changed"][label] = changed
        if undeclared:
            report["undeclared"][label] = undeclared

    for name, declared in sorted(declared_streams.items()):
        compare(f"stream {name}", declared, live_streams.get(name), "stream")
    for stream, consumers in sorted(declared_consumers.items()):
        for name, declared in sorted(consumers.items()):
            compare(f"consumer {stream}/{name}", declared, (live_consumers.get(stream) or {}).get(name), "consumer")
    for stream in sorted(declared_streams):
        # A replay consumer is replay.yml's (library/nats_replay_window.py), not the declaration's.
        live = {name for name, config in (live_consumers.get(stream) or {}).items()
                if (config.get("metadata") or {}).get(REPLAY_MARK) != "true"}
        extra = sorted(live - set(declared_consumers.get(stream) or {}))
        if extra:
            report["unmanaged_consumers"][stream] = extra
    return report


def drift_summary(report: Mapping[str, Any]) -> list[str]:
    """One readable line per finding; empty when nothing drifted."""
    lines = []
    for name in report["unmanaged_streams"]:
        lines.append(f"stream {name}: on the server, declared by no task")
    for stream, names in report["unmanaged_consumers"].items():
        lines.append(f"stream {stream}: consumer(s) {', '.join(names)} declared by no task")
    for label in report["missing"]:
        lines.append(f"{label}: declared, missing on the server (a run creates it)")
    for label, fields in report["changed"].items():
        shown = "; ".join(f"{k} is {v['live']!r}, declared {v['declared']!r}" for k, v in fields.items())
        lines.append(f"{label}: changed outside the toolkit: {shown} (a run puts the declared values back)")
    for label, fields in report["undeclared"].items():
        shown = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        lines.append(f"{label}: holds values no task declares (set outside the toolkit or by an earlier "
                     f"declaration): {shown} (a run leaves them)")
    return lines
