"""The NATS env the pipeline and collectors roles give the engine (plugins/filter/tapio_nats_env.py):
the plain entries, the credentials and CA by secretKeyRef, the user's extra entries, and which
Secret each workload reads, branch by branch."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from module_utils_loader import load_file, load_module_utils

REPO_ROOT = Path(__file__).resolve().parents[2]
env_filter = load_file("tapio_nats_env_filter", REPO_ROOT / "plugins" / "filter" / "tapio_nats_env.py")
workload = load_module_utils("tapio_workload")

# The collectors' settings as the roles' defaults render them for the lab inventory.
SETTINGS: dict[str, Any] = {
    "mode_env": "TAPIO_OUTPUT_MODE", "mode_value": "nats", "nats_url": "nats://tapio-nats:4222", "log_level": "info",
    "credentials_secret": "tapio-nats-auth", "credentials_user_key": "NATS_USER",
    "credentials_password_key": "NATS_PASSWORD", "user_env": "NATS_USER", "password_env": "NATS_PASSWORD",
    "component_users": False, "component_secret_prefix": "tapio-nats-auth-", "inbox_env": "NATS_INBOX_PREFIX",
    "ca_secret": "", "ca_key": "ca.crt", "ca_env": "NATS_CA", "extra_env": [],
}
PLAIN = [{"name": "TAPIO_OUTPUT_MODE", "value": "nats"}, {"name": "NATS_URL", "value": "nats://tapio-nats:4222"},
         {"name": "LOG_LEVEL", "value": "info"}]
CREDENTIALS = [
    {"name": "NATS_USER", "valueFrom": {"secretKeyRef": {"name": "tapio-nats-auth", "key": "NATS_USER"}}},
    {"name": "NATS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "tapio-nats-auth", "key": "NATS_PASSWORD"}}},
]


def entries(**changes: Any) -> list[dict[str, Any]]:
    return env_filter.workload_env_entries({**SETTINGS, **changes})


def secrets(**changes: Any) -> dict[str, Any]:
    return env_filter.workload_secrets({**SETTINGS, **changes})


def test_a_shared_secret_gives_the_credentials_by_secret_key_ref() -> None:
    assert entries() == PLAIN + CREDENTIALS
    assert secrets() == {}, "every workload reads the shared Secret"


def test_keys_and_env_names_come_from_the_settings() -> None:
    found = entries(credentials_user_key="user", credentials_password_key="pass", user_env="U", password_env="P")
    assert found[3:] == [{"name": "U", "valueFrom": {"secretKeyRef": {"name": "tapio-nats-auth", "key": "user"}}},
                         {"name": "P", "valueFrom": {"secretKeyRef": {"name": "tapio-nats-auth", "key": "pass"}}}]


def test_no_secret_name_gives_no_credentials_env_and_no_per_workload_secrets() -> None:
    assert entries(credentials_secret="") == PLAIN
    assert secrets(credentials_secret="", component_users=True) == {}, "no shared Secret to stand in for"


@pytest.mark.parametrize("component_users", [True, "true", "yes", 1])
def test_component_users_give_each_workload_its_own_secret(component_users: Any) -> None:
    assert secrets(component_users=component_users) == {
        "shared": "tapio-nats-auth", "prefix": "tapio-nats-auth-", "inbox_env": "NATS_INBOX_PREFIX"}
    assert entries(component_users=component_users) == PLAIN + CREDENTIALS, "the engine rewrites the references"


@pytest.mark.parametrize("component_users", [False, "false", "no", 0, ""])
def test_without_component_users_the_shared_secret_is_read(component_users: Any) -> None:
    assert secrets(component_users=component_users) == {}


def test_per_workload_secrets_point_each_collector_at_its_own_secret() -> None:
    """The engine applies the filters' output per workload (tapio_workload.workload_env)."""
    env = workload.workload_env(entries(), "tapio-k8s-collector", secrets(component_users=True))
    assert [e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e] == [
        "tapio-nats-auth-tapio-k8s-collector"] * 2
    assert env[-1] == {"name": "NATS_INBOX_PREFIX", "value": "_INBOX_tapio-k8s-collector"}


def test_a_ca_secret_adds_the_ca_after_the_credentials() -> None:
    found = entries(ca_secret="tapio-nats-tls", ca_env="NATS_CA_PEM")
    assert found == PLAIN + CREDENTIALS + [
        {"name": "NATS_CA_PEM", "valueFrom": {"secretKeyRef": {"name": "tapio-nats-tls", "key": "ca.crt"}}}]
    assert entries(ca_secret="tapio-nats-tls", ca_env="NATS_CA_PEM", credentials_secret="")[len(PLAIN):] == [found[-1]]


def test_extra_env_comes_last_as_given() -> None:
    extra = [{"name": "EXTRA", "value": "1"},
             {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    assert entries(extra_env=extra, ca_secret="tls")[-2:] == extra
    assert entries(extra_env=None) == PLAIN + CREDENTIALS


def test_the_pipeline_adds_its_subjects_after_the_url() -> None:
    found = entries(consume_subjects="tapio.events.>")
    assert [e["name"] for e in found[:4]] == ["TAPIO_OUTPUT_MODE", "NATS_URL", "CONSUME_SUBJECTS", "LOG_LEVEL"]
    assert found[2] == {"name": "CONSUME_SUBJECTS", "value": "tapio.events.>"}


def test_values_keep_their_types() -> None:
    assert entries(log_level=3)[2] == {"name": "LOG_LEVEL", "value": 3}


@pytest.mark.parametrize("name", ["tapio_workload_env_entries", "tapio_workload_secrets"])
def test_a_missing_setting_is_named(name: str) -> None:
    broken = {key: value for key, value in SETTINGS.items() if key not in ("ca_key", "inbox_env")}
    with pytest.raises(AnsibleFilterError, match=f"{name}: settings without inbox_env, ca_key"):
        env_filter.FilterModule().filters()[name](broken)


def test_the_engine_declares_every_workload_secrets_key() -> None:
    migration = load_file("env_filter_test_tapio_migration", REPO_ROOT / "library" / "tapio_migration.py")
    declared = migration.ARGUMENT_SPEC["workload_secrets"]["options"]
    assert set(secrets(component_users=True)) <= set(declared)


def test_both_roles_use_the_filters() -> None:
    for role in ("tapio_pipeline", "tapio_collectors"):
        text = (REPO_ROOT / "roles" / role / "vars" / "main.yml").read_text()
        assert f"{role}_env_settings | tapio_workload_env_entries" in text, role
        assert f"{role}_env_settings | tapio_workload_secrets" in text, role
        assert "secretKeyRef" not in text, f"{role} composes env entries itself"
