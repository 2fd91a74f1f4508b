"""The engine's restore rules end to end, on the in-memory API server of
test_tapio_engine_restore (with the switch's strategic-merge patch applied): a real
pipeline_phase or collectors_batch switches the workload and records what it wrote, someone
changes it, and a real rollback restores it.

- entry by entry: owned entries still as written go back, owned entries changed since and every
  entry the toolkit never wrote keep their live value and are listed in ``kept_changes``;
- per incarnation: a record of a workload deleted and created again is refused before any write;
- integrity: a record whose digest (Secret <state configmap>-digests) is missing or differs is
  refused; records written before digests existed (no Secret) are applied with a warning;
- a record of an earlier version (no written record) restores as before;
- a switch rollback retires the records, so a later restore applies none.
The pure rules are in test_tapio_owned.py."""
from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any, Optional

import pytest

from fake_clock import Clock as FakeClock
from module_utils_loader import load_module_utils
from report_markdown import render_report_markdown
from test_tapio_engine_restore import FakeApi, collector, make_engine, pipeline, state_configmap

tw = load_module_utils("tapio_workload")
engine = load_module_utils("tapio_engine")
digests = load_module_utils("tapio_record_digests")

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE = "tapio-migration-state"
DIGESTS = "tapio-migration-state-digests"
NATS_ENV = [{"name": "TAPIO_OUTPUT_MODE", "value": "nats"}, {"name": "NATS_URL", "value": "nats://tapio-nats:4222"},
            {"name": "LOG_LEVEL", "value": "info"}]
DIRECT_ENV = [{"name": "TAPIO_SERVER_ADDRESS", "value": "tapio-pipeline:9090"},
              {"name": "TAPIO_API_KEY", "value": "key-1"}, {"name": "LOG_LEVEL", "value": "debug"}]
PIPELINE_KEY = "deployment.tapio-pipeline.json"
COLLECTOR_KEY = "daemonset.tapio-k8s-collector.json"


class SwitchingApi(FakeApi):
    """FakeApi that also applies a workload's strategic-merge patch as the API server does for
    the switch's: env items by name ($patch delete, a null field dropped), pod template
    annotations merged, other container fields merged."""

    def patch(self, kind: str, namespace: Optional[str], name: str, body: dict[str, Any]) -> dict[str, Any]:
        if kind not in ("DaemonSet", "Deployment"):
            if kind == "Secret" and (kind, name) in self.objects:
                self.objects[(kind, name)].setdefault("data", {})
            return FakeApi.patch(self, kind, namespace, name, body)
        self.patches.append((name, copy.deepcopy(body)))
        obj = self.objects[(kind, name)]
        template = body["spec"]["template"]
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        if annotations:
            obj["spec"]["template"].setdefault("metadata", {}).setdefault("annotations", {}).update(annotations)
        for change in template["spec"]["containers"]:
            container = tw.find_container(obj, change["name"])
            for item in change.get("env") or []:
                env = [e for e in container.get("env") or [] if e["name"] != item["name"]]
                at = next((i for i, e in enumerate(container.get("env") or []) if e["name"] == item["name"]), len(env))
                if item.get("$patch") != "delete":
                    env.insert(at, {k: v for k, v in item.items() if v is not None})
                container["env"] = env
            container.update(tw.deep_merge(container, {k: v for k, v in change.items() if k not in ("name", "env")}))
        return self.store(obj)

    def replace(self, kind: str, namespace: Optional[str], name: str, body: dict[str, Any]) -> dict[str, Any]:
        """FakeApi's replace, then its controller's answer at once: the new generation observed."""
        FakeApi.replace(self, kind, namespace, name, body)
        obj = self.objects[(kind, name)]
        obj["status"] = {**(obj.get("status") or {}), "observedGeneration": obj["metadata"]["generation"]}
        return self.store(obj)


def with_uid(obj: dict[str, Any], uid: str) -> dict[str, Any]:
    obj["metadata"]["uid"] = uid
    return obj


def migrated_pipeline(tmp_path: Path, **options: Any) -> tuple[SwitchingApi, Any]:
    """The pipeline recorded and switched by a real pipeline phase (uid p-1)."""
    api = SwitchingApi(with_uid(pipeline(copy.deepcopy(DIRECT_ENV), rolled_out=True), "p-1"))
    run = make_engine(api, tmp_path, [], FakeClock(), env=NATS_ENV, nats_checks=False, **options)
    run.pipeline_phase()
    return api, run


def rollback(api: FakeApi, tmp_path: Path, collectors: tuple[str, ...] = (), mode: str = "restore",
             **options: Any) -> Any:
    return make_engine(api, tmp_path, list(collectors), FakeClock(), rollback_mode=mode, **options)


def owned_env(api: FakeApi, kind: str = "Deployment", name: str = "tapio-pipeline") -> dict[str, Any]:
    obj = api.objects[(kind, name)]
    container = obj["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def set_env(api: FakeApi, name: str, value: Optional[str], kind: str = "Deployment",
            workload: str = "tapio-pipeline") -> None:
    """Someone else's change of the owned container's env (None: the entry removed)."""
    obj = api.objects[(kind, workload)]
    container = obj["spec"]["template"]["spec"]["containers"][0]
    env = [e for e in container["env"] if e["name"] != name]
    container["env"] = env + ([{"name": name, "value": value}] if value is not None else [])
    api.store(obj)


def secret_data(api: FakeApi) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in api.objects[("Secret", DIGESTS)]["data"].items()}


# -- what the switch records ---------------------------------------------------------------------------
def test_the_switch_records_what_it_writes_and_each_key_has_its_digest(tmp_path: Path) -> None:
    api, run = migrated_pipeline(tmp_path)
    data = api.objects[("ConfigMap", STATE)]["data"]
    written = json.loads(data["written." + PIPELINE_KEY])
    assert written["uid"] == "p-1" and written["container"] == "pipeline"
    assert sorted(written["env"]) == ["LOG_LEVEL", "NATS_URL", "TAPIO_OUTPUT_MODE"]
    assert written["env"]["LOG_LEVEL"] == {"name": "LOG_LEVEL", "value": "info"}
    assert any("recorded what the switch of Deployment/tapio-pipeline writes: env LOG_LEVEL, NATS_URL, "
               "TAPIO_OUTPUT_MODE" in step for step in run.steps), run.steps
    # The Secret beside the ConfigMap holds the SHA-256 of every key, as the ConfigMap holds it now.
    assert secret_data(api) == {key: digests.digest_of(text) for key, text in data.items()}
    assert (tmp_path / "tapio" / "deployment-tapio-pipeline.written.json").read_text().rstrip() == \
        data["written." + PIPELINE_KEY]
    again = make_engine(api, tmp_path, [], FakeClock(), env=NATS_ENV, nats_checks=False)
    again.pipeline_phase()
    assert again.changed is False, "a re-run writes nothing"


def test_check_mode_writes_no_record_and_no_digest(tmp_path: Path) -> None:
    api = SwitchingApi(pipeline(DIRECT_ENV, rolled_out=True))
    run = make_engine(api, tmp_path, [], FakeClock(), check=True, env=NATS_ENV, nats_checks=False)
    run.pipeline_phase()
    assert api.creates == [] and api.patches == []
    assert ("Secret", DIGESTS) not in api.objects and ("ConfigMap", STATE) not in api.objects


# -- entry by entry ------------------------------------------------------------------------------------
def test_a_restore_reverts_the_owned_entries_and_keeps_and_lists_what_others_changed(tmp_path: Path) -> None:
    """After the migration someone rotates the API key (not the toolkit's), sets LOG_LEVEL
    (the toolkit's: it wrote info) and annotates the pod template: all three stay and are
    listed in the result; TAPIO_OUTPUT_MODE and NATS_URL, still as the toolkit wrote them, go."""
    api, _ = migrated_pipeline(tmp_path)
    set_env(api, "TAPIO_API_KEY", "key-2")
    set_env(api, "LOG_LEVEL", "trace")
    obj = api.objects[("Deployment", "tapio-pipeline")]
    obj["spec"]["template"]["metadata"] = {"annotations": {"kubectl.kubernetes.io/restartedAt": "t1"}}
    api.store(obj)
    run = rollback(api, tmp_path)
    result = run.rollback()
    assert owned_env(api) == {"TAPIO_SERVER_ADDRESS": "tapio-pipeline:9090", "TAPIO_API_KEY": "key-2",
                              "LOG_LEVEL": "trace"}
    assert api.objects[("Deployment", "tapio-pipeline")]["spec"]["template"]["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/restartedAt": "t1"}
    assert result["kept_changes"] == [
        "Deployment tapio/tapio-pipeline: env TAPIO_API_KEY (changed since the migration, kept)",
        "Deployment tapio/tapio-pipeline: env LOG_LEVEL (changed since the migration, kept)",
        "Deployment tapio/tapio-pipeline: pod template annotation kubectl.kubernetes.io/restartedAt "
        "(added since the migration, kept)"]
    assert any("restored Deployment/tapio-pipeline (only the entries the toolkit wrote that still hold what it "
               "wrote) to its record; kept as changed since the record: env TAPIO_API_KEY, env LOG_LEVEL, pod "
               "template annotation kubectl.kubernetes.io/restartedAt" in step for step in run.steps), run.steps
    # Retired with its digests beside it: a later restore applies nothing.
    data = api.objects[("ConfigMap", STATE)]["data"]
    assert sorted(data) == sorted("retired." + k for k in (PIPELINE_KEY, "provenance." + PIPELINE_KEY,
                                                          "written." + PIPELINE_KEY))
    assert sorted(secret_data(api)) == sorted(data)
    again = rollback(api, tmp_path).rollback()
    assert again == {"kept_changes": []}


def test_a_restore_with_nothing_changed_returns_the_record_exactly_and_lists_nothing(tmp_path: Path) -> None:
    api, _ = migrated_pipeline(tmp_path)
    record = json.loads(api.objects[("ConfigMap", STATE)]["data"][PIPELINE_KEY])
    result = rollback(api, tmp_path).rollback()
    assert result == {"kept_changes": []}
    assert api.objects[("Deployment", "tapio-pipeline")]["spec"] == record["spec"]


def test_a_collectors_annotations_and_overrides_go_back_unless_changed(tmp_path: Path) -> None:
    """A collector switched with a pod annotation and a container override: someone changes
    the annotation's value and adds one of their own; the restore keeps both and lists them,
    and returns the override, which nobody changed."""
    options = {"env": NATS_ENV[:2], "nats_checks": False, "batch": ["tapio-k8s-collector"],
               "pod_annotations": {"tapio-k8s-collector": {"tapio.io/canary": "yes"}},
               "container_overrides": {"tapio-k8s-collector": {"resources": {"limits": {"memory": "1Gi"}}}}}
    api = SwitchingApi(with_uid(collector(copy.deepcopy(DIRECT_ENV)), "c-1"), with_uid(
        pipeline(DIRECT_ENV, rolled_out=True), "p-1"))
    run = make_engine(api, tmp_path, ["tapio-k8s-collector"], FakeClock(), **options)
    run.records.record(run.collectors, {"tapio-k8s-collector": api.get("DaemonSet", "tapio", "tapio-k8s-collector")})
    run.collectors_batch()
    obj = api.objects[("DaemonSet", "tapio-k8s-collector")]
    assert obj["spec"]["template"]["spec"]["containers"][0]["resources"] == {"limits": {"memory": "1Gi"}}
    obj["spec"]["template"]["metadata"]["annotations"] = {"tapio.io/canary": "no", "team": "obs",
                                                          "tapio.io/nats-user": "tapio-k8s-collector-rotated"}
    api.store(obj)
    result = rollback(api, tmp_path, ("tapio-k8s-collector",), **options).rollback()
    restored = api.objects[("DaemonSet", "tapio-k8s-collector")]["spec"]["template"]
    assert restored["metadata"]["annotations"] == {"tapio.io/canary": "no", "team": "obs"}
    assert "resources" not in restored["spec"]["containers"][0]
    assert owned_env(api, "DaemonSet", "tapio-k8s-collector") == {e["name"]: e["value"] for e in DIRECT_ENV}
    assert result["kept_changes"] == [
        "DaemonSet tapio/tapio-k8s-collector: pod template annotation tapio.io/canary (changed since the migration, "
        "kept)",
        "DaemonSet tapio/tapio-k8s-collector: pod template annotation team (added since the migration, kept)"]


def test_the_report_says_what_a_restore_would_keep(tmp_path: Path) -> None:
    api, _ = migrated_pipeline(tmp_path)
    set_env(api, "TAPIO_API_KEY", "key-2")
    report = make_engine(api, tmp_path, [], FakeClock(), nats_checks=False).report()["report"]
    assert report["workloads"][0]["kept_on_restore"] == [
        "Deployment tapio/tapio-pipeline: env TAPIO_API_KEY (changed since the migration, kept)"]


def test_a_record_of_an_earlier_version_restores_as_before_with_a_warning(tmp_path: Path) -> None:
    """No written record and no digests Secret (the toolkit before them): the whole owned env
    goes back to the record, a LOG_LEVEL someone changed included, as it always did; a step
    says the records are applied without an integrity check."""
    record = tw.record_of(pipeline(DIRECT_ENV, rolled_out=True))
    api = SwitchingApi(pipeline(DIRECT_ENV[:2] + NATS_ENV[:2] + [{"name": "LOG_LEVEL", "value": "trace"}],
                                rolled_out=True), state_configmap((PIPELINE_KEY, record)))
    run = rollback(api, tmp_path)
    result = run.rollback()
    assert api.objects[("Deployment", "tapio-pipeline")]["spec"] == record["spec"]
    assert result == {"kept_changes": []}
    assert any(f"warning: Secret tapio/{DIGESTS} does not exist, so the records of Deployment/tapio-pipeline were "
               "written by an earlier version of the toolkit" in step for step in run.steps), run.steps


def test_records_of_an_earlier_version_get_their_digests_when_the_secret_is_first_written(tmp_path: Path) -> None:
    """A collector recorded by an earlier version (no Secret), then the pipeline recorded by this
    one: the Secret it creates holds the collector's digests too, so the collector's record stays
    applicable; one step names them."""
    old_record = tw.record_of(collector(DIRECT_ENV))
    api = SwitchingApi(collector(DIRECT_ENV + NATS_ENV), pipeline(DIRECT_ENV, rolled_out=True),
                       state_configmap((COLLECTOR_KEY, old_record)))
    run = make_engine(api, tmp_path, ["tapio-k8s-collector"], FakeClock(), env=NATS_ENV, nats_checks=False)
    run.pipeline_phase()
    assert secret_data(api)[COLLECTOR_KEY] == digests.digest_of(tw.record_text(old_record))
    assert any(f"1 key(s) written before digests were kept taken as they are now ({COLLECTOR_KEY})" in step
               for step in run.steps), run.steps
    rollback(api, tmp_path, ("tapio-k8s-collector",)).rollback()
    assert api.objects[("DaemonSet", "tapio-k8s-collector")]["spec"] == old_record["spec"]


# -- per incarnation -------------------------------------------------------------------------------------
def test_a_record_of_an_earlier_incarnation_is_refused_before_any_write(tmp_path: Path) -> None:
    """The pipeline was deleted and created again after its migration (a new uid): the rollback
    refuses it naming it, before the collector (whose record is fine) is touched."""
    api, _ = migrated_pipeline(tmp_path)
    run = make_engine(api, tmp_path, ["tapio-k8s-collector"], FakeClock(), env=NATS_ENV, nats_checks=False,
                      batch=["tapio-k8s-collector"])
    api.store(with_uid(collector(copy.deepcopy(DIRECT_ENV)), "c-1"))
    run.records.record(run.collectors, {"tapio-k8s-collector": api.get("DaemonSet", "tapio", "tapio-k8s-collector")})
    run.collectors_batch()
    api.store(with_uid(api.objects[("Deployment", "tapio-pipeline")], "p-2"))
    versions = {key: obj["metadata"]["resourceVersion"] for key, obj in api.objects.items()}
    patches = len(api.patches)
    with pytest.raises(engine.EngineError) as refused:
        rollback(api, tmp_path, ("tapio-k8s-collector",)).rollback()
    message = str(refused.value)
    assert message.startswith(f"Deployment tapio/tapio-pipeline was not restored: its record (ConfigMap tapio/{STATE} "
                              f"key {PIPELINE_KEY}) belongs to an earlier incarnation of the workload (recorded from "
                              "uid p-1; the live object is uid p-2: it was deleted and created again since)")
    assert "tapio_rollback_mode=switch" in message
    assert api.replaces == [] and len(api.patches) == patches
    assert {key: obj["metadata"]["resourceVersion"] for key, obj in api.objects.items()} == versions
    assert owned_env(api, "DaemonSet", "tapio-k8s-collector")["TAPIO_OUTPUT_MODE"] == "nats"


def test_a_record_of_an_earlier_incarnation_is_retired_and_the_new_one_recorded_before_a_migration(
        tmp_path: Path) -> None:
    """The pipeline was migrated, then deleted and created again in direct mode (a new uid, its
    own env): the next migration retires the old record instead of keeping it as the original,
    and records the workload as it is now."""
    api, _ = migrated_pipeline(tmp_path)
    old_record = api.objects[("ConfigMap", STATE)]["data"][PIPELINE_KEY]
    recreated = with_uid(pipeline(copy.deepcopy(DIRECT_ENV), rolled_out=True), "p-2")
    recreated["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "CREATED_AGAIN", "value": "yes"})
    api.store(recreated)
    run = make_engine(api, tmp_path, [], FakeClock(), env=NATS_ENV, nats_checks=False)
    run.pipeline_phase()
    data = api.objects[("ConfigMap", STATE)]["data"]
    assert data["retired." + PIPELINE_KEY] == old_record
    fresh = json.loads(data[PIPELINE_KEY])
    assert {"name": "CREATED_AGAIN", "value": "yes"} in fresh["spec"]["template"]["spec"]["containers"][0]["env"]
    assert json.loads(data["written." + PIPELINE_KEY])["uid"] == "p-2"
    assert any("retired the records of Deployment/tapio-pipeline (they belong to earlier incarnations" in step
               for step in run.steps), run.steps
    assert secret_data(api)[PIPELINE_KEY] == digests.digest_of(data[PIPELINE_KEY])
    # The restore then applies the new incarnation's record.
    rollback(api, tmp_path).rollback()
    assert owned_env(api)["CREATED_AGAIN"] == "yes" and "TAPIO_OUTPUT_MODE" not in owned_env(api)


# -- integrity -------------------------------------------------------------------------------------------
def test_a_record_changed_in_the_configmap_is_refused(tmp_path: Path) -> None:
    """Someone with write access to ConfigMaps edits the record (a LOG_LEVEL of their choosing):
    its digest no longer matches, and the restore refuses it naming the workload."""
    api, _ = migrated_pipeline(tmp_path)
    data = api.objects[("ConfigMap", STATE)]["data"]
    data[PIPELINE_KEY] = data[PIPELINE_KEY].replace('"debug"', '"everything"')
    with pytest.raises(engine.EngineError) as refused:
        rollback(api, tmp_path).rollback()
    message = str(refused.value)
    assert message.startswith(f"Deployment tapio/tapio-pipeline was not restored: its record was changed outside the "
                              f"toolkit (key {PIPELINE_KEY} no longer matches its SHA-256 in the digests Secret; "
                              f"ConfigMap tapio/{STATE}, Secret tapio/{DIGESTS})")
    assert api.replaces == [] and owned_env(api)["TAPIO_OUTPUT_MODE"] == "nats"


@pytest.mark.parametrize("tamper", ["digest removed", "written record removed", "written record widened"])
def test_a_record_whose_digest_is_missing_or_whose_written_record_was_touched_is_refused(
        tmp_path: Path, tamper: str) -> None:
    """A key without its digest; a written record deleted (which would make the restore revert
    the whole env, as for a record of an earlier version); one made to claim the API key."""
    api, _ = migrated_pipeline(tmp_path)
    data, secret = api.objects[("ConfigMap", STATE)]["data"], api.objects[("Secret", DIGESTS)]["data"]
    (tmp_path / "tapio" / "deployment-tapio-pipeline.written.json").unlink()
    if tamper == "digest removed":
        del secret[PIPELINE_KEY]
    elif tamper == "written record removed":
        del data["written." + PIPELINE_KEY]
    else:
        written = json.loads(data["written." + PIPELINE_KEY])
        written["env"]["TAPIO_API_KEY"] = {"name": "TAPIO_API_KEY", "value": "key-1"}
        data["written." + PIPELINE_KEY] = tw.record_text(written)
    with pytest.raises(engine.EngineError, match=r"^Deployment tapio/tapio-pipeline was not restored: its record was "
                                                 r"changed outside the toolkit \(key "):
        rollback(api, tmp_path).rollback()
    assert api.replaces == []


def test_new_records_without_a_digests_secret_are_applied_with_a_warning(tmp_path: Path) -> None:
    api, _ = migrated_pipeline(tmp_path)
    del api.objects[("Secret", DIGESTS)]
    set_env(api, "TAPIO_API_KEY", "key-2")
    run = rollback(api, tmp_path)
    result = run.rollback()
    assert owned_env(api) == {"TAPIO_SERVER_ADDRESS": "tapio-pipeline:9090", "TAPIO_API_KEY": "key-2",
                              "LOG_LEVEL": "debug"}
    assert result["kept_changes"] == [
        "Deployment tapio/tapio-pipeline: env TAPIO_API_KEY (changed since the migration, kept)"]
    assert any("applied without an integrity check" in step for step in run.steps), run.steps


# -- after a switch rollback ----------------------------------------------------------------------------
def test_a_switch_rollback_retires_the_records_so_a_later_restore_applies_none(tmp_path: Path) -> None:
    """Switch back, then someone changes LOG_LEVEL in direct mode: a later restore must not put
    the record of the finished migration back over it."""
    api, _ = migrated_pipeline(tmp_path)
    switched = rollback(api, tmp_path, mode="switch")
    assert switched.rollback() == {"kept_changes": []}
    assert owned_env(api)["TAPIO_OUTPUT_MODE"] == "direct"
    data = api.objects[("ConfigMap", STATE)]["data"]
    assert all(key.startswith("retired.") for key in data), sorted(data)
    assert any("retired the records of Deployment/tapio-pipeline" in step for step in switched.steps)
    set_env(api, "LOG_LEVEL", "warn")
    versions = {key: obj["metadata"]["resourceVersion"] for key, obj in api.objects.items()}
    restore = rollback(api, tmp_path)
    assert restore.rollback() == {"kept_changes": []}
    assert {key: obj["metadata"]["resourceVersion"] for key, obj in api.objects.items()} == versions
    assert owned_env(api)["LOG_LEVEL"] == "warn"
    assert any("Deployment/tapio-pipeline has no record" in step for step in restore.steps), restore.steps


def test_the_report_markdown_lists_what_a_restore_would_keep(tmp_path: Path) -> None:
    api, _ = migrated_pipeline(tmp_path)
    set_env(api, "TAPIO_API_KEY", "key-2")
    report = make_engine(api, tmp_path, [], FakeClock(), nats_checks=False).report()["report"]
    markdown = render_report_markdown(report)
    assert "so a restore (`rollback.yml -e tapio_rollback_mode=restore`) keeps them:\n\n" \
           "- Deployment tapio/tapio-pipeline: env TAPIO_API_KEY (changed since the migration, kept)\n" in markdown
    assert "key-2" not in markdown


def test_a_local_copy_without_a_digest_is_the_runners_own_and_is_applied(tmp_path: Path) -> None:
    """The digests guard the ConfigMap's copy. A record of an earlier version that only the
    runner's local files still hold (its ConfigMap key lost) has no digest: it is applied."""
    api, _ = migrated_pipeline(tmp_path)
    old_record = tw.record_of(collector(DIRECT_ENV))
    (tmp_path / "tapio" / "daemonset-tapio-k8s-collector.json").write_text(tw.record_text(old_record) + "\n")
    api.store(collector(DIRECT_ENV + NATS_ENV))
    rollback(api, tmp_path, ("tapio-k8s-collector",)).rollback()
    assert api.objects[("DaemonSet", "tapio-k8s-collector")]["spec"] == old_record["spec"]
