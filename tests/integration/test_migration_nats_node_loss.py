"""Nothing lost when a NATS server dies during the collectors phase (issue 9).

A real ``migrate.yml`` runs against the lab's real 3-node JetStream cluster, with NATS
provided (``tapio_nats_install: false``), in a namespace of its own with a Tapio simulator of
its own (the lab's simulator keeps watching the ``tapio`` namespace) and an events stream of
its own (R3 like TAPIO_EVENTS, subjects ``nodekill.<id>.>``). The simulator's emulated
collectors and pipeline publish and consume through the same three servers as the engine.

Once the canary's events flow through NATS (the collectors phase has switched the canary),
the test SIGKILLs one nats-server: the one the engine is connected to (its client name in
``/connz``), else the events stream's leader, the meta leader or a gate consumer's leader (from
``/jsz``). The server stays down for the rest of the canary's batch and the whole second
batch (gate consumer created, gates passed, consumer deleted on two nodes), then comes back
as a StatefulSet's pod would (the verify phase's NATS health check rightly needs every
server) while the last batch runs. The run must end with rc 0, and the simulator's ledger,
read once the pipeline's ack floor has passed every event stored (so any redelivery has
happened), must show 0 lost, 0 twice. A second test kills the server the engine's own
session is connected to, every time, and checks the session's next call.

The server the emulated pipeline is connected to and the leader of its durable consumer are
never the ones killed: an ack on its way through them when they die is lost, JetStream
redelivers that event after ``ack_wait`` (30 s), and a pipeline that acks without
de-duplicating (Tapio's, as the seed writes it, and the simulator's emulation of it) processes
it twice. Killing the pipeline's server during the flow did exactly that in one run of three
(3 events delivered twice, 30 s after the kill; killing the consumer's leader gave none in
four): JetStream's at-least-once delivery, which the migration cannot change (see
docs/migration.md, "A NATS server lost").

The killed server is started again by the ``cluster`` fixture whatever happens, which then
waits until every server is healthy and current with the meta leader, so later tests find
the lab as it was.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from urllib.error import URLError
from urllib.parse import urlparse
from urllib.request import urlopen

import nats
import pytest

from conftest import LAB_STATE, PORT_OFFSET, REPO_ROOT, KubeLab, NatsLab
from migration_lab import COLLECTORS, CONTAINERS, MigrationLab, Run, make_lab
from module_utils_loader import load_module_utils

pytestmark = pytest.mark.integration

LABPROC = REPO_ROOT / "lab" / "bin" / "labproc"
TAPIO_SIM = REPO_ROOT / "lab" / "bin" / "tapio-sim"
ENGINE_CLIENT = "tapio-ansible"  # the client name of every connection of the toolkit's modules (tapio_nats)
PIPELINE_CLIENT = "sim-tapio-pipeline-"  # the simulator's pipeline pods (tapio_sim.pipeline)
GATE_PREFIX = "tapio-migration-gate-"
ADVISORIES = "TAPIO_ADVISORIES"  # the streams phase's advisories stream (shared name)
# Bounds on how long the test waits for a step of the run, so a hung run fails instead of
# blocking the suite; nothing is asserted about how long anything took.
STEP_LIMIT = 300.0
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

    def stream(self, stream: str) -> dict[str, Any]:
        """*stream* (state, cluster, consumer_detail) and the meta cluster as a live server's
        /jsz reports them: {"stream": ..., "meta": ...}."""
        for node in self.alive():
            answer = node.get("/jsz?accounts=true&streams=true&consumers=true")
            if not answer or answer[0] != 200:
                continue
            for account in answer[1].get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    if detail.get("name") == stream:
                        return {"stream": detail, "meta": answer[1].get("meta_cluster") or {}}
        return {"stream": {}, "meta": {}}

    def consumers(self, stream: str) -> dict[str, dict[str, Any]]:
        """The consumers of *stream* by name."""
        return {c["name"]: c for c in self.stream(stream)["stream"].get("consumer_detail") or []}

    def roles(self, stream: str, consumer: str) -> dict[str, list[str]]:
        """What each server is for the run: where the engine and the pipeline are connected,
        the meta leader, the leaders of the events stream and of the pipeline's consumer."""
        roles: dict[str, list[str]] = {n.name: [] for n in NODES}
        for node in self.alive():
            connz = node.get("/connz?auth=true&limit=1024")
            connections = (connz[1].get("connections") or []) if connz and connz[0] == 200 else []
            names = [c.get("name") or "" for c in connections]
            if ENGINE_CLIENT in names:
                roles[node.name].append("engine connection")
            if any(n.startswith(PIPELINE_CLIENT) for n in names):
                roles[node.name].append("pipeline connection")
        found = self.stream(stream)
        wanted = (consumer, *self.gates(stream))
        leaders = {"meta leader": found["meta"].get("leader"),
                   f"leader of stream {stream}": (found["stream"].get("cluster") or {}).get("leader"),
                   **{f"leader of consumer {c['name']}": (c.get("cluster") or {}).get("leader")
                      for c in found["stream"].get("consumer_detail") or [] if c["name"] in wanted}}
        for role, leader in leaders.items():
            if leader in roles:
                roles[leader].append(role)
        return roles

    def gates(self, stream: str) -> set[str]:
        """The collectors' gate consumers on *stream* now."""
        return {name for name in self.consumers(stream) if name.startswith(GATE_PREFIX)}

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


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    yield from make_lab(kube_lab, "nodekill", tmp_path_factory.mktemp("artifacts"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def simulator(lab: MigrationLab, kube_lab: KubeLab, nats_lab: NatsLab, events: Events,
              tmp_path: Path) -> Iterator[str]:
    """The lab's simulator (lab/bin/tapio-sim, started by labproc as roles/lab_simulator does)
    for the test's namespace and stream, at a lower rate than the lab's (the machine is small).
    Its URL."""
    state, port = tmp_path / "sim", free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(TAPIO_SIM), "run", "--state-dir", str(state / "ledger"), "--kubeconfig", str(kube_lab.kubeconfig),
               "--context", kube_lab.context, "--namespace", lab.namespace, "--port", str(port), "--rate", "60",
               "--stream", events.stream, "--consumer", events.consumer, "--nats-user", nats_lab.user,
               "--exit-settle", "1", "--stop-flush-timeout", "2",  # its final ledger is not read
               "--nats-password-env", "TAPIO_SIM_NATS_PASSWORD",
               *(f"--nats-server={server}" for server in nats_lab.servers),
               *(f"--collector={c['name']}:{c['container']}:{c['name'].split('-')[1]}:{c['subject_prefix']}"
                 for c in events.collectors())]
    labproc(state, "start", "tapio-sim", "--port", str(port), "--ready-url", f"{url}/healthz", "--timeout", "60",
            "--", *command, env={**os.environ, "TAPIO_SIM_NATS_PASSWORD": nats_lab.password})
    try:
        yield url
    finally:
        labproc(state, "stop", "tapio-sim", "--grace", "45")


def wait_for(what: str, predicate: Callable[[], Any], run: Optional[subprocess.Popen] = None,
             output: Optional[Path] = None) -> Any:
    """Poll *predicate* until it is true (while the run, when given, is still going)."""
    deadline = time.monotonic() + STEP_LIMIT
    while not (value := predicate()):
        if run is not None and output is not None and run.poll() is not None:
            pytest.fail(f"the run ended before {what}\n{Run.from_output(run.returncode, output).explain()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {STEP_LIMIT:g}s" + (f"\n{output.read_text(errors='replace')[-6000:]}"
                                                              if output else ""))
        time.sleep(0.2)
    return value


def victim_of(roles: dict[str, list[str]], stream: str, consumer: str) -> Node:
    """The server to kill: the engine's, else the events stream's leader, else the meta
    leader, else a gate consumer's leader, among the servers that neither the pipeline is
    connected to nor lead the pipeline's consumer (see the module's docstring)."""
    spared = [n for n in NODES if not {"pipeline connection", f"leader of consumer {consumer}"} & set(roles[n.name])]
    for role in ("engine connection", f"leader of stream {stream}", "meta leader", f"leader of consumer {GATE_PREFIX}"):
        for node in spared:
            if any(r.startswith(role) for r in roles[node.name]):
                return node
    return spared[0]


def test_migrate_loses_nothing_when_a_nats_server_dies_during_the_collectors_phase(
        lab: MigrationLab, cluster: Cluster, events: Events, simulator: str, tmp_path: Path) -> None:
    ledger = load_module_utils("tapio_workload")
    extra = {"tapio_nats_install": False, "tapio_migration_nats_checks": True, "tapio_collectors": events.collectors(),
             "tapio_events_stream": events.stream, "tapio_consume_subjects": events.subjects,
             "tapio_pipeline_consumer": events.consumer, "tapio_verify_ledger_url": simulator,
             "tapio_poll_interval": 1,
             # The default stream reserves 1 GB per server; with TAPIO_EVENTS there (molecule
             # ran first) a second one does not fit the lab's 2 GB JetStream store.
             "nats_streams_events_stream": {
                 "name": events.stream, "subjects": [events.subjects], "retention": "limits", "storage": "file",
                 "replicas": 3, "discard": "old", "max_age": "1h", "max_bytes": "64MB", "duplicate_window": "2m"}}
    canary = CONTAINERS[COLLECTORS[0]]
    output = tmp_path / "migrate.log"
    started = time.monotonic()

    def mark(event: str) -> None:  # what happened when (shown with a failure, or with -s)
        print(f"[{time.monotonic() - started:5.1f}s] {event}", flush=True)

    run = lab.start_playbook("migrate.yml", extra=extra, output=output)
    try:
        # The collectors phase has switched the canary: its events flow through NATS.
        wait_for("canary events through NATS (the collectors phase switching the canary)",
                 lambda: ((get_json(f"{simulator}/ledger") or (0, {}))[1].get("sources", {}).get(canary, {})
                          .get("received_by_path", {}).get("nats", 0)), run, output)
        roles = cluster.roles(events.stream, events.consumer)
        victim = victim_of(roles, events.stream, events.consumer)
        killed = f"killed {victim.name} ({', '.join(roles[victim.name]) or 'no role'}); roles then: {roles}"
        cluster.kill(victim)
        mark(killed)
        second_gate, last_gate = (GATE_PREFIX + name for name in COLLECTORS[1:])
        seen: set[str] = set()

        def second_batch_gated() -> bool:
            gates = cluster.gates(events.stream)
            seen.update(gates)
            return (second_gate in seen and second_gate not in gates) or last_gate in gates

        wait_for(f"the second batch gated with {victim.name} down", second_batch_gated, run, output)
        cluster.restart()
        mark(f"restarted {victim.name}")
        wait_for(f"{victim.name} current again", lambda: (victim.get("/healthz") or (0,))[0] == 200)
        mark(f"{victim.name} current (/healthz 200)")
        rc = run.wait(timeout=STEP_LIMIT)
        mark(f"migrate.yml ended with rc {rc}")
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    result = Run.from_output(rc, output)
    assert rc == 0, f"{killed}\n{result.explain()}"
    assert "0 events lost and 0 delivered twice" in result.stdout, f"{killed}\n{result.explain()}"

    # Every event stored so far acknowledged by the pipeline (the ack floor passed it): an
    # event whose ack the loss swallowed has been redelivered (after ack_wait) by then, and
    # a second delivery is in the ledger.
    last = cluster.stream(events.stream)["stream"]["state"]["last_seq"]
    wait_for(f"the pipeline's ack floor past sequence {last}", lambda: int(
        (cluster.consumers(events.stream)[events.consumer].get("ack_floor") or {}).get("stream_seq") or 0) >= last)
    mark(f"the pipeline's ack floor passed sequence {last}")
    answer = get_json(f"{simulator}/ledger?settle=30", timeout=60)
    assert answer and answer[0] == 200, answer
    report = answer[1]
    assert ledger.ledger_problems(report) == [], f"{killed}\n{json.dumps(report['sources'], indent=1)}"
    for container in (CONTAINERS[name] for name in COLLECTORS):
        row = report["sources"][container]
        assert row["emitted_by_mode"].get("nats", 0) > 0, (container, row)
        assert row["received_by_path"].get("nats", 0) > 0, (container, row)


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
