# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""How the toolkit waits and when it tries again: every wait and retry loop is one of these.

- ``wait_for_progress``: poll until done; fail (``Stalled``) only when the caller's progress
  marker has not moved for ``deadline`` seconds, as Kubernetes' progressDeadlineSeconds does,
  so a 1,000-pod rollout that keeps moving is never failed by a fixed total. Each change of
  the marker is recorded with the seconds since the wait began.
- ``wait_within`` (and ``wait_within_async``): look until done or a time ``Budget`` is spent;
  the last look comes back with attempts, seconds, timed_out and the progress followed.
  ``wait_until_healthy`` is its form for checks that answer ``healthy`` and ``problems``.
- ``retry``: bounded retries per cause (``Retries``), one log line per retry naming the
  cause, the pause doubled each time; the last error is raised once its cause's retries
  run out, and an error no cause claims is raised at once.

Clocks and sleeps are injected, so tests never wait.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator, Optional, TypeVar

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], None]
Pause = Callable[[float], Awaitable[Any]]
# (done, progress marker, summary): what one poll of a progress wait saw.
Poll = Callable[[], tuple[bool, Any, str]]
# One entry per change seen: {"after_seconds": ..., <what the caller describes>}.
Progress = list[dict[str, Any]]
_UNSEEN = object()


# -- progress-based waits -------------------------------------------------------------------
class Stalled(Exception):
    """A wait whose progress marker did not move for its deadline; ``progress`` is what it saw."""

    def __init__(self, message: str, progress: Optional[Progress] = None) -> None:
        super().__init__(message)
        self.progress: Progress = progress or []


@dataclass(frozen=True)
class Waited:
    """A progress wait that ended: the last summary, its seconds and each change of the marker."""

    summary: str
    seconds: float
    progress: Progress


def wait_for_progress(poll: Poll, what: str, deadline: float, interval: float, clock: Clock = time.monotonic,
                      sleep: Sleep = time.sleep) -> Waited:
    """Poll until done; Stalled when the marker has not changed for *deadline* seconds.

    The first answer counts as a change (it starts the deadline's clock)."""
    started = clock()
    marker: Any = _UNSEEN
    changed_at = started
    progress: Progress = []
    while True:
        done, current, summary = poll()
        now = clock()
        moved = current != marker
        if moved:
            marker, changed_at = current, now
            progress.append({"after_seconds": round(now - started, 1), "summary": summary})
        if done:
            return Waited(summary, round(now - started, 1), progress)
        if not moved and now - changed_at >= deadline:
            raise Stalled(f"{what}: no progress for {deadline:g}s ({summary})", progress)
        sleep(interval)


# -- time-budget waits ----------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """*seconds* to look in. The wait ends before a pause that would end past the budget (the
    last look falls within it); with ``look_past``, at the first look at or after it (the last
    look may come one pause late: the Job and canary waits always ended so)."""

    seconds: float
    look_past: bool = False

    def spent(self, elapsed: float, pause: float) -> bool:
        return elapsed >= self.seconds if self.look_past else elapsed + pause > self.seconds


def doubling(first: float, most: float) -> Iterator[float]:
    """Pauses that start at *first* and double up to *most* (look again soon, then back off)."""
    pause = first
    while True:
        yield pause
        pause = min(pause * 2, most)


class _Tally:
    """The bookkeeping a budget wait's sync and async loops share."""

    def __init__(self, budget: Budget, clock: Clock, describe: Optional[Callable[[Any], dict[str, Any]]]) -> None:
        self.budget, self.clock, self.describe = budget, clock, describe
        self.started = clock()
        self.attempts = 0
        self.seconds = 0.0
        self.progress: Progress = []

    def over(self, result: Any, done: bool, pause: float) -> bool:
        """Count one look; True when the wait ends with it (done, or the budget spent)."""
        self.attempts += 1
        elapsed = self.clock() - self.started
        self.seconds = round(elapsed, 1)
        if self.describe is not None:
            seen = self.describe(result)
            last = {k: v for k, v in self.progress[-1].items() if k != "after_seconds"} if self.progress else None
            if seen != last:
                self.progress.append({"after_seconds": self.seconds, **seen})
        return done or self.budget.spent(elapsed, pause)

    def report(self, done: bool) -> dict[str, Any]:
        return {"attempts": self.attempts, "seconds": self.seconds, "timed_out": not done, "progress": self.progress}


def wait_within(look: Callable[[], T], done: Callable[[T], bool], budget: Budget, pauses: Iterator[float],
                clock: Clock = time.monotonic, sleep: Sleep = time.sleep,
                describe: Optional[Callable[[T], dict[str, Any]]] = None) -> tuple[T, dict[str, Any]]:
    """The last look and the wait's report (attempts, seconds, timed_out, progress): looks
    until *done* or the budget is spent, pausing the next of *pauses* between two looks.
    *describe* gives what a progress entry records (a change of it is a new entry)."""
    tally = _Tally(budget, clock, describe)
    while True:
        pause = next(pauses)
        result = look()
        finished = done(result)
        if tally.over(result, finished, pause):
            return result, tally.report(finished)
        sleep(pause)


async def wait_within_async(look: Callable[[], Awaitable[T]], done: Callable[[T], bool], budget: Budget,
                            pauses: Iterator[float], clock: Clock = time.monotonic, pause: Pause = asyncio.sleep,
                            describe: Optional[Callable[[T], dict[str, Any]]] = None) -> tuple[T, dict[str, Any]]:
    """wait_within for a coroutine *look*, pausing with an awaitable *pause*."""
    tally = _Tally(budget, clock, describe)
    while True:
        gap = next(pauses)
        result = await look()
        finished = done(result)
        if tally.over(result, finished, gap):
            return result, tally.report(finished)
        await pause(gap)


async def wait_until_healthy(check: Callable[[], Awaitable[dict[str, Any]]], timeout: float, sleep: float,
                             clock: Clock = time.monotonic, pause: Pause = asyncio.sleep) -> dict[str, Any]:
    """Run *check* (a result with ``healthy`` and ``problems``) every *sleep* seconds until
    healthy or *timeout* seconds have passed; the last result gets ``wait``: attempts,
    seconds, timed_out and the progress followed (each change of the problems, with when it
    was seen). Playbooks read these keys."""
    result, report = await wait_within_async(check, lambda answer: bool(answer["healthy"]), Budget(timeout),
                                             itertools.repeat(sleep), clock, pause,
                                             describe=lambda answer: {"problems": list(answer["problems"])})
    result["wait"] = report
    return result


# -- bounded retries ------------------------------------------------------------------------
@dataclass
class Retries:
    """The retries left for one cause: at most *limit*; the n-th after backoff * 2**(n-1)
    seconds (a zero backoff retries at once). ``used`` counts those made so far."""

    limit: int
    backoff: float = 0.0
    used: int = 0

    def next_pause(self) -> Optional[float]:
        """Count one more retry and return the pause before it; None once none is left."""
        if self.used >= self.limit:
            return None
        self.used += 1
        return self.backoff * 2 ** (self.used - 1)


def retry(call: Callable[[], T], retries_for: Callable[[Exception], Optional[Retries]],
          line: Callable[[Exception, Retries, float], str], log: Callable[[str], None],
          sleep: Sleep = time.sleep) -> T:
    """``call()``'s answer. An error *retries_for* maps to a cause with retries left is logged
    (*line*: the error, its cause's Retries and the pause) and tried again after the pause;
    any other error, or the last one of a cause whose retries ran out, is raised as it is."""
    while True:
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - retries_for decides; the rest is raised unchanged
            retries = retries_for(error)
            pause = retries.next_pause() if retries is not None else None
            if retries is None or pause is None:
                raise
            log(line(error, retries, pause))
            if pause > 0:
                sleep(pause)
