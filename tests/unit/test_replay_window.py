"""The replay consumer's rules (module_utils/tapio_replay_window.py): the window asked for,
the count without a filter, the consumer's configuration, and when it is created, reset or
refused. The server's side is tests/integration/test_nats_extra_consumers_replay.py."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from module_utils_loader import load_module_utils

for _name in ("tapio_nats_config", "tapio_nats", "tapio_jetstream_fields", "tapio_jetstream"):
    load_module_utils(_name)
rw = load_module_utils("tapio_replay_window")
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
NS = 1_000_000_000


def window(**params: Any) -> Any:
    return rw.window_of(params, NOW)


def test_a_time_window_is_normalised_to_utc() -> None:
    found = window(start_time="2026-12-06T11:00:00+01:00", end_time="2026-12-06T10:05:00Z")
    assert (found.start_time, found.end_time, found.by_time, found.closed) == (
        "2026-12-06T10:00:00Z", "2026-12-06T10:05:00Z", True, True)
    assert not window(start_time="2026-12-06T10:00:00Z").closed


def test_a_sequence_window() -> None:
    found = window(start_seq=10, end_seq=10)
    assert (found.start_seq, found.end_seq, found.by_time, found.closed) == (10, 10, False, True)
    assert not window(start_seq=10).closed


@pytest.mark.parametrize(("params", "message"), [
    ({"start_time": "2026-12-06T10:00:00Z", "end_time": "2026-12-06T10:00:00Z"}, "must be after start_time"),
    ({"start_time": "2026-12-06T10:00:00Z", "end_time": "2026-12-06T12:00:01Z"}, "is in the future"),
    ({"start_time": "2026-12-06T10:00:00"}, "has no time zone"),
    ({"start_time": "ten"}, "start_time: 'ten' is not an RFC 3339 time"),
    ({"start_seq": 0}, "start_seq must be a stream sequence"),
    ({"start_seq": 5, "end_seq": 4}, "end_seq 4 must not be before start_seq 5"),
])
def test_a_window_that_cannot_be_is_refused_by_option(params: dict[str, Any], message: str) -> None:
    with pytest.raises(rw.ConfigError, match=message):
        window(**params)


def test_the_pipelines_consumer_and_bad_names_are_refused() -> None:
    assert "never touches it" in rw.name_problems("tapio-pipeline", "tapio-pipeline")[0]
    assert "contains '.'" in rw.name_problems("a.b", "tapio-pipeline")[0]
    assert rw.name_problems("engine-b-replay", "tapio-pipeline") == []


@pytest.mark.parametrize(("first", "last", "deleted", "count"), [
    (5, 9, [], 5), (5, 9, [4, 5, 7, 10, 7], 3), (5, 4, [], 0), (0, 3, [], 0), (9, 9, [9], 0)])
def test_the_count_without_a_filter_is_the_sequences_less_the_deleted(first: int, last: int, deleted: list[int],
                                                                     count: int) -> None:
    assert rw.count_between(first, last, deleted) == count


def test_the_consumer_starts_at_the_window_and_carries_its_end() -> None:
    by_time = rw.replay_config("engine-b", window(start_time="2026-12-06T10:00:00Z", end_time="2026-12-06T10:05:00Z"),
                               120, {"ack_wait": "1m", "max_ack_pending": 10, "filter_subjects": ["tapio.events.k8s.>"]})
    assert by_time == {
        "durable_name": "engine-b", "name": "engine-b", "ack_policy": "explicit", "deliver_policy": "by_start_time",
        "opt_start_time": "2026-12-06T10:00:00Z", "ack_wait": 60 * NS, "max_ack_pending": 10,
        "filter_subjects": ["tapio.events.k8s.>"],
        "description": "Tapio replay 2026-12-06T10:00:00Z .. 2026-12-06T10:05:00Z",
        "metadata": {"tapio.io/replay": "true", "tapio.io/replay-start": "2026-12-06T10:00:00Z",
                     "tapio.io/replay-end": "2026-12-06T10:05:00Z", "tapio.io/replay-last-seq": "120"}}
    open_seq = rw.replay_config("engine-b", window(start_seq=7), 99, {"description": "mine"})
    assert (open_seq["deliver_policy"], open_seq["opt_start_seq"], open_seq["description"]) == (
        "by_start_sequence", 7, "mine")
    assert open_seq["metadata"] == {"tapio.io/replay": "true", "tapio.io/replay-start": "7"}


def live(config: dict[str, Any], delivered: int = 0, acked: int = 0, pending_acks: int = 0) -> dict[str, Any]:
    """A consumer info as the server answers: a new one's stream sequences sit before its start."""
    return {"config": {**config, "ack_wait": 30 * NS, "max_deliver": -1, "metadata": {**config["metadata"],
                                                                                        "_nats.ver": "2.15.1"}},
            "delivered": {"consumer_seq": delivered, "stream_seq": 41 + delivered},
            "ack_floor": {"consumer_seq": acked, "stream_seq": 41 + acked}, "num_ack_pending": pending_acks}


DESIRED = rw.replay_config("engine-b", rw.Window(start_seq=42, end_seq=50), 50, {})


def test_a_new_window_is_created_and_the_same_one_left_alone() -> None:
    assert rw.plan(DESIRED, None, reset=False) == ("create", [])
    assert rw.plan(DESIRED, live(DESIRED), reset=False) == ("none", [])
    # A fresh consumer is already at its start: reset changes nothing.
    assert rw.plan(DESIRED, live(DESIRED), reset=True) == ("none", [])


def test_reset_starts_a_read_consumer_again() -> None:
    assert rw.plan(DESIRED, live(DESIRED, delivered=3, acked=2, pending_acks=1), reset=True) == ("reset", [])
    assert rw.plan(DESIRED, live(DESIRED, delivered=3, acked=3), reset=False) == ("none", [])


def test_another_window_needs_reset_and_names_what_differs() -> None:
    other = rw.replay_config("engine-b", rw.Window(start_seq=60, end_seq=70), 70, {})
    with pytest.raises(rw.NatsModuleError, match=r"\(description, metadata, opt_start_seq\).*Set reset=true"):
        rw.plan(other, live(DESIRED), reset=False)
    assert rw.plan(other, live(DESIRED), reset=True) == ("reset", ["description", "metadata", "opt_start_seq"])


def test_an_open_window_on_a_consumer_that_carries_an_end_is_another_window() -> None:
    closed = rw.replay_config("engine-b", rw.Window(start_seq=42, end_seq=50), 50, {"description": "b"})
    still_open = rw.replay_config("engine-b", rw.Window(start_seq=42), 99, {"description": "b"})
    with pytest.raises(rw.NatsModuleError, match=r"\(metadata\)"):
        rw.plan(still_open, live(closed), reset=False)
    assert rw.plan(still_open, live(closed), reset=True) == ("reset", ["metadata"])


def test_a_consumer_the_module_did_not_create_is_never_reset() -> None:
    foreign = live({**DESIRED, "metadata": {}})
    with pytest.raises(rw.NatsModuleError, match="is not a replay consumer"):
        rw.plan(DESIRED, foreign, reset=True)


def test_changed_compares_the_configuration_and_the_readers_progress() -> None:
    fresh = live(DESIRED)
    assert rw.comparable(fresh) == rw.comparable(live(DESIRED))
    assert rw.comparable(fresh) != rw.comparable(live(DESIRED, delivered=1))
    assert rw.comparable(None) == {} != rw.comparable({"config": DESIRED})
