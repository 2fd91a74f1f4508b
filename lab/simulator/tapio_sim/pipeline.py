"""The emulated pipeline pod's NATS side: the durable pull consumer, explicit ack.

A second correlation engine's pod (the plan's A/B) runs the same consumer on the durable
consumer its env names, recording into that engine's own ledger (ledger.EngineLedger), so
what it reads never counts as received by the pipeline.

Each Ready pipeline pod whose env says NATS runs one of these (a real pipeline also keeps
accepting gRPC while collectors migrate: the direct channel lives in the Simulator and is
open while any pipeline pod is Ready). A message is acked after the ledger recorded it, and
Nak'ed when it cannot be decoded or recorded. A stopping pod finishes (and acks) its current
batch before it disconnects, so a pipeline roll does not make JetStream redeliver.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import nats
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError

from tapio_sim.events import decode
from tapio_sim.ledger import EngineLedger
from tapio_sim.tls import inbox_option, tls_context

if TYPE_CHECKING:
    from tapio_sim.sim import Simulator

log = logging.getLogger("tapio_sim.pipeline")


def stream_sequence(msg: Any) -> int | None:
    """The stream sequence of a JetStream message (from its ack subject), else None."""
    try:
        return int(msg.metadata.sequence.stream)
    except Exception:  # noqa: BLE001 - not a JetStream message
        return None


class PipelineConsumer:
    def __init__(self, sim: Simulator, pod: Any, servers: list[str],
                 credentials: tuple[str | None, str | None], ca_pem: str | None = None,
                 inbox_prefix: str | None = None, consumer: str | None = None,
                 engine: EngineLedger | None = None) -> None:
        self.sim = sim
        self.engine = engine
        self.ca_pem = ca_pem
        self.inbox_prefix = inbox_prefix
        self.pod = pod
        self.servers = servers
        self.user, self.password = credentials
        ncfg = sim.cfg["nats"]
        self.stream = ncfg["stream"]
        self.consumer = consumer or ncfg["consumer"]
        self.batch = int(ncfg["fetch_batch"])
        self.fetch_timeout = float(ncfg["fetch_timeout"])
        self.concurrency = max(1, int(ncfg.get("fetch_concurrency", 1)))
        self.mode = str(ncfg.get("consume_mode", "continuous"))
        self.pull_expires = float(ncfg.get("pull_expires", 5.0))
        self.outstanding = 0
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        self.nc: Any = None
        self.received = 0
        self.acked = 0
        self.naked = 0
        self.state = "starting"
        self.last_error = ""
        self.started = time.time()
        self.fetches = 0
        self.empty_fetches = 0
        self.fetch_seconds = 0.0
        self.handle_seconds = 0.0

    def describe(self) -> dict[str, Any]:
        return {"pod": self.pod.name, "engine": self.engine.name if self.engine else None, "uid": self.pod.uid,
                "stream": self.stream, "consumer": self.consumer, "user": self.user,
                "state": self.state, "received": self.received, "acked": self.acked, "naked": self.naked,
                "last_error": self.last_error, "servers": self.servers, "started": self.started,
                "fetches": self.fetches, "empty_fetches": self.empty_fetches,
                "avg_batch": round(self.received / self.fetches, 1) if self.fetches else 0,
                "avg_fetch_ms": round(1000 * self.fetch_seconds / self.fetches, 1) if self.fetches else 0,
                "avg_handle_ms": round(1000 * self.handle_seconds / self.fetches, 1) if self.fetches else 0}

    @property
    def role(self) -> str:
        return f"engine {self.engine.name}" if self.engine else "pipeline"

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pipeline-{self.pod.name}")

    async def _connect(self) -> None:
        self.nc = await nats.connect(
            servers=self.servers, user=self.user, password=self.password, tls=tls_context(self.ca_pem),
            name=f"sim-{self.pod.name}", max_reconnect_attempts=-1, reconnect_time_wait=0.5,
            connect_timeout=5, error_cb=self._on_error, **inbox_option(self.inbox_prefix))

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"

    async def _run(self) -> None:
        while not self.stopping:
            try:
                if self.nc is None or self.nc.is_closed:
                    await self._connect()
                js = self.nc.jetstream()
                try:
                    await js.consumer_info(self.stream, self.consumer)
                except NotFoundError:
                    if self.state != "waiting-for-consumer":
                        log.warning("pipeline pod %s: consumer %s on stream %s not found; retrying",
                                    self.pod.name, self.consumer, self.stream)
                    self.state = "waiting-for-consumer"
                    await asyncio.sleep(1.0)
                    continue
                self.state = "consuming"
                log.info("pipeline pod %s consuming %s/%s (%s pulls of %d)", self.pod.name, self.stream,
                         self.consumer, self.mode if self.mode == "continuous" else self.concurrency, self.batch)
                if self.mode == "continuous":
                    await self._continuous(self.nc)
                    continue
                psubs = [await js.pull_subscribe_bind(durable=self.consumer, stream=self.stream)
                         for _ in range(self.concurrency)]
                try:
                    await asyncio.gather(*(self._fetch_loop(psub) for psub in psubs))
                finally:
                    for psub in psubs:
                        try:
                            await psub.unsubscribe()
                        except Exception:  # noqa: BLE001,S110 - connection already gone
                            pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the emulated pod alive, as a real one restarts
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.state = "error"
                log.warning("pipeline pod %s: %s; retrying", self.pod.name, self.last_error)
                await asyncio.sleep(1.0)
        self.state = "stopped"

    async def _continuous(self, nc: Any) -> None:
        """Continuous pull, as nats.go's Consume(): pull requests of `fetch_batch` with an
        expiry, topped up when half of the requested messages arrived, so there is no
        round-trip gap between batches (a fetch loop waits a full round trip per batch,
        ~230 ms on the loaded lab machine)."""
        api = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}"
        inbox = nc.new_inbox()
        self.outstanding = 0
        last_activity = time.monotonic()
        gone = asyncio.Event()

        async def pull(count: int) -> None:
            body = {"batch": count, "expires": int(self.pull_expires * 1e9)}
            self.outstanding += count
            self.fetches += 1
            await nc.publish(api, json.dumps(body).encode(), reply=inbox)

        async def on_msg(msg: Any) -> None:
            nonlocal last_activity
            last_activity = time.monotonic()
            status = (msg.headers or {}).get("Status") if not msg.data else None
            if status:
                if status == "100":
                    return  # idle heartbeat
                # 404 no messages / 408 request expired / 409 limits: that request is over.
                pending = (msg.headers or {}).get("Nats-Pending-Messages")
                self.outstanding = max(0, self.outstanding - int(pending)) if pending else 0
                if status in ("409", "503"):
                    self.last_error = f"{status} {(msg.headers or {}).get('Description', '')}".strip()
                    if status == "503" or "deleted" in self.last_error.lower():
                        gone.set()  # consumer or stream gone: back to waiting for it
                return
            self.outstanding = max(0, self.outstanding - 1)
            if self.stopping:
                # The pod is going away: hand the message straight back (not recorded), so
                # JetStream redelivers it to another pipeline pod now, not after ack_wait.
                await msg.nak()
                return
            await self._handle(msg)
            if not self.stopping and self.outstanding <= self.batch // 2:
                await pull(self.batch - self.outstanding)

        sub = await nc.subscribe(inbox, cb=on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1)
        try:
            await pull(self.batch)
            while not self.stopping:
                await asyncio.sleep(0.2)
                if nc.is_closed:
                    raise ConnectionError("connection closed")
                if gone.is_set():
                    raise ConnectionError(f"consumer gone: {self.last_error}")
                quiet = time.monotonic() - last_activity
                if self.outstanding == 0 or quiet > self.pull_expires + 2:
                    # The request ended (or its end was missed across a reconnect): pull again.
                    self.outstanding = 0
                    last_activity = time.monotonic()
                    await pull(self.batch)
        finally:
            # Stop pulling. Messages of the pull request still open are Nak'ed as they come,
            # until the request is used up or has expired; then drain the subscription.
            deadline = time.monotonic() + self.pull_expires + 1
            while (self.outstanding > 0 and not gone.is_set() and not nc.is_closed
                   and time.monotonic() < deadline):
                await asyncio.sleep(0.1)
            try:
                await sub.drain()
            except Exception:  # noqa: BLE001,S110 - connection already gone
                pass

    async def _fetch_loop(self, psub: Any) -> None:
        # Several pull requests in flight hide the round trip (which grows on a loaded
        # machine); each batch is recorded and acked before the next pull.
        while not self.stopping:
            started = time.monotonic()
            try:
                msgs = await psub.fetch(self.batch, timeout=self.fetch_timeout)
            except (NatsTimeoutError, asyncio.TimeoutError):
                self.empty_fetches += 1
                continue
            fetched = time.monotonic()
            for msg in msgs:
                await self._handle(msg)
            self.fetches += 1
            self.fetch_seconds += fetched - started
            self.handle_seconds += time.monotonic() - fetched

    async def _handle(self, msg: Any) -> None:
        self.received += 1
        try:
            decoded = decode(msg.data)
            if self.engine is not None:
                self.engine.receive(decoded, self.sim.ledger.run_id, stream_sequence(msg))
            elif decoded is None:
                self.sim.ledger.foreign += 1  # someone else's event (a canary): processed, acked
            else:
                source, seq, ev_id, run_id = decoded
                self.sim.ledger.receive(source, seq, "nats", ev_id, run_id)
        except Exception as exc:  # noqa: BLE001 - any failure to process means Nak (as the seed does)
            self.last_error = f"processing: {exc}"
            self.naked += 1
            await msg.nak(delay=5)  # delayed, so a poison message does not spin
            return
        await msg.ack()
        self.acked += 1

    async def stop(self) -> None:
        self.stopping = True
        if self.task:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout=max(self.fetch_timeout, self.pull_expires) + 10)
            except asyncio.TimeoutError:
                self.task.cancel()
                await asyncio.gather(self.task, return_exceptions=True)
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.drain()  # flushes the last acks
            except Exception as exc:  # noqa: BLE001
                log.debug("pipeline pod %s: drain: %s", self.pod.name, exc)
        log.info("%s pod %s stopped consuming after %d messages", self.role, self.pod.name, self.received)
