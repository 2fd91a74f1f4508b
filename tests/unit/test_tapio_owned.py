"""A restore that reverts only what the toolkit wrote (module_utils/tapio_owned.py), entry by
entry, as pure functions: the written record a switch leaves beside the record, and what a
restore does with each env entry, pod-template annotation and overridden field. The engine's
side (records, digests, incarnations, the rollback's result) is in test_tapio_restore_rules.py."""
from __future__ import annotations

import copy
from typing import Any

from module_utils_loader import load_module_utils

tw = load_module_utils("tapio_workload")
owned = load_module_utils("tapio_owned")
digests = load_module_utils("tapio_record_digests")

CONTAINER = "k8s-collector"
SECRET_REF = {"secretKeyRef": {"name": "tapio-nats-auth", "key": "NATS_PASSWORD"}}
SWITCH_ENV = [{"name": "TAPIO_OUTPUT_MODE", "value": "nats"}, {"name": "NATS_URL", "value": "nats://tapio-nats:4222"},
              {"name": "LOG_LEVEL", "value": "info"}, {"name": "NATS_PASSWORD", "valueFrom": SECRET_REF}]
ANNOTATIONS = {"tapio.io/switched": "nats"}
OVERRIDE = {"resources": {"limits": {"memory": "256Mi"}}}


def collector() -> dict[str, Any]:
    """A collector as found before the migration: a user's API key, a LOG_LEVEL of its own."""
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "tapio-k8s-collector", "namespace": "tapio", "uid": "u-1", "resourceVersion": "7",
                         "annotations": {"deprecated.daemonset.template.generation": "1"}},
            "spec": {"template": {"metadata": {"annotations": {"prometheus.io/scrape": "true"}},
                                  "spec": {"containers": [
                                      {"name": CONTAINER, "image": "tapio/k8s:1",
                                       "env": [{"name": "TAPIO_SERVER_ADDRESS", "value": "tapio-pipeline:9090"},
                                               {"name": "TAPIO_API_KEY", "value": "key-1"},
                                               {"name": "LOG_LEVEL", "value": "debug"}],
                                       "resources": {"limits": {"memory": "128Mi"}}},
                                      {"name": "log-shipper", "image": "shipper:1"}]}}}}


def switched(original: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """*original* as the toolkit's switch leaves it, and the written record of that switch."""
    live = copy.deepcopy(original)
    patch = tw.switch_patch(live, CONTAINER, SWITCH_ENV, ANNOTATIONS, OVERRIDE)
    target = tw.find_container(live, CONTAINER)
    target["env"] = tw.merge_env(target["env"], SWITCH_ENV)
    target.update(tw.deep_merge(target, OVERRIDE))
    live["spec"]["template"]["metadata"]["annotations"].update(patch["spec"]["template"]["metadata"]["annotations"])
    live["metadata"]["resourceVersion"] = "9"
    written = owned.with_writes(owned.written_of(original, CONTAINER),
                                owned.switch_writes(original, CONTAINER, SWITCH_ENV, ANNOTATIONS, OVERRIDE))
    return live, written


def env_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in tw.find_container(obj, CONTAINER).get("env", [])}


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return obj["spec"]["template"].get("metadata", {}).get("annotations", {})


# -- the written record ----------------------------------------------------------------------------
def test_the_written_record_names_each_entry_the_switch_writes_with_its_value() -> None:
    _, written = switched(collector())
    assert written == {
        "uid": "u-1", "container": CONTAINER, "credentials_annotation": "tapio.io/nats-user",
        "env": {"TAPIO_OUTPUT_MODE": {"name": "TAPIO_OUTPUT_MODE", "value": "nats"},
                "NATS_URL": {"name": "NATS_URL", "value": "nats://tapio-nats:4222"},
                "LOG_LEVEL": {"name": "LOG_LEVEL", "value": "info"},
                "NATS_PASSWORD": {"name": "NATS_PASSWORD", "valueFrom": SECRET_REF}},
        "pod_annotations": {"tapio.io/switched": "nats"},
        "container_overrides": {"resources": {"limits": {"memory": "256Mi"}}}}
    assert owned.is_written_record(written)
    assert not owned.is_written_record({"env": {}}) and not owned.is_written_record(["x"])


def test_a_later_switch_updates_the_values_it_writes_again_and_keeps_the_earlier_names() -> None:
    _, written = switched(collector())
    later = owned.with_writes(written, owned.switch_writes(
        collector(), CONTAINER, [{"name": "LOG_LEVEL", "value": "warn"}, {"name": "NATS_CA", "value": None}]))
    assert later["env"]["LOG_LEVEL"] == {"name": "LOG_LEVEL", "value": "warn"}
    assert later["env"]["NATS_CA"] is None, "an entry the switch removes is written as None"
    assert set(later["env"]) == set(written["env"]) | {"NATS_CA"}
    assert later["pod_annotations"] == written["pod_annotations"] and later["uid"] == "u-1"


# -- the restore, entry by entry ---------------------------------------------------------------------
def test_with_nothing_changed_since_the_switch_the_record_comes_back_byte_for_byte() -> None:
    original = collector()
    record = tw.record_of(original)
    live, written = switched(original)
    needed, definition, kept = owned.restore_plan(live, record, written, CONTAINER)
    assert needed and kept == []
    assert definition["spec"] == record["spec"]
    assert tw.record_text(tw.record_of(definition)) == tw.record_text(record)
    assert definition["metadata"]["resourceVersion"] == "9"
    assert definition["metadata"]["annotations"] == {"deprecated.daemonset.template.generation": "1"}


def test_an_owned_entry_someone_changed_since_is_kept_and_listed_the_others_go_back() -> None:
    """LOG_LEVEL is the toolkit's (it wrote info); someone set trace since: trace stays, and the
    NATS entries the toolkit added go, the password reference included."""
    original = collector()
    live, written = switched(original)
    tw.find_container(live, CONTAINER)["env"][2]["value"] = "trace"
    needed, definition, kept = owned.restore_plan(live, tw.record_of(original), written, CONTAINER)
    assert needed
    assert kept == [("env LOG_LEVEL", "changed since the migration, kept")]
    assert env_of(definition) == {"TAPIO_SERVER_ADDRESS": "tapio-pipeline:9090", "TAPIO_API_KEY": "key-1",
                                  "LOG_LEVEL": "trace"}


def test_an_owned_entry_someone_removed_since_stays_removed_and_is_listed() -> None:
    original = collector()
    live, written = switched(original)
    container = tw.find_container(live, CONTAINER)
    container["env"] = [e for e in container["env"] if e["name"] != "LOG_LEVEL"]
    _, definition, kept = owned.restore_plan(live, tw.record_of(original), written, CONTAINER)
    assert kept == [("env LOG_LEVEL", "removed since the migration, kept removed")]
    assert "LOG_LEVEL" not in env_of(definition) and "NATS_URL" not in env_of(definition)


def test_entries_the_toolkit_never_wrote_keep_their_live_value_and_differences_are_listed() -> None:
    """A rotated API key, an entry added and one removed by someone else while migrated: all
    three stay as they are live, each named."""
    original = collector()
    original_env = tw.find_container(original, CONTAINER)["env"]
    original_env.append({"name": "OLD_FLAG", "value": "1"})
    live, written = switched(original)
    container = tw.find_container(live, CONTAINER)
    container["env"] = [e for e in container["env"] if e["name"] != "OLD_FLAG"]
    container["env"][1]["value"] = "key-2"
    container["env"].append({"name": "TRACE_SAMPLING", "value": "0.1"})
    _, definition, kept = owned.restore_plan(live, tw.record_of(original), written, CONTAINER)
    assert kept == [("env TAPIO_API_KEY", "changed since the migration, kept"),
                    ("env TRACE_SAMPLING", "added since the migration, kept"),
                    ("env OLD_FLAG", "removed since the migration, kept removed")]
    assert env_of(definition) == {"TAPIO_SERVER_ADDRESS": "tapio-pipeline:9090", "TAPIO_API_KEY": "key-2",
                                  "LOG_LEVEL": "debug", "TRACE_SAMPLING": "0.1"}


def test_an_entry_the_switch_removed_comes_back_at_its_place() -> None:
    original = collector()
    record = tw.record_of(original)
    live = copy.deepcopy(original)
    removal = [{"name": "TAPIO_API_KEY", "value": None}]
    tw.find_container(live, CONTAINER)["env"] = tw.merge_env(tw.find_container(live, CONTAINER)["env"], removal)
    written = owned.with_writes(owned.written_of(original, CONTAINER),
                                owned.switch_writes(original, CONTAINER, removal))
    needed, definition, kept = owned.restore_plan(live, record, written, CONTAINER)
    assert needed and kept == []
    assert tw.find_container(definition, CONTAINER)["env"] == tw.find_container(record, CONTAINER)["env"]


def test_annotations_owned_go_back_unless_changed_and_others_keep_their_live_value() -> None:
    """The switch's annotation changed by someone is kept; a new annotation (kubectl rollout
    restart) and a changed one of the record are kept; each is listed. The credentials
    annotation a password change set is the toolkit's whatever its value, so it goes."""
    original = collector()
    live, written = switched(original)
    annotations = annotations_of(live)
    annotations["tapio.io/switched"] = "by-hand"
    annotations["kubectl.kubernetes.io/restartedAt"] = "2026-12-02T10:00:00Z"
    annotations["prometheus.io/scrape"] = "false"
    annotations["tapio.io/nats-user"] = "tapio-k8s-collector-rotated"
    _, definition, kept = owned.restore_plan(live, tw.record_of(original), written, CONTAINER)
    assert kept == [("pod template annotation kubectl.kubernetes.io/restartedAt", "added since the migration, kept"),
                    ("pod template annotation prometheus.io/scrape", "changed since the migration, kept"),
                    ("pod template annotation tapio.io/switched", "changed since the migration, kept")]
    assert annotations_of(definition) == {"kubectl.kubernetes.io/restartedAt": "2026-12-02T10:00:00Z",
                                          "prometheus.io/scrape": "false", "tapio.io/switched": "by-hand"}


def test_an_owned_annotation_still_as_written_goes_back() -> None:
    original = collector()
    live, written = switched(original)
    annotations_of(live)["tapio.io/nats-user"] = "tapio-k8s-collector"
    _, definition, kept = owned.restore_plan(live, tw.record_of(original), written, CONTAINER)
    assert kept == [] and annotations_of(definition) == {"prometheus.io/scrape": "true"}


def test_an_overridden_field_goes_back_unless_someone_changed_it() -> None:
    original = collector()
    live, written = switched(original)
    _, definition, kept = owned.restore_plan(live, tw.record_of(original), written, CONTAINER)
    assert tw.find_container(definition, CONTAINER)["resources"] == {"limits": {"memory": "128Mi"}} and kept == []
    tw.find_container(live, CONTAINER)["resources"] = {"limits": {"memory": "1Gi"}}
    _, definition, kept = owned.restore_plan(live, tw.record_of(original), written, CONTAINER)
    assert kept == [(f"container {CONTAINER} field resources", "changed since the migration, kept")]
    assert tw.find_container(definition, CONTAINER)["resources"] == {"limits": {"memory": "1Gi"}}


def test_what_the_toolkit_never_writes_is_kept_and_listed_by_path() -> None:
    original = collector()
    live, written = switched(original)
    tw.find_container(live, CONTAINER)["image"] = "tapio/k8s:2"
    _, definition, kept = owned.restore_plan(live, tw.record_of(original), written, CONTAINER)
    assert kept == [(f"spec.template.spec.containers[{CONTAINER}].image", "changed since the migration, kept")]
    assert tw.find_container(definition, CONTAINER)["image"] == "tapio/k8s:2"
    assert "NATS_URL" not in env_of(definition)


def test_a_workload_already_back_needs_no_restore() -> None:
    original = collector()
    needed, _, kept = owned.restore_plan(original, tw.record_of(original), owned.written_of(original, CONTAINER),
                                         CONTAINER)
    assert not needed and kept == []


def test_a_record_without_a_written_record_restores_as_before() -> None:
    """A record of an earlier version: the owned env and the pod template annotations go back
    whole, a LOG_LEVEL changed by someone included, exactly as tapio_workload.restore_of."""
    original = collector()
    record = tw.record_of(original)
    live, _ = switched(original)
    tw.find_container(live, CONTAINER)["env"][1]["value"] = "key-2"
    annotations_of(live)["kubectl.kubernetes.io/restartedAt"] = "now"
    needed, definition, kept = owned.restore_plan(live, record, None, CONTAINER, ("resources",))
    assert (needed, definition, [what for what, _ in kept]) == tw.restore_of(live, record, CONTAINER, ("resources",))
    assert definition["spec"] == record["spec"] and kept == []


# -- the incarnation and the digests -------------------------------------------------------------------
def test_a_record_of_another_incarnation_is_named_with_what_to_do() -> None:
    live = collector()
    assert owned.incarnation_problem("DaemonSet tapio/x", "u-1", live, "ConfigMap tapio/s key k") == ""
    assert owned.incarnation_problem("DaemonSet tapio/x", None, live, "ConfigMap tapio/s key k") == ""
    live["metadata"]["uid"] = "u-2"
    problem = owned.incarnation_problem("DaemonSet tapio/x", "u-1", live, "ConfigMap tapio/s key k")
    assert problem.startswith("DaemonSet tapio/x was not restored: its record (ConfigMap tapio/s key k) belongs to an "
                              "earlier incarnation of the workload (recorded from uid u-1; the live object is uid u-2")
    assert "tapio_rollback_mode=switch" in problem


def test_the_uid_of_a_record_comes_from_its_written_record_then_its_provenance() -> None:
    assert owned.recorded_uid({"uid": "a"}, {"uid": "b"}) == "a"
    assert owned.recorded_uid(None, {"uid": "b"}) == "b"
    assert owned.recorded_uid(None, None) is None


def test_digest_problems_name_a_missing_a_changed_and_a_removed_key() -> None:
    kept = {"a": digests.digest_of("A"), "b": digests.digest_of("B"), "c": digests.digest_of("C")}
    assert digests.digest_problems({"a": "A", "b": "B", "c": "C"}, kept) == []
    assert digests.digest_problems({"a": "A", "b": "B2", "c": "", "d": "D"}, kept) == [
        "key b no longer matches its SHA-256 in the digests Secret",
        "key c is gone although the digests Secret holds its SHA-256",
        "key d has no SHA-256 in the digests Secret"]
