# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""JetStream health judged from NATS's own answers: the one algorithm nats_info (and so
every gate of the toolkit, the nats_cluster role's included) uses.

- Servers: each monitoring endpoint's ``/healthz`` (``?js-enabled-only=true`` when
  JetStream is expected) must answer 200.
- Meta cluster: judged from the meta leader's ``/jsz?leader-only=true`` (200 on the leader,
  400 elsewhere). Only the leader tracks whether the other peers are current: a follower
  lists them with ``current: false``, so a follower's view is reported but never judged.
  With ``expected_peers`` the leader's view is required and must hold every peer.
- Streams: a replica is a problem when offline or more than ``max_lag`` entries behind.

Everything here is a pure function of the answers except ``http_json`` (one GET), which
``meta_cluster`` takes as a parameter so tests can hand it answers.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Optional

from ansible.module_utils.tapio_http import http_get

Answer = tuple[int, Any]
Fetch = Callable[[str, float], Answer]
Report = tuple[dict[str, Any], list[str]]


def http_json(url: str, timeout: float) -> Answer:
    """GET a monitoring endpoint: (HTTP status, JSON body); 503 from /healthz is an answer,
    not an error, and no answer at all is status 0 with the reason as ``error``."""
    try:
        response = http_get(url, timeout)
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


def healthz_path(jetstream: bool) -> str:
    return "/healthz?js-enabled-only=true" if jetstream else "/healthz"


def servers_problem(health: dict[str, dict[str, Any]]) -> Optional[str]:
    """One sentence naming every server whose /healthz did not answer 200, or None."""
    bad = {url: answer for url, answer in health.items() if answer.get("http_status") != 200}
    if not bad:
        return None
    details = "; ".join(
        f"{url}/healthz answered {answer.get('http_status') or 'nothing'} "
        f"({answer.get('error') or answer.get('status') or 'no reason given'})" for url, answer in bad.items())
    return f"{len(bad)} of {len(health)} servers are not healthy: {details}"


def peer_list(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The meta group's other peers as /jsz lists them, normalised."""
    return [{"name": r.get("name"), "current": bool(r.get("current")), "lag": int(r.get("lag", 0)),
             "active_ns": r.get("active"), "offline": bool(r.get("offline", False))}
            for r in view.get("replicas") or []]


def peer_problems(peers: list[dict[str, Any]]) -> list[str]:
    problems = []
    for peer in peers:
        if peer["offline"]:
            problems.append(f"meta peer {peer['name']} is offline")
        elif not peer["current"]:
            problems.append(f"meta peer {peer['name']} is not current (lag {peer['lag']})")
    return problems


def size_problem(leader: str, cluster_size: Any, peers: list[dict[str, Any]], expected: int) -> Optional[str]:
    """The leader's view must hold *expected* peers: cluster_size and itself plus the others."""
    if cluster_size == expected and len(peers) == expected - 1:
        return None
    return (f"meta leader {leader} sees cluster_size {cluster_size} and {len(peers)} other peer(s); "
            f"expected {expected} peers")


def judge_meta(leader_view: Optional[dict[str, Any]], follower_view: Optional[dict[str, Any]],
               expected_peers: Optional[int] = None) -> Report:
    """The meta cluster and its problems from the leader's /jsz meta_cluster (or, without
    it, a follower's, whose peers are not judged)."""
    view = leader_view or follower_view
    if not view:
        return {}, ["no monitoring endpoint reported a JetStream meta cluster"]
    peers = peer_list(view)
    leader = view.get("leader")
    cluster = {"name": view.get("name"), "leader": leader, "cluster_size": view.get("cluster_size"),
               "peers": peers, "pending": view.get("pending", 0), "leader_view": bool(leader_view)}
    if not leader:
        return cluster, ["the JetStream meta cluster has no leader"]
    if not leader_view:
        # A follower cannot tell whether the other peers are current.
        cluster["note"] = f"meta leader {leader} is not among monitor_urls; peers not judged"
        if expected_peers is None:
            return cluster, []
        return cluster, [f"meta leader {leader} is not among monitor_urls, so nobody can tell whether "
                         f"its {expected_peers - 1} peers are current"]
    problems = peer_problems(peers)
    if expected_peers is not None:
        problem = size_problem(leader, view.get("cluster_size"), peers, expected_peers)
        problems.extend([problem] if problem else [])
    return cluster, problems


def read_meta(base: str, timeout: float, fetch: Fetch,
              want_follower: bool = True) -> tuple[Optional[dict[str, Any]], Optional[dict[str, Any]]]:
    """(leader's meta_cluster, follower's meta_cluster) from one server; at most one is set,
    the follower's only when *want_follower* (one follower's view is enough)."""
    code, jsz = fetch(f"{base}/jsz?leader-only=true", timeout)
    if code == 200 and jsz.get("meta_cluster"):
        return jsz["meta_cluster"], None
    if not want_follower:
        return None, None
    code, jsz = fetch(f"{base}/jsz", timeout)
    if code == 200 and jsz.get("meta_cluster"):
        return None, jsz["meta_cluster"]
    return None, None


def meta_cluster(monitor_urls: list[str], timeout: float, expected_peers: Optional[int] = None,
                 jetstream: bool = True, fetch: Fetch = http_json) -> Report:
    """/healthz of every server and, with JetStream, the meta cluster from the leader's view.

    Returns the ``cluster`` dict of nats_info (``health`` per URL, and with JetStream name,
    leader, cluster_size, peers, leader_view) and the problems, one sentence each.
    """
    health: dict[str, dict[str, Any]] = {}
    leader_view: Optional[dict[str, Any]] = None
    follower_view: Optional[dict[str, Any]] = None
    for url in monitor_urls:
        base = url.rstrip("/")
        code, body = fetch(f"{base}{healthz_path(jetstream)}", timeout)
        health[url] = {"http_status": code, **body}
        if jetstream and leader_view is None:
            leader_view, follower = read_meta(base, timeout, fetch, want_follower=follower_view is None)
            follower_view = follower_view or follower
    problem = servers_problem(health)
    problems = [problem] if problem else []
    cluster: dict[str, Any] = {"health": health,
                               "servers_healthy": sum(1 for a in health.values() if a["http_status"] == 200)}
    if jetstream:
        meta, meta_problems = judge_meta(leader_view, follower_view, expected_peers)
        cluster.update(meta)
        problems.extend(meta_problems)
    return cluster, problems


def relabel(cluster: dict[str, Any], problems: list[str], labels: dict[str, str]) -> Report:
    """*cluster* and *problems* with each local URL (a port-forward's listener, meaningless
    to a reader) replaced by what it reaches (*labels*: URL -> ``tapio/tapio-nats-0:8222``)."""
    def name(text: str) -> str:
        for url, label in labels.items():
            text = text.replace(url, label)
        return text

    renamed = dict(cluster)
    if "health" in cluster:
        renamed["health"] = {name(url): answer for url, answer in cluster["health"].items()}
    return renamed, [name(problem) for problem in problems]


def kube_meta_cluster(spec: dict[str, Any], timeout: float, expected_peers: Optional[int] = None,
                      jetstream: bool = True, fetch: Fetch = http_json) -> Report:
    """``meta_cluster`` read through a port-forward to the monitoring port (``monitor_port``)
    of every NATS pod the ``kube_port_forward`` option names, opened for this one read (so
    a wait that calls it again sees pods replaced in between). Pods that are not ready, and
    a forward that cannot be set up, are problems, so a wait keeps waiting on them."""
    from ansible.module_utils import tapio_kube_forward as forward

    port = int(spec["monitor_port"])
    try:
        forwards = forward.open_pod_forwards(spec, ports=(port,), timeout=timeout)
    except forward.KubeForwardError as error:
        return {"health": {}, "servers_healthy": 0}, [f"kube_port_forward: {error}"]
    with forwards:
        cluster, problems = meta_cluster(forwards.urls(port, "http"), timeout, expected_peers, jetstream, fetch)
        labels = forwards.labels(port, "http")
        forwards.settle()
    cluster, problems = relabel(cluster, problems, labels)
    cluster["pods"] = list(forwards.pods.ready)
    # What a forward's far end reported (a refused upgrade, the kubelet's error) names the cause
    # of a read that answered nothing; a healthy read is not judged on it.
    causes = forwards.errors if problems else []
    return cluster, forwards.pods.problems(forwards.target) + problems + causes


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


def stream_report(info: dict[str, Any], max_lag: int = 0) -> Report:
    """A stream's config, state, leader and replicas (from STREAM.INFO) and its problems."""
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


CONSUMER_KEYS = ("num_pending", "num_ack_pending", "num_redelivered", "num_waiting", "ack_floor", "delivered", "config")


def consumer_report(info: dict[str, Any]) -> dict[str, Any]:
    """The consumer state the gates read (from CONSUMER.INFO)."""
    report = {k: info.get(k) for k in CONSUMER_KEYS}
    report["cluster"] = {"leader": (info.get("cluster") or {}).get("leader")}
    return report
