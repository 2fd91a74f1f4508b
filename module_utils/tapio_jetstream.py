# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Create, update, recreate or delete JetStream streams and consumers: the logic of the
nats_stream and nats_consumer modules, shared with nats_jetstream (every stream and consumer
of a role in one call and one connection).

The functions take the calling module, or anything with its ``check_mode``, ``warn`` and
``params["recreate"]``, and an open JetStreamApi; they raise NatsModuleError naming the object.
"""
from __future__ import annotations

from typing import Any, Optional

from ansible.module_utils.tapio_nats import JetStreamApi, NatsModuleError
from ansible.module_utils.tapio_nats_config import (
    CONSUMER_DEFAULTS,
    STREAM_DEFAULTS,
    changed_fields,
    consumer_immutable_changes,
    find_overlapping_stream,
    merge_config,
    readable,
    stream_immutable_changes,
    validate_consumer,
    validate_stream,
)

STREAM_MUTUALLY_EXCLUSIVE = [["mirror", "sources"], ["mirror", "subjects"]]
CONSUMER_MUTUALLY_EXCLUSIVE = [["filter_subject", "filter_subjects"], ["deliver_subject", "max_waiting"]]

_SOURCE = {
    "name": {"type": "str", "required": True},
    "opt_start_seq": {"type": "int"},
    "opt_start_time": {"type": "str"},
    "filter_subject": {"type": "str"},
    "external": {"type": "dict", "options": {"api": {"type": "str"}, "deliver": {"type": "str"}}},
}

STREAM_ARGUMENT_SPEC: dict[str, Any] = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "subjects": {"type": "list", "elements": "str"},
    "retention": {"type": "str", "choices": ["limits", "interest", "workqueue"]},
    "storage": {"type": "str", "choices": ["file", "memory"]},
    "replicas": {"type": "int"},
    "max_age": {"type": "raw"},
    "max_bytes": {"type": "raw"},
    "max_msgs": {"type": "int"},
    "max_msgs_per_subject": {"type": "int"},
    "max_msg_size": {"type": "raw"},
    "discard": {"type": "str", "choices": ["old", "new"]},
    "duplicate_window": {"type": "raw"},
    "compression": {"type": "str", "choices": ["none", "s2"]},
    "allow_direct": {"type": "bool"},
    "deny_delete": {"type": "bool"},
    "deny_purge": {"type": "bool"},
    "description": {"type": "str"},
    "placement": {"type": "dict", "options": {"cluster": {"type": "str"}, "tags": {"type": "list", "elements": "str"}}},
    "mirror": {"type": "dict", "options": _SOURCE},
    "sources": {"type": "list", "elements": "dict", "options": _SOURCE},
    "recreate": {"type": "bool", "default": False},
}


def stream_view(info: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The parts of a stream info answer the module returns."""
    if not info:
        return {}
    return {key: info[key] for key in ("config", "state", "cluster", "created") if key in info}


def immutable_message(name: str, problems: list[tuple[str, Any, Any]]) -> str:
    details = "; ".join(f"{field}: current {current!r}, requested {wanted!r}" for field, current, wanted in problems)
    return (f"stream {name}: cannot change {', '.join(p[0] for p in problems)} on an existing stream ({details}). "
            "Nothing was changed. Set recreate=true to delete and recreate it (its stored messages are lost).")


async def check_before_change(api: JetStreamApi, desired: dict[str, Any], current: Optional[dict[str, Any]]) -> None:
    """Fail before touching the server: limits, and subjects claimed by another stream."""
    problems = validate_stream(desired, current, api.cluster_size(), api.max_payload())
    if problems:
        raise NatsModuleError(f"stream {desired['name']}: " + "; ".join(problems) + ". Nothing was changed.")
    if desired.get("subjects"):
        clash = find_overlapping_stream(desired["name"], desired["subjects"], await api.streams())
        if clash:
            other, theirs, ours = clash
            raise NatsModuleError(
                f"stream {desired['name']}: subject {ours!r} overlaps subject {theirs!r} of existing stream "
                f"{other}. Nothing was changed.")


async def ensure_stream_present(module: Any, api: JetStreamApi, desired: dict[str, Any]) -> dict[str, Any]:
    name = desired["name"]
    info = await api.stream_info(name)
    current = info["config"] if info else None
    if current is None:
        await check_before_change(api, desired, None)
        after = merge_config(STREAM_DEFAULTS, desired)
        result = {"changed": True, "operation": "create", "changed_fields": sorted(k for k in desired if k != "name")}
        if not module.check_mode:
            result["stream"] = stream_view(await api.request(f"$JS.API.STREAM.CREATE.{name}", desired))
        else:
            result["stream"] = {"config": after}
        result["diff"] = {"before": {}, "after": readable(result["stream"]["config"])}
        return result

    fields = changed_fields(desired, current, STREAM_DEFAULTS)
    if not fields:
        return {"changed": False, "operation": "none", "changed_fields": [], "stream": stream_view(info),
                "diff": {"before": readable(current), "after": readable(current)}}
    frozen = stream_immutable_changes({k: desired[k] for k in fields}, current)
    if frozen and not module.params["recreate"]:
        raise NatsModuleError(immutable_message(name, frozen), {"stream": stream_view(info), "changed": False})
    if frozen:
        return await recreate_stream(module, api, desired, info, fields)
    await check_before_change(api, desired, current)
    after = merge_config(current, desired)
    result = {"changed": True, "operation": "update", "changed_fields": fields,
              "diff": {"before": readable(current), "after": readable(after)}}
    if module.check_mode:
        result["stream"] = {**stream_view(info), "config": after}
    else:
        result["stream"] = stream_view(await api.request(f"$JS.API.STREAM.UPDATE.{name}", after))
    return result


async def recreate_stream(module: Any, api: JetStreamApi, desired: dict[str, Any], info: dict[str, Any],
                   fields: list[str]) -> dict[str, Any]:
    """Delete and create again with the server's configuration plus the requested fields."""
    name = desired["name"]
    lost = info.get("state", {}).get("messages", 0)
    keep = {k: v for k, v in info["config"].items() if k not in ("metadata", "consumer_limits")}
    after = merge_config(keep, desired)
    await check_before_change(api, after, None)
    module.warn(f"stream {name} is being deleted and recreated to change {', '.join(fields)}: "
                f"its {lost} stored message(s) are lost")
    result = {"changed": True, "operation": "recreate", "changed_fields": fields, "messages_lost": lost,
              "diff": {"before": readable(info["config"]), "after": readable(after)}}
    if module.check_mode:
        result["stream"] = {"config": after}
        return result
    await api.request(f"$JS.API.STREAM.DELETE.{name}")
    result["stream"] = stream_view(await api.request(f"$JS.API.STREAM.CREATE.{name}", after))
    return result


async def ensure_stream_absent(module: Any, api: JetStreamApi, name: str) -> dict[str, Any]:
    info = await api.stream_info(name)
    if info is None:
        return {"changed": False, "operation": "none", "changed_fields": [], "stream": {},
                "diff": {"before": {}, "after": {}}}
    if not module.check_mode:
        await api.request(f"$JS.API.STREAM.DELETE.{name}")
    return {"changed": True, "operation": "delete", "changed_fields": [], "stream": {},
            "diff": {"before": readable(info["config"]), "after": {}}}


CONSUMER_ARGUMENT_SPEC: dict[str, Any] = {
    "stream": {"type": "str", "required": True},
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "description": {"type": "str"},
    "ack_policy": {"type": "str", "choices": ["explicit", "all", "none"]},
    "ack_wait": {"type": "raw"},
    "max_deliver": {"type": "int"},
    "max_ack_pending": {"type": "int"},
    "filter_subject": {"type": "str"},
    "filter_subjects": {"type": "list", "elements": "str"},
    "deliver_policy": {"type": "str",
                       "choices": ["all", "last", "new", "by_start_sequence", "by_start_time", "last_per_subject"]},
    "opt_start_seq": {"type": "int"},
    "opt_start_time": {"type": "str"},
    "replay_policy": {"type": "str", "choices": ["instant", "original"]},
    "backoff": {"type": "list", "elements": "raw"},
    "deliver_subject": {"type": "str"},
    "deliver_group": {"type": "str"},
    "max_waiting": {"type": "int"},
    "headers_only": {"type": "bool"},
    "replicas": {"type": "int"},
    "idle_heartbeat": {"type": "raw"},
    "flow_control": {"type": "bool"},
    "recreate": {"type": "bool", "default": False},
}

_CONSUMER_KEYS = ("delivered", "ack_floor", "num_ack_pending", "num_redelivered", "num_waiting", "num_pending",
             "cluster", "created", "config", "stream_name", "name", "paused", "priority_groups")


def consumer_view(info: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The parts of a consumer info answer the module returns."""
    if not info:
        return {}
    return {k: info[k] for k in _CONSUMER_KEYS if k in info}


async def write_consumer(api: JetStreamApi, stream: str, config: dict[str, Any], action: str) -> dict[str, Any]:
    name = config["durable_name"]
    return await api.request(f"$JS.API.CONSUMER.CREATE.{stream}.{name}",
                             {"stream_name": stream, "config": config, "action": action})


async def consumer_preflight(api: JetStreamApi, stream: str, desired: dict[str, Any]) -> None:
    info = await api.stream_info(stream)
    if info is None:
        raise NatsModuleError(f"consumer {desired['durable_name']}: stream {stream} does not exist. Nothing was changed.")
    problems = validate_consumer(desired, info["config"].get("subjects") or [], api.cluster_size())
    if problems:
        raise NatsModuleError(f"consumer {desired['durable_name']} on {stream}: " + "; ".join(problems)
                              + ". Nothing was changed.")


async def ensure_consumer_present(module: Any, api: JetStreamApi, stream: str, desired: dict[str, Any]) -> dict[str, Any]:
    name = desired["durable_name"]
    if module.check_mode and await api.stream_info(stream) is None:
        # In a check run the stream may be one an earlier task would create.
        module.warn(f"stream {stream} does not exist (yet); consumer {name} would be created once it does")
        desired.setdefault("ack_policy", "explicit")
        return {"changed": True, "operation": "create", "changed_fields": [],
                "consumer": {"config": merge_config(CONSUMER_DEFAULTS, desired)},
                "diff": {"before": {}, "after": readable(desired)}}
    await consumer_preflight(api, stream, desired)
    info = await api.consumer_info(stream, name)
    if info is None:
        desired.setdefault("ack_policy", "explicit")
        result = {"changed": True, "operation": "create", "changed_fields": sorted(k for k in desired if k not in ("name", "durable_name"))}
        if module.check_mode:
            result["consumer"] = {"config": merge_config(CONSUMER_DEFAULTS, desired)}
        else:
            result["consumer"] = consumer_view(await write_consumer(api, stream, desired, "create"))
        result["diff"] = {"before": {}, "after": readable(result["consumer"]["config"])}
        return result
    current = info["config"]
    fields = changed_fields({k: v for k, v in desired.items() if k != "name"}, current, CONSUMER_DEFAULTS)
    if not fields:
        return {"changed": False, "operation": "none", "changed_fields": [], "consumer": consumer_view(info),
                "diff": {"before": readable(current), "after": readable(current)}}
    frozen = consumer_immutable_changes({k: desired[k] for k in fields}, current)
    after = merge_config(current, desired)
    if frozen and not module.params["recreate"]:
        details = "; ".join(f"{f}: current {c!r}, requested {w!r}" for f, c, w in frozen)
        raise NatsModuleError(
            f"consumer {name} on {stream}: cannot change {', '.join(f for f, _, _ in frozen)} on an existing consumer "
            f"({details}). Nothing was changed. Set recreate=true to delete and recreate it (its delivery and ack "
            "state are lost).", {"consumer": consumer_view(info), "changed": False})
    operation = "recreate" if frozen else "update"
    result = {"changed": True, "operation": operation, "changed_fields": fields,
              "diff": {"before": readable(current), "after": readable(after)}}
    if frozen:
        module.warn(f"consumer {name} on {stream} is being deleted and recreated to change {', '.join(fields)}: "
                    f"{info.get('num_ack_pending', 0)} unacknowledged deliveries and its ack floor are lost")
        after = desired
    if module.check_mode:
        result["consumer"] = {**consumer_view(info), "config": after}
        return result
    if frozen:
        await api.request(f"$JS.API.CONSUMER.DELETE.{stream}.{name}")
        result["consumer"] = consumer_view(await write_consumer(api, stream, desired, "create"))
    else:
        result["consumer"] = consumer_view(await write_consumer(api, stream, after, "update"))
    return result


async def ensure_consumer_absent(module: Any, api: JetStreamApi, stream: str, name: str) -> dict[str, Any]:
    if await api.stream_info(stream) is None:
        return {"changed": False, "operation": "none", "changed_fields": [], "consumer": {}, "diff": {"before": {}, "after": {}}}
    info = await api.consumer_info(stream, name)
    if info is None:
        return {"changed": False, "operation": "none", "changed_fields": [], "consumer": {}, "diff": {"before": {}, "after": {}}}
    if not module.check_mode:
        await api.request(f"$JS.API.CONSUMER.DELETE.{stream}.{name}")
    return {"changed": True, "operation": "delete", "changed_fields": [], "consumer": {},
            "diff": {"before": readable(info["config"]), "after": {}}}
