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
    client protocol.
  - These are the facts the migration and rollback gates use; RV(healthy) and RV(problems)
    summarise them.
version_added: "1.0.0"
author: Tapio NATS migration toolkit
requirements:
  - python >= 3.9
  - nats-py >= 2.7.2
extends_documentation_fragment:
  - tapio_nats
options:
  streams:
    description: Streams to report; all streams of the account when omitted.
    type: list
    elements: str
  consumers:
    description: Include each reported stream's consumers.
    type: bool
    default: true
  monitor_urls:
    description: HTTP monitoring URLs (port 8222) of the servers, for meta cluster health.
    type: list
    elements: str
    default: []
  monitor_timeout:
    description: Timeout in seconds for each monitoring request.
    type: float
    default: 5
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
"""

RETURN = r"""
healthy:
  description: JetStream enabled, a meta leader (when monitor_urls are given), every peer and stream replica current.
  returned: always
  type: bool
problems:
  description: What made RV(healthy) false, one sentence each.
  returned: always
  type: list
  elements: str
server:
  description: The connected server (name, version, cluster, jetstream, max_payload, connect_urls).
  returned: always
  type: dict
account:
  description: JetStream account usage and limits.
  returned: always
  type: dict
cluster:
  description: >-
    Meta cluster from the meta leader's /jsz (name, leader, cluster_size, peers with current and lag;
    leader_view false when the leader is not among monitor_urls, and peers are then not judged)
    and each server's /healthz status.
  returned: when monitor_urls are given
  type: dict
streams:
  description: Per stream name, its config, state, cluster (leader, replicas) and consumers.
  returned: always
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
  returned: always
  type: list
  elements: str
"""

import json
from typing import Any, Optional

from ansible.module_utils.tapio_nats import JetStreamApi, NatsModuleError, nats_module, run_with_connection
from ansible.module_utils.urls import open_url

ARGUMENT_SPEC: dict[str, Any] = {
    "streams": {"type": "list", "elements": "str"},
    "consumers": {"type": "bool", "default": True},
    "monitor_urls": {"type": "list", "elements": "str", "default": []},
    "monitor_timeout": {"type": "float", "default": 5.0},
    "fail_on_missing": {"type": "bool", "default": False},
    "max_replica_lag": {"type": "int", "default": 1000},
}

_SERVER_KEYS = ("server_name", "server_id", "version", "cluster", "jetstream", "max_payload", "connect_urls")


def http_json(url: str, timeout: float) -> tuple[int, Any]:
    """GET a monitoring endpoint; 503 from /healthz is an answer, not an error."""
    try:
        response = open_url(url, timeout=timeout, validate_certs=True)
        return response.getcode(), json.loads(response.read() or b"{}")
    except Exception as error:  # urllib raises HTTPError for 503 with a JSON body
        read = getattr(error, "read", None)
        code = getattr(error, "code", 0)
        if read is not None and code:
            try:
                return code, json.loads(read() or b"{}")
            except ValueError:
                return code, {}
        return 0, {"error": str(error)}


def meta_cluster(monitor_urls: list[str], timeout: float) -> tuple[dict[str, Any], list[str]]:
    """The meta cluster as the meta leader's /jsz reports it, with /healthz per server.

    Only the leader tracks whether the other peers are current: a follower lists them with
    ``current: false``. So peers are judged from ``/jsz?leader-only=true``, which answers
    200 on the leader and 400 elsewhere; without the leader's view they are not judged.
    """
    problems: list[str] = []
    health = {}
    meta: dict[str, Any] = {}
    follower_meta: dict[str, Any] = {}
    for url in monitor_urls:
        base = url.rstrip('/')
        code, body = http_json(f"{base}/healthz?js-enabled-only=true", timeout)
        health[url] = {"http_status": code, **body}
        if code != 200:
            problems.append(f"{url}/healthz answered {code or 'nothing'}: {body.get('error', body.get('status'))}")
        if not meta:
            code, jsz = http_json(f"{base}/jsz?leader-only=true", timeout)
            if code == 200 and jsz.get("meta_cluster"):
                meta = jsz["meta_cluster"]
                meta["reported_by"] = jsz.get("server_name") or url
            elif not follower_meta:
                code, jsz = http_json(f"{base}/jsz", timeout)
                if code == 200 and jsz.get("meta_cluster"):
                    follower_meta = jsz["meta_cluster"]
    cluster: dict[str, Any] = {"health": health}
    if not meta and not follower_meta:
        problems.append("no monitoring endpoint reported a JetStream meta cluster")
        return cluster, problems
    view = meta or follower_meta
    peers = [{"name": r.get("name"), "current": bool(r.get("current")), "lag": int(r.get("lag", 0)),
              "active_ns": r.get("active"), "offline": bool(r.get("offline", False))} for r in view.get("replicas") or []]
    cluster.update({"name": view.get("name"), "leader": view.get("leader"), "cluster_size": view.get("cluster_size"),
                    "peers": peers, "pending": view.get("pending", 0), "leader_view": bool(meta)})
    if not view.get("leader"):
        problems.append("the JetStream meta cluster has no leader")
    elif not meta:
        # A follower cannot tell whether the other peers are current; /healthz per server
        # above still tells whether each reachable server is healthy.
        cluster["note"] = f"meta leader {view.get('leader')} is not among monitor_urls; peers not judged"
    for peer in peers if meta else []:
        if not peer["current"] or peer["offline"]:
            problems.append(f"meta peer {peer['name']} is not current (lag {peer['lag']})")
    return cluster, problems


def replica_problem(name: str, replica: dict[str, Any], max_lag: int) -> Optional[str]:
    """A replica is a problem when offline, or behind by more than max_lag entries.

    Under a steady publish rate a healthy follower is often a few entries behind at the
    instant the leader is asked (``current: false, lag: 1``): that is replication, not trouble.
    """
    if replica["offline"]:
        return f"stream {name}: replica {replica['name']} is offline"
    if not replica["current"] and replica["lag"] > max_lag:
        return f"stream {name}: replica {replica['name']} is not current (lag {replica['lag']} > {max_lag})"
    return None


def stream_report(info: dict[str, Any], max_lag: int = 0) -> tuple[dict[str, Any], list[str]]:
    name = info["config"]["name"]
    cluster = info.get("cluster") or {}
    replicas = [{"name": r.get("name"), "current": bool(r.get("current")), "lag": int(r.get("lag", 0)),
                 "offline": bool(r.get("offline", False))} for r in cluster.get("replicas") or []]
    problems = [p for p in (replica_problem(name, r, max_lag) for r in replicas) if p]
    if info["config"].get("num_replicas", 1) > 1 and not cluster.get("leader"):
        problems.append(f"stream {name} has no leader")
    report = {"config": info["config"], "state": info.get("state", {}),
              "cluster": {"leader": cluster.get("leader"), "replicas": replicas},
              "replicas_current": not problems, "consumers": {}}
    return report, problems


def consumer_report(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("num_pending", "num_ack_pending", "num_redelivered", "num_waiting", "ack_floor", "delivered", "config")
    report = {k: info.get(k) for k in keys}
    report["cluster"] = {"leader": (info.get("cluster") or {}).get("leader")}
    return report


async def gather(module: Any, api: JetStreamApi, nc: Any) -> dict[str, Any]:
    params = module.params
    server = {k: (nc._server_info or {}).get(k) for k in _SERVER_KEYS}
    problems: list[str] = []
    if not server.get("jetstream"):
        problems.append(f"JetStream is not enabled on server {server.get('server_name')}")
    account = await api.account_info()
    result: dict[str, Any] = {"changed": False, "server": server, "account": account, "streams": {},
                              "missing_streams": []}
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
    if params["monitor_urls"]:
        result["cluster"], cluster_problems = meta_cluster(params["monitor_urls"], params["monitor_timeout"])
        problems.extend(cluster_problems)
    result["problems"] = problems
    result["healthy"] = not problems
    return result


def main() -> None:
    module = nats_module(ARGUMENT_SPEC, supports_check_mode=True)

    async def handler(nc: Any, api: JetStreamApi) -> dict[str, Any]:
        return await gather(module, api, nc)

    module.exit_json(**run_with_connection(module, handler))


if __name__ == "__main__":
    main()
