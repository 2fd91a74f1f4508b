"""Shared pytest fixtures: where the lab's real servers are.

Integration tests never start a mock: they use the lab that `scripts/lab up` runs (the
README's test command brings it up first). If the lab is not running the tests fail with
the command to run, rather than skipping and passing silently.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
LAB_STATE = Path(os.environ.get("TAPIO_LAB_STATE", REPO_ROOT / ".lab")).resolve()
VENV_BIN = REPO_ROOT / ".venv" / "bin"
# A second lab runs beside the first with every port shifted (see inventories/lab).
PORT_OFFSET = int(os.environ.get("TAPIO_LAB_PORT_OFFSET") or 0)
# The lab's real nodes (lab_nodes_name_prefix in inventories/lab): a second lab's have names of its own.
LAB_NETWORK_INDEX = (PORT_OFFSET // 100) % 50
REAL_NODE_PREFIX = "tapio-lab-real-" if LAB_NETWORK_INDEX == 0 else f"tapio-lab{LAB_NETWORK_INDEX}-real-"


class ProjectModuleUtils(importlib.abc.MetaPathFinder):
    """module_utils/<name>.py as ansible.module_utils.<name>, the way Ansible exposes it to
    modules, so one loaded in a test finds the ones it imports whatever the test loaded first."""

    PREFIX = "ansible.module_utils."

    def find_spec(self, fullname: str, path: object, target: object = None) -> object:
        if not fullname.startswith(self.PREFIX + "tapio_"):
            return None
        source = REPO_ROOT / "module_utils" / f"{fullname[len(self.PREFIX):]}.py"
        return importlib.util.spec_from_file_location(fullname, source) if source.is_file() else None


sys.meta_path.insert(0, ProjectModuleUtils())


@dataclass(frozen=True)
class NatsLab:
    servers: list[str] = field(
        default_factory=lambda: [f"nats://127.0.0.1:{4222 + PORT_OFFSET + i}" for i in range(3)])
    monitor_urls: list[str] = field(
        default_factory=lambda: [f"http://127.0.0.1:{8222 + PORT_OFFSET + i}" for i in range(3)])
    user: str = "tapio"
    password: str = "tapio-lab-secret"

    def jsz(self, node: int = 0, query: str = "") -> dict:
        with urllib.request.urlopen(f"{self.monitor_urls[node]}/jsz{query}", timeout=5) as resp:  # noqa: S310
            return json.load(resp)


@dataclass(frozen=True)
class KubeLab:
    kubeconfig: Path
    context: str = "kwok-tapio-lab"
    kubectl: Path = VENV_BIN / "kubectl"


@pytest.fixture(scope="session")
def nats_lab() -> NatsLab:
    lab = NatsLab()
    try:
        lab.jsz()
    except OSError as exc:
        pytest.fail(f"the lab's NATS cluster is not running ({exc}); run: scripts/lab up")
    return lab


@pytest.fixture(scope="session")
def kube_lab() -> KubeLab:
    kubeconfig = LAB_STATE / "kubeconfig"
    if not kubeconfig.exists():
        pytest.fail(f"no lab kubeconfig at {kubeconfig}; run: scripts/lab up")
    return KubeLab(kubeconfig=kubeconfig)
