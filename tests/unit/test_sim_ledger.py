"""Ledger arithmetic: lost, in flight, duplicates, settle watermarks, timeline."""
from __future__ import annotations

import sys

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "lab" / "simulator"))

from tapio_sim.events import event_id  # noqa: E402
from tapio_sim.ledger import Ledger  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lost_duplicates_and_totals() -> None:
    led = Ledger("run1", clock=Clock())
    seqs = [led.emit("k8s-collector", "nats") for _ in range(10)]
    assert seqs == list(range(1, 11))
    for seq in range(1, 9):
        led.receive("k8s-collector", seq, "nats")
    led.receive("k8s-collector", 3, "nats")   # redelivered once
    led.receive("k8s-collector", 3, "nats")   # and again
    led.receive("k8s-collector", 4, "direct")
    row = led.summary()["sources"]["k8s-collector"]
    assert row["emitted"] == 10 and row["received"] == 8
    assert row["lost"] == 2 and row["lost_seq_sample"] == [9, 10]
    assert row["lost_ids_sample"] == [event_id("run1", "k8s-collector", 9), event_id("run1", "k8s-collector", 10)]
    assert row["duplicates"] == 2 and row["duplicate_deliveries"] == 3
    assert row["received_by_path"] == {"direct": 1, "nats": 10}
    assert led.summary()["totals"]["lost"] == 2


def test_watermark_separates_lost_from_in_flight() -> None:
    led = Ledger("run1", clock=Clock())
    for _ in range(5):
        led.emit("ebpf-collector", "nats")
    marks = led.watermarks()
    for _ in range(3):
        led.emit("ebpf-collector", "nats")   # emitted after the settle began
    for seq in (1, 2, 3, 4, 5, 6):
        led.receive("ebpf-collector", seq, "nats")
    row = led.summary(marks)["sources"]["ebpf-collector"]
    assert (row["lost"], row["in_flight"], row["watermark"]) == (0, 2, 5)
    assert led.summary(marks)["final"] is True
    assert led.settled(marks)


def test_settled_counts_definitely_lost_events() -> None:
    led = Ledger("run1", clock=Clock())
    s1 = led.emit("systemd-collector", "direct")
    s2 = led.emit("systemd-collector", "direct")
    s3 = led.emit("systemd-collector", "nats")
    led.receive("systemd-collector", s1, "direct")
    led.drop_direct("systemd-collector", s2)
    marks = led.watermarks()
    assert not led.settled(marks)            # s3 may still arrive
    led.abandon("systemd-collector", s3)
    assert led.settled(marks)                # nothing left that could arrive
    row = led.summary(marks)["sources"]["systemd-collector"]
    assert row["lost"] == 2 and row["dropped_direct"] == 1 and row["abandoned"] == 1
    led.receive("systemd-collector", s3, "nats")  # the ack was lost, not the event
    row = led.summary(marks)["sources"]["systemd-collector"]
    assert row["lost"] == 1 and row["abandoned"] == 0


def test_stale_foreign_and_corrupt_events_are_not_counted_as_received() -> None:
    led = Ledger("run2", clock=Clock())
    seq = led.emit("k8s-collector", "nats")
    assert led.receive("k8s-collector", seq, "nats", run_id="run1") == 0
    assert led.receive("k8s-collector", 99, "nats") == 0
    assert led.receive("other", 1, "nats") == 0
    assert led.receive("k8s-collector", seq, "nats", ev_id="0" * 32, run_id="run2") == 0
    assert led.stale == 1 and led.foreign == 2
    row = led.summary()["sources"]["k8s-collector"]
    assert row["received"] == 0 and row["corrupt"] == 1 and row["lost"] == 1
    assert led.receive("k8s-collector", seq, "nats", ev_id=event_id("run2", "k8s-collector", seq), run_id="run2") == 1


def test_counts_grow_past_initial_capacity_and_saturate() -> None:
    led = Ledger("r", clock=Clock())
    for _ in range(5000):
        led.emit("s", "nats")
    for seq in range(1, 5001):
        led.receive("s", seq, "nats")
    for _ in range(300):
        led.receive("s", 7, "nats")
    row = led.summary()["sources"]["s"]
    assert row["received"] == 5000 and row["lost"] == 0
    assert row["duplicates"] == 1 and row["duplicate_deliveries"] == 300


def test_timeline_and_rates() -> None:
    clock = Clock()
    led = Ledger("r", clock=clock)
    for second in range(10):
        clock.now = 1000.0 + second
        for _ in range(100):
            seq = led.emit("k8s-collector", "nats")
            led.receive("k8s-collector", seq, "nats" if second >= 5 else "direct")
        led.drop_direct("k8s-collector", led.emit("k8s-collector", "direct"))
    clock.now = 1010.0
    rows = led.timeline_rows()
    assert len(rows) == 10
    assert rows[0]["sources"]["k8s-collector"] == {"emitted": 101, "received_direct": 100, "received_nats": 0,
                                                   "dropped": 1, "duplicates": 0}
    assert rows[9]["sources"]["k8s-collector"]["received_nats"] == 100
    assert led.rate("k8s-collector", 10) == 101.0
    assert led.rate(None, 5, 2) == 100.0
    assert len(led.timeline_rows(since=1008)) == 2


def test_timeline_is_bounded() -> None:
    clock = Clock()
    led = Ledger("r", timeline_max_seconds=3, clock=clock)
    for second in range(6):
        clock.now = 1000.0 + second
        led.emit("s", "nats")
    assert [r["t"] for r in led.timeline_rows()] == [1003, 1004, 1005]
