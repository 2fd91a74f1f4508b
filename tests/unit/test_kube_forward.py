"""kube_port_forward without servers: option checks, pod choice, the socket bridge (with a
local socket pair standing in for the API server's stream), and the NATS connection options
a forward produces. The real path (kube-apiserver -> kwok -> nats-server) is
tests/integration/test_nats_port_forward.py."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import socket
import sys
import threading
import time
from types import ModuleType
from typing import Any, Optional

import pytest

from conftest import REPO_ROOT


def load(name: str) -> ModuleType:
    qualified = f"ansible.module_utils.{name}"
    if qualified not in sys.modules:
        spec = importlib.util.spec_from_file_location(qualified, REPO_ROOT / "module_utils" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        spec.loader.exec_module(module)
    return sys.modules[qualified]


load("tapio_kube")
kf = load("tapio_kube_forward")
tn = load("tapio_nats")


def pod(name: str, phase: str = "Running", ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-27T07:00:00Z"
    return {"metadata": metadata,
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


# --- the option ------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "message"), [
    ({"namespace": "tapio"}, "exactly one of pod, selector or service (got none)"),
    ({"namespace": "tapio", "pod": "a", "selector": "b=c"}, "(got pod, selector)"),
    ({"pod": "a"}, "needs a namespace"),
    ({"namespace": "tapio", "pod": "a", "port": 70000}, "port 70000 is not a TCP port"),
])
def test_target_needs_one_pod_source_and_a_namespace(params: dict, message: str) -> None:
    with pytest.raises(kf.KubeForwardError, match=message.replace("(", r"\(").replace(")", r"\)")):
        kf.target_from_params(params)


def test_target_defaults_to_the_nats_client_port() -> None:
    target = kf.target_from_params({"namespace": "tapio", "service": "tapio-nats", "port": None})
    assert (target.port, target.describe()) == (4222, "the pods of service tapio/tapio-nats")
    assert kf.target_from_params({"namespace": "n", "selector": "a=b"}).describe() == \
        "pods matching 'a=b' in namespace n"


def validate(value: dict[str, Any]) -> list[str]:
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    spec = {"kube_port_forward": tn.kube_forward_argument_spec()}
    return [str(e) for e in ArgumentSpecValidator(spec).validate({"kube_port_forward": value}).errors]


def test_argument_spec_is_part_of_every_modules_connection_spec() -> None:
    assert tn.nats_connection_argument_spec()["kube_port_forward"] == tn.kube_forward_argument_spec()
    assert validate({"namespace": "tapio", "pod": "tapio-nats-0"}) == []
    assert any("mutually exclusive: pod|selector|service" in e
               for e in validate({"namespace": "tapio", "pod": "a", "service": "b"}))
    assert any("one of the following is required: pod, selector, service" in e for e in validate({"namespace": "t"}))
    assert any("namespace" in e for e in validate({"pod": "a"}))


def test_kubeconfig_and_context_fall_back_to_the_kubernetes_core_variables(monkeypatch) -> None:
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    monkeypatch.setenv("K8S_AUTH_KUBECONFIG", "/tmp/kubeconfig")
    monkeypatch.setenv("K8S_AUTH_CONTEXT", "kwok-tapio-lab")
    result = ArgumentSpecValidator({"kube_port_forward": tn.kube_forward_argument_spec()}).validate(
        {"kube_port_forward": {"namespace": "tapio", "pod": "p"}})
    value = result.validated_parameters["kube_port_forward"]
    assert (value["kubeconfig"], value["context"], value["port"]) == ("/tmp/kubeconfig", "kwok-tapio-lab", 4222)


# --- which pod ---------------------------------------------------------------------------


def test_service_selector_becomes_a_label_selector() -> None:
    assert kf.selector_from_labels({"b": "2", "a": "1"}) == "a=1,b=2"
    assert kf.selector_from_labels(None) == ""


@pytest.mark.parametrize(("candidate", "reason"), [
    (pod("p"), None),
    (pod("p", phase="Pending", ready=False), "phase Pending"),
    (pod("p", ready=False), "not Ready"),
    (pod("p", deleting=True), "terminating"),
    ({"metadata": {"name": "p"}, "status": {"phase": "Running"}}, "not Ready"),
])
def test_pod_readiness(candidate: dict, reason: Optional[str]) -> None:
    assert kf.pod_readiness(candidate) == reason


def test_first_ready_pod_by_name_is_chosen() -> None:
    target = kf.ForwardTarget(namespace="tapio", port=4222, selector="app=nats")
    pods = [pod("tapio-nats-2"), pod("tapio-nats-0", ready=False), pod("tapio-nats-1")]
    assert kf.choose_pod(pods, target) == "tapio-nats-1"


def test_no_pod_or_no_ready_pod_is_a_clear_error() -> None:
    target = kf.ForwardTarget(namespace="tapio", port=4222, selector="app=nats")
    with pytest.raises(kf.KubeForwardError, match="^no pod found for pods matching 'app=nats' in namespace tapio$"):
        kf.choose_pod([], target)
    with pytest.raises(kf.KubeForwardError,
                       match=r"^no ready pod for .*: tapio-nats-0 \(phase Pending\), tapio-nats-1 \(terminating\)$"):
        kf.choose_pod([pod("tapio-nats-1", deleting=True), pod("tapio-nats-0", phase="Pending")], target)


def test_api_errors_read_as_status_or_cause() -> None:
    assert kf.describe_api_error(kf.ApiException(status=403, reason="Forbidden")) == "403 Forbidden"
    assert kf.describe_api_error(ConnectionRefusedError(111, "Connection refused")) == \
        "ConnectionRefusedError: [Errno 111] Connection refused"


def test_without_the_kubernetes_library_the_error_names_it(monkeypatch) -> None:
    monkeypatch.setattr(kf, "KUBERNETES_IMPORT_ERROR", "Traceback ... No module named 'kubernetes'")
    with pytest.raises(kf.KubeForwardError, match=r"kubernetes Python library is missing \(kubernetes>=24.2.0\)"):
        kf.load_core_api(None, None)


def test_module_fails_with_missing_required_lib(monkeypatch) -> None:
    """nats_module() fails before connecting when kube_port_forward is set and the library is missing."""
    from ansible.module_utils import basic

    monkeypatch.setattr(kf, "KUBERNETES_IMPORT_ERROR", "Traceback ... No module named 'kubernetes'")
    args = {"kube_port_forward": {"namespace": "tapio", "pod": "tapio-nats-0"}, "_ansible_verbosity": 0}
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        tn.nats_module({})
    result = json.loads(out.getvalue())
    assert result["failed"] and "kubernetes>=24.2.0" in result["msg"] and "kube_port_forward" in result["msg"]


# --- the bridge ----------------------------------------------------------------------------


class EchoRemotes:
    """Stands in for the API server's port-forward streams: each open() is a socket pair
    whose far end echoes upper-cased bytes, like a server behind the forward."""

    def __init__(self, error: Optional[str] = None) -> None:
        self.opened = 0
        self.closed = 0
        self.error = error
        self.far_ends: list[socket.socket] = []

    def open(self) -> tuple[socket.socket, Any, Any]:
        near, far = socket.socketpair()
        self.opened += 1
        self.far_ends.append(far)
        threading.Thread(target=self._echo, args=(far,), daemon=True).start()

        def close() -> None:
            self.closed += 1

        return near, (lambda: self.error), close

    def _echo(self, far: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := far.recv(1024):
                far.sendall(data.upper())
        far.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def test_bridge_opens_one_forward_per_connection_on_loopback() -> None:
    remotes = EchoRemotes()
    with kf.PortForwarder(remotes.open, "pod tapio/tapio-nats-0 port 4222") as forwarder:
        assert forwarder.local_port > 0
        first, second = connect(forwarder.local_port), connect(forwarder.local_port)
        first.sendall(b"info")
        second.sendall(b"ping")
        assert (first.recv(16), second.recv(16)) == (b"INFO", b"PING")
        assert remotes.opened == 2 and forwarder.connections == 2
        payload = bytes(range(256)) * 4096  # 1 MiB both ways
        first.sendall(payload)
        received = b""
        while len(received) < len(payload):
            received += first.recv(1 << 16)
        assert received == payload.upper()
    assert first.recv(16) == b"", "closing the forwarder closes the bridged connection"
    assert remotes.closed == 2 and forwarder.errors == []
    with pytest.raises(OSError):
        connect(forwarder.local_port)


def test_far_end_closing_closes_the_local_connection_and_records_its_error() -> None:
    remotes = EchoRemotes(error='forward not found for port 4999 in pod "tapio/tapio-nats-1"')
    with kf.PortForwarder(remotes.open, "pod tapio/tapio-nats-1 port 4999") as forwarder:
        client = connect(forwarder.local_port)
        deadline = time.monotonic() + 5
        while not remotes.far_ends and time.monotonic() < deadline:
            time.sleep(0.01)
        remotes.far_ends[0].shutdown(socket.SHUT_RDWR)  # the kubelet ends the stream
        assert client.recv(16) == b""
        forwarder.settle()
        assert forwarder.errors == ['port-forward to pod tapio/tapio-nats-1 port 4999: '
                                    'forward not found for port 4999 in pod "tapio/tapio-nats-1"']


def test_a_forward_that_cannot_open_is_recorded() -> None:
    def refuse() -> Any:
        raise kf.ApiException(status=403, reason="Forbidden")

    with kf.PortForwarder(refuse, "pod tapio/tapio-nats-0 port 4222") as forwarder:
        client = connect(forwarder.local_port)
        assert client.recv(16) == b""
        forwarder.settle()
    assert forwarder.errors == ["port-forward to pod tapio/tapio-nats-0 port 4222: 403 Forbidden"]


# --- the NATS connection through it -------------------------------------------------------


def params(**overrides: Any) -> dict[str, Any]:
    base = {"servers": ["nats://127.0.0.1:4222"], "user": None, "password": None, "token": None, "creds_file": None,
            "nkey_seed": None, "tls_ca_cert": None, "tls_client_cert": None, "tls_client_key": None,
            "tls_verify": True, "connect_timeout": 5.0, "api_timeout": 5.0, "kube_port_forward": None}
    return {**base, **overrides}


def test_forwarded_connection_goes_to_the_local_port_only_and_never_reconnects() -> None:
    forwarded = tn.forwarded_params(params(servers=["nats://a:4222", "nats://b:4222"]), 40123)
    options = tn.connect_options(forwarded)
    assert options["servers"] == ["nats://127.0.0.1:40123"]
    assert options["allow_reconnect"] is False, "discovered servers (INFO connect_urls) are only used on reconnect"
    assert "tls_hostname" not in options


def test_forwarded_tls_checks_the_certificate_against_the_configured_name() -> None:
    forwarded = tn.forwarded_params(params(servers=["tls://tapio-nats.tapio.svc:4222"], tls_verify=False), 40123)
    assert forwarded["servers"] == ["tls://127.0.0.1:40123"]
    options = tn.connect_options(forwarded)
    assert options["tls_hostname"] == "tapio-nats.tapio.svc" and options["tls"] is not None


def test_without_the_option_the_endpoint_is_unchanged() -> None:
    original = params()
    with tn.nats_endpoint(original) as used:
        assert used is original


def test_connection_failures_through_a_forward_name_it_and_what_it_reported(monkeypatch) -> None:
    """nats_endpoint opens the forward, hands out its local port, and adds the forward's
    description and recorded errors to a failure; the forward is closed afterwards."""
    remotes = EchoRemotes(error="error forwarding port 4222: connection refused")
    forwarder = kf.PortForwarder(remotes.open, "pod tapio/tapio-nats-0 port 4222")
    monkeypatch.setattr(kf, "open_pod_forward", lambda spec, timeout: forwarder)
    spec = {"namespace": "tapio", "pod": "tapio-nats-0", "port": 4222}
    with pytest.raises(tn.NatsModuleError) as raised:
        with tn.nats_endpoint(params(kube_port_forward=spec)) as used:
            assert used["servers"] == [f"nats://127.0.0.1:{forwarder.local_port}"]
            assert used["forward_local_ports"] == [forwarder.local_port]
            client = connect(forwarder.local_port)
            while not remotes.far_ends:
                time.sleep(0.01)
            remotes.far_ends[0].shutdown(socket.SHUT_RDWR)
            assert client.recv(16) == b""
            raise tn.NatsModuleError("cannot connect to NATS servers tried (x): UnexpectedEOF")
    assert str(raised.value) == (
        "cannot connect to NATS servers tried (x): UnexpectedEOF (through a port-forward to pod "
        "tapio/tapio-nats-0 port 4222; port-forward to pod tapio/tapio-nats-0 port 4222: "
        "error forwarding port 4222: connection refused)")
    with pytest.raises(OSError):
        connect(forwarder.local_port)


def test_other_module_errors_pass_through_the_forward_unchanged(monkeypatch) -> None:
    forwarder = kf.PortForwarder(EchoRemotes().open, "pod tapio/tapio-nats-0 port 4222")
    monkeypatch.setattr(kf, "open_pod_forward", lambda spec, timeout: forwarder)
    with pytest.raises(tn.NatsModuleError, match="^stream X not found$"):
        with tn.nats_endpoint(params(kube_port_forward={"namespace": "t", "pod": "p"})):
            raise tn.NatsModuleError("stream X not found")


def test_a_forward_that_cannot_be_set_up_fails_before_connecting(monkeypatch) -> None:
    def refuse(spec: dict, timeout: float) -> Any:
        raise kf.KubeForwardError("pod tapio/tapio-nats-9 not found (Kubernetes API https://127.0.0.1:16443)")

    monkeypatch.setattr(kf, "open_pod_forward", refuse)
    with pytest.raises(tn.NatsModuleError, match="^kube_port_forward: pod tapio/tapio-nats-9 not found"):
        with tn.nats_endpoint(params(kube_port_forward={"namespace": "tapio", "pod": "tapio-nats-9"})):
            pytest.fail("the block must not run")


# --- every pod (all_pods, tapio_nats_reach=kubernetes) -------------------------------------

health = load("tapio_nats_health")


def test_pod_set_splits_ready_pods_from_the_others_by_name() -> None:
    pods = kf.pod_set([pod("tapio-nats-2"), pod("tapio-nats-0", phase="Pending", ready=False), pod("tapio-nats-1")])
    assert pods.ready == ("tapio-nats-1", "tapio-nats-2")
    assert pods.not_ready == (("tapio-nats-0", "phase Pending"),)
    target = kf.ForwardTarget(namespace="tapio", port=4222, selector="app=nats")
    assert pods.problems(target) == ["pod tapio/tapio-nats-0 is not ready for a port-forward (phase Pending)"]
    assert kf.pod_set([]).problems(target) == ["no pod found for pods matching 'app=nats' in namespace tapio"]


@pytest.fixture
def fake_remotes(monkeypatch) -> dict[tuple[str, int], EchoRemotes]:
    """api_remote_opener replaced by echo remotes, one per (pod, port), to see where each
    local listener leads."""
    remotes: dict[tuple[str, int], EchoRemotes] = {}

    def opener(api: Any, namespace: str, name: str, port: int) -> Any:
        return remotes.setdefault((name, port), EchoRemotes()).open

    monkeypatch.setattr(kf, "api_remote_opener", opener)
    return remotes


def pod_forwards(monkeypatch, pods: list[dict[str, Any]], ports: tuple[int, ...] = (4222, 8222)) -> Any:
    monkeypatch.setattr(kf, "load_core_api", lambda kubeconfig, context: object())
    monkeypatch.setattr(kf, "list_pods", lambda api, target, timeout: pods)
    spec = {"namespace": "tapio", "selector": "app=nats", "port": 4222, "all_pods": True, "monitor_port": 8222}
    return kf.open_pod_forwards(spec, ports=ports, timeout=5)


def test_every_ready_pod_gets_a_listener_per_port(monkeypatch, fake_remotes: dict) -> None:
    pods = [pod("tapio-nats-1"), pod("tapio-nats-0"), pod("tapio-nats-2", ready=False)]
    with pod_forwards(monkeypatch, pods) as forwards:
        clients, monitors = forwards.bound(4222), forwards.bound(8222)
        assert [b.pod for b in clients] == ["tapio-nats-0", "tapio-nats-1"] == [b.pod for b in monitors]
        ports = [b.local_port for b in clients + monitors]
        assert len(set(ports)) == 4 and all(ports)
        assert forwards.urls(4222, "nats") == [f"nats://127.0.0.1:{b.local_port}" for b in clients]
        assert forwards.labels(8222, "http") == {f"http://127.0.0.1:{b.local_port}": f"tapio/{b.pod}:8222"
                                                 for b in monitors}
        assert forwards.description == "2 pod(s) of pods matching 'app=nats' in namespace tapio (tapio-nats-0, tapio-nats-1)"
        sock = connect(monitors[1].local_port)
        sock.sendall(b"get")
        assert sock.recv(16) == b"GET"
        assert fake_remotes[("tapio-nats-1", 8222)].opened == 1
        assert fake_remotes[("tapio-nats-0", 8222)].opened == 0
    with pytest.raises(OSError):
        connect(clients[0].local_port)


def test_no_ready_pod_among_all_pods_names_each(monkeypatch, fake_remotes: dict) -> None:
    with pytest.raises(kf.KubeForwardError, match=r"^pod tapio/tapio-nats-0 is not ready for a port-forward \(not Ready\)$"):
        pod_forwards(monkeypatch, [pod("tapio-nats-0", ready=False)])
    with pytest.raises(kf.KubeForwardError, match="^no pod found for pods matching 'app=nats' in namespace tapio$"):
        pod_forwards(monkeypatch, [])


def test_all_pods_give_the_client_every_pod_as_its_server_list(monkeypatch, fake_remotes: dict) -> None:
    """The engine's session connects again to any pod of the list when its server is lost."""
    monkeypatch.setattr(kf, "load_core_api", lambda kubeconfig, context: object())
    monkeypatch.setattr(kf, "list_pods", lambda api, target, timeout: [pod(f"tapio-nats-{i}") for i in range(3)])
    spec = {"namespace": "tapio", "selector": "app=nats", "port": 4222, "all_pods": True, "monitor_port": 8222}
    with tn.nats_endpoint(params(kube_port_forward=spec)) as used:
        ports = used["forward_local_ports"]
        assert len(ports) == 3 and used["servers"] == [f"nats://127.0.0.1:{p}" for p in ports]
        assert tn.connect_options(used)["allow_reconnect"] is False
    assert set(fake_remotes) == {(f"tapio-nats-{i}", 4222) for i in range(3)}, "the client port only"
    assert [r.opened for r in fake_remotes.values()] == [0, 0, 0], "nothing connected, so no port-forward opened"


def test_forwarded_params_take_one_port_or_a_list() -> None:
    assert tn.forwarded_params(params(), 40123)["forward_local_ports"] == [40123]
    many = tn.forwarded_params(params(servers=["tls://tapio-nats.tapio.svc:4222"]), [40001, 40002])
    assert many["servers"] == ["tls://127.0.0.1:40001", "tls://127.0.0.1:40002"]
    assert many["tls_hostname"] == "tapio-nats.tapio.svc"


@pytest.mark.parametrize(("spec", "problem"), [
    ({"namespace": "t", "selector": "a=b", "all_pods": True, "monitor_port": 8222}, ""),
    ({"namespace": "t", "pod": "p"}, ""),
    ({"namespace": "t", "selector": "a=b", "monitor_port": 8222}, "monitor_port needs all_pods"),
    ({"namespace": "t", "pod": "p", "all_pods": True}, "all_pods forwards every pod behind a selector or service"),
    ({"namespace": "t", "selector": "a=b", "all_pods": True, "monitor_port": 0}, "monitor_port 0 is not a TCP port"),
    ({"namespace": "t", "selector": "a=b", "all_pods": True, "monitor_port": 70000}, "monitor_port 70000 is not a TCP port"),
])
def test_bad_forward_combinations_are_named(spec: dict, problem: str) -> None:
    found = tn.kube_forward_problem(spec)
    assert (problem in found) if problem else found == ""


def test_relabel_names_pods_instead_of_local_listeners() -> None:
    cluster = {"health": {"http://127.0.0.1:4001": {"http_status": 200}, "http://127.0.0.1:4002": {"http_status": 503}},
               "leader": "nats-0"}
    problems = ["1 of 2 servers are not healthy: http://127.0.0.1:4002/healthz answered 503 (unavailable)"]
    labels = {"http://127.0.0.1:4001": "tapio/tapio-nats-0:8222", "http://127.0.0.1:4002": "tapio/tapio-nats-1:8222"}
    renamed, named = health.relabel(cluster, problems, labels)
    assert list(renamed["health"]) == ["tapio/tapio-nats-0:8222", "tapio/tapio-nats-1:8222"]
    assert renamed["leader"] == "nats-0" and list(cluster["health"])[0] == "http://127.0.0.1:4001"
    assert named == ["1 of 2 servers are not healthy: tapio/tapio-nats-1:8222/healthz answered 503 (unavailable)"]


def test_monitoring_through_every_pod_resolves_pods_on_each_read(monkeypatch, fake_remotes: dict) -> None:
    """kube_meta_cluster opens its forwards for one read (a wait's next attempt sees pods
    replaced in between), reads every pod's monitoring port (the leader is always among them),
    and reports pods that are not ready, or a forward that cannot be set up, as problems."""
    monkeypatch.setattr(kf, "load_core_api", lambda kubeconfig, context: object())
    listings = iter([
        [pod("tapio-nats-0"), pod("tapio-nats-1", phase="Pending", ready=False)],
        [pod("tapio-nats-0"), pod("tapio-nats-1")],
    ])
    monkeypatch.setattr(kf, "list_pods", lambda api, target, timeout: next(listings))
    leader = {"name": "nats", "leader": "nats-0", "cluster_size": 2,
              "replicas": [{"name": "nats-1", "current": True, "lag": 0}]}

    def fetch(url: str, timeout: float) -> tuple[int, Any]:
        return (200, {"meta_cluster": leader}) if "/jsz" in url else (200, {"status": "ok"})

    spec = {"namespace": "tapio", "selector": "app=nats", "port": 4222, "all_pods": True, "monitor_port": 8222}
    cluster, problems = health.kube_meta_cluster(spec, 5, expected_peers=2, fetch=fetch)
    assert problems == ["pod tapio/tapio-nats-1 is not ready for a port-forward (phase Pending)"]
    assert list(cluster["health"]) == ["tapio/tapio-nats-0:8222"] and cluster["pods"] == ["tapio-nats-0"]
    cluster, problems = health.kube_meta_cluster(spec, 5, expected_peers=2, fetch=fetch)
    assert problems == [] and cluster["pods"] == ["tapio-nats-0", "tapio-nats-1"]
    assert cluster["leader"] == "nats-0" and cluster["leader_view"]

    def unreachable(api: Any, target: Any, timeout: float) -> Any:
        raise kf.KubeForwardError("cannot reach the Kubernetes API https://127.0.0.1:1 to look up pods")

    monkeypatch.setattr(kf, "list_pods", unreachable)
    cluster, problems = health.kube_meta_cluster(spec, 5, fetch=fetch)
    assert problems == ["kube_port_forward: cannot reach the Kubernetes API https://127.0.0.1:1 to look up pods"]


# --- only the NATS StatefulSet's pods, and only a server named after its pod ------------------

STATEFULSET = {"metadata": {"name": "tapio-nats", "namespace": "tapio", "uid": "uid-now"}}


def owned(name: str, owner: str = "tapio-nats", uid: str = "uid-now", kind: str = "StatefulSet",
          controller: bool = True) -> dict[str, Any]:
    candidate = pod(name)
    candidate["metadata"]["ownerReferences"] = [{"kind": kind, "name": owner, "uid": uid, "controller": controller}]
    return candidate


@pytest.mark.parametrize(("candidate", "problem"), [
    (owned("tapio-nats-0"), None),
    (pod("tapio-nats-0"), "not a pod of StatefulSet tapio/tapio-nats"),
    (owned("tapio-nats-0", owner="other"), "not a pod of StatefulSet tapio/tapio-nats"),
    (owned("tapio-nats-0", kind="ReplicaSet"), "not a pod of StatefulSet tapio/tapio-nats"),
    (owned("tapio-nats-0", controller=False), "not a pod of StatefulSet tapio/tapio-nats"),
    (owned("tapio-nats-0", uid="uid-before"), "its controller is an earlier StatefulSet tapio-nats (uid uid-before)"),
], ids=["owned", "no owner", "another StatefulSet", "another kind", "not the controller", "an earlier incarnation"])
def test_only_the_statefulsets_own_pods_are_its_pods(candidate: dict[str, Any], problem: Optional[str]) -> None:
    assert kf.owner_problem(candidate, STATEFULSET) == problem


def test_a_pod_the_selector_matches_but_the_statefulset_does_not_own_is_refused_even_when_ready() -> None:
    pods = kf.pod_set([owned("tapio-nats-1"), pod("tapio-nats-x"), owned("tapio-nats-0")], STATEFULSET)
    assert pods.ready == ("tapio-nats-0", "tapio-nats-1")
    assert pods.refused == (("tapio-nats-x", "not a pod of StatefulSet tapio/tapio-nats"),)
    target = kf.ForwardTarget(namespace="tapio", port=4222, selector="app=nats", statefulset="tapio-nats")
    assert pods.problems(target) == ["pod tapio/tapio-nats-x is not forwarded to: not a pod of StatefulSet tapio/tapio-nats"]
    assert kf.pod_set([pod("tapio-nats-x")]).ready == ("tapio-nats-x",), "without a StatefulSet, every pod matched"


def owned_forwards(monkeypatch, pods: list[dict[str, Any]]) -> Any:
    monkeypatch.setattr(kf, "load_core_api", lambda kubeconfig, context: object())
    monkeypatch.setattr(kf, "list_pods", lambda api, target, timeout: pods)
    monkeypatch.setattr(kf, "read_statefulset", lambda api, target, timeout: STATEFULSET)
    spec = {"namespace": "tapio", "selector": "app=nats", "port": 4222, "all_pods": True, "statefulset": "tapio-nats"}
    return kf.open_pod_forwards(spec, ports=(4222,), timeout=5)


def test_every_pod_forwards_go_to_the_statefulsets_pods_only(monkeypatch, fake_remotes: dict) -> None:
    with owned_forwards(monkeypatch, [owned("tapio-nats-0"), pod("impostor")]) as forwards:
        assert [b.pod for b in forwards.bound(4222)] == ["tapio-nats-0"]
    with pytest.raises(kf.KubeForwardError,
                       match="^pod tapio/impostor is not forwarded to: not a pod of StatefulSet tapio/tapio-nats$"):
        owned_forwards(monkeypatch, [pod("impostor")])


def test_a_one_pod_forward_to_a_pod_the_statefulset_does_not_own_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(kf, "list_pods", lambda api, target, timeout: [pod("impostor")])
    monkeypatch.setattr(kf, "read_statefulset", lambda api, target, timeout: STATEFULSET)
    target = kf.ForwardTarget(namespace="tapio", port=4222, pod="impostor", statefulset="tapio-nats")
    with pytest.raises(kf.KubeForwardError, match="^pod tapio/impostor is not forwarded to: not a pod of StatefulSet"):
        kf.resolve_pod(object(), target, 5)


def info(server_name: Any) -> bytes:
    return b"INFO " + json.dumps({"server_id": "N1", "server_name": server_name}).encode() + b"\r\n"


@pytest.mark.parametrize(("greeting", "problem"), [
    (info("tapio-nats-0"), None),
    (info("tapio-nats-1"), "the NATS server behind pod tapio-nats-0 names itself 'tapio-nats-1', not tapio-nats-0"),
    (info(None), "the NATS server behind pod tapio-nats-0 names itself None, not tapio-nats-0"),
    (b"HTTP/1.1 200 OK\r\n", "pod tapio-nats-0 did not greet as a NATS server (no INFO)"),
    (b"INFO {not json\r\n", "pod tapio-nats-0 sent an INFO that is not JSON"),
    (b"", "pod tapio-nats-0 did not greet as a NATS server (no INFO)"),
], ids=["its own name", "another pod's name", "no name", "not NATS", "bad INFO", "nothing"])
def test_a_client_port_must_greet_with_its_pods_name(greeting: bytes, problem: Optional[str]) -> None:
    found = kf.nats_greeting_problem(greeting, "tapio-nats-0")
    assert found == (problem and f"{problem}: no credentials sent")


class NatsRemotes:
    """Each open() is a socket pair whose far end greets with *greeting*, then keeps what the
    client sends (a NATS server as far as the bridge can tell)."""

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.received: list[bytes] = []

    def open(self) -> tuple[socket.socket, Any, Any]:
        near, far = socket.socketpair()
        threading.Thread(target=self._serve, args=(far,), daemon=True).start()
        return near, (lambda: None), (lambda: None)

    def _serve(self, far: socket.socket) -> None:
        with contextlib.suppress(OSError):
            far.sendall(self.greeting)
            while data := far.recv(1024):
                self.received.append(data)
        far.close()


def greeted_forwarder(remotes: NatsRemotes) -> Any:
    target = kf.ForwardTarget(namespace="tapio", port=4222, selector="app=nats", statefulset="tapio-nats")
    return kf.PortForwarder(remotes.open, "pod tapio/tapio-nats-0 port 4222",
                            kf.greeting_check(target, "tapio-nats-0", 4222))


def test_credentials_go_only_to_a_server_named_after_its_pod() -> None:
    remotes = NatsRemotes(info("tapio-nats-0"))
    with greeted_forwarder(remotes) as forwarder:
        client = connect(forwarder.local_port)
        assert client.recv(1024) == info("tapio-nats-0")
        client.sendall(b'CONNECT {"pass":"secret"}\r\n')
        deadline = time.monotonic() + 5
        while not remotes.received and time.monotonic() < deadline:
            time.sleep(0.01)
    assert remotes.received == [b'CONNECT {"pass":"secret"}\r\n'] and forwarder.errors == []


def test_a_server_with_another_name_gets_nothing_and_the_refusal_is_named() -> None:
    remotes = NatsRemotes(info("somebody-else"))
    with greeted_forwarder(remotes) as forwarder:
        client = connect(forwarder.local_port)
        assert client.recv(1024) == b"", "the client never sees the INFO, so it never sends CONNECT"
        with contextlib.suppress(OSError):
            client.sendall(b'CONNECT {"pass":"secret"}\r\n')
        forwarder.settle()
    assert remotes.received == []
    assert forwarder.errors == ["port-forward to pod tapio/tapio-nats-0 port 4222: the NATS server behind pod "
                                "tapio-nats-0 names itself 'somebody-else', not tapio-nats-0: no credentials sent"]


def test_only_a_statefulsets_client_port_is_checked() -> None:
    target = kf.ForwardTarget(namespace="tapio", port=4222, selector="app=nats", statefulset="tapio-nats")
    assert kf.greeting_check(target, "tapio-nats-0", 8222) is None, "the monitoring port is sent no credentials"
    assert kf.greeting_check(kf.ForwardTarget(namespace="tapio", port=4222, pod="x"), "x", 4222) is None


def test_the_engines_session_names_a_refused_server_when_it_cannot_connect(monkeypatch) -> None:
    """The engine connects after the forwards are set up (outside nats_endpoint's block): what
    they refused still reaches its message."""
    load("tapio_wait")
    session_module = load("tapio_nats_session")
    forwarder = greeted_forwarder(NatsRemotes(info("somebody-else")))
    monkeypatch.setattr(kf, "open_pod_forward", lambda spec, timeout: forwarder)
    spec = {"namespace": "tapio", "selector": "app=nats", "port": 4222, "statefulset": "tapio-nats"}
    session = session_module.NatsSession(params(kube_port_forward=spec, connect_timeout=2.0), log=lambda _: None)
    try:
        with pytest.raises(tn.NatsModuleError, match="names itself 'somebody-else', not tapio-nats-0: no credentials sent"):
            session.call(lambda api: api.stream_info("TAPIO_EVENTS"), "stream info")
    finally:
        session.close()


def test_a_monitoring_read_that_answered_nothing_names_what_its_forward_reported(monkeypatch) -> None:
    def refuse() -> Any:
        raise kf.ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(kf, "api_remote_opener", lambda api, namespace, name, port: refuse)
    monkeypatch.setattr(kf, "load_core_api", lambda kubeconfig, context: object())
    monkeypatch.setattr(kf, "list_pods", lambda api, target, timeout: [pod("tapio-nats-0")])
    spec = {"namespace": "tapio", "selector": "app=nats", "port": 4222, "all_pods": True, "monitor_port": 8222}
    _, problems = health.kube_meta_cluster(spec, 5, jetstream=False)
    assert problems[-1] == "port-forward to pod tapio/tapio-nats-0 port 8222: 403 Forbidden", problems
