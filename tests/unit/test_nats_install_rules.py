"""The nats_cluster role's refusals (module_utils/tapio_nats_install_rules.py, through the filter
plugins/filter/tapio_nats_install.py in roles/nats_cluster/tasks/validate.yml) and the rules the
boilerplate's input check (tapio_inputs.py) shares with them. The messages are the ones
validate.yml printed when the rules were Jinja (tests/integration/test_nats_install.py checks
some of them on a cluster)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest
import yaml

from module_utils_loader import load_file, load_module_utils

rules = load_module_utils("tapio_nats_install_rules")
ti = load_module_utils("tapio_inputs")

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = [{"name": "tapio-pipeline"}, {"name": "tapio-k8s-collector"}]
# The lab inventory's request, as validate.yml passes it.
GOOD: dict[str, Any] = {
    "nats_cluster_method": "statefulset", "nats_cluster_jetstream_enabled": True, "nats_cluster_replicas": 3,
    "nats_cluster_lame_duck_duration_seconds": 30, "nats_cluster_lame_duck_grace_period_seconds": 10,
    "nats_cluster_termination_grace_period_seconds": 60, "nats_cluster_auth_enabled": True,
    "nats_cluster_auth_user": "tapio", "nats_cluster_auth_password": "secret", "nats_cluster_component_users": True,
    "nats_cluster_components": WORKLOADS,
    "nats_cluster_component_passwords": {"tapio-pipeline": "p", "tapio-k8s-collector": "k"},
    "nats_cluster_route_auth_enabled": True, "nats_cluster_route_user": "route", "nats_cluster_route_password": "",
    "nats_cluster_system_account_enabled": True, "nats_cluster_system_user": "system",
    "nats_cluster_tls_enabled": False, "nats_cluster_route_tls_enabled": False,
    "nats_cluster_storage_size": "10Gi", "nats_cluster_memory_store_size": "64Mi",
    "nats_cluster_file_store_percent": 90, "nats_cluster_monitor_urls": [], "nats_cluster_monitor_port": 8222,
    "tapio_nats_reach": "kubernetes",
}
OPERATOR = ("nats_cluster_method=operator cannot give JetStream: nats-operator (deprecated, last release 0.8.x) never "
            "supported JetStream. Its NatsCluster has no jetstream field and its pods have no volumes, so the plan's "
            "'jetstream:' block would be dropped and the cluster would have no persistence and no replay. Nothing was "
            "changed. Use nats_cluster_method=statefulset (the default, the layout of the official NATS Helm chart) "
            "for JetStream, or set nats_cluster_jetstream_enabled=false to get a core-NATS NatsCluster from the "
            "operator.")
ROUTE = ("nats_cluster_route_auth_enabled needs nats_cluster_route_user and nats_cluster_route_password (empty: kept, "
         "or random on the first install) made only of letters, digits and . _ ~ - (they are written into the route "
         "URLs).")
STORAGE = ("nats_cluster_storage_size ({}) and nats_cluster_memory_store_size ({}) must be Kubernetes quantities such "
           "as 10Gi or 512Mi; nats_cluster_file_store_percent must be 1-100.")


def refusals(**changes: Any) -> list[str]:
    return rules.refusals({**GOOD, **changes})


def test_a_request_that_can_work_is_not_refused() -> None:
    assert refusals() == []
    # Values as -e key=value gives them: strings.
    assert refusals(nats_cluster_replicas="5", nats_cluster_jetstream_enabled="true", nats_cluster_auth_enabled="yes",
                    nats_cluster_file_store_percent="100", nats_cluster_storage_size=1073741824) == []


@pytest.mark.parametrize("changes, message", [
    ({"nats_cluster_method": "operator"}, OPERATOR),
    ({"nats_cluster_lame_duck_duration_seconds": "20"},
     "nats_cluster_lame_duck_duration_seconds (20) must be at least 30 (nats-server's minimum) and "
     "nats_cluster_termination_grace_period_seconds (60) must be longer, or Kubernetes kills the pod while it is "
     "still draining clients."),
    ({"nats_cluster_termination_grace_period_seconds": 30},
     "nats_cluster_lame_duck_duration_seconds (30) must be at least 30 (nats-server's minimum) and "
     "nats_cluster_termination_grace_period_seconds (30) must be longer, or Kubernetes kills the pod while it is "
     "still draining clients."),
    ({"nats_cluster_lame_duck_grace_period_seconds": 30},
     "nats_cluster_lame_duck_grace_period_seconds (30) must be lower than nats_cluster_lame_duck_duration_seconds "
     "(30): nats-server refuses to start otherwise."),
    ({"nats_cluster_lame_duck_grace_period_seconds": "-1"},
     "nats_cluster_lame_duck_grace_period_seconds (-1) must be lower than nats_cluster_lame_duck_duration_seconds "
     "(30): nats-server refuses to start otherwise."),
    ({"nats_cluster_component_users": False, "nats_cluster_auth_password": ""},
     "nats_cluster_auth_enabled is true but nats_cluster_auth_user or nats_cluster_auth_password is empty (set it "
     "from a vault)."),
    ({"nats_cluster_method": "operator", "nats_cluster_jetstream_enabled": False,
      "nats_cluster_component_passwords": {"tapio-pipeline": "p", "tapio-k8s-collector": ""}},
     "nats_cluster_method=operator with tapio_nats_component_users needs a password in tapio_nats_component_passwords "
     "for the pipeline and every collector (nats-operator's users come from the inventory alone); missing: "
     "tapio-k8s-collector."),
    ({"nats_cluster_auth_enabled": "false", "nats_cluster_route_auth_enabled": False},
     "tapio_nats_component_users needs nats_cluster_auth_enabled: the servers check each workload's user and "
     "password."),
    ({"nats_cluster_route_user": "bad user"}, ROUTE),
    ({"nats_cluster_route_user": ""}, ROUTE),
    ({"nats_cluster_route_password": "p@ss"}, ROUTE),
    ({"nats_cluster_system_user": "sys/tem"},
     "nats_cluster_system_user (sys/tem) must be made of letters, digits and . _ ~ -."),
    ({"nats_cluster_route_tls_enabled": True},
     "nats_cluster_route_tls_enabled uses the TLS Secret nats_cluster_tls_enabled mounts (tls.crt, tls.key and "
     "ca.crt); set nats_cluster_tls_enabled too."),
    ({"nats_cluster_replicas": "1"},
     "A JetStream cluster needs at least 3 servers for a Raft quorum that survives one failure; nats_cluster_replicas "
     "is 1."),
    ({"nats_cluster_storage_size": "10GB"}, STORAGE.format("10GB", "64Mi")),
    ({"nats_cluster_memory_store_size": "1.5Gi"}, STORAGE.format("10Gi", "1.5Gi")),
    ({"nats_cluster_file_store_percent": 0}, STORAGE.format("10Gi", "64Mi")),
    ({"nats_cluster_file_store_percent": "101"}, STORAGE.format("10Gi", "64Mi")),
    ({"tapio_nats_reach": "direct"},
     "nats_cluster_monitor_urls is empty: the NATS health gate needs every server's monitoring URL (port 8222), or "
     "tapio_nats_reach=kubernetes."),
], ids=["operator", "lame-duck", "grace-period", "lame-grace", "lame-grace-negative", "auth", "operator-component-password",
        "component-users-without-auth", "route-user", "route-user-empty", "route-password", "system-user", "route-tls",
        "replicas", "storage", "memory", "percent-0", "percent-101", "monitor-urls"])
def test_each_rule_names_what_it_refuses(changes: dict[str, Any], message: str) -> None:
    assert refusals(**changes) == [message]


@pytest.mark.parametrize("changes", [
    {"nats_cluster_method": "operator", "nats_cluster_jetstream_enabled": False, "nats_cluster_replicas": 1},
    {"nats_cluster_auth_enabled": False, "nats_cluster_auth_password": "", "nats_cluster_component_users": False},
    {"nats_cluster_component_users": "no", "nats_cluster_component_passwords": {}},
    {"nats_cluster_component_passwords": {}},
    {"nats_cluster_route_auth_enabled": "false", "nats_cluster_route_user": "bad user"},
    {"nats_cluster_route_password": "p.a_s~s-1"},
    {"nats_cluster_system_account_enabled": False, "nats_cluster_system_user": "sys/tem"},
    {"nats_cluster_route_tls_enabled": True, "nats_cluster_tls_enabled": True},
    {"tapio_nats_reach": "direct", "nats_cluster_monitor_urls": ["http://nats-0:8222"]},
], ids=["operator-core-nats", "auth-off", "component-users-off", "statefulset-keeps-or-makes-passwords", "route-auth-off", "route-password", "system-off",
        "route-tls", "monitor-urls"])
def test_what_a_rule_allows_is_not_refused(changes: dict[str, Any]) -> None:
    assert refusals(**changes) == []


def test_every_broken_rule_is_reported_in_order() -> None:
    found = refusals(nats_cluster_method="operator", nats_cluster_replicas=2, nats_cluster_route_user="r:u",
                     tapio_nats_reach="direct")
    assert [message.split(" ")[0] for message in found] == [
        "nats_cluster_method=operator", "nats_cluster_route_auth_enabled", "A", "nats_cluster_monitor_urls"]


# -- the rules the boilerplate shares ------------------------------------------------------------
@pytest.mark.parametrize("value, may_be_empty, safe", [
    ("route", False, True), ("a.b_c~d-1", False, True), ("", False, False), ("", True, True), (None, True, True),
    ("p@ss", True, False), ("a b", False, False), ("r:u", False, False), (12, False, True)])
def test_url_safe_credentials(value: Any, may_be_empty: bool, safe: bool) -> None:
    assert rules.url_safe(value, may_be_empty=may_be_empty) is safe


def test_the_boilerplate_calls_the_same_rules() -> None:
    assert (ti.url_safe, ti.security_problems, ti.as_bool, ti.as_int) == (
        rules.url_safe, rules.security_problems, rules.as_bool, rules.as_int)


@pytest.mark.parametrize("value, expected", [("42", 42), ("42.5", 42), (7.9, 7), ("x", 0), (None, 0), (True, 1)])
def test_values_read_as_jinja_int_reads_them(value: Any, expected: int) -> None:
    assert rules.as_int(value) == expected


# -- the role calls them through the filter --------------------------------------------------------
class Recorded(Mapping[str, Any]):
    """The request, noting each setting a rule reads."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values, self.read = values, set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def test_validate_yml_passes_every_setting_the_rules_read() -> None:
    request = Recorded({**GOOD, "nats_cluster_method": "operator", "nats_cluster_route_tls_enabled": True,
                        "tapio_nats_reach": "direct"})
    rules.refusals(request)
    task = yaml.safe_load((REPO_ROOT / "roles" / "nats_cluster" / "tasks" / "validate.yml").read_text())[0]
    passed = set(task["vars"]["nats_cluster_install_request"])
    assert request.read | {"tapio_nats_reach"} == passed
    assert task["vars"]["nats_cluster_refusals"] == "{{ nats_cluster_install_request | tapio_nats_install_refusals }}"


def test_the_filter_returns_the_rules_refusals() -> None:
    install_filter = load_file("tapio_nats_install_filter", REPO_ROOT / "plugins" / "filter" / "tapio_nats_install.py")
    refuse = install_filter.FilterModule().filters()["tapio_nats_install_refusals"]
    assert refuse(GOOD) == []
    assert refuse({**GOOD, "nats_cluster_method": "operator"}) == [OPERATOR]
