"""Helpers for the nats_* integration tests: run a module through Ansible, read the truth
with an independent client (natscli, built from github.com/nats-io/natscli) and /jsz.

No mocks: everything here talks to the lab's real 3-node cluster.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
PLAYBOOK = Path(__file__).resolve().parent / "nats_playbooks" / "run_module.yml"
SECRET = "tapio-lab-secret"
# The lab's servers, shifted like every lab port by TAPIO_LAB_PORT_OFFSET.
_OFFSET = int(os.environ.get("TAPIO_LAB_PORT_OFFSET") or 0)
AUTH = {"servers": [f"nats://127.0.0.1:{4222 + _OFFSET + i}" for i in range(3)],
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
        "ANSIBLE_NOCOLOR": "1",
    })
    return env


def _load_module_code(name: str, package: str, path: Path) -> ModuleType:
    qualified = f"{package}.{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


def run_direct(module: str, args: dict[str, Any], check: bool = False, diff: bool = True,
               auth: bool = True) -> dict[str, Any]:
    """Run the module's real code in this process, the way Ansible hands it its arguments
    (``ANSIBLE_MODULE_ARGS`` with ``_ansible_check_mode``/``_ansible_diff``), against the
    real cluster, through the same runner the project's action plugin uses in Ansible's
    worker (plugins/action/tapio_migration.py). Skips only Ansible's start-up, which costs
    seconds per call on this 2-core machine; tests that need Ansible itself use
    run_adhoc/run_playbook_module."""
    runner = _load_module_code("tapio_migration", "tapio_test_action", REPO_ROOT / "plugins" / "action" /
                               "tapio_migration.py")
    code = _load_module_code(module, "tapio_test_library", REPO_ROOT / "library" / f"{module}.py")
    payload = {**(AUTH if auth else {}), **args, "_ansible_check_mode": check, "_ansible_diff": diff,
               "_ansible_verbosity": 0}
    output = runner.run_module_in_process(code, json.dumps({"ANSIBLE_MODULE_ARGS": payload}).encode())
    result = json.loads(output)
    result.setdefault("failed", False)
    result["_output"] = output
    return result


def run_adhoc(module: str, args: dict[str, Any], check: bool = False, auth: bool = True,
              verbosity: int = 0) -> dict[str, Any]:
    """Run ``ansible.legacy.<module>`` ad hoc (faster than a playbook; no diff or warnings
    in the result). ``failed`` comes from the host's status line."""
    payload = {**(AUTH if auth else {}), **args}
    command = [str(VENV_BIN / "ansible"), "lab", "-m", f"ansible.legacy.{module}", "-a", json.dumps(payload)]
    if check:
        command.append("--check")
    if verbosity:
        command.append("-" + "v" * verbosity)
    done = subprocess.run(command, cwd=REPO_ROOT, env=ansible_env(), capture_output=True, text=True, timeout=300)
    match = re.search(r"^lab \| (\S+) => ", done.stdout, re.M)
    if not match:
        raise RuntimeError(f"no result from ansible:\n{done.stdout}\n{done.stderr}")
    result, _ = json.JSONDecoder().raw_decode(done.stdout, match.end())
    result["failed"] = match.group(1).startswith(("FAILED", "UNREACHABLE"))
    result["_output"] = done.stdout + done.stderr
    return result


def run_module(module: str, args: dict[str, Any], check: bool = False, diff: bool = True,
               auth: bool = True) -> dict[str, Any]:
    """The default way tests run a module: its real code, in process (see run_direct)."""
    return run_direct(module, args, check=check, diff=diff, auth=auth)


def run_playbook_module(module: str, args: dict[str, Any], check: bool = False, diff: bool = True,
                        auth: bool = True, verbosity: int = 0) -> dict[str, Any]:
    """Run ``ansible.legacy.<module>`` once on the lab host through a small playbook and
    return its registered result (with ``failed``, ``diff``); ``_output`` holds everything
    ansible-playbook printed."""
    payload = {**(AUTH if auth else {}), **args}
    with tempfile.TemporaryDirectory(prefix="nats-test-") as tmp:
        extra = Path(tmp) / "vars.json"
        result_file = Path(tmp) / "result.json"
        extra.write_text(json.dumps({"nats_module": module, "nats_args": payload, "result_file": str(result_file)}))
        command = [str(VENV_BIN / "ansible-playbook"), str(PLAYBOOK), "-e", f"@{extra}"]
        if check:
            command.append("--check")
        if diff:
            command.append("--diff")
        if verbosity:
            command.append("-" + "v" * verbosity)
        done = subprocess.run(command, cwd=REPO_ROOT, env=ansible_env(), capture_output=True, text=True,
                              timeout=300)
        if not result_file.exists():
            raise RuntimeError(f"the playbook wrote no result:\n{done.stdout}\n{done.stderr}")
        result = json.loads(result_file.read_text())
    result["_output"] = done.stdout + done.stderr
    return result


def natscli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [str(natscli_path()), "--server", AUTH["servers"][0], "--user", AUTH["user"], "--password", SECRET,
               *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=check)


def stream_info(name: str) -> Optional[dict[str, Any]]:
    """The stream as natscli sees it, or None when it does not exist."""
    if name not in natscli("stream", "ls", "--names").stdout.split():
        return None
    return json.loads(natscli("stream", "info", name, "--json").stdout)


def consumer_info(stream: str, name: str) -> Optional[dict[str, Any]]:
    if name not in consumer_names(stream):
        return None
    return json.loads(natscli("consumer", "info", stream, name, "--json").stdout)


def consumer_names(stream: str) -> list[str]:
    return natscli("consumer", "ls", stream, "--names").stdout.split()


def publish(subject: str, count: int) -> None:
    """Publish *count* messages through natscli with JetStream acks."""
    natscli("pub", subject, "msg {{Count}}", "--count", str(count), "--jetstream")


def remove_stream(name: str) -> None:
    natscli("stream", "rm", name, "--force", check=False)


def account_snapshot(nats_lab: Any, prefix: str = "") -> dict[str, Any]:
    """Streams named *prefix*... and their consumers with config, message count and creation
    time, from every node's /jsz (an R1 stream shows only on the node that holds it).
    Other engineers' tests share the account, so tests snapshot only their own names."""
    snapshot: dict[str, Any] = {}
    accounts = []
    for node in range(len(nats_lab.monitor_urls)):
        accounts += nats_lab.jsz(node, "?accounts=true&streams=true&consumers=true&config=true").get("account_details") or []
    for account in accounts:
        for stream in account.get("stream_detail") or []:
            if not stream["name"].startswith(prefix):
                continue
            config = {k: v for k, v in (stream.get("config") or {}).items() if k != "metadata"}
            consumers = {c["name"]: {k: v for k, v in (c.get("config") or {}).items() if k != "metadata"}
                         for c in stream.get("consumer_detail") or []}
            snapshot[stream["name"]] = {"config": config, "messages": stream["state"]["messages"],
                                        "created": stream.get("created"), "consumers": consumers}
    return snapshot


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Keys whose values differ between a diff's before and after."""
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


async def fetch_served(sub: Any, batch: int, timeout: float, settle: float = 10.0) -> list[Any]:
    """`sub.fetch`, waiting out a consumer not served yet: right after it is created (or its
    leader moved) a pull request can meet no responder, which nats-py raises as 503
    ServiceUnavailableError. The cluster is allowed that blink; a consumer that stays
    unserved for `settle` seconds is a failure."""
    import asyncio

    from nats.js.errors import ServiceUnavailableError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle
    while True:
        try:
            return await sub.fetch(batch, timeout=timeout)
        except ServiceUnavailableError:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)


async def publish_served(js: Any, subject: str, payload: bytes, headers: dict[str, str], settle: float = 10.0) -> Any:
    """`js.publish`, waiting out a stream not served yet: right after it is created its
    subjects' interest may not have reached the server the client is connected to, which
    nats-py raises as NoStreamResponseError. A retry is safe with a Nats-Msg-Id (the stream
    drops a duplicate); a stream still unserved after `settle` seconds is a failure."""
    import asyncio

    from nats.js.errors import NoStreamResponseError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle
    while True:
        try:
            return await js.publish(subject, payload, headers=headers)
        except NoStreamResponseError:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)
