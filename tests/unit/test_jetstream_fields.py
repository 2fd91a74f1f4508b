"""Unit tests for the stream and consumer field table: wire values, comparison, the merge sent
on update or recreate, the update rules, version refusals and cross-field checks. The same
rules are checked against a real server in tests/integration/test_jetstream_fields_server.py."""
from __future__ import annotations

import pytest

from module_utils_loader import load_module_utils

load_module_utils("tapio_nats_config")
fields = load_module_utils("tapio_jetstream_fields")
NS = 1_000_000_000
S, C = fields.STREAM_BY_WIRE, fields.CONSUMER_BY_WIRE

SERVER_STREAM = {"name": "S", "subjects": ["s.b", "s.a"], "retention": "limits", "storage": "file", "num_replicas": 3,
                 "max_age": 7 * 86400 * NS, "duplicate_window": 120 * NS, "max_bytes": -1, "discard": "old",
                 "compression": "s2", "deny_delete": False, "placement": {"cluster": "c1", "tags": ["ssd"]},
                 "metadata": {"_nats.level": "1", "owner": "me"}}
SERVER_CONSUMER = {"durable_name": "c", "name": "c", "deliver_policy": "all", "ack_policy": "explicit",
                   "ack_wait": 10 * NS, "max_deliver": 5, "max_ack_pending": 50, "filter_subject": "s.>",
                   "replay_policy": "instant", "max_waiting": 512, "num_replicas": 0,
                   "backoff": [NS, 5 * NS, 30 * NS]}


def test_every_option_has_a_unique_name_and_a_spec():
    for table in (fields.STREAM_FIELDS, fields.CONSUMER_FIELDS):
        settable = [f.option for f in table if f.settable]
        assert len(settable) == len(set(settable))
        assert all(f.doc for f in table) and all(f.reason for f in table if not f.settable)
    spec = fields.argument_spec(fields.STREAM_FIELDS)
    assert spec["placement"]["options"]["tags"] == {"type": "list", "elements": "str"}
    assert spec["sources"]["options"]["consumer"]["options"]["deliver_subject"] == {"type": "str"}
    assert "direct" not in fields.argument_spec(fields.CONSUMER_FIELDS)


def test_desired_config_normalises_units_and_drops_unset():
    params = {"name": "S", "subjects": ["s.>"], "replicas": 3, "max_age": "7d", "duplicate_window": 120,
              "max_bytes": "1GB", "max_msg_size": None, "compression": "s2", "placement": {"tags": [], "cluster": None},
              "subject_delete_marker_ttl": "15m", "metadata": {"team": 7}}
    assert fields.desired_stream_config(params) == {
        "name": "S", "subjects": ["s.>"], "num_replicas": 3, "max_age": 7 * 86400 * NS,
        "duplicate_window": 120 * NS, "max_bytes": 1024 ** 3, "compression": "s2", "placement": {"tags": []},
        "subject_delete_marker_ttl": 900 * NS, "metadata": {"team": "7"}}
    consumer = fields.desired_consumer_config({"name": "c", "backoff": ["1s", 5], "opt_start_time":
                                               "2026-01-01T01:00:00+01:00", "max_bytes": "1MB"})
    assert consumer == {"durable_name": "c", "name": "c", "backoff": [NS, 5 * NS],
                        "opt_start_time": "2026-01-01T00:00:00Z", "max_bytes": 1024 ** 2}


def test_a_sources_subject_transforms_reach_the_wire_and_are_declared():
    """Each transform's src and dest are sub-fields: without them every transform was sent as {}."""
    transforms = [{"src": "a.>", "dest": "b.>"}]
    params = {"name": "S", "sources": [{"name": "A", "subject_transforms": transforms}],
              "mirror": {"name": "M", "subject_transforms": transforms}}
    config = fields.desired_stream_config(params)
    assert config["sources"][0]["subject_transforms"] == transforms == config["mirror"]["subject_transforms"]
    spec = fields.argument_spec(fields.STREAM_FIELDS)
    assert spec["sources"]["options"]["subject_transforms"]["options"] == {"src": {"type": "str"},
                                                                             "dest": {"type": "str"}}


@pytest.mark.parametrize(("kind", "name", "message"), [
    ("stream", "a.b", "'.'"), ("stream", "a b", "' '"), ("stream", "a*", "'*'"), ("stream", "a>", "'>'"),
    ("stream", "", "must not be empty"), ("consumer", "a/b", "'/'"), ("consumer", "a\\b", "'\\\\'"),
    ("stream", "x" * 256, "longer than 255"),
])
def test_names_the_server_cannot_route_are_refused(kind, name, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace(".", r"\.")):
        (fields.desired_stream_config if kind == "stream" else fields.desired_consumer_config)({"name": name})
    assert fields.name_problem("stream", "a/b") == "" and fields.name_problem("stream", "TAPIO_EVENTS") == ""


@pytest.mark.parametrize("value", ["yesterday", "2026-01-01T00:00:00"])
def test_times_must_be_rfc3339_with_a_zone(value):
    with pytest.raises(ValueError, match="opt_start_time"):
        fields.desired_consumer_config({"name": "c", "opt_start_time": value})


def test_same_request_in_other_units_is_not_a_change():
    desired = fields.desired_stream_config({"name": "S", "subjects": ["s.a", "s.b"], "max_age": 604800,
                                            "duplicate_window": "2m", "description": "",
                                            "placement": {"cluster": "c1"}, "metadata": {"owner": "me"}})
    assert fields.changed_fields(desired, SERVER_STREAM, S) == []


def test_only_user_set_fields_are_compared_and_absent_fields_read_as_server_defaults():
    assert fields.changed_fields({"name": "S", "max_age": 86400 * NS}, SERVER_STREAM, S) == ["max_age"]
    assert fields.changed_fields({"allow_direct": False, "sources": [], "max_consumers": -1}, {}, S) == []
    assert fields.changed_fields({"allow_direct": True}, {}, S) == ["allow_direct"]


def test_backoff_order_is_a_change_but_subject_order_is_not():
    assert fields.changed_fields({"backoff": [30 * NS, 5 * NS, NS]}, SERVER_CONSUMER, C) == ["backoff"]
    assert fields.changed_fields({"backoff": [NS, 5 * NS, 30 * NS]}, SERVER_CONSUMER, C) == []
    assert fields.changed_fields({"subjects": ["s.a", "s.b"]}, SERVER_STREAM, S) == []


def test_times_compare_as_instants():
    current = {**SERVER_CONSUMER, "deliver_policy": "by_start_time", "opt_start_time": "2026-01-01T00:00:00Z"}
    for spelling in ("2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00+01:00", "2026-01-01T00:00:00.000Z"):
        desired = fields.desired_consumer_config({"name": "c", "opt_start_time": spelling})
        assert fields.changed_fields(desired, current, C) == []
        assert fields.immutable_changes(desired, current, C) == []


def test_placement_tags_can_be_cleared_and_sub_fields_merge():
    desired = {"placement": {"tags": []}}
    assert fields.changed_fields(desired, SERVER_STREAM, S) == ["placement"]
    assert fields.merged_config(SERVER_STREAM, desired, S)["placement"] == {"cluster": "c1"}
    moved = fields.merged_config(SERVER_STREAM, {"placement": {"cluster": "c2"}}, S)
    assert moved["placement"] == {"cluster": "c2", "tags": ["ssd"]}


def test_metadata_compares_and_merges_without_the_servers_own_keys():
    assert fields.changed_fields({"metadata": {"owner": "me"}}, SERVER_STREAM, S) == []
    assert fields.changed_fields({"metadata": {"owner": "you"}}, SERVER_STREAM, S) == ["metadata"]
    merged = fields.merged_config(SERVER_STREAM, {"metadata": {"team": "x"}}, S)
    assert merged["metadata"] == {"_nats.level": "1", "team": "x"}


def test_switching_between_filter_subject_and_filter_subjects_drops_the_other():
    merged = fields.merged_config(SERVER_CONSUMER, {"filter_subjects": ["s.a", "s.b"]}, C)
    assert "filter_subject" not in merged and merged["filter_subjects"] == ["s.a", "s.b"]
    back = fields.merged_config(merged, {"filter_subject": "s.>"}, C)
    assert "filter_subjects" not in back and back["filter_subject"] == "s.>"


def test_an_empty_mirror_removes_the_mirror():
    mirror = {**SERVER_STREAM, "mirror": {"name": "ORIGIN"}, "subjects": []}
    assert fields.changed_fields({"mirror": {}}, mirror, S) == ["mirror"]
    assert "mirror" not in fields.merged_config(mirror, {"mirror": {}}, S)
    assert fields.changed_fields({"mirror": {}}, SERVER_STREAM, S) == []


@pytest.mark.parametrize(("desired", "current", "refused"), [
    ({"storage": "memory"}, {}, ["storage"]),
    ({"retention": "workqueue"}, {}, ["retention"]),
    ({"retention": "interest"}, {}, []),
    ({"retention": "limits"}, {"retention": "workqueue"}, ["retention"]),
    ({"deny_delete": False}, {"deny_delete": True}, ["deny_delete"]),
    ({"deny_delete": True}, {}, []),
    ({"sealed": False}, {"sealed": True}, ["sealed"]),
    ({"allow_msg_ttl": False}, {"allow_msg_ttl": True}, ["allow_msg_ttl"]),
    ({"allow_msg_ttl": True}, {}, []),
    ({"allow_msg_counter": True}, {}, ["allow_msg_counter"]),
    ({"persist_mode": "async"}, {}, ["persist_mode"]),
    ({"first_seq": 10}, {}, ["first_seq"]),
    ({"mirror": {"name": "B"}}, {"mirror": {"name": "A"}}, ["mirror"]),
    ({"mirror": {}}, {"mirror": {"name": "A"}}, []),
    ({"mirror": {"name": "A"}}, {}, ["mirror"]),
    ({"max_age": NS, "compression": "none", "subjects": ["x"], "num_replicas": 1}, {}, []),
])
def test_stream_update_rules(desired, current, refused):
    assert [f for f, _, _ in fields.immutable_changes(desired, {**SERVER_STREAM, **current}, S, (2, 15, 1))] == refused


def test_mirror_removal_needs_a_2_12_server():
    current = {**SERVER_STREAM, "mirror": {"name": "A"}}
    assert [f for f, _, _ in fields.immutable_changes({"mirror": {}}, current, S, (2, 11, 0))] == ["mirror"]


@pytest.mark.parametrize(("desired", "refused"), [
    ({"deliver_policy": "new"}, ["deliver_policy"]),
    ({"ack_policy": "none"}, ["ack_policy"]),
    ({"replay_policy": "original"}, ["replay_policy"]),
    ({"idle_heartbeat": 5 * NS}, ["idle_heartbeat"]),
    ({"flow_control": True}, ["flow_control"]),
    ({"max_waiting": 10}, ["max_waiting"]),
    ({"mem_storage": True}, ["mem_storage"]),
    ({"deliver_subject": "push.here"}, ["deliver_subject"]),
    ({"deliver_group": "workers", "ack_wait": NS, "max_ack_pending": 1, "description": "x", "inactive_threshold": NS,
      "backoff": [NS], "max_batch": 5, "max_expires": NS, "max_bytes": 5, "priority_groups": ["a"],
      "priority_policy": "overflow", "pause_until": "2030-01-01T00:00:00Z", "metadata": {"a": "b"},
      "num_replicas": 1, "rate_limit_bps": 1, "sample_freq": "10%", "headers_only": True, "filter_subjects": ["s.a"]},
     []),
])
def test_consumer_update_rules_match_the_servers_check(desired, refused):
    assert [f for f, _, _ in fields.immutable_changes(desired, SERVER_CONSUMER, C)] == refused


def test_push_subject_may_change_but_push_and_pull_may_not_switch():
    push = {**SERVER_CONSUMER, "deliver_subject": "a"}
    assert fields.immutable_changes({"deliver_subject": "b"}, push, C) == []
    assert [f for f, _, _ in fields.immutable_changes({"deliver_subject": ""}, push, C)] == ["deliver_subject"]


def test_fields_and_values_newer_than_the_server_are_refused_by_name():
    desired = {"name": "S", "allow_batched": True, "compression": "s2",
               "sources": [{"name": "A", "subject_transforms": [{"src": "a", "dest": "b"}], "consumer": {"name": "x"}}]}
    assert sorted(fields.version_problems(desired, S, (2, 10, 7))) == [
        "allow_batched needs nats-server 2.14.0 or later (the server is 2.10.7)",
        "sources.consumer needs nats-server 2.14.0 or later (the server is 2.10.7)"]
    assert "sources.subject_transforms needs nats-server 2.10.0 or later (the server is 2.9.0)" in \
        fields.version_problems(desired, S, (2, 9, 0))
    assert fields.version_problems(desired, S, (2, 15, 1)) == []
    assert fields.version_problems({"priority_policy": "prioritized"}, C, (2, 11, 3)) == [
        "priority_policy=prioritized needs nats-server 2.12.0 or later (the server is 2.11.3)"]
    assert fields.version_problems({"compression": "s2"}, S, None) == []
    assert fields.parse_version("v2.11.0-RC.1") == (2, 11, 0) and fields.parse_version("") is None


@pytest.mark.parametrize(("desired", "current", "message"), [
    ({"subjects": ["a"], "max_age": 60 * NS, "duplicate_window": 120 * NS}, None,
     "duplicate_window (2m) must not exceed max_age (1m)"),
    ({"max_age": 60 * NS}, {"duplicate_window": 120 * NS, "subjects": ["a"]}, "must not exceed max_age"),
    ({}, None, "needs subjects"),
    ({"mirror": {"name": "A"}, "first_seq": 5}, None, "cannot set first_seq"),
    ({"subjects": ["a"], "discard_new_per_subject": True}, None, "needs discard=new"),
    ({"subjects": ["a"], "discard_new_per_subject": True, "discard": "new"}, None, "max_msgs_per_subject greater"),
    ({"subjects": ["a"], "persist_mode": "async", "num_replicas": 3}, None, "needs replicas=1"),
    ({"subjects": ["a"], "subject_delete_marker_ttl": NS}, None, "needs allow_msg_ttl"),
    ({"subjects": ["a"], "sealed": True}, None, "cannot be sealed"),
    ({"subjects": ["a"], "num_replicas": 0}, None, "at least 1"),
])
def test_stream_requests_the_server_would_refuse(desired, current, message):
    problems = fields.stream_problems({"name": "S", **desired}, current)
    assert any(message in p for p in problems), problems


def test_a_sound_stream_request_has_no_problem():
    desired = {"name": "S", "subjects": ["a"], "num_replicas": 5, "max_age": 7 * 86400 * NS,
               "duplicate_window": 120 * NS, "max_msg_size": 8 * 1024 ** 2}
    assert fields.stream_problems(desired, None) == []


STREAM = {"subjects": ["tapio.events.>"], "num_replicas": 3, "retention": "limits"}


@pytest.mark.parametrize(("desired", "message"), [
    ({"deliver_policy": "by_start_sequence"}, "needs opt_start_seq"),
    ({"opt_start_seq": 4}, "only valid with deliver_policy by_start_sequence"),
    ({"backoff": [NS, 2 * NS, 3 * NS], "max_deliver": 2}, "backoff has 3 steps but max_deliver is 2"),
    ({"backoff": [NS], "ack_wait": 30 * NS}, "uses the first step"),
    ({"filter_subject": "other.>"}, "matches none of the stream's subjects"),
    ({"filter_subjects": ["tapio.events.a", "other.>"]}, "matches none of the stream's subjects"),
    ({"num_replicas": 4}, "exceeds the stream's 3"),
    ({"deliver_subject": "push", "max_batch": 4}, "max_batch apply to pull consumers only"),
    ({"idle_heartbeat": NS}, "idle_heartbeat apply to push consumers only"),
    ({"deliver_subject": "push", "flow_control": True}, "flow_control needs idle_heartbeat"),
    ({"priority_policy": "overflow"}, "needs priority_groups"),
    ({"deliver_policy": "last_per_subject"}, "needs a filter subject"),
])
def test_consumer_requests_the_server_would_refuse(desired, message):
    problems = fields.consumer_problems({"durable_name": "c", **desired}, None, STREAM)
    assert any(message in p for p in problems), problems


def test_max_deliver_may_equal_the_backoff_steps_as_the_server_allows():
    desired = {"durable_name": "c", "backoff": [NS, 2 * NS], "max_deliver": 2}
    assert fields.consumer_problems(desired, None, STREAM) == []


def test_an_interest_stream_needs_its_consumers_at_its_replicas():
    problems = fields.consumer_problems({"num_replicas": 1}, None, {**STREAM, "retention": "interest"})
    assert any("has the stream's replicas" in p for p in problems)


def test_readable_renders_durations_and_hides_server_bookkeeping():
    shown = fields.readable({**SERVER_CONSUMER, "metadata": {"_nats.req.level": "0"}, "consumer_limits": {}}, C)
    assert shown["ack_wait"] == "10s" and shown["backoff"] == ["1s", "5s", "30s"]
    assert "metadata" not in shown and "consumer_limits" not in shown
