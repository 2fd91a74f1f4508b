# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Create, update, recreate or delete JetStream streams and consumers: the logic of the
nats_stream and nats_consumer modules, shared with nats_jetstream (every stream and consumer
of a role in one call and one connection) and the KV and object store modules (a bucket is a
stream).

Every object goes through one skeleton, ``ensure_present``: read the live object, refuse
fields the server is too old for, compare only what the user set, refuse what the server
cannot change (unless ``recreate``), check the request, then create, update or recreate
(check mode stops before the write). What differs per kind of object is a ``Kind``: its
field table (tapio_jetstream_fields) and its read/write/delete calls.

The functions take the calling module, or anything with its ``check_mode``, ``warn`` and
``params`` (``recreate``, ``force``, ``protected``), and an open JetStreamApi; they raise
NatsModuleError naming the object.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Optional

from ansible.module_utils.tapio_jetstream_fields import (
    CONSUMER_BY_WIRE,
    CONSUMER_FIELDS,
    PULL_ONLY,
    PUSH_ONLY,
    STREAM_BY_WIRE,
    STREAM_FIELDS,
    Field,
    argument_spec,
    changed_fields,
    consumer_problems,
    immutable_changes,
    merged_config,
    option_names,
    parse_version,
    readable,
    same,
    stream_problems,
    version_problems,
)
from ansible.module_utils.tapio_nats import JetStreamApi, NatsModuleError
from ansible.module_utils.tapio_nats_config import find_overlapping_stream

_PROTECTION = {
    "force": {"type": "bool", "default": False},
    "protected": {"type": "bool", "default": False},
    "recreate": {"type": "bool", "default": False},
}

STREAM_ARGUMENT_SPEC: dict[str, Any] = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    **argument_spec(STREAM_FIELDS),
    **_PROTECTION,
}
STREAM_MUTUALLY_EXCLUSIVE = [["mirror", "sources"], ["mirror", "subjects"]]

CONSUMER_ARGUMENT_SPEC: dict[str, Any] = {
    "stream": {"type": "str", "required": True},
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    **argument_spec(CONSUMER_FIELDS),
    **_PROTECTION,
}
CONSUMER_MUTUALLY_EXCLUSIVE = [["filter_subject", "filter_subjects"], ["deliver_subject", "max_waiting"]]

_CONSUMER_KEYS = ("delivered", "ack_floor", "num_ack_pending", "num_redelivered", "num_waiting", "num_pending",
                  "cluster", "created", "config", "stream_name", "name", "paused", "priority_groups")


def stream_view(info: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The parts of a stream info answer the module returns."""
    if not info:
        return {}
    return {key: info[key] for key in ("config", "state", "cluster", "created") if key in info}


def consumer_view(info: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The parts of a consumer info answer the module returns."""
    if not info:
        return {}
    return {k: info[k] for k in _CONSUMER_KEYS if k in info}


@dataclass
class Kind:
    """What the skeleton needs to know about one kind of object."""
    label: str                                   # "stream" or "consumer STREAM/"
    name: str
    fields: Mapping[str, Field]
    read: Callable[[], Awaitable[Optional[dict[str, Any]]]]
    create: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
    update: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
    delete: Callable[[], Awaitable[Any]]
    view: Callable[[Optional[dict[str, Any]]], dict[str, Any]]
    result_key: str                              # "stream" or "consumer"
    # (desired, current or None) -> problems; awaited before any write
    problems: Callable[[dict[str, Any], Optional[dict[str, Any]]], Awaitable[list[str]]]
    # config to send for a new object (the user's fields plus safe defaults)
    new_config: Callable[[dict[str, Any]], dict[str, Any]]
    # (current, desired) -> whole config for an update or recreate
    merge: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]

    @property
    def title(self) -> str:
        return f"{self.label}{self.name}" if self.label.endswith("/") else f"{self.label} {self.name}"


def _result(changed: bool, operation: str, fields: list[str], key: str, obj: dict[str, Any],
            before: Optional[Mapping[str, Any]], after: Optional[Mapping[str, Any]],
            kind_fields: Mapping[str, Field], **extra: Any) -> dict[str, Any]:
    return {"changed": changed, "operation": operation, "changed_fields": option_names(fields, kind_fields),
            key: obj, "diff": {"before": readable(before, kind_fields), "after": readable(after, kind_fields)},
            **extra}


def _refuse_if_protected(module: Any, kind: Kind, what: str) -> None:
    if module.params.get("protected"):
        raise NatsModuleError(f"{kind.title} is protected: refusing to {what} it. Nothing was changed. "
                              "Set protected=false for this object to allow it.")


async def ensure_present(module: Any, api: JetStreamApi, kind: Kind, desired: dict[str, Any],
                         recreate: Optional[Callable[[dict[str, Any], dict[str, Any], list[str]],
                                                     Awaitable[dict[str, Any]]]] = None) -> dict[str, Any]:
    """The read -> compare -> act skeleton every stream, consumer and bucket goes through."""
    problems = version_problems(desired, kind.fields, parse_version(api.server_version()))
    if problems:
        raise NatsModuleError(f"{kind.title}: " + "; ".join(problems) + ". Nothing was changed.")
    info = await kind.read()
    current = info["config"] if info else None
    if current is None:
        problems = await kind.problems(desired, None)
        if problems:
            raise NatsModuleError(f"{kind.title}: " + "; ".join(problems) + ". Nothing was changed.")
        config = kind.new_config(desired)
        fields = sorted(k for k in config if k in kind.fields and kind.fields[k].settable)
        obj = {"config": config} if module.check_mode else kind.view(await kind.create(config))
        return _result(True, "create", fields, kind.result_key, obj, {}, obj["config"], kind.fields)

    fields = changed_fields(desired, current, kind.fields)
    if not fields:
        return _result(False, "none", [], kind.result_key, kind.view(info), current, current, kind.fields)
    frozen = immutable_changes({k: desired[k] for k in fields}, current, kind.fields,
                               parse_version(api.server_version()))
    if frozen and not module.params.get("recreate"):
        details = "; ".join(f"{f}: current {c!r}, requested {w!r}" for f, c, w in frozen)
        raise NatsModuleError(
            f"{kind.title}: cannot change {', '.join(f for f, _, _ in frozen)} on an existing {kind.result_key} "
            f"({details}). Nothing was changed. Set recreate=true to delete and recreate it "
            f"({'its stored messages are lost and its consumers are recreated without their ack state' if kind.result_key == 'stream' else 'its delivery and ack state are lost'}).",
            {kind.result_key: kind.view(info), "changed": False})
    after = kind.merge(current, desired)
    problems = await kind.problems(desired, current)
    if problems:
        raise NatsModuleError(f"{kind.title}: " + "; ".join(problems) + ". Nothing was changed.")
    if frozen:
        _refuse_if_protected(module, kind, "recreate")
        assert recreate is not None
        return await recreate(info, after, fields)
    obj = {**kind.view(info), "config": after} if module.check_mode else kind.view(await kind.update(after))
    return _result(True, "update", fields, kind.result_key, obj, current, after, kind.fields)


# --------------------------------------------------------------------------- streams


def stream_kind(api: JetStreamApi, name: str) -> Kind:
    async def problems(desired: dict[str, Any], current: Optional[dict[str, Any]]) -> list[str]:
        found = stream_problems(desired, current)
        if desired.get("subjects"):
            clash = find_overlapping_stream(name, desired["subjects"], await api.streams())
            if clash:
                other, theirs, ours = clash
                found.append(f"subject {ours!r} overlaps subject {theirs!r} of existing stream {other}")
        return found

    return Kind(
        label="stream", name=name, fields=STREAM_BY_WIRE, result_key="stream", view=stream_view,
        read=lambda: api.stream_info(name),
        create=lambda config: api.request(f"$JS.API.STREAM.CREATE.{name}", config),
        update=lambda config: api.request(f"$JS.API.STREAM.UPDATE.{name}", config),
        delete=lambda: api.request(f"$JS.API.STREAM.DELETE.{name}"),
        problems=problems,
        new_config=lambda desired: {k: v for k, v in desired.items() if not (k == "mirror" and not v)},
        merge=lambda current, desired: merged_config(current, desired, STREAM_BY_WIRE),
    )


async def ensure_stream_present(module: Any, api: JetStreamApi, desired: dict[str, Any]) -> dict[str, Any]:
    kind = stream_kind(api, desired["name"])

    async def recreate(info: dict[str, Any], after: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        return await recreate_stream(module, api, kind, info, after, fields)

    return await ensure_present(module, api, kind, desired, recreate)


def _consumer_state(info: Mapping[str, Any]) -> dict[str, Any]:
    """The delivery state a consumer loses when it is deleted."""
    return {"num_pending": info.get("num_pending", 0), "num_ack_pending": info.get("num_ack_pending", 0),
            "num_redelivered": info.get("num_redelivered", 0),
            "ack_floor_stream_seq": (info.get("ack_floor") or {}).get("stream_seq", 0)}


async def recreate_stream(module: Any, api: JetStreamApi, kind: Kind, info: dict[str, Any],
                          after: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """Delete the stream and create it again with *after*, then its consumers again.

    The server deletes a stream's consumers with it, so each one is checked against the new
    stream first (a consumer the new stream could not hold refuses the whole recreate) and
    created again afterwards with its own configuration; the result and the diff say what is
    lost: the stored messages and each consumer's delivery and ack state. If the new stream
    cannot be created, the old configuration and its consumers are put back."""
    name, current = kind.name, info["config"]
    consumers = await api.consumers(name)
    refused = [f"{c['name']} ({'; '.join(p)})" for c in consumers
               if (p := consumer_problems(c["config"], None, after))]
    if refused:
        raise NatsModuleError(f"stream {name}: recreating it would drop consumer(s) the new configuration cannot "
                              f"hold: {', '.join(refused)}. Nothing was changed.", {"changed": False})
    lost = int(info.get("state", {}).get("messages", 0))
    ack_state = {c["name"]: _consumer_state(c) for c in consumers}
    recreated = sorted(ack_state)
    summary = (f"{lost} stored message(s) lost" + (f"; consumer(s) {', '.join(recreated)} recreated without "
                                                     "their delivery and ack state" if recreated else ""))
    module.warn(f"stream {name} is being deleted and recreated to change "
                f"{', '.join(option_names(fields, STREAM_BY_WIRE))}: {summary}")
    result = _result(True, "recreate", fields, "stream", {"config": after}, current, after, STREAM_BY_WIRE,
                     messages_lost=lost, consumers_recreated=recreated, ack_state_lost=ack_state)
    result["diff"]["after_header"] = f"stream {name} (recreated: {summary})"
    if module.check_mode:
        return result
    await kind.delete()
    try:
        result["stream"] = stream_view(await kind.create(after))
    except NatsModuleError as error:
        await kind.create(current)
        for consumer in consumers:
            await write_consumer(api, name, consumer["config"], "create")
        raise NatsModuleError(f"stream {name}: creating it with the new configuration failed ({error}); the previous "
                              f"configuration and its {len(consumers)} consumer(s) were created again "
                              f"({lost} stored message(s) are lost)", {"changed": True}) from None
    failed = []
    for consumer in consumers:
        try:
            await write_consumer(api, name, consumer["config"], "create")
        except NatsModuleError as error:
            failed.append(f"{consumer['name']}: {error}")
    if failed:
        raise NatsModuleError(f"stream {name} was recreated but these consumers could not be: {'; '.join(failed)}",
                              {**result, "changed": True})
    return result


async def ensure_stream_absent(module: Any, api: JetStreamApi, name: str) -> dict[str, Any]:
    info = await api.stream_info(name)
    if info is None:
        return _result(False, "none", [], "stream", {}, {}, {}, STREAM_BY_WIRE)
    kind = stream_kind(api, name)
    _refuse_if_protected(module, kind, "delete")
    state = info.get("state", {})
    messages, consumers = int(state.get("messages", 0)), int(state.get("consumer_count", 0))
    if (messages or consumers) and not module.params.get("force"):
        raise NatsModuleError(f"stream {name} holds {messages} message(s) and {consumers} consumer(s): refusing to "
                              "delete it. Nothing was changed. Set force=true to delete it with them.",
                              {"changed": False, "stream": stream_view(info)})
    if not module.check_mode:
        await kind.delete()
    return _result(True, "delete", [], "stream", {}, info["config"], {}, STREAM_BY_WIRE,
                   messages_lost=messages, consumers_deleted=consumers)


# --------------------------------------------------------------------------- consumers


async def write_consumer(api: JetStreamApi, stream: str, config: dict[str, Any], action: str) -> dict[str, Any]:
    name = config.get("durable_name") or config["name"]
    return await api.request(f"$JS.API.CONSUMER.CREATE.{stream}.{name}",
                             {"stream_name": stream, "config": config, "action": action})


def consumer_merge(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The live consumer with the user's fields on top. A new deliver policy drops the old
    start position and a switch between push and pull drops the other kind's fields, which
    the server would refuse together."""
    merged = merged_config(current, desired, CONSUMER_BY_WIRE)
    if "deliver_policy" in desired:
        for key in ("opt_start_seq", "opt_start_time"):
            if key not in desired:
                merged.pop(key, None)
    if "deliver_subject" in desired and bool(desired["deliver_subject"]) != bool(current.get("deliver_subject")):
        for key in (PULL_ONLY if desired["deliver_subject"] else PUSH_ONLY):
            if key not in desired:
                merged.pop(key, None)
        if not desired["deliver_subject"]:
            merged.pop("deliver_subject", None)
    return merged


def consumer_kind(api: JetStreamApi, stream: str, name: str, stream_config: Mapping[str, Any]) -> Kind:
    async def problems(desired: dict[str, Any], current: Optional[dict[str, Any]]) -> list[str]:
        return consumer_problems(desired, current, stream_config)

    def new_config(desired: dict[str, Any]) -> dict[str, Any]:
        # The server's zero ack policy is "none": a consumer created without one would count
        # every event as delivered the moment it is sent.
        return {"ack_policy": "explicit", **desired}

    async def update(config: dict[str, Any]) -> dict[str, Any]:
        answer = await write_consumer(api, stream, config, "update")
        # An update keeps the old pause_until; the server changes it through its pause API only.
        wanted = config.get("pause_until")
        if not same(CONSUMER_BY_WIRE["pause_until"], wanted, (answer.get("config") or {}).get("pause_until")):
            await api.request(f"$JS.API.CONSUMER.PAUSE.{stream}.{name}", {"pause_until": wanted} if wanted else {})
            answer = await api.consumer_info(stream, name) or answer
        return answer

    return Kind(
        label=f"consumer {stream}/", name=name, fields=CONSUMER_BY_WIRE, result_key="consumer", view=consumer_view,
        read=lambda: api.consumer_info(stream, name),
        create=lambda config: write_consumer(api, stream, config, "create"),
        update=update,
        delete=lambda: api.request(f"$JS.API.CONSUMER.DELETE.{stream}.{name}"),
        problems=problems, new_config=new_config, merge=consumer_merge,
    )


async def ensure_consumer_present(module: Any, api: JetStreamApi, stream: str, desired: dict[str, Any]) -> dict[str, Any]:
    name = desired["durable_name"]
    info = await api.stream_info(stream)
    if info is None:
        if module.check_mode:
            # In a check run the stream may be one an earlier task would create.
            module.warn(f"stream {stream} does not exist (yet); consumer {name} would be created once it does")
            config = {"ack_policy": "explicit", **desired}
            return _result(True, "create", sorted(k for k in config if CONSUMER_BY_WIRE.get(k, None)
                                                   and CONSUMER_BY_WIRE[k].settable),
                           "consumer", {"config": config}, {}, config, CONSUMER_BY_WIRE)
        raise NatsModuleError(f"consumer {name}: stream {stream} does not exist. Nothing was changed.")
    kind = consumer_kind(api, stream, name, info["config"])

    async def recreate(live: dict[str, Any], after: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        return await recreate_consumer(module, kind, live, after, fields)

    return await ensure_present(module, api, kind, desired, recreate)


async def recreate_consumer(module: Any, kind: Kind, info: dict[str, Any], after: dict[str, Any],
                            fields: list[str]) -> dict[str, Any]:
    """Delete the consumer and create it again from its live configuration with the user's
    fields on top (every field the user did not set keeps its live value, the ack policy
    included); if the create fails the old consumer is created again."""
    current, lost = info["config"], _consumer_state(info)
    summary = (f"{lost['num_ack_pending']} unacknowledged and {lost['num_pending']} undelivered message(s) lose "
               "their delivery state; delivery restarts from the new deliver policy")
    module.warn(f"{kind.title} is being deleted and recreated to change "
                f"{', '.join(option_names(fields, CONSUMER_BY_WIRE))}: {summary}")
    result = _result(True, "recreate", fields, "consumer", {**consumer_view(info), "config": after}, current, after,
                     CONSUMER_BY_WIRE, ack_state_lost=lost)
    result["diff"]["after_header"] = f"{kind.title} (recreated: {summary})"
    if module.check_mode:
        return result
    await kind.delete()
    try:
        result["consumer"] = consumer_view(await kind.create(after))
    except NatsModuleError as error:
        await kind.create(current)
        raise NatsModuleError(f"{kind.title}: creating it with the new configuration failed ({error}); the previous "
                              "configuration was created again (its delivery and ack state are lost)",
                              {"changed": True}) from None
    return result


async def ensure_consumer_absent(module: Any, api: JetStreamApi, stream: str, name: str) -> dict[str, Any]:
    none = _result(False, "none", [], "consumer", {}, {}, {}, CONSUMER_BY_WIRE)
    stream_info = await api.stream_info(stream)
    if stream_info is None:
        return none
    info = await api.consumer_info(stream, name)
    if info is None:
        return none
    kind = consumer_kind(api, stream, name, stream_info["config"])
    _refuse_if_protected(module, kind, "delete")
    pending, unacked = int(info.get("num_pending", 0)), int(info.get("num_ack_pending", 0))
    if (pending or unacked) and not module.params.get("force"):
        raise NatsModuleError(f"{kind.title} has {pending} undelivered and {unacked} unacknowledged message(s): "
                              "refusing to delete it. Nothing was changed. Set force=true to delete it anyway.",
                              {"changed": False, "consumer": consumer_view(info)})
    if not module.check_mode:
        await kind.delete()
    return _result(True, "delete", [], "consumer", {}, info["config"], {}, CONSUMER_BY_WIRE,
                   ack_state_lost=_consumer_state(info))
