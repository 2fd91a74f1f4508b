"""The health check's judgement (module_utils/tapio_health_findings.py): every finding branch,
from NATS's own answers (the shapes /healthz, /varz, /jsz, STREAM.INFO and CONSUMER.INFO
return) and the workloads' facts, to a severity, a diagnosis and a next step that names the
inventory's objects."""
from __future__ import annotations

import datetime

import pytest

from module_utils_loader import load_module_utils

health = load_module_utils("tapio_health_findings")
OK, WARNING, CRITICAL = health.OK, health.WARNING, health.CRITICAL

NOW = datetime.datetime(2026, 12, 6, 12, 0, 0, tzinfo=datetime.timezone.utc)
MIB, GIB = 2**20, 2**30
NAMES = health.Names(namespace="tapio", nats_namespace="tapio", nats_statefulset="tapio-nats",
                     nats_url="nats://tapio-nats:4222", pipeline="tapio-pipeline", pipeline_container="pipeline",
                     pipeline_consumer="tapio-pipeline", collector="tapio-k8s-collector",
                     collector_container="k8s-collector")
SETTINGS = health.Settings(names=NAMES, expected_servers=3, memory_limit=GIB)
LABELS = [f"tapio/tapio-nats-{i}:8222" for i in range(3)]


# -- answers as the servers give them ----------------------------------------------------------
def varz(name: str, mem: int = 200 * MIB, js_memory: int = 0, storage: int = 1 * GIB,
         max_storage: int = 9 * GIB, clustered: bool = True) -> dict:
    return {"server_name": name, "version": "2.10.26", "mem": mem,
            "cluster": {"name": "tapio-nats"} if clustered else {},
            "jetstream": {"config": {"max_memory": 64 * MIB, "max_storage": max_storage},
                          "stats": {"memory": js_memory, "storage": storage, "reserved_storage": GIB}}}


def meta(leader: str = "tapio-nats-0", peers: list | None = None, leader_view: bool = True, size: int = 3) -> dict:
    peers = peers if peers is not None else [
        {"name": "tapio-nats-1", "current": True, "lag": 0, "offline": False},
        {"name": "tapio-nats-2", "current": True, "lag": 0, "offline": False}]
    return {"health": {label: {"http_status": 200, "status": "ok"} for label in LABELS}, "servers_healthy": 3,
            "name": "tapio-nats", "leader": leader, "cluster_size": size, "peers": peers, "leader_view": leader_view}


def monitoring(**changes: object) -> dict:
    answer = {"configured": True, "cluster": meta(), "not_ready": [],
              "varz": {label: varz(f"tapio-nats-{i}") for i, label in enumerate(LABELS)}}
    answer.update(changes)
    return answer


def stream(messages: int = 1000, size: int = 500_000, last_seq: int = 5000, max_bytes: int = GIB, max_msgs: int = -1,
           discard: str = "old", replicas: list | None = None, leader: str | None = "tapio-nats-1",
           max_age: int = 7 * 24 * 3600 * 10**9) -> dict:
    replicas = replicas if replicas is not None else [{"name": "tapio-nats-0", "current": True, "lag": 0},
                                                      {"name": "tapio-nats-2", "current": True, "lag": 0}]
    return {"config": {"name": "TAPIO_EVENTS", "num_replicas": 3, "max_bytes": max_bytes, "max_msgs": max_msgs,
                       "max_age": max_age, "discard": discard},
            "state": {"messages": messages, "bytes": size, "first_seq": last_seq - messages + 1, "last_seq": last_seq},
            "cluster": {"leader": leader, "replicas": replicas}}


def consumer(name: str = "tapio-pipeline", pending: int = 0, ack_pending: int = 0, floor: int = 5000,
             redelivered: int = 0, durable: bool = True, waiting: int = 1) -> dict:
    config = {"ack_policy": "explicit", "max_deliver": 5, "filter_subject": "tapio.events.>"}
    if durable:
        config["durable_name"] = name
    return {"name": name, "num_pending": pending, "num_ack_pending": ack_pending, "num_redelivered": redelivered,
            "num_waiting": waiting, "ack_floor": {"stream_seq": floor}, "config": config}


def jetstream(before: dict | None = None, after: dict | None = None, stream_before: dict | None = None,
              stream_after: dict | None = None, elapsed: float = 10.0, **changes: object) -> dict:
    answer = {"stream": stream_before or stream(), "stream_after": stream_after or stream(),
              "consumers": before if before is not None else {"tapio-pipeline": consumer()},
              "consumers_after": after if after is not None else {"tapio-pipeline": consumer()},
              "elapsed": elapsed, "oldest_unacked_age": None, "advisories": None, "advisories_after": None}
    answer.update(changes)
    return answer


def workload(kind: str = "DaemonSet", name: str = "tapio-k8s-collector", container: str = "k8s-collector",
             mode: str | None = "nats", owned: bool = True, **changes: object) -> dict:
    facts = {"kind": kind, "name": name, "namespace": "tapio", "container": container, "owned": owned, "found": True,
             "error": "", "output_mode": mode, "generation": 4, "observed_generation": 4, "desired": 3, "current": 3,
             "updated": 3, "ready": 3, "available": 3, "unavailable": 0, "current_revision": "", "update_revision": ""}
    facts.update(changes)
    return facts


def healthy_gathered() -> dict:
    return {"monitoring": monitoring(), "jetstream": jetstream(),
            "workloads": [workload(kind="Deployment", name="tapio-pipeline", container="pipeline"), workload(),
                          workload(kind="StatefulSet", name="tapio-nats", container="nats", owned=False, mode=None,
                                   current_revision="r2", update_revision="r2")]}


def only(findings: list, check: str, severity: str | None = None) -> list:
    return [f for f in findings if f.check == check and (severity is None or f.severity == severity)]


# -- healthy -----------------------------------------------------------------------------------
def test_a_healthy_cluster_gives_only_ok_findings_covering_every_part() -> None:
    findings = health.findings_of(healthy_gathered(), SETTINGS, NOW)
    assert [f for f in findings if f.severity != OK] == []
    assert {f.check for f in findings} == {"nats_servers", "nats_meta", "nats_memory", "nats_storage",
                                           "nats_connection", "stream_replicas", "stream_fill", "consumer",
                                           "workload_rollout", "workload_mode"}
    assert only(findings, "nats_meta")[0].seen == "leader tapio-nats-0, 3 peer(s), all current"
    assert only(findings, "nats_servers")[0].seen == "3 server(s), every /healthz 200"
    # The NATS StatefulSet is not the migration's: its rollout is judged, its output mode is not.
    assert [f.subject for f in only(findings, "workload_mode")] == ["Deployment tapio/tapio-pipeline",
                                                                   "DaemonSet tapio/tapio-k8s-collector"]
    assert all(f.diagnosis == "" and f.next_step == "" for f in findings)
    assert health.summary_of(findings) == {"ok": len(findings), "warning": 0, "critical": 0, "worst": OK,
                                           "total": len(findings)}


def test_the_summary_counts_each_severity_and_findings_come_critical_first() -> None:
    gathered = healthy_gathered()
    gathered["workloads"][1]["output_mode"] = "direct"                       # critical
    gathered["workloads"][0]["updated"] = 2                                   # warning
    findings = health.findings_of(gathered, SETTINGS, NOW)
    assert [f.severity for f in findings[:2]] == [CRITICAL, WARNING]
    assert health.summary_of(findings)["worst"] == CRITICAL
    assert health.summary_of(findings)["critical"] == 1 and health.summary_of(findings)["warning"] == 1
    assert health.summary_of([]) == {"ok": 0, "warning": 0, "critical": 0, "worst": OK, "total": 0}


# -- reaching NATS -----------------------------------------------------------------------------
def test_a_refused_connection_gives_the_plans_dns_and_port_recipe_from_a_collector_pod() -> None:
    gathered = {"monitoring": monitoring(), "jetstream": {"error": "cannot connect to NATS servers tried "
                                                                   "(nats://127.0.0.1:4222): ConnectionRefusedError"}}
    [found] = only(health.findings_of(gathered, SETTINGS, NOW), "nats_connection")
    assert found.severity == CRITICAL and "ConnectionRefusedError" in found.seen
    assert "kubectl -n tapio exec ds/tapio-k8s-collector -c k8s-collector -- nslookup tapio-nats" in found.next_step
    assert "-- nc -zv tapio-nats 4222" in found.next_step
    assert "get endpoints tapio-nats" in found.next_step
    # Without a connection nothing is said about the stream or its consumers.
    assert not only(health.findings_of(gathered, SETTINGS, NOW), "consumer")
    # Without a collector in the inventory the recipe still says what to run, and where.
    [bare] = health.connection_findings("refused", health.Names(nats_url="nats://nats.messaging:4333"))
    assert "kubectl -n tapio exec <collector-pod> -- nc -zv nats.messaging 4333" in bare.next_step


def test_monitoring_that_cannot_be_read_is_critical_and_none_configured_a_warning() -> None:
    [error] = health.nats_findings({"configured": True, "error": "kube_port_forward: no ready pod"}, SETTINGS)
    assert (error.check, error.severity) == ("nats_monitoring", CRITICAL)
    assert "pods/portforward in tapio" in error.next_step
    [missing] = health.nats_findings({"configured": False}, SETTINGS)
    assert (missing.check, missing.severity) == ("nats_monitoring", WARNING)
    assert "tapio_nats_monitor_urls" in missing.next_step


# -- servers down, meta group -------------------------------------------------------------------
def test_a_server_whose_healthz_fails_is_down_and_named_by_its_pod() -> None:
    cluster = meta()
    cluster["health"][LABELS[1]] = {"http_status": 503, "status": "unavailable",
                                    "error": "JetStream has not established contact with a meta leader"}
    findings = health.findings_of({"monitoring": monitoring(cluster=cluster), "jetstream": jetstream()}, SETTINGS, NOW)
    [down] = only(findings, "nats_server")
    assert (down.severity, down.subject) == (CRITICAL, "tapio/tapio-nats-1:8222")
    assert down.seen == "/healthz answered 503 (JetStream has not established contact with a meta leader)"
    assert "kubectl -n tapio describe pod tapio-nats-1" in down.next_step
    assert "logs tapio-nats-1 -c nats --previous" in down.next_step and "peer-remove" in down.next_step
    assert not only(findings, "nats_servers", OK)


def test_a_pod_that_is_not_ready_is_a_server_down_and_missing_servers_are_counted() -> None:
    cluster = meta()
    del cluster["health"][LABELS[2]]
    findings = health.server_findings(cluster["health"], [("tapio-nats-2", "phase Pending")], 3, NAMES)
    [down] = findings
    assert (down.check, down.severity, down.subject) == ("nats_server", CRITICAL, "tapio/tapio-nats-2")
    assert down.seen == "pod tapio-nats-2 is not ready (phase Pending)"
    [missing] = health.server_findings(cluster["health"], [], 3, NAMES)
    assert (missing.check, missing.severity, missing.seen) == ("nats_servers", CRITICAL, "2 of 3 NATS servers found")
    assert "get statefulset tapio-nats" in missing.next_step


def test_no_meta_leader_is_critical() -> None:
    [found] = health.meta_findings(meta(leader=""), False, 3, NAMES)
    assert (found.severity, found.seen) == (CRITICAL, "the meta group has no leader")
    assert "majority" in found.diagnosis and "nats server report jetstream" in found.next_step


def test_meta_peers_offline_lagging_and_missing() -> None:
    peers = [{"name": "tapio-nats-1", "current": False, "lag": 0, "offline": True},
             {"name": "tapio-nats-2", "current": False, "lag": 42, "offline": False}]
    offline, lagging = health.meta_findings(meta(peers=peers), False, 3, NAMES)
    assert (offline.check, offline.severity, offline.subject) == ("nats_meta_peer", CRITICAL, "meta peer tapio-nats-1")
    assert "describe pod tapio-nats-1" in offline.next_step
    assert (lagging.severity, lagging.seen) == (WARNING, "meta peer tapio-nats-2 is not current (lag 42)")
    [small] = health.meta_findings(meta(peers=peers[:1], size=2), False, 3, NAMES)[1:]
    assert (small.severity, small.seen) == (
        CRITICAL, "meta leader tapio-nats-0 sees cluster_size 2 and 2 peer(s); 3 expected")


def test_a_leader_outside_the_monitored_servers_cannot_judge_the_peers() -> None:
    [found] = health.meta_findings(meta(leader_view=False), False, 3, NAMES)
    assert (found.severity, found.seen) == (WARNING, "meta leader tapio-nats-0 is not among the monitored servers")


def test_a_standalone_server_is_fine_alone_and_critical_when_a_cluster_is_expected() -> None:
    answers = {"configured": True, "cluster": {"health": {"http://n:8222": {"http_status": 200}}, "servers_healthy": 1},
               "varz": {"http://n:8222": varz("n", clustered=False)}, "not_ready": []}
    alone = health.nats_findings(answers, health.Settings(names=NAMES, expected_servers=1))
    assert only(alone, "nats_meta")[0].seen == "a single server, not clustered: no meta group"
    expected = only(health.nats_findings(answers, health.Settings(names=NAMES, expected_servers=3)), "nats_meta")[0]
    assert expected.severity == CRITICAL and "3 are expected" in expected.seen


def test_no_server_answering_jsz_leaves_the_meta_group_unjudged_and_critical() -> None:
    cluster = {"health": {LABELS[0]: {"http_status": 0, "error": "connection refused"}}, "servers_healthy": 0}
    [found] = health.meta_findings(cluster, False, 3, NAMES)
    assert (found.severity, found.seen) == (CRITICAL, "no server answered /jsz")


# -- stream replicas and fullness ---------------------------------------------------------------
def test_a_lagging_replica_is_a_warning_and_an_offline_one_critical() -> None:
    replicas = [{"name": "tapio-nats-0", "current": False, "lag": 5000},
                {"name": "tapio-nats-2", "current": False, "lag": 3, "offline": True}]
    lagging, offline = health.replica_findings(stream(replicas=replicas), SETTINGS)
    assert (offline.severity, offline.subject) == (CRITICAL, "TAPIO_EVENTS replica tapio-nats-2")
    assert (lagging.severity, lagging.seen) == (
        WARNING, "replica tapio-nats-0 of TAPIO_EVENTS is 5000 entries behind (more than 1000)")
    assert "nats stream cluster step-down TAPIO_EVENTS" in lagging.next_step
    # A follower a few entries behind under a steady publish rate is replication, not trouble.
    [fine] = health.replica_findings(stream(replicas=[{"name": "tapio-nats-0", "current": False, "lag": 4}]), SETTINGS)
    assert fine.severity == OK


def test_a_replicated_stream_without_a_leader_is_critical() -> None:
    [found] = health.replica_findings(stream(leader=None), SETTINGS)
    assert (found.severity, found.seen) == (CRITICAL, "stream TAPIO_EVENTS (R3) has no leader")


def test_a_stream_near_its_byte_limit_for_the_unacknowledged_backlog() -> None:
    # 850 of 1000 messages unacknowledged, each 1 KiB, against max_bytes 1000 KiB: 85 %.
    info = stream(messages=1000, size=1000 * 1024, max_bytes=1000 * 1024)
    [warning] = health.fill_findings(info, consumer(pending=850, floor=4150), 60.0, SETTINGS)
    assert (warning.check, warning.severity) == ("stream_fill", WARNING)
    assert "85% full" in warning.seen and "for consumer tapio-pipeline" in warning.seen
    assert "discards events not yet acknowledged (discard old)" in warning.diagnosis
    assert "nats stream info TAPIO_EVENTS" in warning.next_step and "playbooks/streams.yml" in warning.next_step
    [critical] = health.fill_findings(info, consumer(pending=950, floor=4050), 60.0, SETTINGS)
    assert critical.severity == CRITICAL and "95% full" in critical.seen


def test_discard_new_counts_the_whole_stream_and_a_stream_without_limits_is_a_warning() -> None:
    full = stream(messages=920, size=920, max_msgs=1000, max_bytes=-1, discard="new")
    [found] = health.fill_findings(full, consumer(), None, SETTINGS)
    assert found.severity == CRITICAL and "refuses new events (discard new)" in found.diagnosis
    [unbounded] = health.fill_findings(stream(max_bytes=-1, max_age=0), consumer(), None, SETTINGS)
    assert unbounded.severity == WARNING and "no message, byte or age limit" in unbounded.seen


def test_a_missing_stream_is_critical() -> None:
    found = health.jetstream_findings(jetstream(stream_before=None, stream_after=None) | {"stream": None,
                                                                                        "stream_after": None},
                                      SETTINGS, NOW)
    [missing] = only(found, "stream")
    assert missing.severity == CRITICAL
    assert "ansible-playbook playbooks/streams.yml creates TAPIO_EVENTS" in missing.next_step


# -- consumers over the window ----------------------------------------------------------------
def test_a_stalled_pipeline_consumer_is_critical() -> None:
    before = {"tapio-pipeline": consumer(pending=4000, floor=1000, waiting=0)}
    after = {"tapio-pipeline": consumer(pending=4200, floor=1000, waiting=0)}
    [found] = health.consumer_findings(before, after, stream(), stream(last_seq=5200), 10.0, SETTINGS)
    assert (found.severity, found.subject) == (CRITICAL, "TAPIO_EVENTS/tapio-pipeline")
    assert found.seen == ("stalled: 4200 pending, 0 awaiting ack, 0 redelivered, ack floor 1000, ack floor unchanged "
                          "over 10s; 0 pull request(s) waiting")
    assert "the pipeline is not consuming" in found.diagnosis
    assert "kubectl -n tapio logs deploy/tapio-pipeline -c pipeline" in found.next_step
    assert "kubectl -n tapio rollout restart deploy/tapio-pipeline" in found.next_step


def test_another_stalled_durable_is_a_warning_and_ephemerals_are_not_judged() -> None:
    before = {"tapio-pipeline": consumer(), "siem-export": consumer("siem-export", pending=30, floor=10),
              "ephemeral": consumer("ephemeral", pending=30, floor=10, durable=False)}
    after = {"tapio-pipeline": consumer(), "siem-export": consumer("siem-export", pending=35, floor=10),
             "ephemeral": consumer("ephemeral", pending=35, floor=10, durable=False)}
    found = health.jetstream_findings(jetstream(before=before, after=after), SETTINGS, NOW)
    [stalled] = only(found, "consumer", WARNING)
    assert stalled.subject == "TAPIO_EVENTS/siem-export"
    assert "nats consumer rm TAPIO_EVENTS siem-export" in stalled.next_step
    assert {f.subject for f in only(found, "consumer")} == {"TAPIO_EVENTS/tapio-pipeline", "TAPIO_EVENTS/siem-export"}


def replay(floor: int, last: int, pending: int) -> dict:
    info = consumer("engine-b-replay", pending=pending, floor=floor)
    info["config"]["metadata"] = {health.REPLAY_MARK: "true", health.REPLAY_LAST_SEQ_KEY: str(last)}
    return info


def test_a_replay_consumer_is_judged_by_its_window_not_as_a_stall() -> None:
    """Its reader stops at the window's end, so the stream after it stays pending: no warning."""
    idle = {"tapio-pipeline": consumer(), "engine-b-replay": replay(floor=1200, last=4000, pending=3800)}
    found = health.consumer_findings(idle, idle, stream(), stream(), 10.0, SETTINGS)
    [waiting] = [f for f in found if f.subject == "TAPIO_EVENTS/engine-b-replay"]
    assert waiting.severity == OK and waiting.seen.startswith("replay window read to 1200 of 4000 (its reader's pace")
    done = {"tapio-pipeline": consumer(), "engine-b-replay": replay(floor=4000, last=4000, pending=1000)}
    [read] = [f for f in health.consumer_findings(done, done, stream(), stream(), 10.0, SETTINGS)
              if f.subject == "TAPIO_EVENTS/engine-b-replay"]
    assert read.seen == "replay window read to its end (ack floor 4000, window ends at 4000)"
    # Without the mark the same consumer is a stalled durable, a warning.
    plain = {"tapio-pipeline": consumer(), "engine-b": consumer("engine-b", pending=3800, floor=1200)}
    assert WARNING in {f.severity for f in health.consumer_findings(plain, plain, stream(), stream(), 10.0, SETTINGS)}


def test_the_replay_marks_are_the_replay_modules() -> None:
    replay_window = load_module_utils("tapio_replay_window")
    assert (health.REPLAY_MARK, health.REPLAY_LAST_SEQ_KEY) == (replay_window.MARK, replay_window.LAST_SEQ_KEY)


def test_a_consumer_with_its_floor_moving_slower_than_the_stream_falls_behind() -> None:
    before = {"tapio-pipeline": consumer(pending=2000, floor=3000)}
    after = {"tapio-pipeline": consumer(pending=6000, floor=3500)}
    [found] = health.consumer_findings(before, after, stream(last_seq=5000), stream(last_seq=9500), 10.0, SETTINGS)
    assert found.severity == WARNING and "falling behind" in found.seen and "backlog 2000 -> 6000" in found.seen
    assert "scale deploy/tapio-pipeline" in found.next_step


def test_a_consumer_keeping_up_is_ok() -> None:
    before = {"tapio-pipeline": consumer(pending=50, floor=4950)}
    after = {"tapio-pipeline": consumer(pending=40, floor=9460)}
    [found] = health.consumer_findings(before, after, stream(), stream(last_seq=9500), 10.0, SETTINGS)
    assert found.severity == OK and "40 unacknowledged (at most 1000)" in found.seen


def test_growing_redeliveries_are_a_warning() -> None:
    before = {"tapio-pipeline": consumer(ack_pending=20, floor=4980, redelivered=2)}
    after = {"tapio-pipeline": consumer(ack_pending=25, floor=4990, redelivered=9)}
    consumer_ok, redeliveries = health.consumer_findings(before, after, stream(), stream(last_seq=5015), 10.0, SETTINGS)
    assert consumer_ok.severity == OK
    assert (redeliveries.check, redeliveries.severity) == ("consumer_redeliveries", WARNING)
    assert redeliveries.seen == "redelivered 2 -> 9 over 10s"
    assert "max_deliver (5)" in redeliveries.diagnosis and "nats stream view TAPIO_ADVISORIES" in redeliveries.next_step


def test_a_missing_pipeline_consumer_is_critical() -> None:
    [found] = health.consumer_findings({}, {}, stream(), stream(), 10.0, SETTINGS)
    assert (found.severity, found.subject) == (CRITICAL, "TAPIO_EVENTS/tapio-pipeline")
    assert "nats consumer ls TAPIO_EVENTS" in found.next_step


def test_one_read_only_does_not_judge_the_trend() -> None:
    assert health.trend(stream(), stream(), consumer(pending=5000), consumer(pending=5000), 0.0, SETTINGS) == (
        None, "one read only: the trend is not judged")


# -- advisories ---------------------------------------------------------------------------------
def advisories(count: int, last: str) -> dict:
    return {"config": {"name": "TAPIO_ADVISORIES"}, "state": {"messages": count, "last_ts": last}}


def test_a_recent_advisory_is_a_warning_an_old_one_is_not() -> None:
    [recent] = health.advisory_findings(advisories(3, "2026-12-06T11:50:00Z"), advisories(3, "2026-12-06T11:50:00Z"),
                                        NOW, SETTINGS)
    assert recent.severity == WARNING and recent.seen == "3 advisory(ies), the last 600s ago"
    assert "nats stream view TAPIO_ADVISORIES" in recent.next_step
    [old] = health.advisory_findings(advisories(3, "2026-12-01T12:00:00Z"), advisories(3, "2026-12-01T12:00:00Z"),
                                     NOW, SETTINGS)
    assert old.severity == OK
    [grew] = health.advisory_findings(advisories(3, "2026-12-01T12:00:00Z"), advisories(4, "2026-12-06T11:59:55Z"),
                                      NOW, SETTINGS)
    assert grew.severity == WARNING and grew.seen.startswith("1 new during the check")
    assert health.advisory_findings(None, None, NOW, SETTINGS) == []


# -- memory and storage -------------------------------------------------------------------------
def test_resident_memory_near_the_container_limit_is_the_plans_high_memory_recipe() -> None:
    [memory, storage] = health.resource_findings(LABELS[0], varz("tapio-nats-0", mem=int(0.93 * GIB)), SETTINGS)
    assert (memory.check, memory.severity) == ("nats_memory", CRITICAL)
    assert memory.seen.startswith("tapio-nats-0: resident memory 952.3MiB of 1.0GiB (93%)")
    assert "nats server report mem" in memory.next_step and "kubectl -n tapio top pod tapio-nats-0" in memory.next_step
    assert "nats_cluster_resources" in memory.next_step
    assert storage.severity == OK
    [warning, _] = health.resource_findings(LABELS[0], varz("tapio-nats-0", mem=int(0.85 * GIB)), SETTINGS)
    assert warning.severity == WARNING


def test_the_jetstream_memory_store_and_file_store_against_their_limits() -> None:
    answer = varz("tapio-nats-1", mem=100 * MIB, js_memory=60 * MIB, storage=int(8.5 * GIB))
    memory, storage = health.resource_findings(LABELS[1], answer, SETTINGS)
    assert memory.severity == CRITICAL and "JetStream memory store 60.0MiB of 64.0MiB (93.8%)" in memory.seen
    assert storage.severity == CRITICAL and "JetStream file store 8.5GiB of 9.0GiB (94.4%)" in storage.seen
    assert "nats_cluster_storage_size" in storage.next_step


def test_without_a_known_memory_limit_resident_memory_is_shown_not_judged() -> None:
    settings = health.Settings(names=NAMES, memory_limit=0)
    memory, _ = health.resource_findings(LABELS[0], varz("tapio-nats-0", mem=int(5 * GIB)), settings)
    assert memory.severity == OK and "resident memory 5.0GiB (container limit unknown)" in memory.seen
    assert health.resource_findings(LABELS[0], {"error": "refused"}, SETTINGS) == []


# -- workloads ----------------------------------------------------------------------------------
def test_a_workload_not_rolled_out_is_a_warning_and_with_no_pod_ready_critical() -> None:
    [rollout, mode] = health.workload_findings(workload(updated=1), SETTINGS)
    assert (rollout.severity, rollout.seen) == (WARNING, "rollout not complete: 1/3 updated, 3 ready, 0 unavailable")
    assert "kubectl -n tapio rollout status ds/tapio-k8s-collector" in rollout.next_step
    assert "rollout undo ds/tapio-k8s-collector" in rollout.next_step
    assert mode.severity == OK
    [down, _] = health.workload_findings(workload(ready=0, unavailable=3), SETTINGS)
    assert down.severity == CRITICAL and down.seen.startswith("no pod ready")
    [unseen, _] = health.workload_findings(workload(kind="Deployment", name="tapio-pipeline", container="pipeline",
                                                    observed_generation=3), SETTINGS)
    assert unseen.severity == WARNING and "(the controller has not seen the latest spec)" in unseen.seen


def test_a_statefulset_between_revisions_is_not_rolled_out() -> None:
    [found] = health.workload_findings(workload(kind="StatefulSet", name="tapio-nats", container="nats", owned=False,
                                                current_revision="r1", update_revision="r2"), SETTINGS)
    assert found.severity == WARNING and found.subject == "StatefulSet tapio/tapio-nats"


def test_scaled_to_zero_missing_and_unreadable_workloads() -> None:
    [zero, _] = health.workload_findings(workload(kind="Deployment", name="tapio-pipeline", container="pipeline",
                                                  desired=0, current=0, updated=0, ready=0, available=0), SETTINGS)
    assert (zero.severity, zero.seen) == (WARNING, "scaled to zero replicas")
    [nowhere, _] = health.workload_findings(workload(desired=0, updated=0, ready=0), SETTINGS)
    assert nowhere.seen == "scheduled on no node"
    [missing] = health.workload_findings(workload(found=False), SETTINGS)
    assert (missing.check, missing.severity) == ("workload", CRITICAL)
    assert missing.seen == "DaemonSet tapio-k8s-collector not found in tapio"
    [unreadable] = health.workload_findings(workload(error="403 Forbidden"), SETTINGS)
    assert unreadable.severity == CRITICAL and unreadable.seen == "could not be read: 403 Forbidden"
    assert "docs/rbac.md" in unreadable.next_step


def test_a_workload_on_another_mode_than_expected_is_critical() -> None:
    [_, mode] = health.workload_findings(workload(mode="direct"), SETTINGS)
    assert (mode.severity, mode.seen) == (CRITICAL, "TAPIO_OUTPUT_MODE=direct, expected nats")
    assert "ansible-playbook migrate.yml --tags pipeline,collectors" in mode.next_step
    assert "containers[?(@.name==\"k8s-collector\")]" in mode.next_step
    rolled_back = health.Settings(names=NAMES, expected_mode="direct")
    [_, unset] = health.workload_findings(workload(mode=None), rolled_back)
    assert (unset.severity, unset.seen) == (OK, "TAPIO_OUTPUT_MODE not set")
    [_, still_nats] = health.workload_findings(workload(mode="nats"), rolled_back)
    assert still_nats.severity == CRITICAL and "ansible-playbook rollback.yml" in still_nats.next_step
    [_, switch_missing] = health.workload_findings(workload(mode=None), SETTINGS)
    assert switch_missing.severity == CRITICAL and switch_missing.seen == "TAPIO_OUTPUT_MODE not set, expected nats"


@pytest.mark.parametrize(("label", "server", "pod"), [("tapio/tapio-nats-2:8222", "", "tapio-nats-2"),
                                                      ("http://127.0.0.1:8222", "nats-a", "nats-a"),
                                                      ("http://127.0.0.1:8222", "", "<nats-pod>")])
def test_the_pod_a_monitoring_label_names(label: str, server: str, pod: str) -> None:
    assert health.pod_of(label, server) == pod
