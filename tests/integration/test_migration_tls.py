"""migrate.yml, a re-run and rollback.yml against a NATS cluster that requires TLS and knows one
user per workload, as issue 10 asks of the lab's NATS.

The cluster is the lab's own three-node template (roles/lab_nats, the nats_cluster nats.conf)
on ports of its own with ``lab_nats_tls_enabled``: client TLS from a CA the role generates with
the cryptography package (library/tapio_tls_certificates.py), mutual TLS and authentication on
the routes, and the lab inventory's per-workload users. The toolkit reaches it over TLS with
``tapio_nats_tls_ca_cert``; the pods get ``tls://`` and the CA by secretKeyRef
(``tapio_nats_ca_secret``) and their own user's Secret. The lab's simulator plays the pods
against it, connecting with what each pod's env holds, and keeps the ledger of every event.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.request import urlopen

import nats
import nats.errors
import pytest
import yaml
from kubernetes import client

from conftest import PORT_OFFSET, REPO_ROOT, VENV_BIN, KubeLab
from migration_lab import COLLECTORS, CONTAINERS, MigrationLab, make_lab
from module_utils_loader import load_module_utils
from standalone_nats import free_port

pytestmark = pytest.mark.integration

# Below Linux's ephemeral range (32768-60999), where a client's outgoing port could take one.
CLIENT_BASE, CLUSTER_BASE, MONITOR_BASE = 25222 + PORT_OFFSET, 27222 + PORT_OFFSET, 29222 + PORT_OFFSET
LAB_NATS = yaml.safe_load((REPO_ROOT / "inventories/lab/group_vars/all/nats.yml").read_text())
PASSWORDS: dict[str, str] = LAB_NATS["tapio_nats_component_passwords"]
SECRET_PREFIX = "tapio-nats-auth-"  # the default: <tapio_nats_credentials_secret>-
CA_SECRET = "tapio-nats-ca"
TAPIO_SIM = REPO_ROOT / "lab" / "bin" / "tapio-sim"
LABPROC = REPO_ROOT / "lab" / "bin" / "labproc"
WORKLOADS = ("tapio-pipeline", *COLLECTORS)


@dataclass
class TlsNats:
    servers: list[str]
    monitor_urls: list[str]
    ca: Path


def get_json(url: str, timeout: float = 5) -> Any:
    with urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return json.load(resp)


def ansible(playbook: str, *args: str, extra: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), playbook, *args, "-e", json.dumps(extra)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


def labproc(state: Path, *args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(["python3", str(LABPROC), "--state", str(state), *args], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert done.returncode == 0, f"labproc {' '.join(args)}: {done.stdout}{done.stderr}"


@pytest.fixture(scope="module")
def tls_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsNats]:
    state = tmp_path_factory.mktemp("tls-nats")
    extra = {"lab_nats_client_port_base": CLIENT_BASE, "lab_nats_cluster_port_base": CLUSTER_BASE,
             "lab_nats_monitor_port_base": MONITOR_BASE, "lab_state_dir": str(state), "lab_nats_tls_enabled": True}
    try:
        run = ansible("playbooks/lab_up.yml", "--tags", "nats", extra=extra)
        assert run.returncode == 0, run.stdout[-4000:]
        yield TlsNats([f"tls://127.0.0.1:{CLIENT_BASE + i}" for i in range(3)],
                      [f"http://127.0.0.1:{MONITOR_BASE + i}" for i in range(3)], state / "nats" / "tls" / "ca.crt")
    finally:
        ansible("playbooks/lab_up.yml", "--tags", "nats", extra={**extra, "lab_nats_state": "stopped"})


@pytest.fixture(scope="module")
def lab(kube_lab: KubeLab, tls_nats: TlsNats, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationLab]:
    """A namespace with Tapio's pre-migration workloads and what a user with NATS installed
    already provides: each workload's credentials Secret and the CA's."""
    for lab in make_lab(kube_lab, "tls", tmp_path_factory.mktemp("artifacts")):
        for name in WORKLOADS:
            lab.core.create_namespaced_secret(lab.namespace, client.V1Secret(
                metadata=client.V1ObjectMeta(name=SECRET_PREFIX + name),
                data={"NATS_USER": base64.b64encode(name.encode()).decode(),
                      "NATS_PASSWORD": base64.b64encode(PASSWORDS[name].encode()).decode()}))
        lab.core.create_namespaced_secret(lab.namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name=CA_SECRET), data={"ca.crt": base64.b64encode(tls_nats.ca.read_bytes()).decode()}))
        yield lab


@pytest.fixture(scope="module")
def simulator(lab: MigrationLab, kube_lab: KubeLab, tls_nats: TlsNats,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The lab's simulator for the test's namespace, dialling the TLS cluster; each pod uses the
    user, password and CA its env holds (a pod without the CA is refused by the servers)."""
    state, port = tmp_path_factory.mktemp("sim"), free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(TAPIO_SIM), "run", "--state-dir", str(state / "ledger"), "--kubeconfig", str(kube_lab.kubeconfig),
               "--context", kube_lab.context, "--namespace", lab.namespace, "--port", str(port), "--rate", "40",
               "--exit-settle", "1", "--stop-flush-timeout", "2",
               *(f"--nats-server={server}" for server in tls_nats.servers),
               *(f"--collector={name}:{CONTAINERS[name]}:{name.split('-')[1]}:tapio.events.{name.split('-')[1]}"
                 for name in COLLECTORS)]
    labproc(state, "start", "tapio-sim", "--port", str(port), "--ready-url", f"{url}/healthz", "--timeout", "60",
            "--", *command)
    try:
        yield url
    finally:
        labproc(state, "stop", "tapio-sim", "--grace", "45")


def tls_vars(tls_nats: TlsNats, simulator: str) -> dict[str, Any]:
    return {"tapio_nats_install": False, "tapio_migration_nats_checks": True, "tapio_nats_component_users": True,
            "tapio_nats_servers": tls_nats.servers, "tapio_nats_monitor_urls": tls_nats.monitor_urls,
            "tapio_nats_tls_ca_cert": str(tls_nats.ca),
            "tapio_nats_url": "tls://tapio-nats:4222", "tapio_nats_ca_secret": CA_SECRET,
            "tapio_verify_ledger_url": simulator, "tapio_poll_interval": 1}


async def plain_client_answer(server: str) -> str:
    """What a client without TLS gets from the cluster (it must not connect)."""
    try:
        nc = await nats.connect(servers=[server.replace("tls://", "nats://")], user="tapio",
                                password=LAB_NATS["tapio_nats_password"], allow_reconnect=False,
                                max_reconnect_attempts=1, connect_timeout=5, tls=None)
    except (nats.errors.Error, OSError, ssl.SSLError) as error:
        return f"{type(error).__name__}: {error}"
    await nc.close()
    raise AssertionError(f"{server} accepted a client without TLS")


def test_the_cluster_requires_tls_of_clients_and_routes(tls_nats: TlsNats) -> None:
    varz = get_json(f"{tls_nats.monitor_urls[0]}/varz")
    assert varz["tls_required"] is True
    assert varz["cluster"]["tls_required"] is True and varz["cluster"]["tls_verify"] is True
    assert {r.get("remote_name") for r in get_json(f"{tls_nats.monitor_urls[0]}/routez")["routes"]} == {"nats-1", "nats-2"}
    assert asyncio.run(plain_client_answer(tls_nats.servers[0]))


def test_migrate_rerun_and_restore_over_tls_with_a_user_per_workload(
        lab: MigrationLab, tls_nats: TlsNats, simulator: str) -> None:
    ledger = load_module_utils("tapio_workload")
    extra = tls_vars(tls_nats, simulator)
    before = {name: lab.workload(name)["spec"]["template"] for name in WORKLOADS}

    migrated = lab.playbook("migrate.yml", extra=extra)
    assert migrated.rc == 0, migrated.explain()
    assert "0 events lost and 0 delivered twice" in migrated.stdout, migrated.explain()
    for name in WORKLOADS:
        [container] = [c for c in lab.workload(name)["spec"]["template"]["spec"]["containers"]
                       if c["name"] == CONTAINERS[name]]
        env = {e["name"]: e for e in container["env"]}
        assert env["NATS_URL"]["value"] == "tls://tapio-nats:4222"
        assert env["NATS_CA"]["valueFrom"]["secretKeyRef"] == {"name": CA_SECRET, "key": "ca.crt"}
        assert env["NATS_USER"]["valueFrom"]["secretKeyRef"]["name"] == SECRET_PREFIX + name
    # Every pod the simulator plays is connected over TLS as its own workload's user.
    connections = [c for url in tls_nats.monitor_urls
                   for c in get_json(f"{url}/connz?auth=true&limit=1024").get("connections") or []
                   if str(c.get("name", "")).startswith("sim-")]
    users = {c.get("authorized_user") for c in connections}
    assert users == set(WORKLOADS), connections
    assert all(c.get("tls_version") for c in connections), connections

    again = lab.playbook("migrate.yml", extra=extra)
    assert again.rc == 0 and again.changed == 0, again.explain()

    restored = lab.rollback("restore", extra=extra)
    assert restored.rc == 0, restored.explain()
    assert {name: lab.workload(name)["spec"]["template"] for name in WORKLOADS} == before
    # Settled: events in flight when the pods went back to gRPC are counted, not called lost.
    report = get_json(f"{simulator}/ledger?settle=30", timeout=60)
    assert ledger.ledger_problems(report) == [], json.dumps(report.get("sources"), indent=1)
    for source in (CONTAINERS[name] for name in COLLECTORS):
        assert report["sources"][source]["received_by_path"].get("nats", 0) > 0, report["sources"][source]
