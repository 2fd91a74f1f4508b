# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A replay consumer: a durable pull consumer on a window of the events stream, for a second
correlation engine to read history (library/nats_replay_window.py).

The window is a time window (``start_time`` .. ``end_time``, the end excluded) or a sequence
window (``start_seq`` .. ``end_seq``, both included); without an end it is open (everything from
the start on). The consumer starts at the window's start (``by_start_time`` or
``by_start_sequence``); the server has no end for a consumer, so its reader stops after the
window's last sequence, which the consumer carries in its metadata (``tapio.io/replay-last-seq``).

How many events the window holds is read from the stream, not from the consumer:

- its bounds: the first message at or after the start time is ``STREAM.MSG.GET`` with
  ``start_time`` (nats-server 2.11 or later); the last one before the end time is the message
  before the first at or after it (or the stream's last one);
- without a filter: the sequences in between minus the deleted ones (``STREAM.INFO`` with
  ``deleted_details``);
- with ``filter_subjects``: the pending count of a short-lived ephemeral consumer (no acks, in
  memory, deleted at once) at the first sequence minus that of one just after the last, read
  while the stream's last sequence stays the same.

The pipeline's consumer is never touched: a replay named like it is refused, and only a
consumer this module created (metadata ``tapio.io/replay``) is reset or deleted. The rules are
pure functions (tests/unit/test_replay_window.py); the API calls are at the end.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

from ansible.module_utils.tapio_jetstream import consumer_view
from ansible.module_utils.tapio_jetstream_fields import (
    CONSUMER_BY_WIRE,
    CONSUMER_FIELDS,
    ConfigError,
    changed_fields,
    desired_config as wire_config,
    name_problem,
    normal_time,
    option_names,
    parse_version,
    readable,
)
from ansible.module_utils.tapio_nats import JetStreamApi, JetStreamApiError, NatsModuleError

MARK = "tapio.io/replay"
START_KEY, END_KEY, LAST_SEQ_KEY = "tapio.io/replay-start", "tapio.io/replay-end", "tapio.io/replay-last-seq"
NO_MESSAGE = 10037          # STREAM.MSG.GET: no message found
CONSUMER_NOT_FOUND = 10014
START_TIME_SINCE = (2, 11, 0)
STABLE_READS = 3
USER_OPTIONS = ("ack_wait", "max_deliver", "max_ack_pending", "filter_subjects")


@dataclass(frozen=True)
class Window:
    """What the user asked for, validated: times as the server writes them (UTC, Z)."""
    start_time: str = ""
    end_time: str = ""
    start_seq: int = 0
    end_seq: int = 0

    @property
    def by_time(self) -> bool:
        return bool(self.start_time)

    @property
    def closed(self) -> bool:
        return bool(self.end_time or self.end_seq)

    def describe(self) -> dict[str, Any]:
        return {"start_time": self.start_time or None, "end_time": self.end_time or None,
                "start_seq": self.start_seq or None, "end_seq": self.end_seq or None}


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def window_of(params: Mapping[str, Any], now: datetime) -> Window:
    """The window *params* asks for (ConfigError naming the option otherwise). A time window's
    end must be past: a reader could not tell events still to come from the window's."""
    if params.get("start_time"):
        start = normal_time(params["start_time"], "start_time")
        end = normal_time(params["end_time"], "end_time") if params.get("end_time") else ""
        if end and _moment(end) <= _moment(start):
            raise ConfigError(f"end_time {end} must be after start_time {start}")
        if end and _moment(end) > now:
            raise ConfigError(f"end_time {end} is in the future (now {now.isoformat()}): the window must have "
                              "ended; leave end_time out for an open window")
        return Window(start_time=start, end_time=end)
    start_seq, end_seq = int(params.get("start_seq") or 0), int(params.get("end_seq") or 0)
    if start_seq < 1:
        raise ConfigError(f"start_seq must be a stream sequence (1 or more), got {start_seq}")
    if params.get("end_seq") is not None and end_seq < start_seq:
        raise ConfigError(f"end_seq {end_seq} must not be before start_seq {start_seq}")
    return Window(start_seq=start_seq, end_seq=end_seq)


def name_problems(name: str, pipeline_consumer: str) -> list[str]:
    """A replay has a consumer name of its own, never the pipeline's."""
    problem = name_problem("consumer", name)
    if problem:
        return [problem]
    if name == pipeline_consumer:
        return [f"{name} is the pipeline's durable consumer (pipeline_consumer): a replay never touches it; "
                "name the replay's own consumer"]
    return []


def count_between(first: int, last: int, deleted: list[int]) -> int:
    """Messages stored from sequence *first* to *last*, both included, without a filter."""
    if first < 1 or last < first:
        return 0
    return last - first + 1 - sum(1 for seq in set(deleted) if first <= seq <= last)


def replay_config(name: str, window: Window, last_seq: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """The replay consumer's configuration on the wire: pull, explicit acks, starting at the
    window's start, the window in its metadata; the user's ack settings and filter on top."""
    metadata = {MARK: "true", START_KEY: window.start_time or str(window.start_seq)}
    if window.closed:
        metadata.update({END_KEY: window.end_time or str(window.end_seq), LAST_SEQ_KEY: str(last_seq)})
    options: dict[str, Any] = {
        "ack_policy": "explicit", "metadata": metadata,
        "description": params.get("description") or f"Tapio replay {metadata[START_KEY]} .. {metadata.get(END_KEY, 'now')}",
        **({"deliver_policy": "by_start_time", "opt_start_time": window.start_time} if window.by_time
           else {"deliver_policy": "by_start_sequence", "opt_start_seq": window.start_seq}),
        **{option: params[option] for option in USER_OPTIONS if params.get(option) is not None}}
    return {"durable_name": name, "name": name, **wire_config(options, CONSUMER_FIELDS)}


def is_replay(info: Optional[Mapping[str, Any]]) -> bool:
    return bool(info) and ((info or {}).get("config") or {}).get("metadata", {}).get(MARK) == "true"


def progress(info: Optional[Mapping[str, Any]]) -> dict[str, int]:
    """How far a consumer's reader got: deliveries, acknowledged deliveries and those waiting
    for an ack. Consumer sequences, which a new consumer starts at 0 (its stream sequences
    start just before its first message)."""
    info = info or {}
    return {"delivered": int((info.get("delivered") or {}).get("consumer_seq", 0)),
            "acknowledged": int((info.get("ack_floor") or {}).get("consumer_seq", 0)),
            "num_ack_pending": int(info.get("num_ack_pending", 0))}


def plan(desired: dict[str, Any], info: Optional[Mapping[str, Any]], reset: bool) -> tuple[str, list[str]]:
    """``(operation, changed options)``: create, reset (delete and create), or none. A replay
    consumer is never updated in place: another window or other settings need ``reset``, and
    a consumer the module did not create is refused."""
    if not info:
        return "create", []
    if not is_replay(info):
        raise NatsModuleError(f"consumer {desired['name']} exists and is not a replay consumer (no {MARK} metadata): "
                              "refusing to reset it. Nothing was changed. Choose another name.")
    fields = changed_fields(desired, info["config"], CONSUMER_BY_WIRE)
    names = option_names(fields, CONSUMER_BY_WIRE)
    if fields and not reset:
        raise NatsModuleError(
            f"replay consumer {desired['name']} exists with another window or settings ({', '.join(names)}): "
            "refusing to change it. Nothing was changed. Set reset=true to delete it and create it on this "
            "window (its reader starts again from the window's start).", {"changed": False})
    if fields or (reset and any(progress(info).values())):
        return "reset", names
    return "none", []


def comparable(info: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """What ``changed`` compares before and after: the settable configuration and the progress."""
    if not info:
        return {}
    config = {key: value for key, value in (info.get("config") or {}).items()
              if key in CONSUMER_BY_WIRE and CONSUMER_BY_WIRE[key].settable}
    return {"config": readable(config, CONSUMER_BY_WIRE), **progress(info)}


# --------------------------------------------------------------------------- the server's side


async def first_seq_at(api: JetStreamApi, stream: str, moment: str) -> Optional[int]:
    """The sequence of the first message stored at or after *moment*, or None."""
    try:
        answer = await api.request(f"$JS.API.STREAM.MSG.GET.{stream}", {"start_time": moment})
    except JetStreamApiError as error:
        if error.err_code == NO_MESSAGE:
            return None
        raise
    return int(answer["message"]["seq"])


def require_start_time(api: JetStreamApi) -> None:
    version = parse_version(api.server_version())
    if version is not None and version < START_TIME_SINCE:
        raise NatsModuleError(f"a time window needs nats-server 2.11.0 or later (STREAM.MSG.GET by start_time; the "
                              f"server is {api.server_version()}); use start_seq. Nothing was changed.")


async def bounds(api: JetStreamApi, stream: str, state: Mapping[str, Any], window: Window) -> tuple[int, int]:
    """The window's first and last stored sequence (last < first when it holds nothing)."""
    stream_first, stream_last = int(state.get("first_seq", 0)), int(state.get("last_seq", 0))
    if window.by_time:
        require_start_time(api)
        first = await first_seq_at(api, stream, window.start_time)
        after = await first_seq_at(api, stream, window.end_time) if window.end_time else None
        last = after - 1 if after is not None else stream_last
        return (first if first is not None else stream_last + 1), last
    last = min(window.end_seq, stream_last) if window.end_seq else stream_last
    return max(window.start_seq, stream_first), last


async def _pending_from(api: JetStreamApi, stream: str, seq: int, filters: list[str]) -> int:
    config = {"deliver_policy": "by_start_sequence", "opt_start_seq": seq, "ack_policy": "none",
              "mem_storage": True, "num_replicas": 1, "inactive_threshold": 30_000_000_000,
              "filter_subjects": filters}
    created = await api.request(f"$JS.API.CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config})
    try:
        return int(created.get("num_pending", 0))
    finally:
        try:
            await api.request(f"$JS.API.CONSUMER.DELETE.{stream}.{created['name']}")
        except JetStreamApiError as error:  # gone already: its inactive threshold removes it anyway
            if error.err_code != CONSUMER_NOT_FOUND:
                raise


async def count_window(api: JetStreamApi, stream: str, first: int, last: int,
                       filters: list[str]) -> tuple[int, bool]:
    """``(count, exact)`` of the window's events; see the module's docstring."""
    if last < first:
        return 0, True
    if not filters:
        info = await api.request(f"$JS.API.STREAM.INFO.{stream}", {"deleted_details": True})
        return count_between(first, last, list((info.get("state") or {}).get("deleted") or [])), True
    count = 0
    for _attempt in range(STABLE_READS):
        before = int(((await api.stream_info(stream)) or {}).get("state", {}).get("last_seq", 0))
        after_window = await _pending_from(api, stream, last + 1, filters) if last < before else 0
        count = await _pending_from(api, stream, first, filters) - after_window
        if int(((await api.stream_info(stream)) or {}).get("state", {}).get("last_seq", 0)) == before:
            return count, True
    return count, False


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def view(info: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    return consumer_view(dict(info)) if info else {}
