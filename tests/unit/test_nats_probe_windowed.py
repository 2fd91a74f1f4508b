"""nats_probe's windowed publisher (module_utils/tapio_nats_probe.py: publish_windowed) against
an in-memory client that acknowledges each publish on its reply subject: the window bounds
what is in flight, acks are counted (errors and duplicates too), and a missing ack ends the
run as timed out. Both client paths are run: nats-py's internals (one write per burst, acks
straight to the counter) and plain publish() with a subscription callback."""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Optional

import pytest

from module_utils_loader import load_module_utils

probe = load_module_utils("tapio_nats_probe")


class Msg:
    def __init__(self, subject: str, data: bytes) -> None:
        self.subject, self.data = subject, data


class Sub:
    def __init__(self, client: "AckingClient", cb: Callable[[Any], Awaitable[None]]) -> None:
        self._id, self.client, self.cb = 7, client, cb

    async def unsubscribe(self) -> None:
        self.client.unsubscribed = True


class AckingClient:
    """Acks each publish (on the next loop turn) with *answer(index)*; None leaves it unacked."""

    max_payload = 1024

    def __init__(self, answer: Callable[[int], Optional[bytes]], internals: bool) -> None:
        self.answer, self.internals = answer, internals
        self.sub: Optional[Sub] = None
        self.in_flight = self.most_in_flight = 0
        self.writes: list[int] = []
        self.unsubscribed = False
        if internals:
            self._send_command = self.send_command
            self._flush_pending = self.flush_pending
            self._process_msg = self.process_msg

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str, cb: Any, pending_msgs_limit: int) -> Sub:
        self.sub = Sub(self, cb)
        return self.sub

    async def process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any) -> None:
        raise AssertionError("the ack shortcut should have replaced this for the probe's inbox")

    def sent(self, reply: str) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        data = self.answer(int(reply.rsplit(".", 1)[1]))
        if data is not None:
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.ack(reply, data)))

    async def ack(self, reply: str, data: bytes) -> None:
        self.in_flight -= 1
        assert self.sub is not None
        if self.internals:
            await self._process_msg(self.sub._id, reply.encode(), b"", data, None)
        else:
            await self.sub.cb(Msg(reply, data))

    async def send_command(self, frames: bytes) -> None:
        replies = [line.split(b" ")[2].decode() for line in frames.split(b"\r\n") if line.startswith(b"HPUB ")]
        self.writes.append(len(replies))
        for reply in replies:
            self.sent(reply)

    async def flush_pending(self) -> None:
        return None

    async def publish(self, subject: str, payload: bytes, reply: str, headers: Any) -> None:
        self.writes.append(1)
        self.sent(reply)


def batch(count: int) -> list[tuple[str, bytes, str]]:
    return probe.prepare_batch(["tapio.events.probe"], count, "run", "tapio-probe")


def ok(index: int) -> bytes:
    return b'{"stream":"TAPIO_EVENTS","seq":%d}' % index


@pytest.mark.parametrize("internals", [True, False])
def test_every_message_is_acked_within_the_window(internals: bool) -> None:
    client = AckingClient(ok, internals)
    result = asyncio.run(probe.publish_windowed(client, batch(50), 8, 5.0))
    assert (result["acked"], result["errors"], result["duplicates"], result["timed_out"]) == (50, 0, 0, False)
    assert result["messages"] == 50 and result["window"] == 8 and len(result["latency_ms"]) == 4
    assert client.most_in_flight <= 8 and client.unsubscribed
    assert result["burst_writes"] is internals and result["ack_shortcut"] is internals
    if internals:  # the first burst fills the window; later ones refill at least its free half
        assert client.writes[0] == 8 and all(size >= 4 for size in client.writes[1:-1]) and sum(client.writes) == 50


def test_errors_and_duplicates_are_counted_and_the_first_error_kept() -> None:
    def answer(index: int) -> bytes:
        if index in (3, 9):
            return b'{"error":{"code":503,"description":"no responders %d"}}' % index
        return b'{"stream":"S","seq":1,"duplicate":true}' if index == 4 else ok(index)

    result = asyncio.run(probe.publish_windowed(AckingClient(answer, True), batch(12), 4, 5.0))
    assert (result["acked"], result["errors"], result["duplicates"]) == (12, 2, 1)
    assert result["first_error"] == '{"error":{"code":503,"description":"no responders 3"}}'


def test_a_missing_ack_ends_the_run_as_timed_out() -> None:
    client = AckingClient(lambda index: None if index == 5 else ok(index), True)
    result = asyncio.run(probe.publish_windowed(client, batch(6), 10, 0.05))
    assert result["timed_out"] is True and result["acked"] == 5 and client.unsubscribed


def test_an_event_over_max_payload_is_refused_before_anything_is_sent() -> None:
    client = AckingClient(ok, True)
    client.max_payload = 10
    with pytest.raises(ValueError, match=r"^3 event\(s\) exceed the server's max_payload of 10 bytes$"):
        asyncio.run(probe.publish_windowed(client, batch(3), 4, 1.0))
    assert client.writes == [] and client.sub is None
