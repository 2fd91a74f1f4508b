"""The emulated pipeline pod's NATS side: the durable pull consumer, explicit ack.

Each Ready pipeline pod whose env says NATS runs one of these (a real pipeline also keeps
accepting gRPC while collectors migrate: the direct channel lives in the Simulator and is
open while any pipeline pod is Ready). A message is acked after the ledger recorded it, and
Nak'ed when it cannot be decoded or recorded. A stopping pod finishes (and acks) its current
batch before it disconnects, so a pipeline roll does not make JetStream redeliver.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import nats
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError

from tapio_sim.events import decode

if TYPE_CHECKING:
    from tapio_sim.sim import Simulator

log = logging.getLogger("tapio_sim.pipeline")


class PipelineConsumer:
    def __init__(self, sim: Simulator, pod: Any, servers: list[str]) -> None:
        self.sim = sim
        self.pod = pod
        self.servers = servers
        ncfg = sim.cfg["nats"]
        self.stream = ncfg["stream"]
        self.consumer = ncfg["consumer"]
        self.batch = int(ncfg["fetch_batch"])
        self.fetch_timeout = float(ncfg["fetch_timeout"])
        self.concurrency = max(1, int(ncfg.get("fetch_concurrency", 1)))
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        self.nc: Any = None
        self.received = 0
        self.acked = 0
        self.naked = 0
        self.state = "starting"
        self.last_error = ""
        self.started = time.time()

    def describe(self) -> dict[str, Any]:
        return {"pod": self.pod.name, "uid": self.pod.uid, "stream": self.stream, "consumer": self.consumer,
                "state": self.state, "received": self.received, "acked": self.acked, "naked": self.naked,
                "last_error": self.last_error, "servers": self.servers, "started": self.started}

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pipeline-{self.pod.name}")

    async def _connect(self) -> None:
        ncfg = self.sim.cfg["nats"]
        self.nc = await nats.connect(
            servers=self.servers, user=ncfg.get("user") or None, password=ncfg.get("password") or None,
            name=f"sim-{self.pod.name}", max_reconnect_attempts=-1, reconnect_time_wait=0.5,
            connect_timeout=5, error_cb=self._on_error)

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
                psubs = [await js.pull_subscribe_bind(durable=self.consumer, stream=self.stream)
                         for _ in range(self.concurrency)]
                self.state = "consuming"
                log.info("pipeline pod %s consuming %s/%s (%d concurrent pulls of %d)", self.pod.name,
                         self.stream, self.consumer, self.concurrency, self.batch)
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

    async def _fetch_loop(self, psub: Any) -> None:
        # Several pull requests in flight hide the round trip (which grows on a loaded
        # machine); each batch is recorded and acked before the next pull.
        while not self.stopping:
            try:
                msgs = await psub.fetch(self.batch, timeout=self.fetch_timeout)
            except (NatsTimeoutError, asyncio.TimeoutError):
                continue
            for msg in msgs:
                await self._handle(msg)

    async def _handle(self, msg: Any) -> None:
        self.received += 1
        try:
            decoded = decode(msg.data)
            if decoded is None:
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
                await asyncio.wait_for(asyncio.shield(self.task), timeout=self.fetch_timeout + 10)
            except asyncio.TimeoutError:
                self.task.cancel()
                await asyncio.gather(self.task, return_exceptions=True)
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.drain()  # flushes the last acks
            except Exception as exc:  # noqa: BLE001
                log.debug("pipeline pod %s: drain: %s", self.pod.name, exc)
        log.info("pipeline pod %s stopped consuming after %d messages", self.pod.name, self.received)
