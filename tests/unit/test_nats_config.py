"""Unit tests for the pure logic behind the nats_* modules: units, subject overlap, canary
events, percentiles (the stream and consumer fields: test_jetstream_fields.py)."""
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
