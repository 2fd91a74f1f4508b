# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Configuration reloads through the system account, without restarting a server.

nats-server answers ``$SYS.REQ.SERVER.PING.VARZ`` from every server its cluster reaches and
reloads its configuration file on ``$SYS.REQ.SERVER.<id>.RELOAD``. The toolkit writes a
revision into each configuration (``server_metadata``, shown in /varz); a server whose
revision differs has not loaded the latest files yet, either because it has not been asked
or because the kubelet has not yet projected them into its volume, so it is asked again
until every server reports the revision.

During a route password change the servers that have reloaded and those that have not
cannot route to each other: each server URL is therefore asked on a connection of its own.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

REVISION_KEY = "tapio.io/config-revision"
PING_VARZ = "$SYS.REQ.SERVER.PING.VARZ"


@dataclass(frozen=True)
class ServerState:
    """What one server reported in its /varz over the system account."""

    server_id: str
    name: str
    revision: str
    config_load_time: str


def server_state(reply: dict[str, Any], key: str = REVISION_KEY) -> Optional[ServerState]:
    """A ServerState from a ``$SYS.REQ.SERVER.PING.VARZ`` reply, None for anything else."""
    server, data = reply.get("server") or {}, reply.get("data") or {}
    if not server.get("id"):
        return None
    return ServerState(server_id=server["id"], name=server.get("name") or server["id"],
                       revision=(data.get("metadata") or {}).get(key, ""),
                       config_load_time=data.get("config_load_time", ""))


def stale(states: dict[str, ServerState], revision: str) -> list[ServerState]:
    """The servers that have not loaded *revision*, by name."""
    return sorted((s for s in states.values() if s.revision != revision), key=lambda s: s.name)


def reload_problems(states: dict[str, ServerState], revision: str, expected_servers: int,
                    unreachable: list[str]) -> list[str]:
    """What keeps the reload from being complete: servers not seen, or not at *revision*."""
    problems = [f"{s.name} runs configuration revision {s.revision or '(none)'}, not {revision}"
                for s in stale(states, revision)]
    if len(states) < expected_servers:
        problems.append(f"{len(states)} of {expected_servers} servers answered over the system account"
                        + (f" ({'; '.join(unreachable)})" if unreachable else ""))
    return problems


def reload_error(reply: dict[str, Any]) -> str:
    """The server's refusal of a reload ('' when it reloaded)."""
    error = reply.get("error")
    if not error:
        return ""
    return str(error.get("description") or error) if isinstance(error, dict) else str(error)


async def gather_replies(nc: Any, subject: str, expected: int, timeout: float) -> list[dict[str, Any]]:
    """Publish an empty request on *subject* and collect JSON replies until *expected* have
    come or *timeout* seconds have passed (every server of the cluster answers a PING)."""
    replies: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def collect(msg: Any) -> None:
        try:
            replies.append(json.loads(msg.data or b"{}"))
        except ValueError:
            return
        if len(replies) >= expected:
            done.set()

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(subject, b"", reply=inbox)
        await nc.flush()
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except asyncio.TimeoutError:
            pass
    finally:
        await sub.unsubscribe()
    return replies


Request = Callable[[str, bytes, float], Awaitable[Any]]


async def reload_server(request: Request, state: ServerState, timeout: float) -> str:
    """Ask one server to reload; '' when it did, else its reason."""
    msg = await request(f"$SYS.REQ.SERVER.{state.server_id}.RELOAD", b"", timeout)
    return reload_error(json.loads(msg.data or b"{}"))
