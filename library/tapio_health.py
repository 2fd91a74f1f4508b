#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: tapio_health
short_description: Day-2 health of Tapio's event path on NATS JetStream, as findings with a next step
description:
  - Read-only; never changes anything, so it runs the same in check mode, and always returns
    C(changed=false).
  - Reads each NATS server's monitoring endpoints (C(/healthz), C(/varz), the meta group from the
    meta leader's C(/jsz)), through O(monitor_urls) or, when O(kube_port_forward.all_pods) and
    O(kube_port_forward.monitor_port) are set, through a port-forward to every NATS pod.
  - Reads over the client connection the events stream O(stream) and its consumers twice,
    O(window) seconds apart (the monitoring reads happen in between), and the advisories stream
    O(advisories_stream).
  - Judges what it read, with the workloads' facts of O(workloads), into RV(findings), each with a
    severity (ok, warning, critical), what was seen, the diagnosis and the next step. The
    judgement lives in module_utils/tapio_health_findings.py.
  - A NATS connection or monitoring endpoint that cannot be reached is a finding, not a module
    failure; the module fails only on bad options.
version_added: "1.3.0"
author: Tapio NATS migration toolkit
requirements:
  - python >= 3.9
  - nats-py >= 2.7.2
  - kubernetes >= 24.2.0 (only with O(kube_port_forward))
extends_documentation_fragment:
  - tapio_nats
  - tapio_monitoring
options:
  stream:
    description: The events stream.
    type: str
    default: TAPIO_EVENTS
  pipeline_consumer:
    description:
      - The pipeline's durable consumer on O(stream). Missing or stalled it is critical (another durable
        consumer stalled is a warning); its backlog is what the stream's fullness is judged on.
    type: str
    default: tapio-pipeline
  advisories_stream:
    description:
      - The stream keeping max-delivery advisories (events a consumer gave up on); empty to skip. An
        advisory younger than O(advisory_recent) seconds, or one added during the check, is a warning.
    type: str
    default: TAPIO_ADVISORIES
  advisory_recent:
    description: Seconds within which an advisory counts as recent.
    type: float
    default: 3600
  expected_servers:
    description: Number of NATS servers (JetStream meta peers) the cluster must have; V(0) does not check it.
    type: int
    default: 0
  window:
    description:
      - Seconds between the two reads of the consumers. A consumer with a backlog at both reads whose ack
        floor did not move is stalled; the trend of the ack floor against the stream is judged over it.
      - Check mode waits the same (the module only reads).
    type: float
    default: 10
  max_pending:
    description:
      - A consumer with at most this many unacknowledged messages (pending plus awaiting ack) keeps up; above,
        it keeps up when its ack floor moves at the stream's rate (tapio_stream_health.keeps_up, as the gates).
    type: int
    default: 1000
  max_replica_lag:
    description: A stream replica more than this many entries behind is lagging (offline is always critical).
    type: int
    default: 1000
  fill_warning:
    description: Percent of the stream's limits (for what its discard policy loses) at which its fill is a warning.
    type: float
    default: 80
  fill_critical:
    description: Percent of the stream's limits at which its fill is critical.
    type: float
    default: 90
  usage_warning:
    description:
      - Percent at which a server's memory (resident memory against O(memory_limit), the JetStream memory
        store against its max) or JetStream file store (against its max) is a warning.
    type: float
    default: 80
  usage_critical:
    description: Percent at which a server's memory or file store is critical.
    type: float
    default: 90
  memory_limit:
    description: The NATS container's memory limit in bytes; V(0) (unknown) leaves resident memory unjudged.
    type: int
    default: 0
  expected_mode:
    description:
      - The output mode every workload with O(workloads[].owned) must run in (nats after the migration,
        direct after a rollback; direct also accepts no value, a pre-migration spec).
    type: str
    default: nats
  direct_value:
    description: The output mode's value for direct gRPC.
    type: str
    default: direct
  workloads:
    description:
      - Facts of Tapio's workloads and the NATS StatefulSet, as the nats_health role reads them with
        kubernetes.core.k8s_info (the C(tapio_health_workloads) filter). Each gets a rollout finding, and
        with O(workloads[].owned) an output-mode finding.
      - Only these facts are passed, never the objects (whose env may hold literal secrets).
    type: list
    elements: dict
    default: []
    suboptions:
      kind:
        description: Its kind.
        type: str
        required: true
        choices: [DaemonSet, Deployment, StatefulSet]
      name:
        description: Its name.
        type: str
        required: true
      namespace:
        description: Its namespace (default O(names.namespace)).
        type: str
      container:
        description: The container whose output mode is read (and named in the next steps).
        type: str
      owned:
        description: Whether the migration switches its output mode (Tapio's pipeline and collectors).
        type: bool
        default: false
      found:
        description: Whether it exists.
        type: bool
        default: true
      error:
        description: Why it could not be read (empty when it was).
        type: str
        default: ""
      output_mode:
        description: >-
          The value of the output-mode env var in its container (unset when the variable is absent;
          C(<valueFrom>) when it comes from a reference).
        type: str
      generation:
        description: metadata.generation.
        type: int
        default: 0
      observed_generation:
        description: status.observedGeneration.
        type: int
        default: 0
      desired:
        description: Pods wanted (a DaemonSet's desiredNumberScheduled, otherwise spec.replicas).
        type: int
        default: 0
      current:
        description: Pods that exist (status.replicas; a DaemonSet's currentNumberScheduled).
        type: int
        default: 0
      updated:
        description: Pods of the latest spec.
        type: int
        default: 0
      ready:
        description: Ready pods.
        type: int
        default: 0
      available:
        description: Available pods.
        type: int
        default: 0
      unavailable:
        description: Unavailable pods.
        type: int
        default: 0
      current_revision:
        description: A StatefulSet's status.currentRevision.
        type: str
        default: ""
      update_revision:
        description: A StatefulSet's status.updateRevision.
        type: str
        default: ""
  names:
    description: The names the next steps use, so their commands can be pasted as they are.
    type: dict
    apply_defaults: true
    suboptions:
      namespace:
        description: Tapio's namespace.
        type: str
        default: tapio
      nats_namespace:
        description: The NATS StatefulSet's namespace.
        type: str
        default: tapio
      nats_statefulset:
        description: The NATS StatefulSet (and its Service).
        type: str
        default: tapio-nats
      nats_url:
        description: The NATS URL Tapio's pods use (its host and port go into the connection recipe).
        type: str
        default: nats://tapio-nats:4222
      pipeline:
        description: The pipeline Deployment.
        type: str
        default: tapio-pipeline
      pipeline_container:
        description: The pipeline's container.
        type: str
        default: pipeline
      collector:
        description: A collector DaemonSet, to exec into for the connection recipe.
        type: str
        default: ""
      collector_container:
        description: That collector's container.
        type: str
        default: ""
      mode_env:
        description: The output-mode env var.
        type: str
        default: TAPIO_OUTPUT_MODE
notes:
  - Connection options are shared by every nats_* module; see docs/modules.md.
  - Check mode is supported (the module is read-only).
  - How each finding is judged and what to do about it, the role and the exit status for monitors are in docs/health.md.
"""

EXAMPLES = r"""
- name: Judge the health of the event path
  ansible.legacy.tapio_health:
    servers: "{{ tapio_nats_servers }}"
    user: "{{ tapio_nats_user }}"
    password: "{{ tapio_nats_password }}"
    monitor_urls: "{{ tapio_nats_monitor_urls }}"
    expected_servers: 3
    window: 10
  register: health

- name: Fail on a critical finding
  ansible.builtin.assert:
    that: health.summary.critical == 0
    fail_msg: "{{ health.findings | selectattr('severity', 'equalto', 'critical') | map(attribute='seen') | list }}"

- name: Judge one collector's rollout and output mode too
  ansible.legacy.tapio_health:
    monitor_urls: ["http://127.0.0.1:8222"]
    workloads:
      - kind: DaemonSet
        name: tapio-k8s-collector
        container: k8s-collector
        owned: true
        output_mode: nats
        generation: 3
        observed_generation: 3
        desired: 2
        current: 2
        updated: 2
        ready: 2
        available: 2
"""

RETURN = r"""
changed:
  description: Always false; the module only reads.
  returned: always
  type: bool
healthy:
  description: No critical finding.
  returned: always
  type: bool
summary:
  description: How many findings of each severity, their total and the worst severity.
  returned: always
  type: dict
  sample: {ok: 14, warning: 1, critical: 0, total: 15, worst: warning}
findings:
  description: Every finding, critical first.
  returned: always
  type: list
  elements: dict
  contains:
    check:
      description: >-
        The kind of check (nats_connection, nats_monitoring, nats_server, nats_servers, nats_meta, nats_meta_peer,
        nats_memory, nats_storage, stream, stream_replicas, stream_fill, advisories, consumer,
        consumer_redeliveries, workload, workload_rollout, workload_mode).
      type: str
    subject:
      description: What it is about (a server, the stream, stream/consumer, kind namespace/name).
      type: str
    severity:
      description: ok, warning or critical.
      type: str
    seen:
      description: What was seen.
      type: str
    diagnosis:
      description: What it means (empty when ok).
      type: str
    next_step:
      description: What to do, with commands (empty when ok).
      type: str
  sample:
    - check: consumer
      subject: TAPIO_EVENTS/tapio-pipeline
      severity: critical
      seen: "stalled: 5120 pending, 0 awaiting ack, 0 redelivered, ack floor 88211, ack floor unchanged over 10s"
      diagnosis: "Nothing was acknowledged while messages wait: the pipeline is not consuming ..."
      next_step: "nats consumer info TAPIO_EVENTS tapio-pipeline ...; kubectl -n tapio logs deploy/tapio-pipeline ..."
checked_at:
  description: When the check started (UTC, ISO 8601).
  returned: always
  type: str
  sample: "2026-12-06T14:30:00Z"
facts:
  description: >-
    What was read, for the report: servers (per monitoring label its name, version, /healthz status, resident
    memory and JetStream usage and limits), meta (leader, cluster_size, peers), stream (state, limits, leader),
    consumers (counts at both reads), window (seconds between the reads), workloads (as given).
  returned: always
  type: dict
"""

import asyncio
import datetime
import time
from typing import Any, Callable, Optional

from ansible.module_utils.tapio_health_findings import Names, Settings, findings_of, summary_of
from ansible.module_utils.tapio_nats import (JetStreamApi, JetStreamApiError, NatsModuleError, nats_endpoint,
                                             nats_module, open_connection)
from ansible.module_utils.tapio_nats_health import Fetch, http_json, meta_cluster
from ansible.module_utils.tapio_stream_health import backlog_of, parse_time

try:
    import nats.errors
    CONNECTION_ERRORS: tuple[type[BaseException], ...] = (NatsModuleError, nats.errors.Error, OSError,
                                                           asyncio.TimeoutError)
except ImportError:  # pragma: no cover - nats_module reports the missing library
    CONNECTION_ERRORS = (NatsModuleError, OSError, asyncio.TimeoutError)

_COUNTS = ("generation", "observed_generation", "desired", "current", "updated", "ready", "available", "unavailable")
WORKLOAD_SPEC: dict[str, Any] = {
    "kind": {"type": "str", "required": True, "choices": ["DaemonSet", "Deployment", "StatefulSet"]},
    "name": {"type": "str", "required": True},
    "namespace": {"type": "str"},
    "container": {"type": "str"},
    "owned": {"type": "bool", "default": False},
    "found": {"type": "bool", "default": True},
    "error": {"type": "str", "default": ""},
    "output_mode": {"type": "str"},
    **{key: {"type": "int", "default": 0} for key in _COUNTS},
    "current_revision": {"type": "str", "default": ""},
    "update_revision": {"type": "str", "default": ""},
}
NAMES_SPEC: dict[str, Any] = {
    "namespace": {"type": "str", "default": "tapio"},
    "nats_namespace": {"type": "str", "default": "tapio"},
    "nats_statefulset": {"type": "str", "default": "tapio-nats"},
    "nats_url": {"type": "str", "default": "nats://tapio-nats:4222"},
    "pipeline": {"type": "str", "default": "tapio-pipeline"},
    "pipeline_container": {"type": "str", "default": "pipeline"},
    "collector": {"type": "str", "default": ""},
    "collector_container": {"type": "str", "default": ""},
    "mode_env": {"type": "str", "default": "TAPIO_OUTPUT_MODE"},
}
ARGUMENT_SPEC: dict[str, Any] = {
    "stream": {"type": "str", "default": "TAPIO_EVENTS"},
    "pipeline_consumer": {"type": "str", "default": "tapio-pipeline"},
    "advisories_stream": {"type": "str", "default": "TAPIO_ADVISORIES"},
    "advisory_recent": {"type": "float", "default": 3600.0},
    "monitor_urls": {"type": "list", "elements": "str", "default": []},
    "monitor_timeout": {"type": "float", "default": 5.0},
    "expected_servers": {"type": "int", "default": 0},
    "window": {"type": "float", "default": 10.0},
    "max_pending": {"type": "int", "default": 1000},
    "max_replica_lag": {"type": "int", "default": 1000},
    "fill_warning": {"type": "float", "default": 80.0},
    "fill_critical": {"type": "float", "default": 90.0},
    "usage_warning": {"type": "float", "default": 80.0},
    "usage_critical": {"type": "float", "default": 90.0},
    "memory_limit": {"type": "int", "default": 0},
    "expected_mode": {"type": "str", "default": "nats"},
    "direct_value": {"type": "str", "default": "direct"},
    "workloads": {"type": "list", "elements": "dict", "default": [], "options": WORKLOAD_SPEC},
    "names": {"type": "dict", "apply_defaults": True, "options": NAMES_SPEC},
}


# ------------------------------------------------------------------------------------------
# Monitoring endpoints
# ------------------------------------------------------------------------------------------
def kube_monitor(params: dict[str, Any]) -> dict[str, Any]:
    """The ``kube_port_forward`` option when it forwards every pod's monitoring port, else {}."""
    spec = params.get("kube_port_forward") or {}
    return spec if spec.get("all_pods") and spec.get("monitor_port") else {}


def read_servers(urls: list[str], timeout: float, fetch: Fetch = http_json) -> dict[str, Any]:
    """/healthz and the meta group (tapio_nats_health.meta_cluster, the gates' reading) and
    /varz of every server."""
    cluster, _ = meta_cluster(urls, timeout, expected_peers=None, jetstream=True, fetch=fetch)
    varz: dict[str, dict[str, Any]] = {}
    for url in urls:
        code, body = fetch(f"{url.rstrip('/')}/varz", timeout)
        varz[url] = body if code == 200 else {"error": body.get("error") or f"/varz answered {code}"}
    return {"configured": True, "cluster": cluster, "varz": varz, "not_ready": []}


def relabelled(read: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """*read* with each local port-forward URL replaced by the pod and port it reaches."""
    cluster = dict(read["cluster"])
    cluster["health"] = {labels.get(url, url): answer for url, answer in (cluster.get("health") or {}).items()}
    return dict(read, cluster=cluster, varz={labels.get(url, url): answer for url, answer in read["varz"].items()})


def read_monitoring(params: dict[str, Any]) -> dict[str, Any]:
    """Every server's monitoring answers, from ``monitor_urls`` or through a forward to every
    NATS pod (the pods not ready listed in ``not_ready``)."""
    timeout = params["monitor_timeout"]
    spec = kube_monitor(params)
    if not spec:
        if not params["monitor_urls"]:
            return {"configured": False}
        return read_servers(params["monitor_urls"], timeout)
    from ansible.module_utils import tapio_kube_forward as forward

    port = int(spec["monitor_port"])
    try:
        forwards = forward.open_pod_forwards(spec, ports=(port,), timeout=timeout)
    except forward.KubeForwardError as error:
        return {"configured": True, "error": f"kube_port_forward: {error}"}
    with forwards:
        read = relabelled(read_servers(forwards.urls(port, "http"), timeout), forwards.labels(port, "http"))
    read["not_ready"] = [list(pod) for pod in forwards.pods.not_ready]
    return read


# ------------------------------------------------------------------------------------------
# The JetStream API: the stream and its consumers, twice
# ------------------------------------------------------------------------------------------
async def consumers_of(api: JetStreamApi, stream: str) -> tuple[dict[str, dict[str, Any]], float]:
    """Every consumer of *stream* by name, and when the listing came back (monotonic seconds)."""
    listed = {str(info["name"]): info for info in await api.consumers(stream)}
    return listed, time.monotonic()


async def oldest_unacked_age(api: JetStreamApi, stream: str, consumer: Optional[dict[str, Any]]) -> Optional[float]:
    """Seconds since the oldest message *consumer* has not acknowledged was stored (None when it
    has none, or it is gone), read as the engine reads it: the message after the ack floor."""
    if consumer is None or backlog_of(consumer) == 0:
        return None
    first = int((consumer.get("ack_floor") or {}).get("stream_seq") or 0) + 1
    subject = (consumer.get("config") or {}).get("filter_subject") or ">"
    try:
        answer = await api.request(f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": first, "next_by_subj": subject})
    except JetStreamApiError:
        return None
    stored = parse_time(str((answer.get("message") or {}).get("time") or ""))
    return (datetime.datetime.now(datetime.timezone.utc) - stored).total_seconds() if stored else None


async def advisories_info(api: JetStreamApi, name: str) -> Optional[dict[str, Any]]:
    """The advisories stream's info; None when skipped, missing or refused (an extra, never the
    reason the events stream goes unjudged)."""
    if not name:
        return None
    try:
        return await api.stream_info(name)
    except JetStreamApiError:
        return None


async def read_jetstream(api: JetStreamApi, params: dict[str, Any], meanwhile: Callable[[], None]) -> dict[str, Any]:
    """The stream, its consumers and the advisories stream, read twice ``window`` seconds apart;
    *meanwhile* (the monitoring reads) runs in between, in a thread."""
    stream, advisories = params["stream"], params["advisories_stream"]
    read: dict[str, Any] = {"stream": await api.stream_info(stream)}
    if read["stream"] is None:  # nothing to watch over a window: a missing stream is the finding
        await asyncio.to_thread(meanwhile)
        return dict(read, stream_after=None)
    read["consumers"], start = await consumers_of(api, stream)
    read["advisories"] = await advisories_info(api, advisories)
    await asyncio.to_thread(meanwhile)
    await asyncio.sleep(max(0.0, params["window"] - (time.monotonic() - start)))
    read["stream_after"] = await api.stream_info(stream)
    if read["stream_after"] is not None:
        read["consumers_after"], end = await consumers_of(api, stream)
        read["elapsed"] = round(end - start, 3)
        read["oldest_unacked_age"] = await oldest_unacked_age(
            api, stream, read["consumers_after"].get(params["pipeline_consumer"]))
    read["advisories_after"] = await advisories_info(api, advisories)
    return read


def gather_jetstream(params: dict[str, Any], meanwhile: Callable[[], None]) -> dict[str, Any]:
    """read_jetstream over the toolkit's connection (``kube_port_forward`` included); a
    connection that cannot be opened, or fails, is returned as ``error``."""
    async def run(endpoint: dict[str, Any]) -> dict[str, Any]:
        nc = await open_connection(endpoint)
        try:
            return await read_jetstream(JetStreamApi(nc, endpoint["api_timeout"], endpoint.get("domain")), params,
                                        meanwhile)
        finally:
            try:
                await asyncio.wait_for(nc.close(), timeout=5)
            except CONNECTION_ERRORS:
                pass

    try:
        with nats_endpoint(params) as endpoint:
            return asyncio.run(run(endpoint))
    except CONNECTION_ERRORS as error:
        return {"error": str(error) or type(error).__name__}


def gather(params: dict[str, Any]) -> dict[str, Any]:
    """Monitoring and JetStream answers; the monitoring is read during the consumers' window, or
    after a connection that failed before it."""
    monitoring: dict[str, Any] = {}

    def read() -> None:
        if not monitoring:
            monitoring.update(read_monitoring(params))

    jetstream = gather_jetstream(params, read)
    read()
    return {"monitoring": monitoring, "jetstream": jetstream, "workloads": params["workloads"]}


# ------------------------------------------------------------------------------------------
# Judging and the result
# ------------------------------------------------------------------------------------------
def settings_of(params: dict[str, Any]) -> Settings:
    names = Names(stream=params["stream"], pipeline_consumer=params["pipeline_consumer"],
                  advisories_stream=params["advisories_stream"] or "TAPIO_ADVISORIES", **params["names"])
    return Settings(names=names, expected_servers=params["expected_servers"], expected_mode=params["expected_mode"],
                    direct_value=params["direct_value"], window=params["window"], max_pending=params["max_pending"],
                    max_replica_lag=params["max_replica_lag"], fill_warning=params["fill_warning"],
                    fill_critical=params["fill_critical"], usage_warning=params["usage_warning"],
                    usage_critical=params["usage_critical"], memory_limit=params["memory_limit"],
                    advisory_recent=params["advisory_recent"])


def server_facts(monitoring: dict[str, Any], memory_limit: int) -> list[dict[str, Any]]:
    health = (monitoring.get("cluster") or {}).get("health") or {}
    servers = []
    for label in sorted(set(health) | set(monitoring.get("varz") or {})):
        varz = (monitoring.get("varz") or {}).get(label) or {}
        jetstream = varz.get("jetstream") or {}
        config, stats = jetstream.get("config") or {}, jetstream.get("stats") or {}
        servers.append({"label": label, "server_name": varz.get("server_name"), "version": varz.get("version"),
                        "healthz": (health.get(label) or {}).get("http_status"), "mem": varz.get("mem"),
                        "memory_limit": memory_limit or None, "js_memory": stats.get("memory"),
                        "js_max_memory": config.get("max_memory"), "js_storage": stats.get("storage"),
                        "js_max_storage": config.get("max_storage"),
                        "js_reserved_storage": stats.get("reserved_storage")})
    return servers


def consumer_facts(jetstream: dict[str, Any]) -> list[dict[str, Any]]:
    before = jetstream.get("consumers") or {}
    facts = []
    for name, after in sorted((jetstream.get("consumers_after") or {}).items()):
        first = before.get(name) or {}
        facts.append({"name": name, "durable": bool((after.get("config") or {}).get("durable_name")),
                      "num_pending": after.get("num_pending"), "num_ack_pending": after.get("num_ack_pending"),
                      "num_redelivered": after.get("num_redelivered"), "num_waiting": after.get("num_waiting"),
                      "ack_floor_before": (first.get("ack_floor") or {}).get("stream_seq"),
                      "ack_floor_after": (after.get("ack_floor") or {}).get("stream_seq")})
    return facts


def stream_facts(info: Optional[dict[str, Any]]) -> dict[str, Any]:
    if info is None:
        return {}
    config, state, cluster = info.get("config") or {}, info.get("state") or {}, info.get("cluster") or {}
    return {"name": config.get("name"), "messages": state.get("messages"), "bytes": state.get("bytes"),
            "first_seq": state.get("first_seq"), "last_seq": state.get("last_seq"), "max_msgs": config.get("max_msgs"),
            "max_bytes": config.get("max_bytes"), "max_age_seconds": int(config.get("max_age") or 0) // 10**9,
            "discard": config.get("discard"), "replicas": config.get("num_replicas"), "leader": cluster.get("leader")}


def facts_of(gathered: dict[str, Any], memory_limit: int) -> dict[str, Any]:
    monitoring, jetstream = gathered["monitoring"], gathered["jetstream"]
    cluster = monitoring.get("cluster") or {}
    return {"servers": server_facts(monitoring, memory_limit),
            "meta": {key: cluster.get(key) for key in ("name", "leader", "cluster_size", "peers") if key in cluster},
            "stream": stream_facts(jetstream.get("stream_after")),
            "consumers": consumer_facts(jetstream), "window": jetstream.get("elapsed"),
            "workloads": gathered["workloads"]}


def argument_problem(params: dict[str, Any]) -> str:
    if params["window"] <= 0:
        return "window must be more than 0 seconds: a stalled consumer is judged over two reads"
    for kind in ("fill", "usage"):
        warning, critical = params[f"{kind}_warning"], params[f"{kind}_critical"]
        if warning > critical:
            return f"{kind}_warning ({warning:g}) is above {kind}_critical ({critical:g})"
    return ""


def main() -> None:
    module = nats_module(ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    problem = argument_problem(params)
    if problem:
        module.fail_json(msg=problem)
    checked_at = datetime.datetime.now(datetime.timezone.utc)
    gathered = gather(params)
    findings = findings_of(gathered, settings_of(params), datetime.datetime.now(datetime.timezone.utc))
    summary = summary_of(findings)
    module.exit_json(changed=False, healthy=summary["critical"] == 0, summary=summary,
                     findings=[item.as_dict() for item in findings], facts=facts_of(gathered, params["memory_limit"]),
                     checked_at=checked_at.isoformat(timespec="seconds").replace("+00:00", "Z"))


if __name__ == "__main__":
    main()
