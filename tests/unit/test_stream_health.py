"""Keeping up as a trend, and the stream's fullness for what its discard policy loses
(module_utils/tapio_stream_health.py). Pure functions over JetStream API answers."""
from __future__ import annotations

import datetime

from module_utils_loader import load_module_utils

health = load_module_utils("tapio_stream_health")
S = health.Sample

GIB = 1024 ** 3
DAY_NS = 24 * 3600 * 10 ** 9


def stream(messages: int = 0, size: int = 0, discard: str = "old", max_msgs: int = -1, max_bytes: int = -1,
           max_age: int = 0, last_seq: int = 0) -> dict:
    return {"config": {"name": "TAPIO_EVENTS", "discard": discard, "max_msgs": max_msgs, "max_bytes": max_bytes,
                       "max_age": max_age},
            "state": {"messages": messages, "bytes": size, "last_seq": last_seq}}


def consumer(pending: int = 0, ack_pending: int = 0, floor: int = 0) -> dict:
    return {"num_pending": pending, "num_ack_pending": ack_pending, "ack_floor": {"stream_seq": floor}}


# -- keeping up ------------------------------------------------------------------------------
def test_a_small_backlog_keeps_up_at_once() -> None:
    verdict, why = health.keeps_up([S(0.0, 500, 400, 1000)], max_pending=1000, window=10)
    assert verdict is True
    assert "1000 unacknowledged (at most 1000)" in why


def test_a_large_backlog_waits_for_a_full_window_before_judging() -> None:
    samples = [S(0.0, 5000, 3000, 2000), S(6.0, 8000, 6000, 2000)]
    verdict, why = health.keeps_up(samples, max_pending=1000, window=10)
    assert verdict is None
    assert "judging the trend over 10s" in why


def test_a_large_steady_backlog_with_the_floor_at_the_stream_rate_keeps_up() -> None:
    """The 200-node case: 1,800 events/s, about 1,100 behind at any read, acked as fast as published."""
    samples = [S(0.0, 10000, 8900, 1100), S(5.0, 19000, 17900, 1100), S(10.0, 28000, 26850, 1150)]
    verdict, why = health.keeps_up(samples, max_pending=1000, window=10)
    assert verdict is True
    assert "grew 1800/s" in why and "moved 1795/s" in why and "backlog 1100 -> 1150" in why


def test_a_shrinking_backlog_keeps_up() -> None:
    verdict, _ = health.keeps_up([S(0.0, 1000, 0, 5000), S(10.0, 2000, 4000, 2000)], max_pending=1000, window=10)
    assert verdict is True


def test_a_growing_backlog_falls_behind_even_with_the_floor_moving() -> None:
    samples = [S(0.0, 10000, 8000, 2000), S(10.0, 28000, 22000, 6000)]
    verdict, why = health.keeps_up(samples, max_pending=1000, window=10)
    assert verdict is False
    assert why.startswith("falling behind") and "backlog 2000 -> 6000" in why


def test_a_stalled_consumer_falls_behind_even_when_nothing_is_published() -> None:
    verdict, _ = health.keeps_up([S(0.0, 9000, 4000, 5000), S(12.0, 9000, 4000, 5000)], max_pending=1000, window=10)
    assert verdict is False


def test_the_trend_is_judged_from_the_latest_sample_a_window_back() -> None:
    """An old bad stretch does not condemn a consumer that has caught up its rate since."""
    samples = [S(0.0, 0, 0, 2000), S(5.0, 10000, 0, 12000), S(15.0, 20000, 10000, 12000)]
    verdict, _ = health.keeps_up(samples, max_pending=1000, window=10)
    assert verdict is True


# -- fullness --------------------------------------------------------------------------------
def test_discard_old_counts_only_the_unacknowledged_backlog() -> None:
    """A limits stream at its limit is normal: the oldest messages it drops were acknowledged."""
    full_but_read = stream(messages=1000, size=GIB, max_msgs=1000, max_bytes=GIB)
    fill = health.fullness(full_but_read, consumer(pending=10), None)
    assert fill["percent"] == 1.0
    assert fill["limit"] in ("max_msgs", "max_bytes")
    assert health.fullness_problem(fill, 80) == ""


def test_discard_old_backlog_near_the_message_limit_is_a_problem_naming_stream_and_level() -> None:
    fill = health.fullness(stream(messages=100, size=100 * 200, max_msgs=100), consumer(pending=85, ack_pending=5),
                           None)
    assert (fill["percent"], fill["limit"]) == (90.0, "max_msgs")
    problem = health.fullness_problem(fill, 80)
    assert "Stream TAPIO_EVENTS is 90% full by max_msgs" in problem
    assert "90 of 100 messages" in problem and "discards events the pipeline has not acknowledged" in problem


def test_discard_old_bytes_are_the_backlog_share_of_the_stored_bytes() -> None:
    fill = health.fullness(stream(messages=1000, size=GIB, max_bytes=GIB), consumer(pending=850), None)
    assert fill["limit"] == "max_bytes"
    assert fill["percent"] == 85.0
    assert "870.4MiB of 1.0GiB" in fill["summary"]


def test_discard_old_age_of_the_oldest_unacknowledged_message_counts_against_max_age() -> None:
    fill = health.fullness(stream(messages=10, size=100, max_age=7 * DAY_NS), consumer(pending=10),
                           oldest_unacked_age=6.3 * 24 * 3600)
    assert (fill["limit"], fill["percent"]) == ("max_age", 90.0)
    assert "oldest unacknowledged message 6.3d old of 7.0d (90%)" in fill["summary"]
    assert health.fullness_problem(fill, 80)


def test_discard_new_counts_the_whole_stream_because_it_refuses_publishes() -> None:
    fill = health.fullness(stream(messages=950, size=950, discard="new", max_msgs=1000), consumer(), None)
    assert fill["percent"] == 95.0
    assert "refuses new events (discard new)" in health.fullness_problem(fill, 80)


def test_without_a_consumer_the_stored_messages_count() -> None:
    fill = health.fullness(stream(messages=900, size=900, max_msgs=1000), None, None)
    assert (fill["percent"], fill["held"]) == (90.0, "stored")


def test_a_stream_without_limits_is_never_full() -> None:
    fill = health.fullness(stream(messages=10 ** 9, size=10 ** 12), consumer(pending=10 ** 9), 10 ** 6)
    assert fill["percent"] == 0.0
    assert health.fullness_problem(fill, 0) == ""
    assert "no message, byte or age limit" in fill["summary"]


def test_the_limit_itself_is_inclusive() -> None:
    fill = health.fullness(stream(messages=80, size=80, max_msgs=100), consumer(pending=80), None)
    assert health.fullness_problem(fill, 80)
    assert not health.fullness_problem(fill, 80.5)


def test_jetstream_times_with_nanoseconds_parse() -> None:
    parsed = health.parse_time("2026-12-02T15:50:01.123456789Z")
    assert parsed == datetime.datetime(2026, 12, 2, 15, 50, 1, 123456, tzinfo=datetime.timezone.utc)
    assert health.parse_time("2026-12-02T15:50:01Z") == datetime.datetime(2026, 12, 2, 15, 50, 1,
                                                                           tzinfo=datetime.timezone.utc)
    assert health.parse_time("") is None and health.parse_time("yesterday") is None


def test_samples_read_the_stream_and_the_consumer() -> None:
    sample = health.sample_of(stream(last_seq=77), consumer(pending=3, ack_pending=2, floor=70), at=4.0)
    assert sample == S(4.0, 77, 70, 5)
