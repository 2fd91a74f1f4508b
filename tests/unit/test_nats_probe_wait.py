"""library/nats_probe.py's wait for the consumer to acknowledge the canaries: tapio_wait's time
budget, looking again soon and backing off to wait_sleep, the last look at or after
wait_timeout (the canary tests against a real consumer are tests/integration/test_nats_info_probe.py)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, Optional

from conftest import REPO_ROOT
from module_utils_loader import load_file
from fake_clock import Clock

probe = load_file("tapio_test_library_nats_probe", REPO_ROOT / "library" / "nats_probe.py")




class Consumer:
    """consumer_info answers; the ack floor reaches *acked_at* on the *at*-th look (never if None)."""

    def __init__(self, at: Optional[int], acked_at: int = 10) -> None:
        self.at, self.acked_at, self.looks = at, acked_at, 0

    async def consumer_info(self, stream: str, name: str) -> dict[str, Any]:
        self.looks += 1
        floor = self.acked_at if self.at is not None and self.looks >= self.at else 0
        return {"num_pending": 0, "num_ack_pending": 1, "ack_floor": {"stream_seq": floor}}


def module(timeout: float, sleep: float) -> Any:
    return SimpleNamespace(params={"consumer": "tapio-pipeline", "wait_timeout": timeout, "wait_sleep": sleep})


def test_acks_are_looked_for_soon_then_less_often() -> None:
    clock, api = Clock(), Consumer(at=4)
    acked, view = asyncio.run(probe.wait_for_consumer(module(60, 0.5), api, "TAPIO_EVENTS", 10, clock, clock.pause))
    assert acked is True and view["ack_floor"] == {"stream_seq": 10}
    assert clock.sleeps == [0.05, 0.1, 0.2] and api.looks == 4


def test_without_acks_the_last_look_comes_at_or_after_the_timeout() -> None:
    clock, api = Clock(), Consumer(at=None)
    acked, view = asyncio.run(probe.wait_for_consumer(module(1.0, 0.5), api, "TAPIO_EVENTS", 10, clock, clock.pause))
    assert acked is False and view["ack_floor"] == {"stream_seq": 0}
    assert clock.sleeps == [0.05, 0.1, 0.2, 0.4, 0.5] and clock.now >= 1.0 and api.looks == 6
