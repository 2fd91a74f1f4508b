# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""How the control node reaches NATS and Kubernetes: the connections every entry playbook
gives its modules through module_defaults (roles/tapio/vars/main/nats_connection.yml).

Every filter takes the same *settings*: the inventory's variables by their names
(``tapio_nats_reach``, ``tapio_nats_servers``, ``tapio_kubeconfig``, ...) and, when the play
imports the nats_cluster role, its ``nats_cluster_name``, ``nats_cluster_namespace``,
``nats_cluster_client_port``, ``nats_cluster_monitor_port`` and ``nats_cluster_method``; an
unset one is null.

``tapio_nats_reach`` chooses the forward:

- ``direct`` (the default): the servers as given, or the one-pod
  ``tapio_nats_kube_port_forward`` when set;
- ``kubernetes``: through the Kubernetes API, every ready NATS pod's client port (the
  client's server list) and monitoring port, found by ``tapio_nats_kube_selector`` or
  ``tapio_nats_kube_service``; by default the pods the nats phase installs.

Empty settings are left out of a connection, so each module keeps its own default for them.
Tested in tests/unit/test_nats_connection_filter.py.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from ansible.errors import AnsibleFilterError

Settings = Mapping[str, Any]

DEFAULT_SERVERS = ["nats://127.0.0.1:4222"]
DEFAULT_CONNECT_TIMEOUT = 5
# The nats phase's StatefulSet (roles/nats_cluster/defaults/main.yml).
DEFAULT_NAMESPACE = "tapio"
DEFAULT_CLUSTER_NAME = "tapio-nats"
DEFAULT_CLIENT_PORT = 4222
DEFAULT_MONITOR_PORT = 8222
# The options a connection leaves out when empty; a Kubernetes reach keeps {} and [].
UNSET_OPTION = ("", None, {}, [])
UNSET_REACH_FIELD = ("", None)
NATS_OPTIONS = ("user", "password", "token", "creds_file", "nkey_seed", "tls_ca_cert", "tls_client_cert",
                "tls_client_key")


def first_set(*values: Any) -> Any:
    """The first value that is not null: an inventory variable, then its fallbacks."""
    return next((value for value in values if value is not None), None)


def without(values: dict[str, Any], unset: tuple[Any, ...]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value not in unset}


def port(value: Any, name: str) -> int:
    """A port as Jinja's ``int`` reads it ("4222" and 4222.0 are 4222)."""
    try:
        return int(float(value))
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"{name} {value!r} is not a port number") from None


def default_selector(settings: Settings) -> str:
    """The nats phase's pods: nats_cluster's selector labels (roles/nats_cluster/vars/main.yml)."""
    name = first_set(settings.get("nats_cluster_name"), DEFAULT_CLUSTER_NAME)
    return f"app.kubernetes.io/name=nats,app.kubernetes.io/instance={name}"


def kube_reach(settings: Settings) -> dict[str, Any]:
    """The forward to every NATS pod (``tapio_nats_reach: kubernetes``)."""
    service = settings.get("tapio_nats_kube_service") or ""
    selector: Optional[str] = settings.get("tapio_nats_kube_selector")
    if selector is None:
        selector = "" if service else default_selector(settings)
    reach = {
        "kubeconfig": settings.get("tapio_kubeconfig"),
        "context": settings.get("tapio_kube_context"),
        "namespace": first_set(settings.get("tapio_nats_kube_namespace"), settings.get("nats_cluster_namespace"),
                               settings.get("tapio_namespace"), DEFAULT_NAMESPACE),
        "selector": selector,
        "service": service,
        "port": port(first_set(settings.get("tapio_nats_kube_client_port"), settings.get("nats_cluster_client_port"),
                               DEFAULT_CLIENT_PORT), "tapio_nats_kube_client_port"),
        "monitor_port": port(first_set(settings.get("tapio_nats_kube_monitor_port"),
                                       settings.get("nats_cluster_monitor_port"), DEFAULT_MONITOR_PORT),
                             "tapio_nats_kube_monitor_port"),
        "all_pods": True,
        # The nats phase's StatefulSet: no other pod the selector matches gets the credentials.
        # The operator method's pods belong to its NatsCluster instead, and are not checked.
        "statefulset": (first_set(settings.get("nats_cluster_name"), DEFAULT_CLUSTER_NAME)
                        if first_set(settings.get("nats_cluster_method"), "statefulset") == "statefulset" else None),
    }
    return without(reach, UNSET_REACH_FIELD)


def nats_forward(settings: Settings) -> dict[str, Any]:
    """The modules' ``kube_port_forward``: the one tapio_nats_reach asks for ({} for none)."""
    if settings.get("tapio_nats_reach") == "kubernetes":
        return kube_reach(settings)
    return settings.get("tapio_nats_kube_port_forward") or {}


def nats_connection(settings: Settings) -> dict[str, Any]:
    """The NATS connection options of every nats_* module and of the engine."""
    connection = {"servers": settings.get("tapio_nats_servers") or DEFAULT_SERVERS}
    connection.update({option: settings.get(f"tapio_nats_{option}") for option in NATS_OPTIONS})
    connection["connect_timeout"] = first_set(settings.get("tapio_nats_connect_timeout"), DEFAULT_CONNECT_TIMEOUT)
    connection["kube_port_forward"] = nats_forward(settings)
    return without(connection, UNSET_OPTION)


def kube_connection(settings: Settings) -> dict[str, Any]:
    """The engine's kubeconfig and context, as kubernetes.core gets them."""
    return without({"kubeconfig": settings.get("tapio_kubeconfig"), "context": settings.get("tapio_kube_context")},
                   UNSET_REACH_FIELD)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"tapio_nats_connection": nats_connection, "tapio_nats_forward": nats_forward,
                "tapio_kube_connection": kube_connection}
