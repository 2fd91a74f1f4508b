"""Management connections skip a server that does not answer (module_utils/tapio_nats.py).

nats-py gives up after the first server of its pool when reconnecting is off, and shuffles the
pool: with one server of three gone (a lost node, or a port-forward to a pod whose kubelet is
gone, which accepts and then closes) a call failed at random. Each server is now tried on its
own: against the lab's real cluster, with two dead addresses in front, every connect succeeds.
"""
from __future__ import annotations

import asyncio
import socket
import threading
from typing import Iterator

import pytest

from conftest import NatsLab
from module_utils_loader import load_module_utils

pytestmark = pytest.mark.integration


@pytest.fixture()
def dead_forward() -> Iterator[str]:
    """A listener that accepts and closes at once, as a port-forward to a lost pod does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"nats://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"nats://127.0.0.1:{sock.getsockname()[1]}"


def test_a_dead_server_in_the_list_is_skipped(nats_lab: NatsLab, dead_forward: str) -> None:
    load_module_utils("tapio_nats_config")
    tapio_nats = load_module_utils("tapio_nats")
    params = {"servers": [dead_forward, closed_port(), nats_lab.servers[0]], "user": nats_lab.user,
              "password": nats_lab.password, "connect_timeout": 2.0}

    async def connect_and_close() -> str:
        nc = await tapio_nats.open_connection(params)
        try:
            return nc.connected_url.geturl()
        finally:
            await nc.close()

    for _ in range(6):  # the order is random: each time the live server is found
        assert asyncio.run(connect_and_close()) == nats_lab.servers[0]


def test_no_live_server_names_every_server_tried(dead_forward: str) -> None:
    load_module_utils("tapio_nats_config")
    tapio_nats = load_module_utils("tapio_nats")
    dead = [dead_forward, closed_port()]
    params = {"servers": dead, "user": "tapio", "password": "x", "connect_timeout": 2.0}
    with pytest.raises(tapio_nats.NatsModuleError) as error:
        asyncio.run(tapio_nats.open_connection(params))
    assert f"cannot connect to NATS servers tried ({', '.join(dead)})" in str(error.value)
