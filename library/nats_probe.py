#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: nats_probe
short_description: Prove a JetStream event path end to end with canary Tapio events
description:
  - O(mode=canary) publishes O(count) canary UnifiedEvents (realistic Tapio JSON, 32-hex
    C(id) also sent as C(Nats-Msg-Id), the header C(Tapio-Canary) set to the probe run's id
    and the attribute C(canary) to V(true), so a consumer can skip them) on O(subjects),
    checks every publish ack, reads each
    stored message back by sequence to confirm it is stored, and with O(consumer) waits
    until that durable consumer's ack floor has passed the canaries (the pipeline consumed
    them).
  - O(mode=replay) reads events back from O(replay_start_seq) or O(replay_start_time) with
    an ephemeral ordered consumer (no acks, memory storage), so durable consumers are not
    disturbed; O(expect_ids) turns it into a replay check.
  - O(mode=throughput) publishes O(count) events and reports events/s and publish-ack
    latency percentiles. O(publisher=windowed) keeps up to O(window) un-acked messages in
    flight and counts acks asynchronously; O(publisher=one_at_a_time) awaits each
    C(js.publish) (the plan's perf-test method).
  - In check mode nothing is published (canary and throughput report what they would do);
    replay is read-only and runs in check mode too.
version_added: "1.0.0"
author: Tapio NATS migration toolkit
requirements:
  - python >= 3.9
  - nats-py >= 2.7.2
extends_documentation_fragment:
  - tapio_nats
options:
  stream:
    description: Stream the events land in (and are replayed from).
    type: str
    required: true
  mode:
    description: What to do.
    type: str
    choices: [canary, replay, throughput]
    default: canary
  subjects:
    description: Subjects to publish on, round robin; each must be captured by O(stream).
    type: list
    elements: str
    default: [tapio.events.probe.canary]
  count:
    description: Number of events to publish (canary, throughput).
    type: int
    default: 3
  source:
    description: The events' C(source) field.
    type: str
    default: tapio-probe
  consumer:
    description: Durable consumer whose acknowledgement of the canaries to wait for (canary mode).
    type: str
  wait_timeout:
    description: Seconds to wait for the consumer's acks, for publish acks and for replayed messages.
    type: float
    default: 60
  wait_sleep:
    description: Seconds between consumer checks.
    type: float
    default: 0.5
  replay_start_seq:
    description: Replay from this stream sequence (mutually exclusive with O(replay_start_time)).
    type: int
  replay_start_time:
    description: Replay from this time, RFC 3339 (mutually exclusive with O(replay_start_seq)).
    type: str
  replay_subject:
    description: Replay only this subject (default all of the stream's subjects).
    type: str
  replay_max:
    description: Stop after this many replayed events.
    type: int
    default: 1000
  expect_ids:
    description: Event ids the replay must contain; the module fails naming those missing.
    type: list
    elements: str
    default: []
  replay_canaries:
    description:
      - Canary mode - once acknowledged (O(consumer)), read the canaries back from the stream from
        their first sequence, as O(mode=replay) with O(expect_ids) set to their ids does, in the same
        connection; the result's C(replay) holds what that returns. The replay is capped at O(replay_max).
    type: bool
    default: false
  publisher:
    description: Publishing method in throughput mode.
    type: str
    choices: [windowed, one_at_a_time]
    default: windowed
  window:
    description: Maximum un-acknowledged messages in flight for O(publisher=windowed).
    type: int
    default: 500
  msg_id:
    description: Send C(Nats-Msg-Id) in throughput mode (canaries always carry it).
    type: bool
    default: true
notes:
  - Connection options are shared by every nats_* module; see docs/modules.md.
  - Check mode is supported.
"""

EXAMPLES = r"""
- name: Publish three canaries and wait until the pipeline has acknowledged them
  ansible.legacy.nats_probe:
    servers: "{{ tapio_nats_servers }}"
    user: "{{ tapio_nats_user }}"
    password: "{{ tapio_nats_password }}"
    stream: TAPIO_EVENTS
    subjects: [tapio.events.k8s.default.probe, tapio.events.ebpf.probe]
    count: 3
    consumer: tapio-pipeline
    wait_timeout: 120
  register: canary

- name: The same, then read them back from the stream in the same connection
  ansible.legacy.nats_probe:
    stream: TAPIO_EVENTS
    subjects: [tapio.events.k8s.default.probe]
    consumer: tapio-pipeline
    replay_canaries: true

- name: Replay the canaries without touching durable consumers
  ansible.legacy.nats_probe:
    stream: TAPIO_EVENTS
    mode: replay
    replay_start_seq: "{{ canary.first_seq }}"
    expect_ids: "{{ canary.events | map(attribute='id') | list }}"

- name: Measure publish throughput
  ansible.legacy.nats_probe:
    stream: TAPIO_BENCH
    subjects: [tapio.bench.events]
    mode: throughput
    count: 50000
"""

RETURN = r"""
events:
  description: Canary events published (id, subject, seq, duplicate) or events replayed (seq, subject, id, type, timestamp).
  returned: canary and replay modes
  type: list
  elements: dict
first_seq:
  description: Lowest stream sequence of the canaries (canary) or of the replayed events (replay).
  returned: canary and replay modes
  type: int
last_seq:
  description: Highest stream sequence of the canaries or replayed events.
  returned: canary and replay modes
  type: int
stored:
  description: Every canary was acked by the stream and read back by sequence with its id.
  returned: canary mode
  type: bool
consumer_acked:
  description: The consumer's ack floor passed the canaries within O(wait_timeout).
  returned: canary mode with consumer
  type: bool
consumer:
  description: The consumer's state at the end of the wait.
  returned: canary mode with consumer
  type: dict
replay:
  description: What reading the canaries back returned (replayed, events, missing_ids, first_seq, last_seq).
  returned: canary mode with O(replay_canaries)
  type: dict
replayed:
  description: Number of events replayed.
  returned: replay mode
  type: int
missing_ids:
  description: Ids from O(expect_ids) not found in the replay.
  returned: replay mode
  type: list
throughput:
  description: method, window, messages, acked, errors, duplicates, elapsed_s, events_per_s, mb_per_s, avg_payload_bytes, latency_ms (p50, p95, p99, max).
  returned: throughput mode
  type: dict
"""

import asyncio
import base64
import json
import secrets
import time
from typing import Any, Optional

from ansible.module_utils.tapio_nats import JetStreamApi, NatsModuleError, nats_module, run_with_connection
from ansible.module_utils.tapio_nats_config import subject_is_within, subjects_overlap
from ansible.module_utils.tapio_nats_probe import (
    ack_floor_passed,
    prepare_batch,
    publish_one_at_a_time,
    publish_windowed,
)
from ansible.module_utils.tapio_wait import Budget, Clock, Pause, doubling, wait_within_async

ARGUMENT_SPEC: dict[str, Any] = {
    "stream": {"type": "str", "required": True},
    "mode": {"type": "str", "choices": ["canary", "replay", "throughput"], "default": "canary"},
    "subjects": {"type": "list", "elements": "str", "default": ["tapio.events.probe.canary"]},
    "count": {"type": "int", "default": 3},
    "source": {"type": "str", "default": "tapio-probe"},
    "consumer": {"type": "str"},
    "wait_timeout": {"type": "float", "default": 60.0},
    "wait_sleep": {"type": "float", "default": 0.5},
    "replay_start_seq": {"type": "int"},
    "replay_start_time": {"type": "str"},
    "replay_subject": {"type": "str"},
    "replay_max": {"type": "int", "default": 1000},
    "expect_ids": {"type": "list", "elements": "str", "default": []},
    "replay_canaries": {"type": "bool", "default": False},
    "publisher": {"type": "str", "choices": ["windowed", "one_at_a_time"], "default": "windowed"},
    "window": {"type": "int", "default": 500},
    "msg_id": {"type": "bool", "default": True},
}


async def require_stream(api: JetStreamApi, stream: str, subjects: list[str]) -> dict[str, Any]:
    info = await api.stream_info(stream)
    if info is None:
        raise NatsModuleError(f"stream {stream} does not exist; nothing was published")
    captured = info["config"].get("subjects") or []
    stray = [s for s in subjects if not any(subject_is_within(s, c) for c in captured)]
    if stray:
        raise NatsModuleError(f"subject(s) {stray} are not captured by stream {stream} (subjects {captured}); "
                              "nothing was published")
    return info


async def read_back(api: JetStreamApi, stream: str, seq: int) -> dict[str, Any]:
    answer = await api.request(f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq})
    message = answer.get("message", {})
    return json.loads(base64.b64decode(message.get("data", "")) or b"{}")


async def wait_for_consumer(module: Any, api: JetStreamApi, stream: str, last_seq: int, clock: Clock = time.monotonic,
                            pause: Pause = asyncio.sleep) -> tuple[bool, dict[str, Any]]:
    """Whether the consumer acknowledged up to *last_seq* within wait_timeout, and its state."""
    async def look() -> dict[str, Any]:
        return await api.consumer_info(stream, module.params["consumer"]) or {}

    # A running consumer acks within milliseconds: look again soon, then back off to wait_sleep.
    pauses = doubling(min(0.05, module.params["wait_sleep"]), module.params["wait_sleep"])
    info, _ = await wait_within_async(look, lambda found: ack_floor_passed(found, last_seq),
                                      Budget(module.params["wait_timeout"], look_past=True), pauses, clock, pause)
    view = {k: info.get(k) for k in ("num_pending", "num_ack_pending", "num_redelivered", "ack_floor", "delivered")}
    return ack_floor_passed(info, last_seq), view


async def canary(module: Any, nc: Any, api: JetStreamApi) -> dict[str, Any]:
    params = module.params
    await require_stream(api, params["stream"], params["subjects"])
    if params["consumer"]:
        cinfo = await api.consumer_info(params["stream"], params["consumer"])
        if cinfo is None:
            raise NatsModuleError(f"consumer {params['consumer']} does not exist on stream {params['stream']}; "
                                  "nothing was published")
        cfg = cinfo["config"]
        filters = cfg.get("filter_subjects") or ([cfg["filter_subject"]] if cfg.get("filter_subject") else [])
        if filters and not all(any(subjects_overlap(s, f) for f in filters) for s in params["subjects"]):
            raise NatsModuleError(f"consumer {params['consumer']} filters {filters} and would never see "
                                  f"subjects {params['subjects']}; nothing was published")
    run_id = secrets.token_hex(8)
    batch = prepare_batch(params["subjects"], params["count"], run_id, params["source"])
    if module.check_mode:
        return {"changed": True, "events": [{"id": i, "subject": s} for s, _, i in batch], "stored": False}
    js = nc.jetstream(timeout=params["wait_timeout"])
    events = []
    for subject, payload, event_id in batch:
        # Tapio-Canary lets Tapio's pipeline tell a canary from an event without parsing it.
        ack = await js.publish(subject, payload, stream=params["stream"],
                               headers={"Nats-Msg-Id": event_id, "Tapio-Canary": run_id})
        events.append({"id": event_id, "subject": subject, "seq": ack.seq, "duplicate": bool(ack.duplicate)})
    stored = True
    for event in events:
        body = await read_back(api, params["stream"], event["seq"])
        event["stored"] = body.get("id") == event["id"]
        stored = stored and event["stored"]
    seqs = [e["seq"] for e in events]
    result = {"changed": True, "run_id": run_id, "events": events, "stored": stored,
              "first_seq": min(seqs, default=0), "last_seq": max(seqs, default=0)}
    if not stored:
        raise NatsModuleError("canary events were acked but not all could be read back by sequence", result)
    if params["consumer"]:
        acked, view = await wait_for_consumer(module, api, params["stream"], result["last_seq"])
        result.update({"consumer_acked": acked, "consumer": view})
        if not acked:
            raise NatsModuleError(
                f"consumer {params['consumer']} did not acknowledge the canaries (up to stream seq "
                f"{result['last_seq']}) within {params['wait_timeout']}s; ack floor is {view.get('ack_floor')}",
                result)
    if params["replay_canaries"]:
        # The same connection reads them back from the stream (an ordered consumer of its own).
        read_back_params = {**params, "replay_start_seq": result["first_seq"], "replay_start_time": None,
                            "replay_subject": None, "expect_ids": [e["id"] for e in events]}
        try:
            result["replay"] = await replay(module, nc, api, read_back_params)
        except NatsModuleError as exc:
            raise NatsModuleError(f"canaries acknowledged, but the {exc}", {**result, "replay": exc.result}) from exc
    return result


def replay_config(params: dict[str, Any]) -> dict[str, Any]:
    if params["replay_start_seq"]:
        return {"deliver_policy": "by_start_sequence", "opt_start_seq": params["replay_start_seq"]}
    if params["replay_start_time"]:
        return {"deliver_policy": "by_start_time", "opt_start_time": params["replay_start_time"]}
    return {"deliver_policy": "all"}


async def remove_ordered_consumer(api: JetStreamApi, stream: str, sub: Any) -> None:
    """Delete the ephemeral consumer now rather than leave it to its inactivity timeout."""
    try:
        name = (await sub.consumer_info()).name
        await sub.unsubscribe()
        await api.request(f"$JS.API.CONSUMER.DELETE.{stream}.{name}")
    except Exception:  # already gone (ordered consumers reset themselves): nothing to clean
        pass


async def replay(module: Any, nc: Any, api: JetStreamApi, params: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    from nats.js.api import ConsumerConfig  # imported lazily: the module_utils import guard runs first

    params = params or module.params
    info = await require_stream(api, params["stream"], [params["replay_subject"]] if params["replay_subject"] else [])
    last_seq = int(info["state"].get("last_seq", 0))
    subject = params["replay_subject"] or ">"
    js = nc.jetstream(timeout=params["wait_timeout"])
    config = ConsumerConfig.from_response({**replay_config(params), "inactive_threshold": 30 * 10**9})
    sub = await js.subscribe(subject, stream=params["stream"], ordered_consumer=True, config=config)
    events: list[dict[str, Any]] = []
    try:
        while len(events) < params["replay_max"] and last_seq > 0:
            # Per-message metadata says how many remain; the first wait is short so an
            # empty range does not cost the whole timeout.
            wait = params["wait_timeout"] if events else min(params["wait_timeout"], 3.0)
            try:
                msg = await sub.next_msg(timeout=wait)
            except Exception:  # nats.errors.TimeoutError: nothing (more) to replay
                break
            meta = msg.metadata
            try:
                body = json.loads(msg.data)
            except ValueError:
                body = {}
            events.append({"seq": meta.sequence.stream, "subject": msg.subject, "id": body.get("id"),
                           "type": body.get("type"), "timestamp": body.get("timestamp")})
            if meta.num_pending == 0 or meta.sequence.stream >= last_seq:
                break
    finally:
        await remove_ordered_consumer(api, params["stream"], sub)
    seen = {e["id"] for e in events}
    missing = [i for i in params["expect_ids"] if i not in seen]
    result = {"changed": False, "replayed": len(events), "events": events, "missing_ids": missing,
              "first_seq": events[0]["seq"] if events else 0, "last_seq": events[-1]["seq"] if events else 0}
    if missing:
        raise NatsModuleError(f"replay from {replay_config(params)} did not return event id(s) {missing}", result)
    return result


async def throughput(module: Any, nc: Any, api: JetStreamApi) -> dict[str, Any]:
    params = module.params
    await require_stream(api, params["stream"], params["subjects"])
    batch = prepare_batch(params["subjects"], params["count"], secrets.token_hex(8), params["source"])
    if module.check_mode:
        return {"changed": True, "throughput": {"messages": len(batch), "method": params["publisher"]}}
    if params["publisher"] == "windowed":
        report = await publish_windowed(nc, batch, params["window"], params["wait_timeout"], params["msg_id"])
    else:
        report = await publish_one_at_a_time(nc.jetstream(), batch, params["wait_timeout"], params["msg_id"])
    result = {"changed": True, "throughput": report}
    if report["errors"] or report["timed_out"] or report["acked"] != report["messages"]:
        raise NatsModuleError(f"throughput run lost acks: {report['acked']}/{report['messages']} acked, "
                              f"{report['errors']} error(s), first error {report['first_error']}", result)
    return result


def main() -> None:
    module = nats_module(ARGUMENT_SPEC, supports_check_mode=True,
                         mutually_exclusive=[["replay_start_seq", "replay_start_time"]])
    if module.params["count"] < 1 or module.params["window"] < 1:
        module.fail_json(msg="count and window must be at least 1")
    handlers = {"canary": canary, "replay": replay, "throughput": throughput}

    async def handler(nc: Any, api: JetStreamApi) -> dict[str, Any]:
        return await handlers[module.params["mode"]](module, nc, api)

    module.exit_json(**run_with_connection(module, handler))


if __name__ == "__main__":
    main()
