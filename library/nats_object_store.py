#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: nats_object_store
short_description: Create, update or delete a NATS JetStream object store
description:
  - Manages one JetStream object store through nats-py and the JetStream API, as the stream
    behind it, C(OBJ_<bucket>), laid out the way nats-py's C(create_object_store), nats.go and
    the nats CLI create it (subjects C($O.<bucket>.C.>) for chunks and C($O.<bucket>.M.>) for
    object metadata, discard new, roll-up headers allowed, direct get on, O(ttl) as
    C(max_age)). Stores made by those clients and by this module are the same.
  - Reads the stream, normalises units (durations to nanoseconds, sizes to bytes), compares
    only the options you set (plus the fields that make the stream an object store), then
    creates, updates or deletes. A second run with the same options reports no change.
  - O(storage) cannot change on an existing store, nor can anything the server refuses on
    its stream (see the nats_stream module); the module fails with the option, the current
    and the requested value, unless O(recreate=true), which deletes the store and every
    object first.
  - O(state=absent) refuses a store that holds objects, naming how many, unless O(force=true).
  - Supports check mode (returns the would-be store) and diff mode (the store's options
    before and after).
  - The chunk size is chosen per object by the client that puts it (nats-py uses 128 KiB);
    it is not an option of the store.
version_added: "1.0.0"
author: Tapio NATS migration toolkit
requirements:
  - python >= 3.9
  - nats-py >= 2.7.2 (with the nkeys extra for creds files and nkey seeds)
extends_documentation_fragment:
  - tapio_nats
options:
  bucket:
    description: Object store name (letters, digits, C(_) and C(-)); the stream is C(OBJ_<bucket>).
    type: str
    required: true
  state:
    description: Whether the object store should exist.
    type: str
    choices: [present, absent]
    default: present
  description:
    description: Free text description.
    type: str
  ttl:
    description:
      - How long an object is kept (the stream's C(max_age)). A number of seconds or a duration such as
        V(90s), V(2m), V(1h30m), V(7d); V(0) keeps objects forever.
      - Also sets the duplicate window to 2 minutes, or to O(ttl) when that is shorter, as the server does.
    type: raw
  max_bytes:
    description:
      - Largest size of the whole store in bytes, or a size such as V(10GB) (1024-based); V(-1) or V(0) unlimited.
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
      - Compress the stored chunks with S2 (V(true)) or not (V(false)); the stream's C(compression)
        C(s2) or C(none). A bool like nats.go's and the nats CLI's C(--compress).
    type: bool
  placement:
    description: Placement of the store's replicas.
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
      - Metadata of the store's stream, string keys and values, set as a whole (keys not listed are
        removed; the server's own C(_nats.) keys are kept).
      - Keys starting with C(_nats.) belong to the server and are refused.
    type: dict
  recreate:
    description:
      - Delete and recreate the store when an option that cannot change (O(storage)) is requested.
      - Every object is lost; the module warns when it does this.
    type: bool
    default: false
  force:
    description:
      - With O(state=absent), delete a store that still holds objects. Without it such a store
        is refused, naming how many objects it holds.
    type: bool
    default: false
notes:
  - "Connection options: O(servers) (default from E(NATS_URL)), O(user), O(password), O(token),
    O(creds_file), O(nkey_seed), O(tls_ca_cert), O(tls_client_cert), O(tls_client_key),
    O(tls_verify), O(connect_timeout), O(api_timeout); shared by every nats_* module, see
    docs/modules.md."
  - Check mode is supported; diff mode is supported.
seealso:
  - module: nats_kv
  - module: nats_stream
"""

EXAMPLES = r"""
- name: A replicated store for Tapio's report artefacts, kept 30 days
  ansible.legacy.nats_object_store:
    servers: "{{ tapio_nats_servers }}"
    user: "{{ tapio_nats_user }}"
    password: "{{ tapio_nats_password }}"
    bucket: tapio_reports
    description: Migration reports
    replicas: 3
    ttl: 30d
    max_bytes: 1GB
    compression: true

- name: Delete a store even if it still holds objects
  ansible.legacy.nats_object_store:
    bucket: tapio_reports
    state: absent
    force: true
"""

RETURN = r"""
changed:
  description: Whether the object store was (or in check mode would be) changed.
  returned: always
  type: bool
operation:
  description: What was done to the store's stream.
  returned: always
  type: str
  choices: [create, update, recreate, delete, none]
  sample: create
changed_fields:
  description:
    - The options whose values differed from the server's. A field of the store's layout that
      differed on an existing stream (C(discard), C(subjects), ...) is named as the stream field.
  returned: always
  type: list
  elements: str
  sample: [ttl]
bucket:
  description: The object store after the operation (the would-be store in check mode); empty when absent.
  returned: always
  type: dict
  contains:
    bucket:
      description: Object store name.
      type: str
      returned: when present
    stream:
      description: The stream behind the store.
      type: str
      returned: when present
      sample: OBJ_tapio_reports
    ttl:
      description: How long objects are kept, as a duration (C(0s) = forever).
      type: str
      returned: when present
      sample: 30d
    max_bytes:
      description: Store size limit in bytes (-1 = unlimited).
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
      description: Whether chunks are stored S2-compressed.
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
    sealed:
      description: Whether the store is sealed (read-only).
      type: bool
      returned: when present
    messages:
      description: Messages the store's stream holds (chunks and object metadata).
      type: int
      returned: when the store exists (not for a check-mode create)
    bytes:
      description: Bytes the store's stream holds.
      type: int
      returned: when the store exists (not for a check-mode create)
messages_lost:
  description: Messages (chunks and object metadata) deleted by O(recreate).
  returned: when the store was recreated
  type: int
diff:
  description: The store's options before and after, in diff mode only.
  returned: when diff mode is on
  type: dict
"""

from typing import Any, Awaitable

from ansible.module_utils.tapio_jetstream import ensure_stream_absent, ensure_stream_present
from ansible.module_utils.tapio_jetstream_buckets import (
    KIND_LABEL,
    OBJECT_STORE,
    bucket_info,
    bucket_result,
    contents_message,
    immutable_changes,
    immutable_message,
    object_store_stream_config,
    stream_name,
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
    "ttl": {"type": "raw"},
    "max_bytes": {"type": "raw"},
    "storage": {"type": "str", "choices": ["file", "memory"]},
    "replicas": {"type": "int"},
    "compression": {"type": "bool"},
    "placement": {"type": "dict", "options": {"cluster": {"type": "str"}, "tags": {"type": "list", "elements": "str"}}},
    "metadata": {"type": "dict"},
    "recreate": {"type": "bool", "default": False},
    "force": {"type": "bool", "default": False},
}


async def named(bucket: str, work: Awaitable[dict[str, Any]], info: Any) -> dict[str, Any]:
    """The stream layer's result, its refusals naming the store as well as the stream."""
    try:
        return await work
    except NatsModuleError as error:
        raise NatsModuleError(f"{KIND_LABEL[OBJECT_STORE]} {bucket}: {error}",
                              {**error.result, "changed": False, "bucket": bucket_info(OBJECT_STORE, info)}) from None


async def object_count(api: JetStreamApi, bucket: str) -> int:
    """Objects in the store: one metadata subject ($O.<bucket>.M.<name>) per object."""
    info = await api.request(f"$JS.API.STREAM.INFO.{stream_name(OBJECT_STORE, bucket)}",
                             {"subjects_filter": f"$O.{bucket}.M.>"})
    return len((info.get("state") or {}).get("subjects") or {})


def main() -> None:
    module = nats_module(ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    bucket = params["bucket"]
    try:
        object_store_stream_config(params)  # every option checked before connecting
    except ValueError as error:
        module.fail_json(msg=f"{KIND_LABEL[OBJECT_STORE]} {bucket}: {error}. Nothing was changed.")
    stream = stream_name(OBJECT_STORE, bucket)

    async def handler(nc: Any, api: JetStreamApi) -> dict[str, Any]:
        info = await api.stream_info(stream)
        if params["state"] == "absent":
            if info and not params["force"]:
                messages = int((info.get("state") or {}).get("messages") or 0)
                if messages:
                    raise NatsModuleError(contents_message(OBJECT_STORE, bucket, await object_count(api, bucket),
                                                           messages),
                                          {"changed": False, "bucket": bucket_info(OBJECT_STORE, info)})
            outcome = await named(bucket, ensure_stream_absent(module, api, stream), info)
            return bucket_result(OBJECT_STORE, {}, info, outcome)
        desired = object_store_stream_config(params, exists=info is not None)
        if info and not params["recreate"]:
            frozen = immutable_changes(OBJECT_STORE, desired, info["config"])
            if frozen:
                raise NatsModuleError(immutable_message(OBJECT_STORE, bucket, frozen),
                                      {"changed": False, "bucket": bucket_info(OBJECT_STORE, info)})
        outcome = await named(bucket, ensure_stream_present(module, api, desired), info)
        return bucket_result(OBJECT_STORE, desired, info, outcome)

    exit_with_result(module, run_with_connection(module, handler))


if __name__ == "__main__":
    main()
