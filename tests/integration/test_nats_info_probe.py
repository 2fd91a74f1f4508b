"""nats_info and nats_probe against the lab's real cluster, checked with natscli."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import time

import pytest

from nats_support import (
    AUTH,
    SECRET,
    consumer_info,
    consumer_names,
    natscli,
    natscli_path,
    publish,
    remove_stream,
    run_adhoc,
    run_module,
    stream_info,
    unique,
)


@pytest.fixture(scope="module")
def stream(nats_lab):
    name = unique("probe")
    created = run_module("nats_stream", {"name": name, "subjects": [f"{name}.>"], "replicas": 3})
    assert not created["failed"], created.get("msg")
    yield name
    remove_stream(name)


def consumer(stream_name: str, name: str, **options) -> None:
    result = run_module("nats_consumer", {"stream": stream_name, "name": name, "ack_policy": "explicit", **options})
    assert not result["failed"], result.get("msg")


def test_info_reports_cluster_stream_and_consumer_state(nats_lab, stream):
    consumer(stream, "reader", filter_subject=f"{stream}.info.>")
    publish(f"{stream}.info.k8s", 4)
    info = run_module("nats_info", {"streams": [stream], "monitor_urls": nats_lab.monitor_urls})
    assert not info["failed"] and info["changed"] is False
    assert info["server"]["jetstream"] is True
    assert info["cluster"]["leader"] in {"nats-0", "nats-1", "nats-2"} and info["cluster"]["cluster_size"] == 3
    assert all(h["http_status"] == 200 for h in info["cluster"]["health"].values())

    truth = stream_info(stream)
    mine = info["streams"][stream]
    assert mine["state"]["messages"] == truth["state"]["messages"]
    assert mine["state"]["last_seq"] == truth["state"]["last_seq"]
    assert mine["cluster"]["leader"] == truth["cluster"]["leader"]
    assert len(mine["cluster"]["replicas"]) == 2

    reader = mine["consumers"]["reader"]
    truth_reader = consumer_info(stream, "reader")
    assert reader["num_pending"] == truth_reader["num_pending"] == 4
    assert reader["num_ack_pending"] == 0 and reader["ack_floor"]["stream_seq"] == 0


def test_info_through_ansible_in_check_mode_reports_missing_stream(nats_lab, stream):
    missing = unique("missing")
    info = run_adhoc("nats_info", {"streams": [stream, missing], "consumers": False}, check=True)
    assert not info["failed"] and info["changed"] is False
    assert info["missing_streams"] == [missing]
    assert info["healthy"] is False and f"stream {missing} does not exist" in info["problems"]
    assert stream in info["streams"]


def test_canary_is_stored_and_acknowledged_by_the_durable_consumer(stream):
    consumer(stream, "e2e", filter_subject=f"{stream}.canary.>", deliver_policy="new")
    durables = consumer_names(stream)
    acker = subprocess.Popen(  # an independent client plays the pipeline: fetch and ack 3 events
        [str(natscli_path()), "--server", AUTH["servers"][0], "--user", AUTH["user"], "--password", SECRET,
         "--timeout", "30s", "consumer", "next", stream, "e2e", "--count", "3", "--ack"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        result = run_module("nats_probe", {"stream": stream, "subjects": [f"{stream}.canary.k8s", f"{stream}.canary.ebpf"],
                                           "count": 3, "consumer": "e2e", "wait_timeout": 30, "wait_sleep": 0.2,
                                           "replay_canaries": True})
    finally:
        acker.terminate()  # it has acked (or the assertions below say why not); do not wait for --wait
        acker.wait(timeout=10)
    assert not result["failed"], result.get("msg")
    assert result["stored"] is True and result["consumer_acked"] is True
    events = result["events"]
    assert [e["subject"] for e in events] == [f"{stream}.canary.k8s", f"{stream}.canary.ebpf", f"{stream}.canary.k8s"]
    assert all(re.fullmatch(r"[0-9a-f]{32}", e["id"]) for e in events)
    assert [e["seq"] for e in events] == list(range(result["first_seq"], result["last_seq"] + 1))
    assert consumer_info(stream, "e2e")["ack_floor"]["stream_seq"] >= result["last_seq"]
    # Read back after the acks, in the same call, by a consumer of the probe's own (gone after).
    replay = result["replay"]
    assert replay["missing_ids"] == [] and replay["first_seq"] == result["first_seq"]
    assert [e["id"] for e in replay["events"]][:3] == [e["id"] for e in events]
    assert consumer_names(stream) == durables

    stored = json.loads(natscli("stream", "get", stream, str(events[1]["seq"]), "--json").stdout)
    body = json.loads(base64.b64decode(stored["data"]))
    assert body["id"] == events[1]["id"] and body["source"] == "tapio-probe"
    assert {"timestamp", "type", "severity", "message", "attributes"} <= set(body)
    # Marked for Tapio to skip: a header, besides the canary attribute.
    headers = base64.b64decode(stored["hdrs"]).decode()
    assert f"Tapio-Canary: {result['run_id']}" in headers and body["attributes"]["canary"] == "true"


def test_canary_fails_when_the_consumer_does_not_acknowledge(stream):
    consumer(stream, "idle", filter_subject=f"{stream}.idle.>", deliver_policy="new")
    started = time.monotonic()
    result = run_module("nats_probe", {"stream": stream, "subjects": [f"{stream}.idle.x"], "count": 2,
                                       "consumer": "idle", "wait_timeout": 2, "wait_sleep": 0.2})
    assert result["failed"] and "did not acknowledge the canaries" in result["msg"]
    assert result["stored"] is True and len(result["events"]) == 2 and result["consumer_acked"] is False
    assert time.monotonic() - started < 20
    assert consumer_info(stream, "idle")["num_pending"] == 2


def test_replay_reads_back_without_disturbing_durable_consumers(stream):
    canary = run_module("nats_probe", {"stream": stream, "subjects": [f"{stream}.replay.x"], "count": 3})
    assert not canary["failed"], canary.get("msg")
    durables = consumer_names(stream)
    before = {name: consumer_info(stream, name) for name in durables}

    ids = [e["id"] for e in canary["events"]]
    by_seq = run_module("nats_probe", {"stream": stream, "mode": "replay", "replay_start_seq": canary["first_seq"],
                                       "expect_ids": ids})
    assert not by_seq["failed"], by_seq.get("msg")
    assert by_seq["changed"] is False and by_seq["missing_ids"] == []
    assert [e["id"] for e in by_seq["events"]][:3] == ids and by_seq["first_seq"] == canary["first_seq"]

    since = canary["events"][0]
    by_time = run_module("nats_probe", {"stream": stream, "mode": "replay", "replay_subject": f"{stream}.replay.x",
                                        "replay_start_time": "2020-01-01T00:00:00Z", "expect_ids": ids})
    assert not by_time["failed"] and [e["id"] for e in by_time["events"]] == ids and since["seq"] == by_time["first_seq"]

    assert consumer_names(stream) == durables, "the replay's ephemeral consumer must be gone"

    # Canaries read back in the same call, capped below their number: the missing ids are named.
    capped = run_module("nats_probe", {"stream": stream, "subjects": [f"{stream}.replay.y"], "count": 3,
                                       "replay_canaries": True, "replay_max": 1})
    assert capped["failed"] and "canaries acknowledged, but the replay from" in capped["msg"]
    assert len(capped["replay"]["missing_ids"]) == 2 and capped["stored"] is True
    for name, info in before.items():
        after = consumer_info(stream, name)
        for key in ("delivered", "ack_floor", "num_ack_pending", "num_redelivered"):
            assert after[key] == info[key], (name, key)


def test_throughput_mode_reports_rate_and_latency(stream):
    messages_before = stream_info(stream)["state"]["messages"]
    fast = run_module("nats_probe", {"stream": stream, "subjects": [f"{stream}.bench.a", f"{stream}.bench.b"],
                                     "mode": "throughput", "count": 3000, "window": 500})
    assert not fast["failed"], fast.get("msg")
    report = fast["throughput"]
    assert report["method"] == "windowed" and report["acked"] == 3000 and report["errors"] == 0
    assert report["burst_writes"] is True and report["ack_shortcut"] is True
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["p99"]
    assert report["events_per_s"] > 0 and report["avg_payload_bytes"] > 300

    slow = run_module("nats_probe", {"stream": stream, "subjects": [f"{stream}.bench.c"], "mode": "throughput",
                                     "count": 100, "publisher": "one_at_a_time"})
    assert not slow["failed"] and slow["throughput"]["acked"] == 100
    assert stream_info(stream)["state"]["messages"] == messages_before + 3100
