"""The toolkit's NATS StatefulSet on the lab's real nodes (issue 21), in the lab's own namespace.

The lab inventory as a user runs it: ``migrate.yml`` installs NATS with the nats phase onto the
three real kubelet nodes (containerd + runc, roles/lab_nodes), reaches its pods through the API
server (apiserver -> kubelet port-forward), and the lab's simulator plays Tapio's pods, which
resolve ``tapio_nats_url`` through the cluster DNS (CoreDNS) to the client Service's ClusterIP
(kube-proxy). Every run's verify phase reads the simulator's ledger (0 lost, 0 twice).

- A nats-server container killed during the collectors phase is restarted by its kubelet and
  the migration completes; the re-run changes nothing.
- A new route password, client TLS turned on and a renewed certificate are reloaded by every
  server (nats_server_reload, as the system user) with no container restarted; the system
  user runs `nats server report jetstream`.
- While the simulator publishes, the toolkit's password and a collector's password change by
  reload (no container restarts): the collector's DaemonSet restarts onto its other user while
  the servers accept both, then the old one is refused; a new system password (read from the
  servers' environment) rolls the StatefulSet, each server entering lame duck before it stops
  (its own log, followed through the kubelet); no event is lost.
- Restored (rollback.yml) and migrated again while a whole real node is stopped during the
  collectors phase (its containers killed, its kubelet and containerd stopped): the cutover
  completes, and verify fails only on NATS redundancy, with a message that names the missing
  server and the next step.
- The node back, the plan's A/B: the lab's second correlation engine is switched (engines.yml)
  onto a replay.yml window of the stream's last five minutes; its own ledger counts the window,
  the pipeline's consumer and ledger are untouched; both then read live events; switched off,
  its spec is the pre-switch one.
- What the pod spec decides, read off the running nats-server process on the machine:
  GOMEMLIMIT in its environment, no capabilities, no privilege escalation, a seccomp filter, a
  read-only root filesystem; and with one real node cordoned the third pod stays Pending and
  the nats phase fails naming the spread rule.

The killed container or node is never the one the emulated pipeline is connected to, nor the
leader of its durable consumer: an ack lost with its server makes JetStream redeliver after
ack_wait, and the pipeline, which acks without de-duplicating (Tapio's as the seed writes
it), would count that event twice (see test_migration_nats_node_loss.py and
docs/migration.md, "A NATS server lost").

The module resets the lab before and after: the lab's namespace is what molecule also uses.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
from kubernetes import client, config

from conftest import PORT_OFFSET, REAL_NODE_PREFIX, REPO_ROOT, VENV_BIN, KubeLab
from migration_lab import Run, runner_kubeconfig
from module_utils_loader import load_module_utils
from nats_support import natscli_path
from test_migration_nats_node_loss import get_json

pytestmark = pytest.mark.integration

NAMESPACE = "tapio"
STATEFULSET = "tapio-nats"
NETWORK_INDEX = (PORT_OFFSET // 100) % 50  # roles/lab_nodes: lab_nodes_network_index
POD_NETWORK = f"10.{200 + NETWORK_INDEX}."
RUN_DIR = Path(f"/run/tapio-lab-{NETWORK_INDEX}")
SIMULATOR = f"http://127.0.0.1:{8787 + PORT_OFFSET}"
STREAM, CONSUMER = "TAPIO_EVENTS", "tapio-pipeline"
PIPELINE_CLIENT = "sim-tapio-pipeline-"
CANARY_SOURCE = "k8s-collector"  # the first collector of tapio_collectors_order: the canary
# Bounds on how long the test waits for a step, so a hung run fails instead of blocking the
# suite; nothing is asserted about how long anything took.
STEP_LIMIT = 300.0


def playbook(*args: str, output: Optional[Path] = None) -> Any:
    """ansible-playbook with the lab inventory (ansible.cfg's), as a user runs it: a finished
    Run, or with *output* a background run (in a session of its own) writing there."""
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0"}
    command = [str(VENV_BIN / "ansible-playbook"), *args]
    if output is None:
        proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
        return Run(proc.returncode, proc.stdout, proc.stderr)
    with open(output, "wb") as log:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def lab(*args: str) -> None:
    proc = subprocess.run([str(REPO_ROOT / "scripts" / "lab"), *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"scripts/lab {' '.join(args)}: rc {proc.returncode}\n{proc.stdout[-4000:]}"


def wait_for(what: str, predicate: Callable[[], Any], run: Optional[subprocess.Popen] = None,
             output: Optional[Path] = None) -> Any:
    deadline = time.monotonic() + STEP_LIMIT
    while not (value := predicate()):
        if run is not None and output is not None and run.poll() is not None:
            pytest.fail(f"the run ended before {what}\n{Run.from_output(run.returncode, output).explain()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {STEP_LIMIT:g}s" + (f"\n{output.read_text(errors='replace')[-6000:]}"
                                                              if output else ""))
        time.sleep(0.5)
    return value


@dataclass(frozen=True)
class NatsPod:
    name: str
    node: str
    ip: str
    container_id: str
    restarts: int
    ready: bool

    def monitor(self, path: str) -> Optional[tuple[int, Any]]:
        """The pod's monitoring port at its CNI address (the host routes to the nodes' bridges)."""
        return get_json(f"http://{self.ip}:8222{path}", timeout=3)

    @property
    def runtime_socket(self) -> Path:
        return RUN_DIR / f"n{self.node.removeprefix(REAL_NODE_PREFIX)}" / "containerd.sock"


class Cluster:
    def __init__(self, kube: KubeLab) -> None:
        self.kube = kube
        self.core = client.CoreV1Api(config.new_client_from_config(str(kube.kubeconfig), context=kube.context))

    def pods(self) -> list[NatsPod]:
        found = []
        for pod in self.core.list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/name=nats").items:
            status = next((s for s in pod.status.container_statuses or [] if s.name == "nats"), None)
            found.append(NatsPod(pod.metadata.name, pod.spec.node_name or "", pod.status.pod_ip or "",
                                 (status.container_id or "").removeprefix("containerd://") if status else "",
                                 status.restart_count if status else 0, bool(status and status.ready)))
        return sorted(found, key=lambda p: p.name)

    def pod(self, name: str) -> NatsPod:
        return next(p for p in self.pods() if p.name == name)

    def roles(self) -> dict[str, list[str]]:
        """Which pod the emulated pipeline is connected to, and which leads its consumer."""
        pods = self.pods()
        roles: dict[str, list[str]] = {p.name: [] for p in pods}
        for pod in pods:
            connz = pod.monitor("/connz?limit=1024")
            names = [c.get("name") or "" for c in (connz[1].get("connections") or [])] if connz and connz[0] == 200 else []
            if any(n.startswith(PIPELINE_CLIENT) for n in names):
                roles[pod.name].append("pipeline connection")
        for pod in pods:
            jsz = pod.monitor("/jsz?accounts=true&streams=true&consumers=true")
            if not jsz or jsz[0] != 200:
                continue
            for account in jsz[1].get("account_details") or []:
                for stream in account.get("stream_detail") or []:
                    for consumer in stream.get("consumer_detail") or []:
                        leader = (consumer.get("cluster") or {}).get("leader")
                        if stream["name"] == STREAM and consumer["name"] == CONSUMER and leader in roles:
                            roles[leader].append("pipeline consumer leader")
            break
        return roles

    def victim(self) -> NatsPod:
        roles = self.roles()
        spared = [p for p in self.pods() if not roles[p.name]]
        assert spared, f"every NATS pod serves the pipeline: {roles}"
        return spared[0]

    def healthy(self) -> bool:
        pods = self.pods()
        return len(pods) == 3 and all(p.ready and (p.monitor("/healthz") or (0,))[0] == 200 for p in pods)


def canary_through_nats() -> int:
    ledger = get_json(f"{SIMULATOR}/ledger") or (0, {})
    return ledger[1].get("sources", {}).get(CANARY_SOURCE, {}).get("received_by_path", {}).get("nats", 0)


def settled_ledger() -> dict[str, Any]:
    answer = get_json(f"{SIMULATOR}/ledger?settle=30", timeout=60)
    assert answer and answer[0] == 200, answer
    return answer[1]


def lost(ledger: dict[str, Any]) -> dict[str, int]:
    return {name: int(row.get("lost") or 0) for name, row in ledger.get("sources", {}).items() if row.get("lost")}


def pristine(cluster: "Cluster") -> bool:
    """The lab's namespace as a reset leaves it (molecule's last step): no NATS installed, no
    migration recorded."""
    names = {c.metadata.name for c in cluster.core.list_namespaced_config_map(NAMESPACE).items}
    return not cluster.pods() and "tapio-migration-state" not in names


def migrate_with_fault(output: Path, fault: Callable[[], str], *args: str, limit: float) -> tuple[Run, str]:
    """migrate.yml in the background; once the canary's events flow through NATS (the
    collectors phase has switched the canary), *fault()* runs and says what it did. The run's
    result and that sentence; a run still going when the test gives up is killed."""
    before = canary_through_nats()  # a lab migrated and rolled back before has counted some already
    run = playbook("migrate.yml", *args, output=output)
    try:
        wait_for("canary events through NATS (the collectors phase switching the canary)",
                 lambda: canary_through_nats() > before, run, output)
        done = fault()
        rc = run.wait(timeout=limit)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    return Run.from_output(rc, output), done


@pytest.fixture(scope="module")
def cluster(kube_lab: KubeLab) -> Iterator[Cluster]:
    nodes = Cluster(kube_lab)
    if not pristine(nodes):
        lab("reset")
    try:
        yield nodes
    finally:
        lab("reset")  # which also starts again a node a test stopped (the lab_nodes role)


def test_with_two_schedulable_nodes_the_third_server_stays_pending_and_the_spread_rule_is_named(
        cluster: Cluster, kube_lab: KubeLab) -> None:
    # First in the module, on the fixture's fresh reset: the install this leaves (the third pod
    # scheduled once the node is uncordoned) is the one the migration below finds.
    kubectl = [str(kube_lab.kubectl), "--kubeconfig", str(kube_lab.kubeconfig), "--context", kube_lab.context]
    cordoned = f"{REAL_NODE_PREFIX}2"
    subprocess.run([*kubectl, "cordon", cordoned], check=True, capture_output=True, timeout=60)
    try:
        run = playbook("playbooks/nats.yml", "-e", "nats_cluster_progress_deadline=20")
    finally:
        subprocess.run([*kubectl, "uncordon", cordoned], check=True, capture_output=True, timeout=60)
    assert run.rc != 0, run.explain()
    pending = [p for p in cluster.pods() if not p.node]
    assert len(pending) == 1, cluster.pods()
    assert {p.node for p in cluster.pods() if p.node} == {f"{REAL_NODE_PREFIX}0", f"{REAL_NODE_PREFIX}1"}
    assert f"rollout of StatefulSet {NAMESPACE}/{STATEFULSET}: no progress for 20s" in run.stdout, run.explain()
    assert f"not scheduled: {pending[0].name}: " in run.stdout, run.explain()
    assert "didn't match pod topology spread constraints" in run.stdout, run.explain()
    # Uncordoned, the third server is scheduled and the cluster forms (a new JetStream cluster
    # of 3 found no meta leader with 2: the first two servers' startup probes fail until then).
    wait_for("the third server scheduled and NATS healthy once the node is uncordoned", cluster.healthy)


def test_migrate_survives_a_killed_nats_container_and_the_re_run_changes_nothing(
        cluster: Cluster, kube_lab: KubeLab, tmp_path: Path) -> None:
    # Both runs as the runner's ServiceAccount, bound to the shipped Role alone (docs/rbac.md):
    # NATS reached through the Kubernetes API, each forward to a pod of the StatefulSet whose
    # server names itself after its pod.
    granted = playbook("playbooks/runner_rbac.yml")
    assert granted.rc == 0, granted.explain()
    kubeconfig = runner_kubeconfig(kube_lab, cluster.core, NAMESPACE, tmp_path / "runner.kubeconfig")
    as_runner = ("-e", json.dumps({"tapio_kubeconfig": str(kubeconfig), "tapio_kube_context": "runner"}))
    output = tmp_path / "migrate.log"
    chosen: list[NatsPod] = []  # chosen once the pipeline runs on NATS (its server is spared)

    def kill_container() -> str:
        chosen.append(victim := cluster.victim())
        subprocess.run(["ctr", "-a", str(victim.runtime_socket), "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL",
                        victim.container_id], check=True, capture_output=True, timeout=30)
        wait_for(f"{victim.name} restarted by its kubelet and ready",
                 lambda: (p := cluster.pod(victim.name)).restarts > victim.restarts and p.ready)
        return f"killed the nats container of {victim.name} on {victim.node} (restarts before: {victim.restarts})"

    result, killed = migrate_with_fault(output, kill_container, *as_runner, limit=STEP_LIMIT * 2)
    rc, victim = result.rc, chosen[0]
    assert rc == 0, f"{killed}\n{result.explain()}"
    assert "0 events lost and 0 delivered twice" in result.stdout, f"{killed}\n{result.explain()}"

    pods = cluster.pods()
    assert len(pods) == 3 and all(p.ready for p in pods), pods
    assert {p.node for p in pods} == {f"{REAL_NODE_PREFIX}{i}" for i in range(3)}, pods  # one per real node
    assert all(p.ip.startswith(POD_NETWORK) for p in pods), pods  # CNI bridge addresses
    assert cluster.pod(victim.name).restarts > victim.restarts

    again = playbook("migrate.yml", *as_runner)
    assert again.rc == 0 and again.changed == 0, again.explain()
    assert "permission(s) granted" in again.stdout, again.explain()
    # The preflight probe's pod: no API token, no privilege (it only resolves and dials NATS),
    # and its verdict tied to the target it probed.
    probe = client.BatchV1Api(cluster.core.api_client).read_namespaced_job("tapio-migration-nats-probe", NAMESPACE)
    target = "tapio-nats:4222"  # tapio_nats_url of the lab inventory
    assert probe.metadata.annotations["tapio.io/probe-target"] == hashlib.sha256(target.encode()).hexdigest()[:16]
    spec = probe.spec.template.spec
    assert spec.automount_service_account_token is False and spec.security_context.run_as_non_root is True
    [container] = spec.containers
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.capabilities.drop == ["ALL"]


def process_of(pod: NatsPod) -> int:
    """The host pid of the pod's nats-server (its containerd task)."""
    tasks = subprocess.run(["ctr", "-a", str(pod.runtime_socket), "-n", "k8s.io", "tasks", "ls"], check=True,
                           capture_output=True, text=True, timeout=30).stdout
    return next(int(line.split()[1]) for line in tasks.splitlines() if line.startswith(pod.container_id))


def test_the_pod_spec_holds_in_the_running_server(cluster: Cluster) -> None:
    for pod in cluster.pods():
        pid = process_of(pod)
        environ = dict(item.split("=", 1) for item in
                       Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item)
        # 90 % of the 1Gi limit (nats_cluster_gomemlimit_percent): the Go heap sized to the container.
        assert environ.get("GOMEMLIMIT") == str(int(1024 ** 3 * 0.9)), (pod.name, environ.get("GOMEMLIMIT"))
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        assert int(status["CapEff"].strip(), 16) == 0, (pod.name, status["CapEff"])  # drop: [ALL]
        assert status["NoNewPrivs"].strip() == "1", pod.name  # allowPrivilegeEscalation: false
        assert status["Seccomp"].strip() == "2", pod.name  # RuntimeDefault: a filter
        root = next(line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                    if line.split()[4] == "/")
        assert "ro" in root[5].split(","), (pod.name, root)  # readOnlyRootFilesystem


def secret_value(cluster: Cluster, name: str, key: str) -> str:
    return base64.b64decode(cluster.core.read_namespaced_secret(name, NAMESPACE).data[key]).decode()


def issue_certificate(directory: Path, serial: int) -> dict[str, str]:
    """A CA (made once per directory) and a server certificate with *serial* from it, as the
    data of a kubernetes.io/tls Secret."""
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    if not ca_crt.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout",
                        str(ca_key), "-out", str(ca_crt), "-subj", "/CN=tapio-lab-test-ca"], check=True,
                       capture_output=True, timeout=60)
    key, csr, crt = directory / f"{serial}.key", directory / f"{serial}.csr", directory / f"{serial}.crt"
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                    "-subj", f"/CN={STATEFULSET}.{NAMESPACE}.svc"], check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
                    "-set_serial", str(serial), "-days", "1", "-out", str(crt)], check=True, capture_output=True,
                   timeout=60)
    return {"tls.crt": crt.read_text(), "tls.key": key.read_text(), "ca.crt": ca_crt.read_text()}


def put_tls_secret(cluster: Cluster, data: dict[str, str]) -> None:
    """What cert-manager does on a renewal: the same Secret, new content."""
    body = client.V1Secret(metadata=client.V1ObjectMeta(name=f"{STATEFULSET}-tls"), type="kubernetes.io/tls",
                           string_data=data)
    try:
        cluster.core.replace_namespaced_secret(f"{STATEFULSET}-tls", NAMESPACE, body)
    except client.exceptions.ApiException as error:
        if error.status != 404:
            raise
        cluster.core.create_namespaced_secret(NAMESPACE, body)


def served_serial(pod: NatsPod, ca_file: Path) -> int:
    """The serial of the certificate the pod's nats-server presents, as a client sees it: the
    INFO line in clear, then the TLS handshake (checked against the test's CA)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = False
    with socket.create_connection((pod.ip, 4222), timeout=10) as raw:
        assert raw.recv(4096).startswith(b"INFO "), pod.name
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    text = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der,
                          capture_output=True, check=True, timeout=30).stdout.decode()
    return int(text.strip().split("=", 1)[1], 16)


def revisions(cluster: Cluster) -> set[str]:
    return {((p.monitor("/varz") or (0, {}))[1].get("metadata") or {}).get("tapio.io/config-revision", "")
            for p in cluster.pods()}


def unchanged(before: dict[str, NatsPod], cluster: Cluster) -> None:
    """Every server is the same process it was: same container, no restart."""
    after = {p.name: p for p in cluster.pods()}
    assert {n: (p.container_id, p.restarts) for n, p in after.items()} == \
        {n: (p.container_id, p.restarts) for n, p in before.items()}, (before, after)


def test_routes_password_and_certificates_are_reloaded_without_a_restart(cluster: Cluster, tmp_path: Path) -> None:
    """Reloads (nats_server_reload, as the system user): a new route password, TLS turned on
    and a renewed certificate each reach every server with no container restarted; the
    system user also runs `nats server report jetstream`; Tapio's events keep flowing."""
    if not cluster.pods():  # run on its own: the module's earlier tests migrated the lab
        migrated = playbook("migrate.yml")
        assert migrated.rc == 0, migrated.explain()
    wait_for("NATS healthy", cluster.healthy)
    before = {p.name: p for p in cluster.pods()}
    service = cluster.core.read_namespaced_service(STATEFULSET, NAMESPACE).spec.cluster_ip
    system = ["--server", f"nats://{service}:4222", "--user", "system", "--password",
              secret_value(cluster, f"{STATEFULSET}-system", "NATS_PASSWORD")]
    report = subprocess.run([str(natscli_path()), *system, "server", "report", "jetstream"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert report.returncode == 0, report.stdout + report.stderr
    assert all(f"{STATEFULSET}-{i}" in report.stdout for i in range(3)), report.stdout

    # One run: a new route password and client TLS turned on (each a reload), then a renewal.
    old_route = secret_value(cluster, f"{STATEFULSET}-routes", "password")
    tls = ["-e", "nats_cluster_tls_enabled=true", "-e", "tapio_nats_route_password=lab-route-password-2"]
    put_tls_secret(cluster, issue_certificate(tmp_path, serial=1001))
    on = playbook("playbooks/nats.yml", *tls)
    assert on.rc == 0, on.explain()
    assert secret_value(cluster, f"{STATEFULSET}-routes", "password") == "lab-route-password-2" != old_route
    assert len(revisions(cluster)) == 1
    assert {served_serial(p, tmp_path / "ca.crt") for p in cluster.pods()} == {1001}
    unchanged(before, cluster)
    wait_for("NATS healthy on the new route password", cluster.healthy)
    put_tls_secret(cluster, issue_certificate(tmp_path, serial=1002))
    renewed = playbook("playbooks/nats.yml", *tls)
    assert renewed.rc == 0 and renewed.changed >= 1, renewed.explain()
    assert {served_serial(p, tmp_path / "ca.crt") for p in cluster.pods()} == {1002}
    unchanged(before, cluster)
    # (The next test's password rotation rolls the servers without TLS, as the lab runs.)
    wait_for("NATS healthy after the reloads", cluster.healthy)
    ledger = settled_ledger()
    assert lost(ledger) == {}, json.dumps(ledger.get("sources"), indent=1)


def follow_logs(kube: KubeLab, pod: str, sink: list[str]) -> subprocess.Popen:
    """`kubectl logs -f` of the pod's nats container (through the API server and its kubelet),
    one line at a time into *sink*, until the container stops."""
    proc = subprocess.Popen([str(kube.kubectl), "--kubeconfig", str(kube.kubeconfig), "--context", kube.context,
                             "-n", NAMESPACE, "logs", "-f", pod, "-c", "nats"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.append(line.rstrip())

    threading.Thread(target=pump, daemon=True).start()
    return proc


HEALTH_REPORT = REPO_ROOT / ".artifacts" / "lab" / "health" / NAMESPACE / "health.json"
TOOLKIT_LOGIN = {"user": "tapio", "password": "tapio-lab-secret"}  # the lab inventory's
ROTATED_PASSWORD = "tapio-lab-secret-rotated"  # the toolkit's after the password test


def toolkit_password(cluster: Cluster) -> str:
    """The toolkit's password as the servers hold it now: the password test changes it."""
    return ROTATED_PASSWORD if logs_in(cluster, "tapio", ROTATED_PASSWORD) == "" else TOOLKIT_LOGIN["password"]


def on_nats(cluster: Cluster, work: Callable[[Any], Any]) -> Any:
    """*work(jetstream)* on a connection of the toolkit's user to the NATS Service."""
    import asyncio

    import nats

    login = {**TOOLKIT_LOGIN, "password": toolkit_password(cluster)}

    async def run() -> Any:
        service = cluster.core.read_namespaced_service(STATEFULSET, NAMESPACE).spec.cluster_ip
        connection = await nats.connect(f"nats://{service}:4222", connect_timeout=5, **login)
        try:
            return await work(connection.jetstream())
        finally:
            await connection.close()

    return asyncio.run(run())


def jetstream_configs(cluster: Cluster) -> dict[str, Any]:
    """Every stream's and consumer's configuration, as the servers hold them."""
    async def read(js: Any) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for stream in await js.streams_info():
            found[stream.config.name] = stream.config.as_dict()
            for consumer in await js.consumers_info(stream.config.name):
                found[f"{stream.config.name}/{consumer.name}"] = consumer.config.as_dict()
        return found

    return on_nats(cluster, read)


def resource_versions(cluster: Cluster) -> dict[str, str]:
    apps = client.AppsV1Api(cluster.core.api_client)
    listed = [("ConfigMap", cluster.core.list_namespaced_config_map(NAMESPACE).items),
              ("Secret", cluster.core.list_namespaced_secret(NAMESPACE).items),
              ("Service", cluster.core.list_namespaced_service(NAMESPACE).items),
              ("DaemonSet", apps.list_namespaced_daemon_set(NAMESPACE).items),
              ("Deployment", apps.list_namespaced_deployment(NAMESPACE).items),
              ("StatefulSet", apps.list_namespaced_stateful_set(NAMESPACE).items)]
    return {f"{kind}/{item.metadata.name}": item.metadata.resource_version for kind, items in listed for item in items}


def health(*args: str) -> tuple[Any, dict[str, Any]]:
    """health.yml with the lab inventory (a short window), and the report it wrote."""
    HEALTH_REPORT.unlink(missing_ok=True)
    run = playbook("health.yml", "-e", "nats_health_window=3", *args)
    assert HEALTH_REPORT.exists(), run.explain()
    return run, json.loads(HEALTH_REPORT.read_text())


def finding(report: dict[str, Any], check: str, subject: str) -> dict[str, str]:
    found = [f for f in report["findings"] if f["check"] == check and f["subject"] == subject]
    assert found, json.dumps([(f["check"], f["subject"], f["severity"]) for f in report["findings"]], indent=1)
    return found[0]


def test_health_is_read_only_healthy_after_the_migration_and_names_a_full_stream_and_a_stalled_consumer(
        cluster: Cluster) -> None:
    """health.yml after the migration: healthy, rc 0. A stream near its byte limit with a durable
    consumer nobody reads: both named with their next step, rc non-zero. Neither run changes an
    object (resourceVersions) or a stream or consumer configuration."""
    if not cluster.pods():  # run on its own: the module's earlier tests migrated the lab
        migrated = playbook("migrate.yml")
        assert migrated.rc == 0, migrated.explain()
    wait_for("NATS healthy", cluster.healthy)
    objects, configs = resource_versions(cluster), jetstream_configs(cluster)
    run, report = health()
    assert run.rc == 0 and run.changed == 0, run.explain()
    assert report["healthy"] is True and report["summary"]["worst"] == "ok", json.dumps(report["findings"], indent=1)
    assert {f["subject"] for f in report["findings"] if f["check"] == "workload_mode"} >= {
        f"Deployment {NAMESPACE}/tapio-pipeline", f"DaemonSet {NAMESPACE}/tapio-ebpf-collector"}, report["findings"]
    assert finding(report, "consumer", f"{STREAM}/{CONSUMER}")["severity"] == "ok"
    assert (resource_versions(cluster), jetstream_configs(cluster)) == (objects, configs)

    async def fill(js: Any) -> None:
        await js.add_stream(name="HEALTH_FILL", subjects=["health.fill.>"], max_bytes=8192, num_replicas=1)
        await js.add_consumer("HEALTH_FILL", durable_name="health-fill", ack_policy="explicit")
        for seq in range(8):  # 943 bytes each as stored (record header, subject, hash): 92 % of max_bytes
            await js.publish(f"health.fill.{seq}", b"x" * 900)

    on_nats(cluster, fill)
    try:
        objects, configs = resource_versions(cluster), jetstream_configs(cluster)
        run, report = health("-e", "nats_health_stream=HEALTH_FILL", "-e", "nats_health_consumer=health-fill")
        assert run.rc != 0 and run.changed == 0, run.explain()
        assert report["healthy"] is False
        full = finding(report, "stream_fill", "HEALTH_FILL")
        assert full["severity"] == "critical" and "max_bytes" in full["seen"] + full["diagnosis"], full
        assert "nats stream info HEALTH_FILL" in full["next_step"], full
        stalled = finding(report, "consumer", "HEALTH_FILL/health-fill")
        assert stalled["severity"] == "critical" and "stalled" in stalled["seen"] + stalled["diagnosis"], stalled
        assert "nats consumer info HEALTH_FILL health-fill" in stalled["next_step"], stalled
        assert (resource_versions(cluster), jetstream_configs(cluster)) == (objects, configs)
    finally:
        on_nats(cluster, lambda js: js.delete_stream("HEALTH_FILL"))


def logs_in(cluster: Cluster, user: str, password: str) -> str:
    """'' when the NATS Service accepts *user*, else nats-server's refusal."""
    import asyncio

    import nats

    async def attempt() -> str:
        service = cluster.core.read_namespaced_service(STATEFULSET, NAMESPACE).spec.cluster_ip
        try:
            connection = await nats.connect(f"nats://{service}:4222", user=user, password=password,
                                            allow_reconnect=False, connect_timeout=5, max_reconnect_attempts=0)
        except Exception as error:  # noqa: BLE001 - the refusal is the answer
            return f"{type(error).__name__}: {error}" or "refused"
        await connection.close()
        return ""

    return asyncio.run(attempt())


def template_annotations(cluster: Cluster, daemonset: str) -> tuple[int, dict[str, str]]:
    apps = client.AppsV1Api(cluster.core.api_client)
    live = apps.read_namespaced_daemon_set(daemonset, NAMESPACE)
    return live.metadata.generation, dict(live.spec.template.metadata.annotations or {})


def test_passwords_change_by_reload_and_a_workloads_pods_move_to_its_new_user_losing_nothing(
        cluster: Cluster) -> None:
    """While the simulator publishes: the toolkit's password and a collector's password change
    in one nats phase. Every server reloads (no container restarts); the servers accept the
    collector's old and new user while its DaemonSet restarts onto the new one, then the old
    one is retired; no event is lost."""
    if not cluster.pods():  # run on its own: the module's earlier tests migrated the lab
        migrated = playbook("migrate.yml")
        assert migrated.rc == 0, migrated.explain()
    wait_for("NATS healthy", cluster.healthy)
    before = {p.name: p for p in cluster.pods()}
    collector, secret = "tapio-ebpf-collector", f"{STATEFULSET}-auth-tapio-ebpf-collector"
    old_password = secret_value(cluster, secret, "NATS_PASSWORD")
    assert secret_value(cluster, secret, "NATS_USER") == collector and logs_in(cluster, collector, old_password) == ""
    passwords = {"tapio-pipeline": "tapio-lab-pipeline-secret", "tapio-k8s-collector": "tapio-lab-k8s-secret",
                 "tapio-systemd-collector": "tapio-lab-systemd-secret", collector: '2027 ebpf "lab" secret'}
    rotated = playbook("playbooks/nats.yml", "-e", f"tapio_nats_password={ROTATED_PASSWORD}",
                       "-e", json.dumps({"tapio_nats_component_passwords": passwords}))
    assert rotated.rc == 0, rotated.explain()
    unchanged(before, cluster)
    assert len(revisions(cluster)) == 1
    # The collector's pods were restarted onto its other user; the old pair is gone everywhere.
    generation, annotations = template_annotations(cluster, collector)
    assert annotations.get("tapio.io/nats-user") == f"{collector}-rotated", annotations
    data = cluster.core.read_namespaced_secret(secret, NAMESPACE).data
    assert set(data) == {"NATS_USER", "NATS_PASSWORD"}, sorted(data)
    assert secret_value(cluster, secret, "NATS_USER") == f"{collector}-rotated"
    assert logs_in(cluster, f"{collector}-rotated", passwords[collector]) == ""
    assert "Authorization Violation" in logs_in(cluster, collector, old_password)
    assert "Authorization Violation" in logs_in(cluster, "tapio", "tapio-lab-secret")
    assert logs_in(cluster, "tapio", "tapio-lab-secret-rotated") == ""
    wait_for("NATS healthy after the reloads", cluster.healthy)
    ledger = settled_ledger()
    assert lost(ledger) == {}, json.dumps(ledger.get("sources"), indent=1)

    # The next run, with the same passwords and a new system password (read from the servers'
    # environment: a rolling restart): the collector is not restarted again.
    logs: dict[str, list[str]] = {name: [] for name in before}
    followers = [follow_logs(cluster.kube, name, logs[name]) for name in before]
    try:
        rolled = playbook("playbooks/nats.yml", "-e", f"tapio_nats_password={ROTATED_PASSWORD}",
                          "-e", json.dumps({"tapio_nats_component_passwords": passwords}),
                          "-e", "tapio_nats_system_password=lab-system-password-2")
        assert rolled.rc == 0, rolled.explain()
    finally:
        for follower in followers:
            try:
                follower.wait(timeout=30)  # each ends with its container
            except subprocess.TimeoutExpired:
                follower.kill()
    after = {p.name: p for p in cluster.pods()}
    assert all(after[name].container_id != before[name].container_id for name in before), (before, after)
    for name, lines in logs.items():
        text = "\n".join(lines)
        assert "Entering lame duck mode" in text, f"{name} stopped without lame duck:\n{text[-3000:]}"
    assert template_annotations(cluster, collector)[0] == generation
    wait_for("NATS healthy after the rolling restart", cluster.healthy)
    ledger = settled_ledger()
    assert lost(ledger) == {}, json.dumps(ledger.get("sources"), indent=1)


ENGINE, ENGINE_CONSUMER = "tapio-correlation-b", "engine-b"  # lab_engines of the lab inventory
ENGINE_DECLARED = {"tapio_nats_extra_consumers": [
    {"name": ENGINE_CONSUMER, "replay": True,
     "workload": {"kind": "Deployment", "name": ENGINE, "container": "pipeline", "engine": True}}]}
REPLAY_WINDOW = 300.0  # seconds: the plan's "replay a window of history" at five minutes


def simulator_post(path: str, timeout: float = 90) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(f"{SIMULATOR}{path}", method="POST"),  # noqa: S310 - lab
                                timeout=timeout) as answer:
        return json.load(answer)


def toolkit_login(cluster: Cluster) -> tuple[str, ...]:
    """The toolkit's password as the servers hold it now, for a playbook's command line."""
    password = toolkit_password(cluster)
    return ("-e", f"tapio_nats_password={password}") if password != TOOLKIT_LOGIN["password"] else ()


def test_a_lost_real_node_leaves_the_cutover_done_and_verify_names_the_missing_server(
        cluster: Cluster, tmp_path: Path) -> None:
    # From the module's migrated lab, back to the pre-migration workloads by a restore (NATS, its
    # users and the stream's history stay), then migrated again while a whole node is lost.
    login = toolkit_login(cluster) if cluster.pods() else ()
    if cluster.pods():  # run on its own, the test starts from the reset lab instead
        back = playbook("rollback.yml", *login, "-e", "tapio_rollback_mode=restore")
        assert back.rc == 0, back.explain()
        # A new ledger, as a lab reset starts one: the servers' rolling restart above may have had
        # JetStream redeliver an event whose ack went with its server (counted twice by the pipeline).
        simulator_post("/reset")
    output = tmp_path / "migrate.log"
    # verify waits tapio_verify_nats_settle for the cluster to heal before it judges redundancy;
    # the stopped node stays down, so a shorter wait changes only how long the run takes.
    chosen: list[NatsPod] = []  # chosen once the pipeline runs on NATS (its server is spared)

    def stop_node() -> str:
        chosen.append(victim := cluster.victim())
        lab("stop-node", victim.node)
        return f"stopped node {victim.node} (pod {victim.name})"

    result, stopped = migrate_with_fault(output, stop_node, *login, "-e", "tapio_verify_nats_settle=10",
                                         limit=STEP_LIMIT * 3)
    rc, victim = result.rc, chosen[0]
    ledger = load_module_utils("tapio_workload")
    if rc != 0:
        # The one failure allowed: NATS redundancy, with what still holds and what to do.
        failed = [line for line in result.stdout.splitlines() if line.startswith("fatal:")]
        assert len(failed) == 1 and "NATS is not fully redundant" in failed[0], f"{stopped}\n{result.explain()}"
        for words in (victim.name, "The cutover itself is done: the collectors and the pipeline run on NATS",
                      "events flow", "0 events lost", "Next: find the missing server's pod and node",
                      "re-run ansible-playbook playbooks/verify.yml"):
            assert words in failed[0], f"{words!r} missing from: {failed[0]}"
    else:
        assert "0 events lost and 0 delivered twice" in result.stdout, f"{stopped}\n{result.explain()}"
    assert ledger.ledger_problems(settled_ledger()) == [], stopped
    # The day-2 check, with the node still down: the missing server named with its next step.
    run, report = health(*login)
    assert run.rc != 0 and run.changed == 0, run.explain()
    down = [f for f in report["findings"] if f["severity"] == "critical" and victim.name in f["subject"]]
    assert down and all(f["next_step"] for f in down), json.dumps(report["findings"], indent=1)
    assert any(f["check"] == "nats_server" and "kubectl" in f["next_step"] for f in down), down


def stream_first_time(cluster: Cluster) -> float:
    """When the events stream's first message was stored (its state's first_ts, UNIX seconds)."""
    async def read(js: Any) -> float:
        from datetime import datetime

        answer = await js._nc.request(f"$JS.API.STREAM.INFO.{STREAM}", b"", timeout=5)
        first = json.loads(answer.data)["state"]["first_ts"]
        return datetime.fromisoformat(first[:26].rstrip("Z") + "+00:00").timestamp()

    return on_nats(cluster, read)


def consumer_state(cluster: Cluster, name: str) -> dict[str, Any]:
    async def read(js: Any) -> dict[str, Any]:
        info = await js.consumer_info(STREAM, name)
        return {"delivered": info.delivered.stream_seq, "ack_floor": info.ack_floor.stream_seq,
                "num_pending": info.num_pending, "num_ack_pending": info.num_ack_pending,
                "num_redelivered": info.num_redelivered}

    return on_nats(cluster, read)


def engine_ledger() -> dict[str, Any]:
    answer = get_json(f"{SIMULATOR}/ledger")
    assert answer and answer[0] == 200, answer
    return answer[1]["engines"][ENGINE] | {"pipeline_received": answer[1]["totals"]["received"]}


def test_a_second_engine_reads_a_five_minute_replay_beside_the_pipeline_and_goes_back_exactly(
        cluster: Cluster) -> None:
    """The plan's A/B: the lab's second correlation engine (a Deployment the simulator plays with
    a ledger of its own) is switched by engines.yml onto its own consumer, which replay.yml put
    on the last five minutes of the stream. Its ledger counts what the window holds; the
    pipeline's consumer and ledger are unchanged by it; both then read live events side by side
    with nothing lost; switched off, the engine's spec is its pre-switch one again."""
    if not cluster.pods():  # run on its own: the module's earlier tests migrated the lab
        migrated = playbook("migrate.yml")
        assert migrated.rc == 0, migrated.explain()
    if not cluster.healthy():  # the node the test above stopped: started again, its server catches up
        lab("up", "--tags", "nodes")
    wait_for("NATS healthy", cluster.healthy)
    login = (*toolkit_login(cluster), "-e", json.dumps(ENGINE_DECLARED))
    users = playbook("playbooks/nats.yml", *login)  # the engine's user and Secret (a reload)
    assert users.rc == 0, users.explain()
    apps = client.AppsV1Api(cluster.core.api_client)
    engine_before = apps.read_namespaced_deployment(ENGINE, NAMESPACE).spec.to_dict()
    # The window is history: the stream must hold five minutes before it.
    first = stream_first_time(cluster)
    wait_for("five minutes of history in the events stream", lambda: time.time() - first > REPLAY_WINDOW + 5)

    drained = simulator_post("/drain?timeout=60")
    base = engine_ledger()["received"]  # what the engine read before (none in the module's run)
    try:
        assert drained["settle"]["complete"] and drained["totals"]["lost"] == 0, drained["totals"]
        time.sleep(1.0)  # every event of the paused simulator is stored before the window's end
        end = time.time()
        window = [f"nats_replay_start_time={time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(end - REPLAY_WINDOW))}"
                  f".{int((end % 1) * 1e6):06d}Z",
                  f"nats_replay_end_time={time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(end))}.{int((end % 1) * 1e6):06d}Z"]
        pipeline_before = consumer_state(cluster, CONSUMER)
        replay = playbook("replay.yml", *login, "-e", f"nats_replay_name={ENGINE_CONSUMER}", "-e", window[0],
                          "-e", window[1])
        assert replay.rc == 0 and replay.changed == 1, replay.explain()
        found = re.search(rf"{ENGINE_CONSUMER}: (\d+) event\(s\) in the window, stream sequences (\d+)\.\.(\d+)",
                          replay.stdout)
        assert found, replay.explain()
        count, first_seq, last_seq = map(int, found.groups())
        assert count == last_seq - first_seq + 1 > 100000, found[0]  # minutes of the lab's events, none filtered

        switched = playbook("engines.yml", *login)
        assert switched.rc == 0 and switched.changed >= 1, switched.explain()
        read = wait_for(f"the engine's ledger at the window's {count} events",
                        lambda: (led := engine_ledger())["received"] - base >= count and led)
        assert consumer_state(cluster, ENGINE_CONSUMER)["num_pending"] == 0
        after = engine_ledger()
        assert after["received"] - base == count and after["redeliveries"] == 0, after
        assert consumer_state(cluster, CONSUMER) == pipeline_before
        assert after["pipeline_received"] == read["pipeline_received"] == drained["totals"]["received"]
    finally:
        simulator_post("/resume")
    # Side by side: both read live events; the pipeline's ledger loses nothing, counts nothing twice.
    wait_for("live events read by the engine past its window", lambda: engine_ledger()["received"] - base > count + 2000)
    ledger = settled_ledger()
    assert lost(ledger) == {} and ledger["totals"]["duplicates"] == 0, json.dumps(ledger["totals"])

    off = playbook("engines.yml", *login, "-e", "tapio_pipeline_engines_state=restored", "-e",
                   "tapio_rollback_mode=restore")
    assert off.rc == 0 and off.changed >= 1, off.explain()
    assert apps.read_namespaced_deployment(ENGINE, NAMESPACE).spec.to_dict() == engine_before
    wait_for("the engine's consumer stopped", lambda: (get_json(f"{SIMULATOR}/status") or (0, {}))[1]
             .get("engines", {}).get(ENGINE) == [])
