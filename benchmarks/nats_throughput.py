#!/usr/bin/env python3
"""JetStream publish throughput: nats_probe vs `nats bench` vs one-at-a-time js.publish.

Runs, in one go and on the same stream configuration (3 replicas, file storage, 256 MiB
max_bytes, 2m duplicate window, no compression — what `nats bench --create` makes):

  1. `nats bench js pub async` (natscli, Go): the server's practical limit for one client,
     without and with `--dedup` (a Nats-Msg-Id per message, as the probe sends);
  2. nats_probe mode=throughput publisher=windowed (through Ansible, the real module),
     without and with Nats-Msg-Id, window = nats bench's batch (500);
  3. nats_probe publisher=one_at_a_time: `await js.publish()` per event (the plan's method);
  4. `nats bench js pub sync --dedup` (Go, one at a time) for reference.

Both tools publish into the same stream through the same server, so the stream leader and
the network path are the same for both.

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
from typing import Any, Callable

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
    return subprocess.run([str(natscli_path()), "--server", server(), *args], env=env, capture_output=True,
                          text=True, timeout=900, check=check)


def nats_bench(mode: str, subject: str, stream: str, messages: int, size: int, batch: int,
               dedup: bool) -> dict[str, Any]:
    """`nats bench js pub <mode>` on the already created *stream* (purged first)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.csv"
        args = ["bench", "js", "pub", mode, subject, "--stream", stream, "--purge", "--msgs", str(messages),
                "--size", f"{size}B", "--no-progress", "--csv", str(out)]
        if mode == "async":
            args += ["--batch", str(batch)]
        if dedup:
            args.append("--dedup")
        natscli(*args)
        row = next(r for r in csv.DictReader(out.read_text().lstrip("#").splitlines()))
    return {"events_per_s": float(row["MsgsPerSec"]), "p50_ms": float(row["P50LatencyMicroSecs"]) / 1000,
            "p99_ms": float(row["P99LatencyMicroSecs"]) / 1000}


def probe(stream: str, subject: str, messages: int, publisher: str, window: int, msg_id: bool) -> dict[str, Any]:
    natscli("stream", "purge", stream, "--force")
    report = module("nats_probe", {"servers": [server()], "stream": stream, "subjects": [subject],
                                   "mode": "throughput", "count": messages, "publisher": publisher, "window": window,
                                   "msg_id": msg_id, "wait_timeout": 120})["throughput"]
    return {"events_per_s": report["events_per_s"], "p50_ms": report["latency_ms"]["p50"],
            "p99_ms": report["latency_ms"]["p99"], "size": report["avg_payload_bytes"]}


def server() -> str:
    """One server for both clients, so both reach the stream leader over the same path."""
    return environment()["NATS_URL"].split(",")[0]


def median_of(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0] if isinstance(runs[0][k], (int, float))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50000, help="events per windowed/async run")
    parser.add_argument("--sync-messages", type=int, default=2000, help="events per one-at-a-time run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=500,
                        help="nats_probe window and nats bench --batch (both default to 500)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    options = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    stream, subject = f"test_bench_{run}", f"bench.{run}.events"
    window, sync_n, n = options.window, options.sync_messages, options.messages
    plan: list[tuple[str, Callable[[int], dict[str, Any]]]] = [
        ("nats bench js pub async (no msg id)", lambda size: nats_bench("async", subject, stream, n, size, window, False)),
        ("nats_probe windowed (no msg id)", lambda size: probe(stream, subject, n, "windowed", window, False)),
        ("nats bench js pub async --dedup", lambda size: nats_bench("async", subject, stream, n, size, window, True)),
        ("nats_probe windowed (Nats-Msg-Id)", lambda size: probe(stream, subject, n, "windowed", window, True)),
        ("nats_probe one_at_a_time (Nats-Msg-Id)", lambda size: probe(stream, subject, sync_n, "one_at_a_time", 1,
                                                                      True)),
        ("nats bench js pub sync --dedup", lambda size: nats_bench("sync", subject, stream, sync_n, size, 1, True)),
    ]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in plan}
    before = machine()
    # The configuration `nats bench --create --replicas 3 --storage file --maxbytes 256MiB` makes.
    module("nats_stream", {"name": stream, "subjects": [subject], "replicas": 3, "storage": "file",
                           "max_bytes": "256MB", "duplicate_window": "2m", "compression": "none"})
    try:
        size = probe(stream, subject, 1000, "windowed", window, True)["size"]  # warm-up; the payload size
        for _ in range(options.rounds):
            for name, measure in plan:
                results[name].append(measure(size))
        leader = json.loads(natscli("stream", "info", stream, "--json").stdout)["cluster"]["leader"]
    finally:
        natscli("stream", "rm", stream, "--force", check=False)
    after = machine()

    medians = {name: median_of(runs) for name, runs in results.items()}
    pairs = {"nats_probe windowed (no msg id)": "nats bench js pub async (no msg id)",
             "nats_probe windowed (Nats-Msg-Id)": "nats bench js pub async --dedup",
             "nats_probe one_at_a_time (Nats-Msg-Id)": "nats bench js pub async --dedup",
             "nats bench js pub sync --dedup": "nats bench js pub async --dedup"}
    print(f"Machine: {before['nproc']} CPUs, {before['cpu']}; Python {before['python']}")
    print(before["memory"])
    print(f"Load average before: {' '.join(before['loadavg'])}, after: {' '.join(after['loadavg'])}")
    print(f"Stream {stream}: R3 file, 256 MiB, 2m duplicate window, no compression; leader {leader}; "
          f"both clients connected to {server()}")
    print(f"Payload: {size} bytes (a canary UnifiedEvent); {n} events per windowed/async run, "
          f"{sync_n} per one-at-a-time run; probe window = nats bench batch = {window}; "
          f"median of {options.rounds} rounds\n")
    print("| Method | events/s (median) | runs (events/s) | p50 ms | p99 ms | vs matching nats bench async |")
    print("|---|---:|---|---:|---:|---:|")
    for name, runs in results.items():
        med = medians[name]
        reference = medians[pairs[name]]["events_per_s"] if name in pairs else med["events_per_s"]
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
