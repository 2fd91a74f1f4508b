"""tapio-sim: run the lab's Tapio simulator, or talk to a running one.

  tapio-sim run [--config FILE] [flags]         the long-running simulator (SIGTERM to stop)
  tapio-sim ledger [--url U] [--settle S] [--assert-zero-lost] [--assert-zero-duplicates]
  tapio-sim status|timeline [--url U]
  tapio-sim pause|resume|reset [--url U]
  tapio-sim drain [--url U] [--timeout S] [--assert-zero-lost] [--assert-zero-duplicates]

`ledger` and `drain` exit 1 when an --assert-* fails (what a verify phase wants), 2 when
the simulator cannot be reached.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8787"


def _collector_arg(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) < 2 or len(parts) > 4:
        raise argparse.ArgumentTypeError("expected NAME:CONTAINER[:KIND[:SUBJECT_PREFIX]]")
    col: dict[str, Any] = {"name": parts[0], "container": parts[1]}
    if len(parts) > 2 and parts[2]:
        col["kind"] = parts[2]
    if len(parts) > 3 and parts[3]:
        col["subject_prefix"] = parts[3]
    return col


def _engine_arg(text: str) -> dict[str, Any]:
    parts = text.split(":")
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError("expected NAME:CONTAINER")
    return {"name": parts[0], "container": parts[1]}


def _cluster_dns_arg(text: str) -> dict[str, Any]:
    """SERVER[:PORT] (an IPv6 server in brackets: [::1]:5353)."""
    server, port = text, ""
    if text.startswith("["):
        server, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
    elif text.count(":") == 1:
        server, port = text.split(":")
    if not server or (port and not port.isdigit()):
        raise argparse.ArgumentTypeError("expected SERVER[:PORT]")
    return {"server": server, **({"port": int(port)} if port else {})}


def build_overrides(args: argparse.Namespace) -> dict[str, Any]:
    over: dict[str, Any] = {}
    simple = {"namespace": "namespace", "kubeconfig": "kubeconfig", "context": "context",
              "rate": "rate_per_pod", "state_dir": "state_dir", "poll_interval": "poll_interval",
              "log_level": "log_level", "stop_flush_timeout": "stop_flush_timeout",
              "exit_settle": "exit_settle"}
    for arg, key in simple.items():
        value = getattr(args, arg)
        if value is not None:
            over[key] = value
    if args.collector:
        over["collectors"] = args.collector
    if args.engine:
        over["engines"] = args.engine
    pipeline = {k: v for k, v in (("name", args.pipeline), ("container", args.pipeline_container),
                                  ("kind", args.pipeline_kind), ("mode_env", args.pipeline_mode_env)) if v}
    if pipeline:
        over["pipeline"] = pipeline
    env = {k: v for k, v in (("mode", args.mode_env), ("nats_url", args.nats_url_env),
                             ("subject_prefix", args.subject_prefix_env), ("nats_value", args.nats_value)) if v}
    if env:
        over["env"] = env
    nats_over = {k: v for k, v in (("servers", args.nats_server), ("user", args.nats_user),
                                   ("password_env", args.nats_password_env), ("stream", args.stream),
                                   ("consumer", args.consumer), ("publish_window", args.publish_window),
                                   ("connections", args.nats_connections),
                                   ("cluster_dns", args.cluster_dns)) if v}
    if nats_over:
        over["nats"] = nats_over
    http = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if http:
        over["http"] = http
    return over


async def _run(cfg: dict[str, Any]) -> int:
    from tapio_sim.http import serve
    from tapio_sim.kube import KubeReader
    from tapio_sim.sim import Simulator

    log = logging.getLogger("tapio_sim")
    sim = Simulator(cfg, KubeReader(cfg["kubeconfig"], cfg["context"]))
    server = await serve(sim, cfg["http"]["host"], int(cfg["http"]["port"]))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sim.request_stop)
    log.info("tapio-sim run %s: namespace %s, %s events/s per collector pod, http://%s:%s", sim.ledger.run_id,
             cfg["namespace"], cfg["rate_per_pod"], cfg["http"]["host"], cfg["http"]["port"])
    tasks = [asyncio.create_task(sim.poll_loop()), asyncio.create_task(sim.snapshot_loop())]
    await sim._stop.wait()  # noqa: SLF001 - the CLI owns the simulator's lifetime
    log.info("stopping: settling in-flight events, flushing publishers")
    path = await sim.shutdown()
    sim.reader.close()  # type: ignore[union-attr]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    server.close()
    await server.wait_closed()
    print(json.dumps({"final_ledger": str(path)}), flush=True)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from tapio_sim import config

    cfg = config.load(args.config, build_overrides(args))
    logging.basicConfig(level=getattr(logging, str(cfg["log_level"]).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_run(cfg))


def _call(url: str, method: str, path: str, timeout: float) -> tuple[int, Any]:
    req = urllib.request.Request(url.rstrip("/") + path, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback URL
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def check(report: dict[str, Any], zero_lost: bool, zero_dup: bool) -> list[str]:
    problems = []
    for name, row in report.get("sources", {}).items():
        if zero_lost and row["lost"]:
            problems.append(f"{name}: {row['lost']} events lost (e.g. {row['lost_ids_sample'][:3]})")
        if zero_dup and row["duplicates"]:
            problems.append(f"{name}: {row['duplicates']} events delivered more than once")
    if zero_lost and not report.get("sources"):
        problems.append("no source emitted anything")
    return problems


def cmd_client(args: argparse.Namespace) -> int:
    method, path, timeout = "GET", f"/{args.action}", 30.0
    if args.action == "ledger" and args.settle is not None:
        path += f"?settle={args.settle}"
        timeout += args.settle
    elif args.action == "drain":
        method, path, timeout = "POST", f"/drain?timeout={args.timeout}", 30.0 + args.timeout
    elif args.action in ("pause", "resume", "reset"):
        method = "POST"
    try:
        status, body = _call(args.url, method, path, timeout)
    except (urllib.error.URLError, OSError) as exc:
        print(f"tapio-sim: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(body, indent=1))
    if status != 200:
        return 2
    if args.action in ("ledger", "drain"):
        problems = check(body, args.assert_zero_lost, args.assert_zero_duplicates)
        if problems:
            print("tapio-sim: " + "; ".join(problems), file=sys.stderr)
            return 1
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="tapio-sim", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run the simulator")
    run.add_argument("--config", help="YAML config (keys as in docs/simulator.md)")
    run.add_argument("--namespace")
    run.add_argument("--kubeconfig")
    run.add_argument("--context")
    run.add_argument("--host", help="HTTP listen address (loopback only)")
    run.add_argument("--port", type=int, help="HTTP port (default 8787)")
    run.add_argument("--state-dir")
    run.add_argument("--rate", type=float, help="events/s per Ready collector pod (default 230)")
    run.add_argument("--poll-interval", type=float)
    run.add_argument("--collector", action="append", type=_collector_arg,
                     help="NAME:CONTAINER[:KIND[:SUBJECT_PREFIX]] (repeat; replaces the default list)")
    run.add_argument("--engine", action="append", type=_engine_arg, metavar="NAME:CONTAINER",
                     help="a second correlation engine's Deployment, watched like the pipeline (repeat)")
    run.add_argument("--pipeline", help="pipeline workload name")
    run.add_argument("--pipeline-container")
    run.add_argument("--pipeline-kind", choices=("Deployment", "DaemonSet", "StatefulSet"))
    run.add_argument("--pipeline-mode-env")
    run.add_argument("--mode-env", help="collectors' output-mode env var (default TAPIO_OUTPUT_MODE)")
    run.add_argument("--nats-value", help="value of the mode var meaning NATS (default nats)")
    run.add_argument("--nats-url-env")
    run.add_argument("--subject-prefix-env")
    run.add_argument("--nats-server", action="append", help="loopback NATS URL to dial (repeat)")
    run.add_argument("--nats-user")
    run.add_argument("--nats-password-env", help="name of an env var holding the NATS password")
    run.add_argument("--stream")
    run.add_argument("--consumer")
    run.add_argument("--publish-window", type=int)
    run.add_argument("--nats-connections", choices=("per-pod", "shared"),
                     help="a NATS connection per emulated pod (default) or one shared by all")
    run.add_argument("--cluster-dns", type=_cluster_dns_arg, metavar="SERVER[:PORT]",
                     help="resolve pods' NATS_URL hosts through this cluster DNS (default: none)")
    run.add_argument("--stop-flush-timeout", type=float)
    run.add_argument("--exit-settle", type=float)
    run.add_argument("--log-level")
    run.set_defaults(func=cmd_run)
    for name in ("ledger", "drain", "status", "timeline", "pause", "resume", "reset"):
        p = sub.add_parser(name)
        p.add_argument("--url", default=DEFAULT_URL)
        if name == "ledger":
            p.add_argument("--settle", type=float, help="wait up to S s for in-flight events first")
        if name == "drain":
            p.add_argument("--timeout", type=float, default=30.0)
        if name in ("ledger", "drain"):
            p.add_argument("--assert-zero-lost", action="store_true")
            p.add_argument("--assert-zero-duplicates", action="store_true")
        p.set_defaults(func=cmd_client)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))
