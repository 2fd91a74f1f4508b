"""library/tapio_apply.py's rollout wait: tapio_wait's progress wait on the objects it applied,
with the scheduler's reason when a stalled rollout's pods are not placed; and its imports,
which reach neither the migration engine nor nats-py (a wait helper needs neither)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Optional

import pytest

from conftest import REPO_ROOT
from module_utils_loader import load_file
from fake_clock import Clock

apply_module = load_file("tapio_test_library_apply_wait", REPO_ROOT / "library" / "tapio_apply.py")
PATH = "/apis/apps/v1/namespaces/tapio/statefulsets/nats"




def statefulset(ready: int) -> dict[str, Any]:
    return {"kind": "StatefulSet", "metadata": {"name": "nats", "namespace": "tapio", "generation": 1},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "nats"}}},
            "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": ready,
                       "currentRevision": "a", "updateRevision": "a"}}


class ReadyOneEverySecond:
    """The StatefulSet gains a ready pod per second of the clock, up to *most*; its pods are
    Pending, unschedulable by a spread constraint."""

    def __init__(self, clock: Clock, most: int) -> None:
        self.clock, self.most = clock, most

    def request(self, method: str, path: str, not_found_ok: bool = False,
                query: Optional[list[tuple[str, str]]] = None) -> dict[str, Any]:
        if path == PATH:
            return statefulset(min(int(self.clock.now), self.most))
        assert query == [("labelSelector", "app=nats")]
        return {"items": [{"metadata": {"name": "nats-2"}, "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "message": "didn't match pod topology spread constraints"}]}}]}


def planned() -> list[dict[str, Any]]:
    return [{"label": "StatefulSet tapio/nats", "path": PATH, "wait": True, "operation": "update",
             "desired": statefulset(3)},
            {"label": "ConfigMap tapio/nats", "path": "/api/v1/x", "wait": False, "operation": "update"}]


def test_a_rollout_that_progresses_is_waited_for_and_its_seconds_logged() -> None:
    clock, steps = Clock(), []
    done = apply_module.wait_rollouts(ReadyOneEverySecond(clock, 3), planned(), 2, 1, steps, clock, clock.sleep)
    assert len(done) == 1 and done[0].startswith("StatefulSet tapio/nats - ")
    assert steps == [f"StatefulSet tapio/nats rolled out in 3.0s: {done[0].split(' - ', 1)[1]}"]


def test_a_stalled_rollout_names_the_scheduler_reason() -> None:
    clock = Clock()
    with pytest.raises(apply_module.Stalled) as stalled:
        apply_module.wait_rollouts(ReadyOneEverySecond(clock, 2), planned(), 5, 1, [], clock, clock.sleep)
    message = str(stalled.value)
    assert message.startswith("rollout of StatefulSet tapio/nats: no progress for 5s (")
    assert message.endswith("; not scheduled: nats-2: didn't match pod topology spread constraints")
    assert [entry["after_seconds"] for entry in stalled.value.progress] == [0.0, 1.0, 2.0]


def project_imports(path: Path) -> set[str]:
    """Every module *path* imports, anywhere in it (imports inside functions count: Ansible
    ships those too), with the project's module_utils followed to what they import."""
    seen: set[str] = set()
    pending = [path]
    while pending:
        tree = ast.parse(pending.pop().read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if isinstance(node, ast.ImportFrom) and node.module == "ansible.module_utils":
                names = [f"ansible.module_utils.{alias.name}" for alias in node.names]
            for name in names:
                util = REPO_ROOT / "module_utils" / f"{name.rsplit('.', 1)[-1]}.py"
                if name not in seen and name.startswith("ansible.module_utils.tapio_") and util.is_file():
                    pending.append(util)
                seen.add(name)
    return seen


def test_tapio_apply_imports_neither_the_engine_nor_nats() -> None:
    imported = project_imports(REPO_ROOT / "library" / "tapio_apply.py")
    assert "ansible.module_utils.tapio_wait" in imported, imported
    assert not {name for name in imported if name.endswith("tapio_engine") or name == "nats"
                or name.startswith("nats.")}, imported
