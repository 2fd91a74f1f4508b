"""The ledger: what every source emitted and what the pipeline received.

Events are keyed by (source, sequence): each source has one sequence counter shared by all
its pods, so the emitted set of a source is exactly 1..emitted and receive counts fit in a
bytearray (one byte per event: hours of 2,000 events/s stay in a few tens of MB).

- lost: emitted and never received. Only final after a settle (see `summary(watermarks)`):
  events still in flight (awaiting a JetStream ack, in the stream, in a fetch) are counted
  as `in_flight` above the watermark, not as lost.
- dropped_direct: a direct-mode send while no pipeline pod was Ready (the old gRPC client
  logged the error and dropped the event). Definitely lost.
- dropped_backpressure: a NATS-mode collector's buffer was full. Definitely lost.
- abandoned: a stopping NATS-mode collector never got a positive ack for the event before
  its flush timeout. Lost unless it shows up later (the ack, not the message, may be what
  was lost).
- duplicates: events received more than once (duplicate_deliveries counts the extra ones).

Pure logic, no I/O: unit-tested in tests/unit/test_sim_ledger.py.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from tapio_sim.events import event_id

PATHS = ("direct", "nats")
BUCKET_FIELDS = ("emitted", "received_direct", "received_nats", "dropped", "duplicates")


@dataclass
class SourceLedger:
    source: str
    emitted: int = 0
    counts: bytearray = field(default_factory=lambda: bytearray(1024))
    received_unique: int = 0
    deliveries: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PATHS, 0))
    emitted_by_mode: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PATHS, 0))
    duplicate_events: int = 0
    duplicate_deliveries: int = 0
    dropped_direct: set[int] = field(default_factory=set)
    dropped_backpressure: set[int] = field(default_factory=set)
    abandoned: set[int] = field(default_factory=set)
    acked_by_stream: int = 0
    stream_duplicate_acks: int = 0
    publish_retries: int = 0
    corrupt: int = 0

    def next_seq(self, mode: str) -> int:
        self.emitted += 1
        if self.emitted >= len(self.counts):
            self.counts.extend(bytes(len(self.counts)))
        self.emitted_by_mode[mode] = self.emitted_by_mode.get(mode, 0) + 1
        return self.emitted

    def receive(self, seq: int, path: str) -> int:
        """Record one delivery; returns how many times the event has now been received."""
        if seq < 1 or seq > self.emitted:
            raise ValueError(f"{self.source}: sequence {seq} was never emitted (emitted {self.emitted})")
        self.deliveries[path] = self.deliveries.get(path, 0) + 1
        count = self.counts[seq]
        if count == 0:
            self.received_unique += 1
        elif count == 1:
            self.duplicate_events += 1
            self.duplicate_deliveries += 1
        else:
            self.duplicate_deliveries += 1
        if count < 255:
            self.counts[seq] = count + 1
        return count + 1

    def definitely_lost(self, upto: int) -> int:
        """Events up to `upto` that cannot arrive any more (or are declared given up)."""
        gone = self.dropped_direct | self.dropped_backpressure | self.abandoned
        return sum(1 for seq in gone if seq <= upto and self.counts[seq] == 0)

    def missing(self, upto: int | None = None) -> int:
        upto = self.emitted if upto is None else min(upto, self.emitted)
        if upto < 1:
            return 0
        return self.counts.count(0, 1, upto + 1)

    def missing_sample(self, upto: int, limit: int) -> list[int]:
        found: list[int] = []
        start = 1
        while len(found) < limit:
            idx = self.counts.find(0, start, upto + 1)
            if idx < 0:
                break
            found.append(idx)
            start = idx + 1
        return found


class Ledger:
    """All sources of one simulator epoch (run id), plus a per-second timeline."""

    def __init__(self, run_id: str, timeline_max_seconds: int = 6 * 3600,
                 clock: Callable[[], float] = time.time) -> None:
        self.run_id = run_id
        self.started = clock()
        self.sources: dict[str, SourceLedger] = {}
        self.timeline: OrderedDict[int, dict[str, list[int]]] = OrderedDict()
        self.timeline_max_seconds = timeline_max_seconds
        self.stale = 0  # events of an earlier run id (a reset or a restart) received now
        self.foreign = 0  # messages that were no simulator event at all
        self._clock = clock

    def source(self, name: str) -> SourceLedger:
        led = self.sources.get(name)
        if led is None:
            led = self.sources[name] = SourceLedger(name)
        return led

    def _bucket(self, source: str) -> list[int]:
        second = int(self._clock())
        bucket = self.timeline.get(second)
        if bucket is None:
            bucket = self.timeline[second] = {}
            while len(self.timeline) > self.timeline_max_seconds:
                self.timeline.popitem(last=False)
        row = bucket.get(source)
        if row is None:
            row = bucket[source] = [0] * len(BUCKET_FIELDS)
        return row

    # -- writers -------------------------------------------------------------------------
    def emit(self, source: str, mode: str) -> int:
        seq = self.source(source).next_seq(mode)
        self._bucket(source)[0] += 1
        return seq

    def receive(self, source: str, seq: int, path: str, ev_id: str | None = None,
                run_id: str | None = None) -> int:
        """Record a delivery. Returns the receive count (0 for a stale/corrupt event)."""
        if run_id is not None and run_id != self.run_id:
            self.stale += 1
            return 0
        led = self.sources.get(source)
        if led is None or seq < 1 or seq > led.emitted:
            self.foreign += 1
            return 0
        if ev_id is not None and ev_id != event_id(self.run_id, source, seq):
            led.corrupt += 1
            return 0
        count = led.receive(seq, path)
        row = self._bucket(source)
        row[1 if path == "direct" else 2] += 1
        if count > 1:
            row[4] += 1
        return count

    def drop_direct(self, source: str, seq: int) -> None:
        self.source(source).dropped_direct.add(seq)
        self._bucket(source)[3] += 1

    def drop_backpressure(self, source: str, seq: int) -> None:
        self.source(source).dropped_backpressure.add(seq)
        self._bucket(source)[3] += 1

    def abandon(self, source: str, seq: int) -> None:
        self.source(source).abandoned.add(seq)

    def stream_acked(self, source: str, duplicate: bool) -> None:
        led = self.source(source)
        led.acked_by_stream += 1
        if duplicate:
            led.stream_duplicate_acks += 1

    # -- readers -------------------------------------------------------------------------
    def watermarks(self) -> dict[str, int]:
        return {name: led.emitted for name, led in self.sources.items()}

    def settled(self, watermarks: dict[str, int]) -> bool:
        """True when every event up to the watermarks was received or cannot arrive any more."""
        for name, upto in watermarks.items():
            led = self.sources[name]
            if led.missing(upto) != led.definitely_lost(upto):
                return False
        return True

    def summary(self, watermarks: dict[str, int] | None = None, sample: int = 20) -> dict[str, Any]:
        """Per-source counts. With watermarks, `lost` counts only events up to them (what a
        settle waited for) and later ones are `in_flight`; without, every missing event is
        counted as lost (`final` is false)."""
        now = self._clock()
        sources: dict[str, Any] = {}
        totals = dict.fromkeys(("emitted", "received", "lost", "in_flight", "duplicates",
                                "duplicate_deliveries", "dropped_direct", "dropped_backpressure",
                                "abandoned"), 0)
        for name, led in sorted(self.sources.items()):
            upto = led.emitted if watermarks is None else min(watermarks.get(name, 0), led.emitted)
            lost = led.missing(upto)
            in_flight = led.missing() - lost
            row = {
                "emitted": led.emitted,
                "received": led.received_unique,
                "lost": lost,
                "in_flight": in_flight,
                "duplicates": led.duplicate_events,
                "duplicate_deliveries": led.duplicate_deliveries,
                "dropped_direct": len(led.dropped_direct),
                "dropped_backpressure": len(led.dropped_backpressure),
                "abandoned": sum(1 for s in led.abandoned if led.counts[s] == 0),
                "watermark": upto,
                "emitted_by_mode": dict(led.emitted_by_mode),
                "received_by_path": dict(led.deliveries),
                "acked_by_stream": led.acked_by_stream,
                "stream_duplicate_acks": led.stream_duplicate_acks,
                "publish_retries": led.publish_retries,
                "corrupt": led.corrupt,
                "lost_ids_sample": [event_id(self.run_id, name, s) for s in led.missing_sample(upto, sample)],
                "lost_seq_sample": led.missing_sample(upto, sample),
                "rate_1m": self.rate(name, 60),
                "rate_10s": self.rate(name, 10),
            }
            for key in totals:
                totals[key] += row[key] if key != "received" else led.received_unique
            sources[name] = row
        return {
            "run_id": self.run_id,
            "started": self.started,
            "now": now,
            "final": watermarks is not None,
            "sources": sources,
            "totals": totals,
            "stale": self.stale,
            "foreign": self.foreign,
        }

    def rate(self, source: str | None, seconds: int, field_index: int = 0) -> float:
        """Average events/s over the last `seconds` complete seconds (emitted by default)."""
        now = int(self._clock())
        total = 0
        for sec in range(now - seconds, now):
            bucket = self.timeline.get(sec)
            if not bucket:
                continue
            if source is None:
                total += sum(row[field_index] for row in bucket.values())
            elif source in bucket:
                total += bucket[source][field_index]
        span = min(seconds, max(1, now - int(self.started)))
        return round(total / span, 1)

    def timeline_rows(self, since: float | None = None) -> list[dict[str, Any]]:
        rows = []
        for sec, bucket in self.timeline.items():
            if since is not None and sec < since:
                continue
            rows.append({"t": sec, "sources": {src: dict(zip(BUCKET_FIELDS, row)) for src, row in bucket.items()}})
        return rows


class EngineLedger:
    """What one second correlation engine (the plan's A/B) received from its own consumer.

    An engine reads history too (a replay window holds events of earlier simulator runs, and an
    event a collector published again after a lost ack may be in the stream twice), so it
    counts stream messages by their stream sequence - `received`, what a replay window's count
    is compared with - and, apart, the simulator events they carry by (run id, source,
    sequence). A stream message delivered again is a redelivery, not a new message."""

    CHUNK = 1 << 16

    def __init__(self, name: str) -> None:
        self.name = name
        self.stream_seqs: dict[int, bytearray] = {}
        self.event_counts: dict[tuple[str, str], bytearray] = {}
        self.deliveries = 0
        self.messages = 0
        self.redeliveries = 0
        self.events = 0
        self.current_run = 0
        self.repeated_events = 0
        self.foreign = 0

    def _first_delivery(self, stream_seq: int | None) -> bool:
        if stream_seq is None:  # not a JetStream message: each delivery is a message
            return True
        chunk = self.stream_seqs.setdefault(stream_seq // self.CHUNK, bytearray(self.CHUNK))
        seen = chunk[stream_seq % self.CHUNK]
        chunk[stream_seq % self.CHUNK] = 1
        return not seen

    def receive(self, decoded: tuple[str, int, str, str] | None, run_id: str, stream_seq: int | None = None) -> bool:
        """Record one delivery of stream message *stream_seq* (*decoded*: the simulator event it
        carries, None for a foreign message); False when it is a redelivery."""
        self.deliveries += 1
        if not self._first_delivery(stream_seq):
            self.redeliveries += 1
            return False
        self.messages += 1
        if decoded is None:
            self.foreign += 1
            return True
        source, seq, _, event_run = decoded
        counts = self.event_counts.setdefault((event_run, source), bytearray(1024))
        if seq >= len(counts):
            counts.extend(bytes(max(seq + 1 - len(counts), len(counts))))
        if counts[seq]:
            self.repeated_events += 1
        else:
            counts[seq] = 1
            self.events += 1
            self.current_run += event_run == run_id
        return True

    def summary(self) -> dict[str, Any]:
        return {"received": self.messages, "events": self.events, "current_run": self.current_run,
                "earlier_runs": self.events - self.current_run, "foreign": self.foreign,
                "repeated_events": self.repeated_events, "deliveries": self.deliveries,
                "redeliveries": self.redeliveries}
