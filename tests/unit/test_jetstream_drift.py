"""Unit tests for the drift report (module_utils/tapio_jetstream_drift.py); the real-server
case is in tests/integration/test_nats_stream_consumer.py."""
from __future__ import annotations

from module_utils_loader import load_module_utils

load_module_utils("tapio_nats_config")
load_module_utils("tapio_jetstream_fields")
drift = load_module_utils("tapio_jetstream_drift")
NS = 1_000_000_000

LIVE_STREAM = {"name": "EV", "subjects": ["ev.>"], "retention": "limits", "max_consumers": -1, "max_msgs": -1,
               "max_bytes": -1, "max_age": 3600 * NS, "max_msgs_per_subject": -1, "max_msg_size": -1,
               "discard": "old", "storage": "file", "num_replicas": 3, "duplicate_window": 120 * NS,
               "compression": "none", "allow_direct": False, "mirror_direct": False, "sealed": False,
               "deny_delete": True, "deny_purge": False, "allow_rollup_hdrs": False, "consumer_limits": {},
               "allow_msg_ttl": False, "metadata": {"_nats.level": "1"}}
LIVE_PULL = {"durable_name": "p", "name": "p", "deliver_policy": "all", "ack_policy": "explicit",
             "ack_wait": 30 * NS, "max_deliver": 5, "replay_policy": "instant", "max_waiting": 512,
             "max_ack_pending": 1000, "num_replicas": 0, "filter_subject": "ev.>"}


def test_a_server_that_matches_its_declaration_has_no_drift():
    declared = {"EV": {"name": "EV", "subjects": ["ev.>"], "max_age": 3600 * NS, "num_replicas": 3,
                       "deny_delete": True}}
    consumers = {"EV": {"p": {"durable_name": "p", "name": "p", "max_deliver": 5, "filter_subject": "ev.>"}}}
    report = drift.drift_report(declared, consumers, {"EV": LIVE_STREAM}, {"EV": {"p": LIVE_PULL}})
    assert report == {"unmanaged_streams": [], "unmanaged_consumers": {}, "missing": [], "changed": {},
                      "undeclared": {}}
    assert drift.drift_summary(report) == []


def test_every_kind_of_drift_is_reported_and_summarised():
    declared = {"EV": {"name": "EV", "subjects": ["ev.>"], "max_age": 7200 * NS}, "GONE": {"name": "GONE"}}
    consumers = {"EV": {"p": {"durable_name": "p", "name": "p", "max_deliver": 5}}}
    live_consumers = {"EV": {"p": {**LIVE_PULL, "max_ack_pending": 10}, "debug": LIVE_PULL}}
    live = {"EV": LIVE_STREAM, "OTHER": LIVE_STREAM, "KV_cfg": LIVE_STREAM}
    report = drift.drift_report(declared, consumers, live, live_consumers, ignore_streams=("KV_cfg",))
    assert report["unmanaged_streams"] == ["OTHER"]
    assert report["unmanaged_consumers"] == {"EV": ["debug"]}
    assert report["missing"] == ["stream GONE"]
    assert report["changed"] == {"stream EV": {"max_age": {"declared": "2h", "live": "1h"}}}
    assert report["undeclared"] == {"stream EV": {"replicas": 3, "deny_delete": True},
                                    "consumer EV/p": {"max_ack_pending": 10, "filter_subject": "ev.>"}}
    lines = drift.drift_summary(report)
    assert "stream OTHER: on the server, declared by no task" in lines
    assert any(line.startswith("stream EV: changed outside the toolkit: max_age is '1h', declared '2h'")
               for line in lines)
    assert any("consumer EV/p: holds values no task declares" in line and "max_ack_pending=10" in line
               for line in lines)


def test_a_replay_consumer_is_replay_ymls_not_undeclared():
    declared = {"EV": {"name": "EV", "subjects": ["ev.>"]}}
    replay = {**LIVE_PULL, "name": "r", "durable_name": "r", "metadata": {"tapio.io/replay": "true"}}
    other = {**LIVE_PULL, "name": "o", "durable_name": "o", "metadata": {"tapio.io/replay": "no"}}
    report = drift.drift_report(declared, {}, {"EV": LIVE_STREAM}, {"EV": {"r": replay, "o": other}})
    assert report["unmanaged_consumers"] == {"EV": ["o"]}


def test_defaults_that_depend_on_the_consumer_kind_are_not_drift():
    push = {**LIVE_PULL, "deliver_subject": "out", "max_waiting": 0, "backoff": [5 * NS, 10 * NS], "ack_wait": 5 * NS}
    push.pop("max_waiting")
    assert drift.undeclared_fields({"backoff": [5 * NS, 10 * NS], "deliver_subject": "out", "max_deliver": 5,
                                    "filter_subject": "ev.>"}, push, "consumer") == {}
