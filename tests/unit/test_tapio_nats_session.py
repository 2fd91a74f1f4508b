"""The engine's NATS session (module_utils/tapio_nats_session.py) when a server goes away.

No NATS server here: a stand-in client plays what nats-py 2.16 does when the server it is
connected to dies (SIGKILL, a lost node): the connection closes (closed_cb, ``last_error``
UnexpectedEOF), a request already sent is left pending until its own timeout, and a request
on the closed connection raises ConnectionClosedError. tests/integration/
test_migration_nats_node_loss.py kills a real server.
"""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import urlparse

import nats.errors
import pytest

from module_utils_loader import load_module_utils

load_module_utils("tapio_nats_config")
tapio_nats = load_module_utils("tapio_nats")
session_module = load_module_utils("tapio_nats_session")

PARAMS = {"servers": ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"], "api_timeout": 0.5,
          "connect_timeout": 1.0, "kube_port_forward": None}
ANSWER = b'{"config": {"name": "pipeline"}, "num_pending": 0}'


class Client:
    """A connection whose requests follow a script: each entry is a coroutine function run
    for one request (it may close the connection, hang, raise or answer)."""

    def __init__(self, port: int, script: list[Callable[["Client", float], Awaitable[Any]]],
                 on_closed: Optional[Callable[[], Awaitable[None]]]) -> None:
        self.connected_url = urlparse(f"nats://127.0.0.1:{port}")
        self.script, self.on_closed = list(script), on_closed
        self.is_closed = False
        self.last_error: Optional[Exception] = None
        self.abandoned = 0  # pending requests cancelled before their timeout

    async def request(self, subject: str, data: bytes, timeout: float) -> Any:
        if self.is_closed:
            raise nats.errors.ConnectionClosedError
        return await self.script.pop(0)(self, timeout)

    async def lose(self) -> None:
        """The server is gone: nats-py reads EOF, closes, calls closed_cb."""
        self.is_closed, self.last_error = True, nats.errors.UnexpectedEOF()
        if self.on_closed is not None:
            await self.on_closed()

    async def close(self) -> None:
        self.is_closed = True


async def answer(client: Client, timeout: float) -> Any:
    return SimpleNamespace(data=ANSWER)


async def lost_while_pending(client: Client, timeout: float) -> Any:
    """Sent, then the server dies: nats-py leaves the request waiting until its timeout."""
    asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(client.lose()))
    try:
        await asyncio.sleep(timeout)
    except asyncio.CancelledError:
        client.abandoned += 1
        raise
    raise nats.errors.TimeoutError


async def election_timeout(client: Client, timeout: float) -> Any:
    raise nats.errors.TimeoutError


async def closed_on_send(client: Client, timeout: float) -> Any:
    await client.lose()
    raise nats.errors.ConnectionClosedError


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Connections handed out in order, each on the next port, with the next script
    (``scripts``); ``opened`` lists them."""
    scripts: list[list[Callable[[Client, float], Awaitable[Any]]]] = []
    opened: list[Client] = []

    async def open_connection(params: dict[str, Any],
                              on_closed: Optional[Callable[[], Awaitable[None]]] = None) -> Client:
        client = Client(4222 + len(opened), scripts.pop(0), on_closed)
        opened.append(client)
        return client

    monkeypatch.setattr(session_module, "open_connection", open_connection)
    return SimpleNamespace(scripts=scripts, opened=opened)


def run(servers: SimpleNamespace, *scripts: list[Callable[[Client, float], Awaitable[Any]]]) -> tuple[Any, list[str]]:
    servers.scripts.extend(scripts)
    steps: list[str] = []
    session = session_module.NatsSession(dict(PARAMS), log=steps.append, sleep=lambda seconds: None)

    async def info(api: Any) -> Any:
        return await api.consumer_info("TAPIO_EVENTS", "pipeline")

    try:
        return session.call(info, "consumer TAPIO_EVENTS/pipeline"), steps
    finally:
        session.close()


def test_a_request_pending_when_its_server_dies_is_sent_again_at_once_naming_the_loss(servers: SimpleNamespace) -> None:
    """Without the session watching the connection, the request waited out api_timeout and
    was logged as a JetStream API timeout, hiding the lost server."""
    result, steps = run(servers, [lost_while_pending], [answer])
    assert result["config"]["name"] == "pipeline"
    assert servers.opened[0].abandoned == 1, "the request on the dead connection waited for its timeout"
    assert steps == ["consumer TAPIO_EVENTS/pipeline: the NATS connection to nats://127.0.0.1:4222 was lost "
                     "(UnexpectedEOF: nats: unexpected EOF); connecting again (1 of 3)"], steps


def test_a_connection_lost_after_a_leader_election_timeout_is_connected_again(servers: SimpleNamespace) -> None:
    """A timeout (an election) and then the connection's loss are two different faults: the
    session used to count them together and fail with "closed twice" after one loss."""
    result, steps = run(servers, [election_timeout, closed_on_send], [answer])
    assert result["num_pending"] == 0
    assert len(steps) == 2, steps
    assert "timed out after 0.5s; retrying in 1s (attempt 1 of 5)" in steps[0]
    assert "the NATS connection to nats://127.0.0.1:4222 was lost" in steps[1] and "connecting again" in steps[1]


def test_reconnecting_is_bounded_and_the_error_names_the_server_and_the_cause(servers: SimpleNamespace) -> None:
    with pytest.raises(tapio_nats.NatsModuleError) as failed:
        run(servers, *([closed_on_send] for _ in range(4)))
    assert str(failed.value) == ("consumer TAPIO_EVENTS/pipeline: the NATS connection to nats://127.0.0.1:4225 was "
                                 "lost (UnexpectedEOF: nats: unexpected EOF), 4 times in this call; giving up")
    assert len(servers.opened) == 4
