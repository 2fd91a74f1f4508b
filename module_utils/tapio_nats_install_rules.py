# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What a NATS installation must satisfy before anything is changed: every refusal of the
nats_cluster role (``refusals``, through the filter plugins/filter/tapio_nats_install.py in
roles/nats_cluster/tasks/validate.yml), and the rules the boilerplate's input check
(tapio_inputs.py) shares with it.

The role refuses on its own, so it still does when used without the boilerplate; where the
boilerplate checks the same thing earlier (route credentials that fit a URL), both call the one
function here. The protections a production cluster runs with (a user per workload, client and
route TLS) and the named opt-outs that turn each off are here too (``security_opt_outs``):
the boilerplate refuses a weaker setting that is not opted out, and preflight names those that
are. Values are read as the inventory gives them,
the way Ansible's ``bool`` and ``int`` filters read them.

Only the standard library and ansible-core: the filter loads this file by its path on the
control node, where the project's other module_utils are not importable.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Optional

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
    if not as_bool(s["nats_cluster_auth_enabled"]):
        return ("tapio_nats_component_users needs nats_cluster_auth_enabled: the servers check each workload's user "
                "and password.")
    # The statefulset method keeps a workload's password in its Secret, or makes a random one
    # (plugins/filter/tapio_nats_credentials.py); nats-operator's users come from the inventory only.
    passwords = s["nats_cluster_component_passwords"] or {}
    missing = [str(component.get("name", "")) for component in s["nats_cluster_components"]
               if not passwords.get(str(component.get("name", "")))]
    if s["nats_cluster_method"] != "operator" or not missing:
        return None
    return ("nats_cluster_method=operator with tapio_nats_component_users needs a password in "
            "tapio_nats_component_passwords for the pipeline and every collector (nats-operator's users come from "
            f"the inventory alone); missing: {', '.join(missing)}.")


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


# -- the protections a production NATS runs with, and the named opt-outs -------------------
# Each opt-out turns one protection off; the inventory lists the ones it accepts in
# tapio_nats_security_opt_outs, and preflight names each one in effect in its summary.
OPT_OUTS: dict[str, str] = {
    "shared_user": (
        "every workload connects as the toolkit's own user (tapio_nats_component_users: false), which may read, "
        "purge or delete the events stream: one compromised collector pod could"),
    "plaintext_clients": (
        "client connections to NATS are not encrypted (nats_cluster_tls_enabled: false or "
        "nats_cluster_tls_allow_non_tls: true; for NATS from outside, a tapio_nats_url that is not tls://), so "
        "passwords and events cross the network in clear"),
    "plaintext_routes": (
        "the routes between the NATS servers are not encrypted (nats_cluster_route_tls_enabled: false, or the "
        "operator method, which this toolkit installs without TLS), so JetStream's replication traffic crosses "
        "the network in clear"),
}


def weakened_protections(s: Settings) -> list[str]:
    """The opt-outs (keys of OPT_OUTS) the settings amount to. *s*: the inventory variables by
    name, only those set; unset ones take the toolkit's defaults (all protections on)."""
    weakened = [] if as_bool(s.get("tapio_nats_component_users", True)) else ["shared_user"]
    if not as_bool(s.get("tapio_nats_install", True)):
        urls = [url.strip() for url in str(s.get("tapio_nats_url") or "").split(",") if url.strip()]
        # Routes of a NATS run by others are theirs to judge.
        return weakened + ([] if urls and all(url.startswith("tls://") for url in urls) else ["plaintext_clients"])
    if str(s.get("nats_cluster_method") or "statefulset") == "operator":
        return weakened + ["plaintext_clients", "plaintext_routes"]
    if not as_bool(s.get("nats_cluster_tls_enabled", True)) or as_bool(s.get("nats_cluster_tls_allow_non_tls", False)):
        weakened.append("plaintext_clients")
    if not as_bool(s.get("nats_cluster_route_tls_enabled", True)):
        weakened.append("plaintext_routes")
    return weakened


def opted_out(s: Settings) -> list[str]:
    """tapio_nats_security_opt_outs as a list of names (a single name is accepted too)."""
    given = s.get("tapio_nats_security_opt_outs") or []
    return [str(name) for name in ([given] if isinstance(given, str) else list(given))]


def security_opt_outs(s: Settings) -> list[dict[str, str]]:
    """The opt-outs in effect, each ``{name, why}``, for preflight's summary."""
    accepted = opted_out(s)
    return [{"name": name, "why": OPT_OUTS[name]} for name in weakened_protections(s) if name in accepted]


def security_problems(s: Settings, host: str) -> list[str]:
    """A weaker setting the inventory has not opted out of, and unknown opt-out names."""
    accepted = opted_out(s)
    problems = [f"{host}: tapio_nats_security_opt_outs holds {name!r}, which is not an opt-out "
                f"(known: {', '.join(OPT_OUTS)})" for name in accepted if name not in OPT_OUTS]
    return problems + [
        f"{host}: {OPT_OUTS[name]}. Turn the protection on, or accept this by adding {name!r} to "
        "tapio_nats_security_opt_outs (preflight then names it in its summary)"
        for name in weakened_protections(s) if name not in accepted]
