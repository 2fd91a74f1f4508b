"""Helpers for the nats_* integration tests: run a module through Ansible, read the truth
with an independent client (natscli, built from github.com/nats-io/natscli) and /jsz.

No mocks: everything here talks to the lab's real 3-node cluster.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
SECRET = "tapio-lab-secret"
AUTH = {"servers": ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://127.0.0.1:4224"],
        "user": "tapio", "password": SECRET}


def natscli_path() -> Path:
    """natscli as lab/bin/build-binaries caches it: <cache>/bin/natscli-<NATSCLI_VERSION>/nats."""
    versions = (REPO_ROOT / "lab" / "versions.env").read_text()
    version = re.search(r"^NATSCLI_VERSION=(\S+)", versions, re.M).group(1)
    cache = Path(os.environ.get("TAPIO_LAB_CACHE", Path.home() / ".cache" / "tapio-nats-migration"))
    path = cache / "bin" / f"natscli-{version}" / "nats"
    if not path.exists():
        raise RuntimeError(f"natscli not built at {path}; run: lab/bin/build-binaries natscli")
    return path


def unique(prefix: str) -> str:
    return f"test_{prefix}_{uuid.uuid4().hex[:8]}"


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_CALLBACKS_ENABLED": "",
        "ANSIBLE_NOCOLOR": "1",
    })
    return env


def run_module(module: str, args: dict[str, Any], check: bool = False, diff: bool = True,
               auth: bool = True, verbosity: int = 0) -> dict[str, Any]:
    """Run ``ansible.legacy.<module>`` once on the lab host; return its result (with 'failed')."""
    payload = {**(AUTH if auth else {}), **args}
    command = [str(VENV_BIN / "ansible"), "lab", "-m", f"ansible.legacy.{module}", "-a", json.dumps(payload)]
    if check:
        command.append("--check")
    if diff:
        command.append("--diff")
    if verbosity:
        command.append("-" + "v" * verbosity)
    done = subprocess.run(command, cwd=REPO_ROOT, env=ansible_env(), capture_output=True, text=True, timeout=180)
    report = json.loads(done.stdout[done.stdout.index("{"):])
    result = report["plays"][0]["tasks"][0]["hosts"]["lab"]
    result["_raw"] = done.stdout + done.stderr
    return result


def natscli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [str(natscli_path()), "--server", AUTH["servers"][0], "--user", AUTH["user"], "--password", SECRET,
               *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=check)


def stream_info(name: str) -> Optional[dict[str, Any]]:
    """The stream as natscli sees it, or None when it does not exist."""
    done = natscli("stream", "info", name, "--json", check=False)
    if done.returncode != 0:
        if "not found" in (done.stdout + done.stderr).lower():
            return None
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout)


def consumer_info(stream: str, name: str) -> Optional[dict[str, Any]]:
    done = natscli("consumer", "info", stream, name, "--json", check=False)
    if done.returncode != 0:
        if "not found" in (done.stdout + done.stderr).lower():
            return None
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout)


def consumer_names(stream: str) -> list[str]:
    return natscli("consumer", "ls", stream, "--names").stdout.split()


def publish(subject: str, count: int) -> None:
    """Publish *count* messages through natscli with JetStream acks."""
    natscli("pub", subject, "msg {{Count}}", "--count", str(count), "--jetstream")


def remove_stream(name: str) -> None:
    natscli("stream", "rm", name, "--force", check=False)


def account_snapshot(nats_lab: Any) -> dict[str, Any]:
    """Every stream and consumer with its config and message count, from every node's /jsz
    (an R1 stream shows only on the node that holds it)."""
    snapshot: dict[str, Any] = {}
    accounts = []
    for node in range(len(nats_lab.monitor_urls)):
        accounts += nats_lab.jsz(node, "?accounts=true&streams=true&consumers=true&config=true").get("account_details") or []
    for account in accounts:
        for stream in account.get("stream_detail") or []:
            config = {k: v for k, v in (stream.get("config") or {}).items() if k != "metadata"}
            consumers = {c["name"]: {k: v for k, v in (c.get("config") or {}).items() if k != "metadata"}
                         for c in stream.get("consumer_detail") or []}
            snapshot[stream["name"]] = {"config": config, "messages": stream["state"]["messages"],
                                        "created": stream.get("created"), "consumers": consumers}
    return snapshot


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Keys whose values differ between a diff's before and after."""
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
