# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Pure logic shared by the nats_* modules: units and subjects.

Everything here works on JetStream *wire* values (durations in nanoseconds, sizes in
bytes), the form the server returns and `/jsz` shows, so desired and current
configurations are compared in one unit. The stream and consumer fields, their comparison
and their update rules are in tapio_jetstream_fields. Nothing here talks to a server; the
functions are unit-tested in tests/unit/test_nats_config.py.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional

NS_PER_S = 1_000_000_000

_DURATION_UNITS_NS: dict[str, float] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": NS_PER_S,
    "m": 60 * NS_PER_S,
    "h": 3_600 * NS_PER_S,
    "d": 86_400 * NS_PER_S,
    "w": 604_800 * NS_PER_S,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")

_SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2,
    "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3,
    "t": 1024 ** 4, "tb": 1024 ** 4, "tib": 1024 ** 4,
}
_SIZE = re.compile(r"^(-?\d+(?:\.\d+)?)\s*([a-zA-Z]*)$")


class ConfigError(ValueError):
    """A user-supplied value that cannot be used; the message is shown as is."""


# --------------------------------------------------------------------------- units


def parse_duration(value: Any, field: str = "duration") -> int:
    """Return *value* as nanoseconds.

    Numbers (and strings of digits) are seconds; strings use Go-style units plus days and
    weeks, combined as in ``1h30m``: ``90s``, ``2m``, ``7d``, ``500ms``.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a duration such as '90s', '2m', '7d' or seconds, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"{field}: a duration cannot be negative, got {value!r}")
        return int(round(value * NS_PER_S))
    text = str(value).strip().lower()
    if _NUMBER.match(text):
        return int(round(float(text) * NS_PER_S))
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS_NS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ConfigError(
            f"{field}: cannot parse duration {value!r}; use a number of seconds or units "
            "ns, us, ms, s, m, h, d, w (for example '90s', '2m', '1h30m', '7d')"
        )
    return int(round(total))


def format_duration(nanoseconds: int) -> str:
    """Render nanoseconds in the largest whole units: ``120000000000`` -> ``2m``."""
    if nanoseconds == 0:
        return "0s"
    parts: list[str] = []
    remaining = int(nanoseconds)
    for unit in ("d", "h", "m", "s", "ms", "us", "ns"):
        size = int(_DURATION_UNITS_NS[unit])
        if remaining >= size:
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(parts)


def parse_size(value: Any, field: str = "size") -> int:
    """Return *value* as bytes; accepts integers and strings like ``10GB`` or ``512MiB``.

    Units are powers of 1024 (KB = KiB), as the nats CLI treats them. -1 means unlimited.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a size such as 1073741824, '512MB' or '10GB', got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    match = _SIZE.match(str(value).strip())
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ConfigError(f"{field}: cannot parse size {value!r}; use bytes or units KB, MB, GB, TB (1024-based)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


# --------------------------------------------------------------------------- subjects


def subjects_overlap(first: str, second: str) -> bool:
    """True when some subject matches both patterns (``*`` one token, ``>`` one or more)."""
    a_tokens, b_tokens = first.split("."), second.split(".")
    for a, b in zip(a_tokens, b_tokens):
        if a == ">" or b == ">":
            return True
        if a != b and a != "*" and b != "*":
            return False
    return len(a_tokens) == len(b_tokens)


def subject_is_within(subject: str, pattern: str) -> bool:
    """True when every subject matched by *subject* is also matched by *pattern*."""
    s_tokens, p_tokens = subject.split("."), pattern.split(".")
    for index, p in enumerate(p_tokens):
        if p == ">":
            return len(s_tokens) > index
        if index >= len(s_tokens):
            return False
        s = s_tokens[index]
        if p == "*":
            if s == ">":
                return False
            continue
        if s != p:
            return False
    return len(s_tokens) == len(p_tokens)


def find_overlapping_stream(
    name: str, subjects: Iterable[str], streams: Iterable[Mapping[str, Any]]
) -> Optional[tuple[str, str, str]]:
    """Return (other stream, its subject, our subject) for the first overlap, or None."""
    wanted = list(subjects)
    for stream in streams:
        config = stream.get("config", stream)
        if config.get("name") == name:
            continue
        for theirs in config.get("subjects") or []:
            for ours in wanted:
                if subjects_overlap(ours, theirs):
                    return str(config.get("name")), theirs, ours
    return None


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 for an empty list)."""
    if not sorted_values:
        return 0.0
    rank = max(1, int(-(-fraction * len(sorted_values) // 1)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
