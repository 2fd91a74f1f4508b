"""Unit tests for the NATS users and permissions filter (plugins/filter/tapio_nats_users.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

SPEC = importlib.util.spec_from_file_location(
    "tapio_nats_users", Path(__file__).resolve().parents[2] / "plugins" / "filter" / "tapio_nats_users.py")
users_filter = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(users_filter)

ADMIN = {"user": "tapio", "password_env": "NATS_PASSWORD"}
PIPELINE = {"name": "tapio-pipeline", "container": "pipeline"}
COLLECTORS = [{"name": "tapio-k8s-collector", "subject_prefix": "tapio.events.k8s"},
              {"name": "tapio-ebpf-collector", "subject_prefix": "tapio.events.ebpf"}]


def by_user(users: list[dict]) -> dict[str, dict]:
    return {u["user"]: u for u in users}


def test_each_workload_gets_only_its_own_subjects() -> None:
    users = by_user(users_filter.tapio_nats_users(ADMIN, PIPELINE, COLLECTORS, "TAPIO_EVENTS", "tapio-pipeline"))
    assert users["tapio"] == ADMIN  # the toolkit keeps every permission
    assert users["tapio-k8s-collector"]["permissions"] == {
        "publish": {"allow": ["tapio.events.k8s", "tapio.events.k8s.>"]},
        "subscribe": {"allow": ["_INBOX_tapio-k8s-collector.>"]}}
    assert users["tapio-ebpf-collector"]["permissions"]["publish"]["allow"] == ["tapio.events.ebpf",
                                                                              "tapio.events.ebpf.>"]
    assert users["tapio-pipeline"]["permissions"] == {
        "publish": {"allow": ["$JS.API.CONSUMER.INFO.TAPIO_EVENTS.tapio-pipeline",
                              "$JS.API.CONSUMER.MSG.NEXT.TAPIO_EVENTS.tapio-pipeline",
                              "$JS.ACK.TAPIO_EVENTS.tapio-pipeline.>"]},
        "subscribe": {"allow": ["_INBOX_tapio-pipeline.>"]}}
    # Passwords come from the nats-server pod's env unless the lab passes them in.
    assert users["tapio-k8s-collector"]["password_env"] == "NATS_PASSWORD_TAPIO_K8S_COLLECTOR"
    assert "password" not in users["tapio-k8s-collector"]


def test_literal_passwords_for_the_lab() -> None:
    passwords = {"tapio-pipeline": "p", "tapio-k8s-collector": "k", "tapio-ebpf-collector": "e"}
    users = by_user(users_filter.tapio_nats_users({"user": "tapio", "password": "a"}, PIPELINE, COLLECTORS,
                                                  "TAPIO_EVENTS", "tapio-pipeline", passwords))
    assert {name: u["password"] for name, u in users.items()} == {"tapio": "a", **passwords}


@pytest.mark.parametrize(("admin", "pipeline", "collectors", "stream", "passwords", "message"), [
    ({"user": ""}, PIPELINE, COLLECTORS, "TAPIO_EVENTS", None, "the toolkit's user (tapio_nats_user) is empty"),
    (ADMIN, {"name": "tapio"}, COLLECTORS, "TAPIO_EVENTS", None, "must be unique (the toolkit's user and each workload name): tapio"),
    (ADMIN, PIPELINE, COLLECTORS + [COLLECTORS[0]], "TAPIO_EVENTS", None, "must be unique"),
    (ADMIN, PIPELINE, [{"name": "c", "subject_prefix": "tapio.>"}], "TAPIO_EVENTS", None,
     "subject prefixes must be NATS subject tokens (a.b.c, no wildcards): c: 'tapio.>'"),
    (ADMIN, PIPELINE, [{"name": "c"}], "TAPIO_EVENTS", None, "c: none set"),
    (ADMIN, PIPELINE, COLLECTORS, "TAPIO.EVENTS", None, "the stream name 'TAPIO.EVENTS' is not a JetStream name"),
    (ADMIN, PIPELINE, COLLECTORS, "TAPIO_EVENTS", {"tapio-pipeline": "p", "tapio-k8s-collector": ""},
     "no password for tapio-k8s-collector, tapio-ebpf-collector (tapio_nats_component_passwords)"),
])
def test_bad_input_is_refused_naming_it(admin: dict, pipeline: dict, collectors: list, stream: str,
                                        passwords: dict | None, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match="^tapio_nats_users: ") as raised:
        users_filter.tapio_nats_users(admin, pipeline, collectors, stream, "tapio-pipeline", passwords)
    assert message in str(raised.value)


def test_password_env_names() -> None:
    assert users_filter.component_password_env("tapio-k8s-collector") == "NATS_PASSWORD_TAPIO_K8S_COLLECTOR"
    assert users_filter.component_password_env("a.b") == "NATS_PASSWORD_A_B"


def test_the_inbox_in_nats_conf_is_the_one_the_pods_are_given() -> None:
    from module_utils_loader import load_module_utils

    workload = load_module_utils("tapio_workload")
    for name in ("tapio-k8s-collector", "tapio-pipeline", "odd.name"):
        assert users_filter.inbox_prefix(name) == workload.inbox_prefix(name)
    env = workload.workload_env([{"name": "NATS_URL", "value": "nats://x:4222"}], "tapio-k8s-collector",
                                {"shared": "auth", "prefix": "auth-", "inbox_env": "NATS_INBOX_PREFIX"})
    assert env[-1] == {"name": "NATS_INBOX_PREFIX", "value": "_INBOX_tapio-k8s-collector"}
    assert workload.workload_env(env, "tapio-k8s-collector", {}) == env  # shared user: no own inbox


def test_the_operator_method_gets_the_same_users_in_nats_operators_format() -> None:
    passwords = {"tapio-pipeline": "p", "tapio-k8s-collector": "k", "tapio-ebpf-collector": "e"}
    users = users_filter.tapio_nats_users({"user": "tapio", "password": "a"}, PIPELINE, COLLECTORS,
                                          "TAPIO_EVENTS", "tapio-pipeline", passwords)
    auth = users_filter.operator_clients_auth(users)
    by_name = {u["username"]: u for u in auth["users"]}
    assert by_name["tapio"] == {"username": "tapio", "password": "a"}  # every permission
    assert by_name["tapio-k8s-collector"] == {"username": "tapio-k8s-collector", "password": "k", "permissions": {
        "publish": ["tapio.events.k8s", "tapio.events.k8s.>"], "subscribe": ["_INBOX_tapio-k8s-collector.>"]}}
    assert by_name["tapio-pipeline"]["permissions"]["publish"][-1] == "$JS.ACK.TAPIO_EVENTS.tapio-pipeline.>"


@pytest.mark.parametrize(("user", "message"), [
    ({"user": "x", "password_env": "P"}, "user x has no literal password"),
    ({"user": "x", "password": "p", "permissions": {"publish": {"deny": [">"]}}}, "user x has a deny permission"),
])
def test_what_nats_operator_cannot_express_is_refused(user: dict, message: str) -> None:
    with pytest.raises(users_filter.AnsibleFilterError, match=message):
        users_filter.operator_clients_auth([user])
