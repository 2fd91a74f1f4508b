"""UnifiedEvents as Tapio's collectors emit them, and the seed's subject scheme.

Pure functions only: unit-tested in tests/unit/test_sim_events.py.
"""
from __future__ import annotations

import hashlib
import json
import random
from datetime import datetime, timezone
from typing import Any

# Collector kinds the simulator knows how to emit for, and the `source` each one writes.
SOURCE_BY_KIND = {"k8s": "k8s-collector", "systemd": "systemd-collector", "ebpf": "ebpf-collector"}
KIND_BY_SOURCE = {source: kind for kind, source in SOURCE_BY_KIND.items()}

EVENT_TYPES = ("system", "kubernetes", "service", "log", "network", "process", "memory", "cpu",
               "disk", "metric")
SEVERITIES = ("debug", "info", "low", "medium", "warning", "high", "error", "critical")

# Characters that would split or wildcard a NATS subject token.
_TOKEN_BAD = str.maketrans({".": "_", " ": "_", "*": "_", ">": "_", "\t": "_", "\r": "_", "\n": "_"})


def subject_token(value: Any, default: str) -> str:
    """One subject token: non-empty, without dots, spaces or wildcards."""
    text = "" if value is None else str(value)
    text = text.translate(_TOKEN_BAD)
    return text or default


def _lookup(event: dict[str, Any], key: str, *blocks: str) -> Any:
    for block in blocks:
        value = event.get(block)
        if isinstance(value, dict) and value.get(key):
            return value[key]
    return None


def build_subject(event: dict[str, Any], prefix: str | None = None) -> str:
    """The seed's `buildSubject`, with the collector's NATS_SUBJECT_PREFIX when it has one.

    - k8s-collector:     <prefix or tapio.events.k8s>.<namespace or "default">.<type>
    - systemd-collector: <prefix or tapio.events.systemd>.<service or "unknown">.<type>
    - ebpf-collector:    <prefix or tapio.events.ebpf>.<type>
    - anything else:     <prefix or tapio.events.<source>>.<type>

    The namespace comes from the event's context (`context`, then `k8s_context`, then
    `entity`), the service from `data` then `attributes`. Tokens are sanitised (a dot in a
    value would add subject levels) and an empty type becomes "unknown".
    """
    source = str(event.get("source") or "")
    etype = subject_token(event.get("type"), "unknown")
    kind = KIND_BY_SOURCE.get(source)
    if kind == "k8s":
        namespace = _lookup(event, "namespace", "context", "k8s_context", "entity")
        return f"{prefix or 'tapio.events.k8s'}.{subject_token(namespace, 'default')}.{etype}"
    if kind == "systemd":
        service = _lookup(event, "service", "data", "attributes")
        return f"{prefix or 'tapio.events.systemd'}.{subject_token(service, 'unknown')}.{etype}"
    if kind == "ebpf":
        return f"{prefix or 'tapio.events.ebpf'}.{etype}"
    return f"{prefix or 'tapio.events.' + subject_token(source, 'unknown')}.{etype}"


def event_id(run_id: str, source: str, seq: int) -> str:
    """32 hex chars, unique per (simulator run, source, sequence) and recomputable.

    The receiver recomputes it from the event's source and sequence: a mismatch is a
    corrupted event. A new run id per simulator start keeps JetStream's duplicate window
    from swallowing a restarted simulator's events.
    """
    return hashlib.blake2b(f"{run_id}:{source}:{seq}".encode(), digest_size=16).hexdigest()


def rfc3339_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


_K8S_NAMESPACES = ("default", "kube-system", "payments", "checkout", "monitoring")
_K8S_REASONS = (("Normal", "Scheduled", "info"), ("Normal", "Pulled", "debug"),
                ("Warning", "BackOff", "warning"), ("Warning", "Unhealthy", "high"),
                ("Warning", "OOMKilling", "critical"), ("Normal", "ScalingReplicaSet", "info"))
_SERVICES = ("kubelet", "containerd", "sshd", "systemd-journald", "chronyd")
_SYSTEMD = (("service", "info", "Started {svc}.service"), ("service", "error", "{svc}.service: Main process exited, code=exited, status=1/FAILURE"),
            ("log", "warning", "{svc}: connection reset by peer"), ("log", "debug", "{svc}: heartbeat"))
_EBPF = (("network", "info", "tcp_connect"), ("process", "low", "execve"), ("memory", "critical", "oom_kill"),
         ("network", "debug", "tcp_sendmsg"))
_COMMS = ("nginx", "java", "postgres", "python3", "envoy")


def make_event(*, kind: str, source: str, seq: int, run_id: str, pod: str, node: str,
               workload: str, rng: random.Random | None = None) -> dict[str, Any]:
    """A realistic UnifiedEvent for one collector kind (see docs/facts-tapio.md)."""
    rng = rng or random
    attributes: dict[str, Any] = {"sequence": seq, "pod": pod, "node": node, "collector": workload,
                                  "sim_run": run_id}
    event: dict[str, Any] = {
        "id": event_id(run_id, source, seq),
        "timestamp": rfc3339_now(),
        "source": source,
    }
    if kind == "k8s":
        ns = rng.choice(_K8S_NAMESPACES)
        event_type, reason, severity = rng.choice(_K8S_REASONS)
        obj = f"app-{rng.randrange(100):02d}-{rng.randrange(16**5):05x}"
        event.update(type="kubernetes", severity=severity,
                     message=f"{reason}: pod {ns}/{obj}",
                     kubernetes={"event_type": event_type, "reason": reason, "object": f"pod/{obj}",
                                 "object_kind": "Pod"},
                     k8s_context={"kind": "Pod", "name": obj, "namespace": ns, "node_name": node,
                                  "workload_name": obj.rsplit("-", 1)[0]},
                     context={"namespace": ns})
    elif kind == "systemd":
        svc = rng.choice(_SERVICES)
        etype, severity, template = rng.choice(_SYSTEMD)
        attributes["service"] = svc
        event.update(type=etype, severity=severity, message=template.format(svc=svc),
                     data={"service": svc, "unit": f"{svc}.service", "node": node})
    elif kind == "ebpf":
        etype, severity, syscall = rng.choice(_EBPF)
        comm = rng.choice(_COMMS)
        pid = rng.randrange(300, 60000)
        event.update(type=etype, severity=severity, message=f"{syscall} by {comm}[{pid}]",
                     kernel={"syscall": syscall, "pid": pid, "comm": comm})
        if etype == "network":
            event["network"] = {"protocol": "tcp", "source_ip": f"10.0.{rng.randrange(4)}.{rng.randrange(2, 250)}",
                                "dest_ip": f"10.96.{rng.randrange(4)}.{rng.randrange(2, 250)}",
                                "source_port": rng.randrange(30000, 60000), "dest_port": rng.choice((80, 443, 5432)),
                                "bytes_sent": rng.randrange(64, 65536)}
    else:
        event.update(type=rng.choice(("system", "metric")), severity="info",
                     message=f"{source} heartbeat")
    event["attributes"] = attributes
    return event


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def decode(data: bytes) -> tuple[str, int, str, str] | None:
    """(source, sequence, id, run id) of a simulator event; None for a JSON event that is
    not the simulator's (a canary or replayed event someone else published); ValueError when
    the payload is not a JSON object at all."""
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"undecodable event: {exc}") from exc
    if not isinstance(event, dict):
        raise ValueError("undecodable event: not a JSON object")
    attrs = event.get("attributes")
    if not isinstance(attrs, dict) or "sim_run" not in attrs or "sequence" not in attrs:
        return None
    try:
        return str(event["source"]), int(attrs["sequence"]), str(event["id"]), str(attrs["sim_run"])
    except (KeyError, TypeError, ValueError):
        return None
