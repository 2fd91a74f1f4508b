# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Pure logic shared by the nats_* modules: units, normalisation, comparison, validation.

Everything here works on JetStream *wire* values (durations in nanoseconds, sizes in
bytes), the form the server returns and `/jsz` shows, so desired and current
configurations are compared in one unit. Nothing here talks to a server; the functions are
unit-tested in tests/unit/test_nats_config.py.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional

NS_PER_S = 1_000_000_000

_DURATION_UNITS_NS: dict[str, float] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": NS_PER_S,
    "m": 60 * NS_PER_S,
    "h": 3_600 * NS_PER_S,
    "d": 86_400 * NS_PER_S,
    "w": 604_800 * NS_PER_S,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")

_SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2,
    "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3,
    "t": 1024 ** 4, "tb": 1024 ** 4, "tib": 1024 ** 4,
}
_SIZE = re.compile(r"^(-?\d+(?:\.\d+)?)\s*([a-zA-Z]*)$")


class ConfigError(ValueError):
    """A user-supplied value that cannot be used; the message is shown as is."""


# --------------------------------------------------------------------------- units


def parse_duration(value: Any, field: str = "duration") -> int:
    """Return *value* as nanoseconds.

    Numbers (and strings of digits) are seconds; strings use Go-style units plus days and
    weeks, combined as in ``1h30m``: ``90s``, ``2m``, ``7d``, ``500ms``.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a duration such as '90s', '2m', '7d' or seconds, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"{field}: a duration cannot be negative, got {value!r}")
        return int(round(value * NS_PER_S))
    text = str(value).strip().lower()
    if _NUMBER.match(text):
        return int(round(float(text) * NS_PER_S))
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS_NS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ConfigError(
            f"{field}: cannot parse duration {value!r}; use a number of seconds or units "
            "ns, us, ms, s, m, h, d, w (for example '90s', '2m', '1h30m', '7d')"
        )
    return int(round(total))


def format_duration(nanoseconds: int) -> str:
    """Render nanoseconds in the largest whole units: ``120000000000`` -> ``2m``."""
    if nanoseconds == 0:
        return "0s"
    parts: list[str] = []
    remaining = int(nanoseconds)
    for unit in ("d", "h", "m", "s", "ms", "us", "ns"):
        size = int(_DURATION_UNITS_NS[unit])
        if remaining >= size:
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(parts)


def parse_size(value: Any, field: str = "size") -> int:
    """Return *value* as bytes; accepts integers and strings like ``10GB`` or ``512MiB``.

    Units are powers of 1024 (KB = KiB), as the nats CLI treats them. -1 means unlimited.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a size such as 1073741824, '512MB' or '10GB', got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    match = _SIZE.match(str(value).strip())
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ConfigError(f"{field}: cannot parse size {value!r}; use bytes or units KB, MB, GB, TB (1024-based)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


# --------------------------------------------------------------------------- subjects


def subjects_overlap(first: str, second: str) -> bool:
    """True when some subject matches both patterns (``*`` one token, ``>`` one or more)."""
    a_tokens, b_tokens = first.split("."), second.split(".")
    for a, b in zip(a_tokens, b_tokens):
        if a == ">" or b == ">":
            return True
        if a != b and a != "*" and b != "*":
            return False
    return len(a_tokens) == len(b_tokens)


def subject_is_within(subject: str, pattern: str) -> bool:
    """True when every subject matched by *subject* is also matched by *pattern*."""
    s_tokens, p_tokens = subject.split("."), pattern.split(".")
    for index, p in enumerate(p_tokens):
        if p == ">":
            return len(s_tokens) > index
        if index >= len(s_tokens):
            return False
        s = s_tokens[index]
        if p == "*":
            if s == ">":
                return False
            continue
        if s != p:
            return False
    return len(s_tokens) == len(p_tokens)


def find_overlapping_stream(
    name: str, subjects: Iterable[str], streams: Iterable[Mapping[str, Any]]
) -> Optional[tuple[str, str, str]]:
    """Return (other stream, its subject, our subject) for the first overlap, or None."""
    wanted = list(subjects)
    for stream in streams:
        config = stream.get("config", stream)
        if config.get("name") == name:
            continue
        for theirs in config.get("subjects") or []:
            for ours in wanted:
                if subjects_overlap(ours, theirs):
                    return str(config.get("name")), theirs, ours
    return None


# --------------------------------------------------------------------------- comparison


def values_equal(desired: Any, current: Any) -> bool:
    """Compare a user-set value with the server's: dicts by the keys the user set,
    lists of scalars as sets, lists of dicts pairwise after sorting by name."""
    if isinstance(desired, Mapping):
        if not isinstance(current, Mapping):
            return not desired
        return all(values_equal(v, current.get(k, _EMPTY_FOR.get(type(v)))) for k, v in desired.items() if v is not None)
    if isinstance(desired, list):
        current_list = list(current or [])
        if len(desired) != len(current_list):
            return False
        if all(isinstance(item, Mapping) for item in desired):
            key = lambda item: str(item.get("name", ""))  # noqa: E731
            return all(values_equal(d, c) for d, c in zip(sorted(desired, key=key), sorted(current_list, key=key)))
        try:
            return sorted(desired) == sorted(current_list)
        except TypeError:
            return desired == current_list
    if current is None:
        return desired in (None, "", 0, False, [], {})
    return desired == current


_EMPTY_FOR: dict[type, Any] = {str: "", list: [], dict: {}, bool: False}


def changed_fields(desired: Mapping[str, Any], current: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """Names of the fields the user set whose value differs from the server's.

    A field the server omits is read as its server default, so ``description: ""`` or
    ``compression: none`` on a stream that never had them is not a change.
    """
    changed = []
    for key, value in desired.items():
        if value is None:
            continue
        have = current.get(key, defaults.get(key))
        if not values_equal(value, have):
            changed.append(key)
    return sorted(changed)


def merge_config(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration to send on update: the server's, with the user's fields on top."""
    merged = dict(current)
    merged.update({k: v for k, v in desired.items() if v is not None})
    return merged


def describe_value(field: str, value: Any) -> Any:
    """A value as a person reads it: durations rendered, everything else unchanged."""
    if field in DURATION_FIELDS and isinstance(value, int):
        return format_duration(value)
    if field == "backoff" and isinstance(value, list):
        return [format_duration(v) for v in value]
    return value


def readable(config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """A configuration for diffs and messages: durations rendered, server bookkeeping
    (``metadata``, ``consumer_limits``) left out."""
    return {k: describe_value(k, v) for k, v in sorted((config or {}).items())
            if k not in ("metadata", "consumer_limits")}


DURATION_FIELDS = frozenset({"max_age", "duplicate_window", "ack_wait", "idle_heartbeat", "inactive_threshold"})

# --------------------------------------------------------------------------- streams

STREAM_DEFAULTS: dict[str, Any] = {
    "subjects": [],
    "retention": "limits",
    "storage": "file",
    "num_replicas": 1,
    "max_age": 0,
    "max_bytes": -1,
    "max_msgs": -1,
    "max_msgs_per_subject": -1,
    "max_msg_size": -1,
    "discard": "old",
    "duplicate_window": 120 * NS_PER_S,
    "compression": "none",
    "allow_direct": False,
    "deny_delete": False,
    "deny_purge": False,
    "description": "",
    "placement": {},
    "sources": [],
}

# module option -> wire field
STREAM_FIELD_MAP: dict[str, str] = {
    "subjects": "subjects",
    "retention": "retention",
    "storage": "storage",
    "replicas": "num_replicas",
    "max_age": "max_age",
    "max_bytes": "max_bytes",
    "max_msgs": "max_msgs",
    "max_msgs_per_subject": "max_msgs_per_subject",
    "max_msg_size": "max_msg_size",
    "discard": "discard",
    "duplicate_window": "duplicate_window",
    "compression": "compression",
    "allow_direct": "allow_direct",
    "deny_delete": "deny_delete",
    "deny_purge": "deny_purge",
    "description": "description",
    "placement": "placement",
    "mirror": "mirror",
    "sources": "sources",
}


def _clean(mapping: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    if mapping is None:
        return None
    return {k: v for k, v in mapping.items() if v is not None and v != []}


def _stream_source(source: Mapping[str, Any], field: str) -> dict[str, Any]:
    cleaned = _clean(source) or {}
    if "name" not in cleaned:
        raise ConfigError(f"{field}: every source needs a name")
    if "opt_start_time" in cleaned:
        cleaned["opt_start_time"] = str(cleaned["opt_start_time"])
    return cleaned


def desired_stream_config(params: Mapping[str, Any]) -> dict[str, Any]:
    """Module parameters -> the wire fields the user set (None for the rest is dropped)."""
    config: dict[str, Any] = {"name": params["name"]}
    for option, wire in STREAM_FIELD_MAP.items():
        value = params.get(option)
        if value is None:
            continue
        if option in ("max_age", "duplicate_window"):
            value = parse_duration(value, option)
        elif option in ("max_bytes", "max_msg_size"):
            value = parse_size(value, option)
        elif option == "placement":
            value = _clean(value)
        elif option == "mirror":
            value = _stream_source(value, "mirror")
        elif option == "sources":
            value = [_stream_source(item, "sources") for item in value]
        config[wire] = value
    return config


def stream_immutable_changes(desired: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, current, requested) for every requested change the server cannot make."""
    problems: list[tuple[str, Any, Any]] = []

    def have(key: str) -> Any:
        return current.get(key, STREAM_DEFAULTS.get(key))

    if "storage" in desired and desired["storage"] != have("storage"):
        problems.append(("storage", have("storage"), desired["storage"]))
    if "retention" in desired and desired["retention"] != have("retention"):
        if "workqueue" in (desired["retention"], have("retention")):
            problems.append(("retention", have("retention"), desired["retention"]))
    for flag in ("deny_delete", "deny_purge"):
        if have(flag) and desired.get(flag) is False:
            problems.append((flag, True, False))
    if "mirror" in desired or current.get("mirror"):
        if not values_equal(desired.get("mirror") or {}, current.get("mirror") or {}) or (
            "mirror" in desired and not current.get("mirror")
        ):
            problems.append(("mirror", current.get("mirror"), desired.get("mirror")))
    return problems


def effective(key: str, desired: Mapping[str, Any], current: Optional[Mapping[str, Any]], defaults: Mapping[str, Any]) -> Any:
    """The value a field will have after the change."""
    if key in desired:
        return desired[key]
    if current is not None and key in current:
        return current[key]
    return defaults.get(key)


def validate_stream(
    desired: Mapping[str, Any],
    current: Optional[Mapping[str, Any]],
    cluster_size: Optional[int],
    max_payload: int,
) -> list[str]:
    """Problems that must stop the module before it changes anything."""
    problems = []
    replicas = effective("num_replicas", desired, current, STREAM_DEFAULTS)
    if "num_replicas" in desired and replicas < 1:
        problems.append(f"replicas must be at least 1, got {replicas}")
    if "num_replicas" in desired and cluster_size is not None and replicas > cluster_size:
        problems.append(
            f"replicas={replicas} exceeds the cluster's {cluster_size} JetStream peer(s); "
            f"use at most {cluster_size}"
        )
    max_age = effective("max_age", desired, current, STREAM_DEFAULTS)
    if "duplicate_window" in desired or "max_age" in desired:
        window = desired.get("duplicate_window")
        if window is None and current is not None:
            window = current.get("duplicate_window")
        if window is not None and max_age and window > max_age:
            problems.append(
                f"duplicate_window ({format_duration(window)}) must not exceed max_age ({format_duration(max_age)})"
            )
    size = desired.get("max_msg_size")
    if size is not None and max_payload and size > max_payload:
        problems.append(f"max_msg_size ({size} bytes) exceeds the server's max_payload ({max_payload} bytes)")
    if not desired.get("mirror") and current is None and not desired.get("subjects") and not desired.get("sources"):
        problems.append("a new stream needs subjects (or a mirror or sources)")
    if desired.get("mirror") and desired.get("subjects"):
        problems.append("a mirror stream cannot have subjects")
    return problems


# --------------------------------------------------------------------------- consumers

CONSUMER_DEFAULTS: dict[str, Any] = {
    "description": "",
    "deliver_policy": "all",
    "ack_policy": "explicit",
    "ack_wait": 30 * NS_PER_S,
    "max_deliver": -1,
    "max_ack_pending": 1000,
    "filter_subject": "",
    "filter_subjects": [],
    "replay_policy": "instant",
    "backoff": [],
    "deliver_subject": "",
    "deliver_group": "",
    "max_waiting": 512,
    "headers_only": False,
    "num_replicas": 0,
    "idle_heartbeat": 0,
    "flow_control": False,
    "inactive_threshold": 0,
}

CONSUMER_FIELD_MAP: dict[str, str] = {
    "description": "description",
    "deliver_policy": "deliver_policy",
    "opt_start_seq": "opt_start_seq",
    "opt_start_time": "opt_start_time",
    "ack_policy": "ack_policy",
    "ack_wait": "ack_wait",
    "max_deliver": "max_deliver",
    "max_ack_pending": "max_ack_pending",
    "filter_subject": "filter_subject",
    "filter_subjects": "filter_subjects",
    "replay_policy": "replay_policy",
    "backoff": "backoff",
    "deliver_subject": "deliver_subject",
    "deliver_group": "deliver_group",
    "max_waiting": "max_waiting",
    "headers_only": "headers_only",
    "replicas": "num_replicas",
    "idle_heartbeat": "idle_heartbeat",
    "flow_control": "flow_control",
    "inactive_threshold": "inactive_threshold",
}

CONSUMER_IMMUTABLE = ("deliver_policy", "opt_start_seq", "opt_start_time", "ack_policy", "replay_policy",
                      "deliver_group", "max_waiting")


def desired_consumer_config(params: Mapping[str, Any]) -> dict[str, Any]:
    """Module parameters -> the consumer wire fields the user set."""
    config: dict[str, Any] = {"durable_name": params["name"], "name": params["name"]}
    for option, wire in CONSUMER_FIELD_MAP.items():
        value = params.get(option)
        if value is None:
            continue
        if option in DURATION_FIELDS:
            value = parse_duration(value, option)
        elif option == "backoff":
            value = [parse_duration(item, "backoff") for item in value]
        elif option == "opt_start_time":
            value = str(value)
        config[wire] = value
    return config


def consumer_immutable_changes(desired: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, current, requested) for consumer changes the server refuses."""
    problems = []
    for key in CONSUMER_IMMUTABLE:
        if key in desired:
            have = current.get(key, CONSUMER_DEFAULTS.get(key))
            if not values_equal(desired[key], have):
                problems.append((key, have, desired[key]))
    if "deliver_subject" in desired:
        was_push, is_push = bool(current.get("deliver_subject")), bool(desired["deliver_subject"])
        if was_push != is_push:
            problems.append(("deliver_subject (push vs pull)", "push" if was_push else "pull", "push" if is_push else "pull"))
    return problems


def validate_consumer(desired: Mapping[str, Any], stream_subjects: list[str],
                      cluster_size: Optional[int]) -> list[str]:
    """Problems that must stop the consumer module before it changes anything."""
    problems = []
    if desired.get("filter_subject") and desired.get("filter_subjects"):
        problems.append("filter_subject and filter_subjects are mutually exclusive")
    policy = desired.get("deliver_policy", "all")
    if policy == "by_start_sequence" and not desired.get("opt_start_seq"):
        problems.append("deliver_policy by_start_sequence needs opt_start_seq")
    if policy != "by_start_sequence" and desired.get("opt_start_seq"):
        problems.append("opt_start_seq is only valid with deliver_policy by_start_sequence")
    if policy == "by_start_time" and not desired.get("opt_start_time"):
        problems.append("deliver_policy by_start_time needs opt_start_time")
    if policy != "by_start_time" and desired.get("opt_start_time"):
        problems.append("opt_start_time is only valid with deliver_policy by_start_time")
    backoff = desired.get("backoff") or []
    if backoff and desired.get("ack_wait") is not None and desired["ack_wait"] != backoff[0]:
        problems.append(f"with backoff the server uses the first step ({format_duration(backoff[0])}) as ack_wait; "
                        f"drop ack_wait or set it to {format_duration(backoff[0])}")
    max_deliver = desired.get("max_deliver", -1)
    if backoff and 0 < max_deliver <= len(backoff):
        problems.append(f"max_deliver ({max_deliver}) must be greater than the number of backoff steps ({len(backoff)})")
    filters = desired.get("filter_subjects") or ([desired["filter_subject"]] if desired.get("filter_subject") else [])
    for subject in filters:
        if stream_subjects and not any(subjects_overlap(subject, s) for s in stream_subjects):
            problems.append(f"filter subject {subject!r} matches none of the stream's subjects {stream_subjects}")
    if cluster_size is not None and desired.get("num_replicas", 0) > cluster_size:
        problems.append(f"replicas={desired['num_replicas']} exceeds the cluster's {cluster_size} JetStream peer(s)")
    if desired.get("deliver_subject") and desired.get("max_waiting") is not None:
        problems.append("max_waiting applies to pull consumers only (deliver_subject makes this a push consumer)")
    return problems


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 for an empty list)."""
    if not sorted_values:
        return 0.0
    rank = max(1, int(-(-fraction * len(sorted_values) // 1)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
