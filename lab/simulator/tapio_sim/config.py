"""Configuration: defaults < YAML file (--config) < command-line flags.

Every name the migration may change (namespace, workloads, containers, env var names,
stream and consumer) is a key here; the defaults are the names the plan and the lab use.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]

DEFAULTS: dict[str, Any] = {
    "namespace": "tapio",
    "kubeconfig": str(REPO_ROOT / ".lab" / "kubeconfig"),
    "context": "kwok-tapio-lab",
    "poll_interval": 0.5,          # seconds between pod lists
    "rate_per_pod": 230.0,         # events/s per Ready collector pod (9 pods: ~2,070/s)
    "collectors": [
        {"name": "tapio-k8s-collector", "container": "k8s-collector", "kind": "k8s",
         "subject_prefix": "tapio.events.k8s"},
        {"name": "tapio-systemd-collector", "container": "systemd-collector", "kind": "systemd",
         "subject_prefix": "tapio.events.systemd"},
        {"name": "tapio-ebpf-collector", "container": "ebpf-collector", "kind": "ebpf",
         "subject_prefix": "tapio.events.ebpf"},
    ],
    "pipeline": {
        "name": "tapio-pipeline",
        "kind": "Deployment",          # Deployment | DaemonSet | StatefulSet
        "container": "pipeline",
        # The pipeline consumes from NATS when this var == env.nats_value, or, when the var
        # is absent, when the container has env.nats_url set (the seed sets NATS_URL and
        # CONSUME_SUBJECTS on the pipeline).
        "mode_env": "TAPIO_OUTPUT_MODE",
        "nats_url_means_nats": True,
    },
    # Second correlation engines (the plan's A/B), each watched like the pipeline: a Ready pod
    # whose env says NATS reads the durable consumer env.consumer names (else `consumer`) and
    # records into a ledger of its own (the /ledger report's "engines").
    #   [{name: tapio-correlation-b, kind: Deployment, container: pipeline, consumer: engine-b}]
    "engines": [],
    "env": {
        "mode": "TAPIO_OUTPUT_MODE",      # collectors: "nats" -> NATS output, else direct
        "nats_value": "nats",
        "nats_url": "NATS_URL",
        "subject_prefix": "NATS_SUBJECT_PREFIX",
        # A pod that sets these (literal or from its Secret) connects as that user;
        # otherwise with nats.user / nats.password below.
        "user": "NATS_USER",
        "password": "NATS_PASSWORD",
        # A pod that sets this (PEM, from a Secret) connects over TLS trusting only that CA.
        "ca": "NATS_CA",
        # A pod that sets this takes its request replies on <prefix>.> (nats-py's inbox_prefix),
        # as Tapio's client passes it: a workload's NATS user may subscribe only there.
        "inbox_prefix": "NATS_INBOX_PREFIX",
        # An engine's durable consumer (the toolkit sets it on a second correlation engine).
        "consumer": "NATS_CONSUMER",
    },
    "nats": {
        "servers": ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://127.0.0.1:4224"],
        "user": "tapio",
        "password": "tapio-lab-secret",   # or password_env: NAME
        "password_env": None,
        # In-cluster URL -> servers to dial (wins over cluster_dns). A URL not listed here
        # (and not already on loopback) is resolved through cluster_dns, else maps to `servers`.
        "url_map": {},
        # The lab's cluster DNS (CoreDNS): a pod's NATS_URL host is resolved there with the
        # pod's search path at each connect. server null: no pod DNS, unlisted URLs -> servers.
        "cluster_dns": {"server": None, "port": 53, "domain": "cluster.local", "timeout": 1.0},
        "stream": "TAPIO_EVENTS",
        "consumer": "tapio-pipeline",
        # per-pod: each emulated collector pod opens its own connection (as real pods do);
        # shared: one connection per server list for every pod (labs of hundreds of nodes).
        "connections": "per-pod",
        "publish_window": 1024,        # un-acked publishes per collector pod
        "max_backlog": 200000,         # queued events per collector pod before dropping
        "ack_timeout": 5.0,            # republish (same Nats-Msg-Id) after this long
        "fetch_batch": 500,            # keep <= the consumer's max_ack_pending (default 1000)
        "fetch_concurrency": 1,        # pull requests in flight per pipeline pod (1 measured fastest)
        "fetch_timeout": 1.0,
        "consume_mode": "continuous",  # continuous pulls (as nats.go Consume) | fetch (a fetch loop)
        "pull_expires": 5.0,           # expiry of each continuous pull request
    },
    "http": {"host": "127.0.0.1", "port": 8787},
    "state_dir": str(REPO_ROOT / ".lab" / "tapio-sim"),
    "stop_flush_timeout": 20.0,        # a stopping NATS-mode collector waits this long for acks
    "exit_settle": 10.0,               # on SIGTERM: wait this long for in-flight events
    "timeline_max_seconds": 21600,
    "log_level": "info",
}

KINDS = ("k8s", "systemd", "ebpf", "other")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _kind_for(collector: dict[str, Any]) -> str:
    if collector.get("kind"):
        return str(collector["kind"])
    text = f"{collector.get('container', '')} {collector.get('name', '')} {collector.get('subject_prefix', '')}"
    for kind in ("k8s", "systemd", "ebpf"):
        if kind in text:
            return kind
    return "other"


def normalise(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill derived values and reject what cannot work."""
    cfg = copy.deepcopy(cfg)
    if not cfg.get("collectors"):
        raise ValueError("config: at least one collector is needed")
    for col in cfg["collectors"]:
        for key in ("name", "container"):
            if not col.get(key):
                raise ValueError(f"config: collector {col!r} needs {key!r}")
        col["kind"] = _kind_for(col)
        if col["kind"] not in KINDS:
            raise ValueError(f"config: collector {col['name']}: kind must be one of {KINDS}")
        col.setdefault("source", {"k8s": "k8s-collector", "systemd": "systemd-collector",
                                  "ebpf": "ebpf-collector"}.get(col["kind"], col["container"]))
        col.setdefault("subject_prefix", None)
        if col.get("rate") is not None:
            col["rate"] = float(col["rate"])
    for engine in cfg["engines"]:
        if not isinstance(engine, dict) or not engine.get("name") or not engine.get("container"):
            raise ValueError(f"config: engine {engine!r} needs 'name' and 'container'")
        if engine["name"] == cfg["pipeline"]["name"]:
            raise ValueError(f"config: engine {engine['name']} is the pipeline")
        engine.setdefault("kind", "Deployment")
        engine.setdefault("mode_env", cfg["pipeline"]["mode_env"])
        engine.setdefault("nats_url_means_nats", cfg["pipeline"]["nats_url_means_nats"])
        engine.setdefault("consumer", None)
    names = [e["name"] for e in cfg["engines"]]
    if len(set(names)) != len(names):
        raise ValueError(f"config: an engine is listed twice: {names}")
    if cfg["http"]["host"] not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError("config: http.host must be a loopback address")
    if cfg["nats"].get("password_env"):
        cfg["nats"]["password"] = os.environ.get(cfg["nats"]["password_env"], cfg["nats"].get("password"))
    if cfg["nats"]["connections"] not in ("per-pod", "shared"):
        raise ValueError("config: nats.connections must be per-pod or shared")
    cdns = {**DEFAULTS["nats"]["cluster_dns"], **(cfg["nats"].get("cluster_dns") or {})}
    cfg["nats"]["cluster_dns"] = {"server": str(cdns["server"]) if cdns["server"] else None,
                                  "port": int(cdns["port"]), "domain": str(cdns["domain"]).strip("."),
                                  "timeout": float(cdns["timeout"])}
    if cfg["nats"]["cluster_dns"]["timeout"] <= 0 or not 0 < cfg["nats"]["cluster_dns"]["port"] < 65536:
        raise ValueError("config: nats.cluster_dns needs a port in 1-65535 and a timeout > 0")
    cfg["rate_per_pod"] = float(cfg["rate_per_pod"])
    return cfg


def load(path: str | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = DEFAULTS
    if path:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config {path}: expected a mapping")
        cfg = deep_merge(cfg, data)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return normalise(cfg)
