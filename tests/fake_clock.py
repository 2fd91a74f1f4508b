"""A clock for unit tests of waits: it moves only when something sleeps on it, and every
sleep is recorded, so nothing really waits."""
from __future__ import annotations


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def pause(self, seconds: float) -> None:
        self.sleep(seconds)
