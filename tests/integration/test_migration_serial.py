"""Several clusters in one inventory migrate `tapio_migration_serial` at a time.

Each "cluster" here is one namespace of the lab's real kube-apiserver, an inventory host of
its own (tapio_namespace per host). With serial 1 the first cluster is migrated completely
before the second starts, and a failure in the first stops the run before the second is
touched (max_fail_percentage 0). The NATS install and streams phases are skipped (the
migration tests share the lab's NATS; test_migration_nats_gates covers them).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from conftest import LAB_STATE, REPO_ROOT, VENV_BIN, KubeLab
from migration_lab import COLLECTORS, MigrationLab, Run

pytestmark = pytest.mark.integration

MIGRATE_PLAY = "PLAY [Migrate Tapio onto NATS JetStream]"


@pytest.fixture
def clusters(kube_lab: KubeLab, tmp_path: Path) -> Iterator[list[MigrationLab]]:
    labs: list[MigrationLab] = []
    try:
        for name in ("a", "b"):
            lab = MigrationLab(kube_lab, f"mig-serial-{name}-{os.urandom(3).hex()}", tmp_path / name)
            labs.append(lab)
            lab.create()
        yield labs
    finally:
        for lab in labs:
            lab.delete()


def write_inventory(tmp: Path, labs: list[MigrationLab], host_vars: dict[str, dict[str, Any]]) -> Path:
    """An inventory of one host per namespace, on the lab inventory's group_vars."""
    inventory = tmp / "inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(REPO_ROOT / "inventories" / "lab" / "group_vars")
    hosts = {f"cluster-{chr(ord('a') + i)}": {
        "ansible_connection": "local",
        "ansible_python_interpreter": str(VENV_BIN / "python"),
        "tapio_namespace": lab.namespace,
        "tapio_artifacts_dir": str(lab.artifacts),
        **host_vars.get(f"cluster-{chr(ord('a') + i)}", {}),
    } for i, lab in enumerate(labs)}
    content = {"all": {"children": {"tapio_clusters": {
        "hosts": hosts,
        # the lab inventory's paths are relative to its own directory
        "vars": {"lab_root": str(REPO_ROOT / "lab"), "lab_state_dir": str(LAB_STATE)},
    }}}}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(content))
    return inventory


def migrate(inventory: Path, serial: int) -> Run:
    extra = {"tapio_migration_serial": serial, "tapio_migration_nats_checks": False, "tapio_verify_ledger_url": "",
             "tapio_timeline_url": ""}
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0", "TAPIO_LAB_STATE": str(LAB_STATE)}
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "migrate.yml",
                           "--skip-tags", "nats,streams", "-e", json.dumps(extra)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def host_lines(stdout: str, host: str) -> list[int]:
    """Line numbers of task results for `host` inside the migration play(s)."""
    start = stdout.index(MIGRATE_PLAY)
    return [i for i, line in enumerate(stdout[start:].splitlines()) if re.search(rf"\[{host}\]", line)]


def test_serial_one_migrates_cluster_after_cluster(clusters: list[MigrationLab], tmp_path: Path) -> None:
    run = migrate(write_inventory(tmp_path, clusters, {}), serial=1)
    assert run.rc == 0, run.explain()
    # one batch per cluster, and every result of cluster-a comes before any of cluster-b
    assert run.stdout.count(MIGRATE_PLAY) == 2, run.explain()
    a, b = host_lines(run.stdout, "cluster-a"), host_lines(run.stdout, "cluster-b")
    assert a and b, run.explain()
    assert max(a) < min(b), run.explain()
    for lab in clusters:
        for name in COLLECTORS:
            assert lab.env(name)["TAPIO_OUTPUT_MODE"] == "nats", (lab.namespace, name)
        assert lab.env("tapio-pipeline")["TAPIO_OUTPUT_MODE"] == "nats", lab.namespace


def test_a_failing_cluster_stops_the_run_before_the_next(clusters: list[MigrationLab], tmp_path: Path) -> None:
    first, second = clusters
    untouched = second.settled_resource_versions()
    broken = [*({"name": n, "container": c, "subject_prefix": p} for n, c, p in (
        ("tapio-k8s-collector", "k8s-collector", "tapio.events.k8s"),
        ("tapio-systemd-collector", "systemd-collector", "tapio.events.systemd"))),
        {"name": "tapio-ebpf-collector", "container": "wrong", "subject_prefix": "tapio.events.ebpf"}]
    run = migrate(write_inventory(tmp_path, clusters, {"cluster-a": {"tapio_collectors": broken}}), serial=1)
    assert run.rc != 0, run.explain()
    assert "DaemonSet tapio-ebpf-collector has no container wrong" in run.stdout, run.explain()
    # cluster-a failed in its batch, so cluster-b's batch never started
    assert run.stdout.count(MIGRATE_PLAY) == 1, run.explain()
    assert not host_lines(run.stdout, "cluster-b"), run.explain()
    assert second.resource_versions() == untouched
    assert "TAPIO_OUTPUT_MODE" not in first.env("tapio-pipeline")


def test_serial_two_migrates_both_clusters_in_one_batch(clusters: list[MigrationLab], tmp_path: Path) -> None:
    run = migrate(write_inventory(tmp_path, clusters, {}), serial=2)
    assert run.rc == 0, run.explain()
    assert run.stdout.count(MIGRATE_PLAY) == 1, run.explain()
    for lab in clusters:
        assert lab.env("tapio-ebpf-collector")["TAPIO_OUTPUT_MODE"] == "nats", lab.namespace
