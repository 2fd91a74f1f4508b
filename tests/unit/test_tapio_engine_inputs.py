"""The engine's typed inputs (module_utils/tapio_engine_inputs.py): built once from the params
Ansible validated against library/tapio_migration.py's ARGUMENT_SPEC, with every default
filled in, every value of its declared type, and no key the spec does not declare."""
from __future__ import annotations

import dataclasses

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from engine_inputs import engine_inputs, inputs, migration, validated_params

NESTED = {"lock": inputs.LockInputs, "state": inputs.StateInputs, "gate": inputs.GateInputs,
          "probe": inputs.ProbeInputs, "secret": inputs.SecretInputs, "ca_secret": inputs.CaSecretInputs,
          "nats_install": inputs.NatsInstallInputs, "workload_secrets": inputs.WorkloadSecretsInputs}


def test_left_out_options_get_the_spec_defaults() -> None:
    built = engine_inputs()
    assert built.namespace == "tapio" and built.mode_env == "TAPIO_OUTPUT_MODE"
    assert built.pipeline == inputs.Target("Deployment", "tapio-pipeline", "pipeline")
    assert built.collectors == () and built.order == () and built.batch == () and built.env == ()
    assert built.lock == inputs.LockInputs(name="tapio-nats-migration", holder="", duration=900)
    assert built.state == inputs.StateInputs(configmap="tapio-migration-state", dir=".artifacts/state", labels={})
    assert built.gate == inputs.GateInputs(consumer_prefix="tapio-migration-gate-", timeout=60.0, max_pending=1000,
                                           window=10.0)
    assert built.probe == inputs.ProbeInputs(definition=None, target=None, timeout=120.0, fresh=False, required=True,
                                             simulated_node_annotation="")
    assert built.secret == inputs.SecretInputs(name=None, keys=())
    assert built.ca_secret == inputs.CaSecretInputs(name=None, key="ca.crt")
    assert built.nats_install == inputs.NatsInstallInputs(enabled=False, namespace=None, name=None)
    assert built.workload_secrets.as_dict() == {"shared": None, "prefix": None, "inbox_env": None}
    assert (built.progress_deadline, built.poll_interval, built.stream_fill_limit) == (120.0, 2.0, 80.0)
    assert built.nats_checks is True and built.drain is True and built.rollback_mode == "switch"


def test_values_have_their_declared_types() -> None:
    built = engine_inputs(gate={"max_pending": "5", "timeout": "30", "window": 4}, lock={"duration": "10"},
                          progress_deadline=30, poll_interval="0.5", batch_size="3", probe={"timeout": 9})
    assert built.gate == inputs.GateInputs(consumer_prefix="tapio-migration-gate-", timeout=30.0, max_pending=5,
                                           window=4.0)
    assert isinstance(built.gate.timeout, float) and isinstance(built.gate.max_pending, int)
    assert isinstance(built.gate.window, float) and isinstance(built.probe.timeout, float)
    assert built.lock.duration == 10 and built.batch_size == 3
    assert built.progress_deadline == 30.0 and isinstance(built.progress_deadline, float)
    assert built.poll_interval == 0.5


def test_workloads_become_targets() -> None:
    built = engine_inputs(pipeline={"name": "pipe", "container": "main"}, collectors=[
        {"name": "k8s", "container": "c", "subject_prefix": "tapio.events.k8s"}], batch=["k8s"], order=["k8s"])
    assert built.pipeline == inputs.Target("Deployment", "pipe", "main")
    assert built.collectors == (inputs.Target("DaemonSet", "k8s", "c", "tapio.events.k8s"),)
    assert built.collectors[0].label == "DaemonSet/k8s"
    assert built.batch == ("k8s",) and built.order == ("k8s",)


def test_a_zero_probe_timeout_and_an_empty_ca_key_mean_their_defaults() -> None:
    built = engine_inputs(probe={"timeout": 0}, ca_secret={"name": "ca", "key": ""})
    assert built.probe.timeout == 120.0
    assert built.ca_secret == inputs.CaSecretInputs(name="ca", key="ca.crt")


@pytest.mark.parametrize("option, value, misspelt", [
    ("gate", {"max_pendng": 5}, "max_pendng"),
    ("lock", {"holdr": "me"}, "holdr"),
    ("state", {"config_map": "x"}, "config_map"),
    ("probe", {"targt": "nats:4222"}, "targt"),
    ("nats_install", {"enable": True}, "enable"),
    ("secret", {"key": ["NATS_USER"]}, "key"),
    ("ca_secret", {"keys": ["ca.crt"]}, "keys"),
    ("workload_secrets", {"prefx": "auth-"}, "prefx"),
])
def test_a_misspelt_key_is_refused_by_the_spec_and_by_from_params(option: str, value: dict, misspelt: str) -> None:
    result = ArgumentSpecValidator(migration.ARGUMENT_SPEC).validate({"phase": "verify", option: value})
    assert any(f"{option}.{misspelt}. Supported parameters include" in e for e in result.error_messages)
    # Params that skipped validation are refused too: the dataclasses take declared keys only.
    params = validated_params()
    params[option] = {**params[option], **value}
    with pytest.raises(TypeError, match=misspelt):
        inputs.EngineInputs.from_params(params)


@pytest.mark.parametrize("option", sorted(NESTED))
def test_each_nested_dataclass_has_exactly_the_spec_keys(option: str) -> None:
    declared = set(migration.ARGUMENT_SPEC[option]["options"])
    assert {field.name for field in dataclasses.fields(NESTED[option])} == declared


def test_the_inputs_are_frozen() -> None:
    built = engine_inputs()
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.gate.timeout = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.namespace = "other"  # type: ignore[misc]
