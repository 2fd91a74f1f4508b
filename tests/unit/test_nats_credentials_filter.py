"""Unit tests for a workload's NATS credentials across a password change
(plugins/filter/tapio_nats_credentials.py) and the users they become in users.conf
(plugins/filter/tapio_nats_users.py). The real servers' side is
tests/integration/test_lab_real_nats.py (a rotated workload password while events flow)."""
from __future__ import annotations

import base64
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

FILTERS = Path(__file__).resolve().parents[2] / "plugins" / "filter"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, FILTERS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


credentials = load("tapio_nats_credentials")
users_filter = load("tapio_nats_users")

PREFIX = "tapio-nats-auth-"
PIPELINE = {"name": "tapio-pipeline"}
COLLECTORS = [{"name": "tapio-ebpf-collector", "subject_prefix": "tapio.events.ebpf"}]
NAMES = ["tapio-pipeline", "tapio-ebpf-collector"]


def secret(**data: str) -> dict[str, str]:
    """A Secret's data as the API returns it (base64)."""
    return {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}


def plan_of(passwords: dict[str, str], kept: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in credentials.credential_plan(NAMES, passwords, kept, PREFIX)}


def test_a_first_install_creates_each_workload_under_its_own_name() -> None:
    plan = plan_of({"tapio-pipeline": "p1", "tapio-ebpf-collector": "e1"}, {})
    assert plan["tapio-pipeline"] == {"name": "tapio-pipeline", "secret": PREFIX + "tapio-pipeline",
                                      "user": "tapio-pipeline", "password": "p1", "previous": {}, "action": "create"}
    assert plan["tapio-ebpf-collector"]["action"] == "create"
    assert credentials.rolling(list(plan.values())) == []


def test_an_unchanged_password_keeps_the_user_the_secret_holds() -> None:
    kept = {PREFIX + "tapio-pipeline": secret(NATS_USER="tapio-pipeline-rotated", NATS_PASSWORD="p1")}
    plan = plan_of({"tapio-pipeline": "p1", "tapio-ebpf-collector": "e1"}, kept)
    assert plan["tapio-pipeline"]["user"] == "tapio-pipeline-rotated"
    assert plan["tapio-pipeline"]["action"] == "keep" and plan["tapio-pipeline"]["previous"] == {}


@pytest.mark.parametrize("current, moved_to", [("tapio-pipeline", "tapio-pipeline-rotated"),
                                               ("tapio-pipeline-rotated", "tapio-pipeline"),
                                               ("someone-else", "tapio-pipeline")])
def test_a_changed_password_moves_to_the_other_user_and_keeps_the_old_pair(current: str, moved_to: str) -> None:
    kept = {PREFIX + "tapio-pipeline": secret(NATS_USER=current, NATS_PASSWORD="p1")}
    plan = plan_of({"tapio-pipeline": "p2", "tapio-ebpf-collector": "e1"}, kept)
    entry = plan["tapio-pipeline"]
    assert (entry["user"], entry["password"], entry["action"]) == (moved_to, "p2", "rotate")
    assert entry["previous"] == {"user": current, "password": "p1"}
    assert credentials.rolling(list(plan.values())) == [PREFIX + "tapio-pipeline"]
    assert credentials.secret_data(entry) == {"NATS_USER": moved_to, "NATS_PASSWORD": "p2",
                                              "NATS_PREVIOUS_USER": current, "NATS_PREVIOUS_PASSWORD": "p1"}
    # Retired: only the new pair is left, in the plan and in the Secret.
    (done,) = [e for e in credentials.retired(list(plan.values())) if e["name"] == "tapio-pipeline"]
    assert done["previous"] == {} and credentials.secret_data(done) == {"NATS_USER": moved_to, "NATS_PASSWORD": "p2"}


def test_a_run_stopped_during_a_change_finishes_it_with_the_same_password() -> None:
    kept = {PREFIX + "tapio-ebpf-collector": secret(NATS_USER="tapio-ebpf-collector-rotated", NATS_PASSWORD="e2",
                                                    NATS_PREVIOUS_USER="tapio-ebpf-collector",
                                                    NATS_PREVIOUS_PASSWORD="e1")}
    plan = plan_of({"tapio-pipeline": "p1", "tapio-ebpf-collector": "e2"}, kept)
    entry = plan["tapio-ebpf-collector"]
    assert entry["action"] == "finish" and entry["user"] == "tapio-ebpf-collector-rotated"
    assert entry["previous"] == {"user": "tapio-ebpf-collector", "password": "e1"}
    assert credentials.readers(list(plan.values()), "tapio-pipeline", "tapio") == [
        {"kind": "DaemonSet", "name": "tapio-ebpf-collector", "namespace": "tapio",
         "secret": PREFIX + "tapio-ebpf-collector", "user": "tapio-ebpf-collector-rotated"}]


def test_a_second_change_before_the_first_finished_is_refused_naming_the_workload() -> None:
    kept = {PREFIX + "tapio-ebpf-collector": secret(NATS_USER="tapio-ebpf-collector-rotated", NATS_PASSWORD="e2",
                                                    NATS_PREVIOUS_USER="tapio-ebpf-collector",
                                                    NATS_PREVIOUS_PASSWORD="e1")}
    with pytest.raises(AnsibleFilterError, match=r"tapio_nats_component_passwords\[tapio-ebpf-collector\].*still being"):
        plan_of({"tapio-pipeline": "p1", "tapio-ebpf-collector": "e3"}, kept)


def test_the_pipeline_restarts_as_a_deployment() -> None:
    kept = {PREFIX + "tapio-pipeline": secret(NATS_USER="tapio-pipeline", NATS_PASSWORD="p1")}
    plan = list(plan_of({"tapio-pipeline": "p2", "tapio-ebpf-collector": "e1"}, kept).values())
    assert [(r["kind"], r["name"], r["user"]) for r in credentials.readers(plan, "tapio-pipeline", "tapio")] == [
        ("Deployment", "tapio-pipeline", "tapio-pipeline-rotated")]


def test_during_a_change_the_servers_accept_both_users_with_the_same_permissions() -> None:
    kept = {PREFIX + "tapio-ebpf-collector": secret(NATS_USER="tapio-ebpf-collector", NATS_PASSWORD="e1")}
    plan = credentials.credential_plan(NAMES, {"tapio-pipeline": "p1", "tapio-ebpf-collector": "e2"}, kept, PREFIX)
    users = users_filter.tapio_nats_users({"user": "tapio", "password": "t"}, PIPELINE, COLLECTORS,
                                          "TAPIO_EVENTS", "tapio-pipeline", credentials=plan)
    by_user = {u["user"]: u for u in users}
    assert set(by_user) == {"tapio", "tapio-pipeline", "tapio-ebpf-collector", "tapio-ebpf-collector-rotated"}
    assert by_user["tapio-ebpf-collector"]["password"] == "e1"
    assert by_user["tapio-ebpf-collector-rotated"]["password"] == "e2"
    # The inbox is the workload's, whichever user its pods connect as.
    assert by_user["tapio-ebpf-collector"]["permissions"] == by_user["tapio-ebpf-collector-rotated"]["permissions"]
    assert by_user["tapio-ebpf-collector"]["permissions"]["subscribe"] == {"allow": ["_INBOX_tapio-ebpf-collector.>"]}
    retired = users_filter.tapio_nats_users({"user": "tapio", "password": "t"}, PIPELINE, COLLECTORS,
                                            "TAPIO_EVENTS", "tapio-pipeline", credentials=credentials.retired(plan))
    assert {u["user"] for u in retired} == {"tapio", "tapio-pipeline", "tapio-ebpf-collector-rotated"}


def test_a_workload_without_planned_credentials_is_refused() -> None:
    plan = credentials.credential_plan(["tapio-pipeline"], {"tapio-pipeline": "p1"}, {}, PREFIX)
    with pytest.raises(AnsibleFilterError, match="no credentials planned for tapio-ebpf-collector"):
        users_filter.tapio_nats_users({"user": "tapio", "password": "t"}, PIPELINE, COLLECTORS,
                                      "TAPIO_EVENTS", "tapio-pipeline", credentials=plan)


def test_a_workload_named_like_another_workloads_rotated_user_is_refused() -> None:
    collectors = COLLECTORS + [{"name": "tapio-ebpf-collector-rotated", "subject_prefix": "tapio.events.x"}]
    with pytest.raises(AnsibleFilterError, match="tapio-ebpf-collector-rotated: a name ending in -rotated"):
        users_filter.tapio_nats_users({"user": "tapio", "password": "t"}, PIPELINE, collectors,
                                      "TAPIO_EVENTS", "tapio-pipeline")


def test_both_filters_agree_on_the_suffix() -> None:
    assert credentials.ALTERNATE_SUFFIX == users_filter.ALTERNATE_SUFFIX


def test_a_workload_without_a_password_keeps_its_secrets_or_gets_a_random_one() -> None:
    kept = {f"{PREFIX}tapio-pipeline": secret(NATS_USER="tapio-pipeline-rotated", NATS_PASSWORD="held")}
    first, second = (credentials.credential_plan(NAMES, {"tapio-ebpf-collector": ""}, kept, PREFIX) for _ in range(2))
    pipeline, collector = first
    assert (pipeline["action"], pipeline["user"], pipeline["password"]) == ("keep", "tapio-pipeline-rotated", "held")
    assert (collector["action"], collector["user"]) == ("create", "tapio-ebpf-collector")
    assert len(collector["password"]) == credentials.GENERATED_LENGTH
    assert set(collector["password"]) <= set(credentials.GENERATED_ALPHABET)
    # Random per plan: the role fixes the plan once per run (tasks/kept.yml), so all its uses agree.
    assert second[1]["password"] != collector["password"]
