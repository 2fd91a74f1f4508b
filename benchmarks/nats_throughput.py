#!/usr/bin/env python3
"""JetStream publish throughput: nats_probe vs `nats bench` vs one-at-a-time js.publish.

Runs, in one go and on the same stream configuration (3 replicas, file storage, 256 MiB
max_bytes, 2m duplicate window, no compression — what `nats bench --create` makes):

  1. `nats bench js pub async` (natscli, Go): the server's practical limit for one client,
     with its default batch (500) and with the probe's window (2000);
  2. nats_probe mode=throughput publisher=windowed (through Ansible, the real module);
  3. nats_probe publisher=one_at_a_time: `await js.publish()` per event (the plan's method);
  4. `nats bench js pub sync` (Go, one at a time) for reference.

Rounds alternate the methods so load from other work on the machine hits them alike; the
median per method is reported, with the machine (nproc, memory, CPU model, load average).
Not a test: nothing here asserts a number. Rerun with:

    .venv/bin/python benchmarks/nats_throughput.py --rounds 3 --messages 50000

Connection from NATS_URL / NATS_USER / NATS_PASSWORD (defaults: the lab's).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"


def natscli_path() -> Path:
    version = re.search(r"^NATSCLI_VERSION=(\S+)", (REPO / "lab" / "versions.env").read_text(), re.M).group(1)
    cache = Path(os.environ.get("TAPIO_LAB_CACHE", Path.home() / ".cache" / "tapio-nats-migration"))
    return cache / "bin" / f"natscli-{version}" / "nats"


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("NATS_URL", "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224")
    env.setdefault("NATS_USER", "tapio")
    env.setdefault("NATS_PASSWORD", "tapio-lab-secret")
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return env


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
        "memory": subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.strip(),
        "cpu": cpu,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "python": platform.python_version(),
    }


def module(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run ansible.legacy.<name> ad hoc on the lab host; connection from the environment."""
    done = subprocess.run([str(VENV_BIN / "ansible"), "lab", "-m", f"ansible.legacy.{name}", "-a", json.dumps(args)],
                          cwd=REPO, env=environment(), capture_output=True, text=True, timeout=900)
    match = re.search(r"^lab \| (\S+) => ", done.stdout, re.M)
    if not match:
        raise RuntimeError(done.stdout + done.stderr)
    result, _ = json.JSONDecoder().raw_decode(done.stdout, match.end())
    if match.group(1).startswith("FAILED"):
        raise RuntimeError(result.get("msg"))
    return result


def natscli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = environment()
    return subprocess.run([str(natscli_path()), "--server", env["NATS_URL"], *args], env=env, capture_output=True,
                          text=True, timeout=900, check=check)


def nats_bench(mode: str, subject: str, stream: str, messages: int, size: int, batch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.csv"
        args = ["bench", "js", "pub", mode, subject, "--stream", stream, "--create", "--purge", "--replicas", "3",
                "--storage", "file", "--maxbytes", "256MiB", "--msgs", str(messages), "--size", f"{size}B",
                "--no-progress", "--csv", str(out)]
        if mode == "async":
            args += ["--batch", str(batch)]
        natscli(*args)
        row = next(r for r in csv.DictReader(out.read_text().lstrip("#").splitlines()))
    return {"events_per_s": float(row["MsgsPerSec"]), "p50_ms": float(row["P50LatencyMicroSecs"]) / 1000,
            "p99_ms": float(row["P99LatencyMicroSecs"]) / 1000}


def probe(stream: str, subject: str, messages: int, publisher: str, window: int) -> dict[str, Any]:
    natscli("stream", "purge", stream, "--force")
    report = module("nats_probe", {"stream": stream, "subjects": [subject], "mode": "throughput", "count": messages,
                                   "publisher": publisher, "window": window, "wait_timeout": 120})["throughput"]
    return {"events_per_s": report["events_per_s"], "p50_ms": report["latency_ms"]["p50"],
            "p95_ms": report["latency_ms"]["p95"], "p99_ms": report["latency_ms"]["p99"],
            "size": report["avg_payload_bytes"]}


def median_of(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0] if isinstance(runs[0][k], (int, float))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50000, help="events per windowed/async run")
    parser.add_argument("--sync-messages", type=int, default=2000, help="events per one-at-a-time run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=2000, help="nats_probe window (its default)")
    parser.add_argument("--bench-batch", type=int, default=500, help="nats bench --batch (its default)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    options = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    probe_stream, bench_stream = f"test_bench_probe_{run}", f"test_bench_natscli_{run}"
    probe_subject, bench_subject = f"bench.{run}.probe", f"bench.{run}.natscli"
    same_window = f"nats bench async, batch {options.window}"
    results: dict[str, list[dict[str, Any]]] = {"nats bench async": [], same_window: [], "nats_probe windowed": [],
                                                "nats_probe one_at_a_time": [], "nats bench sync": []}
    before = machine()
    module("nats_stream", {"name": probe_stream, "subjects": [probe_subject], "replicas": 3, "storage": "file",
                           "max_bytes": "256MB", "duplicate_window": "2m", "compression": "none"})
    try:
        size = probe(probe_stream, probe_subject, 1000, "windowed", options.window)["size"]  # warm-up, payload size
        for _ in range(options.rounds):
            results["nats bench async"].append(nats_bench("async", bench_subject, bench_stream, options.messages,
                                                          size, options.bench_batch))
            if options.window != options.bench_batch:
                results[same_window].append(nats_bench("async", bench_subject, bench_stream, options.messages,
                                                       size, options.window))
            results["nats_probe windowed"].append(probe(probe_stream, probe_subject, options.messages, "windowed",
                                                        options.window))
            results["nats_probe one_at_a_time"].append(probe(probe_stream, probe_subject, options.sync_messages,
                                                             "one_at_a_time", 1))
            results["nats bench sync"].append(nats_bench("sync", bench_subject, bench_stream, options.sync_messages,
                                                         size, 1))
    finally:
        natscli("stream", "rm", probe_stream, "--force", check=False)
        natscli("stream", "rm", bench_stream, "--force", check=False)
    after = machine()

    results = {name: runs for name, runs in results.items() if runs}
    medians = {name: median_of(runs) for name, runs in results.items()}
    reference = medians["nats bench async"]["events_per_s"]
    print(f"Machine: {before['nproc']} CPUs, {before['cpu']}; Python {before['python']}")
    print(before["memory"])
    print(f"Load average before: {' '.join(before['loadavg'])}, after: {' '.join(after['loadavg'])}")
    print(f"Payload: {size} bytes (a canary UnifiedEvent); {options.messages} events per async run, "
          f"{options.sync_messages} per one-at-a-time run; probe window {options.window}, "
          f"nats bench batch {options.bench_batch}; "
          f"median of {options.rounds} rounds\n")
    print("| Method | events/s (median) | runs (events/s) | p50 ms | p99 ms | % of nats bench async |")
    print("|---|---:|---|---:|---:|---:|")
    for name, runs in results.items():
        med = medians[name]
        share = 100 * med["events_per_s"] / reference if reference else 0
        each = ", ".join(f"{r['events_per_s']:,.0f}" for r in runs)
        print(f"| {name} | {med['events_per_s']:,.0f} | {each} | "
              f"{med['p50_ms']:.2f} | {med['p99_ms']:.2f} | {share:.0f}% |")
    if options.json:
        options.json.write_text(json.dumps({"machine_before": before, "machine_after": after, "size": size,
                                            "options": vars(options) | {"json": str(options.json)},
                                            "results": results, "medians": medians}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
