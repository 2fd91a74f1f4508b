# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Every field of nats-server's StreamConfig and ConsumerConfig, declared once.

Each ``Field`` says what the module option is called, the wire field it maps to, its unit
(its *kind*), the first server release that knows it, how the server lets it change on an
existing object (``configUpdateCheckLocked`` in server/stream.go, ``checkNewConsumerConfig``
in server/consumer.go) and the value the server holds when the field is absent. From the
table come the argument specs, the wire configuration, the comparison, the merge sent on
update or recreate, the immutable-change refusals and the server-version refusals, so a
field is added in one place. Pure logic: nothing here talks to a server.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field as dataclass_field
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

from ansible.module_utils.tapio_nats_config import (
    ConfigError,
    format_duration,
    parse_duration,
    parse_size,
    subjects_overlap,
)

NS_PER_S = 1_000_000_000

# Kinds: how a value is read from the module, sent to the server and compared.
STR, INT, BOOL = "str", "int", "bool"
DURATION = "duration"      # seconds or "90s"/"7d" -> nanoseconds
SIZE = "size"              # bytes or "10GB" -> bytes
SET = "set"                # list of strings whose order means nothing (subjects)
DURATIONS = "durations"    # ordered list of durations (backoff: step n is redelivery n)
TIME = "time"              # RFC 3339 instant, compared as an instant
MAP = "map"                # str -> str metadata; the server's own "_nats." keys are not ours
DICT = "dict"              # sub-fields, compared by the sub-fields the user set
SOURCE = "source"          # a mirror: a dict of source sub-fields
SOURCES = "sources"        # a list of sources, matched by name
TRANSFORMS = "transforms"  # ordered list of {src, dest}

# Update rules: what the server allows on an existing object.
MUTABLE = "mutable"
IMMUTABLE = "immutable"          # any change refused
ONE_WAY = "on only"              # may be turned on, never off
CREATE_ONLY = "creation only"    # only read when the object is created
WORKQUEUE = "not to/from workqueue"
MIRROR = "removal only (2.12+)"
PUSH_PULL = "not push <-> pull"
IDENTITY = "identity"            # the object's name: the module's name option
INTERNAL = "internal"            # the server's own consumers; refused with a reason

SERVER_METADATA_PREFIX = "_nats."
MAX_NAME_LENGTH = 255
_STREAM_NAME_FORBIDDEN = " \t\r\n\f.*>"
_CONSUMER_NAME_FORBIDDEN = _STREAM_NAME_FORBIDDEN + "\\/"

Version = tuple[int, int, int]


@dataclass(frozen=True)
class Field:
    option: str
    wire: str
    kind: str
    since: Version
    update: str
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    # choice -> first release that accepts it, for values added after the field
    choice_since: dict[str, Version] = dataclass_field(default_factory=dict)
    sub: tuple["Field", ...] = ()
    reason: str = ""  # why the module does not set it (IDENTITY, INTERNAL)

    @property
    def settable(self) -> bool:
        return self.update not in (IDENTITY, INTERNAL)


def _sub(option: str, kind: str, since: Version, doc: str, default: Any = None, **kwargs: Any) -> Field:
    return Field(option, option, kind, since, MUTABLE, default, doc, **kwargs)


_TRANSFORM = (
    _sub("src", STR, (2, 10, 0), "Source subject (filter) of the transform.", ""),
    _sub("dest", STR, (2, 10, 0), "Destination subject of the transform.", ""),
)

_SOURCE_FIELDS = (
    _sub("name", STR, (2, 2, 0), "Source stream name.", ""),
    _sub("opt_start_seq", INT, (2, 2, 0), "First sequence to copy.", 0),
    _sub("opt_start_time", TIME, (2, 2, 0), "First time to copy from (RFC 3339)."),
    _sub("filter_subject", STR, (2, 2, 0), "Copy only this subject.", ""),
    _sub("subject_transforms", TRANSFORMS, (2, 10, 0), "Filter and rewrite subjects while copying.", [],
         sub=_TRANSFORM),
    _sub("external", DICT, (2, 2, 0), "Source in another JetStream domain or account.", {}, sub=(
        _sub("api", STR, (2, 2, 0), "API prefix, for a domain C($JS.<domain>.API).", ""),
        _sub("deliver", STR, (2, 2, 0), "Delivery prefix.", ""),
    )),
    _sub("consumer", DICT, (2, 14, 0), "Source through a durable consumer of the source stream.", {}, sub=(
        _sub("name", STR, (2, 14, 0), "Durable consumer name.", ""),
        _sub("deliver_subject", STR, (2, 14, 0), "Its delivery subject.", ""),
    )),
)

STREAM_FIELDS: tuple[Field, ...] = (
    Field("name", "name", STR, (2, 2, 0), IDENTITY, "", "Stream name.", reason="the module's name option"),
    Field("description", "description", STR, (2, 3, 3), MUTABLE, "", "Free text description."),
    Field("subjects", "subjects", SET, (2, 2, 0), MUTABLE, [],
          "Subjects the stream captures (wildcards C(*) and C(>) allowed); compared as a set."),
    Field("retention", "retention", STR, (2, 2, 0), WORKQUEUE, "limits",
          "Retention policy; V(limits) and V(interest) switch both ways, never to or from V(workqueue).",
          choices=("limits", "interest", "workqueue")),
    Field("max_consumers", "max_consumers", INT, (2, 2, 0), MUTABLE, -1, "Maximum consumers; V(-1) unlimited."),
    Field("max_msgs", "max_msgs", INT, (2, 2, 0), MUTABLE, -1, "Maximum number of messages; V(-1) unlimited."),
    Field("max_bytes", "max_bytes", SIZE, (2, 2, 0), MUTABLE, -1,
          "Maximum stream size in bytes, or a size such as V(10GB) (1024-based); V(-1) unlimited."),
    Field("max_age", "max_age", DURATION, (2, 2, 0), MUTABLE, 0,
          "Maximum message age: seconds or a duration such as V(90s), V(1h30m), V(7d); V(0) unlimited."),
    Field("max_msgs_per_subject", "max_msgs_per_subject", INT, (2, 3, 0), MUTABLE, -1,
          "Maximum messages kept per subject; V(-1) unlimited."),
    Field("max_msg_size", "max_msg_size", SIZE, (2, 2, 0), MUTABLE, -1,
          "Largest accepted message in bytes or a size such as V(1MB); V(-1) unlimited."),
    Field("discard", "discard", STR, (2, 2, 0), MUTABLE, "old", "What to discard when a limit is reached.",
          choices=("old", "new")),
    Field("storage", "storage", STR, (2, 2, 0), IMMUTABLE, "file", "Storage backend; cannot change after creation.",
          choices=("file", "memory")),
    Field("replicas", "num_replicas", INT, (2, 2, 0), MUTABLE, 1,
          "Number of replicas (1 to the cluster's JetStream peers; the server refuses more)."),
    Field("no_ack", "no_ack", BOOL, (2, 2, 0), MUTABLE, False, "Do not acknowledge publishes."),
    Field("duplicate_window", "duplicate_window", DURATION, (2, 2, 0), MUTABLE, 120 * NS_PER_S,
          "Window in which C(Nats-Msg-Id) de-duplicates, a duration; must not exceed O(max_age)."),
    Field("placement", "placement", DICT, (2, 2, 0), MUTABLE, {}, "Placement of the stream's replicas.", sub=(
        _sub("cluster", STR, (2, 2, 0), "Cluster name.", ""),
        _sub("tags", SET, (2, 2, 0), "Server tags the replicas must have; V([]) clears them.", []),
    )),
    Field("mirror", "mirror", SOURCE, (2, 2, 0), MIRROR, {},
          "Make this stream a mirror of another stream. A mirror cannot change; V({}) removes it (promotes the "
          "stream, nats-server 2.12 or later, the data is kept).", sub=_SOURCE_FIELDS),
    Field("sources", "sources", SOURCES, (2, 2, 0), MUTABLE, [],
          "Streams this stream aggregates, matched by name.", sub=_SOURCE_FIELDS),
    Field("compression", "compression", STR, (2, 10, 0), MUTABLE, "none", "Storage compression.",
          choices=("none", "s2")),
    Field("first_seq", "first_seq", INT, (2, 10, 0), CREATE_ONLY, 0, "First sequence number; only at creation."),
    Field("subject_transform", "subject_transform", DICT, (2, 10, 0), MUTABLE, {},
          "Rewrite the subjects of stored messages.", sub=_TRANSFORM),
    Field("republish", "republish", DICT, (2, 8, 3), MUTABLE, {},
          "Republish stored messages to another subject.", sub=(
              _sub("src", STR, (2, 8, 3), "Subjects to republish (default all).", ""),
              _sub("dest", STR, (2, 8, 3), "Destination subject.", ""),
              _sub("headers_only", BOOL, (2, 9, 0), "Republish headers only.", False),
          )),
    Field("allow_direct", "allow_direct", BOOL, (2, 9, 0), MUTABLE, False,
          "Allow direct get of messages from any replica."),
    Field("mirror_direct", "mirror_direct", BOOL, (2, 9, 0), INTERNAL, False,
          "A mirror answers direct gets for its origin.",
          reason="the server sets it from the origin stream's allow_direct, whatever the request says"),
    Field("discard_new_per_subject", "discard_new_per_subject", BOOL, (2, 9, 1), MUTABLE, False,
          "Discard new messages per subject (needs O(discard=new) and O(max_msgs_per_subject))."),
    Field("sealed", "sealed", BOOL, (2, 6, 2), ONE_WAY, False,
          "Seal the stream: no more messages, deletes or purges; cannot be undone."),
    Field("deny_delete", "deny_delete", BOOL, (2, 6, 2), ONE_WAY, False, "Refuse message deletion; cannot be turned off."),
    Field("deny_purge", "deny_purge", BOOL, (2, 6, 2), ONE_WAY, False, "Refuse purges; cannot be turned off."),
    Field("allow_rollup_hdrs", "allow_rollup_hdrs", BOOL, (2, 6, 2), MUTABLE, False,
          "Allow the C(Nats-Rollup) header to replace a subject's messages."),
    Field("consumer_limits", "consumer_limits", DICT, (2, 10, 0), MUTABLE, {},
          "Limits every consumer of the stream must keep.", sub=(
              _sub("inactive_threshold", DURATION, (2, 10, 0), "Largest inactive threshold (duration).", 0),
              _sub("max_ack_pending", INT, (2, 10, 0), "Largest max_ack_pending.", 0),
          )),
    Field("allow_msg_ttl", "allow_msg_ttl", BOOL, (2, 11, 0), ONE_WAY, False,
          "Allow per-message TTLs (C(Nats-TTL) header); cannot be turned off."),
    Field("subject_delete_marker_ttl", "subject_delete_marker_ttl", DURATION, (2, 11, 0), MUTABLE, 0,
          "Leave a delete marker this long when max_age removes a subject's last message (duration)."),
    Field("allow_msg_counter", "allow_msg_counter", BOOL, (2, 12, 0), IMMUTABLE, False,
          "A counter stream (C(Nats-Incr) header); cannot change after creation."),
    Field("allow_atomic", "allow_atomic", BOOL, (2, 12, 0), MUTABLE, False, "Allow atomic batch publish."),
    Field("allow_msg_schedules", "allow_msg_schedules", BOOL, (2, 12, 0), ONE_WAY, False,
          "Allow scheduled messages; cannot be turned off."),
    Field("persist_mode", "persist_mode", STR, (2, 12, 0), IMMUTABLE, "default",
          "V(async) acknowledges before the write is flushed (file storage, one replica); cannot change.",
          choices=("default", "async")),
    Field("allow_batched", "allow_batched", BOOL, (2, 14, 0), MUTABLE, False, "Allow fast batch publish."),
    Field("metadata", "metadata", MAP, (2, 10, 0), MUTABLE, {},
          "Your key/value metadata (the server's own C(_nats.*) keys are left alone)."),
)

CONSUMER_FIELDS: tuple[Field, ...] = (
    Field("name", "durable_name", STR, (2, 2, 0), IDENTITY, "", "Durable consumer name.",
          reason="the module's name option"),
    Field("name", "name", STR, (2, 9, 0), IDENTITY, "", "Consumer name.", reason="the module's name option"),
    Field("description", "description", STR, (2, 3, 3), MUTABLE, "", "Free text description."),
    Field("deliver_policy", "deliver_policy", STR, (2, 2, 0), IMMUTABLE, "all",
          "Where delivery starts; cannot change.",
          choices=("all", "last", "new", "by_start_sequence", "by_start_time", "last_per_subject")),
    Field("opt_start_seq", "opt_start_seq", INT, (2, 2, 0), IMMUTABLE, 0,
          "First sequence when O(deliver_policy=by_start_sequence); cannot change."),
    Field("opt_start_time", "opt_start_time", TIME, (2, 2, 0), IMMUTABLE, None,
          "First time (RFC 3339) when O(deliver_policy=by_start_time); compared as an instant; cannot change."),
    Field("ack_policy", "ack_policy", STR, (2, 2, 0), IMMUTABLE, "none",
          "How messages are acknowledged; a new consumer gets V(explicit) when this is not set, and a recreate "
          "keeps the live one. Cannot change.",
          choices=("explicit", "all", "none", "flow_control"), choice_since={"flow_control": (2, 14, 0)}),
    Field("ack_wait", "ack_wait", DURATION, (2, 2, 0), MUTABLE, 30 * NS_PER_S,
          "Time the server waits for an ack before redelivering (duration)."),
    Field("max_deliver", "max_deliver", INT, (2, 2, 0), MUTABLE, -1,
          "Maximum delivery attempts per message (V(-1) unlimited); at this limit the server emits a "
          "MAX_DELIVERIES advisory."),
    Field("backoff", "backoff", DURATIONS, (2, 7, 1), MUTABLE, [],
          "Redelivery delays in order (step n is the delay before redelivery n); at most O(max_deliver) steps."),
    Field("filter_subject", "filter_subject", STR, (2, 2, 0), MUTABLE, "",
          "Deliver only messages on this subject; setting it replaces O(filter_subjects)."),
    Field("filter_subjects", "filter_subjects", SET, (2, 10, 0), MUTABLE, [],
          "Deliver only messages on these subjects (a set); setting it replaces O(filter_subject)."),
    Field("replay_policy", "replay_policy", STR, (2, 2, 0), IMMUTABLE, "instant",
          "Deliver as fast as possible or at the original rate; cannot change.", choices=("instant", "original")),
    Field("rate_limit_bps", "rate_limit_bps", INT, (2, 2, 0), MUTABLE, 0,
          "Push consumers: delivery rate limit in bits per second."),
    Field("sample_freq", "sample_freq", STR, (2, 2, 0), MUTABLE, "",
          "Percentage of acks sampled as advisories, such as V(10%)."),
    Field("max_waiting", "max_waiting", INT, (2, 2, 0), IMMUTABLE, 512,
          "Pull consumers: maximum outstanding pull requests; cannot change."),
    Field("max_ack_pending", "max_ack_pending", INT, (2, 2, 0), MUTABLE, 1000,
          "Maximum unacknowledged messages in flight; delivery stops at this limit."),
    Field("flow_control", "flow_control", BOOL, (2, 2, 0), IMMUTABLE, False,
          "Push consumers: flow control (needs O(idle_heartbeat)); cannot change."),
    Field("headers_only", "headers_only", BOOL, (2, 6, 2), MUTABLE, False, "Deliver headers only."),
    Field("max_batch", "max_batch", INT, (2, 7, 0), MUTABLE, 0, "Pull consumers: largest batch one pull may ask for."),
    Field("max_expires", "max_expires", DURATION, (2, 7, 0), MUTABLE, 0,
          "Pull consumers: longest expiry one pull may ask for (duration)."),
    Field("max_bytes", "max_bytes", SIZE, (2, 8, 3), MUTABLE, 0,
          "Pull consumers: most bytes one pull may ask for (bytes or a size such as V(1MB))."),
    Field("deliver_subject", "deliver_subject", STR, (2, 2, 0), PUSH_PULL, "",
          "Push consumers only: the subject messages are pushed to. Pull vs push cannot change."),
    Field("deliver_group", "deliver_group", STR, (2, 4, 0), MUTABLE, "", "Push consumers: queue group of the subscribers."),
    Field("idle_heartbeat", "idle_heartbeat", DURATION, (2, 2, 0), IMMUTABLE, 0,
          "Push consumers: heartbeat interval (duration); cannot change."),
    Field("inactive_threshold", "inactive_threshold", DURATION, (2, 7, 0), MUTABLE, 0,
          "Delete the consumer after this long without activity (duration). On a durable consumer this removes it."),
    Field("replicas", "num_replicas", INT, (2, 8, 3), MUTABLE, 0,
          "Consumer replicas (V(0) inherits the stream's; at most the stream's)."),
    Field("mem_storage", "mem_storage", BOOL, (2, 8, 3), IMMUTABLE, False,
          "Keep the consumer's state in memory; cannot change."),
    Field("direct", "direct", BOOL, (2, 8, 3), INTERNAL, False, "Direct consumer.",
          reason="the server's own ephemeral consumers of mirrors and sources; a durable consumer cannot be direct"),
    Field("sourcing", "sourcing", BOOL, (2, 14, 0), INTERNAL, False, "Sourcing consumer.",
          reason="set by the server for the consumers that feed a stream's sources"),
    Field("metadata", "metadata", MAP, (2, 10, 0), MUTABLE, {},
          "Your key/value metadata (the server's own C(_nats.*) keys are left alone)."),
    Field("pause_until", "pause_until", TIME, (2, 11, 0), MUTABLE, None,
          "Pause delivery until this time (RFC 3339), compared as an instant; changed through the server's pause API."),
    Field("priority_groups", "priority_groups", SET, (2, 11, 0), MUTABLE, [], "Pull consumers: priority group names."),
    Field("priority_policy", "priority_policy", STR, (2, 11, 0), MUTABLE, "none",
          "Pull consumers: how priority groups share messages.",
          choices=("none", "overflow", "pinned_client", "prioritized"), choice_since={"prioritized": (2, 12, 0)}),
    Field("priority_timeout", "priority_timeout", DURATION, (2, 11, 0), MUTABLE, 0,
          "Pull consumers: how long a pinned client keeps its pin (duration)."),
)

STREAM_BY_WIRE = {f.wire: f for f in STREAM_FIELDS}
CONSUMER_BY_WIRE = {f.wire: f for f in CONSUMER_FIELDS}
# Setting one clears the other: the server refuses both together (err 10136).
EXCLUSIVE_FIELDS = {"filter_subject": "filter_subjects", "filter_subjects": "filter_subject"}
PUSH_ONLY = ("deliver_group", "idle_heartbeat", "flow_control", "rate_limit_bps")
PULL_ONLY = ("max_waiting", "max_batch", "max_expires", "max_bytes", "priority_groups", "priority_policy",
             "priority_timeout")


# --------------------------------------------------------------------------- argument specs

_ANSIBLE_TYPE = {STR: "str", INT: "int", BOOL: "bool", DURATION: "raw", SIZE: "raw", SET: "list",
                 DURATIONS: "list", TIME: "str", MAP: "dict", DICT: "dict", SOURCE: "dict", SOURCES: "list",
                 TRANSFORMS: "list"}


def option_spec(one: Field) -> dict[str, Any]:
    """The Ansible argument spec of one field (no default: unset means leave as it is)."""
    spec: dict[str, Any] = {"type": _ANSIBLE_TYPE[one.kind]}
    if one.kind == SET:
        spec["elements"] = "str"
    elif one.kind == DURATIONS:
        spec["elements"] = "raw"
    elif one.kind in (SOURCES, TRANSFORMS):
        spec["elements"] = "dict"
    if one.choices:
        spec["choices"] = list(one.choices)
    if one.sub:
        spec["options"] = {s.option: option_spec(s) for s in one.sub}
    return spec


def argument_spec(fields: tuple[Field, ...]) -> dict[str, Any]:
    return {f.option: option_spec(f) for f in fields if f.settable}


# --------------------------------------------------------------------------- names and versions


def name_problem(kind: str, name: str) -> str:
    """Why *name* cannot be a stream ("stream") or consumer ("consumer") name, or ""."""
    forbidden = _STREAM_NAME_FORBIDDEN if kind == "stream" else _CONSUMER_NAME_FORBIDDEN
    if not name:
        return f"{kind} name must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"{kind} name {name[:20]!r}... is longer than {MAX_NAME_LENGTH} characters"
    bad = sorted({c for c in name if c in forbidden})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        return (f"{kind} name {name!r} contains {shown}; a name cannot contain whitespace, '.', '*', '>'"
                + (", '\\' or '/'" if kind == "consumer" else ""))
    return ""


def parse_version(text: Any) -> Optional[Version]:
    """'2.15.1' or 'v2.11.0-RC.1' -> (2, 15, 1); None when it cannot be read."""
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", str(text or ""))
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def _version_text(version: Version) -> str:
    return ".".join(str(p) for p in version)


def version_problems(desired: Mapping[str, Any], fields: Mapping[str, Field], server: Optional[Version]) -> list[str]:
    """Fields (and sub-fields and choice values) the connected server is too old to know."""
    if server is None:
        return []
    problems: list[str] = []

    def walk(values: Mapping[str, Any], known: Mapping[str, Field], path: str) -> None:
        for key, value in values.items():
            one = known.get(key)
            if one is None or value is None:
                continue
            label = f"{path}{one.option}"
            if one.since > server:
                problems.append(f"{label} needs nats-server {_version_text(one.since)} or later "
                                f"(the server is {_version_text(server)})")
                continue
            since = one.choice_since.get(value) if isinstance(value, str) else None
            if since and since > server:
                problems.append(f"{label}={value} needs nats-server {_version_text(since)} or later "
                                f"(the server is {_version_text(server)})")
            subs = {s.wire: s for s in one.sub}
            items = value if isinstance(value, list) else [value]
            for item in items:
                if subs and isinstance(item, Mapping):
                    walk(item, subs, f"{label}.")

    walk(desired, fields, "")
    return problems


# --------------------------------------------------------------------------- building wire values


def normal_time(value: Any, label: str) -> str:
    """An RFC 3339 instant in UTC as the server writes it (trailing Z)."""
    text = str(value).strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{label}: {value!r} is not an RFC 3339 time such as 2026-01-31T12:00:00Z") from None
    if moment.tzinfo is None:
        raise ConfigError(f"{label}: {value!r} has no time zone; add Z or an offset such as +01:00")
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def to_wire(one: Field, value: Any, label: str) -> Any:
    """A module option value in the server's form (ConfigError naming *label* otherwise)."""
    if one.kind == DURATION:
        return parse_duration(value, label)
    if one.kind == SIZE:
        return parse_size(value, label)
    if one.kind == DURATIONS:
        return [parse_duration(item, label) for item in value]
    if one.kind == TIME:
        return normal_time(value, label)
    if one.kind == MAP:
        return {str(k): str(v) for k, v in (value or {}).items()}
    if one.kind in (DICT, SOURCE):
        return _dict_to_wire(one, value, label)
    if one.kind == SOURCES:
        return [_dict_to_wire(one, item, f"{label}[{i}]") for i, item in enumerate(value)]
    if one.kind == TRANSFORMS:
        return [_dict_to_wire(one, item, f"{label}[{i}]") for i, item in enumerate(value)]
    return value


def _dict_to_wire(one: Field, value: Mapping[str, Any], label: str) -> dict[str, Any]:
    subs = {s.option: s for s in one.sub}
    wire: dict[str, Any] = {}
    for key, item in (value or {}).items():
        if item is None or key not in subs:
            continue
        wire[subs[key].wire] = to_wire(subs[key], item, f"{label}.{key}")
    if one.kind in (SOURCE, SOURCES) and wire and not wire.get("name"):
        raise ConfigError(f"{label}: every source needs a name")
    return wire


def desired_config(params: Mapping[str, Any], fields: tuple[Field, ...]) -> dict[str, Any]:
    """The wire fields of the options the user set (unset options are left out)."""
    config: dict[str, Any] = {}
    for one in fields:
        if not one.settable or params.get(one.option) is None:
            continue
        config[one.wire] = to_wire(one, params[one.option], one.option)
    return config


def desired_stream_config(params: Mapping[str, Any]) -> dict[str, Any]:
    problem = name_problem("stream", params["name"])
    if problem:
        raise ConfigError(problem)
    return {"name": params["name"], **desired_config(params, STREAM_FIELDS)}


def desired_consumer_config(params: Mapping[str, Any]) -> dict[str, Any]:
    problem = name_problem("consumer", params["name"])
    if problem:
        raise ConfigError(problem)
    return {"durable_name": params["name"], "name": params["name"], **desired_config(params, CONSUMER_FIELDS)}


# --------------------------------------------------------------------------- comparison


def _instant(value: Any) -> Optional[datetime]:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def same(one: Field, desired: Any, current: Any) -> bool:
    """Whether the user's value equals the server's for this field (current None = default)."""
    if current is None:
        current = one.default
    if one.kind == SET:
        return sorted(desired or []) == sorted(current or [])
    if one.kind == TIME:
        return _instant(desired) == _instant(current)
    if one.kind == MAP:
        ours = {k: v for k, v in (current or {}).items() if not k.startswith(SERVER_METADATA_PREFIX)}
        return dict(desired or {}) == ours
    if one.kind in (DICT, SOURCE):
        if one.kind == SOURCE and not desired:
            return not current
        current = current or {}
        subs = {s.wire: s for s in one.sub}
        return all(same(subs[k], v, current.get(k)) for k, v in desired.items() if k in subs)
    if one.kind == SOURCES:
        desired, current = list(desired or []), list(current or [])
        if len(desired) != len(current):
            return False
        source = Field(one.option, one.wire, SOURCE, one.since, MUTABLE, {}, "", sub=one.sub)
        return all(same(source, d, c) for d, c in zip(sorted(desired, key=_source_key),
                                                       sorted(current, key=_source_key)))
    if one.kind == TRANSFORMS:
        return [(t.get("src", ""), t.get("dest", "")) for t in desired or []] == \
            [(t.get("src", ""), t.get("dest", "")) for t in current or []]
    return desired == current


def _source_key(source: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(source.get("name", "")), str(source.get("filter_subject", "")),
            str((source.get("external") or {}).get("api", "")))


def changed_fields(desired: Mapping[str, Any], current: Mapping[str, Any], fields: Mapping[str, Field]) -> list[str]:
    """Wire names of the fields the user set whose value differs from the server's."""
    return sorted(key for key, value in desired.items()
                  if key in fields and fields[key].settable and not same(fields[key], value, current.get(key)))


def option_names(wire_names: list[str], fields: Mapping[str, Field]) -> list[str]:
    """Wire names as the module's option names (num_replicas -> replicas)."""
    return sorted(fields[w].option if w in fields else w for w in wire_names)


def merged_config(current: Mapping[str, Any], desired: Mapping[str, Any], fields: Mapping[str, Field]) -> dict[str, Any]:
    """The whole configuration to send on update or recreate: the server's, with the user's
    fields on top. Sub-fields merge into the server's (placement.cluster keeps the tags), the
    server's ``_nats.`` metadata is kept, setting one filter field drops the other, and an
    empty mirror removes the mirror."""
    merged = {k: v for k, v in current.items()}
    for key, value in desired.items():
        one = fields.get(key)
        if one is not None and one.kind in (DICT,) and isinstance(current.get(key), Mapping):
            merged[key] = _merge_dict(one, current[key], value)
        elif one is not None and one.kind == MAP:
            merged[key] = {**{k: v for k, v in (current.get(key) or {}).items()
                              if k.startswith(SERVER_METADATA_PREFIX)}, **value}
        else:
            merged[key] = value
        if key in EXCLUSIVE_FIELDS and value:
            merged.pop(EXCLUSIVE_FIELDS[key], None)
    if "mirror" in desired and not desired["mirror"]:
        merged.pop("mirror", None)
    for key in ("placement", "subject_transform", "republish"):
        if key in merged and not merged[key]:
            merged.pop(key)
    return merged


def _merge_dict(one: Field, current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    subs = {s.wire: s for s in one.sub}
    merged = dict(current)
    for key, value in desired.items():
        sub = subs.get(key)
        if sub is not None and sub.kind == DICT and isinstance(current.get(key), Mapping):
            merged[key] = _merge_dict(sub, current[key], value)
        else:
            merged[key] = value
    return {k: v for k, v in merged.items() if v not in (None, "", [], {})}


# --------------------------------------------------------------------------- what cannot change


def immutable_changes(desired: Mapping[str, Any], current: Mapping[str, Any], fields: Mapping[str, Field],
                      server: Optional[Version] = None) -> list[tuple[str, Any, Any]]:
    """(option, current, requested) for every requested change the server refuses on an
    existing object, per the rules of its update check."""
    problems: list[tuple[str, Any, Any]] = []
    for key in changed_fields(desired, current, fields):
        one, wanted = fields[key], desired[key]
        have = current.get(key, one.default)
        refused = False
        if one.update in (IMMUTABLE, CREATE_ONLY):
            refused = True
        elif one.update == ONE_WAY:
            refused = bool(have) and not wanted
        elif one.update == WORKQUEUE:
            refused = "workqueue" in (wanted, have)
        elif one.update == MIRROR:
            # Promotion (an empty mirror) is allowed from 2.12; any other change never.
            refused = bool(wanted) or (server is not None and server < (2, 12, 0))
        elif one.update == PUSH_PULL:
            refused = bool(have) != bool(wanted)
        if refused:
            problems.append((one.option, have if have not in (None,) else one.default, wanted))
    return problems


# --------------------------------------------------------------------------- cross-field checks


def effective(key: str, desired: Mapping[str, Any], current: Optional[Mapping[str, Any]],
              fields: Mapping[str, Field]) -> Any:
    """The value a field will have after the change."""
    if key in desired:
        return desired[key]
    if current is not None and key in current:
        return current[key]
    return fields[key].default if key in fields else None


def stream_problems(desired: Mapping[str, Any], current: Optional[Mapping[str, Any]]) -> list[str]:
    """Problems with a stream request that must stop the module before it changes anything."""
    def value(key: str) -> Any:
        return effective(key, desired, current, STREAM_BY_WIRE)

    problems = []
    if "num_replicas" in desired and desired["num_replicas"] < 1:
        problems.append(f"replicas must be at least 1, got {desired['num_replicas']}")
    if "duplicate_window" in desired or "max_age" in desired:
        window, max_age = value("duplicate_window"), value("max_age")
        if window and max_age and window > max_age:
            problems.append(f"duplicate_window ({format_duration(window)}) must not exceed "
                            f"max_age ({format_duration(max_age)})")
    mirror = value("mirror")
    if current is None and not mirror and not desired.get("subjects") and not desired.get("sources"):
        problems.append("a new stream needs subjects (or a mirror or sources)")
    if mirror and desired.get("subjects"):
        problems.append("a mirror stream cannot have subjects")
    if mirror and desired.get("sources"):
        problems.append("a mirror stream cannot have sources")
    if current is None and mirror and desired.get("first_seq"):
        problems.append("a mirror stream cannot set first_seq")
    if value("discard_new_per_subject") and ("discard_new_per_subject" in desired or "discard" in desired
                                             or "max_msgs_per_subject" in desired):
        if value("discard") != "new":
            problems.append("discard_new_per_subject needs discard=new")
        if (value("max_msgs_per_subject") or 0) <= 0:
            problems.append("discard_new_per_subject needs max_msgs_per_subject greater than 0")
    if value("persist_mode") == "async" and ("persist_mode" in desired or "num_replicas" in desired):
        if value("storage") != "file":
            problems.append("persist_mode=async needs file storage")
        if (value("num_replicas") or 1) > 1:
            problems.append("persist_mode=async needs replicas=1")
    if desired.get("subject_delete_marker_ttl") and not value("allow_msg_ttl"):
        problems.append("subject_delete_marker_ttl needs allow_msg_ttl=true")
    if current is None and desired.get("sealed"):
        problems.append("a new stream cannot be sealed; seal it once it exists")
    return problems


def consumer_problems(desired: Mapping[str, Any], current: Optional[Mapping[str, Any]],
                      stream: Mapping[str, Any]) -> list[str]:
    """Problems with a consumer request (against its stream's configuration) that must stop
    the module before it changes anything."""
    def value(key: str) -> Any:
        return effective(key, desired, current, CONSUMER_BY_WIRE)

    problems = []
    policy = value("deliver_policy")
    if policy == "by_start_sequence" and not value("opt_start_seq"):
        problems.append("deliver_policy by_start_sequence needs opt_start_seq")
    if policy != "by_start_sequence" and desired.get("opt_start_seq"):
        problems.append("opt_start_seq is only valid with deliver_policy by_start_sequence")
    if policy == "by_start_time" and not value("opt_start_time"):
        problems.append("deliver_policy by_start_time needs opt_start_time")
    if policy != "by_start_time" and desired.get("opt_start_time"):
        problems.append("opt_start_time is only valid with deliver_policy by_start_time")
    filters = value("filter_subjects") if "filter_subjects" in desired or not desired.get("filter_subject") else []
    single = value("filter_subject") if "filter_subject" in desired or not desired.get("filter_subjects") else ""
    if policy == "last_per_subject" and not (filters or single):
        problems.append("deliver_policy last_per_subject needs a filter subject")
    backoff = desired.get("backoff") or []
    if backoff and desired.get("ack_wait") is not None and desired["ack_wait"] != backoff[0]:
        problems.append(f"with backoff the server uses the first step ({format_duration(backoff[0])}) as "
                        f"ack_wait; drop ack_wait or set it to {format_duration(backoff[0])}")
    backoff = value("backoff") or []
    max_deliver = value("max_deliver")
    if backoff and max_deliver not in (None, 0, -1) and len(backoff) > max_deliver:
        problems.append(f"backoff has {len(backoff)} steps but max_deliver is {max_deliver}: "
                        "at most max_deliver steps")
    stream_subjects = stream.get("subjects") or []
    for subject in ([single] if single else []) + list(filters or []):
        if stream_subjects and not any(subjects_overlap(subject, s) for s in stream_subjects):
            problems.append(f"filter subject {subject!r} matches none of the stream's subjects {stream_subjects}")
    replicas, stream_replicas = desired.get("num_replicas"), int(stream.get("num_replicas") or 1)
    if replicas is not None and replicas > stream_replicas:
        problems.append(f"replicas={replicas} exceeds the stream's {stream_replicas}")
    if replicas and replicas != stream_replicas and stream.get("retention") in ("interest", "workqueue"):
        problems.append(f"a consumer of an {stream['retention']} stream has the stream's replicas "
                        f"({stream_replicas}) or 0")
    push = bool(value("deliver_subject"))
    wrong = [k for k in (PULL_ONLY if push else PUSH_ONLY) if desired.get(k) not in (None, 0, "", False, [], "none")]
    if wrong:
        kind = "pull" if push else "push"
        options = ", ".join(CONSUMER_BY_WIRE[k].option for k in wrong)
        problems.append(f"{options} apply to {kind} consumers only (deliver_subject "
                        f"{'makes this a push' if push else 'is unset: this is a pull'} consumer)")
    if desired.get("flow_control") and not value("idle_heartbeat"):
        problems.append("flow_control needs idle_heartbeat")
    if value("ack_policy") == "none" and desired.get("max_ack_pending") and push:
        problems.append("max_ack_pending needs an ack policy other than none")
    if value("priority_policy") not in (None, "none") and not value("priority_groups"):
        problems.append("priority_policy needs priority_groups")
    return problems


# --------------------------------------------------------------------------- for people


def describe(one: Optional[Field], value: Any) -> Any:
    """A value as a person reads it: durations rendered, the server's metadata left out."""
    if one is None:
        return value
    if one.kind == DURATION and isinstance(value, int):
        return format_duration(value)
    if one.kind == DURATIONS and isinstance(value, list):
        return [format_duration(v) if isinstance(v, int) else v for v in value]
    if one.kind == MAP and isinstance(value, Mapping):
        return {k: v for k, v in sorted(value.items()) if not k.startswith(SERVER_METADATA_PREFIX)}
    if one.kind in (DICT, SOURCE) and isinstance(value, Mapping):
        subs = {s.wire: s for s in one.sub}
        return {k: describe(subs.get(k), v) for k, v in sorted(value.items())}
    if one.kind == SOURCES and isinstance(value, list):
        source = Field(one.option, one.wire, SOURCE, one.since, MUTABLE, {}, "", sub=one.sub)
        return [describe(source, item) for item in value]
    return value


def readable(config: Optional[Mapping[str, Any]], fields: Mapping[str, Field]) -> dict[str, Any]:
    """A configuration for diffs and messages: durations rendered, empty server bookkeeping
    (the server's metadata, empty consumer limits) left out."""
    shown = {}
    for key, value in sorted((config or {}).items()):
        value = describe(fields.get(key), value)
        if key in ("metadata", "consumer_limits") and not value:
            continue
        shown[key] = value
    return shown
