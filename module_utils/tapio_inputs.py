# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The boilerplate play's checks of versions and inventory, before anything is changed.

Each rule is a small function of the inventory's variables (by their inventory names, only
those that are set) returning the problems it finds, each a complete message naming the
variable; ``problems_of`` runs them all. library/tapio_inputs.py only maps its options to
those names and reports. The messages are the ones the boilerplate's tasks printed before
this module replaced them (tests/integration/test_inputs.py checks them). The rules the
nats_cluster role also checks itself (a password for every workload, a route password that
fits a URL) are in tapio_nats_install_rules, which both call.
"""
from __future__ import annotations

import os
import re
from typing import Any, Optional

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.compat.version import LooseVersion
from ansible.module_utils.tapio_extra_consumers import problems_of as extra_consumer_rules
from ansible.module_utils.tapio_kube import KUBERNETES_IMPORT_ERROR, KUBERNETES_REQUIREMENT
from ansible.module_utils.tapio_nats import NATS_IMPORT_ERROR, NATS_REQUIREMENT
from ansible.module_utils.tapio_nats_config import subject_is_within, subjects_overlap
# Shared with the nats_cluster role's refusals, which must hold when the role runs alone.
from ansible.module_utils.tapio_nats_install_rules import as_bool, as_int, security_problems, url_safe

Inputs = dict[str, Any]

MINIMUM_ANSIBLE = "2.19"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
SUBJECT_TOKENS = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
NATS_SERVER_URL = r"^(nats|tls)://[^/]+$"
URL_CREDENTIALS = r"^[a-z]+://([^/]*)@"
# One or more comma-separated nats:// or tls:// URLs of a host name or address and a port: the
# value goes into pod env and, quoted, into the preflight probe's command.
NATS_URL_LIST = r"^(nats|tls)://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?(,(nats|tls)://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?)*$"
# Subjects NATS itself uses: request replies (_INBOX, and each workload's _INBOX_<name>),
# service import replies (_R_).
RESERVED_SUBJECT_PREFIXES = ("_INBOX", "_R_")
DEFAULT_EVENTS_SUBJECTS = "tapio.events.>"

REACH_MESSAGE = (
    "Invalid NATS reach for {host} (tapio_nats_reach=kubernetes): tapio_nats_kube_port_forward (one pod, for "
    "direct reach) cannot be combined with it; give tapio_nats_kube_selector or tapio_nats_kube_service, not both "
    "(the default selector names the nats phase's StatefulSet pods, so the operator method needs one of them); "
    "tapio_nats_kube_client_port and tapio_nats_kube_monitor_port must be TCP ports.")
CREDENTIALS_MESSAGE = (
    "{count} NATS URL(s) in {host}'s tapio_nats_servers / tapio_nats_url carry credentials (user:password@ or "
    "token@). URLs are printed and written into pod specs: set tapio_nats_user and tapio_nats_password (from a "
    "vault), tapio_nats_token or tapio_nats_creds_file instead, and plain URLs.")
NAMES_MESSAGE = (
    "Invalid inventory for {host}: namespace={namespace}, pipeline={pipeline}, collector names that are not "
    "DNS-1123 labels={bad_names}, subject prefixes that are not NATS subject tokens (a.b.c, no wildcards)="
    "{bad_subjects}, collector names must be unique, NATS servers not nats:// or tls:// URLs={bad_servers}")
ROUTE_PASSWORD_MESSAGE = (
    "Invalid NATS users for {host}: tapio_nats_route_password may hold only letters, digits and . _ ~ - (it is "
    "part of the route URLs).")


def inventory_spec(nats_direct: bool) -> dict[str, Any]:
    """The argument spec the inventory's types are validated with (tapio_nats_servers is
    required only when the control node dials NATS directly)."""
    return {
        "tapio_namespace": {"type": "str", "required": True},
        "tapio_kubeconfig": {"type": "path"},
        "tapio_kube_context": {"type": "str"},
        "tapio_pipeline": {"type": "dict", "required": True, "options": {
            "name": {"type": "str", "required": True},
            "container": {"type": "str", "required": True}}},
        "tapio_collectors": {"type": "list", "elements": "dict", "required": True, "options": {
            "name": {"type": "str", "required": True},
            "container": {"type": "str", "required": True},
            "subject_prefix": {"type": "str", "required": True}}},
        "tapio_nats_servers": {"type": "list", "elements": "str", "required": nats_direct},
        "tapio_nats_reach": {"type": "str", "choices": ["direct", "kubernetes"]},
    }


def reach(inputs: Inputs) -> str:
    return str(inputs.get("tapio_nats_reach", "direct"))


def matches(pattern: str, value: Any) -> bool:
    return isinstance(value, str) and re.match(pattern, value) is not None


def ansible_version_problems(running: str, minimum: str = MINIMUM_ANSIBLE) -> list[str]:
    if LooseVersion(running) >= LooseVersion(minimum):
        return []
    return [f"ansible-core >= {minimum} is required (running {running}); run scripts/bootstrap"]


def missing_libraries() -> list[tuple[str, str]]:
    """(requirement, import traceback) of each library the modules need and cannot import,
    from the import guards of module_utils/tapio_nats.py and tapio_kube.py."""
    guards = ((NATS_REQUIREMENT, NATS_IMPORT_ERROR), (KUBERNETES_REQUIREMENT, KUBERNETES_IMPORT_ERROR))
    return [(requirement, error) for requirement, error in guards if error is not None]


def library_problems(missing: list[tuple[str, str]]) -> list[str]:
    return [missing_required_lib(requirement) for requirement, _error in missing]


def validated_types(inputs: Inputs) -> tuple[list[str], Inputs]:
    """The inventory's types checked as validate_argument_spec did: its message (empty when
    the types are right) and the inputs with the validated values (paths expanded)."""
    spec = inventory_spec(reach(inputs) != "kubernetes")
    result = ArgumentSpecValidator(spec).validate({name: value for name, value in inputs.items() if name in spec})
    if result.error_messages:
        return ["Validation of arguments failed:\n" + "\n".join(result.error_messages)], inputs
    validated = result.validated_parameters
    return [], {name: validated.get(name, value) if name in spec else value for name, value in inputs.items()}


def reach_problems(inputs: Inputs, host: str) -> list[str]:
    """tapio_nats_reach=kubernetes: every NATS pod is found by one selector or Service; the
    one-pod forward is the direct-reach alternative, so the two together are refused."""
    if reach(inputs) != "kubernetes":
        return []
    selector, service = str(inputs.get("tapio_nats_kube_selector") or ""), str(inputs.get("tapio_nats_kube_service") or "")
    statefulset = inputs.get("nats_cluster_method", "statefulset") == "statefulset"
    valid = (not inputs.get("tapio_nats_kube_port_forward")
             and not (selector and service)
             and (statefulset or not as_bool(inputs.get("tapio_nats_install", True)) or bool(selector + service))
             and 1 <= as_int(inputs.get("tapio_nats_kube_client_port", 4222)) <= 65535
             and 1 <= as_int(inputs.get("tapio_nats_kube_monitor_port", 8222)) <= 65535)
    return [] if valid else [REACH_MESSAGE.format(host=host)]


def nats_urls(inputs: Inputs) -> list[str]:
    """tapio_nats_servers and tapio_nats_url (unset or empty: none); before the types are
    checked, servers given as one string are the comma-separated list Ansible reads there."""
    servers = inputs.get("tapio_nats_servers") or []
    if isinstance(servers, str):
        servers = servers.split(",")
    return [str(url) for url in (servers if isinstance(servers, list) else [servers])] + [
        str(inputs.get("tapio_nats_url") or "")]


def url_credentials(inputs: Inputs) -> list[str]:
    """The ``user:password`` (or token) written into each NATS URL that carries one: the
    module hides them in everything it returns."""
    found = (re.match(URL_CREDENTIALS, url) for url in nats_urls(inputs))
    return [match.group(1) for match in found if match]


def credential_problems(inputs: Inputs, host: str) -> list[str]:
    """Credentials in a URL would be printed (at -v, in reports) and, for tapio_nats_url,
    written into pod specs."""
    count = sum(1 for url in nats_urls(inputs) if re.match(URL_CREDENTIALS, url))
    return [CREDENTIALS_MESSAGE.format(count=count, host=host)] if count else []


def name_problems(inputs: Inputs, host: str) -> list[str]:
    """Names Kubernetes accepts, subject prefixes that are plain NATS tokens, unique
    collectors, and NATS servers as nats:// or tls:// URLs."""
    namespace, pipeline = inputs["tapio_namespace"], inputs["tapio_pipeline"]["name"]
    names = [collector["name"] for collector in inputs["tapio_collectors"]]
    bad_names = [name for name in names if not matches(DNS_LABEL, name)]
    bad_subjects = [c["subject_prefix"] for c in inputs["tapio_collectors"] if not matches(SUBJECT_TOKENS, c["subject_prefix"])]
    servers = inputs.get("tapio_nats_servers") or []
    bad_servers = [server for server in servers if not matches(NATS_SERVER_URL, server)]
    valid = (matches(DNS_LABEL, namespace) and matches(DNS_LABEL, pipeline) and names and not bad_names
             and not bad_subjects and len(set(names)) == len(names)
             and (servers or reach(inputs) == "kubernetes") and not bad_servers)
    if valid:
        return []
    return [NAMES_MESSAGE.format(host=host, namespace=namespace, pipeline=pipeline, bad_names=bad_names,
                                 bad_subjects=bad_subjects, bad_servers=bad_servers)]


def nats_user_problems(inputs: Inputs, host: str) -> list[str]:
    """The route password goes into the route URLs as it is. (A workload without a password in
    tapio_nats_component_passwords keeps its Secret's, or gets a random one.)"""
    if url_safe(inputs.get("tapio_nats_route_password") or "", may_be_empty=True):
        return []
    return [ROUTE_PASSWORD_MESSAGE.format(host=host)]


def subject_prefix_problems(inputs: Inputs, host: str) -> list[str]:
    """Each collector publishes under ``<subject_prefix>.>``: inside the events stream's
    subjects (or its events are not stored), not NATS's own reply subjects, and apart from every
    other collector's (a collector's gate counts the messages under its prefix, so a broken one
    would pass on another's events)."""
    stream = str(inputs.get("tapio_consume_subjects") or DEFAULT_EVENTS_SUBJECTS)
    named = [(c["name"], c["subject_prefix"]) for c in inputs["tapio_collectors"]
             if matches(SUBJECT_TOKENS, c["subject_prefix"])]
    problems = [f"{host}: collector {name}'s subject_prefix {prefix} is a subject NATS reserves "
                f"({', '.join(RESERVED_SUBJECT_PREFIXES)}); choose one under {stream}"
                for name, prefix in named if prefix.split(".")[0].startswith(RESERVED_SUBJECT_PREFIXES)]
    problems += [f"{host}: collector {name}'s subjects {prefix}.> are outside the events stream's subjects "
                 f"{stream} (tapio_consume_subjects): its events would not be stored"
                 for name, prefix in named if not subject_is_within(f"{prefix}.>", stream)]
    for index, (name, prefix) in enumerate(named):
        for other, other_prefix in named[index + 1:]:
            # A collector listed twice is the names rule's to report.
            if other != name and subjects_overlap(f"{prefix}.>", f"{other_prefix}.>"):
                problems.append(f"{host}: collectors {name} and {other} publish under overlapping subject prefixes "
                                f"({prefix}, {other_prefix}): each collector's gate would count the other's events; "
                                "give each a prefix of its own")
    return problems


def extra_consumer_names(inputs: Inputs) -> list[str]:
    """The names of tapio_nats_extra_consumers' entries (each is a NATS user of its own)."""
    consumers = inputs.get("tapio_nats_extra_consumers")
    return [str(entry["name"]) for entry in consumers if isinstance(entry, dict) and entry.get("name")] \
        if isinstance(consumers, list) else []


def extra_consumer_problems(inputs: Inputs, host: str) -> list[str]:
    """tapio_nats_extra_consumers (module_utils/tapio_extra_consumers.py): each entry's fields,
    its filter inside the events stream's subjects, and names that are not the pipeline's
    consumer, another entry's or another user's."""
    taken = [str(inputs.get("tapio_nats_user") or "tapio"), inputs["tapio_pipeline"]["name"],
             *[c["name"] for c in inputs["tapio_collectors"]]]
    problems = extra_consumer_rules(inputs.get("tapio_nats_extra_consumers"),
                                    [str(inputs.get("tapio_consume_subjects") or DEFAULT_EVENTS_SUBJECTS)],
                                    str(inputs.get("tapio_pipeline_consumer") or "tapio-pipeline"), taken)
    return [f"{host}: {problem}" for problem in problems]


def password_problems(inputs: Inputs, host: str) -> list[str]:
    """Passwords go into nats.conf, Secrets and env: a control character (a newline from a
    vault file, a tab) would break the first and silently differ in the others. The
    boilerplate passes the names of such passwords only (filter
    tapio_passwords_with_control_characters), never a value."""
    return [f"{host}: {name} holds a control character (a newline or tab, often from a vault file's end); "
            "remove it" for name in inputs.get("tapio_nats_passwords_with_control_characters") or []]


def nats_url_problems(inputs: Inputs, host: str) -> list[str]:
    """tapio_nats_url, the URL the pods and the preflight probe use: nats:// or tls:// URLs of
    a host and port, comma-separated (a URL with credentials is reported on its own)."""
    url = inputs.get("tapio_nats_url")
    if url in (None, "") or re.match(URL_CREDENTIALS, str(url)) or matches(NATS_URL_LIST, url):
        return []
    return [f"{host}: tapio_nats_url {url!r} is not a nats:// or tls:// URL of a host and port "
            "(comma-separate several, for example nats://tapio-nats:4222)"]


def kube_context_problems(inputs: Inputs, host: str) -> list[str]:
    """Without tapio_kube_context the kubeconfig's current context is migrated, whichever cluster
    someone last switched to."""
    if str(inputs.get("tapio_kube_context") or ""):
        return []
    return [f"{host}: tapio_kube_context is not set, so the kubeconfig's current context would be migrated, "
            "whichever cluster that is at the time; name the context of this cluster"]


def collector_order_problems(inputs: Inputs, host: str) -> list[str]:
    """The rollout order and batch size, checked before the pipeline switches (the collectors
    phase comes after it)."""
    names = [c["name"] for c in inputs["tapio_collectors"]]
    problems = []
    order = inputs.get("tapio_collectors_order")
    if order is not None:
        listed = [str(name) for name in order] if isinstance(order, list) else None
        unknown = [n for n in listed or [] if n not in names]
        repeated = sorted({n for n in listed or [] if listed.count(n) > 1})
        if listed is None or not listed or unknown or repeated:
            problems.append(f"{host}: tapio_collectors_order {order} must list collectors of tapio_collectors "
                            f"({', '.join(names)}), each at most once; unknown: {', '.join(unknown) or 'none'}; "
                            f"repeated: {', '.join(repeated) or 'none'}")
    size = inputs.get("tapio_collectors_batch_size")
    if size is not None and (isinstance(size, bool) or not str(size).strip().isdigit() or int(str(size)) < 1):
        problems.append(f"{host}: tapio_collectors_batch_size {size!r} must be a whole number of at least 1")
    return problems


# tapio_lease.MINIMUM_DURATION (not imported: that module needs the kubernetes library, which
# this check may be the one to find missing); a unit test keeps the two equal.
MINIMUM_LOCK_DURATION = 30


def lock_duration_problems(inputs: Inputs, host: str) -> list[str]:
    """The run's Lease is renewed every third of its duration (10 s at most) and given up after
    two thirds without a renewal: below 30 s a slow API server could cost the run its Lease."""
    duration = inputs.get("tapio_lock_duration")
    if duration is None or (not isinstance(duration, bool) and str(duration).strip().isdigit()
                            and int(str(duration)) >= MINIMUM_LOCK_DURATION):
        return []
    return [f"{host}: tapio_lock_duration {duration!r} must be a whole number of seconds, at least "
            f"{MINIMUM_LOCK_DURATION}"]


def kubeconfig_problems(inputs: Inputs, given: Optional[str]) -> list[str]:
    """The kubeconfig must exist on the control node, where this runs (``given``: the value
    as the inventory wrote it, for the message)."""
    if "tapio_kubeconfig" not in inputs or os.path.exists(str(inputs["tapio_kubeconfig"])):
        return []
    return [f"tapio_kubeconfig {given} does not exist (for the lab: scripts/lab up)"]


def problems_of(inputs: Inputs, host: str, running_ansible: str, missing: list[tuple[str, str]]) -> list[str]:
    """Every problem, in the order the boilerplate checked them. Wrong types make the checks
    after them meaningless, so they are the last reported."""
    problems = ansible_version_problems(running_ansible) + library_problems(missing)
    type_errors, validated = validated_types(inputs)
    if type_errors:
        return problems + type_errors
    return (problems + reach_problems(validated, host) + credential_problems(validated, host)
            + name_problems(validated, host) + subject_prefix_problems(validated, host)
            + extra_consumer_problems(validated, host)
            + nats_user_problems(validated, host) + password_problems(validated, host)
            + nats_url_problems(validated, host) + kube_context_problems(validated, host)
            + collector_order_problems(validated, host) + lock_duration_problems(validated, host)
            + security_problems(validated, host)
            + kubeconfig_problems(validated, inputs.get("tapio_kubeconfig")))
