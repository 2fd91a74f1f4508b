# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The NATS users of a Tapio installation and what each may do (nats.conf ``authorization``).

With ``tapio_nats_component_users`` every component gets its own user, named after its
workload, with only the subjects it needs:

- the toolkit (``tapio_nats_user``): everything (it creates streams and consumers);
- each collector: publish to its own subject prefix (``<prefix>`` and ``<prefix>.>``) and
  receive replies on its own inbox (``_INBOX_<name>.>``, where JetStream sends the publish
  acknowledgement); it cannot publish another collector's subjects, call the JetStream API
  (no stream delete, purge or consumer create), read any stream, or subscribe to another
  client's inbox (the pipeline's pulled events and the toolkit's API replies go to theirs);
- the pipeline: read its durable consumer (``$JS.API.CONSUMER.INFO`` and
  ``$JS.API.CONSUMER.MSG.NEXT`` for that stream and consumer only), acknowledge its messages
  (``$JS.ACK.<stream>.<consumer>.>``) and receive replies on its own inbox; it cannot publish
  events;
- each declared extra consumer (``tapio_nats_extra_consumers``: a SIEM export, a debugging tap,
  a second correlation engine): the same as the pipeline, for its own durable consumer only.

A workload's client takes its replies on ``inbox_prefix(name)`` (``_INBOX_<name>``): the
migration sets it in the pods' env (``NATS_INBOX_PREFIX``) and Tapio's client passes it as its
NATS connection's inbox prefix (nats-py ``inbox_prefix``, nats.go ``CustomInboxPrefix``).

A filter, not a module: the same list is rendered into the nats_cluster role's nats.conf and
into the lab's loopback servers' configuration, so the permissions the lab enforces are the
ones the toolkit ships (tests/unit/test_nats_users_filter.py,
tests/integration/test_nats_component_users.py).
"""
from __future__ import annotations

import re
from typing import Any, Optional

from ansible.errors import AnsibleFilterError

SUBJECT_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
# Stream and consumer names: no whitespace, '.', '*', '>' or path separators (nats-server's rule).
JETSTREAM_NAME = re.compile(r"^[^\s.*>/\\]+$")
INBOX_PREFIX = "_INBOX_"
ALTERNATE_SUFFIX = "-rotated"  # the same as tapio_nats_credentials.ALTERNATE_SUFFIX


def inbox_prefix(name: str) -> str:
    """A workload's own inbox prefix: ``tapio-k8s-collector`` -> ``_INBOX_tapio-k8s-collector``
    (module_utils/tapio_workload.py sets the same in the pods' env)."""
    return INBOX_PREFIX + re.sub(r"[^A-Za-z0-9_-]", "_", str(name))


CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def passwords_with_control_characters(passwords: Any, component_passwords: Optional[dict[str, Any]] = None) -> list[str]:
    """The inventory names of the passwords holding a control character (a newline or tab from
    a vault file): *passwords* is ``{inventory name: value}`` (a plain string is
    ``tapio_nats_password``), then ``tapio_nats_component_passwords[<workload>]``. Only the
    names leave the template: the boilerplate's input check gets them, never a value."""
    named = passwords if isinstance(passwords, dict) else {"tapio_nats_password": passwords}
    found = [name for name, value in named.items() if isinstance(value, str) and CONTROL_CHARACTERS.search(value)]
    return found + [f"tapio_nats_component_passwords[{name}]" for name, value in (component_passwords or {}).items()
                    if isinstance(value, str) and CONTROL_CHARACTERS.search(value)]


def component_password_env(name: str) -> str:
    """The nats-server pod's env var holding a component's password: ``tapio-k8s-collector``
    -> ``NATS_PASSWORD_TAPIO_K8S_COLLECTOR`` (nats.conf reads ``$NAME``)."""
    return "NATS_PASSWORD_" + re.sub(r"[^A-Z0-9]", "_", str(name).upper())


def collector_permissions(subject_prefix: str, name: str) -> dict[str, Any]:
    return {"publish": {"allow": [subject_prefix, f"{subject_prefix}.>"]},
            "subscribe": {"allow": [f"{inbox_prefix(name)}.>"]}}


def pipeline_permissions(stream: str, consumer: str, name: str) -> dict[str, Any]:
    """Read and acknowledge one durable consumer (the pipeline's, or an extra consumer's)."""
    return {"publish": {"allow": [f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
                                  f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                                  f"$JS.ACK.{stream}.{consumer}.>"]},
            "subscribe": {"allow": [f"{inbox_prefix(name)}.>"]}}


def _problems(admin: dict[str, Any], pipeline: dict[str, Any], collectors: list[dict[str, Any]],
              stream: str, consumer: str, passwords: Optional[dict[str, Any]],
              extra: list[dict[str, Any]]) -> list[str]:
    problems = []
    if not admin.get("user"):
        problems.append("the toolkit's user (tapio_nats_user) is empty")
    names = ([str(c.get("name") or "") for c in collectors] + [str(pipeline.get("name") or "")]
             + [str(e.get("name") or "") for e in extra])
    if "" in names:
        problems.append("every collector, the pipeline and every extra consumer need a name")
    bad = [str(e.get("name")) for e in extra if e.get("name") and not JETSTREAM_NAME.match(str(e["name"]))]
    if bad:
        problems.append(f"extra consumer names must be JetStream names: {', '.join(bad)}")
    if consumer in {str(e.get("name")) for e in extra}:
        problems.append(f"the extra consumer {consumer} is the pipeline's durable consumer (tapio_pipeline_consumer)")
    duplicates = sorted({n for n in names if names.count(n) > 1} | ({admin.get("user")} & set(names)))
    if duplicates:
        problems.append(f"user names must be unique (the toolkit's user and each workload name): {', '.join(duplicates)}")
    # A password change moves a workload to the user <name>-rotated (tapio_nats_credentials.py).
    taken = sorted(({admin.get("user")} | set(names)) & {n + ALTERNATE_SUFFIX for n in names if n})
    if taken:
        problems.append(f"{', '.join(taken)}: a name ending in {ALTERNATE_SUFFIX} is the user another workload moves to "
                        "when its password changes; rename it")
    bad = [f"{c.get('name')}: {c['subject_prefix']!r}" if c.get("subject_prefix") else f"{c.get('name')}: none set"
           for c in collectors
           if not SUBJECT_PREFIX.match(str(c.get("subject_prefix") or ""))]
    if bad:
        problems.append(f"subject prefixes must be NATS subject tokens (a.b.c, no wildcards): {'; '.join(bad)}")
    for what, value in (("stream", stream), ("consumer", consumer)):
        if not JETSTREAM_NAME.match(str(value or "")):
            problems.append(f"the {what} name {value!r} is not a JetStream name")
    if passwords is not None:
        missing = [n for n in names if n and not passwords.get(n)]
        if missing:
            problems.append(f"no password for {', '.join(missing)} (tapio_nats_component_passwords)")
    return problems


def tapio_nats_users(admin: dict[str, Any], pipeline: dict[str, Any], collectors: list[dict[str, Any]],
                     stream: str, consumer: str, passwords: Optional[dict[str, Any]] = None,
                     credentials: Optional[list[dict[str, Any]]] = None,
                     extra_consumers: Optional[list[dict[str, Any]]] = None) -> list[dict[str, Any]]:
    """The ``users`` of nats.conf's ``authorization`` block.

    *admin* is ``{user, password}`` or ``{user, password_env}`` and keeps every permission.
    A component's user and password come from *credentials* when given (the nats_cluster
    role's plan, plugins/filter/tapio_nats_credentials.py: its current user, and its previous
    one with the same permissions while a password change rolls out), else from
    ``passwords[name]`` (the lab writes them into its own config), else nats-server reads the
    password from ``$NATS_PASSWORD_<NAME>``. Each of *extra_consumers* (``tapio_nats_extra_consumers``)
    gets a user named after it that reads and acknowledges its own durable consumer only."""
    extra = list(extra_consumers or [])
    problems = _problems(admin, pipeline, collectors, stream, consumer, passwords if credentials is None else None,
                         extra)
    planned = {entry["name"]: entry for entry in credentials or []}
    if credentials is not None:
        missing = [c.get("name") for c in [pipeline, *collectors, *extra] if c.get("name") not in planned]
        if missing:
            problems.append(f"no credentials planned for {', '.join(map(str, missing))}")
    if problems:
        raise AnsibleFilterError("tapio_nats_users: " + "; ".join(problems))

    def logins(name: str) -> list[dict[str, str]]:
        if credentials is not None:
            entry = planned[name]
            pairs = [{"user": entry["user"], "password": str(entry["password"])}]
            if entry.get("previous"):
                pairs.append({"user": entry["previous"]["user"], "password": str(entry["previous"]["password"])})
            return pairs
        if passwords is not None:
            return [{"user": name, "password": str(passwords[name])}]
        return [{"user": name, "password_env": component_password_env(name)}]

    users = [{key: admin[key] for key in ("user", "password", "password_env") if admin.get(key)}]
    users.extend({**login, "permissions": pipeline_permissions(stream, consumer, pipeline["name"])}
                 for login in logins(pipeline["name"]))
    for collector in collectors:
        users.extend({**login, "permissions": collector_permissions(collector["subject_prefix"], collector["name"])}
                     for login in logins(collector["name"]))
    for reader in extra:
        users.extend({**login, "permissions": pipeline_permissions(stream, reader["name"], reader["name"])}
                     for login in logins(reader["name"]))
    return users


CONSUMER_KEYS = ("description", "filter_subjects", "deliver_policy", "opt_start_time", "opt_start_seq", "ack_policy",
                 "ack_wait", "max_deliver", "max_ack_pending")


def extra_consumer_settings(consumers: list[dict[str, Any]], stream: str) -> list[dict[str, Any]]:
    """``tapio_nats_extra_consumers`` as the nats_jetstream module's ``consumers`` entries (the
    nats_consumer options): on the events stream, explicit acks and delivery of new events
    unless the entry says otherwise. An entry with ``replay: true`` is left out: replay.yml
    creates and resets that consumer (its user and Secret still come from the nats phase)."""
    return [{"stream": stream, "name": entry["name"], "description": f"Tapio extra consumer {entry['name']}",
             "ack_policy": "explicit", "deliver_policy": "new",
             **{key: entry[key] for key in CONSUMER_KEYS if entry.get(key) is not None}}
            for entry in consumers or [] if not entry.get("replay")]


def operator_clients_auth(users: list[dict[str, Any]]) -> dict[str, Any]:
    """*users* (``tapio_nats_users`` with literal passwords) as nats-operator's
    ``clientsAuthSecret`` JSON: ``{"users": [{username, password, permissions}]}``, each
    permission a list of allowed subjects (nats-operator has no deny lists, so a user with one
    is refused rather than given more than it should have)."""
    converted = []
    for user in users:
        if "password" not in user:
            raise AnsibleFilterError(f"tapio_nats_operator_clients_auth: user {user.get('user')} has no literal password")
        entry: dict[str, Any] = {"username": str(user["user"]), "password": str(user["password"])}
        permissions = user.get("permissions") or {}
        if permissions:
            if any("deny" in (permissions.get(d) or {}) for d in ("publish", "subscribe")):
                raise AnsibleFilterError(f"tapio_nats_operator_clients_auth: user {user['user']} has a deny "
                                         "permission, which nats-operator cannot express")
            entry["permissions"] = {d: list((permissions.get(d) or {}).get("allow") or [])
                                    for d in ("publish", "subscribe")}
        converted.append(entry)
    return {"users": converted}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"tapio_nats_users": tapio_nats_users, "tapio_nats_password_env": component_password_env,
                "tapio_nats_inbox_prefix": inbox_prefix,
                "tapio_passwords_with_control_characters": passwords_with_control_characters,
                "tapio_nats_operator_clients_auth": operator_clients_auth,
                "tapio_extra_consumer_settings": extra_consumer_settings}
