"""The simulator: reconciles emulated containers with the pods the API server reports."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from tapio_sim.collector import CollectorInstance, SharedConnections
from tapio_sim.dns import DnsError, resolve_for_pod
from tapio_sim.kube import KubeReader, PodView
from tapio_sim.ledger import EngineLedger, Ledger
from tapio_sim.pipeline import PipelineConsumer

log = logging.getLogger("tapio_sim")

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
DEFAULT_NATS_PORT = 4222
# (host, pod namespace) -> IPv4 addresses; raises DnsError when the cluster DNS fails.
Resolver = Callable[[str, str | None], list[str]]
_dns_errors_logged: set[str] = set()  # a failing name is logged once, not per pod
# Emulated collector pods started at the same time (each NATS-mode start opens a connection).
START_CONCURRENCY = 32


def nats_credentials(env: dict[str, str], env_names: dict[str, Any],
                     ncfg: dict[str, Any]) -> tuple[str | None, str | None]:
    """(user, password) for a pod: its env's when it sets the user variable at all (even to
    "" from a Secret that does not resolve, so that such a pod's connect is refused as a real
    one's would be), else the configured ones."""
    user_env, password_env = env_names.get("user"), env_names.get("password")
    if user_env and user_env in env:
        return env[user_env], env.get(password_env or "", "")
    return ncfg.get("user") or None, ncfg.get("password") or None


def nats_inbox_prefix(env: dict[str, str], env_names: dict[str, Any]) -> str | None:
    """The inbox prefix a pod's client uses (its env's), else nats-py's default _INBOX."""
    inbox_env = env_names.get("inbox_prefix")
    return (env.get(inbox_env) or None) if inbox_env else None


def nats_ca(env: dict[str, str], env_names: dict[str, Any]) -> str | None:
    """The CA (PEM) a pod trusts for TLS to NATS: its env's (from a Secret), else none."""
    ca_env = env_names.get("ca")
    return (env.get(ca_env) or None) if ca_env else None


def map_nats_url(url: str, url_map: dict[str, Any], servers: list[str],
                 resolver: Resolver | None = None, namespace: str | None = None) -> list[str]:
    """An in-cluster NATS_URL (one or a comma-separated list) -> servers to dial: its url_map
    entry; itself when all on loopback; with a resolver, each host's addresses as a pod in
    *namespace* resolves it (scheme and port kept); else (or when nothing resolves) servers."""
    url = (url or "").strip()
    if url in url_map:
        mapped = url_map[url]
        return list(mapped) if isinstance(mapped, list) else [str(mapped)]
    parts = [p.strip() for p in url.split(",") if p.strip()]
    splits = [urlsplit(p if "://" in p else f"nats://{p}") for p in parts]
    if parts and all((s.hostname or "") in LOOPBACK_HOSTS for s in splits):
        return parts
    if resolver is not None:
        resolved: list[str] = []
        for part in splits:
            try:
                port = part.port or DEFAULT_NATS_PORT
            except ValueError:  # not a number: the pod could not dial it either
                continue
            try:
                addrs = resolver(part.hostname, namespace) if part.hostname else []
            except DnsError as exc:
                if str(exc) not in _dns_errors_logged:
                    _dns_errors_logged.add(str(exc))
                    log.warning("cluster DNS failed, dialling the configured servers instead: %s", exc)
                continue
            resolved += [f"{part.scheme}://{f'[{a}]' if ':' in a else a}:{port}" for a in addrs]
        if resolved:
            return list(dict.fromkeys(resolved))  # two URL parts may name one Service
    return list(servers)


def cluster_dns_resolver(cdns: dict[str, Any] | None) -> Resolver | None:
    """A resolver asking nats.cluster_dns's server, or None (no server: no pod DNS)."""
    if not cdns or not cdns.get("server"):
        return None
    server, port = str(cdns["server"]), int(cdns.get("port") or 53)
    domain, timeout = str(cdns.get("domain") or "cluster.local"), float(cdns.get("timeout") or 1.0)
    return lambda host, namespace: resolve_for_pod(host, namespace, server, port, domain, timeout)


def pipeline_wants_nats(env: dict[str, str], pcfg: dict[str, Any], env_names: dict[str, Any]) -> bool:
    mode = env.get(pcfg["mode_env"])
    if mode is not None and mode.strip() != "":
        return mode.strip().lower() == env_names["nats_value"]
    return bool(pcfg.get("nats_url_means_nats")) and bool(env.get(env_names["nats_url"], "").strip())


class Simulator:
    def __init__(self, cfg: dict[str, Any], reader: KubeReader | None = None) -> None:
        self.cfg = cfg
        self.ledger = Ledger(secrets.token_hex(4), int(cfg["timeline_max_seconds"]))
        self.reader = reader
        self.paused = False
        self.collectors: dict[str, CollectorInstance] = {}   # pod uid -> instance
        self.consumers: dict[str, PipelineConsumer] = {}     # pod uid -> consumer
        self.pipeline_pods: list[PodView] = []
        # Second correlation engines (the plan's A/B): each its Deployment's consumers and ledger.
        self.engine_consumers: dict[str, dict[str, PipelineConsumer]] = {e["name"]: {} for e in cfg["engines"]}
        self.engine_ledgers = {e["name"]: EngineLedger(e["name"]) for e in cfg["engines"]}
        self.ready_pipeline = 0
        self.polls = 0
        self.poll_errors = 0
        self.last_poll_error = ""
        self.last_poll = 0.0
        self.missing_workloads: list[str] = []
        self.started = time.time()
        self._stopping_tasks: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self.state_dir = Path(cfg["state_dir"])
        # nats.connections: per-pod (a connection per emulated pod, as real pods have) or shared.
        self.shared_nats = SharedConnections(self) if cfg["nats"]["connections"] == "shared" else None

    # -- helpers used by the emulated pods ------------------------------------------------
    def direct_available(self) -> bool:
        return self.ready_pipeline > 0

    def nats_credentials(self, env: dict[str, str]) -> tuple[str | None, str | None]:
        """The user a pod connects as: the one its env names (a workload's own NATS user
        from its Secret), else the simulator's configured user."""
        return nats_credentials(env, self.cfg["env"], self.cfg["nats"])

    def nats_ca(self, env: dict[str, str]) -> str | None:
        return nats_ca(env, self.cfg["env"])

    def nats_inbox_prefix(self, env: dict[str, str]) -> str | None:
        return nats_inbox_prefix(env, self.cfg["env"])

    def map_nats_url(self, url: str, namespace: str | None = None) -> list[str]:
        """Servers for a pod's NATS_URL, resolved anew at each (re)connect (a NATS pod that
        restarts with a new IP is found). Blocks on DNS: call it off the event loop."""
        ncfg = self.cfg["nats"]
        return map_nats_url(url, ncfg.get("url_map") or {}, ncfg["servers"],
                            cluster_dns_resolver(ncfg.get("cluster_dns")), namespace or self.cfg["namespace"])

    # -- reconcile ------------------------------------------------------------------------
    def _workloads(self) -> list[tuple[str, str, str, str]]:
        items = [(c["name"], "DaemonSet", c["name"], c["container"]) for c in self.cfg["collectors"]]
        p = self.cfg["pipeline"]
        items.append(("__pipeline__", p["kind"], p["name"], p["container"]))
        items += [(f"__engine__{e['name']}", e["kind"], e["name"], e["container"]) for e in self.cfg["engines"]]
        return items

    async def poll_once(self) -> None:
        assert self.reader is not None
        snap = await asyncio.to_thread(self.reader.snapshot, self.cfg["namespace"], self._workloads())
        self.polls += 1
        self.last_poll = time.time()
        if snap["missing"] != self.missing_workloads:
            if snap["missing"]:
                log.warning("workloads not found in namespace %s: %s", self.cfg["namespace"], snap["missing"])
            self.missing_workloads = snap["missing"]
        await self.reconcile(snap["pods"])

    async def reconcile(self, pods: dict[str, list[PodView]]) -> None:
        # Pipeline first: the direct channel's availability follows its Ready pods.
        pipeline = pods.get("__pipeline__", [])
        self.pipeline_pods = pipeline
        ready = [p for p in pipeline if p.ready]
        if len(ready) != self.ready_pipeline:
            log.info("pipeline: %d Ready pod(s)%s", len(ready), "" if ready else ": direct sends are now LOST")
        self.ready_pipeline = len(ready)
        await self._reconcile_readers(ready, self.cfg["pipeline"], self.consumers, None)
        for engine in self.cfg["engines"]:
            await self._reconcile_readers([p for p in pods.get(f"__engine__{engine['name']}", []) if p.ready],
                                          engine, self.engine_consumers[engine["name"]],
                                          self.engine_ledgers[engine["name"]])

        wanted: dict[str, tuple[dict[str, Any], PodView]] = {}
        for col in self.cfg["collectors"]:
            for pod in pods.get(col["name"], []):
                if pod.ready:
                    wanted[pod.uid] = (col, pod)
        for uid in list(self.collectors):
            if uid not in wanted:
                self._retire(self.collectors.pop(uid).stop())
        # New pods start concurrently (a NATS-mode start is a connection): a DaemonSet rolling
        # over 500 nodes brings hundreds of new pods, which one at a time took minutes.
        starting = [(uid, col, pod) for uid, (col, pod) in wanted.items() if uid not in self.collectors]
        limit = asyncio.Semaphore(START_CONCURRENCY)

        async def start(col: dict[str, Any], pod: PodView) -> CollectorInstance | None:
            inst = CollectorInstance(self, col, pod)
            async with limit:
                try:
                    await inst.start()
                except Exception as exc:  # noqa: BLE001 - NATS unreachable: try again next poll
                    log.error("collector pod %s: cannot start (%s: %s); retrying", pod.name, type(exc).__name__, exc)
                    return None
            return inst

        started = await asyncio.gather(*(start(col, pod) for _, col, pod in starting))
        for (uid, _, _), inst in zip(starting, started):
            if inst is not None:
                self.collectors[uid] = inst

    async def _reconcile_readers(self, ready: list[PodView], workload: dict[str, Any],
                                 consumers: dict[str, PipelineConsumer], engine: EngineLedger | None) -> None:
        """One consumer per Ready pod whose env says NATS: the pipeline's on its durable
        consumer; an engine's on the consumer its env names, into its own ledger."""
        want = {p.uid: p for p in ready if pipeline_wants_nats(p.env, workload, self.cfg["env"])}
        for uid in list(consumers):
            if uid not in want:
                self._retire(consumers.pop(uid).stop())
        consumer_env = self.cfg["env"]["consumer"]
        for uid, pod in want.items():
            if uid not in consumers:
                # Pods are listed in cfg namespace (PodView carries none).
                servers = await asyncio.to_thread(self.map_nats_url, pod.env.get(self.cfg["env"]["nats_url"], ""),
                                                  self.cfg["namespace"])
                consumer = consumers[uid] = PipelineConsumer(
                    self, pod, servers, self.nats_credentials(pod.env), self.nats_ca(pod.env),
                    self.nats_inbox_prefix(pod.env),
                    consumer=(pod.env.get(consumer_env) or workload.get("consumer")) if engine else None,
                    engine=engine)
                await consumer.start()

    def _retire(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._stopping_tasks.add(task)
        task.add_done_callback(self._stopping_tasks.discard)

    async def poll_loop(self) -> None:
        interval = float(self.cfg["poll_interval"])
        while not self._stop.is_set():
            try:
                await self.poll_once()
            except Exception as exc:  # noqa: BLE001 - API hiccup: keep the last known state
                self.poll_errors += 1
                self.last_poll_error = f"{type(exc).__name__}: {exc}"
                log.warning("pod poll failed: %s", self.last_poll_error)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass

    # -- control --------------------------------------------------------------------------
    async def settle(self, timeout: float) -> dict[str, Any]:
        """Wait until every event emitted so far was received or cannot arrive any more."""
        marks = self.ledger.watermarks()
        start = time.monotonic()
        complete = self.ledger.settled(marks)
        while not complete and time.monotonic() - start < timeout:
            await asyncio.sleep(0.2)
            complete = self.ledger.settled(marks)
        report = self.report(marks)
        report["settle"] = {"requested": timeout, "waited": round(time.monotonic() - start, 2),
                            "complete": complete}
        return report

    async def drain(self, timeout: float) -> dict[str, Any]:
        self.paused = True
        return await self.settle(timeout)

    def reset(self) -> dict[str, Any]:
        old = self.ledger.run_id
        final = self.report(None)
        self.ledger = Ledger(secrets.token_hex(4), int(self.cfg["timeline_max_seconds"]))
        self.engine_ledgers = {name: EngineLedger(name) for name in self.engine_ledgers}
        for name, consumers in self.engine_consumers.items():
            for consumer in consumers.values():
                consumer.engine = self.engine_ledgers[name]
        log.info("ledger reset: run %s -> %s", old, self.ledger.run_id)
        return {"previous": final, "run_id": self.ledger.run_id}

    def status(self) -> dict[str, Any]:
        return {
            "run_id": self.ledger.run_id,
            "paused": self.paused,
            "namespace": self.cfg["namespace"],
            "uptime": round(time.time() - self.started, 1),
            "polls": self.polls, "poll_errors": self.poll_errors, "last_poll_error": self.last_poll_error,
            "last_poll": self.last_poll,
            "missing_workloads": self.missing_workloads,
            "pod_watch": {ns: {"pods": len(c.pods), "lists": c.lists, "events": c.events, "last_error": c.last_error}
                          for ns, c in getattr(self.reader, "caches", {}).items()},
            "pipeline": {"ready_pods": self.ready_pipeline,
                         "pods": [{"name": p.name, "ready": p.ready,
                                   "nats": pipeline_wants_nats(p.env, self.cfg["pipeline"], self.cfg["env"])}
                                  for p in self.pipeline_pods],
                         "consumers": [c.describe() for c in self.consumers.values()]},
            "engines": {name: [c.describe() for c in consumers.values()]
                        for name, consumers in self.engine_consumers.items()},
            "collectors": [c.describe() for c in self.collectors.values()],
            "stopping": len(self._stopping_tasks),
            "combined_rate_10s": self.ledger.rate(None, 10),
            "received_rate_10s": round(self.ledger.rate(None, 10, 1) + self.ledger.rate(None, 10, 2), 1),
        }

    def report(self, watermarks: dict[str, int] | None) -> dict[str, Any]:
        summary = self.ledger.summary(watermarks)
        modes: dict[str, dict[str, int]] = {}
        for inst in self.collectors.values():
            counts = modes.setdefault(inst.source, {"direct": 0, "nats": 0})
            counts[inst.mode] += 1
        for name, row in summary["sources"].items():
            row["pods_by_mode"] = modes.get(name, {"direct": 0, "nats": 0})
        summary["paused"] = self.paused
        summary["pipeline_ready_pods"] = self.ready_pipeline
        summary["pipeline_consumers"] = len(self.consumers)
        summary["engines"] = {name: {**led.summary(), "consumers": len(self.engine_consumers[name])}
                              for name, led in self.engine_ledgers.items()}
        summary["combined_rate_10s"] = self.ledger.rate(None, 10)
        summary["combined_rate_1m"] = self.ledger.rate(None, 60)
        return summary

    def write_ledger(self, name: str, data: dict[str, Any]) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
        return path

    async def snapshot_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=10)
            except asyncio.TimeoutError:
                self.write_ledger("ledger.json", self.report(None))

    def request_stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> Path:
        """SIGTERM: stop emitting, let in-flight events arrive, stop pods, write the ledger."""
        self.paused = True
        final = await self.settle(float(self.cfg["exit_settle"]))
        for inst in list(self.collectors.values()):
            self._retire(inst.stop())
        self.collectors.clear()
        if self._stopping_tasks:
            await asyncio.gather(*list(self._stopping_tasks), return_exceptions=True)
        for consumers in (self.consumers, *self.engine_consumers.values()):
            for consumer in list(consumers.values()):
                await consumer.stop()
            consumers.clear()
        if self.shared_nats is not None:
            await self.shared_nats.close()
        final = self.report(self.ledger.watermarks()) | {"settle": final["settle"]}
        final["timeline"] = self.ledger.timeline_rows()
        final["shutdown"] = time.time()
        path = self.write_ledger("ledger-final.json", final)
        log.info("final ledger written to %s: %s", path, json.dumps(final["totals"]))
        return path
