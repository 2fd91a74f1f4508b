#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: nats_kv
short_description: Create, update or delete a NATS JetStream key-value bucket
description:
  - Manages one JetStream key-value bucket through nats-py and the JetStream API, as the
    stream behind it, C(KV_<bucket>), laid out the way nats-py's C(create_key_value), nats.go
    and the nats CLI create it (subjects C($KV.<bucket>.>), history as
    C(max_msgs_per_subject), discard new, roll-up headers allowed, deletes denied, direct get
    on, O(ttl) as C(max_age)). Buckets made by those clients and by this module are the same.
  - Reads the stream, normalises units (durations to nanoseconds, sizes to bytes), compares
    only the options you set (plus the fields that make the stream a bucket), then creates,
    updates or deletes. A second run with the same options reports no change.
  - O(storage) cannot change on an existing bucket, nor can anything the server refuses on
    its stream (see the nats_stream module); the module fails with the option, the current
    and the requested value, unless O(recreate=true), which deletes the bucket and every key
    first.
  - O(state=absent) refuses a bucket that holds keys, naming how many, unless O(force=true).
  - Supports check mode (returns the would-be bucket) and diff mode (the bucket's options
    before and after).
version_added: "1.0.0"
author: Tapio NATS migration toolkit
requirements:
  - python >= 3.9
  - nats-py >= 2.7.2 (with the nkeys extra for creds files and nkey seeds)
extends_documentation_fragment:
  - tapio_nats
options:
  bucket:
    description: Bucket name (letters, digits, C(_) and C(-)); the stream is C(KV_<bucket>).
    type: str
    required: true
  state:
    description: Whether the bucket should exist.
    type: str
    choices: [present, absent]
    default: present
  description:
    description: Free text description.
    type: str
  history:
    description:
      - Values kept per key, 1 to 64 (the stream's C(max_msgs_per_subject)).
      - A new bucket gets V(1) when unset.
    type: int
  ttl:
    description:
      - How long a value is kept (the stream's C(max_age)). A number of seconds or a duration such as
        V(90s), V(2m), V(1h30m), V(7d); V(0) keeps values forever.
      - Also sets the duplicate window to 2 minutes, or to O(ttl) when that is shorter, as nats-py does.
    type: raw
  max_bytes:
    description:
      - Largest size of the whole bucket in bytes, or a size such as V(1GB) (1024-based); V(-1) or V(0) unlimited.
    type: raw
  max_value_size:
    description:
      - Largest value in bytes, or a size such as V(64KB) (the stream's C(max_msg_size)); V(-1) or V(0) unlimited.
      - Must not exceed the server's max_payload.
    type: raw
  storage:
    description: Storage backend; cannot change after creation.
    type: str
    choices: [file, memory]
  replicas:
    description: Number of replicas (1 to the cluster's JetStream peers).
    type: int
  compression:
    description:
      - Compress the bucket's stored values with S2 (V(true)) or not (V(false)); the stream's
        C(compression) C(s2) or C(none). A bool like nats.go's and the nats CLI's C(--compress).
    type: bool
  placement:
    description: Placement of the bucket's replicas.
    type: dict
    suboptions:
      cluster:
        description: Cluster name.
        type: str
      tags:
        description: Server tags the replicas must have.
        type: list
        elements: str
  metadata:
    description:
      - Metadata of the bucket's stream, string keys and values, set as a whole (keys not listed are
        removed; the server's own C(_nats.) keys are kept).
      - Keys starting with C(_nats.) belong to the server and are refused.
    type: dict
  republish:
    description: Republish every value written to the bucket to another subject (nats-py's C(republish)).
    type: dict
    suboptions:
      src:
        description: Subjects to republish, within C($KV.<bucket>.>); the server uses all of them when unset.
        type: str
      dest:
        description: Destination subject.
        type: str
        required: true
      headers_only:
        description: Republish only the headers, not the value.
        type: bool
  direct:
    description:
      - Allow direct get of values from any replica (the stream's C(allow_direct)).
      - A new bucket gets V(true) when unset (as nats.go and the nats CLI do; nats-py leaves
        it off unless asked). Not compared on an existing bucket unless set.
    type: bool
  limit_marker_ttl:
    description:
      - Keep a delete marker for that long when a key is removed by O(ttl) or a limit (the stream's
        C(subject_delete_marker_ttl)); a duration like O(ttl), at least V(1s), V(0) for none.
      - Turns on per-message TTLs on the bucket's stream (C(allow_msg_ttl)), which the server never
        turns off again. Needs nats-server 2.11 or later.
    type: raw
  recreate:
    description:
      - Delete and recreate the bucket when an option that cannot change (O(storage)) is requested.
      - Every key and its history is lost; the module warns when it does this.
    type: bool
    default: false
  force:
    description:
      - With O(state=absent), delete a bucket that still holds keys (history and delete markers
        count). Without it such a bucket is refused, naming how many keys it holds.
    type: bool
    default: false
notes:
  - "Connection options: O(servers) (default from E(NATS_URL)), O(user), O(password), O(token),
    O(creds_file), O(nkey_seed), O(tls_ca_cert), O(tls_client_cert), O(tls_client_key),
    O(tls_verify), O(connect_timeout), O(api_timeout); shared by every nats_* module, see
    docs/modules.md."
  - Check mode is supported; diff mode is supported.
seealso:
  - module: nats_object_store
  - module: nats_stream
"""

EXAMPLES = r"""
- name: A replicated bucket for collector settings, keeping 5 revisions per key
  ansible.legacy.nats_kv:
    servers: "{{ tapio_nats_servers }}"
    user: "{{ tapio_nats_user }}"
    password: "{{ tapio_nats_password }}"
    bucket: tapio_settings
    description: Collector settings
    history: 5
    replicas: 3
    max_bytes: 64MB
    max_value_size: 64KB
    compression: true

- name: A cache whose values expire after an hour, leaving a marker for watchers
  ansible.legacy.nats_kv:
    bucket: tapio_cache
    storage: memory
    ttl: 1h
    limit_marker_ttl: 5m

- name: Move the cache to file storage (its keys are lost)
  ansible.legacy.nats_kv:
    bucket: tapio_cache
    storage: file
    recreate: true

- name: Delete a bucket even if it still holds keys
  ansible.legacy.nats_kv:
    bucket: tapio_cache
    state: absent
    force: true
"""

RETURN = r"""
changed:
  description: Whether the bucket was (or in check mode would be) changed.
  returned: always
  type: bool
operation:
  description: What was done to the bucket's stream.
  returned: always
  type: str
  choices: [create, update, recreate, delete, none]
  sample: create
changed_fields:
  description:
    - The options whose values differed from the server's. A field of the bucket's layout that
      differed on an existing stream (C(discard), C(subjects), ...) is named as the stream field.
  returned: always
  type: list
  elements: str
  sample: [history, ttl]
bucket:
  description: The bucket after the operation (the would-be bucket in check mode); empty when absent.
  returned: always
  type: dict
  contains:
    bucket:
      description: Bucket name.
      type: str
      returned: when present
    stream:
      description: The stream behind the bucket.
      type: str
      returned: when present
      sample: KV_tapio_settings
    history:
      description: Values kept per key.
      type: int
      returned: when present
    ttl:
      description: How long values are kept, as a duration (C(0s) = forever).
      type: str
      returned: when present
      sample: 1h
    max_bytes:
      description: Bucket size limit in bytes (-1 = unlimited).
      type: int
      returned: when present
    max_value_size:
      description: Value size limit in bytes (-1 = unlimited).
      type: int
      returned: when present
    storage:
      description: C(file) or C(memory).
      type: str
      returned: when present
    replicas:
      description: Number of replicas.
      type: int
      returned: when present
    compression:
      description: Whether values are stored S2-compressed.
      type: bool
      returned: when present
    description:
      description: Description (empty for none).
      type: str
      returned: when present
    placement:
      description: Placement (cluster, tags).
      type: dict
      returned: when present
    metadata:
      description: The stream's metadata without the server's own C(_nats.) keys.
      type: dict
      returned: when present
    republish:
      description: Republish settings (src, dest, headers_only); empty for none.
      type: dict
      returned: when present
    direct:
      description: Whether direct get is allowed.
      type: bool
      returned: when present
    limit_marker_ttl:
      description: How long a delete marker left by a limit is kept (C(0s) = none).
      type: str
      returned: when present
    values:
      description: Messages the bucket's stream holds (values, history and delete markers).
      type: int
      returned: when the bucket exists (not for a check-mode create)
    bytes:
      description: Bytes the bucket's stream holds.
      type: int
      returned: when the bucket exists (not for a check-mode create)
messages_lost:
  description: Messages (values, history and delete markers) deleted by O(recreate).
  returned: when the bucket was recreated
  type: int
diff:
  description: The bucket's options before and after, in diff mode only.
  returned: when diff mode is on
  type: dict
"""

from typing import Any, Awaitable

from ansible.module_utils.tapio_jetstream import ensure_stream_absent, ensure_stream_present
from ansible.module_utils.tapio_jetstream_buckets import (
    KIND_LABEL,
    KV,
    bucket_info,
    bucket_result,
    contents_message,
    immutable_changes,
    immutable_message,
    kv_stream_config,
    stream_name,
    value_size_problem,
)
from ansible.module_utils.tapio_nats import (
    JetStreamApi,
    NatsModuleError,
    exit_with_result,
    nats_module,
    run_with_connection,
)

ARGUMENT_SPEC: dict[str, Any] = {
    "bucket": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "description": {"type": "str"},
    "history": {"type": "int"},
    "ttl": {"type": "raw"},
    "max_bytes": {"type": "raw"},
    "max_value_size": {"type": "raw"},
    "storage": {"type": "str", "choices": ["file", "memory"]},
    "replicas": {"type": "int"},
    "compression": {"type": "bool"},
    "placement": {"type": "dict", "options": {"cluster": {"type": "str"}, "tags": {"type": "list", "elements": "str"}}},
    "metadata": {"type": "dict"},
    "republish": {"type": "dict", "options": {"src": {"type": "str"}, "dest": {"type": "str", "required": True},
                                              "headers_only": {"type": "bool"}}},
    "direct": {"type": "bool"},
    "limit_marker_ttl": {"type": "raw"},
    "recreate": {"type": "bool", "default": False},
    "force": {"type": "bool", "default": False},
}


async def named(bucket: str, work: Awaitable[dict[str, Any]], info: Any) -> dict[str, Any]:
    """The stream layer's result, its refusals naming the bucket as well as the stream."""
    try:
        return await work
    except NatsModuleError as error:
        raise NatsModuleError(f"{KIND_LABEL[KV]} {bucket}: {error}",
                              {**error.result, "changed": False, "bucket": bucket_info(KV, info)}) from None


def main() -> None:
    module = nats_module(ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    bucket = params["bucket"]
    try:
        kv_stream_config(params)  # every option checked before connecting
    except ValueError as error:
        module.fail_json(msg=f"{KIND_LABEL[KV]} {bucket}: {error}. Nothing was changed.")
    stream = stream_name(KV, bucket)

    async def handler(nc: Any, api: JetStreamApi) -> dict[str, Any]:
        info = await api.stream_info(stream)
        if params["state"] == "absent":
            if info and not params["force"]:
                state = info.get("state") or {}
                if state.get("messages"):
                    raise NatsModuleError(contents_message(KV, bucket, int(state.get("num_subjects") or 0),
                                                           int(state["messages"])),
                                          {"changed": False, "bucket": bucket_info(KV, info)})
            outcome = await named(bucket, ensure_stream_absent(module, api, stream), info)
            return bucket_result(KV, {}, info, outcome)
        desired = kv_stream_config(params, exists=info is not None)
        problem = value_size_problem(desired, int(getattr(nc, "max_payload", 0) or 0))  # from the server's INFO
        if problem:
            raise NatsModuleError(f"{KIND_LABEL[KV]} {bucket}: {problem}. Nothing was changed.",
                                  {"changed": False, "bucket": bucket_info(KV, info)})
        if info and not params["recreate"]:
            frozen = immutable_changes(KV, desired, info["config"])
            if frozen:
                raise NatsModuleError(immutable_message(KV, bucket, frozen),
                                      {"changed": False, "bucket": bucket_info(KV, info)})
        outcome = await named(bucket, ensure_stream_present(module, api, desired), info)
        return bucket_result(KV, desired, info, outcome)

    exit_with_result(module, run_with_connection(module, handler))


if __name__ == "__main__":
    main()
