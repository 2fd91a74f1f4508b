"""Helpers for the migration phase tests (tests/integration/test_migration_*.py).

Each test module works in a namespace of its own, created with the lab's pre-migration
templates (playbooks/lab_up.yml --tags tapio) and deleted afterwards. Playbooks run through
ansible-playbook as a user would; objects are read back with the kubernetes client. The NATS
gates are switched off (tapio_migration_nats_checks=false): no simulator publishes for these
namespaces, so no message would ever reach the collectors' subjects.
"""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from conftest import REPO_ROOT, VENV_BIN, KubeLab

COLLECTORS = ("tapio-k8s-collector", "tapio-systemd-collector", "tapio-ebpf-collector")
CONTAINERS = {"tapio-k8s-collector": "k8s-collector", "tapio-systemd-collector": "systemd-collector",
              "tapio-ebpf-collector": "ebpf-collector", "tapio-pipeline": "pipeline"}
PHASES = ["playbooks/preflight.yml", "playbooks/pipeline.yml", "playbooks/collectors.yml",
          "playbooks/verify.yml", "playbooks/report.yml"]


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    def recap(self) -> dict[str, int]:
        """Totals of the PLAY RECAP lines of every play."""
        totals: dict[str, int] = {}
        for line in re.findall(r"^\S+\s+:\s+(ok=.*)$", self.stdout, re.M):
            for key, value in re.findall(r"(\w+)=(\d+)", line):
                totals[key] = totals.get(key, 0) + int(value)
        return totals

    @property
    def changed(self) -> int:
        return self.recap().get("changed", -1)

    @classmethod
    def from_output(cls, rc: int, output: Path) -> "Run":
        """A background run's result (``MigrationLab.start_playbook(output=...)``): stderr is
        in the same file as stdout."""
        return cls(rc, output.read_text(errors="replace"), "")

    def explain(self) -> str:
        return f"rc={self.rc}\n--- stdout (tail) ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-2000:]}"


class MigrationLab:
    """One test namespace with the lab's pre-migration Tapio workloads."""

    def __init__(self, kube: KubeLab, namespace: str, artifacts: Path) -> None:
        self.kube = kube
        self.namespace = namespace
        self.artifacts = artifacts
        api = config.new_client_from_config(str(kube.kubeconfig), context=kube.context)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.api = api

    # --- running playbooks --------------------------------------------------------------------
    def _command(self, playbooks: tuple[str, ...], extra: dict[str, Any] | None,
                 args: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
        # A namespace of its own shares the lab's servers with its own streams and subject
        # prefixes, which the lab's per-workload users are not allowed: the pods use the
        # shared user unless a test opts in (tapio_nats_component_users).
        extra_vars = {"tapio_namespace": self.namespace, "tapio_migration_nats_checks": False,
                      "tapio_nats_component_users": False,
                      "tapio_artifacts_dir": str(self.artifacts), "tapio_verify_ledger_url": "", "tapio_timeline_url": "",
                      **(extra or {})}
        env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_FORCE_COLOR": "0"}
        return [str(VENV_BIN / "ansible-playbook"), *playbooks, "-e", json.dumps(extra_vars), *args], env

    def playbook(self, *playbooks: str, extra: dict[str, Any] | None = None, args: tuple[str, ...] = ()) -> Run:
        command, env = self._command(playbooks, extra, args)
        proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def start_playbook(self, *playbooks: str, extra: dict[str, Any] | None = None,
                       output: Path | None = None) -> subprocess.Popen:
        """The same run in the background, in a session of its own (so a test can SIGKILL it,
        workers and all, as a lost runner would be). With *output*, its stdout and stderr go
        to that file (``Run.from_output`` reads it back once the run has ended)."""
        command, env = self._command(playbooks, extra, ())
        if output is None:
            return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
        with open(output, "wb") as log:
            return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def migrate(self, **kwargs: Any) -> Run:
        return self.playbook(*PHASES, **kwargs)

    def rollback(self, mode: str = "restore", **kwargs: Any) -> Run:
        extra = {"tapio_rollback_mode": mode, **kwargs.pop("extra", {})}
        return self.playbook("rollback.yml", extra=extra, **kwargs)

    # --- the namespace --------------------------------------------------------------------------
    def create(self) -> None:
        run = self.playbook("playbooks/lab_up.yml", args=("--tags", "tapio"))
        assert run.rc == 0, run.explain()
        secret = client.V1Secret(metadata=client.V1ObjectMeta(name="tapio-nats-auth"), data={
            "NATS_USER": base64.b64encode(b"tapio").decode(),
            "NATS_PASSWORD": base64.b64encode(b"tapio-lab-secret").decode()})
        self.core.create_namespaced_secret(self.namespace, secret)

    def delete(self) -> None:
        try:
            self.core.delete_namespace(self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise

    # --- reading objects ------------------------------------------------------------------------
    def daemonset(self, name: str) -> dict[str, Any]:
        return self.api.sanitize_for_serialization(self.apps.read_namespaced_daemon_set(name, self.namespace))

    def deployment(self, name: str = "tapio-pipeline") -> dict[str, Any]:
        return self.api.sanitize_for_serialization(self.apps.read_namespaced_deployment(name, self.namespace))

    def workload(self, name: str) -> dict[str, Any]:
        return self.deployment(name) if name == "tapio-pipeline" else self.daemonset(name)

    def env(self, name: str) -> dict[str, Any]:
        """The owned container's env as name -> value or valueFrom."""
        containers = self.workload(name)["spec"]["template"]["spec"]["containers"]
        container = next(c for c in containers if c["name"] == CONTAINERS[name])
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}

    def state_configmap(self) -> dict[str, str] | None:
        try:
            return self.core.read_namespaced_config_map("tapio-migration-state", self.namespace).data
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def record(self, kind: str, name: str, retired: bool = False) -> dict[str, Any]:
        data = self.state_configmap() or {}
        return json.loads(data[f"{'retired.' if retired else ''}{kind.lower()}.{name}.json"])

    def provenance(self, kind: str, name: str, retired: bool = False) -> dict[str, Any]:
        data = self.state_configmap() or {}
        return json.loads(data[f"{'retired.' if retired else ''}provenance.{kind.lower()}.{name}.json"])

    def has_record(self, kind: str, name: str) -> bool:
        return f"{kind.lower()}.{name}.json" in (self.state_configmap() or {})

    def resource_versions(self) -> dict[str, str]:
        versions: dict[str, str] = {}
        for kind, items in (("ds", self.apps.list_namespaced_daemon_set(self.namespace).items),
                            ("deploy", self.apps.list_namespaced_deployment(self.namespace).items),
                            ("rs", self.apps.list_namespaced_replica_set(self.namespace).items),
                            ("cm", self.core.list_namespaced_config_map(self.namespace).items),
                            ("secret", self.core.list_namespaced_secret(self.namespace).items),
                            ("job", self.batch.list_namespaced_job(self.namespace).items)):
            for obj in items:
                versions[f"{kind}/{obj.metadata.name}"] = obj.metadata.resource_version
        return versions


    def settled_resource_versions(self, timeout: float = 60.0) -> dict[str, str]:
        """resourceVersions once the controllers have caught up with the test's own changes.

        A Deployment or DaemonSet patched by the test gets a status write from its controller
        a moment later; a "nothing changed" snapshot taken before that write would blame the
        playbook for it. Settled means every workload's observedGeneration is current and two
        snapshots a second apart agree.
        """
        deadline = time.monotonic() + timeout
        previous: dict[str, str] | None = None
        while True:
            current = self.resource_versions()
            workloads = [*self.apps.list_namespaced_daemon_set(self.namespace).items,
                         *self.apps.list_namespaced_deployment(self.namespace).items]
            observed = all((w.status.observed_generation or 0) >= w.metadata.generation for w in workloads)
            if observed and current == previous:
                return current
            if time.monotonic() > deadline:
                raise AssertionError(f"namespace {self.namespace} kept changing for {timeout}s: {current}")
            previous = current
            time.sleep(1.0)


    # --- volumes for a NATS install in the test namespace ------------------------------------
    VOLUME_LABEL = "tapio-test-namespace"

    def nats_volumes(self, cluster: str = "tapio-nats", replicas: int = 3) -> None:
        """PersistentVolumes of the test's own, pre-bound to the NATS StatefulSet's claims, so a
        test that installs NATS never uses up the lab's shared volumes (a released Retain volume
        cannot bind again). Deleted with the namespace (make_lab)."""
        for index in range(replicas):
            self.core.create_persistent_volume(client.V1PersistentVolume(
                metadata=client.V1ObjectMeta(name=f"{self.namespace}-{index}",
                                             labels={self.VOLUME_LABEL: self.namespace}),
                spec=client.V1PersistentVolumeSpec(
                    storage_class_name="standard", capacity={"storage": "10Gi"}, access_modes=["ReadWriteOnce"],
                    persistent_volume_reclaim_policy="Retain",
                    claim_ref=client.V1ObjectReference(namespace=self.namespace, name=f"jetstream-{cluster}-{index}"),
                    host_path=client.V1HostPathVolumeSource(path=f"/tmp/{self.namespace}-volume-{index}",
                                                            type="DirectoryOrCreate"))))

    def delete_volumes(self) -> None:
        for volume in self.core.list_persistent_volume(label_selector=f"{self.VOLUME_LABEL}={self.namespace}").items:
            try:
                self.core.delete_persistent_volume(volume.metadata.name)
            except ApiException as error:
                if error.status != 404:
                    raise


RUNNER = "tapio-migration-runner"  # the ServiceAccount playbooks/runner_rbac.yml binds


def runner_kubeconfig(kube: KubeLab, core: client.CoreV1Api, namespace: str, path: Path) -> Path:
    """A kubeconfig for the runner's ServiceAccount in *namespace*: the lab's cluster, a
    TokenRequest token (context ``runner``)."""
    token = core.create_namespaced_service_account_token(
        RUNNER, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == kube.context)["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster], "current-context": "runner",
        "users": [{"name": "runner", "user": {"token": token}}],
        "contexts": [{"name": "runner", "context": {"cluster": cluster["name"], "user": "runner"}}]}))
    return path


def make_lab(kube: KubeLab, prefix: str, tmp: Path) -> Iterator[MigrationLab]:
    lab = MigrationLab(kube, f"mig-{prefix}-{uuid.uuid4().hex[:6]}", tmp)
    lab.create()
    try:
        yield lab
    finally:
        lab.delete()
        lab.delete_volumes()
