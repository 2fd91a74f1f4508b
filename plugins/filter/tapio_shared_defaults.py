# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The defaults of the inventory settings every phase shares, each written once.

A role's defaults are its interface and must work when the role is used on its own, outside
the entry playbooks, so each role reads the shared inventory variable itself. When the
inventory leaves it unset, the default comes from here rather than from a literal repeated in
every role::

    nats_streams_events_stream_name: "{{ tapio_events_stream | default('tapio_events_stream' | tapio_shared_default) }}"

A filter rather than a variable: a variable set in one role (or a vars file) would be missing
from a role used alone, while filter_plugins (ansible.cfg) reach every role of the project.
Tested in tests/unit/test_shared_defaults_filter.py.
"""
from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

SHARED_DEFAULTS: dict[str, Any] = {
    # The JetStream stream of Tapio's events: created by nats_streams, read by every other phase.
    "tapio_events_stream": "TAPIO_EVENTS",
    # One NATS user per workload, each allowed only its own subjects (a production protection:
    # turning it off needs the opt-out shared_user, module_utils/tapio_nats_install_rules.py).
    "tapio_nats_component_users": True,
}


def shared_default(name: str) -> Any:
    """The default of the shared inventory variable *name*."""
    try:
        return SHARED_DEFAULTS[name]
    except KeyError:
        raise AnsibleFilterError(f"tapio_shared_default: {name!r} has no shared default "
                                 f"(known: {', '.join(sorted(SHARED_DEFAULTS))})") from None


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"tapio_shared_default": shared_default}
