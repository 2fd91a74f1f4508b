"""nats_stream and nats_consumer against the lab's real cluster, checked with natscli.

create -> re-run (no change) -> change an editable field (diff shows exactly that field)
-> request an immutable change (clear failure, stream and its messages untouched).
"""
from __future__ import annotations

import time

import pytest

from nats_support import (
    changed_keys,
    consumer_info,
    consumer_names,
    natscli,
    publish,
    remove_stream,
    run_module,
    stream_info,
    unique,
)

NS = 1_000_000_000


@pytest.fixture
def stream_name(nats_lab):
    name = unique("stream")
    yield name
    remove_stream(name)


def test_stream_lifecycle(stream_name):
    subject = f"{stream_name}.events.>"
    spec = {"name": stream_name, "subjects": [subject], "retention": "limits", "storage": "file", "replicas": 3,
            "discard": "old", "max_age": "7d", "max_bytes": "256MB", "duplicate_window": "2m",
            "compression": "s2", "description": "integration test stream"}

    would = run_module("nats_stream", spec, check=True)
    assert would["changed"] and would["operation"] == "create" and not would.get("failed")
    assert stream_info(stream_name) is None, "check mode must not create the stream"

    created = run_module("nats_stream", spec)
    assert created["changed"] and created["operation"] == "create", created.get("msg")
    seen = stream_info(stream_name)["config"]
    assert seen["subjects"] == [subject] and seen["num_replicas"] == 3 and seen["storage"] == "file"
    assert seen["max_age"] == 7 * 86400 * NS and seen["duplicate_window"] == 120 * NS
    assert seen["compression"] == "s2" and seen["max_bytes"] == 256 * 1024 ** 2 and seen["discard"] == "old"

    publish(f"{stream_name}.events.k8s", 5)
    again = run_module("nats_stream", {**spec, "max_age": 604800, "duplicate_window": 120})
    assert again["changed"] is False and again["operation"] == "none"

    edited = run_module("nats_stream", {**spec, "max_age": "1d"})
    assert edited["changed"] and edited["operation"] == "update" and edited["changed_fields"] == ["max_age"]
    assert changed_keys(edited["diff"]["before"], edited["diff"]["after"]) == ["max_age"]
    assert (edited["diff"]["before"]["max_age"], edited["diff"]["after"]["max_age"]) == ("7d", "1d")
    assert stream_info(stream_name)["config"]["max_age"] == 86400 * NS

    before = stream_info(stream_name)
    refused = run_module("nats_stream", {**spec, "max_age": "1d", "storage": "memory"})
    assert refused.get("failed") and not refused["changed"]
    assert "cannot change storage" in refused["msg"]
    assert "current 'file', requested 'memory'" in refused["msg"]
    after = stream_info(stream_name)
    assert after["config"] == before["config"] and after["created"] == before["created"]
    assert after["state"]["messages"] == 5

    recreated = run_module("nats_stream", {"name": stream_name, "storage": "memory", "replicas": 1,
                                           "max_bytes": "64MB", "recreate": True})
    assert not recreated.get("failed"), recreated.get("msg")
    assert recreated["operation"] == "recreate" and recreated["messages_lost"] == 5
    assert "5 stored message(s) lost" in str(recreated["warnings"])
    now = stream_info(stream_name)
    assert now["config"]["storage"] == "memory" and now["state"]["messages"] == 0
    assert now["config"]["subjects"] == [subject] and now["config"]["compression"] == "s2"

    deleted = run_module("nats_stream", {"name": stream_name, "state": "absent"})
    assert deleted["changed"] and deleted["operation"] == "delete"
    assert stream_info(stream_name) is None
    assert run_module("nats_stream", {"name": stream_name, "state": "absent"})["changed"] is False


def test_consumer_lifecycle(stream_name):
    run_module("nats_stream", {"name": stream_name, "subjects": [f"{stream_name}.>"], "replicas": 3})
    publish(f"{stream_name}.a", 4)
    spec = {"stream": stream_name, "name": "pipeline", "ack_policy": "explicit", "ack_wait": "30s",
            "max_deliver": 5, "max_ack_pending": 1000, "filter_subject": f"{stream_name}.>", "deliver_policy": "all"}

    assert run_module("nats_consumer", spec, check=True)["operation"] == "create"
    assert consumer_info(stream_name, "pipeline") is None, "check mode must not create the consumer"

    created = run_module("nats_consumer", spec)
    assert created["changed"] and created["operation"] == "create", created.get("msg")
    seen = consumer_info(stream_name, "pipeline")["config"]
    assert seen["ack_policy"] == "explicit" and seen["ack_wait"] == 30 * NS and seen["max_deliver"] == 5
    assert seen["filter_subject"] == f"{stream_name}.>" and "deliver_subject" not in seen

    assert run_module("nats_consumer", {**spec, "ack_wait": 30})["changed"] is False

    edited = run_module("nats_consumer", {**spec, "max_ack_pending": 50})
    assert edited["changed"] and edited["changed_fields"] == ["max_ack_pending"]
    assert changed_keys(edited["diff"]["before"], edited["diff"]["after"]) == ["max_ack_pending"]
    assert consumer_info(stream_name, "pipeline")["config"]["max_ack_pending"] == 50

    before = consumer_info(stream_name, "pipeline")
    refused = run_module("nats_consumer", {**spec, "max_ack_pending": 50, "deliver_policy": "new"})
    assert refused.get("failed") and "cannot change deliver_policy" in refused["msg"]
    assert "current 'all', requested 'new'" in refused["msg"]
    after = consumer_info(stream_name, "pipeline")
    assert after["config"] == before["config"] and after["created"] == before["created"]
    assert stream_info(stream_name)["state"]["messages"] == 4

    push = {"stream": stream_name, "name": "siem", "deliver_subject": f"deliver.{stream_name}",
            "filter_subjects": [f"{stream_name}.a", f"{stream_name}.b"], "backoff": ["5s", "30s"], "max_deliver": 4}
    assert run_module("nats_consumer", push)["operation"] == "create"
    assert run_module("nats_consumer", {**push, "filter_subjects": push["filter_subjects"][::-1]})["changed"] is False
    siem = consumer_info(stream_name, "siem")["config"]
    assert siem["deliver_subject"] == f"deliver.{stream_name}" and siem["backoff"] == [5 * NS, 30 * NS]

    kept = run_module("nats_consumer", {**push, "state": "absent"})
    assert kept["failed"] and "has 4 undelivered and 0 unacknowledged message(s): refusing to delete it" in kept["msg"]
    assert run_module("nats_consumer", {**push, "state": "absent", "force": True})["operation"] == "delete"
    assert consumer_info(stream_name, "siem") is None
    assert natscli("consumer", "ls", stream_name, "--names").stdout.split() == ["pipeline"]


def test_mirror_and_sources_are_idempotent_and_a_mirror_cannot_change(stream_name):
    region_a, region_b = f"{stream_name}_A", f"{stream_name}_B"
    mirror, aggregate = f"{stream_name}_MIRROR", f"{stream_name}_ALL"
    try:
        for name in (region_a, region_b):
            assert not run_module("nats_stream", {"name": name, "subjects": [f"{name}.>"]})["failed"]
        publish(f"{region_a}.x", 2)
        publish(f"{region_b}.x", 3)
        sources = [{"name": region_a}, {"name": region_b, "filter_subject": f"{region_b}.>"}]
        assert run_module("nats_stream", {"name": aggregate, "sources": sources})["operation"] == "create"
        assert run_module("nats_stream", {"name": aggregate, "sources": sources[::-1]})["changed"] is False
        assert run_module("nats_stream", {"name": mirror, "mirror": {"name": region_a}})["operation"] == "create"
        assert run_module("nats_stream", {"name": mirror, "mirror": {"name": region_a}})["changed"] is False

        refused = run_module("nats_stream", {"name": mirror, "mirror": {"name": region_b}})
        assert refused["failed"] and "cannot change mirror" in refused["msg"]
        assert stream_info(mirror)["config"]["mirror"]["name"] == region_a
        assert [s["name"] for s in stream_info(aggregate)["config"]["sources"]] == [region_a, region_b]
    finally:
        for name in (mirror, aggregate, region_a, region_b):
            remove_stream(name)


def test_jetstream_applies_a_set_in_one_call_in_order_and_stops_at_a_refusal(stream_name):
    """nats_jetstream (the nats_streams role's one call): streams, then consumers, then the
    streams marked absent; a re-run changes nothing; a refused entry names itself."""
    old = f"{stream_name}_OLD"
    assert run_module("nats_stream", {"name": old, "subjects": [f"{old}.>"], "replicas": 1})["changed"]
    streams = [{"name": stream_name, "subjects": [f"{stream_name}.>"], "replicas": 3, "max_age": "1d"},
               {"name": old, "state": "absent"}]
    consumers = [{"stream": stream_name, "name": "pipeline", "ack_wait": "30s", "max_deliver": 5}]

    would = run_module("nats_jetstream", {"streams": streams, "consumers": consumers}, check=True)
    assert would["changed"] and not would.get("failed"), would.get("msg")
    # In check mode the consumer's stream does not exist yet: it is shown as a create.
    assert would["consumers"][f"{stream_name}/pipeline"]["operation"] == "create"
    assert stream_info(stream_name) is None and stream_info(old) is not None

    done = run_module("nats_jetstream", {"streams": streams, "consumers": consumers})
    assert not done.get("failed"), done.get("msg")
    assert {name: r["operation"] for name, r in done["streams"].items()} == {stream_name: "create", old: "delete"}
    assert done["consumers"][f"{stream_name}/pipeline"]["operation"] == "create"
    assert [d["before_header"] for d in done["diff"]] == [f"stream {stream_name}", f"stream {old}",
                                                         f"consumer {stream_name}/pipeline"]
    assert stream_info(old) is None
    assert consumer_info(stream_name, "pipeline")["config"]["max_deliver"] == 5

    again = run_module("nats_jetstream", {"streams": streams, "consumers": consumers})
    assert again["changed"] is False and again["diff"] == []

    before = stream_info(stream_name)
    refused = run_module("nats_jetstream", {"streams": [{**streams[0], "storage": "memory"}], "consumers": consumers})
    assert refused.get("failed") and f"stream {stream_name}: cannot change storage" in refused["msg"]
    assert stream_info(stream_name)["config"] == before["config"]

    bad = run_module("nats_jetstream", {"streams": [streams[0], {"name": stream_name, "replicas": "three"}]})
    assert bad.get("failed") and "streams[1]" in bad["msg"] and "Nothing was changed" in bad["msg"]
    twice = run_module("nats_jetstream", {"streams": [streams[0], streams[0]]})
    assert twice.get("failed") and f"{stream_name} given more than once" in twice["msg"]


def test_a_consumer_recreate_keeps_every_option_it_was_not_asked_to_change(stream_name):
    """The data-loss bug: a recreate used to create from the task's options alone, and the
    server's zero ack policy is none. Now the live consumer is the base, and the diff shows
    what the server holds afterwards."""
    assert not run_module("nats_stream", {"name": stream_name, "subjects": [f"{stream_name}.>"], "replicas": 3})["failed"]
    publish(f"{stream_name}.a", 3)
    made = run_module("nats_consumer", {"stream": stream_name, "name": "pipeline", "max_ack_pending": 50,
                                        "ack_wait": "10s", "filter_subject": f"{stream_name}.a"})
    assert not made["failed"], made["msg"]
    natscli("consumer", "next", stream_name, "pipeline", "--no-ack", "--count", "1")
    before = consumer_info(stream_name, "pipeline")
    assert before["num_ack_pending"] == 1

    ask = {"stream": stream_name, "name": "pipeline", "deliver_policy": "new", "recreate": True}
    would = run_module("nats_consumer", ask, check=True)
    assert would["operation"] == "recreate" and would["ack_state_lost"]["num_ack_pending"] == 1
    assert consumer_info(stream_name, "pipeline")["created"] == before["created"], "check mode recreated it"

    done = run_module("nats_consumer", ask)
    assert not done["failed"] and done["operation"] == "recreate", done.get("msg")
    live = consumer_info(stream_name, "pipeline")["config"]
    assert live["ack_policy"] == "explicit" and live["max_ack_pending"] == 50 and live["ack_wait"] == 10 * NS
    assert live["deliver_policy"] == "new" and live["filter_subject"] == f"{stream_name}.a"
    shown = done["diff"]["after"]
    assert (shown["ack_policy"], shown["max_ack_pending"], shown["ack_wait"]) == ("explicit", 50, "10s")
    assert "recreated" in done["diff"]["after_header"] and "1 unacknowledged" in done["diff"]["after_header"]
    assert would["diff"]["after"] == shown


def test_consumer_options_the_server_can_change_are_changed_in_place(stream_name):
    """backoff order counts; filter_subject <-> filter_subjects; deliver_group changes in place;
    idle_heartbeat is refused (and recreate works); max_deliver may equal the backoff steps;
    an equal time in another spelling is no change; inactive_threshold can be set."""
    assert not run_module("nats_stream", {"name": stream_name, "subjects": [f"{stream_name}.>"]})["failed"]
    push = {"stream": stream_name, "name": "siem", "deliver_subject": f"push.{stream_name}", "deliver_group": "g1",
            "idle_heartbeat": "5s", "backoff": ["1s", "5s", "30s"], "max_deliver": 3,
            "filter_subject": f"{stream_name}.a", "inactive_threshold": "1h"}
    made = run_module("nats_consumer", push)
    assert not made["failed"], made["msg"]
    created = consumer_info(stream_name, "siem")["created"]

    for change, field in ((dict(backoff=["30s", "5s", "1s"]), "backoff"),
                          (dict(filter_subject=None, filter_subjects=[f"{stream_name}.a", f"{stream_name}.b"]),
                           "filter_subjects"),
                          (dict(filter_subjects=None, filter_subject=f"{stream_name}.b"), "filter_subject"),
                          (dict(deliver_group="g2"), "deliver_group")):
        push = {k: v for k, v in {**push, **change}.items() if v is not None}
        done = run_module("nats_consumer", push)
        assert not done["failed"] and done["operation"] == "update" and done["changed_fields"] == [field], done
    live = consumer_info(stream_name, "siem")
    assert live["created"] == created
    assert live["config"]["backoff"] == [30 * NS, 5 * NS, NS] and live["config"]["deliver_group"] == "g2"
    assert live["config"]["filter_subject"] == f"{stream_name}.b" and "filter_subjects" not in live["config"]
    assert live["config"]["inactive_threshold"] == 3600 * NS

    refused = run_module("nats_consumer", {**push, "idle_heartbeat": "10s"})
    assert refused["failed"] and "cannot change idle_heartbeat" in refused["msg"]
    recreated = run_module("nats_consumer", {**push, "idle_heartbeat": "10s", "recreate": True})
    assert not recreated["failed"] and recreated["operation"] == "recreate", recreated.get("msg")
    assert consumer_info(stream_name, "siem")["config"]["idle_heartbeat"] == 10 * NS

    timed = {"stream": stream_name, "name": "replay", "deliver_policy": "by_start_time",
             "opt_start_time": "2026-01-01T00:00:00Z"}
    assert run_module("nats_consumer", timed)["operation"] == "create"
    again = run_module("nats_consumer", {**timed, "opt_start_time": "2026-01-01T01:00:00+01:00"})
    assert again["changed"] is False and not again["failed"], again


def test_a_stream_recreate_recreates_its_consumers_and_restores_a_failed_create(stream_name):
    assert not run_module("nats_stream", {"name": stream_name, "subjects": [f"{stream_name}.>"]})["failed"]
    publish(f"{stream_name}.a", 3)
    for name, extra in (("pipeline", {"max_ack_pending": 7}), ("audit", {"filter_subject": f"{stream_name}.a"})):
        assert not run_module("nats_consumer", {"stream": stream_name, "name": name, **extra})["failed"]

    misfit = run_module("nats_stream", {"name": stream_name, "subjects": [f"{stream_name}.b"], "storage": "memory",
                                        "recreate": True})
    assert misfit["failed"] and "would drop consumer(s) the new configuration cannot hold: audit" in misfit["msg"]
    assert stream_info(stream_name)["state"]["messages"] == 3

    ask = {"name": stream_name, "storage": "memory", "recreate": True}
    would = run_module("nats_stream", ask, check=True)
    assert would["messages_lost"] == 3 and would["consumers_recreated"] == ["audit", "pipeline"]
    assert "3 stored message(s) lost" in would["diff"]["after_header"]
    assert stream_info(stream_name)["config"]["storage"] == "file"

    done = run_module("nats_stream", ask)
    assert not done["failed"] and done["operation"] == "recreate", done.get("msg")
    assert stream_info(stream_name)["config"]["storage"] == "memory"
    assert sorted(consumer_names(stream_name)) == ["audit", "pipeline"]
    assert consumer_info(stream_name, "pipeline")["config"]["max_ack_pending"] == 7

    # A create the server refuses after the delete (no 5 peers): the old stream and its
    # consumers come back, and the module says so.
    failed = run_module("nats_stream", {"name": stream_name, "storage": "file", "replicas": 5, "recreate": True})
    assert failed["failed"] and "the previous configuration and its 2 consumer(s) were created again" in failed["msg"]
    back = stream_info(stream_name)
    assert back["config"]["storage"] == "memory" and back["config"]["num_replicas"] == 1
    assert sorted(consumer_names(stream_name)) == ["audit", "pipeline"]


def test_a_mirror_is_promoted_by_removing_it_and_keeps_its_messages(stream_name):
    origin = f"{stream_name}_ORIGIN"
    try:
        assert not run_module("nats_stream", {"name": origin, "subjects": [f"{origin}.>"]})["failed"]
        publish(f"{origin}.x", 3)
        assert not run_module("nats_stream", {"name": stream_name, "mirror": {"name": origin}})["failed"]
        deadline = time.monotonic() + 20
        while stream_info(stream_name)["state"]["messages"] < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stream_info(stream_name)["state"]["messages"] == 3

        promoted = run_module("nats_stream", {"name": stream_name, "mirror": {}})
        assert not promoted["failed"] and promoted["operation"] == "update", promoted.get("msg")
        now = stream_info(stream_name)
        assert "mirror" not in now["config"] and now["state"]["messages"] == 3
        assert run_module("nats_stream", {"name": stream_name, "mirror": {}})["changed"] is False
    finally:
        remove_stream(origin)


def test_check_mode_reports_drift_from_the_declaration(stream_name):
    """Changes made outside a declaration (here with the single-object modules, as an operator
    would with the nats CLI) show in nats_jetstream's check-mode drift report."""
    extra = f"{stream_name}_EXTRA"
    streams = [{"name": stream_name, "subjects": [f"{stream_name}.>"], "max_age": "1d"}]
    consumers = [{"stream": stream_name, "name": "pipeline", "max_deliver": 5}]
    try:
        assert not run_module("nats_jetstream", {"streams": streams, "consumers": consumers})["failed"]
        clean = run_module("nats_jetstream", {"streams": streams, "consumers": consumers, "drift_ignore": ["*"]},
                           check=True)
        assert clean["changed"] is False and clean["drift_summary"] == [], clean["drift_summary"]

        assert not run_module("nats_stream", {"name": stream_name, "max_age": "2h", "description": "by hand"})["failed"]
        assert not run_module("nats_consumer", {"stream": stream_name, "name": "debug"})["failed"]
        assert not run_module("nats_stream", {"name": extra, "subjects": [f"{extra}.>"]})["failed"]
        report = run_module("nats_jetstream", {"streams": streams, "consumers": consumers,
                                               "drift_ignore": [n for n in stream_names() if n != extra]},
                            check=True)
        drift = report["drift"]
        assert drift["unmanaged_streams"] == [extra]
        assert drift["unmanaged_consumers"] == {stream_name: ["debug"]}
        assert drift["changed"] == {f"stream {stream_name}": {"max_age": {"declared": "1d", "live": "2h"}}}
        assert drift["undeclared"] == {f"stream {stream_name}": {"description": "by hand"}}
        assert report["streams"][stream_name]["operation"] == "update"  # what a run would put back
        assert stream_info(stream_name)["config"]["max_age"] == 7200 * NS, "check mode changed the stream"
        assert len(report["drift_summary"]) == 4
    finally:
        remove_stream(extra)


def stream_names() -> list[str]:
    return natscli("stream", "ls", "--names").stdout.split()
