# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A synchronous NATS session for the migration engine, which is otherwise synchronous.

It connects on first use (so a phase that needs no NATS never connects), through the same
``nats_endpoint``/``open_connection`` as every nats_* module (so the same connection options,
including ``kube_port_forward``), and keeps one event loop for the phase. JetStream API
timeouts and no-responders, which a cluster answers while it elects a leader, are retried,
bounded and logged; a connection the server closed while the engine waited on Kubernetes is
opened again once.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Awaitable, Callable, Optional, TypeVar

from ansible.module_utils.tapio_nats import JetStreamApi, NatsModuleError, nats_endpoint, open_connection

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


class NatsSession:
    """``call(fn)`` runs ``await fn(api)`` on the phase's connection."""

    def __init__(self, params: dict[str, Any], log: Callable[[str], None], retries: int = 5,
                 backoff: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.params, self.log, self.retries, self.backoff, self.sleep = params, log, retries, backoff, sleep
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.nc: Any = None
        self.stack = contextlib.ExitStack()
        self.endpoint: Optional[dict[str, Any]] = None

    def _connect(self) -> JetStreamApi:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            self.endpoint = self.stack.enter_context(nats_endpoint(self.params))
        if self.nc is None or self.nc.is_closed:
            self.nc = self.loop.run_until_complete(open_connection(self.endpoint or self.params))
        return JetStreamApi(self.nc, self.params["api_timeout"])

    def call(self, fn: Callable[[JetStreamApi], Awaitable[T]], what: str) -> T:
        attempt = 0
        while True:
            attempt += 1
            api = self._connect()
            try:
                assert self.loop is not None
                return self.loop.run_until_complete(fn(api))
            except nats.errors.ConnectionClosedError:
                self.nc = None
                if attempt > 1:
                    raise NatsModuleError(f"{what}: the NATS connection closed twice") from None
                self.log(f"{what}: the NATS connection was closed; connecting again")
                continue
            except NatsModuleError as error:
                if not is_transient(error) or attempt > self.retries:
                    raise
                wait = self.backoff * 2 ** (attempt - 1)
                self.log(f"{what}: {error}; retrying in {wait:g}s (attempt {attempt} of {self.retries})")
                self.sleep(wait)

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
