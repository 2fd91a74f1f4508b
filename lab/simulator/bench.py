#!/usr/bin/env python3
"""Benchmark (not a test): the simulator's sustained combined rate against the lab.

Creates its own namespace with the lab's three collector DaemonSets (3 fake nodes: 9 pods)
and the pipeline Deployment, all already in NATS mode, its own R3 file stream and durable
consumer (subjects `simbench.<id>.>`), runs `tapio-sim run` for --seconds at --rate per pod,
samples the emitted and received rates and the process's CPU, drains, prints a JSON result
and deletes everything it created.

  .venv/bin/python lab/simulator/bench.py --rate 230 --seconds 60
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nats
from kubernetes import client, config
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

REPO = Path(__file__).resolve().parents[2]
SERVERS = ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://127.0.0.1:4224"]
COLLECTORS = [("tapio-k8s-collector", "k8s-collector", "k8s"), ("tapio-systemd-collector", "systemd-collector", "systemd"),
              ("tapio-ebpf-collector", "ebpf-collector", "ebpf")]


def get(url: str, method: str = "GET", timeout: float = 60) -> dict:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
        return json.load(resp)


def workload(kind: str, name: str, cont: str, env: list[dict]) -> dict:
    labels = {"app.kubernetes.io/name": name}
    spec = {"selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": cont, "image": f"tapio/{cont}:latest", "env": env}]}}}
    if kind == "Deployment":
        spec["replicas"] = 1
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


async def js_do(fn):  # noqa: ANN001, ANN201
    nc = await nats.connect(servers=SERVERS, user="tapio", password="tapio-lab-secret")
    try:
        return await fn(nc.jetstream())
    finally:
        await nc.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nats_server_cpu() -> float:
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "nats-server":
                total += cpu_seconds(int(comm.parent.name))
        except (OSError, ValueError):
            continue
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=230.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--kubeconfig", default=str(REPO / ".lab" / "kubeconfig"))
    ap.add_argument("--context", default="kwok-tapio-lab")
    ap.add_argument("--config", help="extra simulator config (YAML), e.g. fetch settings")
    args = ap.parse_args()
    tag = uuid.uuid4().hex[:8]
    ns, stream, consumer = f"sim-bench-{tag}", f"SIMBENCH_{tag.upper()}", f"bench-{tag}"
    api = config.new_client_from_config(args.kubeconfig, context=args.context)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    asyncio.run(js_do(lambda js: js.add_stream(StreamConfig(name=stream, subjects=[f"simbench.{tag}.>"],
                                                            storage=StorageType.FILE, num_replicas=3, max_age=600))))
    asyncio.run(js_do(lambda js: js.add_consumer(stream, ConsumerConfig(durable_name=consumer,
                                                                        ack_policy=AckPolicy.EXPLICIT,
                                                                        max_ack_pending=1000))))
    proc = None
    port = 0
    try:
        nats_env = [{"name": "NATS_URL", "value": "nats://tapio-nats:4222"}, {"name": "TAPIO_OUTPUT_MODE", "value": "nats"}]
        apps.create_namespaced_deployment(ns, workload("Deployment", "tapio-pipeline", "pipeline", nats_env))
        for name, cont, kind in COLLECTORS:
            env = [*nats_env, {"name": "NATS_SUBJECT_PREFIX", "value": f"simbench.{tag}.events.{kind}"}]
            apps.create_namespaced_daemon_set(ns, workload("DaemonSet", name, cont, env))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        state = Path(f"/tmp/{ns}")
        state.mkdir(exist_ok=True)
        log = open(state / "sim.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, str(REPO / "lab" / "bin" / "tapio-sim"), "run", "--namespace", ns,  # noqa: S603
                                 "--stream", stream, "--consumer", consumer, "--port", str(port),
                                 "--state-dir", str(state), "--rate", str(args.rate),
                                 *(["--config", args.config] if args.config else [])], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                status = get(url + "/status")
                if len(status["collectors"]) == 9 and status["pipeline"]["consumers"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("simulator did not start 9 collector instances")
            time.sleep(0.5)
        time.sleep(5)  # warm-up
        led0, cpu0, t0 = get(url + "/ledger"), cpu_seconds(proc.pid), time.monotonic()
        ncpu0 = nats_server_cpu()
        load0 = os.getloadavg()
        samples = []
        while time.monotonic() - t0 < args.seconds:
            time.sleep(5)
            st = get(url + "/status")
            samples.append((st["combined_rate_10s"], st["received_rate_10s"]))
        led1, cpu1, t1 = get(url + "/ledger"), cpu_seconds(proc.pid), time.monotonic()
        ncpu1 = nats_server_cpu()
        span = t1 - t0
        emitted = led1["totals"]["emitted"] - led0["totals"]["emitted"]
        received = led1["totals"]["received"] - led0["totals"]["received"]
        consumers = get(url + "/status")["pipeline"]["consumers"]
        drained = get(url + "/drain?timeout=30", method="POST")
        result = {
            "rate_per_pod": args.rate, "config": args.config, "pods": 9, "target_combined": args.rate * 9, "seconds": round(span, 1),
            "emitted_per_s": round(emitted / span, 1), "received_per_s": round(received / span, 1),
            "sim_cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / span, 1),
            "nats_servers_cpu_percent_of_one_core": round(100 * (ncpu1 - ncpu0) / span, 1),
            "acked_by_stream_per_s": round(sum(r["acked_by_stream"] for r in led1["sources"].values())
                                           - sum(r["acked_by_stream"] for r in led0["sources"].values())) / span,
            "min_10s_emitted_rate": min(s[0] for s in samples), "min_10s_received_rate": min(s[1] for s in samples),
            "loadavg_before": load0, "loadavg_after": os.getloadavg(),
            "pipeline_consumers": [{k: c[k] for k in ("fetches", "empty_fetches", "avg_batch", "avg_fetch_ms",
                                                       "avg_handle_ms", "naked")} for c in consumers],
            "drained": {"complete": drained["settle"]["complete"], "totals": drained["totals"]},
        }
        print(json.dumps(result, indent=1))
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        core.delete_namespace(ns)
        asyncio.run(js_do(lambda js: js.delete_stream(stream)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
