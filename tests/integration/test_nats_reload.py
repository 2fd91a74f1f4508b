"""Reloads without restarts (library/nats_server_reload.py) on three real nats-server
processes running the nats_cluster role's own nats.conf: the route password changes while an
R3 stream holds messages, the servers see their new files at different times (as the kubelet
projects a Secret into each pod within its sync period), and the cluster ends whole, every
message kept, no process restarted. A change nats-server cannot reload is refused, named.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from conftest import VENV_BIN
from standalone_nats import free_port, http_ok
from test_nats_install import get_json, playbook, wait_for

HERE = Path(__file__).resolve().parent / "nats_install"
NATS_SERVER = VENV_BIN / "nats-server"
SYSTEM_PASSWORD = "reload-test-system"
CLIENT_PASSWORD = "reload-test-client"


@dataclass
class Server:
    name: str
    directory: Path
    client: int
    cluster: int
    monitor: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client}"

    def varz(self) -> dict:
        return get_json(f"http://127.0.0.1:{self.monitor}/varz")


def routes_conf(password: str, servers: list[Server]) -> str:
    """routes.conf as the role writes it into its Secret, with the test's loopback addresses."""
    routes = "\n".join(json.dumps(f"nats://route:{password}@127.0.0.1:{s.cluster}") for s in servers)
    return f'authorization {{\n  user: "route"\n  password: {json.dumps(password)}\n}}\nroutes: [\n{routes}\n]\n'


def project(server: Server, password: str, revision: str, servers: list[Server]) -> None:
    """What the kubelet does for one pod: the Secret's files swapped in at once."""
    (server.directory / "routes.conf").write_text(routes_conf(password, servers))
    (server.directory / "revision.conf").write_text(
        f'server_metadata {{ "tapio.io/config-revision": "{revision}" }}\n')


def reload_run(servers: list[Server], revision: str, check: bool = False, timeout: float = 60):
    return playbook(HERE / "reload.yml", check=check, extra={
        "reload_servers": [s.url for s in servers], "reload_password": SYSTEM_PASSWORD,
        "reload_revision": revision, "reload_timeout": timeout})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    root = tmp_path_factory.mktemp("reload")
    rendered = root / "nats.conf"
    run = playbook(HERE / "render_conf.yml", extra={"render_conf_dest": str(rendered), "nats_cluster_namespace": "reload",
                                                     "nats_cluster_component_users": False,
                                                     "nats_cluster_auth_password": CLIENT_PASSWORD})
    assert run.rc == 0, run.out[-3000:]
    template = rendered.read_text()
    # The role's files, with the test's ports and store (a pod has its own address and volume):
    # nats.conf, and users.conf as the Secret holds it.
    assert 'include "routes.conf"' in template and 'include "revision.conf"' in template
    assert 'include "users.conf"' in template
    users = (root / "users.conf").read_text()
    assert f'password: {json.dumps(CLIENT_PASSWORD)}' in users
    assert "system_account: SYS" in template
    taken: list[int] = []
    servers = []
    for i in range(3):
        ports = []
        for _ in range(3):
            ports.append(free_port(tuple(taken)))
            taken.append(ports[-1])
        servers.append(Server(f"tapio-nats-{i}", root / f"n{i}", *ports))
    for server in servers:
        server.directory.mkdir()
        text = re.sub(r"^port: \d+", f"port: {server.client}", template, flags=re.M)
        text = re.sub(r"^http_port: \d+", f"http_port: {server.monitor}", text, flags=re.M)
        text = re.sub(r"^(  port: )\d+", rf"\g<1>{server.cluster}", text, flags=re.M)
        text = re.sub(r'store_dir: "[^"]*"', f'store_dir: "{server.directory / "js"}"', text)
        text = re.sub(r'pid_file: "[^"]*"', f'pid_file: "{server.directory / "nats.pid"}"', text)
        (server.directory / "nats.conf").write_text(text)
        (server.directory / "users.conf").write_text(users)
        project(server, "first-route-password", "r1", servers)
    env = {"PATH": os.environ["PATH"], "NATS_SYSTEM_PASSWORD": json.dumps(SYSTEM_PASSWORD)}
    for server in servers:
        log = open(server.directory / "nats-server.log", "ab")  # noqa: SIM115 - kept open for the process
        server.process = subprocess.Popen([str(NATS_SERVER), "-c", str(server.directory / "nats.conf")],
                                          env={**env, "POD_NAME": server.name}, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
    try:
        wait_for(lambda: all(http_ok(f"http://127.0.0.1:{s.monitor}/healthz") for s in servers), 60,
                 "three servers with a JetStream meta leader")
        yield servers
    finally:
        for server in servers:
            if server.process and server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
                server.process.wait(timeout=30)


def whole(servers: list[Server]) -> bool:
    """Every server routed to both others, and the meta leader sees every peer current."""
    if any(len({r["remote_name"] for r in get_json(f"http://127.0.0.1:{s.monitor}/routez")["routes"]}) != 2
           for s in servers):
        return False
    for server in servers:
        meta = get_json(f"http://127.0.0.1:{server.monitor}/jsz").get("meta_cluster") or {}
        if meta.get("leader") == server.name:
            return len(meta.get("replicas") or []) == 2 and all(r.get("current") for r in meta["replicas"])
    return False


async def stream_messages(url: str, publish: int = 0) -> int:
    nc = await nats.connect(url, user="tapio", password=CLIENT_PASSWORD, allow_reconnect=False)
    try:
        js = nc.jetstream()
        await js.add_stream(name="RELOAD", subjects=["reload.>"], num_replicas=3)
        for i in range(publish):
            await js.publish("reload.events", f"event {i}".encode())
        return (await js.stream_info("RELOAD")).state.messages
    finally:
        await nc.close()


def test_a_new_route_password_is_reloaded_by_every_server_and_the_cluster_ends_whole(cluster: list[Server]) -> None:
    servers = cluster
    wait_for(lambda: whole(servers), 60, "the cluster whole before the change")
    assert asyncio.run(stream_messages(servers[0].url, publish=100)) == 100
    pids = [s.process.pid for s in servers]
    started = [s.varz()["start"] for s in servers]

    # Nothing to do at the revision the servers run: no reload asked, in check mode or not.
    assert {s.varz()["metadata"]["tapio.io/config-revision"] for s in servers} == {"r1"}
    idle = reload_run(servers, "r1")
    assert idle.rc == 0 and idle.recap["changed"] == 0, idle.out[-3000:]

    # Two servers see the new password first; the third a few seconds later (its kubelet
    # has not synced yet): the module keeps asking until every server reports r2.
    for server in servers[:2]:
        project(server, "second-route-password", "r2", servers)
    checked = reload_run(servers, "r2", check=True)
    assert checked.rc == 0 and checked.recap["changed"] == 1, checked.out[-3000:]
    assert {s.varz()["metadata"]["tapio.io/config-revision"] for s in servers} == {"r1"}, "check mode reloaded"
    late = threading.Timer(6, project, (servers[2], "second-route-password", "r2", servers))
    late.start()
    run = reload_run(servers, "r2")
    late.join()
    assert run.rc == 0, run.out[-3000:]
    assert run.recap["changed"] == 1
    seen = json.loads(re.search(r'"RELOAD (.*)"', run.out).group(1).replace('\\"', '"'))
    # nats-2 was asked again until its new files were there; the others once each.
    assert seen["reloaded"]["tapio-nats-2"] >= 2 and seen["reloaded"]["tapio-nats-0"] == 1, seen
    assert any("tapio-nats-2 runs configuration revision r1, not r2" in p for step in seen["progress"]
               for p in step["problems"]), seen
    assert {s.varz()["metadata"]["tapio.io/config-revision"] for s in servers} == {"r2"}
    wait_for(lambda: whole(servers), 60, "the cluster whole on the new route password")
    # The old password no longer joins: what each server now requires is the new one.
    for server in servers:
        assert 'password: "second-route-password"' in (server.directory / "routes.conf").read_text()
        assert "Reloaded: cluster" in (server.directory / "nats-server.log").read_text()
    assert [s.process.pid for s in servers] == pids and all(s.process.poll() is None for s in servers)
    assert [s.varz()["start"] for s in servers] == started
    assert asyncio.run(stream_messages(servers[1].url)) == 100


def test_a_change_nats_server_cannot_reload_is_refused_naming_the_server(cluster: list[Server]) -> None:
    server = cluster[0]
    conf = server.directory / "nats.conf"
    original = conf.read_text()
    conf.write_text(re.sub(r"^(  port: )\d+", rf"\g<1>{free_port()}", original, flags=re.M))
    project(server, "second-route-password", "r3", cluster)
    try:
        run = reload_run(cluster, "r3", timeout=10)
        assert run.rc != 0
        assert "NATS server tapio-nats-0 refused to reload its configuration: config reload not supported for cluster port" \
            in run.out, run.out[-3000:]
    finally:
        conf.write_text(original)
        project(server, "second-route-password", "r2", cluster)
    time.sleep(0)  # the other servers were not touched
    assert {s.varz()["metadata"]["tapio.io/config-revision"] for s in cluster[1:]} == {"r2"}
