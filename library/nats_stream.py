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
  - Manages one JetStream stream through nats-py and the JetStream API.
  - Reads the stream, normalises units (durations to nanoseconds, sizes to bytes) and the
    server's defaults, compares only the options you set, then creates, updates or deletes.
    A second run with the same options reports no change.
  - Options the server cannot change on an existing stream (C(storage), C(retention) to or
    from C(workqueue), turning off C(deny_delete)/C(deny_purge), C(mirror)) fail with the
    field, the current and the requested value, unless O(recreate=true), which deletes the
    stream and its stored messages first.
  - Before any change it checks that the subjects do not overlap another stream's, that
    O(replicas) does not exceed the cluster's JetStream peers, that O(duplicate_window) does
    not exceed O(max_age) and that O(max_msg_size) does not exceed the server's max_payload.
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
  subjects:
    description: Subjects the stream captures (wildcards C(*) and C(>) allowed).
    type: list
    elements: str
  retention:
    description: Retention policy.
    type: str
    choices: [limits, interest, workqueue]
  storage:
    description: Storage backend; cannot change after creation.
    type: str
    choices: [file, memory]
  replicas:
    description: Number of replicas (1 to the cluster's JetStream peers).
    type: int
  max_age:
    description:
      - Maximum message age. A number of seconds or a duration such as V(90s), V(2m), V(1h30m), V(7d).
      - V(0) means unlimited.
    type: raw
  max_bytes:
    description: Maximum stream size in bytes, or a size such as V(10GB) (1024-based); V(-1) unlimited.
    type: raw
  max_msgs:
    description: Maximum number of messages; V(-1) unlimited.
    type: int
  max_msgs_per_subject:
    description: Maximum messages kept per subject; V(-1) unlimited.
    type: int
  max_msg_size:
    description: Largest accepted message in bytes or a size such as V(1MB); must not exceed the server's max_payload.
    type: raw
  discard:
    description: What to discard when a limit is reached.
    type: str
    choices: [old, new]
  duplicate_window:
    description: Window in which C(Nats-Msg-Id) de-duplicates; a duration like O(max_age). Must not exceed O(max_age).
    type: raw
  compression:
    description: Storage compression.
    type: str
    choices: [none, s2]
  allow_direct:
    description: Allow direct get of messages from any replica.
    type: bool
  deny_delete:
    description: Refuse message deletion; cannot be turned off once on.
    type: bool
  deny_purge:
    description: Refuse purges; cannot be turned off once on.
    type: bool
  description:
    description: Free text description.
    type: str
  placement:
    description: Placement of the stream's replicas.
    type: dict
    suboptions:
      cluster:
        description: Cluster name.
        type: str
      tags:
        description: Server tags the replicas must have.
        type: list
        elements: str
  mirror:
    description: Make this stream a mirror of another stream; cannot change after creation.
    type: dict
    suboptions: &source_options
      name:
        description: Source stream name.
        type: str
        required: true
      opt_start_seq:
        description: First sequence to copy.
        type: int
      opt_start_time:
        description: First time to copy from (RFC 3339).
        type: str
      filter_subject:
        description: Copy only this subject.
        type: str
      external:
        description: Source in another JetStream domain or account.
        type: dict
        suboptions:
          api:
            description: API prefix.
            type: str
          deliver:
            description: Delivery prefix.
            type: str
  sources:
    description: Streams this stream aggregates (the plan's multi-region streams).
    type: list
    elements: dict
    suboptions: *source_options
  recreate:
    description:
      - Delete and recreate the stream when an option that cannot change is requested.
      - All stored messages are lost; the module warns when it does this.
    type: bool
    default: false
notes:
  - "Connection options: O(servers) (default from E(NATS_URL)), O(user), O(password), O(token),
    O(creds_file), O(nkey_seed), O(tls_ca_cert), O(tls_client_cert), O(tls_client_key),
    O(tls_verify), O(connect_timeout), O(api_timeout); shared by every nats_* module, see
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

- name: Delete a stream
  ansible.legacy.nats_stream:
    name: TAPIO_SCRATCH
    state: absent
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
  description: The options whose values differed from the server's.
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
diff:
  description: Configuration before and after (durations rendered), in diff mode only.
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
from ansible.module_utils.tapio_nats import JetStreamApi, exit_with_result, nats_module, run_with_connection
from ansible.module_utils.tapio_nats_config import desired_stream_config


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
