# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What a NATS installation must satisfy before anything is changed: every refusal of the
nats_cluster role (``refusals``, through the filter plugins/filter/tapio_nats_install.py in
roles/nats_cluster/tasks/validate.yml), and the rules the boilerplate's input check
(tapio_inputs.py) shares with it.

The role refuses on its own, so it still does when used without the boilerplate; where the
boilerplate checks the same thing earlier (a password for every workload, route credentials
that fit a URL), both call the one function here. Values are read as the inventory gives them,
the way Ansible's ``bool`` and ``int`` filters read them.

Only the standard library and ansible-core: the filter loads this file by its path on the
control node, where the project's other module_utils are not importable.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping, Optional

from ansible.module_utils.parsing.convert_bool import boolean

Settings = Mapping[str, Any]

# Letters, digits and . _ ~ -: what a user or password may hold unescaped in a route URL.
URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
# The quantities plugins/filter/tapio_quantity.py turns into bytes.
QUANTITY = re.compile(r"^[0-9]+([kKMGT]|[KMGT]i)?$")
MINIMUM_LAME_DUCK_SECONDS = 30  # nats-server's minimum
RAFT_QUORUM_SERVERS = 3


def as_bool(value: Any) -> bool:
    """What Ansible's ``bool`` filter makes of an inventory value (anything unknown is false)."""
    return boolean(value, strict=False)


def as_int(value: Any) -> int:
    """What Jinja's ``int`` filter makes of a value: "42.5" is 42, anything else 0."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            return 0


def url_safe(value: Any, may_be_empty: bool = False) -> bool:
    """A route user or password written into the route URLs as it is."""
    text = "" if value is None else str(value)
    return (may_be_empty and text == "") or URL_SAFE.match(text) is not None


def with_password(passwords: Optional[Mapping[str, Any]]) -> list[str]:
    """The workloads of ``tapio_nats_component_passwords`` that have a (non-empty) password."""
    return [name for name, password in (passwords or {}).items() if password]


def without_password(workloads: Iterable[str], have_password: Iterable[str]) -> list[str]:
    """The workloads nats.conf would have no password for, with one NATS user per workload."""
    have = set(have_password)
    return [name for name in workloads if name not in have]


# -- the nats_cluster role's refusals, in the order it reports them --------------------------
def operator_refusal(s: Settings) -> Optional[str]:
    if not (s["nats_cluster_method"] == "operator" and as_bool(s["nats_cluster_jetstream_enabled"])):
        return None
    return ("nats_cluster_method=operator cannot give JetStream: nats-operator (deprecated, last release 0.8.x) "
            "never supported JetStream. Its NatsCluster has no jetstream field and its pods have no volumes, so the "
            "plan's 'jetstream:' block would be dropped and the cluster would have no persistence and no replay. "
            "Nothing was changed. Use nats_cluster_method=statefulset (the default, the layout of the official NATS "
            "Helm chart) for JetStream, or set nats_cluster_jetstream_enabled=false to get a core-NATS NatsCluster "
            "from the operator.")


def lame_duck_refusal(s: Settings) -> Optional[str]:
    duration, grace = s["nats_cluster_lame_duck_duration_seconds"], s["nats_cluster_termination_grace_period_seconds"]
    if as_int(duration) >= MINIMUM_LAME_DUCK_SECONDS and as_int(grace) > as_int(duration):
        return None
    return (f"nats_cluster_lame_duck_duration_seconds ({duration}) must be at least {MINIMUM_LAME_DUCK_SECONDS} "
            f"(nats-server's minimum) and nats_cluster_termination_grace_period_seconds ({grace}) must be longer, "
            "or Kubernetes kills the pod while it is still draining clients.")


def lame_duck_grace_refusal(s: Settings) -> Optional[str]:
    # nats-server -t accepts it, but the server refuses to start: "lame duck grace period (40s)
    # should be strictly lower than lame duck duration (30s)".
    grace, duration = s["nats_cluster_lame_duck_grace_period_seconds"], s["nats_cluster_lame_duck_duration_seconds"]
    if 0 <= as_int(grace) < as_int(duration):
        return None
    return (f"nats_cluster_lame_duck_grace_period_seconds ({grace}) must be lower than "
            f"nats_cluster_lame_duck_duration_seconds ({duration}): nats-server refuses to start otherwise.")


def auth_refusal(s: Settings) -> Optional[str]:
    if not as_bool(s["nats_cluster_auth_enabled"]) or (s["nats_cluster_auth_user"] and s["nats_cluster_auth_password"]):
        return None
    return ("nats_cluster_auth_enabled is true but nats_cluster_auth_user or nats_cluster_auth_password is empty "
            "(set it from a vault).")


def component_users_refusal(s: Settings) -> Optional[str]:
    if not as_bool(s["nats_cluster_component_users"]):
        return None
    names = [str(component.get("name", "")) for component in s["nats_cluster_components"]]
    missing = without_password(names, with_password(s["nats_cluster_component_passwords"]))
    if as_bool(s["nats_cluster_auth_enabled"]) and not missing:
        return None
    return ("tapio_nats_component_users needs nats_cluster_auth_enabled and a password in "
            "tapio_nats_component_passwords for the pipeline and every collector; missing: "
            f"{', '.join(missing) or 'none'}.")


def route_auth_refusal(s: Settings) -> Optional[str]:
    if not as_bool(s["nats_cluster_route_auth_enabled"]) or (
            url_safe(s["nats_cluster_route_user"]) and url_safe(s["nats_cluster_route_password"], may_be_empty=True)):
        return None
    return ("nats_cluster_route_auth_enabled needs nats_cluster_route_user and nats_cluster_route_password (empty: "
            "kept, or random on the first install) made only of letters, digits and . _ ~ - (they are written into "
            "the route URLs).")


def system_user_refusal(s: Settings) -> Optional[str]:
    if not as_bool(s["nats_cluster_system_account_enabled"]) or url_safe(s["nats_cluster_system_user"]):
        return None
    return f"nats_cluster_system_user ({s['nats_cluster_system_user']}) must be made of letters, digits and . _ ~ -."


def route_tls_refusal(s: Settings) -> Optional[str]:
    if not as_bool(s["nats_cluster_route_tls_enabled"]) or as_bool(s["nats_cluster_tls_enabled"]):
        return None
    return ("nats_cluster_route_tls_enabled uses the TLS Secret nats_cluster_tls_enabled mounts (tls.crt, tls.key "
            "and ca.crt); set nats_cluster_tls_enabled too.")


def replicas_refusal(s: Settings) -> Optional[str]:
    if not as_bool(s["nats_cluster_jetstream_enabled"]) or as_int(s["nats_cluster_replicas"]) >= RAFT_QUORUM_SERVERS:
        return None
    return (f"A JetStream cluster needs at least {RAFT_QUORUM_SERVERS} servers for a Raft quorum that survives one "
            f"failure; nats_cluster_replicas is {s['nats_cluster_replicas']}.")


def storage_refusal(s: Settings) -> Optional[str]:
    storage, memory = s["nats_cluster_storage_size"], s["nats_cluster_memory_store_size"]
    if (QUANTITY.search(str(storage)) and QUANTITY.search(str(memory))
            and 0 < as_int(s["nats_cluster_file_store_percent"]) <= 100):
        return None
    return (f"nats_cluster_storage_size ({storage}) and nats_cluster_memory_store_size ({memory}) must be Kubernetes "
            "quantities such as 10Gi or 512Mi; nats_cluster_file_store_percent must be 1-100.")


def monitor_urls_refusal(s: Settings) -> Optional[str]:
    # With tapio_nats_reach=kubernetes the gate reads every pod's monitoring port through the
    # API server (the forward comes with module_defaults) and the URLs are not used.
    if s["nats_cluster_monitor_urls"] or s.get("tapio_nats_reach") == "kubernetes":
        return None
    return (f"nats_cluster_monitor_urls is empty: the NATS health gate needs every server's monitoring URL (port "
            f"{s['nats_cluster_monitor_port']}), or tapio_nats_reach=kubernetes.")


RULES: tuple[Callable[[Settings], Optional[str]], ...] = (
    operator_refusal, lame_duck_refusal, lame_duck_grace_refusal, auth_refusal, component_users_refusal,
    route_auth_refusal, system_user_refusal, route_tls_refusal, replicas_refusal, storage_refusal,
    monitor_urls_refusal)


def refusals(settings: Settings) -> list[str]:
    """Every rule the requested installation breaks, each a complete message; [] when none."""
    return [message for message in (rule(settings) for rule in RULES) if message]
