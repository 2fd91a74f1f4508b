#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: nats_consumer
short_description: Create, update or delete a durable NATS JetStream consumer
description:
  - Manages one durable pull or push consumer on a JetStream stream.
  - Compares only the options you set, after normalising durations (seconds or V(30s),
    V(2m), ...) and the server's defaults, so a second run reports no change.
  - Options the server cannot change on an existing consumer (C(deliver_policy),
    C(opt_start_seq), C(opt_start_time), C(ack_policy), C(replay_policy),
    C(deliver_group), C(max_waiting), pull vs push) fail with the field, the current and the
    requested value, unless O(recreate=true), which deletes the consumer (losing its
    delivery and ack state) and creates it again.
  - A consumer is a pull consumer unless O(deliver_subject) is set (push).
  - Supports check mode and diff mode.
version_added: "1.0.0"
author: Tapio NATS migration toolkit
requirements:
  - python >= 3.9
  - nats-py >= 2.7.2
extends_documentation_fragment:
  - tapio_nats
options:
  stream:
    description: The stream the consumer reads.
    type: str
    required: true
  name:
    description: Durable consumer name.
    type: str
    required: true
  state:
    description: Whether the consumer should exist.
    type: str
    choices: [present, absent]
    default: present
  description:
    description: Free text description.
    type: str
  ack_policy:
    description: How messages are acknowledged; a new consumer gets V(explicit) when this is not set.
    type: str
    choices: [explicit, all, none]
  ack_wait:
    description: Time the server waits for an ack before redelivering; seconds or a duration (V(30s)).
    type: raw
  max_deliver:
    description: Maximum delivery attempts per message (V(-1) unlimited). At this limit the server emits a MAX_DELIVERIES advisory.
    type: int
  max_ack_pending:
    description: Maximum unacknowledged messages in flight; delivery stops at this limit.
    type: int
  filter_subject:
    description: Deliver only messages on this subject (mutually exclusive with O(filter_subjects)).
    type: str
  filter_subjects:
    description: Deliver only messages on these subjects.
    type: list
    elements: str
  deliver_policy:
    description: Where delivery starts; cannot change after creation.
    type: str
    choices: [all, last, new, by_start_sequence, by_start_time, last_per_subject]
  opt_start_seq:
    description: First sequence when O(deliver_policy=by_start_sequence).
    type: int
  opt_start_time:
    description: First time (RFC 3339) when O(deliver_policy=by_start_time).
    type: str
  replay_policy:
    description: Deliver as fast as possible or at the original rate.
    type: str
    choices: [instant, original]
  backoff:
    description:
      - Redelivery delays (durations); O(max_deliver) must be greater than the number of steps.
      - The server uses the first step as the ack wait, so O(ack_wait) must be unset or equal to it.
    type: list
    elements: raw
  deliver_subject:
    description: Push consumers only; the subject messages are pushed to. Pull vs push cannot change.
    type: str
  deliver_group:
    description: Push consumers only; queue group of the subscribers.
    type: str
  max_waiting:
    description: Pull consumers only; maximum outstanding pull requests.
    type: int
  headers_only:
    description: Deliver headers only.
    type: bool
  replicas:
    description: Consumer replicas (V(0) inherits the stream's).
    type: int
  idle_heartbeat:
    description: Push consumers; heartbeat interval (duration).
    type: raw
  flow_control:
    description: Push consumers; enable flow control.
    type: bool
  recreate:
    description: Delete and recreate the consumer when an unchangeable option differs (loses its ack state; warns).
    type: bool
    default: false
notes:
  - "Connection options are shared by every nats_* module: O(servers), O(user), O(password),
    O(token), O(creds_file), O(nkey_seed), O(tls_ca_cert), O(tls_client_cert),
    O(tls_client_key), O(tls_verify), O(connect_timeout), O(api_timeout); see docs/modules.md."
  - Check mode and diff mode are supported.
"""

EXAMPLES = r"""
- name: Create the pipeline's durable pull consumer
  ansible.legacy.nats_consumer:
    servers: "{{ tapio_nats_servers }}"
    user: "{{ tapio_nats_user }}"
    password: "{{ tapio_nats_password }}"
    stream: TAPIO_EVENTS
    name: tapio-pipeline
    ack_policy: explicit
    max_deliver: 5
    backoff: [30s, 1m, 5m]
    max_ack_pending: 1000
    filter_subject: tapio.events.>

- name: Create a push consumer for a SIEM export
  ansible.legacy.nats_consumer:
    stream: TAPIO_EVENTS
    name: siem-export
    deliver_subject: siem.deliver
    ack_policy: explicit
    filter_subjects: [tapio.events.k8s.>, tapio.events.systemd.>]

- name: Delete a consumer
  ansible.legacy.nats_consumer:
    stream: TAPIO_EVENTS
    name: siem-export
    state: absent
"""

RETURN = r"""
changed:
  description: Whether the consumer was (or would be) changed.
  returned: always
  type: bool
operation:
  description: One of create, update, delete, recreate, none.
  returned: always
  type: str
  sample: update
changed_fields:
  description: Options whose values differed from the server's.
  returned: always
  type: list
  elements: str
consumer:
  description: Consumer info after the operation (would-be config in check mode); empty when absent.
  returned: always
  type: dict
  contains:
    config:
      description: Consumer configuration (durations in nanoseconds).
      type: dict
      returned: when present
    num_pending:
      description: Messages not yet delivered.
      type: int
      returned: when present
    num_ack_pending:
      description: Delivered, not yet acknowledged.
      type: int
      returned: when present
    ack_floor:
      description: Highest contiguous acknowledged consumer and stream sequence.
      type: dict
      returned: when present
diff:
  description: Configuration before and after (durations rendered), in diff mode only.
  returned: when diff mode is on
  type: dict
"""

from typing import Any

from ansible.module_utils.tapio_jetstream import (
    CONSUMER_ARGUMENT_SPEC,
    CONSUMER_MUTUALLY_EXCLUSIVE,
    ensure_consumer_absent,
    ensure_consumer_present,
)
from ansible.module_utils.tapio_nats import JetStreamApi, exit_with_result, nats_module, run_with_connection
from ansible.module_utils.tapio_nats_config import desired_consumer_config


def main() -> None:
    module = nats_module(CONSUMER_ARGUMENT_SPEC, supports_check_mode=True, mutually_exclusive=CONSUMER_MUTUALLY_EXCLUSIVE)
    params = module.params
    try:
        desired = desired_consumer_config(params)
    except ValueError as error:
        module.fail_json(msg=f"consumer {params['name']}: {error}")

    async def handler(nc: Any, api: JetStreamApi) -> dict[str, Any]:
        if params["state"] == "absent":
            return await ensure_consumer_absent(module, api, params["stream"], params["name"])
        return await ensure_consumer_present(module, api, params["stream"], desired)

    exit_with_result(module, run_with_connection(module, handler))


if __name__ == "__main__":
    main()
