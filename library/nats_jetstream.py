#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: nats_jetstream
short_description: Ensure a set of JetStream streams and consumers in one call
description:
  - Every stream and consumer of O(streams) and O(consumers), over one connection, with the same
    rules as M(nats_stream) and M(nats_consumer) (their logic is shared in
    module_utils/tapio_jetstream.py); each entry takes that module's options.
  - Order - streams to keep or create, then consumers (created, updated or deleted), then the
    streams whose C(state) is V(absent), so a consumer's stream exists before the consumer and a
    removed stream's consumers go first.
  - Every entry is validated before anything is changed; stream names must be unique. A refusal
    (an option the server cannot change without O(recreate)) stops the call, naming the object;
    what was already done is returned.
  - Supports check mode and diff mode (one diff per changed object).
  - In check mode it also reports drift (C(drift), C(drift_summary)) - the streams on the
    server that no entry declares, the consumers of declared streams that no entry declares,
    declared fields whose live value differs (changed outside the toolkit; a run puts them
    back), and fields no entry declares that hold anything but a new object's default (set
    outside the toolkit or by an earlier declaration; a run leaves them).
version_added: "1.1.0"
author: Tapio NATS migration toolkit
requirements:
  - python >= 3.9
  - nats-py >= 2.7.2
extends_documentation_fragment:
  - tapio_nats
options:
  streams:
    description: Streams, each with the options of M(nats_stream) (C(name) required).
    type: list
    elements: dict
    default: []
  consumers:
    description: Durable consumers, each with the options of M(nats_consumer) (C(stream) and C(name) required).
    type: list
    elements: dict
    default: []
  recreate:
    description: The C(recreate) of every entry that does not set its own.
    type: bool
    default: false
  drift:
    description: Report drift also outside check mode (in check mode it is always reported).
    type: bool
    default: false
  drift_ignore:
    description: Stream names (shell patterns such as V(KV_*)) the drift report does not list as undeclared.
    type: list
    elements: str
    default: []
notes:
  - Connection options are shared by every nats_* module; see docs/modules.md.
"""

EXAMPLES = r"""
- name: Tapio's stream, its advisories stream and the pipeline's durable consumer
  ansible.legacy.nats_jetstream:
    servers: "{{ tapio_nats_servers }}"
    user: "{{ tapio_nats_user }}"
    password: "{{ tapio_nats_password }}"
    streams:
      - {name: TAPIO_EVENTS, subjects: ["tapio.events.>"], storage: file, replicas: 3, max_age: 7d}
      - {name: OLD_EVENTS, state: absent}
    consumers:
      - {stream: TAPIO_EVENTS, name: tapio-pipeline, ack_policy: explicit, max_deliver: 5}
"""

RETURN = r"""
changed:
  description: Whether any stream or consumer was (or in check mode would be) changed.
  returned: always
  type: bool
streams:
  description: Per stream name, what M(nats_stream) returns for it (operation, changed_fields, stream).
  returned: always
  type: dict
  sample: {TAPIO_EVENTS: {changed: false, operation: none, changed_fields: []}}
consumers:
  description: Per C(stream/name), what M(nats_consumer) returns for it (operation, changed_fields, consumer).
  returned: always
  type: dict
  sample: {TAPIO_EVENTS/tapio-pipeline: {changed: false, operation: none, changed_fields: []}}
drift:
  description:
    - In check mode (or with O(drift)) what differs between the declaration and the server - C(unmanaged_streams),
      C(unmanaged_consumers) (per stream), C(missing) (declared, not on the server), C(changed) (per object, each
      declared field with its declared and live value) and C(undeclared) (per object, fields no entry declares with
      their live value).
  returned: in check mode or with drift
  type: dict
drift_summary:
  description: The drift as one sentence per finding; empty when nothing drifted.
  returned: in check mode or with drift
  type: list
  elements: str
diff:
  description: One before/after per changed object (durations rendered), in diff mode only.
  returned: when diff mode is on
  type: list
  elements: dict
"""

from fnmatch import fnmatchcase
from typing import Any, Callable

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.tapio_jetstream import (
    CONSUMER_ARGUMENT_SPEC,
    CONSUMER_MUTUALLY_EXCLUSIVE,
    STREAM_ARGUMENT_SPEC,
    STREAM_MUTUALLY_EXCLUSIVE,
    ensure_consumer_absent,
    ensure_consumer_present,
    ensure_stream_absent,
    ensure_stream_present,
)
from ansible.module_utils.tapio_jetstream_drift import drift_report, drift_summary
from ansible.module_utils.tapio_jetstream_fields import desired_consumer_config, desired_stream_config
from ansible.module_utils.tapio_nats import JetStreamApi, NatsModuleError, exit_with_result, nats_module, run_with_connection

ARGUMENT_SPEC: dict[str, Any] = {
    "streams": {"type": "list", "elements": "dict", "default": []},
    "consumers": {"type": "list", "elements": "dict", "default": []},
    "recreate": {"type": "bool", "default": False},
    "drift": {"type": "bool", "default": False},
    "drift_ignore": {"type": "list", "elements": "str", "default": []},
}


class Entry:
    """One stream or consumer: validated options, desired config, and what the shared
    functions read from a module (check_mode, warn, params: recreate, force, protected)."""

    def __init__(self, module: Any, params: dict[str, Any], desired: dict[str, Any]) -> None:
        self.check_mode: bool = module.check_mode
        self.warn: Callable[[str], None] = module.warn
        self.params, self.desired = params, desired


def validated(kind: str, index: int, raw: Any, spec: dict[str, Any], exclusive: list[list[str]],
              default_recreate: bool) -> dict[str, Any]:
    """*raw* checked against the single-object module's argument spec; ValueError naming it."""
    if not isinstance(raw, dict):
        raise ValueError(f"{kind}[{index}] must be a dict, got {type(raw).__name__}")
    label = f"{kind}[{index}] ({raw.get('name', '?')})"
    checked = ArgumentSpecValidator(spec, mutually_exclusive=exclusive).validate(
        {**raw, "recreate": raw.get("recreate", default_recreate)})
    if checked.error_messages:
        raise ValueError(f"{label}: {'; '.join(checked.error_messages)}")
    return checked.validated_parameters


def plan_entries(module: Any, params: dict[str, Any]) -> tuple[list[Entry], list[Entry], list[Entry]]:
    """(streams to keep, consumers, streams to delete), every entry validated; ValueError otherwise."""
    streams = [validated("streams", i, raw, STREAM_ARGUMENT_SPEC, STREAM_MUTUALLY_EXCLUSIVE, params["recreate"])
               for i, raw in enumerate(params["streams"])]
    consumers = [validated("consumers", i, raw, CONSUMER_ARGUMENT_SPEC, CONSUMER_MUTUALLY_EXCLUSIVE,
                           params["recreate"]) for i, raw in enumerate(params["consumers"])]
    names = [stream["name"] for stream in streams]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"stream names must be unique: {', '.join(twice)} given more than once")

    def entry(kind: str, one: dict[str, Any], desired: Callable[[dict[str, Any]], dict[str, Any]]) -> Entry:
        try:
            return Entry(module, one, desired(one) if one["state"] == "present" else {})
        except ValueError as error:
            raise ValueError(f"{kind} {one['name']}: {error}") from None

    present = [entry("stream", s, desired_stream_config) for s in streams if s["state"] == "present"]
    absent = [entry("stream", s, desired_stream_config) for s in streams if s["state"] == "absent"]
    return present, [entry("consumer", c, desired_consumer_config) for c in consumers], absent


async def ensure_all(api: JetStreamApi, present: list[Entry], consumers: list[Entry],
                     absent: list[Entry]) -> dict[str, Any]:
    done: dict[str, Any] = {"streams": {}, "consumers": {}}
    try:
        for one in present:
            done["streams"][one.params["name"]] = await ensure_stream_present(one, api, one.desired)
        for one in consumers:
            stream, name = one.params["stream"], one.params["name"]
            done["consumers"][f"{stream}/{name}"] = (
                await ensure_consumer_present(one, api, stream, one.desired) if one.params["state"] == "present"
                else await ensure_consumer_absent(one, api, stream, name))
        for one in absent:
            done["streams"][one.params["name"]] = await ensure_stream_absent(one, api, one.params["name"])
    except NatsModuleError as error:
        raise NatsModuleError(str(error), {**error.result, **summary(done)}) from None
    return summary(done)


def summary(done: dict[str, Any]) -> dict[str, Any]:
    """changed, the per-object results without their diffs, and one diff per changed object."""
    diffs = [{"before_header": f"{kind[:-1]} {key}", "after_header": f"{kind[:-1]} {key}", **result["diff"]}
             for kind in ("streams", "consumers") for key, result in done[kind].items()
             if result.get("changed") and result.get("diff")]
    results = {kind: {key: {k: v for k, v in result.items() if k != "diff"} for key, result in done[kind].items()}
               for kind in ("streams", "consumers")}
    return {"changed": any(r.get("changed") for kind in results.values() for r in kind.values()), **results,
            "diff": diffs}


async def read_drift(api: JetStreamApi, present: list[Entry], consumers: list[Entry],
                     ignore: list[str]) -> dict[str, Any]:
    """The drift report of the declared entries against the server (read before any change)."""
    live_streams = {info["config"]["name"]: info["config"] for info in await api.streams()}
    declared_streams = {one.params["name"]: one.desired for one in present}
    declared_consumers: dict[str, dict[str, Any]] = {}
    for one in consumers:
        if one.params["state"] == "present":
            declared_consumers.setdefault(one.params["stream"], {})[one.params["name"]] = one.desired
    live_consumers = {name: {c["name"]: c["config"] for c in await api.consumers(name)}
                      for name in declared_streams if name in live_streams}
    ignored = tuple(name for name in live_streams if any(fnmatchcase(name, pattern) for pattern in ignore))
    report = drift_report(declared_streams, declared_consumers, live_streams, live_consumers, ignored)
    return {"drift": report, "drift_summary": drift_summary(report)}


def main() -> None:
    module = nats_module(ARGUMENT_SPEC, supports_check_mode=True)
    try:
        present, consumers, absent = plan_entries(module, module.params)
    except ValueError as error:
        module.fail_json(msg=f"{error}. Nothing was changed.")

    async def handler(nc: Any, api: JetStreamApi) -> dict[str, Any]:
        drift = {}
        if module.check_mode or module.params["drift"]:
            drift = await read_drift(api, present, consumers, module.params["drift_ignore"])
        return {**await ensure_all(api, present, consumers, absent), **drift}

    exit_with_result(module, run_with_connection(module, handler))


if __name__ == "__main__":
    main()
