# -*- coding: utf-8 -*-
# Copyright: Tapio NATS migration toolkit contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The tapio_migration module's options as the engine reads them, built once per call.

``EngineInputs.from_params`` takes the params Ansible validated against
library/tapio_migration.py's ARGUMENT_SPEC: every key, nested ones too, is declared
there, so Ansible has refused a misspelt one, converted each value to its type and filled
in the defaults (an option with a default cannot be given as null) before the engine starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Target:
    """A workload the migration owns: its kind, name and the container it changes."""

    kind: str
    name: str
    container: str
    subject_prefix: str = ""
    # Whose NATS user its pods connect as (Secret and inbox); "" is its own name. A second
    # correlation engine, switched as a pipeline, connects as its extra consumer's user.
    credentials: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class LockInputs:
    name: str
    holder: str
    duration: int


@dataclass(frozen=True)
class StateInputs:
    configmap: str
    dir: str
    labels: dict[str, Any]


@dataclass(frozen=True)
class GateInputs:
    consumer_prefix: str
    timeout: float
    max_pending: int
    window: float


@dataclass(frozen=True)
class ProbeInputs:
    definition: Optional[dict[str, Any]]  # a Kubernetes Job, needed by the probe phase only
    target: Optional[str]
    timeout: float
    fresh: bool
    required: bool
    simulated_node_annotation: str


@dataclass(frozen=True)
class SecretInputs:
    name: Optional[str]  # empty: no credentials Secret to require
    keys: tuple[str, ...]


@dataclass(frozen=True)
class CaSecretInputs:
    name: Optional[str]  # empty: no CA Secret to require
    key: str


@dataclass(frozen=True)
class NatsInstallInputs:
    enabled: bool
    namespace: Optional[str]
    name: Optional[str]


@dataclass(frozen=True)
class WorkloadSecretsInputs:
    shared: Optional[str]
    prefix: Optional[str]
    inbox_env: Optional[str]

    def as_dict(self) -> dict[str, Optional[str]]:
        """The form tapio_workload.workload_env takes."""
        return {"shared": self.shared, "prefix": self.prefix, "inbox_env": self.inbox_env}


@dataclass(frozen=True)
class EngineInputs:
    """Every option a phase of the engine reads (the ledger, lock and connection options are
    read by the module before any engine runs)."""

    namespace: str
    pipeline: Target
    collectors: tuple[Target, ...]
    mode_env: str
    nats_value: str
    direct_value: str
    expected_mode: str
    lock: LockInputs
    state: StateInputs
    stream: str
    consumer: str
    nats_checks: bool
    progress_deadline: float
    poll_interval: float
    stream_fill_limit: float
    env: tuple[dict[str, Any], ...]
    subject_prefix_env: str
    workload_secrets: WorkloadSecretsInputs
    pod_annotations: dict[str, Any]
    container_overrides: dict[str, Any]
    order: tuple[str, ...]
    batch_size: int
    batch: tuple[str, ...]
    require_pipeline: bool
    gate: GateInputs
    full_rollback: bool
    permissions: tuple[dict[str, Any], ...]
    secret: SecretInputs
    ca_secret: CaSecretInputs
    nats_install: NatsInstallInputs
    fail_on_unsafe_strategy: bool
    probe: ProbeInputs
    rollback_mode: str
    drain: bool

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "EngineInputs":
        """The inputs of validated module params (pipeline and collectors already checked
        complete by the module's check_targets). Nested options go to their dataclasses by
        keyword, so a key a dataclass does not declare is refused here as the spec refuses it."""
        pipeline = params["pipeline"]
        return cls(
            namespace=params["namespace"],
            pipeline=Target("Deployment", pipeline["name"], pipeline["container"],
                            credentials=pipeline.get("credentials") or ""),
            collectors=tuple(Target("DaemonSet", c["name"], c["container"], c.get("subject_prefix") or "")
                             for c in params["collectors"]),
            mode_env=params["mode_env"], nats_value=params["nats_value"], direct_value=params["direct_value"],
            expected_mode=params["expected_mode"],
            lock=LockInputs(**params["lock"]),
            state=StateInputs(**params["state"]),
            stream=params["stream"], consumer=params["consumer"], nats_checks=params["nats_checks"],
            progress_deadline=params["progress_deadline"], poll_interval=params["poll_interval"],
            stream_fill_limit=params["stream_fill_limit"],
            env=tuple(params["env"]), subject_prefix_env=params["subject_prefix_env"],
            workload_secrets=WorkloadSecretsInputs(**params["workload_secrets"]),
            pod_annotations=params["pod_annotations"], container_overrides=params["container_overrides"],
            order=tuple(params["order"]), batch_size=params["batch_size"], batch=tuple(params["batch"]),
            require_pipeline=params["require_pipeline"],
            gate=GateInputs(**params["gate"]),
            full_rollback=params["full_rollback"],
            permissions=tuple(params["permissions"]),
            secret=secret_inputs(params["secret"]),
            ca_secret=ca_secret_inputs(params["ca_secret"]),
            nats_install=NatsInstallInputs(**params["nats_install"]),
            fail_on_unsafe_strategy=params["fail_on_unsafe_strategy"],
            probe=probe_inputs(params["probe"]),
            rollback_mode=params["rollback_mode"], drain=params["drain"],
        )


def probe_inputs(probe: dict[str, Any]) -> ProbeInputs:
    # A timeout of 0 is no timeout given: the documented 120 s.
    return ProbeInputs(**{**probe, "timeout": float(probe["timeout"] or 120)})


def secret_inputs(secret: dict[str, Any]) -> SecretInputs:
    return SecretInputs(**{**secret, "keys": tuple(secret["keys"])})


def ca_secret_inputs(ca_secret: dict[str, Any]) -> CaSecretInputs:
    # An empty key names no key: the Secret's usual one.
    return CaSecretInputs(**{**ca_secret, "key": ca_secret["key"] or "ca.crt"})
