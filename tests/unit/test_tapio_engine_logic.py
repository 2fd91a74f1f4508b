"""The engine's decisions: records, batches, rollouts, percentages, permissions, the report
diff and the ledger verdict (module_utils/tapio_workload.py, tapio_gates.py and
tapio_lab_ledger.py). Pure functions: no server is needed, or wanted, here. Waits that follow
progress are tests/unit/test_tapio_wait.py's."""
from __future__ import annotations

import copy
import json

import pytest

from module_utils_loader import load_module_utils

for _name in ("tapio_nats_config", "tapio_nats", "tapio_kube", "tapio_nats_session", "tapio_lease",
              "tapio_stream_health"):
    load_module_utils(_name)
tw = load_module_utils("tapio_workload")
engine = load_module_utils("tapio_engine")
gates = load_module_utils("tapio_gates")
lab_ledger = load_module_utils("tapio_lab_ledger")
private = load_module_utils("tapio_private")


def daemonset(mode: str | None = None, **status: int) -> dict:
    env = [{"name": "TAPIO_SERVER_ADDRESS", "value": "tapio-pipeline:9090"}]
    if mode is not None:
        env.append({"name": "TAPIO_OUTPUT_MODE", "value": mode})
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "tapio-k8s-collector", "namespace": "tapio", "generation": 2, "resourceVersion": "9"},
        "spec": {"template": {"metadata": {"annotations": {"a": "1"}},
                              "spec": {"containers": [{"name": "k8s-collector", "image": "tapio/k8s:1", "env": env}]}}},
        "status": {"observedGeneration": 2, "desiredNumberScheduled": 3, **status},
    }


NATS_ENV = [{"name": "TAPIO_OUTPUT_MODE", "value": "nats"}, {"name": "NATS_URL", "value": "nats://tapio-nats:4222"}]


# -- records -------------------------------------------------------------------------------
def test_record_selection_prefers_the_configmap_then_the_file_then_a_direct_live_spec() -> None:
    live = daemonset()
    assert tw.select_record("k", {"k": "cm"}, "file", live, False) == ("configmap", "cm")
    assert tw.select_record("k", {}, "file", live, False) == ("artifact", "file")
    source, text = tw.select_record("k", {}, "", live, False)
    assert source == "live"
    assert json.loads(text) == tw.record_of(live)
    assert tw.select_record("k", {}, "", live, True) == ("none", "")


def test_record_text_is_the_bytes_ansible_to_nice_json_gives() -> None:
    assert tw.record_text({"b": 1, "a": [1, {"é": 2}]}) == '{\n  "a": [\n    1,\n    {\n      "é": 2\n    }\n  ],\n  "b": 1\n}'


def test_record_names_and_output_mode() -> None:
    assert tw.record_key("DaemonSet", "x") == "daemonset.x.json"
    assert tw.record_file("Deployment", "x") == "deployment-x.json"
    assert tw.output_mode_of(daemonset("nats"), "k8s-collector", "TAPIO_OUTPUT_MODE") == "nats"
    assert tw.output_mode_of(daemonset(), "k8s-collector", "TAPIO_OUTPUT_MODE") is None
    assert tw.output_mode_of(daemonset("nats"), "other", "TAPIO_OUTPUT_MODE") is None


def test_pod_template_hash_follows_the_template_only() -> None:
    first, second = daemonset(), daemonset()
    second["status"]["numberReady"] = 3
    assert tw.pod_template_hash(first) == tw.pod_template_hash(second)
    second["spec"]["template"]["spec"]["containers"][0]["image"] = "tapio/k8s:2"
    assert tw.pod_template_hash(first) != tw.pod_template_hash(second)


# -- switch patches ----------------------------------------------------------------------------
def test_switch_patch_sets_env_annotations_and_overrides_and_none_once_applied() -> None:
    live = daemonset()
    patch = tw.switch_patch(live, "k8s-collector", NATS_ENV, {"tapio.io/mode": "nats"}, {"image": "tapio/k8s:nats"})
    container = patch["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "tapio/k8s:nats"
    assert {"name": "TAPIO_OUTPUT_MODE", "value": "nats"} in container["env"]
    assert patch["spec"]["template"]["metadata"]["annotations"] == {"tapio.io/mode": "nats"}
    applied = copy.deepcopy(live)
    applied["spec"]["template"]["spec"]["containers"][0]["env"] += NATS_ENV
    applied["spec"]["template"]["spec"]["containers"][0]["image"] = "tapio/k8s:nats"
    applied["spec"]["template"]["metadata"]["annotations"]["tapio.io/mode"] = "nats"
    assert tw.switch_patch(applied, "k8s-collector", NATS_ENV, {"tapio.io/mode": "nats"},
                           {"image": "tapio/k8s:nats"}) is None
    # the override alone still differs
    applied["spec"]["template"]["spec"]["containers"][0]["image"] = "tapio/k8s:1"
    assert tw.switch_patch(applied, "k8s-collector", NATS_ENV, {"tapio.io/mode": "nats"},
                           {"image": "tapio/k8s:nats"}) is not None


def test_deep_merge_merges_dicts_and_replaces_lists() -> None:
    merged = tw.deep_merge({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2]}, "e": 2})
    assert merged == {"a": {"b": 1, "c": [2]}, "d": 1, "e": 2}


def test_env_diff_shows_the_container_env_before_and_after() -> None:
    diff = tw.env_diff(daemonset(), "k8s-collector", NATS_ENV)
    nats = f'"value": "{private.redacted_value("nats")}"'  # values shown as their hash only
    assert nats in diff["after"] and nats not in diff["before"]
    assert '"name": "TAPIO_OUTPUT_MODE"' in diff["after"] and '"nats"' not in diff["after"]
    assert diff["before_header"] == "DaemonSet tapio/tapio-k8s-collector container k8s-collector env"


# -- batches and order -----------------------------------------------------------------------
@pytest.mark.parametrize(("order", "size", "batches"), [
    (["a", "b", "c", "d"], 1, [["a"], ["b"], ["c"], ["d"]]),
    (["a", "b", "c", "d"], 2, [["a"], ["b", "c"], ["d"]]),
    (["a", "b", "c", "d"], 5, [["a"], ["b", "c", "d"]]),
    (["a"], 3, [["a"]]),
    ([], 1, []),
])
def test_the_canary_rolls_alone_then_batches(order: list, size: int, batches: list) -> None:
    assert tw.collector_batches(order, size) == batches


def test_batch_size_below_one_is_refused() -> None:
    with pytest.raises(tw.WorkloadError, match="batch size must be at least 1"):
        tw.collector_batches(["a"], 0)


def test_order_problem_names_unknown_and_repeated_collectors() -> None:
    assert tw.order_problem(["a", "b"], ["a", "b"]) is None
    problem = tw.order_problem(["a", "x", "a"], ["a", "b"])
    assert "unknown: x" in problem and "repeated: a" in problem
    assert tw.order_problem([], ["a"]) is not None


# -- rollouts --------------------------------------------------------------------------------
def test_daemonset_rollout_done_only_when_every_pod_is_updated_and_ready() -> None:
    done, _, summary = tw.rollout_state(daemonset(updatedNumberScheduled=3, numberReady=3))
    assert done, summary
    done, marker, summary = tw.rollout_state(daemonset(updatedNumberScheduled=2, numberReady=3))
    assert not done and summary.startswith("2/3 updated")
    stale = daemonset(updatedNumberScheduled=3, numberReady=3)
    stale["status"]["observedGeneration"] = 1
    done, _, summary = tw.rollout_state(stale)
    assert not done and "controller has not seen the latest spec" in summary
    assert not tw.rollout_state(daemonset(updatedNumberScheduled=3, numberReady=3, numberUnavailable=1))[0]
    none_wanted = daemonset()
    none_wanted["status"]["desiredNumberScheduled"] = 0
    assert not tw.rollout_state(none_wanted)[0]
    assert tw.rollout_state(None) == (False, ("absent",), "not found")


def test_deployment_and_statefulset_rollouts() -> None:
    deployment = {"kind": "Deployment", "metadata": {"generation": 1}, "spec": {"replicas": 2},
                  "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
                             "availableReplicas": 2}}
    assert tw.rollout_state(deployment)[0]
    deployment["status"]["replicas"] = 3  # an old pod still terminating
    assert not tw.rollout_state(deployment)[0]
    sts = {"kind": "StatefulSet", "metadata": {"generation": 1}, "spec": {"replicas": 3},
           "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3,
                      "currentRevision": "a", "updateRevision": "b"}}
    assert not tw.rollout_state(sts)[0]
    sts["status"]["currentRevision"] = "b"
    assert tw.rollout_state(sts)[0]




# -- percentages and the pipeline's strategy --------------------------------------------------
@pytest.mark.parametrize(("value", "total", "up", "expected"), [
    ("25%", 1, False, 0), ("25%", 4, False, 1), ("25%", 5, False, 1), ("25%", 5, True, 2),
    ("100%", 3, False, 3), (1, 3, False, 1), ("2", 3, True, 2), ("0%", 10, True, 0),
])
def test_scaled_value_rounds_as_the_controllers_do(value: object, total: int, up: bool, expected: int) -> None:
    assert tw.scaled_value(value, total, up) == expected


def deployment(replicas: int = 1, strategy: dict | None = None) -> dict:
    return {"metadata": {"name": "tapio-pipeline"}, "spec": {"replicas": replicas, "strategy": strategy or {}}}


def test_strategy_problems() -> None:
    assert tw.strategy_problem(deployment()) == ""  # 25% of 1 rounds down to 0 unavailable
    assert "0 replicas" in tw.strategy_problem(deployment(0))
    assert "Recreate" in tw.strategy_problem(deployment(2, {"type": "Recreate"}))
    assert "allows maxUnavailable 1 with 1 replica(s)" in tw.strategy_problem(
        deployment(1, {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}))
    assert tw.strategy_problem(deployment(2, {"rollingUpdate": {"maxUnavailable": 1}})) == ""
    assert "maxUnavailable 100%" in tw.strategy_problem(deployment(4, {"rollingUpdate": {"maxUnavailable": "100%"}}))


# -- permissions -----------------------------------------------------------------------------
def test_needed_permissions_expand_each_verb_and_name_group_scope_and_resource_name() -> None:
    needed = tw.needed_permissions([
        {"group": "apps", "resource": "daemonsets", "verbs": ["get", "patch"]},
        {"group": "", "resource": "secrets", "verbs": ["get"], "namespace": "nats"},
        {"group": "", "resource": "namespaces", "verbs": ["get"], "namespace": "", "names": ["tapio", "nats"]},
        {"group": "", "resource": "pods/portforward", "verbs": ["create"], "namespace": "nats"},
        {"group": "apps", "resource": "daemonsets", "verbs": ["get"], "namespace": "tapio"},  # asked once
    ], default_namespace="tapio")
    assert [n["label"] for n in needed] == [
        "get daemonsets.apps in namespace tapio", "patch daemonsets.apps in namespace tapio",
        "get secrets in namespace nats", "get namespaces tapio (cluster-wide)", "get namespaces nats (cluster-wide)",
        "create pods/portforward in namespace nats"]
    attributes = [tw.access_review(n)["spec"]["resourceAttributes"] for n in needed]
    assert attributes[0] == {"group": "apps", "resource": "daemonsets", "verb": "get", "namespace": "tapio"}
    assert attributes[3] == {"group": "", "resource": "namespaces", "verb": "get", "name": "tapio"}
    assert attributes[5] == {"group": "", "resource": "pods", "subresource": "portforward", "verb": "create",
                             "namespace": "nats"}


# -- report and ledger ------------------------------------------------------------------------
def test_report_entry_lists_what_the_migration_changed() -> None:
    record = tw.record_of(daemonset())
    live = daemonset()
    live["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "TAPIO_SERVER_ADDRESS", "value": "changed"}, *NATS_ENV]
    entry = tw.report_entry("DaemonSet", "tapio-k8s-collector", "k8s-collector", "configmap", record, live,
                            "TAPIO_OUTPUT_MODE")
    assert entry["output_mode"] == "nats" and entry["changed_from_record"]
    assert [e["name"] for e in entry["env_added"]] == ["TAPIO_OUTPUT_MODE", "NATS_URL"]
    assert entry["env_changed"] == [{"name": "TAPIO_SERVER_ADDRESS", "value": private.redacted_value("changed")}]
    assert entry["env_removed"] == []
    assert entry["other_containers_unchanged"] and entry["volumes_unchanged"]
    same = tw.report_entry("DaemonSet", "x", "k8s-collector", "live", record, daemonset(), "TAPIO_OUTPUT_MODE")
    assert not same["changed_from_record"] and same["env_added"] == same["env_changed"] == []


def test_ledger_verdict() -> None:
    clean = {"settle": {"complete": True}, "sources": {"k8s": {"emitted": 5, "lost": 0, "duplicates": 0},
                                                       "ebpf": {"emitted": 7, "lost": 0, "duplicates": 0}}}
    assert lab_ledger.ledger_verdict(clean, "http://sim", 60).startswith(
        "0 events lost and 0 delivered twice across 2 sources (12 emitted)")
    lossy = copy.deepcopy(clean)
    lossy["sources"]["k8s"].update(lost=2, lost_ids_sample=["k8s-1", "k8s-2"], duplicates=1)
    with pytest.raises(engine.EngineError, match=r"shows: k8s: 2 lost \(e.g. k8s-1, k8s-2\); k8s: 1 delivered twice"):
        lab_ledger.ledger_verdict(lossy, "http://sim", 60)
    with pytest.raises(engine.EngineError, match="did not settle within 60s"):
        lab_ledger.ledger_verdict({**clean, "settle": {"complete": False}}, "http://sim", 60)
    with pytest.raises(engine.EngineError, match="saw no source emit anything"):
        lab_ledger.ledger_verdict({"settle": {"complete": True}, "sources": {}}, "http://sim", 60)


# -- the NATS probe Job --------------------------------------------------------------------
def job(*true: str) -> dict:
    return {"metadata": {"name": "probe"}, "status": {"conditions": [{"type": t, "status": "True"} for t in true]}}


def test_probe_verdict_never_calls_a_simulated_node_a_success() -> None:
    kwok = {"metadata": {"name": "kwok-node-0", "annotations": {"kwok.x-k8s.io/node": "fake"}}}
    real = {"metadata": {"name": "node-a"}}
    unproven = tw.probe_verdict(job("Complete"), kwok, "kwok.x-k8s.io/node", "tapio-nats:4222", "tapio", 120)
    assert unproven["outcome"] == "unproven" and "kwok-node-0" in unproven["detail"]
    passed = tw.probe_verdict(job("Complete"), real, "kwok.x-k8s.io/node", "tapio-nats:4222", "tapio", 120)
    assert passed == {"outcome": "passed", "node": "node-a",
                      "detail": "tapio-nats resolved and port 4222 answered from namespace tapio"}
    failed = tw.probe_verdict(job("Failed"), real, "kwok.x-k8s.io/node", "tapio-nats:4222", "tapio", 120)
    assert failed["outcome"] == "failed" and "did not complete within 120s (conditions: Failed)" in failed["detail"]
    assert tw.probe_verdict(job(), None, "kwok.x-k8s.io/node", "h:1", "tapio", 5)["outcome"] == "failed"


def test_job_finished_reads_only_true_terminal_conditions() -> None:
    assert tw.job_finished(job("Complete")) == ["Complete"]
    assert tw.job_finished(job("Suspended")) == []
    assert tw.job_finished({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}) == []
    assert tw.job_finished(None) == []


def test_a_missing_consumer_blocks_the_drain_only_while_the_stream_holds_messages() -> None:
    """The rollback must not switch the pipeline back while events sit in the stream with no
    consumer left to deliver them; an empty stream has nothing to drain."""
    assert gates.missing_consumer_problem("TAPIO_EVENTS", "tapio-pipeline", {"state": {"messages": 0}}) == ""
    problem = gates.missing_consumer_problem(
        "TAPIO_EVENTS", "tapio-pipeline", {"state": {"messages": 42, "first_seq": 7, "last_seq": 48}})
    assert "TAPIO_EVENTS/tapio-pipeline does not exist" in problem
    assert "42 message(s) in stream TAPIO_EVENTS (sequences 7-48)" in problem
    assert "migrate.yml --tags streams" in problem and "tapio_rollback_drain=false" in problem
