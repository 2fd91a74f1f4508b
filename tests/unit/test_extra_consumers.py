"""The declared extra consumers (tapio_nats_extra_consumers): the input rules
(module_utils/tapio_extra_consumers.py, through the boilerplate's problems_of), the users and
the consumer settings the nats and streams phases render from the same list
(plugins/filter/tapio_nats_users.py), and who is restarted on a password change
(plugins/filter/tapio_nats_credentials.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from module_utils_loader import load_file, load_module_utils

for _name in ("tapio_nats_config", "tapio_nats", "tapio_kube"):
    load_module_utils(_name)
rules = load_module_utils("tapio_extra_consumers")
ti = load_module_utils("tapio_inputs")
FILTERS = Path(__file__).resolve().parents[2] / "plugins" / "filter"
users_filter = load_file("tapio_nats_users_extra", FILTERS / "tapio_nats_users.py")
credentials_filter = load_file("tapio_nats_credentials_extra", FILTERS / "tapio_nats_credentials.py")

STREAM_SUBJECTS = ["tapio.events.>"]
TAKEN = ["tapio", "tapio-pipeline", "tapio-k8s-collector"]
GOOD = [{"name": "siem-export", "filter_subjects": ["tapio.events.k8s.>", "tapio.events.*.audit"],
         "deliver_policy": "by_start_time", "opt_start_time": "2026-12-01T00:00:00Z", "ack_wait": "1m",
         "max_deliver": 5, "max_ack_pending": -1, "description": "SIEM"},
        {"name": "debug-tap", "deliver_policy": "by_start_sequence", "opt_start_seq": 10, "ack_policy": "all"},
        {"name": "engine-b", "replay": True, "workload": {"kind": "Deployment", "name": "engine-b"}}]


def problems(consumers: Any, pipeline: str = "tapio-pipeline") -> list[str]:
    return rules.problems_of(consumers, STREAM_SUBJECTS, pipeline, TAKEN)


def only(found: list[str]) -> str:
    assert len(found) == 1, found
    return found[0]


def test_good_entries_and_no_list_pass() -> None:
    assert problems(GOOD) == []
    assert problems(None) == [] and problems([]) == []


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "Siem"}, "tapio_nats_extra_consumers[0] (Siem).name 'Siem' must be a DNS-1123 label"),
    ({"name": "a.b"}, "name 'a.b' must be a DNS-1123 label"),
    ({}, "tapio_nats_extra_consumers[0].name None must be a DNS-1123 label"),
    ({"name": "siem-rotated"}, "(siem-rotated).name must not end in -rotated"),
    ({"name": "siem", "filter": "x"}, "(siem): unknown key 'filter'"),
    ({"name": "siem", "filter_subjects": ["other.>"]},
     "(siem).filter_subjects: other.> is outside the events stream's subjects tapio.events.>"),
    ({"name": "siem", "filter_subjects": ["tapio.events.>.x"]}, "'tapio.events.>.x' is not a NATS subject"),
    ({"name": "siem", "filter_subjects": ["tapio.events.a", "tapio.events.a"]},
     "filter_subjects lists tapio.events.a more than once"),
    ({"name": "siem", "filter_subjects": []}, "(siem).filter_subjects must be a non-empty list"),
    ({"name": "siem", "deliver_policy": "oldest"}, "(siem).deliver_policy 'oldest' must be one of"),
    ({"name": "siem", "deliver_policy": "by_start_time"}, "(siem).opt_start_time is required"),
    ({"name": "siem", "deliver_policy": "by_start_time", "opt_start_time": "2026-12-01T00:00:00"}, "has no time zone"),
    ({"name": "siem", "deliver_policy": "by_start_time", "opt_start_time": "yesterday"}, "is not an RFC 3339 time"),
    ({"name": "siem", "opt_start_time": "2026-12-01T00:00:00Z"}, "(siem).opt_start_time needs deliver_policy by_start_time"),
    ({"name": "siem", "deliver_policy": "by_start_sequence", "opt_start_seq": 0}, "(siem).opt_start_seq must be"),
    ({"name": "siem", "opt_start_seq": 3}, "(siem).opt_start_seq needs deliver_policy by_start_sequence"),
    ({"name": "siem", "ack_policy": "none"}, "(siem).ack_policy 'none' must be one of explicit, all"),
    ({"name": "siem", "ack_wait": "soon"}, "(siem).ack_wait: cannot parse duration"),
    ({"name": "siem", "ack_wait": 0}, "(siem).ack_wait must be longer than 0"),
    ({"name": "siem", "max_deliver": 0}, "(siem).max_deliver must be -1 (no limit) or a whole number of at least 1"),
    ({"name": "siem", "max_ack_pending": True}, "(siem).max_ack_pending must be -1"),
    ({"name": "siem", "replay": "yes"}, "(siem).replay must be true or false"),
    ({"name": "siem", "workload": {"kind": "Job", "name": "x"}}, "(siem).workload must be {kind:"),
])
def test_each_field_is_checked_and_named(entry: dict[str, Any], message: str) -> None:
    assert message in only(problems([entry]))


def test_an_entry_must_be_a_mapping_and_the_list_a_list() -> None:
    assert "tapio_nats_extra_consumers[1] must be a mapping" in only(problems([GOOD[0], "siem"]))
    assert only(problems({"name": "siem"})) == "tapio_nats_extra_consumers must be a list of consumers, got dict"


def test_names_are_unique_and_not_the_pipelines_consumer_or_another_user() -> None:
    assert "siem-export declared more than once" in only(problems([GOOD[0], {"name": "siem-export"}]))
    assert "tapio-pipeline is the pipeline's durable consumer" in only(problems([{"name": "tapio-pipeline"}]))
    assert "is the pipeline's durable consumer" in only(problems([{"name": "engine"}], pipeline="engine"))
    assert "tapio-k8s-collector is already a NATS user" in only(problems([{"name": "tapio-k8s-collector"}]))
    assert "tapio is already a NATS user" in only(problems([{"name": "tapio"}]))


def test_every_problem_is_reported_together() -> None:
    found = problems([{"name": "siem", "ack_policy": "none", "filter_subjects": ["x.>"]}, {"name": "tapio"}])
    assert len(found) == 3, found


# -- through the boilerplate's input check ---------------------------------------------------
INPUTS: dict[str, Any] = {
    "tapio_namespace": "tapio", "tapio_kube_context": "lab",
    "tapio_pipeline": {"name": "tapio-pipeline", "container": "pipeline"},
    "tapio_collectors": [{"name": "tapio-k8s-collector", "container": "c", "subject_prefix": "tapio.events.k8s"}],
    "tapio_nats_servers": ["nats://127.0.0.1:4222"],
}


def input_problems(**changes: Any) -> list[str]:
    return ti.problems_of({**INPUTS, **changes}, "lab", "2.19.4", [])


def test_the_boilerplate_refuses_a_bad_entry_naming_the_host_and_the_field() -> None:
    found = only(input_problems(tapio_nats_extra_consumers=[{"name": "siem", "filter_subjects": ["audit.>"]}]))
    assert found.startswith("lab: tapio_nats_extra_consumers[0] (siem).filter_subjects: audit.> is outside")
    # The stream's subjects and the pipeline's consumer are the inventory's.
    assert input_problems(tapio_consume_subjects="audit.>",
                          tapio_nats_extra_consumers=[{"name": "siem", "filter_subjects": ["audit.k8s"]}]) != []
    assert "engine is the pipeline's durable consumer" in " ".join(
        input_problems(tapio_pipeline_consumer="engine", tapio_nats_extra_consumers=[{"name": "engine"}]))
    assert "ops is already a NATS user" in only(input_problems(tapio_nats_user="ops",
                                                             tapio_nats_extra_consumers=[{"name": "ops"}]))


def test_an_extra_consumer_without_a_password_gets_one_kept_or_random_like_a_workload() -> None:
    users = {"tapio_nats_component_users": True, "tapio_nats_extra_consumers": [{"name": "siem"}]}
    assert input_problems(**users) == []
    plan = credentials_filter.credential_plan(["tapio-pipeline", "siem"], {"tapio-pipeline": "p"}, {},
                                              "tapio-nats-auth-")
    assert plan[1]["action"] == "create" and len(plan[1]["password"]) == credentials_filter.GENERATED_LENGTH


# -- the users, consumers and readers the phases render --------------------------------------
ADMIN = {"user": "tapio", "password_env": "NATS_PASSWORD"}
PIPELINE = {"name": "tapio-pipeline"}
COLLECTORS = [{"name": "tapio-k8s-collector", "subject_prefix": "tapio.events.k8s"}]


def test_an_extra_consumers_user_may_read_and_ack_only_its_own_consumer() -> None:
    users = {u["user"]: u for u in users_filter.tapio_nats_users(
        ADMIN, PIPELINE, COLLECTORS, "TAPIO_EVENTS", "tapio-pipeline", extra_consumers=[{"name": "siem-export"}])}
    assert users["siem-export"] == {"user": "siem-export", "password_env": "NATS_PASSWORD_SIEM_EXPORT", "permissions": {
        "publish": {"allow": ["$JS.API.CONSUMER.INFO.TAPIO_EVENTS.siem-export",
                              "$JS.API.CONSUMER.MSG.NEXT.TAPIO_EVENTS.siem-export",
                              "$JS.ACK.TAPIO_EVENTS.siem-export.>"]},
        "subscribe": {"allow": ["_INBOX_siem-export.>"]}}}
    assert list(users) == ["tapio", "tapio-pipeline", "tapio-k8s-collector", "siem-export"]


def test_an_extra_consumer_follows_its_credentials_plan_and_is_refused_without_one() -> None:
    plan = credentials_filter.credential_plan(["tapio-pipeline", "tapio-k8s-collector", "siem"],
                                              {"tapio-pipeline": "p", "tapio-k8s-collector": "k", "siem": "s"}, {},
                                              "tapio-nats-auth-")
    users = users_filter.tapio_nats_users(ADMIN, PIPELINE, COLLECTORS, "S", "tapio-pipeline", credentials=plan,
                                          extra_consumers=[{"name": "siem"}])
    assert {"user": "siem", "password": "s"}.items() <= users[-1].items()
    with pytest.raises(Exception, match="no credentials planned for siem"):
        users_filter.tapio_nats_users(ADMIN, PIPELINE, COLLECTORS, "S", "tapio-pipeline", credentials=plan[:2],
                                      extra_consumers=[{"name": "siem"}])
    with pytest.raises(Exception, match="is the pipeline's durable consumer"):
        users_filter.tapio_nats_users(ADMIN, PIPELINE, COLLECTORS, "S", "tapio-pipeline", passwords={},
                                      extra_consumers=[{"name": "tapio-pipeline"}])


def test_the_streams_phase_creates_each_consumer_but_leaves_a_replay_one_to_replay_yml() -> None:
    assert users_filter.extra_consumer_settings(GOOD, "TAPIO_EVENTS") == [
        {"stream": "TAPIO_EVENTS", "name": "siem-export", "description": "SIEM", "ack_policy": "explicit",
         "deliver_policy": "by_start_time", "opt_start_time": "2026-12-01T00:00:00Z", "ack_wait": "1m",
         "max_deliver": 5, "max_ack_pending": -1, "filter_subjects": ["tapio.events.k8s.>", "tapio.events.*.audit"]},
        {"stream": "TAPIO_EVENTS", "name": "debug-tap", "description": "Tapio extra consumer debug-tap",
         "ack_policy": "all", "deliver_policy": "by_start_sequence", "opt_start_seq": 10}]
    assert users_filter.extra_consumer_settings([{"name": "x"}], "S")[0]["deliver_policy"] == "new"


def test_a_password_change_restarts_an_extra_consumers_declared_reader_only() -> None:
    plan = [{"name": n, "secret": f"p-{n}", "user": f"{n}-rotated", "password": "x", "previous": {"user": n}}
            for n in ("tapio-pipeline", "siem", "engine-b")]
    readers = credentials_filter.readers(plan, "tapio-pipeline", "tapio", [
        {"name": "siem"}, {"name": "engine-b", "workload": {"kind": "Deployment", "name": "correlation-b"}}])
    assert [(r["kind"], r["name"], r["secret"]) for r in readers] == [
        ("Deployment", "tapio-pipeline", "p-tapio-pipeline"), ("Deployment", "correlation-b", "p-engine-b")]


ENGINE = {"name": "engine-b", "filter_subjects": ["tapio.events.k8s.>"],
          "workload": {"kind": "Deployment", "name": "tapio-correlation-b", "container": "pipeline", "engine": True}}


def test_an_engine_entry_is_a_deployment_with_its_container_switched_onto_this_consumer() -> None:
    assert problems([ENGINE]) == []
    assert rules.engines([ENGINE, *GOOD]) == [{"name": "tapio-correlation-b", "container": "pipeline",
                                               "consumer": "engine-b", "filter_subjects": ["tapio.events.k8s.>"]}]
    assert rules.engines(None) == [] and rules.engines(GOOD) == []


@pytest.mark.parametrize(("workload", "message"), [
    ({"kind": "DaemonSet", "name": "b", "container": "c", "engine": True}, "a second correlation engine is a Deployment"),
    ({"kind": "Deployment", "name": "b", "engine": True}, "workload.container is required with engine: true"),
    ({"kind": "Deployment", "name": "b", "container": "c"}, "workload.container needs engine: true"),
    ({"kind": "Deployment", "name": "b", "container": "c", "engine": "yes"}, "workload.engine must be true or false"),
    ({"kind": "Deployment", "name": "b", "image": "x"}, "workload: unknown key 'image'"),
])
def test_an_engines_workload_is_checked_and_named(workload: dict[str, Any], message: str) -> None:
    found = only(problems([{"name": "engine-b", "workload": workload}]))
    assert found.startswith("tapio_nats_extra_consumers[0] (engine-b).workload") and message in found, found


def test_an_engine_is_not_a_migrated_workload_and_reads_one_consumer() -> None:
    pipeline = {**ENGINE, "workload": {**ENGINE["workload"], "name": "tapio-pipeline"}}
    assert "engine tapio-pipeline is the pipeline, a collector or the toolkit's user" in only(problems([pipeline]))
    twice = [ENGINE, {**ENGINE, "name": "engine-c"}]
    assert "engine tapio-correlation-b reads more than one consumer" in only(problems(twice))
