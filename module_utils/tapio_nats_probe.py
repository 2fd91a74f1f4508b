# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Canary events and publishers for nats_probe (and benchmarks/nats_throughput.py).

Events follow Tapio's UnifiedEvent JSON (see docs/modules.md): 32-hex id, RFC 3339
timestamp, type, source, severity, message, attributes and context blocks.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from ansible.module_utils.tapio_nats_config import percentile

EVENT_TYPES = ("system", "kubernetes", "service", "log", "network", "process", "memory", "cpu", "disk", "metric")
SEVERITIES = ("debug", "info", "low", "medium", "warning", "high", "error", "critical")


def rfc3339_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def canary_event(subject: str, index: int, run_id: str, source: str = "tapio-probe",
                 event_type: str = "system", severity: str = "info") -> dict[str, Any]:
    """One realistic UnifiedEvent, marked as a canary of run *run_id*."""
    tokens = subject.split(".")
    namespace = tokens[3] if len(tokens) > 4 and tokens[2] == "k8s" else "tapio"
    return {
        "id": secrets.token_hex(16),
        "timestamp": rfc3339_now(),
        "type": event_type,
        "source": source,
        "severity": severity,
        "message": f"tapio canary event {index} of probe run {run_id}",
        "attributes": {"canary": "true", "probe_run": run_id, "probe_index": str(index), "subject": subject},
        "entity": {"type": "probe", "name": "nats-probe", "namespace": namespace, "uid": run_id,
                   "labels": {"app.kubernetes.io/name": "tapio", "app.kubernetes.io/component": "probe"}},
        "k8s_context": {"kind": "Job", "name": "nats-probe", "namespace": namespace, "node_name": "control-node",
                        "workload_name": "nats-probe"},
        "trace_context": {"trace_id": secrets.token_hex(16), "span_id": secrets.token_hex(8)},
        "correlation": {"group": run_id},
    }


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_s)
    return {
        "p50": round(percentile(ordered, 0.50) * 1000, 3),
        "p95": round(percentile(ordered, 0.95) * 1000, 3),
        "p99": round(percentile(ordered, 0.99) * 1000, 3),
        "max": round((ordered[-1] if ordered else 0.0) * 1000, 3),
    }


def prepare_batch(subjects: list[str], count: int, run_id: str, source: str) -> list[tuple[str, bytes, str]]:
    """(subject, payload, msg id) for *count* events, generated before any timing starts."""
    batch = []
    for index in range(count):
        subject = subjects[index % len(subjects)]
        event = canary_event(subject, index, run_id, source=source)
        batch.append((subject, encode(event), event["id"]))
    return batch


def publish_frame(subject: str, reply: str, payload: bytes, msg_id: Optional[str]) -> bytes:
    """The NATS protocol frame for one publish (HPUB with a Nats-Msg-Id header, or PUB)."""
    if msg_id is None:
        return b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply.encode(), len(payload), payload)
    header = b"NATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n" % msg_id.encode()
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (subject.encode(), reply.encode(), len(header),
                                               len(header) + len(payload), header, payload)


class BurstWriter:
    """Sends a burst of publishes as one buffer write.

    nats-py's ``publish()`` builds and queues every message separately (header checks,
    regexes, a flush request per call); at tens of thousands of events per second that
    per-message Python work is what limits a single client on a busy 2-core machine. When
    the client exposes its internal command queue (nats-py 2.x: ``_send_command`` and
    ``_flush_pending``) a burst is joined into one write; otherwise each message goes
    through ``publish()``.
    """

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.send = getattr(nc, "_send_command", None)
        self.flush = getattr(nc, "_flush_pending", None)
        self.fast = callable(self.send) and callable(self.flush)

    async def write(self, messages: list[tuple[str, str, bytes, Optional[str]]]) -> None:
        if self.fast:
            await self.send(b"".join(publish_frame(*message) for message in messages))
            await self.flush()
            return
        for subject, reply, payload, msg_id in messages:
            await self.nc.publish(subject, payload, reply=reply, headers={"Nats-Msg-Id": msg_id} if msg_id else None)


class AckShortcut:
    """Hands the acks of one subscription straight to a function.

    nats-py turns every incoming message into a ``Msg``, queues it and runs the callback
    from a task: per ack that is most of the client's remaining CPU. For the probe's own
    ack inbox, when the client has the internal ``_process_msg`` hook (nats-py 2.x), the
    subject and payload go straight to *handler*; every other subscription is untouched,
    and ``restore()`` puts the client back. Without the hook the normal callback is used.
    """

    @staticmethod
    def nothing() -> None:
        return None

    @staticmethod
    def install(nc: Any, sub: Any, handler: Callable[[str, bytes], None]) -> Callable[[], None]:
        original = getattr(nc, "_process_msg", None)
        sid = getattr(sub, "_id", None)
        if original is None or sid is None:
            return AckShortcut.nothing

        async def process(sid_in: int, subject: bytes, reply: bytes, data: bytes, headers: Any) -> None:
            if sid_in == sid:
                handler(subject.decode() if isinstance(subject, bytes) else subject, data)
                return
            await original(sid_in, subject, reply, data, headers)

        nc._process_msg = process

        def restore() -> None:
            nc.__dict__.pop("_process_msg", None)

        return restore


class WindowAcks:
    """The acks of one windowed run: each message's send time, the latencies, the counters,
    and the two events the publisher waits on (room in the window, every message acked).

    Acks arrive on ``<inbox>.<index>``, so the index after the inbox prefix finds the send time.
    """

    def __init__(self, prefix: str, total: int, window: int) -> None:
        self.sent = [0.0] * total
        self.latencies: list[float] = []
        self.state: dict[str, Any] = {"acked": 0, "errors": 0, "duplicates": 0, "in_flight": 0, "first_error": None}
        self.total = total
        self.low_water = window // 2
        self.offset = len(prefix) + 1
        self.room = asyncio.Event()
        self.done = asyncio.Event()

    def count(self, subject: str, data: bytes) -> None:
        """One ack (called for every message: kept to plain lookups)."""
        now = time.perf_counter()
        state = self.state
        self.latencies.append(now - self.sent[int(subject[self.offset:])])
        if b'"error"' in data:
            state["errors"] += 1
            state["first_error"] = state["first_error"] or data.decode(errors="replace")
        elif b'"duplicate":true' in data:
            state["duplicates"] += 1
        state["acked"] += 1
        state["in_flight"] -= 1
        if state["in_flight"] <= self.low_water:
            self.room.set()
        if state["acked"] == self.total:
            self.done.set()

    async def on_ack(self, msg: Any) -> None:
        self.count(msg.subject, msg.data)

    async def wait_for_room(self, timeout: float) -> None:
        """Once the window is more than half full, until at most half of it is in flight."""
        if self.state["in_flight"] <= self.low_water:
            return
        self.room.clear()
        while self.state["in_flight"] > self.low_water:
            await asyncio.wait_for(self.room.wait(), timeout)
            self.room.clear()

    def sending(self, burst: range) -> None:
        """The messages of *burst* leave now: their send time, and the window they take."""
        now = time.perf_counter()
        for position in burst:
            self.sent[position] = now
        self.state["in_flight"] += len(burst)


async def send_windowed(writer: BurstWriter, batch: list[tuple[str, bytes, str]], window: int, timeout: float,
                        msg_id: bool, prefix: str, acks: WindowAcks) -> None:
    """Send *batch* in bursts that fill the free part of the window, then wait for every ack;
    asyncio.TimeoutError when an ack takes longer than *timeout*."""
    index = 0
    while index < len(batch):
        await acks.wait_for_room(timeout)
        burst = range(index, min(index + window - acks.state["in_flight"], len(batch)))
        acks.sending(burst)
        await writer.write([(batch[i][0], f"{prefix}.{i}", batch[i][1], batch[i][2] if msg_id else None)
                            for i in burst])
        index = burst.stop
    if batch:
        await asyncio.wait_for(acks.done.wait(), timeout)


async def publish_windowed(nc: Any, batch: list[tuple[str, bytes, str]], window: int, timeout: float,
                           msg_id: bool = True) -> dict[str, Any]:
    """Publish with up to *window* un-acked messages in flight; acks are counted as they arrive.

    Each message gets a reply subject ``<inbox>.<index>`` so one wildcard subscription
    matches acks to send times without a future per message. When the window is full the
    publisher waits until half of it has been acknowledged and then sends the free part of
    the window as one burst: refilling one message per ack would mean one tiny write per
    ack, which costs the servers (and the client) far more.
    """
    prefix = nc.new_inbox()
    acks = WindowAcks(prefix, len(batch), window)
    writer = BurstWriter(nc)
    too_big = [i for i, (_, payload, _) in enumerate(batch) if len(payload) > nc.max_payload]
    if too_big:
        raise ValueError(f"{len(too_big)} event(s) exceed the server's max_payload of {nc.max_payload} bytes")
    sub = await nc.subscribe(prefix + ".*", cb=acks.on_ack, pending_msgs_limit=max(window * 4, 65536))
    restore = AckShortcut.install(nc, sub, acks.count)
    started = time.perf_counter()
    try:
        await send_windowed(writer, batch, window, timeout, msg_id, prefix, acks)
    except asyncio.TimeoutError:
        acks.state["timed_out"] = True
    finally:
        elapsed = time.perf_counter() - started
        restore()
        await sub.unsubscribe()
    result = throughput_result("windowed", batch, acks.state, acks.latencies, elapsed, window)
    result["burst_writes"] = writer.fast
    result["ack_shortcut"] = restore is not AckShortcut.nothing
    return result


async def publish_one_at_a_time(js: Any, batch: list[tuple[str, bytes, str]], timeout: float,
                                msg_id: bool = True) -> dict[str, Any]:
    """The plan's perf-test method: ``await js.publish()`` for each event in turn."""
    latencies: list[float] = []
    state = {"acked": 0, "errors": 0, "duplicates": 0, "first_error": None}
    started = time.perf_counter()
    for subject, payload, event_id in batch:
        before = time.perf_counter()
        try:
            ack = await js.publish(subject, payload, timeout=timeout,
                                   headers={"Nats-Msg-Id": event_id} if msg_id else None)
        except Exception as error:  # nats-py raises APIError/TimeoutError subclasses
            state["errors"] += 1
            state["first_error"] = state["first_error"] or str(error)
            continue
        latencies.append(time.perf_counter() - before)
        state["acked"] += 1
        state["duplicates"] += int(bool(ack.duplicate))
    return throughput_result("one_at_a_time", batch, state, latencies, time.perf_counter() - started, 1)


def throughput_result(method: str, batch: list[tuple[str, bytes, str]], state: dict[str, Any],
                      latencies: list[float], elapsed: float, window: int) -> dict[str, Any]:
    size = sum(len(payload) for _, payload, _ in batch)
    return {
        "method": method,
        "window": window,
        "messages": len(batch),
        "acked": state["acked"],
        "errors": state["errors"],
        "first_error": state["first_error"],
        "duplicates": state["duplicates"],
        "timed_out": bool(state.get("timed_out")),
        "elapsed_s": round(elapsed, 4),
        "events_per_s": round(state["acked"] / elapsed, 1) if elapsed else 0.0,
        "mb_per_s": round(size / elapsed / 1e6, 3) if elapsed else 0.0,
        "avg_payload_bytes": round(size / len(batch)) if batch else 0,
        "latency_ms": latency_summary(latencies),
    }


def ack_floor_passed(consumer_info: Optional[dict[str, Any]], last_seq: int) -> bool:
    """True once the consumer's ack floor has reached the stream sequence *last_seq*."""
    if not consumer_info:
        return False
    return int((consumer_info.get("ack_floor") or {}).get("stream_seq", 0)) >= last_seq
