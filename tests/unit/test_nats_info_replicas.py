"""nats_info's replica judgement: replication lag under load is not a failure, offline is."""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from conftest import REPO_ROOT


def load(name: str, package: str, path) -> ModuleType:  # noqa: ANN001
    qualified = f"{package}.{name}"
    if qualified not in sys.modules:
        spec = importlib.util.spec_from_file_location(qualified, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        spec.loader.exec_module(module)
    return sys.modules[qualified]


@pytest.fixture(scope="module")
def nats_info() -> ModuleType:
    for util in ("tapio_nats_config", "tapio_nats"):
        load(util, "ansible.module_utils", REPO_ROOT / "module_utils" / f"{util}.py")
    return load("nats_info", "tapio_unit_library", REPO_ROOT / "library" / "nats_info.py")


def info(*replicas: dict) -> dict:
    return {"config": {"name": "TAPIO_EVENTS"}, "state": {}, "cluster": {"leader": "nats-0", "replicas": list(replicas)}}


@pytest.mark.parametrize(("replica", "max_lag", "problem"), [
    ({"name": "nats-1", "current": True, "lag": 0}, 0, None),
    ({"name": "nats-1", "current": False, "lag": 1}, 1000, None),
    ({"name": "nats-1", "current": False, "lag": 1}, 0, "replica nats-1 is not current (lag 1 > 0)"),
    ({"name": "nats-1", "current": False, "lag": 5000}, 1000, "replica nats-1 is not current (lag 5000 > 1000)"),
    ({"name": "nats-2", "current": True, "lag": 0, "offline": True}, 1000, "replica nats-2 is offline"),
])
def test_replica_problems(nats_info: ModuleType, replica: dict, max_lag: int, problem: str | None) -> None:
    _, problems = nats_info.stream_report(info(replica), max_lag)
    if problem is None:
        assert problems == []
    else:
        assert problems == [f"stream TAPIO_EVENTS: {problem}"]
