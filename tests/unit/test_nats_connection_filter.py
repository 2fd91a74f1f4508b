"""How the control node reaches NATS and Kubernetes (plugins/filter/tapio_nats_connection.py): the
connection every module gets through module_defaults, the forward tapio_nats_reach chooses, and
the engine's Kubernetes connection. Unset settings are null, as roles/tapio/vars/main/
nats_connection.yml passes them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from module_utils_loader import load_file

REPO_ROOT = Path(__file__).resolve().parents[2]
connection_filter = load_file("tapio_nats_connection_filter", REPO_ROOT / "plugins" / "filter" / "tapio_nats_connection.py")

SETTINGS = ("tapio_nats_reach", "tapio_nats_servers", "tapio_nats_user", "tapio_nats_password", "tapio_nats_token",
            "tapio_nats_creds_file", "tapio_nats_nkey_seed", "tapio_nats_tls_ca_cert", "tapio_nats_tls_client_cert",
            "tapio_nats_tls_client_key", "tapio_nats_connect_timeout", "tapio_nats_kube_port_forward",
            "tapio_nats_kube_namespace", "tapio_nats_kube_selector", "tapio_nats_kube_service",
            "tapio_nats_kube_client_port", "tapio_nats_kube_monitor_port", "tapio_kubeconfig", "tapio_kube_context",
            "tapio_namespace", "nats_cluster_name", "nats_cluster_namespace", "nats_cluster_client_port",
            "nats_cluster_monitor_port", "nats_cluster_method")
DEFAULT_SELECTOR = "app.kubernetes.io/name=nats,app.kubernetes.io/instance=tapio-nats"


def settings(**given: Any) -> dict[str, Any]:
    """Every setting null unless given, as the role's vars pass an unset inventory variable."""
    assert set(given) <= set(SETTINGS), set(given) - set(SETTINGS)
    return {name: given.get(name) for name in SETTINGS}


def connection(**given: Any) -> dict[str, Any]:
    return connection_filter.nats_connection(settings(**given))


def forward(**given: Any) -> dict[str, Any]:
    return connection_filter.nats_forward(settings(**given))


# -- the connection -----------------------------------------------------------------------------
def test_nothing_set_gives_the_local_server_and_the_default_timeout() -> None:
    assert connection() == {"servers": ["nats://127.0.0.1:4222"], "connect_timeout": 5}
    assert connection(tapio_nats_servers=[]) == connection(), "an empty list is unset too"


def test_the_credentials_and_tls_settings_given_are_passed_and_empty_ones_left_out() -> None:
    found = connection(tapio_nats_servers=["tls://nats:4222"], tapio_nats_user="tapio", tapio_nats_password="s3cret",
                       tapio_nats_token="", tapio_nats_tls_ca_cert="/ca.pem", tapio_nats_connect_timeout="9")
    assert found == {"servers": ["tls://nats:4222"], "user": "tapio", "password": "s3cret",
                     "tls_ca_cert": "/ca.pem", "connect_timeout": "9"}
    assert list(connection(tapio_nats_creds_file="/c", tapio_nats_nkey_seed="/n", tapio_nats_tls_client_cert="/t",
                           tapio_nats_tls_client_key="/k", tapio_nats_token="t")) == [
        "servers", "token", "creds_file", "nkey_seed", "tls_client_cert", "tls_client_key", "connect_timeout"]


def test_a_zero_or_false_setting_is_kept() -> None:
    assert connection(tapio_nats_connect_timeout=0)["connect_timeout"] == 0


# -- the forward tapio_nats_reach chooses --------------------------------------------------------
def test_direct_reach_forwards_nothing_or_the_one_pod_forward() -> None:
    assert forward() == {}
    assert "kube_port_forward" not in connection()
    one_pod = {"namespace": "tapio", "service": "tapio-nats"}
    assert forward(tapio_nats_kube_port_forward=one_pod) == one_pod
    assert forward(tapio_nats_reach="direct", tapio_nats_kube_port_forward=one_pod) == one_pod
    assert connection(tapio_nats_kube_port_forward=one_pod)["kube_port_forward"] == one_pod


def test_kubernetes_reach_forwards_to_every_pod_the_nats_phase_installs() -> None:
    assert forward(tapio_nats_reach="kubernetes") == {
        "namespace": "tapio", "selector": DEFAULT_SELECTOR, "port": 4222, "monitor_port": 8222, "all_pods": True,
        "statefulset": "tapio-nats"}
    given = forward(tapio_nats_reach="kubernetes", tapio_kubeconfig="/k", tapio_kube_context="lab",
                    tapio_namespace="tapio-x", nats_cluster_name="nats-b", nats_cluster_namespace="nats",
                    nats_cluster_client_port=14222, nats_cluster_monitor_port="18222")
    assert given == {"kubeconfig": "/k", "context": "lab", "namespace": "nats",
                     "selector": "app.kubernetes.io/name=nats,app.kubernetes.io/instance=nats-b",
                     "port": 14222, "monitor_port": 18222, "all_pods": True, "statefulset": "nats-b"}


def test_kubernetes_reach_forwards_only_to_the_statefulsets_pods_unless_the_operator_installed_them() -> None:
    assert forward(tapio_nats_reach="kubernetes", nats_cluster_method="statefulset")["statefulset"] == "tapio-nats"
    assert "statefulset" not in forward(tapio_nats_reach="kubernetes", nats_cluster_method="operator",
                                        tapio_nats_kube_service="tapio-nats")


def test_kubernetes_reach_ignores_the_one_pod_forward() -> None:
    found = forward(tapio_nats_reach="kubernetes", tapio_nats_kube_port_forward={"service": "x"})
    assert found["selector"] == DEFAULT_SELECTOR and "service" not in found


def test_the_inventory_settings_win_over_the_nats_phases() -> None:
    found = forward(tapio_nats_reach="kubernetes", tapio_nats_kube_namespace="n", tapio_nats_kube_selector="app=nats",
                    tapio_nats_kube_client_port="5222", tapio_nats_kube_monitor_port=9222.0, tapio_namespace="t",
                    nats_cluster_namespace="c", nats_cluster_client_port=4333, nats_cluster_monitor_port=8333)
    assert [found[key] for key in ("namespace", "selector", "port", "monitor_port")] == ["n", "app=nats", 5222, 9222]
    assert forward(tapio_nats_reach="kubernetes", tapio_namespace="t")["namespace"] == "t"


def test_a_service_replaces_the_default_selector() -> None:
    found = forward(tapio_nats_reach="kubernetes", tapio_nats_kube_service="tapio-nats")
    assert found["service"] == "tapio-nats" and "selector" not in found
    both = forward(tapio_nats_reach="kubernetes", tapio_nats_kube_service="s", tapio_nats_kube_selector="app=x")
    assert (both["service"], both["selector"]) == ("s", "app=x"), "given both, both go on (the boilerplate refuses)"
    assert "selector" not in forward(tapio_nats_reach="kubernetes", tapio_nats_kube_selector="")


def test_a_port_that_is_no_number_is_named() -> None:
    with pytest.raises(AnsibleFilterError, match="tapio_nats_kube_client_port 'http' is not a port number"):
        forward(tapio_nats_reach="kubernetes", tapio_nats_kube_client_port="http")


def test_the_connection_carries_the_kubernetes_reach() -> None:
    assert connection(tapio_nats_reach="kubernetes", tapio_kube_context="prod")["kube_port_forward"] == {
        "context": "prod", "namespace": "tapio", "selector": DEFAULT_SELECTOR, "port": 4222, "monitor_port": 8222,
        "all_pods": True, "statefulset": "tapio-nats"}


# -- the engine's Kubernetes connection ----------------------------------------------------------
def test_the_kube_connection_has_what_is_set() -> None:
    kube_connection = connection_filter.kube_connection
    assert kube_connection(settings()) == {}
    assert kube_connection(settings(tapio_kubeconfig="/k", tapio_kube_context="")) == {"kubeconfig": "/k"}
    assert kube_connection(settings(tapio_kubeconfig="/k", tapio_kube_context="c")) == {"kubeconfig": "/k", "context": "c"}


def test_the_roles_vars_pass_every_setting_the_filters_read() -> None:
    text = (REPO_ROOT / "roles" / "tapio" / "vars" / "main" / "nats_connection.yml").read_text()
    assert set(yaml.safe_load(text)["tapio_connection_settings"]) == set(SETTINGS)
    assert set(connection_filter.FilterModule().filters()) == {"tapio_nats_connection", "tapio_nats_forward",
                                                               "tapio_kube_connection"}
