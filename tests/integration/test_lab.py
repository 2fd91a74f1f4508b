"""The lab is real: a real API server with its controllers, and a real JetStream cluster.

These tests would fail against a mock: they rely on server-side validation, the CRD
machinery, the DaemonSet controller and the scheduler, and JetStream's RAFT replication.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from nats.js.api import StorageType, StreamConfig

from conftest import REAL_NODE_PREFIX, REPO_ROOT, KubeLab, NatsLab
from nats_support import fetch_served, publish_served

pytestmark = pytest.mark.integration


def pinned(name: str) -> str:
    for line in (REPO_ROOT / "lab" / "versions.env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip()
    raise KeyError(name)


@pytest.fixture(scope="module")
def api(kube_lab: KubeLab) -> client.ApiClient:
    return config.new_client_from_config(str(kube_lab.kubeconfig), context=kube_lab.context)


@pytest.fixture()
def namespace(api: client.ApiClient) -> Iterator[str]:
    name = f"labtest-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def wait_for(predicate, timeout: float, what: str):  # noqa: ANN001 - small local helper
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def kubectl(kube_lab: KubeLab, *args: str) -> str:
    result = subprocess.run(
        [str(kube_lab.kubectl), "--kubeconfig", str(kube_lab.kubeconfig), "--context", kube_lab.context, *args],
        capture_output=True, text=True, check=True, timeout=60)
    return result.stdout


def test_kubectl_lists_ready_fake_and_real_nodes(kube_lab: KubeLab) -> None:
    nodes = json.loads(kubectl(kube_lab, "get", "nodes", "-o", "json"))["items"]

    def ready(node: dict) -> bool:
        return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])

    fake = [n for n in nodes if n["metadata"].get("annotations", {}).get("kwok.x-k8s.io/node") == "fake"]
    real = [n for n in nodes if n["metadata"].get("labels", {}).get("tapio.io/lab-node") == "real"]
    assert len(fake) + len(real) == len(nodes), [n["metadata"]["name"] for n in nodes]
    assert len([n for n in fake if ready(n)]) >= 3, f"expected at least 3 Ready fake nodes: {fake}"
    # Fake nodes on loopback addresses: nothing the API server sends them leaves the machine.
    addresses = [a["address"] for n in fake for a in n["status"]["addresses"] if a["type"] == "InternalIP"]
    assert all(a.startswith("127.") for a in addresses), addresses
    # Real nodes: a kubelet with containerd each, tainted for NATS, on the lab's machine-local addresses.
    assert sorted(n["metadata"]["name"] for n in real if ready(n)) == [f"{REAL_NODE_PREFIX}{i}" for i in range(3)]
    for node in real:
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://"), node["status"]["nodeInfo"]
        assert {"key": "tapio.io/lab-node", "value": "real", "effect": "NoSchedule"} in node["spec"]["taints"]
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert len(internal) == 1 and internal[0].startswith("10.99."), internal


def test_server_version_is_the_pinned_one(kube_lab: KubeLab) -> None:
    version = json.loads(kubectl(kube_lab, "version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == pinned("KUBERNETES_VERSION")


def test_api_server_rejects_an_invalid_object(api: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api)
    bad = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="Not_A_Valid_Name"),
        spec=client.V1DeploymentSpec(
            selector=client.V1LabelSelector(match_labels={"app": "x"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "other"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]))))
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(namespace, bad)
    assert err.value.status == 422
    body = json.loads(err.value.body)
    assert body["reason"] == "Invalid"
    fields = {cause["field"] for cause in body["details"]["causes"]}
    assert "metadata.name" in fields
    assert "spec.template.metadata.labels" in fields  # selector does not match template


def test_crd_is_established_and_stores_a_custom_resource(api: client.ApiClient, namespace: str) -> None:
    ext = client.ApiextensionsV1Api(api)
    group, plural = "labtest.tapio.io", f"widgets{uuid.uuid4().hex[:6]}"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": "Widget" + plural[-6:]},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": {
                    "size": {"type": "integer", "minimum": 1}}}}}}}],
        },
    }
    ext.create_custom_resource_definition(crd)
    try:
        def established() -> bool:
            conds = ext.read_custom_resource_definition(f"{plural}.{group}").status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conds)
        wait_for(established, 30, "the CRD to be Established")
        custom = client.CustomObjectsApi(api)
        body = {"apiVersion": f"{group}/v1", "kind": crd["spec"]["names"]["kind"],
                "metadata": {"name": "w1"}, "spec": {"size": 3}}
        wait_for(lambda: _try_create(custom, group, namespace, plural, body), 30, "the new API to serve")
        stored = custom.get_namespaced_custom_object(group, "v1", namespace, plural, "w1")
        assert stored["spec"]["size"] == 3
        assert stored["metadata"]["uid"]
        # The schema is enforced by the server.
        bad = {**body, "metadata": {"name": "w2"}, "spec": {"size": 0}}
        with pytest.raises(ApiException) as err:
            custom.create_namespaced_custom_object(group, "v1", namespace, plural, bad)
        assert err.value.status == 422
    finally:
        ext.delete_custom_resource_definition(f"{plural}.{group}")


def _try_create(custom: client.CustomObjectsApi, group: str, ns: str, plural: str, body: dict) -> bool:
    try:
        custom.create_namespaced_custom_object(group, "v1", ns, plural, body)
    except ApiException as exc:
        if exc.status == 404:  # discovery not yet updated
            return False
        raise
    return True


def test_daemonset_update_rolls_out_to_every_fake_node(api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    nodes = {n.metadata.name for n in core.list_node(label_selector="type=kwok").items}
    labels = {"app": "rollout-probe"}
    ds = client.V1DaemonSet(
        metadata=client.V1ObjectMeta(name="rollout-probe"),
        spec=client.V1DaemonSetSpec(
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="probe", image="busybox", env=[client.V1EnvVar(name="MODE", value="direct")])]))))
    apps.create_namespaced_daemon_set(namespace, ds)
    wait_for(lambda: _ds_rolled_out(apps, namespace, len(nodes)), 60, "the first rollout")
    apps.patch_namespaced_daemon_set("rollout-probe", namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "probe", "env": [{"name": "MODE", "value": "nats"}]}]}}}})
    wait_for(lambda: _ds_rolled_out(apps, namespace, len(nodes)), 90, "the update to roll out")

    def new_pods() -> set[str] | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=rollout-probe").items
        live = [p for p in pods if p.metadata.deletion_timestamp is None]
        running = {p.spec.node_name for p in live if p.status.phase == "Running"
                   and p.spec.containers[0].env[0].value == "nats"}
        return running if running == nodes and len(live) == len(nodes) else None
    assert wait_for(new_pods, 60, "a new pod on every node") == nodes


def _ds_rolled_out(apps: client.AppsV1Api, ns: str, want: int) -> bool:
    ds = apps.read_namespaced_daemon_set("rollout-probe", ns)
    st = ds.status
    return (st.observed_generation == ds.metadata.generation and st.desired_number_scheduled == want
            and st.updated_number_scheduled == want and st.number_ready == want)


def test_nats_cluster_has_three_jetstream_peers_and_a_meta_leader(nats_lab: NatsLab) -> None:
    leaders = []
    for url in nats_lab.monitor_urls:
        try:
            with urllib.request.urlopen(f"{url}/jsz?leader-only=true", timeout=5) as resp:  # noqa: S310
                leaders.append(json.load(resp))
        except urllib.error.HTTPError as exc:
            assert exc.code == 400  # "filtered response: not leader"
    assert len(leaders) == 1, "exactly one node must answer as the JetStream meta leader"
    meta = leaders[0]["meta_cluster"]
    assert meta["cluster_size"] == 3
    peers = {meta["leader"]} | {r["name"] for r in meta["replicas"]}
    assert peers == {"nats-0", "nats-1", "nats-2"}
    assert all(r["current"] for r in meta["replicas"]), meta["replicas"]


def test_replicated_stream_accepts_and_returns_messages(nats_lab: NatsLab) -> None:
    asyncio.run(_replicated_stream_roundtrip(nats_lab))


async def _replicated_stream_roundtrip(lab: NatsLab) -> None:
    name = f"LABTEST_{uuid.uuid4().hex[:8].upper()}"
    nc = await nats.connect(servers=lab.servers, user=lab.user, password=lab.password)
    js = nc.jetstream()
    try:
        await js.add_stream(StreamConfig(name=name, subjects=[f"labtest.{name}.>"], num_replicas=3,
                                         storage=StorageType.FILE))
        sent = [f"event-{i}".encode() for i in range(50)]
        for i, payload in enumerate(sent):
            ack = await publish_served(js, f"labtest.{name}.e", payload, {"Nats-Msg-Id": f"{name}-{i}"})
            assert ack.stream == name and ack.seq == i + 1
        # A republished id inside the duplicate window is not stored twice.
        dup = await js.publish(f"labtest.{name}.e", b"again", headers={"Nats-Msg-Id": f"{name}-0"})
        assert dup.duplicate
        info = await js.stream_info(name)
        assert info.state.messages == len(sent)
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        sub = await js.pull_subscribe(f"labtest.{name}.>", durable=None, stream=name)
        got: list[bytes] = []
        while len(got) < len(sent):
            for msg in await fetch_served(sub, len(sent) - len(got), timeout=5):
                got.append(msg.data)
                await msg.ack()
        assert got == sent
    finally:
        try:
            await js.delete_stream(name)
        finally:
            await nc.close()


def test_lab_state_lives_outside_the_tracked_tree() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert ".lab/" not in tracked and not any(Path(p).suffix == ".pid" for p in tracked.splitlines())
