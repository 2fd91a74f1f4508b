"""The engine's NATS session when the server it is connected to dies (issue 9).

The whole migration with a NATS server lost mid-cutover runs on the lab's real nodes
(test_lab_real_nats.py: a killed nats container restarted by its kubelet, a whole node
stopped). Here the lab's bare 3-node JetStream cluster on loopback: the server the engine's
session is connected to is SIGKILLed between two calls, and the session's next call goes out
on a connection to another server. The killed server is started again by the ``cluster``
fixture whatever happens, which then waits until every server is healthy and current with
the meta leader, so later tests find the lab as it was.

Also the helpers other modules share: ``get_json`` and the ``Events`` stream of a test's own.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.error import URLError
from urllib.parse import urlparse
from urllib.request import urlopen

import nats
import pytest

from conftest import LAB_STATE, PORT_OFFSET, REPO_ROOT, NatsLab
from migration_lab import COLLECTORS, CONTAINERS
from module_utils_loader import load_module_utils

pytestmark = pytest.mark.integration

LABPROC = REPO_ROOT / "lab" / "bin" / "labproc"
ADVISORIES = "TAPIO_ADVISORIES"  # the streams phase's advisories stream (shared name)
# Bound on how long the cluster may take to heal, so a hung server fails the test instead of
# blocking the suite; nothing is asserted about how long anything took.
HEAL_LIMIT = 120.0


def get_json(url: str, timeout: float = 5) -> Optional[tuple[int, Any]]:
    """(status, body) of a monitoring or simulator URL; None when nothing answers."""
    try:
        with urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback lab URL
            return response.status, json.load(response)
    except URLError as error:
        code = getattr(error, "code", None)
        return (code, {}) if code else None
    except OSError:
        return None


def labproc(state: Path, *args: str, env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """lab/bin/labproc (the lab's process supervisor) with its JSON answer (``status`` exits 3
    when a process it names is not running: an answer too)."""
    proc = subprocess.run(["python3", str(LABPROC), "--state", str(state), *args], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert proc.returncode == 0 or (args[0] == "status" and proc.returncode == 3), \
        f"labproc {' '.join(args)} failed: {proc.stdout}{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Node:
    """One of the lab's nats-server processes (roles/lab_nats: nats-<i>, ports shifted by the offset)."""

    index: int

    @property
    def name(self) -> str:
        return f"nats-{self.index}"

    @property
    def ports(self) -> tuple[int, int, int]:
        """client, cluster and monitoring port"""
        return tuple(base + PORT_OFFSET + self.index for base in (4222, 6222, 8222))  # type: ignore[return-value]

    @property
    def monitor(self) -> str:
        return f"http://127.0.0.1:{self.ports[2]}"

    def get(self, path: str) -> Optional[tuple[int, Any]]:
        return get_json(self.monitor + path)


NODES = [Node(i) for i in range(3)]


@dataclass
class Cluster:
    """Reads the lab's JetStream cluster through the monitoring ports; kills and restarts nodes."""

    killed: dict[str, list[str]] = field(default_factory=dict)  # node name -> its command line

    def alive(self) -> list[Node]:
        return [n for n in NODES if n.name not in self.killed]

    def kill(self, node: Node) -> None:
        pid = labproc(LAB_STATE, "status", node.name)[node.name]
        assert pid, f"{node.name} is not running"
        self.killed[node.name] = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
        os.kill(pid, signal.SIGKILL)
        while labproc(LAB_STATE, "status", node.name)[node.name] is not None:
            time.sleep(0.1)

    def restart(self) -> None:
        """Start every killed node again with its own command line, as roles/lab_nats starts it."""
        for name, command in list(self.killed.items()):
            node = next(n for n in NODES if n.name == name)
            ports = [arg for port in node.ports for arg in ("--port", str(port))]
            labproc(LAB_STATE, "start", name, *ports, "--ready-url", f"{node.monitor}/healthz?js-server-only=true",
                    "--timeout", "60", "--", *command)
            del self.killed[name]

    def problems(self) -> list[str]:
        """Why the cluster is not healthy yet: a server's full /healthz (current with the meta
        leader and every stream and consumer it hosts) and nats_info's judgement of the meta
        cluster with all three peers."""
        health = load_module_utils("tapio_nats_health")
        problems = [f"{n.name} /healthz: {answer}" for n in NODES
                    if (answer := n.get("/healthz")) is None or answer[0] != 200]
        _, meta = health.meta_cluster([n.monitor for n in NODES], 5, expected_peers=len(NODES))
        return problems + meta

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + HEAL_LIMIT
        while problems := self.problems():
            assert time.monotonic() < deadline, f"the lab's NATS cluster did not heal: {problems}"
            time.sleep(0.5)


@dataclass(frozen=True)
class Events:
    tag: str
    consumer: str = "tapio-pipeline"

    @property
    def stream(self) -> str:
        return f"NODEKILL_{self.tag.upper()}"

    @property
    def subjects(self) -> str:
        return f"nodekill.{self.tag}.>"

    def collectors(self) -> list[dict[str, str]]:
        return [{"name": name, "container": CONTAINERS[name],
                 "subject_prefix": f"nodekill.{self.tag}.events.{name.split('-')[1]}"} for name in COLLECTORS]


async def _streams(nats_lab: NatsLab, delete: tuple[str, ...] = ()) -> set[str]:
    """Delete the named streams; the names of the streams there were before."""
    nc = await nats.connect(servers=nats_lab.servers, user=nats_lab.user, password=nats_lab.password)
    try:
        js = nc.jetstream()
        names = {info.config.name for info in await js.streams_info()}
        for name in delete:
            if name in names:
                await js.delete_stream(name)
        return names
    finally:
        await nc.close()


@pytest.fixture
def events(nats_lab: NatsLab) -> Iterator[Events]:
    """A stream of the test's own; it (and the advisories stream, when the run created it) is
    deleted afterwards."""
    before = asyncio.run(_streams(nats_lab))
    setup = Events(uuid.uuid4().hex[:8])
    yield setup
    asyncio.run(_streams(nats_lab, (setup.stream, *([ADVISORIES] if ADVISORIES not in before else []))))


@pytest.fixture
def cluster(events: Events) -> Iterator[Cluster]:
    """The lab's NATS cluster, healthy before the test and made healthy again after it: any
    node the test killed is started again, whether the test passed or not (and before the
    test's stream is deleted, which needs the cluster whole)."""
    nodes = Cluster()
    nodes.wait_healthy()
    try:
        yield nodes
    finally:
        nodes.restart()
        nodes.wait_healthy()


def test_the_engine_session_connects_to_another_server_when_its_own_dies(cluster: Cluster, nats_lab: NatsLab,
                                                                          events: Events) -> None:
    """The engine's NATS session (module_utils/tapio_nats_session.py) on the real cluster: the
    server it is connected to is SIGKILLed between two calls (as while a phase waits on
    Kubernetes). The next call goes out again on a connection to another server, and the step
    it logs names the lost server and the cause. The test above kills the engine's server only
    when no ack of the pipeline goes through it; this one always does."""
    for name in ("tapio_nats_config", "tapio_nats"):
        load_module_utils(name)
    steps: list[str] = []
    params = {"servers": nats_lab.servers, "user": nats_lab.user, "password": nats_lab.password,
              "connect_timeout": 5.0, "api_timeout": 5.0, "kube_port_forward": None}
    session = load_module_utils("tapio_nats_session").NatsSession(params, log=steps.append)
    config = {"name": events.stream, "subjects": [events.subjects], "num_replicas": 3, "storage": "file"}

    async def create(api: Any) -> dict[str, Any]:
        return await api.request(f"$JS.API.STREAM.CREATE.{events.stream}", config)

    async def info(api: Any) -> Optional[dict[str, Any]]:
        return await api.stream_info(events.stream)

    try:
        session.call(create, f"stream {events.stream}")
        port = urlparse(session.server).port
        cluster.kill(next(n for n in NODES if n.ports[0] == port))
        found = session.call(info, f"stream {events.stream}")
    finally:
        session.close()
    assert found is not None and found["config"]["name"] == events.stream
    assert steps and steps[0].startswith(f"stream {events.stream}: the NATS connection to nats://127.0.0.1:{port} "
                                         "was lost ("), steps
    assert steps[0].endswith("); connecting again (1 of 3)"), steps
    # When the killed server led the stream, the next answer waits for an election: retried.
    assert all("; retrying in " in step for step in steps[1:]), steps
