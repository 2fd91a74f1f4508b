# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The NATS env the migration sets in the container it owns of a Tapio workload, and which
Secret each workload reads its NATS credentials from: one rule for the pipeline and the
collectors (roles/tapio_pipeline and roles/tapio_collectors, vars/main.yml).

Both filters take the same *settings*, a role's env settings by their role-variable suffix
(``mode_env``, ``credentials_secret``, ...; the pipeline adds ``consume_subjects``):

- ``tapio_workload_env_entries``: the engine's ``env`` option: the output mode, ``NATS_URL``,
  the pipeline's ``CONSUME_SUBJECTS``, ``LOG_LEVEL``; the user and password by secretKeyRef
  from the shared credentials Secret when one is named; the CA by secretKeyRef when a CA
  Secret is named; then the user's extra entries.
- ``tapio_workload_secrets``: the engine's ``workload_secrets`` option: with one NATS user per
  workload (``component_users``) and a shared Secret named, the engine points each workload's
  secretKeyRefs at ``<component_secret_prefix><workload>`` (module_utils/tapio_workload.py,
  ``workload_env``) and sets ``inbox_env``; otherwise ``{}``, every workload reading the
  shared Secret.

Tested in tests/unit/test_nats_env_filter.py.
"""
from __future__ import annotations

from typing import Any, Mapping

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

Settings = Mapping[str, Any]
EnvEntry = dict[str, Any]

REQUIRED = ("mode_env", "mode_value", "nats_url", "log_level", "credentials_secret", "credentials_user_key",
            "credentials_password_key", "user_env", "password_env", "component_users", "component_secret_prefix",
            "inbox_env", "ca_secret", "ca_key", "ca_env", "extra_env")


def _checked(settings: Settings, filter_name: str) -> Settings:
    """A misspelt or forgotten setting fails naming it, instead of a bare KeyError."""
    missing = [key for key in REQUIRED if key not in settings]
    if missing:
        raise AnsibleFilterError(f"{filter_name}: settings without {', '.join(missing)}")
    return settings


def secret_env(name: str, secret: str, key: str) -> EnvEntry:
    """An env entry read from a Secret's key, so the value never appears in the pod spec."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def plain_env(settings: Settings) -> list[EnvEntry]:
    entries = [{"name": settings["mode_env"], "value": settings["mode_value"]},
               {"name": "NATS_URL", "value": settings["nats_url"]}]
    if "consume_subjects" in settings:  # the pipeline's, which the collectors have not
        entries.append({"name": "CONSUME_SUBJECTS", "value": settings["consume_subjects"]})
    entries.append({"name": "LOG_LEVEL", "value": settings["log_level"]})
    return entries


def credentials_env(settings: Settings) -> list[EnvEntry]:
    secret = settings["credentials_secret"]
    if not secret:
        return []
    return [secret_env(settings["user_env"], secret, settings["credentials_user_key"]),
            secret_env(settings["password_env"], secret, settings["credentials_password_key"])]


def ca_env(settings: Settings) -> list[EnvEntry]:
    if not settings["ca_secret"]:
        return []
    return [secret_env(settings["ca_env"], settings["ca_secret"], settings["ca_key"])]


def workload_env_entries(settings: Settings) -> list[EnvEntry]:
    """The env entries the migration sets (every other entry of the container is kept)."""
    _checked(settings, "tapio_workload_env_entries")
    return [*plain_env(settings), *credentials_env(settings), *ca_env(settings), *(settings["extra_env"] or [])]


def workload_secrets(settings: Settings) -> dict[str, Any]:
    """Where each workload's secretKeyRefs point: ``{}`` for the shared Secret, or
    ``{shared, prefix, inbox_env}`` for one Secret (and NATS user) per workload."""
    _checked(settings, "tapio_workload_secrets")
    if not (boolean(settings["component_users"], strict=False) and settings["credentials_secret"]):
        return {}
    return {"shared": settings["credentials_secret"], "prefix": settings["component_secret_prefix"],
            "inbox_env": settings["inbox_env"]}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"tapio_workload_env_entries": workload_env_entries, "tapio_workload_secrets": workload_secrets}
