"""Every field of the lab server's stream and consumer configuration, walked against the real
server (nats-server 2.15.1, 3 nodes).

For each field of module_utils/tapio_jetstream_fields.py: create an object with the field set
through the module, read it back with the test's own nats-py client, then ask the module to
change it. Where the table says the server allows the change, the module updates it in place
and the server holds the new value; where it says the server refuses, the module refuses
naming the option, and the same change sent by the test straight to the server's update API
is refused (or, for a creation-only field, not taken) by the server too. The keys of every
configuration the server returned must all be fields of the table, so a field the server has
and the table lacks fails here.

The field tables in docs/modules.md are rendered from these results: set TAPIO_WRITE_DOCS=1 to
rewrite them; otherwise the test fails when they differ.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Any, Optional

import nats
import pytest

from module_utils_loader import load_module_utils
from nats_support import AUTH, REPO_ROOT, run_module, unique

load_module_utils("tapio_nats_config")
F = load_module_utils("tapio_jetstream_fields")
NS = 1_000_000_000
DOCS = REPO_ROOT / "docs" / "modules.md"

# option -> [(context options, value at creation, requested change)], values in module form;
# "{n}" in a string is the object's name.
STREAM_SAMPLES: dict[str, list[tuple[dict[str, Any], Any, Any]]] = {
    "description": [({}, "one", "two")],
    "subjects": [({}, ["{n}.a"], ["{n}.a", "{n}.b"])],
    "retention": [({}, "limits", "interest"), ({}, "limits", "workqueue")],
    "max_consumers": [({}, 10, 20)],
    "max_msgs": [({}, 100, 200)],
    "max_bytes": [({}, "1MB", "2MB")],
    "max_age": [({}, "1h", "2h")],
    "max_msgs_per_subject": [({}, 5, 6)],
    "max_msg_size": [({}, 1024, "8MB")],  # above the server's max_payload: the server accepts it
    "discard": [({}, "old", "new")],
    "storage": [({}, "file", "memory")],
    "replicas": [({}, 1, 3)],
    "no_ack": [({}, False, True)],
    "duplicate_window": [({}, "1m", "30s")],
    "placement": [({}, {}, {"cluster": "tapio-nats"})],
    "mirror": [({"_mirror": True}, {"name": "{n}_O1"}, {"name": "{n}_O2"}),
               ({"_mirror": True}, {"name": "{n}_O1"}, {})],
    "sources": [({"_origins": True}, [{"name": "{n}_O1"}], [{"name": "{n}_O1"}, {"name": "{n}_O2"}])],
    "compression": [({}, "none", "s2")],
    "first_seq": [({}, 100, 200)],
    "subject_transform": [({}, {"src": "{n}.a", "dest": "{n}.c"}, {"src": "{n}.a", "dest": "{n}.d"})],
    "republish": [({}, {"src": "{n}.>", "dest": "repub.{n}.>"}, {"src": "{n}.>", "dest": "repub2.{n}.>"})],
    "allow_direct": [({}, False, True)],
    "discard_new_per_subject": [({"discard": "new", "max_msgs_per_subject": 5}, False, True)],
    "sealed": [({}, False, True), ({"_sealed": True}, True, False)],
    "deny_delete": [({}, False, True), ({}, True, False)],
    "deny_purge": [({}, False, True), ({}, True, False)],
    "allow_rollup_hdrs": [({}, False, True)],
    "consumer_limits": [({}, {"max_ack_pending": 100}, {"max_ack_pending": 200})],
    "allow_msg_ttl": [({}, False, True), ({}, True, False)],
    "subject_delete_marker_ttl": [({"allow_msg_ttl": True}, "1h", "2h")],
    "allow_msg_counter": [({}, True, False)],
    "allow_atomic": [({}, False, True)],
    "allow_msg_schedules": [({}, False, True), ({}, True, False)],
    "persist_mode": [({}, "async", "default")],
    "allow_batched": [({}, False, True)],
    "metadata": [({}, {"team": "a"}, {"team": "b"})],
}

CONSUMER_SAMPLES: dict[str, list[tuple[dict[str, Any], Any, Any]]] = {
    "description": [({}, "one", "two")],
    "deliver_policy": [({}, "all", "new")],
    "opt_start_seq": [({"deliver_policy": "by_start_sequence"}, 1, 2)],
    "opt_start_time": [({"deliver_policy": "by_start_time"}, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00+00:00")],
    "ack_policy": [({}, "explicit", "all")],
    "ack_wait": [({}, "10s", "20s")],
    "max_deliver": [({}, 5, 6)],
    "backoff": [({"max_deliver": 5}, ["1s", "2s"], ["2s", "1s"])],
    "filter_subject": [({}, "{n}.a", "{n}.b")],
    "filter_subjects": [({}, ["{n}.a", "{n}.b"], ["{n}.a"])],
    "replay_policy": [({}, "instant", "original")],
    "rate_limit_bps": [({"deliver_subject": "push.{n}"}, 1000, 2000)],
    "sample_freq": [({}, "10%", "20%")],
    "max_waiting": [({}, 10, 20)],
    "max_ack_pending": [({}, 10, 20)],
    "flow_control": [({"deliver_subject": "push.{n}", "idle_heartbeat": "5s"}, True, False)],
    "headers_only": [({}, False, True)],
    "max_batch": [({}, 10, 20)],
    "max_expires": [({}, "10s", "20s")],
    "max_bytes": [({}, 1024, 2048)],
    "deliver_subject": [({}, "push.{n}.a", "push.{n}.b"), ({}, "push.{n}.a", "")],
    "deliver_group": [({"deliver_subject": "push.{n}"}, "g1", "g2")],
    "idle_heartbeat": [({"deliver_subject": "push.{n}"}, "5s", "10s")],
    "inactive_threshold": [({}, "1h", "2h")],
    "replicas": [({}, 0, 1)],
    "mem_storage": [({}, True, False)],
    "metadata": [({}, {"team": "a"}, {"team": "b"})],
    "pause_until": [({}, "2030-01-01T00:00:00Z", "2031-01-01T00:00:00Z")],
    "priority_groups": [({"priority_policy": "overflow"}, ["a"], ["a", "b"])],
    "priority_policy": [({"priority_groups": ["a"]}, "overflow", "pinned_client")],
    "priority_timeout": [({"priority_groups": ["a"], "priority_policy": "pinned_client"}, "1m", "2m")],
}


def fill(value: Any, name: str) -> Any:
    if isinstance(value, str):
        return value.replace("{n}", name)
    if isinstance(value, list):
        return [fill(v, name) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, name) for k, v in value.items()}
    return value


async def _raw(subject: str, payload: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    nc = await nats.connect(servers=AUTH["servers"], user=AUTH["user"], password=AUTH["password"],
                            name="fields-walk-test", allow_reconnect=False)
    try:
        reply = await nc.request(subject, json.dumps(payload).encode() if payload is not None else b"", timeout=10)
        return json.loads(reply.data or b"{}")
    finally:
        await nc.close()


def raw(subject: str, payload: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The server's answer to one JetStream API request, from the test's own client."""
    return asyncio.run(_raw(subject, payload))


def delete_stream(name: str) -> None:
    raw(f"$JS.API.STREAM.DELETE.{name}")


class Walk:
    """What the walk saw: the config keys the server returned and one row per sample."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.rows: list[tuple[str, str, str]] = []

    def config(self, info: dict[str, Any]) -> dict[str, Any]:
        assert "error" not in info, info
        self.seen.update(info["config"])
        return info["config"]


def expect_refused(table: dict[str, Any], option: str, before: Any, after: Any, live: dict[str, Any]) -> bool:
    one = next(f for f in table.values() if f.option == option and f.settable)
    wanted = F.to_wire(one, after, option)
    return bool(F.immutable_changes({one.wire: wanted}, live, table, (2, 15, 1)))


def stream_sample(walk: Walk, option: str, context: dict[str, Any], before: Any, after: Any) -> str:
    name = unique("field").upper()
    one = next(f for f in F.STREAM_FIELDS if f.option == option and f.settable)
    made = [name]
    try:
        spec: dict[str, Any] = {"name": name, "storage": "file", "replicas": 1}
        if context.get("_mirror") or context.get("_origins"):
            for origin in (f"{name}_O1", f"{name}_O2"):
                assert not run_module("nats_stream", {"name": origin, "subjects": [f"{origin}.>"]})["failed"]
                made.append(origin)
        if not context.get("_mirror"):
            spec["subjects"] = [f"{name}.>"]
        if context.get("_mirror") and option != "mirror":
            spec["mirror"] = {"name": f"{name}_O1"}
        spec.update({k: fill(v, name) for k, v in context.items() if not k.startswith("_")})
        if option == "sealed" and before:
            spec_created = run_module("nats_stream", spec)
            assert not spec_created["failed"], spec_created["msg"]
            assert not run_module("nats_stream", {**spec, "sealed": True})["failed"]
        else:
            spec[option] = fill(before, name)
            created = run_module("nats_stream", spec)
            assert not created["failed"], f"{option}={before}: {created['msg']}"
        live = walk.config(raw(f"$JS.API.STREAM.INFO.{name}"))
        if option != "sealed" or not before:
            assert F.same(one, F.to_wire(one, fill(before, name), option), live.get(one.wire)), (option, live)
        refused = expect_refused(F.STREAM_BY_WIRE, option, before, fill(after, name), live)
        changed = run_module("nats_stream", {**spec, option: fill(after, name)})
        wanted = F.to_wire(one, fill(after, name), option)
        merged = F.merged_config(live, {one.wire: wanted}, F.STREAM_BY_WIRE)
        # The same change sent straight to the server: only when the module refused it (a
        # change the module made is already the server's answer).
        server = raw(f"$JS.API.STREAM.UPDATE.{name}", merged) if refused else {}
        now = walk.config(raw(f"$JS.API.STREAM.INFO.{name}"))
        if refused:
            assert changed["failed"] and f"cannot change {option}" in changed["msg"], (option, changed.get("msg"))
            if one.update == F.CREATE_ONLY:
                # The server records the new first_seq in the configuration but never applies it.
                state = raw(f"$JS.API.STREAM.INFO.{name}")["state"]
                assert "error" in server or state["first_seq"] == F.to_wire(one, before, option), state
                return "refused by the module; the server records it but does not apply it"
            assert "error" in server, f"{option}: the module refuses {before!r} -> {after!r} but the server took it"
            return "refused by the module and the server"
        assert not changed["failed"], f"{option} {before!r} -> {after!r}: {changed['msg']}"
        assert changed["operation"] == "update" and changed["changed_fields"] == [option], changed
        assert F.same(one, wanted, now.get(one.wire)), (option, now.get(one.wire))
        return "updated in place"
    finally:
        for stream in reversed(made):
            delete_stream(stream)


def consumer_sample(walk: Walk, stream: str, option: str, context: dict[str, Any], before: Any, after: Any) -> str:
    name = unique("c")
    one = next(f for f in F.CONSUMER_FIELDS if f.option == option and f.settable)
    spec = {"stream": stream, "name": name, **{k: fill(v, stream) for k, v in context.items()},
            option: fill(before, stream)}
    try:
        created = run_module("nats_consumer", spec)
        assert not created["failed"], f"{option}={before}: {created['msg']}"
        live = walk.config(raw(f"$JS.API.CONSUMER.INFO.{stream}.{name}"))
        assert F.same(one, F.to_wire(one, fill(before, stream), option), live.get(one.wire)), (option, live)
        refused = expect_refused(F.CONSUMER_BY_WIRE, option, before, fill(after, stream), live)
        changed = run_module("nats_consumer", {**spec, option: fill(after, stream)})
        wanted = F.to_wire(one, fill(after, stream), option)
        merged = F.merged_config(live, {one.wire: wanted}, F.CONSUMER_BY_WIRE)
        server = raw(f"$JS.API.CONSUMER.CREATE.{stream}.{name}",
                     {"stream_name": stream, "config": merged, "action": "update"}) if refused else {}
        now = walk.config(raw(f"$JS.API.CONSUMER.INFO.{stream}.{name}"))
        if refused:
            assert changed["failed"] and f"cannot change {option}" in changed["msg"], (option, changed.get("msg"))
            assert "error" in server, f"{option}: the module refuses {before!r} -> {after!r} but the server took it"
            return "refused by the module and the server"
        assert not changed["failed"], f"{option} {before!r} -> {after!r}: {changed['msg']}"
        assert changed["operation"] == "update" and changed["changed_fields"] == [option], changed
        assert F.same(one, wanted, now.get(one.wire)), (option, now.get(one.wire))
        return "updated in place"
    finally:
        raw(f"$JS.API.CONSUMER.DELETE.{stream}.{name}")


def table_rows(fields: tuple[Any, ...], results: dict[str, list[str]], samples: dict[str, Any]) -> list[str]:
    rows = ["| option | wire field | since | server update rule | walked on the lab's server |", "|---|---|---|---|---|"]
    for one in fields:
        since = ".".join(map(str, one.since))
        if not one.settable:
            rows.append(f"| - | `{one.wire}` | {since} | {one.update} | not an option: {one.reason} |")
            continue
        shown = "; ".join(
            f"`{json.dumps(b)}` -> `{json.dumps(a)}`: {r}" for (_, b, a), r in zip(samples[one.option],
                                                                              results[one.option]))
        rows.append(f"| `{one.option}` | `{one.wire}` | {since} | {one.update} | {shown} |")
    return rows


def check_docs(kind: str, rows: list[str]) -> None:
    start, end = f"<!-- {kind} fields: start -->", f"<!-- {kind} fields: end -->"
    text = DOCS.read_text()
    table = "\n".join(rows)
    block = re.compile(re.escape(start) + r"\n(?:.*?\n)?" + re.escape(end), re.S)
    assert block.search(text), f"docs/modules.md has no {start} ... {end} block"
    new = block.sub(lambda _: f"{start}\n{table}\n{end}", text)
    if os.environ.get("TAPIO_WRITE_DOCS"):
        DOCS.write_text(new)
        return
    assert new == text, f"docs/modules.md's {kind} field table differs from this walk: rerun with TAPIO_WRITE_DOCS=1"


def test_every_stream_field_is_settable_or_refused_as_the_server_refuses_it(nats_lab):
    walk = Walk()
    settable = {f.option for f in F.STREAM_FIELDS if f.settable}
    assert set(STREAM_SAMPLES) == settable, f"fields without a sample: {settable - set(STREAM_SAMPLES)}"
    results = {option: [stream_sample(walk, option, *sample) for sample in samples]
               for option, samples in STREAM_SAMPLES.items()}
    unknown = walk.seen - set(F.STREAM_BY_WIRE)
    assert not unknown, f"the server returned stream fields the table lacks: {sorted(unknown)}"
    never = set(F.STREAM_BY_WIRE) - walk.seen
    assert not never, f"the walk never saw these fields in a server answer: {sorted(never)}"
    check_docs("stream", table_rows(F.STREAM_FIELDS, results, STREAM_SAMPLES))


def test_every_consumer_field_is_settable_or_refused_as_the_server_refuses_it(nats_lab):
    walk = Walk()
    stream = unique("cfields").upper()
    assert not run_module("nats_stream", {"name": stream, "subjects": [f"{stream}.>"], "replicas": 1})["failed"]
    try:
        settable = {f.option for f in F.CONSUMER_FIELDS if f.settable}
        assert set(CONSUMER_SAMPLES) == settable, f"fields without a sample: {settable - set(CONSUMER_SAMPLES)}"
        results = {option: [consumer_sample(walk, stream, option, *sample) for sample in samples]
                   for option, samples in CONSUMER_SAMPLES.items()}
    finally:
        delete_stream(stream)
    unknown = walk.seen - set(F.CONSUMER_BY_WIRE)
    assert not unknown, f"the server returned consumer fields the table lacks: {sorted(unknown)}"
    never = set(F.CONSUMER_BY_WIRE) - walk.seen - {f.wire for f in F.CONSUMER_FIELDS if f.update == F.INTERNAL}
    assert not never, f"the walk never saw these fields in a server answer: {sorted(never)}"
    check_docs("consumer", table_rows(F.CONSUMER_FIELDS, results, CONSUMER_SAMPLES))


@pytest.mark.parametrize("option", ["direct", "sourcing"])
def test_internal_consumer_fields_are_refused_with_the_reason(nats_lab, option):
    one = F.CONSUMER_BY_WIRE[option]
    assert not one.settable and one.reason
    result = run_module("nats_consumer", {"stream": "X", "name": "c", option: True})
    assert result["failed"] and "Unsupported parameters" in result["msg"] and option in result["msg"]
