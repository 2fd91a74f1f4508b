"""Unit tests for the migration's env merge (module_utils/tapio_workload.py)."""
from __future__ import annotations

import copy

import pytest

from module_utils_loader import load_module_utils

twe = load_module_utils("tapio_workload")

SECRET = {"secretKeyRef": {"name": "tapio-nats-auth", "key": "NATS_PASSWORD"}}
NODE = {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}


def daemonset() -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": "tapio-ebpf-collector", "namespace": "tapio", "uid": "u-1", "resourceVersion": "42",
            "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{"manager": "x"}],
            "labels": {"app.kubernetes.io/name": "tapio-ebpf-collector"},
            "annotations": {"tapio.io/owner": "platform-team", "deprecated.daemonset.template.generation": "3"},
        },
        "spec": {"template": {"metadata": {"annotations": {"prometheus.io/scrape": "true"}}, "spec": {"containers": [
            {"name": "ebpf-collector", "env": [
                {"name": "TAPIO_SERVER_ADDRESS", "value": "tapio-pipeline:9090"},
                {"name": "LOG_LEVEL", "value": "debug"},
                {"name": "NODE_NAME", "valueFrom": NODE},
            ], "envFrom": [{"configMapRef": {"name": "tapio-ebpf-config"}}]},
            {"name": "log-shipper", "env": [{"name": "LOG_LEVEL", "value": "warn"}]},
        ]}}},
        "status": {"numberReady": 3},
    }


NATS_ENV = [
    {"name": "TAPIO_OUTPUT_MODE", "value": "nats"},
    {"name": "NATS_URL", "value": "nats://tapio-nats:4222"},
    {"name": "LOG_LEVEL", "value": "info"},
    {"name": "NATS_PASSWORD", "valueFrom": SECRET},
]


def test_merge_sets_in_place_and_appends_new_entries() -> None:
    result = twe.compute(daemonset(), "ebpf-collector", NATS_ENV, "TAPIO_OUTPUT_MODE")
    assert [e["name"] for e in result["env"]] == [
        "TAPIO_SERVER_ADDRESS", "LOG_LEVEL", "NODE_NAME", "TAPIO_OUTPUT_MODE", "NATS_URL", "NATS_PASSWORD"]
    assert {"name": "LOG_LEVEL", "value": "info"} in result["env"]
    assert {"name": "NODE_NAME", "valueFrom": NODE} in result["env"]
    assert {"name": "NATS_PASSWORD", "valueFrom": SECRET} in result["env"]
    assert result["needs_change"] is True
    assert result["output_mode"] is None


def test_merge_is_idempotent() -> None:
    workload = daemonset()
    first = twe.compute(workload, "ebpf-collector", NATS_ENV, "TAPIO_OUTPUT_MODE")
    workload["spec"]["template"]["spec"]["containers"][0]["env"] = first["env"]
    second = twe.compute(workload, "ebpf-collector", NATS_ENV, "TAPIO_OUTPUT_MODE")
    assert second["needs_change"] is False
    assert second["env"] == first["env"]
    assert second["output_mode"] == "nats"


def test_patch_touches_only_the_named_container_and_entries() -> None:
    patch = twe.compute(daemonset(), "ebpf-collector", NATS_ENV, "TAPIO_OUTPUT_MODE")["patch"]
    assert patch["metadata"] == {"name": "tapio-ebpf-collector", "namespace": "tapio"}
    containers = patch["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["ebpf-collector"]
    assert set(containers[0]) == {"name", "env"}
    assert [e["name"] for e in containers[0]["env"]] == [e["name"] for e in NATS_ENV]


def test_switching_value_to_value_from_clears_the_old_field() -> None:
    workload = daemonset()
    workload["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "NATS_PASSWORD", "value": "plain"})
    result = twe.compute(workload, "ebpf-collector", NATS_ENV, "TAPIO_OUTPUT_MODE")
    item = next(e for e in result["patch"]["spec"]["template"]["spec"]["containers"][0]["env"]
                if e["name"] == "NATS_PASSWORD")
    assert item == {"name": "NATS_PASSWORD", "valueFrom": SECRET, "value": None}
    assert {"name": "NATS_PASSWORD", "valueFrom": SECRET} in result["env"]


def test_value_none_removes_an_entry() -> None:
    result = twe.compute(daemonset(), "ebpf-collector", [{"name": "TAPIO_SERVER_ADDRESS", "value": None}], "M")
    assert "TAPIO_SERVER_ADDRESS" not in [e["name"] for e in result["env"]]
    item = result["patch"]["spec"]["template"]["spec"]["containers"][0]["env"][0]
    assert item == {"name": "TAPIO_SERVER_ADDRESS", "$patch": "delete"}


def test_values_are_strings() -> None:
    result = twe.compute(daemonset(), "ebpf-collector", [{"name": "BATCH", "value": 100}], "M")
    assert {"name": "BATCH", "value": "100"} in result["env"]


def test_live_object_is_not_modified() -> None:
    workload = daemonset()
    before = copy.deepcopy(workload)
    twe.compute(workload, "ebpf-collector", NATS_ENV, "TAPIO_OUTPUT_MODE")
    assert workload == before


def test_missing_container_names_the_workload_and_its_containers() -> None:
    with pytest.raises(twe.WorkloadError, match=r"tapio/tapio-ebpf-collector has no container named 'nope' "
                                                r"\(containers: ebpf-collector, log-shipper\)"):
        twe.compute(daemonset(), "nope", NATS_ENV, "TAPIO_OUTPUT_MODE")


@pytest.mark.parametrize("entry", [{"value": "x"}, {"name": "A", "value": "x", "valueFrom": SECRET}])
def test_bad_entries_are_refused(entry: dict) -> None:
    with pytest.raises(twe.WorkloadError):
        twe.merge_env([], [entry])


def test_record_drops_server_state_and_keeps_own_metadata() -> None:
    record = twe.compute(daemonset(), "ebpf-collector", [], "M")["record"]
    assert "status" not in record
    assert set(record["metadata"]) == {"name", "namespace", "labels", "annotations"}
    assert record["metadata"]["annotations"] == {"tapio.io/owner": "platform-team"}
    assert record["spec"] == daemonset()["spec"]


def test_restore_of_an_unchanged_workload_is_not_needed() -> None:
    record = twe.record_of(daemonset())
    result = twe.compute(daemonset(), "ebpf-collector", [], "M", record)
    assert result["restore_needed"] is False


def test_restore_puts_back_the_recorded_template_and_keeps_server_metadata() -> None:
    original = daemonset()
    record = twe.record_of(original)
    migrated = daemonset()
    migrated["metadata"]["resourceVersion"] = "77"
    migrated["spec"]["template"]["spec"]["containers"][0]["env"] = twe.compute(
        original, "ebpf-collector", NATS_ENV, "TAPIO_OUTPUT_MODE")["env"]
    result = twe.compute(migrated, "ebpf-collector", [], "M", record)
    assert result["restore_needed"] is True
    assert result["restore"]["spec"] == original["spec"]
    assert result["restore"]["metadata"]["resourceVersion"] == "77"
    assert result["restore"]["metadata"]["annotations"] == {
        "tapio.io/owner": "platform-team", "deprecated.daemonset.template.generation": "3"}


def test_a_changed_own_annotation_is_a_change_from_the_record_that_a_restore_keeps() -> None:
    """The object's own annotation changed (not the toolkit's: it never writes the object's
    metadata) while its spec is as recorded: the report counts it as a change from the record;
    a restore has nothing of the toolkit's to put back, and names the annotation as kept."""
    record = twe.record_of(daemonset())
    changed = daemonset()
    changed["metadata"]["annotations"]["tapio.io/owner"] = "someone-else"
    assert twe.restore_of(changed, record)[0] is True
    result = twe.compute(changed, "ebpf-collector", [], "M", record)
    assert result["restore_needed"] is False
    assert result["kept_since_record"] == ["metadata.annotations.tapio.io/owner"]


def test_env_in_another_order_needs_no_change() -> None:
    workload = daemonset()
    merged = twe.compute(workload, "ebpf-collector", NATS_ENV, "TAPIO_OUTPUT_MODE")["env"]
    workload["spec"]["template"]["spec"]["containers"][0]["env"] = list(reversed(merged))
    assert twe.compute(workload, "ebpf-collector", NATS_ENV, "TAPIO_OUTPUT_MODE")["needs_change"] is False


def migrated_copy(original: dict) -> dict:
    """*original* as the toolkit leaves it: NATS env in the owned container, an annotation."""
    migrated = copy.deepcopy(original)
    migrated["metadata"]["resourceVersion"] = "77"
    migrated["spec"]["template"]["spec"]["containers"][0]["env"] = twe.compute(
        original, "ebpf-collector", NATS_ENV, "TAPIO_OUTPUT_MODE")["env"]
    migrated["spec"]["template"]["metadata"]["annotations"]["tapio.io/switched"] = "nats"
    return migrated


def test_a_restore_with_only_the_toolkits_changes_gives_the_record_back_whole() -> None:
    original = daemonset()
    record = twe.record_of(original)
    needed, definition, kept = twe.restore_of(migrated_copy(original), record, "ebpf-collector")
    assert needed and kept == []
    assert definition["spec"] == record["spec"]


def test_an_upgrade_made_while_migrated_is_kept_and_only_the_toolkits_fields_go_back() -> None:
    """The image changed (a Helm upgrade) while on NATS: the restore reverts the owned env and
    the pod template annotations, keeps the new image and the sidecar, and names what it kept."""
    original = daemonset()
    record = twe.record_of(original)
    live = migrated_copy(original)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "tapio/ebpf:1.1.0"
    live["spec"]["template"]["spec"]["containers"][1]["image"] = "shipper:2"
    needed, definition, kept = twe.restore_of(live, record, "ebpf-collector")
    assert needed
    assert kept == ["spec.template.spec.containers[ebpf-collector].image",
                    "spec.template.spec.containers[log-shipper].image"]
    owned, sidecar = definition["spec"]["template"]["spec"]["containers"]
    assert owned["image"] == "tapio/ebpf:1.1.0" and sidecar["image"] == "shipper:2"
    assert owned["env"] == original["spec"]["template"]["spec"]["containers"][0]["env"]
    assert definition["spec"]["template"]["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    assert definition["metadata"]["resourceVersion"] == "77"


def test_an_annotation_another_writer_put_on_the_object_while_migrated_is_kept() -> None:
    """A concurrent writer (kubectl annotate, a GitOps controller) annotated and relabelled the
    DaemonSet itself while it ran on NATS: the restore (read again after its 409) returns the
    toolkit's fields, so the pod template is the recorded one, and keeps the writer's metadata,
    naming it, instead of putting the record's metadata back over it."""
    original = daemonset()
    record = twe.record_of(original)
    live = migrated_copy(original)
    live["metadata"]["annotations"]["faults.tapio.io/writer"] = "7"
    live["metadata"]["labels"]["team"] = "obs"
    needed, definition, kept = twe.restore_of(live, record, "ebpf-collector")
    assert needed
    assert kept == ["metadata.annotations.faults.tapio.io/writer", "metadata.labels.team"]
    assert definition["spec"] == record["spec"]
    assert definition["metadata"]["annotations"] == {
        "tapio.io/owner": "platform-team", "faults.tapio.io/writer": "7",
        "deprecated.daemonset.template.generation": "3"}
    assert definition["metadata"]["labels"] == {"app.kubernetes.io/name": "tapio-ebpf-collector", "team": "obs"}
    assert definition["metadata"]["resourceVersion"] == "77"


def test_fields_the_toolkit_overrode_go_back_too_and_are_not_reported_as_kept() -> None:
    original = daemonset()
    record = twe.record_of(original)
    live = migrated_copy(original)
    live["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "64"}}
    live["spec"]["replicas"] = 4  # not the toolkit's: kept
    needed, definition, kept = twe.restore_of(live, record, "ebpf-collector", ("resources",))
    assert kept == ["spec.replicas"]
    assert "resources" not in definition["spec"]["template"]["spec"]["containers"][0]
    assert definition["spec"]["replicas"] == 4


def test_a_workload_already_back_to_its_toolkit_fields_needs_no_restore_despite_an_upgrade() -> None:
    original = daemonset()
    record = twe.record_of(original)
    live = copy.deepcopy(original)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "tapio/ebpf:1.1.0"
    needed, _, kept = twe.restore_of(live, record, "ebpf-collector")
    assert not needed and kept == ["spec.template.spec.containers[ebpf-collector].image"]


def test_differing_paths_match_list_items_by_name() -> None:
    left = {"a": [{"name": "x", "v": 1}, {"name": "y", "v": 2}], "b": 1}
    assert twe.differing_paths(left, {"a": [{"name": "x", "v": 1}, {"name": "y", "v": 3}], "b": 1}) == ["a[y].v"]
    assert twe.differing_paths(left, {"a": [{"name": "y", "v": 2}], "b": 2}) == ["a", "b"]


# -- provenance -------------------------------------------------------------------------------
def test_provenance_names_the_run_and_the_object_a_record_came_from() -> None:
    live = daemonset()
    live["metadata"].update({"uid": "u-1", "generation": 4, "resourceVersion": "77"})
    provenance = twe.provenance_of(live, "ops@host pid 1 run ab12", "2026-12-02T16:00:00Z")
    assert provenance == {"recorded_by": "ops@host pid 1 run ab12", "recorded_at": "2026-12-02T16:00:00Z",
                          "uid": "u-1", "generation": 4, "resource_version": "77",
                          "pod_template_hash": twe.pod_template_hash(live)}
    line = twe.provenance_line(provenance, live)
    assert line == ("recorded by ops@host pid 1 run ab12 at 2026-12-02T16:00:00Z from generation 4, pod template "
                    f"{twe.pod_template_hash(live)}")


def test_provenance_says_when_the_workload_was_created_again_since_the_record() -> None:
    live = daemonset()
    live["metadata"]["uid"] = "u-2"
    provenance = {"recorded_by": "r", "recorded_at": "t", "uid": "u-1", "generation": 1, "pod_template_hash": "h"}
    assert twe.provenance_line(provenance, live).endswith(
        "; the workload was deleted and created again since (uid u-1 -> u-2)")


def test_a_record_without_provenance_is_said_to_be_from_an_earlier_toolkit() -> None:
    assert "no provenance kept" in twe.provenance_line(None, daemonset())


def test_workload_env_points_the_shared_credentials_at_the_workloads_own_secret() -> None:
    other = {"secretKeyRef": {"name": "user-api-token", "key": "TOKEN"}}
    env = [{"name": "NATS_URL", "value": "nats://tapio-nats:4222"},
           {"name": "NATS_PASSWORD", "valueFrom": SECRET},
           {"name": "API_TOKEN", "valueFrom": other}]
    before = copy.deepcopy(env)
    own = twe.workload_env(env, "tapio-ebpf-collector", {"shared": "tapio-nats-auth", "prefix": "tapio-nats-auth-"})
    assert own == [env[0],
                   {"name": "NATS_PASSWORD", "valueFrom": {"secretKeyRef": {
                       "name": "tapio-nats-auth-tapio-ebpf-collector", "key": "NATS_PASSWORD"}}},
                   env[2]]
    assert env == before  # the shared list is not modified in place


@pytest.mark.parametrize("secrets", [None, {}, {"shared": "tapio-nats-auth", "prefix": ""}])
def test_workload_env_without_a_prefix_keeps_the_shared_secret(secrets: object) -> None:
    env = [{"name": "NATS_PASSWORD", "valueFrom": SECRET}]
    assert twe.workload_env(env, "tapio-pipeline", secrets) == env


def test_unschedulable_pods_name_the_schedulers_reason() -> None:
    def pod(name: str, phase: str, *conditions: dict[str, str]) -> dict:
        return {"metadata": {"name": name}, "status": {"phase": phase, "conditions": list(conditions)}}

    spread = ("0/6 nodes are available: 1 node(s) didn't match pod topology spread constraints,\n"
              "  5 node(s) had untolerated taint {tapio.io/lab-node: real}.")
    pods = [pod("tapio-nats-2", "Pending", {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                            "message": spread}),
            pod("tapio-nats-0", "Running", {"type": "PodScheduled", "status": "True"}),
            pod("tapio-nats-1", "Pending", {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}),
            pod("tapio-nats-3", "Pending", {"type": "PodScheduled", "status": "True"})]  # placed, starting
    assert twe.unschedulable_pods(pods) == [
        "tapio-nats-1: Unschedulable",
        "tapio-nats-2: 0/6 nodes are available: 1 node(s) didn't match pod topology spread constraints, "
        "5 node(s) had untolerated taint {tapio.io/lab-node: real}."]
    assert twe.unschedulable_pods([]) == []
