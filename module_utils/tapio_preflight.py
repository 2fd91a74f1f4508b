# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The preflight phase's checks, each of which reads and none of which changes anything:
the namespace, the run's permissions, the workloads and their containers, the pipeline's
rollout strategy, the Secrets the pods will read, and whether NATS is installed yet."""
from __future__ import annotations

from typing import Any, Optional

from ansible.module_utils.tapio_engine_inputs import CaSecretInputs, SecretInputs, Target
from ansible.module_utils.tapio_engine_run import EngineError, EnginePart
from ansible.module_utils.tapio_workload import (
    WorkloadError, access_review, find_container, needed_permissions, strategy_problem)


class PreflightChecks(EnginePart):
    """The pre-migration checklist of one run; each check raises EngineError naming the problem."""

    def require_namespace(self) -> None:
        if self.run.kube.get("Namespace", None, self.run.namespace) is None:
            raise EngineError(f"Namespace {self.run.namespace} not found (tapio_namespace).")

    def require_permissions(self) -> None:
        """Every permission the run needs, asked of the API server (SelfSubjectAccessReview)."""
        permissions = list(self.inputs.permissions)
        if self.pod_secret_names():
            permissions.append({"group": "", "resource": "secrets", "verbs": ["get"],
                                "namespace": self.run.namespace, "names": self.pod_secret_names()})
        needed = needed_permissions(permissions, self.run.namespace)
        answers = self.run.kube.allowed([access_review(n) for n in needed])
        denied = [n["label"] for n, ok in zip(needed, answers) if not ok]
        if denied:
            raise EngineError(f"The run's identity lacks {len(denied)} permission(s) the run needs: {'; '.join(denied)}. "
                              "Bind it to the runner's Role and ClusterRole (playbooks/runner_rbac.yml, docs/rbac.md).")
        self.run.log(f"{len(needed)} permission(s) granted in {len({n['namespace'] for n in needed})} scope(s)")

    def pod_secret_names(self) -> list[str]:
        """The Secrets require_pod_secrets reads: the credentials (or each workload's own) and the CA's."""
        secret, prefix = self.inputs.secret, self.inputs.workload_secrets.prefix
        targets = [self.inputs.pipeline, *self.inputs.collectors]
        names = ([f"{prefix}{t.name}" for t in targets] if prefix else [secret.name]) if secret.name else []
        return names + ([self.inputs.ca_secret.name] if self.inputs.ca_secret.name else [])

    def require_workloads(self, targets: list[Target]) -> dict[str, dict[str, Any]]:
        """Every target's live object, each with its container; fails naming every one missing."""
        live = {t.name: self.run.kube.get(t.kind, self.run.namespace, t.name) for t in targets}
        missing = []
        for target in targets:
            obj = live[target.name]
            if obj is None:
                missing.append(f"{target.kind} {target.name} not found")
                continue
            try:
                find_container(obj, target.container)
            except WorkloadError:
                missing.append(f"{target.kind} {target.name} has no container {target.container}")
        if missing:
            raise EngineError(f"In namespace {self.run.namespace}: {'; '.join(missing)}.")
        return live  # type: ignore[return-value]

    def strategy_warnings(self, pipeline: dict[str, Any]) -> list[str]:
        """A pipeline strategy that could leave no ready pod: fails, or only warns when allowed."""
        problem = strategy_problem(pipeline)
        if problem and self.inputs.fail_on_unsafe_strategy:
            raise EngineError(f"{problem} Set maxUnavailable 0 (and maxSurge 1) or more replicas.")
        return [problem] if problem else []

    def require_pod_secrets(self, targets: list[Target]) -> None:
        """The credentials Secret(s) and the CA Secret, when the pods will read them."""
        if self.inputs.secret.name:
            self.require_secrets(self.inputs.secret, targets)
        if self.inputs.ca_secret.name:
            self.require_ca_secret(self.inputs.ca_secret)

    def secret_problems(self, name: Optional[str], keys: list[str]) -> list[str]:
        """What keeps a pod's secretKeyRef to Secret *name* from resolving: absent, or keys missing."""
        found = self.run.kube.get("Secret", self.run.namespace, name)
        if found is None:
            return [f"Secret {self.run.namespace}/{name} not found"]
        absent = [k for k in keys if k not in (found.get("data") or {})]
        return [f"Secret {self.run.namespace}/{name} has no key {', '.join(absent)}"] if absent else []

    def require_secrets(self, secret: SecretInputs, targets: list[Target]) -> None:
        """The credentials Secret the pods will read, or with per-workload users
        (O(workload_secrets)) each workload's own, must exist with every key."""
        prefix = self.inputs.workload_secrets.prefix
        names = [f"{prefix}{t.name}" for t in targets] if prefix else [secret.name]
        keys = list(secret.keys)
        problems = [problem for name in names for problem in self.secret_problems(name, keys)]
        if problems:
            raise EngineError(f"{'; '.join(problems)}: each must exist with keys {', '.join(keys)} "
                              "(the pods read the NATS credentials from it by secretKeyRef).")

    def require_ca_secret(self, ca_secret: CaSecretInputs) -> None:
        """The Secret the pods read the NATS CA from must exist with its key."""
        problems = self.secret_problems(ca_secret.name, [ca_secret.key])
        if problems:
            raise EngineError(f"{problems[0]}: the pods read the CA of NATS's TLS certificate from it "
                              "(tapio_nats_ca_secret, tapio_nats_ca_key).")

    def nats_deferred(self) -> bool:
        """True when this run installs NATS and its StatefulSet does not exist yet: its checks
        wait for the nats phase."""
        install = self.inputs.nats_install
        if not install.enabled:
            return False
        deferred = self.run.kube.get("StatefulSet", install.namespace, install.name) is None
        if deferred:
            self.run.log(f"NATS is not installed yet (no StatefulSet {install.namespace}/{install.name}): its "
                         "health is checked by the nats phase after the install, and the DNS/connectivity probe "
                         "runs right after it.")
        return deferred

    def output_modes(self, targets: list[Target], live: dict[str, dict[str, Any]]) -> dict[str, Optional[str]]:
        """Each workload's output mode, logged in one line."""
        modes = {t.name: self.run.mode(live[t.name], t) for t in targets}
        self.run.log("workloads: " + ", ".join(f"{t.label} ({modes[t.name] or 'unset'})" for t in targets))
        return modes
