# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Is the pipeline keeping up, and how close is the stream to discarding what it has not read?

Pure functions over the JetStream API's stream and consumer info, so the gates, verify,
preflight and the report judge the same way, and unit tests cover every branch.

Keeping up is a trend, not one count: at 1,800 events/s a healthy consumer can be 1,100
messages behind at the moment it is read. Over a window the pipeline keeps up when its ack
floor moves at least at the rate the stream grows and its backlog stays bounded (shrinks, or
grows by no more than TREND_TOLERANCE), or when the backlog is small anyway.

Fullness is what the stream's limits leave for unread events. With ``discard: old`` a stream
at its limit drops its oldest messages, which loses events only once they are unacknowledged:
so it is the backlog (messages and their bytes) against max_msgs and max_bytes, and the age of
the oldest unacknowledged message against max_age. With ``discard: new`` the stream refuses
publishes once it is full, whatever was read: so it is the whole stream against its limits.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Optional

# A backlog may grow by this fraction over a window, and the ack floor may move this much slower
# than the stream, and the consumer still counts as keeping up (the reads are not atomic).
TREND_TOLERANCE = 0.1


@dataclass(frozen=True)
class Sample:
    """One read of the stream and the pipeline's consumer."""
    at: float
    last_seq: int
    ack_floor: int
    backlog: int


def backlog_of(consumer: dict[str, Any]) -> int:
    """Messages the consumer has not acknowledged: not delivered yet, or delivered and unacked."""
    return int(consumer.get("num_pending") or 0) + int(consumer.get("num_ack_pending") or 0)


def sample_of(stream: dict[str, Any], consumer: dict[str, Any], at: float) -> Sample:
    return Sample(at=at, last_seq=int((stream.get("state") or {}).get("last_seq") or 0),
                  ack_floor=int((consumer.get("ack_floor") or {}).get("stream_seq") or 0),
                  backlog=backlog_of(consumer))


def keeps_up(samples: list[Sample], max_pending: int, window: float) -> tuple[Optional[bool], str]:
    """(True, why) keeping up; (False, why) judged over a full window and not keeping up;
    (None, why) behind, with less than *window* seconds of samples to judge the trend."""
    latest = samples[-1]
    if latest.backlog <= max_pending:
        return True, f"{latest.backlog} unacknowledged (at most {max_pending}), ack floor {latest.ack_floor}"
    start = next((s for s in reversed(samples) if latest.at - s.at >= window), None)
    if start is None:
        return None, (f"{latest.backlog} unacknowledged (more than {max_pending}), ack floor {latest.ack_floor}; "
                      f"judging the trend over {window:g}s")
    seconds = latest.at - start.at
    published, acked = latest.last_seq - start.last_seq, latest.ack_floor - start.ack_floor
    rates = (f"over {seconds:.0f}s the stream grew {published / seconds:.0f}/s and the ack floor moved "
             f"{acked / seconds:.0f}/s; backlog {start.backlog} -> {latest.backlog}")
    bounded = latest.backlog <= start.backlog * (1 + TREND_TOLERANCE)
    fast_enough = acked > 0 and acked >= published * (1 - TREND_TOLERANCE)
    if bounded and fast_enough:
        return True, f"keeping up: {rates}"
    return False, f"falling behind: {rates}"


def parse_time(text: str) -> Optional[datetime.datetime]:
    """A JetStream RFC 3339 time (nanoseconds, Z) as an aware datetime; None if unreadable."""
    if not text:
        return None
    head, _, tail = text.rstrip("Z").partition(".")
    digits = "".join(c for c in tail if c.isdigit())[:6]
    try:
        parsed = datetime.datetime.fromisoformat(head + (f".{digits:0<6}" if digits else ""))
    except ValueError:
        return None
    return parsed.replace(tzinfo=datetime.timezone.utc) if parsed.tzinfo is None else parsed


def byte_size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GiB"  # pragma: no cover - the loop returns


def _duration(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.1f}{unit}"
    return f"{seconds:.0f}s"


def fullness(stream: dict[str, Any], consumer: Optional[dict[str, Any]],
             oldest_unacked_age: Optional[float]) -> dict[str, Any]:
    """How full the stream is for what matters under its discard policy (see the module doc).

    Returns ``percent`` (the highest of the measures, 0 without limits), ``limit`` (the measure
    that gives it), ``measures`` (each name: used, maximum, percent) and ``summary``."""
    config, state = stream.get("config") or {}, stream.get("state") or {}
    messages, size = int(state.get("messages") or 0), int(state.get("bytes") or 0)
    discard_new = config.get("discard") == "new"
    if discard_new or consumer is None:
        held, held_bytes, what = messages, float(size), "stored"
    else:
        held = min(backlog_of(consumer), messages)
        held_bytes, what = (size * held / messages if messages else 0.0), "unacknowledged"
    measures: dict[str, dict[str, Any]] = {}
    if int(config.get("max_msgs") or -1) > 0:
        measures["max_msgs"] = {"used": held, "maximum": int(config["max_msgs"]),
                                "text": f"{held} of {int(config['max_msgs'])} messages"}
    if int(config.get("max_bytes") or -1) > 0:
        measures["max_bytes"] = {"used": held_bytes, "maximum": int(config["max_bytes"]),
                                 "text": f"{byte_size(held_bytes)} of {byte_size(int(config['max_bytes']))}"}
    max_age = int(config.get("max_age") or 0) / 1e9
    if max_age > 0 and oldest_unacked_age is not None and not discard_new:
        measures["max_age"] = {"used": oldest_unacked_age, "maximum": max_age,
                               "text": f"oldest unacknowledged message {_duration(oldest_unacked_age)} old of "
                                        f"{_duration(max_age)}"}
    for measure in measures.values():
        measure["percent"] = round(100.0 * measure["used"] / measure["maximum"], 1)
    name = str(config.get("name") or "?")
    if not measures:
        return {"stream": name, "percent": 0.0, "limit": "", "measures": {}, "held": what, "detail": "",
                "summary": f"stream {name} has no message, byte or age limit"}
    limit = max(measures, key=lambda k: measures[k]["percent"])
    percent = measures[limit]["percent"]
    parts = ", ".join(f"{m['text']} ({m['percent']:g}%)" for m in measures.values())
    detail = f"{what}: {parts}; discard {config.get('discard', 'old')}"
    return {"stream": name, "percent": percent, "limit": limit, "measures": measures, "held": what,
            "detail": detail, "summary": f"stream {name} is {percent:g}% full ({detail})"}


def fullness_problem(fill: dict[str, Any], limit_percent: float) -> str:
    """Why the run must stop before the stream discards events ('' below *limit_percent*)."""
    if not fill["measures"] or fill["percent"] < limit_percent:
        return ""
    stream = fill["stream"]
    consequence = ("refuses new events (discard new)" if fill["held"] == "stored"
                   else "discards events the pipeline has not acknowledged (discard old)")
    return (f"Stream {stream} is {fill['percent']:g}% full by {fill['limit']}, at or above the "
            f"{limit_percent:g}% limit (tapio_stream_fill_limit): {fill['detail']}. "
            f"At 100% it {consequence}. Let the pipeline catch up (its consumer's backlog must shrink), or raise the "
            f"stream's limits (nats_streams_events_stream), then run again.")
