"""One emulated collector container: emits events at a rate, direct or through NATS.

NATS output publishes with plain `nc.publish(subject, data, reply=<inbox>.<seq>)` and counts
JetStream's acks asynchronously on one wildcard inbox subscription (one round trip per
event, as `js.publish` does, caps a Python client near 800 events/s). At most
`publish_window` events are un-acked; an event whose ack does not come within `ack_timeout`,
or whose ack is an error (or "no responders"), is republished with the same
`Nats-Msg-Id`, so JetStream de-duplicates a republish whose first copy was stored. Nothing
is dropped silently: a full backlog drops the event and the ledger records it, and a
stopping instance waits for every outstanding ack up to `stop_flush_timeout`, then records
what is still un-acked as abandoned.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import nats
from nats.errors import ConnectionClosedError, OutboundBufferLimitError

from tapio_sim.events import build_subject, encode, make_event
from tapio_sim.tls import inbox_option, tls_context

if TYPE_CHECKING:
    from tapio_sim.sim import Simulator

log = logging.getLogger("tapio_sim.collector")

TICK = 0.05  # seconds between emission batches (at most; see emit_tick)


def emit_tick(rate: float) -> float:
    """Seconds between a pod's emission batches: TICK, or half an event's interval when the
    pod emits fewer than 1/(2 TICK) events/s (up to 1 s). A lab of 1,500 pods at ~1.4 events/s
    each would otherwise wake 30,000 times a second to emit 2,000 events."""
    if rate <= 0:
        return 1.0
    return min(1.0, max(TICK, 0.5 / rate))


class SharedConnections:
    """`nats.connections: shared`: one NATS connection per server list, shared by every
    emulated pod that publishes there; each pod keeps its own inbox subscription, window,
    retries and flush. For labs of hundreds of nodes: one Python process cannot open a
    connection per pod fast enough (a 500-node rollout brings 500 new pods in two minutes,
    and nats-server closed the connects that missed its 2 s auth timeout)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.conns: dict[tuple[str, ...], Any] = {}
        self._lock = asyncio.Lock()
        self.last_error = ""

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("shared NATS connection: %s", self.last_error)

    async def get(self, servers: list[str], user: str | None, password: str | None,
                  ca_pem: str | None = None, inbox_prefix: str | None = None) -> Any:
        key = (*servers, user or "", password or "", ca_pem or "", inbox_prefix or "")
        async with self._lock:
            nc = self.conns.get(key)
            if nc is None or nc.is_closed:
                nc = self.conns[key] = await nats.connect(
                    servers=list(servers), user=user, password=password, tls=tls_context(ca_pem),
                    name=f"sim-shared-{len(self.conns)}", max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                    connect_timeout=5, pending_size=64 * 1024 * 1024, error_cb=self._on_error,
                    allow_reconnect=True, **inbox_option(inbox_prefix))
            return nc

    async def close(self) -> None:
        for nc in self.conns.values():
            try:
                await nc.close()
            except Exception as exc:  # noqa: BLE001 - closing; nothing left to save
                log.debug("shared connection close: %s", exc)
        self.conns.clear()


class NatsPublisher:
    def __init__(self, sim: Simulator, source: str, servers: list[str], name: str,
                 credentials: tuple[str | None, str | None] = (None, None), ca_pem: str | None = None,
                 inbox_prefix: str | None = None) -> None:
        ncfg = sim.cfg["nats"]
        self.ca_pem = ca_pem
        self.inbox_prefix = inbox_prefix
        self.sim = sim
        self.source = source
        self.servers = servers
        self.user, self.password = credentials
        self.name = name
        self.window = int(ncfg["publish_window"])
        self.max_backlog = int(ncfg["max_backlog"])
        self.ack_timeout = float(ncfg["ack_timeout"])
        # Entries carry the ledger they were emitted into: a POST /reset starts a new ledger
        # (new run id) while these are still in flight.
        self.backlog: deque[tuple[int, str, bytes, str, Any]] = deque()
        # token (str seq) -> [seq, subject, payload, msg_id, deadline, attempts, ledger]
        self.inflight: dict[str, list[Any]] = {}
        self.nc: Any = None
        self.shared = False
        self.sub: Any = None
        self.inbox = ""
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.acked = 0
        self.retries = 0
        self.last_error = ""
        self.closing = False

    async def start(self) -> None:
        if self.sim.shared_nats is not None:
            self.nc, self.shared = await self.sim.shared_nats.get(self.servers, self.user, self.password,
                                                                  self.ca_pem, self.inbox_prefix), True
        else:
            self.nc = await nats.connect(
                servers=self.servers, user=self.user, password=self.password, tls=tls_context(self.ca_pem),
                name=self.name, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=5,
                pending_size=8 * 1024 * 1024, error_cb=self._on_error, allow_reconnect=True,
                **inbox_option(self.inbox_prefix))
        self.inbox = self.nc.new_inbox()
        self.sub = await self.nc.subscribe(self.inbox + ".*", cb=self._on_reply, pending_msgs_limit=-1,
                                           pending_bytes_limit=-1)
        self._tasks = [asyncio.create_task(self._pump(), name=f"pump-{self.name}"),
                       asyncio.create_task(self._retry_loop(), name=f"retry-{self.name}")]

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("%s: NATS error: %s", self.name, self.last_error)

    def submit(self, seq: int, subject: str, payload: bytes, msg_id: str, ledger: Any) -> None:
        if len(self.backlog) >= self.max_backlog:
            ledger.drop_backpressure(self.source, seq)
            return
        self.backlog.append((seq, subject, payload, msg_id, ledger))
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self.backlog) + len(self.inflight)

    async def _send(self, token: str, entry: list[Any]) -> bool:
        try:
            await self.nc.publish(entry[1], entry[2], reply=f"{self.inbox}.{token}",
                                  headers={"Nats-Msg-Id": entry[3]})
            return True
        except (OutboundBufferLimitError, ConnectionClosedError, OSError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.backlog and len(self.inflight) < self.window:
                seq, subject, payload, msg_id, ledger = self.backlog.popleft()
                token = f"{ledger.run_id}-{seq}"
                entry = [seq, subject, payload, msg_id, time.monotonic() + self.ack_timeout, 1, ledger]
                self.inflight[token] = entry
                if not await self._send(token, entry):
                    entry[4] = time.monotonic() + 0.5  # retry soon
                    break
            if self.backlog and len(self.inflight) >= self.window:
                self._room.clear()
                await self._room.wait()
                self._wake.set()

    async def _on_reply(self, msg: Any) -> None:
        token = msg.subject.rsplit(".", 1)[-1]
        entry = self.inflight.get(token)
        if entry is None:
            return  # late ack of an event already acked (a republish's twin)
        ok = False
        duplicate = False
        if msg.data:
            try:
                body = json.loads(msg.data)
                ok = "error" not in body and "stream" in body
                duplicate = bool(body.get("duplicate"))
                if not ok:
                    self.last_error = str(body.get("error"))
            except ValueError:
                ok = False
        else:
            status = (msg.headers or {}).get("Status", "")
            self.last_error = f"status {status or '?'} (no responders: is the stream there?)"
        if ok:
            del self.inflight[token]
            self.acked += 1
            entry[6].stream_acked(self.source, duplicate)
            if len(self.inflight) < self.window:
                self._room.set()
        else:
            # Retry with the same Nats-Msg-Id, backing off (0.25 s, 0.5 s, ... up to ack_timeout)
            # so a missing stream does not turn into a storm of "no responders".
            backoff = min(self.ack_timeout, 0.25 * 2 ** min(entry[5] - 1, 6))
            entry[4] = min(entry[4], time.monotonic() + backoff)

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for token, entry in list(self.inflight.items()):
                if entry[4] <= now and token in self.inflight:
                    entry[5] += 1
                    entry[4] = now + self.ack_timeout
                    self.retries += 1
                    entry[6].source(self.source).publish_retries += 1
                    if not await self._send(token, entry):
                        entry[4] = now + 0.5

    async def close(self, flush_timeout: float) -> int:
        """Wait for every accepted event to be acked (or the timeout); returns abandoned."""
        self.closing = True
        deadline = time.monotonic() + flush_timeout
        while self.pending and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.05)
        abandoned = 0
        for entry in list(self.inflight.values()):
            entry[6].abandon(self.source, entry[0])
            abandoned += 1
        for seq, _subject, _payload, _msg_id, ledger in self.backlog:
            ledger.abandon(self.source, seq)
            abandoned += 1
        if abandoned:
            log.error("%s: %d events never got a positive ack within %.0fs: recorded as abandoned (%s)",
                      self.name, abandoned, flush_timeout, self.last_error)
        self.inflight.clear()
        self.backlog.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            if self.shared:
                await self.sub.unsubscribe()  # the connection stays for the other pods
            else:
                await self.nc.close()
        except Exception as exc:  # noqa: BLE001 - closing; nothing left to save
            log.debug("%s: close: %s", self.name, exc)
        return abandoned


class CollectorInstance:
    """The emulated container of one Ready collector pod."""

    def __init__(self, sim: Simulator, collector: dict[str, Any], pod: Any) -> None:
        self.sim = sim
        self.collector = collector
        self.pod = pod
        self.source = collector["source"]
        self.kind = collector["kind"]
        env_names = sim.cfg["env"]
        self.mode = "nats" if pod.env.get(env_names["mode"], "").strip().lower() == env_names["nats_value"] else "direct"
        self.subject_prefix = pod.env.get(env_names["subject_prefix"]) or collector.get("subject_prefix") or None
        self.nats_url = pod.env.get(env_names["nats_url"], "")
        self.rate = float(collector.get("rate") or sim.cfg["rate_per_pod"])
        self.publisher: NatsPublisher | None = None
        self.task: asyncio.Task[None] | None = None
        self.started = time.time()
        self.emitted = 0
        self.stopping = False
        self.rng = random.Random(pod.uid)
        self.lag_seconds = 0.0

    def describe(self) -> dict[str, Any]:
        info = {"pod": self.pod.name, "uid": self.pod.uid, "node": self.pod.node, "source": self.source,
                "collector": self.collector["name"], "mode": self.mode, "emitted": self.emitted,
                "rate": self.rate, "subject_prefix": self.subject_prefix, "started": self.started,
                "stopping": self.stopping}
        if self.publisher:
            info.update(nats_servers=self.publisher.servers, in_cluster_nats_url=self.nats_url,
                        nats_user=self.publisher.user,
                        pending=self.publisher.pending, inflight=len(self.publisher.inflight),
                        acked=self.publisher.acked, retries=self.publisher.retries,
                        last_error=self.publisher.last_error)
        return info

    async def start(self) -> None:
        if self.mode == "nats":
            # Resolved off the event loop: a cluster DNS timeout must not stall the other pods.
            servers = await asyncio.to_thread(self.sim.map_nats_url, self.nats_url, self.sim.cfg["namespace"])
            self.publisher = NatsPublisher(self.sim, self.source, servers, f"sim-{self.pod.name}",
                                           self.sim.nats_credentials(self.pod.env), self.sim.nats_ca(self.pod.env),
                                           self.sim.nats_inbox_prefix(self.pod.env))
            await self.publisher.start()
        self.task = asyncio.create_task(self._run(), name=f"emit-{self.pod.name}")
        log.info("collector pod %s (%s) started in %s mode%s", self.pod.name, self.source, self.mode,
                 f", subject prefix {self.subject_prefix}" if self.mode == "nats" else "")

    def _emit_one(self) -> None:
        sim = self.sim
        ledger = sim.ledger
        seq = ledger.emit(self.source, self.mode)
        event = make_event(kind=self.kind, source=self.source, seq=seq, run_id=ledger.run_id,
                           pod=self.pod.name, node=self.pod.node, workload=self.collector["name"], rng=self.rng)
        self.emitted += 1
        if self.publisher is None:
            # Direct (gRPC) output: the pipeline takes it if a pipeline pod is Ready; otherwise
            # the old client "logged the error and dropped it".
            if sim.direct_available():
                ledger.receive(self.source, seq, "direct")
            else:
                ledger.drop_direct(self.source, seq)
            return
        self.publisher.submit(seq, build_subject(event, self.subject_prefix), encode(event), event["id"], ledger)

    async def _run(self) -> None:
        owed = 0.0
        last = time.monotonic()
        tick = emit_tick(self.rate)
        while not self.stopping:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self.sim.paused:
                last = now
                owed = 0.0
                continue
            owed += (now - last) * self.rate
            last = now
            if owed > self.rate:  # more than a second behind: note it, do not burst
                self.lag_seconds += owed / self.rate - 1
                owed = self.rate
            count = int(owed)
            owed -= count
            for _ in range(count):
                self._emit_one()

    async def stop(self) -> int:
        """Stop emitting; flush what was accepted. Returns the number abandoned."""
        self.stopping = True
        if self.task:
            await asyncio.gather(self.task, return_exceptions=True)
        abandoned = 0
        if self.publisher:
            abandoned = await self.publisher.close(float(self.sim.cfg["stop_flush_timeout"]))
        log.info("collector pod %s (%s, %s mode) stopped after %d events%s", self.pod.name, self.source,
                 self.mode, self.emitted, f", {abandoned} abandoned" if abandoned else "")
        return abandoned
