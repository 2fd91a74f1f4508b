# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The day-2 health check's judgement (health.yml, library/tapio_health.py): pure functions
from what was read to findings.

A finding is one thing looked at (a server, the meta group, the events stream, a consumer, a
workload), its severity (ok, warning, critical), what was seen, the diagnosis, and the next
step an operator takes. Critical means events are being lost or refused now, or one more
failure loses them; warning means something to look at before it becomes critical.

The gathered answers are NATS's own JSON (``/healthz``, ``/varz``, the meta group as
tapio_nats_health reads it, STREAM.INFO and CONSUMER.INFO read twice, ``window`` seconds
apart) and each workload's facts as the role reads them with kubernetes.core.k8s_info (the
``tapio_health_workloads`` filter). The same algorithms as the gates judge them where one
exists: replicas as ``tapio_nats_health.stream_report``, fullness and keeping up as
``tapio_stream_health``.

The next steps follow the plan's three troubleshooting recipes ("Connection refused": DNS and
port from a collector pod; "High memory usage": JetStream memory against its limits; "Message
loss": the stream's configuration and the consumer's lag) with this toolkit's names and
playbooks.
"""
from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlparse

from ansible.module_utils.tapio_nats_health import stream_report
# The sizes in findings read as the gates' fullness texts do (one formatter).
from ansible.module_utils.tapio_stream_health import byte_size as size
from ansible.module_utils.tapio_stream_health import backlog_of, fullness, keeps_up, parse_time, sample_of

OK, WARNING, CRITICAL = "ok", "warning", "critical"
SEVERITIES = (OK, WARNING, CRITICAL)
RANK = {OK: 0, WARNING: 1, CRITICAL: 2}


@dataclass(frozen=True)
class Finding:
    """One thing looked at: ``check`` (what kind of check), ``subject`` (what it is about),
    ``severity`` (ok, warning, critical), ``seen``, ``diagnosis`` and ``next_step``."""

    check: str
    subject: str
    severity: str
    seen: str
    diagnosis: str
    next_step: str

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Names:
    """The names the next steps use (the inventory's, so commands can be pasted)."""

    namespace: str = "tapio"
    nats_namespace: str = "tapio"
    nats_statefulset: str = "tapio-nats"
    nats_url: str = "nats://tapio-nats:4222"
    stream: str = "TAPIO_EVENTS"
    pipeline: str = "tapio-pipeline"
    pipeline_container: str = "pipeline"
    pipeline_consumer: str = "tapio-pipeline"
    collector: str = ""
    collector_container: str = ""
    mode_env: str = "TAPIO_OUTPUT_MODE"
    advisories_stream: str = "TAPIO_ADVISORIES"

    def nats_host_port(self) -> tuple[str, int]:
        """Host and port of the URL Tapio's pods use (the plan's service name)."""
        parsed = urlparse(self.nats_url if "://" in self.nats_url else f"nats://{self.nats_url}")
        return parsed.hostname or "tapio-nats", parsed.port or 4222

    def nats_pods(self) -> str:
        """kubectl's arguments that list the NATS pods."""
        return (f"-n {self.nats_namespace} get pods -o wide "
                f"-l app.kubernetes.io/name=nats,app.kubernetes.io/instance={self.nats_statefulset}")


@dataclass(frozen=True)
class Settings:
    """What the findings are judged against (the role's nats_health_* variables)."""

    names: Names = Names()
    # NATS servers (JetStream meta peers) the cluster must have; 0: not checked.
    expected_servers: int = 0
    expected_mode: str = "nats"
    direct_value: str = "direct"
    window: float = 10.0
    max_pending: int = 1000
    max_replica_lag: int = 1000
    fill_warning: float = 80.0
    fill_critical: float = 90.0
    usage_warning: float = 80.0
    usage_critical: float = 90.0
    # The NATS container's memory limit in bytes (0: unknown, resident memory not judged).
    memory_limit: int = 0
    # An advisory (an event the pipeline gave up on) younger than this many seconds is a warning.
    advisory_recent: float = 3600.0


def finding(check: str, subject: str, severity: str, seen: str, diagnosis: str = "", next_step: str = "") -> Finding:
    return Finding(check, subject, severity, seen, diagnosis, next_step)


def by_percent(percent: float, warning: float, critical: float) -> str:
    """The severity of a usage *percent* against the two thresholds."""
    if percent >= critical:
        return CRITICAL
    return WARNING if percent >= warning else OK


# ------------------------------------------------------------------------------------------
# Reaching NATS
# ------------------------------------------------------------------------------------------
def collector_exec(names: Names) -> str:
    """kubectl's command to run something in a collector's container (the plan's recipe)."""
    if not names.collector:
        return f"kubectl -n {names.namespace} exec <collector-pod>"
    container = f" -c {names.collector_container}" if names.collector_container else ""
    return f"kubectl -n {names.namespace} exec ds/{names.collector}{container}"


def connection_findings(error: str, names: Names) -> list[Finding]:
    """The toolkit's own client connection: the plan's "Connection refused" recipe when it fails."""
    if not error:
        return [finding("nats_connection", "NATS client connection", OK, "connected; streams and consumers read")]
    host, port = names.nats_host_port()
    where = collector_exec(names)
    return [finding(
        "nats_connection", "NATS client connection", CRITICAL, error,
        "The toolkit could not open a NATS connection, so the stream and its consumers were not checked. Tapio's pods "
        "may fail the same way (the plan's 'Connection refused'): no ready NATS pod behind the Service, DNS, a "
        "NetworkPolicy, or the credentials.",
        f"From a collector pod check DNS and the port: {where} -- nslookup {host}; {where} -- nc -zv {host} {port} "
        f"(or run the toolkit's probe Job: ansible-playbook playbooks/preflight.yml). Then "
        f"kubectl -n {names.nats_namespace} get endpoints {names.nats_statefulset} (no address: no NATS pod is ready, "
        f"see the server findings) and the toolkit's own settings (tapio_nats_reach, tapio_nats_servers, "
        f"tapio_nats_user/tapio_nats_password).")]


def monitoring_findings(configured: bool, error: str, names: Names) -> list[Finding]:
    """Whether the servers' monitoring endpoints could be read at all (nothing when they were)."""
    if error:
        return [finding(
            "nats_monitoring", "NATS monitoring endpoints", CRITICAL, error,
            "No server's monitoring endpoint could be read: the servers' health, the meta group, memory and storage "
            "were not checked.",
            f"kubectl {names.nats_pods()} (are any pods ready?); with tapio_nats_reach: kubernetes the runner needs "
            f"pods list and pods/portforward in {names.nats_namespace} (docs/rbac.md); with direct reach, "
            f"tapio_nats_monitor_urls must reach each server's port 8222.")]
    if not configured:
        return [finding(
            "nats_monitoring", "NATS monitoring endpoints", WARNING, "no monitoring endpoint configured",
            "Without the servers' monitoring endpoints the servers' health, the meta group, memory and storage are "
            "not checked; only what the client connection sees is.",
            "Set tapio_nats_reach: kubernetes (every pod's port 8222 through the API server), or list every server's "
            "http://<server>:8222 in tapio_nats_monitor_urls (nats_health_monitor_urls).")]
    return []


# ------------------------------------------------------------------------------------------
# Servers and the JetStream meta group
# ------------------------------------------------------------------------------------------
def pod_of(label: str, server_name: str = "") -> str:
    """The NATS pod a monitoring label names (``tapio/tapio-nats-1:8222``), else the server's name."""
    if "/" in label and "://" not in label:
        return label.split("/", 1)[1].rsplit(":", 1)[0]
    return server_name or "<nats-pod>"


def server_down_step(pod: str, names: Names) -> str:
    ns = names.nats_namespace
    return (f"kubectl {names.nats_pods()}; kubectl -n {ns} describe pod {pod}; kubectl -n {ns} logs {pod} -c nats "
            f"--previous. Bring its node back, or once the node is gone for good delete the pod "
            f"(kubectl -n {ns} delete pod {pod}) so the StatefulSet starts it elsewhere; a server gone for good "
            f"leaves the meta group with nats server cluster peer-remove (docs/operations.md).")


def server_findings(health: dict[str, dict[str, Any]], not_ready: list[tuple[str, str]], expected: int,
                    names: Names, server_names: Optional[dict[str, str]] = None) -> list[Finding]:
    """Each server's /healthz (200 or down), each NATS pod that is not ready, and servers missing
    against *expected* (0: not checked)."""
    server_names = server_names or {}
    found: list[Finding] = []
    for label, answer in health.items():
        status = answer.get("http_status")
        if status == 200:
            continue
        reason = answer.get("error") or answer.get("status") or "no reason given"
        found.append(finding(
            "nats_server", label, CRITICAL, f"/healthz answered {status or 'nothing'} ({reason})",
            "This server does not serve JetStream. The others carry the streams while they keep a majority, but one "
            "more failure loses the quorum of the meta group and of R3 streams, and publishes fail.",
            server_down_step(pod_of(label, server_names.get(label, "")), names)))
    for pod, reason in not_ready:
        found.append(finding(
            "nats_server", f"{names.nats_namespace}/{pod}", CRITICAL, f"pod {pod} is not ready ({reason})",
            "This NATS server is not running or not ready. The others carry the streams while they keep a majority, "
            "but one more failure loses the quorum and publishes fail.",
            server_down_step(pod, names)))
    total = len(health) + len(not_ready)
    if expected and total < expected:
        found.append(finding(
            "nats_servers", "NATS servers", CRITICAL,
            f"{total} of {expected} NATS servers found",
            "Servers are missing: a pod that does not exist (deleted, not scheduled) or a monitoring URL not listed.",
            f"kubectl {names.nats_pods()}; kubectl -n {names.nats_namespace} get statefulset "
            f"{names.nats_statefulset}; kubectl -n {names.nats_namespace} get events --sort-by=.lastTimestamp | tail. "
            f"With direct reach, list every server in tapio_nats_monitor_urls; nats_health_expected_servers is the "
            f"number expected."))
    if not found and health:
        found.append(finding("nats_servers", "NATS servers", OK, f"{len(health)} server(s), every /healthz 200"))
    return found


META_SUBJECT = "JetStream meta group"
META_REPORT_STEP = ("nats server report jetstream as the system user (docs/operations.md) shows each server's view "
                    "of the meta group")


def no_meta_finding(cluster: dict[str, Any], standalone: bool, expected: int, names: Names) -> Finding:
    """No server reported a meta group: standalone servers (ok for one), no /jsz answer, or no JetStream cluster."""
    if standalone:
        if expected <= 1:
            return finding("nats_meta", META_SUBJECT, OK, "a single server, not clustered: no meta group")
        return finding(
            "nats_meta", META_SUBJECT, CRITICAL,
            f"the servers run standalone (no cluster) but {expected} are expected",
            "Without a cluster there is no replication: a lost server loses its streams.",
            f"Check the servers' cluster block (kubectl -n {names.nats_namespace} get configmap "
            f"{names.nats_statefulset}-config -o yaml) and run ansible-playbook playbooks/nats.yml.")
    if not cluster.get("health") or not cluster.get("servers_healthy"):
        return finding(
            "nats_meta", META_SUBJECT, CRITICAL, "no server answered /jsz",
            "The meta group cannot be judged: no server's monitoring endpoint answered.",
            f"See the server findings; kubectl {names.nats_pods()}.")
    return finding(
        "nats_meta", META_SUBJECT, CRITICAL, "no server reported a JetStream meta group",
        "JetStream is not running as a cluster on the servers that answered.",
        f"{META_REPORT_STEP}; kubectl -n {names.nats_namespace} logs {names.nats_statefulset}-0 -c nats "
        f"| grep -i jetstream.")


def meta_leader_finding(cluster: dict[str, Any], names: Names) -> Optional[Finding]:
    """Why the meta leader's view cannot be judged (no leader, or the leader not monitored); None when it can."""
    leader = cluster.get("leader")
    if not leader:
        return finding(
            "nats_meta", META_SUBJECT, CRITICAL, "the meta group has no leader",
            "Without a meta leader no stream or consumer can be created or changed and replicated streams cannot elect "
            "leaders: usually a majority of the servers is down, or they cannot reach each other on the route port.",
            f"Bring the missing servers back first (the server findings); {META_REPORT_STEP}; check the routes: "
            f"kubectl -n {names.nats_namespace} logs {names.nats_statefulset}-0 -c nats | grep -i route.")
    if not cluster.get("leader_view"):
        return finding(
            "nats_meta", META_SUBJECT, WARNING, f"meta leader {leader} is not among the monitored servers",
            "Only the meta leader knows whether the other peers are current: they were not judged.",
            "Monitor every server: tapio_nats_reach: kubernetes, or every server's URL in tapio_nats_monitor_urls.")
    return None


def meta_peer_findings(peers: list[dict[str, Any]], leader: str, names: Names) -> list[Finding]:
    """The meta leader's other peers: offline is critical, not current a warning."""
    found: list[Finding] = []
    for peer in peers:
        if peer.get("offline"):
            found.append(finding(
                "nats_meta_peer", f"meta peer {peer['name']}", CRITICAL,
                f"meta leader {leader} sees {peer['name']} offline",
                "A server of the meta group is gone (usually the same server as a server finding): one more failure "
                "loses the meta group's quorum.",
                server_down_step(str(peer["name"]), names)))
        elif not peer.get("current"):
            found.append(finding(
                "nats_meta_peer", f"meta peer {peer['name']}", WARNING,
                f"meta peer {peer['name']} is not current (lag {peer.get('lag', 0)})",
                "The peer is behind on the meta log: it catches up after a restart within seconds; one that stays "
                "behind has a slow disk or network, or keeps restarting.",
                f"Run the check again in a minute; {META_REPORT_STEP}; "
                f"kubectl -n {names.nats_namespace} logs {peer['name']} -c nats --since=10m."))
    return found


def meta_findings(cluster: dict[str, Any], standalone: bool, expected: int, names: Names) -> list[Finding]:
    """The JetStream meta group from the leader's view (tapio_nats_health.meta_cluster's
    ``cluster``): a leader, every peer current, as many peers as expected."""
    if "leader" not in cluster:
        return [no_meta_finding(cluster, standalone, expected, names)]
    unjudged = meta_leader_finding(cluster, names)
    if unjudged:
        return [unjudged]
    leader = cluster.get("leader")
    found = meta_peer_findings(cluster.get("peers") or [], leader, names)
    peers = len(cluster.get("peers") or []) + 1
    if expected and (cluster.get("cluster_size") != expected or peers != expected):
        found.append(finding(
            "nats_meta", META_SUBJECT, CRITICAL,
            f"meta leader {leader} sees cluster_size {cluster.get('cluster_size')} and {peers} peer(s); "
            f"{expected} expected",
            "The meta group does not hold every server: one never joined or was removed.",
            f"kubectl {names.nats_pods()}; {META_REPORT_STEP}; a server that was replaced may need "
            f"nats server cluster peer-remove for its old identity (docs/operations.md)."))
    if not found:
        found.append(finding("nats_meta", META_SUBJECT, OK, f"leader {leader}, {peers} peer(s), all current"))
    return found


# ------------------------------------------------------------------------------------------
# Memory and storage per server
# ------------------------------------------------------------------------------------------
def measure(used: float, maximum: float, what: str) -> Optional[dict[str, Any]]:
    if maximum <= 0:
        return None
    percent = round(100.0 * used / maximum, 1)
    return {"what": what, "percent": percent, "text": f"{what} {size(used)} of {size(maximum)} ({percent:g}%)"}


def resource_findings(label: str, varz: dict[str, Any], settings: Settings) -> list[Finding]:
    """One server's resident memory (varz ``mem``) against the container's memory limit, its
    JetStream memory store and file store against their limits (``jetstream.config``)."""
    if not varz or "error" in varz:
        return []
    names = settings.names
    server = varz.get("server_name") or label
    jetstream = varz.get("jetstream") or {}
    config, stats = jetstream.get("config") or {}, jetstream.get("stats") or {}
    pod = pod_of(label, str(varz.get("server_name") or ""))
    memory = [m for m in (measure(float(varz.get("mem") or 0), settings.memory_limit, "resident memory"),
                          measure(float(stats.get("memory") or 0), float(config.get("max_memory") or 0),
                                  "JetStream memory store")) if m]
    storage = [m for m in (measure(float(stats.get("storage") or 0), float(config.get("max_storage") or 0),
                                   "JetStream file store"),) if m]
    found = []
    for check, measures, diagnosis, step in (
        ("nats_memory", memory,
         "The server is close to its memory limit: above it the kernel kills it (OOMKilled) and its streams lose a "
         "replica; a full JetStream memory store refuses writes to memory-backed streams (the plan's 'High memory "
         "usage').",
         f"nats server report mem and nats server report jetstream as the system user (docs/operations.md); "
         f"kubectl -n {names.nats_namespace} top pod {pod}; kubectl -n {names.nats_namespace} get pod {pod} -o "
         f"jsonpath='{{.status.containerStatuses[0].lastState}}' (OOMKilled?). Raise nats_cluster_resources "
         f"(requests and limits memory) or lower nats_cluster_memory_store_size, then run ansible-playbook "
         f"playbooks/nats.yml (the plan's kubectl edit natscluster is the operator method's)."),
        ("nats_storage", storage,
         "The JetStream file store is close to its limit: at the limit streams refuse new messages "
         "(insufficient resources) whatever their own limits say.",
         "nats server report jetstream and nats stream report (which streams hold the bytes); lower the streams' "
         "max_bytes or max_age (nats_streams_events_stream) and run ansible-playbook playbooks/streams.yml, or grow "
         "the volume (nats_cluster_storage_size; the StorageClass must allow expansion) and run "
         "ansible-playbook playbooks/nats.yml."),
    ):
        if not measures:
            continue
        worst = max(measures, key=lambda m: m["percent"])
        severity = by_percent(worst["percent"], settings.usage_warning, settings.usage_critical)
        seen = f"{server}: " + ", ".join(m["text"] for m in measures)
        if check == "nats_storage" and stats.get("reserved_storage"):
            seen += f"; reserved by streams {size(float(stats['reserved_storage']))}"
        if check == "nats_memory" and not settings.memory_limit:
            seen += f"; resident memory {size(float(varz.get('mem') or 0))} (container limit unknown)"
        found.append(finding(check, label, severity, seen, "" if severity == OK else diagnosis,
                             "" if severity == OK else step))
    return found


# ------------------------------------------------------------------------------------------
# The events stream: replicas, fullness, advisories
# ------------------------------------------------------------------------------------------
def stream_missing(names: Names) -> Finding:
    return finding(
        "stream", names.stream, CRITICAL, f"stream {names.stream} does not exist",
        "Collectors in NATS mode publish into nothing: their events are lost (the plan's 'Message loss').",
        f"nats stream ls (as the toolkit's user); ansible-playbook playbooks/streams.yml creates {names.stream} "
        f"and its consumer (nats_streams_events_stream, nats_streams_pipeline_consumer).")


def replica_findings(info: dict[str, Any], settings: Settings) -> list[Finding]:
    """The stream's leader and replicas, judged as the gates judge them (stream_report)."""
    names = settings.names
    report, _ = stream_report(info, settings.max_replica_lag)
    name = info["config"]["name"]
    replicas_wanted = int(info["config"].get("num_replicas") or 1)
    step = (f"nats stream info {name} (its Cluster section: each replica's current and lag); a replica that stays "
            f"behind: kubectl -n {names.nats_namespace} logs <its server> -c nats, and nats stream cluster step-down "
            f"{name} moves the leader off a slow server (docs/operations.md).")
    found = []
    if replicas_wanted > 1 and not report["cluster"]["leader"]:
        found.append(finding(
            "stream_replicas", name, CRITICAL, f"stream {name} (R{replicas_wanted}) has no leader",
            "Without a leader the stream accepts no message: publishes fail and collectors buffer or drop events.",
            f"Bring its servers back (the server findings); {step}"))
    for replica in report["cluster"]["replicas"]:
        if replica["offline"]:
            found.append(finding(
                "stream_replicas", f"{name} replica {replica['name']}", CRITICAL,
                f"replica {replica['name']} of {name} is offline",
                "The stream runs on fewer copies: one more lost replica loses its quorum and publishes fail.",
                server_down_step(str(replica["name"]), names)))
        elif not replica["current"] and replica["lag"] > settings.max_replica_lag:
            found.append(finding(
                "stream_replicas", f"{name} replica {replica['name']}", WARNING,
                f"replica {replica['name']} of {name} is {replica['lag']} entries behind "
                f"(more than {settings.max_replica_lag})",
                "A lagging replica does not count towards the quorum until it catches up: the stream is a failure "
                "away from stopping.", step))
    if not found:
        found.append(finding("stream_replicas", name, OK,
                             f"leader {report['cluster']['leader'] or '-'}, {len(report['cluster']['replicas'])} "
                             f"other replica(s) current (R{replicas_wanted})"))
    return found


def fill_findings(info: dict[str, Any], consumer: Optional[dict[str, Any]], oldest_unacked_age: Optional[float],
                  settings: Settings) -> list[Finding]:
    """How full the stream is for what its discard policy loses, as the gates judge it
    (tapio_stream_health.fullness): the pipeline consumer's backlog, or without that consumer
    the whole stream."""
    names = settings.names
    name = info["config"]["name"]
    fill = fullness(info, consumer, oldest_unacked_age)
    if not fill["measures"]:
        return [finding("stream_fill", name, WARNING, fill["summary"],
                        "A stream without a message, byte or age limit grows until the servers' file store is full, "
                        "and then refuses every stream's messages.",
                        f"Set max_bytes or max_age on {name} (nats_streams_events_stream) and run "
                        f"ansible-playbook playbooks/streams.yml.")]
    severity = by_percent(fill["percent"], settings.fill_warning, settings.fill_critical)
    whose = f" for consumer {names.pipeline_consumer}" if consumer and fill["held"] != "stored" else ""
    seen = f"{fill['summary']}{whose}"
    if severity == OK:
        return [finding("stream_fill", name, OK, seen)]
    consequence = ("refuses new events (discard new)" if fill["held"] == "stored"
                   else "discards events not yet acknowledged (discard old)")
    return [finding(
        "stream_fill", name, severity, seen,
        f"At 100% by {fill['limit']} the stream {consequence}: events are lost (the plan's 'Message loss').",
        f"nats stream info {name} (limits and discard policy) and nats consumer info {name} "
        f"{names.pipeline_consumer} (its lag). Let the pipeline catch up (the consumer findings), or raise "
        f"the stream's limits (nats_streams_events_stream) and run ansible-playbook playbooks/streams.yml.")]


def advisory_findings(first: Optional[dict[str, Any]], second: Optional[dict[str, Any]], now: datetime.datetime,
                      settings: Settings) -> list[Finding]:
    """The max-delivery advisories stream: events the pipeline gave up on (after max_deliver)
    recently, or during the window. Nothing when the stream does not exist."""
    if second is None:
        return []
    names = settings.names
    name = second["config"]["name"]
    state = second.get("state") or {}
    count = int(state.get("messages") or 0)
    before = int(((first or {}).get("state") or {}).get("messages") or 0)
    last = parse_time(str(state.get("last_ts") or ""))
    age = (now - last).total_seconds() if last and count else None
    grew = first is not None and count > before
    if not grew and (age is None or age > settings.advisory_recent):
        seen = (f"{count} advisory(ies), the last {age / 3600:.1f}h ago" if age is not None
                else "no event given up")
        return [finding("advisories", name, OK, seen)]
    seen = (f"{count - before} new during the check; " if grew else "") + (
        f"{count} advisory(ies), the last {age:.0f}s ago" if age is not None else f"{count} advisory(ies)")
    return [finding(
        "advisories", name, WARNING, seen,
        "The pipeline gave up on events after max_deliver attempts: they are not processed (each advisory names the "
        "stream sequence).",
        f"nats stream view {name} (the advisories: stream_seq and deliveries); nats stream get {names.stream} <seq> "
        f"shows the event; the pipeline's logs: kubectl -n {names.namespace} logs deploy/{names.pipeline} -c "
        f"{names.pipeline_container} --since=1h.")]


# ------------------------------------------------------------------------------------------
# Durable consumers over the window
# ------------------------------------------------------------------------------------------
def is_durable(info: dict[str, Any]) -> bool:
    return bool((info.get("config") or {}).get("durable_name"))


def ack_floor(info: dict[str, Any]) -> int:
    return int((info.get("ack_floor") or {}).get("stream_seq") or 0)


def trend(stream_first: dict[str, Any], stream_second: dict[str, Any], before: dict[str, Any], after: dict[str, Any],
          elapsed: float, settings: Settings) -> tuple[Optional[bool], str]:
    """Keeping up over the two reads, judged as the gates judge it (tapio_stream_health.keeps_up)."""
    if elapsed <= 0:
        return None, "one read only: the trend is not judged"
    samples = [sample_of(stream_first, before, 0.0), sample_of(stream_second, after, elapsed)]
    return keeps_up(samples, settings.max_pending, min(settings.window, elapsed))


# A replay consumer (module_utils/tapio_replay_window.py's MARK and LAST_SEQ_KEY; a unit test
# keeps them equal): its reader stops at the window's last sequence, so the stream after the
# window stays pending for good, which is no stall.
REPLAY_MARK, REPLAY_LAST_SEQ_KEY = "tapio.io/replay", "tapio.io/replay-last-seq"


def replay_finding(subject: str, after: dict[str, Any], counts: str) -> Optional[Finding]:
    """A replay consumer's progress through its window (ok either way: its reader sets the pace)."""
    metadata = (after.get("config") or {}).get("metadata") or {}
    if REPLAY_MARK not in metadata:
        return None
    last, floor = int(metadata.get(REPLAY_LAST_SEQ_KEY) or 0), ack_floor(after)
    if floor >= last:
        return finding("consumer", subject, OK, f"replay window read to its end (ack floor {floor}, window ends at {last})")
    return finding("consumer", subject, OK,
                   f"replay window read to {floor} of {last} (its reader's pace, not judged; {counts})")


def consumer_missing(names: Names) -> Finding:
    """The pipeline's consumer does not exist on the events stream."""
    return finding(
        "consumer", f"{names.stream}/{names.pipeline_consumer}", CRITICAL,
        f"the pipeline's consumer {names.pipeline_consumer} does not exist on {names.stream}",
        "The pipeline has nothing to read from: events stay in the stream until its limits discard them.",
        f"nats consumer ls {names.stream}; ansible-playbook playbooks/streams.yml creates it "
        f"(nats_streams_pipeline_consumer).")


def consumer_counts(info: dict[str, Any]) -> str:
    """A consumer's counts as a finding shows them (seen)."""
    return (f"{info.get('num_pending') or 0} pending, {info.get('num_ack_pending') or 0} awaiting ack, "
            f"{info.get('num_redelivered') or 0} redelivered, ack floor {ack_floor(info)}")


def consumer_steps(name: str, names: Names) -> tuple[str, str]:
    """The commands a consumer's next steps start with: its info, and the pipeline's deployment and logs."""
    info_step = f"nats consumer info {names.stream} {name} (lag, waiting pulls, redelivered, ack floor)"
    pipeline_step = (f"kubectl -n {names.namespace} get deploy {names.pipeline}; kubectl -n {names.namespace} logs "
                     f"deploy/{names.pipeline} -c {names.pipeline_container} --since=10m")
    return info_step, pipeline_step


def stalled_finding(name: str, after: dict[str, Any], counts: str, elapsed: float, names: Names) -> Finding:
    """A consumer with a backlog at both reads and its ack floor unchanged (critical for the pipeline's)."""
    stream = names.stream
    pipeline = name == names.pipeline_consumer
    info_step, pipeline_step = consumer_steps(name, names)
    waiting = int(after.get("num_waiting") or 0)
    pull = (after.get("config") or {}).get("deliver_subject") is None
    pulls = f"; {waiting} pull request(s) waiting" if pull else ""
    return finding(
        "consumer", f"{stream}/{name}", CRITICAL if pipeline else WARNING,
        f"stalled: {counts}, ack floor unchanged over {elapsed:.0f}s{pulls}",
        ("Nothing was acknowledged while messages wait: " + (
            "the pipeline is not consuming (no pod running, not connected, or failing on one message again "
            "and again); events pile up until the stream's limits discard them (the plan's 'Message loss')."
            if pipeline else f"whoever reads {name} stopped. Under the limits retention this holds nothing "
            "back, but its lag grows and it will miss what the stream discards.")),
        f"{info_step}; " + (f"{pipeline_step}; restart a stuck pipeline: kubectl -n {names.namespace} rollout "
                            f"restart deploy/{names.pipeline}." if pipeline else
                            f"start its reader again, or remove a consumer nobody uses: nats consumer rm "
                            f"{stream} {name}."))


def behind_finding(name: str, counts: str, why: str, names: Names) -> Finding:
    """A consumer that acknowledges slower than the stream grows (keeps_up judged False)."""
    pipeline = name == names.pipeline_consumer
    info_step, pipeline_step = consumer_steps(name, names)
    return finding(
        "consumer", f"{names.stream}/{name}", WARNING, f"{counts}; {why}",
        "The consumer acknowledges slower than the stream grows: the backlog grows towards the stream's "
        "limits.",
        f"{info_step}; " + (f"{pipeline_step}; scale the pipeline (kubectl -n {names.namespace} scale "
                            f"deploy/{names.pipeline} --replicas=<n>) or find what slows it."
                            if pipeline else "find what slows its reader."))


def redelivery_findings(name: str, before: dict[str, Any], after: dict[str, Any], elapsed: float,
                        names: Names) -> list[Finding]:
    """A warning when the consumer's redeliveries grew over the window (nothing otherwise)."""
    redelivered = int(after.get("num_redelivered") or 0)
    if redelivered <= int(before.get("num_redelivered") or 0):
        return []
    pipeline = name == names.pipeline_consumer
    info_step, pipeline_step = consumer_steps(name, names)
    max_deliver = (after.get("config") or {}).get("max_deliver")
    return [finding(
        "consumer_redeliveries", f"{names.stream}/{name}", WARNING,
        f"redelivered {before.get('num_redelivered') or 0} -> {redelivered} over {elapsed:.0f}s",
        "Messages delivered and not acknowledged within ack_wait come back: the reader fails or times out on "
        f"them; after max_deliver ({max_deliver if max_deliver not in (None, -1) else 'unlimited'}) they are "
        f"given up (kept as advisories in {names.advisories_stream}).",
        f"{info_step}; " + (f"{pipeline_step} (errors, timeouts); a message that always fails shows in nats "
                            f"stream view {names.advisories_stream}." if pipeline
                            else "the reader's logs (errors, timeouts)."))]


def one_consumer_findings(name: str, before: Optional[dict[str, Any]], after: dict[str, Any],
                          stream_first: dict[str, Any], stream_second: dict[str, Any], elapsed: float,
                          settings: Settings) -> list[Finding]:
    """One durable consumer's findings: stalled, falling behind or ok, then growing redeliveries.
    A consumer created during the check (no first read) is ok with one read."""
    names = settings.names
    subject = f"{names.stream}/{name}"
    counts = consumer_counts(after)
    if before is None:
        return [finding("consumer", subject, OK, f"{counts} (created during the check: one read)")]
    replay = replay_finding(subject, after, counts)
    if replay is not None:
        return [replay] + redelivery_findings(name, before, after, elapsed, names)
    stalled = backlog_of(before) > 0 and backlog_of(after) > 0 and ack_floor(after) == ack_floor(before)
    verdict, why = trend(stream_first, stream_second, before, after, elapsed, settings)
    if stalled:
        state = stalled_finding(name, after, counts, elapsed, names)
    elif verdict is False:
        state = behind_finding(name, counts, why, names)
    else:
        state = finding("consumer", subject, OK, f"{counts}; {why}")
    return [state] + redelivery_findings(name, before, after, elapsed, names)


def consumer_findings(first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]],
                      stream_first: dict[str, Any], stream_second: dict[str, Any], elapsed: float,
                      settings: Settings) -> list[Finding]:
    """Each durable consumer read twice, *elapsed* seconds apart: stalled (a backlog at both reads
    and the ack floor unchanged), falling behind (keeps_up over the window), redeliveries growing.
    The pipeline's consumer missing or stalled is critical; another consumer's trouble a warning."""
    found = [] if settings.names.pipeline_consumer in second else [consumer_missing(settings.names)]
    for name in sorted(second):
        found += one_consumer_findings(name, first.get(name), second[name], stream_first, stream_second, elapsed,
                                       settings)
    return found


# ------------------------------------------------------------------------------------------
# Tapio's workloads (and the NATS StatefulSet): rollout and output mode
# ------------------------------------------------------------------------------------------
def rollout_of(workload: dict[str, Any]) -> tuple[bool, str]:
    """(complete, summary) from a workload's facts, judged as the engine's rollout_state."""
    kind = workload.get("kind")
    number = {key: int(workload.get(key) or 0) for key in (
        "generation", "observed_generation", "desired", "current", "updated", "ready", "available", "unavailable")}
    observed = number["observed_generation"] >= number["generation"]
    desired, updated, ready = number["desired"], number["updated"], number["ready"]
    if kind == "DaemonSet":
        done = observed and desired > 0 and updated == desired and ready == desired and number["unavailable"] == 0
        summary = f"{updated}/{desired} updated, {ready} ready, {number['unavailable']} unavailable"
    else:
        available = number["available"] if kind == "Deployment" else ready
        done = (observed and number["current"] == desired and updated == desired and ready == desired
                and available == desired)
        if kind == "StatefulSet":
            done = done and workload.get("current_revision") == workload.get("update_revision")
        summary = f"{updated}/{desired} updated, {ready} ready, {available} available"
    if not observed:
        summary += " (the controller has not seen the latest spec)"
    return done, summary


def short_kind(kind: str) -> str:
    return {"DaemonSet": "ds", "Deployment": "deploy", "StatefulSet": "sts"}.get(kind, kind.lower())


def workload_findings(workload: dict[str, Any], settings: Settings) -> list[Finding]:
    """A workload's rollout, and for the ones the migration switches its output mode."""
    names = settings.names
    kind, name = workload["kind"], workload["name"]
    namespace = workload.get("namespace") or names.namespace
    subject = f"{kind} {namespace}/{name}"
    ref = f"{short_kind(kind)}/{name}"
    if workload.get("error"):
        return [finding(
            "workload", subject, CRITICAL, f"could not be read: {workload['error']}",
            "Its rollout and output mode are unknown.",
            f"kubectl -n {namespace} get {ref}; the runner needs get on {kind.lower()}s in {namespace} (docs/rbac.md) "
            f"and the kubeconfig/context of the inventory (tapio_kubeconfig, tapio_kube_context).")]
    if not workload.get("found"):
        return [finding(
            "workload", subject, CRITICAL, f"{kind} {name} not found in {namespace}",
            "A workload of the event path is missing: its events are not produced or not consumed.",
            f"kubectl -n {namespace} get {short_kind(kind)}; check tapio_namespace, tapio_pipeline and "
            f"tapio_collectors (or nats_cluster_name) against what is installed.")]
    found: list[Finding] = []
    done, summary = rollout_of(workload)
    desired, ready = int(workload.get("desired") or 0), int(workload.get("ready") or 0)
    rollout_step = (f"kubectl -n {namespace} rollout status {ref} --timeout=60s; kubectl -n {namespace} describe {ref} "
                    f"and its pods' events (Pending: resources or node selectors; CrashLoopBackOff: kubectl -n "
                    f"{namespace} logs {ref} -c {workload.get('container') or '<container>'} --previous); a broken new "
                    f"spec goes back with kubectl -n {namespace} rollout undo {ref}.")
    if desired > 0 and ready == 0:
        found.append(finding("workload_rollout", subject, CRITICAL, f"no pod ready: {summary}",
                             "Nothing of this workload runs: its part of the event path is down.", rollout_step))
    elif desired == 0:
        found.append(finding(
            "workload_rollout", subject, WARNING,
            "scheduled on no node" if kind == "DaemonSet" else "scaled to zero replicas",
            "Nothing of this workload runs" + (" (its node selector or tolerations match no node)."
                                               if kind == "DaemonSet" else " (someone scaled it down)."),
            f"kubectl -n {namespace} get {ref} -o yaml (nodeSelector, tolerations, replicas)"
            + ("." if kind == "DaemonSet" else f"; kubectl -n {namespace} scale {ref} --replicas=<n>.")))
    elif not done:
        found.append(finding("workload_rollout", subject, WARNING, f"rollout not complete: {summary}",
                             "Pods of an older spec still run, or new pods are not ready: the rollout is in progress "
                             "or stuck.", rollout_step))
    else:
        found.append(finding("workload_rollout", subject, OK, f"rolled out: {summary}"))
    if workload.get("owned"):
        found.append(mode_finding(workload, subject, ref, namespace, settings))
    return found


def mode_finding(workload: dict[str, Any], subject: str, ref: str, namespace: str, settings: Settings) -> Finding:
    """The output mode against the expected one (direct also accepts no value: a pre-migration spec)."""
    names = settings.names
    mode = workload.get("output_mode")
    shown = f"{names.mode_env}={mode}" if mode is not None else f"{names.mode_env} not set"
    expected = settings.expected_mode
    if mode == expected or (expected == settings.direct_value and mode is None):
        return finding("workload_mode", subject, OK, shown)
    container = workload.get("container") or "<container>"
    if expected == settings.direct_value:
        step = ("ansible-playbook rollback.yml puts it back on direct gRPC with the others (or run "
                "nats_health_mode=nats if the migration is meant to be in place)")
    else:
        step = ("ansible-playbook migrate.yml --tags pipeline,collectors switches it to NATS again (its pre-migration "
                "spec is recorded); if the cluster was rolled back on purpose, check with -e nats_health_mode="
                f"{settings.direct_value}")
    return finding(
        "workload_mode", subject, CRITICAL, f"{shown}, expected {expected}",
        "The workload runs in another output mode than the rest of the event path: its events go where nobody reads "
        "them, or it reads where nobody writes. Usually its spec was re-applied from an older manifest (a deploy "
        "pipeline, Helm, kubectl apply) over the migration's change.",
        f"kubectl -n {namespace} get {ref} -o jsonpath='{{.spec.template.spec.containers[?(@.name==\"{container}\")]"
        f".env}}'; {step}. Update the manifest it came from so the next deploy keeps the mode.")


# ------------------------------------------------------------------------------------------
# Everything, and the summary
# ------------------------------------------------------------------------------------------
def nats_findings(monitoring: dict[str, Any], settings: Settings) -> list[Finding]:
    """Servers, meta group, memory and storage from the monitoring endpoints."""
    names = settings.names
    found = monitoring_findings(bool(monitoring.get("configured")), str(monitoring.get("error") or ""), names)
    if monitoring.get("error") or not monitoring.get("configured"):
        return found
    cluster = monitoring.get("cluster") or {}
    varz = monitoring.get("varz") or {}
    server_names = {label: str(answer.get("server_name") or "") for label, answer in varz.items()}
    found += server_findings(cluster.get("health") or {}, [tuple(p) for p in monitoring.get("not_ready") or []],
                             settings.expected_servers, names, server_names)
    answered = [answer for answer in varz.values() if answer and "error" not in answer]
    standalone = bool(answered) and not any((answer.get("cluster") or {}).get("name") for answer in answered)
    found += meta_findings(cluster, standalone, settings.expected_servers, names)
    for label in sorted(varz):
        found += resource_findings(label, varz[label], settings)
    return found


def jetstream_findings(jetstream: dict[str, Any], settings: Settings, now: datetime.datetime) -> list[Finding]:
    """The client connection, the events stream and its durable consumers, the advisories."""
    found = connection_findings(str(jetstream.get("error") or ""), settings.names)
    if jetstream.get("error"):
        return found
    first, second = jetstream.get("stream"), jetstream.get("stream_after")
    if second is None:
        return found + [stream_missing(settings.names)]
    consumers = {n: c for n, c in (jetstream.get("consumers_after") or {}).items() if is_durable(c)}
    before = {n: c for n, c in (jetstream.get("consumers") or {}).items() if is_durable(c)}
    found += replica_findings(second, settings)
    found += fill_findings(second, consumers.get(settings.names.pipeline_consumer),
                           jetstream.get("oldest_unacked_age"), settings)
    found += consumer_findings(before, consumers, first or second, second, float(jetstream.get("elapsed") or 0.0),
                               settings)
    found += advisory_findings(jetstream.get("advisories"), jetstream.get("advisories_after"), now, settings)
    return found


def findings_of(gathered: dict[str, Any], settings: Settings, now: datetime.datetime) -> list[Finding]:
    """Every finding from the gathered answers, critical first (in check order within a severity)."""
    found = nats_findings(gathered.get("monitoring") or {}, settings)
    found += jetstream_findings(gathered.get("jetstream") or {}, settings, now)
    for workload in gathered.get("workloads") or []:
        found += workload_findings(workload, settings)
    return sorted(found, key=lambda f: -RANK[f.severity])


def summary_of(findings: list[Finding]) -> dict[str, Any]:
    """Counts per severity and the worst one (ok when there is no finding)."""
    counts = {severity: sum(1 for f in findings if f.severity == severity) for severity in SEVERITIES}
    worst = max((f.severity for f in findings), key=lambda s: RANK[s], default=OK)
    return {**counts, "worst": worst, "total": len(findings)}
