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
            assert used["forward_local_port"] == forwarder.local_port
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
