"""The nats_* modules reaching NATS through a Kubernetes port-forward (kube_port_forward),
against the real lab: kube-apiserver -> kwok (the nodes' fake kubelet) -> the lab's
nats-server processes on loopback. Results are checked with natscli connected directly.

kwok runs no containers, so a forward to a pod is dialled by kwok to the address its
PortForward / ClusterPortForward rule names. The test makes its own namespace with a
StatefulSet tapio-nats (3 pods kwok marks Ready) and one namespaced PortForward per pod to
lab NATS node i, so it does not depend on the tapio namespace (which other tests reset).
The lab's own cluster-wide rules for namespace tapio are checked as objects at the end.

Every module call passes an unreachable ``servers`` (nats://127.0.0.1:1): a success can
only have come through the forward.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.rest import ApiException

from conftest import PORT_OFFSET, KubeLab, NatsLab
from nats_support import (
    REPO_ROOT,
    _load_module_code,
    remove_stream,
    run_direct,
    run_playbook_module,
    stream_info,
    unique,
)


KWOK_GROUP, KWOK_VERSION = "kwok.x-k8s.io", "v1alpha1"
UNREACHABLE = ["nats://127.0.0.1:1"]
PODS = 3
NS = 1_000_000_000


@pytest.fixture(scope="module", autouse=True)
def forward_utils() -> None:
    """Run_direct registers the other module_utils under ansible.module_utils; this one too."""
    for util in ("tapio_kube", "tapio_kube_forward"):
        _load_module_code(util, "ansible.module_utils", REPO_ROOT / "module_utils" / f"{util}.py")


@pytest.fixture(scope="module")
def api(kube_lab: KubeLab) -> kube_client.ApiClient:
    configuration = kube_client.Configuration()
    kube_config.load_kube_config(config_file=str(kube_lab.kubeconfig), context=kube_lab.context,
                                 client_configuration=configuration)
    return kube_client.ApiClient(configuration)


def wait_ready(core: kube_client.CoreV1Api, namespace: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pods = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/name=nats").items
        ready = [p for p in pods if p.status.phase == "Running" and any(
            c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
        if len(ready) == count:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"only {len(ready)} of {count} NATS pods became ready in {namespace}: "
                        f"{[(p.metadata.name, p.status.phase) for p in pods]}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def nats_pods(api: kube_client.ApiClient, nats_lab: NatsLab) -> Iterator[str]:
    """Namespace test-pf-<id> with StatefulSet and Service tapio-nats and a kwok PortForward
    per pod: pod tapio-nats-i ports 4222 and 8222 -> the lab's NATS node i."""
    core, apps = kube_client.CoreV1Api(api), kube_client.AppsV1Api(api)
    custom = kube_client.CustomObjectsApi(api)
    namespace = f"test-pf-{uuid.uuid4().hex[:8]}"
    labels = {"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "tapio-nats"}
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        for i in range(PODS):
            custom.create_namespaced_custom_object(KWOK_GROUP, KWOK_VERSION, namespace, "portforwards", {
                "apiVersion": f"{KWOK_GROUP}/{KWOK_VERSION}", "kind": "PortForward",
                "metadata": {"name": f"tapio-nats-{i}", "namespace": namespace},
                "spec": {"forwards": [{"ports": [port], "target": {"address": "127.0.0.1", "port": port + PORT_OFFSET + i}}
                                      for port in (4222, 8222)]}})
        core.create_namespaced_service(namespace, {
            "metadata": {"name": "tapio-nats"},
            "spec": {"clusterIP": "None", "selector": labels, "ports": [{"name": "client", "port": 4222}]}})
        apps.create_namespaced_stateful_set(namespace, {
            "metadata": {"name": "tapio-nats"},
            "spec": {"replicas": PODS, "serviceName": "tapio-nats", "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "nats", "image": "nats:2.15.1-alpine",
                                                           "ports": [{"name": "client", "containerPort": 4222}]}]}}}})
        wait_ready(core, namespace, PODS)
        yield namespace
    finally:
        core.delete_namespace(namespace)


def forward(kube_lab: KubeLab, namespace: str, **target: Any) -> dict[str, Any]:
    return {"kubeconfig": str(kube_lab.kubeconfig), "context": kube_lab.context, "namespace": namespace, **target}


@pytest.fixture
def stream_name(nats_lab: NatsLab) -> Iterator[str]:
    name = unique("pf")
    yield name
    remove_stream(name)


def test_stream_through_port_forward(kube_lab: KubeLab, nats_pods: str, stream_name: str) -> None:
    via = forward(kube_lab, nats_pods, selector="app.kubernetes.io/name=nats")
    spec = {"name": stream_name, "subjects": [f"{stream_name}.>"], "replicas": 3, "max_age": "1h",
            "servers": UNREACHABLE, "kube_port_forward": via}

    created = run_direct("nats_stream", spec)
    assert not created["failed"], created.get("msg")
    assert created["changed"] and created["operation"] == "create"
    seen = stream_info(stream_name)  # natscli, straight to the lab's servers
    assert seen is not None, "natscli does not see the stream created through the forward"
    assert seen["config"]["subjects"] == [f"{stream_name}.>"] and seen["config"]["num_replicas"] == 3
    assert seen["config"]["max_age"] == 3600 * NS

    again = run_direct("nats_stream", spec)
    assert not again["failed"] and again["changed"] is False and again["operation"] == "none"

    removed = run_direct("nats_stream", {**spec, "state": "absent"})
    assert not removed["failed"] and removed["operation"] == "delete"
    assert stream_info(stream_name) is None


@pytest.mark.parametrize(("target", "server"), [
    ({"pod": "tapio-nats-2"}, "nats-2"),
    ({"service": "tapio-nats"}, "nats-0"),  # first ready pod by name
    ({"selector": "app.kubernetes.io/instance=tapio-nats"}, "nats-0"),
])
def test_forward_reaches_the_chosen_pods_server(kube_lab: KubeLab, nats_pods: str, target: dict,
                                               server: str) -> None:
    """The forward goes to the pod chosen, whose kwok rule names lab node i: the server that
    answers is that node, although the cluster announces all three in INFO."""
    info = run_direct("nats_info", {"servers": UNREACHABLE, "streams": [], "consumers": False,
                                    "kube_port_forward": forward(kube_lab, nats_pods, **target)})
    assert not info["failed"], info.get("msg")
    assert info["server"]["server_name"] == server
    assert len(info["server"]["connect_urls"]) == 3


def test_every_pod_forwarded_for_client_and_monitoring(kube_lab: KubeLab, nats_pods: str) -> None:
    """all_pods and monitor_port (tapio_nats_reach=kubernetes): the client gets every pod as
    its server list, and the monitoring reads (/healthz, /jsz, the meta leader's view) go to
    every pod's monitoring port, so the leader is always among them; neither servers nor
    monitor_urls can have answered."""
    via = forward(kube_lab, nats_pods, selector="app.kubernetes.io/name=nats", all_pods=True, monitor_port=8222)
    info = run_direct("nats_info", {"servers": UNREACHABLE, "monitor_urls": ["http://127.0.0.1:1"], "streams": [],
                                    "consumers": False, "expected_peers": PODS, "kube_port_forward": via})
    assert not info["failed"], info.get("msg")
    assert info["healthy"], info["problems"]
    assert info["server"]["server_name"] in {f"nats-{i}" for i in range(PODS)}
    assert info["cluster"]["pods"] == [f"tapio-nats-{i}" for i in range(PODS)]
    assert sorted(info["cluster"]["health"]) == [f"{nats_pods}/tapio-nats-{i}:8222" for i in range(PODS)]
    assert info["cluster"]["leader_view"] and info["cluster"]["cluster_size"] == PODS

    # The nats_cluster gate's form: monitoring only, no monitor_urls at all.
    gate = run_direct("nats_info", {"monitor_only": True, "expected_peers": PODS, "wait": True, "wait_timeout": 30,
                                    "kube_port_forward": via})
    assert not gate["failed"] and gate["healthy"], gate.get("msg") or gate["problems"]


def test_missing_pod_names_pod_and_namespace(kube_lab: KubeLab, nats_pods: str) -> None:
    failed = run_direct("nats_info", {"servers": UNREACHABLE, "streams": [],
                                      "kube_port_forward": forward(kube_lab, nats_pods, pod="tapio-nats-9")})
    assert failed["failed"]
    assert failed["msg"].startswith(f"kube_port_forward: pod {nats_pods}/tapio-nats-9 not found")


def test_no_ready_pod_for_selector(kube_lab: KubeLab, nats_pods: str) -> None:
    failed = run_direct("nats_info", {"servers": UNREACHABLE, "streams": [],
                                      "kube_port_forward": forward(kube_lab, nats_pods, selector="app=none")})
    assert failed["failed"]
    assert failed["msg"] == f"kube_port_forward: no pod found for pods matching 'app=none' in namespace {nats_pods}"


def test_port_without_forward_reports_the_kubelet_error(kube_lab: KubeLab, nats_pods: str) -> None:
    """kwok (the kubelet here) has no rule for port 4999: its error comes back on the
    forward's error channel and is part of the module's message."""
    failed = run_direct("nats_info", {"servers": UNREACHABLE, "streams": [], "connect_timeout": 3,
                                      "kube_port_forward": forward(kube_lab, nats_pods, pod="tapio-nats-1",
                                                                   port=4999)})
    assert failed["failed"]
    assert f"through a port-forward to pod {nats_pods}/tapio-nats-1 port 4999" in failed["msg"]
    assert f"forward not found for port 4999 in pod \"{nats_pods}/tapio-nats-1\"" in failed["msg"]


def test_unreachable_api_server(kube_lab: KubeLab, nats_pods: str, tmp_path: Path) -> None:
    config = yaml.safe_load(kube_lab.kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = "https://127.0.0.1:1"
    broken = tmp_path / "kubeconfig"
    broken.write_text(yaml.safe_dump(config))
    via = {**forward(kube_lab, nats_pods, pod="tapio-nats-0"), "kubeconfig": str(broken)}
    failed = run_direct("nats_info", {"servers": UNREACHABLE, "streams": [], "kube_port_forward": via})
    assert failed["failed"]
    assert failed["msg"].startswith(f"kube_port_forward: cannot reach the Kubernetes API https://127.0.0.1:1 "
                                    f"to look up pod {nats_pods}/tapio-nats-0:")


def test_through_ansible_playbook(kube_lab: KubeLab, nats_pods: str, stream_name: str) -> None:
    """Through ansible-playbook: Ansible ships tapio_kube_forward with the module."""
    result = run_playbook_module("nats_stream", {
        "name": stream_name, "subjects": [f"{stream_name}.>"], "replicas": 1, "servers": UNREACHABLE,
        "kube_port_forward": forward(kube_lab, nats_pods, service="tapio-nats")})
    assert not result["failed"], result.get("msg") or result["_output"][-2000:]
    assert result["changed"] and result["operation"] == "create"
    assert stream_info(stream_name)["config"]["num_replicas"] == 1


def test_lab_forwards_the_migrations_nats_pods(api: kube_client.ApiClient) -> None:
    """The lab's ClusterPortForward rules (roles/lab_kubernetes): pod tapio/tapio-nats-i
    ports 4222 and 8222 -> lab node i's client and monitoring ports."""
    custom = kube_client.CustomObjectsApi(api)
    for i in range(PODS):
        try:
            rule = custom.get_cluster_custom_object(KWOK_GROUP, KWOK_VERSION, "clusterportforwards", f"tapio-nats-{i}")
        except ApiException as error:
            pytest.fail(f"ClusterPortForward tapio-nats-{i} missing ({error.status}); run: scripts/lab up")
        assert rule["spec"]["selector"] == {"matchNamespaces": ["tapio"], "matchNames": [f"tapio-nats-{i}"]}
        targets = {port: f["target"] for f in rule["spec"]["forwards"] for port in f["ports"]}
        assert targets == {4222: {"address": "127.0.0.1", "port": 4222 + PORT_OFFSET + i},
                           8222: {"address": "127.0.0.1", "port": 8222 + PORT_OFFSET + i}}

