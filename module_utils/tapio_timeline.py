# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Per-second event counts per source -> series, totals and cutovers (for tapio_timeline).

A row is one second: ``{"t": <unix second>, "sources": {<source>: {emitted, received_direct,
received_nats, dropped, duplicates}}}``, as the lab simulator's ``GET /timeline`` returns
them under ``buckets`` (lab/simulator/tapio_sim/ledger.py, BUCKET_FIELDS). Any other source
of per-second counts can produce the same rows.

Pure logic, no I/O and no matplotlib: unit-tested in tests/unit/test_timeline.py.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

FIELDS = ("emitted", "received_direct", "received_nats", "dropped", "duplicates")
PATHS = ("direct", "nats")
# A switch direct -> NATS is the migration, NATS -> direct the rollback.
KIND = {("direct", "nats"): "migrate", ("nats", "direct"): "rollback"}

Counts = dict[str, int]
Timeline = dict[int, dict[str, Counts]]


class TimelineError(ValueError):
    """The rows are not per-second counts per source."""


def utc(second: Optional[int]) -> Optional[str]:
    if second is None:
        return None
    return datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rows_of(payload: Any) -> list[Any]:
    """The rows of a timeline answer: the simulator's ``{"buckets": [...]}`` or a bare list."""
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict) and isinstance(payload.get("buckets"), list):
        return payload["buckets"]
    shape = f"an object with keys {sorted(payload)[:8]}" if isinstance(payload, dict) else type(payload).__name__
    raise TimelineError(f"expected a list of rows or an object with a 'buckets' list, got {shape}")


def _count(value: Any, where: str) -> int:
    # bool is an int in Python; a true/false count is a bug upstream, not a 1/0.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise TimelineError(f"{where} must be a whole number >= 0, got {value!r}")
    return int(value)


def _second(row: dict[str, Any], index: int) -> int:
    value = row.get("t")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise TimelineError(f"row {index}: 't' must be a unix second, got {value!r}")
    return int(value)


def normalise(rows: list[Any], since: Optional[float] = None, until: Optional[float] = None) -> Timeline:
    """Validate the rows and index them by second (since <= t < until); rows of the same
    second are added up; a missing field counts 0, an unknown one is ignored."""
    timeline: Timeline = {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TimelineError(f"row {index} is not an object: {row!r:.80}")
        second = _second(row, index)
        sources = row.get("sources")
        if not isinstance(sources, dict):
            raise TimelineError(f"row {index} (t={second}): 'sources' must be an object, got {sources!r:.80}")
        if (since is not None and second < since) or (until is not None and second >= until):
            continue
        bucket = timeline.setdefault(second, {})
        for source, counts in sources.items():
            if not isinstance(counts, dict):
                raise TimelineError(f"row {index} (t={second}), source {source!r}: counts must be an object, got {counts!r:.80}")
            total = bucket.setdefault(str(source), dict.fromkeys(FIELDS, 0))
            for name in FIELDS:
                total[name] += _count(counts.get(name, 0), f"row {index} (t={second}), {source}.{name}")
    return dict(sorted(timeline.items()))


def sources_of(timeline: Timeline) -> list[str]:
    return sorted({source for bucket in timeline.values() for source in bucket})


def window(timeline: Timeline) -> dict[str, Any]:
    first = min(timeline) if timeline else None
    last = max(timeline) if timeline else None
    return {"first": first, "last": last, "first_utc": utc(first), "last_utc": utc(last),
            "seconds": 0 if first is None or last is None else last - first + 1}


def series(timeline: Timeline) -> tuple[list[int], dict[str, dict[str, list[int]]]]:
    """Every second from the first to the last (0 where a second has no row) and, per
    source, one list of counts per field aligned with those seconds."""
    if not timeline:
        return [], {}
    seconds = list(range(min(timeline), max(timeline) + 1))
    zero = dict.fromkeys(FIELDS, 0)
    per_source: dict[str, dict[str, list[int]]] = {}
    for source in sources_of(timeline):
        rows = [timeline.get(second, {}).get(source, zero) for second in seconds]
        per_source[source] = {name: [row[name] for row in rows] for name in FIELDS}
    return seconds, per_source


def totals(timeline: Timeline) -> dict[str, Counts]:
    result = {source: dict.fromkeys(FIELDS, 0) for source in sources_of(timeline)}
    for bucket in timeline.values():
        for source, counts in bucket.items():
            for name in FIELDS:
                result[source][name] += counts[name]
    return result


def path_of(counts: Counts) -> Optional[str]:
    """How a second's events reached the pipeline: direct, nats, mixed, or None (none did)."""
    direct, nats = counts["received_direct"] > 0, counts["received_nats"] > 0
    if direct and nats:
        return "mixed"
    return "direct" if direct else "nats" if nats else None


def _cutover(source: str, old: str, new: str, start: int, completed: Optional[int],
             state: str, reverted: Optional[int] = None) -> dict[str, Any]:
    return {"source": source, "kind": KIND[(old, new)], "from": old, "to": new,
            "t": start, "at": utc(start), "completed": completed, "completed_at": utc(completed),
            "seconds": None if completed is None else completed - start, "state": state,
            "reverted": reverted, "reverted_at": utc(reverted)}


def cutovers(timeline: Timeline, source: str) -> list[dict[str, Any]]:
    """The source's switches between the direct path and NATS.

    The path is *settled* once a second had receipts on one path only. A cutover starts
    (``t``) at the first second with receipts on the other path after that, and is complete
    at the first second with receipts on the other path only (``completed``): while a
    DaemonSet rolls, its old and new pods deliver both ways and seconds are mixed. A
    settled-path second in between (the NATS consumer stalled for a second) does not end
    the cutover. When the window ends before it completes, ``state`` is ``in progress``, or
    ``reverted`` when the last receipts were on the old path only (``reverted`` is the first
    second of that final run). Receipts in a window that starts mixed settle silently.
    """
    found: list[dict[str, Any]] = []
    settled: Optional[str] = None
    start: Optional[int] = None
    back_since: Optional[int] = None
    for second, bucket in timeline.items():
        counts = bucket.get(source)
        path = path_of(counts) if counts else None
        if path is None:
            continue
        if settled is None:
            settled = None if path == "mixed" else path
            continue
        new = "nats" if settled == "direct" else "direct"
        if start is None:
            if path != settled:
                start = second
                back_since = None
            if path != new:
                continue
        if path == new:
            found.append(_cutover(source, settled, new, start, second, "completed"))
            settled, start, back_since = new, None, None
        elif path == settled:
            back_since = second if back_since is None else back_since
        else:
            back_since = None
    if start is not None and settled is not None:
        new = "nats" if settled == "direct" else "direct"
        state = "reverted" if back_since is not None else "in progress"
        found.append(_cutover(source, settled, new, start, None, state, back_since))
    return found


def summarise(timeline: Timeline) -> dict[str, Any]:
    """What tapio_timeline returns besides the plot: window, rows, per-source totals and
    cutovers, overall totals, and every cutover in time order."""
    per_source = totals(timeline)
    sources = {source: {"totals": per_source[source], "cutovers": cutovers(timeline, source)}
               for source in per_source}
    overall = dict.fromkeys(FIELDS, 0)
    for counts in per_source.values():
        for name in FIELDS:
            overall[name] += counts[name]
    every = sorted((c for entry in sources.values() for c in entry["cutovers"]), key=lambda c: (c["t"], c["source"]))
    return {"window": window(timeline), "rows": len(timeline), "sources": sources, "totals": overall,
            "cutovers": every}
