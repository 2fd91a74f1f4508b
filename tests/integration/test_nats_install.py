"""Issue 3: NATS on Kubernetes (nats_operator, nats_cluster, nats_monitoring, dev compose).

Everything runs against the lab's real servers: playbooks/nats.yml through ansible-playbook
against the real kube-apiserver (objects read back with the kubernetes client), the real
nats-server for configuration checks, the lab's NATS cluster for the health gate, and a
throwaway 3-node cluster of our own (started by the lab_nats role on other ports) for the
failure path, so the shared lab is never stopped.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import LAB_STATE, PORT_OFFSET, REPO_ROOT, VENV_BIN, KubeLab, NatsLab
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent / "nats_install"
NS = "tapio-nats-test"
OPERATOR_NS = "tapio-operator-test"
NAME = "tapio-nats"
PV_LABEL = "tapio-nats-test/volume"
PODMONITOR_CRD = "podmonitors.monitoring.coreos.com"
OPERATOR_CRDS = ("natsclusters.nats.io", "natsserviceroles.nats.io")
DASHBOARD = REPO_ROOT / "roles" / "nats_monitoring" / "files" / "tapio-nats-dashboard.json"
NATS_SERVER = VENV_BIN / "nats-server"
# The throwaway cluster for the gate's failure path: ports nobody else uses.
GATE_CLIENT_BASE = 24222 + PORT_OFFSET
GATE_CLUSTER_BASE = 26222 + PORT_OFFSET
GATE_MONITOR_BASE = 28222 + PORT_OFFSET


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
@dataclass
class Run:
    rc: int
    out: str

    @property
    def recap(self) -> dict[str, int]:
        match = re.search(r"^lab\s*:\s*(.*)$", self.out, re.M)
        assert match, f"no PLAY RECAP for host lab in:\n{self.out[-3000:]}"
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def playbook(path: str | Path, *args: str, extra: dict[str, Any] | None = None, check: bool = False,
             diff: bool = False) -> Run:
    env = dict(os.environ)
    env.update({"PATH": f"{VENV_BIN}:{env.get('PATH', '')}", "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0"})
    command = [str(VENV_BIN / "ansible-playbook"), str(path), *args]
    if extra:
        command += ["-e", json.dumps(extra)]
    if check:
        command.append("--check")
    if diff:
        command.append("--diff")
    proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    return Run(proc.returncode, proc.stdout + proc.stderr)


# In NS one workload has no password in the inventory: the role makes a random one on the first
# install and keeps it in the workload's Secret on every later run.
GENERATED_FOR = "tapio-systemd-collector"
LAB_PASSWORDS: dict[str, str] = yaml.safe_load(
    (REPO_ROOT / "inventories/lab/group_vars/all/nats.yml").read_text())["tapio_nats_component_passwords"]
NS_PASSWORDS = {"tapio_nats_component_passwords": {**LAB_PASSWORDS, GENERATED_FOR: ""}}


def nats_playbook(namespace: str, *args: str, extra: dict[str, Any] | None = None, **kwargs: Any) -> Run:
    passwords = NS_PASSWORDS if namespace == NS else {}
    return playbook("playbooks/nats.yml", *args,
                    extra={"nats_cluster_namespace": namespace, **passwords, **(extra or {})}, **kwargs)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(1)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only
        return json.load(resp)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return -1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def field_values(doc: Any, path: str) -> list[Any]:
    """Values at a dotted path; 'a[]' walks every element of list a."""
    current = [doc]
    for part in path.split("."):
        many = part.endswith("[]")
        key = part[:-2] if many else part
        nxt = []
        for item in current:
            if isinstance(item, dict) and key in item:
                value = item[key]
                if many:
                    nxt.extend(value or [])
                else:
                    nxt.append(value)
        current = nxt
    return current


def dashboard_metrics(dashboard: dict) -> set[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return {m for e in exprs for m in re.findall(r"\b((?:gnatsd|jetstream)_[a-z_]+)\b", e)}


def resource_versions(api: client.ApiClient, namespace: str) -> dict[str, str]:
    core, apps, policy = client.CoreV1Api(api), client.AppsV1Api(api), client.PolicyV1Api(api)
    return {
        "configmap": core.read_namespaced_config_map(f"{NAME}-config", namespace).metadata.resource_version,
        "dashboard": core.read_namespaced_config_map("tapio-nats-dashboard", namespace).metadata.resource_version,
        "secret": core.read_namespaced_secret(f"{NAME}-auth", namespace).metadata.resource_version,
        "service": core.read_namespaced_service(NAME, namespace).metadata.resource_version,
        "headless": core.read_namespaced_service(f"{NAME}-headless", namespace).metadata.resource_version,
        "pdb": policy.read_namespaced_pod_disruption_budget(NAME, namespace).metadata.resource_version,
        "statefulset": apps.read_namespaced_stateful_set(NAME, namespace).metadata.resource_version,
    }


def exists(read: Callable[[str], Any], name: str) -> bool:
    try:
        read(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def crd_exists(api: client.ApiClient, name: str) -> bool:
    return exists(client.ApiextensionsV1Api(api).read_custom_resource_definition, name)


def namespace_exists(api: client.ApiClient, name: str) -> bool:
    return exists(client.CoreV1Api(api).read_namespace, name)


def delete_namespace(api: client.ApiClient, name: str) -> None:
    # The pods' 60s grace period (longer than lame duck) is for real servers; these are fake.
    if namespace_exists(api, name):
        client.CoreV1Api(api).delete_collection_namespaced_pod(name, grace_period_seconds=0)
    try:
        client.CoreV1Api(api).delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise
    wait_for(lambda: not namespace_exists(api, name), 120, f"namespace {name} to be deleted")


def ignore_404(call: Callable[..., Any], *args: Any) -> None:
    try:
        call(*args)
    except ApiException as exc:
        if exc.status != 404:
            raise


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(kube_lab: KubeLab) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kube_lab.kubeconfig), context=kube_lab.context)


def _pre_bound_volumes(api: client.ApiClient) -> Iterator[None]:
    """Our own PVs, pre-bound to the StatefulSet's claims, so the test never uses up the
    lab's shared volumes (a released Retain volume cannot bind again)."""
    core = client.CoreV1Api(api)
    for i in range(3):
        ignore_404(core.delete_persistent_volume, f"tapio-nats-test-{i}")
    wait_for(lambda: not core.list_persistent_volume(label_selector=PV_LABEL).items, 60, "old test PVs to go")
    for i in range(3):
        core.create_persistent_volume(client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name=f"tapio-nats-test-{i}", labels={PV_LABEL: "yes"}),
            spec=client.V1PersistentVolumeSpec(
                storage_class_name="standard", capacity={"storage": "10Gi"}, access_modes=["ReadWriteOnce"],
                persistent_volume_reclaim_policy="Retain",
                claim_ref=client.V1ObjectReference(namespace=NS, name=f"jetstream-{NAME}-{i}"),
                host_path=client.V1HostPathVolumeSource(path=f"/tmp/tapio-nats-test-volume-{i}",
                                                        type="DirectoryOrCreate"))))
    yield
    for i in range(3):
        ignore_404(core.delete_persistent_volume, f"tapio-nats-test-{i}")


@pytest.fixture(scope="module")
def podmonitor_crd_absent_at_start(api: client.ApiClient) -> bool:
    """Whether the PodMonitor CRD was absent before this module ran (then the module may
    create and remove it)."""
    return not crd_exists(api, PODMONITOR_CRD)


@pytest.fixture(scope="module")
def deployed(api: client.ApiClient, nats_lab: NatsLab, podmonitor_crd_absent_at_start: bool) -> Iterator[Run]:
    """playbooks/nats.yml, StatefulSet method, into its own namespace; removed afterwards."""
    delete_namespace(api, NS)
    volumes = _pre_bound_volumes(api)
    next(volumes)
    try:
        run = nats_playbook(NS)
        assert run.rc == 0, run.out[-6000:]
        yield run
    finally:
        delete_namespace(api, NS)
        next(volumes, None)


@pytest.fixture(scope="module")
def podmonitor_crd(api: client.ApiClient, podmonitor_crd_absent_at_start: bool) -> Iterator[None]:
    """The Prometheus Operator's PodMonitor CRD, created for this module if it was absent."""
    ext = client.ApiextensionsV1Api(api)
    if podmonitor_crd_absent_at_start:
        ext.create_custom_resource_definition(_podmonitor_crd())
    wait_for(lambda: any(c.type == "Established" and c.status == "True"
                         for c in ext.read_custom_resource_definition(PODMONITOR_CRD).status.conditions or []),
             60, "the PodMonitor CRD to be established")
    yield
    if podmonitor_crd_absent_at_start:
        ignore_404(ext.delete_custom_resource_definition, PODMONITOR_CRD)


@pytest.fixture(scope="module")
def gate_cluster() -> Iterator[dict[str, Any]]:
    """A throwaway 3-node JetStream cluster on loopback from the lab_nats role (the same
    nats.conf template), on ports of its own; stopped and removed afterwards."""
    for port in [GATE_CLIENT_BASE + i for i in range(3)] + [GATE_MONITOR_BASE + i for i in range(3)]:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} is in use; the gate test needs it"
    state = Path(tempfile.mkdtemp(prefix="tapio-gate-test-"))
    extra = {"lab_nats_client_port_base": GATE_CLIENT_BASE, "lab_nats_cluster_port_base": GATE_CLUSTER_BASE,
             "lab_nats_monitor_port_base": GATE_MONITOR_BASE, "lab_state_dir": str(state)}
    try:
        run = playbook("playbooks/lab_up.yml", "--tags", "nats", extra=extra)
        assert run.rc == 0, run.out[-4000:]
        yield {"state": state, "monitor_urls": [f"http://127.0.0.1:{GATE_MONITOR_BASE + i}" for i in range(3)],
               "servers": [f"nats://127.0.0.1:{GATE_CLIENT_BASE + i}" for i in range(3)]}
    finally:
        playbook("playbooks/lab_up.yml", "--tags", "nats", extra={**extra, "lab_nats_state": "stopped"})
        shutil.rmtree(state, ignore_errors=True)


# --------------------------------------------------------------------------------------
# StatefulSet method: deploy, idempotence, check mode, immutable changes
# --------------------------------------------------------------------------------------
def test_deploy_creates_the_recommended_statefulset(api: client.ApiClient, deployed: Run) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    sts = apps.read_namespaced_stateful_set(NAME, NS)
    assert sts.spec.replicas == 3
    assert sts.spec.pod_management_policy == "Parallel"
    assert sts.spec.service_name == f"{NAME}-headless"
    assert sts.status.ready_replicas == 3
    pod = sts.spec.template.spec
    nats = next(c for c in pod.containers if c.name == "nats")
    assert nats.image == "nats:2.15.1-alpine"
    assert nats.resources.requests == {"cpu": "500m", "memory": "1Gi"}  # requests = limits: Guaranteed
    assert nats.resources.limits == {"cpu": "500m", "memory": "1Gi"}
    assert nats.startup_probe.http_get.path == "/healthz"
    assert nats.readiness_probe.http_get.path == "/healthz?js-server-only=true"
    assert nats.liveness_probe.http_get.path == "/healthz?js-enabled-only=true"
    assert nats.lifecycle.pre_stop._exec.command == ["nats-server", "--signal", "ldm=/var/run/nats/nats.pid"]
    conf = core.read_namespaced_config_map(f"{NAME}-config", NS).data["nats.conf"]
    lame_duck = int(re.search(r'lame_duck_duration: "(\d+)s"', conf).group(1))
    assert pod.termination_grace_period_seconds > lame_duck
    assert {p.container_port for p in nats.ports} == {4222, 6222, 8222}
    env = {e.name: e for e in nats.env}
    assert env["POD_NAME"].value_from.field_ref.field_path == "metadata.name"
    assert env["NATS_SYSTEM_PASSWORD"].value_from.secret_key_ref.name == f"{NAME}-system"
    # Routes authenticate and clients log in with credentials in routes.conf and users.conf (a
    # Secret), projected with nats.conf and the TLS files into one volume (swapped together),
    # never in the env: a changed password is a reload.
    assert not [name for name in env if name.startswith(("NATS_ROUTE", "NATS_PASSWORD"))]
    [config_volume] = [v for v in pod.volumes if v.name == "config"]
    sources = config_volume.projected.sources
    assert sources[0].config_map.name == f"{NAME}-config"
    assert sources[1].secret.name == f"{NAME}-routes"
    assert [i.key for i in sources[1].secret.items] == ["routes.conf", "users.conf", "revision.conf"]
    assert sources[2].secret.name == f"{NAME}-tls" and sources[2].secret.optional is True
    # The pods roll for what nats-server cannot reload, and never carry a value for it.
    annotations = sts.spec.template.metadata.annotations
    assert set(annotations) == {"checksum/config", "checksum/secrets"}
    [vct] = sts.spec.volume_claim_templates
    assert vct.spec.resources.requests["storage"] == "10Gi"
    assert vct.spec.storage_class_name == "standard"
    # The pods really exist, scheduled by the real scheduler, on volumes bound by the PV controller.
    pvcs = core.list_namespaced_persistent_volume_claim(NS).items
    assert sorted(p.metadata.name for p in pvcs) == [f"jetstream-{NAME}-{i}" for i in range(3)]
    assert {p.status.phase for p in pvcs} == {"Bound"}
    # One server per node: the real scheduler followed the spread rule onto the lab's three nodes.
    [spread] = pod.topology_spread_constraints
    assert (spread.topology_key, spread.when_unsatisfiable, spread.max_skew) == ("kubernetes.io/hostname",
                                                                                 "DoNotSchedule", 1)
    pods = core.list_namespaced_pod(NS, label_selector=",".join(f"{k}={v}" for k, v in
                                                                sts.spec.selector.match_labels.items())).items
    assert len({p.spec.node_name for p in pods}) == 3, [p.spec.node_name for p in pods]
    # Memory and exposure: GOMEMLIMIT at 90 % of the limit, no shared process namespace, no
    # API token, no privilege in either container.
    assert env["GOMEMLIMIT"].value == str(1024 ** 3 * 90 // 100)
    assert not pod.share_process_namespace and pod.automount_service_account_token is False
    assert pod.security_context.seccomp_profile.type == "RuntimeDefault"
    for container in pod.containers:
        context = container.security_context
        assert context.allow_privilege_escalation is False and context.read_only_root_filesystem is True
        assert context.capabilities.drop == ["ALL"], container.name

    headless = core.read_namespaced_service(f"{NAME}-headless", NS)
    assert headless.spec.cluster_ip == "None"
    assert headless.spec.publish_not_ready_addresses is True
    assert {p.port for p in headless.spec.ports} == {4222, 6222}  # monitoring stays on the pods
    # Who may reach the pods: clients from the namespace (and Tapio's), routes from NATS pods only.
    policy = client.NetworkingV1Api(api).read_namespaced_network_policy(NAME, NS).spec
    assert policy.pod_selector.match_labels == sts.spec.selector.match_labels
    assert policy.policy_types == ["Ingress"]
    clients, routes = policy.ingress
    assert [p.port for p in clients.ports] == [4222] and [p.port for p in routes.ports] == [6222]
    assert clients._from[0].pod_selector.match_labels is None  # every pod of the namespace
    assert [f.namespace_selector.match_labels for f in clients._from[1:]] == [{"kubernetes.io/metadata.name": "tapio"}]
    assert [f.pod_selector.match_labels for f in routes._from] == [sts.spec.selector.match_labels]
    # The client Service offers the client port only: routes and monitoring stay on the pods.
    service = core.read_namespaced_service(NAME, NS)
    assert [p.port for p in service.spec.ports] == [4222]
    pdb = client.PolicyV1Api(api).read_namespaced_pod_disruption_budget(NAME, NS)
    assert pdb.spec.max_unavailable == 1
    assert pdb.spec.selector.match_labels == sts.spec.selector.match_labels


def test_nats_conf_in_the_configmap_is_accepted_by_nats_server(api: client.ApiClient, deployed: Run,
                                                               tmp_path: Path) -> None:
    core = client.CoreV1Api(api)
    conf = core.read_namespaced_config_map(f"{NAME}-config", NS).data["nats.conf"]
    secret = core.read_namespaced_secret(f"{NAME}-auth", NS)
    assert "tapio-lab-secret" not in conf and "authorization {" not in conf
    assert "password: $NATS_SYSTEM_PASSWORD" in conf
    assert 'include "routes.conf"' in conf and 'include "revision.conf"' in conf and 'include "users.conf"' in conf
    # JetStream file store sized from the 10Gi claim (90 %), memory store 64Mi.
    assert f"max_file_store: {10 * 2**30 * 90 // 100}" in conf
    assert f"max_memory_store: {64 * 2**20}" in conf
    # The config volume as the kubelet writes it: nats.conf and the routes Secret's files.
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    routes = core.read_namespaced_secret(f"{NAME}-routes", NS).data
    for key in ("routes.conf", "users.conf", "revision.conf"):
        (tmp_path / key).write_text(base64.b64decode(routes[key]).decode())
    route_password = base64.b64decode(routes["password"]).decode()
    password = base64.b64decode(secret.data["NATS_PASSWORD"]).decode()
    system_password = base64.b64decode(core.read_namespaced_secret(f"{NAME}-system", NS).data["NATS_PASSWORD"]).decode()
    # Independent and random (32 letters and digits) on the first install; none in the ConfigMap.
    assert len({route_password, system_password, password}) == 3
    assert re.fullmatch(r"[A-Za-z0-9]{32}", route_password) and re.fullmatch(r"[A-Za-z0-9]{32}", system_password)
    assert route_password not in conf and system_password not in conf
    # The users with their passwords quoted (the lab's ebpf collector's has spaces and quotes in
    # it, and starts with digits), each workload with its own user, in the Secret alone.
    users_conf = (tmp_path / "users.conf").read_text()
    ebpf_password = base64.b64decode(core.read_namespaced_secret(f"{NAME}-auth-tapio-ebpf-collector", NS)
                                     .data["NATS_PASSWORD"]).decode()
    assert f"password: {json.dumps(password)}" in users_conf and f"password: {json.dumps(ebpf_password)}" in users_conf
    assert '"' in ebpf_password and " " in ebpf_password
    routes_conf = (tmp_path / "routes.conf").read_text()
    assert f"nats://route:{route_password}@{NAME}-1.{NAME}-headless.{NS}.svc:6222" in routes_conf
    assert re.search(r'"tapio.io/config-revision": "[0-9a-f]{16}"', (tmp_path / "revision.conf").read_text())
    # As the kubelet starts the pod: POD_NAME from the downward API, each secretKeyRef from its Secret.
    sts = client.AppsV1Api(api).read_namespaced_stateful_set(NAME, NS)
    nats = next(c for c in sts.spec.template.spec.containers if c.name == "nats")
    env = {"PATH": os.environ["PATH"]}
    for entry in nats.env:
        if entry.value_from and entry.value_from.field_ref:
            env[entry.name] = f"{NAME}-0"  # metadata.name, the only field the pod reads
        elif entry.value_from:
            ref = entry.value_from.secret_key_ref
            env[entry.name] = base64.b64decode(core.read_namespaced_secret(ref.name, NS).data[ref.key]).decode()
        else:
            assert password not in entry.value and system_password not in entry.value, entry.name
            env[entry.name] = entry.value
    # nats-server reads the system password as a config value: the pods get it quoted. No other
    # password is in the pods' environment (users.conf holds them, reloaded without a restart).
    assert env["NATS_SYSTEM_PASSWORD"] == json.dumps(system_password)
    assert not any(name.startswith("NATS_PASSWORD") for name in env), sorted(env)
    ok = subprocess.run([str(NATS_SERVER), "-t", "-c", str(path)], env=env, capture_output=True, text=True,
                        check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # A route password nats-server would lex as a number or a boolean is written quoted.
    for plain in ("123456", "on"):
        (tmp_path / "routes.conf").write_text(routes_conf.replace(route_password, plain))
        quoted = subprocess.run([str(NATS_SERVER), "-t", "-c", str(path)], env=env, capture_output=True,
                                text=True, check=False)
        assert quoted.returncode == 0, plain + quoted.stdout + quoted.stderr
        (tmp_path / "routes.conf").write_text(routes_conf.replace(f'"{route_password}"', plain))
        unquoted = subprocess.run([str(NATS_SERVER), "-t", "-c", str(path)], env=env, capture_output=True,
                                  text=True, check=False)
        assert unquoted.returncode != 0, plain  # why it is quoted
    (tmp_path / "routes.conf").write_text(routes_conf)
    # The env references are real: without them the server refuses the file.
    missing = subprocess.run([str(NATS_SERVER), "-t", "-c", str(path)], env={"PATH": os.environ["PATH"]},
                             capture_output=True, text=True, check=False)
    assert missing.returncode != 0
    assert "POD_NAME" in missing.stdout + missing.stderr


def test_nats_conf_with_tls_and_without_jetstream_is_accepted_by_nats_server(tmp_path: Path) -> None:
    """The optional parts of the render (client TLS with verification, no JetStream, no
    auth) also pass the real server's check, with real certificate files."""
    certs = tmp_path / "certs"
    certs.mkdir()
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run([*openssl, "-keyout", str(certs / "ca.key"), "-out", str(certs / "ca.crt"),
                    "-subj", "/CN=tapio-test-ca"], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(certs / "tls.key"),
                    "-out", str(certs / "tls.csr"), "-subj", f"/CN={NAME}"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(certs / "tls.csr"), "-CA", str(certs / "ca.crt"),
                    "-CAkey", str(certs / "ca.key"), "-CAcreateserial", "-days", "1", "-out", str(certs / "tls.crt")],
                   check=True, capture_output=True)
    variants = {
        "tls": {"nats_cluster_tls_enabled": True, "nats_cluster_tls_verify": True,
                "nats_cluster_route_tls_enabled": True, "nats_cluster_config_dir": str(certs)},
        "core": {"nats_cluster_jetstream_enabled": False, "nats_cluster_auth_enabled": False},
    }
    for name, settings in variants.items():
        dest = tmp_path / f"{name}.conf"
        run = playbook(HERE / "render_conf.yml", extra={**settings, "render_conf_dest": str(dest)})
        assert run.rc == 0, run.out[-3000:]
        # The Secret's files it includes (users.conf rendered beside it), and every $NAME it
        # reads as the pod's env sets it.
        (tmp_path / "routes.conf").write_text('authorization { user: "route", password: "x" }\n'
                                              f'routes: ["nats://route:x@{NAME}-0.{NAME}-headless:6222"]\n')
        (tmp_path / "revision.conf").write_text('server_metadata { "tapio.io/config-revision": "0" }\n')
        env = {"PATH": os.environ["PATH"]}
        env.update({var: f"{NAME}-1" for var in re.findall(r"\$([A-Z][A-Z0-9_]*)", dest.read_text())})
        check = subprocess.run([str(NATS_SERVER), "-t", "-c", str(dest)], env=env, capture_output=True, text=True,
                               check=False)
        assert check.returncode == 0, f"{name}: {check.stdout}{check.stderr}\n{dest.read_text()}"
        text = dest.read_text()
        if name == "tls":
            assert f'ca_file: "{certs}/ca.crt"' in text and "verify: true" in text
            # Routes over mutual TLS: a tls block inside the cluster block.
            cluster = re.search(r"^cluster \{.*?^\}$", text, re.M | re.S).group(0)
            assert f'cert_file: "{certs}/tls.crt"' in cluster and "verify: true" in cluster, cluster
        else:
            assert "jetstream {" not in text and "authorization {" not in text


def test_podmonitor_is_skipped_without_its_crd(deployed: Run, podmonitor_crd_absent_at_start: bool) -> None:
    if not podmonitor_crd_absent_at_start:
        pytest.skip("the PodMonitor CRD already existed in the lab before this module ran")
    assert "PodMonitor skipped: the CRD podmonitors.monitoring.coreos.com is not installed" in deployed.out


def test_podmonitor_is_applied_when_its_crd_exists(api: client.ApiClient, deployed: Run,
                                                   podmonitor_crd: None) -> None:
    run = nats_playbook(NS, "--tags", "nats_monitoring")
    assert run.rc == 0, run.out[-4000:]
    pm = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", NS, "podmonitors", NAME)
    sts = client.AppsV1Api(api).read_namespaced_stateful_set(NAME, NS)
    assert pm["spec"]["selector"]["matchLabels"] == sts.spec.selector.match_labels
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "prom-metrics"


def test_a_workload_without_a_password_gets_a_random_one_the_servers_know(api: client.ApiClient,
                                                                          deployed: Run) -> None:
    core = client.CoreV1Api(api)
    secret = core.read_namespaced_secret(f"{NAME}-auth-{GENERATED_FOR}", NS).data
    user, password = (base64.b64decode(secret[key]).decode() for key in ("NATS_USER", "NATS_PASSWORD"))
    assert user == GENERATED_FOR
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password) and password != LAB_PASSWORDS[GENERATED_FOR]
    users_conf = base64.b64decode(core.read_namespaced_secret(f"{NAME}-routes", NS).data["users.conf"]).decode()
    assert json.dumps(password) in users_conf
    # The other workloads keep the inventory's passwords.
    pipeline = core.read_namespaced_secret(f"{NAME}-auth-tapio-pipeline", NS).data
    assert base64.b64decode(pipeline["NATS_PASSWORD"]).decode() == LAB_PASSWORDS["tapio-pipeline"]


def test_rerun_changes_nothing(api: client.ApiClient, deployed: Run, podmonitor_crd: None) -> None:
    """A second run (with the PodMonitor applied by now) changes nothing: a workload's random
    password included."""
    before = resource_versions(api, NS)
    before["podmonitor"] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", NS, "podmonitors", NAME)["metadata"]["resourceVersion"]
    run = nats_playbook(NS)
    assert run.rc == 0, run.out[-4000:]
    assert run.recap["changed"] == 0, run.out[-6000:]
    before.pop("podmonitor")
    assert resource_versions(api, NS) == before


def test_check_mode_shows_a_change_and_applies_nothing(api: client.ApiClient, deployed: Run) -> None:
    before = resource_versions(api, NS)
    resources = {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "1Gi"}}
    run = nats_playbook(NS, extra={"nats_cluster_resources": resources}, check=True, diff=True)
    assert run.rc == 0, run.out[-4000:]
    # Exactly the StatefulSet would change, and --diff shows how.
    assert run.recap["changed"] == 1, run.out[-6000:]
    assert re.search(r'^-\s+"cpu": "500m"', run.out, re.M), run.out[-6000:]
    assert re.search(r'^\+\s+"cpu": "200m"', run.out, re.M)
    assert resource_versions(api, NS) == before
    sts = client.AppsV1Api(api).read_namespaced_stateful_set(NAME, NS)
    assert sts.spec.template.spec.containers[0].resources.requests["cpu"] == "500m"


def test_volume_claim_change_is_refused_before_anything_is_applied(api: client.ApiClient, deployed: Run) -> None:
    before = resource_versions(api, NS)
    run = nats_playbook(NS, extra={"nats_cluster_storage_size": "20Gi", "nats_cluster_storage_class": "fast-ssd"})
    assert run.rc != 0
    assert "does not allow changing a StatefulSet's volumeClaimTemplates" in run.out
    assert "nothing was applied" in run.out
    assert '"storage": "10Gi", "class": "standard"' in run.out, run.out[-4000:]
    assert '"storage": "20Gi", "class": "fast-ssd"' in run.out
    # The ConfigMap would have changed too (max_file_store follows the size): it did not.
    assert resource_versions(api, NS) == before


def test_health_gate_passes_against_the_lab_nats(deployed: Run, nats_lab: NatsLab) -> None:
    leader = nats_lab.jsz()["meta_cluster"]["leader"]
    assert "All 3 NATS servers answer /healthz with 200." in deployed.out
    assert f"JetStream healthy: leader {leader}, 3 peers, all current." in deployed.out
    assert f"StatefulSet {NS}/{NAME} rolled out: 3/3 pods ready" in deployed.out


# --------------------------------------------------------------------------------------
# Monitoring
# --------------------------------------------------------------------------------------
def test_exporter_sidecar_serves_jetstream_metrics(api: client.ApiClient, deployed: Run) -> None:
    sts = client.AppsV1Api(api).read_namespaced_stateful_set(NAME, NS)
    exporter = next(c for c in sts.spec.template.spec.containers if c.name == "prom-exporter")
    assert exporter.image == "natsio/prometheus-nats-exporter:0.17.3"
    assert [(p.name, p.container_port) for p in exporter.ports] == [("prom-metrics", 7777)]
    assert "-jsz=all" in exporter.args and "-healthz" in exporter.args and "-routez" in exporter.args
    # server_id is each server's name: the dashboard's legends differ per pod.
    assert "-use_internal_server_name" in exporter.args and not [a for a in exporter.args if a.startswith("-prefix")]
    assert exporter.args[-1] == "http://localhost:8222"


def _podmonitor_crd() -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": PODMONITOR_CRD, "labels": {"tapio-nats-test": "yes"}},
        "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                 "names": {"kind": "PodMonitor", "plural": "podmonitors", "singular": "podmonitor",
                           "listKind": "PodMonitorList"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
    }


def test_dashboard_configmap_is_labelled_and_parses(api: client.ApiClient, deployed: Run) -> None:
    cm = client.CoreV1Api(api).read_namespaced_config_map("tapio-nats-dashboard", NS)
    assert cm.metadata.labels["grafana_dashboard"] == "1"
    dashboard = json.loads(cm.data["tapio-nats-jetstream.json"])
    assert dashboard == json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Messages per second per stream", "Consumer pending", "Consumer ack pending", "Stream storage",
            "Server health", "Routes"} <= titles
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_every_dashboard_metric_is_a_documented_exporter_metric() -> None:
    documented = yaml.safe_load((HERE / "exporter_metrics.yml").read_text())["metrics"]
    used = dashboard_metrics(json.loads(DASHBOARD.read_text()))
    assert used, "the dashboard queries no exporter metric"
    assert used <= set(documented), f"not exposed by prometheus-nats-exporter: {sorted(used - set(documented))}"


# --------------------------------------------------------------------------------------
# Operator method (separate namespace)
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def operator_cleanup(api: client.ApiClient) -> Iterator[dict[str, bool]]:
    crds_before = {name: crd_exists(api, name) for name in OPERATOR_CRDS}
    delete_namespace(api, OPERATOR_NS)
    yield crds_before
    delete_namespace(api, OPERATOR_NS)
    rbac = client.RbacAuthorizationV1Api(api)
    ignore_404(rbac.delete_cluster_role_binding, f"nats-operator-{OPERATOR_NS}")
    if not any(crds_before.values()):
        ignore_404(rbac.delete_cluster_role, "nats-operator")
        for name in OPERATOR_CRDS:
            ignore_404(client.ApiextensionsV1Api(api).delete_custom_resource_definition, name)


def test_operator_method_refuses_jetstream_and_creates_nothing(api: client.ApiClient,
                                                              operator_cleanup: dict[str, bool]) -> None:
    run = nats_playbook(OPERATOR_NS, extra={"nats_cluster_method": "operator"})
    assert run.rc != 0
    assert "nats-operator (deprecated, last release 0.8.x) never supported JetStream" in run.out
    assert "Use nats_cluster_method=statefulset" in run.out
    assert "Nothing was changed" in run.out
    assert run.recap["changed"] == 0
    assert not namespace_exists(api, OPERATOR_NS)
    for name in OPERATOR_CRDS:
        assert crd_exists(api, name) == operator_cleanup[name]


@pytest.mark.parametrize("extra, refusal", [
    # nats-server -t accepts it, but the server refuses to start ("lame duck grace period (30s)
    # should be strictly lower than lame duck duration (30s)"), after the pods rolled.
    ({"nats_cluster_lame_duck_grace_period_seconds": 30},
     "nats_cluster_lame_duck_grace_period_seconds (30) must be lower than nats_cluster_lame_duck_duration_seconds (30)"),
    # A newline in a password: named, its value never printed.
    ({"tapio_nats_system_password": "first line\nsecond line",
      "tapio_nats_component_passwords": {"tapio-pipeline": "p", "tapio-k8s-collector": "tab\there",
                                         "tapio-systemd-collector": "s", "tapio-ebpf-collector": "e"}},
     "lab: tapio_nats_system_password holds a control character"),
], ids=["lame-duck-grace", "control-character"])
def test_what_nats_server_would_refuse_later_is_refused_before_any_change(
        api: client.ApiClient, extra: dict[str, Any], refusal: str) -> None:
    namespace = f"nats-refuse-{uuid.uuid4().hex[:6]}"
    run = nats_playbook(namespace, extra=extra)
    assert run.rc != 0
    assert refusal in run.out, run.out[-3000:]
    assert "second line" not in run.out and "tab\there" not in run.out
    assert re.search(r"^lab\s+:\s+ok=\d+\s+changed=0\s", run.out, re.M), run.out[-3000:]
    assert not namespace_exists(api, namespace)


def test_operator_method_without_jetstream_installs_the_plans_natscluster(
        api: client.ApiClient, operator_cleanup: dict[str, bool]) -> None:
    extra = {"nats_cluster_method": "operator", "nats_cluster_jetstream_enabled": False}
    run = nats_playbook(OPERATOR_NS, extra=extra)
    assert run.rc == 0, run.out[-6000:]
    ext = client.ApiextensionsV1Api(api)
    for name in OPERATOR_CRDS:
        conditions = ext.read_custom_resource_definition(name).status.conditions
        assert any(c.type == "Established" and c.status == "True" for c in conditions)
    deployment = client.AppsV1Api(api).read_namespaced_deployment("nats-operator", OPERATOR_NS)
    assert deployment.spec.template.spec.containers[0].image == "natsio/nats-operator:0.8.3"
    assert deployment.status.ready_replicas == 1
    cluster = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "nats.io", "v1alpha2", OPERATOR_NS, "natsclusters", NAME)
    assert cluster["spec"]["size"] == 3
    assert cluster["spec"]["version"] == "2.15.1"
    assert cluster["spec"]["pod"]["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                                   "limits": {"cpu": "500m", "memory": "1Gi"}}
    assert "jetstream" not in cluster["spec"]
    # Its clients authenticate, each workload as its own user with only its subjects.
    assert cluster["spec"]["auth"] == {"clientsAuthSecret": f"{NAME}-clients-auth", "clientsAuthTimeout": 5}
    secret = client.CoreV1Api(api).read_namespaced_secret(f"{NAME}-clients-auth", OPERATOR_NS)
    assert list(secret.data) == ["clients-auth.json"]
    users = {u["username"]: u for u in json.loads(base64.b64decode(secret.data["clients-auth.json"]))["users"]}
    assert users["tapio"] == {"username": "tapio", "password": "tapio-lab-secret"}
    assert users["tapio-k8s-collector"]["permissions"] == {
        "publish": ["tapio.events.k8s", "tapio.events.k8s.>"], "subscribe": ["_INBOX_tapio-k8s-collector.>"]}
    # No StatefulSet with this method.
    assert not client.AppsV1Api(api).list_namespaced_stateful_set(OPERATOR_NS).items
    again = nats_playbook(OPERATOR_NS, extra=extra)
    assert again.rc == 0 and again.recap["changed"] == 0, again.out[-6000:]


# --------------------------------------------------------------------------------------
# The lab's NATS runs from the template; the gate fails when a node is down
# --------------------------------------------------------------------------------------
def test_lab_nats_runs_from_the_nats_cluster_template(gate_cluster: dict[str, Any]) -> None:
    conf = gate_cluster["state"] / "nats" / "nats-0" / "nats.conf"
    text = conf.read_text()
    header = (REPO_ROOT / "roles/nats_cluster/templates/nats.conf.j2").read_text().splitlines()[1]
    assert text.splitlines()[1] == header
    assert f"port: {GATE_CLIENT_BASE}" in text
    ok = subprocess.run([str(NATS_SERVER), "-t", "-c", str(conf)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    varz = get_json(f"{gate_cluster['monitor_urls'][0]}/varz")
    assert varz["server_name"] == "nats-0"
    assert varz["jetstream"]["config"]["store_dir"].startswith(str(gate_cluster["state"]))
    # The shared lab's servers were rendered by the same role from the same template.
    shared = LAB_STATE / "nats" / "nats-0" / "nats.conf"
    assert shared.read_text().splitlines()[1] == header
    ok = subprocess.run([str(NATS_SERVER), "-t", "-c", str(shared)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def route_peers(monitor_url: str) -> set[str]:
    return {route.get("remote_name") for route in get_json(f"{monitor_url}/routez").get("routes") or []}


@pytest.mark.parametrize("credentials", ["", "route:wrong-password@", "route:tapio-lab-route-secret@"])
def test_routes_join_the_cluster_only_with_the_route_password(gate_cluster: dict[str, Any], tmp_path: Path,
                                                               credentials: str) -> None:
    """The cluster port authenticates (nats.conf's cluster authorization, the same template as
    the StatefulSet's): a server routing to it without the routes' password is refused by the
    real servers; with it, it joins (so the refusal is the password's doing)."""
    text = (gate_cluster["state"] / "nats" / "nats-0" / "nats.conf").read_text()
    assert 'user: "route"' in text and "tapio-lab-route-secret@127.0.0.1" in text
    assert route_peers(gate_cluster["monitor_urls"][0]) == {"nats-1", "nats-2"}
    cluster_name = re.search(r"^cluster \{\n  name: (\S+)$", text, re.M).group(1)
    name = "intruder" if credentials != "route:tapio-lab-route-secret@" else "joiner"
    port = GATE_CLIENT_BASE + 9
    conf = tmp_path / "other.conf"
    conf.write_text(f'server_name: {name}\nhost: 127.0.0.1\nport: {port}\nhttp_port: {port + 1}\n'
                    f'cluster {{\n  name: {cluster_name}\n  host: 127.0.0.1\n  port: {port + 2}\n'
                    f'  routes: ["nats-route://{credentials}127.0.0.1:{GATE_CLUSTER_BASE}"]\n}}\n')
    log = tmp_path / "other.log"
    server = subprocess.Popen([str(NATS_SERVER), "-c", str(conf), "-l", str(log)])
    try:
        if name == "joiner":
            wait_for(lambda: name in route_peers(gate_cluster["monitor_urls"][0]), 30, "the joiner's route")
        else:
            # The server's own answer, seen from both sides, before judging the routes.
            wait_for(lambda: log.exists() and "authorization violation" in log.read_text().lower(), 30,
                     f"nats-0 refusing the route ({credentials or 'no credentials'})")
            assert name not in route_peers(gate_cluster["monitor_urls"][0])
            assert route_peers(f"http://127.0.0.1:{port + 1}") == set()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_exporter_metric_sources_exist_on_the_real_server(gate_cluster: dict[str, Any]) -> None:
    """Every documented exporter metric the dashboard uses is built from a field the real
    nats-server returns (with a stream and a consumer holding messages)."""
    asyncio.run(_stream_with_pending_consumer(gate_cluster["servers"]))
    documented = yaml.safe_load((HERE / "exporter_metrics.yml").read_text())["metrics"]
    used = dashboard_metrics(json.loads(DASHBOARD.read_text()))
    base = gate_cluster["monitor_urls"][0]
    answers: dict[str, Any] = {}
    missing = []
    for metric in sorted(used):
        spec = documented[metric]
        if spec["endpoint"] not in answers:
            answers[spec["endpoint"]] = get_json(f"{base}/{spec['endpoint']}")
        if not field_values(answers[spec["endpoint"]], spec["field"]):
            missing.append(f"{metric}: /{spec['endpoint']} has no {spec['field']}")
    assert not missing, missing
    # The values are real: the consumer leader reports the 5 undelivered messages.
    consumers = [c for url in gate_cluster["monitor_urls"]
                 for c in field_values(get_json(f"{url}/jsz?consumers=true&config=true"),
                                       "account_details[].stream_detail[].consumer_detail[]")]
    assert any(c["num_pending"] == 5 for c in consumers), consumers


async def _stream_with_pending_consumer(servers: list[str]) -> None:
    import nats
    from nats.js.api import ConsumerConfig, StreamConfig

    nc = await nats.connect(servers=servers, user="tapio", password="tapio-lab-secret")
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="GATE_METRICS", subjects=["gate.metrics.>"], num_replicas=3))
        await js.add_consumer("GATE_METRICS", ConsumerConfig(durable_name="dashboard", ack_policy="explicit"))
        for i in range(5):
            await js.publish("gate.metrics.test", f"event {i}".encode())
    finally:
        await nc.close()


def test_health_gate_passes_on_a_healthy_cluster(gate_cluster: dict[str, Any]) -> None:
    run = playbook(HERE / "gate.yml", extra={"tapio_nats_reach": "direct",
                                             "nats_cluster_monitor_urls": gate_cluster["monitor_urls"],
                                             "nats_cluster_health_retries": 10, "nats_cluster_health_delay": 1})
    assert run.rc == 0, run.out[-4000:]
    assert "3 peers, all current" in run.out


def test_health_gate_requires_every_expected_peer(gate_cluster: dict[str, Any]) -> None:
    """nats_cluster_expected_peers is checked against the meta leader's view."""
    run = playbook(HERE / "gate.yml", extra={"tapio_nats_reach": "direct",
                                             "nats_cluster_monitor_urls": gate_cluster["monitor_urls"],
                                             "nats_cluster_expected_peers": 4,
                                             "nats_cluster_health_retries": 2, "nats_cluster_health_delay": 1})
    assert run.rc != 0
    assert re.search(r"NATS health gate failed after .*: meta leader nats-\d sees cluster_size 3 and 2 other "
                     r"peer\(s\); expected 4 peers", run.out), run.out[-4000:]


def test_health_gate_fails_clearly_when_a_node_is_down(gate_cluster: dict[str, Any]) -> None:
    stop = subprocess.run(["python3", str(REPO_ROOT / "lab/bin/labproc"), "--state", str(gate_cluster["state"]),
                           "stop", "nats-2"], capture_output=True, text=True, check=False)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    down = gate_cluster["monitor_urls"][2]
    assert http_status(f"{down}/healthz") == -1
    run = playbook(HERE / "gate.yml", extra={"tapio_nats_reach": "direct",
                                             "nats_cluster_monitor_urls": gate_cluster["monitor_urls"],
                                             "nats_cluster_health_retries": 2, "nats_cluster_health_delay": 1})
    assert run.rc != 0
    assert re.search(r"NATS health gate failed after [0-9.]+s \(\d+ checks of nats_cluster_monitor_urls\): "
                     r"1 of 3 servers are not healthy: ", run.out), run.out[-4000:]
    assert f"{down}/healthz answered nothing" in run.out and "Connection refused" in run.out


# --------------------------------------------------------------------------------------
# Docker compose for developers (plan step 5)
# --------------------------------------------------------------------------------------
def test_dev_compose_command_line_runs_a_real_jetstream_server(tmp_path: Path) -> None:
    dest = tmp_path / "docker-compose.nats.yml"
    run = playbook("playbooks/dev_compose.yml", extra={"dev_compose_dest": str(dest)})
    assert run.rc == 0, run.out[-3000:]
    compose = yaml.safe_load(dest.read_text())
    nats = compose["services"]["nats"]
    assert nats["image"] == "nats:2.10-alpine"
    assert "nats_data" in compose["volumes"]
    # The container's own arguments, with only the listen ports and store moved to loopback
    # and a temporary directory (later flags win in nats-server's flag parsing).
    client_port, monitor_port = free_port(), free_port()
    args = [*nats["command"], "-a", "127.0.0.1", f"--port={client_port}", f"--http_port={monitor_port}",
            f"--store_dir={tmp_path / 'js'}"]
    proc = subprocess.Popen([str(NATS_SERVER), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{monitor_port}/healthz?js-enabled-only=true") == 200, 30,
                 "the compose command's nats-server to be healthy")
        varz = get_json(f"http://127.0.0.1:{monitor_port}/varz")
        assert varz["server_name"] == "tapio-dev"
        assert varz["jetstream"]["config"]["store_dir"].startswith(str(tmp_path / "js"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
