# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Each workload's NATS credentials across a password change, without a moment when its pods
hold a password the servers refuse.

A workload reads ``NATS_USER`` and ``NATS_PASSWORD`` from its Secret when its pods start, and
nats-server disconnects every client whose credentials a reload no longer accepts. So a new
password cannot simply replace the old one: the servers must accept both while the pods roll.
nats-server refuses two users of one name, so a workload's user alternates between two names,
``<workload>`` and ``<workload>-rotated``, one per password change:

1. ``rotate``: the Secret gets the other name with the new password, and keeps the old pair
   as ``NATS_PREVIOUS_USER``/``NATS_PREVIOUS_PASSWORD``; the servers reload with both users
   (the same permissions; the inbox is named after the workload, not the user).
2. The workloads that read the Secret are restarted and their rollouts waited for
   (library/tapio_secret_readers.py); each new pod connects as the new user.
3. ``retired``: the previous pair leaves the Secret and the servers' users.

A run stopped between 1 and 3 leaves the previous pair in the Secret; the next run with the
same password finishes the change (``finish``). Everything here is a pure function of the
inventory and the Secrets read (tests/unit/test_nats_credentials_filter.py).
"""
from __future__ import annotations

import base64
import secrets
import string
from typing import Any, Optional

from ansible.errors import AnsibleFilterError

ALTERNATE_SUFFIX = "-rotated"
USER_KEY = "NATS_USER"
PASSWORD_KEY = "NATS_PASSWORD"
PREVIOUS_USER_KEY = "NATS_PREVIOUS_USER"
PREVIOUS_PASSWORD_KEY = "NATS_PREVIOUS_PASSWORD"
GENERATED_LENGTH = 32
GENERATED_ALPHABET = string.ascii_letters + string.digits


def alternate_user(name: str, current: str) -> str:
    """The user a new password goes to: the other of ``name`` and ``name-rotated``."""
    return name + ALTERNATE_SUFFIX if current == name else name


def generated_password() -> str:
    """A workload's password on the first install when the inventory gives none."""
    return "".join(secrets.choice(GENERATED_ALPHABET) for _ in range(GENERATED_LENGTH))


def _decoded(data: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(str(value)).decode("utf-8") for key, value in (data or {}).items()}


def credential_plan(names: list[str], passwords: dict[str, Any], kept: dict[str, Any],
                    secret_prefix: str) -> list[dict[str, Any]]:
    """One entry per workload name: ``{name, secret, user, password, previous, action}``.

    *kept* maps a Secret's name to its ``data`` as the API returns it (base64; ``{}`` or
    absent when the Secret does not exist). A workload without a password in *passwords* keeps
    the one its Secret holds, or gets a random one when there is none yet. ``previous`` is
    ``{}`` or ``{user, password}``; ``action`` is ``create`` (no Secret yet), ``keep``,
    ``rotate`` or ``finish``."""
    plan = []
    for name in names:
        secret = f"{secret_prefix}{name}"
        held = _decoded(kept.get(secret) or {})
        current_user, current_password = held.get(USER_KEY, ""), held.get(PASSWORD_KEY, "")
        desired = str(passwords.get(name) or current_password or generated_password())
        previous = ({"user": held[PREVIOUS_USER_KEY], "password": held.get(PREVIOUS_PASSWORD_KEY, "")}
                    if held.get(PREVIOUS_USER_KEY) else {})
        entry: dict[str, Any] = {"name": name, "secret": secret, "user": current_user or name,
                                 "password": desired, "previous": previous}
        if not current_password:
            entry.update(user=name, previous={}, action="create")
        elif current_password == desired:
            entry["action"] = "finish" if previous else "keep"
        elif previous:
            raise AnsibleFilterError(
                f"tapio_nats_component_passwords[{name}]: the password change of {name} is still being rolled out "
                f"(its Secret {secret} holds the previous user {previous['user']}); run the nats phase once more with "
                "the password it was changing to, then change it again. Nothing was changed.")
        else:
            entry.update(user=alternate_user(name, current_user),
                         previous={"user": current_user, "password": current_password}, action="rotate")
        plan.append(entry)
    return plan


def retired(plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The plan once every workload runs on its new user: no previous pair anywhere."""
    return [{**entry, "previous": {}, "action": "keep"} for entry in plan]


def rolling(plan: list[dict[str, Any]]) -> list[str]:
    """The Secrets whose readers must restart: a change started in this run or an earlier one."""
    return [entry["secret"] for entry in plan if entry["previous"]]


def readers(plan: list[dict[str, Any]], pipeline_name: str, namespace: str,
            extra_consumers: Optional[list[dict[str, Any]]] = None) -> list[dict[str, Any]]:
    """The workloads to restart for the changes in *plan* (library/tapio_credentials_rollout.py's
    ``workloads``): each changed workload, the pipeline a Deployment and a collector a
    DaemonSet, in the Secret's namespace (the only one whose pods can read it). An extra
    consumer's reader (``tapio_nats_extra_consumers``) is its entry's ``workload``
    (``{kind, name}``); an entry without one has no reader the toolkit knows and is left out."""
    extra = {str(entry.get("name")): entry.get("workload") for entry in extra_consumers or []}
    found = []
    for entry in plan:
        if not entry["previous"]:
            continue
        if entry["name"] in extra:
            workload = extra[entry["name"]]
            if not workload:
                continue
            kind, name = workload["kind"], workload["name"]
        else:
            kind, name = ("Deployment" if entry["name"] == pipeline_name else "DaemonSet"), entry["name"]
        found.append({"kind": kind, "name": name, "namespace": namespace, "secret": entry["secret"],
                      "user": entry["user"]})
    return found


def secret_data(entry: dict[str, Any]) -> dict[str, str]:
    """The Secret's keys (plain text, for stringData): the pair the pods read, and the
    previous pair while a change rolls out."""
    data = {USER_KEY: str(entry["user"]), PASSWORD_KEY: str(entry["password"])}
    if entry["previous"]:
        data.update({PREVIOUS_USER_KEY: str(entry["previous"]["user"]),
                     PREVIOUS_PASSWORD_KEY: str(entry["previous"]["password"])})
    return data


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"tapio_nats_credential_plan": credential_plan, "tapio_nats_credentials_retired": retired,
                "tapio_nats_credentials_rolling": rolling,
                "tapio_nats_credential_readers": readers, "tapio_nats_credential_secret_data": secret_data}
