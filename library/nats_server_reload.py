#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: nats_server_reload
short_description: Make every NATS server load its current configuration files, without a restart
description:
  - Connects as a system account user to each server URL on its own, reads every server's
    C(/varz) over the system account (C($SYS.REQ.SERVER.PING.VARZ)) and asks each server whose
    C(server_metadata) revision is not O(revision) to reload its configuration
    (the system request C($SYS.REQ.SERVER.<id>.RELOAD)), again on each pass until every one of O(expected_servers)
    servers reports O(revision) or O(wait_timeout) seconds have passed. A server may answer
    with the old revision for a while (the kubelet projects a changed ConfigMap or Secret into
    the pod's volume within its sync period).
  - Users, permissions, the route password and TLS certificates change this way with every
    client and route staying up (except those the change no longer allows).
  - A server that refuses to reload (an invalid file, or a change nats-server cannot reload)
    fails the module with the server's reason.
  - In check mode nothing is asked: the result names the servers that would reload.
version_added: "1.0.0"
author: Tapio NATS migration toolkit
requirements:
  - python >= 3.9
  - nats-py >= 2.7.2
extends_documentation_fragment:
  - tapio_nats
options:
  revision:
    description: The revision every server must report, as written into its configuration.
    type: str
    required: true
  revision_key:
    description: The C(server_metadata) key the revision is written under.
    type: str
    default: tapio.io/config-revision
  expected_servers:
    description: How many servers the cluster has; fewer answering is not complete.
    type: int
    required: true
  wait_timeout:
    description: Seconds to keep asking before failing.
    type: float
    default: 120
  wait_sleep:
    description: Seconds between passes.
    type: float
    default: 2
"""

EXAMPLES = r"""
- name: Reload every NATS server onto the configuration just applied
  ansible.legacy.nats_server_reload:
    servers: [nats://nats-0.nats:4222, nats://nats-1.nats:4222, nats://nats-2.nats:4222]
    user: system
    password: "{{ vault_nats_system_password }}"
    revision: 3f2a9c0d1b7e4a55
    expected_servers: 3
"""

RETURN = r"""
servers:
  description: Each server's revision as last read, by server name.
  returned: always
  type: dict
  sample: {tapio-nats-0: 3f2a9c0d1b7e4a55}
reloaded:
  description: How many reloads each server was asked for (none in check mode).
  returned: always
  type: dict
  sample: {tapio-nats-1: 1}
would_reload:
  description: In check mode, the servers that do not report O(revision).
  returned: check mode
  type: list
  elements: str
wait:
  description: Attempts, seconds and the progress seen (each change of the problems).
  returned: unless check mode
  type: dict
problems:
  description: What kept the reload from completing at the last pass.
  returned: always
  type: list
  elements: str
"""

import asyncio
from typing import Any

try:
    import nats.errors
except ImportError:  # pragma: no cover - nats_module reports the missing library
    pass

from ansible.module_utils.tapio_nats import NatsModuleError, nats_endpoint, nats_module, open_connection, redact_url
from ansible.module_utils.tapio_nats_reload import (PING_VARZ, ServerState, gather_replies, reload_problems,
                                                    reload_server, server_state, stale)
from ansible.module_utils.tapio_wait import wait_until_healthy

ARGUMENT_SPEC: dict[str, Any] = {
    "revision": {"type": "str", "required": True},
    "revision_key": {"type": "str", "default": "tapio.io/config-revision"},
    "expected_servers": {"type": "int", "required": True},
    "wait_timeout": {"type": "float", "default": 120.0},
    "wait_sleep": {"type": "float", "default": 2.0},
}


class ReloadPass:
    """One look at every server through each URL, then a reload of each stale server.

    A stale server is asked on its own connection when one of the URLs reaches it: once a
    server has reloaded a new route password, servers that have not cannot route to it, so
    a request relayed through another server may find no responder."""

    def __init__(self, params: dict[str, Any], ask: bool) -> None:
        self.params, self.ask = params, ask
        self.reloaded: dict[str, int] = {}
        self.states: dict[str, ServerState] = {}

    async def run(self) -> dict[str, Any]:
        """One pass; a port-forward is opened anew each pass (a pod may have restarted)."""
        self.states = {}
        try:
            with nats_endpoint(self.params) as params:
                unreachable, failed = await self.through(params)
        except NatsModuleError as error:
            if not str(error).startswith("kube_port_forward:"):
                raise
            unreachable, failed = [str(error)], []
        problems = reload_problems(self.states, self.params["revision"], self.params["expected_servers"],
                                   unreachable) + failed
        return {"healthy": not problems, "problems": problems,
                "servers": {s.name: s.revision for s in self.states.values()}}

    async def through(self, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        """Connect to each server URL on its own, look, reload: (unreachable, problems)."""
        unreachable, connections = [], []
        try:
            for url in params["servers"]:
                try:
                    connections.append(await open_connection(dict(params, servers=[url])))
                except NatsModuleError as error:
                    unreachable.append(f"{redact_url(url)}: {error}")
            routes = await self.look(connections)
            return unreachable, (await self.reload(routes) if self.ask else [])
        finally:
            for nc in connections:
                await asyncio.wait_for(nc.close(), timeout=5)

    async def look(self, connections: list[Any]) -> dict[str, Any]:
        """Fill ``states``; return, per server id, the connection to ask it on (its own when
        there is one)."""
        timeout, routes = self.params["api_timeout"], {}
        for nc in connections:
            replies = await gather_replies(nc, PING_VARZ, self.params["expected_servers"], timeout)
            for state in (server_state(r, self.params["revision_key"]) for r in replies):
                if state:
                    self.states.setdefault(state.server_id, state)
                    routes.setdefault(state.server_id, nc)
        for nc in connections:  # a server's own connection wins
            own = (getattr(nc, "_server_info", None) or {}).get("server_id")
            if own in routes:
                routes[own] = nc
        return routes

    async def reload(self, routes: dict[str, Any]) -> list[str]:
        """Ask each stale server to reload; its refusal fails the module, a request that finds
        no responder is a problem of this pass (asked again on the next)."""
        problems = []
        for state in stale(self.states, self.params["revision"]):
            try:
                reason = await reload_server(routes[state.server_id].request, state, self.params["api_timeout"])
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as error:
                problems.append(f"{state.name} did not answer the reload request ({type(error).__name__})")
                continue
            if reason:
                raise NatsModuleError(f"NATS server {state.name} refused to reload its configuration: {reason}")
            self.reloaded[state.name] = self.reloaded.get(state.name, 0) + 1
        return problems


def main() -> None:
    module = nats_module(ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    look = ReloadPass(params, ask=not module.check_mode)
    try:
        if module.check_mode:
            result = asyncio.run(look.run())
            result["would_reload"] = [s.name for s in stale(look.states, params["revision"])]
            module.exit_json(changed=bool(result["would_reload"]), reloaded={}, **result)
        result = asyncio.run(wait_until_healthy(look.run, params["wait_timeout"], params["wait_sleep"]))
    except NatsModuleError as error:
        module.fail_json(msg=str(error), **error.result)
    result.update(changed=bool(look.reloaded), reloaded=look.reloaded)
    if not result.pop("healthy"):
        module.fail_json(msg=f"NATS servers not on configuration revision {module.params['revision']} after "
                             f"{result['wait']['seconds']}s: {'; '.join(result['problems'])}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
