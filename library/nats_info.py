#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: nats_info
short_description: Read NATS JetStream health, stream state and consumer state
description:
  - Read-only; never changes anything, so it runs the same in check mode.
  - Reports the connected server, JetStream account usage, the state of the chosen streams
    (messages, bytes, first/last sequence, leader, replicas and whether each is current and
    its lag) and of their consumers (num_pending, num_ack_pending, ack floor, redelivered).
  - With O(monitor_urls) it also reads each server's C(/healthz) and C(/jsz) for the meta
    cluster (leader, peers current and their lag), which an account user cannot see over the
    client protocol. Peers are judged from the meta leader's C(/jsz?leader-only=true) only (a
    follower lists the other peers as not current).
  - These are the facts the migration and rollback gates use; RV(healthy) and RV(problems)
    summarise them. The algorithm lives in module_utils/tapio_nats_health.py.
  - With O(wait) it asks again every O(wait_sleep) seconds until healthy, and fails after
    O(wait_timeout) seconds with the last result and the progress it followed (RV(wait)).
version_added: "1.0.0"
author: Tapio NATS migration toolkit
requirements:
  - python >= 3.9
  - nats-py >= 2.7.2
extends_documentation_fragment:
  - tapio_nats
  - tapio_monitoring
options:
  streams:
    description: Streams to report; all streams of the account when omitted.
    type: list
    elements: str
  consumers:
    description: Include each reported stream's consumers.
    type: bool
    default: true
  monitor_only:
    description:
      - Only the monitoring endpoints in O(monitor_urls) (required then, unless
        O(kube_port_forward.monitor_port) forwards every pod's monitoring port); no client connection,
        so the connection options are ignored and RV(server), RV(account) and RV(streams) are not
        returned. The nats_cluster role's health gate runs this way.
    type: bool
    default: false
  jetstream:
    description:
      - Whether the servers are expected to run JetStream. V(false) (core NATS, for example the
        nats-operator method) asks C(/healthz) without C(js-enabled-only) and reads no meta
        cluster, account, streams or consumers.
    type: bool
    default: true
  expected_peers:
    description:
      - The JetStream meta group size the cluster must have. When set, the meta leader must be
        among O(monitor_urls) (only its view of the peers is reliable) and must see
        C(cluster_size) equal to this with this many peers in all (itself and the others),
        every one current. Needs O(monitor_urls).
    type: int
  max_replica_lag:
    description:
      - A stream replica that is not current counts as a problem only when it is more than this
        many entries behind (or offline). Under a steady publish rate healthy followers are
        often a few entries behind at the instant of the question.
    type: int
    default: 1000
  fail_on_missing:
    description: Fail when a stream named in O(streams) does not exist (otherwise it is listed in RV(missing_streams)).
    type: bool
    default: false
  wait:
    description:
      - Ask again until RV(healthy) (the client connection, when used, is opened once). Skipped
        in check mode (one look, as without it).
    type: bool
    default: false
  wait_timeout:
    description: Seconds O(wait) waits before the module fails with the last result attached.
    type: float
    default: 60
  wait_sleep:
    description: Seconds between the checks of O(wait).
    type: float
    default: 2
  unhealthy_msg:
    description:
      - Fail with this message when NATS is not healthy (after the wait, with O(wait)), so a gate is
        one task. V({problems}), V({seconds}) and V({attempts}) are replaced by the problems found,
        the seconds waited and the number of checks.
      - Without it an unhealthy result is returned (RV(healthy) false) and only a timed-out wait fails.
    type: str
notes:
  - Connection options are shared by every nats_* module; see docs/modules.md.
  - Check mode is supported (the module is read-only).
"""

EXAMPLES = r"""
- name: Read JetStream health and the pipeline consumer's state
  ansible.legacy.nats_info:
    servers: "{{ tapio_nats_servers }}"
    user: "{{ tapio_nats_user }}"
    password: "{{ tapio_nats_password }}"
    monitor_urls: "{{ tapio_nats_monitor_urls }}"
    streams: [TAPIO_EVENTS]
  register: nats_health

- name: Stop when the cluster is not healthy
  ansible.builtin.assert:
    that: nats_health.healthy
    fail_msg: "{{ nats_health.problems }}"

- name: Wait up to 60s for every server and all 3 JetStream peers, through the monitoring endpoints only
  ansible.legacy.nats_info:
    monitor_only: true
    monitor_urls: "{{ tapio_nats_monitor_urls }}"
    expected_peers: 3
    wait: true
    wait_timeout: 60
"""

RETURN = r"""
healthy:
  description: >-
    JetStream enabled, and with monitor_urls every server's /healthz 200 and a meta leader (with
    O(expected_peers) in view and holding every peer), every peer and stream replica current.
  returned: always
  type: bool
problems:
  description: What made RV(healthy) false, one sentence each.
  returned: always
  type: list
  elements: str
server:
  description: The connected server (name, version, cluster, jetstream, max_payload, connect_urls).
  returned: unless monitor_only
  type: dict
account:
  description: JetStream account usage and limits ({} with O(jetstream=false)).
  returned: unless monitor_only
  type: dict
cluster:
  description: >-
    Each server's /healthz answer (health, per URL, with http_status) and how many answered 200
    (servers_healthy); with JetStream the meta cluster from the meta leader's /jsz (name, leader,
    cluster_size, peers with current, lag and offline; leader_view false when the leader is not
    among monitor_urls, and peers are then not judged).
  returned: when monitor_urls are given
  type: dict
  sample:
    health: {"http://127.0.0.1:8222": {http_status: 200, status: ok}}
    servers_healthy: 3
    leader: nats-1
    cluster_size: 3
    leader_view: true
    peers: [{name: nats-0, current: true, lag: 0, offline: false}]
wait:
  description: >-
    With O(wait): attempts, seconds waited, timed_out, and progress (each change of RV(problems)
    with after_seconds, the time it was first seen).
  returned: when wait is true and not in check mode
  type: dict
  sample:
    attempts: 4
    seconds: 6.1
    timed_out: false
    progress:
      - {after_seconds: 0.0, problems: ["meta peer nats-2 is not current (lag 12)"]}
      - {after_seconds: 6.1, problems: []}
streams:
  description: Per stream name, its config, state, cluster (leader, replicas) and consumers.
  returned: unless monitor_only
  type: dict
  sample:
    TAPIO_EVENTS:
      state: {messages: 10, bytes: 4200, first_seq: 1, last_seq: 10}
      cluster: {leader: nats-1, replicas: [{name: nats-0, current: true, lag: 0}]}
      replicas_current: true
      consumers:
        tapio-pipeline: {num_pending: 0, num_ack_pending: 0, num_redelivered: 0, ack_floor: {stream_seq: 10}}
missing_streams:
  description: Streams named in O(streams) that do not exist.
  returned: unless monitor_only
  type: list
  elements: str
"""

import asyncio
from typing import Any, Awaitable, Callable

from ansible.module_utils.tapio_nats import JetStreamApi, NatsModuleError, nats_module, run_with_connection
from ansible.module_utils.tapio_nats_health import consumer_report, kube_meta_cluster, meta_cluster, stream_report
from ansible.module_utils.tapio_wait import wait_until_healthy

ARGUMENT_SPEC: dict[str, Any] = {
    "streams": {"type": "list", "elements": "str"},
    "consumers": {"type": "bool", "default": True},
    "monitor_urls": {"type": "list", "elements": "str", "default": []},
    "monitor_timeout": {"type": "float", "default": 5.0},
    "monitor_only": {"type": "bool", "default": False},
    "jetstream": {"type": "bool", "default": True},
    "expected_peers": {"type": "int"},
    "fail_on_missing": {"type": "bool", "default": False},
    "max_replica_lag": {"type": "int", "default": 1000},
    "wait": {"type": "bool", "default": False},
    "wait_timeout": {"type": "float", "default": 60.0},
    "wait_sleep": {"type": "float", "default": 2.0},
    "unhealthy_msg": {"type": "str"},
}

_SERVER_KEYS = ("server_name", "server_id", "version", "cluster", "jetstream", "max_payload", "connect_urls")

Check = Callable[[], Awaitable[dict[str, Any]]]


def kube_monitor(params: dict[str, Any]) -> dict[str, Any]:
    """The ``kube_port_forward`` option when it forwards every pod's monitoring port (then
    ``monitor_urls`` is not used), else {}."""
    spec = params.get("kube_port_forward") or {}
    return spec if spec.get("all_pods") and spec.get("monitor_port") else {}


def monitoring(params: dict[str, Any]) -> dict[str, Any]:
    """The monitoring endpoints' part of the result: ``cluster`` and its problems, read from
    ``monitor_urls`` or, with ``kube_port_forward.monitor_port``, through a forward to every
    NATS pod opened for this read."""
    if kube_monitor(params):
        cluster, problems = kube_meta_cluster(kube_monitor(params), params["monitor_timeout"],
                                              expected_peers=params["expected_peers"], jetstream=params["jetstream"])
        return {"cluster": cluster, "problems": problems}
    if not params["monitor_urls"]:
        return {"problems": []}
    cluster, problems = meta_cluster(params["monitor_urls"], params["monitor_timeout"],
                                     expected_peers=params["expected_peers"], jetstream=params["jetstream"])
    return {"cluster": cluster, "problems": problems}


async def gather(params: dict[str, Any], api: JetStreamApi, nc: Any) -> dict[str, Any]:
    """Server, account, streams and consumers over the client connection, plus monitoring."""
    server = {k: (nc._server_info or {}).get(k) for k in _SERVER_KEYS}
    result: dict[str, Any] = {"server": server, "account": {}, "streams": {}, "missing_streams": []}
    problems: list[str] = []
    if params["jetstream"]:
        if not server.get("jetstream"):
            problems.append(f"JetStream is not enabled on server {server.get('server_name')}")
        result["account"] = await api.account_info()
        problems.extend(await gather_streams(params, api, result))
    monitored = monitoring(params)
    result.update(monitored, problems=problems + monitored["problems"])
    return result


async def gather_streams(params: dict[str, Any], api: JetStreamApi, result: dict[str, Any]) -> list[str]:
    """Fill result's streams (with consumers) and missing_streams; return their problems."""
    problems: list[str] = []
    infos = await api.streams() if params["streams"] is None else []
    for name in params["streams"] or []:
        info = await api.stream_info(name)
        if info is None:
            result["missing_streams"].append(name)
            problems.append(f"stream {name} does not exist")
        else:
            infos.append(info)
    if result["missing_streams"] and params["fail_on_missing"]:
        raise NatsModuleError(f"missing stream(s): {', '.join(result['missing_streams'])}", result)
    for info in infos:
        report, stream_problems = stream_report(info, params["max_replica_lag"])
        problems.extend(stream_problems)
        if params["consumers"]:
            for consumer in await api.consumers(info["config"]["name"]):
                report["consumers"][consumer["name"]] = consumer_report(consumer)
        result["streams"][info["config"]["name"]] = report
    return problems


async def judged(check: Check, params: dict[str, Any], wait: bool) -> dict[str, Any]:
    """One check, or with *wait* repeated until healthy; healthy and changed added."""
    async def one() -> dict[str, Any]:
        result = await check()
        result.update(changed=False, healthy=not result["problems"])
        return result

    if not wait:
        return await one()
    return await wait_until_healthy(one, params["wait_timeout"], params["wait_sleep"])


def argument_problem(params: dict[str, Any]) -> str:
    monitored = params["monitor_urls"] or kube_monitor(params)
    if params["monitor_only"] and not monitored:
        return ("monitor_only needs monitor_urls (the HTTP monitoring URL, port 8222, of every server) "
                "or kube_port_forward with all_pods and monitor_port")
    if params["expected_peers"] is not None and not (monitored and params["jetstream"]):
        return ("expected_peers is judged from the meta leader's /jsz: it needs monitor_urls "
                "(or kube_port_forward.monitor_port) and jetstream")
    return ""


def unhealthy_message(template: str, result: dict[str, Any]) -> str:
    """The caller's failure message with {problems}, {seconds} and {attempts} filled in."""
    waited = result.get("wait") or {}
    return (template.replace("{problems}", "; ".join(result["problems"]))
            .replace("{seconds}", str(waited.get("seconds", 0)))
            .replace("{attempts}", str(waited.get("attempts", 1))))


def main() -> None:
    module = nats_module(ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    problem = argument_problem(params)
    if problem:
        module.fail_json(msg=problem)
    # Waiting is skipped in check mode: one look, as without wait.
    wait = params["wait"] and not module.check_mode
    if params["monitor_only"]:
        async def monitor() -> dict[str, Any]:
            return monitoring(params)

        result = asyncio.run(judged(monitor, params, wait))
    else:
        async def handler(nc: Any, api: JetStreamApi) -> dict[str, Any]:
            return await judged(lambda: gather(params, api, nc), params, wait)

        result = run_with_connection(module, handler)
    if params["unhealthy_msg"] and not result["healthy"]:
        module.fail_json(msg=unhealthy_message(params["unhealthy_msg"], result), **result)
    if result.get("wait", {}).get("timed_out"):
        module.fail_json(msg=f"NATS not healthy after {result['wait']['seconds']}s ({result['wait']['attempts']} "
                             f"checks): {'; '.join(result['problems'])}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
