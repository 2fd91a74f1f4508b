"""Loopback HTTP control and report endpoint (standard library only).

GET  /healthz                 200 once the first pod poll succeeded, else 503
GET  /ledger[?settle=S]       per-source counts; with settle, waits up to S s for in-flight events
GET  /timeline[?since=UNIX]   per-second buckets per source
GET  /status                  emulated pods, modes, publisher/consumer state
POST /pause | /resume         stop / restart emitting (in-flight events keep flowing)
POST /drain[?timeout=S]       pause, then settle (default 30 s); returns the final ledger
POST /reset                   start a new ledger epoch (new run id); returns the old ledger
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from tapio_sim.sim import Simulator

log = logging.getLogger("tapio_sim.http")

MAX_SETTLE = 600.0


def _float(query: dict[str, list[str]], key: str, default: float | None) -> float | None:
    if key not in query:
        return default
    value = float(query[key][0])
    if value < 0 or value > MAX_SETTLE:
        raise ValueError(f"{key} must be between 0 and {MAX_SETTLE}")
    return value


async def route(sim: Simulator, method: str, target: str) -> tuple[int, Any]:
    url = urlsplit(target)
    query = parse_qs(url.query)
    path = url.path.rstrip("/") or "/"
    if method == "GET" and path == "/healthz":
        ok = sim.polls > 0
        return (200 if ok else 503), {"ok": ok, "polls": sim.polls, "run_id": sim.ledger.run_id,
                                      "last_poll_error": sim.last_poll_error}
    if method == "GET" and path == "/ledger":
        settle = _float(query, "settle", None)
        if settle is None:
            return 200, sim.report(None)
        return 200, await sim.settle(settle)
    if method == "GET" and path == "/timeline":
        since = float(query["since"][0]) if "since" in query else None
        rows = sim.ledger.timeline_rows(since)
        return 200, {"run_id": sim.ledger.run_id, "bucket_seconds": 1,
                     "fields": ["emitted", "received_direct", "received_nats", "dropped", "duplicates"],
                     "buckets": rows}
    if method == "GET" and path == "/status":
        return 200, sim.status()
    if method == "POST" and path == "/pause":
        sim.paused = True
        return 200, {"paused": True}
    if method == "POST" and path == "/resume":
        sim.paused = False
        return 200, {"paused": False}
    if method == "POST" and path == "/drain":
        return 200, await sim.drain(_float(query, "timeout", 30.0) or 0.0)
    if method == "POST" and path == "/reset":
        return 200, sim.reset()
    if path in {"/healthz", "/ledger", "/timeline", "/status", "/pause", "/resume", "/drain", "/reset"}:
        return 405, {"error": f"{method} not allowed on {path}"}
    return 404, {"error": f"no such endpoint {path}"}


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}


async def handle(sim: Simulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request = await asyncio.wait_for(reader.readline(), timeout=10)
        parts = request.decode("latin-1").split()
        # Headers (and any body) are read and ignored: the API takes its input in the query.
        length = 0
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        if length:
            await asyncio.wait_for(reader.readexactly(min(length, 65536)), timeout=10)
        if len(parts) < 2:
            status, body = 400, {"error": "bad request line"}
        else:
            try:
                status, body = await route(sim, parts[0].upper(), parts[1])
            except ValueError as exc:
                status, body = 400, {"error": str(exc)}
            except Exception as exc:  # noqa: BLE001 - report, keep serving
                log.exception("HTTP %s failed", parts[1])
                status, body = 500, {"error": f"{type(exc).__name__}: {exc}"}
        payload = json.dumps(body, indent=1).encode()
        writer.write(f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
        await writer.drain()
    except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(sim: Simulator, host: str, port: int) -> asyncio.AbstractServer:
    return await asyncio.start_server(lambda r, w: handle(sim, r, w), host=host, port=port)
