"""One nats-server of a test's own, beside the lab's cluster, for what the lab's servers do not
have (token-only auth, a JetStream domain and server tags, an older release): started on
loopback ports found free at start, JetStream on, ready once /healthz says JetStream answers,
stopped by the test's fixture.
"""
from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from conftest import VENV_BIN

NATS_SERVER = VENV_BIN / "nats-server"
# (client port, monitor port, JetStream store directory) -> the server's configuration
ConfigText = Callable[[int, int, Path], str]


def free_port(taken: tuple[int, ...] = ()) -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now (and not one of *taken*)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class StandaloneServer:
    url: str
    monitor_url: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_nats(directory: Path, config: ConfigText, what: str, binary: Path = NATS_SERVER,
               ready_timeout: float = 30.0, attempts: int = 3) -> StandaloneServer:
    """Start *binary* with *config*; return once JetStream answers. The configuration is
    checked with ``nats-server -t`` first; if another process takes a port between the search
    and the bind, the next attempt picks new ones."""
    store = directory / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for attempt in range(attempts):
        client_port = free_port()
        monitor_port = free_port((client_port,))
        conf = directory / "nats.conf"
        conf.write_text(config(client_port, monitor_port, store))
        conf.chmod(0o600)
        checked = subprocess.run([str(binary), "-t", "-c", str(conf)], capture_output=True, text=True,
                                 timeout=30, check=False)
        if checked.returncode != 0:
            raise RuntimeError(f"nats-server -t rejected {conf}: {checked.stdout}{checked.stderr}")
        log = directory / f"nats-server-{attempt}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen([str(binary), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        server = StandaloneServer(f"nats://127.0.0.1:{client_port}", f"http://127.0.0.1:{monitor_port}", process, log)
        deadline = time.monotonic() + ready_timeout
        while process.poll() is None and time.monotonic() < deadline:
            if http_ok(f"{server.monitor_url}/healthz?js-enabled-only=true"):
                return server
            time.sleep(0.1)
        server.stop()
        failures.append(f"attempt {attempt + 1} (ports {client_port}/{monitor_port}, exit {process.returncode}):\n"
                        f"{server.log_tail()}")
        if "address already in use" not in server.log_tail().lower():
            break
    raise RuntimeError(f"nats-server {what} did not become ready:\n" + "\n".join(failures))
