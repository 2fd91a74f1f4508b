#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: nats_replay_window
short_description: Create or reset a durable consumer on a time or sequence window of a stream, and count its events
description:
  - Creates a durable pull consumer (explicit acks) that starts at the window's start, for a
    second correlation engine to read history, on a time window (O(start_time) .. O(end_time), the
    end excluded) or a sequence window (O(start_seq) .. O(end_seq), both included). Without an
    end the window is open (everything from the start on).
  - The server has no end for a consumer; the window's last sequence is in the consumer's
    metadata (C(tapio.io/replay-last-seq), with C(tapio.io/replay-start) and
    C(tapio.io/replay-end)) and its reader stops after it.
  - Reports how many events the window holds, read from the stream (not from the consumer) -
    the first message at or after the start time and the last before the end time
    (C(STREAM.MSG.GET) by C(start_time), nats-server 2.11.0 or later); without O(filter_subjects)
    the sequences in between minus the deleted ones; with O(filter_subjects) the difference of
    the pending counts of two short-lived ephemeral consumers (no acks, in memory, deleted at
    once, also in check mode) at the window's first sequence and just after its last.
  - Never touches the pipeline's consumer - O(name) equal to O(pipeline_consumer) is refused,
    and only a consumer this module created (metadata C(tapio.io/replay)) is reset or deleted.
  - An existing replay consumer on another window or with other settings is refused unless
    O(reset=true), which deletes it and creates it on the window (its reader starts again).
    With the same window and settings, O(reset=true) resets it only if its reader has
    already read from it.
  - C(changed) compares the consumer before and after (its settable configuration and its
    reader's progress). Supports check mode and diff mode.
version_added: "1.4.0"
author: Tapio NATS migration toolkit
requirements:
  - python >= 3.9
  - nats-py >= 2.7.2
extends_documentation_fragment:
  - tapio_nats
options:
  stream:
    description: The stream to replay (Tapio's events stream).
    type: str
    required: true
  name:
    description: The replay consumer's durable name; never the pipeline's.
    type: str
    required: true
  state:
    description: V(absent) deletes the replay consumer (only one this module created).
    type: str
    choices: [present, absent]
    default: present
  start_time:
    description: The window's start (RFC 3339, with a zone); needs nats-server 2.11.0 or later.
    type: str
  end_time:
    description: >-
      The window's end (RFC 3339, excluded), after O(start_time) and not in the future. Left out,
      the window is open.
    type: str
  start_seq:
    description: The window's first stream sequence (a sequence window).
    type: int
  end_seq:
    description: The window's last stream sequence (included). Left out, the window is open.
    type: int
  filter_subjects:
    description: Replay only these subjects (inside the stream's); left out, every subject.
    type: list
    elements: str
  ack_wait:
    description: Time the server waits for the reader's ack before redelivering (duration).
    type: raw
  max_deliver:
    description: Maximum delivery attempts per message (V(-1) unlimited).
    type: int
  max_ack_pending:
    description: Maximum unacknowledged messages in flight.
    type: int
  description:
    description: Free text; by default C(Tapio replay <start> .. <end>).
    type: str
  reset:
    description: Delete and create the consumer when it exists on another window, with other settings, or already read.
    type: bool
    default: false
  pipeline_consumer:
    description: The pipeline's durable consumer, which the module refuses to touch.
    type: str
    default: tapio-pipeline
notes:
  - "Connection options are shared by every nats_* module: O(servers), O(user), O(password),
    O(token), O(creds_file), O(nkey_seed), O(tls_ca_cert), O(tls_client_cert),
    O(tls_client_key), O(tls_verify), O(connect_timeout), O(api_timeout), O(domain); see docs/modules.md."
  - Check mode and diff mode are supported.
"""

EXAMPLES = r"""
- name: Replay five minutes of events to a second correlation engine
  ansible.legacy.nats_replay_window:
    stream: TAPIO_EVENTS
    name: correlation-b-replay
    start_time: "2026-12-06T10:00:00Z"
    end_time: "2026-12-06T10:05:00Z"
  register: replay

- name: Replay sequences 1000 to 2000 again from the start
  ansible.legacy.nats_replay_window:
    stream: TAPIO_EVENTS
    name: correlation-b-replay
    start_seq: 1000
    end_seq: 2000
    reset: true

- name: Remove the replay consumer
  ansible.legacy.nats_replay_window:
    stream: TAPIO_EVENTS
    name: correlation-b-replay
    state: absent
"""

RETURN = r"""
changed:
  description: Whether the consumer was (or would be) created, reset or deleted.
  returned: always
  type: bool
operation:
  description: One of create, reset, delete, none.
  returned: always
  type: str
  sample: create
changed_fields:
  description: The options that differed from the existing replay consumer (a reset).
  returned: always
  type: list
  elements: str
window:
  description: The window and what the stream holds in it.
  returned: when state is present
  type: dict
  contains:
    start_time:
      description: The start time asked for (UTC), or null.
      type: str
    end_time:
      description: The end time asked for (UTC, excluded), or null.
      type: str
    start_seq:
      description: The first sequence asked for, or null.
      type: int
    end_seq:
      description: The last sequence asked for, or null.
      type: int
    first_seq:
      description: The first stored sequence in the window.
      type: int
    last_seq:
      description: The last stored sequence in the window (less than C(first_seq) when empty).
      type: int
    count:
      description: How many events the window holds (matching O(filter_subjects) when set).
      type: int
    exact:
      description: False when the stream kept growing while a filtered count was read (the count may be off by those).
      type: bool
    open:
      description: True without an end; the count is the events so far.
      type: bool
  sample: {start_time: "2026-12-06T10:00:00Z", end_time: "2026-12-06T10:05:00Z", first_seq: 1201,
           last_seq: 1500, count: 300, exact: true, open: false}
consumer:
  description: The replay consumer after the operation (the would-be configuration in check mode); empty when absent.
  returned: always
  type: dict
diff:
  description: The consumer's configuration and its reader's progress, before and after. Diff mode only.
  returned: when diff mode is on
  type: dict
"""

from typing import Any

from ansible.module_utils.tapio_jetstream_fields import ConfigError
from ansible.module_utils.tapio_nats import (
    JetStreamApi,
    NatsModuleError,
    exit_with_result,
    nats_module,
    run_with_connection,
)
from ansible.module_utils.tapio_replay_window import (
    bounds,
    comparable,
    count_window,
    is_replay,
    name_problems,
    now_utc,
    plan,
    replay_config,
    view,
    window_of,
)

ARGUMENT_SPEC: dict[str, Any] = {
    "stream": {"type": "str", "required": True},
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "start_time": {"type": "str"},
    "end_time": {"type": "str"},
    "start_seq": {"type": "int"},
    "end_seq": {"type": "int"},
    "filter_subjects": {"type": "list", "elements": "str"},
    "ack_wait": {"type": "raw"},
    "max_deliver": {"type": "int"},
    "max_ack_pending": {"type": "int"},
    "description": {"type": "str"},
    "reset": {"type": "bool", "default": False},
    "pipeline_consumer": {"type": "str", "default": "tapio-pipeline"},
}
MUTUALLY_EXCLUSIVE = [["start_time", "start_seq"], ["start_time", "end_seq"], ["start_seq", "end_time"]]


def result(changed: bool, operation: str, fields: list[str], before: Any, after: Any, **extra: Any) -> dict[str, Any]:
    return {"changed": changed, "operation": operation, "changed_fields": fields,
            "diff": {"before": comparable(before), "after": comparable(after)}, **extra}


async def absent(module: Any, api: JetStreamApi) -> dict[str, Any]:
    params = module.params
    info = await api.consumer_info(params["stream"], params["name"]) if await api.stream_info(params["stream"]) else None
    if not info:
        return result(False, "none", [], None, None, consumer={})
    if not is_replay(info):
        raise NatsModuleError(f"consumer {params['name']} is not a replay consumer: refusing to delete it. "
                              "Nothing was changed.")
    if not module.check_mode:
        await api.request(f"$JS.API.CONSUMER.DELETE.{params['stream']}.{params['name']}")
    return result(True, "delete", [], info, None, consumer={})


async def present(module: Any, api: JetStreamApi) -> dict[str, Any]:
    params = module.params
    stream, name = params["stream"], params["name"]
    try:
        window = window_of(params, now_utc())
    except ConfigError as error:
        raise NatsModuleError(f"replay {name}: {error}. Nothing was changed.") from None
    stream_info = await api.stream_info(stream)
    if stream_info is None:
        raise NatsModuleError(f"replay {name}: stream {stream} does not exist. Nothing was changed.")
    first, last = await bounds(api, stream, stream_info.get("state") or {}, window)
    count, exact = await count_window(api, stream, first, last, list(params.get("filter_subjects") or []))
    facts = {**window.describe(), "first_seq": first, "last_seq": last, "count": count, "exact": exact,
             "open": not window.closed}
    if not exact:
        module.warn(f"replay {name}: the stream kept growing while the filtered window was counted; the count "
                    f"({count}) may be off by the events that arrived meanwhile")
    desired = replay_config(name, window, window.end_seq or last, params)
    info = await api.consumer_info(stream, name)
    operation, fields = plan(desired, info, params["reset"])
    if operation == "none":
        return result(False, "none", [], info, info, window=facts, consumer=view(info))
    after: Any = {"config": desired}
    if not module.check_mode:
        if operation == "reset":
            await api.request(f"$JS.API.CONSUMER.DELETE.{stream}.{name}")
        after = await api.request(f"$JS.API.CONSUMER.CREATE.{stream}.{name}",
                                  {"stream_name": stream, "config": desired, "action": "create"})
    changed = comparable(info) != comparable(after)
    return result(changed, operation if changed else "none", fields, info, after, window=facts, consumer=view(after))


def main() -> None:
    module = nats_module(ARGUMENT_SPEC, supports_check_mode=True, mutually_exclusive=MUTUALLY_EXCLUSIVE,
                         required_if=[("state", "present", ("start_time", "start_seq"), True)],
                         required_by={"end_time": "start_time", "end_seq": "start_seq"})
    params = module.params
    problems = name_problems(params["name"], params["pipeline_consumer"])
    if problems:
        module.fail_json(msg=f"replay {params['name']}: {'; '.join(problems)}. Nothing was changed.", changed=False)

    async def handler(nc: Any, api: JetStreamApi) -> dict[str, Any]:
        return await (absent(module, api) if params["state"] == "absent" else present(module, api))

    exit_with_result(module, run_with_connection(module, handler))


if __name__ == "__main__":
    main()
