"""Unit tests for the server-side apply planning (module_utils/tapio_apply.py): what counts
as a change, Secret redaction, the volumeClaimTemplates refusal, ordering and discovery.
The API server is the integration tests' (tests/integration/test_nats_install.py); here a
recorded answer per path stands in for it, to pin the decisions down."""
from __future__ import annotations

import copy
from typing import Any, Optional

import pytest

from module_utils_loader import load_module_utils

load_module_utils("tapio_kube")
apply = load_module_utils("tapio_apply")


def statefulset(storage: str = "10Gi", storage_class: str = "standard") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "nats", "namespace": "tapio"},
            "spec": {"replicas": 3, "volumeClaimTemplates": [{
                "metadata": {"name": "jetstream"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                         "resources": {"requests": {"storage": storage}}}}]}}


def live(obj: dict[str, Any], version: str = "7") -> dict[str, Any]:
    """*obj* as the API server returns it: volatile metadata and a status added."""
    out = copy.deepcopy(obj)
    out["metadata"].update(resourceVersion=version, uid="u-1", generation=2, creationTimestamp="2026-12-01T00:00:00Z",
                           managedFields=[{"manager": "kubectl-client-side-apply"}])
    out["status"] = {"readyReplicas": 3}
    return out


class FakeKube:
    """Answers by method and path, records every request."""

    def __init__(self, objects: dict[str, dict[str, Any]], dry_run: Optional[dict[str, Any]] = None,
                 refuse: Optional[dict[str, Any]] = None) -> None:
        self.objects, self.dry_run, self.refuse = objects, dry_run or {}, refuse or {}
        self.requests: list[tuple[str, str, bool]] = []

    def request(self, method: str, path: str, body: Any = None, content_type: str = "", query: Any = None,
                not_found_ok: bool = False) -> Optional[dict[str, Any]]:
        dry = ("dryRun", "All") in (query or [])
        self.requests.append((method, path, dry))
        if path == "/apis/apps/v1":
            return {"resources": [{"name": "statefulsets", "kind": "StatefulSet", "namespaced": True},
                                  {"name": "statefulsets/status", "kind": "StatefulSet", "namespaced": True}]}
        if path == "/api/v1":
            return {"resources": [{"name": "namespaces", "kind": "Namespace", "namespaced": False},
                                  {"name": "secrets", "kind": "Secret", "namespaced": True},
                                  {"name": "configmaps", "kind": "ConfigMap", "namespaced": True}]}
        if path.startswith("/apis/monitoring.coreos.com/"):
            return None
        if method == "GET":
            return copy.deepcopy(self.objects.get(path))
        if path in self.refuse:
            raise self.refuse[path]
        answer = self.dry_run.get(path) if dry else None
        return copy.deepcopy(answer if answer is not None else live(body, version="8"))


STS_PATH = "/apis/apps/v1/namespaces/tapio/statefulsets/nats"


def test_an_object_whose_dry_run_equals_the_live_one_is_left_alone() -> None:
    kube = FakeKube({STS_PATH: live(statefulset())}, dry_run={STS_PATH: live(statefulset(), version="7")})
    planned = apply.Applier(kube, "tapio", False, print).plan([{"definition": statefulset()}])
    assert [entry["operation"] for entry in planned] == ["none"]


def test_only_volatile_metadata_and_status_differing_is_no_change() -> None:
    moved = live(statefulset(), version="99")
    moved["metadata"]["managedFields"] = [{"manager": "tapio"}]
    moved["status"] = {"readyReplicas": 1}
    assert apply.comparable(moved) == apply.comparable(live(statefulset()))


def test_a_spec_difference_in_the_dry_run_is_an_update_and_only_then_written() -> None:
    changed = live(statefulset())
    changed["spec"]["replicas"] = 5
    kube = FakeKube({STS_PATH: live(statefulset())}, dry_run={STS_PATH: changed})
    applier = apply.Applier(kube, "tapio", False, print)
    planned = applier.plan([{"definition": statefulset()}])
    assert planned[0]["operation"] == "update"
    assert not [r for r in kube.requests if r[0] == "PATCH" and not r[2]], "planning must not write"
    applier.apply(planned)
    assert [r for r in kube.requests if r[0] == "PATCH" and not r[2]] == [("PATCH", STS_PATH, False)]


def test_check_mode_plans_but_never_writes() -> None:
    kube = FakeKube({})
    applier = apply.Applier(kube, "tapio", True, print)
    applier.apply(applier.plan([{"definition": statefulset()}]))
    assert all(dry for method, _, dry in kube.requests if method == "PATCH")


def test_a_volume_claim_change_is_refused_before_any_dry_run_naming_both() -> None:
    kube = FakeKube({STS_PATH: live(statefulset())})
    with pytest.raises(apply.ApplyError) as refused:
        apply.Applier(kube, "tapio", False, print).plan([{"definition": statefulset("20Gi", "fast-ssd"),
                                                          "hint": "Expand the claims."}])
    message = str(refused.value)
    assert '"storage": "10Gi", "class": "standard"' in message and '"storage": "20Gi", "class": "fast-ssd"' in message
    assert "nothing was applied" in message and message.endswith("Expand the claims.")
    assert not [r for r in kube.requests if r[0] == "PATCH"]


def test_a_refused_dry_run_stops_everything_with_the_servers_reason() -> None:
    kube = FakeKube({}, refuse={STS_PATH: apply.KubeError("PATCH ...: 422 spec.replicas: Invalid value", 422)})
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "auth", "namespace": "tapio"},
              "stringData": {"NATS_PASSWORD": "s3cret"}}
    with pytest.raises(apply.ApplyError, match=r"StatefulSet tapio/nats was refused .*422 .*nothing was applied"):
        apply.Applier(kube, "tapio", False, print).plan([{"definition": secret}, {"definition": statefulset()}])
    assert not [r for r in kube.requests if r[0] == "PATCH" and not r[2]]


def test_namespaces_come_first_and_objects_in_a_new_one_are_created_without_a_dry_run() -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tapio"}}
    kube = FakeKube({})
    planned = apply.Applier(kube, "tapio", False, print).plan([{"definition": statefulset()}, {"definition": namespace}])
    assert [(e["desired"]["kind"], e["operation"]) for e in planned] == [("Namespace", "create"), ("StatefulSet", "create")]
    assert "does not exist yet" in planned[1]["reason"]
    assert ("PATCH", STS_PATH, True) not in kube.requests


def test_an_optional_kind_the_server_does_not_serve_is_skipped_and_a_required_one_refused() -> None:
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "n", "namespace": "t"}}
    planned = apply.Applier(FakeKube({}), "tapio", False, print).plan([{"definition": monitor, "optional": True}])
    assert planned[0]["operation"] == "skipped" and "does not serve" in planned[0]["reason"]
    with pytest.raises(apply.ApplyError, match="does not serve monitoring.coreos.com/v1 PodMonitor"):
        apply.Applier(FakeKube({}), "tapio", False, print).plan([{"definition": monitor}])


def test_discovery_builds_paths_and_asks_once_per_api_version() -> None:
    kube = FakeKube({})
    discovery = apply.Discovery(kube)
    assert discovery.path(statefulset()) == STS_PATH
    assert discovery.path({**statefulset(), "metadata": {"name": "b", "namespace": "x"}}) == \
        "/apis/apps/v1/namespaces/x/statefulsets/b"
    assert discovery.path({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}) == "/api/v1/namespaces/x"
    assert [path for _, path, _ in kube.requests].count("/apis/apps/v1") == 1


def test_secret_values_never_leave_redacted_results_and_diffs() -> None:
    before = live({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "auth", "namespace": "tapio",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": '{"stringData":{"P":"old"}}'}},
        "data": {"NATS_USER": "dGFwaW8=", "NATS_PASSWORD": "b2xk"}})
    after = copy.deepcopy(before)
    after["data"]["NATS_PASSWORD"] = "bmV3"
    entry = {"label": "Secret tapio/auth", "desired": after, "operation": "update", "live": before, "after": after}
    result, diff = apply.entry_result(entry), apply.entry_diff(entry)
    assert result["changed_keys"] == ["NATS_PASSWORD"]
    text = repr(result) + repr(diff)
    for secret in ("b2xk", "bmV3", "dGFwaW8=", "old"):
        assert secret not in text
    assert apply.REDACTED in diff["after"] and '"NATS_PASSWORD"' in diff["after"]


def test_unchanged_objects_have_no_diff() -> None:
    entry = {"label": "x", "desired": statefulset(), "operation": "none", "live": live(statefulset()),
             "after": live(statefulset())}
    assert apply.entry_diff(entry) is None


def test_no_log_values_are_the_secrets_values_but_not_user_names() -> None:
    """Ansible masks a module's no_log values in all it prints; a user name among them would
    turn every name containing it (tapio-nats) into ********-nats."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "auth", "namespace": "tapio"},
              "data": {"NATS_USER": "dGFwaW8=", "NATS_PASSWORD": "c2VjcmV0LXB3"},
              "stringData": {"token": "tok-123", "admin.username": "admin"}}
    values = apply.secret_values([{"definition": secret}, {"definition": statefulset()}])
    assert values == {"c2VjcmV0LXB3", "secret-pw", "tok-123"}


def test_create_only_keeps_an_existing_object_without_a_dry_run_or_write() -> None:
    moved = live(statefulset())
    moved["spec"]["replicas"] = 5  # changed since it was created: kept as it is
    kube = FakeKube({STS_PATH: moved})
    applier = apply.Applier(kube, "tapio", False, print)
    planned = applier.plan([{"definition": statefulset(), "create_only": True}])
    applier.apply(planned)
    assert planned[0]["operation"] == "none" and planned[0]["after"]["spec"]["replicas"] == 5
    assert [r for r in kube.requests if r[0] != "GET"] == []


def test_create_only_creates_a_missing_object_with_a_plain_create() -> None:
    kube = FakeKube({})
    applier = apply.Applier(kube, "tapio", False, print)
    planned = applier.plan([{"definition": statefulset(), "create_only": True}])
    assert planned[0]["operation"] == "create"
    applier.apply(planned)
    collection = STS_PATH.rsplit("/", 1)[0]
    assert [r for r in kube.requests if r[0] != "GET"] == [("POST", collection, True), ("POST", collection, False)]


def test_claim_sizes_compare_as_quantities() -> None:
    def sts(storage: str, storage_class: str = "standard") -> dict[str, Any]:
        return {"kind": "StatefulSet", "metadata": {"name": "tapio-nats", "namespace": "tapio"},
                "spec": {"volumeClaimTemplates": [{"metadata": {"name": "jetstream"}, "spec": {
                    "accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                    "resources": {"requests": {"storage": storage}}}}]}}

    assert apply.storage_bytes("10Gi") == apply.storage_bytes("10240Mi") == 10 * 1024 ** 3
    assert apply.storage_bytes("1k") == apply.storage_bytes("1000") == 1000
    assert apply.storage_bytes("2G") == 2 * 1000 ** 3 and apply.storage_bytes("1Ei") == 1024 ** 6
    assert apply.storage_bytes("1.5Gi") == "1.5Gi"  # not a plain quantity: compared as written
    # The API server returns 10Gi for a claim written 10240Mi: the same size, no refusal.
    assert apply.claims_problem(sts("10Gi"), sts("10240Mi"), "") is None
    refused = apply.claims_problem(sts("10Gi"), sts("20Gi"), "Resize the claims by hand.")
    assert refused and "volumeClaimTemplates" in refused and refused.endswith("Resize the claims by hand.")
    assert apply.claims_problem(sts("10Gi"), sts("10Gi", "fast"), "")  # another class is a change
