#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: nats_stream
short_description: Create, update or delete a NATS JetStream stream
description:
  - Manages one JetStream stream through nats-py and the JetStream API; every field of
    nats-server's stream configuration is an option (docs/modules.md lists them with the
    release that added each and how the server lets it change).
  - Reads the stream, normalises units (durations to nanoseconds, sizes to bytes, times to
    UTC instants) and the server's defaults, compares only the options you set, then creates,
    updates or deletes. A second run with the same options reports no change. An update sends
    the live configuration with your options on top, so nothing you did not set changes.
  - An option the connected server's version does not know is refused by name before any
    change (servers from 2.12 refuse unknown fields).
  - Options the server cannot change on an existing stream (C(storage), C(retention) to or
    from C(workqueue), turning off C(sealed), C(deny_delete), C(deny_purge),
    C(allow_msg_ttl) or C(allow_msg_schedules), C(allow_msg_counter), C(persist_mode),
    C(first_seq), changing C(mirror)) fail with the option, the current and the requested
    value, unless O(recreate=true).
  - A recreate deletes the stream and creates it from its live configuration with your
    options on top, then creates each of its consumers again (the server deletes them with
    the stream); it first checks that every consumer fits the new stream and refuses
    otherwise. The result and the diff say what is lost (stored messages, each consumer's
    delivery and ack state). If the new stream cannot be created the old one is put back.
  - O(state=absent) refuses a stream that holds messages or consumers, naming the counts,
    unless O(force=true); O(protected=true) refuses to delete or recreate it at all.
  - Before any change it checks the name, that the subjects do not overlap another stream's,
    that O(duplicate_window) does not exceed O(max_age), and the other rules the server
    would refuse (mirror with subjects, discard_new_per_subject without discard new, ...).
  - Supports check mode (returns the would-be stream) and diff mode (before/after).
version_added: "1.0.0"
author: Tapio NATS migration toolkit
requirements:
  - python >= 3.9
  - nats-py >= 2.7.2 (with the nkeys extra for creds files and nkey seeds)
extends_documentation_fragment:
  - tapio_nats
options:
  name:
    description: Stream name.
    type: str
    required: true
  state:
    description: Whether the stream should exist.
    type: str
    choices: [present, absent]
    default: present
  description:
    description: Free text description.
    type: str
  subjects:
    description: Subjects the stream captures (wildcards C(*) and C(>) allowed); compared as a set.
    type: list
    elements: str
  retention:
    description: >-
      Retention policy; V(limits) and V(interest) switch both ways, never to or from
      V(workqueue).
    type: str
    choices: [limits, interest, workqueue]
  max_consumers:
    description: Maximum consumers; V(-1) unlimited.
    type: int
  max_msgs:
    description: Maximum number of messages; V(-1) unlimited.
    type: int
  max_bytes:
    description: Maximum stream size in bytes, or a size such as V(10GB) (1024-based); V(-1) unlimited.
    type: raw
  max_age:
    description: >-
      Maximum message age: seconds or a duration such as V(90s), V(1h30m), V(7d); V(0)
      unlimited.
    type: raw
  max_msgs_per_subject:
    description: Maximum messages kept per subject; V(-1) unlimited.
    type: int
  max_msg_size:
    description: Largest accepted message in bytes or a size such as V(1MB); V(-1) unlimited.
    type: raw
  discard:
    description: What to discard when a limit is reached.
    type: str
    choices: [old, new]
  storage:
    description: Storage backend; cannot change after creation.
    type: str
    choices: [file, memory]
  replicas:
    description: Number of replicas (1 to the cluster's JetStream peers; the server refuses more).
    type: int
  no_ack:
    description: Do not acknowledge publishes.
    type: bool
  duplicate_window:
    description: Window in which C(Nats-Msg-Id) de-duplicates, a duration; must not exceed O(max_age).
    type: raw
  placement:
    description: Placement of the stream's replicas.
    type: dict
    suboptions:
      cluster:
        description: Cluster name.
        type: str
      tags:
        description: Server tags the replicas must have; V([]) clears them.
        type: list
        elements: str
  mirror:
    description: >-
      Make this stream a mirror of another stream. A mirror cannot change; V({}) removes it
      (promotes the stream, nats-server 2.12 or later, the data is kept).
    type: dict
    suboptions: &source_options
      name:
        description: Source stream name.
        type: str
      opt_start_seq:
        description: First sequence to copy.
        type: int
      opt_start_time:
        description: First time to copy from (RFC 3339).
        type: str
      filter_subject:
        description: Copy only this subject.
        type: str
      subject_transforms:
        description: Filter and rewrite subjects while copying. Needs nats-server 2.10.0 or later.
        type: list
        elements: dict
        suboptions:
          src:
            description: Source subject (filter) of the transform. Needs nats-server 2.10.0 or later.
            type: str
          dest:
            description: Destination subject of the transform. Needs nats-server 2.10.0 or later.
            type: str
      external:
        description: Source in another JetStream domain or account.
        type: dict
        suboptions:
          api:
            description: API prefix, for a domain C($JS.<domain>.API).
            type: str
          deliver:
            description: Delivery prefix.
            type: str
      consumer:
        description: >-
          Source through a durable consumer of the source stream. Needs nats-server 2.14.0 or
          later.
        type: dict
        suboptions:
          name:
            description: Durable consumer name. Needs nats-server 2.14.0 or later.
            type: str
          deliver_subject:
            description: Its delivery subject. Needs nats-server 2.14.0 or later.
            type: str
  sources:
    description: Streams this stream aggregates, matched by name.
    type: list
    elements: dict
    suboptions: *source_options
  compression:
    description: Storage compression. Needs nats-server 2.10.0 or later.
    type: str
    choices: [none, s2]
  first_seq:
    description: First sequence number; only at creation. Needs nats-server 2.10.0 or later.
    type: int
  subject_transform:
    description: Rewrite the subjects of stored messages. Needs nats-server 2.10.0 or later.
    type: dict
    suboptions:
      src:
        description: Source subject (filter) of the transform. Needs nats-server 2.10.0 or later.
        type: str
      dest:
        description: Destination subject of the transform. Needs nats-server 2.10.0 or later.
        type: str
  republish:
    description: Republish stored messages to another subject.
    type: dict
    suboptions:
      src:
        description: Subjects to republish (default all).
        type: str
      dest:
        description: Destination subject.
        type: str
      headers_only:
        description: Republish headers only.
        type: bool
  allow_direct:
    description: Allow direct get of messages from any replica.
    type: bool
  discard_new_per_subject:
    description: Discard new messages per subject (needs O(discard=new) and O(max_msgs_per_subject)).
    type: bool
  sealed:
    description: "Seal the stream: no more messages, deletes or purges; cannot be undone."
    type: bool
  deny_delete:
    description: Refuse message deletion; cannot be turned off.
    type: bool
  deny_purge:
    description: Refuse purges; cannot be turned off.
    type: bool
  allow_rollup_hdrs:
    description: Allow the C(Nats-Rollup) header to replace a subject's messages.
    type: bool
  consumer_limits:
    description: Limits every consumer of the stream must keep. Needs nats-server 2.10.0 or later.
    type: dict
    suboptions:
      inactive_threshold:
        description: Largest inactive threshold (duration). Needs nats-server 2.10.0 or later.
        type: raw
      max_ack_pending:
        description: Largest max_ack_pending. Needs nats-server 2.10.0 or later.
        type: int
  allow_msg_ttl:
    description: >-
      Allow per-message TTLs (C(Nats-TTL) header); cannot be turned off. Needs nats-server
      2.11.0 or later.
    type: bool
  subject_delete_marker_ttl:
    description: >-
      Leave a delete marker this long when max_age removes a subject's last message (duration).
      Needs nats-server 2.11.0 or later.
    type: raw
  allow_msg_counter:
    description: >-
      A counter stream (C(Nats-Incr) header); cannot change after creation. Needs nats-server
      2.12.0 or later.
    type: bool
  allow_atomic:
    description: Allow atomic batch publish. Needs nats-server 2.12.0 or later.
    type: bool
  allow_msg_schedules:
    description: Allow scheduled messages; cannot be turned off. Needs nats-server 2.12.0 or later.
    type: bool
  persist_mode:
    description: >-
      V(async) acknowledges before the write is flushed (file storage, one replica); cannot
      change. Needs nats-server 2.12.0 or later.
    type: str
    choices: [default, async]
  allow_batched:
    description: Allow fast batch publish. Needs nats-server 2.14.0 or later.
    type: bool
  metadata:
    description: >-
      Your key/value metadata (the server's own C(_nats.*) keys are left alone). Needs
      nats-server 2.10.0 or later.
    type: dict
  recreate:
    description:
      - Delete and recreate the stream when an option that cannot change is requested.
      - Its stored messages are lost; its consumers are created again without their delivery
        and ack state. The module warns and returns what was lost.
    type: bool
    default: false
  force:
    description: With O(state=absent), delete the stream even when it holds messages or consumers.
    type: bool
    default: false
  protected:
    description:
      - Refuse to delete (O(state=absent)) or recreate this stream, whatever O(force) and
        O(recreate) say. The nats_streams role sets it on Tapio's events stream.
    type: bool
    default: false
notes:
  - "Connection options: O(servers) (default from E(NATS_URL)), O(user), O(password), O(token),
    O(creds_file), O(nkey_seed), O(tls_ca_cert), O(tls_client_cert), O(tls_client_key),
    O(tls_verify), O(connect_timeout), O(api_timeout), O(domain); shared by every nats_* module, see
    docs/modules.md."
  - Check mode is supported; diff mode is supported.
"""

EXAMPLES = r"""
- name: Create Tapio's event stream
  ansible.legacy.nats_stream:
    servers: "{{ tapio_nats_servers }}"
    user: "{{ tapio_nats_user }}"
    password: "{{ tapio_nats_password }}"
    name: TAPIO_EVENTS
    subjects: ["tapio.events.>"]
    retention: limits
    storage: file
    replicas: 3
    discard: old
    max_age: 7d
    max_bytes: 10GB
    duplicate_window: 2m
    compression: s2

- name: Replace a stream whose storage must change (drops its messages)
  ansible.legacy.nats_stream:
    name: TAPIO_SCRATCH
    subjects: ["tapio.scratch.>"]
    storage: memory
    recreate: true

- name: A KV-shaped stream with per-message TTLs and metadata (nats-server 2.11 or later)
  ansible.legacy.nats_stream:
    name: TAPIO_STATE
    subjects: ["tapio.state.>"]
    max_msgs_per_subject: 1
    allow_rollup_hdrs: true
    allow_msg_ttl: true
    subject_delete_marker_ttl: 15m
    metadata:
      owner: platform

- name: Promote a mirror to a normal stream (nats-server 2.12 or later, keeps its data)
  ansible.legacy.nats_stream:
    name: TAPIO_EVENTS_DR
    mirror: {}

- name: Delete a stream even though it still holds messages
  ansible.legacy.nats_stream:
    name: TAPIO_SCRATCH
    state: absent
    force: true
"""

RETURN = r"""
changed:
  description: Whether the stream was (or in check mode would be) changed.
  returned: always
  type: bool
operation:
  description: What was done.
  returned: always
  type: str
  sample: create
changed_fields:
  description: The options whose values differed from the server's (option names, such as C(replicas)).
  returned: always
  type: list
  elements: str
  sample: [max_age]
stream:
  description: The stream after the operation (would-be stream in check mode); empty when absent.
  returned: always
  type: dict
  contains:
    config:
      description: Stream configuration as the server reports it (durations in nanoseconds).
      type: dict
      returned: when present
    state:
      description: Messages, bytes, first/last sequence, consumer count.
      type: dict
      returned: when present
    cluster:
      description: Leader and replicas with their currency and lag.
      type: dict
      returned: when present
messages_lost:
  description: Stored messages deleted by a recreate or a forced delete.
  returned: when the stream was recreated or deleted
  type: int
consumers_recreated:
  description: The consumers a recreate created again.
  returned: when the stream was recreated
  type: list
  elements: str
ack_state_lost:
  description: Per consumer recreated, the delivery state it lost (num_pending, num_ack_pending, num_redelivered, ack_floor_stream_seq).
  returned: when the stream was recreated
  type: dict
diff:
  description: Configuration before and after (durations rendered); a recreate names what is lost in C(after_header). Diff mode only.
  returned: when diff mode is on
  type: dict
"""

from typing import Any

from ansible.module_utils.tapio_jetstream import (
    STREAM_ARGUMENT_SPEC,
    STREAM_MUTUALLY_EXCLUSIVE,
    ensure_stream_absent,
    ensure_stream_present,
)
from ansible.module_utils.tapio_jetstream_fields import desired_stream_config
from ansible.module_utils.tapio_nats import JetStreamApi, exit_with_result, nats_module, run_with_connection


def main() -> None:
    module = nats_module(STREAM_ARGUMENT_SPEC, supports_check_mode=True, mutually_exclusive=STREAM_MUTUALLY_EXCLUSIVE)
    params = module.params
    try:
        desired = desired_stream_config(params)
    except ValueError as error:
        module.fail_json(msg=f"stream {params['name']}: {error}")

    async def handler(nc: Any, api: JetStreamApi) -> dict[str, Any]:
        if params["state"] == "absent":
            return await ensure_stream_absent(module, api, params["name"])
        return await ensure_stream_present(module, api, desired)

    exit_with_result(module, run_with_connection(module, handler))


if __name__ == "__main__":
    main()
