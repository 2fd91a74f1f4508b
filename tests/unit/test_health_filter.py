"""The health check's plumbing around the judgement: the filter that reduces k8s_info's answers
to facts (plugins/filter/tapio_health.py; no env value may leave it), and the module's own
pure parts (library/tapio_health.py): option checks, the monitoring reads with answers handed
in, the facts for the report, and a whole run that reaches nothing (a refused port is real)."""
from __future__ import annotations

import importlib.util
import json
import socket
from types import ModuleType
from typing import Any

import pytest

from conftest import REPO_ROOT
from module_utils_loader import load_file


def load_filter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tapio_health_filter", REPO_ROOT / "plugins/filter/tapio_health.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


filters = load_filter()
module = load_file("tapio_health_library", REPO_ROOT / "library" / "tapio_health.py")
runner = load_file("tapio_health_test_action_plugin", REPO_ROOT / "plugins" / "action" / "tapio_migration.py")
SECRET = "s3cr3t-api-key"


def daemonset(mode_entry: dict | None, **status: Any) -> dict:
    env = [{"name": "API_KEY", "value": SECRET}] + ([mode_entry] if mode_entry else [])
    return {"kind": "DaemonSet", "metadata": {"name": "tapio-k8s-collector", "generation": 5},
            "spec": {"template": {"spec": {"containers": [{"name": "k8s-collector", "env": env}]}}},
            "status": {"observedGeneration": 5, "desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                       "updatedNumberScheduled": 2, "numberReady": 3, "numberAvailable": 3, "numberUnavailable": 0,
                       **status}}


def result(kind: str, name: str, resources: list | None, owned: bool = True, container: str = "k8s-collector",
           **extra: Any) -> dict:
    answer = {"item": {"kind": kind, "name": name, "namespace": "tapio", "container": container, "owned": owned},
              "changed": False, **extra}
    if resources is not None:
        answer["resources"] = resources
    return answer


# -- the filter --------------------------------------------------------------------------------
def test_a_daemonsets_facts_carry_its_mode_and_counters_and_never_an_env_value() -> None:
    [fact] = filters.tapio_health_workloads(
        [result("DaemonSet", "tapio-k8s-collector", [daemonset({"name": "TAPIO_OUTPUT_MODE", "value": "nats"})])],
        "TAPIO_OUTPUT_MODE")
    assert fact == {"kind": "DaemonSet", "name": "tapio-k8s-collector", "namespace": "tapio",
                    "container": "k8s-collector", "owned": True, "found": True, "generation": 5,
                    "observed_generation": 5, "desired": 3, "current": 3, "updated": 2, "ready": 3, "available": 3,
                    "unavailable": 0, "output_mode": "nats"}
    assert SECRET not in json.dumps(fact)


def test_the_mode_from_a_reference_unset_and_a_missing_container() -> None:
    by_ref = daemonset({"name": "TAPIO_OUTPUT_MODE", "valueFrom": {"configMapKeyRef": {"name": "m", "key": "k"}}})
    mode = "TAPIO_OUTPUT_MODE"
    assert filters.workload_fact(result("DaemonSet", "c", [by_ref]), mode)["output_mode"] == "<valueFrom>"
    assert filters.workload_fact(result("DaemonSet", "c", [daemonset(None)]), mode)["output_mode"] is None
    other = result("DaemonSet", "c", [daemonset({"name": "TAPIO_OUTPUT_MODE", "value": "nats"})], container="other")
    assert filters.workload_fact(other, "TAPIO_OUTPUT_MODE")["output_mode"] is None


def test_deployment_and_statefulset_counters_and_revisions() -> None:
    deployment = {"metadata": {"generation": 2}, "spec": {"replicas": 0},
                  "status": {"observedGeneration": 2}}
    fact = filters.workload_fact(result("Deployment", "tapio-pipeline", [deployment], container="pipeline"), "M")
    assert (fact["desired"], fact["ready"], fact["available"], fact["unavailable"]) == (0, 0, 0, 0)
    statefulset = {"metadata": {"generation": 7}, "spec": {},
                   "status": {"observedGeneration": 7, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2,
                              "availableReplicas": 2, "currentRevision": "tapio-nats-1",
                              "updateRevision": "tapio-nats-2"}}
    fact = filters.workload_fact(result("StatefulSet", "tapio-nats", [statefulset], owned=False, container="nats"), "M")
    assert fact["desired"] == 1  # spec.replicas absent: the API's default
    assert (fact["current_revision"], fact["update_revision"]) == ("tapio-nats-1", "tapio-nats-2")
    assert "output_mode" not in fact


def test_a_workload_not_found_and_one_that_could_not_be_read() -> None:
    assert filters.workload_fact(result("DaemonSet", "gone", []), "M")["found"] is False
    failed = filters.workload_fact(result("DaemonSet", "c", None, failed=True,
                                          msg="Task failed: Module failed: Failed to retrieve requested object: "
                                              "403 Forbidden"), "M")
    assert (failed["found"], failed["error"]) == (False, "Failed to retrieve requested object: 403 Forbidden")


@pytest.mark.parametrize(("value", "expected"), [("1Gi", 2**30), ("512Mi", 512 * 2**20), ("1536Mi", 1536 * 2**20),
                                                 ("2G", 2 * 10**9), ("1.5Gi", 3 * 2**29), ("1e9", 10**9),
                                                 ("1073741824", 2**30), ("", 0), (None, 0), ("lots", 0)])
def test_memory_quantities(value: Any, expected: int) -> None:
    assert filters.quantity_bytes(value) == expected


def test_the_nats_containers_memory_limit_from_the_statefulset() -> None:
    statefulset = {"spec": {"template": {"spec": {"containers": [
        {"name": "exporter", "resources": {"limits": {"memory": "64Mi"}}},
        {"name": "nats", "resources": {"limits": {"memory": "2Gi", "cpu": "1"}}}]}}}}
    results = [result("DaemonSet", "c", []), result("StatefulSet", "tapio-nats", [statefulset], owned=False)]
    assert filters.tapio_health_memory_limit(results, "tapio-nats") == 2 * 2**30
    assert filters.tapio_health_memory_limit(results, "other") == 0


def test_a_summary_line() -> None:
    assert filters.tapio_health_line({"severity": "critical", "check": "consumer", "subject": "S/c", "seen": "x"}) == (
        "[CRITICAL] consumer S/c: x")


# -- the module --------------------------------------------------------------------------------
def params(**changes: Any) -> dict:
    base = {"window": 10.0, "fill_warning": 80.0, "fill_critical": 90.0, "usage_warning": 80.0, "usage_critical": 90.0}
    return base | changes


def test_options_that_cannot_be_judged_are_refused() -> None:
    assert module.argument_problem(params()) == ""
    assert "window must be more than 0" in module.argument_problem(params(window=0.0))
    assert module.argument_problem(params(fill_warning=95.0)) == "fill_warning (95) is above fill_critical (90)"
    assert module.argument_problem(params(usage_critical=50.0)) == "usage_warning (80) is above usage_critical (50)"


class Servers:
    """Monitoring answers of a three-server cluster (as nats-server 2.10 gives them), one down."""

    URLS = ["http://127.0.0.1:18222", "http://127.0.0.1:18223", "http://127.0.0.1:18224"]

    def fetch(self, url: str, timeout: float) -> tuple[int, Any]:
        del timeout
        index = next(i for i, base in enumerate(self.URLS) if url.startswith(base))
        if index == 2:
            return 0, {"error": "<urlopen error [Errno 111] Connection refused>"}
        if "/healthz" in url:
            return 200, {"status": "ok"}
        if "/varz" in url:
            return 200, {"server_name": f"n{index}", "mem": 1000, "cluster": {"name": "c"}, "jetstream": {}}
        if "leader-only" in url and index != 0:
            return 400, {"error": "not leader"}
        return 200, {"meta_cluster": {"name": "c", "leader": "n0", "cluster_size": 3, "replicas": [
            {"name": "n1", "current": True}, {"name": "n2", "current": False, "offline": True}]}}


def test_the_monitoring_read_and_its_labels() -> None:
    read = module.read_servers(Servers.URLS, 1.0, fetch=Servers().fetch)
    assert read["cluster"]["leader"] == "n0" and read["cluster"]["servers_healthy"] == 2
    assert read["varz"][Servers.URLS[2]] == {"error": "<urlopen error [Errno 111] Connection refused>"}
    labels = {Servers.URLS[0]: "tapio/tapio-nats-0:8222"}
    renamed = module.relabelled(read, labels)
    assert "tapio/tapio-nats-0:8222" in renamed["cluster"]["health"] and "tapio/tapio-nats-0:8222" in renamed["varz"]
    facts = module.server_facts(renamed, 2**30)
    assert [s["label"] for s in facts] == sorted([*Servers.URLS[1:], "tapio/tapio-nats-0:8222"])
    assert next(s for s in facts if s["server_name"] == "n0")["memory_limit"] == 2**30


def refused_port() -> int:
    """A local port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_run_that_reaches_nothing_returns_findings_in_check_mode_and_changes_nothing() -> None:
    """main() as Ansible runs it (the project's in-process runner): a refused connection and a
    monitoring endpoint that does not answer are findings, not a failed module."""
    port = refused_port()
    args = {"servers": [f"nats://127.0.0.1:{port}"], "monitor_urls": [f"http://127.0.0.1:{port}"],
            "connect_timeout": 1.0, "monitor_timeout": 1.0, "window": 0.1, "expected_servers": 1,
            "_ansible_check_mode": True, "_ansible_diff": False, "_ansible_verbosity": 0}
    answer = json.loads(runner.run_module_in_process(module, json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()))
    assert "failed" not in answer and answer["changed"] is False and answer["healthy"] is False
    failing = {(f["check"], f["severity"]) for f in answer["findings"] if f["severity"] != "ok"}
    assert ("nats_connection", "critical") in failing and ("nats_server", "critical") in failing
    connection = next(f for f in answer["findings"] if f["check"] == "nats_connection")
    assert f"127.0.0.1:{port}" in connection["seen"] and "nslookup tapio-nats" in connection["next_step"]
    assert answer["summary"]["worst"] == "critical" and answer["checked_at"].endswith("Z")
