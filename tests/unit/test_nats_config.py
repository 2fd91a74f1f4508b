"""Unit tests for the pure logic behind the nats_* modules: units, normalisation,
comparison, immutability, validation, subject overlap, canary events, percentiles."""
from __future__ import annotations

import re

import pytest

from module_utils_loader import load_module_utils

cfg = load_module_utils("tapio_nats_config")
probe = load_module_utils("tapio_nats_probe")
NS = 1_000_000_000


@pytest.mark.parametrize(("value", "expected"), [
    (90, 90 * NS), (1.5, 1_500_000_000), ("90", 90 * NS), ("90s", 90 * NS), ("2m", 120 * NS),
    ("1h30m", 5400 * NS), ("7d", 7 * 86400 * NS), ("1w", 7 * 86400 * NS), ("500ms", 500_000_000),
    ("0", 0), (0, 0), ("1.5h", 5400 * NS), (" 2M ", 120 * NS),
])
def test_parse_duration(value, expected):
    assert cfg.parse_duration(value) == expected


@pytest.mark.parametrize("value", ["", "forever", "10x", "1h30", "m5", "-5s", -5, True, "2m-1s"])
def test_parse_duration_rejects(value):
    with pytest.raises(cfg.ConfigError, match="max_age"):
        cfg.parse_duration(value, "max_age")


@pytest.mark.parametrize(("ns", "text"), [(0, "0s"), (120 * NS, "2m"), (5400 * NS, "1h30m"),
                                          (7 * 86400 * NS, "7d"), (1_500_000_000, "1s500ms")])
def test_format_duration_round_trips(ns, text):
    assert cfg.format_duration(ns) == text
    assert cfg.parse_duration(text) == ns


@pytest.mark.parametrize(("value", "expected"), [(1024, 1024), (-1, -1), ("1KB", 1024), ("10GB", 10 * 1024 ** 3),
                                                 ("512MiB", 512 * 1024 ** 2), ("1 mb", 1024 ** 2), (2.0, 2)])
def test_parse_size(value, expected):
    assert cfg.parse_size(value) == expected


@pytest.mark.parametrize("value", ["10 parsecs", "GB", True, "1.2.3MB"])
def test_parse_size_rejects(value):
    with pytest.raises(cfg.ConfigError, match="cannot parse size|expected a size"):
        cfg.parse_size(value, "max_bytes")


@pytest.mark.parametrize(("a", "b", "overlap"), [
    ("tapio.events.>", "tapio.events.k8s.default.pod", True),
    ("tapio.events.>", "tapio.events", False),
    ("tapio.*.k8s", "tapio.events.*", True),
    ("tapio.events.k8s", "tapio.events.ebpf", False),
    ("a.b", "a.b.c", False),
    (">", "anything.at.all", True),
    ("a.*", "a.>", True),
    ("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>", "tapio.events.>", False),
])
def test_subjects_overlap_is_symmetric(a, b, overlap):
    assert cfg.subjects_overlap(a, b) is overlap
    assert cfg.subjects_overlap(b, a) is overlap


@pytest.mark.parametrize(("subject", "pattern", "within"), [
    ("tapio.events.k8s.default.pod", "tapio.events.>", True),
    ("tapio.events.>", "tapio.events.>", True),
    ("tapio.>", "tapio.events.>", False),
    ("tapio.events.*", "tapio.events.*", True),
    ("tapio.events.>", "tapio.events.*", False),
    ("tapio.events", "tapio.events.>", False),
])
def test_subject_is_within(subject, pattern, within):
    assert cfg.subject_is_within(subject, pattern) is within


def test_find_overlapping_stream_names_the_other_stream_and_skips_itself():
    streams = [{"config": {"name": "MINE", "subjects": ["a.>"]}}, {"config": {"name": "OTHER", "subjects": ["b.*"]}}]
    assert cfg.find_overlapping_stream("MINE", ["a.x", "b.c"], streams) == ("OTHER", "b.*", "b.c")
    assert cfg.find_overlapping_stream("MINE", ["a.x"], streams) is None


def test_desired_stream_config_normalises_units_and_drops_unset():
    params = {"name": "S", "subjects": ["s.>"], "replicas": 3, "max_age": "7d", "duplicate_window": 120,
              "max_bytes": "1GB", "max_msg_size": None, "compression": "s2", "placement": None}
    assert cfg.desired_stream_config(params) == {
        "name": "S", "subjects": ["s.>"], "num_replicas": 3, "max_age": 7 * 86400 * NS,
        "duplicate_window": 120 * NS, "max_bytes": 1024 ** 3, "compression": "s2"}


SERVER_STREAM = {"name": "S", "subjects": ["s.b", "s.a"], "retention": "limits", "storage": "file", "num_replicas": 3,
                 "max_age": 7 * 86400 * NS, "duplicate_window": 120 * NS, "max_bytes": -1, "discard": "old",
                 "compression": "s2", "deny_delete": False, "placement": {"cluster": "c1"}}


def test_same_request_in_other_units_is_not_a_change():
    desired = cfg.desired_stream_config({"name": "S", "subjects": ["s.a", "s.b"], "max_age": 604800,
                                         "duplicate_window": "2m", "description": "", "placement": {"cluster": "c1"}})
    assert cfg.changed_fields(desired, SERVER_STREAM, cfg.STREAM_DEFAULTS) == []


def test_only_user_set_fields_are_compared():
    desired = {"name": "S", "max_age": 86400 * NS}
    assert cfg.changed_fields(desired, SERVER_STREAM, cfg.STREAM_DEFAULTS) == ["max_age"]


def test_field_missing_on_server_reads_as_server_default():
    assert cfg.changed_fields({"allow_direct": False, "sources": []}, {}, cfg.STREAM_DEFAULTS) == []
    assert cfg.changed_fields({"allow_direct": True}, {}, cfg.STREAM_DEFAULTS) == ["allow_direct"]


def test_merge_config_keeps_server_fields_and_overlays_user_fields():
    merged = cfg.merge_config(SERVER_STREAM, {"max_age": 60 * NS, "description": None})
    assert merged["max_age"] == 60 * NS and merged["subjects"] == ["s.b", "s.a"] and "description" not in merged


@pytest.mark.parametrize(("desired", "fields"), [
    ({"storage": "memory"}, ["storage"]),
    ({"retention": "workqueue"}, ["retention"]),
    ({"retention": "interest"}, []),
    ({"mirror": {"name": "X"}}, ["mirror"]),
    ({"max_age": 1}, []),
])
def test_stream_immutable_changes(desired, fields):
    assert [f for f, _, _ in cfg.stream_immutable_changes(desired, SERVER_STREAM)] == fields


def test_deny_delete_cannot_be_turned_off():
    problems = cfg.stream_immutable_changes({"deny_delete": False}, {**SERVER_STREAM, "deny_delete": True})
    assert problems == [("deny_delete", True, False)]


@pytest.mark.parametrize(("desired", "current", "message"), [
    ({"name": "S", "subjects": ["a"], "num_replicas": 5}, None, "replicas=5 exceeds the cluster's 3"),
    ({"name": "S", "subjects": ["a"], "max_age": 60 * NS, "duplicate_window": 120 * NS}, None,
     r"duplicate_window \(2m\) must not exceed max_age \(1m\)"),
    ({"name": "S", "max_age": 60 * NS}, {"duplicate_window": 120 * NS, "subjects": ["a"]},
     "must not exceed max_age"),
    ({"name": "S", "subjects": ["a"], "max_msg_size": 2 * 1024 ** 2}, None, "exceeds the server's max_payload"),
    ({"name": "S"}, None, "needs subjects"),
])
def test_validate_stream_rejects(desired, current, message):
    problems = cfg.validate_stream(desired, current, cluster_size=3, max_payload=1024 ** 2)
    assert any(re.search(message, p) for p in problems), problems


def test_validate_stream_accepts_a_sound_request():
    desired = {"name": "S", "subjects": ["a"], "num_replicas": 3, "max_age": 7 * 86400 * NS,
               "duplicate_window": 120 * NS, "max_msg_size": 1024}
    assert cfg.validate_stream(desired, None, cluster_size=3, max_payload=1024 ** 2) == []


def test_desired_consumer_config_normalises_durations():
    params = {"name": "c", "ack_wait": "30s", "backoff": ["1s", 5, "1m"], "max_deliver": 5, "filter_subject": None}
    assert cfg.desired_consumer_config(params) == {
        "durable_name": "c", "name": "c", "ack_wait": 30 * NS, "backoff": [NS, 5 * NS, 60 * NS], "max_deliver": 5}


def test_consumer_immutables_and_push_pull_switch():
    current = {"deliver_policy": "all", "ack_policy": "explicit", "ack_wait": 30 * NS}
    problems = cfg.consumer_immutable_changes({"ack_policy": "none", "deliver_subject": "push.here"}, current)
    assert [f for f, _, _ in problems] == ["ack_policy", "deliver_subject (push vs pull)"]
    assert cfg.consumer_immutable_changes({"ack_wait": 60 * NS}, current) == []


@pytest.mark.parametrize(("desired", "message"), [
    ({"filter_subject": "a", "filter_subjects": ["b"]}, "mutually exclusive"),
    ({"deliver_policy": "by_start_sequence"}, "needs opt_start_seq"),
    ({"opt_start_seq": 4}, "only valid with deliver_policy by_start_sequence"),
    ({"backoff": [NS, 2 * NS], "max_deliver": 2}, "must be greater than the number of backoff steps"),
    ({"backoff": [NS], "ack_wait": 30 * NS}, "uses the first step"),
    ({"filter_subject": "other.>"}, "matches none of the stream's subjects"),
    ({"num_replicas": 4}, "exceeds the cluster's 3"),
])
def test_validate_consumer_rejects(desired, message):
    problems = cfg.validate_consumer({"durable_name": "c", **desired}, ["tapio.events.>"], 3)
    assert any(message in p for p in problems), problems


def test_canary_event_is_a_unified_event():
    event = probe.canary_event("tapio.events.k8s.default.pod", 0, "run1")
    assert re.fullmatch(r"[0-9a-f]{32}", event["id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", event["timestamp"])
    assert event["type"] in probe.EVENT_TYPES and event["severity"] in probe.SEVERITIES
    assert event["k8s_context"]["namespace"] == "default"
    assert {"source", "message", "attributes", "trace_context"} <= set(event)


def test_prepare_batch_round_robins_subjects_with_unique_ids():
    batch = probe.prepare_batch(["a", "b"], 4, "run", "src")
    assert [s for s, _, _ in batch] == ["a", "b", "a", "b"]
    assert len({i for _, _, i in batch}) == 4


def test_percentiles_and_latency_summary():
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert cfg.percentile(sorted(values), 0.5) == 0.05
    assert probe.latency_summary(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert probe.latency_summary([]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}


def test_ack_floor_passed():
    assert probe.ack_floor_passed({"ack_floor": {"stream_seq": 10}}, 10)
    assert not probe.ack_floor_passed({"ack_floor": {"stream_seq": 9}}, 10)
    assert not probe.ack_floor_passed(None, 1)


def test_redact_url_hides_userinfo():
    nats = load_module_utils("tapio_nats")
    assert nats.redact_url("nats://u:secret@host:4222") == "nats://host:4222"


def test_publish_frame_matches_the_nats_protocol():
    payload = b'{"id":"x"}'
    assert probe.publish_frame("a.b", "_INBOX.r.1", payload, None) == b"PUB a.b _INBOX.r.1 10\r\n" + payload + b"\r\n"
    frame = probe.publish_frame("a.b", "_INBOX.r.2", payload, "abc")
    header = b"NATS/1.0\r\nNats-Msg-Id: abc\r\n\r\n"
    assert frame == b"HPUB a.b _INBOX.r.2 %d %d\r\n" % (len(header), len(header) + 10) + header + payload + b"\r\n"


def test_replicas_are_left_to_the_server_when_the_cluster_size_is_unknown():
    desired = {"name": "S", "subjects": ["a"], "num_replicas": 5}
    assert cfg.validate_stream(desired, None, cluster_size=None, max_payload=1024 ** 2) == []
    assert cfg.validate_consumer({"durable_name": "c", "num_replicas": 5}, ["a"], None) == []
