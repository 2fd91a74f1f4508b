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
  - Manages one durable pull or push consumer on a JetStream stream; every field of
    nats-server's consumer configuration is an option (docs/modules.md lists them with the
    release that added each and how the server lets it change).
  - Compares only the options you set, after normalising durations (seconds or V(30s),
    V(2m), ...), sizes, times (compared as instants) and the server's defaults, so a second
    run reports no change. An update sends the live configuration with your options on top;
    setting O(filter_subject) replaces O(filter_subjects) and the other way round.
  - A new consumer gets O(ack_policy=explicit) unless you set another, because the
    server's own default is V(none), which counts every message as delivered the moment it
    is sent.
  - An option the connected server's version does not know is refused by name before any
    change.
  - Options the server cannot change on an existing consumer (C(deliver_policy),
    C(opt_start_seq), C(opt_start_time), C(ack_policy), C(replay_policy),
    C(idle_heartbeat), C(flow_control), C(max_waiting), C(mem_storage), pull vs push) fail
    with the option, the current and the requested value, unless O(recreate=true).
  - A recreate deletes the consumer and creates it from its live configuration with your
    options on top (every option you did not set, C(ack_policy) included, keeps its live
    value); the result and the diff say what delivery state is lost. If the new consumer
    cannot be created the old one is put back.
  - O(state=absent) refuses a consumer with undelivered or unacknowledged messages, naming
    the counts, unless O(force=true); O(protected=true) refuses to delete or recreate it.
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
  deliver_policy:
    description: Where delivery starts; cannot change.
    type: str
    choices: [all, last, new, by_start_sequence, by_start_time, last_per_subject]
  opt_start_seq:
    description: First sequence when O(deliver_policy=by_start_sequence); cannot change.
    type: int
  opt_start_time:
    description: >-
      First time (RFC 3339) when O(deliver_policy=by_start_time); compared as an instant; cannot
      change.
    type: str
  ack_policy:
    description: >-
      How messages are acknowledged; a new consumer gets V(explicit) when this is not set, and a
      recreate keeps the live one. Cannot change. V(flow_control) needs nats-server 2.14.0 or
      later.
    type: str
    choices: [explicit, all, none, flow_control]
  ack_wait:
    description: Time the server waits for an ack before redelivering (duration).
    type: raw
  max_deliver:
    description: >-
      Maximum delivery attempts per message (V(-1) unlimited); at this limit the server emits a
      MAX_DELIVERIES advisory.
    type: int
  backoff:
    description: >-
      Redelivery delays in order (step n is the delay before redelivery n); at most
      O(max_deliver) steps.
    type: list
    elements: raw
  filter_subject:
    description: Deliver only messages on this subject; setting it replaces O(filter_subjects).
    type: str
  filter_subjects:
    description: >-
      Deliver only messages on these subjects (a set); setting it replaces O(filter_subject).
      Needs nats-server 2.10.0 or later.
    type: list
    elements: str
  replay_policy:
    description: Deliver as fast as possible or at the original rate; cannot change.
    type: str
    choices: [instant, original]
  rate_limit_bps:
    description: "Push consumers: delivery rate limit in bits per second."
    type: int
  sample_freq:
    description: Percentage of acks sampled as advisories, such as V(10%).
    type: str
  max_waiting:
    description: "Pull consumers: maximum outstanding pull requests; cannot change."
    type: int
  max_ack_pending:
    description: Maximum unacknowledged messages in flight; delivery stops at this limit.
    type: int
  flow_control:
    description: "Push consumers: flow control (needs O(idle_heartbeat)); cannot change."
    type: bool
  headers_only:
    description: Deliver headers only.
    type: bool
  max_batch:
    description: "Pull consumers: largest batch one pull may ask for."
    type: int
  max_expires:
    description: "Pull consumers: longest expiry one pull may ask for (duration)."
    type: raw
  max_bytes:
    description: "Pull consumers: most bytes one pull may ask for (bytes or a size such as V(1MB))."
    type: raw
  deliver_subject:
    description: "Push consumers only: the subject messages are pushed to. Pull vs push cannot change."
    type: str
  deliver_group:
    description: "Push consumers: queue group of the subscribers."
    type: str
  idle_heartbeat:
    description: "Push consumers: heartbeat interval (duration); cannot change."
    type: raw
  inactive_threshold:
    description: >-
      Delete the consumer after this long without activity (duration). On a durable consumer
      this removes it.
    type: raw
  replicas:
    description: Consumer replicas (V(0) inherits the stream's; at most the stream's).
    type: int
  mem_storage:
    description: Keep the consumer's state in memory; cannot change.
    type: bool
  metadata:
    description: >-
      Your key/value metadata (the server's own C(_nats.*) keys are left alone). Needs
      nats-server 2.10.0 or later.
    type: dict
  pause_until:
    description: >-
      Pause delivery until this time (RFC 3339), compared as an instant; changed through the
      server's pause API. Needs nats-server 2.11.0 or later.
    type: str
  priority_groups:
    description: "Pull consumers: priority group names. Needs nats-server 2.11.0 or later."
    type: list
    elements: str
  priority_policy:
    description: >-
      Pull consumers: how priority groups share messages. Needs nats-server 2.11.0 or later.
      V(prioritized) needs nats-server 2.12.0 or later.
    type: str
    choices: [none, overflow, pinned_client, prioritized]
  priority_timeout:
    description: >-
      Pull consumers: how long a pinned client keeps its pin (duration). Needs nats-server
      2.11.0 or later.
    type: raw
  recreate:
    description:
      - Delete and recreate the consumer when an option that cannot change differs.
      - Its delivery and ack state are lost (it restarts from its deliver policy); the module
        warns and returns C(ack_state_lost).
    type: bool
    default: false
  force:
    description: With O(state=absent), delete the consumer even with undelivered or unacknowledged messages.
    type: bool
    default: false
  protected:
    description:
      - Refuse to delete (O(state=absent)) or recreate this consumer, whatever O(force) and
        O(recreate) say. The nats_streams role sets it on the pipeline's durable consumer.
    type: bool
    default: false
notes:
  - "Connection options are shared by every nats_* module: O(servers), O(user), O(password),
    O(token), O(creds_file), O(nkey_seed), O(tls_ca_cert), O(tls_client_cert),
    O(tls_client_key), O(tls_verify), O(connect_timeout), O(api_timeout), O(domain); see docs/modules.md."
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

- name: Start a replay consumer from a point in time (recreate keeps every other live option)
  ansible.legacy.nats_consumer:
    stream: TAPIO_EVENTS
    name: replay-engine
    deliver_policy: by_start_time
    opt_start_time: "2026-12-01T00:00:00Z"
    recreate: true

- name: Delete a consumer, even with messages it has not delivered yet
  ansible.legacy.nats_consumer:
    stream: TAPIO_EVENTS
    name: siem-export
    state: absent
    force: true
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
ack_state_lost:
  description: The delivery state a recreate or a delete lost (num_pending, num_ack_pending, num_redelivered, ack_floor_stream_seq).
  returned: when the consumer was recreated or deleted
  type: dict
diff:
  description: Configuration before and after (durations rendered); a recreate names what is lost in C(after_header). Diff mode only.
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
from ansible.module_utils.tapio_jetstream_fields import desired_consumer_config
from ansible.module_utils.tapio_nats import JetStreamApi, exit_with_result, nats_module, run_with_connection


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
