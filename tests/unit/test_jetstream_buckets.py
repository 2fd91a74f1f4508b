"""Unit tests for module_utils/tapio_jetstream_buckets.py: KV buckets and object stores as
the streams behind them (mapping, validation, the bucket view, changed option names).

The mapping is also checked against nats-py's own create_key_value / create_object_store:
their stream request is captured before it would be sent, so no server is involved."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from module_utils_loader import load_module_utils

buckets = load_module_utils("tapio_jetstream_buckets")
NS = 1_000_000_000


def kv(**options: Any) -> dict[str, Any]:
    return buckets.kv_stream_config({"bucket": "cfg", **options}, exists=False)


def obj(**options: Any) -> dict[str, Any]:
    return buckets.object_store_stream_config({"bucket": "files", **options}, exists=False)


def test_new_kv_bucket_is_the_stream_every_client_creates():
    assert kv() == {"name": "KV_cfg", "subjects": ["$KV.cfg.>"], "discard": "new", "allow_rollup_hdrs": True,
                    "deny_delete": True, "allow_direct": True, "max_msgs_per_subject": 1}


def test_kv_options_map_to_wire_fields_and_units():
    config = kv(description="settings", history=5, ttl="1h", max_bytes="64MB", max_value_size="1KB",
                storage="memory", replicas=3, compression=True, placement={"cluster": "c1", "tags": None},
                metadata={"team": "tapio", "tier": 1}, republish={"dest": "mirror.>", "src": None},
                direct=False, limit_marker_ttl="5m")
    assert config == {
        "name": "KV_cfg", "subjects": ["$KV.cfg.>"], "discard": "new", "allow_rollup_hdrs": True,
        "deny_delete": True, "allow_direct": False, "max_msgs_per_subject": 5, "description": "settings",
        "max_age": 3600 * NS, "duplicate_window": 120 * NS, "max_bytes": 64 * 1024 ** 2, "max_msg_size": 1024,
        "storage": "memory", "num_replicas": 3, "compression": "s2", "placement": {"cluster": "c1"},
        "metadata": {"team": "tapio", "tier": "1"}, "republish": {"dest": "mirror.>"},
        "subject_delete_marker_ttl": 300 * NS, "allow_msg_ttl": True}


@pytest.mark.parametrize(("ttl", "window"), [("30s", 30 * NS), (90, 90 * NS), ("2m", 120 * NS), ("1d", 120 * NS),
                                             (0, 120 * NS)])
def test_duplicate_window_is_two_minutes_or_the_shorter_ttl(ttl, window):
    assert kv(ttl=ttl)["duplicate_window"] == window
    assert obj(ttl=ttl)["duplicate_window"] == window


def test_existing_bucket_compares_only_its_shape_and_what_the_user_set():
    existing = buckets.kv_stream_config({"bucket": "cfg", "ttl": None, "history": None, "max_bytes": "1GB"},
                                        exists=True)
    assert existing == {"name": "KV_cfg", "subjects": ["$KV.cfg.>"], "discard": "new", "allow_rollup_hdrs": True,
                        "deny_delete": True, "max_bytes": 1024 ** 3}
    assert "duplicate_window" not in existing and "allow_direct" not in existing


def test_object_store_is_the_stream_every_client_creates():
    assert obj() == {"name": "OBJ_files", "subjects": ["$O.files.C.>", "$O.files.M.>"], "discard": "new",
                     "allow_rollup_hdrs": True, "allow_direct": True}
    config = obj(ttl="7d", max_bytes=0, storage="file", replicas=1, compression=False, description="d")
    assert config["max_age"] == 7 * 86400 * NS and config["max_bytes"] == -1 and config["compression"] == "none"
    assert "max_msgs_per_subject" not in config and "deny_delete" not in config


def test_zero_size_limits_mean_unlimited_like_nats_py():
    assert kv(max_bytes=0, max_value_size="0")["max_bytes"] == -1
    assert kv(max_value_size=0)["max_msg_size"] == -1
    assert kv(max_bytes=-1)["max_bytes"] == -1


@pytest.mark.parametrize(("options", "complaint"), [
    ({"bucket": "has.dot"}, "bucket: 'has.dot' is not a valid bucket name"),
    ({"bucket": "has space"}, "bucket: 'has space'"),
    ({"bucket": ""}, "bucket: ''"),
    ({"bucket": None}, "bucket: None"),
    ({"history": 0}, "history: must be 1 to 64"),
    ({"history": 65}, "history: must be 1 to 64"),
    ({"history": "five"}, "history: expected a whole number"),
    ({"history": True}, "history: expected a whole number"),
    ({"ttl": "forever"}, "ttl: cannot parse duration"),
    ({"ttl": -1}, "ttl: a duration cannot be negative"),
    ({"max_bytes": "10 parsecs"}, "max_bytes: cannot parse size"),
    ({"max_bytes": -5}, "max_bytes: must be a size in bytes"),
    ({"max_value_size": "big"}, "max_value_size: cannot parse size"),
    ({"replicas": 0}, "replicas: must be at least 1"),
    ({"storage": "disk"}, "storage: must be file or memory"),
    ({"compression": "s2"}, "compression: expected true (s2) or false (none)"),
    ({"metadata": {"_nats.level": "1"}}, "metadata: keys starting with '_nats.' belong to the server"),
    ({"metadata": ["a"]}, "metadata: expected a mapping"),
    ({"republish": {"src": ">"}}, "republish: dest"),
    ({"limit_marker_ttl": "500ms"}, "limit_marker_ttl: must be at least 1s"),
    ({"limit_marker_ttl": "soon"}, "limit_marker_ttl: cannot parse duration"),
])
def test_each_bad_option_is_a_value_error_naming_it(options, complaint):
    with pytest.raises(ValueError) as raised:
        buckets.kv_stream_config({"bucket": "cfg", **options})
    assert complaint in str(raised.value)


def test_object_store_validates_the_same_way():
    with pytest.raises(ValueError, match="bucket: 'a/b'"):
        obj(bucket="a/b")
    with pytest.raises(ValueError, match="ttl: cannot parse duration"):
        obj(ttl="a while")


def test_limit_marker_ttl_zero_removes_the_marker_but_leaves_message_ttls_on():
    # The server never turns allow_msg_ttl off again: asking for it would be refused.
    assert kv(limit_marker_ttl=0)["subject_delete_marker_ttl"] == 0
    assert "allow_msg_ttl" not in kv(limit_marker_ttl=0)


# --------------------------------------------------------------------------- against nats-py


class _Sent(Exception):
    """Raised by the capturing add_stream: nats-py's request, never sent."""

    def __init__(self, request: dict[str, Any]) -> None:
        super().__init__("captured")
        self.request = request


def nats_py_request(create: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The stream request nats-py's create_key_value / create_object_store would send."""
    from nats.js.client import JetStreamContext

    class Capture(JetStreamContext):
        def __init__(self) -> None:  # no connection: add_stream is all that is used
            pass

        async def add_stream(self, config: Any = None, **params: Any) -> Any:
            raise _Sent(config.as_dict())

    with pytest.raises(_Sent) as sent:
        asyncio.run(getattr(Capture(), create)(*args, **kwargs))
    return sent.value.request


def test_kv_mapping_matches_what_nats_py_sends():
    from nats.js.api import KeyValueConfig, Placement, StorageType

    theirs = nats_py_request("create_key_value", KeyValueConfig(
        bucket="cfg", description="settings", history=5, ttl=30, max_bytes=1024 ** 2, max_value_size=512,
        storage=StorageType.MEMORY, replicas=3, placement=Placement(cluster="c1"), direct=True))
    ours = kv(description="settings", history=5, ttl=30, max_bytes="1MB", max_value_size=512, storage="memory",
              replicas=3, placement={"cluster": "c1"}, direct=True)
    # nats-py's create_key_value accepts a placement but does not send it (nats.go does).
    assert "placement" not in theirs and ours.pop("placement") == {"cluster": "c1"}
    assert {k: theirs.get(k) for k in ours} == ours
    # nats-py 2.16 also sends allow_msg_ttl for every bucket (nats.go only with a limit
    # marker TTL); the module sets it only with limit_marker_ttl, so it is left out above.


def test_kv_defaults_match_nats_py_except_direct_get():
    theirs = nats_py_request("create_key_value", bucket="cfg")
    ours = kv()
    direct = ours.pop("allow_direct")
    assert {k: theirs.get(k) for k in ours} == ours and direct is True
    # nats-py leaves direct get off unless asked; nats.go and the CLI turn it on. So it is only
    # set on creation and never compared on an existing bucket unless the user sets it.
    assert "allow_direct" not in theirs
    assert "allow_direct" not in buckets.kv_stream_config({"bucket": "cfg"}, exists=True)


def test_object_store_mapping_matches_what_nats_py_sends():
    from nats.js.api import ObjectStoreConfig, Placement, StorageType

    theirs = nats_py_request("create_object_store", "files", ObjectStoreConfig(
        description="blobs", ttl=3600, max_bytes=0, storage=StorageType.FILE, replicas=3,
        placement=Placement(tags=["ssd"])))
    ours = obj(description="blobs", ttl="1h", max_bytes=0, storage="file", replicas=3, placement={"tags": ["ssd"]})
    # nats-py leaves the duplicate window to the server, which picks the one the module sends.
    assert theirs["duplicate_window"] == 0 and ours.pop("duplicate_window") == 120 * NS
    assert {k: theirs.get(k) for k in ours} == ours


# --------------------------------------------------------------------------- stream -> bucket


SERVER_KV = {"name": "KV_cfg", "subjects": ["$KV.cfg.>"], "retention": "limits", "max_consumers": -1,
             "max_msgs": -1, "max_bytes": 64 * 1024 ** 2, "max_age": 3600 * NS, "max_msgs_per_subject": 5,
             "max_msg_size": -1, "discard": "new", "storage": "file", "num_replicas": 3,
             "duplicate_window": 120 * NS, "compression": "s2", "allow_direct": True, "mirror_direct": False,
             "sealed": False, "deny_delete": True, "deny_purge": False, "allow_rollup_hdrs": True,
             "metadata": {"_nats.req.level": "0", "_nats.ver": "2.15.1", "team": "tapio"}}


def test_kv_bucket_view_reads_the_stream_back_as_options():
    assert buckets.kv_bucket_view(SERVER_KV) == {
        "bucket": "cfg", "stream": "KV_cfg", "compression": True, "description": "", "direct": True,
        "history": 5, "limit_marker_ttl": "0s", "max_bytes": 64 * 1024 ** 2, "max_value_size": -1,
        "metadata": {"team": "tapio"}, "placement": {}, "replicas": 3, "republish": {}, "storage": "file",
        "ttl": "1h"}
    assert buckets.kv_bucket_view(None) == {}


def test_view_of_the_mapping_round_trips_the_options():
    options = {"bucket": "cfg", "history": 3, "ttl": "90s", "max_bytes": 2048, "max_value_size": 128,
               "storage": "memory", "replicas": 3, "compression": True, "description": "d", "direct": True,
               "limit_marker_ttl": "10m", "metadata": {"a": "b"}, "placement": {"cluster": "c1"},
               "republish": {"src": "$KV.cfg.>", "dest": "out.>", "headers_only": True}}
    view = buckets.kv_bucket_view(buckets.kv_stream_config(options))
    assert {k: view[k] for k in options} == {**options, "ttl": "1m30s"}


def test_object_store_view():
    config = {**obj(ttl="30d", max_bytes="1GB", compression=False), "storage": "memory", "num_replicas": 1,
              "sealed": True}
    assert buckets.object_store_view(config) == {
        "bucket": "files", "stream": "OBJ_files", "compression": False, "description": "", "max_bytes": 1024 ** 3,
        "metadata": {}, "placement": {}, "replicas": 1, "sealed": True, "storage": "memory", "ttl": "30d"}


def test_bucket_info_adds_what_the_bucket_holds():
    info = {"config": SERVER_KV, "state": {"messages": 7, "bytes": 300, "num_subjects": 2}}
    view = buckets.bucket_info(buckets.KV, info)
    assert (view["values"], view["bytes"], view["history"]) == (7, 300, 5)
    assert buckets.bucket_info(buckets.OBJECT_STORE, {"config": obj(), "state": {"messages": 4}})["messages"] == 4
    assert buckets.bucket_info(buckets.KV, {}) == {}


@pytest.mark.parametrize(("kind", "fields", "creating", "options"), [
    ("kv", ["max_age", "duplicate_window"], False, ["ttl"]),
    ("kv", ["max_msgs_per_subject", "num_replicas", "max_msg_size"], False, ["history", "max_value_size", "replicas"]),
    ("kv", ["max_msgs_per_subject", "replicas"], False, ["history", "replicas"]),  # the stream layer's option names
    ("kv", ["allow_msg_ttl", "subject_delete_marker_ttl"], False, ["limit_marker_ttl"]),
    ("kv", ["discard", "max_bytes"], False, ["discard", "max_bytes"]),
    ("kv", ["allow_direct", "allow_rollup_hdrs", "deny_delete", "discard", "max_msgs_per_subject", "subjects"], True,
     ["direct", "history"]),
    # Direct get is part of an object store's shape, not an option of nats_object_store.
    ("object_store", ["allow_direct", "allow_rollup_hdrs", "discard", "max_age", "subjects"], True, ["ttl"]),
    ("object_store", ["allow_direct", "max_age"], False, ["allow_direct", "ttl"]),
])
def test_changed_fields_are_named_as_options(kind, fields, creating, options):
    assert buckets.option_names(kind, fields, creating) == options


def test_storage_is_immutable_and_named_in_the_bucket_s_terms():
    desired = buckets.kv_stream_config({"bucket": "cfg", "storage": "memory", "history": 9}, exists=True)
    problems = buckets.immutable_changes(buckets.KV, desired, SERVER_KV)
    assert problems == [("storage", "file", "memory")]
    message = buckets.immutable_message(buckets.KV, "cfg", problems)
    assert message.startswith("kv bucket cfg: cannot change storage on an existing bucket "
                              "(storage: current 'file', requested 'memory'). Nothing was changed.")
    assert "recreate=true" in message
    same = buckets.kv_stream_config({"bucket": "cfg", "storage": "file"}, exists=True)
    assert buckets.immutable_changes(buckets.KV, same, SERVER_KV) == []
    # A stream that never reported storage is file storage, the server's default.
    assert buckets.immutable_changes(buckets.KV, same, {k: v for k, v in SERVER_KV.items() if k != "storage"}) == []


def test_same_options_read_back_from_the_server_s_bucket_are_the_same_view():
    options = {"bucket": "cfg", "history": 5, "ttl": 3600, "max_bytes": "64MB", "compression": True,
               "replicas": 3, "metadata": {"team": "tapio"}}
    desired = buckets.kv_stream_config(options, exists=True)
    # Every field the module would send holds the same value on the server's bucket.
    metadata = desired.pop("metadata")
    assert {k: SERVER_KV[k] for k in desired} == desired and metadata == {"team": "tapio"}
    assert buckets.kv_bucket_view({**SERVER_KV, **desired, "metadata": {**SERVER_KV["metadata"], **metadata}}) == \
        buckets.kv_bucket_view(SERVER_KV)


def test_bucket_result_speaks_in_options():
    desired = buckets.kv_stream_config({"bucket": "cfg", "history": 9}, exists=True)
    outcome = {"changed": True, "operation": "update", "changed_fields": ["max_msgs_per_subject"],
               "stream": {"config": {**SERVER_KV, "max_msgs_per_subject": 9}, "state": {"messages": 1, "bytes": 10}},
               "diff": {"before": {}, "after": {}}}
    result = buckets.bucket_result(buckets.KV, desired, {"config": SERVER_KV}, outcome)
    assert result["changed_fields"] == ["history"] and result["bucket"]["history"] == 9
    before, after = result["diff"]["before"], result["diff"]["after"]
    assert sorted(k for k in before if before[k] != after.get(k)) == ["history"]
    gone = buckets.bucket_result(buckets.KV, {}, {"config": SERVER_KV},
                                 {"changed": True, "operation": "delete", "changed_fields": [], "stream": {}})
    assert gone["bucket"] == {} and gone["diff"]["after"] == {} and gone["diff"]["before"]["bucket"] == "cfg"
    assert gone["changed_fields"] == []


def test_changed_fields_of_a_create_are_the_options_it_sets():
    desired = buckets.kv_stream_config({"bucket": "cfg", "ttl": "1h", "replicas": 3})
    created = buckets.bucket_result(buckets.KV, desired, None, {
        "changed": True, "operation": "create", "changed_fields": ["whatever the stream layer says"],
        "stream": {"config": desired}})
    assert created["changed_fields"] == ["direct", "history", "replicas", "ttl"]
    assert created["diff"]["before"] == {} and created["diff"]["after"]["ttl"] == "1h"


def test_a_shape_field_changed_on_an_existing_stream_keeps_its_stream_name():
    odd = {**SERVER_KV, "discard": "old"}
    desired = buckets.kv_stream_config({"bucket": "cfg"}, exists=True)
    result = buckets.bucket_result(buckets.KV, desired, {"config": odd}, {
        "changed": True, "operation": "update", "changed_fields": ["discard"], "stream": {"config": SERVER_KV}})
    assert result["changed_fields"] == ["discard"]


def test_contents_message_names_the_count():
    assert buckets.contents_message(buckets.KV, "cfg", 2, 5).startswith(
        "kv bucket cfg holds 2 key(s) (5 message(s) of values, history and delete markers in stream KV_cfg).")
    text = buckets.contents_message(buckets.OBJECT_STORE, "files", 1, 3)
    assert "object store files holds 1 object(s)" in text and "force=true" in text and "Nothing was changed" in text


def test_a_value_size_above_the_server_s_max_payload_is_a_problem():
    assert buckets.value_size_problem(kv(max_value_size="2MB"), 1024 ** 2) == (
        "max_value_size (2097152 bytes) exceeds the server's max_payload (1048576 bytes); use at most 1048576")
    assert buckets.value_size_problem(kv(max_value_size="1MB"), 1024 ** 2) == ""
    assert buckets.value_size_problem(kv(), 1024 ** 2) == ""  # unlimited: the server's max_payload applies
