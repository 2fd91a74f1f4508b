# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The rules of ``tapio_nats_extra_consumers``: more durable consumers on the events stream
(a SIEM export, a debugging tap, a second correlation engine), each read by its own NATS user.

Each entry is checked before anything is changed (the boilerplate's input check,
module_utils/tapio_inputs.py), every problem naming the entry and its field:
``tapio_nats_extra_consumers[1].filter_subjects``. The streams phase creates the consumers
(plugins/filter/tapio_nats_users.py ``tapio_extra_consumer_settings``), the nats phase their
users and Secrets (``tapio_nats_users``); both read the same list. Pure functions, unit-tested
in tests/unit/test_extra_consumers.py.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ansible.module_utils.tapio_nats_config import ConfigError, parse_duration, subject_is_within

VARIABLE = "tapio_nats_extra_consumers"
# A name is the consumer's durable name, its NATS user and part of its Secret's name
# (<prefix><name>): a DNS-1123 label fits all three.
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_$-]+$")
ALTERNATE_SUFFIX = "-rotated"  # a workload's user after a password change (tapio_nats_credentials.py)
DELIVER_POLICIES = ("all", "last", "new", "by_start_time", "by_start_sequence", "last_per_subject")
ACK_POLICIES = ("explicit", "all")
KEYS = frozenset({"name", "description", "filter_subjects", "deliver_policy", "opt_start_time", "opt_start_seq",
                  "ack_policy", "ack_wait", "max_deliver", "max_ack_pending", "replay", "workload"})
WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet")
# container and engine: a second correlation engine, switched onto this consumer like the pipeline.
WORKLOAD_KEYS = frozenset({"kind", "name", "container", "engine"})


def is_subject_pattern(subject: Any) -> bool:
    """A NATS subject a filter may use: tokens, ``*`` for one, ``>`` only last."""
    if not isinstance(subject, str) or not subject:
        return False
    tokens = subject.split(".")
    return all(token == "*" or (token == ">" and index == len(tokens) - 1) or SUBJECT_TOKEN.match(token)
               for index, token in enumerate(tokens))


def _whole(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int)


def _instant_problem(value: Any) -> str:
    """Why *value* is not an RFC 3339 time with a zone, or ""."""
    try:
        moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return f"{value!r} is not an RFC 3339 time such as 2026-01-31T12:00:00Z"
    return "" if moment.tzinfo else f"{value!r} has no time zone; add Z or an offset"


def _start_problems(entry: dict[str, Any], field: str) -> list[str]:
    policy = entry.get("deliver_policy", "new")
    problems = []
    if policy not in DELIVER_POLICIES:
        problems.append(f"{field}.deliver_policy {policy!r} must be one of {', '.join(DELIVER_POLICIES)}")
    if policy == "by_start_time":
        if "opt_start_time" not in entry:
            problems.append(f"{field}.opt_start_time is required with deliver_policy by_start_time")
        elif _instant_problem(entry["opt_start_time"]):
            problems.append(f"{field}.opt_start_time: {_instant_problem(entry['opt_start_time'])}")
    elif "opt_start_time" in entry:
        problems.append(f"{field}.opt_start_time needs deliver_policy by_start_time")
    if policy == "by_start_sequence":
        seq = entry.get("opt_start_seq")
        if not _whole(seq) or seq < 1:
            problems.append(f"{field}.opt_start_seq must be a stream sequence (1 or more) with deliver_policy "
                            f"by_start_sequence, got {seq!r}")
    elif "opt_start_seq" in entry:
        problems.append(f"{field}.opt_start_seq needs deliver_policy by_start_sequence")
    return problems


def _ack_problems(entry: dict[str, Any], field: str) -> list[str]:
    problems = []
    if entry.get("ack_policy", "explicit") not in ACK_POLICIES:
        problems.append(f"{field}.ack_policy {entry['ack_policy']!r} must be one of {', '.join(ACK_POLICIES)} "
                        "(its user may only read and acknowledge)")
    if "ack_wait" in entry:
        try:
            if parse_duration(entry["ack_wait"], f"{field}.ack_wait") <= 0:
                problems.append(f"{field}.ack_wait must be longer than 0")
        except ConfigError as error:
            problems.append(str(error))
    for key, least in (("max_deliver", 1), ("max_ack_pending", 1)):
        if key in entry and not (_whole(entry[key]) and (entry[key] == -1 or entry[key] >= least)):
            problems.append(f"{field}.{key} must be -1 (no limit) or a whole number of at least {least}, "
                            f"got {entry[key]!r}")
    return problems


def _subject_problems(entry: dict[str, Any], field: str, stream_subjects: list[str]) -> list[str]:
    if "filter_subjects" not in entry:
        return []
    subjects = entry["filter_subjects"]
    if not isinstance(subjects, list) or not subjects:
        return [f"{field}.filter_subjects must be a non-empty list of subjects (leave it out for the whole stream)"]
    problems = []
    for subject in subjects:
        if not is_subject_pattern(subject):
            problems.append(f"{field}.filter_subjects: {subject!r} is not a NATS subject (tokens a.b.c, * for one "
                            "token, > only last)")
        elif not any(subject_is_within(subject, pattern) for pattern in stream_subjects):
            problems.append(f"{field}.filter_subjects: {subject} is outside the events stream's subjects "
                            f"{', '.join(stream_subjects)} (tapio_consume_subjects): it would never deliver")
    repeated = sorted({s for s in subjects if isinstance(s, str) and subjects.count(s) > 1})
    if repeated:
        problems.append(f"{field}.filter_subjects lists {', '.join(repeated)} more than once")
    return problems


def _workload_problems(entry: dict[str, Any], field: str) -> list[str]:
    workload = entry.get("workload")
    if workload is None:
        return []
    if (not isinstance(workload, dict) or workload.get("kind") not in WORKLOAD_KINDS
            or not NAME.match(str(workload.get("name") or ""))):
        return [f"{field}.workload must be {{kind: {'|'.join(WORKLOAD_KINDS)}, name: <its name>}} (the reader "
                f"restarted after a password change), got {workload!r}"]
    problems = [f"{field}.workload: unknown key {key!r} (known: {', '.join(sorted(WORKLOAD_KEYS))})"
                for key in sorted(set(workload) - WORKLOAD_KEYS, key=str)]
    if "engine" in workload and not isinstance(workload["engine"], bool):
        problems.append(f"{field}.workload.engine must be true or false")
    elif workload.get("engine"):
        if workload["kind"] != "Deployment":
            problems.append(f"{field}.workload.engine: a second correlation engine is a Deployment (switched as the "
                            f"pipeline is), got kind {workload['kind']}")
        if not isinstance(workload.get("container"), str) or not workload["container"]:
            problems.append(f"{field}.workload.container is required with engine: true (the container whose NATS env "
                            "the engines phase sets)")
    elif "container" in workload:
        problems.append(f"{field}.workload.container needs engine: true (only an engine's env is set)")
    return problems


def engines(consumers: Any) -> list[dict[str, Any]]:
    """The second correlation engines the (checked) list declares: each entry whose workload
    has ``engine: true``, as ``{name, container, consumer, filter_subjects}``."""
    return [{"name": entry["workload"]["name"], "container": entry["workload"]["container"], "consumer": entry["name"],
             "filter_subjects": list(entry.get("filter_subjects") or [])}
            for entry in consumers or [] if isinstance(entry, dict) and (entry.get("workload") or {}).get("engine")]


def entry_problems(entry: Any, index: int, stream_subjects: list[str]) -> list[str]:
    """The problems of one entry, each naming ``tapio_nats_extra_consumers[index].<field>``."""
    field = f"{VARIABLE}[{index}]"
    if not isinstance(entry, dict):
        return [f"{field} must be a mapping with at least a name, got {entry!r}"]
    name = entry.get("name")
    if name is not None:
        field = f"{VARIABLE}[{index}] ({name})"
    problems = [f"{field}: unknown key {key!r} (known: {', '.join(sorted(KEYS))})"
                for key in sorted(set(entry) - KEYS, key=str)]
    if not isinstance(name, str) or not NAME.match(name):
        problems.append(f"{field}.name {name!r} must be a DNS-1123 label (lower-case letters, digits and '-', at "
                        "most 63): it names the consumer, its NATS user and its Secret")
    elif name.endswith(ALTERNATE_SUFFIX):
        problems.append(f"{field}.name must not end in {ALTERNATE_SUFFIX}: that is the user a password change moves "
                        "a user to")
    if "replay" in entry and not isinstance(entry["replay"], bool):
        problems.append(f"{field}.replay must be true or false")
    return (problems + _start_problems(entry, field) + _ack_problems(entry, field)
            + _subject_problems(entry, field, stream_subjects) + _workload_problems(entry, field))


def problems_of(consumers: Any, stream_subjects: list[str], pipeline_consumer: str, taken_users: list[str]) -> list[str]:
    """Every problem of the list: each entry's own, then names used twice, the pipeline's
    consumer (its ack floor is the pipeline's place in the stream; no other reader may share
    it) and names another user already has (the toolkit's user, a workload's)."""
    if consumers is None:
        return []
    if not isinstance(consumers, list):
        return [f"{VARIABLE} must be a list of consumers, got {type(consumers).__name__}"]
    problems = []
    for index, entry in enumerate(consumers):
        problems += entry_problems(entry, index, stream_subjects)
    names = [entry.get("name") for entry in consumers if isinstance(entry, dict) and isinstance(entry.get("name"), str)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        problems.append(f"{VARIABLE}: {', '.join(repeated)} declared more than once (each name is one consumer and "
                        "one user)")
    for name in dict.fromkeys(names):
        if name == pipeline_consumer:
            problems.append(f"{VARIABLE}: {name} is the pipeline's durable consumer (tapio_pipeline_consumer); "
                            "another reader would take its events and move its ack floor: choose another name")
        elif name in taken_users or name + ALTERNATE_SUFFIX in taken_users:
            problems.append(f"{VARIABLE}: {name} is already a NATS user (the toolkit's user or a workload's): "
                            "choose another name")
    engine_names = [engine["name"] for engine in engines([e for e in consumers if not entry_problems(e, 0, stream_subjects)])]
    for engine in dict.fromkeys(engine_names):
        if engine in taken_users:
            problems.append(f"{VARIABLE}: engine {engine} is the pipeline, a collector or the toolkit's user: an "
                            "engine is a Deployment of its own")
        if engine_names.count(engine) > 1:
            problems.append(f"{VARIABLE}: engine {engine} reads more than one consumer (one engine, one consumer)")
    return problems
