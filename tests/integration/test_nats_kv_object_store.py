"""nats_kv and nats_object_store against the lab's real cluster, checked with natscli and
nats-py's own KV and object store clients.

For each: check mode creates nothing -> create (the stream every client makes) -> re-run in
other units (no change) -> a mutable option in check mode, then for real (diff shows that
option only) -> storage refused (named, bucket untouched) -> state absent refused while the
bucket holds a key or object (count named) -> deleted with force. And interoperability: a
bucket the module made works with nats-py's client; one nats-py made is no change to the
module given the same options.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, TypeVar

import nats
import pytest
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType

from nats_support import AUTH, changed_keys, remove_stream, run_module, stream_info, unique

NS = 1_000_000_000
T = TypeVar("T")


@pytest.fixture
def kv_bucket(nats_lab):
    name = unique("kv")
    yield name
    remove_stream(f"KV_{name}")


@pytest.fixture
def object_store(nats_lab):
    name = unique("obj")
    yield name
    remove_stream(f"OBJ_{name}")


async def settled(action: Callable[[], Awaitable[T]], settle: float = 10.0) -> T:
    """*action*, retried while a just-created R3 stream is not served everywhere yet (no
    stream response to a publish, or a direct get answered by a replica not caught up). A
    bucket still unusable after `settle` seconds is a failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle
    while True:
        try:
            return await action()
        except (nats.js.errors.NoStreamResponseError, nats.js.errors.KeyNotFoundError,
                nats.js.errors.ObjectNotFoundError, nats.js.errors.ServiceUnavailableError):
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.1)


def with_jetstream(work: Callable[[Any], Awaitable[T]]) -> T:
    """Run *work(js)* on a fresh nats-py connection to the lab."""
    async def main() -> T:
        nc = await nats.connect(servers=AUTH["servers"], user=AUTH["user"], password=AUTH["password"])
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


def test_kv_bucket_lifecycle(kv_bucket):
    stream = f"KV_{kv_bucket}"
    spec = {"bucket": kv_bucket, "description": "integration test bucket", "history": 5, "ttl": "1h",
            "max_bytes": "16MB", "max_value_size": "4KB", "replicas": 3, "compression": True,
            "metadata": {"owner": "tapio"}}

    would = run_module("nats_kv", spec, check=True)
    assert would["changed"] and would["operation"] == "create" and not would["failed"], would.get("msg")
    assert would["diff"]["before"] == {} and would["diff"]["after"]["history"] == 5
    assert stream_info(stream) is None, "check mode must not create the bucket"

    created = run_module("nats_kv", spec)
    assert created["changed"] and created["operation"] == "create", created.get("msg")
    assert created["bucket"]["stream"] == stream and created["bucket"]["ttl"] == "1h"
    assert created["changed_fields"] == ["compression", "description", "direct", "history", "max_bytes",
                                         "max_value_size", "metadata", "replicas", "ttl"]
    seen = stream_info(stream)["config"]
    assert seen["subjects"] == [f"$KV.{kv_bucket}.>"] and seen["max_msgs_per_subject"] == 5
    layout = (seen["discard"], seen["allow_rollup_hdrs"], seen["deny_delete"], seen["allow_direct"])
    assert layout == ("new", True, True, True)
    assert seen["max_age"] == 3600 * NS and seen["duplicate_window"] == 120 * NS
    assert seen["max_bytes"] == 16 * 1024 ** 2 and seen["max_msg_size"] == 4096
    assert seen["num_replicas"] == 3 and seen["compression"] == "s2" and seen["storage"] == "file"
    assert seen["metadata"]["owner"] == "tapio" and created["bucket"]["metadata"] == {"owner": "tapio"}

    again = run_module("nats_kv", {**spec, "ttl": 3600, "max_bytes": 16 * 1024 ** 2, "max_value_size": 4096})
    assert again["changed"] is False and again["operation"] == "none" and again["changed_fields"] == []

    edit = {**spec, "history": 10}
    preview = run_module("nats_kv", edit, check=True)
    assert preview["changed"] and preview["changed_fields"] == ["history"]
    assert changed_keys(preview["diff"]["before"], preview["diff"]["after"]) == ["history"]
    assert stream_info(stream)["config"]["max_msgs_per_subject"] == 5, "check mode must not change the bucket"
    edited = run_module("nats_kv", edit)
    assert edited["changed"] and edited["operation"] == "update" and edited["changed_fields"] == ["history"]
    assert (edited["diff"]["before"]["history"], edited["diff"]["after"]["history"]) == (5, 10)
    assert changed_keys(edited["diff"]["before"], edited["diff"]["after"]) == ["history"]
    assert stream_info(stream)["config"]["max_msgs_per_subject"] == 10

    # nats-py's own KV client works on the bucket the module made.
    async def put_and_get(js: Any) -> bytes:
        kv = await js.key_value(kv_bucket)
        await settled(lambda: kv.put("region.eu", b"on"))
        return (await settled(lambda: kv.get("region.eu"))).value

    assert with_jetstream(put_and_get) == b"on"

    before = stream_info(stream)
    refused = run_module("nats_kv", {**edit, "storage": "memory"})
    assert refused["failed"] and not refused["changed"]
    assert f"kv bucket {kv_bucket}: cannot change storage" in refused["msg"]
    assert "current 'file', requested 'memory'" in refused["msg"] and "Nothing was changed" in refused["msg"]
    after = stream_info(stream)
    assert after["config"] == before["config"] and after["created"] == before["created"]
    assert after["state"]["messages"] == before["state"]["messages"] >= 1

    too_big = run_module("nats_kv", {**edit, "max_value_size": "64MB"})
    assert too_big["failed"] and "max_value_size (67108864 bytes) exceeds the server's max_payload" in too_big["msg"]
    assert stream_info(stream)["config"] == before["config"]

    for check in (True, False):
        kept = run_module("nats_kv", {"bucket": kv_bucket, "state": "absent"}, check=check)
        assert kept["failed"] and not kept["changed"]
        assert f"kv bucket {kv_bucket} holds 1 key(s)" in kept["msg"] and "force=true" in kept["msg"]
        assert stream_info(stream)["created"] == before["created"]

    deleted = run_module("nats_kv", {"bucket": kv_bucket, "state": "absent", "force": True})
    assert deleted["changed"] and deleted["operation"] == "delete", deleted.get("msg")
    assert deleted["diff"]["before"]["history"] == 10 and deleted["diff"]["after"] == {}
    assert stream_info(stream) is None
    assert run_module("nats_kv", {"bucket": kv_bucket, "state": "absent"})["changed"] is False


def test_kv_storage_change_with_recreate_replaces_the_bucket(kv_bucket):
    assert not run_module("nats_kv", {"bucket": kv_bucket, "history": 2, "replicas": 1})["failed"]

    async def put(js: Any) -> None:
        kv = await js.key_value(kv_bucket)
        await settled(lambda: kv.put("k", b"v"))

    with_jetstream(put)
    recreated = run_module("nats_kv", {"bucket": kv_bucket, "storage": "memory", "recreate": True})
    assert not recreated["failed"], recreated.get("msg")
    assert recreated["operation"] == "recreate" and recreated["changed_fields"] == ["storage"]
    assert "lost" in str(recreated.get("warnings"))
    now = stream_info(f"KV_{kv_bucket}")
    assert now["config"]["storage"] == "memory" and now["state"]["messages"] == 0
    assert now["config"]["max_msgs_per_subject"] == 2 and now["config"]["subjects"] == [f"$KV.{kv_bucket}.>"]


def test_kv_bucket_created_by_nats_py_is_no_change_for_the_same_options(kv_bucket):
    async def create(js: Any) -> None:
        kv = await js.create_key_value(KeyValueConfig(
            bucket=kv_bucket, description="made by nats-py", history=4, ttl=600, max_bytes=1024 ** 2,
            max_value_size=1024, storage=StorageType.FILE, replicas=3))
        await settled(lambda: kv.put("a", b"1"))

    with_jetstream(create)
    before = stream_info(f"KV_{kv_bucket}")
    same = run_module("nats_kv", {"bucket": kv_bucket, "description": "made by nats-py", "history": 4, "ttl": "10m",
                                  "max_bytes": "1MB", "max_value_size": "1KB", "storage": "file", "replicas": 3})
    assert not same["failed"], same.get("msg")
    assert same["changed"] is False and same["operation"] == "none" and same["changed_fields"] == []
    assert same["bucket"]["history"] == 4 and same["bucket"]["values"] == 1
    assert stream_info(f"KV_{kv_bucket}")["config"] == before["config"]
    # nats-py leaves direct get off; the module does not compare what it was not given, and
    # reports it when asked.
    assert run_module("nats_kv", {"bucket": kv_bucket, "direct": True}, check=True)["changed_fields"] == ["direct"]


def test_object_store_lifecycle(object_store):
    stream = f"OBJ_{object_store}"
    spec = {"bucket": object_store, "description": "integration test store", "ttl": "1d", "max_bytes": "32MB",
            "replicas": 3, "compression": False}

    would = run_module("nats_object_store", spec, check=True)
    assert would["changed"] and would["operation"] == "create" and not would["failed"], would.get("msg")
    assert stream_info(stream) is None, "check mode must not create the store"

    created = run_module("nats_object_store", spec)
    assert created["changed"] and created["operation"] == "create", created.get("msg")
    assert created["changed_fields"] == ["compression", "description", "max_bytes", "replicas", "ttl"]
    seen = stream_info(stream)["config"]
    assert sorted(seen["subjects"]) == [f"$O.{object_store}.C.>", f"$O.{object_store}.M.>"]
    assert (seen["discard"], seen["allow_rollup_hdrs"], seen["allow_direct"]) == ("new", True, True)
    assert seen["max_age"] == 86400 * NS and seen["max_bytes"] == 32 * 1024 ** 2
    assert seen["num_replicas"] == 3 and seen.get("compression", "none") == "none"  # "none" is omitted

    again = run_module("nats_object_store", {**spec, "ttl": 86400, "max_bytes": 32 * 1024 ** 2})
    assert again["changed"] is False and again["operation"] == "none"

    edit = {**spec, "ttl": "2d"}
    preview = run_module("nats_object_store", edit, check=True)
    assert preview["changed"] and changed_keys(preview["diff"]["before"], preview["diff"]["after"]) == ["ttl"]
    assert stream_info(stream)["config"]["max_age"] == 86400 * NS, "check mode must not change the store"
    edited = run_module("nats_object_store", edit)
    assert edited["changed"] and edited["operation"] == "update" and edited["changed_fields"] == ["ttl"]
    assert (edited["diff"]["before"]["ttl"], edited["diff"]["after"]["ttl"]) == ("1d", "2d")
    assert stream_info(stream)["config"]["max_age"] == 2 * 86400 * NS

    async def put_and_get(js: Any) -> bytes:
        store = await js.object_store(object_store)
        await settled(lambda: store.put("report.txt", b"x" * 300_000))  # three 128 KiB chunks
        return (await settled(lambda: store.get("report.txt"))).data

    assert with_jetstream(put_and_get) == b"x" * 300_000

    before = stream_info(stream)
    refused = run_module("nats_object_store", {**edit, "storage": "memory"})
    assert refused["failed"] and not refused["changed"]
    assert f"object store {object_store}: cannot change storage" in refused["msg"]
    assert "current 'file', requested 'memory'" in refused["msg"]
    after = stream_info(stream)
    assert after["config"] == before["config"] and after["created"] == before["created"]

    kept = run_module("nats_object_store", {"bucket": object_store, "state": "absent"})
    assert kept["failed"] and not kept["changed"]
    assert f"object store {object_store} holds 1 object(s) (4 message(s)" in kept["msg"]
    assert stream_info(stream)["state"]["messages"] == 4

    deleted = run_module("nats_object_store", {"bucket": object_store, "state": "absent", "force": True})
    assert deleted["changed"] and deleted["operation"] == "delete", deleted.get("msg")
    assert stream_info(stream) is None


def test_object_store_created_by_nats_py_is_no_change_for_the_same_options(object_store):
    async def create(js: Any) -> None:
        await js.create_object_store(object_store, ObjectStoreConfig(
            description="made by nats-py", ttl=90, max_bytes=8 * 1024 ** 2, storage=StorageType.FILE, replicas=3))

    with_jetstream(create)
    before = stream_info(f"OBJ_{object_store}")
    same = run_module("nats_object_store", {"bucket": object_store, "description": "made by nats-py", "ttl": "90s",
                                            "max_bytes": "8MB", "storage": "file", "replicas": 3})
    assert not same["failed"], same.get("msg")
    assert same["changed"] is False and same["operation"] == "none"
    assert stream_info(f"OBJ_{object_store}")["config"] == before["config"]
    # An empty store is deleted without force.
    assert run_module("nats_object_store", {"bucket": object_store, "state": "absent"})["operation"] == "delete"
    assert stream_info(f"OBJ_{object_store}") is None
