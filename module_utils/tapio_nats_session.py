# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A synchronous NATS session for the migration engine, which is otherwise synchronous.

It connects on first use (so a phase that needs no NATS never connects), through the same
``nats_endpoint``/``open_connection`` as every nats_* module (so the same connection options,
including ``kube_port_forward``; with ``all_pods`` the pods are resolved once per engine call
and every ready pod's forward is in the server list, so a lost connection is opened again
through another pod), and keeps one event loop for the phase. JetStream API
timeouts and no-responders, which a cluster answers while it elects a leader, are retried,
bounded and logged. A lost connection (its server died, or closed it while the engine waited
on Kubernetes) is opened again, to any server of the list, bounded and logged with the
server and the cause; it is counted apart from the retries, as it is another fault.

nats-py leaves a request pending until its own timeout when the connection closes under it,
so every call also watches the connection: a request on a dead server fails at once as a
lost connection instead of waiting out ``api_timeout`` and reading as a JetStream timeout.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Awaitable, Callable, Optional, TypeVar

from ansible.module_utils.tapio_nats import JetStreamApi, NatsModuleError, nats_endpoint, open_connection, redact_url
from ansible.module_utils.tapio_wait import Retries, retry

try:
    import nats.errors
except ImportError:  # pragma: no cover - tapio_nats reports the missing library
    pass

T = TypeVar("T")
# Messages of the answers a JetStream cluster gives while a leader is being elected.
TRANSIENT_MARKERS = ("timed out", "no responders", "JetStream system temporarily unavailable",
                     "cluster not available")


def is_transient(error: BaseException) -> bool:
    text = str(error)
    return any(marker.lower() in text.lower() for marker in TRANSIENT_MARKERS)


class ConnectFailed(NatsModuleError):
    """Connecting failed: the servers' answer, not a leader election, so never retried here."""


class ConnectionLost(Exception):
    """The phase's connection closed under a call; the message names the server and the cause."""


class NatsSession:
    """``call(fn)`` runs ``await fn(api)`` on the phase's connection."""

    def __init__(self, params: dict[str, Any], log: Callable[[str], None], retries: int = 5,
                 backoff: float = 1.0, sleep: Callable[[float], None] = time.sleep, reconnects: int = 3) -> None:
        self.params, self.log, self.retries, self.backoff, self.sleep = params, log, retries, backoff, sleep
        self.reconnects = reconnects
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.nc: Any = None
        self.closed: Optional[asyncio.Event] = None
        self.server = "NATS"
        self.stack = contextlib.ExitStack()
        self.endpoint: Optional[dict[str, Any]] = None

    def _connect(self) -> JetStreamApi:
        try:
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                self.endpoint = self.stack.enter_context(nats_endpoint(self.params))
            if self.nc is None or self.nc.is_closed:
                self.nc, self.closed = self.loop.run_until_complete(self._open())
                url = getattr(self.nc, "connected_url", None)
                self.server = redact_url(url.geturl()) if url is not None else "NATS"
        except NatsModuleError as error:
            causes = (self.endpoint or {}).get("forward_causes")
            found = causes() if causes and str(error).startswith("cannot connect") else ""
            raise ConnectFailed(f"{error} (through port-forwards: {found})" if found else str(error),
                                error.result) from error
        return JetStreamApi(self.nc, self.params["api_timeout"], self.params.get("domain"))

    async def _open(self) -> tuple[Any, asyncio.Event]:
        """A connection and the event its closing sets (made in the session's loop)."""
        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        return await open_connection(self.endpoint or self.params, on_closed=on_closed), closed

    async def _watched(self, work: Awaitable[T]) -> T:
        """*work*'s result, or ConnectionClosedError as soon as the connection closes under it."""
        assert self.closed is not None
        task = asyncio.ensure_future(work)
        lost = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise nats.errors.ConnectionClosedError
        return task.result()

    def _loss(self) -> str:
        error = getattr(self.nc, "last_error", None)
        cause = f"{type(error).__name__}: {error}" if error is not None else "closed"
        return f"the NATS connection to {self.server} was lost ({cause})"

    def _once(self, fn: Callable[[JetStreamApi], Awaitable[T]]) -> T:
        """One try on the phase's connection (opened again if it was lost)."""
        api = self._connect()
        try:
            assert self.loop is not None
            return self.loop.run_until_complete(self._watched(fn(api)))
        except nats.errors.ConnectionClosedError:
            loss = self._loss()
            self.nc = None
            raise ConnectionLost(loss) from None

    def call(self, fn: Callable[[JetStreamApi], Awaitable[T]], what: str) -> T:
        """``await fn(api)``'s answer. A lost connection and a transient answer are two
        faults, each with its own bound: reconnects at once, retries after a pause."""
        transient, lost = Retries(self.retries, self.backoff), Retries(self.reconnects)

        def retries_for(error: Exception) -> Optional[Retries]:
            if isinstance(error, ConnectionLost):
                return lost
            if isinstance(error, ConnectFailed) or not isinstance(error, NatsModuleError):
                return None
            return transient if is_transient(error) else None

        def line(error: Exception, retries: Retries, pause: float) -> str:
            if retries is lost:
                return f"{what}: {error}; connecting again ({lost.used} of {self.reconnects})"
            return f"{what}: {error}; retrying in {pause:g}s (attempt {transient.used} of {self.retries})"

        try:
            return retry(lambda: self._once(fn), retries_for, line, self.log, self.sleep)
        except ConnectionLost as error:
            raise NatsModuleError(f"{what}: {error}, {lost.used + 1} times in this call; giving up") from None

    def close(self) -> None:
        try:
            if self.nc is not None and not self.nc.is_closed and self.loop is not None:
                self.loop.run_until_complete(asyncio.wait_for(self.nc.close(), timeout=5))
        except (asyncio.TimeoutError, OSError, Exception):  # closing is best effort
            pass
        finally:
            self.stack.close()
            if self.loop is not None:
                self.loop.close()
